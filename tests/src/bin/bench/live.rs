//! Live results (issue #30): chunks from a native handler to Server-Sent Events
//! subscribers of `GET /v1/jobs/{id}/events`, printed and never asserted
//! (`report.scenarios.live`, the targets `live_*`).
//!
//! The handler is `examples/agent-workflow`'s `bench.stream` (lane native, declared in
//! `JOB_TYPES` when this scenario is chosen): `payload.chunks` calls of
//! `ctx.stream("tokens", ..)` [`EVERY_MS`] apart, chunk `n` being `"<n> <µs since the
//! epoch>"`, the time the handler emitted it. The subscribers run in this process (tokio
//! and reqwest, a streaming body each, SSE parsed here) and subtract that time from the
//! moment they read the chunk off the socket: same machine, same clock, loopback.
//!
//! Phases, each on its own (one that fails says why and the next runs):
//! - **cost**: with one consumer running, [`WARM_JOBS`] untimed jobs, then the fan-out's
//!   jobs with 0 chunks and the same jobs with their chunks, nobody subscribed. Their
//!   difference, over the chunks, is what a chunk adds (the edge's counters, the reads' own
//!   cost subtracted): Durable Object requests, rows written, and US$ at `ops.rs`'s prices.
//! - **latency**: a few jobs with one subscriber each. The jobs are enqueued with no
//!   consumer running, every subscriber is connected (its first `state` event came) before
//!   the consumer starts, so every chunk reaches its subscriber live. p50/p99 of
//!   chunk → subscriber beside the liveness scenario's p99 (GET /health/live under wrk,
//!   measured in the same invocation).
//! - **fan-out**: 100 jobs × 10 subscribers × 200 chunks, started the same way. Every
//!   subscriber must see ids 1..=200 in order, none lost or repeated, then the final
//!   `completed` state and the end of the stream; the report says how many did. Peak RSS of
//!   workerd and of the consumer while it runs, its latency under that load, and its
//!   operations per chunk with the subscriptions in them.
//!
//! 1,000 subscribers hold 1,000 sockets here and about twice that in wrangler's workerd,
//! which inherits this process's limit of open files (`scripts/bench` raises the soft limit
//! to the hard one). When the limit is still too low, the fan-out is cut to what fits and the
//! report says so ([`fit`]); nothing is cut silently.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::latency::Percentiles;
use crate::ops::{MEASURES, OpDelta, Ops, PRICES_AS_OF};
use crate::procfs::{WORKERD_PROXY, WORKERD_WORKER, cpu_between, cpu_snap, peak_rss, stack_processes};
use crate::report::{f, met_str, num, print_rows};
use crate::{BATCH, Bench, INTERRUPTED, check_interrupted, nap, say};

/// The job type, run by `examples/agent-workflow`.
pub const TYPE: &str = "bench.stream";
/// The stream its chunks go to.
pub const STREAM: &str = "tokens";
/// The pause between two chunks of a job.
pub const EVERY_MS: u64 = 5;
/// Issue #30: chunk → subscriber p99 at most this many times the liveness p99.
pub const TARGET_P99_VS_LIVENESS: f64 = 3.0;
/// Untimed jobs (of [`WARM_CHUNKS`] chunks) before anything is measured.
const WARM_JOBS: usize = 10;
const WARM_CHUNKS: u64 = 20;
/// File descriptors kept aside for everything but the subscribers (the stack's pipes and
/// logs, the bench's own clients, workerd's own files).
const FD_MARGIN: u64 = 256;
/// How often the memory of workerd and of the consumer is sampled during a phase.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// How long a subscriber's read waits before it looks at Ctrl-C and its deadline again.
const READ_SLICE: Duration = Duration::from_millis(500);
/// Longest SSE line a subscriber keeps (a chunk's event is ~100 bytes; the final state's
/// a few hundred): past it the stream is malformed and the subscriber gives up.
const MAX_LINE: usize = 1 << 20;

/// Jobs, subscribers per job, chunks per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub jobs: usize,
    pub subscribers: usize,
    pub chunks: u64,
}

impl Shape {
    pub fn total_subscribers(&self) -> usize {
        self.jobs * self.subscribers
    }

    fn to_json(self) -> Value {
        json!({ "jobs": self.jobs, "subscribers_per_job": self.subscribers, "chunks_per_job": self.chunks,
                "subscribers": self.total_subscribers(), "chunks": self.jobs as u64 * self.chunks })
    }
}

/// Issue #30's fan-out: 1,000 subscribers on 100 jobs of 200 chunks.
const FANOUT: Shape = Shape { jobs: 100, subscribers: 10, chunks: 200 };
const QUICK_FANOUT: Shape = Shape { jobs: 20, subscribers: 10, chunks: 50 };
/// The latency phase: one subscriber per job, few jobs, so what is timed is the path and
/// not the fan-out.
const LATENCY: Shape = Shape { jobs: 10, subscribers: 1, chunks: 200 };
const QUICK_LATENCY: Shape = Shape { jobs: 5, subscribers: 1, chunks: 50 };

fn env_num<T: std::str::FromStr>(k: &str) -> anyhow::Result<Option<T>> {
    match std::env::var(k).ok().filter(|v| !v.is_empty()) {
        Some(v) => Ok(Some(v.parse().ok().with_context(|| format!("{k}={v:?}: want a number"))?)),
        None => Ok(None),
    }
}

/// The fan-out's shape: the issue's (quick: smaller), or `BENCH_LIVE_JOBS`,
/// `BENCH_LIVE_SUBSCRIBERS` (per job) and `BENCH_LIVE_CHUNKS`.
fn fanout_shape(quick: bool) -> anyhow::Result<Shape> {
    let base = if quick { QUICK_FANOUT } else { FANOUT };
    let s = Shape {
        jobs: env_num("BENCH_LIVE_JOBS")?.unwrap_or(base.jobs),
        subscribers: env_num("BENCH_LIVE_SUBSCRIBERS")?.unwrap_or(base.subscribers),
        chunks: env_num("BENCH_LIVE_CHUNKS")?.unwrap_or(base.chunks),
    };
    if s.jobs == 0 || s.subscribers == 0 || s.chunks == 0 || s.chunks > 10_000 {
        bail!("BENCH_LIVE_JOBS and BENCH_LIVE_SUBSCRIBERS must be at least 1, BENCH_LIVE_CHUNKS from 1 to 10000");
    }
    Ok(s)
}

/// `JOB_TYPES` with [`TYPE`] declared (lane native) beside what `vars` already declares
/// (the workflow scenario's types), since one variable declares them all.
pub fn declare(vars: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    let ours = json!({ "lane": "native", "timeout": "2m" });
    match vars.iter_mut().find(|(k, _)| k == "JOB_TYPES") {
        Some((_, v)) => {
            let mut types: Value = serde_json::from_str(v).context("JOB_TYPES is not JSON")?;
            let Some(map) = types.as_object_mut() else { bail!("JOB_TYPES is not a JSON object") };
            map.insert(TYPE.to_owned(), ours);
            *v = types.to_string();
        }
        None => vars.push(("JOB_TYPES".into(), json!({ TYPE: ours }).to_string())),
    }
    Ok(())
}

/// The soft limit of open files of this process (`/proc/self/limits`); `None` when
/// unlimited or unreadable.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors a fan-out of `subscribers` needs: one socket each here and two in wrangler's
/// workerd (the dev proxy's, in and out), plus [`FD_MARGIN`].
fn fds_needed(subscribers: usize) -> u64 {
    2 * subscribers as u64 + FD_MARGIN
}

/// `shape`, or the most jobs (same subscribers per job) whose subscribers fit under the
/// limit of open files `limit`, with why it was cut.
pub fn fit(shape: Shape, limit: Option<u64>) -> (Shape, Option<String>) {
    let Some(limit) = limit else { return (shape, None) };
    if fds_needed(shape.total_subscribers()) <= limit {
        return (shape, None);
    }
    let per_job = 2 * shape.subscribers as u64;
    let jobs = (limit.saturating_sub(FD_MARGIN) / per_job.max(1)).max(1) as usize;
    let cut = Shape { jobs: jobs.min(shape.jobs), ..shape };
    let why = format!(
        "the limit of open files is {limit} (ulimit -n; wrangler's workerd inherits it) and {} subscribers need about \
         {}: cut to {} jobs ({} subscribers), the most that fit",
        shape.total_subscribers(),
        fds_needed(shape.total_subscribers()),
        cut.jobs,
        cut.total_subscribers()
    );
    (cut, Some(why))
}

fn unix_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn spec(chunks: u64) -> Value {
    json!({ "type": TYPE, "payload": { "chunks": chunks, "every_ms": EVERY_MS } })
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events, parsed by hand (the events of `shared/core/src/live.rs`).
// ---------------------------------------------------------------------------------------

/// One dispatched event: its `id` (only when the event had an `id:` line), name and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An SSE parser fed the body's bytes as they come; a blank line dispatches the event the
/// lines before it built. Comments (`: keepalive`) and `retry:` dispatch nothing.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// The events completed by `bytes`; an error when a line grows past [`MAX_LINE`].
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let raw = &self.buf[start..end];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = String::from_utf8_lossy(raw).into_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(format!("an SSE line passed {MAX_LINE} bytes"));
        }
        Ok(out)
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let (id, event, data) = (self.id.take(), self.event.take(), self.data.take());
            if let Some(data) = data {
                out.push(SseEvent { id, event: event.unwrap_or_else(|| "message".into()), data });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// One subscriber.
// ---------------------------------------------------------------------------------------

/// What one subscriber saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub job: usize,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The chunk ids, in the order they came.
    pub ids: Vec<u64>,
    /// Chunks whose attempt was not 1, stream not [`STREAM`], or whose number in the data
    /// was not their id.
    pub malformed: usize,
    /// The first final state (`completed`, `dead`, `cancelled`) and the `chunks` of its result.
    pub final_state: Option<String>,
    pub result_chunks: Option<u64>,
    /// Events that came after the final state.
    pub after_final: usize,
    /// The server ended the stream.
    pub ended: bool,
    /// When its first `state` event came (the subscription is registered by then).
    pub registered_at_us: Option<i64>,
    /// Chunk → here, in ms, of the chunks emitted after it was registered.
    pub latencies_ms: Vec<f64>,
    /// Chunks emitted before it was registered (its backlog; not timed).
    pub backlog: usize,
}

/// Whether `seen` got exactly chunks 1..=`chunks` in order, nothing malformed, the final
/// `completed` state with the handler's result, and the end of the stream after it.
pub fn complete(seen: &Seen, chunks: u64) -> bool {
    seen.error.is_none()
        && seen.ids.len() as u64 == chunks
        && seen.ids.iter().zip(1..).all(|(id, want)| *id == want)
        && seen.malformed == 0
        && seen.final_state.as_deref() == Some("completed")
        && seen.result_chunks == Some(chunks)
        && seen.after_final == 0
        && seen.ended
}

/// Missing, repeated and out-of-order ids against 1..=`chunks`.
pub fn id_faults(ids: &[u64], chunks: u64) -> (u64, u64, u64) {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for id in ids {
        *counts.entry(*id).or_default() += 1;
    }
    let missing = (1..=chunks).filter(|n| !counts.contains_key(n)).count() as u64;
    let repeated = counts.values().map(|c| c - 1).sum();
    let out_of_order = ids.windows(2).filter(|w| w[1] <= w[0]).count() as u64;
    (missing, repeated, out_of_order)
}

/// Shared by a phase's subscribers.
struct Watch {
    client: reqwest::Client,
    key: String,
    chunks: u64,
    registered: AtomicUsize,
    deadline: tokio::time::Instant,
    max_events: usize,
}

/// Follows one job's stream until the server ends it, the deadline, Ctrl-C, or
/// `max_events`.
async fn subscribe(w: Arc<Watch>, job: usize, url: String) -> Seen {
    let mut seen = Seen { job, ..Seen::default() };
    let sent = w.client.get(&url).bearer_auth(&w.key).header("accept", "text/event-stream").send();
    let mut resp = match tokio::time::timeout_at(w.deadline, sent).await {
        Err(_) => {
            seen.error = Some("timed out connecting".into());
            return seen;
        }
        Ok(Err(e)) => {
            seen.error = Some(format!("connect: {e}"));
            return seen;
        }
        Ok(Ok(r)) => r,
    };
    seen.status = Some(resp.status().as_u16());
    if !resp.status().is_success() {
        let status = resp.status();
        let body = tokio::time::timeout(Duration::from_secs(5), resp.text()).await;
        let body = body.ok().and_then(Result::ok).unwrap_or_default();
        seen.error = Some(format!("{status} {}", body.chars().take(200).collect::<String>()));
        return seen;
    }
    let mut parser = SseParser::default();
    let mut events = 0usize;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            seen.error = Some("interrupted".into());
            return seen;
        }
        if tokio::time::Instant::now() >= w.deadline {
            seen.error = Some("timed out before the stream ended".into());
            return seen;
        }
        let read = match tokio::time::timeout(READ_SLICE, resp.chunk()).await {
            Err(_) => continue,
            Ok(r) => r,
        };
        let bytes = match read {
            Ok(Some(b)) => b,
            Ok(None) => {
                seen.ended = true;
                return seen;
            }
            Err(e) => {
                seen.error = Some(format!("the stream broke: {e}"));
                return seen;
            }
        };
        let now = unix_us();
        let parsed = match parser.feed(&bytes) {
            Ok(p) => p,
            Err(e) => {
                seen.error = Some(e);
                return seen;
            }
        };
        for ev in parsed {
            events += 1;
            if seen.final_state.is_some() {
                seen.after_final += 1;
            }
            match ev.event.as_str() {
                "state" => on_state(&w, &mut seen, &ev.data, now),
                "chunk" => on_chunk(&w, &mut seen, &ev, now),
                _ => {}
            }
        }
        if events > w.max_events {
            seen.error = Some(format!("more than {} events", w.max_events));
            return seen;
        }
    }
}

fn on_state(w: &Watch, seen: &mut Seen, data: &str, now: i64) {
    if seen.registered_at_us.is_none() {
        seen.registered_at_us = Some(now);
        w.registered.fetch_add(1, Ordering::Relaxed);
    }
    let Ok(v) = serde_json::from_str::<Value>(data) else {
        seen.malformed += 1;
        return;
    };
    let state = v["state"].as_str().unwrap_or_default();
    if seen.final_state.is_none() && matches!(state, "completed" | "dead" | "cancelled") {
        seen.final_state = Some(state.to_owned());
        seen.result_chunks = v["result"]["chunks"].as_u64();
    }
}

fn on_chunk(w: &Watch, seen: &mut Seen, ev: &SseEvent, now: i64) {
    let Some(id) = ev.id.as_deref().and_then(|i| i.trim().parse::<u64>().ok()) else {
        seen.malformed += 1;
        return;
    };
    seen.ids.push(id);
    let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
    let text = v["data"].as_str().unwrap_or_default();
    let mut parts = text.split(' ');
    let n = parts.next().and_then(|x| x.parse::<u64>().ok());
    let emitted = parts.next().and_then(|x| x.parse::<i64>().ok());
    if v["attempt"] != 1 || v["stream"] != STREAM || n != Some(id) || id > w.chunks {
        seen.malformed += 1;
    }
    match (emitted, seen.registered_at_us) {
        (Some(t), Some(r)) if t >= r => seen.latencies_ms.push((now - t) as f64 / 1000.0),
        _ => seen.backlog += 1,
    }
}

// ---------------------------------------------------------------------------------------
// Memory while a phase runs.
// ---------------------------------------------------------------------------------------

/// `VmRSS` (resident now) of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Samples the resident memory of the processes in `pids` every [`RSS_EVERY`] until
/// stopped: the largest seen and the first, by component.
struct RssSampler {
    pids: Arc<Mutex<Vec<(String, u32)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeMap<String, (u64, u64)>>>,
}

impl RssSampler {
    fn start(pids: Vec<(String, u32)>, bound: Duration) -> RssSampler {
        let pids = Arc::new(Mutex::new(pids));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&pids), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let end = Instant::now() + bound;
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let now: Vec<(String, u32)> = p.lock().map(|v| v.clone()).unwrap_or_default();
                for (component, pid) in now {
                    if let Some(bytes) = rss(pid) {
                        let e = seen.entry(component).or_insert((bytes, 0));
                        e.1 = e.1.max(bytes);
                    }
                }
                std::thread::sleep(RSS_EVERY);
            }
            seen
        });
        RssSampler { pids, stop, thread: Some(thread) }
    }

    fn add(&self, component: &str, pid: u32) {
        if let Ok(mut v) = self.pids.lock() {
            v.push((component.to_owned(), pid));
        }
    }

    /// (first, peak) bytes by component.
    fn finish(mut self) -> BTreeMap<String, (u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// The phases.
// ---------------------------------------------------------------------------------------

/// Runs the phases into `report.scenarios.live`. Only Ctrl-C stops it; a phase that fails
/// is recorded with its error.
pub fn run(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    let wanted = fanout_shape(b.s.quick)?;
    let limit = open_files_limit();
    let (fanout, cut) = fit(wanted, limit);
    let latency = if b.s.quick { QUICK_LATENCY } else { LATENCY };
    if let Some(why) = &cut {
        say(format!("live: {why}"));
    }
    report["scenarios"]["live"] = json!({
        "type": TYPE,
        "stream": STREAM,
        "every_ms": EVERY_MS,
        "consumer": "examples/agent-workflow (bench.stream), EDGEJOBS_LIVE_LINGER default (25ms)",
        "shape_from": if std::env::var("BENCH_LIVE_JOBS").is_ok() || std::env::var("BENCH_LIVE_SUBSCRIBERS").is_ok()
            || std::env::var("BENCH_LIVE_CHUNKS").is_ok() { "BENCH_LIVE_*" } else if b.s.quick { "--quick" } else { "default" },
        "fanout_wanted": wanted.to_json(),
        "open_files_limit": limit,
        "open_files_needed": fds_needed(wanted.total_subscribers()),
        "fanout_cut": cut,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the subscribers' runtime")?;

    say(format!(
        "live cost: {WARM_JOBS} warm-up jobs, then {} {TYPE} jobs of 0 and of {} chunks, nobody subscribed",
        fanout.jobs, fanout.chunks
    ));
    let cost = phase_or_error(cost(b, fanout))?;
    report["scenarios"]["live"]["cost"] = cost;

    say(format!(
        "live latency: {} jobs × {} subscriber × {} chunks every {EVERY_MS} ms (subscribed before the consumer starts)",
        latency.jobs, latency.subscribers, latency.chunks
    ));
    let v = phase_or_error(watched(b, &rt, latency))?;
    report["scenarios"]["live"]["latency"] = v;

    say(format!(
        "live fan-out: {} jobs × {} subscribers × {} chunks = {} subscribers",
        fanout.jobs,
        fanout.subscribers,
        fanout.chunks,
        fanout.total_subscribers()
    ));
    let v = phase_or_error(watched(b, &rt, fanout))?;
    report["scenarios"]["live"]["fanout"] = v;
    rt.shutdown_timeout(Duration::from_secs(5));
    let live = &mut report["scenarios"]["live"];
    live["per_subscriber"] = per_subscriber(live);
    Ok(())
}

fn phase_or_error(r: anyhow::Result<Value>) -> anyhow::Result<Value> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if !INTERRUPTED.load(Ordering::Relaxed) => {
            say(format!("live phase stopped: {e:#}"));
            Ok(json!({ "error": format!("{e:#}") }))
        }
        Err(e) => Err(e),
    }
}

fn start_consumer(b: &mut Bench, jobs: usize) -> anyhow::Result<usize> {
    // Every job of a phase runs at once.
    let c = jobs.max(10).to_string();
    b.stack.start_consumer_binary("agent-workflow", &[("EDGEJOBS_CONCURRENCY", c.as_str())])
}

fn stop_consumer(b: &mut Bench, i: usize) -> Option<i32> {
    say(format!("stopping consumer {i} (SIGTERM)"));
    b.stack.terminate_consumer(i, Duration::from_secs(40))
}

/// The cost phase: warm-up, then the same jobs with no chunk and with `shape.chunks`.
fn cost(b: &mut Bench, shape: Shape) -> anyhow::Result<Value> {
    let i = start_consumer(b, shape.jobs)?;
    let out = (|| {
        let warm = b.lane_each(TYPE, WARM_JOBS, Some(i), |_| spec(WARM_CHUNKS))?;
        if !warm.reached {
            bail!("the {WARM_JOBS} warm-up jobs did not complete: {} in {:.0} s", warm.completed, warm.elapsed_s);
        }
        let zero = b.lane_each(TYPE, shape.jobs, Some(i), |_| spec(0))?;
        let full = b.lane_each(TYPE, shape.jobs, Some(i), |_| spec(shape.chunks))?;
        Ok((zero, full))
    })();
    let exit = stop_consumer(b, i);
    let (zero, full) = out?;
    if !zero.reached || !full.reached {
        bail!(
            "the cost phase's jobs did not all complete: {} of {} without chunks, {} of {} with",
            zero.completed,
            zero.created,
            full.completed,
            full.created
        );
    }
    let chunks = full.completed * shape.chunks as f64;
    let marginal = difference(&full.ops, &zero.ops, chunks);
    let v = json!({
        "jobs": shape.jobs,
        "chunks_per_job": shape.chunks,
        "chunks": chunks,
        "without_chunks": zero.to_json(),
        "with_chunks": full.to_json(),
        "per_chunk": per_chunk(&marginal),
        "consumer_exit_code": exit,
        "what": "the operations of jobs with chunks minus the same jobs without, over the chunks; nobody subscribed",
    });
    say(format!(
        "live cost: per chunk {} DO requests, {} rows written, {} Worker requests; US${} per million chunks",
        num(f(&v["per_chunk"]["do_requests"]), 3),
        num(f(&v["per_chunk"]["do_rows_written"]), 3),
        num(f(&v["per_chunk"]["worker_requests"]), 3),
        num(f(&v["per_chunk"]["usd_per_million"]["total"]), 3),
    ));
    Ok(v)
}

/// `a − b` per measure (net of the reads' cost), spread over `units`: what `a`'s run did
/// beyond `b`'s. A measure missing from either is missing.
fn difference(a: &Ops, b: &Ops, units: f64) -> Ops {
    let by = MEASURES
        .iter()
        .map(|m| {
            let net = a.by.get(m.key).and_then(|d| d.net).zip(b.by.get(m.key).and_then(|d| d.net)).map(|(x, y)| x - y);
            let per_job = net.filter(|_| units > 0.0).map(|n| n / units);
            (m.key, OpDelta { raw: None, reads: 0, overhead: 0.0, net, per_job })
        })
        .collect();
    Ops { jobs: units, by, settled: a.settled && b.settled }
}

/// An [`Ops`] counted per chunk as JSON: the measures and US$ per million chunks.
fn per_chunk(ops: &Ops) -> Value {
    let cost = ops.cost();
    json!({
        "do_requests": ops.per_job("do_requests"),
        "do_rows_written": ops.per_job("do_rows_written"),
        "do_rows_read": ops.per_job("do_rows_read"),
        "worker_requests": ops.per_job("worker_requests"),
        "consumer_edge_requests": ops.per_job("consumer_edge_requests"),
        "upstash_commands": ops.upstash_per_job(),
        "queue_messages": ops.per_job("queue_messages_sent"),
        "settled": ops.settled,
        "usd_per_million": {
            "total": cost.total,
            "do_requests": cost.operations.by.get("do_requests").cloned().flatten(),
            "rows_written": cost.storage_writes.by.get("rows_written").cloned().flatten(),
            "operations": cost.operations.usd,
            "rows": cost.storage_writes.usd,
            "by": cost.operations.by.iter().chain(cost.storage_writes.by.iter())
                .map(|(k, u)| (k.clone(), json!(u))).collect::<serde_json::Map<_, _>>(),
            "prices_as_of": PRICES_AS_OF,
            "not_included": "CPU time, Durable Object duration, storage GB-month, free allowances",
        },
    })
}

/// Enqueues `jobs` jobs of `chunks` chunks in batches of [`BATCH`]: their ids, in order,
/// and the first error.
fn enqueue_ids(b: &Bench, jobs: usize, chunks: u64) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::with_capacity(jobs);
    let mut first_error = None;
    for start in (0..jobs).step_by(BATCH) {
        let n = BATCH.min(jobs - start);
        let body = json!({ "jobs": vec![spec(chunks); n] });
        let r = b.http.post(b.edge("/v1/jobs/batch")).bearer_auth(&b.stack.secrets.api_key).json(&body).send();
        match r.map_err(anyhow::Error::from).and_then(|r| {
            let status = r.status();
            let v: Value = r.json()?;
            if !status.is_success() {
                bail!("POST /v1/jobs/batch: {status} {v}");
            }
            Ok(v)
        }) {
            Ok(v) => {
                for item in v["results"].as_array().into_iter().flatten() {
                    match item["job"]["id"].as_str() {
                        Some(id) if item["status"] == 201 => ids.push(id.to_owned()),
                        _ => {
                            first_error.get_or_insert_with(|| format!("batch item: {item}"));
                        }
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    (ids, first_error)
}

/// A phase with subscribers: `shape.jobs` jobs enqueued with no consumer running, their
/// subscribers connected (each has had its first `state` event, bounded), then a consumer
/// started; until every stream ended (bounded by `--timeout`), then the settled counters.
fn watched(b: &mut Bench, rt: &tokio::runtime::Runtime, shape: Shape) -> anyhow::Result<Value> {
    let before = b.settled(None)?;
    let base = before.completed(TYPE).context("the edge's /metrics has no edgejobs_jobs_completed_total")?;
    let (ids, enqueue_error) = enqueue_ids(b, shape.jobs, shape.chunks);
    check_interrupted()?;
    if ids.is_empty() {
        bail!("no {TYPE} job was created: {}", enqueue_error.unwrap_or_default());
    }
    if ids.len() < shape.jobs {
        say(format!(
            "only {} of {} jobs were created: {}",
            ids.len(),
            shape.jobs,
            enqueue_error.as_deref().unwrap_or("")
        ));
    }
    let total = ids.len() * shape.subscribers;
    let cpu0 = cpu_snap(&b.roots());
    let workerd: Vec<(String, u32)> = stack_processes(&b.roots())
        .into_iter()
        .filter(|(c, _)| c.starts_with("workerd"))
        .map(|(c, p)| (c, p.pid))
        .collect();
    let sampler = RssSampler::start(workerd, b.s.timeout + Duration::from_secs(120));
    let t0 = Instant::now();
    let watch = {
        let _in_rt = rt.enter();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .context("building the subscribers' client")?;
        Arc::new(Watch {
            client,
            key: b.stack.secrets.api_key.clone(),
            chunks: shape.chunks,
            registered: AtomicUsize::new(0),
            deadline: tokio::time::Instant::now() + b.s.timeout,
            max_events: 3 * shape.chunks as usize + 1_000,
        })
    };
    let handles: Vec<_> = ids
        .iter()
        .enumerate()
        .flat_map(|(j, id)| (0..shape.subscribers).map(move |_| (j, id)))
        .map(|(j, id)| rt.spawn(subscribe(Arc::clone(&watch), j, b.edge(&format!("/v1/jobs/{id}/events")))))
        .collect();
    // Every subscriber connected before any chunk exists, so each chunk is timed live; a
    // bound, then the consumer starts anyway (a late subscriber's chunks come as backlog).
    let connect_bound = Duration::from_secs(30) + Duration::from_millis(50) * total as u32;
    let mut finished_early = 0;
    while watch.registered.load(Ordering::Relaxed) < total && t0.elapsed() < connect_bound {
        finished_early = handles.iter().filter(|h| h.is_finished()).count();
        if finished_early == total {
            break;
        }
        nap(Duration::from_millis(50))?;
    }
    let registered = watch.registered.load(Ordering::Relaxed);
    let connect_s = t0.elapsed().as_secs_f64();
    say(format!(
        "{registered} of {total} subscribers connected in {connect_s:.1} s{}; starting the consumer",
        if finished_early > 0 { format!(" ({finished_early} already ended)") } else { String::new() }
    ));
    let consumer = start_consumer(b, ids.len());
    let i = match consumer {
        Ok(i) => i,
        Err(e) => {
            for h in &handles {
                h.abort();
            }
            return Err(e);
        }
    };
    let t_run = Instant::now();
    if let Some(pid) = b.stack.consumer_pid(i) {
        sampler.add("consumer", pid);
    }
    let mut seen: Vec<Seen> = Vec::with_capacity(total);
    let mut last_report = Instant::now();
    for h in handles {
        // Each subscriber ends by its own deadline (or Ctrl-C), so this wait is bounded.
        match rt.block_on(h) {
            Ok(s) => seen.push(s),
            Err(e) => seen.push(Seen { error: Some(format!("the subscriber's task failed: {e}")), ..Seen::default() }),
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            say(format!("  {} of {total} subscribers done after {:.0} s", seen.len(), t_run.elapsed().as_secs_f64()));
            last_report = Instant::now();
        }
    }
    let streams_s = t_run.elapsed().as_secs_f64();
    let cpu1 = cpu_snap(&b.roots());
    let consumer_hwm = b.stack.consumer_pid(i).and_then(peak_rss);
    let memory = sampler.finish();
    let after = b.settled(Some(i));
    let exit = stop_consumer(b, i);
    check_interrupted()?;
    let after = after?;
    let completed = after.completed(TYPE).map(|c| c - base);
    let chunks = ids.len() as f64 * shape.chunks as f64;
    let ops = Ops::between(&before, &after, &b.overhead, chunks);
    let cpu = cpu_between(&cpu0, &cpu1);
    let v = figures(
        shape,
        &ids,
        &seen,
        FigureInputs {
            enqueue_error,
            registered,
            connect_s,
            streams_s,
            completed,
            ops,
            cpu,
            memory,
            consumer_hwm,
            exit,
        },
    );
    say(summary(&v));
    Ok(v)
}

/// What [`figures`] reads besides the subscribers.
struct FigureInputs {
    enqueue_error: Option<String>,
    registered: usize,
    connect_s: f64,
    streams_s: f64,
    completed: Option<f64>,
    ops: Ops,
    cpu: Value,
    memory: BTreeMap<String, (u64, u64)>,
    consumer_hwm: Option<u64>,
    exit: Option<i32>,
}

fn figures(shape: Shape, ids: &[String], seen: &[Seen], x: FigureInputs) -> Value {
    let total = ids.len() * shape.subscribers;
    let complete_n = seen.iter().filter(|s| complete(s, shape.chunks)).count();
    let mut missing = 0;
    let mut repeated = 0;
    let mut out_of_order = 0;
    for s in seen {
        let (m, r, o) = id_faults(&s.ids, shape.chunks);
        missing += m;
        repeated += r;
        out_of_order += o;
    }
    let count = |p: &dyn Fn(&Seen) -> bool| seen.iter().filter(|s| p(s)).count();
    let failures: Vec<Value> = seen
        .iter()
        .filter(|s| !complete(s, shape.chunks))
        .take(10)
        .map(|s| {
            let (m, r, o) = id_faults(&s.ids, shape.chunks);
            json!({ "job": ids.get(s.job), "status": s.status, "error": s.error, "chunks": s.ids.len(),
                    "missing": m, "repeated": r, "out_of_order": o, "malformed": s.malformed,
                    "final_state": s.final_state, "result_chunks": s.result_chunks,
                    "after_final": s.after_final, "ended": s.ended })
        })
        .collect();
    let mut lat: Vec<f64> = seen.iter().flat_map(|s| s.latencies_ms.iter().copied()).collect();
    let latency = Percentiles::of(&mut lat);
    let chunks = ids.len() as f64 * shape.chunks as f64;
    let by = x.cpu["cpu_s_by_component"].clone();
    let cpu_us = |c: &str| by[c].as_f64().filter(|_| chunks > 0.0).map(|s| s * 1e6 / chunks);
    let mem = |c: &str| x.memory.get(c).map(|(first, peak)| json!({ "first_bytes": first, "peak_bytes": peak }));
    let wall = f(&x.cpu["wall_s"]).unwrap_or(0.0);
    let worker_thread =
        f(&x.cpu["busiest_thread_cpu_s_by_component"][WORKERD_WORKER]).filter(|_| wall > 0.0).map(|t| t / wall);
    let per_s = |n: f64| (x.streams_s > 0.0).then(|| n / x.streams_s);
    json!({
        "shape": shape.to_json(),
        "jobs_created": ids.len(),
        "enqueue_error": x.enqueue_error,
        "subscribers": total,
        "registered_before_consumer": x.registered,
        "connect_s": x.connect_s,
        "streams_s": x.streams_s,
        "jobs_completed_by_counter": x.completed,
        "delivery": {
            "complete": complete_n,
            "incomplete": total - complete_n,
            "all_complete": complete_n == total && total == shape.total_subscribers(),
            "connect_failed": count(&|s| s.status != Some(200) && s.error.is_some()),
            "errors": count(&|s| s.error.is_some()),
            "missing_chunks": missing,
            "repeated_chunks": repeated,
            "out_of_order": out_of_order,
            "malformed": seen.iter().map(|s| s.malformed).sum::<usize>(),
            "not_completed_state": count(&|s| s.final_state.as_deref() != Some("completed")),
            "not_ended": count(&|s| !s.ended),
            "events_after_final": seen.iter().map(|s| s.after_final).sum::<usize>(),
            "backlog_chunks": seen.iter().map(|s| s.backlog).sum::<usize>(),
            "first_failures": failures,
        },
        "latency_ms": latency.map_or(Value::Null, |p| p.to_json()),
        // What the handlers offer (every job's chunks at once) against what reached the
        // subscribers, from the consumer's start to the last stream's end.
        "rates": {
            "offered_chunks_per_s": ids.len() as f64 * 1000.0 / EVERY_MS as f64,
            "chunks_per_s": per_s(chunks),
            "chunk_events_to_subscribers_per_s": per_s(chunks * shape.subscribers as f64),
            "workerd_worker_thread_busy": worker_thread,
        },
        "memory": {
            "workerd_worker": mem(WORKERD_WORKER),
            "workerd_proxy": mem(WORKERD_PROXY),
            "consumer": mem("consumer"),
            "consumer_vmhwm_bytes": x.consumer_hwm,
            "sampled_every_ms": RSS_EVERY.as_millis() as u64,
        },
        "ops_unit": "chunk (ops.per_job is per chunk here)",
        "ops": x.ops.to_json(),
        "per_chunk": per_chunk(&x.ops),
        "cpu": x.cpu,
        "cpu_us_per_chunk": { "workerd_worker": cpu_us(WORKERD_WORKER), "workerd_proxy": cpu_us(WORKERD_PROXY),
                              "consumer": cpu_us("consumer") },
        "consumer_exit_code": x.exit,
    })
}

fn summary(v: &Value) -> String {
    let d = &v["delivery"];
    let l = &v["latency_ms"];
    format!(
        "live {}: {} of {} subscribers complete; chunk → subscriber p50 {} ms, p99 {} ms ({} samples); streams \
         {} s; peak RSS workerd {} MiB, consumer {} MiB",
        v["shape"]["jobs"].as_u64().map_or("?".into(), |j| format!("{j} jobs")),
        d["complete"],
        v["subscribers"],
        num(f(&l["p50"]), 1),
        num(f(&l["p99"]), 1),
        l["n"],
        num(f(&v["streams_s"]), 1),
        num(mib(&v["memory"]["workerd_worker"]["peak_bytes"]), 0),
        num(mib(&v["memory"]["consumer"]["peak_bytes"]), 1),
    )
}

fn mib(v: &Value) -> Option<f64> {
    f(v).map(|b| b / (1u64 << 20) as f64)
}

/// What one subscription costs, from the fan-out and the cost phase's run of the same jobs
/// without subscribers: (fan-out − with chunks) ÷ subscribers.
fn per_subscriber(live: &Value) -> Value {
    let fan = &live["fanout"];
    let with = &live["cost"]["with_chunks"];
    let subs = f(&fan["subscribers"]).unwrap_or(0.0);
    if fan["error"].is_string() || with.is_null() || subs <= 0.0 || fan["shape"]["jobs"] != live["cost"]["jobs"] {
        return Value::Null;
    }
    let net = |v: &Value, k: &str| f(&v["ops"]["counters"][k]["net"]);
    let diff = |k: &str| net(fan, k).zip(net(with, k)).map(|(a, b)| (a - b) / subs);
    json!({
        "do_requests": diff("do_requests"),
        "worker_requests": diff("worker_requests"),
        "do_rows_read": diff("do_rows_read"),
        "do_rows_written": diff("do_rows_written"),
    })
}

// ---------------------------------------------------------------------------------------
// Targets and the printed table.
// ---------------------------------------------------------------------------------------

pub fn targets(report: &Value) -> Vec<Value> {
    let l = &report["scenarios"]["live"];
    if l.is_null() {
        return Vec::new();
    }
    let t = crate::report::target;
    let liveness = f(&report["scenarios"]["liveness"]["wrk"]["p99_ms"]);
    let p99 = f(&l["latency"]["latency_ms"]["p99"]);
    let ratio = p99.zip(liveness).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let fan = &l["fanout"]["delivery"];
    vec![
        t(
            "live_chunk_p99_vs_liveness",
            "live: chunk → subscriber p99 ÷ GET /health/live p99",
            ratio,
            "<=",
            TARGET_P99_VS_LIVENESS,
        ),
        t(
            "live_fanout_incomplete_subscribers",
            "live: fan-out subscribers without every chunk in order and the final completed state",
            f(&fan["incomplete"]),
            "<=",
            0.0,
        ),
    ]
}

/// The live section: a row per phase with subscribers, the delivery check, the targets and
/// the cost per chunk.
pub fn print(r: &Value) {
    let l = &r["scenarios"]["live"];
    if l.is_null() {
        return;
    }
    let tg: Vec<Value> = r["targets"].as_array().cloned().unwrap_or_default();
    let target = |id: &str| tg.iter().find(|t| t["id"] == id);
    println!();
    println!(
        "live results (issue #30): {TYPE} (examples/agent-workflow) emits a chunk every {EVERY_MS} ms; SSE \
         subscribers on loopback time each from the handler's ctx.stream to their socket; same run, figures not \
         assertions (shape: {}):",
        l["shape_from"].as_str().unwrap_or("?")
    );
    if let Some(why) = l["fanout_cut"].as_str() {
        println!("  FAN-OUT CUT: {why}");
    }
    if let Some(offered) = f(&l["fanout"]["rates"]["offered_chunks_per_s"]) {
        println!(
            "  (the fan-out's handlers offer {offered:.0} chunks/s at once; what the edge delivers in its place is \
             the 'delivered' column, and its latency is mostly the queue in front of that)"
        );
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (key, name) in [("latency", "latency (1 subscriber/job)"), ("fanout", "fan-out")] {
        let v = &l[key];
        if v.is_null() {
            continue;
        }
        if let Some(e) = v["error"].as_str() {
            rows.push(vec![name.into(), format!("FAILED: {e}")]);
            continue;
        }
        let d = &v["delivery"];
        let lat = &v["latency_ms"];
        let m = &v["memory"];
        rows.push(vec![
            name.into(),
            format!("{} × {} × {}", v["jobs_created"], v["shape"]["subscribers_per_job"], v["shape"]["chunks_per_job"]),
            format!("{} of {}", d["complete"], v["subscribers"]),
            format!(
                "{} / {} / {} / {} ({})",
                num(f(&lat["p50"]), 1),
                num(f(&lat["p90"]), 1),
                num(f(&lat["p99"]), 1),
                num(f(&lat["max"]), 1),
                lat["n"]
            ),
            format!("{} / {}", num(f(&v["connect_s"]), 1), num(f(&v["streams_s"]), 1)),
            format!(
                "{} / {}",
                num(f(&v["rates"]["chunks_per_s"]), 0),
                num(f(&v["rates"]["chunk_events_to_subscribers_per_s"]), 0)
            ),
            format!("{}%", num(f(&v["rates"]["workerd_worker_thread_busy"]).map(|x| x * 100.0), 0)),
            format!(
                "{} / {} / {}",
                num(mib(&m["workerd_worker"]["peak_bytes"]), 0),
                num(mib(&m["workerd_proxy"]["peak_bytes"]), 0),
                num(mib(&m["consumer"]["peak_bytes"]), 1)
            ),
            format!(
                "{} / {}",
                num(f(&v["cpu_us_per_chunk"]["workerd_worker"]), 0),
                num(f(&v["cpu_us_per_chunk"]["consumer"]), 0)
            ),
        ]);
    }
    print_rows(
        &[
            "phase",
            "jobs × subs/job × chunks",
            "subscribers complete",
            "chunk → subscriber ms: p50 / p90 / p99 / max (n)",
            "connect s / streams s",
            "chunks/s: delivered / to subscribers",
            "Worker thread busy",
            "peak RSS MiB: workerd Worker / dev proxy / consumer",
            "CPU µs/chunk: workerd / consumer",
        ],
        &rows,
    );
    let liveness = f(&r["scenarios"]["liveness"]["wrk"]["p99_ms"]);
    let lt = target("live_chunk_p99_vs_liveness");
    println!(
        "  target: chunk → subscriber p99 ≤ {TARGET_P99_VS_LIVENESS}× liveness p99 (GET /health/live, wrk, {} ms): \
         {} ms = {}× ({})",
        num(liveness, 1),
        num(f(&l["latency"]["latency_ms"]["p99"]), 1),
        num(lt.and_then(|t| f(&t["value"])), 2),
        met_str(lt)
    );
    let fan = &l["fanout"];
    if fan["delivery"].is_object() {
        let d = &fan["delivery"];
        let all = d["all_complete"] == true;
        println!(
            "  fan-out delivery: {} of {} subscribers got ids 1..={} in order, none lost or repeated, then \
             `completed` and the stream's end: {} (missing {}, repeated {}, out of order {}, malformed {}, errors {}, \
             no completed state {}, not ended {}){}",
            d["complete"],
            fan["subscribers"],
            fan["shape"]["chunks_per_job"],
            if all { "ALL" } else { "NOT ALL" },
            d["missing_chunks"],
            d["repeated_chunks"],
            d["out_of_order"],
            d["malformed"],
            d["errors"],
            d["not_completed_state"],
            d["not_ended"],
            d["first_failures"]
                .as_array()
                .and_then(|a| a.first())
                .map(|x| format!("; first failure: {x}"))
                .unwrap_or_default(),
        );
        println!(
            "  fan-out memory: workerd (Worker) {} → {} MiB, dev proxy {} → {} MiB (resident at start → peak, \
             sampled every {} ms); consumer peak {} MiB",
            num(mib(&fan["memory"]["workerd_worker"]["first_bytes"]), 0),
            num(mib(&fan["memory"]["workerd_worker"]["peak_bytes"]), 0),
            num(mib(&fan["memory"]["workerd_proxy"]["first_bytes"]), 0),
            num(mib(&fan["memory"]["workerd_proxy"]["peak_bytes"]), 0),
            fan["memory"]["sampled_every_ms"],
            num(mib(&fan["memory"]["consumer_vmhwm_bytes"]), 1),
        );
        let cpu = &fan["cpu"];
        let by = &cpu["cpu_s_by_component"];
        let capacity = f(&cpu["machine_capacity_s"]).filter(|c| *c > 0.0);
        println!(
            "  fan-out CPU s: workerd (Worker) {}, dev proxy {}, consumer {}, bench {} over {} s; the machine was {}% \
             busy, {}% of the machine taken by other processes (a quieter machine delivers more)",
            num(f(&by[WORKERD_WORKER]), 1),
            num(f(&by[WORKERD_PROXY]), 1),
            num(f(&by["consumer"]), 2),
            num(f(&by["bench + wrk"]), 1),
            num(f(&cpu["wall_s"]), 1),
            num(f(&cpu["machine_busy_fraction"]).map(|x| x * 100.0), 0),
            num(f(&by["other (rest of the machine)"]).zip(capacity).map(|(o, c)| 100.0 * o / c), 0),
        );
    }
    let mut cost_rows: Vec<Vec<String>> = Vec::new();
    let cost_row = |name: &str, p: &Value| -> Vec<String> {
        let u = &p["usd_per_million"];
        vec![
            name.to_owned(),
            num(f(&p["do_requests"]), 4),
            num(f(&p["do_rows_written"]), 3),
            num(f(&p["do_rows_read"]), 2),
            num(f(&p["worker_requests"]), 4),
            num(f(&p["upstash_commands"]), 2),
            format!("${} + ${}", num(f(&u["do_requests"]), 3), num(f(&u["rows_written"]), 3)),
            f(&u["total"]).map_or("n/a".into(), |t| format!("${t:.3}")),
        ]
    };
    let c = &l["cost"];
    if let Some(e) = c["error"].as_str() {
        cost_rows.push(vec!["marginal (no subscribers)".into(), format!("FAILED: {e}")]);
    } else if c.is_object() {
        cost_rows.push(cost_row(
            &format!("marginal: {} jobs with {} chunks − without, no subscriber", c["jobs"], c["chunks_per_job"]),
            &c["per_chunk"],
        ));
    }
    if fan["per_chunk"].is_object() {
        cost_rows.push(cost_row(
            &format!("fan-out, all in: its jobs and {} subscriptions ÷ its chunks", fan["subscribers"]),
            &fan["per_chunk"],
        ));
    }
    if !cost_rows.is_empty() {
        println!("  operations per chunk (the edge's /metrics before and after, the reads' own cost subtracted):");
        print_rows(
            &[
                "basis",
                "DO req",
                "rows written",
                "rows read",
                "Worker req",
                "Upstash cmds",
                "US$/M: DO req + rows written",
                "US$/M chunks",
            ],
            &cost_rows,
        );
    }
    let ps = &l["per_subscriber"];
    if ps.is_object() {
        println!(
            "  per subscription (fan-out − the cost phase's same jobs unwatched, ÷ subscribers): {} DO requests, {} \
             Worker requests (rows read and written per subscription are in the JSON: within the counters' noise)",
            num(f(&ps["do_requests"]), 2),
            num(f(&ps["worker_requests"]), 2),
        );
    }
    println!(
        "  US$/M chunks: every operation counted (DO and Worker requests, rows written and read, queue operations, \
         Upstash commands) at the prices of {PRICES_AS_OF}; CPU, DO duration and storage left out."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_come_whole_across_reads() {
        let mut p = SseParser::default();
        let mut got = p.feed(b"retry: 2000\n\nid: 1\nevent: chunk\ndata: {\"a\"").expect("parses");
        assert!(got.is_empty());
        got.extend(
            p.feed(b":1}\n\n: keepalive\n\nevent: state\r\ndata: {\"state\":\"queued\"}\r\n\r\n").expect("parses"),
        );
        assert_eq!(
            got,
            vec![
                SseEvent { id: Some("1".into()), event: "chunk".into(), data: "{\"a\":1}".into() },
                SseEvent { id: None, event: "state".into(), data: "{\"state\":\"queued\"}".into() },
            ]
        );
        // Data on two lines joins with a newline; a field without a colon is a name alone.
        let got = p.feed(b"data: a\ndata: b\ndata\n\n").expect("parses");
        assert_eq!(got[0].data, "a\nb\n");
        assert_eq!(got[0].event, "message");
    }

    #[test]
    fn a_line_without_end_is_bounded() {
        let mut p = SseParser::default();
        assert!(p.feed(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn id_faults_count_lost_repeated_and_reordered_chunks() {
        assert_eq!(id_faults(&[1, 2, 3], 3), (0, 0, 0));
        assert_eq!(id_faults(&[1, 3], 3), (1, 0, 0));
        assert_eq!(id_faults(&[1, 2, 2, 3], 3), (0, 1, 1));
        assert_eq!(id_faults(&[2, 1, 3], 3), (0, 0, 1));
    }

    fn done(chunks: u64) -> Seen {
        Seen {
            ids: (1..=chunks).collect(),
            final_state: Some("completed".into()),
            result_chunks: Some(chunks),
            ended: true,
            ..Seen::default()
        }
    }

    #[test]
    fn a_subscriber_is_complete_only_with_every_chunk_then_the_end() {
        assert!(complete(&done(3), 3));
        let mut s = done(3);
        s.ids = vec![1, 3, 2];
        assert!(!complete(&s, 3));
        let mut s = done(3);
        s.final_state = Some("dead".into());
        assert!(!complete(&s, 3));
        let mut s = done(3);
        s.ended = false;
        assert!(!complete(&s, 3));
        let mut s = done(3);
        s.after_final = 1;
        assert!(!complete(&s, 3));
    }

    #[test]
    fn the_fanout_is_cut_to_the_open_files_limit_and_says_so() {
        let (s, why) = fit(FANOUT, Some(100_000));
        assert_eq!((s, why), (FANOUT, None));
        assert_eq!(fit(FANOUT, None).0, FANOUT);
        let (s, why) = fit(FANOUT, Some(1_024));
        // (1024 − 256) ÷ (2 × 10) = 38 jobs.
        assert_eq!(s, Shape { jobs: 38, ..FANOUT });
        assert!(why.expect("says why").contains("1024"));
    }

    #[test]
    fn the_type_joins_the_declared_ones() {
        let mut vars = vec![("JOB_TYPES".to_owned(), json!({ "bench.steps": { "lane": "native" } }).to_string())];
        declare(&mut vars).expect("declares");
        let types: Value = serde_json::from_str(&vars[0].1).expect("JSON");
        assert_eq!(types["bench.steps"]["lane"], "native");
        assert_eq!(types[TYPE]["lane"], "native");
        let mut vars = Vec::new();
        declare(&mut vars).expect("declares");
        assert_eq!(vars[0].0, "JOB_TYPES");
    }
}
