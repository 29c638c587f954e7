// An example Worker that uses edgejobs through service bindings (#31), with the TypeScript
// client (`sdk/typescript`) running inside workerd.
//
// Routes:
// - POST /signup {"email": "..."}: enqueues `welcome.email` through env.JOBS; answers the job.
// - POST /deliveries: edgejobs delivers `welcome.email` jobs here through its EMAILER binding;
//   answers what it "sent" (this becomes the job's result).
// - GET /whoami: who edgejobs takes this Worker for (the binding's tenant).
// - GET /scenario: the client's own round trip inside the Worker: enqueue, get, list pages,
//   a typed error, and a call through a binding edgejobs refuses.
// - anything else: 404.

import { Client, EdgejobsError } from "../../../sdk/typescript/src/index.ts";

interface Env {
  /** edgejobs, with props { tenant = "acme" }. */
  JOBS: Fetcher;
  /** edgejobs, with props naming a tenant it does not list. */
  JOBS_UNLISTED: Fetcher;
}

function json(body: unknown, status = 200): Response {
  return Response.json(body, { status });
}

/** An error of the client as JSON, so the caller sees its class, status and code. */
function failure(e: unknown): Response {
  if (e instanceof EdgejobsError) {
    return json({ error: { class: e.constructor.name, status: e.status, code: e.code, message: e.message } }, 502);
  }
  return json({ error: { class: "Error", message: String(e) } }, 500);
}

async function scenario(jobs: Client, unlisted: Client): Promise<unknown> {
  const tag = `scenario-${crypto.randomUUID()}`;
  const created = await jobs.jobs.enqueue({ type: "noop", payload: { from: "worker" }, tags: [tag] });
  const read = await jobs.jobs.get(created.id);
  const listed: string[] = [];
  for await (const page of jobs.jobs.pages({ tag, limit: 1 })) {
    for (const j of page.jobs) listed.push(j.id);
    if (listed.length > 5) break;
  }
  let missing: unknown = null;
  try {
    await jobs.jobs.get("j_does_not_exist");
  } catch (e) {
    missing = e instanceof EdgejobsError ? { class: e.constructor.name, status: e.status, code: e.code } : String(e);
  }
  let refused: unknown = null;
  try {
    await unlisted.jobs.enqueue({ type: "noop" });
  } catch (e) {
    refused = e instanceof EdgejobsError ? { class: e.constructor.name, status: e.status, code: e.code } : String(e);
  }
  let admin: unknown = null;
  try {
    await jobs.schedules.create({ name: `nope-${tag}`, cron: "0 3 * * *", job: { type: "noop" } });
  } catch (e) {
    admin = e instanceof EdgejobsError ? { class: e.constructor.name, status: e.status, code: e.code } : String(e);
  }
  return { created: created.id, read: read.id, tenant: read.tenant, listed, missing, refused, admin };
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const jobs = new Client({ binding: env.JOBS });
    try {
      if (request.method === "POST" && url.pathname === "/signup") {
        const { email } = (await request.json()) as { email: string };
        const job = await jobs.jobs.enqueue({ type: "welcome.email", payload: { email } }, { idempotencyKey: true });
        return json(job, 201);
      }
      if (request.method === "POST" && url.pathname === "/deliveries") {
        // Only edgejobs' binding reaches this path in production (a route of this Worker
        // could be closed to the internet by a `workers_dev = false` deploy); the headers
        // say which job and attempt this is, for de-duplication by webhook-id.
        const payload = (await request.json()) as { email?: string };
        return json({
          sent: `welcome mail to ${payload.email ?? "?"}`,
          job: request.headers.get("x-edgejobs-job-id"),
          type: request.headers.get("x-edgejobs-type"),
          message: request.headers.get("webhook-id"),
          signed: request.headers.has("webhook-signature"),
        });
      }
      if (request.method === "GET" && url.pathname === "/whoami") {
        return json(await jobs.whoami());
      }
      if (request.method === "GET" && url.pathname === "/scenario") {
        return json(await scenario(jobs, new Client({ binding: env.JOBS_UNLISTED, maxRetries: 0 })));
      }
      return json({ error: { code: "not_found", message: `no route for ${url.pathname}` } }, 404);
    } catch (e) {
      return failure(e);
    }
  },
};
