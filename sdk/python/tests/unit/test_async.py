"""The asyncio client: the same surface as the sync one, retries, pages and streams."""

from __future__ import annotations

import inspect

import httpx
import pytest
from helpers import AsyncSleeps, Script, error, job_json

import edgejobs


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def public(cls: type) -> dict:
    return {n: f for n, f in vars(cls).items() if not n.startswith("_") and callable(f)}


def test_both_clients_have_the_same_methods_and_parameters() -> None:
    sync, aio = public(edgejobs.Client), public(edgejobs.AsyncClient)
    sync_names = set(sync) - {"close"}
    assert sync_names == set(aio) - {"aclose"}
    for name in sync_names:
        assert list(inspect.signature(sync[name]).parameters) == list(inspect.signature(aio[name]).parameters), name


@pytest.mark.anyio
async def test_retry_after_is_awaited_with_the_injected_sleep() -> None:
    s = Script(error(429, "rate_limited", headers={"retry-after": "1"}), httpx.Response(201, json=job_json()))
    sleeps = AsyncSleeps()
    async with s.async_client(sleep=sleeps, idempotency_keys=True) as c:
        job = await c.enqueue("noop")
    assert job.state == "queued" and sleeps.delays == [pytest.approx(1.05)]
    a, b = s.bodies()
    assert a["idempotency_key"] == b["idempotency_key"]


@pytest.mark.anyio
async def test_max_retries_zero_raises_rate_limited() -> None:
    s = Script(error(429, "rate_limited", headers={"retry-after": "3"}))
    async with s.async_client(max_retries=0) as c:
        with pytest.raises(edgejobs.RateLimited) as e:
            await c.enqueue("noop")
    assert e.value.retry_after == 3.0


@pytest.mark.anyio
async def test_pages_and_streams_are_async_iterators() -> None:
    page = lambda ids, cur: httpx.Response(  # noqa: E731
        200, json={"jobs": [{k: v for k, v in job_json(i).items() if k not in ("payload", "metadata")} for i in ids], "next_cursor": cur}
    )
    events = (
        'id: 1\nevent: chunk\ndata: {"attempt":1,"stream":"tokens","data":"a"}\n\n'
        'event: state\ndata: {"id":"j1","type":"noop","state":"completed","attempt":1,"updated_at":"2026-12-06T19:44:50.590Z"}\n\n'
    ).encode()
    s = Script(page(["j" + "1" * 29], "c"), page(["j" + "2" * 29], None), httpx.Response(200, content=events))
    async with s.async_client(sleep=AsyncSleeps()) as c:
        ids = [j.id async for j in c.iter_jobs()]
        got = [ev async for ev in c.stream("j1")]
    assert ids == ["j" + "1" * 29, "j" + "2" * 29]
    assert isinstance(got[0], edgejobs.Chunk) and got[0].data == "a" and isinstance(got[1], edgejobs.StateChange)


@pytest.mark.anyio
async def test_an_async_subscription_is_connected_at_async_with() -> None:
    events = b'event: state\ndata: {"id":"j1","type":"noop","state":"completed","attempt":1,"updated_at":"2026-12-06T19:44:50.590Z"}\n\n'
    s = Script(httpx.Response(200, content=events))
    async with s.async_client(sleep=AsyncSleeps()) as c:
        stream = c.subscribe(tag="t1")
        assert s.requests == []
        async with stream as subscribed:
            assert len(s.requests) == 1 and s.requests[0].url.params["tag"] == "t1"
            await subscribed.connect()  # already connected: reads nothing and sends nothing
            assert len(s.requests) == 1
            first = await subscribed.__anext__()
    assert isinstance(first, edgejobs.StateChange) and first.id == "j1" and first.final
