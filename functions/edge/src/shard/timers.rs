//! What runs on the shard's own clock: the alarm that wakes scheduled jobs (and fires due
//! schedules, see `schedules`), and the sweep
//! (a cron task) that re-sends lost queue messages and fails lost attempts. Both work in
//! pages of [`PAGE`] jobs, each page one transaction with its effects after it, so a
//! cancel arriving while a page's messages are being sent finds the committed state.

use edgejobs_core::machine::Event;
use edgejobs_core::plan::{self, JobEvent, SweepPolicy};
use edgejobs_core::protocol::{Sweep, SweepReport};
use edgejobs_core::{ApiError, Job};
use serde_json::json;

use super::store::{int, text};
use super::{JobShard, Out};
use crate::http::log;
use crate::platform::{now_ms, random_unit};

/// Jobs loaded per page.
pub const PAGE: u64 = 500;
/// Pages per alarm or sweep call; the rest waits for the next alarm (set at once) or the
/// next sweep.
pub const MAX_PAGES: usize = 20;

impl JobShard {
    /// One page: loads jobs with `query` (bounded by `PAGE`), applies the events `pick`
    /// chooses, commits, then carries out the effects. Returns (jobs loaded, events
    /// accepted, the last job loaded).
    async fn page(
        &self,
        query: &str,
        binds: Vec<worker::SqlStorageValue>,
        pick: impl Fn(&Job, u64) -> Option<Event>,
    ) -> Result<(usize, u64, Option<Job>), ApiError> {
        let now = now_ms();
        let (loaded, accepted, last, effects) = self.commit(|tx| {
            let jobs = tx.load_where(query, binds)?;
            let last = jobs.last().cloned();
            let events: Vec<JobEvent> =
                jobs.iter().filter_map(|j| pick(j, now).map(|event| JobEvent { id: j.id.clone(), event })).collect();
            let loaded = jobs.len();
            let (plan, answers) = plan::apply_events(jobs, events, now, &mut random_unit);
            tx.apply(&plan)?;
            Ok((loaded, answers.iter().filter(|a| a.is_ok()).count() as u64, last, plan.effects))
        })?;
        self.carry_out(effects).await;
        Ok((loaded, accepted, last))
    }

    /// The alarm: wakes every scheduled job that is due, page by page, fires the schedules
    /// that are due, then sets the alarm for the next one (at once, when pages remained).
    pub(super) async fn wake_due(&self) {
        for _ in 0..MAX_PAGES {
            let q = "state = 'scheduled' AND run_at <= ? ORDER BY run_at LIMIT ?";
            match self.page(q, vec![int(now_ms()), int(PAGE)], |_, _| Some(Event::Wake)).await {
                Ok((loaded, _, _)) if (loaded as u64) < PAGE => break,
                Ok(_) => {}
                Err(e) => {
                    log("error", "the alarm could not wake due jobs", json!({ "error": e.message }));
                    break;
                }
            }
        }
        self.fire_schedules().await;
        self.rearm_with(true).await;
    }

    /// The sweep of this shard: re-sends queued jobs untouched for `queued_after_ms` (a lost
    /// queue message) through the state machine, fails lost attempts (retried by policy),
    /// and re-arms the alarm. Idempotent: running it twice changes nothing more.
    pub(super) async fn sweep(&self, r: Sweep) -> Out<Sweep> {
        let policy: SweepPolicy = r.policy;
        let mut report = SweepReport { complete: true, ..SweepReport::default() };
        let mut pages = 0;
        loop {
            if pages == MAX_PAGES {
                report.complete = false;
                break;
            }
            pages += 1;
            let q = "state = 'queued' AND updated_at < ? ORDER BY updated_at LIMIT ?";
            let cutoff = now_ms().saturating_sub(policy.queued_after_ms);
            let pick = |j: &Job, now| plan::sweep_resends(j, now, &policy).then_some(Event::Resend);
            let (loaded, accepted, _) = self.page(q, vec![int(cutoff), int(PAGE)], pick).await?;
            report.resent += accepted;
            if (loaded as u64) < PAGE {
                break;
            }
        }
        // Active attempts, walked by id (their expiry depends on each job's own timeout).
        let mut after = String::new();
        loop {
            if pages == MAX_PAGES {
                report.complete = false;
                break;
            }
            pages += 1;
            let q = "state = 'active' AND id > ? ORDER BY id LIMIT ?";
            let pick = |j: &Job, now| plan::sweep_expiry(j, now, &policy);
            let (loaded, accepted, last) = self.page(q, vec![text(after.clone()), int(PAGE)], pick).await?;
            report.timed_out += accepted;
            match last {
                Some(j) if (loaded as u64) == PAGE => after = j.id.to_string(),
                _ => break,
            }
        }
        self.rearm().await;
        Ok(report)
    }
}
