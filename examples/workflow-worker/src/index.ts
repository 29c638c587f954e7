// An example workflow endpoint on Cloudflare Workers: the job type `order.flow` quotes an
// order, optionally asks a tool, cools off, then waits for its approval (`order.batch` runs
// children; `bench.http` is scripts/bench's five trivial steps). The end-to-end tests drive
// it through the edge, so it also counts how often the quote step really ran: a recorded
// step must never run twice, however many times the edge calls back.
//
// Routes:
// - POST /workflow: the workflow endpoint (the URL the job type declares in JOB_TYPES).
// - GET /calls?run=<job id>: `{"quote": n, "bench_calls": m}`, how many times the quote step
//   ran for that run, and how many calls `bench.http` has answered in all.
// - anything else: 404.

import { serve } from "../../../sdk/typescript/src/index.ts";

interface Env {
  /** The secret of `order.flow` at this URL (POST /v1/admin/webhook-secret). */
  WORKFLOW_SECRET: string;
  /** The secret of `order.batch` at this URL: each type is signed with its own key. */
  BATCH_SECRET?: string;
  /** The secret of `bench.http` at this URL (scripts/bench's workflow scenario). */
  BENCH_SECRET?: string;
}

// Per isolate, so only meaningful where one isolate serves every call (`wrangler dev`);
// a deployed Worker would count in a Durable Object or KV instead. Never pruned: this is
// a test fixture, not a pattern for production.
const quoteRuns = new Map<string, number>();
// Calls of `bench.http` answered (each call runs the handler from the top once).
let benchCalls = 0;

const workflow = serve({
  secret: (env: Env, type) =>
    type === "order.batch" ? env.BATCH_SECRET : type === "bench.http" ? env.BENCH_SECRET : env.WORKFLOW_SECRET,
  workflows: {
    "order.flow": async (run, step) => {
      const quote = await step.run("quote", () => {
        quoteRuns.set(run.id, (quoteRuns.get(run.id) ?? 0) + 1);
        // Live output (#30): subscribers of the run see it as the step is recorded, once.
        step.progress(25, "quoted");
        step.stream("log", "quoted;");
        return { price: run.payload.qty * 3 };
      });

      // Whether this step exists depends only on the payload, which never changes for a
      // run, so every execution takes the same steps in the same order.
      let tool: unknown = null;
      if (run.payload.tool_url) {
        tool = await step.run("tool", async () => {
          const res = await fetch(run.payload.tool_url, { method: "POST", body: JSON.stringify({ q: quote.price }) });
          if (!res.ok) {
            // Thrown, so the edge records a failed step instead of an error page as a result.
            throw new Error(`the tool answered ${res.status}`);
          }
          step.stream("log", "tool;");
          return res.json();
        });
      }
      step.metadata("priced", true);

      await step.sleep("cool-off", run.payload.sleep_ms ?? 1000);

      const approval = await step.waitForEvent<{ by: string }>("approval", {
        event: "order.approved",
        match: { "/data/order_id": "/payload/order_id" },
        timeout: run.payload.wait_ms ?? 60_000,
      });

      return { price: quote.price, tool, approved_by: approval ? approval.by : null };
    },

    // Child jobs: a fan-out of `n` noop jobs, then one invoke; the run holds nothing while
    // they run, and each step resumes it with the children's outcomes.
    "order.batch": async (run, step) => {
      const n: number = run.payload.n ?? 2;
      const specs = Array.from({ length: n }, (_, i) => ({ type: "noop", payload: { i } }));
      const outcomes = await step.fanOut("children", specs);
      const one = await step.invoke("one-more", { type: "noop" });
      return { completed: outcomes.filter((o) => o.state === "completed").length, one };
    },

    // scripts/bench's workflow scenario (`--only workflow`): five trivial steps, so what is
    // measured is the protocol (one call and one recorded step each), not the work.
    "bench.http": async (_run, step) => {
      benchCalls += 1;
      let sum = 0;
      for (const name of ["s1", "s2", "s3", "s4", "s5"]) {
        sum += await step.run(name, () => 1);
      }
      return { sum };
    },
  },
});

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/workflow") {
      return workflow(req, env);
    }
    if (url.pathname === "/calls" && req.method === "GET") {
      return Response.json({ quote: quoteRuns.get(url.searchParams.get("run") ?? "") ?? 0, bench_calls: benchCalls });
    }
    return new Response("not found", { status: 404 });
  },
};
