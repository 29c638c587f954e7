"""Shared pieces of the unit tests: a scripted httpx transport and a recording sleep."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Union

import httpx

import edgejobs

Reply = Union[httpx.Response, Callable[[httpx.Request], httpx.Response], Exception]


def job_json(job_id: str = "j" + "0" * 29, state: str = "queued", **extra: Any) -> Dict[str, Any]:
    """A `Job` object as the API answers it (required fields only, plus `extra`)."""
    body = {
        "id": job_id,
        "type": "noop",
        "lane": "edge",
        "state": state,
        "payload": None,
        "attempt": 0,
        "series_base": 0,
        "max_attempts": 3,
        "backoff": {"base_ms": 1000, "factor": 2.0, "cap_ms": 3600000},
        "timeout_ms": 10000,
        "tags": [],
        "metadata": {},
        "created_at": "2026-12-06T19:44:50.519Z",
        "updated_at": "2026-12-06T19:44:50.519Z",
        "run_at": "2026-12-06T19:44:50.519Z",
        "cancel_requested": False,
        "tenant": "default",
    }
    body.update(extra)
    return body


def error(status: int, code: str, message: str = "no", headers: Optional[Dict[str, str]] = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers or {})


class Script:
    """A transport answering each request with the next scripted reply, recording requests."""

    def __init__(self, *replies: Reply) -> None:
        self.replies: List[Reply] = list(replies)
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def bodies(self) -> List[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]

    def client(self, **kw: Any) -> edgejobs.Client:
        kw.setdefault("sleep", Sleeps())
        return edgejobs.Client("http://edge.test", "ej_test", transport=httpx.MockTransport(self), **kw)

    def async_client(self, **kw: Any) -> edgejobs.AsyncClient:
        return edgejobs.AsyncClient("http://edge.test", "ej_test", transport=httpx.MockTransport(self), **kw)


class Sleeps:
    """A sleep that records its delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: List[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class AsyncSleeps(Sleeps):
    async def __call__(self, seconds: float) -> None:  # type: ignore[override]
        self.delays.append(seconds)
