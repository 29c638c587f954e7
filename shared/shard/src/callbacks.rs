//! Completion callbacks (#30), fired in the transaction that ends their job: every write
//! passes through [`fire`] (from `flow::apply`), which inserts, in this shard, the callback
//! job of each job the plan completes (`on_complete`) or kills (`on_fail`; a cancelled job
//! fires neither), the finished job's summary merged in; and counts each job of a batch the
//! first time it is final, inserting the batch's callback when the last one is.
//!
//! Table `batches` (created with the others in `store.rs`): one row per batch opened by
//! `POST /v1/jobs/batch` with `on_complete` (`open`): its total, its counts of completed,
//! dead and cancelled jobs, whether its callback fired, and `doc`, the [`BatchOpen`] (its
//! tenant and the callback's template).
//!
//! A callback's id is fixed when its job is enqueued (its header values are sealed under
//! it), so a template fires once: `fired_at` on the job's template, `fired` on the batch's
//! row, both written with the insert; an id already taken (a job restored from a backup
//! taken between its end and its callback's) is not inserted again.

use std::collections::{BTreeMap, BTreeSet};

use edgejobs_core::callbacks::{self, BatchOpen, Callback, Which};
use edgejobs_core::machine::Effect;
use edgejobs_core::plan::Plan;
use edgejobs_core::{Job, JobId, JobState, stats};

use crate::sql::{Cols, Sql, StoreError, int, text};
use crate::store;

/// Writes the rows of the batches `opened` whose jobs `plan` creates (a batch's total is
/// the number of its jobs the plan inserts; a batch none of whose jobs was created gets no
/// row and never fires).
pub fn open(db: &impl Sql, plan: &Plan, opened: &[BatchOpen]) -> Result<(), StoreError> {
    for b in opened {
        let total = plan.inserts.iter().filter(|j| j.batch.as_deref() == Some(b.id.as_str())).count() as u64;
        if total == 0 {
            continue;
        }
        db.rows(
            "INSERT INTO batches (id, total, completed, dead, cancelled, fired, doc) VALUES (?, ?, 0, 0, 0, 0, ?)",
            &[text(b.id.clone()), int(total), text(store::to_json(b)?)],
        )?;
    }
    Ok(())
}

/// Fires the callbacks of the jobs `plan` ends and of the batches whose last job it ends:
/// each callback job joins the plan's inserts (counted as created, sent or given the alarm
/// by the plan's effects), and each template that fired is marked in its job.
pub fn fire(db: &impl Sql, plan: &mut Plan, now: u64) -> Result<(), StoreError> {
    let mut fired: Vec<(Job, Effect)> = Vec::new();
    // Per batch: completed, dead, cancelled, newly counted.
    let mut counted: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for job in plan.updates.iter_mut() {
        let unfired = |t: &Option<Box<Callback>>| t.as_ref().is_some_and(|t| t.fired_at.is_none());
        let due = match job.state {
            JobState::Completed if unfired(&job.on_complete) => Some(Which::Complete),
            JobState::Dead if unfired(&job.on_fail) => Some(Which::Fail),
            _ => None,
        };
        if let Some(which) = due {
            let summary = callbacks::job_summary(job);
            let slot = match which {
                Which::Complete => &mut job.on_complete,
                Which::Fail => &mut job.on_fail,
            };
            if let Some(t) = slot.as_deref_mut() {
                // The callback continues its job's trace (#32).
                let (mut cb, effect) = t.fire(&job.tenant, now, summary);
                cb.trace = job.trace.clone();
                fired.push((cb, effect));
                t.fired_at = Some(now);
            }
        }
        if let Some(batch) = job.batch.clone().filter(|_| job.state.is_finished() && !job.batch_counted) {
            job.batch_counted = true;
            let n = counted.entry(batch).or_default();
            match job.state {
                JobState::Completed => n[0] += 1,
                JobState::Dead => n[1] += 1,
                _ => n[2] += 1,
            }
        }
    }
    fired.extend(count(db, &counted, now)?);
    if fired.is_empty() {
        return Ok(());
    }
    // An id already taken is not inserted twice (see the module's note).
    let taken: BTreeSet<JobId> =
        store::load_many(db, fired.iter().map(|(j, _)| &j.id))?.into_iter().map(|j| j.id).collect();
    for (job, effect) in fired {
        if taken.contains(&job.id) || plan.inserts.iter().chain(&plan.updates).any(|j| j.id == job.id) {
            continue;
        }
        plan.deltas.extend(stats::created(&job));
        plan.effects.add(&job, effect);
        plan.inserts.push(job);
    }
    Ok(())
}

/// Adds the newly counted ends to their batches' rows and returns the callback jobs of the
/// batches that are now complete (marking them fired). A batch without a row here (its
/// row was never written, or the job was restored from a backup) is skipped.
fn count(db: &impl Sql, counted: &BTreeMap<String, [u64; 3]>, now: u64) -> Result<Vec<(Job, Effect)>, StoreError> {
    let mut out = Vec::new();
    for (id, [completed, dead, cancelled]) in counted {
        db.rows(
            "UPDATE batches SET completed = completed + ?, dead = dead + ?, cancelled = cancelled + ? WHERE id = ?",
            &[int(*completed), int(*dead), int(*cancelled), text(id.clone())],
        )?;
        let rows = db.rows(
            "SELECT total, completed, dead, cancelled, fired, doc FROM batches WHERE id = ?",
            &[text(id.clone())],
        )?;
        let Some(row) = rows.into_iter().next() else { continue };
        let mut c = Cols::new(row);
        let (total, completed, dead, cancelled, was_fired) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()? != 0);
        if was_fired || completed + dead + cancelled < total {
            continue;
        }
        let open: BatchOpen = store::parse(&c.text()?)?;
        db.rows("UPDATE batches SET fired = 1 WHERE id = ?", &[text(id.clone())])?;
        let summary = callbacks::batch_summary(id, total, completed, dead, cancelled);
        out.push(open.on_complete.fire(&open.tenant, now, summary));
    }
    Ok(out)
}
