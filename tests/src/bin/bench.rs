//! `edgejobs-bench`: the benchmark `scripts/bench` runs. It starts a private local stack from
//! release binaries on loopback, measures the runtime ceiling, enqueue, the edge lane and the
//! native lane end to end, footprint and the operations each job costs (counted by the system
//! itself), prints a table and writes one JSON object under `target/bench/`.
//!
//! Every loop is bounded in count and time; the stack stops when this process ends (the
//! `Stack`'s drop, and each part's watchdog if we are killed). Figures, not assertions: the
//! targets are printed with whether they were met, and the exit code does not depend on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use edgejobs_tests::stack::{Profile, Stack, StackOptions};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Prices. Published list prices as of 2026-11-23, read from:
//   https://developers.cloudflare.com/workers/platform/pricing/
//   https://developers.cloudflare.com/durable-objects/platform/pricing/
//   https://developers.cloudflare.com/queues/platform/pricing/
//   https://upstash.com/pricing/redis
// Included free allowances, duration/CPU-time charges and storage (GB-month) are ignored:
// the estimate is the marginal cost of operations and row writes/reads per job.
// ---------------------------------------------------------------------------------------

const PRICES_AS_OF: &str = "2026-11-23";
const PRICE_SOURCES: &[&str] = &[
    "https://developers.cloudflare.com/workers/platform/pricing/",
    "https://developers.cloudflare.com/durable-objects/platform/pricing/",
    "https://developers.cloudflare.com/queues/platform/pricing/",
    "https://upstash.com/pricing/redis",
];
/// Workers Paid: US$0.30 per million requests.
const USD_PER_M_WORKER_REQUESTS: f64 = 0.30;
/// Durable Objects: US$0.15 per million requests (alarms and RPC calls included).
const USD_PER_M_DO_REQUESTS: f64 = 0.15;
/// Durable Objects SQLite storage: US$1.00 per million rows written.
const USD_PER_M_ROWS_WRITTEN: f64 = 1.00;
/// Durable Objects SQLite storage: US$0.001 per million rows read.
const USD_PER_M_ROWS_READ: f64 = 0.001;
/// Queues: US$0.40 per million operations.
const USD_PER_M_QUEUE_OPS: f64 = 0.40;
/// Queues: a message costs a write, a read and a delete per 64 KB (ours are far smaller).
const QUEUE_OPS_PER_MESSAGE: f64 = 3.0;
/// Upstash pay-as-you-go: US$0.20 per 100,000 commands.
const USD_PER_M_UPSTASH_COMMANDS: f64 = 2.00;

// ---------------------------------------------------------------------------------------
// Targets (from the issue). Timing is never asserted in tests; it is printed here.
// ---------------------------------------------------------------------------------------

const TARGET_EDGE_E2E_JOBS_PER_S: f64 = 1_000.0;
const TARGET_BATCH_ENQUEUE_JOBS_PER_S: f64 = 2_000.0;
const TARGET_SINGLE_VS_LIVENESS_RPS: f64 = 0.45;
const TARGET_SINGLE_VS_LIVENESS_P99: f64 = 3.0;
const TARGET_DO_PER_JOB_BATCH: f64 = 0.5;
const TARGET_DO_PER_JOB_SINGLE: f64 = 3.0;
const TARGET_USD_PER_M_JOBS_BATCH: f64 = 0.50;

/// Jobs per `POST /v1/jobs/batch` (the API's maximum).
const BATCH: usize = 100;
/// The stream and group the native lane uses (`shared/core/src/wire.rs`).
const STREAM_KEY: &str = edgejobs_core::wire::STREAM_KEY;
const STREAM_GROUP: &str = edgejobs_core::wire::STREAM_GROUP;
/// Linux reports CPU times in USER_HZ ticks, 100 per second on every architecture we run on.
const TICKS_PER_S: f64 = 100.0;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps up to `d`, waking early when interrupted.
fn nap(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    check_interrupted()
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[bench {}] {}", clock(), msg.as_ref());
}

fn clock() -> String {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Settings: flags over environment over defaults (`--quick` changes the defaults).
// ---------------------------------------------------------------------------------------

const USAGE: &str = "\
usage: edgejobs-bench [--quick] [--json-only] [options]

Starts a private local stack (release binaries, 127.0.0.1 only), runs the scenarios, prints a
table and writes target/bench/bench-<unix time>.json and target/bench/latest.json.

  --quick              smaller counts (2,000 edge jobs, 500 native jobs, 3 s wrk runs)
  --json-only          print only the JSON object on stdout (progress still goes to stderr)
  --duration D         each wrk run (default 10s; env BENCH_DURATION)
  --threads N          wrk threads (default 2; env BENCH_THREADS)
  --connections N      wrk connections (default 32; env BENCH_CONNECTIONS)
  --batch-connections N  wrk connections for batch enqueue (default 8: each carries 100 jobs;
                       env BENCH_BATCH_CONNECTIONS)
  --edge-jobs N        noop jobs for the edge lane end to end (default 20000; env BENCH_EDGE_JOBS)
  --native-jobs N      sleep jobs per native scenario (default 5000; env BENCH_NATIVE_JOBS)
  --native-ms MS       sleep per native job (default 100; env BENCH_NATIVE_MS)
  --concurrency LIST   consumer concurrencies, one native scenario each (default 25,250)
  --clients N          concurrent enqueue clients for the lanes (default 4; env BENCH_CLIENTS)
  --timeout D          bound on waiting for completions per scenario (default 300s, quick 120s;
                       env BENCH_TIMEOUT)
  --only LIST          run only these of: edge,native,liveness,single,batch
  --out DIR            where the JSON goes (default <root>/target/bench)
  --keep-state         keep the stack's state directory (logs, wrangler state) afterwards
";

#[derive(Debug, Clone)]
struct Settings {
    quick: bool,
    json_only: bool,
    wrk_duration: Duration,
    wrk_threads: u32,
    wrk_connections: u32,
    batch_connections: u32,
    edge_jobs: usize,
    native_jobs: usize,
    native_ms: u64,
    concurrency: Vec<u32>,
    clients: usize,
    timeout: Duration,
    poll: Duration,
    settle_timeout: Duration,
    only: BTreeSet<String>,
    out_dir: PathBuf,
    keep_state: bool,
    root: PathBuf,
}

/// `10s`, `500ms`, `2m` or plain seconds.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len()));
    let n: f64 = num.parse().with_context(|| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => bail!("not a duration: {s:?} (use 500ms, 10s or 2m)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_args() -> anyhow::Result<Settings> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut s = Settings {
        quick,
        json_only: false,
        wrk_duration: Duration::from_secs(if quick { 3 } else { 10 }),
        wrk_threads: 2,
        wrk_connections: 32,
        batch_connections: 8,
        edge_jobs: if quick { 2_000 } else { 20_000 },
        native_jobs: if quick { 500 } else { 5_000 },
        native_ms: 100,
        concurrency: vec![25, 250],
        clients: 4,
        timeout: Duration::from_secs(if quick { 120 } else { 300 }),
        poll: Duration::from_millis(500),
        settle_timeout: Duration::from_secs(20),
        only: ["edge", "native", "liveness", "single", "batch"].iter().map(|s| s.to_string()).collect(),
        out_dir: PathBuf::new(),
        keep_state: false,
        root: StackOptions::default_root(),
    };
    if let Some(v) = env("BENCH_DURATION") {
        s.wrk_duration = parse_duration(&v)?;
    }
    if let Some(v) = env("BENCH_THREADS") {
        s.wrk_threads = v.parse().context("BENCH_THREADS")?;
    }
    if let Some(v) = env("BENCH_CONNECTIONS") {
        s.wrk_connections = v.parse().context("BENCH_CONNECTIONS")?;
    }
    if let Some(v) = env("BENCH_BATCH_CONNECTIONS") {
        s.batch_connections = v.parse().context("BENCH_BATCH_CONNECTIONS")?;
    }
    if let Some(v) = env("BENCH_EDGE_JOBS") {
        s.edge_jobs = v.parse().context("BENCH_EDGE_JOBS")?;
    }
    if let Some(v) = env("BENCH_NATIVE_JOBS") {
        s.native_jobs = v.parse().context("BENCH_NATIVE_JOBS")?;
    }
    if let Some(v) = env("BENCH_NATIVE_MS") {
        s.native_ms = v.parse().context("BENCH_NATIVE_MS")?;
    }
    if let Some(v) = env("BENCH_CLIENTS") {
        s.clients = v.parse().context("BENCH_CLIENTS")?;
    }
    if let Some(v) = env("BENCH_TIMEOUT") {
        s.timeout = parse_duration(&v)?;
    }
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value\n\n{USAGE}"));
        match a.as_str() {
            "--quick" => {}
            "--json-only" => s.json_only = true,
            "--keep-state" => s.keep_state = true,
            "--duration" => s.wrk_duration = parse_duration(&value()?)?,
            "--threads" => s.wrk_threads = value()?.parse().context("--threads")?,
            "--connections" => s.wrk_connections = value()?.parse().context("--connections")?,
            "--batch-connections" => s.batch_connections = value()?.parse().context("--batch-connections")?,
            "--edge-jobs" => s.edge_jobs = value()?.parse().context("--edge-jobs")?,
            "--native-jobs" => s.native_jobs = value()?.parse().context("--native-jobs")?,
            "--native-ms" => s.native_ms = value()?.parse().context("--native-ms")?,
            "--clients" => s.clients = value()?.parse().context("--clients")?,
            "--timeout" => s.timeout = parse_duration(&value()?)?,
            "--out" => s.out_dir = PathBuf::from(value()?),
            "--concurrency" => {
                s.concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse::<u32>().context("--concurrency takes numbers, e.g. 25,250"))
                    .collect::<anyhow::Result<_>>()?
            }
            "--only" => {
                let v = value()?;
                s.only = v.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect();
                let known = ["edge", "native", "liveness", "single", "batch"];
                if let Some(bad) = s.only.iter().find(|x| !known.contains(&x.as_str())) {
                    bail!("--only: unknown scenario {bad:?} (known: {})", known.join(","));
                }
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if s.out_dir.as_os_str().is_empty() {
        s.out_dir = s.root.join("target/bench");
    }
    if s.wrk_threads == 0 || s.wrk_connections < s.wrk_threads || s.batch_connections < s.wrk_threads || s.clients == 0
    {
        bail!(
            "--threads and --clients must be at least 1, and --connections and --batch-connections at least --threads"
        );
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// Prometheus text: enough of the format to read our own exposition.
// ---------------------------------------------------------------------------------------

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone, Default)]
struct Prom {
    /// Families announced by a HELP or TYPE line, or seen in a sample.
    present: BTreeSet<String>,
    samples: Vec<(String, Labels, f64)>,
}

impl Prom {
    fn parse(text: &str) -> Prom {
        let mut p = Prom::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                if let Some(name) = rest.split_whitespace().next() {
                    p.present.insert(name.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if let Some((name, labels, value)) = parse_sample(line) {
                p.present.insert(name.clone());
                p.samples.push((name, labels, value));
            }
        }
        p
    }

    /// The sum of every sample of `family`; `None` when the family does not exist at all
    /// (a family announced without samples is 0).
    fn sum(&self, family: &str) -> Option<f64> {
        self.present
            .contains(family)
            .then(|| self.samples.iter().filter(|(n, _, _)| n == family).map(|(_, _, v)| v).sum())
    }

    /// The sum of the samples of `family` with label `k` = `v`.
    fn sum_where(&self, family: &str, k: &str, v: &str) -> Option<f64> {
        self.present.contains(family).then(|| {
            self.samples
                .iter()
                .filter(|(n, l, _)| n == family && l.iter().any(|(lk, lv)| lk == k && lv == v))
                .map(|(_, _, x)| x)
                .sum()
        })
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    close = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    // A quoted value with \\, \" and \n escapes.
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return None;
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next()?.1 {
                            '\\' => match chars.next()?.1 {
                                'n' => val.push('\n'),
                                other => val.push(other),
                            },
                            '"' => break,
                            other => val.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), val));
                }
                other => key.push(other),
            }
        }
        rest = &inner[close? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

// ---------------------------------------------------------------------------------------
// What we count. Each measure is read from the edge's /metrics, a consumer's /metrics, or
// redis-server's own command statistics.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Edge,
    Consumer,
    Redis,
}

#[derive(Debug)]
struct Measure {
    key: &'static str,
    source: Source,
    family: &'static str,
    what: &'static str,
}

const MEASURES: &[Measure] = &[
    Measure {
        key: "worker_requests",
        source: Source::Edge,
        family: "edgejobs_worker_invocations_total",
        what: "Worker requests (fetch, queue and scheduled invocations)",
    },
    Measure {
        key: "do_requests",
        source: Source::Edge,
        family: "edgejobs_do_requests_total",
        what: "Durable Object requests, alarms included",
    },
    Measure {
        key: "do_rows_written",
        source: Source::Edge,
        family: "edgejobs_do_rows_written_total",
        what: "SQLite rows written",
    },
    Measure {
        key: "do_rows_read",
        source: Source::Edge,
        family: "edgejobs_do_rows_read_total",
        what: "SQLite rows read",
    },
    Measure {
        key: "queue_messages_sent",
        source: Source::Edge,
        family: "edgejobs_queue_messages_sent_total",
        what: "queue messages sent",
    },
    Measure {
        key: "queue_jobs_sent",
        source: Source::Edge,
        family: "edgejobs_queue_jobs_sent_total",
        what: "job references sent to the queue (one message may carry several)",
    },
    Measure {
        key: "queue_messages_received",
        source: Source::Edge,
        family: "edgejobs_queue_messages_received_total",
        what: "queue messages received (deliveries)",
    },
    Measure {
        key: "upstash_commands_edge",
        source: Source::Edge,
        family: "edgejobs_upstash_commands_total",
        what: "Upstash commands the edge sent",
    },
    Measure {
        key: "upstash_commands_consumer",
        source: Source::Consumer,
        family: "edgejobs_consumer_upstash_commands_total",
        what: "Upstash commands the consumer sent",
    },
    Measure {
        key: "consumer_edge_requests",
        source: Source::Consumer,
        family: "edgejobs_consumer_edge_requests_total",
        what: "requests the consumer made to the edge (already among the Worker requests)",
    },
    Measure {
        key: "redis_commands",
        source: Source::Redis,
        family: "",
        what: "commands redis-server executed (its INFO commandstats; a cross-check of the Upstash counts)",
    },
];

/// One read of every counter, and how many reads came before it (each read of the edge's
/// `/metrics` costs Worker and Durable Object requests itself; those are subtracted).
#[derive(Debug, Clone)]
struct Snap {
    /// Reads of the edge's `/metrics` so far, this one included (failed attempts count too).
    reads: u64,
    at: Instant,
    edge: Prom,
    /// `None`: no consumer runs (its counts are 0); `Some(None)`: it did not answer.
    consumer: Option<Option<Prom>>,
    redis_commands: Option<f64>,
    settled: bool,
}

impl Snap {
    fn value(&self, m: &Measure) -> Option<f64> {
        match m.source {
            Source::Edge => self.edge.sum(m.family),
            Source::Consumer => match &self.consumer {
                None => Some(0.0),
                Some(p) => p.as_ref()?.sum(m.family),
            },
            Source::Redis => self.redis_commands,
        }
    }

    fn completed(&self, job_type: &str) -> Option<f64> {
        self.edge.sum_where("edgejobs_jobs_completed_total", "type", job_type)
    }

    fn enqueued(&self, job_type: &str) -> Option<f64> {
        self.edge.sum_where("edgejobs_jobs_enqueued_total", "type", job_type)
    }

    /// Counters that only move while jobs move; a settled read has them unchanged.
    fn job_counters(&self) -> [Option<f64>; 3] {
        [
            self.edge.sum("edgejobs_jobs_enqueued_total"),
            self.edge.sum("edgejobs_jobs_completed_total"),
            self.edge.sum("edgejobs_attempts_total"),
        ]
    }
}

/// Per-read cost of reading the counters (one edge `/metrics` + one redis INFO), by measure.
type Overhead = BTreeMap<&'static str, f64>;

/// A measure's change over a scenario, with the reads' own cost taken out.
#[derive(Debug, Clone)]
struct OpDelta {
    raw: Option<f64>,
    reads: u64,
    overhead: f64,
    net: Option<f64>,
    per_job: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Ops {
    jobs: f64,
    by: BTreeMap<&'static str, OpDelta>,
    settled: bool,
}

impl Ops {
    fn between(before: &Snap, after: &Snap, overhead: &Overhead, jobs: f64) -> Ops {
        let reads = after.reads.saturating_sub(before.reads);
        let by = MEASURES
            .iter()
            .map(|m| {
                let raw = before.value(m).zip(after.value(m)).map(|(b, a)| a - b);
                let oh = overhead.get(m.key).copied().unwrap_or(0.0);
                let net = raw.map(|r| (r - oh * reads as f64).max(0.0));
                let per_job = net.filter(|_| jobs > 0.0).map(|n| n / jobs);
                (m.key, OpDelta { raw, reads, overhead: oh, net, per_job })
            })
            .collect();
        Ops { jobs, by, settled: before.settled && after.settled }
    }

    fn per_job(&self, key: &str) -> Option<f64> {
        self.by.get(key).and_then(|d| d.per_job)
    }

    /// Upstash commands per job, edge and consumer together.
    fn upstash_per_job(&self) -> Option<f64> {
        Some(self.per_job("upstash_commands_edge")? + self.per_job("upstash_commands_consumer")?)
    }

    fn cost(&self) -> Cost {
        let parts: [(&str, Option<f64>, f64); 4] = [
            ("worker_requests", self.per_job("worker_requests"), USD_PER_M_WORKER_REQUESTS),
            ("do_requests", self.per_job("do_requests"), USD_PER_M_DO_REQUESTS),
            (
                "queue_operations",
                self.per_job("queue_messages_sent").map(|m| m * QUEUE_OPS_PER_MESSAGE),
                USD_PER_M_QUEUE_OPS,
            ),
            ("upstash_commands", self.upstash_per_job(), USD_PER_M_UPSTASH_COMMANDS),
        ];
        let storage: [(&str, Option<f64>, f64); 2] = [
            ("rows_written", self.per_job("do_rows_written"), USD_PER_M_ROWS_WRITTEN),
            ("rows_read", self.per_job("do_rows_read"), USD_PER_M_ROWS_READ),
        ];
        let part = |items: &[(&str, Option<f64>, f64)]| -> CostPart {
            // Per job × US$ per million = US$ per million jobs.
            // `+ 0.0`: an empty float sum is -0.0.
            let known: f64 = items.iter().filter_map(|(_, n, p)| n.map(|n| n * p)).sum::<f64>() + 0.0;
            let missing: Vec<String> =
                items.iter().filter(|(_, n, _)| n.is_none()).map(|(k, _, _)| k.to_string()).collect();
            let by: BTreeMap<String, Option<f64>> =
                items.iter().map(|(k, n, p)| (k.to_string(), n.map(|n| n * p))).collect();
            CostPart { usd: missing.is_empty().then_some(known), known_usd: known, missing, by }
        };
        let operations = part(&parts);
        let storage_writes = part(&storage);
        let total = operations.usd.zip(storage_writes.usd).map(|(a, b)| a + b);
        Cost { operations, storage_writes, total }
    }

    fn to_json(&self) -> Value {
        let by: serde_json::Map<String, Value> = self
            .by
            .iter()
            .map(|(k, d)| {
                (
                    k.to_string(),
                    json!({ "raw_delta": d.raw, "counter_reads": d.reads, "per_read_overhead": d.overhead,
                            "net": d.net, "per_job": d.per_job }),
                )
            })
            .collect();
        json!({
            "jobs": self.jobs,
            "settled": self.settled,
            "per_job": {
                "worker_requests": self.per_job("worker_requests"),
                "do_requests": self.per_job("do_requests"),
                "queue_messages": self.per_job("queue_messages_sent"),
                "queue_messages_received": self.per_job("queue_messages_received"),
                "queue_jobs_sent": self.per_job("queue_jobs_sent"),
                "upstash_commands": self.upstash_per_job(),
                "upstash_commands_edge": self.per_job("upstash_commands_edge"),
                "upstash_commands_consumer": self.per_job("upstash_commands_consumer"),
                "consumer_edge_requests": self.per_job("consumer_edge_requests"),
                "do_rows_written": self.per_job("do_rows_written"),
                "do_rows_read": self.per_job("do_rows_read"),
                "redis_commands": self.per_job("redis_commands"),
            },
            "counters": by,
            "cost_usd_per_million_jobs": self.cost().to_json(),
        })
    }
}

#[derive(Debug, Clone)]
struct CostPart {
    usd: Option<f64>,
    known_usd: f64,
    missing: Vec<String>,
    by: BTreeMap<String, Option<f64>>,
}

impl CostPart {
    fn to_json(&self) -> Value {
        json!({ "usd": self.usd, "known_part_usd": self.known_usd, "missing": self.missing, "by": self.by })
    }
}

#[derive(Debug, Clone)]
struct Cost {
    operations: CostPart,
    storage_writes: CostPart,
    total: Option<f64>,
}

impl Cost {
    fn to_json(&self) -> Value {
        json!({ "operations": self.operations.to_json(), "storage_writes": self.storage_writes.to_json(),
                "total": self.total })
    }
}

// ---------------------------------------------------------------------------------------
// /proc: process trees, CPU time and peak RSS of the stack's parts.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ProcStat {
    pid: u32,
    ppid: u32,
    comm: String,
    ticks: u64,
}

fn read_proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat { pid, ppid, comm, ticks: utime + stime })
}

fn all_procs() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter_map(read_proc_stat).collect()
}

/// Every process of the stack, labelled by component: `workerd`, `wrangler (node)`,
/// `upstash-local`, `redis-server`, `consumer`.
fn stack_processes(roots: &[(String, u32)]) -> Vec<(String, ProcStat)> {
    let procs = all_procs();
    let mut out = Vec::new();
    for (name, root) in roots {
        let mut todo = vec![*root];
        let mut seen = BTreeSet::new();
        while let Some(pid) = todo.pop() {
            if !seen.insert(pid) {
                continue;
            }
            todo.extend(procs.iter().filter(|p| p.ppid == pid).map(|p| p.pid));
            let Some(p) = procs.iter().find(|p| p.pid == pid) else { continue };
            let component = match name.as_str() {
                "wrangler" if p.comm.contains("workerd") => "workerd".to_owned(),
                "wrangler" if p.comm == "node" => "wrangler (node)".to_owned(),
                "wrangler" => format!("wrangler ({})", p.comm),
                "redis" => "redis-server".to_owned(),
                n if n.starts_with("consumer") => "consumer".to_owned(),
                n => n.to_owned(),
            };
            out.push((component, p.clone()));
        }
    }
    out
}

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Busy and total CPU ticks of the whole machine (all cores), from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

/// This process and its waited-for children (wrk, git): utime + stime + cutime + cstime.
fn self_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(close) = text.rfind(')') else { return 0 };
    let f: Vec<u64> = text[close + 1..].split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // With the state field dropped by the parse filter, utime..cstime are at 10..13.
    f.get(10..14).map_or(0, |s| s.iter().sum())
}

#[derive(Debug, Clone)]
struct CpuSnap {
    per_pid: BTreeMap<u32, (String, u64)>,
    machine_busy: u64,
    machine_total: u64,
    bench: u64,
    at: Instant,
}

fn cpu_snap(roots: &[(String, u32)]) -> CpuSnap {
    let per_pid = stack_processes(roots).into_iter().map(|(c, p)| (p.pid, (c, p.ticks))).collect();
    let (machine_busy, machine_total) = machine_ticks();
    CpuSnap { per_pid, machine_busy, machine_total, bench: self_ticks(), at: Instant::now() }
}

/// CPU seconds by component between two snapshots, plus the rest of the machine.
fn cpu_between(a: &CpuSnap, b: &CpuSnap) -> Value {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for (pid, (component, ticks)) in &b.per_pid {
        let before = a.per_pid.get(pid).map_or(0, |(_, t)| *t);
        *by.entry(component.clone()).or_default() += ticks.saturating_sub(before) as f64 / TICKS_PER_S;
    }
    let bench = b.bench.saturating_sub(a.bench) as f64 / TICKS_PER_S;
    by.insert("bench + wrk".into(), bench);
    let busy = b.machine_busy.saturating_sub(a.machine_busy) as f64 / TICKS_PER_S;
    let total = b.machine_total.saturating_sub(a.machine_total) as f64 / TICKS_PER_S;
    let ours: f64 = by.values().sum();
    by.insert("other (rest of the machine)".into(), (busy - ours).max(0.0));
    json!({
        "wall_s": b.at.duration_since(a.at).as_secs_f64(),
        "machine_busy_s": busy,
        "machine_capacity_s": total,
        "machine_busy_fraction": if total > 0.0 { Some(busy / total) } else { None },
        "cpu_s_by_component": by,
    })
}

// ---------------------------------------------------------------------------------------
// wrk
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Wrk {
    requests: u64,
    duration_s: f64,
    requests_per_s: f64,
    non_2xx: u64,
    socket_errors: u64,
    latency_ms: BTreeMap<String, f64>,
}

impl Wrk {
    fn ok_requests(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }

    fn ok_per_s(&self) -> f64 {
        if self.duration_s > 0.0 { self.ok_requests() as f64 / self.duration_s } else { 0.0 }
    }

    fn p(&self, q: &str) -> Option<f64> {
        self.latency_ms.get(q).copied()
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "duration_s": self.duration_s,
            "requests_per_s": self.requests_per_s,
            "non_2xx_3xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "p50_ms": self.p("50%"), "p75_ms": self.p("75%"), "p90_ms": self.p("90%"), "p99_ms": self.p("99%"),
        })
    }
}

/// `12.5ms`, `800.00us`, `1.02s`, `2.00m` in milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let n: f64 = s[..split].parse().ok()?;
    Some(match &s[split..] {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk::default();
    let mut in_dist = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(q), Some(v)) if q.ends_with('%') => {
                    if let Some(ms) = wrk_ms(v) {
                        w.latency_ms.insert(q.to_owned(), ms);
                    }
                    continue;
                }
                _ => in_dist = false,
            }
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            w.requests_per_s = rest.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = rest.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            w.socket_errors = rest.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum();
        } else if line.contains(" requests in ") {
            // "12345 requests in 10.00s, 1.23MB read"
            let mut it = line.split_whitespace();
            w.requests = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let took = line.split(" requests in ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("");
            w.duration_s = wrk_ms(took).map_or(0.0, |ms| ms / 1000.0);
        }
    }
    if w.requests == 0 || w.duration_s <= 0.0 {
        bail!("could not read wrk's output:\n{out}");
    }
    Ok(w)
}

// ---------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------

/// The end-to-end result of one lane scenario.
#[derive(Debug, Clone, Default)]
struct Lane {
    requested: usize,
    created: usize,
    failed_requests: usize,
    failed_items: usize,
    enqueue_s: f64,
    completed: f64,
    reached: bool,
    elapsed_s: f64,
    ops: Ops,
    cpu: Value,
    first_error: Option<String>,
}

impl Lane {
    fn jobs_per_s(&self) -> Option<f64> {
        (self.elapsed_s > 0.0).then(|| self.completed / self.elapsed_s)
    }

    fn to_json(&self) -> Value {
        json!({
            "jobs_requested": self.requested,
            "jobs_created": self.created,
            "failed_requests": self.failed_requests,
            "failed_items": self.failed_items,
            "first_error": self.first_error,
            "enqueue_s": self.enqueue_s,
            "enqueue_jobs_per_s": if self.enqueue_s > 0.0 { Some(self.created as f64 / self.enqueue_s) } else { None },
            "completed": self.completed,
            "all_completed": self.reached,
            "timed_out": !self.reached,
            "elapsed_s": self.elapsed_s,
            "jobs_per_s": self.jobs_per_s(),
            "ops": self.ops.to_json(),
            "cpu": self.cpu,
        })
    }
}

#[derive(Debug, Default)]
struct EnqueueOutcome {
    created: usize,
    failed_requests: usize,
    failed_items: usize,
    first_error: Option<String>,
}

#[derive(Debug)]
struct Bench {
    s: Settings,
    stack: Stack,
    http: reqwest::blocking::Client,
    reads: u64,
    overhead: Overhead,
    /// Peak RSS per pid seen so far: (component, comm, bytes).
    peaks: BTreeMap<u32, (String, String, u64)>,
    scratch: PathBuf,
}

impl Bench {
    fn edge(&self, path: &str) -> String {
        format!("{}{path}", self.stack.edge_url)
    }

    /// Reads the edge's `/metrics`, retrying a refused scrape (503 while a shard is busy).
    fn edge_metrics(&mut self) -> anyhow::Result<Prom> {
        let mut last = String::new();
        for _ in 0..10 {
            check_interrupted()?;
            self.reads += 1;
            let r = self.http.get(self.edge("/metrics")).bearer_auth(&self.stack.secrets.admin_key).send();
            match r {
                Ok(r) if r.status().is_success() => return Ok(Prom::parse(&r.text()?)),
                Ok(r) => last = format!("{} {}", r.status(), r.text().unwrap_or_default()),
                Err(e) => last = e.to_string(),
            }
            nap(Duration::from_millis(300))?;
        }
        bail!("GET /metrics kept failing: {last}")
    }

    fn consumer_metrics(&self, i: usize) -> Option<Prom> {
        let url = format!("{}/metrics", self.stack.consumer_url(i));
        let r = self.http.get(url).send().ok().filter(|r| r.status().is_success())?;
        Some(Prom::parse(&r.text().ok()?))
    }

    /// One command through the local Upstash gateway.
    fn upstash(&self, cmd: &[&str]) -> anyhow::Result<Value> {
        let r =
            self.http.post(&self.stack.upstash_url).bearer_auth(&self.stack.secrets.upstash_token).json(&cmd).send()?;
        let v: Value = r.json()?;
        if let Some(e) = v.get("error") {
            bail!("{}: {e}", cmd.join(" "));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Commands redis-server has executed, leaving out our own INFO calls and connection
    /// set-up (HELLO, CLIENT SETINFO, SELECT), which no Upstash bill would show.
    fn redis_commands(&self) -> Option<f64> {
        let text = self.upstash(&["INFO", "commandstats"]).ok()?;
        let text = text.as_str()?;
        let mut total = 0.0;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
            let Some((name, stats)) = rest.split_once(':') else { continue };
            if name == "info" || name == "hello" || name == "select" || name.starts_with("client") {
                continue;
            }
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            total += calls.trim().parse::<f64>().ok()?;
        }
        Some(total)
    }

    /// One read of every counter; `consumer` is the consumer running now, if any.
    fn snap(&mut self, consumer: Option<usize>) -> anyhow::Result<Snap> {
        let edge = self.edge_metrics()?;
        let reads = self.reads;
        let redis_commands = self.redis_commands();
        let consumer = consumer.map(|i| self.consumer_metrics(i));
        self.sample_rss();
        Ok(Snap { reads, at: Instant::now(), edge, consumer, redis_commands, settled: true })
    }

    /// Reads until two reads 1 s apart agree (the edge flushes some counters lazily), at
    /// most `settle_timeout`; a read that never settled says so.
    fn settled(&mut self, consumer: Option<usize>) -> anyhow::Result<Snap> {
        let deadline = Instant::now() + self.s.settle_timeout;
        let mut prev = self.snap(consumer)?;
        loop {
            nap(Duration::from_secs(1))?;
            let mut cur = self.snap(consumer)?;
            if self.agree(&prev, &cur) {
                return Ok(cur);
            }
            if Instant::now() >= deadline {
                say("counters did not settle within the bound; using the last read");
                cur.settled = false;
                return Ok(cur);
            }
            prev = cur;
        }
    }

    /// Job counters unchanged, and each edge-side measure moved by at most what the reads
    /// themselves cost (consumer and redis counts move while a consumer polls, so they are
    /// not compared).
    fn agree(&self, a: &Snap, b: &Snap) -> bool {
        if a.job_counters() != b.job_counters() {
            return false;
        }
        let reads = b.reads.saturating_sub(a.reads) as f64;
        MEASURES.iter().filter(|m| m.source == Source::Edge).all(|m| match (a.value(m), b.value(m)) {
            (Some(x), Some(y)) => y - x <= 2.0 * reads * self.overhead.get(m.key).copied().unwrap_or(0.0) + 0.5,
            _ => true,
        })
    }

    /// The cost of reading the counters, per read, measured on the idle stack.
    fn calibrate(&mut self) -> anyhow::Result<()> {
        let first = self.settled(None)?;
        let mut last = first.clone();
        for _ in 0..6 {
            nap(Duration::from_secs(1))?;
            last = self.snap(None)?;
        }
        let reads = last.reads.saturating_sub(first.reads).max(1) as f64;
        for m in MEASURES.iter().filter(|m| m.source != Source::Consumer) {
            if let (Some(a), Some(b)) = (first.value(m), last.value(m)) {
                self.overhead.insert(m.key, ((b - a) / reads).max(0.0));
            }
        }
        say(format!(
            "reading the counters costs per read: {}",
            self.overhead.iter().map(|(k, v)| format!("{k} {v:.2}")).collect::<Vec<_>>().join(", ")
        ));
        Ok(())
    }

    fn roots(&self) -> Vec<(String, u32)> {
        self.stack.pids()
    }

    fn sample_rss(&mut self) {
        for (component, p) in stack_processes(&self.roots()) {
            if let Some(bytes) = peak_rss(p.pid) {
                let e = self.peaks.entry(p.pid).or_insert((component, p.comm.clone(), 0));
                e.2 = e.2.max(bytes);
            }
        }
    }

    /// Enqueues `jobs` jobs with batch requests of up to 100 from `clients` threads.
    fn enqueue(&self, spec: &Value, jobs: usize) -> EnqueueOutcome {
        let batches = jobs.div_ceil(BATCH);
        let next = AtomicUsize::new(0);
        let url = self.edge("/v1/jobs/batch");
        let key = self.stack.secrets.api_key.clone();
        let results: Vec<EnqueueOutcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.s.clients)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = EnqueueOutcome::default();
                        loop {
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            if b >= batches || INTERRUPTED.load(Ordering::Relaxed) {
                                return out;
                            }
                            let n = BATCH.min(jobs - b * BATCH);
                            let body = json!({ "jobs": vec![spec.clone(); n] });
                            let r = self.http.post(&url).bearer_auth(&key).json(&body).send();
                            let fail = |out: &mut EnqueueOutcome, e: String| {
                                out.failed_requests += 1;
                                out.first_error.get_or_insert(e);
                            };
                            match r {
                                Ok(r) if r.status().is_success() => match r.json::<Value>() {
                                    Ok(v) => {
                                        let items = v["results"].as_array().cloned().unwrap_or_default();
                                        let ok = items
                                            .iter()
                                            .filter(|i| i["status"].as_u64().is_some_and(|s| (200..300).contains(&s)))
                                            .count();
                                        out.created += ok;
                                        out.failed_items += n - ok.min(n);
                                        if ok < n {
                                            let bad = items.iter().find(|i| i.get("error").is_some());
                                            out.first_error.get_or_insert(format!("batch item: {bad:?}"));
                                        }
                                    }
                                    Err(e) => fail(&mut out, format!("batch answer: {e}")),
                                },
                                Ok(r) => {
                                    let status = r.status();
                                    fail(&mut out, format!("{status} {}", r.text().unwrap_or_default()))
                                }
                                Err(e) => fail(&mut out, e.to_string()),
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut total = EnqueueOutcome::default();
        for r in results {
            total.created += r.created;
            total.failed_requests += r.failed_requests;
            total.failed_items += r.failed_items;
            if total.first_error.is_none() {
                total.first_error = r.first_error;
            }
        }
        total
    }

    /// Polls the counters until `completed{type}` reaches `base + want`, at most `timeout`
    /// from `t0`. With `enqueued_base`, `want` is instead what the edge's own
    /// `edgejobs_jobs_enqueued_total{type}` says was created since then (wrk cannot see the
    /// items of a batch answer), and completion counts only 3 s into the wait or later, so
    /// lazily flushed counters have caught up. Returns (completed since base, reached, seconds from t0).
    fn wait_completed(
        &mut self,
        job_type: &str,
        base: f64,
        want: f64,
        enqueued_base: Option<f64>,
        t0: Instant,
        consumer: Option<usize>,
    ) -> anyhow::Result<(f64, bool, f64)> {
        let mut last_report = Instant::now();
        let mut completed = 0.0;
        let mut want = want;
        let started_waiting = Instant::now();
        loop {
            let s = self.snap(consumer)?;
            completed = s.completed(job_type).map_or(completed, |c| c - base);
            if let Some(e) = enqueued_base.zip(s.enqueued(job_type)).map(|(b, e)| e - b) {
                want = e;
            }
            let elapsed = s.at.duration_since(t0).as_secs_f64();
            let counters_caught_up = enqueued_base.is_none() || started_waiting.elapsed() >= Duration::from_secs(3);
            if completed >= want && counters_caught_up {
                return Ok((completed, true, elapsed));
            }
            if t0.elapsed() >= self.s.timeout {
                say(format!("gave up after {elapsed:.0} s: {completed:.0} of {want:.0} {job_type} jobs completed"));
                return Ok((completed, false, elapsed));
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                say(format!("  {completed:.0} of {want:.0} {job_type} jobs completed after {elapsed:.0} s"));
                last_report = Instant::now();
            }
            nap(self.s.poll)?;
        }
    }

    /// Enqueue `jobs` jobs of `spec` in batches, wait until all completed (by the edge's own
    /// counter), then read the settled counters.
    fn lane(&mut self, spec: Value, jobs: usize, consumer: Option<usize>) -> anyhow::Result<Lane> {
        let job_type = spec["type"].as_str().unwrap_or("noop").to_owned();
        let before = self.settled(consumer)?;
        let base = before.completed(&job_type).context("the edge's /metrics has no edgejobs_jobs_completed_total")?;
        let cpu0 = cpu_snap(&self.roots());
        let t0 = Instant::now();
        let out = self.enqueue(&spec, jobs);
        let enqueue_s = t0.elapsed().as_secs_f64();
        check_interrupted()?;
        say(format!(
            "enqueued {} of {jobs} {job_type} jobs in {enqueue_s:.1} s ({:.0} jobs/s){}",
            out.created,
            out.created as f64 / enqueue_s.max(1e-9),
            out.first_error.as_deref().map(|e| format!("; first error: {e}")).unwrap_or_default()
        ));
        let (completed, reached, elapsed_s) =
            self.wait_completed(&job_type, base, out.created as f64, None, t0, consumer)?;
        let cpu1 = cpu_snap(&self.roots());
        let after = self.settled(consumer)?;
        let ops = Ops::between(&before, &after, &self.overhead, out.created as f64);
        Ok(Lane {
            requested: jobs,
            created: out.created,
            failed_requests: out.failed_requests,
            failed_items: out.failed_items,
            first_error: out.first_error,
            enqueue_s,
            completed,
            reached,
            elapsed_s,
            ops,
            cpu: cpu_between(&cpu0, &cpu1),
        })
    }

    fn wrk(&self, path: &str, script: Option<&Path>, connections: u32) -> anyhow::Result<Wrk> {
        let mut cmd = Command::new("wrk");
        cmd.arg(format!("-t{}", self.s.wrk_threads))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", self.s.wrk_duration.as_secs().max(1)))
            .args(["--latency", "--timeout", "10s"]);
        if let Some(s) = script {
            cmd.arg("-s").arg(s);
        }
        cmd.arg(self.edge(path)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("cannot run wrk (scripts/setup installs it)")?;
        // wrk stops itself after -d; this bound is for a wrk that hangs.
        let deadline = Instant::now() + self.s.wrk_duration + Duration::from_secs(30);
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline || INTERRUPTED.load(Ordering::Relaxed) {
                let _ = child.kill();
                let _ = child.wait();
                check_interrupted()?;
                bail!("wrk did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        parse_wrk(&text).with_context(|| String::from_utf8_lossy(&out.stderr).to_string())
    }

    fn write_lua(&self, name: &str, body: &str, path: &str) -> anyhow::Result<PathBuf> {
        let p = self.scratch.join(name);
        let lua = format!(
            "wrk.method = \"POST\"\nwrk.path = \"{path}\"\nwrk.body = [==[{body}]==]\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {}\"\n",
            self.stack.secrets.api_key
        );
        std::fs::write(&p, lua)?;
        Ok(p)
    }

    /// A wrk run of enqueues, then the wait until every job it created completed (bounded),
    /// so the operations per job cover the whole life of those jobs.
    fn enqueue_wrk(
        &mut self,
        path: &str,
        script: &Path,
        jobs_per_request: usize,
        connections: u32,
    ) -> anyhow::Result<Value> {
        let before = self.settled(None)?;
        let base_done = before.completed("noop").context("no edgejobs_jobs_completed_total")?;
        let base_enq = before.enqueued("noop");
        let cpu0 = cpu_snap(&self.roots());
        let t0 = Instant::now();
        let w = self.wrk(path, Some(script), connections)?;
        let cpu1 = cpu_snap(&self.roots());
        let wrk_jobs = (w.ok_requests() as usize * jobs_per_request) as f64;
        say(format!(
            "{path}: {:.0} req/s ({:.0} jobs/s), p50 {} ms, p99 {} ms, {} non-2xx, {} socket errors",
            w.requests_per_s,
            w.ok_per_s() * jobs_per_request as f64,
            num(w.p("50%"), 1),
            num(w.p("99%"), 1),
            w.non_2xx,
            w.socket_errors
        ));
        say("waiting until the jobs it created have completed (drain)");
        let (completed, reached, elapsed) = self.wait_completed("noop", base_done, wrk_jobs, base_enq, t0, None)?;
        let after = self.settled(None)?;
        let created_by_counter = base_enq.zip(after.enqueued("noop")).map(|(b, a)| a - b);
        // The edge's own count of created jobs; wrk's 2xx × jobs per request without it.
        let jobs = created_by_counter.unwrap_or(wrk_jobs);
        let ops = Ops::between(&before, &after, &self.overhead, jobs);
        Ok(json!({
            "wrk": w.to_json(),
            "jobs_per_request": jobs_per_request,
            "jobs_per_s": w.ok_per_s() * jobs_per_request as f64,
            "jobs_created": jobs,
            "jobs_from_2xx_requests": wrk_jobs,
            "jobs_created_by_counter": created_by_counter,
            // Includes requests still in flight when wrk stopped, so an upper bound.
            "jobs_created_by_counter_per_wrk_s": created_by_counter.map(|c| c / w.duration_s.max(1e-9)),
            "drain": { "completed": completed, "all_completed": reached, "elapsed_s": elapsed,
                       "end_to_end_jobs_per_s": if elapsed > 0.0 { Some(completed / elapsed) } else { None } },
            "ops": ops.to_json(),
            "cpu_during_wrk": cpu_between(&cpu0, &cpu1),
        }))
    }

    fn stream_state(&self) -> Value {
        let xlen = self.upstash(&["XLEN", STREAM_KEY]).ok().and_then(|v| v.as_i64());
        let pending = match self.upstash(&["XPENDING", STREAM_KEY, STREAM_GROUP]) {
            Ok(v) => v.get(0).and_then(Value::as_i64),
            Err(e) if e.to_string().contains("NOGROUP") => Some(0),
            Err(_) => None,
        };
        json!({ "xlen": xlen, "pending": pending })
    }

    fn native(&mut self, concurrency: u32) -> anyhow::Result<Value> {
        let c = concurrency.to_string();
        let i = self.stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", c.as_str())])?;
        let pid = self.stack.consumer_pid(i);
        let spec = json!({ "type": "sleep", "payload": { "ms": self.s.native_ms } });
        let lane = self.lane(spec, self.s.native_jobs, Some(i));
        let peak = pid.and_then(peak_rss);
        let stream = self.stream_state();
        say(format!("stopping consumer {i} (SIGTERM)"));
        let exit = self.stack.terminate_consumer(i, Duration::from_secs(40));
        let lane = lane?;
        let ideal = concurrency as f64 * 1000.0 / self.s.native_ms.max(1) as f64;
        let mut v = lane.to_json();
        v["concurrency"] = json!(concurrency);
        v["sleep_ms"] = json!(self.s.native_ms);
        v["ideal_jobs_per_s"] = json!(ideal);
        v["ratio_to_ideal"] = json!(lane.jobs_per_s().map(|j| j / ideal));
        v["consumer_peak_rss_bytes"] = json!(peak);
        v["consumer_exit_code"] = json!(exit);
        v["stream_after"] = stream;
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------
// Machine and environment facts.
// ---------------------------------------------------------------------------------------

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    json!({ "cores": cores, "mem_total_bytes": mem, "kernel": kernel, "cpu_model": model, "loadavg_start": loadavg() })
}

fn loadavg() -> Option<Vec<f64>> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect())
}

fn git(root: &Path) -> Value {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({ "commit": commit, "dirty": dirty })
}

fn package_version(root: &Path, pkg: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join("node_modules").join(pkg).join("package.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_owned)
}

fn tools(root: &Path) -> Value {
    let wrk = Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
        .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()));
    json!({ "wrangler": package_version(root, "wrangler"), "workerd": package_version(root, "workerd"), "wrk": wrk })
}

// ---------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "n/a".into(),
    }
}

/// Targets with their values and whether each was met (`None`: not measured).
fn targets(report: &Value) -> Vec<Value> {
    let sc = &report["scenarios"];
    let live_rps = f(&sc["liveness"]["wrk"]["requests_per_s"]);
    let live_p99 = f(&sc["liveness"]["wrk"]["p99_ms"]);
    let single_rps = f(&sc["single_enqueue"]["wrk"]["requests_per_s"]);
    let single_p99 = f(&sc["single_enqueue"]["wrk"]["p99_ms"]);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let edge = &sc["edge_lane"];
    // A lane that timed out has no end-to-end rate; what it reached is in the scenario.
    let edge_rate = if edge["all_completed"].as_bool() == Some(true) { f(&edge["jobs_per_s"]) } else { None };
    let stream = &report["stream_after_run"];
    let t = |id: &str, what: &str, value: Option<f64>, op: &str, target: f64| {
        let met = value.map(|v| if op == ">=" { v >= target } else { v <= target });
        json!({ "id": id, "what": what, "value": value, "op": op, "target": target, "met": met })
    };
    vec![
        t("edge_lane_jobs_per_s", "edge lane end to end, jobs/s", edge_rate, ">=", TARGET_EDGE_E2E_JOBS_PER_S),
        t(
            "batch_enqueue_jobs_per_s",
            "batch enqueue, jobs/s",
            f(&sc["batch_enqueue"]["jobs_per_s"]),
            ">=",
            TARGET_BATCH_ENQUEUE_JOBS_PER_S,
        ),
        t(
            "single_enqueue_rps_vs_liveness",
            "single enqueue req/s ÷ liveness req/s",
            ratio(single_rps, live_rps),
            ">=",
            TARGET_SINGLE_VS_LIVENESS_RPS,
        ),
        t(
            "single_enqueue_p99_vs_liveness",
            "single enqueue p99 ÷ liveness p99",
            ratio(single_p99, live_p99),
            "<=",
            TARGET_SINGLE_VS_LIVENESS_P99,
        ),
        t(
            "do_requests_per_job_batch",
            "DO requests per edge-lane job, batch enqueue",
            f(&edge["ops"]["per_job"]["do_requests"]),
            "<=",
            TARGET_DO_PER_JOB_BATCH,
        ),
        t(
            "do_requests_per_job_single",
            "DO requests per edge-lane job, single enqueue",
            f(&sc["single_enqueue"]["ops"]["per_job"]["do_requests"]),
            "<=",
            TARGET_DO_PER_JOB_SINGLE,
        ),
        t(
            "usd_per_million_jobs_batch",
            "US$ per million edge-lane jobs, batch enqueue",
            f(&edge["ops"]["cost_usd_per_million_jobs"]["total"]),
            "<=",
            TARGET_USD_PER_M_JOBS_BATCH,
        ),
        t("stream_length_after_run", "stream length (XLEN) after the run", f(&stream["xlen"]), "<=", 0.0),
        t("stream_pending_after_run", "pending stream entries after the run", f(&stream["pending"]), "<=", 0.0),
    ]
}

fn met_str(t: Option<&Value>) -> String {
    match t.map(|t| &t["met"]) {
        Some(Value::Bool(true)) => "yes".into(),
        Some(Value::Bool(false)) => "NO".into(),
        _ => "n/a".into(),
    }
}

fn print_table(r: &Value) {
    let m = &r["machine"];
    let g = &r["git"];
    let sc = &r["scenarios"];
    let tg: Vec<Value> = r["targets"].as_array().cloned().unwrap_or_default();
    let target = |id: &str| tg.iter().find(|t| t["id"] == id);
    println!();
    println!(
        "edgejobs bench — {} cores, {:.1} GiB, Linux {}, commit {}{}, load at start {}",
        m["cores"],
        f(&m["mem_total_bytes"]).unwrap_or(0.0) / (1u64 << 30) as f64,
        m["kernel"].as_str().unwrap_or("?"),
        g["commit"].as_str().unwrap_or("?"),
        if g["dirty"] == true { " (dirty tree)" } else { "" },
        m["loadavg_start"]
    );
    println!("release binaries, wrangler dev {} on 127.0.0.1", r["tools"]["wrangler"].as_str().unwrap_or("?"));
    println!();
    let mut rows: Vec<[String; 4]> = Vec::new();
    let lv = &sc["liveness"]["wrk"];
    if !lv.is_null() {
        rows.push([
            "runtime ceiling: GET /health/live".into(),
            format!(
                "{} req/s, p50 {} ms, p99 {} ms",
                num(f(&lv["requests_per_s"]), 0),
                num(f(&lv["p50_ms"]), 1),
                num(f(&lv["p99_ms"]), 1)
            ),
            "—".into(),
            "".into(),
        ]);
    }
    let se = &sc["single_enqueue"];
    if !se.is_null() {
        let w = &se["wrk"];
        let tr = target("single_enqueue_rps_vs_liveness");
        let tp = target("single_enqueue_p99_vs_liveness");
        rows.push([
            "single enqueue: POST /v1/jobs".into(),
            format!(
                "{} req/s ({}× liveness), p50 {} ms, p99 {} ms ({}×), non-2xx {}",
                num(f(&w["requests_per_s"]), 0),
                num(tr.and_then(|t| f(&t["value"])), 2),
                num(f(&w["p50_ms"]), 1),
                num(f(&w["p99_ms"]), 1),
                num(tp.and_then(|t| f(&t["value"])), 1),
                w["non_2xx_3xx"]
            ),
            format!("≥{TARGET_SINGLE_VS_LIVENESS_RPS}×, p99 ≤{TARGET_SINGLE_VS_LIVENESS_P99}×"),
            format!("{} / {}", met_str(tr), met_str(tp)),
        ]);
    }
    let be = &sc["batch_enqueue"];
    if !be.is_null() {
        let w = &be["wrk"];
        rows.push([
            "batch enqueue: POST /v1/jobs/batch ×100".into(),
            format!(
                "{} jobs/s ({} req/s, p99 {} ms, non-2xx {})",
                num(f(&be["jobs_per_s"]), 0),
                num(f(&w["requests_per_s"]), 1),
                num(f(&w["p99_ms"]), 0),
                w["non_2xx_3xx"]
            ),
            format!("≥{TARGET_BATCH_ENQUEUE_JOBS_PER_S} jobs/s"),
            met_str(target("batch_enqueue_jobs_per_s")),
        ]);
    }
    let lane_row = |name: String, v: &Value, tgt: String, met: String| -> [String; 4] {
        let result = if v["all_completed"] == true {
            format!(
                "{} jobs/s ({} jobs in {} s; enqueue {} s)",
                num(f(&v["jobs_per_s"]), 0),
                v["jobs_created"],
                num(f(&v["elapsed_s"]), 1),
                num(f(&v["enqueue_s"]), 1)
            )
        } else {
            format!(
                "TIMED OUT: {} of {} completed in {} s ({} jobs/s)",
                num(f(&v["completed"]), 0),
                v["jobs_created"],
                num(f(&v["elapsed_s"]), 0),
                num(f(&v["jobs_per_s"]), 0)
            )
        };
        [name, result, tgt, met]
    };
    let el = &sc["edge_lane"];
    if !el.is_null() {
        rows.push(lane_row(
            "edge lane end to end (noop, batches)".into(),
            el,
            format!("≥{TARGET_EDGE_E2E_JOBS_PER_S} jobs/s"),
            met_str(target("edge_lane_jobs_per_s")),
        ));
    }
    for (_, v) in ordered(sc).into_iter().filter(|(n, _)| n.starts_with("native")) {
        let mut row = lane_row(
            format!("native lane, c={} ({} ms sleeps)", v["concurrency"], v["sleep_ms"]),
            v,
            format!("ideal {} jobs/s", num(f(&v["ideal_jobs_per_s"]), 0)),
            format!("{}× ideal", num(f(&v["ratio_to_ideal"]), 2)),
        );
        if v.get("error").is_some() {
            row[1] = format!("FAILED: {}", v["error"]);
        }
        rows.push(row);
    }
    let ft = &r["footprint"];
    let mib = |v: &Value| f(v).map(|b| b / (1u64 << 20) as f64);
    rows.push([
        "footprint: peak RSS".into(),
        format!(
            "consumer {} MiB (max over runs), workerd {} MiB (largest of {} processes; {} MiB together)",
            num(mib(&ft["consumer_peak_rss_bytes"]), 1),
            num(mib(&ft["workerd_peak_rss_bytes"]), 0),
            ft["workerd_processes"].as_array().map_or(0, Vec::len),
            num(mib(&ft["workerd_peak_rss_bytes_sum"]), 0)
        ),
        "—".into(),
        "".into(),
    ]);
    rows.push([
        "footprint: wasm".into(),
        format!("{} KiB (functions/edge/build/index_bg.wasm)", num(f(&ft["wasm_bytes"]).map(|b| b / 1024.0), 0)),
        "—".into(),
        "".into(),
    ]);
    let st = &r["stream_after_run"];
    rows.push([
        "stream after the run".into(),
        format!("XLEN {}, pending {}", st["xlen"], st["pending"]),
        "0, 0".into(),
        format!("{} / {}", met_str(target("stream_length_after_run")), met_str(target("stream_pending_after_run"))),
    ]);
    print_rows(&["scenario", "result", "target", "met?"], &rows);

    // Operations per job.
    println!();
    println!("operations per job (counted by the system; the counter reads' own cost subtracted):");
    let mut notes: Vec<String> = Vec::new();
    let mut ops_rows: Vec<Vec<String>> = Vec::new();
    let scen: Vec<(String, &Value)> = ordered(sc).into_iter().filter(|(_, v)| !v["ops"].is_null()).collect();
    for (name, v) in &scen {
        let p = &v["ops"]["per_job"];
        let c = &v["ops"]["cost_usd_per_million_jobs"];
        let part = |x: &Value| {
            x["usd"].as_f64().map(|u| format!("${u:.3}")).unwrap_or_else(|| {
                let known = f(&x["known_part_usd"]).unwrap_or(0.0);
                if known > 0.0 { format!("≥${known:.3}") } else { "n/a".into() }
            })
        };
        ops_rows.push(vec![
            name.to_string(),
            num(f(&p["worker_requests"]), 2),
            num(f(&p["do_requests"]), 2),
            num(f(&p["queue_messages"]), 2),
            num(f(&p["upstash_commands"]), 2),
            num(f(&p["redis_commands"]), 2),
            num(f(&p["do_rows_written"]), 2),
            part(&c["operations"]),
            part(&c["storage_writes"]),
            f(&c["total"]).map_or_else(|| "n/a".to_owned(), |t| format!("${t:.3}")),
        ]);
        if v["ops"]["settled"] == false {
            notes.push(format!("{name}: the counters had not settled when read"));
        }
    }
    print_rows(
        &[
            "scenario",
            "Worker req",
            "DO req",
            "queue msgs",
            "Upstash cmds",
            "redis cmds*",
            "rows written",
            "US$/M ops",
            "US$/M rows",
            "US$/M total",
        ],
        &ops_rows,
    );
    for n in notes {
        println!("  note: {n}");
    }
    println!(
        "  targets: ≤{TARGET_DO_PER_JOB_BATCH} DO requests/job with batch enqueue ({}), ≤{TARGET_DO_PER_JOB_SINGLE} with single \
         enqueue ({}); ≤US${TARGET_USD_PER_M_JOBS_BATCH} per million edge-lane jobs with batch enqueue ({})",
        met_str(target("do_requests_per_job_batch")),
        met_str(target("do_requests_per_job_single")),
        met_str(target("usd_per_million_jobs_batch"))
    );
    println!(
        "  * redis cmds: what redis-server itself executed (INFO commandstats), a cross-check of the Upstash counts."
    );
    println!(
        "  US$ per million jobs from published prices as of {PRICES_AS_OF} (Workers $0.30/M requests, DO $0.15/M \
         requests, $1.00/M rows written, $0.001/M rows read, Queues $0.40/M ops × 3 per message, Upstash $2/M \
         commands); free allowances, duration/CPU and storage GB-month are ignored. n/a = the counter does not exist."
    );

    // Where the CPU went.
    println!();
    println!("CPU seconds by component (machine-wide; 'other' is everything else on the machine):");
    let mut cpu_rows: Vec<Vec<String>> = Vec::new();
    let all: Vec<(String, Value)> = ordered(sc)
        .into_iter()
        .map(|(name, v)| (name, if v["cpu"].is_object() { v["cpu"].clone() } else { v["cpu_during_wrk"].clone() }))
        .filter(|(_, c)| c.is_object())
        .collect();
    // The stack's parts first, then us, then the rest of the machine.
    let order = ["workerd", "wrangler (node)", "upstash-local", "redis-server", "consumer", "bench + wrk"];
    let mut comps: Vec<String> = order.iter().map(|s| s.to_string()).collect();
    for (_, c) in &all {
        for (k, _) in c["cpu_s_by_component"].as_object().into_iter().flatten() {
            if !comps.contains(k) {
                comps.push(k.clone());
            }
        }
    }
    let other = "other (rest of the machine)".to_owned();
    comps.retain(|c| c != &other);
    comps.push(other.clone());
    let mut busy_notes = Vec::new();
    for (name, c) in &all {
        let mut row = vec![
            name.clone(),
            num(f(&c["wall_s"]), 1),
            format!("{}%", num(f(&c["machine_busy_fraction"]).map(|x| x * 100.0), 0)),
        ];
        row.extend(comps.iter().map(|k| num(f(&c["cpu_s_by_component"][k]), 1)));
        cpu_rows.push(row);
        let capacity = f(&c["machine_capacity_s"]).unwrap_or(0.0);
        let others = f(&c["cpu_s_by_component"][&other]).unwrap_or(0.0);
        if capacity > 0.0 && others > 0.2 * capacity {
            busy_notes
                .push(format!("{name}: {:.0}% of the machine went to other processes", 100.0 * others / capacity));
        }
    }
    let mut header: Vec<&str> = vec!["scenario", "wall s", "busy"];
    header.extend(comps.iter().map(String::as_str));
    print_rows(&header, &cpu_rows);
    for n in busy_notes {
        println!("  note: {n}; this scenario's figures are lower than a quiet machine would give");
    }
    println!();
}

/// The scenarios present in the report, in reading order, with their display names.
fn ordered(sc: &Value) -> Vec<(String, &Value)> {
    let mut out: Vec<(String, &Value)> = [
        ("liveness", "liveness (wrk)"),
        ("single_enqueue", "single enqueue (wrk)"),
        ("batch_enqueue", "batch enqueue (wrk)"),
        ("edge_lane", "edge lane (batches)"),
    ]
    .into_iter()
    .filter(|(k, _)| sc.get(*k).is_some())
    .map(|(k, name)| (name.to_owned(), &sc[k]))
    .collect();
    let mut native: Vec<(u64, &Value)> = sc
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix("native_c")?.parse().ok()?, v)))
        .collect();
    native.sort_by_key(|(c, _)| *c);
    out.extend(native.into_iter().map(|(c, v)| (format!("native c={c}"), v)));
    out
}

fn print_rows<R: AsRef<[String]>>(header: &[&str], rows: &[R]) {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.as_ref().iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c}{}", " ".repeat(w[i] - c.chars().count()))).collect();
        println!("  {}", s.join(" | ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    line(w.iter().map(|n| "-".repeat(*n)).collect());
    for r in rows {
        line(r.as_ref().iter().take(n).cloned().collect());
    }
}

// ---------------------------------------------------------------------------------------

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("[bench] error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> anyhow::Result<()> {
    let s = parse_args()?;
    ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::Relaxed) {
            // A second Ctrl-C: leave now; each part's watchdog stops it within a second.
            std::process::exit(130);
        }
        eprintln!("[bench] interrupted: stopping the stack (Ctrl-C again to leave at once)");
    })
    .context("cannot install the signal handler")?;
    let started = unix_now();
    let t_start = Instant::now();
    let state_dir = std::env::temp_dir().join(format!("edgejobs-bench-{}", std::process::id()));
    let scratch = state_dir.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut report = json!({
        "bench": "edgejobs-bench",
        "schema": 1,
        "started_at_unix": started,
        "machine": machine(),
        "git": git(&s.root),
        "tools": tools(&s.root),
        "settings": {
            "quick": s.quick,
            "wrk": { "threads": s.wrk_threads, "connections": s.wrk_connections,
                     "batch_connections": s.batch_connections,
                     "duration_s": s.wrk_duration.as_secs().max(1) },
            "batch_size": BATCH,
            "enqueue_clients": s.clients,
            "edge_jobs": s.edge_jobs,
            "native_jobs": s.native_jobs,
            "native_sleep_ms": s.native_ms,
            "native_concurrency": s.concurrency,
            "completion_timeout_s": s.timeout.as_secs_f64(),
            "poll_interval_ms": s.poll.as_millis() as u64,
            "scenarios": s.only,
            "binaries": "release",
            "stack_vars": { "RATE_LIMIT": "off" },
        },
        "prices": {
            "as_of": PRICES_AS_OF,
            "sources": PRICE_SOURCES,
            "usd_per_million": {
                "worker_requests": USD_PER_M_WORKER_REQUESTS,
                "do_requests": USD_PER_M_DO_REQUESTS,
                "do_rows_written": USD_PER_M_ROWS_WRITTEN,
                "do_rows_read": USD_PER_M_ROWS_READ,
                "queue_operations": USD_PER_M_QUEUE_OPS,
                "upstash_commands": USD_PER_M_UPSTASH_COMMANDS,
            },
            "queue_operations_per_message": QUEUE_OPS_PER_MESSAGE,
            "ignored": "included free allowances, Workers/DO duration and CPU-time charges, storage GB-month",
        },
        "scenarios": {},
    });
    let cores = report["machine"]["cores"].as_u64().unwrap_or(1) as f64;
    if let Some(load) = loadavg().and_then(|l| l.first().copied()).filter(|l| *l > cores * 0.5) {
        say(format!(
            "the machine is busy (load {load:.1} on {cores} cores): figures will be lower than on a quiet one"
        ));
    }

    say(format!("starting a private stack (release binaries) in {}", state_dir.display()));
    let opts = StackOptions {
        root: s.root.clone(),
        state_dir: state_dir.clone(),
        dev_vars: None,
        consumer: false,
        persist_redis: false,
        vars: vec![("RATE_LIMIT".into(), "off".into())],
        consumer_env: Vec::new(),
        profile: Profile::Release,
    };
    let stack = Stack::start(opts)?;
    say(format!("edge {} · upstash-local {}", stack.edge_url, stack.upstash_url));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(s.clients * 2)
        .build()?;
    let mut b =
        Bench { s: s.clone(), stack, http, reads: 0, overhead: Overhead::new(), peaks: BTreeMap::new(), scratch };
    let outcome = scenarios(&mut b, &mut report);
    report["duration_s"] = json!(t_start.elapsed().as_secs_f64());
    report["machine"]["loadavg_end"] = json!(loadavg());
    if let Err(e) = &outcome {
        report["error"] = json!(format!("{e:#}"));
        say(format!("stopped early: {e:#}"));
        say(b.stack.tail("wrangler"));
    }
    // Footprint, from everything sampled along the way.
    b.sample_rss();
    let workerd: Vec<Value> = b
        .peaks
        .iter()
        .filter(|(_, (c, _, _))| c == "workerd")
        .map(|(pid, (_, comm, bytes))| json!({ "pid": pid, "comm": comm, "peak_rss_bytes": bytes }))
        .collect();
    let node_peak = b.peaks.values().filter(|(c, _, _)| c == "wrangler (node)").map(|(_, _, x)| *x).max();
    let consumer_peak = b.peaks.values().filter(|(c, _, _)| c == "consumer").map(|(_, _, x)| *x).max();
    let wasm = std::fs::metadata(s.root.join("functions/edge/build/index_bg.wasm")).map(|m| m.len()).ok();
    report["footprint"] = json!({
        "consumer_peak_rss_bytes": consumer_peak,
        "workerd_peak_rss_bytes": workerd.iter().filter_map(|w| w["peak_rss_bytes"].as_u64()).max(),
        "workerd_peak_rss_bytes_sum": workerd.iter().filter_map(|w| w["peak_rss_bytes"].as_u64()).sum::<u64>(),
        "workerd_processes": workerd,
        "wrangler_node_peak_rss_bytes": node_peak,
        "upstash_local_peak_rss_bytes": b.peaks.values().filter(|(c, _, _)| c == "upstash-local").map(|(_, _, x)| *x).max(),
        "wasm_bytes": wasm,
    });
    report["stream_after_run"] = b.stream_state();
    report["targets"] = json!(targets(&report));
    report["notes"] = json!([
        "Throughput is measured through wrangler dev on loopback: compare ratios within one run, not absolute figures across machines.",
        "End-to-end times are from the first enqueue to the first read of /metrics that shows every job completed (polled every poll_interval_ms; counters may be flushed lazily).",
        "Operations per job subtract the measured cost of the bench's own /metrics reads (counter_reads × per_read_overhead).",
        "A counter family missing from /metrics is null (n/a), never 0.",
    ]);

    // Stop the stack before writing, so a slow disk does not keep it running.
    b.stack.stop();
    std::fs::create_dir_all(&s.out_dir)?;
    let text = serde_json::to_string_pretty(&report)?;
    let file = s.out_dir.join(format!("bench-{started}.json"));
    std::fs::write(&file, &text)?;
    std::fs::write(s.out_dir.join("latest.json"), &text)?;
    if s.json_only {
        println!("{text}");
    } else {
        print_table(&report);
        println!("JSON: {} (and latest.json beside it)", file.display());
    }
    if s.keep_state || outcome.is_err() {
        say(format!("state and logs kept in {}", state_dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    outcome
}

fn scenarios(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    let only = b.s.only.clone();
    // Warm-up: every shard and the queue consumer have run once before anything is timed.
    say("warming up (100 noop jobs, end to end)");
    let warm = b.lane(json!({ "type": "noop" }), BATCH, None)?;
    if !warm.reached {
        bail!("the warm-up jobs did not complete: {} of {} in {:.0} s", warm.completed, warm.created, warm.elapsed_s);
    }
    say("measuring what reading the counters costs (idle stack)");
    b.calibrate()?;
    report["counter_read_overhead"] = json!(b.overhead);
    report["measures"] = MEASURES
        .iter()
        .map(|m| (m.key.to_owned(), json!({ "family": m.family, "source": format!("{:?}", m.source), "what": m.what })))
        .collect::<serde_json::Map<_, _>>()
        .into();

    // The lanes first, on a quiet stack: a backlog left by the enqueue runs would skew them.
    if only.contains("edge") {
        say(format!("edge lane end to end: {} noop jobs in batches of {BATCH}", b.s.edge_jobs));
        let lane = b.lane(json!({ "type": "noop" }), b.s.edge_jobs, None)?;
        say(format!(
            "edge lane: {} of {} completed in {:.1} s = {} jobs/s",
            lane.completed,
            lane.created,
            lane.elapsed_s,
            num(lane.jobs_per_s(), 0)
        ));
        report["scenarios"]["edge_lane"] = lane.to_json();
    }
    if only.contains("native") {
        for c in b.s.concurrency.clone() {
            say(format!(
                "native lane: {} sleep jobs of {} ms, one consumer at concurrency {c}",
                b.s.native_jobs, b.s.native_ms
            ));
            let v = match b.native(c) {
                Ok(v) => v,
                // One failed native run (a consumer that did not start) does not cost the rest.
                Err(e) if !INTERRUPTED.load(Ordering::Relaxed) => {
                    say(format!("native c={c} failed: {e:#}"));
                    json!({ "concurrency": c, "error": format!("{e:#}") })
                }
                Err(e) => return Err(e),
            };
            say(format!(
                "native c={c}: {} jobs/s ({}× ideal)",
                num(f(&v["jobs_per_s"]), 0),
                num(f(&v["ratio_to_ideal"]), 2)
            ));
            report["scenarios"][format!("native_c{c}")] = v;
        }
    }
    if only.contains("liveness") || only.contains("single") {
        say(format!("runtime ceiling: GET /health/live, wrk {}s", b.s.wrk_duration.as_secs()));
        let cpu0 = cpu_snap(&b.roots());
        let w = b.wrk("/health/live", None, b.s.wrk_connections)?;
        let cpu1 = cpu_snap(&b.roots());
        say(format!(
            "/health/live: {:.0} req/s, p50 {} ms, p99 {} ms",
            w.requests_per_s,
            num(w.p("50%"), 1),
            num(w.p("99%"), 1)
        ));
        report["scenarios"]["liveness"] = json!({ "wrk": w.to_json(), "cpu_during_wrk": cpu_between(&cpu0, &cpu1) });
    }
    if only.contains("single") {
        let script = b.write_lua("single.lua", r#"{"type":"noop","payload":{"n":1}}"#, "/v1/jobs")?;
        say(format!("single enqueue: POST /v1/jobs, wrk {}s", b.s.wrk_duration.as_secs()));
        report["scenarios"]["single_enqueue"] = b.enqueue_wrk("/v1/jobs", &script, 1, b.s.wrk_connections)?;
    }
    if only.contains("batch") {
        let body =
            serde_json::to_string(&json!({ "jobs": vec![json!({ "type": "noop", "payload": { "n": 1 } }); BATCH] }))?;
        let script = b.write_lua("batch.lua", &body, "/v1/jobs/batch")?;
        say(format!("batch enqueue: POST /v1/jobs/batch with {BATCH} jobs, wrk {}s", b.s.wrk_duration.as_secs()));
        report["scenarios"]["batch_enqueue"] =
            b.enqueue_wrk("/v1/jobs/batch", &script, BATCH, b.s.batch_connections)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line and the sample it holds (name, labels, value), if any.
    type SampleCase = (&'static str, Option<(&'static str, Vec<(&'static str, &'static str)>, f64)>);

    #[test]
    fn reads_prometheus_samples() {
        let cases: &[SampleCase] = &[
            ("a_total 3", Some(("a_total", vec![], 3.0))),
            ("a_total{type=\"noop\"} 12", Some(("a_total", vec![("type", "noop")], 12.0))),
            ("b{k=\"x y\",j=\"q\\\"z\"} 1.5 1700000000", Some(("b", vec![("k", "x y"), ("j", "q\"z")], 1.5))),
            ("h_bucket{le=\"+Inf\"} 7", Some(("h_bucket", vec![("le", "+Inf")], 7.0))),
            ("g +Inf", Some(("g", vec![], f64::INFINITY))),
            ("broken{k=x} 1", None),
            ("novalue", None),
        ];
        for (line, want) in cases {
            let got = parse_sample(line);
            let want = want.as_ref().map(|(n, l, v)| {
                (n.to_string(), l.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Labels>(), *v)
            });
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn a_missing_family_is_none_and_an_empty_one_is_zero() {
        let p = Prom::parse(
            "# HELP x_total X.\n# TYPE x_total counter\n# HELP y_total Y.\n# TYPE y_total counter\n\
             y_total{op=\"a\"} 2\ny_total{op=\"b\"} 3\n",
        );
        assert_eq!(p.sum("x_total"), Some(0.0));
        assert_eq!(p.sum("y_total"), Some(5.0));
        assert_eq!(p.sum_where("y_total", "op", "b"), Some(3.0));
        assert_eq!(p.sum("z_total"), None);
    }

    #[test]
    fn reads_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/health/live
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    31.02ms   12.11ms 200.00ms   80.00%
    Req/Sec   500.00     60.00   600.00     70.00%
  Latency Distribution
     50%   29.60ms
     75%   35.00ms
     90%   45.00ms
     99%    1.20s
  10000 requests in 10.01s, 1.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:    999.00
Transfer/sec:    100.00KB
";
        let w = parse_wrk(out).expect("parses");
        assert_eq!(w.requests, 10_000);
        assert!((w.duration_s - 10.01).abs() < 1e-9);
        assert_eq!(w.requests_per_s, 999.0);
        assert_eq!(w.non_2xx, 7);
        assert_eq!(w.socket_errors, 5);
        assert_eq!(w.p("50%"), Some(29.6));
        assert_eq!(w.p("99%"), Some(1200.0));
        assert_eq!(w.ok_requests(), 9_993);
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn reads_durations() {
        for (s, ms) in [("10s", 10_000), ("500ms", 500), ("2m", 120_000), ("3", 3_000), ("1.5s", 1_500)] {
            assert_eq!(parse_duration(s).expect(s), Duration::from_millis(ms), "{s}");
        }
        assert!(parse_duration("10h").is_err());
        assert_eq!(wrk_ms("800.00us"), Some(0.8));
    }

    fn snap(reads: u64, edge: &str, redis: Option<f64>) -> Snap {
        Snap {
            reads,
            at: Instant::now(),
            edge: Prom::parse(edge),
            consumer: None,
            redis_commands: redis,
            settled: true,
        }
    }

    #[test]
    fn operations_per_job_subtract_the_reads_and_keep_missing_counters_missing() {
        let before = snap(
            10,
            "edgejobs_do_requests_total{op=\"create\"} 100\nedgejobs_worker_invocations_total{kind=\"fetch\"} 50\n",
            Some(1_000.0),
        );
        let after = snap(
            14,
            "edgejobs_do_requests_total{op=\"create\"} 200\nedgejobs_do_requests_total{op=\"alarm\"} 68\n\
             edgejobs_worker_invocations_total{kind=\"fetch\"} 150\n",
            Some(1_004.0),
        );
        let overhead: Overhead = [("do_requests", 17.0), ("worker_requests", 1.0), ("redis_commands", 1.0)].into();
        let ops = Ops::between(&before, &after, &overhead, 100.0);
        // 168 raw DO requests, 4 reads × 17 of them were ours.
        assert_eq!(ops.per_job("do_requests"), Some(1.0));
        assert_eq!(ops.per_job("worker_requests"), Some(0.96));
        assert_eq!(ops.per_job("redis_commands"), Some(0.0));
        assert_eq!(ops.per_job("queue_messages_sent"), None);
        // No consumer ran: its counts are 0, not missing.
        assert_eq!(ops.per_job("upstash_commands_consumer"), Some(0.0));
        assert_eq!(ops.upstash_per_job(), None);
        let cost = ops.cost();
        assert_eq!(cost.total, None);
        assert_eq!(cost.operations.usd, None);
        let known = 0.96 * USD_PER_M_WORKER_REQUESTS + 1.0 * USD_PER_M_DO_REQUESTS;
        assert!((cost.operations.known_usd - known).abs() < 1e-12);
        assert_eq!(cost.operations.missing, vec!["queue_operations".to_owned(), "upstash_commands".to_owned()]);
    }

    #[test]
    fn cost_per_million_jobs_adds_operations_and_storage() {
        let before = snap(
            0,
            "edgejobs_worker_invocations_total 0\nedgejobs_do_requests_total 0\nedgejobs_do_rows_written_total 0\n\
             edgejobs_do_rows_read_total 0\nedgejobs_queue_messages_sent_total 0\nedgejobs_upstash_commands_total 0\n",
            None,
        );
        let after = snap(
            0,
            "edgejobs_worker_invocations_total 30\nedgejobs_do_requests_total 40\nedgejobs_do_rows_written_total 300\n\
             edgejobs_do_rows_read_total 1000\nedgejobs_queue_messages_sent_total 10\nedgejobs_upstash_commands_total 0\n",
            None,
        );
        let cost = Ops::between(&before, &after, &Overhead::new(), 1_000.0).cost();
        // Per job: 0.03 Worker requests, 0.04 DO requests, 0.03 queue operations, 0.3 rows written, 1 row read.
        let ops = 0.03 * 0.30 + 0.04 * 0.15 + 0.03 * 0.40;
        let rows = 0.3 * 1.00 + 1.0 * 0.001;
        assert!((cost.operations.usd.expect("known") - ops).abs() < 1e-12);
        assert!((cost.storage_writes.usd.expect("known") - rows).abs() < 1e-12);
        assert!((cost.total.expect("known") - (ops + rows)).abs() < 1e-12);
    }
}
