"""Verification of the edge's signed deliveries (Standard Webhooks), standard library only.

A delivery carries `webhook-id`, `webhook-timestamp` (unix seconds) and `webhook-signature`
(`v1,<base64 HMAC-SHA256>` entries, space separated: one per secret while a secret is
rotated). The HMAC key is the base64 after `whsec_` in the receiver's secret
(`POST /v1/admin/webhook-secret`), over `"{id}.{timestamp}.{body}"` with the raw body bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Mapping, Optional, Union

from .errors import WebhookVerificationError

__all__ = ["verify_webhook", "DEFAULT_TOLERANCE"]

#: How far (seconds) a delivery's timestamp may be from this clock: 5 minutes.
DEFAULT_TOLERANCE = 300


def _key(secret: str) -> bytes:
    text = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
    try:
        # Padding is optional in the secret, as Standard Webhooks libraries accept it.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise WebhookVerificationError("the secret is not whsec_ followed by base64") from e
    if not key:
        raise WebhookVerificationError("the secret is empty")
    return key


def _header(headers: Mapping[str, str], name: str) -> str:
    # Header names are case-insensitive; a plain dict from a framework may use any case.
    for k, v in headers.items():
        if k.lower() == name:
            return v
    raise WebhookVerificationError(f"the delivery lacks the {name} header")


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: Union[bytes, str],
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: Optional[float] = None,
) -> Any:
    """Checks a delivery and returns its body parsed as JSON (or the text when not JSON).

    Raises `WebhookVerificationError` when a header is missing, the timestamp is more than
    `tolerance` seconds from `now` (default: this clock), or no `v1` signature matches.
    Pass the body exactly as received: re-serialized JSON does not verify.
    """
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not timestamp.isdigit() or len(timestamp) > 15:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds")
    clock = time.time() if now is None else now
    if abs(clock - int(timestamp)) > tolerance:
        # A captured delivery replayed later is refused: the timestamp is signed too.
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance} s from this clock")
    signed = f"{msg_id}.{timestamp}.".encode("utf-8") + raw
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest())
    matched = False
    for entry in signatures.split(" "):
        version, sep, value = entry.partition(",")
        # Entries of other versions (v1a: asymmetric) are skipped, never an error.
        if sep and version == "v1" and hmac.compare_digest(value.encode("ascii", "replace"), expected):
            matched = True
    if not matched:
        raise WebhookVerificationError("no webhook-signature matches")
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
