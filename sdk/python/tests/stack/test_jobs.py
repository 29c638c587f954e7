"""Stack scenarios of the sync client: jobs, batches, lists, cancel and retry, dead letters."""

from __future__ import annotations

import time
from typing import List

import pytest
from conftest import Receiver, WAIT, until, unique

import edgejobs
from edgejobs import Client, JobSpec


def test_enqueue_and_wait_for_the_result(client: Client) -> None:
    tag = unique("py-enqueue")
    job = client.enqueue("noop", {"n": 1}, tags=[tag], metadata={"by": "python"})
    assert isinstance(job, edgejobs.Job) and job.type == "noop" and job.tags == [tag]
    assert job.state in ("queued", "active", "completed") and job.payload == {"n": 1}
    done = client.wait(job.id, timeout=WAIT)
    assert done.state == "completed" and done.final and done.finished_at is not None
    assert client.result(job.id, timeout=WAIT) == done.result
    assert done.attempts and done.attempts[-1].outcome == "completed"


def test_a_subscription_entered_with_with_sees_a_job_enqueued_inside(client: Client) -> None:
    tag = unique("py-sync-sub")
    seen: List[edgejobs.StateChange] = []
    deadline = time.monotonic() + WAIT
    with client.subscribe(tag=tag) as events:
        job = client.enqueue("noop", tags=[tag])
        for ev in events:
            seen.append(ev)
            if ev.id == job.id and ev.final:
                break
            assert time.monotonic() < deadline, f"no final state in {WAIT} s: {seen}"
    assert [e.id for e in seen] == [job.id] * len(seen) and seen[-1].state == "completed"


def test_an_idempotency_key_names_the_same_job(client: Client) -> None:
    key = unique("py-key")
    first = client.enqueue("noop", idempotency_key=key)
    again = client.enqueue("noop", idempotency_key=key)
    assert again.id == first.id and again.idempotency_key == key
    generated = client.enqueue("noop", idempotency_key=True)
    assert (generated.idempotency_key or "").startswith("py-") and generated.id != first.id


def test_a_batch_answers_each_item_with_its_own_status(client: Client) -> None:
    result = client.enqueue_batch(
        [
            JobSpec(type="noop", payload={"i": 0}),
            {"type": "no.such.type"},
            JobSpec(type="noop", max_attempts=0),
            JobSpec(type="noop", payload="x" * (129 * 1024)),
            {"type": "noop", "payload": {"i": 4}},
        ]
    )
    assert [r.status for r in result.results] == [201, 400, 400, 413, 201]
    errors = [type(r.exception()) for r in result.results]
    assert errors == [type(None), edgejobs.UnknownType, edgejobs.InvalidField, edgejobs.PayloadTooLarge, type(None)]
    assert result.results[2].error is not None and result.results[2].error.field == "max_attempts"
    assert [j.payload for j in result.jobs] == [{"i": 0}, {"i": 4}]


def test_lists_are_iterated_page_by_page(client: Client) -> None:
    tag = unique("py-pages")
    created = client.enqueue_batch([JobSpec(type="noop", payload={"i": i}, tags=[tag]) for i in range(5)])
    ids = {j.id for j in created.jobs}
    assert len(ids) == 5
    first = client.list_jobs(tag=tag, limit=2)
    assert len(first.jobs) <= 2
    # The listing reads every shard's index: wait until all five are there.
    seen = until("the five jobs listed", lambda: (lambda got: got if got == ids else None)({j.id for j in client.iter_jobs(tag=tag, limit=2, max_pages=10)}))
    assert seen == ids
    pages, cursor = 0, None
    while True:
        page = client.list_jobs(tag=tag, limit=2, cursor=cursor)
        pages += 1
        assert all(isinstance(j, edgejobs.models.JobSummary) for j in page.jobs)
        if page.next_cursor is None or pages > 10:
            break
        cursor = page.next_cursor
    assert pages == 3
    with_payload = client.list_jobs(tag=tag, include=["payload"], limit=5)
    assert sorted(j.payload["i"] for j in with_payload.jobs) == [0, 1, 2, 3, 4]


def test_cancel_and_retry(client: Client) -> None:
    job = client.enqueue("noop", delay="1h")
    assert job.state == "scheduled"
    cancelled = client.cancel(job.id)
    assert cancelled.state == "cancelled"
    with pytest.raises(edgejobs.InvalidTransition) as e:
        client.cancel(job.id)
    assert e.value.status == 409 and e.value.code == "invalid_transition"
    with pytest.raises(edgejobs.InvalidTransition):
        client.retry_job(job.id)
    with pytest.raises(edgejobs.JobFailed):
        client.result(job.id, timeout=5)


def test_a_dead_job_is_listed_retried_and_replayed(client: Client, admin: Client, receiver: Receiver) -> None:
    tag = unique("py-dead")
    path = f"/{tag}"
    receiver.statuses[path] = 500
    spec = dict(payload={"url": receiver.url(path), "body": {"tag": tag}}, max_attempts=1, tags=[tag])
    job = client.enqueue("webhook", **spec)  # type: ignore[arg-type]
    dead = client.wait(job.id, timeout=WAIT)
    assert dead.state == "dead" and dead.last_error
    with pytest.raises(edgejobs.JobFailed):
        client.result(job.id, timeout=5)
    listed = until("the job in the dead-letter set", lambda: [j for j in client.list_dead(tag=tag).jobs] or None)
    assert [j.id for j in listed] == [job.id]
    # The receiver recovers: a retry delivers.
    receiver.statuses[path] = 200
    again = client.retry_job(job.id)
    assert again.state in ("queued", "active", "completed")
    assert client.wait(job.id, timeout=WAIT).state == "completed"
    # Bulk replay (admin) of a second dead job of the tag.
    receiver.statuses[path] = 500
    second = client.enqueue("webhook", **spec)  # type: ignore[arg-type]
    assert client.wait(second.id, timeout=WAIT).state == "dead"
    receiver.statuses[path] = 200
    until("the second job listed dead", lambda: [j for j in client.list_dead(tag=tag).jobs if j.id == second.id] or None)
    replay = admin.replay_dead(tag=tag)
    assert isinstance(replay, edgejobs.models.ReplayResult) and replay.ids == [second.id] and replay.replayed == 1
    assert client.wait(second.id, timeout=WAIT).state == "completed"
