// The reference for scripts/bench: the least a Worker can do to enqueue a job on this
// runtime (one Durable Object SQLite write and one queue send per request), so the
// single-enqueue figure of edgejobs can be read against what the runtime itself allows.
import { DurableObject } from "cloudflare:workers";

export class Store extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID");
  }

  async fetch(request) {
    const doc = await request.text();
    const id = crypto.randomUUID();
    this.ctx.storage.sql.exec("INSERT INTO jobs (id, doc) VALUES (?, ?)", id, doc);
    await this.env.JOBS.send({ id });
    return new Response(JSON.stringify({ id }), { status: 201, headers: { "content-type": "application/json" } });
  }
}

export default {
  async fetch(request, env) {
    if (new URL(request.url).pathname === "/health/live") {
      return new Response('{"status":"live"}', { headers: { "content-type": "application/json" } });
    }
    const body = await request.text();
    const stub = env.STORE.get(env.STORE.idFromName(`shard-${Math.floor(Math.random() * 16)}`));
    return stub.fetch("https://store/", { method: "POST", body });
  },

  async queue(batch) {
    batch.ackAll();
  },
};
