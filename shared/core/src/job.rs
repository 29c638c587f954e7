//! The job record as the shard stores it and the API returns it, with its states and lanes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::JobId;
use crate::retry::Backoff;
use crate::time::{rfc3339, rfc3339_opt};

/// Where a job type runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// Short jobs, run by the edge queue consumer.
    Edge,
    /// Long jobs, handed to the Upstash stream and run by the native consumer.
    Native,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Edge => "edge",
            Lane::Native => "native",
        }
    }
}

/// The states of a job. The legal moves between them are in [`crate::machine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to be picked up by a consumer.
    Queued,
    /// Delayed (`delay`/`run_at`) or waiting for its next retry; the shard alarm wakes it.
    Scheduled,
    /// An attempt is running.
    Active,
    /// Finished successfully (terminal).
    Completed,
    /// Attempts exhausted or a permanent error: the dead-letter set. Can be replayed.
    Dead,
    /// Cancelled by a user (terminal).
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Active,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

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

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further attempt will run (a dead job can still be replayed by a user).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Completed | JobState::Dead | JobState::Cancelled)
    }
}

/// One job, as stored in its shard and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub lane: Lane,
    pub state: JobState,
    pub payload: Value,
    /// The fencing token: the number of the newest attempt, counted over the job's whole
    /// life (replays do not reset it). Reports must name it; 0 means never started.
    pub attempt: u32,
    /// The value of `attempt` when the current attempt series began (0, or at the last replay).
    pub series_base: u32,
    /// Attempts allowed in one series.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long one attempt may run, in ms.
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(with = "rfc3339")]
    pub created_at: u64,
    #[serde(with = "rfc3339")]
    pub updated_at: u64,
    /// When the job may run next (its delay or retry time; equal to `created_at` otherwise).
    #[serde(with = "rfc3339")]
    pub run_at: u64,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Last time the running attempt reported (start, progress or a lease renewal).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The newest attempt another consumer took over after its lease ran out: that attempt's
    /// late reports are refused with `lease_lost` (so its holder leaves the stream entry,
    /// which the new holder now runs, alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_lost_attempt: Option<u32>,
    /// Set when a user cancels an active job: its next report is refused and it ends cancelled.
    #[serde(default)]
    pub cancel_requested: bool,
    /// For native-lane jobs: the stream entry that carries the newest hand-off, and for which
    /// attempt (so the shard knows what is in the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_entry: Option<StreamEntry>,
    /// When the job was last restored from a backup (ms; 0 if never). A restore can move the
    /// attempt counter back, so hand-offs are remembered per (attempt, epoch): a restored job
    /// is delivered again instead of being taken for a duplicate of its earlier hand-off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where a native-lane attempt was handed to the long-job stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub attempt: u32,
    pub entry: String,
}

impl Job {
    /// Attempts started in the current series.
    pub fn attempts_in_series(&self) -> u32 {
        self.attempt.saturating_sub(self.series_base)
    }

    /// Checks what a stored job must satisfy (a job read from a backup is checked before it
    /// is imported): its counters, times and state agree. The first problem found.
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        if self.series_base > self.attempt {
            return Err(format!("{id}: series_base {} is past attempt {}", self.series_base, self.attempt));
        }
        if self.max_attempts == 0 || self.max_attempts > crate::spec::MAX_ATTEMPTS_LIMIT {
            return Err(format!("{id}: max_attempts {} is out of range", self.max_attempts));
        }
        if self.timeout_ms == 0 {
            return Err(format!("{id}: timeout_ms is 0"));
        }
        if self.updated_at < self.created_at {
            return Err(format!("{id}: updated_at is before created_at"));
        }
        match self.state {
            JobState::Active if self.attempt == 0 || self.started_at.is_none() => {
                Err(format!("{id}: active without a started attempt"))
            }
            JobState::Completed | JobState::Dead | JobState::Cancelled if self.finished_at.is_none() => {
                Err(format!("{id}: {} without finished_at", self.state.as_str()))
            }
            _ => Ok(()),
        }
    }
}
