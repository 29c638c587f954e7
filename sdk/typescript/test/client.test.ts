// Tests of the API client over a fake fetch: typed errors from error bodies, retries that
// honour Retry-After (with an injected clock, so nothing really waits), idempotency keys,
// cursor iteration, SSE streams, and a service binding's requests.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  AuthError,
  Client,
  ConflictError,
  ConnectionError,
  EdgejobsError,
  ERROR_CLASSES,
  NotFoundError,
  RateLimitedError,
  ServerError,
  ValidationError,
} from "../src/index.ts";
import type { ClientOptions, ErrorCode, JobStreamEvent } from "../src/index.ts";

const JOB = { id: "j0123456789abcdef0123456789abc", type: "noop", state: "queued" };

type Handler = (req: Request, n: number) => Response | Promise<Response>;

/** A client whose fetch is `handler`, recording requests (and their bodies) and sleeps. */
function fake(handler: Handler, opts: Partial<ClientOptions> = {}) {
  const requests: { req: Request; body: string }[] = [];
  const sleeps: number[] = [];
  const client = new Client({
    url: "https://jobs.test/",
    apiKey: "key-1",
    fetch: async (req) => {
      requests.push({ req, body: req.body ? await req.clone().text() : "" });
      return handler(req, requests.length);
    },
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 0.5,
    now: () => Date.parse("2030-01-01T00:00:00Z"),
    ...opts,
  });
  return { client, requests, sleeps };
}

function error(status: number, code: string, headers: Record<string, string> = {}, field?: string): Response {
  return Response.json({ error: { code, message: `${code} happened`, ...(field ? { field } : {}) } }, { status, headers });
}

describe("requests", () => {
  it("sends the key, JSON, and the path and query", async () => {
    const { client, requests } = fake(() => Response.json({ jobs: [], next_cursor: null }));
    await client.jobs.list({ state: "dead", limit: 5, tag: "a b" });
    const r = requests[0]!.req;
    assert.equal(r.method, "GET");
    assert.equal(r.url, "https://jobs.test/v1/jobs?state=dead&limit=5&tag=a+b");
    assert.equal(r.headers.get("authorization"), "Bearer key-1");
    assert.equal(r.headers.get("accept"), "application/json");
  });

  it("escapes ids and names in paths", async () => {
    const { client, requests } = fake(() => Response.json({}));
    await client.schedules.get("a/b?c");
    assert.equal(requests[0]!.req.url, "https://jobs.test/v1/schedules/a%2Fb%3Fc");
  });
});

describe("typed errors", () => {
  const cases: [number, ErrorCode, Function][] = [
    [400, "invalid_field", ValidationError],
    [400, "unknown_type", ValidationError],
    [401, "unauthorized", AuthError],
    [403, "forbidden", AuthError],
    [404, "job_not_found", NotFoundError],
    [409, "invalid_transition", ConflictError],
    [409, "schedule_exists", ConflictError],
    [413, "payload_too_large", ValidationError],
    [415, "unsupported_media_type", ValidationError],
    [429, "rate_limited", RateLimitedError],
    [500, "internal", ServerError],
    [503, "unavailable", ServerError],
  ];
  for (const [status, code, cls] of cases) {
    it(`${status} ${code} is a ${cls.name} with its code`, async () => {
      const { client } = fake(() => error(status, code, { "x-request-id": "req-7" }, "payload.url"), { maxRetries: 0 });
      const e = await client.jobs.get("j1").then(
        () => assert.fail("no error"),
        (e: unknown) => e,
      );
      assert.ok(e instanceof cls, `${e} is a ${cls.name}`);
      assert.ok(e instanceof EdgejobsError);
      const err = e as EdgejobsError;
      assert.equal(err.status, status);
      assert.equal(err.code, code);
      assert.equal(err.message, `${code} happened`);
      assert.equal(err.field, "payload.url");
      assert.equal(err.requestId, "req-7");
      assert.equal(err.name, cls.name);
    });
  }

  it("maps every documented code to a class, and unknown codes by status", async () => {
    for (const Cls of Object.values(ERROR_CLASSES)) assert.ok(Cls.prototype instanceof EdgejobsError);
    const { client } = fake(() => new Response("<html>bad gateway</html>", { status: 502 }), { maxRetries: 0 });
    const e = await client.whoami().catch((e: unknown) => e);
    assert.ok(e instanceof ServerError);
    assert.equal((e as ServerError).code, "unknown");
    const { client: c2 } = fake(() => error(404, "a_code_from_the_future"));
    assert.ok((await c2.whoami().catch((e: unknown) => e)) instanceof NotFoundError);
  });
});

describe("retries", () => {
  it("a 429 waits its Retry-After seconds, then succeeds", async () => {
    const { client, requests, sleeps } = fake((_r, n) => (n < 3 ? error(429, "rate_limited", { "retry-after": "2" }) : Response.json(JOB)));
    const job = await client.jobs.get(JOB.id);
    assert.equal(job.id, JOB.id);
    assert.equal(requests.length, 3);
    assert.equal(sleeps.length, 2);
    for (const s of sleeps) assert.ok(s >= 2000 && s < 3000, `slept ${s} ms for Retry-After: 2`);
  });

  it("reads Retry-After as an HTTP date", async () => {
    const { client, sleeps } = fake((_r, n) =>
      n === 1 ? error(503, "unavailable", { "retry-after": "Tue, 01 Jan 2030 00:00:05 GMT" }) : Response.json(JOB),
    );
    await client.jobs.get(JOB.id);
    assert.ok(sleeps[0]! >= 5000 && sleeps[0]! < 6000, `slept ${sleeps[0]}`);
  });

  it("without Retry-After backs off exponentially with jitter, up to maxRetries, then throws typed", async () => {
    const { client, requests, sleeps } = fake(() => error(503, "unavailable"), { maxRetries: 3, retryBaseMs: 100 });
    const e = await client.jobs.get(JOB.id).catch((e: unknown) => e);
    assert.ok(e instanceof ServerError);
    assert.equal(requests.length, 4);
    // random() is 0.5: half of 100, 200, 400.
    assert.deepEqual(sleeps, [50, 100, 200]);
  });

  it("caps the backoff, and throws at once a Retry-After beyond the cap", async () => {
    const { client, sleeps } = fake(() => error(503, "unavailable"), { maxRetries: 6, retryBaseMs: 1000, retryCapMs: 4000 });
    await client.whoami().catch(() => {});
    assert.ok(sleeps.every((s) => s <= 4000), `${sleeps}`);
    const { client: c2, requests } = fake(() => error(429, "rate_limited", { "retry-after": "60" }), { retryCapMs: 30_000 });
    const e = await c2.whoami().catch((e: unknown) => e);
    assert.ok(e instanceof RateLimitedError);
    assert.equal((e as RateLimitedError).retryAfter, 60);
    assert.equal(requests.length, 1);
  });

  it("maxRetries 0 throws the RateLimitedError with its retryAfter", async () => {
    const { client, requests } = fake(() => error(429, "rate_limited", { "retry-after": "7" }), { maxRetries: 0 });
    const e = await client.jobs.list().catch((e: unknown) => e);
    assert.ok(e instanceof RateLimitedError);
    assert.equal((e as RateLimitedError).retryAfter, 7);
    assert.equal(requests.length, 1);
  });

  it("never retries a create without an idempotency key; retries one with a key", async () => {
    const { client, requests } = fake(() => error(429, "rate_limited", { "retry-after": "1" }));
    await assert.rejects(client.jobs.enqueue({ type: "noop", payload: {} }), RateLimitedError);
    assert.equal(requests.length, 1);
    const { client: c2, requests: r2 } = fake((_r, n) => (n === 1 ? error(429, "rate_limited", { "retry-after": "1" }) : Response.json(JOB, { status: 201 })));
    await c2.jobs.enqueue({ type: "noop", payload: {} }, { idempotencyKey: true });
    assert.equal(r2.length, 2);
    // The retry carries the same key.
    const keys = r2.map((r) => JSON.parse(r.body).idempotency_key);
    assert.equal(keys[0], keys[1]);
  });

  it("does not retry 4xx other than 429, nor 500", async () => {
    for (const [s, c] of [[400, "invalid_field"], [409, "invalid_transition"], [500, "internal"]] as const) {
      const { client, requests } = fake(() => error(s, c));
      await assert.rejects(client.jobs.get("j1"));
      assert.equal(requests.length, 1, `${s}`);
    }
  });

  it("retries a network error for a read, not for a keyless create", async () => {
    const { client, requests } = fake((_r, n) => {
      if (n === 1) throw new TypeError("fetch failed");
      return Response.json(JOB);
    });
    assert.equal((await client.jobs.get(JOB.id)).id, JOB.id);
    assert.equal(requests.length, 2);
    const { client: c2, requests: r2 } = fake(() => {
      throw new TypeError("fetch failed");
    });
    const e = await c2.jobs.enqueue({ type: "noop" }).catch((e: unknown) => e);
    assert.ok(e instanceof ConnectionError);
    assert.equal((e as ConnectionError).code, "network");
    assert.equal(r2.length, 1);
  });

  it("an aborted signal stops the retries", async () => {
    const ac = new AbortController();
    const { client, requests } = fake(() => error(503, "unavailable"), {
      sleep: async () => {
        ac.abort(new Error("stop"));
      },
    });
    await assert.rejects(client.jobs.get("j1", { signal: ac.signal }), /stop/);
    assert.equal(requests.length, 1);
  });
});

describe("idempotency", () => {
  it("idempotencyKey: true sends a fresh UUID in the body field the API reads", async () => {
    const { client, requests } = fake(() => Response.json(JOB, { status: 201 }));
    await client.jobs.enqueue({ type: "noop", payload: {} }, { idempotencyKey: true });
    await client.jobs.enqueue({ type: "noop", payload: {} }, { idempotencyKey: true });
    await client.jobs.enqueue({ type: "noop", payload: {} }, { idempotencyKey: "mine" });
    await client.jobs.enqueue({ type: "noop", payload: {} });
    const keys = requests.map((r) => JSON.parse(r.body).idempotency_key);
    assert.match(keys[0], /^[0-9a-f-]{36}$/);
    assert.notEqual(keys[0], keys[1]);
    assert.equal(keys[2], "mine");
    assert.equal(keys[3], undefined);
  });

  it("a batch with idempotencyKeys keys each item that has none, and an event gets an id", async () => {
    const { client, requests } = fake(() => Response.json({ results: [] }));
    await client.jobs.enqueueBatch([{ type: "noop" }, { type: "noop", idempotency_key: "k2" }], { idempotencyKeys: true });
    const items = JSON.parse(requests[0]!.body).jobs;
    assert.match(items[0].idempotency_key, /^[0-9a-f-]{36}$/);
    assert.equal(items[1].idempotency_key, "k2");
    await client.events.send({ name: "order.approved", data: { id: 1 } }, { idempotencyKey: true });
    assert.match(JSON.parse(requests[1]!.body).id, /^[0-9a-f-]{36}$/);
  });
});

describe("pagination", () => {
  it("iterate follows next_cursor until it is null", async () => {
    const pages: Record<string, { jobs: { id: string }[]; next_cursor: string | null }> = {
      "": { jobs: [{ id: "a" }, { id: "b" }], next_cursor: "c1" },
      c1: { jobs: [{ id: "c" }], next_cursor: "c2" },
      c2: { jobs: [], next_cursor: "c3" },
      c3: { jobs: [{ id: "d" }], next_cursor: null },
    };
    const { client, requests } = fake((req) => Response.json(pages[new URL(req.url).searchParams.get("cursor") ?? ""]));
    const ids: string[] = [];
    for await (const j of client.jobs.iterate({ limit: 2, state: "completed" })) ids.push(j.id);
    assert.deepEqual(ids, ["a", "b", "c", "d"]);
    assert.equal(requests.length, 4);
    // Every page keeps the filters.
    for (const r of requests) assert.equal(new URL(r.req.url).searchParams.get("state"), "completed");
  });

  it("stopping early fetches no further page", async () => {
    const { client, requests } = fake(() => Response.json({ jobs: [{ id: "x" }, { id: "y" }], next_cursor: "more" }));
    for await (const _j of client.dead.iterate()) break;
    assert.equal(requests.length, 1);
  });

  it("schedules iterate by their own page shape", async () => {
    const { client } = fake((req) =>
      Response.json(new URL(req.url).searchParams.get("cursor") ? { schedules: [{ name: "b" }], next_cursor: null } : { schedules: [{ name: "a" }], next_cursor: "n" }),
    );
    const names: string[] = [];
    for await (const s of client.schedules.iterate()) names.push(s.name);
    assert.deepEqual(names, ["a", "b"]);
  });
});

/** A streaming response whose body is `parts`, one chunk each. */
function sse(parts: string[]): Response {
  const enc = new TextEncoder();
  return new Response(
    new ReadableStream({
      start(c) {
        for (const p of parts) c.enqueue(enc.encode(p));
        c.close();
      },
    }),
    { headers: { "content-type": "text/event-stream" } },
  );
}

const state = (s: string) => `event: state\ndata: ${JSON.stringify({ id: "j1", type: "llm.chat", state: s, attempt: 1, metadata: {}, tags: [], updated_at: "x" })}\n\n`;
const chunk = (n: number, data: string) => `id: ${n}\nevent: chunk\ndata: ${JSON.stringify({ attempt: 1, stream: "tokens", data })}\n\n`;

describe("streams", () => {
  it("yields typed chunks and states, cut anywhere, and ends on the final state", async () => {
    const text = "retry: 2000\n\n" + chunk(1, "Hel") + ": keepalive\n\n" + chunk(2, "lo") + state("active") + state("completed") + chunk(9, "after the end");
    const parts = [text.slice(0, 7), text.slice(7, 40), text.slice(40, 41), text.slice(41)];
    const { client, requests } = fake(() => sse(parts));
    const got: JobStreamEvent[] = [];
    for await (const ev of client.jobs.stream("j1")) got.push(ev);
    assert.deepEqual(
      got.map((e) => (e.event === "chunk" ? `${e.id}:${e.data.data}` : e.data.state)),
      ["1:Hel", "2:lo", "active", "completed"],
    );
    assert.equal(requests[0]!.req.headers.get("accept"), "text/event-stream");
    assert.equal(requests[0]!.req.url, "https://jobs.test/v1/jobs/j1/events");
  });

  it("a stream that drops before the final state resumes after the last chunk", async () => {
    const { client, requests } = fake((_r, n) => (n === 1 ? sse([chunk(1, "a"), chunk(2, "b")]) : sse([chunk(3, "c"), state("completed")])));
    const got: string[] = [];
    for await (const ev of client.jobs.stream("j1")) got.push(ev.event === "chunk" ? ev.data.data : ev.data.state);
    assert.deepEqual(got, ["a", "b", "c", "completed"]);
    assert.equal(new URL(requests[1]!.req.url).searchParams.get("after"), "2");
  });

  it("gives up after its reconnects", async () => {
    const { client, requests } = fake(() => sse([": nothing\n\n"]), { maxRetries: 2 });
    await assert.rejects(async () => {
      for await (const _ of client.jobs.stream("j1")) {
        // Nothing arrives.
      }
    }, ConnectionError);
    assert.equal(requests.length, 3);
  });

  it("an error answer is thrown typed before any event", async () => {
    const { client } = fake(() => error(404, "job_not_found"));
    await assert.rejects(async () => {
      for await (const _ of client.jobs.stream("jmissing")) {
        // Not reached.
      }
    }, NotFoundError);
  });

  it("events.subscribe yields the state events of a tag until aborted", async () => {
    const ac = new AbortController();
    let body: ReadableStreamDefaultController<Uint8Array> | undefined;
    const { client, requests } = fake(
      () =>
        new Response(
          new ReadableStream<Uint8Array>({
            start(c) {
              body = c;
              c.enqueue(new TextEncoder().encode(state("queued") + state("active")));
            },
          }),
        ),
    );
    const got: string[] = [];
    await assert.rejects(async () => {
      for await (const s of client.events.subscribe({ tag: "t1", signal: ac.signal })) {
        got.push(s.state);
        if (got.length === 2) ac.abort(new Error("done"));
      }
    }, /done/);
    assert.ok(body);
    assert.deepEqual(got, ["queued", "active"]);
    assert.equal(requests[0]!.req.url, "https://jobs.test/v1/events?tag=t1");
  });
});

describe("wait", () => {
  it("long-polls until the job is final", async () => {
    const { client, requests } = fake((_r, n) => Response.json({ ...JOB, state: n < 3 ? "active" : "completed" }));
    const job = await client.jobs.wait(JOB.id, { timeoutMs: 120_000 });
    assert.equal(job.state, "completed");
    assert.equal(requests.length, 3);
    assert.equal(new URL(requests[0]!.req.url).searchParams.get("wait"), "60s");
  });
});

describe("service binding", () => {
  it("sends through binding.fetch, with no Authorization", async () => {
    const seen: Request[] = [];
    const client = new Client({
      binding: {
        fetch: async (req: Request) => {
          seen.push(req);
          return Response.json(JOB, { status: 201 });
        },
      },
    });
    await client.jobs.enqueue({ type: "noop", payload: { a: 1 } });
    assert.equal(seen.length, 1);
    const req = seen[0]!;
    assert.equal(req.url, "https://edgejobs/v1/jobs");
    assert.equal(req.method, "POST");
    assert.equal(req.headers.get("authorization"), null);
    assert.equal(req.headers.get("content-type"), "application/json");
    assert.deepEqual(await req.json(), { type: "noop", payload: { a: 1 } });
  });

  it("refuses a url and a binding together, and neither", () => {
    assert.throws(() => new Client({ url: "https://x", binding: { fetch: async () => new Response() } }), TypeError);
    assert.throws(() => new Client({}), TypeError);
  });
});
