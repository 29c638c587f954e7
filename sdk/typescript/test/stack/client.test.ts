// The TypeScript client's scenarios against a running stack (the e2e harness runs this file
// with EDGEJOBS_URL, EDGEJOBS_API_KEY, EDGEJOBS_ADMIN_KEY, EDGEJOBS_LIMITED_KEY,
// EDGEJOBS_OTHER_KEY, EDGEJOBS_RECEIVER_PORT and EDGEJOBS_LLM=1). A missing variable fails
// the scenario that needs it, naming it: nothing is skipped.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { IncomingMessage, Server } from "node:http";
import { readFileSync, rmSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";

import {
  AuthError,
  Client,
  ConflictError,
  NotFoundError,
  RateLimitedError,
  ValidationError,
  verifyWebhook,
} from "../../src/index.ts";
import type { Job, JobStreamEvent } from "../../src/index.ts";

function env(name: string): string {
  const v = process.env[name];
  assert.ok(v, `${name} is not set: this scenario needs it (the e2e harness sets it)`);
  return v;
}

const unique = (p: string) => `${p}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const client = () => new Client({ url: env("EDGEJOBS_URL"), apiKey: env("EDGEJOBS_API_KEY") });
const admin = () => new Client({ url: env("EDGEJOBS_URL"), apiKey: env("EDGEJOBS_ADMIN_KEY") });

/** Polls `f` until it returns a value (not undefined), at most `ms`. */
async function until<T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    assert.ok(Date.now() < deadline, `${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** What the receiver got: raw bodies and headers, by path. */
interface Delivery {
  path: string;
  headers: Record<string, string>;
  body: string;
}

let server: Server | undefined;
const deliveries: Delivery[] = [];
/** Extra routes: the README's receiver. */
const routes = new Map<string, (req: Request) => Promise<Response>>();

function headersOf(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") out[k] = v;
  return out;
}

/** The receiver on EDGEJOBS_RECEIVER_PORT: records each delivery; `/fail/...` answers 500. */
async function receiver(): Promise<string> {
  const port = Number(env("EDGEJOBS_RECEIVER_PORT"));
  if (!server) {
    const s = createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on("data", (c: Buffer) => parts.push(c));
      req.on("end", async () => {
        const path = req.url ?? "/";
        const body = Buffer.concat(parts).toString("utf8");
        deliveries.push({ path, headers: headersOf(req), body });
        const route = [...routes.entries()].find(([prefix]) => path.startsWith(prefix));
        if (route) {
          const answer = await route[1](new Request(`http://127.0.0.1:${port}${path}`, { method: req.method ?? "POST", headers: headersOf(req), body }));
          res.writeHead(answer.status, { "content-type": "application/json" });
          res.end(await answer.text());
          return;
        }
        res.writeHead(path.startsWith("/fail") ? 500 : 200);
        res.end("{}");
      });
    });
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(port, "127.0.0.1", () => resolve());
    });
    server = s;
  }
  return `http://127.0.0.1:${port}`;
}

after(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
});

describe("the TypeScript client against the stack", () => {
  before(() => {
    env("EDGEJOBS_URL");
  });

  it("enqueues a job, and an idempotency key names the same job", async () => {
    const c = client();
    const job = await c.jobs.enqueue({ type: "noop", payload: { n: 1 }, tags: ["sdk-ts"] });
    assert.match(job.id, /^j[0-9a-f]{29}$/);
    assert.equal(job.type, "noop");
    const key = unique("key");
    const a = await c.jobs.enqueue({ type: "noop", payload: {} }, { idempotencyKey: key });
    const b = await c.jobs.enqueue({ type: "noop", payload: {} }, { idempotencyKey: key });
    assert.equal(a.id, b.id);
    assert.equal(b.idempotency_key, key);
  });

  it("a batch answers each item, errors included", async () => {
    const res = await client().jobs.enqueueBatch([
      { type: "noop", payload: { i: 0 } },
      { type: "webhook", payload: {} } as never,
      { type: "no.such.type" },
    ]);
    assert.equal(res.results.length, 3);
    const [ok, bad, unknown] = res.results;
    assert.ok(ok && "job" in ok && ok.status === 201, JSON.stringify(ok));
    assert.ok(bad && "error" in bad && bad.status === 400 && bad.error.code === "invalid_field", JSON.stringify(bad));
    assert.ok(unknown && "error" in unknown && unknown.error.code === "unknown_type", JSON.stringify(unknown));
  });

  it("gets a job and waits for its result", async () => {
    const c = client();
    const job = await c.jobs.enqueue({ type: "noop", payload: { hello: "world" } });
    const got = await c.jobs.get(job.id);
    assert.equal(got.id, job.id);
    const done = await c.jobs.wait(job.id, { timeoutMs: 60_000 });
    assert.equal(done.state, "completed");
  });

  it("lists with pagination, following cursors", async () => {
    const c = client();
    const tag = unique("page");
    const ids = new Set<string>();
    for (let i = 0; i < 5; i++) ids.add((await c.jobs.enqueue({ type: "noop", tags: [tag], delay: "1h" })).id);
    let pages = 0;
    for await (const page of c.jobs.pages({ tag, limit: 2 })) {
      pages++;
      assert.ok(page.jobs.length <= 2);
      assert.ok(pages <= 10, "pagination does not end");
    }
    const seen: string[] = [];
    for await (const j of c.jobs.iterate({ tag, limit: 2 })) seen.push(j.id);
    assert.deepEqual(new Set(seen), ids);
    assert.equal(seen.length, 5);
    assert.ok(pages >= 3, `${pages} pages of 2 for 5 jobs`);
    for (const id of ids) await c.jobs.cancel(id);
  });

  it("cancels a job, refuses a second cancel and a retry of a job that is not dead", async () => {
    const c = client();
    const job = await c.jobs.enqueue({ type: "noop", delay: "1h" });
    assert.equal(job.state, "scheduled");
    const cancelled = await c.jobs.cancel(job.id);
    assert.equal(cancelled.state, "cancelled");
    const again = await c.jobs.cancel(job.id).catch((e: unknown) => e);
    assert.ok(again instanceof ConflictError, String(again));
    assert.equal(again.code, "invalid_transition");
    const retry = await c.jobs.retry(job.id).catch((e: unknown) => e);
    assert.ok(retry instanceof ConflictError, String(retry));
    assert.equal(retry.code, "invalid_transition");
  });

  it("a job that dies is in the dead-letter set, is retried, and is replayed in bulk", async () => {
    const c = client();
    const tag = unique("dead");
    // The receiver answers 500 under /fail: with one attempt the job dies.
    const url = `${await receiver()}/fail/${tag}`;
    const job = await c.jobs.enqueue({ type: "webhook", payload: { url }, max_attempts: 1, tags: [tag] });
    const dead = await c.jobs.wait(job.id, { timeoutMs: 60_000 });
    assert.equal(dead.state, "dead", JSON.stringify(dead));
    const listed: string[] = [];
    for await (const j of c.dead.iterate({ tag })) listed.push(j.id);
    assert.deepEqual(listed, [job.id]);
    const retried = await c.jobs.retry(job.id);
    assert.notEqual(retried.state, "dead");
    assert.equal((await c.jobs.wait(job.id, { timeoutMs: 60_000 })).state, "dead");
    const replayed = await admin().dead.replay({ tag });
    assert.equal(replayed.replayed, 1);
    assert.deepEqual(replayed.ids, [job.id]);
    assert.equal((await c.jobs.wait(job.id, { timeoutMs: 60_000 })).state, "dead");
  });

  it("creates, pauses, resumes and deletes a schedule", async () => {
    const a = admin();
    const name = unique("sdk-ts");
    const created = await a.schedules.create({ name, cron: "0 3 * * *", job: { type: "noop", payload: { from: "schedule" } } });
    assert.equal(created.name, name);
    const taken = await a.schedules.create({ name, cron: "0 3 * * *", job: { type: "noop" } }).catch((e: unknown) => e);
    assert.ok(taken instanceof ConflictError && taken.code === "schedule_exists", String(taken));
    assert.equal((await a.schedules.pause(name)).paused, true);
    assert.equal((await a.schedules.get(name)).paused, true);
    assert.equal((await a.schedules.resume(name)).paused, false);
    const names: string[] = [];
    for await (const s of a.schedules.iterate({ limit: 1 })) if (s.name === name) names.push(s.name);
    assert.deepEqual(names, [name]);
    assert.equal((await a.schedules.delete(name)).deleted, true);
    const gone = await a.schedules.get(name).catch((e: unknown) => e);
    assert.ok(gone instanceof NotFoundError && gone.code === "schedule_not_found", String(gone));
    // A jobs key may not change schedules.
    const refused = await client().schedules.create({ name, cron: "@daily", job: { type: "noop" } }).catch((e: unknown) => e);
    assert.ok(refused instanceof AuthError && refused.code === "forbidden", String(refused));
  });

  it("an event resumes a workflow run waiting for it", async () => {
    // The run's workflow type is served here by the SDK's `serve`, on the receiver's port at
    // /workflow. The stack must declare it: JOB_TYPES {"sdk.ts.flow": {"lane": "edge",
    // "url": "http://127.0.0.1:$EDGEJOBS_RECEIVER_PORT/workflow", "workflow": true}}.
    const base = await receiver();
    const { serve } = await import("../../src/index.ts");
    const type = process.env.EDGEJOBS_WORKFLOW_TYPE ?? "sdk.ts.flow";
    const { secret } = await admin().admin.webhookSecret({ url: `${base}/workflow`, type });
    routes.set(
      "/workflow",
      serve({
        secret,
        workflows: {
          [type]: async (run, step) => {
            const approval = await step.waitForEvent<{ by: string }>("approval", {
              event: "sdk.approved",
              match: { "/data/order": "/payload/order" },
              timeout: "5m",
            });
            return { approved_by: approval?.by ?? null };
          },
        },
      }),
    );
    const c = client();
    const order = unique("order");
    const job = await c.jobs.enqueue({ type, payload: { order } }).catch((e: unknown) => {
      assert.fail(`the stack does not declare the workflow type ${type} at ${base}/workflow (see the comment above): ${e}`);
    });
    await until("the run waits for its event", 60_000, async () => {
      const j = (await c.jobs.get(job.id)) as Job & { steps?: { name: string; state: string }[] };
      return j.state === "scheduled" && j.steps?.some((s) => s.name === "approval" && s.state === "waiting") ? j : undefined;
    });
    const other = await c.events.send({ name: "sdk.approved", data: { order: "another", by: "bob" } });
    assert.equal(other.resumed, 0);
    const sent = await c.events.send({ name: "sdk.approved", data: { order, by: "ann" } }, { idempotencyKey: true });
    assert.equal(sent.resumed, 1);
    assert.equal(sent.duplicate, false);
    const done = await c.jobs.wait(job.id, { timeoutMs: 60_000 });
    assert.equal(done.state, "completed", JSON.stringify(done));
    assert.deepEqual(done.result, { approved_by: "ann" });
  });

  it("streams an llm.chat job's tokens", async () => {
    assert.equal(process.env.EDGEJOBS_LLM, "1", "EDGEJOBS_LLM=1 is required: the stack must run llm.chat against the fake LLM");
    const c = client();
    const job = await c.jobs.enqueue({ type: "llm.chat", payload: { messages: [{ role: "user", content: unique("say something") }] } });
    const events: JobStreamEvent[] = [];
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new Error("the stream did not end within 60 s")), 60_000);
    try {
      for await (const ev of c.jobs.stream(job.id, { signal: ac.signal })) events.push(ev);
    } finally {
      clearTimeout(timer);
    }
    const chunks = events.flatMap((e) => (e.event === "chunk" ? [e] : []));
    const last = events.at(-1);
    assert.ok(last?.event === "state" && last.data.state === "completed", JSON.stringify(last));
    assert.ok(chunks.length >= 2, `${chunks.length} chunks`);
    assert.deepEqual(chunks.map((e) => e.id), chunks.map((_, i) => i + 1), "chunks numbered 1, 2, 3...");
    const text = chunks.map((e) => e.data.data).join("");
    const done = await c.jobs.get(job.id);
    assert.ok(JSON.stringify(done.result).includes(JSON.stringify(text).slice(1, -1)), `the result holds the streamed text ${JSON.stringify(text)}: ${JSON.stringify(done.result)}`);
    // A resume after the first chunk gets the rest only.
    const rest: number[] = [];
    for await (const ev of c.jobs.stream(job.id, { after: 1 })) if (ev.event === "chunk") rest.push(ev.id);
    assert.deepEqual(rest, chunks.slice(1).map((e) => e.id));
  });

  it("a read token reads its job (and nothing else), a tag token follows its tag", async () => {
    const c = client();
    const job = await c.jobs.enqueue({ type: "noop", tags: ["sdk-token"] });
    const other = await c.jobs.enqueue({ type: "noop" });
    const { token, job: named } = await c.jobs.token(job.id, { ttl: "1m" });
    assert.equal(named, job.id);
    const browser = new Client({ url: env("EDGEJOBS_URL"), apiKey: token });
    assert.equal((await browser.jobs.get(job.id)).id, job.id);
    const refused = await browser.jobs.get(other.id).catch((e: unknown) => e);
    assert.ok(refused instanceof NotFoundError, String(refused));
    const tagToken = await c.tokens.forTag({ tag: "sdk-token", ttl: "1m" });
    assert.equal(tagToken.tag, "sdk-token");
  });

  it("shows flow control views", async () => {
    const c = client();
    const key = unique("flowkey");
    const view = await c.flow.get(key);
    assert.equal(view.running, 0);
    const busiest = await c.flow.busiest(5);
    assert.ok(Array.isArray(busiest.keys));
    const paused = await admin().flow.pause({ key });
    assert.equal(paused.changed, true);
    assert.equal((await c.flow.get(key)).paused, true);
    assert.equal((await admin().flow.resume({ key })).changed, true);
  });

  it("verifies a webhook delivery with the SDK's verifier", async () => {
    const base = await receiver();
    const path = `/hook/${unique("d")}`;
    const { secret } = await admin().admin.webhookSecret({ url: `${base}${path}` });
    const body = { order: 7, note: "héllo ✓" };
    const job = await client().jobs.enqueue({ type: "webhook", payload: { url: `${base}${path}`, body } });
    const d = await until("the delivery", 60_000, async () => deliveries.find((x) => x.path === path));
    assert.deepEqual(await verifyWebhook(secret, d.headers, d.body), body);
    await assert.rejects(verifyWebhook(secret, d.headers, d.body.replace("7", "8")), /no webhook-signature matches/);
    assert.equal((await client().jobs.wait(job.id, { timeoutMs: 60_000 })).state, "completed");
  });

  it("429: a typed RateLimitedError without retries, success after Retry-After with them", async () => {
    const url = env("EDGEJOBS_URL");
    const limited = new Client({ url, apiKey: env("EDGEJOBS_LIMITED_KEY"), maxRetries: 0 });
    let refused: RateLimitedError | undefined;
    for (let i = 0; i < 10 && !refused; i++) {
      await limited.jobs.enqueue({ type: "noop" }).catch((e: unknown) => {
        if (e instanceof RateLimitedError) refused = e;
        else throw e;
      });
    }
    assert.ok(refused, "the limited key (3 enqueues per 10 s) was never refused");
    assert.equal(refused.code, "rate_limited");
    assert.equal(refused.status, 429);
    assert.ok(refused.retryAfter !== undefined && refused.retryAfter > 0 && refused.retryAfter <= 10, `retryAfter ${refused.retryAfter}`);
    // With retries (and a key, so the create may be repeated) the call waits and succeeds.
    const slept: number[] = [];
    const patient = new Client({
      url,
      apiKey: env("EDGEJOBS_LIMITED_KEY"),
      maxRetries: 4,
      sleep: (ms) => {
        slept.push(ms);
        return new Promise((r) => setTimeout(r, ms));
      },
    });
    const started = Date.now();
    const job = await patient.jobs.enqueue({ type: "noop" }, { idempotencyKey: true });
    assert.match(job.id, /^j/);
    assert.ok(slept.length >= 1, "the call was not refused first");
    assert.ok(slept[0]! >= refused.retryAfter * 1000 - 1000, `slept ${slept[0]} ms for Retry-After ${refused.retryAfter}`);
    assert.ok(Date.now() - started >= slept[0]!);
  });

  it("throws a typed error for each error it can provoke", async () => {
    const c = client();
    const url = env("EDGEJOBS_URL");
    const e400 = await c.jobs.enqueue({ type: "webhook", payload: {} } as never).catch((e: unknown) => e);
    assert.ok(e400 instanceof ValidationError && e400.code === "invalid_field" && e400.status === 400, String(e400));
    assert.ok(e400.field, "invalid_field names its field");
    const unknown = await c.jobs.enqueue({ type: "no.such.type" }).catch((e: unknown) => e);
    assert.ok(unknown instanceof ValidationError && unknown.code === "unknown_type", String(unknown));
    const e401 = await new Client({ url, apiKey: "not-a-key" }).jobs.list().catch((e: unknown) => e);
    assert.ok(e401 instanceof AuthError && e401.code === "unauthorized" && e401.status === 401, String(e401));
    const e403 = await c.admin.webhookSecret({ url: "http://127.0.0.1:1/x" }).catch((e: unknown) => e);
    assert.ok(e403 instanceof AuthError && e403.code === "forbidden" && e403.status === 403, String(e403));
    const e404 = await c.jobs.get("j" + "0".repeat(29)).catch((e: unknown) => e);
    assert.ok(e404 instanceof NotFoundError && e404.code === "job_not_found", String(e404));
    // Another tenant's key sees none of this tenant's jobs.
    const mine = await c.jobs.enqueue({ type: "noop" });
    const foreign = await new Client({ url, apiKey: env("EDGEJOBS_OTHER_KEY") }).jobs.get(mine.id).catch((e: unknown) => e);
    assert.ok(foreign instanceof NotFoundError, String(foreign));
    const e413 = await c.jobs.enqueue({ type: "noop", payload: { big: "x".repeat(200 * 1024) } }).catch((e: unknown) => e);
    assert.ok(e413 instanceof ValidationError && e413.code === "payload_too_large" && e413.status === 413, String(e413));
    const e400wait = await c.jobs.get(mine.id, { wait: "2h" }).catch((e: unknown) => e);
    assert.ok(e400wait instanceof ValidationError && e400wait.code === "invalid_field", String(e400wait));
    // 409 and 429 are provoked above (cancel twice, the limited key).
  });

  it("the README's quick start runs as written", async () => {
    const base = await receiver();
    assert.equal(process.env.EDGEJOBS_LLM, "1", "EDGEJOBS_LLM=1 is required: the quick start streams an llm.chat job");
    env("EDGEJOBS_ADMIN_KEY");
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const section = readme.split("<!-- quickstart:start -->")[1]?.split("<!-- quickstart:end -->")[0];
    assert.ok(section, "README.md has no quickstart markers");
    const blocks = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
    assert.ok(blocks.length >= 5, `${blocks.length} code blocks in the quick start`);
    const src = pathToFileURL(new URL("../../src/index.ts", import.meta.url).pathname).href;
    const code = blocks.join("\n").replaceAll('"@edgejobs/sdk"', JSON.stringify(src));
    const dir = mkdtempSync(join(tmpdir(), "edgejobs-readme-"));
    const file = join(dir, "quickstart.mts");
    writeFileSync(file, code);
    process.env.RECEIVER_URL = `${base}/readme`;
    try {
      const mod = (await import(pathToFileURL(file).href)) as { receive: (r: Request) => Promise<Response>; done: Job };
      assert.equal(mod.done.state, "completed");
      routes.set("/readme", mod.receive);
      const path = `/readme/${unique("r")}`;
      await client().jobs.enqueue({ type: "webhook", payload: { url: `${base}${path}`, body: { from: "readme" } } });
      const d = await until("the README receiver's delivery", 60_000, async () => deliveries.find((x) => x.path === path));
      assert.ok(d);
      // The README's handler answered 200 to a verified delivery, and 401 to a forged one.
      const forged = await mod.receive(new Request(`${base}${path}`, { method: "POST", headers: d.headers, body: d.body + " " }));
      assert.equal(forged.status, 401);
      const ok = await mod.receive(new Request(`${base}${path}`, { method: "POST", headers: d.headers, body: d.body }));
      assert.equal(ok.status, 200);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
