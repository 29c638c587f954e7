"""Every API operation as a `Call`: method, path, query, body and how to read the answer.

Both clients (sync and async) send these, so the mapping of arguments to HTTP and of
answers to models is written once; the clients only add the I/O. Each function is named
after the snake_case of its openapi.json operationId.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generic, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union
from urllib.parse import quote

import httpx

from . import models as m
from ._convert import format_time, from_json, to_json

T = TypeVar("T")

#: Job specs as callers give them: the dataclass or the API's JSON object.
SpecLike = Union[m.JobSpec, Mapping[str, Any]]
TimeLike = Union[_dt.datetime, str]
Duration = Union[int, float, str]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Dict[str, str] = field(default_factory=dict)
    body: Any = None
    has_body: bool = False
    #: Safe to send twice (a read, or a write the API dedupes by an idempotency key).
    idempotent: bool = False
    #: Seconds this call may take, when longer than the client's (a long poll).
    timeout: Optional[float] = None
    headers: Dict[str, str] = field(default_factory=dict)
    #: Error statuses whose body is still the answer (an unhealthy edge's health, 503).
    also_ok: Tuple[int, ...] = ()


def model(cls: Any) -> Callable[[httpx.Response], Any]:
    return lambda r: from_json(cls, r.json())


def _seg(value: str) -> str:
    # Ids and names go in one path segment whatever they contain.
    return quote(value, safe="")


def _params(**values: Any) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for k, v in values.items():
        if v is None:
            continue
        key = k.rstrip("_")
        if isinstance(v, _dt.datetime):
            out[key] = format_time(v)
        elif isinstance(v, bool):
            out[key] = "true" if v else "false"
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = str(v)
    return out


def _body(**values: Any) -> Dict[str, Any]:
    return {k.rstrip("_"): to_json(v) for k, v in values.items() if v is not None}


def new_idempotency_key() -> str:
    """A fresh key (`py-` and 32 hex digits): unique per logical enqueue, reused by its retries."""
    return f"py-{uuid.uuid4().hex}"


def spec_json(spec: SpecLike) -> Dict[str, Any]:
    if isinstance(spec, m.JobSpec):
        out: Dict[str, Any] = to_json(spec)
        return out
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise TypeError("a job spec is a JobSpec or a mapping with a 'type'")
    return dict(to_json(spec))


def duration_text(seconds: Duration) -> str:
    """A wait as the API takes it: whole milliseconds with a unit (`1500ms`)."""
    if isinstance(seconds, str):
        return seconds
    return f"{max(0, int(round(float(seconds) * 1000)))}ms"


# Jobs.


def enqueue_job(spec: Dict[str, Any]) -> Call[m.Job]:
    return Call(
        "POST", "/v1/jobs", model(m.Job), body=spec, has_body=True, idempotent="idempotency_key" in spec
    )


def enqueue_batch(jobs: List[Dict[str, Any]], on_complete: Optional[Mapping[str, Any]]) -> Call[m.BatchResult]:
    body = _body(jobs=jobs, on_complete=on_complete)
    # Retrying a batch is safe only when every item names its key (the API dedupes each).
    safe = bool(jobs) and all("idempotency_key" in j for j in jobs)
    return Call("POST", "/v1/jobs/batch", model(m.BatchResult), body=body, has_body=True, idempotent=safe)


def get_job(job_id: str, wait: Optional[Duration], token: Optional[str]) -> Call[m.Job]:
    w = None if wait is None else duration_text(wait)
    extra = None
    if wait is not None and not isinstance(wait, str):
        extra = float(wait) + 15.0
    elif wait is not None:
        extra = 75.0
    return Call(
        "GET",
        f"/v1/jobs/{_seg(job_id)}",
        model(m.Job),
        params=_params(wait=w, token=token),
        idempotent=True,
        timeout=extra,
    )


def list_jobs(**filters: Any) -> Call[m.JobPage]:
    return Call("GET", "/v1/jobs", model(m.JobPage), params=_params(**filters), idempotent=True)


def cancel_job(job_id: str) -> Call[m.Job]:
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/cancel", model(m.Job), idempotent=True)


def retry_job(job_id: str) -> Call[m.Job]:
    # Not idempotent: a second retry of a job replayed meanwhile answers 409.
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/retry", model(m.Job))


def list_dead(**filters: Any) -> Call[m.JobPage]:
    return Call("GET", "/v1/dead", model(m.JobPage), params=_params(**filters), idempotent=True)


def replay_dead(**filters: Any) -> Call[m.ReplayResult]:
    return Call("POST", "/v1/dead/replay", model(m.ReplayResult), body=_body(**filters), has_body=True)


# Schedules.


def list_schedules(limit: Optional[int], cursor: Optional[str], tenant: Optional[str]) -> Call[m.SchedulePage]:
    return Call(
        "GET",
        "/v1/schedules",
        model(m.SchedulePage),
        params=_params(limit=limit, cursor=cursor, tenant=tenant),
        idempotent=True,
    )


def create_schedule(body: Dict[str, Any]) -> Call[m.Schedule]:
    return Call("POST", "/v1/schedules", model(m.Schedule), body=body, has_body=True)


def get_schedule(name: str) -> Call[m.Schedule]:
    return Call("GET", f"/v1/schedules/{_seg(name)}", model(m.Schedule), idempotent=True)


def patch_schedule(name: str, body: Dict[str, Any]) -> Call[m.Schedule]:
    return Call("PATCH", f"/v1/schedules/{_seg(name)}", model(m.Schedule), body=body, has_body=True, idempotent=True)


def delete_schedule(name: str) -> Call[m.ScheduleDeleted]:
    return Call("DELETE", f"/v1/schedules/{_seg(name)}", model(m.ScheduleDeleted))


def pause_schedule(name: str) -> Call[m.Schedule]:
    return Call("POST", f"/v1/schedules/{_seg(name)}/pause", model(m.Schedule), idempotent=True)


def resume_schedule(name: str) -> Call[m.Schedule]:
    return Call("POST", f"/v1/schedules/{_seg(name)}/resume", model(m.Schedule), idempotent=True)


def trigger_schedule(name: str) -> Call[m.ScheduleTriggered]:
    return Call("POST", f"/v1/schedules/{_seg(name)}/trigger", model(m.ScheduleTriggered))


def schedule_body(
    name: Optional[str],
    cron: Optional[str],
    job: Optional[SpecLike],
    **rest: Any,
) -> Dict[str, Any]:
    body = _body(name=name, cron=cron, **rest)
    if job is not None:
        body["job"] = spec_json(job)
    return body


# Flow control.


def get_flow_key(key: str, tenant: Optional[str]) -> Call[m.FlowKey]:
    return Call("GET", "/v1/flow", model(m.FlowKey), params=_params(key=key, tenant=tenant), idempotent=True)


def _busy(r: httpx.Response) -> List[m.BusyKey]:
    return [from_json(m.BusyKey, k) for k in r.json()["keys"]]


def get_busiest_flow_keys(n: Optional[int]) -> Call[List[m.BusyKey]]:
    return Call("GET", "/v1/flow/busiest", _busy, params=_params(n=n), idempotent=True)


def pause_flow(key: Optional[str], tenant: Optional[str], type_: Optional[str]) -> Call[m.FlowChanged]:
    body = _body(key=key, tenant=tenant, type_=type_)
    return Call("POST", "/v1/admin/flow/pause", model(m.FlowChanged), body=body, has_body=True, idempotent=True)


def resume_flow(key: Optional[str], tenant: Optional[str], type_: Optional[str]) -> Call[m.FlowChanged]:
    body = _body(key=key, tenant=tenant, type_=type_)
    return Call("POST", "/v1/admin/flow/resume", model(m.FlowChanged), body=body, has_body=True, idempotent=True)


# Events and tokens.


def send_event(name: str, data: Any, event_id: Optional[str], tenant: Optional[str]) -> Call[m.EventSent]:
    body: Dict[str, Any] = {"name": name, "data": to_json(data)}
    body.update(_body(id=event_id, tenant=tenant))
    # A send with an id is answered as the first one when repeated: safe to retry.
    return Call("POST", "/v1/events", model(m.EventSent), body=body, has_body=True, idempotent=event_id is not None)


def job_token(job_id: str, ttl: Optional[str]) -> Call[m.ReadToken]:
    return Call("POST", f"/v1/jobs/{_seg(job_id)}/token", model(m.ReadToken), body=_body(ttl=ttl), has_body=True)


def tag_token(tag: str, ttl: Optional[str], tenant: Optional[str]) -> Call[m.ReadToken]:
    body = _body(tag=tag, ttl=ttl, tenant=tenant)
    return Call("POST", "/v1/tokens", model(m.ReadToken), body=body, has_body=True)


# Operations and admin.


def health() -> Call[m.Health]:
    # 503 answers an unhealthy edge with the same body; the client reads it rather than raising.
    return Call("GET", "/health", model(m.Health), idempotent=True, also_ok=(503,))


def health_live() -> Call[bool]:
    return Call("GET", "/health/live", lambda r: r.json().get("status") == "live", idempotent=True)


def whoami() -> Call[m.WhoAmI]:
    return Call("GET", "/v1/whoami", model(m.WhoAmI), idempotent=True)


def stats(tenant: Optional[str]) -> Call[m.Stats]:
    return Call("GET", "/v1/stats", model(m.Stats), params=_params(tenant=tenant), idempotent=True)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text, idempotent=True)


def webhook_secret(url: str, type_: Optional[str]) -> Call[m.WebhookSecret]:
    body = _body(url=url, type_=type_)
    return Call("POST", "/v1/admin/webhook-secret", model(m.WebhookSecret), body=body, has_body=True, idempotent=True)


def _backups(r: httpx.Response) -> List[m.BackupSummary]:
    return [from_json(m.BackupSummary, b) for b in r.json()["backups"]]


def list_backups() -> Call[List[m.BackupSummary]]:
    return Call("GET", "/v1/admin/backups", _backups, idempotent=True)


def create_backup() -> Call[m.Manifest]:
    return Call("POST", "/v1/admin/backups", model(m.Manifest), timeout=300.0)


def latest_backup() -> Call[m.BackupSummary]:
    return Call("GET", "/v1/admin/backups/latest", model(m.BackupSummary), idempotent=True)


def verify_backup(backup_id: str) -> Call[m.BackupVerdict]:
    return Call(
        "POST", f"/v1/admin/backups/{_seg(backup_id)}/verify", model(m.BackupVerdict), idempotent=True, timeout=300.0
    )


def restore_backup(backup_id: str) -> Call[m.RestoreResult]:
    body = {"backup": backup_id}
    return Call("POST", "/v1/admin/restore", model(m.RestoreResult), body=body, has_body=True, timeout=300.0)


def reseal(shard: int, cursor: Optional[str], limit: Optional[int]) -> Call[m.ResealResult]:
    body = _body(shard=shard, cursor=cursor, limit=limit)
    return Call("POST", "/v1/admin/reseal", model(m.ResealResult), body=body, has_body=True, idempotent=True)


# Live streams (the clients open them; these are their requests).


def job_events(job_id: str, after: Optional[str], token: Optional[str]) -> Call[None]:
    headers = {"accept": "text/event-stream"}
    if after is not None:
        headers["last-event-id"] = after
    return Call(
        "GET",
        f"/v1/jobs/{_seg(job_id)}/events",
        lambda r: None,
        params=_params(token=token),
        idempotent=True,
        headers=headers,
    )


def many_events(tag: Optional[str], token: Optional[str]) -> Call[None]:
    return Call(
        "GET",
        "/v1/events",
        lambda r: None,
        params=_params(tag=tag, token=token),
        idempotent=True,
        headers={"accept": "text/event-stream"},
    )


def live_item(event: str, data: str, last_id: Optional[str]) -> Union[m.Chunk, m.StateChange, None]:
    """A live stream's event as a model; None for events this client does not know."""
    import json

    if event == "chunk":
        body = json.loads(data)
        body_id = int(last_id) if last_id is not None and last_id.isdigit() else None
        return m.Chunk(
            id=body_id,
            attempt=int(body.get("attempt", 0)),
            stream=str(body.get("stream", "")),
            data=str(body.get("data", "")),
            raw=body,
        )
    if event == "state":
        return from_json(m.StateChange, json.loads(data))
    return None


def enqueue_spec(
    type_: str,
    payload: Any,
    options: Dict[str, Any],
    idempotency_key: Union[str, bool, None],
    auto_keys: bool,
) -> Dict[str, Any]:
    spec = spec_json(m.JobSpec(type=type_, payload=payload, **options))
    if "payload" not in spec and payload is None:
        spec.pop("payload", None)
    key = idempotency_key
    if key is True or (key is None and auto_keys):
        spec["idempotency_key"] = new_idempotency_key()
    elif isinstance(key, str):
        spec["idempotency_key"] = key
    return spec


def batch_specs(jobs: Sequence[SpecLike], keys: bool) -> List[Dict[str, Any]]:
    out = [spec_json(j) for j in jobs]
    if keys:
        for s in out:
            s.setdefault("idempotency_key", new_idempotency_key())
    return out
