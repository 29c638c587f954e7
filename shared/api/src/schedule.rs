//! A schedule as the API shows it, and the schedule routes' other replies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::job::{Job, JobTrace};

/// What happens to a tick while the previous run's job is not final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    Allow,
    Skip,
    QueueOne,
}

/// What a schedule does about ticks it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    None,
    Last,
}

/// Why a run was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Tick,
    CatchUp,
    Trigger,
}

/// One of a schedule's newest runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ScheduleRunView {
    /// The tick the run is for (the trigger time for a trigger).
    pub tick: String,
    /// When the run's job was created.
    pub at: String,
    pub job_id: String,
    pub kind: RunKind,
    /// The job's state now; `deleted` once retention removed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A schedule as the API shows it (`GET /v1/schedules/{name}` and every reply that carries
/// one): its definition, its job spec with header values `[redacted]`, where it stands,
/// its newest runs with their jobs' states, and (on a single read) its next ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The job spec each run is made from.
    pub job: Map<String, Value>,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The next tick; `null` when no tick remains.
    #[cfg_attr(test, schemars(required))]
    pub next_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_tick: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    /// The newest runs, newest first.
    pub runs: Vec<ScheduleRunView>,
    pub runs_total: u64,
    pub skips_total: u64,
    /// Its next tick is more than 2 minutes past.
    pub overdue: bool,
    /// The next ticks (on a single read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcoming: Option<Vec<String>>,
    /// The W3C trace context the schedule was created or last changed with (#32): each run
    /// starts a new trace whose root links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<JobTrace>,
}

/// `GET /v1/schedules`: a page by name. `S` is [`ScheduleView`] for a client; the edge
/// passes the shards' documents through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ScheduleList<S = ScheduleView> {
    pub schedules: Vec<S>,
    #[cfg_attr(test, schemars(required))]
    pub next_cursor: Option<String>,
}

/// `DELETE /v1/schedules/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ScheduleDeleted {
    pub deleted: bool,
    pub name: String,
}

/// `POST /v1/schedules/{name}/trigger`: the run's job (`created`: new, 201) and the
/// schedule after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Triggered {
    pub created: bool,
    pub job: Job,
    pub schedule: ScheduleView,
}
