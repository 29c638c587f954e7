//! What the simulation knows independently of the shards, and the invariants it holds
//! them to after every step (ARCHITECTURE.md, "The simulation"). Each check is counted,
//! so a run reports how often each invariant was actually exercised.

use std::collections::{BTreeMap, BTreeSet};

use edgejobs_core::workflow::{Step, StepState, event_subject, matches_event};
use serde_json::Value;

use crate::workflows::{Sent, WaitSeen};

/// A job's row as last observed: state, attempt, last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: String,
    pub attempt: u64,
    pub updated_at: u64,
    /// The chunks its stream holds (#30): a refused report adds none.
    pub chunks: u64,
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
    "a-recorded-step-never-reruns",
    "an-event-resumes-a-wait-once",
    "a-stream-holds-its-accepted-chunks-in-order",
    "a-job-keeps-its-trace",
    "children-continue-their-origins-trace",
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
    /// Durable workflows (#29), see [`crate::workflows`].
    pub wf: crate::workflows::WorkflowSeen,
    /// Trace contexts (#32), see [`crate::traces`].
    pub traces: crate::traces::TraceSeen,
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

    /// The trace contexts a shard holds now (#32): see [`crate::traces::TraceSeen::observe`].
    pub fn traces(&mut self, stored: Vec<(String, Option<edgejobs_core::trace::TraceContext>)>) {
        for (invariant, broke) in self.traces.observe(stored) {
            self.check(invariant);
            if let Some(message) = broke {
                self.fail(invariant, message);
            }
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

    /// An accepted live update (#30): the job's stream holds exactly the chunks of its
    /// accepted updates, numbered 1, 2, 3… in the order they were sent.
    pub fn stream(&mut self, id: &str, stored: &[(u64, String)], sent: &[String]) {
        self.check("a-stream-holds-its-accepted-chunks-in-order");
        let want: Vec<(u64, String)> = sent.iter().enumerate().map(|(i, d)| (i as u64 + 1, d.clone())).collect();
        if stored != want.as_slice() {
            self.fail(
                "a-stream-holds-its-accepted-chunks-in-order",
                format!("the stream of {id} holds {stored:?}; its accepted updates sent {want:?}"),
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

/// The workflow invariants' bookkeeping (#29; the workload and its types are in
/// [`crate::workflows`]).
impl Oracle {
    /// An execution of a run begins (its start or takeover was answered): its mark.
    pub fn wf_began(&mut self) -> u64 {
        self.wf.clock += 1;
        self.wf.clock
    }

    /// Step `seq` of `job` was answered recorded (a `run` result, or its failure for good).
    pub fn wf_recorded(&mut self, job: &str, seq: usize) {
        self.wf.clock += 1;
        let at = self.wf.clock;
        self.wf.recorded.entry((job.to_owned(), seq)).or_insert(at);
    }

    /// An execution that began at `began` executes (`ran`) or replays step `seq` of `job`.
    pub fn wf_step(&mut self, job: &str, seq: usize, name: &str, began: u64, ran: bool) {
        self.check("a-recorded-step-never-reruns");
        if ran {
            self.wf.executed += 1;
        } else {
            self.wf.replayed += 1;
        }
        if ran && let Some(at) = self.wf.recorded.get(&(job.to_owned(), seq)).copied().filter(|at| *at < began) {
            self.fail(
                "a-recorded-step-never-reruns",
                format!(
                    "step {name} of {job} ran again in an execution that began (#{began}) after its result was recorded (#{at})"
                ),
            );
        }
    }

    /// A wait report was answered with its run suspended on it.
    pub fn wf_waits(&mut self, job: &str, tenant: &str, step: &Step) {
        let Some(wait) = step.wait.clone() else { return };
        let key = (job.to_owned(), step.name.clone());
        let seen = WaitSeen {
            tenant: tenant.to_owned(),
            wait,
            since: step.started_at.saturating_sub(step.lookback_ms),
            until: step.until,
            registered: false,
            owed: None,
            settled: false,
            accepted: 0,
            drained: false,
        };
        self.wf.waits.entry(key.clone()).or_insert(seen);
        self.wf.open.insert(key);
    }

    fn meets(w: &WaitSeen, e: &Sent) -> bool {
        let subject = event_subject(&e.name, &e.data, e.id.as_deref());
        e.tenant == w.tenant && e.name == w.wait.event && matches_event(&w.wait.matches, &subject)
    }

    /// The index registered the wait at `now`: an event its look-back reaches is owed to it.
    pub fn wf_registered(&mut self, job: &str, step: &str, now: u64) {
        let key = (job.to_owned(), step.to_owned());
        let Some(w) = self.wf.waits.get(&key) else { return };
        let owed = self
            .wf
            .sent
            .values()
            .any(|e| e.last >= w.since && e.tenant == w.tenant && e.name == w.wait.event && Self::meets(w, e));
        if let Some(w) = self.wf.waits.get_mut(&key) {
            w.registered = true;
            if w.owed.is_none() && owed {
                w.owed = Some(now);
            }
        }
    }

    /// The event index took a send at `now` (`duplicate`: an id sent before): a new event
    /// is owed to every registered wait it meets, before the wait's timeout.
    pub fn wf_signaled(&mut self, sent: Sent, duplicate: bool) {
        self.wf.events += 1;
        if duplicate {
            self.wf.duplicates += 1;
            return;
        }
        let Some(n) = sent.data.get("n").and_then(Value::as_u64) else { return };
        let at = sent.at;
        // A wait past its timeout is owed nothing more (and a send no longer aims at it).
        let waits = &self.wf.waits;
        self.wf.open.retain(|k| waits.get(k).is_some_and(|w| w.until.is_none_or(|u| at < u)));
        for key in &self.wf.open {
            let Some(w) = self.wf.waits.get_mut(key) else { continue };
            if w.registered && w.owed.is_none() && w.until.is_none_or(|u| at < u) && Self::meets(w, &sent) {
                w.owed = Some(at);
            }
        }
        self.wf.sent.entry(n).and_modify(|e| e.last = at).or_insert(sent);
    }

    /// A resume of wait `step` of `job` with `data` was answered (`accepted`); `before` and
    /// `after` are the run just before and just after.
    pub fn wf_resumed(
        &mut self,
        (job, step): (&str, &str),
        data: &Value,
        accepted: bool,
        before: Option<&edgejobs_core::Job>,
        after: Option<&edgejobs_core::Job>,
    ) {
        const NAME: &str = "an-event-resumes-a-wait-once";
        self.check(NAME);
        let key = (job.to_owned(), step.to_owned());
        let waiting = before.is_some_and(|j| {
            j.state == edgejobs_core::JobState::Scheduled
                && j.steps.iter().any(|s| s.name == step && s.state == StepState::Waiting)
        });
        if !accepted {
            self.wf.refused += 1;
            if waiting {
                self.fail(NAME, format!("a resume of wait {step} of {job} was refused while it waited"));
            }
            if let Some(w) = self.wf.waits.get_mut(&key) {
                w.settled = true;
            }
            self.wf.open.remove(&key);
            return;
        }
        self.wf.resumed += 1;
        self.wf.open.remove(&key);
        let Some(w) = self.wf.waits.get_mut(&key) else {
            self.fail(NAME, format!("a resume of {step} of {job} was accepted, and no such wait was recorded"));
            return;
        };
        w.settled = true;
        w.accepted += 1;
        let (accepted, w) = (w.accepted, w.clone());
        if accepted > 1 {
            self.fail(NAME, format!("wait {step} of {job} was resumed {accepted} times (the last with {data})"));
            return;
        }
        let event = data.get("n").and_then(Value::as_u64).and_then(|n| self.wf.sent.get(&n));
        match event {
            Some(e) if Self::meets(&w, e) && e.last >= w.since => {}
            Some(e) => {
                let msg = format!(
                    "wait {step} of {job} (tenant {}, {:?}, since {}) was resumed with an event it does not take: {e:?}",
                    w.tenant, w.wait, w.since
                );
                self.fail(NAME, msg);
            }
            None => self.fail(NAME, format!("wait {step} of {job} was resumed with {data}, which no event carried")),
        }
        let recorded = after.and_then(|j| j.steps.iter().find(|s| s.name == step));
        if !recorded.is_some_and(|s| s.state == StepState::Completed && s.result.as_ref() == Some(data)) {
            self.fail(NAME, format!("wait {step} of {job} was resumed with {data}; its record is {recorded:?}"));
        }
    }

    /// After the drain: every wait an event was owed to was reached by a resume.
    pub fn wf_drained(&mut self) {
        const NAME: &str = "an-event-resumes-a-wait-once";
        let owed: Vec<((String, String), u64)> = self
            .wf
            .waits
            .iter()
            .filter(|(_, w)| !w.settled)
            .filter_map(|(k, w)| w.owed.map(|at| (k.clone(), at)))
            .collect();
        self.check(NAME);
        if let Some(((job, step), at)) = owed.first() {
            let msg = format!(
                "{} waits met by an event after their registration were never resumed, e.g. {step} of {job} (event at {at})",
                owed.len()
            );
            self.fail(NAME, msg);
        }
    }
}
