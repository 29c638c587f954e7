"""The API's objects as frozen dataclasses, one per schema of functions/edge/openapi.json.

Field names are the JSON names (`type`, `from` excepted: see each class). Timestamps are
aware datetimes in UTC. Fields holding arbitrary JSON (a payload, a result, progress,
metadata) are `Any`. Every object keeps the JSON it was read from in `raw` (not shown, not
compared), which also carries any field a newer edge added.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

from ._convert import from_json

__all__ = [
    "FINAL_STATES",
    "AttemptRecord",
    "Backoff",
    "BackupSummary",
    "BackupVerdict",
    "BatchItem",
    "BatchResult",
    "BusyKey",
    "Chunk",
    "ConsumerInfo",
    "ConsumersInfo",
    "ErrorBody",
    "EventSent",
    "Flow",
    "FlowChanged",
    "FlowDebounce",
    "FlowKey",
    "FlowLimit",
    "FlowRate",
    "FlowThrottle",
    "Health",
    "Job",
    "JobCallback",
    "JobPage",
    "JobParent",
    "JobSpec",
    "JobSummary",
    "Manifest",
    "ManifestObject",
    "ReadToken",
    "ReplayResult",
    "ResealResult",
    "RestoreResult",
    "Schedule",
    "ScheduleDeleted",
    "SchedulePage",
    "ScheduleRun",
    "ScheduleTriggered",
    "ShardRows",
    "ShardsAnswered",
    "StateChange",
    "Stats",
    "StatsCount",
    "StatsMinute",
    "Step",
    "StreamEntry",
    "WebhookSecret",
    "WhoAmI",
]

#: The states a job does not leave (unless a dead one is replayed).
FINAL_STATES = frozenset({"completed", "dead", "cancelled"})


def _raw() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Backoff:
    """Retry delays: full jitter up to min(cap_ms, base_ms * factor^(attempt-1))."""

    base_ms: int
    factor: float
    cap_ms: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class AttemptRecord:
    """An attempt that ended (`outcome`: completed, failed, lease_lost, cancelled, suspended)."""

    attempt: int
    started_at: _dt.datetime
    ended_at: _dt.datetime
    duration_ms: int
    outcome: str
    error: Optional[str] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Step:
    """One recorded step of a workflow run."""

    name: str
    kind: str
    state: str
    attempts: int
    started_at: _dt.datetime
    ended_at: Optional[_dt.datetime] = None
    until: Optional[_dt.datetime] = None
    result_bytes: Optional[int] = None
    error: Optional[str] = None
    event: Optional[str] = None
    children: Optional[List[str]] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class FlowLimit:
    key: str
    limit: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class FlowRate:
    key: str
    limit: int
    period_ms: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class FlowDebounce:
    key: str
    period_ms: int
    max_wait_ms: Optional[int] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class FlowThrottle:
    key: str
    limit: int
    period_ms: int
    on_limit: str
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Flow:
    """A job's flow control as resolved at its creation."""

    priority: int
    concurrency: Optional[List[FlowLimit]] = None
    rate: Optional[FlowRate] = None
    debounce: Optional[FlowDebounce] = None
    throttle: Optional[FlowThrottle] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class JobParent:
    """The workflow run (and its step) that started a child job."""

    job: str
    step: str
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class JobCallback:
    """A completion callback as its job carries it (`kind`: url or job)."""

    kind: str
    id: str
    type: str
    lane: str
    payload: Any
    max_attempts: int
    backoff: Backoff
    timeout_ms: int
    tags: Optional[List[str]] = None
    metadata: Optional[Dict[str, Any]] = None
    rate_group: Optional[str] = None
    delay_ms: Optional[int] = None
    fired_at: Optional[_dt.datetime] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class JobTrace:
    """Where a job (or a schedule) sits in a distributed trace: W3C Trace Context headers."""

    traceparent: str
    tracestate: Optional[str] = None
    raw: Mapping[str, Any] = _raw()

    @property
    def trace_id(self) -> str:
        """The trace id: the second field of `traceparent`."""
        return self.traceparent.split("-")[1]


@dataclass(frozen=True)
class StreamEntry:
    """Native lane: the stream entry carrying the newest hand-off."""

    attempt: int
    entry: str
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Job:
    """A job as `GET /v1/jobs/{id}` and the enqueue, cancel and retry answers show it."""

    id: str
    type: str
    lane: str
    state: str
    payload: Any
    attempt: int
    series_base: int
    max_attempts: int
    backoff: Backoff
    timeout_ms: int
    tags: List[str]
    metadata: Dict[str, Any]
    created_at: _dt.datetime
    updated_at: _dt.datetime
    run_at: _dt.datetime
    cancel_requested: bool
    tenant: str
    idempotency_key: Optional[str] = None
    started_at: Optional[_dt.datetime] = None
    finished_at: Optional[_dt.datetime] = None
    heartbeat_at: Optional[_dt.datetime] = None
    result: Any = None
    progress: Any = None
    last_error: Optional[str] = None
    lease_lost_attempt: Optional[int] = None
    epoch: Optional[int] = None
    stream_entry: Optional[StreamEntry] = None
    attempts: Optional[List[AttemptRecord]] = None
    rate_group: Optional[str] = None
    schedule: Optional[str] = None
    flow: Optional[Flow] = None
    waiting_for: Optional[str] = None
    steps: Optional[List[Step]] = None
    free_attempts: Optional[int] = None
    parent: Optional[JobParent] = None
    #: On an enqueue's answer only: a debounce collapsed the enqueue into the key's pending job.
    debounced: Optional[bool] = None
    #: On an enqueue's answer only: a throttle (`on_limit: "drop"`) answered the key's last job.
    throttled: Optional[bool] = None
    on_complete: Optional[JobCallback] = None
    on_fail: Optional[JobCallback] = None
    batch: Optional[str] = None
    trace: Optional[JobTrace] = None
    raw: Mapping[str, Any] = _raw()

    @property
    def final(self) -> bool:
        """Whether the job reached a state it does not leave by itself."""
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class JobSummary:
    """A job in a listing: without payload, result, progress and metadata unless `include`d."""

    id: str
    type: str
    lane: str
    state: str
    attempt: int
    series_base: int
    max_attempts: int
    backoff: Backoff
    timeout_ms: int
    tags: List[str]
    created_at: _dt.datetime
    updated_at: _dt.datetime
    run_at: _dt.datetime
    cancel_requested: bool
    tenant: str
    payload: Any = None
    idempotency_key: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None
    started_at: Optional[_dt.datetime] = None
    finished_at: Optional[_dt.datetime] = None
    heartbeat_at: Optional[_dt.datetime] = None
    result: Any = None
    progress: Any = None
    last_error: Optional[str] = None
    stream_entry: Optional[StreamEntry] = None
    lease_lost_attempt: Optional[int] = None
    epoch: Optional[int] = None
    rate_group: Optional[str] = None
    schedule: Optional[str] = None
    flow: Optional[Flow] = None
    waiting_for: Optional[str] = None
    batch: Optional[str] = None
    trace: Optional[JobTrace] = None
    raw: Mapping[str, Any] = _raw()

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class JobPage:
    """One page of a listing; `next_cursor` is None on the last page."""

    jobs: List[JobSummary]
    next_cursor: Optional[str]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ErrorBody:
    """An error as the API words it: a stable `code`, a message, and the field at fault."""

    code: str
    message: str
    field: Optional[str] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class BatchItem:
    """One item's outcome in a batch: `job` when it was enqueued (status 200/201), else `error`."""

    status: int
    job: Optional[Job] = None
    error: Optional[ErrorBody] = None
    raw: Mapping[str, Any] = _raw()

    @property
    def ok(self) -> bool:
        return self.status < 400

    def exception(self) -> Optional[Exception]:
        """The typed error (see `edgejobs.errors`) a single enqueue of this item would raise."""
        if self.ok:
            return None
        from .errors import error_for

        body = self.error or ErrorBody(code="", message=f"status {self.status}")
        return error_for(self.status, body.code, body.message, field=body.field)


@dataclass(frozen=True)
class BatchResult:
    """One result per item, in the request's order; `batch` with `on_complete`."""

    results: List[BatchItem]
    batch: Optional[str] = None
    raw: Mapping[str, Any] = _raw()

    @property
    def jobs(self) -> List[Job]:
        """The jobs that were enqueued, in order."""
        return [r.job for r in self.results if r.job is not None]

    @property
    def failed(self) -> List[BatchItem]:
        return [r for r in self.results if not r.ok]


@dataclass(frozen=True)
class ReplayResult:
    replayed: int
    ids: List[str]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ScheduleRun:
    """A run of a schedule (`kind`: tick, catch_up or trigger) and its job's state now."""

    tick: _dt.datetime
    at: _dt.datetime
    job_id: str
    kind: str
    state: Optional[str] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    job: Dict[str, Any]
    overlap: str
    catch_up: str
    paused: bool
    created_at: _dt.datetime
    updated_at: _dt.datetime
    next_at: Optional[_dt.datetime]
    runs: List[ScheduleRun]
    runs_total: int
    skips_total: int
    overdue: bool
    starts_at: Optional[_dt.datetime] = None
    ends_at: Optional[_dt.datetime] = None
    last_tick: Optional[_dt.datetime] = None
    waiting_tick: Optional[_dt.datetime] = None
    paused_at: Optional[_dt.datetime] = None
    upcoming: Optional[List[_dt.datetime]] = None
    trace: Optional[JobTrace] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class SchedulePage:
    schedules: List[Schedule]
    next_cursor: Optional[str]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ScheduleDeleted:
    deleted: bool
    name: str
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ScheduleTriggered:
    """A trigger's run: `created` false when the run's job existed already."""

    created: bool
    job: Job
    schedule: Schedule
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class FlowKey:
    """What the key's shard knows of one flow key of a tenant."""

    tenant: str
    key: str
    running: int
    limit: int
    waiting: int
    rate_waiting: int
    rate_next_at: Optional[_dt.datetime]
    parked: int
    paused: bool
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class BusyKey:
    kind: str
    tenant: str
    key: str
    running: int
    limit: int
    waiting: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class FlowChanged:
    """`changed` is False when the key or type already was so."""

    changed: bool
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class EventSent:
    name: str
    duplicate: bool
    resumed: int
    id: Optional[str] = None
    started: Optional[List[str]] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ReadToken:
    """A short-lived read-only token (`ejr_...`) for one job or the jobs of one tag."""

    token: str
    expires_at: _dt.datetime
    tenant: str
    job: Optional[str] = None
    tag: Optional[str] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class WhoAmI:
    key_id: str
    scopes: List[str]
    tenant: Optional[str]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class WebhookSecret:
    """The `whsec_` secret a receiver origin verifies its deliveries with (`secrets` while rotating)."""

    origin: str
    type: str
    secret: str
    secrets: List[str]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class StatsCount:
    state: str
    type: str
    count: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class StatsMinute:
    at: _dt.datetime
    enqueued: int
    completed: int
    failed: int
    dead: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    seen_seconds_ago: float
    running: bool
    in_flight: int
    concurrency: int
    types: List[str]
    version: str
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ConsumersInfo:
    ok: bool
    list: List[ConsumerInfo]
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ShardsAnswered:
    answered: int
    of: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Stats:
    jobs: List[StatsCount]
    oldest_queued_at: Optional[_dt.datetime]
    minutes: List[StatsMinute]
    consumers: ConsumersInfo
    shards: ShardsAnswered
    at: _dt.datetime
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Health:
    """`checks` only for an admin key or the metrics token."""

    status: str
    checked_at: _dt.datetime
    version: str
    checks: Optional[Dict[str, Any]] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class BackupSummary:
    id: str
    valid: bool
    created_at: Optional[str]
    rows: Optional[int] = None
    bytes: Optional[int] = None
    shards: Optional[int] = None
    age_seconds: Optional[float] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ManifestObject:
    key: str
    rows: int
    bytes: int
    sha256: str
    shard: Optional[int] = None
    part: Optional[int] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class Manifest:
    schema_version: int
    id: str
    started_at: str
    finished_at: str
    shard_count: int
    shards: List[ManifestObject]
    total_rows: int
    total_bytes: int
    schedules: Optional[ManifestObject] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class BackupVerdict:
    id: str
    valid: bool
    problems: List[str]
    rows: Optional[int] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ShardRows:
    shard: int
    rows: int
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class RestoreResult:
    backup: str
    restored_rows: int
    shards: Optional[int] = None
    per_shard: Optional[List[ShardRows]] = None
    restored_schedules: Optional[int] = None
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class ResealResult:
    shard: int
    key: str
    scanned: int
    jobs_resealed: int
    schedules_resealed: int
    unopenable: int
    cursor: Optional[str]
    done: bool
    raw: Mapping[str, Any] = _raw()


# Live results: the events of `GET /v1/jobs/{id}/events` and `GET /v1/events`.


@dataclass(frozen=True)
class Chunk:
    """A piece of a job's named output stream (an LLM's tokens); `id` numbers it in the job."""

    id: Optional[int]
    attempt: int
    stream: str
    data: str
    raw: Mapping[str, Any] = _raw()


@dataclass(frozen=True)
class StateChange:
    """A job's state as a live stream reports it (the subset of `Job` that changes)."""

    id: str
    type: str
    state: str
    attempt: int
    updated_at: _dt.datetime
    progress: Any = None
    metadata: Optional[Dict[str, Any]] = None
    result: Any = None
    last_error: Optional[str] = None
    tags: Optional[List[str]] = None
    raw: Mapping[str, Any] = _raw()

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


# Inputs.


@dataclass(frozen=True)
class JobSpec:
    """An enqueue request (the `JobSpec` schema), for `enqueue_batch` and schedules.

    `Client.enqueue` takes the same fields as keyword arguments. Durations (`timeout`,
    `delay`, periods) are integer milliseconds or strings such as "30s"; `backoff`,
    `concurrency`, `rate`, `debounce`, `throttle`, `on_complete` and `on_fail` are passed as
    the API documents them (dicts). Fields this client does not know yet go in `extra`.
    """

    type: str
    payload: Any = None
    max_attempts: Optional[int] = None
    timeout: Union[int, str, None] = None
    backoff: Optional[Mapping[str, Any]] = None
    tags: Optional[List[str]] = None
    metadata: Optional[Mapping[str, Any]] = None
    idempotency_key: Optional[str] = None
    delay: Union[int, str, None] = None
    run_at: Union[_dt.datetime, str, None] = None
    tenant: Optional[str] = None
    concurrency: Union[Mapping[str, Any], List[Mapping[str, Any]], None] = None
    rate: Optional[Mapping[str, Any]] = None
    priority: Optional[int] = None
    debounce: Optional[Mapping[str, Any]] = None
    throttle: Optional[Mapping[str, Any]] = None
    on_complete: Optional[Mapping[str, Any]] = None
    on_fail: Optional[Mapping[str, Any]] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_key(self, key: str) -> "JobSpec":
        return dataclasses.replace(self, idempotency_key=key)


def parse(cls: Any, data: Any) -> Any:
    """`cls` read from decoded JSON (re-exported for callers holding raw replies)."""
    return from_json(cls, data)
