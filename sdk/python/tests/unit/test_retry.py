"""Retries of 429 and 503 answers: Retry-After (seconds or an HTTP date), backoff, limits."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from helpers import Script, Sleeps, error, job_json

import edgejobs
from edgejobs import RateLimited, RetryPolicy, TransportError, Unavailable, parse_retry_after


@pytest.mark.parametrize(
    "value, expected",
    [
        ("3", 3.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("-1", None),
        ("1.5", None),
        (None, None),
    ],
)
def test_retry_after_parses_seconds_and_http_dates(value: object, expected: object) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(value, now) == expected  # type: ignore[arg-type]


def test_a_429_is_retried_after_its_retry_after_seconds() -> None:
    s = Script(error(429, "rate_limited", headers={"retry-after": "2"}), httpx.Response(201, json=job_json()))
    sleeps = Sleeps()
    job = s.client(sleep=sleeps).enqueue("noop")
    assert job.id.startswith("j") and len(s.requests) == 2
    assert sleeps.delays == [pytest.approx(2.05)]


def test_an_http_date_retry_after_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 4, usegmt=True)
    s = Script(error(503, "unavailable", headers={"retry-after": when}), httpx.Response(200, json=job_json()))
    sleeps = Sleeps()
    s.client(sleep=sleeps).get_job("j" + "0" * 29)
    assert len(sleeps.delays) == 1 and 2.5 < sleeps.delays[0] <= 4.1


def test_without_retry_after_the_backoff_grows_and_is_bounded() -> None:
    s = Script(*[error(503, "unavailable") for _ in range(4)], httpx.Response(200, json=job_json()))
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=4, base_delay=1.0, max_delay=3.0)
    s.client(sleep=sleeps, retry=policy).get_job("j" + "0" * 29)
    caps = [1.0, 2.0, 3.0, 3.0]
    assert len(sleeps.delays) == 4
    assert all(0 <= d <= cap for d, cap in zip(sleeps.delays, caps))


def test_max_retries_zero_raises_the_typed_error_with_its_retry_after() -> None:
    s = Script(error(429, "rate_limited", "slow down", headers={"retry-after": "7"}))
    sleeps = Sleeps()
    with pytest.raises(RateLimited) as e:
        s.client(sleep=sleeps, max_retries=0).enqueue("noop")
    assert (e.value.status, e.value.code, e.value.retry_after) == (429, "rate_limited", 7.0)
    assert e.value.message == "slow down" and sleeps.delays == []
    assert isinstance(e.value, edgejobs.TooManyRequestsError)


def test_retries_end_with_the_last_error() -> None:
    s = Script(*[error(503, "unavailable") for _ in range(3)])
    with pytest.raises(Unavailable):
        s.client(max_retries=2).list_jobs()
    assert len(s.requests) == 3


def test_a_retry_after_longer_than_the_policy_allows_is_raised_at_once() -> None:
    s = Script(error(429, "throttled", headers={"retry-after": "3600"}))
    sleeps = Sleeps()
    with pytest.raises(edgejobs.Throttled):
        s.client(sleep=sleeps).enqueue("noop")
    assert sleeps.delays == []


def test_other_errors_are_not_retried() -> None:
    for reply, cls in [
        (error(400, "invalid_field"), edgejobs.InvalidField),
        (error(500, "internal"), edgejobs.Internal),
        (error(409, "invalid_transition"), edgejobs.InvalidTransition),
    ]:
        s = Script(reply)
        with pytest.raises(cls):
            s.client().cancel("j" + "0" * 29)
        assert len(s.requests) == 1


def test_a_refused_connection_is_retried_and_then_raised_as_transport_error() -> None:
    req = httpx.Request("GET", "http://edge.test/")
    s = Script(httpx.ConnectError("refused", request=req), httpx.Response(200, json=job_json()))
    assert s.client().get_job("j" + "0" * 29).state == "queued"
    s = Script(*[httpx.ConnectError("refused", request=req) for _ in range(4)])
    with pytest.raises(TransportError):
        s.client().get_job("j" + "0" * 29)


def test_a_read_timeout_of_an_enqueue_without_key_is_not_retried_but_with_one_it_is() -> None:
    req = httpx.Request("POST", "http://edge.test/v1/jobs")
    s = Script(httpx.ReadTimeout("slow", request=req))
    with pytest.raises(TransportError):
        s.client().enqueue("noop")
    assert len(s.requests) == 1
    s = Script(httpx.ReadTimeout("slow", request=req), httpx.Response(200, json=job_json()))
    s.client().enqueue("noop", idempotency_key=True)
    bodies = s.bodies()
    assert len(bodies) == 2 and bodies[0]["idempotency_key"] == bodies[1]["idempotency_key"]
