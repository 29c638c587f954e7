//! What the simulation knows independently of the shards, and the invariants it holds
//! them to after every step (ARCHITECTURE.md, "The simulation"). Each check is counted,
//! so a run reports how often each invariant was actually exercised.

use std::collections::{BTreeMap, BTreeSet};

/// A job's row as last observed: state, attempt, last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: String,
    pub attempt: u64,
    pub updated_at: u64,
}

pub fn is_final(state: &str) -> bool {
    matches!(state, "completed" | "cancelled" | "dead")
}

/// The invariants, by name (the names a violation and the report use).
pub const INVARIANTS: &[&str] = &[
    "acknowledged-jobs-exist",
    "final-is-final",
    "final-counters-match",
    "stale-reports-change-nothing",
    "unleased-reports-change-nothing",
    "cancelled-stays-cancelled",
    "one-job-per-idempotency-key",
    "one-run-per-schedule-tick",
    "schedule-keys-name-their-own-runs",
    "tenants-see-only-their-own",
    "pending-counts-match",
    "sealed-values-survive-reseal",
    "no-storage-errors",
    "liveness-after-faults-stop",
    "flow-limit-never-exceeded",
    "flow-counts-match",
    "waiting-jobs-start",
    "paused-starts-nothing",
    "debounce-one-run-per-quiet-window",
    "throttle-at-most-limit-per-window",
];

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
}

/// What one step may legitimately do beyond the plain rules.
#[derive(Debug, Default)]
pub struct Allow {
    /// Dead jobs a replay answered for (they may leave `dead`).
    pub replayed: BTreeSet<String>,
    /// Finished jobs retention deleted.
    pub deleted: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Oracle {
    /// Per shard, every row observed after the last step.
    pub rows: Vec<BTreeMap<String, Seen>>,
    /// Jobs whose create answered 2xx.
    pub acked: BTreeSet<String>,
    /// Jobs a cancel answered `cancelled` for.
    pub cancelled: BTreeSet<String>,
    /// Entries into a final state observed.
    pub finals: u64,
    /// Per idempotency key: the job it names and until when.
    pub keys: BTreeMap<String, (String, u64)>,
    /// Per schedule: the jobs of its runs seen, and its period and creation time.
    pub runs: BTreeMap<String, BTreeSet<String>>,
    /// How many times each invariant was checked.
    pub checks: BTreeMap<&'static str, u64>,
    pub violation: Option<Violation>,
    /// Flow control (#28), see [`crate::flow`].
    pub flow: FlowSeen,
}

impl Oracle {
    pub fn new(shards: usize) -> Oracle {
        Oracle { rows: vec![BTreeMap::new(); shards], ..Oracle::default() }
    }

    pub fn fail(&mut self, invariant: &'static str, message: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { invariant, message });
        }
    }

    pub(crate) fn check(&mut self, invariant: &'static str) {
        *self.checks.entry(invariant).or_default() += 1;
    }

    /// Diffs shard `shard`'s rows now against the last observation.
    pub fn observe(&mut self, shard: usize, now_rows: BTreeMap<String, Seen>, allow: &Allow) {
        let before = std::mem::take(&mut self.rows[shard]);
        for (id, old) in &before {
            if !now_rows.contains_key(id) {
                self.check("acknowledged-jobs-exist");
                if allow.deleted.contains(id) {
                    if !is_final(&old.state) {
                        self.fail("acknowledged-jobs-exist", format!("retention deleted {id} while {}", old.state));
                    }
                } else if self.acked.contains(id) {
                    self.fail("acknowledged-jobs-exist", format!("job {id} (was {}) is gone", old.state));
                }
            }
        }
        for (id, new) in &now_rows {
            if new.state != "queued" {
                self.flow.live.remove(id);
            }
            match before.get(id) {
                None => {
                    if is_final(&new.state) {
                        self.finals += 1;
                    }
                }
                Some(old) => {
                    self.check("final-is-final");
                    if is_final(&old.state) && new.state != old.state {
                        let replay = old.state == "dead" && allow.replayed.contains(id);
                        if !replay {
                            self.fail("final-is-final", format!("job {id} went from {} to {}", old.state, new.state));
                        }
                    }
                    if !is_final(&old.state) && is_final(&new.state) {
                        self.finals += 1;
                    }
                }
            }
            if self.cancelled.contains(id) {
                self.check("cancelled-stays-cancelled");
                if new.state != "cancelled" {
                    self.fail(
                        "cancelled-stays-cancelled",
                        format!(
                            "job {id} answered a cancel with `cancelled`, now it is {} (attempt {})",
                            new.state, new.attempt
                        ),
                    );
                }
            }
        }
        self.rows[shard] = now_rows;
    }

    /// A report named an attempt that was not the running one: the row must not change.
    pub fn stale_report(&mut self, id: &str, was: &Seen, now: Option<&Seen>) {
        self.check("stale-reports-change-nothing");
        if now != Some(was) {
            self.fail(
                "stale-reports-change-nothing",
                format!("a report for a non-current attempt of {id} changed it: {was:?} -> {now:?}"),
            );
        }
    }

    /// A consumer's report did not carry the job's live lease token (or named an edge-lane
    /// job): the row must not change.
    pub fn unleased_report(&mut self, id: &str, was: &Seen, now: Option<&Seen>) {
        self.check("unleased-reports-change-nothing");
        if now != Some(was) {
            self.fail(
                "unleased-reports-change-nothing",
                format!("a report without the live lease token of {id} changed it: {was:?} -> {now:?}"),
            );
        }
    }

    /// A stored job's sealed header values after a re-seal page on its shard: they open,
    /// with the configured keys, to what was sealed.
    pub fn sealed(&mut self, id: &str, opened: Result<Vec<(String, String)>, String>, want: &str) {
        self.check("sealed-values-survive-reseal");
        match opened {
            Ok(h) if h.iter().all(|(_, v)| v == want) => {}
            other => self.fail(
                "sealed-values-survive-reseal",
                format!("the sealed headers of {id} no longer open to what was sealed: {other:?}"),
            ),
        }
    }

    /// A create's answer for idempotency key `key`.
    pub fn keyed(&mut self, key: &str, job: &str, now: u64, window_ms: u64) {
        self.check("one-job-per-idempotency-key");
        match self.keys.get(key) {
            Some((named, until)) if now < *until => {
                if named != job {
                    let msg = format!("key {key:?} named {named} and, within its window, {job}");
                    self.fail("one-job-per-idempotency-key", msg);
                }
            }
            _ => {
                self.keys.insert(key.to_owned(), (job.to_owned(), now + window_ms));
            }
        }
    }

    /// The final-state counters of every shard, summed, against the entries observed.
    pub fn counters(&mut self, counted: u64) {
        self.check("final-counters-match");
        if counted != self.finals {
            self.fail(
                "final-counters-match",
                format!("the final-state counters say {counted}, {} jobs entered a final state", self.finals),
            );
        }
    }

    /// Schedule `name`'s runs seen so far against the most its ticks allow.
    pub fn schedule_runs(&mut self, name: &str, ids: impl IntoIterator<Item = String>, most: u64) {
        self.check("one-run-per-schedule-tick");
        let set = self.runs.entry(name.to_owned()).or_default();
        set.extend(ids);
        if set.len() as u64 > most {
            let n = set.len();
            self.fail("one-run-per-schedule-tick", format!("schedule {name} made {n} runs; its ticks allow {most}"));
        }
    }

    /// A key in the schedules' namespace (`{tenant}\x1fschedule:{name}:{tick}`) must name a job
    /// that schedule made.
    pub fn schedule_key(&mut self, key: &str, name: Option<&str>, made_by: Option<&str>) {
        self.check("schedule-keys-name-their-own-runs");
        if name.is_none() || name != made_by {
            let shown = key.replace('\u{1f}', "/");
            self.fail(
                "schedule-keys-name-their-own-runs",
                format!("the key {shown:?} names a job made by {made_by:?}, not by its schedule"),
            );
        }
    }

    /// Another tenant read and cancelled job `id`: refused as missing, the row unchanged.
    pub fn cross_tenant(&mut self, id: &str, refused: bool, before: Option<&Seen>, after: Option<&Seen>) {
        self.check("tenants-see-only-their-own");
        if !refused || before != after {
            self.fail(
                "tenants-see-only-their-own",
                format!("another tenant's read or cancel of {id} was answered ({refused}) or changed it: {before:?} -> {after:?}"),
            );
        }
    }

    /// A shard's count of `tenant`'s jobs not yet final against its rows.
    pub fn pending(&mut self, shard: usize, tenant: &str, kept: u64, counted: u64) {
        self.check("pending-counts-match");
        if kept != counted {
            self.fail(
                "pending-counts-match",
                format!("shard {shard} keeps {kept} pending jobs of {tenant}; its rows hold {counted}"),
            );
        }
    }

    pub fn liveness(&mut self, stuck: Vec<(String, String)>) {
        self.check("liveness-after-faults-stop");
        if let Some((id, state)) = stuck.first() {
            let msg = format!("{} jobs not final after the drain, e.g. {id} ({state})", stuck.len());
            self.fail("liveness-after-faults-stop", msg);
        }
    }

    pub fn storage(&mut self, errors: &[String]) {
        self.check("no-storage-errors");
        if let Some(e) = errors.first() {
            self.fail("no-storage-errors", e.clone());
        }
    }
}

/// What the simulation knows of flow control, independently of the shards (its rules are
/// in [`crate::flow`]).
#[derive(Debug, Default)]
pub struct FlowSeen {
    /// Per flow job created: its concurrency lists (`c:<scoped key>`) and limits, its type
    /// and the pause names that stop it (`t:<type>`, `k:<scoped flow key>`).
    pub jobs: BTreeMap<String, FlowJob>,
    /// Per flow job, the highest attempt the shard sent (admitted).
    pub sent: BTreeMap<String, u32>,
    /// Flow jobs sent and not observed since in another state than `queued`: they hold
    /// their slots (a start makes them `active`, which holds them too).
    pub live: BTreeSet<String>,
    /// Paused targets (as `flow_paused` names them) and the targets themselves.
    pub paused: BTreeMap<String, edgejobs_core::flow::Target>,
    /// Per debounce key: the job of its window and when the window opened.
    pub debounce: BTreeMap<String, (String, u64)>,
    /// Per throttle key: the window's start, jobs created in it, the last one.
    pub throttle: BTreeMap<String, (u64, u32, String)>,
    /// Debounced and throttled answers seen (how often the windows were exercised).
    pub collapsed: u64,
    /// Lists with jobs waiting, summed over the checks (how much keys contended).
    pub waiting_lists: u64,
    /// Pauses and resumes made.
    pub pauses: u64,
    /// Jobs an edge runner's finish took to run next (without the queue).
    pub taken: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FlowJob {
    pub lists: Vec<(String, u32)>,
    pub stops: Vec<String>,
}
