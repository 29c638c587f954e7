//! What runs on the shard's own clock: the alarm that wakes scheduled jobs (and fires due
//! schedules, see `schedules`), and the sweep (a cron task) that re-sends lost queue
//! messages and fails lost attempts. Both work in pages of [`PAGE`] jobs, each page one
//! transaction whose effects the caller carries out before asking for the next page, so a
//! cancel arriving while a page's messages are being sent finds the committed state.

use edgejobs_core::Job;
use edgejobs_core::machine::Event;
use edgejobs_core::plan::{self, JobEvent, SweepPolicy};
use edgejobs_core::protocol::SweepReport;

use crate::sql::{Sql, Value, int, text};
use crate::store;
use crate::{Effects, Host, Outcome, Shard};

/// Jobs loaded per page.
pub const PAGE: u64 = 500;
/// Pages per alarm or sweep call; the rest waits for the next alarm (set at once) or the
/// next sweep.
pub const MAX_PAGES: usize = 20;

/// One page's result: jobs loaded, events accepted, the last job loaded, the effects.
#[derive(Debug)]
pub struct Page {
    pub loaded: usize,
    pub accepted: u64,
    pub last: Option<Job>,
    pub effects: Effects,
}

/// Where a sweep stands between its pages.
#[derive(Debug, Clone)]
pub struct SweepRun {
    pub policy: SweepPolicy,
    pub report: SweepReport,
    pages: usize,
    /// `None` while re-sending queued jobs; then the last active job's id walked.
    active_after: Option<String>,
    done: bool,
}

impl SweepRun {
    pub fn new(policy: SweepPolicy) -> SweepRun {
        SweepRun {
            policy,
            report: SweepReport { complete: true, ..SweepReport::default() },
            pages: 0,
            active_after: None,
            done: false,
        }
    }
}

impl SweepRun {
    /// The re-send pages are over: walk active attempts next.
    #[cfg_attr(not(feature = "bugs"), allow(dead_code))]
    pub(crate) fn start_active(&mut self) {
        self.active_after = Some(String::new());
    }
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// One page: loads jobs with `query` (bounded by `PAGE`), applies the events `pick`
    /// chooses, and commits.
    pub fn page(&self, query: &str, binds: &[Value], pick: impl Fn(&Job, u64) -> Option<Event>) -> Outcome<Page> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let jobs = store::load_where(db, query, binds)?;
            let last = jobs.last().cloned();
            let events: Vec<JobEvent> =
                jobs.iter().filter_map(|j| pick(j, now).map(|event| JobEvent { id: j.id.clone(), event })).collect();
            let loaded = jobs.len();
            let (mut plan, answers) = plan::apply_events(jobs, events, now, &mut || self.host.random_unit());
            crate::flow::apply(db, &mut plan, now)?;
            Ok(Page {
                loaded,
                accepted: answers.iter().filter(|a| a.is_ok()).count() as u64,
                last,
                effects: plan.effects,
            })
        })
    }

    /// A page of the alarm: wakes up to [`PAGE`] scheduled jobs that are due. Returns its
    /// effects and whether a full page was loaded (more may be due).
    pub fn wake_page(&self) -> Outcome<(Effects, bool)> {
        let q = "state = 'scheduled' AND run_at <= ? ORDER BY run_at LIMIT ?";
        let page = self.page(q, &[int(self.host.now_ms()), int(PAGE)], |_, _| Some(Event::Wake))?;
        let mut effects = page.effects;
        effects.merge(self.flow_wake()?);
        let now = self.host.now_ms();
        self.commit(|db| Ok(crate::live::expire(db, now)?))?;
        Ok((effects, page.loaded as u64 == PAGE))
    }

    /// The flow gate's share of the alarm: rate lists whose next start is due, and resumed
    /// lists with more to move (see `flow::wake`).
    pub fn flow_wake(&self) -> Outcome<Effects> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let mut plan = edgejobs_core::plan::Plan::default();
            crate::flow::wake(db, &mut plan, now)?;
            crate::flow::apply(db, &mut plan, now)?;
            Ok(plan.effects)
        })
    }

    /// The next page of a sweep: re-sends queued jobs untouched for `queued_after_ms` (a
    /// lost queue message) through the state machine, then fails lost attempts (retried by
    /// policy). `None` when the sweep is over (`run.report` says what it did). Idempotent:
    /// sweeping twice changes nothing more.
    pub fn sweep_page(&self, run: &mut SweepRun) -> Outcome<Option<Effects>> {
        if run.done {
            return Ok(None);
        }
        if run.pages == MAX_PAGES {
            run.report.complete = false;
            run.done = true;
            return Ok(None);
        }
        run.pages += 1;
        let policy = run.policy;
        match run.active_after.clone() {
            None => {
                #[cfg(feature = "bugs")]
                if self.bugs.sweep_resends_cancelled {
                    return self.buggy_resend_page(run).map(Some);
                }
                // Jobs the flow gate holds back were never sent (nothing was lost) and are
                // never updated by a sweep: left out here, or a page of them would be read
                // again by every page (the walk relies on re-sent jobs' `updated_at` moving).
                let q = "state = 'queued' AND updated_at < ? AND instr(doc, '\"waiting_for\":') = 0
                         ORDER BY updated_at LIMIT ?";
                let cutoff = self.host.now_ms().saturating_sub(policy.queued_after_ms);
                let pick = |j: &Job, now| plan::sweep_resends(j, now, &policy).then_some(Event::Resend);
                let page = self.page(q, &[int(cutoff), int(PAGE)], pick)?;
                run.report.resent += page.accepted;
                if (page.loaded as u64) < PAGE {
                    run.start_active();
                }
                Ok(Some(page.effects))
            }
            // Active attempts, walked by id (their expiry depends on each job's own timeout).
            Some(after) => {
                let q = "state = 'active' AND id > ? ORDER BY id LIMIT ?";
                let pick = |j: &Job, now| plan::sweep_expiry(j, now, &policy);
                let page = self.page(q, &[text(after), int(PAGE)], pick)?;
                run.report.timed_out += page.accepted;
                match page.last {
                    Some(j) if (page.loaded as u64) == PAGE => run.active_after = Some(j.id.to_string()),
                    _ => run.done = true,
                }
                Ok(Some(page.effects))
            }
        }
    }
}
