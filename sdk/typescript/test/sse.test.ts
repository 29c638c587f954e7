// Tests of the Server-Sent Events parser: the same stream cut at every possible place gives
// the same events; comments, multi-line data, CRLF, ids and a BOM follow the standard.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { readEvents, SseParser } from "../src/index.ts";
import type { ServerSentEvent } from "../src/index.ts";

const STREAM =
  "\uFEFFretry: 2000\n\n" +
  ": keepalive\n\n" +
  "id: 1\nevent: chunk\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"Hel\"}\n\n" +
  "id: 2\r\nevent: chunk\r\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"lo ✓\"}\r\n\r\n" +
  "event: state\rdata: first line\rdata:second line\r\r" +
  "data\n\n" +
  "event: empty\n\n" +
  "id: 3\nevent: state\ndata: {\"state\":\"completed\"}\n\n" +
  "data: never dispatched";

function parseAll(parts: string[]): ServerSentEvent[] {
  const p = new SseParser();
  return parts.flatMap((s) => p.push(s));
}

const expected: ServerSentEvent[] = [
  { event: "chunk", data: '{"attempt":1,"stream":"tokens","data":"Hel"}', lastEventId: "1", hasId: true, retry: 2000 },
  { event: "chunk", data: '{"attempt":1,"stream":"tokens","data":"lo ✓"}', lastEventId: "2", hasId: true, retry: 2000 },
  { event: "state", data: "first line\nsecond line", lastEventId: "2", hasId: false, retry: 2000 },
  { event: "message", data: "", lastEventId: "2", hasId: false, retry: 2000 },
  { event: "state", data: '{"state":"completed"}', lastEventId: "3", hasId: true, retry: 2000 },
];

describe("SseParser", () => {
  it("parses a whole stream", () => {
    assert.deepEqual(parseAll([STREAM]), expected);
  });

  it("gives the same events however the text is cut (every split in two and three)", () => {
    for (let i = 0; i <= STREAM.length; i++) {
      assert.deepEqual(parseAll([STREAM.slice(0, i), STREAM.slice(i)]), expected, `split at ${i}`);
    }
    for (let i = 0; i <= STREAM.length; i += 3) {
      for (let j = i; j <= STREAM.length; j += 5) {
        assert.deepEqual(parseAll([STREAM.slice(0, i), STREAM.slice(i, j), STREAM.slice(j)]), expected, `split at ${i}, ${j}`);
      }
    }
  });

  it("gives the same events one character at a time", () => {
    assert.deepEqual(parseAll([...STREAM]), expected);
  });
});

describe("readEvents", () => {
  it("decodes bytes split inside a multi-byte character", async () => {
    const bytes = new TextEncoder().encode(STREAM);
    // One byte per chunk: every UTF-8 sequence is cut.
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        for (const b of bytes) c.enqueue(new Uint8Array([b]));
        c.close();
      },
    });
    const got: ServerSentEvent[] = [];
    for await (const ev of readEvents(body)) got.push(ev);
    assert.deepEqual(got, expected);
  });

  it("stops when its signal aborts, releasing the body", async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode("data: one\n\n"));
      },
      cancel() {
        cancelled = true;
      },
    });
    const ac = new AbortController();
    const got: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const ev of readEvents(body, ac.signal)) {
          got.push(ev.data);
          ac.abort(new Error("enough"));
        }
      })(),
      /enough/,
    );
    assert.deepEqual(got, ["one"]);
    assert.ok(cancelled, "the body was cancelled");
  });
});
