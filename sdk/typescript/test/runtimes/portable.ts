// The client on each JavaScript runtime we claim (Node, Deno, Bun): only web APIs — fetch's
// Request and Response, ReadableStream, AbortSignal, WebCrypto — with a fake fetch, so the
// runtime itself is what is tested. scripts/sdk-typescript runs this file on each runtime;
// it prints "portable OK <runtime>" or throws. (The full unit tests run on Node.)

import { Client, NotFoundError, RateLimitedError, verifyWebhook } from "../../src/index.ts";

function check(cond: unknown, what: string): void {
  if (!cond) throw new Error(`portable: ${what}`);
}

const runtime =
  "Deno" in globalThis ? "deno" : "Bun" in globalThis ? "bun" : typeof process !== "undefined" ? "node" : "other";

const job = { id: "j1", type: "noop", state: "queued", tags: [] };
const sse = [
  'id: 1\nevent: chunk\ndata: {"attempt":1,"stream":"default","data":"hel"}\n\n',
  ': keep-alive\n\nid: 2\nevent: chunk\ndata: {"attempt":1,"stream":"default","data":"lo"}\n\n',
  'event: state\ndata: {"id":"j1","type":"noop","state":"completed","attempt":1,"metadata":{},"tags":[],"updated_at":"2026-01-01T00:00:00Z"}\n\n',
].join("");
const seen: Request[] = [];
let limited = 1;
const fakeFetch = async (req: Request): Promise<Response> => {
  seen.push(req);
  const url = new URL(req.url);
  if (url.pathname === "/v1/jobs" && req.method === "POST") {
    if (limited-- > 0) {
      return Response.json({ error: { code: "rate_limited", message: "slow down" } }, { status: 429, headers: { "retry-after": "1" } });
    }
    return Response.json(job, { status: 201 });
  }
  if (url.pathname === "/v1/jobs/j1/events") {
    // The stream split at awkward places, one piece per pull.
    const bytes = new TextEncoder().encode(sse);
    let at = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (at >= bytes.length) return c.close();
        c.enqueue(bytes.slice(at, at + 7));
        at += 7;
      },
    });
    return new Response(body, { headers: { "content-type": "text/event-stream" } });
  }
  return Response.json({ error: { code: "job_not_found", message: "no job" } }, { status: 404 });
};

const waits: number[] = [];
const client = new Client({
  url: "https://jobs.example.test",
  apiKey: "ej_test",
  fetch: fakeFetch,
  sleep: async (ms) => {
    waits.push(ms);
  },
  random: () => 0,
});

// A keyed enqueue is retried after its Retry-After.
const created = await client.jobs.enqueue({ type: "noop" }, { idempotencyKey: true });
check(created.id === "j1", "the enqueue answered the job");
check(waits.length === 1 && waits[0]! >= 1000, `one wait of Retry-After: ${waits}`);
const sent = (await seen[seen.length - 1]!.clone().json()) as { idempotency_key?: string };
check(/^[0-9a-f-]{36}$/.test(sent.idempotency_key ?? ""), "a generated idempotency key");
check(seen[0]!.headers.get("authorization") === "Bearer ej_test", "the key is sent");

// Typed errors.
const missing = await client.jobs.get("nope").catch((e: unknown) => e);
check(missing instanceof NotFoundError && missing.code === "job_not_found", `a typed 404: ${missing}`);
const refused = await client.jobs.enqueue({ type: "noop" }, { maxRetries: 0 }).then(
  () => null,
  (e: unknown) => e,
);
check(refused === null, "the second enqueue is not limited");
limited = 1;
const limitedErr = await client.jobs.enqueue({ type: "noop" }, { maxRetries: 0 }).catch((e: unknown) => e);
check(limitedErr instanceof RateLimitedError && limitedErr.retryAfter === 1, `a typed 429: ${limitedErr}`);

// The stream: chunks in order, then the final state ends it.
let text = "";
let last = "";
for await (const ev of client.jobs.stream("j1")) {
  if (ev.event === "chunk") text += ev.data.data;
  else last = ev.data.state;
}
check(text === "hello" && last === "completed", `the stream: ${text} ${last}`);

// A delivery signed here with WebCrypto verifies; a changed body does not.
const key = crypto.getRandomValues(new Uint8Array(32));
const secret = `whsec_${btoa(String.fromCharCode(...key))}`;
const ts = String(Math.floor(Date.now() / 1000));
const body = '{"order":1}';
const hmac = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
const mac = new Uint8Array(await crypto.subtle.sign("HMAC", hmac, new TextEncoder().encode(`m1.${ts}.${body}`)));
const headers = { "webhook-id": "m1", "webhook-timestamp": ts, "webhook-signature": `v1,${btoa(String.fromCharCode(...mac))}` };
const verified = (await verifyWebhook(secret, headers, body)) as { order: number };
check(verified.order === 1, "a signed delivery verifies");
const forged = await verifyWebhook(secret, headers, '{"order":2}').then(
  () => false,
  () => true,
);
check(forged, "a changed body is refused");

console.log(`portable OK ${runtime}`);
