"""Error classes: one per code of openapi.json's ErrorBody, in the family of its status."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from helpers import Script

import edgejobs
from edgejobs import errors

OPENAPI = Path(__file__).resolve().parents[4] / "functions" / "edge" / "openapi.json"

# Each code's status, as shared/core/src/error.rs (`ErrorCode::status`) maps it.
STATUS = {
    "invalid_json": 400, "invalid_field": 400, "unknown_type": 400, "unauthorized": 401, "forbidden": 403,
    "not_found": 404, "job_not_found": 404, "schedule_not_found": 404, "method_not_allowed": 405,
    "invalid_transition": 409, "schedule_exists": 409, "stale_attempt": 409, "lease_lost": 409,
    "lease_held": 409, "lease_mismatch": 409, "not_leased": 409, "job_cancelled": 409,
    "nondeterministic_step": 409, "step_limit": 413, "live_limit": 413, "payload_too_large": 413,
    "unsupported_media_type": 415, "rate_limited": 429, "tenant_pending_limit": 429, "throttled": 429,
    "internal": 500, "unavailable": 503,
}  # fmt: skip

FAMILY = {400: errors.BadRequestError, 401: errors.Unauthorized, 403: errors.Forbidden,
          404: errors.NotFoundError, 405: errors.MethodNotAllowed, 409: errors.ConflictError,
          413: errors.TooLargeError, 415: errors.UnsupportedMediaType, 429: errors.TooManyRequestsError,
          500: errors.ServerError, 503: errors.ServerError}  # fmt: skip


def openapi_codes() -> list:
    spec = json.loads(OPENAPI.read_text())
    return spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]["enum"]


def test_every_code_of_the_api_has_its_class_and_no_other() -> None:
    codes = openapi_codes()
    assert len(codes) >= 27
    assert set(errors.CODES) == set(codes)
    assert set(STATUS) == set(codes), "the status table here is out of date"


@pytest.mark.parametrize("code", sorted(STATUS))
def test_an_answer_raises_its_code_class_in_its_status_family(code: str) -> None:
    status = STATUS[code]
    s = Script(httpx.Response(status, json={"error": {"code": code, "message": "m", "field": "payload.url"}}))
    with pytest.raises(errors.ApiError) as e:
        s.client(max_retries=0).get_job("j" + "0" * 29)
    exc = e.value
    assert type(exc) is errors.CODES[code] and exc.code == code and exc.status == status
    assert isinstance(exc, FAMILY[status]) and isinstance(exc, edgejobs.EdgejobsError)
    assert exc.field == "payload.url" and "payload.url" in str(exc)


def test_an_unknown_code_falls_back_to_its_status_family_and_a_body_that_is_not_json_is_kept() -> None:
    s = Script(httpx.Response(409, json={"error": {"code": "brand_new", "message": "later"}}))
    with pytest.raises(errors.ConflictError) as e:
        s.client().cancel("j" + "0" * 29)
    assert type(e.value) is errors.ConflictError and e.value.code == "brand_new"
    s = Script(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(errors.ServerError) as e2:
        s.client().cancel("j" + "0" * 29)
    assert e2.value.status == 502 and "bad gateway" in e2.value.message


def test_a_failed_batch_item_gives_the_exception_a_single_enqueue_would_raise() -> None:
    from helpers import job_json

    body = {
        "results": [
            {"status": 201, "job": job_json()},
            {"status": 413, "error": {"code": "payload_too_large", "message": "big"}},
        ]
    }
    r = Script(httpx.Response(200, json=body)).client().enqueue_batch([{"type": "noop"}, {"type": "noop"}])
    assert [i.ok for i in r.results] == [True, False] and len(r.jobs) == 1 and len(r.failed) == 1
    assert r.results[0].exception() is None
    assert isinstance(r.results[1].exception(), errors.PayloadTooLarge)
