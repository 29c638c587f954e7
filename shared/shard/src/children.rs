//! Child jobs of workflow runs (#29): `step.invoke` and `step.fan_out`. Children live in
//! their parent's shard, so a child's end and its parent's resume are one transaction: every
//! write passes through [`settle`] (from `flow::apply`), which records each child that became
//! final in its parent's step and queues the parent once all of the step's children are
//! final; a run that ends cancelled cancels its waiting children in the same transaction.

use std::collections::BTreeMap;

use edgejobs_core::machine::{self, Effect, Event};
use edgejobs_core::plan::Plan;
use edgejobs_core::workflow::{self, Parent, StepReport};
use edgejobs_core::{Job, JobId, JobState, stats};

use crate::sql::{Sql, StoreError};
use crate::store;

#[cfg(feature = "bugs")]
thread_local! {
    static TRACE_DROPPED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Switches this thread's `child_trace_dropped` bug (feature `bugs`, for the simulation:
/// `insert` is a function of the plan, with no shard to read `Shard::bugs` from).
#[cfg(feature = "bugs")]
pub fn switch_bugs(trace_dropped: bool) {
    TRACE_DROPPED.with(|c| c.set(trace_dropped));
}

fn trace_dropped() -> bool {
    #[cfg(feature = "bugs")]
    return TRACE_DROPPED.with(std::cell::Cell::get);
    #[cfg(not(feature = "bugs"))]
    false
}

/// The children that reports carry (prepared by the edge), by run and step position.
pub type Invoked = BTreeMap<(JobId, u32), Vec<Job>>;

/// Collects the children of the invoke and fan-out steps among `events`.
pub fn invoked<'a>(events: impl Iterator<Item = (&'a JobId, &'a Event)>) -> Invoked {
    let mut out = Invoked::new();
    for (id, e) in events {
        if let Event::Step {
            step: StepReport::Invoke { seq, children, .. } | StepReport::FanOut { seq, children, .. },
            ..
        } = e
        {
            out.insert((id.clone(), *seq), children.clone());
        }
    }
    out
}

/// Inserts the children of the steps this plan recorded for the first time (`before`: how
/// many steps each run had when loaded), each owned by its run's tenant and linked to the
/// run and step, sent to its lane (or its alarm, when delayed).
pub fn insert(plan: &mut Plan, before: &BTreeMap<JobId, usize>, invoked: Invoked) {
    for ((id, seq), kids) in invoked {
        let Some(run) = plan.updates.iter().find(|j| j.id == id) else { continue };
        let fresh = before.get(&id).is_some_and(|n| *n <= seq as usize);
        let Some(step) = run.steps.get(seq as usize) else { continue };
        let ids: Vec<&JobId> = step.children.iter().map(|c| &c.id).collect();
        if !fresh || ids != kids.iter().map(|k| &k.id).collect::<Vec<_>>() {
            continue;
        }
        let (tenant, name) = (run.tenant.clone(), step.name.clone());
        for mut kid in kids {
            kid.tenant = tenant.clone();
            kid.parent = Some(Parent { job: id.clone(), step: name.clone() });
            // A child continues its run's trace (#32), unless its step's report named a
            // context (the span of the step that started it).
            if !trace_dropped() {
                kid.trace = kid.trace.or_else(|| run.trace.clone());
            }
            let effect = if kid.state == JobState::Scheduled { Effect::Alarm(kid.run_at) } else { Effect::Enqueue };
            plan.deltas.extend(stats::created(&kid));
            plan.effects.add(&kid, effect);
            plan.inserts.push(kid);
        }
    }
}

/// Records the children this plan ends in their parents, and cancels the waiting children of
/// the runs it cancels; the parents' and children's new states join the plan.
pub fn settle(db: &impl Sql, plan: &mut Plan, now: u64) -> Result<(), StoreError> {
    let ended: Vec<Job> =
        plan.updates.iter().filter(|j| j.parent.is_some() && j.state.is_finished()).cloned().collect();
    let cancelled: Vec<JobId> =
        plan.updates.iter().filter(|j| j.state == JobState::Cancelled).flat_map(workflow::waiting_children).collect();
    if ended.is_empty() && cancelled.is_empty() {
        return Ok(());
    }
    // Children to cancel (unless this plan has them already).
    let missing: Vec<JobId> =
        cancelled.iter().filter(|id| !plan.updates.iter().any(|j| &j.id == *id)).cloned().collect();
    for kid in store::load_many(db, &missing)? {
        if let Ok(t) = machine::apply(&kid, Event::Cancel, now, 0.5) {
            plan.deltas.extend(stats::transition(&kid, &t.job, now));
            plan.effects.add(&t.job, t.effect);
            plan.updates.push(t.job);
        }
    }
    // Parents of the children that ended, from the plan when it holds them.
    let parents: Vec<JobId> = ended.iter().filter_map(|j| j.parent.as_ref().map(|p| p.job.clone())).collect();
    let absent: Vec<JobId> = parents.iter().filter(|id| !plan.updates.iter().any(|j| &j.id == *id)).cloned().collect();
    let mut loaded: BTreeMap<JobId, Job> =
        store::load_many(db, &absent)?.into_iter().map(|j| (j.id.clone(), j)).collect();
    for child in &ended {
        let Some(pid) = child.parent.as_ref().map(|p| p.job.clone()) else { continue };
        let before = match plan.updates.iter().find(|j| j.id == pid) {
            Some(j) => j.clone(),
            None => match loaded.remove(&pid) {
                Some(j) => j,
                None => continue, // the parent is gone (retention): nothing to resume
            },
        };
        let Some(t) = workflow::child_done(&before, child, now) else {
            if !plan.updates.iter().any(|j| j.id == pid) {
                loaded.insert(pid, before);
            }
            continue;
        };
        plan.deltas.extend(stats::transition(&before, &t.job, now));
        plan.effects.add(&t.job, t.effect);
        match plan.updates.iter_mut().find(|j| j.id == pid) {
            Some(slot) => *slot = t.job,
            None => plan.updates.push(t.job),
        }
    }
    Ok(())
}
