//! Switches that bring known bugs back (feature `bugs`, never in a deployed build), so the
//! simulation can prove that its invariants catch them. Each switch is the smallest change
//! that reintroduces the bug as it was, or as it would be written by someone who forgot
//! the rule.

use edgejobs_core::machine::Event;
use edgejobs_core::plan::{self, JobEvent, Plan};
use edgejobs_core::protocol::ApplyMany;
use edgejobs_core::report::Report;
use edgejobs_core::{JobId, JobState};
use std::collections::BTreeSet;

use crate::sql::{Sql, int};
use crate::store;
use crate::timers::{PAGE, SweepRun};
use crate::{Effects, Host, Outcome, Shard};

/// Which bugs are in. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bugs {
    /// A consumer's report (heartbeat, completion, failure) is applied to the job's current
    /// attempt whatever attempt it names: the attempt check is gone.
    pub unchecked_attempts: bool,
    /// The sweep re-sends every job untouched for a while whose state is queued *or
    /// cancelled*, writing it back as queued (it forgot the state machine).
    pub sweep_resends_cancelled: bool,
    /// A schedule's run carries no idempotency key and the alarm forgets to move the
    /// schedule on: a tick fires again at the next alarm.
    pub schedule_ticks_twice: bool,
    /// Events are loaded and planned in one step and written in a later one, with other
    /// operations in between (an `await` between load and save): see [`Staged`].
    pub stale_overwrite: bool,
    /// A caller's job may take a key in the schedules' namespace, and a schedule's run
    /// reuses whatever job its tick's key names: a pre-created job suppresses the run.
    pub schedule_key_hijack: bool,
    /// A job that ends through the edge's events (a completion, a cancel, a death) is not
    /// counted off its tenant's pending jobs: `TENANT_MAX_PENDING` would refuse forever.
    pub pending_uncounted: bool,
    /// A consumer's report is applied whatever lease token it carries: the shard hands the
    /// job's live token in for it (someone "fixed" refused reports by trusting the caller).
    pub unchecked_lease: bool,
    /// A re-seal binds the values it re-seals to nothing (an empty job id) instead of their
    /// job: they no longer open where they are, and the old key's retirement loses them.
    pub reseal_unbound: bool,
    /// A create ignores that a key moved to another shard after a growth of `SHARD_COUNT`
    /// (as before growth existed): a router that missed the growth creates the key's job
    /// at the old home while the new home holds one.
    pub moved_key_created: bool,
    /// The flow gate admits a job whatever its concurrency key's count (`running < limit`
    /// forgotten): a key runs more than its limit.
    pub flow_over_limit: bool,
    /// A job that ends cancelled or dead keeps its concurrency slots (the release forgot
    /// those endings): the key's count drifts above the jobs holding it, and it stalls.
    pub flow_slot_leak: bool,
    /// A released slot does not start the key's next waiting job (the release forgot to
    /// pump its list): jobs wait while their key has room.
    pub flow_no_wake: bool,
    /// A schedule whose runs carry a concurrency key lives on its name's shard, as before
    /// `schedule::home` (the router's placement, which the simulation plays): its runs are
    /// counted apart from the key's other jobs, and the key runs over its limit.
    pub schedule_misplaced: bool,
    /// A finish that takes the next jobs for its caller takes queued edge jobs that wait
    /// in a flow list, past the gate (the key's next job taken directly, its admission
    /// forgotten): a key runs over its limit.
    pub take_past_gate: bool,
    /// A suspend (a sleep, a wait, a step retry) writes the run's last completed `run` step
    /// back as retrying (someone "reset the step in flight" when the attempt ended): the next
    /// execution runs a step whose result was recorded.
    pub step_forgotten: bool,
    /// A resume completes a wait that an earlier resume completed, as long as its run is not
    /// over (the check that the step still waits was left to the run's state): a repeated
    /// delivery resumes the wait twice, the second event's data replacing the first's.
    pub resume_twice: bool,
    /// A live update (#30) is applied whatever lease token it carries (the lease check
    /// forgot the new event, as it once did): anyone may write a running job's progress,
    /// metadata and stream.
    pub update_unleased: bool,
    /// A live update numbers its chunks without reading the job's stored ones (the tape is
    /// not loaded) and writes them over the rows with the same numbers: a stream loses its
    /// earlier chunks.
    pub live_forgets_tape: bool,
    /// A workflow run's child (an invoke or fan-out step's) is inserted with the context its
    /// step's report named and nothing else (#32: `or_else(run.trace)` forgotten): a child
    /// whose report named none starts no trace at all, cut off from its run's.
    pub child_trace_dropped: bool,
}

/// Switches the bugs of `b` that live in functions without a shard on for this thread: the
/// flow gate's (`flow_*`; it runs inside `flow::apply`, which has no shard to read
/// `Shard::bugs` from), the live tape's and the children's insert's (`child_trace_dropped`).
pub fn switch_flow(b: &Bugs) {
    crate::flow::switch_bugs(crate::flow::FlowBugs {
        over_limit: b.flow_over_limit,
        slot_leak: b.flow_slot_leak,
        no_wake: b.flow_no_wake,
    });
    crate::live::switch_bugs(b.live_forgets_tape);
    crate::children::switch_bugs(b.child_trace_dropped);
}

impl Bugs {
    /// With `take_past_gate`, adds up to `take` waiting edge jobs to the sends a finish
    /// takes from, their wait cleared and written without the gate.
    pub fn skip_gate_on_take(
        &self,
        db: &impl Sql,
        mut effects: Effects,
        take: usize,
        now: u64,
    ) -> Result<Effects, crate::sql::StoreError> {
        if !self.take_past_gate || take == 0 {
            return Ok(effects);
        }
        let q = "SELECT doc FROM jobs WHERE state = 'queued' AND instr(doc, '\"waiting_for\":') > 0 LIMIT ?";
        let mut plan = Plan::default();
        for row in db.rows(q, &[int(take as u64)])? {
            let mut job: edgejobs_core::Job = store::parse(&crate::sql::Cols::new(row).text()?)?;
            if job.lane != edgejobs_core::Lane::Edge {
                continue;
            }
            job.waiting_for = None;
            let r = edgejobs_core::wire::JobRef {
                id: job.id.clone(),
                attempt: job.attempt + 1,
                epoch: job.epoch,
                trace: job.trace.as_ref().map(edgejobs_core::trace::TraceContext::parent_only),
            };
            effects.enqueue.push((edgejobs_core::Lane::Edge, r));
            plan.updates.push(job);
        }
        store::write_plan(db, &plan, now)?;
        Ok(effects)
    }

    /// With `pending_uncounted`, drops the deltas that count jobs off their tenant's pending.
    pub fn pending_uncounted(&self, plan: &mut Plan) {
        if self.pending_uncounted {
            plan.deltas.retain(|d| {
                !matches!(d, edgejobs_core::stats::Delta::Count { name: edgejobs_core::stats::Metric::TenantPendingJobs, n, .. } if *n < 0.0)
            });
        }
    }

    /// With `unchecked_attempts`, rewrites the attempt of consumer reports to the current one.
    pub fn unchecked_attempts(&self, db: &impl Sql, mut events: Vec<JobEvent>) -> Outcome<Vec<JobEvent>> {
        if !self.unchecked_attempts {
            return Ok(events);
        }
        let ids: BTreeSet<JobId> = events.iter().map(|e| e.id.clone()).collect();
        let jobs = store::load_many(db, &ids)?;
        for e in &mut events {
            let Some(job) = jobs.iter().find(|j| j.id == e.id) else { continue };
            match &mut e.event {
                Event::Heartbeat { attempt, .. } | Event::Complete { attempt, .. } | Event::Fail { attempt, .. } => {
                    *attempt = job.attempt
                }
                _ => {}
            }
        }
        Ok(events)
    }
}

impl Bugs {
    /// With `step_forgotten`, the runs a report suspended forget their last completed `run`
    /// step (written back as retrying, its result dropped).
    pub fn step_forgotten(&self, plan: &mut Plan) {
        use edgejobs_core::workflow::{StepKind, StepState};
        if !self.step_forgotten {
            return;
        }
        for job in &mut plan.updates {
            let suspended = job
                .steps
                .last()
                .is_some_and(|s| matches!(s.state, StepState::Sleeping | StepState::Waiting | StepState::Retrying));
            if job.state != JobState::Scheduled || !suspended {
                continue;
            }
            let n = job.steps.len() - 1;
            if let Some(s) =
                job.steps[..n].iter_mut().rev().find(|s| s.kind == StepKind::Run && s.state == StepState::Completed)
            {
                s.state = StepState::Retrying;
                s.result = None;
                s.ended_at = None;
            }
        }
    }

    /// With `resume_twice`, a resume of a wait an earlier resume completed finds it waiting
    /// again, its run suspended, while the run is not over (so the state machine accepts it).
    pub fn resume_twice(&self, loaded: &mut [edgejobs_core::Job], events: &[JobEvent]) {
        use edgejobs_core::workflow::{StepKind, StepState};
        if !self.resume_twice {
            return;
        }
        for e in events {
            let Event::Resume { step, .. } = &e.event else { continue };
            let Some(job) = loaded.iter_mut().find(|j| j.id == e.id) else { continue };
            if !matches!(job.state, JobState::Queued | JobState::Scheduled | JobState::Active) {
                continue;
            }
            let done = |s: &&mut edgejobs_core::workflow::Step| {
                s.name == *step && s.kind == StepKind::Wait && s.state == StepState::Completed
            };
            if let Some(s) = job.steps.iter_mut().find(done) {
                s.state = StepState::Waiting;
                job.state = JobState::Scheduled;
            }
        }
    }

    /// With `unchecked_lease`, gives every consumer report the live token of its job (with
    /// `update_unleased`, every live update).
    pub fn unchecked_lease(&self, db: &impl Sql, mut reports: Vec<Report>) -> Outcome<Vec<Report>> {
        if !self.unchecked_lease && !self.update_unleased {
            return Ok(reports);
        }
        let ids: BTreeSet<JobId> = reports.iter().map(|e| e.id.clone()).collect();
        let jobs = store::load_many(db, &ids)?;
        for r in &mut reports {
            if !self.unchecked_lease && !matches!(r.event, edgejobs_core::machine::Event::Update { .. }) {
                continue;
            }
            if let Some(job) = jobs.iter().find(|j| j.id == r.id)
                && job.lease.is_some()
            {
                r.lease = job.lease.clone();
            }
        }
        Ok(reports)
    }
}

/// The `reseal_unbound` bug: opens a payload's headers (bound to their job) and seals them
/// again under the newest key bound to an empty job id. Returns whether it changed them.
pub fn reseal_unbound(payload: &mut serde_json::Value, job_id: &str, keys: &edgejobs_core::seal::Keys) -> bool {
    use edgejobs_core::seal;
    let newest = format!("{}{}:", seal::PREFIX, keys.newest_id());
    let stale = payload.get("headers").and_then(|h| h.as_object()).is_some_and(|h| {
        h.values().any(|v| v.as_str().is_some_and(|s| s.starts_with(seal::PREFIX) && !s.starts_with(&newest)))
    });
    let Ok(opened) = seal::open_headers(payload, job_id, Some(keys)) else { return false };
    if !stale {
        return false;
    }
    if let Some(serde_json::Value::Object(h)) = payload.get_mut("headers") {
        for (name, plain) in opened {
            h.insert(name, serde_json::Value::String(plain));
        }
    }
    let mut n = 0u8;
    seal::seal_headers(payload, "", keys, &mut || {
        n = n.wrapping_add(1);
        Ok([n; 12])
    })
    .is_ok()
}

/// Events loaded and planned, not written yet (the stale-overwrite bug's window).
#[derive(Debug)]
pub struct Staged {
    plan: Plan,
    answers: Vec<Result<edgejobs_core::Job, edgejobs_core::machine::Refusal>>,
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// The first half of a buggy apply: load and plan, write nothing.
    pub fn stage_apply(&self, r: ApplyMany) -> Outcome<Staged> {
        let now = self.host.now_ms();
        let ids: BTreeSet<JobId> = r.events.iter().map(|e| e.id.clone()).collect();
        let loaded = store::load_many(&self.db, &ids)?;
        let (plan, answers) = plan::apply_events(loaded, r.events, now, &mut || self.host.random_unit());
        Ok(Staged { plan, answers })
    }

    /// The second half, later: writes the plan made from what was loaded then.
    pub fn write_staged(
        &self,
        staged: Staged,
    ) -> Outcome<(Vec<Result<edgejobs_core::Job, edgejobs_core::machine::Refusal>>, Effects)> {
        let now = self.host.now_ms();
        let Staged { mut plan, answers } = staged;
        self.commit(|db| {
            crate::flow::apply(db, &mut plan, now)?;
            Ok((answers, plan.effects))
        })
    }

    /// The buggy first sweep page: queued or cancelled, back to queued and re-sent.
    pub(crate) fn buggy_resend_page(&self, run: &mut SweepRun) -> Outcome<Effects> {
        let now = self.host.now_ms();
        let cutoff = now.saturating_sub(run.policy.queued_after_ms);
        let out = self.commit(|db| {
            let jobs = store::load_where(
                db,
                "state IN ('queued', 'cancelled') AND updated_at < ? ORDER BY updated_at LIMIT ?",
                &[int(cutoff), int(PAGE)],
            )?;
            let loaded = jobs.len();
            let mut plan = Plan::default();
            for mut j in jobs {
                j.state = JobState::Queued;
                j.updated_at = now;
                plan.effects.add(&j, edgejobs_core::machine::Effect::Enqueue);
                plan.updates.push(j);
            }
            let resent = plan.updates.len() as u64;
            crate::flow::apply(db, &mut plan, now)?;
            Ok((plan.effects, loaded, resent))
        })?;
        let (effects, loaded, resent) = out;
        run.report.resent += resent;
        if (loaded as u64) < PAGE {
            run.start_active();
        }
        Ok(effects)
    }
}
