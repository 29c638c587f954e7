//! `--soak D`: a mixed load held for D at half the capacity measured at the start of the same
//! run, sampled every [`sample_every`] and printed per minute, then a verdict on every series
//! that must not grow without bound. Exits non-zero (through `main`) when one does.
//!
//! The load: the edge lane (noop jobs, in batches and single enqueues), the native lane (short
//! sleep jobs through one consumer, one in ten with an idempotency key), two schedules (every
//! second on the edge lane, every minute on the native lane) created at the start and deleted
//! at the end, and a failing native job every [`FAIL_EVERY`] that retries once and goes dead.
//! Its rate: a probe of each lane first (the bench's own end-to-end run), then half of the
//! measured capacity, [`EDGE_SHARE`] of that half on the edge lane and the rest on the native
//! lane (so each lane runs at `0.5 × share` of what it alone reached).
//!
//! The stack runs with short retention ([`vars`]) and the 5-minute cron (cleanup and sweep)
//! is fired every [`RETENTION_EVERY`] through wrangler's `/__scheduled`, so a correct system
//! reaches a plateau within the first minute: finished jobs stay about `rate × (age + cron
//! period)`, the idempotency table about `keyed rate × window`, the stream about the jobs in
//! flight. What is sampled: rows of each table of each shard (the shards' SQLite files, read
//! with `sqlite3 -readonly` beside workerd: WAL mode, so readers never block it), the stream's
//! length and pending entries, Redis's key count, RSS of the Worker's workerd and of the
//! consumer, Upstash commands (edge and consumer counters, redis-server's own count),
//! completions, and enqueue-to-start latency of sampled jobs from their own timestamps.
//!
//! `BENCH_SOAK_CRON=off` leaves the cron unfired: finished jobs then stay, and the soak fails
//! (finished rows grow, the oldest finished job outlives its bound) — how it is shown to fail.
//!
//! The judgement ([`judge`]) is pure and unit-tested: after a warm-up, the judged part of a
//! series is cut in thirds; it grows when the thirds' medians rise strictly, the last third
//! holds the highest value, and the rise exceeds the series' tolerance. A plateau (sawtooth
//! included) and noise pass; a series that only grows fails. A series with a known bound
//! (the per-minute rows) is instead judged against it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::latency::{Percentiles, job_latency, parse_job};
use crate::procfs::{WORKERD_WORKER, stack_processes};
use crate::{BATCH, Bench, INTERRUPTED, STREAM_GROUP, STREAM_KEY, check_interrupted, nap, say};

/// How often every series is sampled: every 2 s in a run shorter than 5 minutes (enough
/// samples for the judgement to tell noise from growth), else every 5 s.
pub fn sample_every(run: Duration) -> Duration {
    Duration::from_secs(if run < Duration::from_secs(300) { 2 } else { 5 })
}
/// How often the 5-minute cron (job retention, idempotency cleanup, sweep) is fired.
pub const RETENTION_EVERY: Duration = Duration::from_secs(15);
/// Age after which finished jobs go, in seconds (completed, cancelled and dead alike).
pub const RETENTION_AGE_S: u64 = 20;
/// The idempotency window of the soak stack, in seconds.
pub const IDEMPOTENCY_WINDOW_S: u64 = 30;
/// Share of the load (half the capacity) that goes to the edge lane; the rest is native.
pub const EDGE_SHARE: f64 = 0.7;
/// Fraction of the measured capacity the soak holds.
pub const LOAD_FRACTION: f64 = 0.5;
/// A failing native job (retried once, then dead) this often.
pub const FAIL_EVERY: Duration = Duration::from_secs(10);
/// Sleep of each native job.
pub const NATIVE_MS: u64 = 20;
/// The consumer's concurrency.
pub const CONSUMER_CONCURRENCY: &str = "50";
/// A finished job lives at most its age, the cron's period until the next run, and a
/// margin for a slow run: older, retention failed somewhere.
pub const OLDEST_FINISHED_BOUND_S: f64 = (RETENTION_AGE_S + 2 * RETENTION_EVERY.as_secs() + 10) as f64;
/// Runs at least this long judge RSS; shorter ones show it (memory settles over minutes).
pub const RSS_JUDGED_FROM: Duration = Duration::from_secs(600);
/// Single enqueues: this share of the edge lane's rate, at most [`MAX_SINGLES_PER_S`].
const SINGLE_SHARE: f64 = 0.2;
const MAX_SINGLES_PER_S: f64 = 20.0;
/// Every tenth native job carries an idempotency key.
const KEYED_EVERY: u64 = 10;
/// The loader's tick; what falls due is sent each tick, at most 2 s of it (a slow stack is
/// not buried under a burst).
const TICK: Duration = Duration::from_millis(200);
/// Latency samples: one job per loader thread per this interval.
const LATENCY_SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples waiting to be read, at most: the oldest beyond it are dropped unread (counted),
/// so reads that fall behind never reach only jobs retention has deleted.
const MAX_WAITING_SAMPLES: usize = 24;
/// Time the latency reads may take per sample.
const READ_BUDGET: Duration = Duration::from_millis(1500);
/// States of a finished job (kept until retention deletes it).
const FINISHED: &[&str] = &["completed", "dead", "cancelled"];
/// Minutes a shard keeps of its per-minute series (`edgejobs_core::stats::MINUTES_KEPT`).
const MINUTES_KEPT: u64 = edgejobs_core::stats::MINUTES_KEPT;

/// The Worker vars a soak stack runs with: finished jobs go after [`RETENTION_AGE_S`]
/// whatever their number (keep 0), keys after [`IDEMPOTENCY_WINDOW_S`]; empty without `--soak`.
pub fn vars(soak: Option<Duration>) -> Vec<(String, String)> {
    if soak.is_none() {
        return Vec::new();
    }
    let age = format!("{RETENTION_AGE_S}s");
    [
        ("RETENTION_COMPLETED_AGE", age.as_str()),
        ("RETENTION_COMPLETED_KEEP", "0"),
        ("RETENTION_DEAD_AGE", age.as_str()),
        ("RETENTION_DEAD_KEEP", "0"),
        ("IDEMPOTENCY_WINDOW", &format!("{IDEMPOTENCY_WINDOW_S}s")),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A project root of the soak's own under `state_dir`: the Worker's build copied (a rebuild
/// of the shared tree's Worker, which `wrangler dev` would reload mid-run, does not reach
/// the soak), wrangler.toml copied, node_modules and the target directory linked.
pub fn private_root(root: &Path, state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("root");
    let build = dir.join("functions/edge/build");
    std::fs::create_dir_all(build.join("worker"))?;
    for f in ["index.js", "index_bg.wasm", "package.json", "worker/shim.mjs"] {
        let from = root.join("functions/edge/build").join(f);
        std::fs::copy(&from, build.join(f))
            .with_context(|| format!("copying {} (build the Worker first)", from.display()))?;
    }
    let wasm = std::fs::read(build.join("index_bg.wasm"))?;
    if !wasm.starts_with(b"\0asm") {
        bail!("the Worker's wasm is not whole (a build in progress?): build it again and rerun");
    }
    std::fs::copy(root.join("wrangler.toml"), dir.join("wrangler.toml"))?;
    for link in ["node_modules", "target"] {
        let to = dir.join(link);
        if !to.exists() {
            std::os::unix::fs::symlink(root.join(link), &to)?;
        }
    }
    Ok(dir)
}

// ---------------------------------------------------------------------------------------
// The judgement: pure, unit-tested.
// ---------------------------------------------------------------------------------------

/// How a series is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Must reach a plateau: after `warmup_s` (and the first third of the run), growth is a
    /// rise of the thirds' medians by more than `min_rise` and `min_rise_frac` of the level.
    Plateau { warmup_s: f64, min_rise: f64, min_rise_frac: f64 },
    /// Must stay at or below a known bound at every sample.
    AtMost(f64),
    /// Shown, not judged (its bound is beyond the run, e.g. keys with a 7-day TTL).
    Shown,
}

/// What [`judge`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Too few samples after the warm-up to tell (not a failure; the run was too short).
    TooShort {
        points: usize,
    },
    /// Bounded: the medians of the judged part's thirds, and its slope per minute.
    Bounded {
        medians: [f64; 3],
        per_min: f64,
    },
    /// Grows: the same figures.
    Grows {
        medians: [f64; 3],
        per_min: f64,
    },
    /// Over its bound at some sample.
    OverBound {
        max: f64,
        bound: f64,
    },
    WithinBound {
        max: f64,
        bound: f64,
    },
    Shown {
        first: f64,
        last: f64,
        per_min: f64,
    },
}

impl Verdict {
    pub fn is_leak(&self) -> bool {
        matches!(self, Verdict::Grows { .. } | Verdict::OverBound { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Verdict::TooShort { points } => format!("not judged: {points} samples after the warm-up"),
            Verdict::Bounded { medians: [a, b, c], per_min } => {
                format!("bounded (thirds {} → {} → {}, {per_min:+.1}/min)", short(*a), short(*b), short(*c))
            }
            Verdict::Grows { medians: [a, b, c], per_min } => {
                format!("GROWS (thirds {} → {} → {}, {per_min:+.1}/min)", short(*a), short(*b), short(*c))
            }
            Verdict::OverBound { max, bound } => format!("OVER ITS BOUND ({} > {})", short(*max), short(*bound)),
            Verdict::WithinBound { max, bound } => format!("within its bound ({} ≤ {})", short(*max), short(*bound)),
            Verdict::Shown { first, last, per_min } => {
                format!("shown, not judged ({} → {}, {per_min:+.1}/min)", short(*first), short(*last))
            }
        }
    }
}

fn short(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x.abs() >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Least-squares slope of (t seconds, value), per minute; 0 for fewer than two points.
fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mt, mv) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let num: f64 = points.iter().map(|(t, v)| (t - mt) * (v - mv)).sum();
    let den: f64 = points.iter().map(|(t, _)| (t - mt) * (t - mt)).sum();
    if den == 0.0 { 0.0 } else { num / den * 60.0 }
}

/// A rise must exceed this many times the series' spread around its thirds' medians: a
/// steady growth rises about 8 times its spread, noise seldom 3 times.
const NOISE_FACTOR: f64 = 3.0;

/// Judges one series of (seconds since the start, value) samples, in time order.
pub fn judge(points: &[(f64, f64)], rule: Rule) -> Verdict {
    let points: Vec<(f64, f64)> = points.iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    match rule {
        Rule::Shown => Verdict::Shown {
            first: points.first().map_or(0.0, |p| p.1),
            last: points.last().map_or(0.0, |p| p.1),
            per_min: slope_per_min(&points),
        },
        Rule::AtMost(bound) => {
            let max = points.iter().map(|p| p.1).fold(0.0, f64::max);
            if max > bound { Verdict::OverBound { max, bound } } else { Verdict::WithinBound { max, bound } }
        }
        Rule::Plateau { warmup_s, min_rise, min_rise_frac } => {
            let (Some(first), Some(last)) = (points.first(), points.last()) else {
                return Verdict::TooShort { points: 0 };
            };
            let from = (first.0 + (last.0 - first.0) / 3.0).max(warmup_s);
            let w: Vec<(f64, f64)> = points.iter().copied().filter(|(t, _)| *t >= from).collect();
            if w.len() < 6 {
                return Verdict::TooShort { points: w.len() };
            }
            let third = w.len() / 3;
            let parts = [&w[..third], &w[third..w.len() - third], &w[w.len() - third..]];
            let values = |p: &[(f64, f64)]| p.iter().map(|x| x.1).collect::<Vec<f64>>();
            let medians = [median(&values(parts[0])), median(&values(parts[1])), median(&values(parts[2]))];
            let max_of = |p: &[(f64, f64)]| p.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
            let per_min = slope_per_min(&w);
            let rise = medians[2] - medians[0];
            let tolerance = min_rise.max(min_rise_frac * medians[0].abs());
            // The noise: how far samples lie from their own third's median (pooled median).
            let deviations: Vec<f64> =
                parts.iter().zip(medians).flat_map(|(p, m)| p.iter().map(move |x| (x.1 - m).abs())).collect();
            let spread = median(&deviations);
            // Still rising at the end: a step that then holds (a cache filled, a busy machine
            // freed) rises between the first thirds only.
            let grows = medians[0] < medians[1]
                && medians[1] < medians[2]
                && medians[2] - medians[1] >= 0.25 * rise
                && rise > tolerance
                && rise > NOISE_FACTOR * spread
                && max_of(parts[2]) > max_of(parts[0]).max(max_of(parts[1]));
            if grows { Verdict::Grows { medians, per_min } } else { Verdict::Bounded { medians, per_min } }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Samples.
// ---------------------------------------------------------------------------------------

/// Rows of one Durable Object's SQLite file.
#[derive(Debug, Clone, Default)]
struct ObjectRows {
    /// `shard-N`, `stats`, …: the object's name as miniflare records it.
    name: String,
    /// Rows per table (the platform's own `_cf_*` and miniflare's tables left out).
    tables: BTreeMap<String, u64>,
    /// Jobs by state.
    states: BTreeMap<String, u64>,
    /// Distinct series of the per-minute table.
    minute_series: u64,
    /// `updated_at` (ms) of the oldest finished job, if any: retention deletes by it.
    oldest_finished_ms: Option<u64>,
}

fn sqlite(file: &Path, sql: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("sqlite3")
        .args(["-readonly", "-cmd", ".timeout 2000"])
        .arg(file)
        .arg(sql)
        .output()
        .context("running sqlite3 (scripts/setup installs it)")?;
    if !out.status.success() {
        bail!("sqlite3 {}: {}", file.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The row-count query of each SQLite file, built once from its tables.
type Queries = BTreeMap<PathBuf, String>;

/// Every Durable Object's rows, from the SQLite files wrangler keeps under the state dir.
fn object_rows(dir: &Path, queries: &mut Queries) -> Vec<ObjectRows> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "sqlite") && p.file_name().is_some_and(|n| n != "metadata.sqlite")
        })
        .collect();
    files.sort();
    files.iter().filter_map(|f| read_object(f, queries).ok()).collect()
}

fn read_object(file: &Path, queries: &mut Queries) -> anyhow::Result<ObjectRows> {
    let mut o = ObjectRows::default();
    let query = match queries.get(file) {
        Some(q) => q.clone(),
        None => {
            let q = rows_query(file)?;
            // A file whose tables do not exist yet is asked again next time.
            if q.is_empty() {
                return Ok(o);
            }
            queries.insert(file.to_owned(), q.clone());
            q
        }
    };
    parse_rows(&mut o, &sqlite(file, &query)?);
    Ok(o)
}

/// One query that counts the rows of every table of `file` (and its jobs by state).
fn rows_query(file: &Path) -> anyhow::Result<String> {
    let tables = sqlite(
        file,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_cf_%'",
    )?;
    let tables: Vec<&str> = tables.lines().map(str::trim).filter(|t| !t.is_empty()).collect();
    let mut parts: Vec<String> = tables
        .iter()
        .filter(|t| **t != "__miniflare_do_name" && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|t| format!("SELECT 'table', '{t}', count(*) FROM \"{t}\""))
        .collect();
    if parts.is_empty() {
        return Ok(String::new());
    }
    if tables.contains(&"jobs") {
        parts.push("SELECT 'state', state, count(*) FROM jobs GROUP BY state".into());
        let finished = FINISHED.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
        parts.push(format!("SELECT 'oldest', '', coalesce(min(updated_at), 0) FROM jobs WHERE state IN ({finished})"));
    }
    if tables.contains(&"minutes") {
        parts.push("SELECT 'series', '', count(DISTINCT series) FROM minutes".into());
    }
    if tables.contains(&"__miniflare_do_name") {
        parts.push("SELECT 'name', name, 0 FROM __miniflare_do_name".into());
    }
    Ok(parts.join(" UNION ALL "))
}

/// Reads what the row-count query answered (`kind|key|count` lines).
fn parse_rows(o: &mut ObjectRows, text: &str) {
    for line in text.lines() {
        let mut f = line.splitn(3, '|');
        let (Some(kind), Some(key), Some(n)) = (f.next(), f.next(), f.next()) else { continue };
        let n: u64 = n.trim().parse().unwrap_or(0);
        match kind {
            "table" => {
                o.tables.insert(key.to_owned(), n);
            }
            "state" => {
                o.states.insert(key.to_owned(), n);
            }
            "series" => o.minute_series = n,
            "oldest" => o.oldest_finished_ms = (n > 0).then_some(n),
            "name" => o.name = key.to_owned(),
            _ => {}
        }
    }
}

/// One sample of every series.
#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    /// Jobs rows of each shard, by shard name.
    jobs_by_shard: BTreeMap<String, u64>,
    finished_rows: u64,
    backlog_rows: u64,
    idempotency_rows: u64,
    /// Age in seconds of the oldest finished job of any shard (0 without one).
    oldest_finished_s: f64,
    /// Per-minute rows beyond `series × (MINUTES_KEPT + 2)`, summed over the objects.
    minutes_over: u64,
    other_rows: u64,
    objects: usize,
    xlen: Option<f64>,
    pending: Option<f64>,
    redis_keys: Option<f64>,
    rss_workerd: Option<f64>,
    rss_consumer: Option<f64>,
    completed: Option<f64>,
    dead: Option<f64>,
    upstash_edge: Option<f64>,
    /// Queued jobs the sweep re-sent (it takes a job queued too long for a lost message).
    sweep_resent: Option<f64>,
    upstash_consumer: Option<f64>,
    redis_commands: Option<f64>,
}

impl Sample {
    fn max_shard(&self) -> u64 {
        self.jobs_by_shard.values().copied().max().unwrap_or(0)
    }
    fn min_shard(&self) -> u64 {
        self.jobs_by_shard.values().copied().min().unwrap_or(0)
    }
}

/// Current resident set (`VmRSS`) of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn take_sample(b: &mut Bench, queries: &mut Queries, consumer: usize, t: f64) -> anyhow::Result<Sample> {
    let mut s = Sample { t, ..Sample::default() };
    let dir = b.stack.opts.state_dir.join("wrangler/v3/do/edgejobs-JobShard");
    let objects = object_rows(&dir, queries);
    s.objects = objects.len();
    for o in &objects {
        for (table, n) in &o.tables {
            match table.as_str() {
                "jobs" => {}
                "idempotency" => s.idempotency_rows += n,
                "minutes" => {
                    s.minutes_over += n.saturating_sub(o.minute_series * (MINUTES_KEPT + 2));
                }
                _ => s.other_rows += n,
            }
        }
        // Shards only (the stats object holds no jobs).
        if let Some(n) = o.tables.get("jobs").filter(|_| o.name.starts_with("shard-")) {
            *s.jobs_by_shard.entry(o.name.clone()).or_default() += n;
        }
        if let Some(ms) = o.oldest_finished_ms {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let age = now.saturating_sub(ms) as f64 / 1000.0;
            s.oldest_finished_s = s.oldest_finished_s.max(age);
        }
        for (state, n) in &o.states {
            if FINISHED.contains(&state.as_str()) {
                s.finished_rows += n;
            } else {
                s.backlog_rows += n;
            }
        }
    }
    s.xlen = b.upstash(&["XLEN", STREAM_KEY]).ok().and_then(|v| v.as_f64());
    s.pending = match b.upstash(&["XPENDING", STREAM_KEY, STREAM_GROUP]) {
        Ok(v) => v.get(0).and_then(Value::as_f64),
        Err(e) if e.to_string().contains("NOGROUP") => Some(0.0),
        Err(_) => None,
    };
    s.redis_keys = b.upstash(&["DBSIZE"]).ok().and_then(|v| v.as_f64());
    for (component, p) in stack_processes(&b.roots()) {
        let bytes = rss(p.pid).map(|x| x as f64);
        if component == WORKERD_WORKER {
            s.rss_workerd = bytes;
        } else if component == "consumer" {
            s.rss_consumer = bytes;
        }
    }
    b.sample_rss();
    let edge = b.edge_metrics()?;
    s.completed = edge.sum("edgejobs_jobs_completed_total");
    s.dead = edge.sum("edgejobs_jobs_dead_total");
    s.upstash_edge = edge.sum("edgejobs_upstash_commands_total");
    s.sweep_resent = edge.sum("edgejobs_sweep_resent_total");
    s.upstash_consumer = b.consumer_metrics(consumer).and_then(|p| p.sum("edgejobs_consumer_upstash_commands_total"));
    s.redis_commands = b.redis_commands();
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// The load.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Plan {
    edge_per_s: f64,
    native_per_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LaneKind {
    Edge,
    Native,
}

#[derive(Debug, Default)]
struct LoadStats {
    edge_created: u64,
    native_created: u64,
    singles: u64,
    batches: u64,
    keyed: u64,
    failing: u64,
    failed_requests: u64,
    failed_items: u64,
    /// Jobs due but not sent because the loader fell more than 2 s behind.
    skipped: u64,
    first_error: Option<String>,
    /// Jobs to read back for latency: (lane, id, when enqueued).
    samples: Vec<(LaneKind, String, Instant)>,
}

struct Loader<'a> {
    http: reqwest::blocking::Client,
    edge: String,
    key: String,
    stop: &'a AtomicBool,
    stats: &'a Mutex<LoadStats>,
}

impl Loader<'_> {
    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        let r = self
            .http
            .post(format!("{}{path}", self.edge))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("{path}: {status} {}", r.text().unwrap_or_default()));
        }
        r.json::<Value>().map_err(|e| format!("{path}: {e}"))
    }

    fn note_error(&self, e: String) {
        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        s.failed_requests += 1;
        s.first_error.get_or_insert(e);
    }

    /// One batch of `specs` on `lane`; the first created job is a latency sample when `sample`.
    fn batch(&self, lane: LaneKind, specs: Vec<Value>, sample: bool) {
        let n = specs.len();
        match self.post("/v1/jobs/batch", &json!({ "jobs": specs })) {
            Ok(v) => {
                let items = v["results"].as_array().cloned().unwrap_or_default();
                let ids: Vec<String> =
                    items.iter().filter_map(|i| i["job"]["id"].as_str().map(str::to_owned)).collect();
                let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                s.batches += 1;
                match lane {
                    LaneKind::Edge => s.edge_created += ids.len() as u64,
                    LaneKind::Native => s.native_created += ids.len() as u64,
                }
                if ids.len() < n {
                    s.failed_items += (n - ids.len()) as u64;
                    let bad = items.iter().find(|i| i.get("error").is_some());
                    s.first_error.get_or_insert(format!("batch item: {bad:?}"));
                }
                if sample && let Some(id) = ids.first() {
                    s.samples.push((lane, id.clone(), Instant::now()));
                }
            }
            Err(e) => self.note_error(e),
        }
    }

    fn single(&self, lane: LaneKind, spec: &Value, sample: bool) {
        match self.post("/v1/jobs", spec) {
            Ok(v) => {
                let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                s.singles += 1;
                match lane {
                    LaneKind::Edge => s.edge_created += 1,
                    LaneKind::Native => s.native_created += 1,
                }
                if sample && let Some(id) = v["id"].as_str() {
                    s.samples.push((lane, id.to_owned(), Instant::now()));
                }
            }
            Err(e) => self.note_error(e),
        }
    }

    /// One stream of the load at `rate` jobs/s until stopped: what falls due is sent each
    /// [`TICK`], at most 2 s of it (the rest is skipped and counted).
    fn run(&self, part: Part, rate: f64) {
        let t0 = Instant::now();
        let (mut sent, mut failing, mut n) = (0.0f64, 0u64, 0u64);
        let mut last_sample = t0;
        let noop = json!({ "type": "noop" });
        while !self.stop.load(Ordering::Relaxed) && !INTERRUPTED.load(Ordering::Relaxed) {
            let tick = Instant::now();
            let el = t0.elapsed().as_secs_f64();
            let want = rate * el - sent;
            let cap = (rate * 2.0).max(1.0);
            if want > cap {
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).skipped += (want - cap) as u64;
                sent += want - cap;
            }
            let mut due = (rate * el - sent).floor().max(0.0) as usize;
            sent += due as f64;
            let sample = due > 0 && last_sample.elapsed() >= LATENCY_SAMPLE_EVERY;
            if sample {
                last_sample = Instant::now();
            }
            let mut first = true;
            while due > 0 {
                let k = if part == Part::Singles { 1 } else { due.min(BATCH) };
                match part {
                    Part::Singles => self.single(LaneKind::Edge, &noop, sample && first),
                    Part::EdgeBatches => self.batch(LaneKind::Edge, vec![noop.clone(); k], sample && first),
                    Part::Native => {
                        let specs: Vec<Value> = (0..k)
                            .map(|_| {
                                n += 1;
                                let mut spec = json!({ "type": "sleep", "payload": { "ms": NATIVE_MS } });
                                if n % KEYED_EVERY == 0 {
                                    spec["idempotency_key"] = json!(format!("soak-{n}"));
                                }
                                spec
                            })
                            .collect();
                        let keyed = specs.iter().filter(|s| s.get("idempotency_key").is_some()).count() as u64;
                        self.stats.lock().unwrap_or_else(|p| p.into_inner()).keyed += keyed;
                        self.batch(LaneKind::Native, specs, sample && first);
                    }
                }
                first = false;
                due -= k;
            }
            if part == Part::Native && el >= (failing as f64) * FAIL_EVERY.as_secs_f64() {
                failing += 1;
                let spec = json!({
                    "type": "sleep",
                    "payload": { "ms": NATIVE_MS, "fail": "retryable" },
                    "max_attempts": 2,
                    "backoff": { "base": "200ms", "factor": 1, "cap": "200ms" },
                });
                self.single(LaneKind::Native, &spec, false);
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).failing += 1;
            }
            std::thread::sleep(TICK.saturating_sub(tick.elapsed()));
        }
    }
}

/// The streams of the load, each on its own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `POST /v1/jobs`, edge lane.
    Singles,
    /// `POST /v1/jobs/batch`, edge lane (two threads share its rate).
    EdgeBatches,
    /// `POST /v1/jobs/batch`, native lane (one in ten keyed), and the failing jobs.
    Native,
}

impl Plan {
    /// (part, jobs/s) per loader thread.
    fn parts(&self) -> Vec<(Part, f64)> {
        let singles = (self.edge_per_s * SINGLE_SHARE).min(MAX_SINGLES_PER_S);
        let batches = (self.edge_per_s - singles) / 2.0;
        vec![
            (Part::Singles, singles),
            (Part::EdgeBatches, batches),
            (Part::EdgeBatches, batches),
            (Part::Native, self.native_per_s),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------

/// Per-minute latency samples (enqueue-to-start, ms) by lane.
type MinuteLatency = BTreeMap<(u64, LaneKind), Vec<f64>>;

/// The probe, the load, the samples, the verdict. Returns the soak's JSON (with `"leak"`).
pub fn run(b: &mut Bench, duration: Duration) -> anyhow::Result<Value> {
    let short_run = duration < Duration::from_secs(300);
    // 1. Capacity: each lane alone, end to end (the bench's own lane run).
    let edge_jobs = if short_run { 1_000 } else { 3_000 };
    say(format!("soak: probing the edge lane's capacity ({edge_jobs} noop jobs)"));
    let edge_probe = b.lane(json!({ "type": "noop" }), edge_jobs, None)?;
    let consumer = b.stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", CONSUMER_CONCURRENCY)])?;
    let native_jobs = if short_run { 400 } else { 1_000 };
    say(format!("soak: probing the native lane's capacity ({native_jobs} sleep jobs of {NATIVE_MS} ms, one consumer)"));
    let native_probe =
        b.lane(json!({ "type": "sleep", "payload": { "ms": NATIVE_MS } }), native_jobs, Some(consumer))?;
    let (Some(edge_cap), Some(native_cap)) = (edge_probe.jobs_per_s(), native_probe.jobs_per_s()) else {
        bail!("the capacity probe measured nothing (edge {edge_probe:?}, native {native_probe:?})");
    };
    if !edge_probe.reached || !native_probe.reached {
        bail!("the capacity probe's jobs did not all complete: the stack does not work, a soak would say nothing");
    }
    let plan = Plan {
        edge_per_s: LOAD_FRACTION * EDGE_SHARE * edge_cap,
        native_per_s: LOAD_FRACTION * (1.0 - EDGE_SHARE) * native_cap,
    };
    say(format!(
        "soak: capacity {edge_cap:.0} edge jobs/s, {native_cap:.0} native jobs/s; holding {:.0} edge + {:.0} native \
         jobs/s ({:.0} % of each lane's capacity) for {} s, sampling every {} s, retention every {} s",
        plan.edge_per_s,
        plan.native_per_s,
        LOAD_FRACTION * 100.0,
        duration.as_secs(),
        sample_every(duration).as_secs(),
        RETENTION_EVERY.as_secs()
    ));

    // 2. Schedules, created now and deleted at the end.
    let schedules = [
        ("soak-every-second", "* * * * * *", json!({ "type": "noop" })),
        ("soak-every-minute", "* * * * *", json!({ "type": "sleep", "payload": { "ms": NATIVE_MS } })),
    ];
    for (name, cron, job) in &schedules {
        admin(b, "POST", "/v1/schedules", Some(json!({ "name": name, "cron": cron, "job": job })))?;
    }

    // 3. The load on its own thread; sampling, latency reads and the cron on this one.
    let stop = AtomicBool::new(false);
    let stats = Mutex::new(LoadStats::default());
    let loader = Loader {
        http: b.http.clone(),
        edge: b.stack.edge_url.clone(),
        key: b.stack.secrets.api_key.clone(),
        stop: &stop,
        stats: &stats,
    };
    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut lat: MinuteLatency = BTreeMap::new();
    let mut lat_lost = 0u64;
    let mut lat_dropped = 0u64;
    let cron = Mutex::new(CronStats::default());
    let (http, edge_url) = (b.http.clone(), b.stack.edge_url.clone());
    let mut queries = Queries::new();
    // BENCH_SOAK_CRON=off leaves retention unfired: rows then only grow, and the soak must
    // say so (how its failure is shown by hand).
    let fire_cron = std::env::var("BENCH_SOAK_CRON").map_or(true, |v| v != "off");
    if !fire_cron {
        say("soak: BENCH_SOAK_CRON=off: the retention cron is not fired (this run must find growth)");
    }
    let printer = Printer::new(b.s.json_only, duration);
    let outcome: anyhow::Result<()> = std::thread::scope(|scope| {
        let loader = &loader;
        let mut handles: Vec<_> =
            plan.parts().into_iter().map(|(part, rate)| scope.spawn(move || loader.run(part, rate))).collect();
        // The cron on its own thread, so a slow sample does not delay retention. Fired at
        // once: the probe's jobs are not older than the bound by the first run.
        if fire_cron {
            let (stop, cron, http, edge_url) = (&stop, &cron, &http, &edge_url);
            handles.push(scope.spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && !INTERRUPTED.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        let mut c = CronStats::default();
                        c.fire(http, edge_url);
                        cron.lock().unwrap_or_else(|p| p.into_inner()).add(c);
                        next += RETENTION_EVERY;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        let r = (|| -> anyhow::Result<()> {
            let mut pending: Vec<(LaneKind, String, Instant)> = Vec::new();
            let mut next_sample = t0;
            let mut printed_minutes = 0u64;
            printer.header();
            while t0.elapsed() < duration {
                check_interrupted()?;
                if Instant::now() >= next_sample {
                    let s = take_sample(b, &mut queries, consumer, t0.elapsed().as_secs_f64())?;
                    samples.push(s);
                    next_sample += sample_every(duration);
                    pending.append(&mut stats.lock().unwrap_or_else(|p| p.into_inner()).samples);
                    if pending.len() > MAX_WAITING_SAMPLES {
                        let extra = pending.len() - MAX_WAITING_SAMPLES;
                        lat_dropped += extra as u64;
                        pending.drain(..extra);
                    }
                    lat_lost += read_latencies(b, &mut pending, &mut lat, t0);
                }
                let minute = (t0.elapsed().as_secs_f64() / 60.0) as u64;
                if minute > printed_minutes {
                    printer.minute(printed_minutes, &samples, &lat);
                    printed_minutes = minute;
                }
                nap(Duration::from_millis(200))?;
            }
            // The last (partial) minute, then a closing sample.
            samples.push(take_sample(b, &mut queries, consumer, t0.elapsed().as_secs_f64())?);
            lat_lost += read_latencies(b, &mut pending, &mut lat, t0);
            if printed_minutes * 60 < duration.as_secs() {
                printer.minute(printed_minutes, &samples, &lat);
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        r
    });
    // Schedules go whatever happened.
    for (name, _, _) in &schedules {
        if let Err(e) = admin(b, "DELETE", &format!("/v1/schedules/{name}"), None) {
            say(format!("soak: could not delete schedule {name}: {e:#}"));
        }
    }
    outcome?;
    let load = stats.into_inner().unwrap_or_else(|p| p.into_inner());
    let cron = cron.into_inner().unwrap_or_else(|p| p.into_inner());

    // 4. Drain: once the load stops, every job finishes and the stream empties.
    say("soak: load stopped; waiting until every job is final and the stream is empty (at most 120 s)");
    let drain_t0 = Instant::now();
    let mut drained = None;
    while drain_t0.elapsed() < Duration::from_secs(120) {
        let s = take_sample(b, &mut queries, consumer, t0.elapsed().as_secs_f64())?;
        let done = s.backlog_rows == 0 && s.pending == Some(0.0);
        drained = Some(s);
        if done {
            break;
        }
        nap(Duration::from_secs(2))?;
    }
    let drained = drained.context("no sample after the load")?;
    let drain_s = drain_t0.elapsed().as_secs_f64();

    // 5. The verdict.
    let series = series_of(&samples, plan, duration);
    let mut judged = Vec::new();
    let mut leak = false;
    for (name, unit, rule, points) in series {
        let v = judge(&points, rule);
        leak |= v.is_leak();
        judged.push(Judged { name, unit, verdict: v, points });
    }
    // After the drain: no job left unfinished, and no stream entry left behind.
    let stream_left = drained.xlen.unwrap_or(f64::NAN);
    let pending_left = drained.pending.unwrap_or(f64::NAN);
    let drain_ok = drained.backlog_rows == 0 && stream_left == 0.0 && pending_left == 0.0;
    leak |= !drain_ok;
    let drain_line = format!(
        "after the load: {} unfinished jobs, stream length {}, pending {} (after {drain_s:.0} s)",
        drained.backlog_rows,
        short(stream_left),
        short(pending_left)
    );
    // Whether the stack kept up: what it completed in the run's last third against the load.
    let offered = plan.edge_per_s + plan.native_per_s;
    let tail: Vec<&Sample> = samples.iter().filter(|s| s.t >= duration.as_secs_f64() * 2.0 / 3.0).collect();
    let served = match (tail.first(), tail.last()) {
        (Some(a), Some(z)) if z.t > a.t => z.completed.zip(a.completed).map(|(y, x)| (y - x) / (z.t - a.t)),
        _ => None,
    };
    let load_line = match served {
        Some(x) if x < 0.9 * offered => format!(
            "load: {offered:.0} jobs/s offered, {x:.0} served in the last third: the stack did not keep up, so a \
             backlog that grows is overload (a busy machine?) before it is a leak; see the sweep's re-sends"
        ),
        Some(x) => format!("load: {offered:.0} jobs/s offered, {x:.0} served in the last third"),
        None => format!("load: {offered:.0} jobs/s offered"),
    };
    printer.verdict(&judged, &drain_line, drain_ok, &load_line, leak);

    let minutes: Vec<Value> = minute_rows(&samples, &lat, duration).into_iter().map(|m| m.to_json()).collect();
    Ok(json!({
        "duration_s": duration.as_secs_f64(),
        "leak": leak,
        "offered_jobs_per_s": offered,
        "served_last_third_jobs_per_s": served,
        "probe": {
            "edge_jobs_per_s": edge_cap,
            "native_jobs_per_s": native_cap,
            "edge": edge_probe.to_json(),
            "native": native_probe.to_json(),
        },
        "plan": {
            "load_fraction": LOAD_FRACTION,
            "edge_share": EDGE_SHARE,
            "edge_jobs_per_s": plan.edge_per_s,
            "native_jobs_per_s": plan.native_per_s,
            "native_sleep_ms": NATIVE_MS,
            "consumer_concurrency": CONSUMER_CONCURRENCY,
            "failing_every_s": FAIL_EVERY.as_secs(),
            "schedules": schedules.iter().map(|(n, c, _)| json!({ "name": n, "cron": c })).collect::<Vec<_>>(),
            "stack_vars": vars(b.s.soak).into_iter().collect::<BTreeMap<_, _>>(),
            "sample_every_s": sample_every(duration).as_secs(),
            "retention_every_s": RETENTION_EVERY.as_secs(),
        },
        "load": {
            "edge_created": load.edge_created,
            "native_created": load.native_created,
            "singles": load.singles,
            "batches": load.batches,
            "keyed": load.keyed,
            "failing": load.failing,
            "failed_requests": load.failed_requests,
            "failed_items": load.failed_items,
            "skipped_behind": load.skipped,
            "first_error": load.first_error,
            "latency_samples_lost": lat_lost,
            "latency_samples_dropped_unread": lat_dropped,
        },
        "cron": { "enabled": fire_cron, "fired": cron.fired, "failed": cron.failed, "max_s": cron.max_s, "first_error": cron.first_error },
        "minutes": minutes,
        "series": judged.iter().map(|Judged { name, unit, verdict: v, points }| json!({
            "name": name, "unit": unit, "verdict": v.describe(), "leak": v.is_leak(),
            "points": points.iter().map(|(t, x)| json!([t, x])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "drain": { "ok": drain_ok, "seconds": drain_s, "unfinished": drained.backlog_rows,
                   "stream_length": drained.xlen, "pending": drained.pending },
    }))
}

/// One call with the admin key; an answer other than 2xx is an error.
fn admin(b: &Bench, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let url = format!("{}{path}", b.stack.edge_url);
    let req = match method {
        "POST" => b.http.post(url).json(&body.unwrap_or(json!({}))),
        "DELETE" => b.http.delete(url),
        _ => b.http.get(url),
    };
    let r = req.bearer_auth(&b.stack.secrets.admin_key).send()?;
    let status = r.status();
    let text = r.text().unwrap_or_default();
    if !status.is_success() {
        bail!("{method} {path}: {status} {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[derive(Debug, Default)]
struct CronStats {
    fired: u64,
    failed: u64,
    max_s: f64,
    first_error: Option<String>,
}

impl CronStats {
    fn add(&mut self, o: CronStats) {
        self.fired += o.fired;
        self.failed += o.failed;
        self.max_s = self.max_s.max(o.max_s);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    /// Fires the 5-minute cron (retention, idempotency cleanup, sweep) through wrangler.
    fn fire(&mut self, http: &reqwest::blocking::Client, edge_url: &str) {
        let t = Instant::now();
        let r = http.get(format!("{edge_url}/__scheduled?cron=*/5+*+*+*+*")).send();
        self.fired += 1;
        self.max_s = self.max_s.max(t.elapsed().as_secs_f64());
        match r {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                self.failed += 1;
                self.first_error.get_or_insert(format!("/__scheduled: {}", r.status()));
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e.to_string());
            }
        }
    }
}

/// Reads back the sampled jobs that have had time to run: their enqueue-to-start goes into
/// their minute. A job still running is read again next time (up to 60 s); one deleted or
/// failed is counted as lost. Returns how many were lost this time.
fn read_latencies(
    b: &Bench,
    pending: &mut Vec<(LaneKind, String, Instant)>,
    lat: &mut MinuteLatency,
    t0: Instant,
) -> u64 {
    let mut lost = 0;
    let mut keep = Vec::new();
    let began = Instant::now();
    for (lane, id, at) in pending.drain(..) {
        // At most READ_BUDGET per call, the oldest first: an overloaded Worker answers slowly,
        // and the samples must go on (what is left waits; past 60 s it is lost).
        let waited = at.elapsed();
        if waited < Duration::from_secs(2) || began.elapsed() >= READ_BUDGET || INTERRUPTED.load(Ordering::Relaxed) {
            if waited < Duration::from_secs(60) {
                keep.push((lane, id, at));
            } else {
                lost += 1;
            }
            continue;
        }
        let r = b
            .http
            .get(format!("{}/v1/jobs/{id}", b.stack.edge_url))
            .bearer_auth(&b.stack.secrets.api_key)
            .timeout(Duration::from_secs(5))
            .send();
        let job =
            r.ok().filter(|r| r.status().is_success()).and_then(|r| r.text().ok()).and_then(|t| parse_job(&t).ok());
        match job {
            Some(j) => match job_latency(&j) {
                Some(l) => {
                    let minute = (at.duration_since(t0).as_secs_f64() / 60.0) as u64;
                    lat.entry((minute, lane)).or_default().push(l.to_start_ms);
                }
                None if !matches!(j.state.as_str(), "dead" | "cancelled") && at.elapsed() < Duration::from_secs(60) => {
                    keep.push((lane, id, at))
                }
                None => lost += 1,
            },
            None => lost += 1,
        }
    }
    *pending = keep;
    lost
}

/// Every series the soak judges or shows: (name, unit, rule, points).
/// A series: (name, unit, rule, points of (seconds, value)).
type Series = (String, &'static str, Rule, Vec<(f64, f64)>);

/// A series and what [`judge`] found.
struct Judged {
    name: String,
    unit: &'static str,
    verdict: Verdict,
    points: Vec<(f64, f64)>,
}

fn series_of(samples: &[Sample], plan: Plan, run: Duration) -> Vec<Series> {
    // The first minute (or third of the run) is the ramp to the plateau.
    let warm = (RETENTION_AGE_S + RETENTION_EVERY.as_secs() + 10) as f64;
    let plateau = |min_rise: f64, frac: f64| Rule::Plateau { warmup_s: warm, min_rise, min_rise_frac: frac };
    let rate = plan.edge_per_s + plan.native_per_s;
    let pts = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples.iter().filter_map(|s| f(s).map(|v| (s.t, v))).collect()
    };
    // Counters as rates per second between consecutive samples.
    let per_s = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (f(&w[0])?, f(&w[1])?);
                let dt = w[1].t - w[0].t;
                (dt > 0.0).then(|| (w[1].t, (b - a).max(0.0) / dt))
            })
            .collect()
    };
    let mib = 1024.0 * 1024.0;
    // Memory settles over minutes (heaps, SQLite page caches): judged from 10-minute runs.
    let memory = |min_rise: f64, frac: f64| {
        if run >= RSS_JUDGED_FROM { plateau(min_rise, frac) } else { Rule::Shown }
    };
    vec![
        (
            "finished jobs rows, all shards".into(),
            "rows",
            // Their level follows the throughput, which a shared machine moves by half.
            plateau(50.0, 0.5),
            pts(&|s| Some(s.finished_rows as f64)),
        ),
        (
            "unfinished jobs rows (backlog), all shards".into(),
            "rows",
            plateau((rate * 10.0).max(50.0), 0.25),
            pts(&|s| Some(s.backlog_rows as f64)),
        ),
        (
            "age of the oldest finished job, any shard".into(),
            "s",
            Rule::AtMost(OLDEST_FINISHED_BOUND_S),
            pts(&|s| Some(s.oldest_finished_s)),
        ),
        (
            "jobs rows, largest shard".into(),
            "rows",
            // The largest of 16 uneven shards is a noisy figure: judged from 10-minute runs.
            if run >= RSS_JUDGED_FROM { plateau(100.0, 0.5) } else { Rule::Shown },
            pts(&|s| Some(s.max_shard() as f64)),
        ),
        ("idempotency rows, all shards".into(), "rows", plateau(20.0, 0.25), pts(&|s| Some(s.idempotency_rows as f64))),
        (
            format!("per-minute rows beyond {} minutes per series", MINUTES_KEPT + 2),
            "rows",
            Rule::AtMost(0.0),
            pts(&|s| Some(s.minutes_over as f64)),
        ),
        (
            "other rows (counters, histograms, gauges, schedules, meta)".into(),
            "rows",
            plateau(50.0, 0.25),
            pts(&|s| Some(s.other_rows as f64)),
        ),
        ("stream length (XLEN)".into(), "entries", plateau(50.0, 0.5), pts(&|s| s.xlen)),
        ("stream pending entries (XPENDING)".into(), "entries", plateau(50.0, 0.5), pts(&|s| s.pending)),
        ("RSS of workerd (the Worker)".into(), "MiB", memory(16.0, 0.10), pts(&|s| s.rss_workerd.map(|x| x / mib))),
        ("RSS of the consumer".into(), "MiB", memory(8.0, 0.15), pts(&|s| s.rss_consumer.map(|x| x / mib))),
        (
            "Upstash commands per second (edge + consumer)".into(),
            "commands/s",
            plateau(5.0, 0.25),
            per_s(&|s| Some(s.upstash_edge? + s.upstash_consumer?)),
        ),
        ("redis-server commands per second".into(), "commands/s", plateau(5.0, 0.25), per_s(&|s| s.redis_commands)),
        ("Redis keys (DBSIZE; native hand-off keys live 7 days)".into(), "keys", Rule::Shown, pts(&|s| s.redis_keys)),
        ("jobs completed per second".into(), "jobs/s", Rule::Shown, per_s(&|s| s.completed)),
        ("queued jobs the sweep re-sent per second".into(), "jobs/s", Rule::Shown, per_s(&|s| s.sweep_resent)),
    ]
}

/// One printed minute.
#[derive(Debug, Clone)]
struct MinuteRow {
    minute: u64,
    completed: Option<f64>,
    dead: Option<f64>,
    edge: Option<Percentiles>,
    native: Option<Percentiles>,
    last: Sample,
    upstash: Option<f64>,
    redis: Option<f64>,
    resent: Option<f64>,
}

impl MinuteRow {
    fn to_json(&self) -> Value {
        let s = &self.last;
        json!({
            "minute": self.minute + 1,
            "completed": self.completed,
            "sweep_resent": self.resent,
            "dead": self.dead,
            "edge_to_start_ms": self.edge.map(|p| p.to_json()),
            "native_to_start_ms": self.native.map(|p| p.to_json()),
            "rss_workerd_bytes": s.rss_workerd,
            "rss_consumer_bytes": s.rss_consumer,
            "jobs_rows_by_shard": s.jobs_by_shard,
            "finished_rows": s.finished_rows,
            "backlog_rows": s.backlog_rows,
            "idempotency_rows": s.idempotency_rows,
            "other_rows": s.other_rows,
            "stream_length": s.xlen,
            "stream_pending": s.pending,
            "redis_keys": s.redis_keys,
            "upstash_commands": self.upstash,
            "redis_commands": self.redis,
        })
    }
}

/// Per-minute figures: counters' change over the minute, the minute's last sample.
fn minute_rows(samples: &[Sample], lat: &MinuteLatency, run: Duration) -> Vec<MinuteRow> {
    let minutes = (run.as_secs_f64() / 60.0).ceil().max(1.0) as u64;
    let mut out = Vec::new();
    for m in 0..minutes {
        // The last minute takes the closing sample too.
        let from = m as f64 * 60.0;
        let to = if m + 1 == minutes { f64::INFINITY } else { (m + 1) as f64 * 60.0 };
        let before = samples.iter().rev().find(|s| s.t <= from + 1e-9).or(samples.first());
        let Some(end) = samples.iter().rev().find(|s| s.t <= to + 1e-9 && s.t > from) else { continue };
        let Some(start) = before else { continue };
        let d = |f: &dyn Fn(&Sample) -> Option<f64>| Some(f(end)? - f(start)?);
        let pct = |lane| lat.get(&(m, lane)).and_then(|v| Percentiles::of(&mut v.clone()));
        out.push(MinuteRow {
            minute: m,
            completed: d(&|s| s.completed),
            dead: d(&|s| s.dead),
            edge: pct(LaneKind::Edge),
            native: pct(LaneKind::Native),
            last: end.clone(),
            upstash: d(&|s| Some(s.upstash_edge? + s.upstash_consumer?)),
            redis: d(&|s| s.redis_commands),
            resent: d(&|s| s.sweep_resent),
        });
    }
    out
}

/// Prints the soak's lines on stdout (stderr with `--json-only`).
struct Printer {
    to_stderr: bool,
    run: Duration,
}

impl Printer {
    fn new(to_stderr: bool, run: Duration) -> Printer {
        Printer { to_stderr, run }
    }

    fn line(&self, s: &str) {
        if self.to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }

    fn header(&self) {
        self.line("");
        self.line(
            "min | done/min | dead | edge to start p50/p99 ms | native p50/p99 ms | RSS workerd/consumer MiB | \
             jobs rows/shard min–max (finished+backlog) | idem rows | stream len/pending | redis keys | \
             Upstash cmds/min | redis cmds/min",
        );
    }

    fn minute(&self, m: u64, samples: &[Sample], lat: &MinuteLatency) {
        let Some(r) = minute_rows(samples, lat, self.run).into_iter().find(|r| r.minute == m) else { return };
        let p =
            |x: Option<Percentiles>| x.map_or("—".to_owned(), |p| format!("{:.0}/{:.0} (n={})", p.p50, p.p99, p.n));
        let o = |x: Option<f64>| x.map_or("—".to_owned(), short);
        let mib = |x: Option<f64>| x.map_or("—".to_owned(), |b| format!("{:.0}", b / 1024.0 / 1024.0));
        let s = &r.last;
        self.line(&format!(
            "{:>3} | {:>8} | {:>4} | {:>24} | {:>17} | {:>5}/{:<5} | {}–{} ({}+{}) | {} | {}/{} | {} | {} | {}",
            m + 1,
            o(r.completed),
            o(r.dead),
            p(r.edge),
            p(r.native),
            mib(s.rss_workerd),
            mib(s.rss_consumer),
            s.min_shard(),
            s.max_shard(),
            s.finished_rows,
            s.backlog_rows,
            s.idempotency_rows,
            o(s.xlen),
            o(s.pending),
            o(s.redis_keys),
            o(r.upstash),
            o(r.redis),
        ));
    }

    fn verdict(&self, judged: &[Judged], drain: &str, drain_ok: bool, load: &str, leak: bool) {
        self.line("");
        self.line("soak verdict, per series (judged after the warm-up; see tests/src/bin/bench/soak.rs):");
        for Judged { name, unit, verdict: v, .. } in judged {
            let mark = if v.is_leak() { "LEAK" } else { "ok" };
            self.line(&format!("  {mark:<4} {name} [{unit}]: {}", v.describe()));
        }
        self.line(&format!("  {:<4} {drain}", if drain_ok { "ok" } else { "LEAK" }));
        self.line(&format!("  {load}"));
        self.line(if leak {
            "soak: something grew without bound (see LEAK above)"
        } else {
            "soak: nothing grew without bound"
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule::Plateau { warmup_s: 45.0, min_rise: 50.0, min_rise_frac: 0.25 };

    /// A seeded generator (xorshift), so the noise is the same in every run.
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed % 10_000) as f64 / 10_000.0 - 0.5
    }

    /// Samples of `f` over `secs`, as often as a soak that long takes them.
    fn series(secs: u64, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        let dt = sample_every(Duration::from_secs(secs)).as_secs();
        (0..=secs / dt).map(|i| (i as f64 * dt as f64, f(i as f64 * dt as f64))).collect()
    }

    #[test]
    fn a_plateau_passes_and_a_series_that_only_grows_fails() {
        // Rows under retention: a ramp to ~rate × age, then a sawtooth as the cron deletes.
        let plateau = series(120, |t| if t < 35.0 { 30.0 * t } else { 1000.0 + 10.0 * (t % 15.0) });
        assert!(matches!(judge(&plateau, RULE), Verdict::Bounded { .. }), "{:?}", judge(&plateau, RULE));
        // A stream that is never trimmed: every entry stays.
        let never_trimmed = series(120, |t| 30.0 * t);
        let v = judge(&never_trimmed, RULE);
        assert!(v.is_leak(), "{v:?}");
        let Verdict::Grows { per_min, .. } = v else { panic!("{v:?}") };
        assert!((per_min - 1800.0).abs() < 1.0, "{per_min}");
        // The same over 30 minutes.
        assert!(judge(&series(1800, |t| 100.0 + 2.0 * t), RULE).is_leak());
        assert!(!judge(&series(1800, |t| 1000.0 + 50.0 * (t / 20.0).sin()), RULE).is_leak());
    }

    #[test]
    fn noise_and_one_step_do_not_flag() {
        for seed in 1..=50u64 {
            let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            // ±50 % noise around a level, over 2 and over 30 minutes.
            let short: Vec<(f64, f64)> =
                series(120, |_| 0.0).into_iter().map(|(t, _)| (t, 400.0 + 400.0 * noise(&mut s))).collect();
            assert!(!judge(&short, RULE).is_leak(), "seed {seed}: {:?}", judge(&short, RULE));
            let long: Vec<(f64, f64)> =
                series(1800, |_| 0.0).into_iter().map(|(t, _)| (t, 400.0 + 400.0 * noise(&mut s))).collect();
            assert!(!judge(&long, RULE).is_leak(), "seed {seed}");
        }
        // A heap that steps up once and stays (a cache filled): not a leak.
        let step = series(1800, |t| if t < 700.0 { 100.0 } else { 140.0 });
        assert!(!judge(&step, Rule::Plateau { warmup_s: 45.0, min_rise: 16.0, min_rise_frac: 0.1 }).is_leak());
        // A step between the first two thirds, then a plateau a little higher: not a leak
        // (the 25-minute soak's Upstash commands per second: 5.6 → 16.3 → 17.6).
        let settled = series(1500, |t| if t < 700.0 { 5.6 } else { 16.3 + (t - 700.0) / 800.0 * 1.3 });
        assert!(!judge(&settled, Rule::Plateau { warmup_s: 45.0, min_rise: 5.0, min_rise_frac: 0.25 }).is_leak());
        // Growth smaller than the tolerance: not a leak (RSS creeping by a few MiB).
        let creep = series(1800, |t| 200.0 + t / 300.0);
        assert!(!judge(&creep, Rule::Plateau { warmup_s: 45.0, min_rise: 16.0, min_rise_frac: 0.1 }).is_leak());
    }

    #[test]
    fn slow_growth_under_noise_is_found() {
        let mut s = 7u64;
        // 2 rows a second under ±100 rows of noise, over 30 minutes.
        let v: Vec<(f64, f64)> =
            series(1800, |_| 0.0).into_iter().map(|(t, _)| (t, 500.0 + 2.0 * t + 200.0 * noise(&mut s))).collect();
        assert!(judge(&v, RULE).is_leak(), "{:?}", judge(&v, RULE));
    }

    #[test]
    fn too_short_bounds_and_shown_series() {
        assert_eq!(judge(&series(40, |t| t), RULE), Verdict::TooShort { points: 0 });
        assert_eq!(judge(&[], RULE), Verdict::TooShort { points: 0 });
        assert!(!judge(&series(40, |t| t), RULE).is_leak());
        assert_eq!(judge(&series(60, |_| 0.0), Rule::AtMost(0.0)), Verdict::WithinBound { max: 0.0, bound: 0.0 });
        assert!(judge(&series(60, |t| if t > 50.0 { 3.0 } else { 0.0 }), Rule::AtMost(0.0)).is_leak());
        let shown = judge(&series(120, |t| t), Rule::Shown);
        assert!(!shown.is_leak());
        assert!(matches!(shown, Verdict::Shown { first: 0.0, last: 120.0, .. }), "{shown:?}");
        // NaNs (a read that failed) are left out.
        let mut v = series(120, |t| 30.0 * t);
        v[5].1 = f64::NAN;
        assert!(judge(&v, RULE).is_leak());
    }

    #[test]
    fn vars_only_for_a_soak() {
        assert!(vars(None).is_empty());
        let v: BTreeMap<String, String> = vars(Some(Duration::from_secs(120))).into_iter().collect();
        assert_eq!(v["RETENTION_COMPLETED_KEEP"], "0");
        assert_eq!(v["RETENTION_COMPLETED_AGE"], format!("{RETENTION_AGE_S}s"));
        assert_eq!(v["IDEMPOTENCY_WINDOW"], format!("{IDEMPOTENCY_WINDOW_S}s"));
    }
}
