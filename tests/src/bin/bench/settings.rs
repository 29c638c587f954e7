//! The benchmark's settings: flags over environment over defaults (`--quick` changes the defaults).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use edgejobs_tests::stack::StackOptions;

pub const USAGE: &str = "\
usage: edgejobs-bench [--quick] [--json-only] [options]

Starts a private local stack (release binaries, 127.0.0.1 only), runs the scenarios, prints a
table and writes target/bench/bench-<unix time>.json and target/bench/latest.json.

  --quick              smaller counts (2,000 edge jobs, 500 native jobs, 3 s wrk runs; flow:
                       200 keys × 5 jobs, a flood of 2,500 jobs)
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
  --only LIST          run only these of: edge,native,liveness,single,batch,reference,schedules,
                       latency (both lanes idle and loaded, with BullMQ beside them), bullmq,
                       flow (flow control: overhead, fairness, limits held, debounce),
                       workflow (runs of 5 trivial steps on the native lane and over the HTTP
                       protocol; env BENCH_WORKFLOW_RUNS, BENCH_WORKFLOW_LANES=native,http),
                       live (chunks from a handler to SSE subscribers: latency beside liveness,
                       which it runs too, 1,000 subscribers on 100 jobs of 200 chunks, cost
                       per chunk; quick: 20 jobs × 10 × 50 chunks; env BENCH_LIVE_JOBS,
                       BENCH_LIVE_SUBSCRIBERS (per job), BENCH_LIVE_CHUNKS)
  --latency-samples N  idle latency samples per lane, one job at a time (default 200, quick 30;
                       env BENCH_LATENCY_SAMPLES)
  --schedules N        schedules every second in the schedules scenario (default 20)
  --out DIR            where the JSON goes (default <root>/target/bench)
  --keep-state         keep the stack's state directory (logs, wrangler state) afterwards
  --soak D             instead of the scenarios: a mixed load at half the measured capacity
                       for D (e.g. 30m), printed per minute, then a verdict on everything that
                       must not grow; exits 1 when something grows (tests/src/bin/bench/soak.rs)
  --debug              run the debug binaries (target/debug) that scripts/test already built
";

/// The scenarios `--only` may name; a run without `--only` runs them all.
const SCENARIOS: [&str; 13] = [
    "edge",
    "native",
    "liveness",
    "single",
    "batch",
    "reference",
    "schedules",
    "latency",
    "bullmq",
    "flow",
    "workflow",
    "live",
    "tracing",
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub json_only: bool,
    pub wrk_duration: Duration,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    pub batch_connections: u32,
    pub edge_jobs: usize,
    pub native_jobs: usize,
    pub native_ms: u64,
    pub concurrency: Vec<u32>,
    pub clients: usize,
    pub timeout: Duration,
    pub poll: Duration,
    pub settle_timeout: Duration,
    pub only: BTreeSet<String>,
    /// Schedules every second in the schedules scenario.
    pub schedules: usize,
    /// Idle latency samples per lane (and BullMQ's), one job at a time.
    pub latency_samples: usize,
    pub out_dir: PathBuf,
    pub keep_state: bool,
    pub root: PathBuf,
    /// `--soak D`: the soak instead of the scenarios.
    pub soak: Option<Duration>,
    /// `--debug`: the stack runs the debug binaries.
    pub debug: bool,
}

/// `10s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
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

pub fn parse_args() -> anyhow::Result<Settings> {
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
        only: SCENARIOS.iter().map(|s| s.to_string()).collect(),
        schedules: 20,
        latency_samples: if quick { 30 } else { 200 },
        out_dir: PathBuf::new(),
        keep_state: false,
        root: StackOptions::default_root(),
        soak: None,
        debug: false,
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
    if let Some(v) = env("BENCH_LATENCY_SAMPLES") {
        s.latency_samples = v.parse().context("BENCH_LATENCY_SAMPLES")?;
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
            "--debug" => s.debug = true,
            "--soak" => s.soak = Some(parse_duration(&value()?)?),
            "--duration" => s.wrk_duration = parse_duration(&value()?)?,
            "--threads" => s.wrk_threads = value()?.parse().context("--threads")?,
            "--connections" => s.wrk_connections = value()?.parse().context("--connections")?,
            "--batch-connections" => s.batch_connections = value()?.parse().context("--batch-connections")?,
            "--edge-jobs" => s.edge_jobs = value()?.parse().context("--edge-jobs")?,
            "--native-jobs" => s.native_jobs = value()?.parse().context("--native-jobs")?,
            "--native-ms" => s.native_ms = value()?.parse().context("--native-ms")?,
            "--schedules" => s.schedules = value()?.parse().context("--schedules")?,
            "--latency-samples" => s.latency_samples = value()?.parse().context("--latency-samples")?,
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
                if let Some(bad) = s.only.iter().find(|x| !SCENARIOS.contains(&x.as_str())) {
                    bail!("--only: unknown scenario {bad:?} (known: {})", SCENARIOS.join(","));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_durations() {
        for (s, ms) in [("10s", 10_000), ("500ms", 500), ("2m", 120_000), ("3", 3_000), ("1.5s", 1_500)] {
            assert_eq!(parse_duration(s).expect(s), Duration::from_millis(ms), "{s}");
        }
        assert!(parse_duration("10h").is_err());
    }
}
