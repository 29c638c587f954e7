"""verify_webhook against deliveries signed by the `standardwebhooks` reference library."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from standardwebhooks import Webhook

from edgejobs import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(b"a 32 byte key for the unit tests").decode()
OTHER = "whsec_" + base64.b64encode(b"another key, which must not pass").decode()
NOW = 1_800_000_000


def signed(secret: str, body: str, msg_id: str = "msg_1", ts: int = NOW) -> dict:
    """Headers as a Standard Webhooks sender makes them, by the reference library."""
    when = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    sig = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body)
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


BODY = json.dumps({"order": 42, "note": "caf\u00e9"})


def test_a_reference_signature_verifies_and_the_body_is_returned() -> None:
    assert verify_webhook(SECRET, signed(SECRET, BODY), BODY.encode(), now=NOW) == {"order": 42, "note": "caf\u00e9"}
    # The body may be given as text too, and header names in any case.
    headers = {k.title(): v for k, v in signed(SECRET, BODY).items()}
    assert verify_webhook(SECRET, headers, BODY, now=NOW + 299)["order"] == 42


def test_the_reference_accepts_what_we_accept() -> None:
    # The reference verifies the same delivery with its own clock: a sanity check of the helper.
    import time

    h = signed(SECRET, BODY, ts=int(time.time()))
    assert Webhook(SECRET).verify(BODY, h) == verify_webhook(SECRET, h, BODY)


@pytest.mark.parametrize(
    "change",
    ["body", "id", "timestamp", "secret", "signature version"],
)
def test_any_change_fails(change: str) -> None:
    h = signed(SECRET, BODY)
    body, secret = BODY, SECRET
    if change == "body":
        body = BODY.replace("42", "43")
    elif change == "id":
        h["webhook-id"] = "msg_2"
    elif change == "timestamp":
        h["webhook-timestamp"] = str(NOW + 1)
    elif change == "secret":
        secret = OTHER
    else:
        h["webhook-signature"] = h["webhook-signature"].replace("v1,", "v1a,")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, h, body, now=NOW)


@pytest.mark.parametrize("offset", [301, -301, 10_000])
def test_a_timestamp_more_than_five_minutes_away_fails(offset: int) -> None:
    h = signed(SECRET, BODY, ts=NOW + offset)
    with pytest.raises(WebhookVerificationError, match="300 s"):
        verify_webhook(SECRET, h, BODY, now=NOW)


def test_one_matching_signature_of_several_passes_as_during_a_rotation() -> None:
    old = signed(OTHER, BODY)["webhook-signature"]
    new = signed(SECRET, BODY)["webhook-signature"]
    h = signed(SECRET, BODY)
    h["webhook-signature"] = f"v1a,bm90IGEgc2ln {old} {new}"
    assert verify_webhook(SECRET, h, BODY, now=NOW)["order"] == 42
    h["webhook-signature"] = old
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, h, BODY, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_missing_header_fails(missing: str) -> None:
    h = signed(SECRET, BODY)
    del h[missing]
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_webhook(SECRET, h, BODY, now=NOW)


def test_bad_secrets_and_timestamps_are_errors_not_crashes() -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook("whsec_!!!not base64", signed(SECRET, BODY), BODY, now=NOW)
    h = signed(SECRET, BODY)
    h["webhook-timestamp"] = "1.8e9"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SECRET, h, BODY, now=NOW)


def test_an_unpadded_secret_works_as_with_the_reference() -> None:
    raw = base64.b64encode(b"seventeen bytes!!").decode()
    assert raw.endswith("=")
    unpadded = "whsec_" + raw.rstrip("=")
    h = signed("whsec_" + raw, BODY)
    assert verify_webhook(unpadded, h, BODY, now=NOW)["order"] == 42
