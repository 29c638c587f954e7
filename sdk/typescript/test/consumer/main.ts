// A fresh project's use of the packed SDK (scripts/sdk-typescript installs the tarball next to
// it, typechecks it against the package's `exports` and types, and runs it with node).

import { Client, ERROR_CLASSES, NotFoundError, verifyWebhook } from "@edgejobs/sdk";
import type { Job, NewJob } from "@edgejobs/sdk";
import { verifyWebhook as verifyFromSubpath } from "@edgejobs/sdk/webhook";
import { serve } from "@edgejobs/sdk/workflow";

const job = { id: "j" + "0".repeat(29), type: "noop", state: "queued" } as Job;
const client = new Client({
  url: "https://jobs.example",
  apiKey: "k",
  fetch: async (req: Request) => {
    if (req.url.endsWith("/v1/jobs")) return Response.json(job, { status: 201 });
    return Response.json({ error: { code: "job_not_found", message: "no such job" } }, { status: 404 });
  },
});
const spec: NewJob = { type: "noop", payload: {} };
const created: Job = await client.jobs.enqueue(spec);
if (created.id !== job.id) throw new Error("enqueue did not answer the job");
try {
  await client.jobs.get("jmissing");
  throw new Error("a 404 did not throw");
} catch (e) {
  if (!(e instanceof NotFoundError) || e.code !== "job_not_found") throw e;
}
if (ERROR_CLASSES.rate_limited.name !== "RateLimitedError") throw new Error("the code map is wrong");

const secret = "whsec_" + btoa("consumer-secret-0123456789");
const key = await crypto.subtle.importKey("raw", new TextEncoder().encode("consumer-secret-0123456789"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
const ts = Math.floor(Date.now() / 1000);
const body = JSON.stringify({ hello: "world" });
const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`msg_1.${ts}.${body}`)));
const headers = { "webhook-id": "msg_1", "webhook-timestamp": String(ts), "webhook-signature": `v1,${btoa(String.fromCharCode(...mac))}` };
const payload = (await verifyWebhook(secret, headers, body)) as { hello: string };
await verifyFromSubpath(secret, headers, body);
if (payload.hello !== "world" || typeof serve !== "function") throw new Error("the verifier or the workflow export is wrong");
console.log("consumer OK");
