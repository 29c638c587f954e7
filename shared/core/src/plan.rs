//! Batch planning: what a shard writes and does for many jobs or events at once, decided
//! by pure functions. The shard loads the jobs a batch touches, calls a planner here, writes
//! the [`Plan`]'s saves and deltas in one synchronous transaction, and only then carries out
//! its [`Effects`] (queue sends, the alarm). Nothing here awaits, so nothing can interleave
//! between reading a job and writing it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::id::JobId;
use crate::job::{Job, JobState, Lane, StreamEntry};
use crate::machine::{self, Disposition, Effect, Event, Refusal};
use crate::stats::{self, Delta};
use crate::wire::JobRef;

/// What to do after the commit: references to send to the queue (grouped into envelopes
/// by the shard) and the earliest time the alarm must fire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    pub enqueue: Vec<(Lane, JobRef)>,
    pub alarm: Option<u64>,
    /// The jobs the commit wrote, for the shard's subscribers (#30; see [`crate::live`]).
    pub touched: Vec<crate::live::Touched>,
}

impl Effects {
    /// Adds the effect of one committed transition of `job`.
    pub fn add(&mut self, job: &Job, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Enqueue => {
                let r = JobRef {
                    id: job.id.clone(),
                    attempt: job.attempt + 1,
                    epoch: job.epoch,
                    trace: job.trace.as_ref().map(crate::trace::TraceContext::parent_only),
                };
                self.enqueue.push((job.lane, r))
            }
            Effect::Alarm(at) => self.alarm = Some(self.alarm.map_or(at, |a| a.min(at))),
        }
    }

    pub fn merge(&mut self, other: Effects) {
        self.enqueue.extend(other.enqueue);
        self.touched.extend(other.touched);
        if let Some(at) = other.alarm {
            self.alarm = Some(self.alarm.map_or(at, |a| a.min(at)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.enqueue.is_empty() && self.alarm.is_none()
    }
}

/// What one batch writes: jobs to insert, jobs to update (their final versions), metric
/// deltas, and the effects to carry out after the commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub inserts: Vec<Job>,
    pub updates: Vec<Job>,
    pub deltas: Vec<Delta>,
    pub effects: Effects,
}

/// One event for one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub id: JobId,
    pub event: Event,
}

/// One consumer report: the event about job `id`, and the lease token of the attempt it
/// reports on (none for a start or a takeover, which are how a consumer obtains one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub id: JobId,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

impl Report {
    pub fn new(id: JobId, event: Event, lease: Option<String>) -> Report {
        Report { id, event, lease }
    }
}

/// Applies `events` in order to the `loaded` jobs (the current rows of the jobs they name).
/// Several events for one job apply one after the other to its newest version. Each event
/// is answered on its own: the job after it, or why it was refused (a refused event changes
/// nothing). `unit` draws uniform samples in `[0, 1)` for backoff jitter.
pub fn apply_events(
    loaded: Vec<Job>,
    events: Vec<JobEvent>,
    now: u64,
    unit: &mut impl FnMut() -> f64,
) -> (Plan, Vec<Result<Job, Refusal>>) {
    let items = events.into_iter().map(|e| (e.id, e.event, None));
    apply_in_order(loaded, items, now, unit, |_, _, _| Ok(()), |_, _| {})
}

/// Applies native consumers' reports in order, as [`apply_events`] applies events, with the
/// rules of leases first ([`machine::check_lease`]: native-lane jobs only, and every report
/// but a start or a takeover carries the running attempt's token). A start or a takeover
/// that begins an attempt gets a new token from `token` (the shard's randomness), which the
/// answer's job carries to the consumer; a refused report changes nothing.
pub fn apply_reports(
    loaded: Vec<Job>,
    reports: Vec<Report>,
    now: u64,
    unit: &mut impl FnMut() -> f64,
    token: &mut impl FnMut() -> String,
) -> (Plan, Vec<Result<Job, Refusal>>) {
    let items = reports.into_iter().map(|r| (r.id, r.event, r.lease));
    let issue = |begins: bool, t: &mut machine::Transition| {
        if begins && t.job.state == JobState::Active && t.job.lease.is_none() {
            t.job.lease = Some(token());
        }
    };
    apply_in_order(loaded, items, now, unit, machine::check_lease, issue)
}

/// The loop of [`apply_events`] and [`apply_reports`]: `check` may refuse an item before the
/// state machine sees it, `adjust` may complete a transition before it is planned (told
/// whether the item was a start or a takeover, which begin an attempt).
fn apply_in_order(
    loaded: Vec<Job>,
    items: impl ExactSizeIterator<Item = (JobId, Event, Option<String>)>,
    now: u64,
    unit: &mut impl FnMut() -> f64,
    check: impl Fn(&Job, &Event, Option<&str>) -> Result<(), Refusal>,
    mut adjust: impl FnMut(bool, &mut machine::Transition),
) -> (Plan, Vec<Result<Job, Refusal>>) {
    let mut jobs: BTreeMap<JobId, Job> = loaded.into_iter().map(|j| (j.id.clone(), j)).collect();
    let mut changed: BTreeSet<JobId> = BTreeSet::new();
    let mut plan = Plan::default();
    let mut answers = Vec::with_capacity(items.len());
    for (id, event, lease) in items {
        let Some(job) = jobs.get(&id) else {
            answers.push(Err(Refusal::NotFound { id: id.clone() }));
            continue;
        };
        if let Err(e) = check(job, &event, lease.as_deref()) {
            answers.push(Err(e));
            continue;
        }
        let resend = event == Event::Resend;
        let begins = matches!(event, Event::Start { .. } | Event::Reclaim { .. });
        match machine::apply(job, event, now, unit()) {
            Ok(mut t) => {
                adjust(begins, &mut t);
                plan.deltas.extend(stats::transition(job, &t.job, now));
                if resend {
                    plan.deltas.push(stats::resent());
                }
                plan.effects.add(&t.job, t.effect);
                changed.insert(id.clone());
                answers.push(match t.refusal {
                    Some(e) => Err(e),
                    None => Ok(t.job.clone()),
                });
                jobs.insert(id, t.job);
            }
            Err(e) => answers.push(Err(e)),
        }
    }
    plan.updates = changed.into_iter().filter_map(|id| jobs.remove(&id)).collect();
    (plan, answers)
}

/// The answer to one item of a create: the job, and whether this call created it (`false`:
/// its idempotency key already named it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub job: Job,
    pub created: bool,
}

/// An idempotency key to store: it names `job` until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrite {
    pub key: String,
    pub job: JobId,
    pub expires_at: u64,
}

/// Plans the creation of `new` jobs. `known` holds, for the idempotency keys among them
/// (scoped by tenant: [`Job::scoped_key`]),
/// the live job each key already names (keys that expired or whose job was deleted are
/// absent). A key seen twice in one batch creates one job; the second item gets it back.
pub fn create(
    new: Vec<Job>,
    known: BTreeMap<String, Job>,
    now: u64,
    window_ms: u64,
) -> (Plan, Vec<KeyWrite>, Vec<Created>) {
    let mut plan = Plan::default();
    let mut keys = Vec::new();
    let mut by_key = known;
    let mut answers = Vec::with_capacity(new.len());
    for job in new {
        if let Some(key) = &job.scoped_key() {
            if let Some(existing) = by_key.get(key) {
                answers.push(Created { job: existing.clone(), created: false });
                continue;
            }
            keys.push(KeyWrite { key: key.clone(), job: job.id.clone(), expires_at: now.saturating_add(window_ms) });
            by_key.insert(key.clone(), job.clone());
        }
        let effect = match job.state {
            JobState::Scheduled => Effect::Alarm(job.run_at),
            _ => Effect::Enqueue,
        };
        plan.deltas.extend(stats::created(&job));
        plan.effects.add(&job, effect);
        answers.push(Created { job: job.clone(), created: true });
        plan.inserts.push(job);
    }
    (plan, keys, answers)
}

/// One hand-off to record: attempt `attempt` of job `id` travels in stream entry `entry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    pub id: JobId,
    pub attempt: u32,
    pub entry: String,
}

/// Records which stream entries carry native attempts. Only a job still queued for exactly
/// that attempt is updated; anything else is a stale hand-off, refused with `stale_attempt`.
pub fn handoffs(loaded: Vec<Job>, items: Vec<Handoff>) -> (Plan, Vec<Result<(), Refusal>>) {
    let mut jobs: BTreeMap<JobId, Job> = loaded.into_iter().map(|j| (j.id.clone(), j)).collect();
    let mut changed = BTreeSet::new();
    let mut answers = Vec::with_capacity(items.len());
    for h in items {
        let Some(job) = jobs.get_mut(&h.id) else {
            answers.push(Err(Refusal::NotFound { id: h.id.clone() }));
            continue;
        };
        if job.state != JobState::Queued || job.attempt + 1 != h.attempt {
            answers.push(Err(Refusal::NotWaiting));
            continue;
        }
        job.stream_entry = Some(StreamEntry { attempt: h.attempt, entry: h.entry });
        changed.insert(h.id);
        answers.push(Ok(()));
    }
    let plan = Plan { updates: changed.into_iter().filter_map(|id| jobs.remove(&id)).collect(), ..Plan::default() };
    (plan, answers)
}

/// The sweep's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepPolicy {
    /// Re-send jobs queued (untouched) for longer than this.
    pub queued_after_ms: u64,
    /// Fail edge attempts still running this long past their timeout.
    pub active_grace_ms: u64,
    /// Fail native attempts without a heartbeat for this long (no consumer left to take over).
    pub native_lease_ms: u64,
}

/// Whether the sweep should re-send this job: queued and untouched for the threshold.
pub fn sweep_resends(job: &Job, now: u64, policy: &SweepPolicy) -> bool {
    // A job the flow gate holds back was never sent: nothing was lost.
    job.state == JobState::Queued
        && job.waiting_for.is_none()
        && job.updated_at.saturating_add(policy.queued_after_ms) < now
}

/// The event the sweep applies to an active job whose attempt was lost, if it was: edge
/// attempts running past their timeout plus a grace (room for the consumer's own report),
/// native attempts whose consumers all went silent (they take over from each other; this
/// catches the case where none is left).
pub fn sweep_expiry(job: &Job, now: u64, policy: &SweepPolicy) -> Option<Event> {
    if job.state != JobState::Active {
        return None;
    }
    let (expired, why) = match job.lane {
        Lane::Edge => (
            job.started_at
                .is_some_and(|s| s.saturating_add(job.timeout_ms).saturating_add(policy.active_grace_ms) < now),
            "timed out",
        ),
        Lane::Native => (
            job.heartbeat_at.or(job.started_at).is_some_and(|h| h.saturating_add(policy.native_lease_ms) < now),
            "lost its consumer (no heartbeat)",
        ),
    };
    expired.then(|| Event::Fail {
        attempt: job.attempt,
        error: format!("attempt {} {why} (found by the sweep)", job.attempt),
        disposition: Disposition::Retryable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::spec::parse_spec;
    use serde_json::json;

    fn job(n: u64, spec: serde_json::Value) -> Job {
        parse_spec(&spec, 1_000).expect("valid spec").into_job(JobId::new(1, 1_000 + n, n), 1_000 + n).0
    }

    fn ev(j: &Job, event: Event) -> JobEvent {
        JobEvent { id: j.id.clone(), event }
    }

    fn half() -> impl FnMut() -> f64 {
        || 0.5
    }

    #[test]
    fn reports_need_the_live_lease_and_a_takeover_issues_a_new_one() {
        let mut q = job(1, json!({ "type": "noop" }));
        q.lane = Lane::Native;
        let mut n = 0;
        let mut token = || {
            n += 1;
            format!("token-{n}")
        };
        let report = |event, lease: Option<&str>| Report::new(q.id.clone(), event, lease.map(str::to_owned));
        let (plan, answers) = apply_reports(
            vec![q.clone()],
            vec![report(Event::Start { attempt: 1 }, None)],
            2_000,
            &mut half(),
            &mut token,
        );
        let started = answers[0].clone().expect("started");
        assert_eq!((started.state, started.lease.as_deref()), (JobState::Active, Some("token-1")));
        assert_eq!(plan.updates, vec![started.clone()]);
        // A forged completion (no token, a wrong one) changes nothing; the holder's does.
        let beat = |lease| report(Event::Heartbeat { attempt: 1, progress: Some(json!(1)) }, lease);
        let (plan, answers) = apply_reports(
            vec![started.clone()],
            vec![
                report(Event::Complete { attempt: 1, result: None }, None),
                beat(Some("token-9")),
                beat(Some("token-1")),
            ],
            3_000,
            &mut half(),
            &mut token,
        );
        let codes: Vec<_> = answers.iter().map(|a| a.as_ref().map(|j| j.state).map_err(Refusal::code)).collect();
        assert_eq!(
            codes,
            [Err(ErrorCode::LeaseMismatch), Err(ErrorCode::LeaseMismatch), Ok(JobState::Active)],
            "only the holder's report applies"
        );
        assert_eq!(plan.updates.len(), 1);
        // A takeover after the lease issues a new token; the old holder's reports are refused.
        let reclaim = report(Event::Reclaim { attempt: 1, lease_ms: 1_000 }, None);
        let (_, answers) = apply_reports(vec![started.clone()], vec![reclaim], 9_000, &mut half(), &mut token);
        let taken = answers[0].clone().expect("taken over");
        assert_eq!((taken.attempt, taken.lease.as_deref()), (2, Some("token-2")));
        let late = report(Event::Complete { attempt: 2, result: None }, Some("token-1"));
        let (plan, answers) = apply_reports(vec![taken.clone()], vec![late], 9_001, &mut half(), &mut token);
        assert_eq!(
            (answers[0].clone().map_err(|r| r.code()).err(), plan.updates.len()),
            (Some(ErrorCode::LeaseMismatch), 0)
        );
        // Edge-lane jobs take no consumer report; the edge's own events need no lease.
        let edge = job(2, json!({ "type": "noop" }));
        let start = Report::new(edge.id.clone(), Event::Start { attempt: 1 }, None);
        let (plan, answers) = apply_reports(vec![edge.clone()], vec![start], 2_000, &mut half(), &mut token);
        assert_eq!(
            (answers[0].clone().map_err(|r| r.code()).err(), plan.updates.len()),
            (Some(ErrorCode::NotLeased), 0)
        );
        let (_, answers) =
            apply_events(vec![edge.clone()], vec![ev(&edge, Event::Start { attempt: 1 })], 2_000, &mut half());
        assert_eq!(answers[0].clone().map(|j| j.lease), Ok(None), "the edge runs its own jobs without leases");
    }

    #[test]
    fn events_for_one_job_apply_in_order_and_save_the_last_version_once() {
        let a = job(1, json!({ "type": "noop" }));
        let (plan, answers) = apply_events(
            vec![a.clone()],
            vec![ev(&a, Event::Start { attempt: 1 }), ev(&a, Event::Complete { attempt: 1, result: Some(json!(7)) })],
            5_000,
            &mut half(),
        );
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(plan.updates.len(), 1);
        assert_eq!((plan.updates[0].state, plan.updates[0].attempt), (JobState::Completed, 1));
        assert!(plan.inserts.is_empty() && plan.effects.is_empty());
        let names: Vec<crate::stats::Metric> = plan
            .deltas
            .iter()
            .filter_map(|d| match d {
                Delta::Count { name, .. } => Some(*name),
                Delta::Observe { .. } => None,
            })
            .collect();
        assert!(names.contains(&crate::stats::Metric::JobsCompletedTotal), "{names:?}");
    }

    #[test]
    fn refused_and_unknown_events_change_nothing_and_are_answered_each() {
        let a = job(1, json!({ "type": "noop" }));
        let ghost = JobId::new(1, 9, 9);
        let (plan, answers) = apply_events(
            vec![a.clone()],
            vec![
                ev(&a, Event::Complete { attempt: 1, result: None }),
                JobEvent { id: ghost, event: Event::Cancel },
                ev(&a, Event::Start { attempt: 2 }),
            ],
            5_000,
            &mut half(),
        );
        let codes: Vec<ErrorCode> = answers.iter().map(|a| a.as_ref().expect_err("refused").code()).collect();
        assert_eq!(codes, [ErrorCode::InvalidTransition, ErrorCode::JobNotFound, ErrorCode::StaleAttempt]);
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_cancel_in_the_same_batch_as_the_wake_wins_whatever_the_order() {
        // The race the batch design closes: a wake and a cancel for one job. Applied in one
        // step, the job ends cancelled and nothing is sent when the cancel comes first...
        let s = job(1, json!({ "type": "noop", "delay": 1000 }));
        let (plan, _) =
            apply_events(vec![s.clone()], vec![ev(&s, Event::Cancel), ev(&s, Event::Wake)], 9_000, &mut half());
        assert_eq!(plan.updates[0].state, JobState::Cancelled);
        assert!(plan.effects.enqueue.is_empty());
        // ...and when the wake comes first, the job is cancelled while queued; the message
        // sent for it is refused at start (a cancelled job cannot start).
        let (plan, _) =
            apply_events(vec![s.clone()], vec![ev(&s, Event::Wake), ev(&s, Event::Cancel)], 9_000, &mut half());
        let cancelled = &plan.updates[0];
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!(plan.effects.enqueue.len(), 1);
        let start = machine::apply(cancelled, Event::Start { attempt: 1 }, 9_001, 0.5).expect_err("refused");
        assert_eq!(start.code(), ErrorCode::InvalidTransition);
    }

    #[test]
    fn effects_collect_sends_and_the_earliest_alarm() {
        let q = job(1, json!({ "type": "noop" }));
        let n = job(2, json!({ "type": "sleep" }));
        let later = job(3, json!({ "type": "noop", "delay": 9000 }));
        let sooner = job(4, json!({ "type": "noop", "delay": 2000 }));
        let (plan, _, answers) = create(vec![q.clone(), n.clone(), later, sooner.clone()], BTreeMap::new(), 1_000, 10);
        assert!(answers.iter().all(|a| a.created));
        assert_eq!(plan.inserts.len(), 4);
        assert_eq!(
            plan.effects.enqueue,
            vec![
                (Lane::Edge, JobRef { id: q.id.clone(), attempt: 1, epoch: 0, trace: None }),
                (Lane::Native, JobRef { id: n.id.clone(), attempt: 1, epoch: 0, trace: None })
            ]
        );
        assert_eq!(plan.effects.alarm, Some(sooner.run_at));
    }

    #[test]
    fn idempotency_keys_dedupe_across_calls_and_within_one_batch() {
        let first = job(1, json!({ "type": "noop", "idempotency_key": "k" }));
        let twin = job(2, json!({ "type": "noop", "idempotency_key": "k" }));
        let other = job(3, json!({ "type": "noop", "idempotency_key": "z" }));
        let (plan, keys, answers) = create(vec![first.clone(), twin, other.clone()], BTreeMap::new(), 1_000, 500);
        assert_eq!(answers.iter().map(|a| a.created).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(answers[1].job.id, first.id);
        assert_eq!(plan.inserts.len(), 2);
        assert_eq!(
            keys,
            vec![
                KeyWrite { key: "default\u{1f}k".into(), job: first.id.clone(), expires_at: 1_500 },
                KeyWrite { key: "default\u{1f}z".into(), job: other.id.clone(), expires_at: 1_500 },
            ]
        );
        // A later call whose key is known gets the stored job back and writes nothing.
        let again = job(4, json!({ "type": "noop", "idempotency_key": "k" }));
        let known = BTreeMap::from([("default\u{1f}k".to_owned(), first.clone())]);
        let (plan, keys, answers) = create(vec![again], known.clone(), 2_000, 500);
        assert_eq!((answers[0].created, &answers[0].job.id), (false, &first.id));
        assert!(plan.inserts.is_empty() && keys.is_empty() && plan.deltas.is_empty() && plan.effects.is_empty());
        // Another tenant's equal key is another key: a new job, its own key written.
        let mut theirs = job(5, json!({ "type": "noop", "idempotency_key": "k" }));
        theirs.tenant = crate::tenant::Tenant::parse("globex").expect("valid");
        let (plan, keys, answers) = create(vec![theirs.clone()], known, 2_000, 500);
        assert_eq!((answers[0].created, &answers[0].job.id), (true, &theirs.id));
        assert_eq!((plan.inserts.len(), keys[0].key.as_str()), (1, "globex\u{1f}k"));
    }

    #[test]
    fn handoffs_update_only_jobs_waiting_for_that_attempt() {
        let a = job(1, json!({ "type": "sleep" }));
        let b = job(2, json!({ "type": "sleep" }));
        let (plan, answers) = handoffs(
            vec![a.clone(), b.clone()],
            vec![
                Handoff { id: a.id.clone(), attempt: 1, entry: "1-0".into() },
                Handoff { id: b.id.clone(), attempt: 2, entry: "2-0".into() },
            ],
        );
        assert!(answers[0].is_ok());
        assert_eq!(answers[1].as_ref().expect_err("stale").code(), ErrorCode::StaleAttempt);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.updates[0].stream_entry, Some(StreamEntry { attempt: 1, entry: "1-0".into() }));
    }

    #[test]
    fn the_sweep_resends_stale_queued_jobs_through_the_machine() {
        let policy = SweepPolicy { queued_after_ms: 1_000, active_grace_ms: 500, native_lease_ms: 2_000 };
        let q = job(1, json!({ "type": "noop" }));
        assert!(!sweep_resends(&q, q.updated_at + 1_000, &policy));
        assert!(sweep_resends(&q, q.updated_at + 1_001, &policy));
        let now = q.updated_at + 5_000;
        let (plan, answers) = apply_events(vec![q.clone()], vec![ev(&q, Event::Resend)], now, &mut half());
        assert_eq!(answers[0].as_ref().map(|j| j.updated_at), Ok(now));
        assert_eq!(
            plan.effects.enqueue,
            vec![(Lane::Edge, JobRef { id: q.id.clone(), attempt: 1, epoch: 0, trace: None })]
        );
        assert!(plan.deltas.contains(&stats::resent()));
        // A job cancelled meanwhile is not re-sent.
        let gone = machine::apply(&q, Event::Cancel, now, 0.5).expect("cancel").job;
        let (plan, answers) = apply_events(vec![gone], vec![ev(&q, Event::Resend)], now, &mut half());
        assert!(answers[0].is_err() && plan.effects.is_empty() && plan.updates.is_empty());
    }

    #[test]
    fn the_sweep_expires_lost_attempts_by_lane() {
        let policy = SweepPolicy { queued_after_ms: 1_000, active_grace_ms: 500, native_lease_ms: 2_000 };
        let edge = job(1, json!({ "type": "noop", "timeout": 1000 }));
        let edge = machine::apply(&edge, Event::Start { attempt: 1 }, 10_000, 0.5).expect("start").job;
        assert_eq!(sweep_expiry(&edge, 11_500, &policy), None);
        assert!(matches!(sweep_expiry(&edge, 11_501, &policy), Some(Event::Fail { attempt: 1, .. })));
        let native = job(2, json!({ "type": "sleep" }));
        let native = machine::apply(&native, Event::Start { attempt: 1 }, 10_000, 0.5).expect("start").job;
        assert_eq!(sweep_expiry(&native, 12_000, &policy), None);
        assert!(sweep_expiry(&native, 12_001, &policy).is_some());
        assert_eq!(sweep_expiry(&job(3, json!({ "type": "noop" })), u64::MAX, &policy), None);
    }
}
