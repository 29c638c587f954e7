//! The job state machine: the one place that decides which moves are legal. The shard loads a
//! job, calls [`apply`], commits the returned job and then carries out the returned
//! [`Effect`]. A refused event changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobState, Lane};
pub use crate::outcome::{Effect, Refusal, Transition};

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "after_ms", rename_all = "snake_case")]
pub enum Disposition {
    /// Retry by the job's backoff policy (if attempts remain).
    Retryable,
    /// Never retry: the job goes to `dead`.
    Permanent,
    /// Retry no sooner than this many ms from now (e.g. an upstream's Retry-After).
    RetryAfter(u64),
}

/// Something that happened to a job. On the wire (shard API, consumer reports) it is tagged
/// by `event`: `{"event":"complete","attempt":1,"result":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// A consumer begins attempt `attempt` (must be the next one: `job.attempt + 1`).
    Start { attempt: u32 },
    /// The running attempt is alive, optionally with progress.
    Heartbeat {
        attempt: u32,
        #[serde(default)]
        progress: Option<Value>,
    },
    /// The running attempt succeeded.
    Complete {
        attempt: u32,
        #[serde(default)]
        result: Option<Value>,
    },
    /// The running attempt failed.
    Fail { attempt: u32, error: String, disposition: Disposition },
    /// A consumer took over the stream entry of attempt `attempt` after its holder went
    /// silent. A job still queued starts that attempt; an active job whose last heartbeat is
    /// older than the lease starts a new attempt (the old holder's reports are then refused
    /// with `lease_lost`). Fresh heartbeats refuse the takeover (`lease_held`). The lease is
    /// the edge's (`NATIVE_LEASE`): the edge sets `lease_ms` on every reclaim it receives,
    /// whatever a consumer sent.
    Reclaim {
        attempt: u32,
        #[serde(default)]
        lease_ms: u64,
    },
    /// The alarm fired: a scheduled job whose time has come becomes queued.
    Wake,
    /// A user cancels the job.
    Cancel,
    /// A user replays a dead job as a new attempt series.
    Replay,
    /// The sweep found the job queued for too long (its queue message was lost): send it
    /// again. Only a queued job can be re-sent; the attempt it waits for does not change.
    Resend,
    /// The running attempt of a workflow run reached a step (see [`crate::workflow`]).
    Step { attempt: u32, step: crate::workflow::StepReport },
    /// An event matched the run's wait `step`: it completes with `data` and the run goes on.
    Resume { step: String, data: Value },
    /// The running attempt's live output (#30): progress, metadata to merge, stream chunks
    /// (see [`crate::live`]). Counts as a heartbeat.
    Update {
        attempt: u32,
        #[serde(flatten)]
        update: crate::live::Update,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Complete { .. } => "complete",
            Event::Fail { .. } => "fail",
            Event::Reclaim { .. } => "reclaim",
            Event::Wake => "wake",
            Event::Cancel => "cancel",
            Event::Replay => "replay",
            Event::Resend => "resend",
            Event::Step { .. } => "step",
            Event::Resume { .. } => "resume",
            Event::Update { .. } => "update",
        }
    }

    /// Whether a native consumer may report this event (the others are the system's or a
    /// user's).
    pub fn is_consumer_report(&self) -> bool {
        matches!(
            self,
            Event::Start { .. }
                | Event::Heartbeat { .. }
                | Event::Complete { .. }
                | Event::Fail { .. }
                | Event::Reclaim { .. }
                | Event::Step { .. }
                | Event::Update { .. }
        )
    }
}

/// The longest wait a `RetryAfter` can impose (an upstream's Retry-After, reported by a
/// consumer): one day. Longer values are shortened to it.
pub const MAX_RETRY_AFTER_MS: u64 = 86_400_000;

fn refuse(job: &Job, event: &Event) -> Refusal {
    Refusal::InvalidTransition { event: event.name().to_owned(), state: job.state.as_str().to_owned() }
}

fn fence(job: &Job, attempt: u32) -> Result<(), Refusal> {
    if attempt == job.attempt {
        Ok(())
    } else if attempt < job.attempt && job.lease_lost_attempt.is_some_and(|lost| attempt <= lost) {
        Err(Refusal::LeaseLost { attempt, current: job.attempt })
    } else {
        Err(Refusal::StaleAttempt { attempt, current: job.attempt })
    }
}

/// Longest error text kept on a job (`last_error`): reports can carry more, and a listing
/// shows it for every job.
pub const MAX_ERROR_BYTES: usize = 2048;

fn clip_error(e: &str) -> String {
    crate::job::clip(e, MAX_ERROR_BYTES)
}

/// Whether a native consumer's report may reach `job` at all; [`apply`] then decides the
/// move. Consumers report only on native-lane jobs. A start or a takeover carries no lease
/// (it is how a consumer gets one: the shard issues a token with it). Any other report
/// (heartbeat, progress, completion, failure) needs a running attempt, and when it names
/// that attempt it must carry the token `lease` that attempt's start issued; a report naming
/// another attempt is left to the attempt fencing of [`apply`] (`stale_attempt`,
/// `lease_lost`), as before. The tokens are compared in constant time and never echoed.
pub fn check_lease(job: &Job, event: &Event, lease: Option<&str>) -> Result<(), Refusal> {
    if job.lane != Lane::Native {
        return Err(Refusal::EdgeLane);
    }
    let attempt = match event {
        Event::Heartbeat { attempt, .. }
        | Event::Complete { attempt, .. }
        | Event::Fail { attempt, .. }
        | Event::Step { attempt, .. }
        | Event::Update { attempt, .. } => *attempt,
        // A start or a takeover is how a consumer gets a lease. Every other consumer report
        // is listed above: a new one left out here would be taken without the holder's token.
        Event::Start { .. } | Event::Reclaim { .. } => return Ok(()),
        Event::Wake | Event::Cancel | Event::Replay | Event::Resend | Event::Resume { .. } => return Ok(()),
    };
    if job.state != JobState::Active {
        return Err(Refusal::NotLeased { state: job.state.as_str().to_owned() });
    }
    if attempt != job.attempt {
        return Ok(());
    }
    match (job.lease.as_deref(), lease) {
        (None, _) => Err(Refusal::NotLeased { state: job.state.as_str().to_owned() }),
        (Some(held), Some(given)) if crate::secret::constant_time_eq(held, given) => Ok(()),
        _ => Err(Refusal::LeaseMismatch { attempt }),
    }
}

fn finish(mut job: Job, state: JobState, now: u64) -> Job {
    job.state = state;
    job.finished_at = Some(now);
    job.updated_at = now;
    job
}

/// Applies `event` to `job` at time `now` (ms). `unit` is a uniform random sample in
/// `[0, 1)` used for backoff jitter. A job keeps its lease token only while the same
/// attempt runs: a new attempt or the end of one clears it (the shard issues the new
/// attempt's token, `plan::apply_reports`).
pub fn apply(job: &Job, event: Event, now: u64, unit: f64) -> Result<Transition, Refusal> {
    // A job the flow gate holds back was never sent: nothing may start it (a stale or
    // forged delivery) until the gate lets it through.
    if job.state == JobState::Queued
        && job.waiting_for.is_some()
        && matches!(event, Event::Start { .. } | Event::Reclaim { .. })
    {
        return Err(Refusal::NotDue);
    }
    let mut t = step(job, event, now, unit)?;
    if t.job.state != JobState::Active || t.job.attempt != job.attempt || job.state != JobState::Active {
        t.job.lease = None;
    }
    Ok(t)
}

fn step(job: &Job, event: Event, now: u64, unit: f64) -> Result<Transition, Refusal> {
    use JobState::*;
    let ok = |job: Job, effect: Effect| Ok(Transition { job, effect, refusal: None });
    match (job.state, &event) {
        (Queued, Event::Start { attempt }) => {
            if *attempt != job.attempt + 1 {
                return Err(Refusal::NotNextAttempt { attempt: *attempt, next: job.attempt + 1 });
            }
            let mut next = job.clone();
            next.state = Active;
            next.attempt = *attempt;
            next.started_at = Some(now);
            next.heartbeat_at = Some(now);
            // Progress stays until the new attempt reports its own (as BullMQ keeps it): a
            // workflow run's executions are attempts, and its progress spans them.
            next.updated_at = now;
            ok(next, Effect::None)
        }
        (Queued, Event::Reclaim { attempt, .. }) => step(job, Event::Start { attempt: *attempt }, now, unit),
        (Active, Event::Reclaim { attempt, lease_ms }) => {
            if *attempt > job.attempt {
                return Err(Refusal::NewerAttempt { attempt: *attempt, current: job.attempt });
            }
            let last = job.heartbeat_at.or(job.started_at).unwrap_or(job.updated_at);
            if now.saturating_sub(last) < *lease_ms {
                return Err(Refusal::LeaseHeld);
            }
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            let mut next = job.clone();
            let error = format!("attempt {} lost its lease (no heartbeat for {lease_ms} ms)", job.attempt);
            next.record_attempt(now, "lease_lost", Some(&error));
            next.last_error = Some(error);
            next.lease_lost_attempt = Some(job.attempt);
            if job.attempts_in_series() >= job.max_attempts {
                return Ok(Transition {
                    job: finish(next, Dead, now),
                    effect: Effect::None,
                    refusal: Some(Refusal::NoAttemptsLeft),
                });
            }
            next.attempt = job.attempt + 1;
            next.started_at = Some(now);
            next.heartbeat_at = Some(now);
            // Progress stays until the new attempt reports its own (as BullMQ keeps it): a
            // workflow run's executions are attempts, and its progress spans them.
            next.updated_at = now;
            ok(next, Effect::None)
        }
        (Active, Event::Heartbeat { attempt, progress }) => {
            fence(job, *attempt)?;
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            let mut next = job.clone();
            next.heartbeat_at = Some(now);
            if progress.is_some() {
                next.progress = progress.clone();
            }
            next.updated_at = now;
            ok(next, Effect::None)
        }
        (Active, Event::Update { attempt, update }) => {
            fence(job, *attempt)?;
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            let mut next = job.clone();
            crate::live::apply(&mut next, update, now)?;
            next.heartbeat_at = Some(now);
            next.updated_at = now;
            ok(next, Effect::None)
        }
        (Active, Event::Complete { attempt, result }) => {
            fence(job, *attempt)?;
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            let mut next = finish(job.clone(), Completed, now);
            next.record_attempt(now, "completed", None);
            next.result = result.clone();
            next.last_error = None;
            ok(next, Effect::None)
        }
        (Active, Event::Fail { attempt, error, disposition }) => {
            fence(job, *attempt)?;
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            let mut next = job.clone();
            next.record_attempt(now, "failed", Some(error));
            next.last_error = Some(clip_error(error));
            let exhausted = job.attempts_in_series() >= job.max_attempts;
            let delay = match disposition {
                Disposition::Permanent => None,
                _ if exhausted => None,
                Disposition::Retryable => Some(job.backoff.delay_ms(job.attempts_in_series(), unit)),
                Disposition::RetryAfter(ms) => Some((*ms).min(MAX_RETRY_AFTER_MS)),
            };
            match delay {
                None => ok(finish(next, Dead, now), Effect::None),
                Some(0) => {
                    next.state = Queued;
                    next.run_at = now;
                    next.updated_at = now;
                    ok(next, Effect::Enqueue)
                }
                Some(d) => {
                    next.state = Scheduled;
                    next.run_at = now.saturating_add(d);
                    next.updated_at = now;
                    ok(next.clone(), Effect::Alarm(next.run_at))
                }
            }
        }
        (Active, Event::Step { attempt, step }) => {
            fence(job, *attempt)?;
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            crate::workflow::record(job, step, now, unit)
        }
        (_, Event::Resume { step, data }) => crate::workflow::resume(job, step, data, now),
        (Scheduled, Event::Wake) => {
            if job.run_at > now {
                return Err(Refusal::NotDue);
            }
            let mut next = job.clone();
            crate::workflow::wake(&mut next, now);
            next.state = Queued;
            next.updated_at = now;
            ok(next, Effect::Enqueue)
        }
        (Queued, Event::Resend) => {
            let mut next = job.clone();
            next.updated_at = now; // the next sweep waits a full threshold again
            ok(next, Effect::Enqueue)
        }
        (Queued | Scheduled, Event::Cancel) => ok(finish(job.clone(), Cancelled, now), Effect::None),
        (Active, Event::Cancel) => {
            let mut next = job.clone();
            next.cancel_requested = true;
            next.updated_at = now;
            ok(next, Effect::None)
        }
        (Dead, Event::Replay) => {
            let mut next = job.clone();
            next.state = Queued;
            next.series_base = job.attempt;
            next.free_attempts = 0;
            next.run_at = now;
            next.finished_at = None;
            next.started_at = None;
            next.heartbeat_at = None;
            next.result = None;
            next.progress = None;
            next.updated_at = now;
            ok(next, Effect::Enqueue)
        }
        _ => Err(refuse(job, &event)),
    }
}

fn cancelled_report(job: &Job, now: u64) -> Result<Transition, Refusal> {
    let mut next = finish(job.clone(), JobState::Cancelled, now);
    next.record_attempt(now, "cancelled", Some("cancelled while it ran"));
    Ok(Transition { job: next, effect: Effect::None, refusal: Some(Refusal::CancelledWhileRunning) })
}

/// Every (from, to) state pair that [`apply`] may produce; anything else is a bug.
pub const LEGAL: &[(JobState, JobState)] = &[
    (JobState::Queued, JobState::Active),
    (JobState::Queued, JobState::Queued),
    (JobState::Queued, JobState::Cancelled),
    (JobState::Scheduled, JobState::Queued),
    (JobState::Scheduled, JobState::Cancelled),
    (JobState::Active, JobState::Active),
    (JobState::Active, JobState::Completed),
    (JobState::Active, JobState::Scheduled),
    (JobState::Active, JobState::Queued),
    (JobState::Active, JobState::Dead),
    (JobState::Active, JobState::Cancelled),
    (JobState::Dead, JobState::Queued),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, ErrorCode};

    /// The API sees a refusal as the code and message it always had: the domain type is
    /// mapped once, here, and the wire (the consumer reads these codes) does not change.
    #[test]
    fn refusals_map_to_the_api_codes_and_messages_they_always_had() {
        let id = JobId::new(1, 1_800_000_000_000, 1);
        let table = [
            (Refusal::NotFound { id: id.clone() }, ErrorCode::JobNotFound, format!("no job with id {id}")),
            (
                Refusal::InvalidTransition { event: "start".into(), state: "dead".into() },
                ErrorCode::InvalidTransition,
                "cannot start a job in state dead".to_owned(),
            ),
            (
                Refusal::NotNextAttempt { attempt: 3, next: 2 },
                ErrorCode::StaleAttempt,
                "attempt 3 is not the next attempt (2)".into(),
            ),
            (
                Refusal::StaleAttempt { attempt: 1, current: 2 },
                ErrorCode::StaleAttempt,
                "attempt 1 is not the current attempt (2)".into(),
            ),
            (
                Refusal::LeaseLost { attempt: 1, current: 2 },
                ErrorCode::LeaseLost,
                "attempt 1 lost its lease; attempt 2 runs now".into(),
            ),
            (Refusal::LeaseHeld, ErrorCode::LeaseHeld, "the running attempt still holds its lease".into()),
            (Refusal::CancelledWhileRunning, ErrorCode::JobCancelled, "the job was cancelled while it ran".into()),
            (Refusal::NotWaiting, ErrorCode::StaleAttempt, "the job no longer waits for this attempt".into()),
        ];
        for (refusal, code, message) in table {
            let e = ApiError::from(refusal.clone());
            assert_eq!((e.code, e.message.as_str()), (code, message.as_str()), "{refusal:?}");
            let wire = serde_json::to_string(&refusal).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Refusal>(&wire).ok(), Some(refusal), "{wire}");
        }
    }
    use crate::id::JobId;
    use crate::spec::parse_spec;
    use proptest::prelude::*;
    use serde_json::json;

    fn new_job(max_attempts: u32) -> Job {
        let spec = parse_spec(&json!({ "type": "noop", "max_attempts": max_attempts }), 1_000).expect("valid spec");
        spec.into_job(JobId::new(0, 1_000, 1), 1_000).0
    }

    #[test]
    fn happy_path_queued_active_completed() {
        let j = new_job(3);
        let t = apply(&j, Event::Start { attempt: 1 }, 2_000, 0.5).expect("start");
        assert_eq!((t.job.state, t.job.attempt, t.effect), (JobState::Active, 1, Effect::None));
        let t = apply(&t.job, Event::Complete { attempt: 1, result: Some(json!(1)) }, 3_000, 0.5).expect("complete");
        assert_eq!(t.job.state, JobState::Completed);
        assert_eq!(t.job.finished_at, Some(3_000));
        let a = &t.job.attempts;
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].attempt, a[0].started_at, a[0].ended_at, a[0].duration_ms), (1, 2_000, 3_000, 1_000));
        assert_eq!((a[0].outcome.as_str(), a[0].error.as_deref()), ("completed", None));
    }

    #[test]
    fn every_ended_attempt_is_remembered_up_to_the_limit() {
        let mut j = new_job(crate::spec::MAX_ATTEMPTS_LIMIT);
        let long = "é".repeat(1_000);
        for n in 1..=25u32 {
            let t0 = 10_000 * n as u64;
            j = apply(&j, Event::Start { attempt: n }, t0, 0.0).expect("start").job;
            let fail = Event::Fail { attempt: n, error: long.clone(), disposition: Disposition::RetryAfter(0) };
            j = apply(&j, fail, t0 + n as u64, 0.0).expect("fail").job;
            assert_eq!(j.state, JobState::Queued);
        }
        assert_eq!(j.attempts.len(), crate::job::MAX_ATTEMPT_HISTORY);
        let (first, last) = (&j.attempts[0], &j.attempts[19]);
        assert_eq!((first.attempt, last.attempt, last.duration_ms), (6, 25, 25));
        assert_eq!(last.outcome, "failed");
        let e = last.error.as_deref().expect("error kept");
        assert!(e.len() <= crate::job::MAX_ATTEMPT_ERROR_BYTES + "…".len() && e.ends_with('…'), "{}", e.len());
        // A lease lost and a cancel while running are attempts that ended too.
        j = apply(&j, Event::Start { attempt: 26 }, 500_000, 0.0).expect("start").job;
        j = apply(&j, Event::Reclaim { attempt: 26, lease_ms: 1_000 }, 502_000, 0.0).expect("reclaim").job;
        assert_eq!(j.attempts.last().map(|a| (a.attempt, a.outcome.as_str())), Some((26, "lease_lost")));
        j = apply(&j, Event::Cancel, 502_001, 0.0).expect("cancel").job;
        let t = apply(&j, Event::Heartbeat { attempt: 27, progress: None }, 502_002, 0.0).expect("report");
        assert_eq!(t.job.state, JobState::Cancelled);
        assert_eq!(t.job.attempts.last().map(|a| (a.attempt, a.outcome.as_str())), Some((27, "cancelled")));
    }

    #[test]
    fn duplicate_start_and_stale_reports_are_refused() {
        let j = new_job(3);
        let active = apply(&j, Event::Start { attempt: 1 }, 2_000, 0.5).expect("start").job;
        let dup = apply(&active, Event::Start { attempt: 1 }, 2_001, 0.5).expect_err("duplicate");
        assert_eq!(dup.code(), ErrorCode::InvalidTransition);
        let stale = apply(&active, Event::Complete { attempt: 7, result: None }, 2_001, 0.5).expect_err("stale");
        assert_eq!(stale.code(), ErrorCode::StaleAttempt);
        let skip = apply(&j, Event::Start { attempt: 2 }, 2_001, 0.5).expect_err("skipped attempt");
        assert_eq!(skip.code(), ErrorCode::StaleAttempt);
    }

    #[test]
    fn failures_retry_with_backoff_then_die_after_max_attempts() {
        let mut j = new_job(3);
        for n in 1..=3 {
            j = apply(&j, Event::Start { attempt: n }, 10_000 * n as u64, 0.5).expect("start").job;
            let t = apply(
                &j,
                Event::Fail { attempt: n, error: "boom".into(), disposition: Disposition::Retryable },
                10_000 * n as u64,
                0.5,
            )
            .expect("fail");
            j = t.job;
            if n < 3 {
                assert_eq!(j.state, JobState::Scheduled);
                // Full jitter with a 0.5 sample: half of base * 2^(n-1).
                assert_eq!(j.run_at - 10_000 * n as u64, 500 * (1 << (n - 1)));
                assert_eq!(t.effect, Effect::Alarm(j.run_at));
                j = apply(&j, Event::Wake, j.run_at, 0.5).expect("wake").job;
                assert_eq!(j.state, JobState::Queued);
            }
        }
        assert_eq!(j.state, JobState::Dead);
        assert_eq!(j.attempt, 3);
        assert_eq!(j.last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn permanent_errors_and_retry_after() {
        let j = apply(&new_job(5), Event::Start { attempt: 1 }, 2_000, 0.5).expect("start").job;
        let dead =
            apply(&j, Event::Fail { attempt: 1, error: "400".into(), disposition: Disposition::Permanent }, 2_500, 0.5)
                .expect("fail");
        assert_eq!(dead.job.state, JobState::Dead);
        let later = apply(
            &j,
            Event::Fail { attempt: 1, error: "429".into(), disposition: Disposition::RetryAfter(7_000) },
            2_500,
            0.0,
        )
        .expect("fail");
        assert_eq!((later.job.state, later.job.run_at), (JobState::Scheduled, 9_500));
        // A consumer's absurd Retry-After is capped at a day, never added unchecked.
        let huge = apply(
            &j,
            Event::Fail { attempt: 1, error: "429".into(), disposition: Disposition::RetryAfter(u64::MAX) },
            u64::MAX - 10,
            0.0,
        )
        .expect("fail");
        assert_eq!(huge.job.run_at, u64::MAX);
        let capped = apply(
            &j,
            Event::Fail { attempt: 1, error: "429".into(), disposition: Disposition::RetryAfter(u64::MAX) },
            2_500,
            0.0,
        )
        .expect("fail");
        assert_eq!(capped.job.run_at, 2_500 + MAX_RETRY_AFTER_MS);
    }

    #[test]
    fn reclaim_takes_over_only_after_the_lease_and_fences_the_old_holder() {
        let j = apply(&new_job(3), Event::Start { attempt: 1 }, 10_000, 0.5).expect("start").job;
        let held = apply(&j, Event::Reclaim { attempt: 1, lease_ms: 30_000 }, 20_000, 0.5).expect_err("lease held");
        assert_eq!(held.code(), ErrorCode::LeaseHeld);
        let t = apply(&j, Event::Reclaim { attempt: 1, lease_ms: 30_000 }, 40_000, 0.5).expect("taken over");
        assert_eq!((t.job.state, t.job.attempt), (JobState::Active, 2));
        // The old holder's reports name attempt 1 and are refused: its lease is lost.
        let late = apply(&t.job, Event::Complete { attempt: 1, result: None }, 41_000, 0.5).expect_err("lost");
        assert_eq!(late.code(), ErrorCode::LeaseLost);
        let beat = apply(&t.job, Event::Heartbeat { attempt: 1, progress: None }, 41_000, 0.5).expect_err("lost");
        assert_eq!(beat.code(), ErrorCode::LeaseLost);
        // The new holder's reports are accepted.
        let done = apply(&t.job, Event::Complete { attempt: 2, result: None }, 42_000, 0.5).expect("new holder");
        assert_eq!(done.job.state, JobState::Completed);
        // A queued job's entry reclaimed before anyone started it simply starts.
        let q = apply(&new_job(3), Event::Reclaim { attempt: 1, lease_ms: 30_000 }, 5_000, 0.5).expect("start");
        assert_eq!((q.job.state, q.job.attempt), (JobState::Active, 1));
        // No attempts left: the job dies and the takeover is refused.
        let last = apply(&new_job(1), Event::Start { attempt: 1 }, 10_000, 0.5).expect("start").job;
        let t = apply(&last, Event::Reclaim { attempt: 1, lease_ms: 30_000 }, 50_000, 0.5).expect("applied");
        assert_eq!((t.job.state, t.refusal.is_some()), (JobState::Dead, true));
    }

    #[test]
    fn only_the_running_attempts_lease_reaches_a_native_job() {
        let mut native = new_job(3);
        native.lane = Lane::Native;
        let mut active = apply(&native, Event::Start { attempt: 1 }, 2_000, 0.5).expect("start").job;
        assert_eq!(active.lease, None, "the shard's planner issues the token, not apply");
        active.lease = Some("a".repeat(32));
        let beat = |attempt| Event::Heartbeat { attempt, progress: None };
        let held = "a".repeat(32);
        let table: &[(&Job, Event, Option<&str>, Option<ErrorCode>)] = &[
            (&active, beat(1), Some(&held), None),
            (&active, Event::Complete { attempt: 1, result: None }, Some(&held), None),
            (&active, beat(1), Some("b"), Some(ErrorCode::LeaseMismatch)),
            (&active, beat(1), None, Some(ErrorCode::LeaseMismatch)),
            (
                &active,
                Event::Fail { attempt: 1, error: "x".into(), disposition: Disposition::Permanent },
                Some(""),
                Some(ErrorCode::LeaseMismatch),
            ),
            // Another attempt is the fencing's to answer, as before leases.
            (&active, beat(0), None, None),
            // Starts and takeovers are how a lease is obtained.
            (&native, Event::Start { attempt: 1 }, None, None),
            (&active, Event::Reclaim { attempt: 1, lease_ms: 0 }, None, None),
            // No live attempt: nothing to report on.
            (&native, beat(0), Some(&held), Some(ErrorCode::NotLeased)),
        ];
        for (job, event, lease, want) in table {
            let got = check_lease(job, event, *lease).err().map(|r| r.code());
            assert_eq!(got, *want, "{event:?} with {lease:?} on a {} job", job.state.as_str());
        }
        // An attempt started without a token (not by a consumer) takes no consumer report.
        let mut unleased = active.clone();
        unleased.lease = None;
        assert_eq!(check_lease(&unleased, &beat(1), Some(&held)).map_err(|r| r.code()), Err(ErrorCode::NotLeased));
        // Edge-lane jobs take no consumer report at all, a start included.
        let edge = new_job(3);
        for e in [Event::Start { attempt: 1 }, Event::Reclaim { attempt: 1, lease_ms: 0 }, beat(0)] {
            assert_eq!(check_lease(&edge, &e, None).map_err(|r| r.code()), Err(ErrorCode::NotLeased));
        }
        // The token lives as long as its attempt: a heartbeat keeps it, a takeover or an
        // outcome clears it (a takeover's new token comes from the planner).
        let t = apply(&active, beat(1), 3_000, 0.5).expect("beat");
        assert_eq!(t.job.lease.as_deref(), Some(held.as_str()));
        let t = apply(&active, Event::Reclaim { attempt: 1, lease_ms: 1 }, 9_000, 0.5).expect("taken over");
        assert_eq!((t.job.attempt, t.job.lease.as_deref()), (2, None));
        let t = apply(&active, Event::Complete { attempt: 1, result: None }, 3_000, 0.5).expect("done");
        assert_eq!(t.job.lease, None);
        let refusal = Refusal::LeaseMismatch { attempt: 1 };
        assert!(!ApiError::from(refusal).message.contains(&held), "the token is never echoed");
    }

    #[test]
    fn wake_before_due_is_refused() {
        let spec = parse_spec(&json!({ "type": "noop", "delay": 5000 }), 1_000).expect("valid");
        let (j, effect) = spec.into_job(JobId::new(0, 1_000, 1), 1_000);
        assert_eq!((j.state, effect), (JobState::Scheduled, Effect::Alarm(6_000)));
        assert!(apply(&j, Event::Wake, 5_999, 0.5).is_err());
        assert_eq!(apply(&j, Event::Wake, 6_000, 0.5).expect("due").effect, Effect::Enqueue);
    }

    #[test]
    fn cancelling_an_active_job_refuses_its_next_report() {
        let j = apply(&new_job(3), Event::Start { attempt: 1 }, 2_000, 0.5).expect("start").job;
        let marked = apply(&j, Event::Cancel, 2_100, 0.5).expect("cancel");
        assert_eq!((marked.job.state, marked.job.cancel_requested), (JobState::Active, true));
        let t = apply(&marked.job, Event::Complete { attempt: 1, result: None }, 2_200, 0.5).expect("report");
        assert_eq!(t.job.state, JobState::Cancelled);
        assert_eq!(t.refusal.map(|e| e.code()), Some(ErrorCode::JobCancelled));
    }

    #[test]
    fn replay_starts_a_new_series_without_reusing_attempt_numbers() {
        let mut j = new_job(1);
        j = apply(&j, Event::Start { attempt: 1 }, 2_000, 0.5).expect("start").job;
        j = apply(&j, Event::Fail { attempt: 1, error: "x".into(), disposition: Disposition::Retryable }, 2_000, 0.5)
            .expect("fail")
            .job;
        assert_eq!(j.state, JobState::Dead);
        let t = apply(&j, Event::Replay, 3_000, 0.5).expect("replay");
        assert_eq!((t.job.state, t.effect, t.job.attempts_in_series()), (JobState::Queued, Effect::Enqueue, 0));
        // A late report from the old series names attempt 1, which is no longer current.
        assert!(apply(&t.job, Event::Start { attempt: 1 }, 3_001, 0.5).is_err());
        assert!(apply(&t.job, Event::Start { attempt: 2 }, 3_001, 0.5).is_ok());
    }

    fn any_event() -> impl Strategy<Value = Event> {
        let attempt = 0u32..8;
        prop_oneof![
            attempt.clone().prop_map(|attempt| Event::Start { attempt }),
            attempt.clone().prop_map(|attempt| Event::Heartbeat { attempt, progress: None }),
            attempt.clone().prop_map(|attempt| Event::Complete { attempt, result: None }),
            (attempt, 0u8..3, 0u64..5_000).prop_map(|(attempt, d, ms)| Event::Fail {
                attempt,
                error: "e".into(),
                disposition: match d {
                    0 => Disposition::Retryable,
                    1 => Disposition::Permanent,
                    _ => Disposition::RetryAfter(ms),
                },
            }),
            (0u32..8, 0u64..30_000).prop_map(|(attempt, lease_ms)| Event::Reclaim { attempt, lease_ms }),
            Just(Event::Wake),
            Just(Event::Cancel),
            Just(Event::Replay),
            Just(Event::Resend),
        ]
    }

    proptest! {
        /// No sequence of events reaches an illegal state, attempts never exceed
        /// `max_attempts` in a series, and a refused event changes nothing.
        #[test]
        fn no_event_sequence_breaks_the_invariants(
            max_attempts in 1u32..5,
            events in proptest::collection::vec((any_event(), 0u64..20_000, 0.0f64..1.0), 1..60),
        ) {
            let mut job = new_job(max_attempts);
            let mut now = 1_000u64;
            for (event, dt, unit) in events {
                now += dt;
                let before = job.clone();
                match apply(&job, event.clone(), now, unit) {
                    Ok(t) => {
                        prop_assert!(LEGAL.contains(&(before.state, t.job.state)) || before.state == t.job.state,
                            "illegal move {:?} -> {:?} on {:?}", before.state, t.job.state, event);
                        job = t.job;
                    }
                    Err(_) => prop_assert_eq!(&job, &before),
                }
                prop_assert!(job.attempts_in_series() <= job.max_attempts);
                prop_assert!(job.attempt >= before.attempt, "attempt numbers never go back");
                match job.state {
                    JobState::Active => prop_assert!(job.started_at.is_some() && job.attempt >= 1),
                    JobState::Completed | JobState::Dead | JobState::Cancelled => prop_assert!(job.finished_at.is_some()),
                    JobState::Queued | JobState::Scheduled => prop_assert!(job.finished_at.is_none() && !job.cancel_requested),
                }
            }
        }
    }
}
