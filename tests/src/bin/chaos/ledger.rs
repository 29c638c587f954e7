//! What the battery sent and what became of it: every job it got a 2xx for, the executions
//! the counting upstream saw, and the checks that turn them into a row.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgejobs_tests::hooks::{Hooks, Reply};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{Api, Sent};

/// A job the battery got a 2xx for.
#[derive(Debug, Clone, Serialize)]
pub struct Tracked {
    pub id: String,
    pub case: u8,
    /// The counting upstream's path this job calls.
    pub path: String,
    pub native: bool,
    /// The final state the case expects ("completed" or "dead").
    pub expect: &'static str,
}

/// Enqueue outcomes of one case.
#[derive(Debug, Default)]
pub struct Sends {
    pub created: Vec<Tracked>,
    pub refused: usize,
    pub indeterminate: usize,
}

impl Sends {
    pub fn add(&mut self, other: Sends) {
        self.created.extend(other.created);
        self.refused += other.refused;
        self.indeterminate += other.indeterminate;
    }
}

pub const FINAL: &[&str] = &["completed", "dead", "cancelled"];

/// One job's enqueue, recorded.
pub fn send(api: &Api, spec: &Value, t: Tracked, out: &mut Sends) {
    match api.enqueue(spec) {
        Sent::Created(id) => out.created.push(Tracked { id, ..t }),
        Sent::Refused(..) => out.refused += 1,
        Sent::Indeterminate(_) => out.indeterminate += 1,
    }
}

/// A unique upstream path for one job, answered after `delay` with `status`.
pub fn upstream(hooks: &Hooks, case: u8, n: usize, seed: u64, reply: Reply) -> (String, String) {
    let path = format!("/c{case}/{seed:x}/{n}");
    let url = hooks.script(&path, vec![reply]);
    (path, url)
}

/// Enqueues `n` jobs from `threads` threads at about `rate` jobs/s in all (bounded by
/// `bound`), each made by `make(i)` = (spec, tracked-without-id).
pub fn load<F>(api: &Api, n: usize, threads: usize, rate: f64, bound: Duration, make: F) -> Sends
where
    F: Fn(usize) -> (Value, Tracked) + Sync,
{
    let out = Arc::new(Mutex::new(Sends::default()));
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for w in 0..threads {
            let (out, make, api) = (Arc::clone(&out), &make, api.clone());
            s.spawn(move || {
                let mut mine = Sends::default();
                for i in (w..n).step_by(threads) {
                    if t0.elapsed() >= bound {
                        break;
                    }
                    // Paced: job i is due at i / rate seconds.
                    let due = Duration::from_secs_f64(i as f64 / rate.max(1.0));
                    if let Some(wait) = due.checked_sub(t0.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let (spec, t) = make(i);
                    send(&api, &spec, t, &mut mine);
                }
                out.lock().expect("sends").add(mine);
            });
        }
    });
    Arc::try_unwrap(out).map(|m| m.into_inner().expect("sends")).unwrap_or_default()
}

/// Reads every job until all are final or `bound` passes; fires the sweep whenever a few
/// seconds pass without progress. Returns the last state read of each job (`Null`: never
/// read, `{"state":"missing"}`: 404).
pub fn settle(api: &Api, jobs: &[Tracked], bound: Duration) -> HashMap<String, Value> {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let t0 = Instant::now();
    let mut last_progress = Instant::now();
    let mut sweeps = 0;
    let mut last_said = Instant::now();
    loop {
        let open: Vec<&Tracked> = jobs
            .iter()
            .filter(|t| !seen.get(&t.id).is_some_and(|j| FINAL.contains(&j["state"].as_str().unwrap_or(""))))
            .collect();
        if open.is_empty() || t0.elapsed() >= bound {
            return seen;
        }
        let read: Vec<(String, Value)> = std::thread::scope(|s| {
            let chunks: Vec<Vec<&Tracked>> = open.chunks(open.len().div_ceil(8).max(1)).map(<[_]>::to_vec).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|t| match api.job(&t.id) {
                                Ok(Some(j)) => Some((t.id.clone(), j)),
                                Ok(None) => Some((t.id.clone(), json!({ "state": "missing" }))),
                                Err(_) => None,
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        let before = open.len();
        for (id, j) in read {
            seen.insert(id, j);
        }
        let still = jobs
            .iter()
            .filter(|t| !seen.get(&t.id).is_some_and(|j| FINAL.contains(&j["state"].as_str().unwrap_or(""))))
            .count();
        if still < before {
            last_progress = Instant::now();
        }
        if last_said.elapsed() >= Duration::from_secs(15) {
            let states: BTreeMap<&str, usize> = jobs
                .iter()
                .filter_map(|t| seen.get(&t.id).and_then(|j| j["state"].as_str()))
                .filter(|s| !FINAL.contains(s))
                .fold(BTreeMap::new(), |mut m, s| {
                    *m.entry(s).or_default() += 1;
                    m
                });
            crate::say(format!(
                "  waiting for {still} of {} jobs after {:.0} s: {states:?}",
                jobs.len(),
                t0.elapsed().as_secs_f64()
            ));
            last_said = Instant::now();
        }
        if still > 0 && last_progress.elapsed() >= Duration::from_secs(4) && sweeps < 50 {
            api.sweep();
            sweeps += 1;
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    pub case: u8,
    pub name: String,
    /// Jobs the case got a 2xx for.
    pub n: usize,
    /// 2xx jobs not in a final state at the end (or missing).
    pub lost: usize,
    /// Jobs whose final state differs from what the case expects.
    pub unexpected: usize,
    /// Final-state counter increments beyond one per job that ended.
    pub duplicate_state_changes: i64,
    /// Upstream executions beyond one per job (at least once: only after a lost lease or a
    /// failed attempt; the next column says whether any repeated an attempt).
    pub extra_executions: usize,
    /// Native executions of an attempt that already executed (fencing says 0).
    pub repeated_attempts: usize,
    /// Jobs that needed more than one attempt.
    pub recovered: usize,
    pub refused: usize,
    pub indeterminate: usize,
    pub recovery_ms: Vec<u64>,
    pub faults: usize,
    pub notes: Vec<String>,
    /// A case-specific check failed (its note says which).
    pub broken: bool,
    pub ok: bool,
}

impl Row {
    pub fn p(&self, q: f64) -> Option<u64> {
        let mut v = self.recovery_ms.clone();
        v.sort_unstable();
        (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * q).round() as usize])
    }
}

/// The counters of final states of `types`, read until two reads 1 s apart agree (the
/// edge flushes some counters lazily), at most 15 s.
pub fn settled_finals(api: &Api, types: &[&str]) -> f64 {
    let read = || -> Option<f64> {
        let p = api.metrics().ok()?;
        Some(types.iter().map(|t| crate::api::finals(&p, t)).map(|(c, d)| c + d).sum())
    };
    let mut prev = read();
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(1));
        let cur = read();
        if cur.is_some() && cur == prev {
            return cur.unwrap_or(0.0);
        }
        prev = cur;
    }
    prev.unwrap_or(0.0)
}

/// Fills a row from the jobs' final states, the upstream's counts and the counters.
/// `tagged` is every job the case's tag lists (2xx or not: an indeterminate request may have
/// created one), with its state: the counters are compared with those.
pub fn judge(
    row: &mut Row,
    hooks: &Hooks,
    jobs: &[Tracked],
    states: &HashMap<String, Value>,
    finals_delta: f64,
    tagged: &[Value],
) {
    row.n = jobs.len();
    for t in jobs {
        let j = states.get(&t.id).cloned().unwrap_or(Value::Null);
        let state = j["state"].as_str().unwrap_or("unread");
        if !FINAL.contains(&state) {
            row.lost += 1;
            if row.notes.len() < 5 {
                row.notes.push(format!("{} is {state}", t.id));
            }
            continue;
        }
        if state != t.expect {
            row.unexpected += 1;
            if row.notes.len() < 5 {
                row.notes.push(format!("{} ended {state}, expected {}", t.id, t.expect));
            }
        }
        if j["attempt"].as_u64().unwrap_or(1) > 1 {
            row.recovered += 1;
        }
        let got = hooks.received(&t.path);
        if t.expect == "completed" {
            row.extra_executions += got.len().saturating_sub(1);
        }
        if t.native {
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for r in &got {
                *per.entry(r.headers.get("x-edgejobs-attempt").cloned().unwrap_or_default()).or_default() += 1;
            }
            row.repeated_attempts += per.values().map(|n| n - 1).sum::<usize>();
        }
    }
    let ended = tagged.iter().filter(|j| j["state"] == "completed" || j["state"] == "dead").count();
    row.duplicate_state_changes = finals_delta.round() as i64 - ended as i64;
    if row.duplicate_state_changes != 0 {
        row.notes.push(format!(
            "final-state counters moved {finals_delta:.0}; {ended} of the {} jobs the tag lists ended",
            tagged.len()
        ));
    }
    let unknown = tagged.len().saturating_sub(jobs.len());
    if unknown > 0 {
        row.notes.push(format!("{unknown} jobs created by requests that got no 2xx"));
    }
    row.ok = row.lost == 0 && row.unexpected == 0 && row.duplicate_state_changes == 0 && row.repeated_attempts == 0;
}

/// When each job's upstream was called (first call per attempt), for recovery times.
pub fn calls(hooks: &Hooks, t: &Tracked) -> Vec<Instant> {
    hooks.received(&t.path).iter().map(|r| r.at).collect()
}
