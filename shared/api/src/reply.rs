//! The API's other replies and request bodies: batch enqueue, errors, dead-letter replay,
//! stats, whoami, backups.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobState};

/// An error's body inside `{"error":{...}}`. `code` is one of the stable codes of
/// `edgejobs_core::ErrorCode` (e.g. `invalid_field`, `job_not_found`), kept a string here
/// so a client reads codes newer than itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// The offending field, for `invalid_field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Every error response: `{"error":{"code","message"}}`. `E` is [`ErrorBody`] for a client;
/// the edge writes its own error type, which serializes the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ErrorReply<E = ErrorBody> {
    pub error: E,
}

/// `POST /v1/jobs/batch`'s body: 1 to 100 job specs, each what `POST /v1/jobs` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub jobs: Vec<Value>,
}

/// One item of a batch reply: the job when it was enqueued (201, or 200 when its
/// idempotency key named an existing job), else the status and error a single enqueue of
/// it would have had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum BatchItem<J = Job, E = ErrorBody> {
    Created(BatchItemCreated<J>),
    Failed(BatchItemFailed<E>),
}

/// An item that was enqueued: 201, or 200 when its idempotency key named an existing job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BatchItemCreated<J = Job> {
    pub status: u16,
    pub job: J,
}

/// An item that was not enqueued: the status and error a single enqueue of it would have had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BatchItemFailed<E = ErrorBody> {
    pub status: u16,
    pub error: E,
}

/// `POST /v1/jobs/batch`'s reply: one result per item, in the request's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BatchResult<J = Job, E = ErrorBody> {
    pub results: Vec<BatchItem<J, E>>,
    /// The batch the created jobs form, when the request had `on_complete` (#30) and any
    /// job was created: its callback fires once all of them are final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
}

/// `POST /v1/dead/replay`'s body (admin scope); every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// `POST /v1/dead/replay`'s reply: the jobs requeued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ReplayResult {
    pub replayed: usize,
    pub ids: Vec<String>,
}

/// One count of `GET /v1/stats`: the jobs in one state of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct StatsJobs {
    pub state: JobState,
    #[serde(rename = "type")]
    pub job_type: String,
    pub count: u64,
}

/// One minute of `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct MinutePoint {
    pub at: String,
    /// Jobs created.
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed (retried or not).
    pub failed: u64,
    /// Jobs that became dead.
    pub dead: u64,
}

/// A native consumer as it announces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Consumer {
    pub name: String,
    pub seen_seconds_ago: f64,
    /// Heard from within the last 30 s.
    pub running: bool,
    pub in_flight: u64,
    pub concurrency: u64,
    pub types: Vec<String>,
    pub version: String,
}

/// The native consumers; `ok` is false when Upstash could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Consumers {
    pub ok: bool,
    pub list: Vec<Consumer>,
}

/// How many shards answered, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ShardsAnswered {
    pub answered: usize,
    pub of: usize,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Stats {
    pub jobs: Vec<StatsJobs>,
    #[cfg_attr(test, schemars(required))]
    pub oldest_queued_at: Option<String>,
    /// The last hour, one point per minute, oldest first.
    pub minutes: Vec<MinutePoint>,
    pub consumers: Consumers,
    pub shards: ShardsAnswered,
    pub at: String,
}

/// `GET /v1/whoami`: the key's id (safe to show), its scopes (`jobs`, `admin`) and tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Whoami {
    pub key_id: String,
    pub scopes: Vec<String>,
    /// The key's tenant; `null` for an admin key, which sees every tenant.
    #[cfg_attr(test, schemars(required))]
    pub tenant: Option<String>,
}

/// A read token (#30), from `POST /v1/jobs/{id}/token` and `POST /v1/tokens`: short-lived,
/// read-only, for one job (`job`) or the jobs of one tag (`tag`) of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReadToken {
    /// `ejr_...`: sent as `?token=` or `Authorization: Bearer`.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub tenant: String,
}

/// A backup in `GET /v1/admin/backups` and `GET /v1/admin/backups/latest` (which adds its
/// age). `valid`: complete (it has a manifest); the sizes are `null` when it is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BackupSummary {
    pub id: String,
    pub valid: bool,
    #[cfg_attr(test, schemars(required))]
    pub created_at: Option<String>,
    pub rows: Option<u64>,
    pub bytes: Option<u64>,
    pub shards: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
}

/// `GET /v1/admin/backups`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BackupList {
    pub backups: Vec<BackupSummary>,
}

/// `POST /v1/admin/backups/{id}/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct VerifyResult {
    pub id: String,
    pub valid: bool,
    pub problems: Vec<String>,
    /// The rows the manifest counts.
    #[serde(default)]
    pub rows: u64,
}

/// One object of a backup: part `part` of a shard's jobs, or the schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ManifestEntry {
    pub shard: u64,
    /// 0 for the first (or only) part.
    #[serde(default)]
    pub part: u64,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// `POST /v1/admin/backups`' reply: the manifest of the backup it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Manifest {
    pub schema_version: u64,
    pub id: String,
    pub started_at: String,
    pub finished_at: String,
    pub shard_count: u64,
    pub shards: Vec<ManifestEntry>,
    pub total_rows: u64,
    pub total_bytes: u64,
    /// Absent in backups made before schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<ManifestSchedules>,
}

/// The schedules object of a backup (`shard` and `part` unused, 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ManifestSchedules {
    #[serde(default)]
    pub shard: u64,
    #[serde(default)]
    pub part: u64,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Rows restored into one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ShardRows {
    pub shard: u64,
    pub rows: u64,
}

/// `POST /v1/admin/restore`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Restored {
    pub backup: String,
    pub restored_rows: u64,
    /// Schedules restored; `null` for a backup made before schedules (they stay as they are).
    #[serde(default)]
    pub restored_schedules: Option<u64>,
    #[serde(default)]
    pub shards: u64,
    #[serde(default)]
    pub per_shard: Vec<ShardRows>,
}

/// `POST /v1/admin/restore`'s body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub backup: String,
}

/// `POST /v1/admin/webhook-secret`'s reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct WebhookSecret {
    pub origin: String,
    /// The job type whose deliveries the secret verifies (`webhook` unless asked).
    #[serde(rename = "type")]
    pub job_type: String,
    /// The secret of the newest `WEBHOOK_SIGNING_SECRET`.
    pub secret: String,
    /// One secret per configured `WEBHOOK_SIGNING_SECRET`, newest first (`secret` is the
    /// first); during a rotation a receiver may hold any of them.
    pub secrets: Vec<String>,
}

/// `POST /v1/admin/reseal`'s answer: what one page re-sealed, and where the next starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ResealPage {
    pub shard: usize,
    /// The key values are sealed under now (the newest).
    pub key: String,
    /// Jobs read on this page.
    pub scanned: u64,
    /// Jobs with at least one value re-sealed.
    pub jobs_resealed: u64,
    /// Schedules with at least one value re-sealed (first page only).
    pub schedules_resealed: u64,
    /// Jobs and schedules holding a value no configured key opens.
    pub unopenable: u64,
    /// Where the next page starts; `None` when done.
    #[cfg_attr(test, schemars(required))]
    pub cursor: Option<String>,
    pub done: bool,
}
