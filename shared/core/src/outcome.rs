//! What the state machine answers (#29 split it out of `machine`, so that the workflow rules,
//! which the machine calls, can answer the same without importing the machine): an accepted
//! event's [`Transition`] and its [`Effect`], or a [`Refusal`]. `machine` re-exports them.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::job::Job;

/// Why the state machine (or a batch planner around it) refused an event: nothing changed.
/// Domain words only; [`ApiError::from`] turns one into the API's error where a route or
/// the consumer answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// No job has this id (in this shard).
    #[error("no job with id {id}")]
    NotFound { id: JobId },
    /// The event does not apply to a job in this state.
    #[error("cannot {event} a job in state {state}")]
    InvalidTransition { event: String, state: String },
    /// A start for another attempt than the next one.
    #[error("attempt {attempt} is not the next attempt ({next})")]
    NotNextAttempt { attempt: u32, next: u32 },
    /// A takeover naming an attempt newer than the running one.
    #[error("attempt {attempt} is newer than the current attempt ({current})")]
    NewerAttempt { attempt: u32, current: u32 },
    /// A report from an attempt that is not the running one.
    #[error("attempt {attempt} is not the current attempt ({current})")]
    StaleAttempt { attempt: u32, current: u32 },
    /// A report from an attempt whose lease another consumer took.
    #[error("attempt {attempt} lost its lease; attempt {current} runs now")]
    LeaseLost { attempt: u32, current: u32 },
    /// A takeover while the running attempt still heartbeats.
    #[error("the running attempt still holds its lease")]
    LeaseHeld,
    /// A takeover of an attempt that had none left: the job is dead now.
    #[error("the job had no attempts left and is now dead")]
    NoAttemptsLeft,
    /// The alarm woke a job before its time.
    #[error("the job is not due yet")]
    NotDue,
    /// A report from an attempt whose job a user cancelled meanwhile.
    #[error("the job was cancelled while it ran")]
    CancelledWhileRunning,
    /// A hand-off for an attempt the job no longer waits for.
    #[error("the job no longer waits for this attempt")]
    NotWaiting,
    /// A consumer's report on the running attempt without that attempt's lease token (a
    /// forged report, or one from a host that never held the attempt).
    #[error("the report does not carry the lease token of attempt {attempt}")]
    LeaseMismatch { attempt: u32 },
    /// A consumer's report about an edge-lane job: only the edge runs and reports those.
    #[error("the job runs in the edge lane; consumers do not report on it")]
    EdgeLane,
    /// A consumer's report about a job no consumer holds (no native attempt is running, or
    /// it was not started by a consumer).
    #[error("no consumer holds an attempt of this job (it is {state})")]
    NotLeased { state: String },
    /// A workflow step report that does not fit the run's recorded steps.
    #[error("nondeterministic step {seq}: {message}")]
    Nondeterministic { seq: u32, message: String },
    /// A workflow step report that is malformed whatever the run holds.
    #[error("{field}: {message}")]
    BadStep { field: String, message: String },
    /// A workflow run over its limits.
    #[error("{message}")]
    StepLimit { message: String },
    /// A live update (#30) that is malformed whatever the job holds.
    #[error("{field}: {message}")]
    BadUpdate { field: String, message: String },
    /// A live update that would take the job over its limits (stream bytes, metadata size).
    #[error("{message}")]
    LiveLimit { message: String },
}

impl Refusal {
    /// The API's error code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotFound { .. } => ErrorCode::JobNotFound,
            Refusal::InvalidTransition { .. } | Refusal::NoAttemptsLeft | Refusal::NotDue => {
                ErrorCode::InvalidTransition
            }
            Refusal::NotNextAttempt { .. }
            | Refusal::NewerAttempt { .. }
            | Refusal::StaleAttempt { .. }
            | Refusal::NotWaiting => ErrorCode::StaleAttempt,
            Refusal::LeaseLost { .. } => ErrorCode::LeaseLost,
            Refusal::LeaseHeld => ErrorCode::LeaseHeld,
            Refusal::LeaseMismatch { .. } => ErrorCode::LeaseMismatch,
            Refusal::EdgeLane | Refusal::NotLeased { .. } => ErrorCode::NotLeased,
            Refusal::CancelledWhileRunning => ErrorCode::JobCancelled,
            Refusal::Nondeterministic { .. } => ErrorCode::NondeterministicStep,
            Refusal::BadStep { .. } => ErrorCode::InvalidField,
            Refusal::StepLimit { .. } => ErrorCode::StepLimit,
            Refusal::BadUpdate { .. } => ErrorCode::InvalidField,
            Refusal::LiveLimit { .. } => ErrorCode::LiveLimit,
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match &r {
            Refusal::BadStep { field, message } => ApiError::field(&format!("step.{field}"), message.clone()),
            Refusal::BadUpdate { field, message } => ApiError::field(&format!("update.{field}"), message.clone()),
            _ => ApiError::new(r.code(), r.to_string()),
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
    pub refusal: Option<Refusal>,
}
