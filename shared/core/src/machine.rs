//! The job state machine: the one place that decides which moves are legal. The shard loads a
//! job, calls [`apply`], commits the returned job and then carries out the returned
//! [`Effect`]. A refused event changes nothing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::job::{Job, JobState};

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
    /// The alarm fired: a scheduled job whose time has come becomes queued.
    Wake,
    /// A user cancels the job.
    Cancel,
    /// A user replays a dead job as a new attempt series.
    Replay,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Start { .. } => "start",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Complete { .. } => "complete",
            Event::Fail { .. } => "fail",
            Event::Wake => "wake",
            Event::Cancel => "cancel",
            Event::Replay => "replay",
        }
    }
}

/// What the shard must do after committing the new job state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Send the job to its queue for attempt `job.attempt + 1`.
    Enqueue,
    /// Make sure the shard alarm fires no later than this time (ms).
    Alarm(u64),
}

/// The result of an accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub job: Job,
    pub effect: Effect,
    /// Set when the new state must be committed but the caller's report is still refused
    /// (a report from an attempt whose job a user cancelled meanwhile).
    pub refusal: Option<ApiError>,
}

fn refuse(job: &Job, event: &Event) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidTransition,
        format!("cannot {} a job in state {}", event.name(), job.state.as_str()),
    )
}

fn fence(job: &Job, attempt: u32) -> Result<(), ApiError> {
    if attempt == job.attempt {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::StaleAttempt,
            format!("attempt {attempt} is not the current attempt ({})", job.attempt),
        ))
    }
}

fn finish(mut job: Job, state: JobState, now: u64) -> Job {
    job.state = state;
    job.finished_at = Some(now);
    job.updated_at = now;
    job
}

/// Applies `event` to `job` at time `now` (ms). `unit` is a uniform random sample in
/// `[0, 1)` used for backoff jitter.
pub fn apply(job: &Job, event: Event, now: u64, unit: f64) -> Result<Transition, ApiError> {
    use JobState::*;
    let ok = |job: Job, effect: Effect| Ok(Transition { job, effect, refusal: None });
    match (job.state, &event) {
        (Queued, Event::Start { attempt }) => {
            if *attempt != job.attempt + 1 {
                return Err(ApiError::new(
                    ErrorCode::StaleAttempt,
                    format!("attempt {attempt} is not the next attempt ({})", job.attempt + 1),
                ));
            }
            let mut next = job.clone();
            next.state = Active;
            next.attempt = *attempt;
            next.started_at = Some(now);
            next.heartbeat_at = Some(now);
            next.progress = None;
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
        (Active, Event::Complete { attempt, result }) => {
            fence(job, *attempt)?;
            if job.cancel_requested {
                return cancelled_report(job, now);
            }
            let mut next = finish(job.clone(), Completed, now);
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
            next.last_error = Some(error.clone());
            let exhausted = job.attempts_in_series() >= job.max_attempts;
            let delay = match disposition {
                Disposition::Permanent => None,
                _ if exhausted => None,
                Disposition::Retryable => Some(job.backoff.delay_ms(job.attempts_in_series(), unit)),
                Disposition::RetryAfter(ms) => Some(*ms),
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
                    next.run_at = now + d;
                    next.updated_at = now;
                    ok(next.clone(), Effect::Alarm(next.run_at))
                }
            }
        }
        (Scheduled, Event::Wake) => {
            if job.run_at > now {
                return Err(ApiError::new(ErrorCode::InvalidTransition, "the job is not due yet"));
            }
            let mut next = job.clone();
            next.state = Queued;
            next.updated_at = now;
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

fn cancelled_report(job: &Job, now: u64) -> Result<Transition, ApiError> {
    Ok(Transition {
        job: finish(job.clone(), JobState::Cancelled, now),
        effect: Effect::None,
        refusal: Some(ApiError::new(ErrorCode::JobCancelled, "the job was cancelled while it ran")),
    })
}
