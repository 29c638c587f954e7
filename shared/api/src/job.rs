//! A job as the API shows it: `GET /v1/jobs/{id}`, an enqueue's reply, a cancel's or
//! retry's; and the summaries of a listing page.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Where a job type runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Edge,
    Native,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Scheduled,
    Active,
    Completed,
    Dead,
    Cancelled,
}

impl JobState {
    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Completed, dead or cancelled: nothing more happens to the job by itself.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Dead | JobState::Cancelled)
    }
}

/// The retry delays of a job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Backoff {
    pub base_ms: u64,
    pub factor: f64,
    pub cap_ms: u64,
}

/// An attempt that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: String,
    pub ended_at: String,
    pub duration_ms: u64,
    /// `completed`, `failed`, `lease_lost` or `cancelled`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One recorded step of a workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Step {
    pub name: String,
    /// `run`, `sleep`, `wait`, `invoke` or `fan_out`.
    pub kind: String,
    /// `completed`, `failed`, `retrying`, `sleeping`, `waiting` or `timed_out`.
    pub state: String,
    /// Executions of the step that reported.
    pub attempts: u32,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// A sleep's end, a wait's timeout, a retry's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Bytes of the recorded result (JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The event a wait waits (or waited) for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// An invoke's or a fan-out's child jobs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
}

/// The run (and its step) a child job was started by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct JobParent {
    pub job: String,
    pub step: String,
}

/// Where a job sits in a distributed trace (#32): the W3C headers of its enqueue span,
/// whose children are its deliveries and attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct JobTrace {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// Native lane: the stream entry carrying the newest hand-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct StreamEntry {
    pub attempt: u32,
    pub entry: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

/// A job as the API shows it (header values in `payload.headers` are `[redacted]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Job {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    /// The tenant that owns the job.
    pub tenant: String,
    pub lane: Lane,
    pub state: JobState,
    pub payload: Value,
    pub attempt: u32,
    pub series_base: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The schedule whose run this job is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_group: Option<String>,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
    pub run_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_lost_attempt: Option<u32>,
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_entry: Option<StreamEntry>,
    /// When the job was restored from a backup (ms since the epoch); 0 (absent) if never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// The attempts that ended, oldest first (the newest 20). Not in listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// Flow control: the job's keys, rate, priority, debounce and throttle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// Why a queued job has not started: `concurrency:<key>`, `rate:<key>`, `paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// A workflow run's recorded steps, in order. Not in listings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// Attempts of the current series that ended by suspending the run (sleeps, waits,
    /// step retries): they do not count against `max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub free_attempts: u32,
    /// For a child job: the workflow run and step that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobParent>,
    /// The callback job inserted when this job completes (#30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<JobCallback>,
    /// The callback job inserted when this job first dies (#30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<JobCallback>,
    /// The batch (`POST /v1/jobs/batch` with `on_complete`) the job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The job's trace context (#32): its enqueue span's `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<JobTrace>,
    /// On an enqueue's answer only: the job is the debounce key's pending one, which this
    /// enqueue's payload replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounced: Option<bool>,
    /// On an enqueue's answer only: the throttle (`on_limit: "drop"`) answered with the
    /// key's last job instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled: Option<bool>,
}

/// A completion callback as its job carries it (#30): the callback job it inserts, in the
/// job's shard, with the finished job's summary (a URL callback's body, a job callback's
/// `payload.callback`); header values `[redacted]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct JobCallback {
    /// `url` (a `webhook` job to it) or `job` (a job spec).
    pub kind: String,
    /// The callback job's id (fixed at enqueue; the job exists once it fired).
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub lane: Lane,
    /// The callback job's payload before the summary is added.
    pub payload: Value,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_group: Option<String>,
    /// How long after the firing the callback job first runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// When it fired (a callback fires once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<String>,
}

/// A job's flow control as resolved at its creation (keys as the job names them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Flow {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<FlowLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<FlowRate>,
    /// 0 (lowest) to 9 (highest); 5 unless the job or its type names one.
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<FlowDebounce>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<FlowThrottle>,
}

/// At most `limit` jobs with `key` run at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FlowLimit {
    pub key: String,
    pub limit: u32,
}

/// At most `limit` starts per `period_ms` for `key`, evenly spaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FlowRate {
    pub key: String,
    pub limit: u32,
    pub period_ms: u64,
}

/// Enqueues with `key` within `period_ms` collapse into one job (the last payload wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FlowDebounce {
    pub key: String,
    pub period_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

/// At most `limit` jobs created per `period_ms` for `key`; over it, `on_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FlowThrottle {
    pub key: String,
    pub limit: u32,
    pub period_ms: u64,
    /// `drop` (answer the key's last job) or `reject` (429 `throttled`).
    pub on_limit: String,
}

/// A job in a listing: `payload`, `result` and `metadata` only when `include` asked for
/// them, and never its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct JobSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    /// The tenant that owns the job.
    pub tenant: String,
    pub lane: Lane,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    pub attempt: u32,
    pub series_base: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The schedule whose run this job is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_group: Option<String>,
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    pub created_at: String,
    pub updated_at: String,
    pub run_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_lost_attempt: Option<u32>,
    pub cancel_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_entry: Option<StreamEntry>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Flow control: the job's keys, rate, priority, debounce and throttle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// Why a queued job has not started: `concurrency:<key>`, `rate:<key>`, `paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The batch (`POST /v1/jobs/batch` with `on_complete`) the job belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The job's trace context (#32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<JobTrace>,
}

/// A page of `GET /v1/jobs` or `GET /v1/dead`, newest first. `J` is what a job is read as:
/// [`JobSummary`] for a client; the edge passes its stored JSON through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct JobList<J = JobSummary> {
    pub jobs: Vec<J>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[cfg_attr(test, schemars(required))]
    pub next_cursor: Option<String>,
}
