"""Stack scenarios of the asyncio client."""

from __future__ import annotations

import anyio
import pytest
from conftest import WAIT, need, unique

import edgejobs


@pytest.fixture
async def aclient(url: str):  # type: ignore[no-untyped-def]
    async with edgejobs.AsyncClient(url, need("EDGEJOBS_API_KEY")) as c:
        yield c


@pytest.mark.anyio
async def test_async_enqueue_batch_and_result(aclient: edgejobs.AsyncClient) -> None:
    job = await aclient.enqueue("noop", {"async": True}, idempotency_key=True)
    assert await aclient.result(job.id, timeout=WAIT) is not None
    batch = await aclient.enqueue_batch([{"type": "noop"}, {"type": "no.such.type"}])
    assert [r.status for r in batch.results] == [201, 400]
    with pytest.raises(edgejobs.JobNotFound):
        await aclient.get_job("j" + "0" * 29)


@pytest.mark.anyio
async def test_async_pages(aclient: edgejobs.AsyncClient) -> None:
    tag = unique("py-apages")
    await aclient.enqueue_batch([{"type": "noop", "tags": [tag]} for _ in range(3)])
    with anyio.fail_after(WAIT):
        while True:
            ids = [j.id async for j in aclient.iter_jobs(tag=tag, limit=1, max_pages=10)]
            if len(ids) == 3:
                break
            await anyio.sleep(0.2)
    assert len(set(ids)) == 3


@pytest.mark.anyio
async def test_async_subscription_sees_a_tagged_job_complete(aclient: edgejobs.AsyncClient) -> None:
    tag = unique("py-sub")
    seen = []
    with anyio.fail_after(WAIT):
        async with aclient.subscribe(tag=tag) as events:
            # `async with` has connected: every change of a job enqueued now is seen.
            job = await aclient.enqueue("noop", tags=[tag])
            async for ev in events:
                seen.append(ev)
                if ev.id == job.id and ev.final:
                    break
    assert seen[-1].state == "completed"
    assert {e.id for e in seen} == {job.id}, "an event of a job without the tag"


@pytest.mark.anyio
async def test_async_stream_of_an_llm_chat_job(aclient: edgejobs.AsyncClient) -> None:
    assert need("EDGEJOBS_LLM") == "1"
    message = f"async words {unique('w')}"
    job = await aclient.enqueue("llm.chat", {"messages": [{"role": "user", "content": message}]})
    with anyio.fail_after(WAIT):
        text = "".join([t async for t in aclient.stream_text(job.id)])
    assert text == f"echo: {message}"
