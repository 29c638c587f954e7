//! The records of a workflow run's steps (#29), as a job document holds them: what each
//! step is, where it stands, what a wait waits for, and a fan-out's children. The rules that
//! move them are in [`crate::workflow`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::{rfc3339, rfc3339_opt};

/// What a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `step.run`: user code whose result is recorded.
    Run,
    /// `step.sleep` / `step.sleep_until`.
    Sleep,
    /// `step.wait_for_event`.
    Wait,
    /// `step.invoke`: one child job; resumes with its result or its final error.
    Invoke,
    /// `step.fan_out`: child jobs; resumes when all are final, with their outcomes in order.
    FanOut,
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Done: its result is recorded (a sleep that ended, a wait an event resumed).
    Completed,
    /// Failed for good (its attempts are spent): its error is recorded and returned.
    Failed,
    /// Failed with attempts left: the run sleeps until `until`, then runs it again.
    Retrying,
    /// A sleep until `until`.
    Sleeping,
    /// A wait for an event, until `until` at the latest.
    Waiting,
    /// A wait that reached its timeout without an event.
    TimedOut,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Run => "run",
            StepKind::Sleep => "sleep",
            StepKind::Wait => "wait",
            StepKind::Invoke => "invoke",
            StepKind::FanOut => "fan_out",
        }
    }
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Completed => "completed",
            StepState::Failed => "failed",
            StepState::Retrying => "retrying",
            StepState::Sleeping => "sleeping",
            StepState::Waiting => "waiting",
            StepState::TimedOut => "timed_out",
        }
    }

    /// Whether a later execution gets this step's outcome without running it.
    pub fn is_recorded(self) -> bool {
        matches!(self, StepState::Completed | StepState::Failed | StepState::TimedOut)
    }
}

/// One condition of a wait: the event's value at `event` (a JSON pointer into
/// `{"name", "data", "id"}`) must equal `value` (resolved by the handler from the run's own
/// job, e.g. its `/payload/order_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    pub event: String,
    pub value: Value,
}

/// What a wait waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitFor {
    pub event: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<Match>,
}

/// One recorded step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub state: StepState,
    /// Executions of the step that reported (a retried `run` counts each).
    pub attempts: u32,
    #[serde(with = "rfc3339")]
    pub started_at: u64,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    /// A sleep's end, a wait's timeout, a retry's time.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitFor>,
    /// A wait's look-back: events sent up to this long before it match it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lookback_ms: u64,
    /// An invoke's or a fan-out's child jobs, in order, with the outcome of each that ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Child>,
}

/// A child job of a run's step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Child {
    pub id: crate::JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
}

/// Most children of one fan-out.
pub const MAX_CHILDREN: usize = 1_000;

/// Where a child job reports its end: its parent run and the step that started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub job: crate::JobId,
    pub step: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Step {
    /// Bytes this step counts against `workflow::MAX_RUN_BYTES`.
    pub fn weight(&self) -> usize {
        self.name.len()
            + self.result.as_ref().map_or(0, json_len)
            + self.error.as_ref().map_or(0, String::len)
            + self.wait.as_ref().map_or(0, |w| {
                w.event.len() + w.matches.iter().map(|m| m.event.len() + json_len(&m.value)).sum::<usize>()
            })
            + self.children.iter().map(|c| c.id.as_str().len() + c.outcome.as_ref().map_or(0, json_len)).sum::<usize>()
    }
}

pub(crate) fn json_len(v: &Value) -> usize {
    serde_json::to_string(v).map_or(usize::MAX / 4, |s| s.len())
}

/// A wait to index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitEntry {
    pub tenant: crate::tenant::Tenant,
    pub key: WaitKey,
    #[serde(flatten)]
    pub wait: WaitFor,
    /// When the index may forget it (its timeout; [`crate::workflow::NEVER`] without one).
    pub expires_at: u64,
    /// Events indexed at or after this time match it (the wait's start, less its look-back).
    pub since: u64,
}

/// A wait's identity: the run and its step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitKey {
    pub job: crate::JobId,
    pub step: String,
}
