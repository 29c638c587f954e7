// Runs a fixed sequence of Redis calls through the official @upstash/redis client against
// UPSTASH_REDIS_REST_URL and prints the results as JSON. The e2e test runs the same
// sequence through our Rust client and requires both to agree.
import { Redis } from "@upstash/redis";

const p = process.env.COMPAT_PREFIX;
const redis = new Redis({
  url: process.env.UPSTASH_REDIS_REST_URL,
  token: process.env.UPSTASH_REDIS_REST_TOKEN,
  automaticDeserialization: false, // compare raw values; base64 responses stay on (the default)
  enableTelemetry: false,
});

const out = {};
const step = async (name, f) => {
  try {
    out[name] = await f();
  } catch (e) {
    // UpstashError reads "Command failed: <redis error>, command was: [...]".
    out[name] = { error: String(e.message ?? e).replace(/^Command failed: /, "").split(", command was")[0] };
  }
};

await step("set", () => redis.set(`${p}:s`, "hello"));
await step("get", () => redis.get(`${p}:s`));
await step("get_missing", () => redis.get(`${p}:missing`));
await step("incr", () => redis.incr(`${p}:n`));
await step("incrby", () => redis.incrby(`${p}:n`, 5));
await step("unicode_set", () => redis.set(`${p}:u`, "héllo ✓ \"quoted\""));
await step("unicode_get", () => redis.get(`${p}:u`));
await step("wrongtype", () => redis.hget(`${p}:s`, "f"));
await step("hset", () => redis.hset(`${p}:h`, { f1: "v1", f2: "v2" }));
await step("hget", () => redis.hget(`${p}:h`, "f1"));
await step("hgetall", async () => {
  // Without automatic deserialization the client returns Redis's flat [field, value, ...].
  const h = await redis.hgetall(`${p}:h`);
  const pairs = [];
  for (let i = 0; i < h.length; i += 2) pairs.push([h[i], h[i + 1]]);
  return pairs.sort(([a], [b]) => a.localeCompare(b)).flat();
});
await step("hincrby", () => redis.hincrby(`${p}:h`, "cnt", 3));
await step("pipeline", () => redis.pipeline().set(`${p}:a`, "1").incr(`${p}:a`).get(`${p}:a`).exec());
await step("multi_exec", () => redis.multi().incr(`${p}:c`).incr(`${p}:c`).get(`${p}:c`).exec());
await step("xgroup_create", () => redis.xgroup(`${p}:st`, { type: "CREATE", group: "g", id: "$", options: { MKSTREAM: true } }));
await step("xadd_1", () => redis.xadd(`${p}:st`, "*", { job: "a" }));
await step("xadd_2", () => redis.xadd(`${p}:st`, "*", { job: "b" }));
await step("xadd_3", () => redis.xadd(`${p}:st`, "*", { job: "c" }));
await step("xreadgroup", () => redis.xreadgroup("g", "c1", `${p}:st`, ">", { count: 2 }));
await step("xack", async () => {
  const read = out.xreadgroup;
  return redis.xack(`${p}:st`, "g", read[0][1][0][0]);
});
await step("xpending", () => redis.xpending(`${p}:st`, "g", "-", "+", 10));
await step("xclaim", () => redis.xclaim(`${p}:st`, "g", "c2", 0, out.xreadgroup[0][1][1][0]));
await step("xautoclaim", () => redis.xautoclaim(`${p}:st`, "g", "c3", 0, "0-0", { count: 10 }));
await step("xlen", () => redis.xlen(`${p}:st`));
await step("del", () => redis.del(`${p}:s`, `${p}:n`, `${p}:h`));

console.log(JSON.stringify(out));
