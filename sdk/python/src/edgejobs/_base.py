"""What the sync and async clients share besides the operations: settings and error reading."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import httpx

from ._retry import RetryPolicy, parse_retry_after
from .errors import ApiError, error_for

VERSION = "0.1.0"
USER_AGENT = f"edgejobs-python/{VERSION}"
#: Seconds a request may take unless the call needs longer (a long poll, a backup).
DEFAULT_TIMEOUT = 30.0
#: Seconds a live stream may stay silent: the edge sends a keepalive every 15 s.
STREAM_READ_TIMEOUT = 45.0
#: Reconnections of a live stream that dropped before its end, before giving up.
DEFAULT_RECONNECTS = 5


def settings(url: Optional[str], api_key: Optional[str]) -> Dict[str, str]:
    """The base URL and key: the arguments, else EDGEJOBS_URL and EDGEJOBS_API_KEY."""
    base = url if url is not None else os.environ.get("EDGEJOBS_URL")
    key = api_key if api_key is not None else os.environ.get("EDGEJOBS_API_KEY")
    if not base:
        raise ValueError("no API URL: pass url= or set EDGEJOBS_URL")
    if not key:
        raise ValueError("no API key: pass api_key= or set EDGEJOBS_API_KEY")
    return {"url": base.rstrip("/"), "api_key": key}


def policy(retry: Optional[RetryPolicy], max_retries: Optional[int]) -> RetryPolicy:
    p = retry or RetryPolicy()
    if max_retries is not None:
        p = RetryPolicy(max_retries, p.base_delay, p.max_delay, p.max_retry_after)
    return p


def headers(api_key: str, user_agent: Optional[str]) -> Dict[str, str]:
    return {"authorization": f"Bearer {api_key}", "user-agent": user_agent or USER_AGENT}


def retry_after(resp: httpx.Response) -> Optional[float]:
    return parse_retry_after(resp.headers.get("retry-after"), time.time())


def error_from(resp: httpx.Response, body: bytes) -> ApiError:
    """The typed exception for an error answer whose body has been read."""
    code, message, field = "", "", None
    try:
        parsed: Any = json.loads(body)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            code = str(err.get("code", ""))
            message = str(err.get("message", ""))
            field = err.get("field")
    except ValueError:
        pass
    if not message:
        # Not the API's error shape (a proxy's page): say what came back.
        message = body[:200].decode("utf-8", "replace") or resp.reason_phrase
    return error_for(
        resp.status_code, code, message, field=field, retry_after=retry_after(resp), headers=dict(resp.headers)
    )


def transport_retryable(exc: httpx.TransportError, idempotent: bool) -> bool:
    """A connection never made is safe to retry; a request possibly sent only when idempotent."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return True
    return idempotent


class Connected:
    """What a live stream's generator yields each time its request has been answered.

    The stream classes never hand it to callers. Entering a stream (`with` / `async with`)
    reads up to the first one, so the body of the `with` runs once the edge has registered
    the subscription: a change made there is seen, which a connection opened at the first
    iteration could miss.
    """

    __slots__ = ()


CONNECTED = Connected()
