//! Flow control (issue #28): what it costs and what it holds, in the same run, printed and
//! never asserted (`report.scenarios.flow`, the targets `flow_*`).
//!
//! - [`overhead`]: the edge lane end to end, `keys × 5` noop jobs each with
//!   `concurrency: {key, limit: 1}` (job `n` has key `n % keys`, so each batch of 100 names
//!   100 keys and a key's later jobs wait for its earlier ones), against the same jobs
//!   without flow control, in the order without, with, with, without (a machine that slows
//!   down during the run weighs on both); jobs/s of each and their ratio.
//! - [`fairness`]: on the native lane, one key floods `sleep` jobs (its limit is the
//!   consumer's concurrency: alone it may use the whole consumer, but it never has more
//!   jobs in the stream than the consumer runs at once), and a second later 20 other keys
//!   enqueue 10 each; when each job finished, from its own `finished_at`, counted from the
//!   flood's first enqueue. Then the same without flow control, for contrast.
//! - [`limits`]: from every job's own `started_at`/`finished_at` (the shard's clock), the
//!   most runs of one key at once (exact overlap, not sampling), against its limit.
//! - [`debounce`]: 1,000 single enqueues with one debounce key over 2 s (period 500 ms, no
//!   `max_wait`); the last is sent once every other was answered, so it is the last the
//!   shard sees. The runs that followed (the edge's completed counter and the jobs the tag
//!   lists) and the payload the run had.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::latency::Percentiles;
use crate::procfs::{cpu_between, cpu_snap};
use crate::report::{f, met_str, num, print_rows};
use crate::{Bench, INTERRUPTED, check_interrupted, nap, say};

/// Flow control's edge lane end to end ÷ the same jobs without it (issue #28).
pub const TARGET_OVERHEAD_RATIO: f64 = 0.8;
/// Every small key's last job completes before the flood's 20th percentile: the latest
/// small key's last completion ÷ the flood's p20 stays below 1.
pub const TARGET_SMALL_LAST_VS_FLOOD_P20: f64 = 1.0;
/// The flood's percentile the small keys must finish before.
const FLOOD_PERCENTILE: f64 = 20.0;
/// The small keys start this long after the flood's first enqueue.
const SMALL_DELAY: Duration = Duration::from_secs(1);
const SMALL_KEYS: usize = 20;
const SMALL_JOBS: usize = 10;
/// The debounce scenario: enqueues, over how long, the period.
const DEBOUNCE_ENQUEUES: usize = 1_000;
const DEBOUNCE_SPAN: Duration = Duration::from_secs(2);
const DEBOUNCE_PERIOD_MS: u64 = 500;
/// Threads sending the debounce's single enqueues at their times.
const DEBOUNCE_SENDERS: usize = 8;
/// Jobs per key in the overhead scenario.
const JOBS_PER_KEY: usize = 5;

/// The counts of a run (`--quick` scales them down).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Overhead: keys of 5 jobs each.
    keys: usize,
    /// Fairness: the flood's jobs, their sleep, the consumer's concurrency (and the
    /// flood key's limit).
    flood: usize,
    flood_ms: u64,
    consumer: u32,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        // 2,500 jobs of 100 ms at 25 keep the flood going ~10 s, so its 20th percentile
        // (~2 s) lies after the small keys' arrival at 1 s; with 10 ms sleeps the flood
        // would be over before they came.
        Sizes { keys: 200, flood: 2_500, flood_ms: 100, consumer: 25 }
    } else {
        Sizes { keys: 1_000, flood: 10_000, flood_ms: 100, consumer: 25 }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A tag no earlier run of this stack used.
fn run_tag(what: &str) -> String {
    format!("bench-flow-{what}-{}-{}", std::process::id(), unix_ms())
}

// ---------------------------------------------------------------------------------------
// Jobs as a listing shows them, and the most concurrent runs per key.
// ---------------------------------------------------------------------------------------

/// `GET /v1/jobs`'s reply (`functions/edge/src/routes/jobs.rs`, `JobList`).
#[derive(Debug, Deserialize)]
struct Page {
    jobs: Vec<Listed>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// The fields of a listed job this module reads (`shared/api/src/job.rs`).
#[derive(Debug, Clone, Deserialize)]
struct Listed {
    state: String,
    #[serde(default)]
    attempt: u32,
    created_at: String,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    flow: Option<ListedFlow>,
}

#[derive(Debug, Clone, Deserialize)]
struct ListedFlow {
    #[serde(default)]
    concurrency: Vec<ListedKey>,
}

#[derive(Debug, Clone, Deserialize)]
struct ListedKey {
    key: String,
    limit: u64,
}

/// The tag that names a job's key in the fairness runs (the contrast's jobs have no flow).
const KEY_TAG: &str = "key:";

impl Listed {
    /// The job's key and limit: its concurrency key, else its `key:` tag (no limit).
    fn key(&self) -> Option<(String, Option<u64>)> {
        if let Some(c) = self.flow.as_ref().and_then(|f| f.concurrency.last()) {
            return Some((c.key.clone(), Some(c.limit)));
        }
        self.tags.iter().find_map(|t| t.strip_prefix(KEY_TAG)).map(|k| (k.to_owned(), None))
    }

    fn ms(v: Option<&str>) -> Option<u64> {
        edgejobs_core::time::parse_rfc3339(v?)
    }

    /// The attempt's run, `[started, finished)`, of a completed job.
    fn run(&self) -> Option<(u64, u64)> {
        if self.state != "completed" {
            return None;
        }
        Some((Self::ms(self.started_at.as_deref())?, Self::ms(self.finished_at.as_deref())?))
    }
}

/// The most intervals `[start, end)` that overlap at one instant: one that ends when
/// another starts does not overlap it (a key's slot is handed on at that instant).
pub fn max_overlap(runs: &[(u64, u64)]) -> usize {
    let mut events: Vec<(u64, i8)> = runs.iter().flat_map(|&(s, e)| [(s, 1), (e.max(s), -1)]).collect();
    // Ends before starts at the same millisecond.
    events.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in events {
        now += i64::from(d);
        most = most.max(now);
    }
    most as usize
}

/// Nearest rank: the smallest sample with at least `p` % of them at or below it.
fn rank(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1])
}

/// A run, `[started, finished)`, in ms.
type Run = (u64, u64);

/// Per key, the most concurrent runs seen against the key's limit: `limit_held` when no
/// key went over, the keys that did, how many reached their limit, and jobs whose run could
/// not be read (not completed, or without times).
fn limits(jobs: &[Listed]) -> Value {
    let mut by_key: BTreeMap<String, (Option<u64>, Vec<Run>)> = BTreeMap::new();
    let mut unread = 0usize;
    let mut retried = 0usize;
    for j in jobs {
        let Some((key, limit)) = j.key() else { continue };
        if j.attempt > 1 {
            // An earlier attempt's run is not in a listing: this job's count is a floor.
            retried += 1;
        }
        match j.run() {
            Some(r) => by_key.entry(key).or_insert((limit, Vec::new())).1.push(r),
            None => unread += 1,
        }
    }
    let mut violations = Vec::new();
    let mut reached = 0usize;
    let mut max_by_key: BTreeMap<String, (usize, Option<u64>)> = BTreeMap::new();
    // How many keys saw each maximum (the overhead run has a thousand keys).
    let mut spread: BTreeMap<usize, usize> = BTreeMap::new();
    for (key, (limit, runs)) in &by_key {
        let most = max_overlap(runs);
        *spread.entry(most).or_default() += 1;
        if let Some(l) = limit {
            if most as u64 > *l {
                violations.push(json!({ "key": key, "max_concurrent": most, "limit": l }));
            }
            if most as u64 == *l {
                reached += 1;
            }
        }
        max_by_key.insert(key.clone(), (most, *limit));
    }
    let limited = by_key.values().filter(|(l, _)| l.is_some()).count();
    json!({
        "keys": by_key.len(),
        "keys_with_limit": limited,
        "runs_read": by_key.values().map(|(_, r)| r.len()).sum::<usize>(),
        "jobs_unread": unread,
        "jobs_retried": retried,
        "keys_by_max_concurrent": spread.iter().map(|(m, n)| (m.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "max_by_key": if by_key.len() <= 50 {
            max_by_key.iter().map(|(k, (m, l))| (k.clone(), json!({ "max_concurrent": m, "limit": l }))).collect::<serde_json::Map<_, _>>().into()
        } else { Value::Null },
        "keys_at_limit": reached,
        "violations": violations,
        "limit_held": violations.is_empty() && limited > 0 && unread == 0,
    })
}

/// `s` for a URL's query: unreserved characters as they are, every other byte %-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Bench {
    /// Every job with `tag` (pages of 100), bounded in pages and time.
    fn list_tag(&self, tag: &str, expect: usize) -> anyhow::Result<Vec<Listed>> {
        let mut out = Vec::with_capacity(expect);
        let mut cursor: Option<String> = None;
        let deadline = Instant::now() + Duration::from_secs(180);
        // Pages may come back short (a shard's bounded scan): room for many of them.
        for _ in 0..(expect / 100 + 1) * 4 + 50 {
            check_interrupted()?;
            let mut url = format!("{}?tag={}&limit=100", self.edge("/v1/jobs"), encode(tag));
            if let Some(c) = cursor.as_deref() {
                url.push_str(&format!("&cursor={}", encode(c)));
            }
            let r = self.http.get(url).bearer_auth(&self.stack.secrets.api_key).send()?;
            let status = r.status();
            if !status.is_success() {
                bail!("GET /v1/jobs?tag={tag}: {status} {}", r.text().unwrap_or_default());
            }
            let page: Page = r.json().with_context(|| format!("GET /v1/jobs?tag={tag}: the reply"))?;
            out.extend(page.jobs);
            match page.next_cursor {
                Some(c) if Instant::now() < deadline => cursor = Some(c),
                Some(_) => bail!("listing tag {tag} took over 180 s ({} jobs read)", out.len()),
                None => return Ok(out),
            }
        }
        bail!("listing tag {tag} did not end ({} jobs read)", out.len())
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios.
// ---------------------------------------------------------------------------------------

/// Runs the three scenarios into `report.scenarios.flow`, each on its own: one that fails
/// says why and the others still run.
pub fn run(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    let z = sizes(b.s.quick);
    report["scenarios"]["flow"] = json!({ "quick": b.s.quick });
    type Part = fn(&mut Bench, Sizes) -> anyhow::Result<Value>;
    let parts: [(&str, Part); 3] = [("overhead", overhead), ("fairness", fairness), ("debounce", debounce)];
    // `BENCH_FLOW_PARTS=overhead,debounce` runs only those parts (all by default).
    let only = std::env::var("BENCH_FLOW_PARTS").ok();
    for (name, part) in parts {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|p| p.trim() == name)) {
            continue;
        }
        let v = match part(b, z) {
            Ok(v) => v,
            Err(e) if !INTERRUPTED.load(Ordering::Relaxed) => {
                say(format!("flow {name} stopped: {e:#}"));
                json!({ "error": format!("{e:#}") })
            }
            Err(e) => return Err(e),
        };
        report["scenarios"]["flow"][name] = v;
    }
    Ok(())
}

/// The runs of the overhead scenario, in order: the concurrency limit per key (`None`:
/// without flow control). Limit 1 is the issue's; limit 5 (a key's 5 jobs all start at
/// once) prices the keys alone (routing by key, the gate's rows) without any job waiting.
const OVERHEAD_RUNS: [Option<u32>; 6] = [None, Some(1), Some(5), Some(5), Some(1), None];

/// The edge lane with and without `concurrency: {key, limit: 1}` (and limit 5).
fn overhead(b: &mut Bench, z: Sizes) -> anyhow::Result<Value> {
    let keys = z.keys;
    let jobs = keys * JOBS_PER_KEY;
    say(format!(
        "flow overhead: edge lane, {keys} keys × {JOBS_PER_KEY} noop jobs with concurrency limit 1 vs the same \
         {jobs} jobs without flow control (and with limit {JOBS_PER_KEY}: keys, no waiting); runs without, 1, 5, 5, \
         1, without"
    ));
    let mut runs = Vec::new();
    let mut limit_runs = Vec::new();
    for (i, limit) in OVERHEAD_RUNS.into_iter().enumerate() {
        let tag = run_tag(&format!("overhead{i}"));
        let spec = |n: usize| {
            let mut j = json!({ "type": "noop", "tags": [tag] });
            if let Some(l) = limit {
                j["concurrency"] = json!({ "key": format!("user-{}", n % keys), "limit": l });
            }
            j
        };
        let lane = b.lane_each("noop", jobs, None, spec)?;
        let name = limit.map_or("without flow control".to_owned(), |l| format!("limit {l} per key"));
        say(format!(
            "  {name}: {} of {} completed in {:.1} s = {} jobs/s",
            lane.completed,
            lane.created,
            lane.elapsed_s,
            num(lane.jobs_per_s(), 0)
        ));
        let mut v = lane.to_json();
        v["flow_control"] = json!(limit.is_some());
        v["limit"] = json!(limit);
        v["tag"] = json!(tag);
        if limit.is_some() {
            let listed = b.list_tag(&tag, jobs)?;
            let l = limits(&listed);
            say(format!(
                "  {name}: {} keys, runs at once per key {} → {}",
                l["keys"],
                l["keys_by_max_concurrent"],
                if l["limit_held"] == true { "limit held" } else { "LIMIT NOT HELD (or runs unread)" }
            ));
            v["limits"] = l.clone();
            limit_runs.push(l);
        }
        runs.push(v);
    }
    // Jobs/s over the runs of each kind: completed jobs ÷ their seconds, only when every
    // run completed.
    let rate = |limit: Option<u32>| -> Option<f64> {
        let mine: Vec<&Value> = runs.iter().filter(|r| r["limit"] == json!(limit)).collect();
        if mine.is_empty() || mine.iter().any(|r| r["all_completed"] != true) {
            return None;
        }
        let done: f64 = mine.iter().filter_map(|r| f(&r["completed"])).sum();
        let secs: f64 = mine.iter().filter_map(|r| f(&r["elapsed_s"])).sum();
        (secs > 0.0).then(|| done / secs)
    };
    let (with, keys_only, without) = (rate(Some(1)), rate(Some(JOBS_PER_KEY as u32)), rate(None));
    let ratio = |a: Option<f64>| a.zip(without).filter(|(_, w)| *w > 0.0).map(|(a, w)| a / w);
    say(format!(
        "flow overhead: limit 1 {} jobs/s, limit {JOBS_PER_KEY} {} jobs/s, without {} jobs/s = {}× and {}×",
        num(with, 0),
        num(keys_only, 0),
        num(without, 0),
        num(ratio(with), 2),
        num(ratio(keys_only), 2)
    ));
    Ok(json!({
        "keys": keys,
        "jobs_per_key": JOBS_PER_KEY,
        "jobs": jobs,
        "limit": 1,
        "order": OVERHEAD_RUNS,
        "runs": runs,
        "with_jobs_per_s": with,
        "keys_only_limit": JOBS_PER_KEY,
        "keys_only_jobs_per_s": keys_only,
        "without_jobs_per_s": without,
        "ratio": ratio(with),
        "keys_only_ratio": ratio(keys_only),
        "limits": limit_runs,
    }))
}

/// One flood and the small keys after it, with flow control or without; when each job
/// finished, counted from the flood's first enqueue.
fn flood_run(b: &mut Bench, z: Sizes, consumer: usize, with: bool) -> anyhow::Result<Value> {
    let flood_tag = run_tag(if with { "flood" } else { "flood-plain" });
    let small_tag = run_tag(if with { "small" } else { "small-plain" });
    let flood_key = format!("{flood_tag}-key");
    let limit = z.consumer;
    let job = |tag: &str, key: &str| {
        let mut j =
            json!({ "type": "sleep", "payload": { "ms": z.flood_ms }, "tags": [tag, format!("{KEY_TAG}{key}")] });
        if with {
            j["concurrency"] = json!({ "key": key, "limit": limit });
        }
        j
    };
    let small_key = |n: usize| format!("{small_tag}-{}", n / SMALL_JOBS);
    let before = b.settled(Some(consumer))?;
    let base = before.completed("sleep").context("the edge's /metrics has no edgejobs_jobs_completed_total")?;
    let cpu0 = cpu_snap(&b.roots());
    let t0 = Instant::now();
    let t0_ms = unix_ms();
    let small_total = SMALL_KEYS * SMALL_JOBS;
    let (flood_out, small_out, small_at) = {
        let bench: &Bench = b;
        std::thread::scope(|s| {
            let flood = s.spawn(|| bench.enqueue_each(z.flood, |_| job(&flood_tag, &flood_key)));
            let late = nap(SMALL_DELAY);
            let small_at = t0.elapsed().as_secs_f64();
            let small = bench.enqueue_each(small_total, |n| job(&small_tag, &small_key(n)));
            let flood = flood.join().map_err(|_| anyhow::anyhow!("the flood's enqueue thread panicked"));
            late.map(|()| (flood, small, small_at))
        })
    }?;
    let flood_out = flood_out?;
    let flood_enqueue_s = t0.elapsed().as_secs_f64();
    check_interrupted()?;
    let created = flood_out.created + small_out.created;
    say(format!(
        "  enqueued {} flood and {} small jobs (small at +{small_at:.1} s){}",
        flood_out.created,
        small_out.created,
        flood_out
            .first_error
            .as_deref()
            .or(small_out.first_error.as_deref())
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    ));
    let (completed, reached, elapsed_s) = b.wait_completed("sleep", base, created as f64, None, t0, Some(consumer))?;
    let cpu1 = cpu_snap(&b.roots());
    let flood = b.list_tag(&flood_tag, flood_out.created)?;
    let small = b.list_tag(&small_tag, small_out.created)?;
    // Seconds from the flood's first enqueue to each job's finish.
    let done_s = |j: &Listed| Listed::ms(j.finished_at.as_deref()).map(|t| t.saturating_sub(t0_ms) as f64 / 1000.0);
    let mut flood_done: Vec<f64> = flood.iter().filter(|j| j.state == "completed").filter_map(done_s).collect();
    let mut small_done: Vec<f64> = small.iter().filter(|j| j.state == "completed").filter_map(done_s).collect();
    let mut small_last: BTreeMap<String, f64> = BTreeMap::new();
    for j in small.iter().filter(|j| j.state == "completed") {
        if let (Some((k, _)), Some(t)) = (j.key(), done_s(j)) {
            let e = small_last.entry(k).or_insert(t);
            *e = e.max(t);
        }
    }
    let mut small_to_complete: Vec<f64> = small
        .iter()
        .filter_map(|j| {
            let c = Listed::ms(Some(&j.created_at))?;
            let d = Listed::ms(j.finished_at.as_deref())?;
            Some(d.saturating_sub(c) as f64 / 1000.0)
        })
        .collect();
    flood_done.sort_by(f64::total_cmp);
    let flood_p20 = rank(&flood_done, FLOOD_PERCENTILE);
    // Every job of the run ÷ the last finish: the consumer's throughput against its ideal.
    let last_done = flood_done.last().copied().into_iter().chain(small_done.iter().copied()).fold(0.0, f64::max);
    let through = (last_done > 0.0).then(|| (flood_done.len() + small_done.len()) as f64 / last_done);
    let ideal = f64::from(z.consumer) * 1000.0 / z.flood_ms.max(1) as f64;
    let keys_done = small_last.len();
    let latest_small = small_last.values().copied().fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    // Met only when every small key finished all its jobs, each before the flood's p20.
    let all_small = keys_done == SMALL_KEYS && small_done.len() == small_total;
    let ratio = latest_small.zip(flood_p20).filter(|(_, p)| *p > 0.0 && all_small).map(|(l, p)| l / p);
    // The flood key's slots: how busy its runs kept them, and the mean time a slot stood
    // idle per job between one run's finish and the next run's start (the hand-off: the
    // report reaches the shard, the shard sends the next job, the consumer reads it).
    let flood_runs: Vec<Run> = flood.iter().filter_map(Listed::run).collect();
    let span = flood_runs.iter().map(|r| r.0).min().zip(flood_runs.iter().map(|r| r.1).max()).map(|(a, z)| z - a);
    let busy: u64 = flood_runs.iter().map(|(s, e)| e.saturating_sub(*s)).sum();
    let mean_run_ms = (!flood_runs.is_empty()).then(|| busy as f64 / flood_runs.len() as f64);
    let slot_count = if with { limit } else { z.consumer };
    let slots = f64::from(slot_count);
    let slot_busy = span.filter(|s| *s > 0).map(|s| busy as f64 / (slots * s as f64));
    let idle_per_job_ms = span
        .filter(|_| !flood_runs.is_empty())
        .map(|s| ((slots * s as f64) - busy as f64).max(0.0) / flood_runs.len() as f64);
    let mut all = flood.clone();
    all.extend(small.iter().cloned());
    let lim = limits(&all);
    say(format!(
        "  {}: small keys' last job at {} s (latest key), flood p20 {} s, p50 {} s, p99 {} s; most runs at once: \
         flood key {}, small keys ≤ {}",
        if with { "with flow control" } else { "without flow control" },
        num(latest_small, 1),
        num(flood_p20, 1),
        num(rank(&flood_done, 50.0), 1),
        num(rank(&flood_done, 99.0), 1),
        lim["max_by_key"][&flood_key]["max_concurrent"],
        small_last.keys().filter_map(|k| lim["max_by_key"][k]["max_concurrent"].as_u64()).max().unwrap_or(0)
    ));
    Ok(json!({
        "flow_control": with,
        "flood_key": flood_key,
        "limit_per_key": if with { json!(limit) } else { Value::Null },
        "flood_jobs": flood_out.created,
        "jobs_per_s": through,
        "flood_slots": slot_count,
        "flood_mean_run_ms": mean_run_ms,
        "flood_slot_busy_fraction": slot_busy,
        "flood_slot_idle_per_job_ms": idle_per_job_ms,
        "ideal_jobs_per_s": ideal,
        "ratio_to_ideal": through.map(|t| t / ideal),
        "small_jobs": small_out.created,
        "failed_items": flood_out.failed_items + small_out.failed_items,
        "failed_requests": flood_out.failed_requests + small_out.failed_requests,
        "first_error": flood_out.first_error.or(small_out.first_error),
        "small_enqueued_at_s": small_at,
        "flood_enqueue_s": flood_enqueue_s,
        "completed": completed,
        "all_completed": reached,
        "elapsed_s": elapsed_s,
        "flood_done_s": Percentiles::of(&mut flood_done).map(|p| p.to_json()),
        "flood_p20_s": flood_p20,
        "small_done_s": Percentiles::of(&mut small_done).map(|p| p.to_json()),
        "small_to_complete_s": Percentiles::of(&mut small_to_complete).map(|p| p.to_json()),
        "small_keys_done": keys_done,
        "small_last_s_latest": latest_small,
        "small_last_s_by_key": small_last,
        "small_last_vs_flood_p20": ratio,
        "every_small_key_before_flood_p20": ratio.map(|r| r < TARGET_SMALL_LAST_VS_FLOOD_P20),
        "limits": lim,
        "cpu": cpu_between(&cpu0, &cpu1),
    }))
}

/// The flood with flow control, then without (contrast), on one consumer.
fn fairness(b: &mut Bench, z: Sizes) -> anyhow::Result<Value> {
    say(format!(
        "flow fairness: native lane, one key floods {} sleep jobs of {} ms (its limit {} = the consumer's \
         concurrency), {SMALL_KEYS} keys × {SMALL_JOBS} jobs {} s later{}",
        z.flood,
        z.flood_ms,
        z.consumer,
        SMALL_DELAY.as_secs(),
        if b.s.quick { " (--quick: 2,500 flood jobs instead of 10,000)" } else { "" }
    ));
    let c = z.consumer.to_string();
    let i = b.stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", c.as_str())])?;
    let with = flood_run(b, z, i, true);
    let without = match &with {
        Ok(_) => {
            say("flow fairness without flow control (contrast): the same jobs, no concurrency key");
            flood_run(b, z, i, false)
        }
        Err(_) => Err(anyhow::anyhow!("not run: the run with flow control failed")),
    };
    say(format!("stopping consumer {i} (SIGTERM)"));
    b.stack.terminate_consumer(i, Duration::from_secs(40));
    let with = with?;
    Ok(json!({
        "flood_jobs": z.flood,
        "sleep_ms": z.flood_ms,
        "consumer_concurrency": z.consumer,
        "flood_limit": z.consumer,
        "small_keys": SMALL_KEYS,
        "small_jobs_per_key": SMALL_JOBS,
        "small_delay_s": SMALL_DELAY.as_secs_f64(),
        "limit_choice": "every key (flood and small) has limit = the consumer's concurrency: alone, the flood may \
                         use the whole consumer, yet never has more jobs in the stream than the consumer runs",
        "with": with,
        "without": without.unwrap_or_else(|e| json!({ "error": format!("{e:#}") })),
    }))
}

/// `GET /v1/jobs/{id}`: the fields the debounce reads.
#[derive(Debug, Deserialize)]
struct DebouncedJob {
    state: String,
    payload: Value,
    #[serde(default)]
    attempt: u32,
}

/// One enqueue's answer in the debounce scenario.
#[derive(Debug, Deserialize)]
struct Answer {
    id: String,
    #[serde(default)]
    debounced: bool,
}

/// 1,000 enqueues with one debounce key: how many runs, and with which payload.
fn debounce(b: &mut Bench, _z: Sizes) -> anyhow::Result<Value> {
    let n = DEBOUNCE_ENQUEUES;
    let tag = run_tag("debounce");
    let key = format!("{tag}-key");
    say(format!(
        "flow debounce: {n} enqueues with one key over {} s (period {DEBOUNCE_PERIOD_MS} ms, no max_wait)",
        DEBOUNCE_SPAN.as_secs()
    ));
    let spec = |i: usize| {
        json!({ "type": "noop", "payload": { "n": i }, "tags": [tag],
                "debounce": { "key": key, "period": format!("{DEBOUNCE_PERIOD_MS}ms") } })
    };
    let before = b.settled(None)?;
    let base = before.completed("noop").context("the edge's /metrics has no edgejobs_jobs_completed_total")?;
    let url = b.edge("/v1/jobs");
    let api_key = b.stack.secrets.api_key.clone();
    let post = |i: usize| -> anyhow::Result<(u16, Answer, u64)> {
        let sent = unix_ms();
        let r = b.http.post(&url).bearer_auth(&api_key).json(&spec(i)).send()?;
        let status = r.status().as_u16();
        if !r.status().is_success() {
            bail!("POST /v1/jobs: {status} {}", r.text().unwrap_or_default());
        }
        Ok((status, r.json().context("POST /v1/jobs: the reply")?, sent))
    };
    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<(usize, u16, Answer, u64)>> = Mutex::new(Vec::with_capacity(n));
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let step = DEBOUNCE_SPAN.div_f64(n as f64);
    // All but the last at their times; the last alone once the others were answered.
    std::thread::scope(|s| {
        for _ in 0..DEBOUNCE_SENDERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i + 1 >= n || INTERRUPTED.load(Ordering::Relaxed) {
                        return;
                    }
                    let at = t0 + step * i as u32;
                    if let Some(d) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                    match post(i) {
                        Ok((st, a, sent)) => answers.lock().unwrap_or_else(|p| p.into_inner()).push((i, st, a, sent)),
                        Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{e:#}")),
                    }
                }
            });
        }
    });
    check_interrupted()?;
    let last = n - 1;
    match post(last) {
        Ok((st, a, sent)) => answers.lock().unwrap_or_else(|p| p.into_inner()).push((last, st, a, sent)),
        Err(e) => errors.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{e:#}")),
    }
    let span_s = t0.elapsed().as_secs_f64();
    let answers = answers.into_inner().unwrap_or_else(|p| p.into_inner());
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let ids: BTreeSet<&str> = answers.iter().map(|(_, _, a, _)| a.id.as_str()).collect();
    let debounced = answers.iter().filter(|(_, _, a, _)| a.debounced).count();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for (_, st, _, _) in &answers {
        *statuses.entry(st.to_string()).or_default() += 1;
    }
    let mut sent: Vec<u64> = answers.iter().map(|(_, _, _, t)| *t).collect();
    sent.sort_unstable();
    let max_gap_ms = sent.windows(2).map(|w| w[1] - w[0]).max();
    say(format!(
        "  {} enqueues answered in {span_s:.2} s ({} errors): {} job id(s), {debounced} answered debounced, \
         largest gap between sends {} ms",
        answers.len(),
        errors.len(),
        ids.len(),
        max_gap_ms.map_or("n/a".into(), |g| g.to_string())
    ));
    // The job the last enqueue answered with, read until final (its run is due a period
    // after the last enqueue).
    let last_id = answers.iter().find(|(i, ..)| *i == last).map(|(_, _, a, _)| a.id.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut job: Option<DebouncedJob> = None;
    if let Some(id) = &last_id {
        loop {
            check_interrupted()?;
            let r = b.http.get(b.edge(&format!("/v1/jobs/{id}"))).bearer_auth(&api_key).send()?;
            let status = r.status();
            if !status.is_success() {
                bail!("GET /v1/jobs/{id}: {status} {}", r.text().unwrap_or_default());
            }
            let j: DebouncedJob = r.json().context("GET /v1/jobs/{id}: the reply")?;
            let done = matches!(j.state.as_str(), "completed" | "dead" | "cancelled");
            job = Some(j);
            if done || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Time for a stray second run to show (another period and then some), then count.
    nap(Duration::from_millis(DEBOUNCE_PERIOD_MS) + Duration::from_secs(1))?;
    let after = b.settled(None)?;
    let runs = after.completed("noop").map(|c| c - base);
    let listed = b.list_tag(&tag, 1)?;
    let payload_n = job.as_ref().and_then(|j| j.payload["n"].as_u64());
    let last_payload = payload_n == Some(last as u64);
    let one_run = runs == Some(1.0) && listed.len() == 1 && job.as_ref().is_some_and(|j| j.state == "completed");
    say(format!(
        "  runs: {} (edge's completed counter), jobs with the tag: {}, the run's payload n = {} ({})",
        num(runs, 0),
        listed.len(),
        payload_n.map_or("n/a".into(), |p| p.to_string()),
        if last_payload { "the last" } else { "NOT the last" }
    ));
    Ok(json!({
        "enqueues": n,
        "answered": answers.len(),
        "errors": errors.len(),
        "first_error": errors.first(),
        "span_s": span_s,
        "period_ms": DEBOUNCE_PERIOD_MS,
        "max_wait_ms": Value::Null,
        "max_gap_between_sends_ms": max_gap_ms,
        "statuses": statuses,
        "answered_debounced": debounced,
        "job_ids": ids.len(),
        "runs_by_counter": runs,
        "jobs_with_tag": listed.len(),
        "job_state": job.as_ref().map(|j| j.state.clone()),
        "job_attempt": job.as_ref().map(|j| j.attempt),
        "payload_n": payload_n,
        "last_payload_n": last,
        "last_payload": last_payload,
        "exactly_one_run": one_run,
    }))
}

// ---------------------------------------------------------------------------------------
// Targets and the printed table.
// ---------------------------------------------------------------------------------------

/// The most any key went over its limit, over every run that read it (0: limit held);
/// `None` when no run read the limits or a run left runs unread.
fn limit_excess(fl: &Value) -> Option<f64> {
    let mut sets: Vec<&Value> = fl["overhead"]["limits"].as_array().into_iter().flatten().collect();
    sets.push(&fl["fairness"]["with"]["limits"]);
    let sets: Vec<&Value> = sets.into_iter().filter(|l| l.is_object()).collect();
    if sets.is_empty() || sets.iter().any(|l| l["jobs_unread"].as_u64() != Some(0)) {
        return None;
    }
    let mut most = 0.0f64;
    for l in sets {
        for v in l["violations"].as_array().into_iter().flatten() {
            most = most.max(f(&v["max_concurrent"]).unwrap_or(0.0) - f(&v["limit"]).unwrap_or(0.0));
        }
    }
    Some(most)
}

pub fn targets(report: &Value) -> Vec<Value> {
    let fl = &report["scenarios"]["flow"];
    if fl.is_null() {
        return Vec::new();
    }
    let t = crate::report::target;
    let d = &fl["debounce"];
    let mut runs = t(
        "flow_debounce_runs",
        "flow: debounce, runs of 1,000 enqueues with one key in 2 s (exactly 1)",
        f(&d["runs_by_counter"]),
        "<=",
        1.0,
    );
    if d["exactly_one_run"].is_boolean() {
        runs["met"] = d["exactly_one_run"].clone();
    }
    vec![
        t(
            "flow_overhead_ratio",
            "flow: edge lane with concurrency limit 1 per key ÷ without, jobs/s",
            f(&fl["overhead"]["ratio"]),
            ">=",
            TARGET_OVERHEAD_RATIO,
        ),
        t(
            "flow_fairness_small_last_vs_flood_p20",
            "flow: small keys' last completion ÷ the flood's p20 (below 1: before it)",
            f(&fl["fairness"]["with"]["small_last_vs_flood_p20"]),
            "<=",
            TARGET_SMALL_LAST_VS_FLOOD_P20,
        ),
        t(
            "flow_limit_excess",
            "flow: most runs of a key at once above its limit (0: held)",
            limit_excess(fl),
            "<=",
            0.0,
        ),
        runs,
        t(
            "flow_debounce_last_payload",
            "flow: the debounced run has the last payload (1: yes)",
            d["last_payload"].as_bool().map(|b| if b { 1.0 } else { 0.0 }),
            ">=",
            1.0,
        ),
    ]
}

fn secs(p: &Value, k: &str) -> String {
    num(f(&p[k]), 1)
}

fn limits_str(l: &Value) -> String {
    if l.is_null() {
        return "n/a".into();
    }
    let spread: Vec<String> = l["keys_by_max_concurrent"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(m, n)| format!("{n} key(s) at {m}"))
        .collect();
    let held = if l["limit_held"] == true {
        "limit held".to_owned()
    } else if l["violations"].as_array().is_some_and(|v| !v.is_empty()) {
        format!("LIMIT EXCEEDED: {}", l["violations"])
    } else {
        format!("not read ({} jobs unread)", l["jobs_unread"])
    };
    format!("{}; {held}", spread.join(", "))
}

/// The flow section: each scenario's figures and its target.
pub fn print(r: &Value) {
    let fl = &r["scenarios"]["flow"];
    if fl.is_null() {
        return;
    }
    let tg: Vec<Value> = r["targets"].as_array().cloned().unwrap_or_default();
    let target = |id: &str| tg.iter().find(|t| t["id"] == id);
    let met = |id: &str| met_str(target(id));
    println!();
    println!(
        "flow control (issue #28), same run, figures not assertions{}:",
        if fl["quick"] == true { " (--quick: smaller counts)" } else { "" }
    );
    let mut rows: Vec<[String; 4]> = Vec::new();
    let err = |v: &Value| v["error"].as_str().map(|e| format!("FAILED: {e}"));
    let o = &fl["overhead"];
    if !o.is_null() {
        let result = err(o).unwrap_or_else(|| {
            let each: Vec<String> = o["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|run| {
                    format!(
                        "{} {}",
                        run["limit"].as_u64().map_or("without".to_owned(), |l| format!("limit {l}")),
                        if run["all_completed"] == true { num(f(&run["jobs_per_s"]), 0) } else { "TIMED OUT".into() }
                    )
                })
                .collect();
            format!(
                "limit 1: {} jobs/s, without: {} jobs/s = {}×; limit {} (keys, no job waits): {} jobs/s = {}× (runs in \
                 order: {})",
                num(f(&o["with_jobs_per_s"]), 0),
                num(f(&o["without_jobs_per_s"]), 0),
                num(f(&o["ratio"]), 2),
                o["keys_only_limit"],
                num(f(&o["keys_only_jobs_per_s"]), 0),
                num(f(&o["keys_only_ratio"]), 2),
                each.join(", ")
            )
        });
        rows.push([
            format!("overhead: edge lane, {} keys × {} noop jobs, limit 1", o["keys"], o["jobs_per_key"]),
            result,
            format!("≥{TARGET_OVERHEAD_RATIO}×"),
            met("flow_overhead_ratio"),
        ]);
    }
    let fa = &fl["fairness"];
    if !fa.is_null() {
        let name = format!(
            "fairness: native, 1 key × {} jobs of {} ms (limit {}, consumer c={}), {} keys × {} at +{} s",
            fa["flood_jobs"],
            fa["sleep_ms"],
            fa["flood_limit"],
            fa["consumer_concurrency"],
            fa["small_keys"],
            fa["small_jobs_per_key"],
            fa["small_delay_s"]
        );
        let show = |v: &Value| -> String {
            err(v).unwrap_or_else(|| {
                let sd = &v["small_done_s"];
                let fd = &v["flood_done_s"];
                format!(
                    "small keys done at p50 {} s, p99 {} s, last key {} s (enqueue to complete p50 {} s, p99 {} s); \
                     flood p20 {} s, p50 {} s, p99 {} s; consumer {} jobs/s ({}× ideal); flood runs {} ms each \
                     (start to finish), its {} slots busy {}%, idle {} ms per job{}",
                    secs(sd, "p50"),
                    secs(sd, "p99"),
                    num(f(&v["small_last_s_latest"]), 1),
                    secs(&v["small_to_complete_s"], "p50"),
                    secs(&v["small_to_complete_s"], "p99"),
                    num(f(&v["flood_p20_s"]), 1),
                    secs(fd, "p50"),
                    secs(fd, "p99"),
                    num(f(&v["jobs_per_s"]), 0),
                    num(f(&v["ratio_to_ideal"]), 2),
                    num(f(&v["flood_mean_run_ms"]), 0),
                    v["flood_slots"],
                    num(f(&v["flood_slot_busy_fraction"]).map(|x| x * 100.0), 0),
                    num(f(&v["flood_slot_idle_per_job_ms"]), 0),
                    if v["all_completed"] == true { String::new() } else { " (NOT ALL COMPLETED)".into() }
                )
            })
        };
        let with = &fa["with"];
        rows.push([
            name,
            err(fa).unwrap_or_else(|| show(with)),
            "every small key's last job before the flood's p20".into(),
            format!(
                "{} ({}×)",
                met("flow_fairness_small_last_vs_flood_p20"),
                num(f(&with["small_last_vs_flood_p20"]), 2)
            ),
        ]);
        if !fa["without"].is_null() {
            rows.push([
                "  the same without flow control (contrast)".into(),
                show(&fa["without"]),
                "—".into(),
                String::new(),
            ]);
        }
    }
    if !o.is_null() || !fa.is_null() {
        let mut parts = Vec::new();
        for (i, l) in o["limits"].as_array().into_iter().flatten().enumerate() {
            let limit = o["runs"].as_array().into_iter().flatten().filter(|r| r["flow_control"] == true).nth(i);
            parts.push(format!(
                "overhead run {} (limit {}): {}",
                i + 1,
                limit.map_or(Value::Null, |r| r["limit"].clone()),
                limits_str(l)
            ));
        }
        let wl = &fa["with"]["limits"];
        if !wl.is_null() {
            let flood = fa["with"]["flood_key"].as_str().unwrap_or_default();
            let small_max = wl["max_by_key"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != flood)
                .filter_map(|(_, v)| v["max_concurrent"].as_u64())
                .max();
            parts.push(format!(
                "fairness (limit {}): flood key {}, small keys at most {} each (10 jobs); {}",
                fa["flood_limit"],
                wl["max_by_key"][flood]["max_concurrent"],
                small_max.map_or("n/a".into(), |m| m.to_string()),
                if wl["limit_held"] == true { "limit held" } else { "LIMIT NOT HELD (see the JSON)" }
            ));
        }
        rows.push([
            "limit never exceeded: most runs of a key at once (job times)".into(),
            parts.join("; "),
            "= the limit, never above".into(),
            met("flow_limit_excess"),
        ]);
    }
    let d = &fl["debounce"];
    if !d.is_null() {
        let result = err(d).unwrap_or_else(|| {
            format!(
                "{} run(s) ({} job(s) with its tag), payload n = {} ({}); {} of {} answered debounced in {} s, \
                 largest gap between sends {} ms",
                num(f(&d["runs_by_counter"]), 0),
                d["jobs_with_tag"],
                d["payload_n"],
                if d["last_payload"] == true { "the last" } else { "NOT the last" },
                d["answered_debounced"],
                d["answered"],
                num(f(&d["span_s"]), 2),
                d["max_gap_between_sends_ms"]
            )
        });
        rows.push([
            format!("debounce: {} enqueues, one key, period {} ms", d["enqueues"], d["period_ms"]),
            result,
            "exactly 1 run, last payload".into(),
            format!("{} / {}", met("flow_debounce_runs"), met("flow_debounce_last_payload")),
        ]);
    }
    print_rows(&["scenario", "result", "target", "met?"], &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_runs_at_once_and_hands_a_slot_on_at_one_instant() {
        assert_eq!(max_overlap(&[]), 0);
        // One after another, the next starting the millisecond the last ended: one at a time.
        assert_eq!(max_overlap(&[(0, 10), (10, 20), (20, 30)]), 1);
        // Overlapping by a millisecond: two.
        assert_eq!(max_overlap(&[(0, 10), (9, 20), (20, 30)]), 2);
        assert_eq!(max_overlap(&[(0, 100), (10, 20), (15, 30), (25, 26)]), 3);
    }

    #[test]
    fn limits_name_the_key_that_went_over() {
        let job = |key: &str, limit: u64, s: &str, e: &str| -> Listed {
            serde_json::from_value(json!({
                "state": "completed", "attempt": 1, "created_at": "2026-01-01T00:00:00.000Z",
                "started_at": format!("2026-01-01T00:00:{s}Z"), "finished_at": format!("2026-01-01T00:00:{e}Z"),
                "tags": [], "flow": { "concurrency": [{ "key": key, "limit": limit }], "priority": 5 }
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let held = limits(&[job("a", 1, "01.000", "02.000"), job("a", 1, "02.000", "03.000")]);
        assert_eq!(held["limit_held"], true, "{held}");
        assert_eq!(held["keys_at_limit"], 1);
        let over = limits(&[
            job("a", 1, "01.000", "02.000"),
            job("a", 1, "01.500", "03.000"),
            job("b", 2, "01.000", "02.000"),
        ]);
        assert_eq!(over["limit_held"], false, "{over}");
        assert_eq!(over["violations"], json!([{ "key": "a", "max_concurrent": 2, "limit": 1 }]));
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(rank(&v, 20.0), Some(2.0));
        assert_eq!(rank(&v, 100.0), Some(10.0));
        assert_eq!(rank(&[], 50.0), None);
    }
}
