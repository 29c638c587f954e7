"""How calls become requests: idempotency keys, pagination, query and body shapes, auth."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest
from helpers import Script, error, job_json

import edgejobs
from edgejobs import JobSpec


def summary(i: int) -> dict:
    j = job_json(f"j{i:029x}")
    for k in ("payload", "metadata"):
        j.pop(k)
    return j


def test_no_idempotency_key_unless_asked() -> None:
    s = Script(httpx.Response(201, json=job_json()))
    s.client().enqueue("noop", {"a": 1})
    assert s.bodies() == [{"type": "noop", "payload": {"a": 1}}]


def test_a_generated_key_is_fresh_per_enqueue_and_kept_across_its_retries() -> None:
    s = Script(
        error(503, "unavailable"),
        httpx.Response(201, json=job_json()),
        httpx.Response(201, json=job_json()),
    )
    c = s.client(idempotency_keys=True)
    c.enqueue("noop")
    c.enqueue("noop")
    keys = [b["idempotency_key"] for b in s.bodies()]
    assert keys[0] == keys[1] != keys[2]
    assert all(k.startswith("py-") and len(k) == 35 for k in keys)


def test_an_explicit_key_wins_and_false_turns_generation_off() -> None:
    s = Script(httpx.Response(200, json=job_json()), httpx.Response(201, json=job_json()))
    c = s.client(idempotency_keys=True)
    c.enqueue("noop", idempotency_key="order-42")
    c.enqueue("noop", idempotency_key=False)
    assert s.bodies()[0]["idempotency_key"] == "order-42" and "idempotency_key" not in s.bodies()[1]


def test_batch_items_get_keys_when_asked() -> None:
    s = Script(httpx.Response(200, json={"results": [{"status": 201, "job": job_json()}] * 2}))
    s.client().enqueue_batch([JobSpec(type="noop"), {"type": "noop", "idempotency_key": "mine"}], idempotency_keys=True)
    jobs = s.bodies()[0]["jobs"]
    assert jobs[0]["idempotency_key"].startswith("py-") and jobs[1]["idempotency_key"] == "mine"


def test_the_spec_fields_and_times_are_sent_as_the_api_names_them() -> None:
    s = Script(httpx.Response(201, json=job_json()))
    when = dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    s.client().enqueue(
        "webhook", {"url": "https://x.test/h"}, run_at=when, max_attempts=1, tags=["a"],
        concurrency={"key": "k", "limit": 2}, extra={"future_field": 1},
    )  # fmt: skip
    req = s.requests[0]
    assert req.headers["authorization"] == "Bearer ej_test" and req.headers["content-type"] == "application/json"
    assert s.bodies()[0] == {
        "type": "webhook", "payload": {"url": "https://x.test/h"}, "run_at": "2030-01-02T03:04:05.678Z",
        "max_attempts": 1, "tags": ["a"], "concurrency": {"key": "k", "limit": 2}, "future_field": 1,
    }  # fmt: skip


def test_list_filters_become_query_parameters() -> None:
    s = Script(httpx.Response(200, json={"jobs": [], "next_cursor": None}))
    s.client().list_jobs(state="dead", from_=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), include=["payload", "result"], limit=5)
    q = dict(s.requests[0].url.params)
    assert q == {"state": "dead", "from": "2026-01-01T00:00:00.000Z", "include": "payload,result", "limit": "5"}


def test_iteration_follows_the_cursor_to_the_last_page() -> None:
    pages = {
        None: {"jobs": [summary(1), summary(2)], "next_cursor": "c1"},
        "c1": {"jobs": [summary(3), summary(4)], "next_cursor": "c2"},
        "c2": {"jobs": [summary(5)], "next_cursor": None},
    }

    def answer(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[req.url.params.get("cursor")])

    s = Script(answer, answer, answer)
    ids = [j.id for j in s.client().iter_jobs(tag="t", limit=2)]
    assert ids == [f"j{i:029x}" for i in range(1, 6)]
    assert [r.url.params.get("cursor") for r in s.requests] == [None, "c1", "c2"]
    assert all(r.url.params["tag"] == "t" for r in s.requests)
    s = Script(answer, answer)
    assert len(list(s.client().iter_dead(max_pages=2))) == 4 and s.requests[0].url.path == "/v1/dead"


def test_models_are_frozen_typed_and_keep_the_raw_json() -> None:
    s = Script(httpx.Response(200, json=job_json(state="completed", result={"ok": True}, new_field=7)))
    job = s.client().get_job("j" + "0" * 29)
    assert job.final and job.result == {"ok": True} and isinstance(job.backoff, edgejobs.models.Backoff)
    assert job.created_at == dt.datetime(2026, 12, 6, 19, 44, 50, 519000, tzinfo=dt.timezone.utc)
    assert job.raw["new_field"] == 7
    with pytest.raises(Exception):
        job.state = "dead"  # type: ignore[misc]


def test_a_reply_without_a_required_field_is_an_error() -> None:
    body = job_json()
    del body["state"]
    with pytest.raises(TypeError, match="state"):
        Script(httpx.Response(200, json=body)).client().get_job("j" + "0" * 29)


def test_wait_long_polls_until_final_and_times_out_with_the_last_job() -> None:
    s = Script(httpx.Response(200, json=job_json(state="active")), httpx.Response(200, json=job_json(state="completed", result=1)))
    clock = iter([0.0, 0.0, 0.0, 30.0, 30.0, 30.0, 31.0, 31.0])
    c = s.client(clock=lambda: next(clock))
    assert c.result("j" + "0" * 29, timeout=100) == 1
    assert [r.url.params["wait"] for r in s.requests] == ["30000ms", "30000ms"]
    s = Script(httpx.Response(200, json=job_json(state="active")))
    ticks = iter([0.0, 0.0, 0.0, 10.0, 10.0])
    with pytest.raises(edgejobs.WaitTimeout) as e:
        s.client(clock=lambda: next(ticks)).wait("j" + "0" * 29, timeout=10)
    assert e.value.job.state == "active"
    s = Script(httpx.Response(200, json=job_json(state="dead", last_error="boom")))
    with pytest.raises(edgejobs.JobFailed, match="boom"):
        s.client().result("j" + "0" * 29)


def test_ids_and_names_stay_in_their_path_segment() -> None:
    s = Script(error(404, "schedule_not_found"))
    with pytest.raises(edgejobs.ScheduleNotFound):
        s.client().get_schedule("a/../b")
    assert s.requests[0].url.raw_path == b"/v1/schedules/a%2F..%2Fb"


def test_the_environment_supplies_url_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEJOBS_URL", raising=False)
    with pytest.raises(ValueError, match="EDGEJOBS_URL"):
        edgejobs.Client(api_key="k")
    monkeypatch.setenv("EDGEJOBS_URL", "http://e.test/")
    monkeypatch.setenv("EDGEJOBS_API_KEY", "k2")
    assert edgejobs.Client().url == "http://e.test"
