"""The synchronous client: `Client(url=..., api_key=...)`, one method per API operation.

Requests go through `_send`, which retries 429 and 503 answers (honouring `Retry-After`)
and connection failures per the client's `RetryPolicy`, and raises the typed exceptions of
`edgejobs.errors` for every other error answer. Live streams are iterators of `Chunk` and
`StateChange`, resumed with `Last-Event-ID` when the connection drops.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Generator, Iterator, List, Mapping, Optional, Sequence, TypeVar, Union

import httpx

from . import _base, _ops
from . import models as m
from ._ops import Call, Duration, SpecLike, TimeLike
from ._retry import RETRY_STATUSES, RetryPolicy
from .errors import JobFailed, TransportError, WaitTimeout
from .sse import SseParser

T = TypeVar("T")
LiveItem = Union[m.Chunk, m.StateChange]

__all__ = ["Client", "EventStream"]


class EventStream(Iterator[T]):
    """A live stream: iterate it, and close it (or use `with`) when leaving early.

    It connects at `with` (the request is answered before the block runs) or else at the
    first iteration, and sees what happens from then on.
    """

    def __init__(self, gen: Iterator[Union[T, _base.Connected]]) -> None:
        self._gen = gen
        # An item read while connecting in `__enter__` (only if one came before the marker).
        self._early: List[T] = []
        self._connected = False

    def __iter__(self) -> "EventStream[T]":
        return self

    def __next__(self) -> T:
        if self._early:
            return self._early.pop()
        while True:
            item = next(self._gen)
            if not isinstance(item, _base.Connected):
                return item
            self._connected = True

    def connect(self) -> None:
        """Opens the connection now, if it is not open yet (the first iteration would)."""
        if self._connected:
            return
        self._connected = True
        try:
            item = next(self._gen)
        except StopIteration:
            return
        if not isinstance(item, _base.Connected):
            self._early.append(item)

    def close(self) -> None:
        close = getattr(self._gen, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "EventStream[T]":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """A client of the edgejobs API.

    url, api_key: the API's base URL and a key (`jobs` or `admin` scope) or a read token;
        default EDGEJOBS_URL and EDGEJOBS_API_KEY.
    timeout: seconds per request (default 30; long polls and backups take what they need).
    max_retries / retry: how 429 and 503 answers and failed connections are retried
        (default `RetryPolicy()`: 3 retries, `Retry-After` honoured up to 60 s).
    idempotency_keys: give every `enqueue` a generated idempotency key (default False; a
        call can ask with `idempotency_key=True`). A retried enqueue reuses its key, so a
        retry after a lost answer never creates a second job.
    sleep, clock: injectable for tests (default `time.sleep`, `time.monotonic`).
    transport / http_client: an httpx transport (e.g. `httpx.MockTransport`) or client.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        timeout: float = _base.DEFAULT_TIMEOUT,
        max_retries: Optional[int] = None,
        retry: Optional[RetryPolicy] = None,
        idempotency_keys: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: Optional[httpx.BaseTransport] = None,
        http_client: Optional[httpx.Client] = None,
        user_agent: Optional[str] = None,
    ) -> None:
        s = _base.settings(url, api_key)
        self.url = s["url"]
        self.retry = _base.policy(retry, max_retries)
        self.idempotency_keys = idempotency_keys
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._headers = _base.headers(s["api_key"], user_agent)
        self._own = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=timeout)

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # The one place requests are sent.

    def _request(self, call: Call[Any]) -> httpx.Request:
        timeout = httpx.Timeout(max(self._timeout, call.timeout or 0))
        return self._http.build_request(
            call.method,
            self.url + call.path,
            params=call.params or None,
            json=call.body if call.has_body else None,
            headers={**self._headers, **call.headers},
            timeout=timeout,
        )

    def _send_raw(self, call: Call[Any], *, stream: bool = False) -> httpx.Response:
        retry = 0
        while True:
            try:
                resp = self._http.send(self._request(call), stream=stream)
            except httpx.TransportError as e:
                wait = self.retry.delay(retry, None) if _base.transport_retryable(e, call.idempotent) else None
                if wait is None:
                    raise TransportError(f"{call.method} {call.path}: {e!r}") from e
                self._sleep(wait)
                retry += 1
                continue
            status = resp.status_code
            if status < 400 or status in call.also_ok:
                return resp
            body = resp.read()
            resp.close()
            if status in RETRY_STATUSES:
                wait = self.retry.delay(retry, _base.retry_after(resp))
                if wait is not None:
                    self._sleep(wait)
                    retry += 1
                    continue
            raise _base.error_from(resp, body)

    def _call(self, call: Call[T]) -> T:
        resp = self._send_raw(call)
        return call.parse(resp)

    # Jobs.

    def enqueue(
        self,
        type: str,
        payload: Any = None,
        *,
        idempotency_key: Union[str, bool, None] = None,
        max_attempts: Optional[int] = None,
        timeout: Union[int, str, None] = None,
        backoff: Optional[Mapping[str, Any]] = None,
        tags: Optional[List[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        delay: Union[int, str, None] = None,
        run_at: Optional[TimeLike] = None,
        tenant: Optional[str] = None,
        concurrency: Union[Mapping[str, Any], List[Mapping[str, Any]], None] = None,
        rate: Optional[Mapping[str, Any]] = None,
        priority: Optional[int] = None,
        debounce: Optional[Mapping[str, Any]] = None,
        throttle: Optional[Mapping[str, Any]] = None,
        on_complete: Optional[Mapping[str, Any]] = None,
        on_fail: Optional[Mapping[str, Any]] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> m.Job:
        """Enqueues a job (`POST /v1/jobs`) and returns it.

        `idempotency_key`: a key of yours, or True for a generated one (see the class).
        The other arguments are the API's `JobSpec` fields; `extra` passes fields this
        client does not know yet.
        """
        options: Dict[str, Any] = dict(
            max_attempts=max_attempts, timeout=timeout, backoff=backoff, tags=tags, metadata=metadata,
            delay=delay, run_at=run_at, tenant=tenant, concurrency=concurrency, rate=rate,
            priority=priority, debounce=debounce, throttle=throttle, on_complete=on_complete,
            on_fail=on_fail, extra=dict(extra or {}),
        )  # fmt: skip
        spec = _ops.enqueue_spec(type, payload, options, idempotency_key, self.idempotency_keys)
        return self._call(_ops.enqueue_job(spec))

    def enqueue_spec(self, spec: SpecLike, *, idempotency_key: Union[str, bool, None] = None) -> m.Job:
        """Enqueues a `JobSpec` (or the API's JSON object of one)."""
        body = _ops.spec_json(spec)
        if idempotency_key is True or (idempotency_key is None and self.idempotency_keys):
            body.setdefault("idempotency_key", _ops.new_idempotency_key())
        elif isinstance(idempotency_key, str):
            body["idempotency_key"] = idempotency_key
        return self._call(_ops.enqueue_job(body))

    def enqueue_batch(
        self,
        jobs: Sequence[SpecLike],
        *,
        on_complete: Optional[Mapping[str, Any]] = None,
        idempotency_keys: Optional[bool] = None,
    ) -> m.BatchResult:
        """Enqueues 1 to 100 jobs; each item succeeds or fails on its own (see `BatchResult`).

        With `idempotency_keys` each item without a key gets a generated one (not with
        `on_complete`, which refuses keyed items).
        """
        keys = self.idempotency_keys if idempotency_keys is None else idempotency_keys
        return self._call(_ops.enqueue_batch(_ops.batch_specs(jobs, keys), on_complete))

    def get_job(self, job_id: str, *, wait: Optional[Duration] = None, token: Optional[str] = None) -> m.Job:
        """Reads a job; with `wait` (seconds, at most 60) the answer waits for it to be final."""
        return self._call(_ops.get_job(job_id, wait, token))

    def wait(self, job_id: str, *, timeout: float = 300.0, poll: float = 30.0) -> m.Job:
        """Waits (long polls) until the job is final and returns it; `WaitTimeout` after `timeout` s."""
        deadline = self._clock() + timeout
        while True:
            left = deadline - self._clock()
            started = self._clock()
            job = self.get_job(job_id, wait=max(0.0, min(poll, left, 60.0)))
            if job.final:
                return job
            if self._clock() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.state} after {timeout} s", job)
            if self._clock() - started < 0.5:
                # The edge answered at once without a final state: do not spin on it.
                self._sleep(0.5)

    def result(self, job_id: str, *, timeout: float = 300.0) -> Any:
        """The result of a job once completed; `JobFailed` if it ended dead or cancelled."""
        job = self.wait(job_id, timeout=timeout)
        if job.state != "completed":
            raise JobFailed(job)
        return job.result

    def list_jobs(
        self,
        *,
        state: Optional[str] = None,
        type: Optional[str] = None,
        tag: Optional[str] = None,
        from_: Optional[TimeLike] = None,
        to: Optional[TimeLike] = None,
        id_prefix: Optional[str] = None,
        q: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        include: Optional[Sequence[str]] = None,
        tenant: Optional[str] = None,
    ) -> m.JobPage:
        """One page of jobs, newest first (`next_cursor` for the next)."""
        return self._call(
            _ops.list_jobs(
                state=state, type=type, tag=tag, from_=from_, to=to, id_prefix=id_prefix, q=q,
                limit=limit, cursor=cursor, include=include, tenant=tenant,
            )  # fmt: skip
        )

    def iter_jobs(self, *, max_pages: Optional[int] = None, **filters: Any) -> Iterator[m.JobSummary]:
        """Every job matching `list_jobs`'s filters, page after page (at most `max_pages`)."""
        return self._pages(self.list_jobs, filters, max_pages)

    def cancel(self, job_id: str) -> m.Job:
        """Cancels a queued or scheduled job, or marks an active one; `InvalidTransition` once final."""
        return self._call(_ops.cancel_job(job_id))

    def retry_job(self, job_id: str) -> m.Job:
        """Replays a dead job as a new attempt series; `InvalidTransition` if it is not dead."""
        return self._call(_ops.retry_job(job_id))

    def list_dead(
        self,
        *,
        type: Optional[str] = None,
        tag: Optional[str] = None,
        from_: Optional[TimeLike] = None,
        to: Optional[TimeLike] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
        include: Optional[Sequence[str]] = None,
        tenant: Optional[str] = None,
    ) -> m.JobPage:
        """One page of the dead-letter set, newest first."""
        return self._call(
            _ops.list_dead(
                type=type, tag=tag, from_=from_, to=to, limit=limit, cursor=cursor, include=include, tenant=tenant
            )
        )

    def iter_dead(self, *, max_pages: Optional[int] = None, **filters: Any) -> Iterator[m.JobSummary]:
        return self._pages(self.list_dead, filters, max_pages)

    def replay_dead(
        self,
        *,
        type: Optional[str] = None,
        tag: Optional[str] = None,
        from_: Optional[TimeLike] = None,
        to: Optional[TimeLike] = None,
        limit: Optional[int] = None,
        tenant: Optional[str] = None,
    ) -> m.ReplayResult:
        """Replays dead jobs in bulk (admin key)."""
        return self._call(_ops.replay_dead(type=type, tag=tag, from_=from_, to=to, limit=limit, tenant=tenant))

    def _pages(self, fetch: Callable[..., m.JobPage], filters: Dict[str, Any], max_pages: Optional[int]) -> Iterator[m.JobSummary]:
        cursor = filters.pop("cursor", None)
        pages = 0
        while True:
            page = fetch(cursor=cursor, **filters)
            pages += 1
            yield from page.jobs
            if page.next_cursor is None or page.next_cursor == cursor or (max_pages and pages >= max_pages):
                return
            cursor = page.next_cursor

    # Schedules.

    def create_schedule(
        self,
        name: str,
        cron: str,
        job: SpecLike,
        *,
        timezone: Optional[str] = None,
        overlap: Optional[str] = None,
        catch_up: Optional[str] = None,
        paused: Optional[bool] = None,
        starts_at: Optional[TimeLike] = None,
        ends_at: Optional[TimeLike] = None,
    ) -> m.Schedule:
        """Creates a schedule (admin key); `ScheduleExists` if the name is taken."""
        body = _ops.schedule_body(
            name, cron, job, timezone=timezone, overlap=overlap, catch_up=catch_up, paused=paused,
            starts_at=starts_at, ends_at=ends_at,
        )  # fmt: skip
        return self._call(_ops.create_schedule(body))

    def get_schedule(self, name: str) -> m.Schedule:
        return self._call(_ops.get_schedule(name))

    def list_schedules(
        self, *, limit: Optional[int] = None, cursor: Optional[str] = None, tenant: Optional[str] = None
    ) -> m.SchedulePage:
        return self._call(_ops.list_schedules(limit, cursor, tenant))

    def iter_schedules(self, *, limit: Optional[int] = None, tenant: Optional[str] = None) -> Iterator[m.Schedule]:
        cursor: Optional[str] = None
        while True:
            page = self.list_schedules(limit=limit, cursor=cursor, tenant=tenant)
            yield from page.schedules
            if page.next_cursor is None or page.next_cursor == cursor:
                return
            cursor = page.next_cursor

    def update_schedule(
        self,
        name: str,
        *,
        cron: Optional[str] = None,
        job: Optional[SpecLike] = None,
        timezone: Optional[str] = None,
        overlap: Optional[str] = None,
        catch_up: Optional[str] = None,
        paused: Optional[bool] = None,
        starts_at: Optional[TimeLike] = None,
        ends_at: Optional[TimeLike] = None,
    ) -> m.Schedule:
        """Changes the given fields of a schedule (admin key)."""
        body = _ops.schedule_body(
            None, cron, job, timezone=timezone, overlap=overlap, catch_up=catch_up, paused=paused,
            starts_at=starts_at, ends_at=ends_at,
        )  # fmt: skip
        return self._call(_ops.patch_schedule(name, body))

    def delete_schedule(self, name: str) -> m.ScheduleDeleted:
        return self._call(_ops.delete_schedule(name))

    def pause_schedule(self, name: str) -> m.Schedule:
        return self._call(_ops.pause_schedule(name))

    def resume_schedule(self, name: str) -> m.Schedule:
        return self._call(_ops.resume_schedule(name))

    def trigger_schedule(self, name: str) -> m.ScheduleTriggered:
        return self._call(_ops.trigger_schedule(name))

    # Flow control.

    def flow_key(self, key: str, *, tenant: Optional[str] = None) -> m.FlowKey:
        """One flow key's state: running, waiting, rate, parked, paused."""
        return self._call(_ops.get_flow_key(key, tenant))

    def busiest_flow_keys(self, n: Optional[int] = None) -> List[m.BusyKey]:
        return self._call(_ops.get_busiest_flow_keys(n))

    def pause_flow(
        self, *, key: Optional[str] = None, tenant: Optional[str] = None, type: Optional[str] = None
    ) -> m.FlowChanged:
        """Pauses a flow key of a tenant, or a job type (admin key)."""
        return self._call(_ops.pause_flow(key, tenant, type))

    def resume_flow(
        self, *, key: Optional[str] = None, tenant: Optional[str] = None, type: Optional[str] = None
    ) -> m.FlowChanged:
        return self._call(_ops.resume_flow(key, tenant, type))

    # Events, tokens, live streams.

    def send_event(
        self, name: str, data: Any = None, *, id: Optional[str] = None, tenant: Optional[str] = None
    ) -> m.EventSent:
        """Sends an event: resumes the workflow runs waiting for it, starts its `on_event` types."""
        return self._call(_ops.send_event(name, data, id, tenant))

    def job_token(self, job_id: str, *, ttl: Optional[str] = None) -> m.ReadToken:
        """A read token for one job (for a browser: `?token=`)."""
        return self._call(_ops.job_token(job_id, ttl))

    def tag_token(self, tag: str, *, ttl: Optional[str] = None, tenant: Optional[str] = None) -> m.ReadToken:
        return self._call(_ops.tag_token(tag, ttl, tenant))

    def stream(
        self,
        job_id: str,
        *,
        after: Optional[int] = None,
        token: Optional[str] = None,
        max_reconnects: int = _base.DEFAULT_RECONNECTS,
    ) -> EventStream[LiveItem]:
        """A job's live results: `Chunk`s, then `StateChange`s; it ends after the final state.

        A dropped connection is resumed after the last chunk received (`Last-Event-ID`).
        """
        return EventStream(self._job_events(job_id, after, token, max_reconnects))

    def stream_text(self, job_id: str, *, stream: Optional[str] = None, timeout: float = 300.0) -> Iterator[str]:
        """The data of a job's chunks (of one named stream, if given), as they arrive."""
        deadline = self._clock() + timeout
        with self.stream(job_id) as events:
            for ev in events:
                if isinstance(ev, m.Chunk) and (stream is None or ev.stream == stream):
                    yield ev.data
                if self._clock() > deadline:
                    raise WaitTimeout(f"the stream of job {job_id} did not end in {timeout} s")

    def subscribe(
        self, *, tag: Optional[str] = None, token: Optional[str] = None, max_reconnects: int = _base.DEFAULT_RECONNECTS
    ) -> EventStream[m.StateChange]:
        """The states of many jobs (a tag's, or every job the key sees) as they change. Endless.

        It connects at `with` (or at the first iteration) and sees changes from then on only.
        """
        return EventStream(self._many_events(tag, token, max_reconnects))

    def _sse(self, call: Call[Any], parser: SseParser) -> Generator[Any, None, None]:
        resp = self._send_raw(call, stream=True)
        try:
            yield _base.CONNECTED
            for chunk in resp.iter_bytes():
                yield from parser.feed(chunk)
            parser.close()
        finally:
            resp.close()

    def _job_events(
        self, job_id: str, after: Optional[int], token: Optional[str], reconnects: int
    ) -> Iterator[Union[LiveItem, _base.Connected]]:
        last = None if after is None else str(after)
        drops = 0
        while True:
            parser = SseParser()
            events = self._sse(_ops.job_events(job_id, last, token), parser)
            try:
                for ev in events:
                    if isinstance(ev, _base.Connected):
                        yield ev
                        continue
                    item = _ops.live_item(ev.event, ev.data, ev.id)
                    if item is None:
                        continue
                    if isinstance(item, m.Chunk) and item.id is not None:
                        last = str(item.id)
                    yield item
                    if isinstance(item, m.StateChange) and item.final:
                        return
            except (httpx.TransportError, TransportError):
                pass
            finally:
                # Closed here, not by the garbage collector: the connection goes back now.
                events.close()
            drops += 1
            if drops > reconnects:
                raise TransportError(f"the stream of job {job_id} dropped {drops} times before its end")
            self._sleep(min(5.0, (parser.retry or 1000) / 1000))

    def _many_events(
        self, tag: Optional[str], token: Optional[str], reconnects: int
    ) -> Iterator[Union[m.StateChange, _base.Connected]]:
        drops = 0
        while True:
            parser = SseParser()
            events = self._sse(_ops.many_events(tag, token), parser)
            try:
                for ev in events:
                    if isinstance(ev, _base.Connected):
                        yield ev
                        continue
                    item = _ops.live_item(ev.event, ev.data, ev.id)
                    if isinstance(item, m.StateChange):
                        drops = 0
                        yield item
            except (httpx.TransportError, TransportError):
                pass
            finally:
                events.close()
            drops += 1
            if drops > reconnects:
                raise TransportError(f"the event stream dropped {drops} times in a row")
            self._sleep(min(5.0, (parser.retry or 1000) / 1000))

    # Operations and admin.

    def health(self) -> m.Health:
        return self._call(_ops.health())

    def live(self) -> bool:
        return self._call(_ops.health_live())

    def whoami(self) -> m.WhoAmI:
        return self._call(_ops.whoami())

    def stats(self, *, tenant: Optional[str] = None) -> m.Stats:
        return self._call(_ops.stats(tenant))

    def metrics(self) -> str:
        """The Prometheus exposition text (admin key or the metrics token)."""
        return self._call(_ops.metrics())

    def webhook_secret(self, url: str, *, type: Optional[str] = None) -> m.WebhookSecret:
        """The `whsec_` secret a receiver at `url` verifies deliveries with (admin key)."""
        return self._call(_ops.webhook_secret(url, type))

    def list_backups(self) -> List[m.BackupSummary]:
        return self._call(_ops.list_backups())

    def create_backup(self) -> m.Manifest:
        return self._call(_ops.create_backup())

    def latest_backup(self) -> m.BackupSummary:
        return self._call(_ops.latest_backup())

    def verify_backup(self, backup_id: str) -> m.BackupVerdict:
        return self._call(_ops.verify_backup(backup_id))

    def restore_backup(self, backup_id: str) -> m.RestoreResult:
        return self._call(_ops.restore_backup(backup_id))

    def reseal(self, shard: int, *, cursor: Optional[str] = None, limit: Optional[int] = None) -> m.ResealResult:
        return self._call(_ops.reseal(shard, cursor, limit))
