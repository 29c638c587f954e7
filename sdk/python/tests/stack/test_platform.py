"""Stack scenarios: schedules, an event resuming a workflow run, flow views, tokens, deliveries,
typed errors, 429s, streams."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest
from conftest import WAIT, Delivery, Receiver, need, until, unique

import edgejobs
from edgejobs import Client, JobSpec, verify_webhook


def test_a_schedule_is_created_paused_triggered_changed_and_deleted(client: Client, admin: Client) -> None:
    name = unique("py-sched")
    created = admin.create_schedule(name, "0 3 * * *", JobSpec(type="noop", payload={"from": "schedule"}), timezone="Europe/Berlin")
    assert isinstance(created, edgejobs.models.Schedule) and created.name == name and not created.paused
    assert created.timezone == "Europe/Berlin" and created.next_at is not None
    with pytest.raises(edgejobs.ScheduleExists):
        admin.create_schedule(name, "0 3 * * *", {"type": "noop"})
    with pytest.raises(edgejobs.Forbidden):
        client.create_schedule(unique("py-sched"), "0 3 * * *", {"type": "noop"})
    assert admin.pause_schedule(name).paused is True
    assert admin.resume_schedule(name).paused is False
    run = admin.trigger_schedule(name)
    assert run.created and run.job.schedule == name and run.job.payload == {"from": "schedule"}
    changed = admin.update_schedule(name, cron="*/30 * * * *", paused=True)
    assert changed.cron == "*/30 * * * *" and changed.paused
    one = client.get_schedule(name)
    assert one.upcoming and len(one.upcoming) == 5 and one.runs and one.runs[0].job_id == run.job.id
    assert name in {s.name for s in client.iter_schedules(limit=50)}
    assert admin.delete_schedule(name).deleted is True
    with pytest.raises(edgejobs.ScheduleNotFound):
        client.get_schedule(name)


class ApprovalFlow:
    """The workflow HTTP protocol (README "Workflows"), as little of it as this test needs.

    The edge POSTs `{"run": {...}, "steps": [recorded steps]}` signed as Standard Webhooks
    with the type's own secret; the endpoint answers the first step its handler reaches that
    is not recorded (`{"op": "step", ...}`), or the run's end (`{"op": "complete", ...}`).
    The handler here: wait for `event` whose `/data/order` is the run's `/payload/order`,
    then complete with who approved it.
    """

    def __init__(self, secret: str, type_: str, event: str) -> None:
        self.secret, self.type, self.event = secret, type_, event
        #: Each verified call's steps, in order: what the edge had recorded at that call.
        self.calls: List[List[Dict[str, Any]]] = []
        self.refused = 0

    def __call__(self, d: Delivery) -> Tuple[int, Any]:
        try:
            call = verify_webhook(self.secret, d.headers, d.body)
        except edgejobs.WebhookVerificationError as e:
            self.refused += 1
            return 401, {"error": str(e)}
        run, steps = call["run"], call["steps"]
        if run["type"] != self.type:
            return 404, {"error": f"no workflow handles {run['type']}"}
        self.calls.append(steps)
        if not steps:
            wait = {"kind": "wait", "seq": 0, "name": "approval", "event": self.event, "timeout_ms": 300_000}
            wait["matches"] = [{"event": "/data/order", "value": run["payload"]["order"]}]
            return 200, {"op": "step", "step": wait}
        (step,) = steps
        if (step["kind"], step["name"], step["state"]) != ("wait", "approval", "completed"):
            return 200, {"op": "fail", "error": f"unexpected record {step}", "retryable": False}
        return 200, {"op": "complete", "result": {"approved_by": step["result"]["by"], "event": step["result"]}}


def test_an_event_resumes_a_workflow_run_waiting_for_it(client: Client, admin: Client, receiver: Receiver) -> None:
    # The stack declares JOB_TYPES {"<type>": {"lane": "edge", "workflow": true,
    # "url": "http://127.0.0.1:$EDGEJOBS_RECEIVER_PORT/workflow"}}: its runs are served here.
    type_ = need("EDGEJOBS_WORKFLOW_TYPE")
    path = "/workflow"
    secret = admin.webhook_secret(receiver.url(path), type=type_).secret
    assert secret.startswith("whsec_")
    event = unique("py.approved")
    flow = ApprovalFlow(secret, type_, event)
    receiver.routes[path] = flow
    try:
        order = unique("order")
        job = client.enqueue(type_, {"order": order})
        # Suspended on its wait: scheduled, holding no worker, the step recorded as waiting.

        def suspended() -> Optional[edgejobs.Job]:
            j = client.get_job(job.id)
            return j if j.state == "scheduled" and j.steps and j.steps[0].state == "waiting" else None

        waiting = until("the run waiting for its event", suspended)
        assert waiting.steps is not None and len(waiting.steps) == 1
        assert (waiting.steps[0].name, waiting.steps[0].kind, waiting.steps[0].event) == ("approval", "wait", event)
        # (A call the edge repeated after a lost answer would carry no record either.)
        assert flow.calls and all(c == [] for c in flow.calls), flow.calls
        calls_before = len(flow.calls)
        # An event of that name for another order leaves the run waiting.
        another = client.send_event(event, {"order": unique("order"), "by": "bob"})
        assert isinstance(another, edgejobs.models.EventSent) and another.resumed == 0 and another.duplicate is False
        event_id = unique("evt")
        sent = client.send_event(event, {"order": order, "by": "ann"}, id=event_id)
        assert (sent.name, sent.id, sent.duplicate, sent.resumed) == (event, event_id, False, 1)
        done = client.wait(job.id, timeout=WAIT)
        assert done.state == "completed", done
        assert done.result == {"approved_by": "ann", "event": {"order": order, "by": "ann"}}
        # The endpoint saw the event's data in the recorded wait, and verified every call.
        assert len(flow.calls) > calls_before and flow.calls[-1][0]["result"] == {"order": order, "by": "ann"}
        assert flow.refused == 0 and receiver.errors == []
        # The same send again is answered as the first and resumes nothing.
        again = client.send_event(event, {"order": order, "by": "ann"}, id=event_id)
        assert again.duplicate is True and again.resumed == 0
    finally:
        del receiver.routes[path]


def test_flow_control_views(client: Client, admin: Client) -> None:
    key = unique("py-flow")
    job = client.enqueue("noop", concurrency={"key": key, "limit": 1})
    assert job.flow is not None and job.flow.concurrency and job.flow.concurrency[0].key == key
    view = client.flow_key(key)
    assert isinstance(view, edgejobs.models.FlowKey) and view.key == key and view.tenant == "default"
    assert isinstance(client.busiest_flow_keys(5), list)
    assert admin.pause_flow(key=key).changed is True
    assert admin.pause_flow(key=key).changed is False
    assert client.flow_key(key).paused is True
    assert admin.resume_flow(key=key).changed is True
    assert client.wait(job.id, timeout=WAIT).state == "completed"
    with pytest.raises(edgejobs.Forbidden):
        client.pause_flow(key=key)


def test_read_tokens_read_their_job_only(client: Client, url: str) -> None:
    tag = unique("py-token")
    job = client.enqueue("noop", tags=[tag])
    another = client.enqueue("noop")
    token = client.job_token(job.id, ttl="1m")
    assert token.token.startswith("ejr_") and token.job == job.id
    with edgejobs.Client(url, token.token) as reader:
        assert reader.get_job(job.id).id == job.id
        with pytest.raises(edgejobs.JobNotFound):
            reader.get_job(another.id)
    assert client.get_job(job.id, token=token.token).id == job.id
    tag_token = client.tag_token(tag)
    assert tag_token.tag == tag and tag_token.tenant == "default"


def test_a_delivery_verifies_with_the_receivers_secret(client: Client, admin: Client, receiver: Receiver) -> None:
    path = f"/{unique('py-hook')}"
    secret = admin.webhook_secret(receiver.url(path))
    assert secret.secret.startswith("whsec_") and secret.secret in secret.secrets
    body = {"hello": path, "n": [1, 2, 3]}
    job = client.enqueue("webhook", {"url": receiver.url(path), "body": body})
    assert client.wait(job.id, timeout=WAIT).state == "completed"
    (delivery,) = until("the delivery", lambda: receiver.received(path) or None)
    assert verify_webhook(secret.secret, delivery.headers, delivery.body) == body
    with pytest.raises(edgejobs.WebhookVerificationError):
        verify_webhook(secret.secret, delivery.headers, delivery.body + b" ")
    other = admin.webhook_secret("http://127.0.0.1:1/elsewhere").secret
    with pytest.raises(edgejobs.WebhookVerificationError):
        verify_webhook(other, delivery.headers, delivery.body)


def test_each_error_code_the_api_can_be_led_to_is_a_typed_exception(client: Client, other: Client, url: str) -> None:
    cases: List[tuple] = []
    with pytest.raises(edgejobs.InvalidField) as bad:
        client.enqueue("noop", max_attempts=0)
    cases.append((bad.value, 400, "invalid_field"))
    assert bad.value.field == "max_attempts"
    with pytest.raises(edgejobs.UnknownType) as unknown:
        client.enqueue("no.such.type")
    cases.append((unknown.value, 400, "unknown_type"))
    with edgejobs.Client(url, "ej_not_a_key") as stranger:
        with pytest.raises(edgejobs.Unauthorized) as unauth:
            stranger.list_jobs()
    cases.append((unauth.value, 401, "unauthorized"))
    with pytest.raises(edgejobs.Forbidden) as forbidden:
        client.webhook_secret("http://127.0.0.1:1/")
    cases.append((forbidden.value, 403, "forbidden"))
    with pytest.raises(edgejobs.JobNotFound) as missing:
        client.get_job("j" + "0" * 29)
    cases.append((missing.value, 404, "job_not_found"))
    with pytest.raises(edgejobs.ScheduleNotFound) as no_schedule:
        client.get_schedule(unique("nope"))
    cases.append((no_schedule.value, 404, "schedule_not_found"))
    theirs = other.enqueue("noop")
    with pytest.raises(edgejobs.JobNotFound):
        client.get_job(theirs.id)  # another tenant's job reads as missing
    job = client.enqueue("noop")
    client.wait(job.id, timeout=WAIT)
    with pytest.raises(edgejobs.InvalidTransition) as conflict:
        client.cancel(job.id)
    cases.append((conflict.value, 409, "invalid_transition"))
    with pytest.raises(edgejobs.PayloadTooLarge) as large:
        client.enqueue("noop", "x" * (129 * 1024))
    cases.append((large.value, 413, "payload_too_large"))
    for exc, status, code in cases:
        assert (exc.status, exc.code) == (status, code) and exc.message, exc


def test_429_is_a_typed_error_without_retries_and_waited_out_with_them(url: str) -> None:
    key = need("EDGEJOBS_LIMITED_KEY")  # 3 enqueues per 10 s, for this test alone
    with edgejobs.Client(url, key, max_retries=0) as strict:
        refused = None
        for _ in range(5):
            try:
                strict.enqueue("noop")
            except edgejobs.RateLimited as e:
                refused = e
                break
        assert refused is not None, "5 enqueues in a row never hit a limit of 3 per 10 s"
        assert refused.status == 429 and refused.retry_after is not None and 0 < refused.retry_after <= 10
    slept: List[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    started = time.monotonic()
    with edgejobs.Client(url, key, sleep=sleep) as patient:
        job = patient.enqueue("noop")
    assert job.id.startswith("j") and slept, "the enqueue did not have to wait"
    assert slept[0] >= 1.0 and time.monotonic() - started >= slept[0]


def test_an_llm_chat_job_streams_its_tokens(client: Client) -> None:
    assert need("EDGEJOBS_LLM") == "1"
    message = f"stream these words one by one {unique('w')}"
    job = client.enqueue("llm.chat", {"messages": [{"role": "user", "content": message}]})
    chunks: List[edgejobs.Chunk] = []
    states: List[edgejobs.StateChange] = []
    deadline = time.monotonic() + WAIT
    with client.stream(job.id) as events:
        for ev in events:
            if isinstance(ev, edgejobs.Chunk):
                chunks.append(ev)
            else:
                states.append(ev)
            assert time.monotonic() < deadline, "the stream did not end in time"
    # The fake LLM answers `echo: <message>`, one token per word.
    assert "".join(c.data for c in chunks) == f"echo: {message}"
    assert [c.id for c in chunks] == list(range(1, len(chunks) + 1)) and len(chunks) > 3
    assert states and states[-1].state == "completed"
    # Resuming after chunk 2 gives the rest only.
    rest = [e.data for e in client.stream(job.id, after=2) if isinstance(e, edgejobs.Chunk)]
    assert "".join(rest) == "".join(c.data for c in chunks[2:])
    assert "".join(client.stream_text(job.id)) == f"echo: {message}"
