"""The SSE parser across every chunk boundary, and the job stream's resumption after a drop."""

from __future__ import annotations

import json
from typing import List

import httpx
import pytest
from helpers import Script

from edgejobs import Chunk, StateChange, TransportError
from edgejobs.sse import ServerEvent, SseParser

STREAM = (
    "\ufeffretry: 2000\r\n\r\n"
    ": keepalive\n\n"
    "id: 1\nevent: chunk\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"caf\u00e9 \u2603\"}\n\n"
    "event: note\r\ndata: line one\r\ndata:line two\r\ndata\r\n\r\n"
    "id: 2\revent: chunk\rdata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"x\"}\r\r"
    "event: empty\n\n"
    "data: no blank line at the end"
).encode("utf-8")


def parse(chunks: List[bytes]) -> List[ServerEvent]:
    p = SseParser()
    out: List[ServerEvent] = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.close())
    return out


EXPECTED = [
    ServerEvent("chunk", json.dumps({"attempt": 1, "stream": "tokens", "data": "caf\u00e9 \u2603"}, separators=(",", ":"), ensure_ascii=False), "1", 2000),
    ServerEvent("note", "line one\nline two\n", "1", 2000),
    ServerEvent("chunk", '{"attempt":1,"stream":"tokens","data":"x"}', "2", 2000),
]


def test_whole_stream() -> None:
    assert parse([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_in_two_anywhere(cut: int) -> None:
    # Every byte position: inside CRLF pairs, field names and multi-byte characters.
    assert parse([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert parse([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def sse(*events: str) -> bytes:
    return "".join(events).encode()


CHUNK = 'id: {n}\nevent: chunk\ndata: {{"attempt":1,"stream":"tokens","data":"t{n}"}}\n\n'
STATE = 'event: state\ndata: {{"id":"j1","type":"llm.chat","state":"{s}","attempt":1,"updated_at":"2026-12-06T19:44:50.590Z","result":{r}}}\n\n'


def test_a_dropped_stream_resumes_after_the_last_chunk_and_ends_at_the_final_state() -> None:
    first = httpx.Response(200, content=sse("retry: 10\n\n", CHUNK.format(n=1), CHUNK.format(n=2)))
    second = httpx.Response(200, content=sse(CHUNK.format(n=3), STATE.format(s="completed", r='"t1t2t3"')))
    s = Script(first, second)
    c = s.client()
    items = list(c.stream("j1"))
    assert [type(i) for i in items] == [Chunk, Chunk, Chunk, StateChange]
    assert "".join(i.data for i in items if isinstance(i, Chunk)) == "t1t2t3"
    assert [i.id for i in items if isinstance(i, Chunk)] == [1, 2, 3]
    assert items[-1].final and items[-1].result == "t1t2t3"  # type: ignore[union-attr]
    assert "last-event-id" not in s.requests[0].headers and s.requests[1].headers["last-event-id"] == "2"
    assert s.requests[0].headers["accept"] == "text/event-stream"


def test_a_stream_that_keeps_dropping_gives_up() -> None:
    s = Script(*[httpx.Response(200, content=b": keepalive\n\n") for _ in range(3)])
    with pytest.raises(TransportError, match="dropped"):
        list(s.client().stream("j1", max_reconnects=2))
    assert len(s.requests) == 3


def test_stream_text_yields_the_chunks_of_one_stream() -> None:
    body = sse(
        CHUNK.format(n=1),
        'id: 2\nevent: chunk\ndata: {"attempt":1,"stream":"log","data":"ignored"}\n\n',
        CHUNK.format(n=3),
        STATE.format(s="completed", r="null"),
    )
    s = Script(httpx.Response(200, content=body))
    assert list(s.client().stream_text("j1", stream="tokens")) == ["t1", "t3"]


def test_the_stream_of_a_missing_job_raises_at_once() -> None:
    s = Script(httpx.Response(404, json={"error": {"code": "job_not_found", "message": "no"}}))
    from edgejobs import JobNotFound

    with pytest.raises(JobNotFound):
        next(iter(s.client().stream("jnope")))


def test_a_subscription_entered_with_with_is_connected_before_its_block_runs() -> None:
    # The request is answered at `with`, so a job enqueued inside the block is seen; the body
    # is read only when iterated.
    s = Script(httpx.Response(200, content=sse("retry: 10\n\n", STATE.format(s="completed", r="null"))))
    c = s.client()
    stream = c.subscribe(tag="t1")
    assert s.requests == []
    with stream as events:
        assert len(s.requests) == 1 and s.requests[0].url.params["tag"] == "t1"
        events.connect()  # already connected: reads nothing and sends nothing
        assert len(s.requests) == 1
        first = next(events)
    assert isinstance(first, StateChange) and first.state == "completed"


def test_a_stream_entered_with_with_raises_a_refusal_at_once() -> None:
    from edgejobs import JobNotFound

    s = Script(httpx.Response(404, json={"error": {"code": "job_not_found", "message": "no"}}))
    with pytest.raises(JobNotFound):
        with s.client().stream("jnope"):
            raise AssertionError("the block of a refused stream ran")
