// BullMQ 5 on the stack's own redis-server: the reference figures scripts/bench prints beside
// edgejobs' (tests/src/bin/bench/latency.rs runs this with the pinned node, after its own
// scenarios). Prints ONE JSON object on stdout; progress and BullMQ's warnings go to stderr.
//
// Scenarios (each bounded in count and time):
//   noop     no-op jobs added with addBulk (batches of 100, 4 in flight, like the edge lane's
//            enqueue), one Worker at --noop-concurrency: jobs/s from the first add to the last
//            completion;
//   slow     --slow-ms jobs at --slow-concurrency: jobs/s and its ratio to concurrency ÷ time;
//   idle     add-to-start and add-to-complete of --samples jobs added one at a time (a random
//            pause of up to --gap-ms before each), from BullMQ's own job timestamps:
//            job.timestamp (set when the job is added), processedOn, finishedOn;
//   loaded   adds paced at --load-fraction of the noop throughput measured above, in a bulk
//            every --tick-ms, for --loaded-s seconds; one job of each bulk is sampled.
// CPU: this process's (process.cpuUsage) and, with --redis-pid, redis-server's (/proc) per job.
//
// The redis password comes from the environment (BENCH_REDIS_PASSWORD), never from argv. The
// queues live in their own database (--db, default 1), which is flushed before and after.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { Queue, Worker } from "bullmq";

const opts = {
  host: "127.0.0.1",
  port: 6379,
  db: 1,
  "noop-jobs": 20000,
  "noop-concurrency": 100,
  "slow-jobs": 5000,
  "slow-ms": 100,
  "slow-concurrency": 25,
  samples: 200,
  "gap-ms": 1000,
  "loaded-s": 10,
  "tick-ms": 20,
  "load-fraction": 0.5,
  "timeout-s": 120,
  "redis-pid": 0,
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (!a.startsWith("--") || !(a.slice(2) in opts)) fail(`unknown argument ${a}`);
  const k = a.slice(2);
  const v = process.argv[++i];
  if (v === undefined) fail(`${a} needs a value`);
  opts[k] = k === "host" ? v : Number(v);
  if (k !== "host" && !Number.isFinite(opts[k])) fail(`${a}: not a number: ${v}`);
}

function fail(msg) {
  process.stdout.write(JSON.stringify({ error: msg }) + "\n");
  process.exit(2);
}

const log = (msg) => process.stderr.write(`[bullmq] ${msg}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const connection = {
  host: opts.host,
  port: opts.port,
  db: opts.db,
  password: process.env.BENCH_REDIS_PASSWORD || undefined,
  maxRetriesPerRequest: null,
};
const deadline = (what) => {
  const end = Date.now() + opts["timeout-s"] * 1000;
  return () => {
    if (Date.now() > end) throw new Error(`${what}: not done within ${opts["timeout-s"]} s`);
  };
};

// Nearest rank, as latency.rs's Percentiles::of: every figure is a measured sample.
function percentiles(xs) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  const n = v.length;
  if (n === 0) return null;
  const rank = (p) => v[Math.min(Math.max(Math.ceil((p / 100) * n), 1), n) - 1];
  return { n, p50: rank(50), p90: rank(90), p99: rank(99), max: v[n - 1] };
}

// CPU µs of this process and of redis-server so far.
function cpuNow() {
  const u = process.cpuUsage();
  let redis = null;
  if (opts["redis-pid"] > 0) {
    try {
      const stat = readFileSync(`/proc/${opts["redis-pid"]}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // After the comm: state(0) ... utime(11) stime(12), in ticks of 1/100 s.
      redis = (Number(f[11]) + Number(f[12])) * 10_000;
    } catch {
      redis = null;
    }
  }
  return { node: u.user + u.system, redis };
}

function cpuPerJob(a, b, jobs) {
  const per = (x, y) => (x === null || y === null || jobs <= 0 ? null : (y - x) / jobs);
  return { node_us_per_job: per(a.node, b.node), redis_us_per_job: per(a.redis, b.redis) };
}

// Counts completions per queue, and lets a caller wait for one job's or for a total.
class Completions {
  constructor(worker) {
    this.count = 0;
    this.failed = 0;
    this.waiters = new Map();
    worker.on("completed", (job) => {
      this.count++;
      const w = this.waiters.get(job.id);
      if (w) {
        this.waiters.delete(job.id);
        w();
      }
    });
    worker.on("failed", () => this.failed++);
  }
  one(id) {
    return new Promise((resolve) => this.waiters.set(id, resolve));
  }
  async total(n, what) {
    const check = deadline(what);
    while (this.count + this.failed < n) {
      check();
      await sleep(5);
    }
  }
}

async function withWorker(name, concurrency, processor, body) {
  const queue = new Queue(name, { connection });
  const worker = new Worker(name, processor, { connection, concurrency });
  worker.on("error", (e) => log(`worker error: ${e.message}`));
  await worker.waitUntilReady();
  const done = new Completions(worker);
  try {
    return await body(queue, done);
  } finally {
    await worker.close();
    await queue.obliterate({ force: true }).catch(() => {});
    await queue.close();
  }
}

// Adds `jobs` jobs with addBulk, `batch` per call, `inFlight` calls at once.
async function addAll(queue, jobs, batch = 100, inFlight = 4) {
  let next = 0;
  const lane = async () => {
    while (next < jobs) {
      const n = Math.min(batch, jobs - next);
      next += n;
      await queue.addBulk(Array.from({ length: n }, () => ({ name: "noop", data: {} })));
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
}

async function throughput(name, jobs, concurrency, processor) {
  return withWorker(name, concurrency, processor, async (queue, done) => {
    // Warm-up: the scripts are loaded and the worker has run before anything is timed.
    await addAll(queue, 100);
    await done.total(100, `${name} warm-up`);
    const base = done.count + done.failed;
    const cpu0 = cpuNow();
    const t0 = performance.now();
    await addAll(queue, jobs);
    const enqueueS = (performance.now() - t0) / 1000;
    await done.total(base + jobs, name);
    const elapsed = (performance.now() - t0) / 1000;
    const cpu1 = cpuNow();
    return {
      jobs,
      concurrency,
      enqueue_s: enqueueS,
      elapsed_s: elapsed,
      jobs_per_s: jobs / elapsed,
      failed: done.failed,
      cpu: cpuPerJob(cpu0, cpu1, jobs),
    };
  });
}

// A job's latency from its own timestamps (ms).
async function latencyOf(queue, id) {
  const job = await queue.getJob(id);
  if (!job || !job.processedOn || !job.finishedOn) return null;
  return { to_start_ms: job.processedOn - job.timestamp, to_complete_ms: job.finishedOn - job.timestamp };
}

function summarize(lat) {
  const ok = lat.filter((l) => l !== null);
  return {
    samples: lat.length,
    measured: ok.length,
    to_start_ms: percentiles(ok.map((l) => l.to_start_ms)),
    to_complete_ms: percentiles(ok.map((l) => l.to_complete_ms)),
  };
}

async function idle(samples, concurrency) {
  return withWorker("bench-idle", concurrency, async () => {}, async (queue, done) => {
    const lat = [];
    const cpu0 = cpuNow();
    const check = deadline("idle samples");
    for (let i = 0; i < samples; i++) {
      check();
      await sleep(Math.random() * opts["gap-ms"]);
      const job = await queue.add("noop", {});
      const finished = done.one(job.id);
      await Promise.race([finished, sleep(opts["timeout-s"] * 1000)]);
      lat.push(await latencyOf(queue, job.id));
    }
    const cpu1 = cpuNow();
    return { ...summarize(lat), gap_ms_max: opts["gap-ms"], cpu: cpuPerJob(cpu0, cpu1, samples) };
  });
}

async function loaded(rate, seconds, concurrency) {
  return withWorker("bench-loaded", concurrency, async () => {}, async (queue, done) => {
    const tick = opts["tick-ms"];
    const ticks = Math.max(1, Math.round((seconds * 1000) / tick));
    const sampled = [];
    let added = 0;
    let owed = 0;
    let late = 0;
    const cpu0 = cpuNow();
    const t0 = performance.now();
    const inFlight = [];
    for (let k = 0; k < ticks; k++) {
      const due = t0 + k * tick;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      else if (wait < -tick) late++;
      owed += (rate * tick) / 1000;
      const n = Math.floor(owed);
      if (n < 1) continue;
      owed -= n;
      added += n;
      const pick = Math.floor(Math.random() * n);
      const p = queue
        .addBulk(Array.from({ length: n }, () => ({ name: "noop", data: {} })))
        .then((jobs) => sampled.push(jobs[pick].id));
      inFlight.push(p);
      // At most 8 bulks in flight: a slow add makes the next ones late, not unbounded.
      if (inFlight.length >= 8) await inFlight.shift();
    }
    await Promise.all(inFlight);
    const enqueueS = (performance.now() - t0) / 1000;
    await done.total(added, "loaded drain");
    const cpu1 = cpuNow();
    const lat = [];
    for (const id of sampled) lat.push(await latencyOf(queue, id));
    return {
      offered_jobs_per_s: rate,
      jobs: added,
      seconds: enqueueS,
      achieved_enqueue_jobs_per_s: added / enqueueS,
      late_ticks: late,
      ...summarize(lat),
      cpu: cpuPerJob(cpu0, cpu1, added),
    };
  });
}

async function main() {
  const require = createRequire(import.meta.url);
  const version = require("bullmq/package.json").version;
  const flush = async () => {
    const q = new Queue("bench-flush", { connection });
    const client = await q.client;
    await client.flushdb();
    await q.close();
  };
  await flush();
  const out = { bullmq: version, node: process.version, settings: opts };
  log(`no-op: ${opts["noop-jobs"]} jobs, concurrency ${opts["noop-concurrency"]}`);
  out.noop = await throughput("bench-noop", opts["noop-jobs"], opts["noop-concurrency"], async () => {});
  log(`no-op: ${out.noop.jobs_per_s.toFixed(0)} jobs/s`);
  const ms = opts["slow-ms"];
  log(`${ms} ms jobs: ${opts["slow-jobs"]} jobs, concurrency ${opts["slow-concurrency"]}`);
  out.slow = await throughput("bench-slow", opts["slow-jobs"], opts["slow-concurrency"], () => sleep(ms));
  out.slow.sleep_ms = ms;
  out.slow.ideal_jobs_per_s = (opts["slow-concurrency"] * 1000) / ms;
  out.slow.ratio_to_ideal = out.slow.jobs_per_s / out.slow.ideal_jobs_per_s;
  log(`${ms} ms jobs: ${out.slow.jobs_per_s.toFixed(0)} jobs/s (${out.slow.ratio_to_ideal.toFixed(2)}× ideal)`);
  log(`idle latency: ${opts.samples} jobs one at a time`);
  out.idle = await idle(opts.samples, opts["noop-concurrency"]);
  const rate = out.noop.jobs_per_s * opts["load-fraction"];
  log(`loaded latency: ${rate.toFixed(0)} jobs/s for ${opts["loaded-s"]} s`);
  out.loaded = await loaded(rate, opts["loaded-s"], opts["noop-concurrency"]);
  await flush();
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().then(
  () => process.exit(0),
  (e) => fail(`${e && e.stack ? e.stack : e}`),
);
