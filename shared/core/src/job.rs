//! The job record as the shard stores it and the API returns it, with its states and lanes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::JobId;
use crate::retry::Backoff;
use crate::time::{rfc3339, rfc3339_opt};

pub use crate::lane::Lane;

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
    /// Who owns the job (see [`crate::tenant`]). Jobs stored before tenants read as
    /// `default`.
    #[serde(default)]
    pub tenant: crate::tenant::Tenant,
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
    /// The schedule whose run this job is (set by the shard that fired it, never by a
    /// caller): a run's key may only ever name the schedule's own job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The upstream token bucket (a consumer's `EDGEJOBS_UPSTREAM_LIMITS` entry) the job's
    /// attempts take from, from its type's `rate_group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_group: Option<String>,
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
    /// For a native attempt a consumer started or took over: the random token the shard
    /// issued with that start (its answer carries it), which every report of the holder
    /// (heartbeat, progress, completion, failure) must carry. A takeover issues a new one;
    /// it is cleared when the attempt ends. Never shown by the job API (only the start's
    /// answer to the consumer holds it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// When the job was last restored from a backup (ms; 0 if never). A restore can move the
    /// attempt counter back, so hand-offs are remembered per (attempt, epoch): a restored job
    /// is delivered again instead of being taken for a duplicate of its earlier hand-off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// The attempts that ended, oldest first (the newest [`MAX_ATTEMPT_HISTORY`]): when each
    /// ran, how it ended and its error. Listings leave it out; `GET /v1/jobs/{id}` shows it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptRecord>,
    /// Flow control (#28): the keys, rate, priority, debounce and throttle the job was
    /// created with, and where it stands in its shard's gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<crate::flow::Flow>,
    /// Why a queued job does not start yet: `concurrency:<key>`, `rate:<key>`, `paused`
    /// (its key or type). `None` once the gate let it through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// A workflow run's recorded steps, in the order its handler reached them (#29; see
    /// [`crate::workflow`]). Listings leave them out; `GET /v1/jobs/{id}` shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<crate::steps::Step>,
    /// Attempts of the current series that ended by suspending the run (a sleep, a wait, a
    /// step retry): they do not count against `max_attempts`.
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub free_attempts: u32,
    /// For a child job a run's `invoke` or `fan_out` step started: that run and step, which
    /// the child's end resumes. Children live in their parent's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<crate::steps::Parent>,
    /// Completion callbacks (#30): the callback job inserted, in this job's shard and in the
    /// transaction that ends it, when it completes (`on_complete`) or first dies (`on_fail`);
    /// a cancelled job fires neither. Each fires once ([`crate::callback::Callback`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<Box<crate::callback::Callback>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<Box<crate::callback::Callback>>,
    /// The batch (`POST /v1/jobs/batch` with `on_complete`) the job belongs to; the batch's
    /// row lives in this shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// Whether the job's batch counted its end: only its first (a replayed dead job that
    /// ends again is not counted twice). Never shown by the API.
    #[serde(default, skip_serializing_if = "is_false")]
    pub batch_counted: bool,
    /// Where the job sits in a distributed trace (#32): the enqueue span, whose children
    /// are the job's deliveries and attempts. Set by the router at enqueue: from the
    /// caller's `traceparent` when valid, else a new trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceContext>,
    /// The job's stream chunks as its shard loaded them, and those this transaction adds
    /// (#30, [`crate::tape::Tape`]): never part of the stored document.
    #[serde(skip)]
    pub tape: crate::tape::Tape,
}

/// How many ended attempts a job remembers.
pub const MAX_ATTEMPT_HISTORY: usize = 20;

/// Longest error text kept per remembered attempt (the newest is also in `last_error`).
pub const MAX_ATTEMPT_ERROR_BYTES: usize = 512;

/// One ended attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    #[serde(with = "rfc3339")]
    pub started_at: u64,
    #[serde(with = "rfc3339")]
    pub ended_at: u64,
    pub duration_ms: u64,
    /// `completed`, `failed`, `lease_lost` or `cancelled`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where a native-lane attempt was handed to the long-job stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub attempt: u32,
    pub entry: String,
}

impl Job {
    /// The idempotency key as its shard stores it: scoped by the job's tenant, so two
    /// tenants' equal keys name two jobs.
    pub fn scoped_key(&self) -> Option<String> {
        self.idempotency_key.as_deref().map(|k| self.tenant.scope_key(k))
    }

    /// Remembers that the running attempt (as `self` still describes it) ended at `now`.
    pub fn record_attempt(&mut self, now: u64, outcome: &str, error: Option<&str>) {
        let started_at = self.started_at.unwrap_or(now).min(now);
        self.attempts.push(AttemptRecord {
            attempt: self.attempt,
            started_at,
            ended_at: now,
            duration_ms: now - started_at,
            outcome: outcome.to_owned(),
            error: error.map(|e| clip(e, MAX_ATTEMPT_ERROR_BYTES)),
        });
        let over = self.attempts.len().saturating_sub(MAX_ATTEMPT_HISTORY);
        self.attempts.drain(..over);
    }

    /// Attempts started in the current series.
    pub fn attempts_in_series(&self) -> u32 {
        self.attempt.saturating_sub(self.series_base).saturating_sub(self.free_attempts)
    }

    /// Checks what a stored job must satisfy (a job read from a backup is checked before it
    /// is imported): its counters, times and state agree. The first problem found.
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.id;
        if self.series_base > self.attempt {
            return Err(format!("{id}: series_base {} is past attempt {}", self.series_base, self.attempt));
        }
        if self.series_base.saturating_add(self.free_attempts) > self.attempt {
            return Err(format!("{id}: free_attempts {} is past the series' attempts", self.free_attempts));
        }
        if self.max_attempts == 0 || self.max_attempts > crate::fields::MAX_ATTEMPTS_LIMIT {
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
