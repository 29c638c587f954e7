//! Request bodies: a job spec (`POST /v1/jobs`, each item of a batch), a schedule spec
//! (`POST /v1/schedules`), an event (`POST /v1/events`) and a re-seal page
//! (`POST /v1/admin/reseal`). The API validates them; these types only carry them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::schedule::{CatchUp, Overlap};

/// A duration as a request may give it: integer milliseconds, or text such as `30s`, `1h 30m`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum DurationInput {
    Ms(u64),
    Text(String),
}

/// Retry delays of a job spec; each part optional (the type's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BackoffInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DurationInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<DurationInput>,
}

/// A job to enqueue. Only `type` is required (and `payload` for the types that need one);
/// `delay` and `run_at` exclude each other.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct JobSpec {
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// The tenant the job belongs to: a jobs key's own (naming another is refused), or any
    /// configured tenant for an admin key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Flow control (#28): concurrency keys, rate, priority (0-9), debounce, throttle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<DebounceInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleInput>,
    /// Completion callbacks (#30): enqueued in the job's shard when it completes
    /// (`on_complete`) or dies (`on_fail`), with the finished job's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<CallbackInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<CallbackInput>,
}

/// A completion callback (#30): a URL, delivered as a `webhook` job (signed, retried) whose
/// body is the summary, or a job spec, whose payload gets the summary under `"callback"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum CallbackInput {
    Url(UrlCallbackInput),
    Job(JobCallbackInput),
}

/// `{"url": "https://...", "headers": {...}}`: header values are sealed at enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UrlCallbackInput {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

/// `{"job": {...}}`: the callback job's spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JobCallbackInput {
    pub job: CallbackJobSpec,
}

/// A callback job's spec: a job spec without callbacks of its own, idempotency key,
/// tenant, `run_at` or flow control; its payload an object (the summary is added under
/// `"callback"`), its `delay` counted from the firing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CallbackJobSpec {
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationInput>,
}

/// A schedule to create (`POST /v1/schedules`). `job` is a job spec without
/// `idempotency_key`, `delay` and `run_at` (the schedule sets them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub job: JobSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

/// A job spec's `concurrency`: one key and limit, or a list of 1 to 2 (all must allow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ConcurrencyInput {
    One(crate::job::FlowLimit),
    Many(Vec<crate::job::FlowLimit>),
}

/// A job spec's `rate`: at most `limit` starts per `period` for `key`, evenly spaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RateInput {
    pub key: String,
    pub limit: u32,
    pub period: DurationInput,
}

/// A job spec's `debounce`: enqueues with `key` within `period` collapse into one job that
/// runs once the key is quiet (the last payload wins); `max_wait` bounds the delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DebounceInput {
    pub key: String,
    pub period: DurationInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait: Option<DurationInput>,
}

/// A job spec's `throttle`: at most `limit` jobs created per `period` for `key`; over it,
/// the enqueue answers 200 with the key's last job (`on_limit: "drop"`) or 429 `throttled`
/// (`"reject"`, the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ThrottleInput {
    pub key: String,
    pub limit: u32,
    pub period: DurationInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_limit: Option<String>,
}

/// The body of `POST /v1/events`: wakes the workflow runs waiting for `name` (and starts the
/// types declared `on_event`). `id` makes the send idempotent (and safe to retry).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct EventRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The body of `POST /v1/admin/reseal`: one page of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ResealRequest {
    pub shard: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
