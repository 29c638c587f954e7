//! The typed protocol between the edge Worker and its `JobShard` Durable Objects: one
//! request enum, one struct per operation, and each operation's reply type (the
//! [`ShardOp`] trait ties them together, so the compiler follows a call across the
//! boundary). Every operation works on many jobs at once.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::flow::FlowOp;
use crate::id::JobId;
use crate::job::{Job, JobState};
use crate::outcome::Refusal;
use crate::plan::{Handoff, JobEvent, SweepPolicy};
use crate::stats::{Delta, ShardStats};
use crate::wire::ListQuery;

/// An operation of the shard protocol and the type of its reply.
pub trait ShardOp: Into<ShardRequest> {
    type Reply: Serialize + DeserializeOwned;
    /// Whether a call of this operation carries the caller's pending counter deltas.
    const CARRY: Carry;
}

/// When a call carries the caller's pending counter deltas (request counts and the like,
/// which the shard writes with the call's commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// Always: a scrape (the shard writes what is pending, then reads) or a flush.
    Always,
    /// When the caller last sent its counts a while ago: operations that commit anyway,
    /// so counting costs a few row writes a second, not a few per request.
    WhenDue,
    /// Never: reads, which must not cost a write.
    Never,
}

/// What the caller sends: the request, and counter deltas the calling isolate accumulated
/// (request counts, queue messages received, Upstash commands), which the shard records in
/// its next write so they cost no call of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardCall {
    pub request: ShardRequest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<Delta>,
}

/// The shard's answer: the operation's reply, or the error that refused the whole call.
pub type ShardReply<T> = Result<T, ApiError>;

macro_rules! requests {
    ($($variant:ident($op:ident) -> $reply:ty, $name:literal, $carry:ident;)*) => {
        /// Every shard operation.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "op", content = "args", rename_all = "snake_case", deny_unknown_fields)]
        pub enum ShardRequest {
            $($variant($op),)*
        }

        impl ShardRequest {
            /// The operation's name (a metric label).
            pub fn name(&self) -> &'static str {
                match self {
                    $(ShardRequest::$variant(_) => $name,)*
                }
            }
        }

        $(
            impl ShardOp for $op {
                type Reply = $reply;
                const CARRY: Carry = Carry::$carry;
            }

            impl From<$op> for ShardRequest {
                fn from(op: $op) -> ShardRequest {
                    ShardRequest::$variant(op)
                }
            }
        )*
    };
}

requests! {
    CreateMany(CreateMany) -> Vec<Stored>, "create_many", WhenDue;
    Get(Get) -> Job, "get", Never;
    ApplyMany(ApplyMany) -> Vec<Result<Applied, Refusal>>, "apply_many", WhenDue;
    ReportMany(ReportMany) -> Vec<Result<Applied, Refusal>>, "report_many", WhenDue;
    FinishMany(FinishMany) -> Finished, "finish_many", WhenDue;
    List(List) -> ListPage, "list", Never;
    GetMany(GetMany) -> Vec<Box<serde_json::value::RawValue>>, "get_many", Never;
    ReplayDead(ReplayDead) -> Vec<JobId>, "replay_dead", WhenDue;
    HandoffMany(HandoffMany) -> Vec<Result<(), Refusal>>, "handoff_many", WhenDue;
    Stats(Stats) -> ShardStats, "stats", Never;
    Pending(Pending) -> u64, "pending", Never;
    Export(Export) -> ExportPage, "export", Never;
    Import(Import) -> Imported, "import", WhenDue;
    RetentionTops(RetentionTops) -> RetentionTopsReply, "retention_tops", Never;
    RetentionPage(RetentionPage) -> RetentionPageReply, "retention_page", Never;
    RetentionDelete(RetentionDelete) -> Deleted, "retention_delete", WhenDue;
    Sweep(Sweep) -> SweepReport, "sweep", WhenDue;
    Record(Record) -> (), "record", Always;
    SetGauge(SetGauge) -> (), "set_gauge", WhenDue;
    Schedules(Schedules) -> ScheduleReply, "schedules", WhenDue;
    Reseal(Reseal) -> ResealReport, "reseal", WhenDue;
    Topology(TopologyOp) -> crate::topology::Topology, "topology", Never;
    ClaimKeys(ClaimKeys) -> Vec<Option<Box<serde_json::value::RawValue>>>, "claim_keys", WhenDue;
    Flow(FlowOp) -> crate::flow::FlowReply, "flow", WhenDue;
    Events(EventsOp) -> EventsReply, "events", WhenDue;
}

/// The event index of workflow waits (#29), kept by the shard an event name hashes to
/// ([`event_home`]): waits are registered there before their run records them, and an event
/// sent finds the waits it matches there without looking at any run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventsOp {
    /// Index these waits; each is answered with the data of an event that already matches
    /// it (sent since the wait's `since`, or one that matched an earlier registration).
    Register { waits: Vec<WaitEntry> },
    /// An event was sent: remember it (its id for deduplication, its data for look-backs)
    /// and take the waits it matches.
    Signal { tenant: crate::tenant::Tenant, name: String, data: serde_json::Value, id: Option<String> },
    /// These matches reached their runs: forget them.
    Delivered { keys: Vec<WaitKey> },
}

pub use crate::steps::{WaitEntry, WaitKey};

/// The event index's answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventsReply {
    Registered { matched: Vec<Option<serde_json::Value>> },
    Signaled(Signaled),
    Delivered,
}

/// What an event send took: the waits to resume (with the event's data), and whether the
/// send repeated an earlier one with the same id (whose matches not yet delivered are
/// answered again, so a retried send finishes the delivery).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signaled {
    pub duplicate: bool,
    pub resumes: Vec<WaitKey>,
    pub data: serde_json::Value,
}

/// The shard that indexes `tenant`'s event `name` (by the first shard count, so it does
/// not move when the count grows).
pub fn event_home(tenant: &crate::tenant::Tenant, name: &str, topology: &crate::topology::Topology) -> u16 {
    topology.schedule_home(&format!("event\u{1f}{}", tenant.scope_key(name)))
}

/// Creates jobs (already validated and given ids by the router), each answered in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMany {
    pub jobs: Vec<Job>,
    pub idempotency_window_ms: u64,
    /// The batch these jobs open (#30: `POST /v1/jobs/batch` with `on_complete`): every
    /// job naming it is among `jobs`, and the shard writes its row (the jobs it created
    /// are its total) in the same transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<crate::callbacks::BatchOpen>,
}

/// One job a create answers with: whether this call created it, and the job's JSON as the
/// shard wrote it, passed through to the client without being parsed and written again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub created: bool,
    pub job: Box<serde_json::value::RawValue>,
    /// Set instead of a job when the job's idempotency key moved to another shard after a
    /// growth of `SHARD_COUNT` (this shard was its home under the earlier count): the caller
    /// read the topology before the growth, and must read it again and retry there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<u16>,
    /// Set when the job's debounce or throttle answered instead of a create (#28): the
    /// job is the key's existing one (`debounced`, `throttled`), or none (`rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowOutcome>,
}

/// What a debounce or throttle answered an enqueue with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FlowOutcome {
    /// Collapsed into the key's scheduled job (its payload is now this one's).
    Debounced,
    /// Over the throttle with `on_limit: "drop"`: the key's last job.
    Throttled,
    /// Over the throttle with `on_limit: "reject"`: nothing created; the window reopens
    /// in `retry_after_ms`.
    Rejected { retry_after_ms: u64 },
}

/// The deployment's shard topology, kept by shard 0: `configured` (this isolate's
/// `SHARD_COUNT`) is recorded when it is higher than every count before it; the answer is
/// the topology after that (a lower `configured` changes nothing: lowering is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyOp {
    pub configured: u16,
}

/// After a growth of `SHARD_COUNT`, claims idempotency keys at their home under an earlier
/// count: each is answered with the live job this shard holds for it, or `None` after this
/// shard recorded that the key moved to `to` (a later create of it here is refused with
/// `moved_to`, so the key never names two jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimKeys {
    pub claims: Vec<KeyClaim>,
    pub idempotency_window_ms: u64,
}

/// One key to claim (scoped by tenant, as stored: `{tenant}\x1f{key}`) and its new home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyClaim {
    pub key: String,
    pub to: u16,
}

/// How many jobs of a tenant the shard holds that are not final yet (what
/// `TENANT_MAX_PENDING` caps; one counter row read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub tenant: crate::tenant::Tenant,
}

/// Reads one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Get {
    pub id: JobId,
    /// Whose job the caller may see: another tenant's answers `job_not_found`, exactly as a
    /// missing job does (`None`: an admin, who sees all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<crate::tenant::Tenant>,
    /// A long poll (#30): when the job is not final, answer once it is or after this many ms
    /// (0: at once). The edge caps it at [`crate::live::MAX_WAIT_MS`].
    #[serde(default, skip_serializing_if = "is_zero_ms")]
    pub wait_ms: u64,
}

fn is_zero_ms(n: &u64) -> bool {
    *n == 0
}

/// Applies events to jobs (starts, outcomes, cancels, retries), each answered on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyMany {
    pub events: Vec<JobEvent>,
    /// Answer with the whole job for every event; otherwise only its state (but always the
    /// job for a start or a reclaim, which need its payload).
    #[serde(default)]
    pub full: bool,
    /// Only jobs of this tenant are touched: another tenant's job is refused as not found,
    /// exactly as a missing one (a `jobs` key's cancel or retry). `None`: any job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<crate::tenant::Tenant>,
}

/// The edge queue consumer's outcomes of the attempts it ran (events as [`ApplyMany`]'s),
/// and up to `take` edge-lane jobs that the flow gate lets start because of them (the next
/// job of a key whose slot an outcome released), started in the same transaction for the
/// caller to run at once instead of going through the queue ("fetch next on completion",
/// as BullMQ's `moveToCompleted` does). The rest of what the gate sends goes to the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishMany {
    pub events: Vec<JobEvent>,
    #[serde(default)]
    pub take: u16,
}

/// A [`FinishMany`]'s answer: each event's, in order, and the jobs started for the caller
/// (with their payloads), which it must run and report as it does a delivered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finished {
    pub answers: Vec<Result<Applied, Refusal>>,
    pub next: Vec<Job>,
}

/// Applies native consumers' reports (the consumer route's only way in): native-lane jobs
/// only, each report but a start or a takeover carrying its attempt's lease token, which a
/// start or a takeover issues (see `plan::apply_reports`). Answered like [`ApplyMany`],
/// always with the job for a start or a reclaim (its payload and its new lease token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportMany {
    pub reports: Vec<crate::plan::Report>,
    /// The name of the consumer token that sent them (for the shard's log; never a token).
    #[serde(default)]
    pub consumer: String,
    /// Answer with the whole job for every report (the one-report route does).
    #[serde(default)]
    pub full: bool,
}

/// One accepted event's answer: the job's state after it, and the job when asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub id: JobId,
    pub state: JobState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// A consumer's start or takeover: the lease token of the attempt it began, which its
    /// reports must carry (it travels here, never inside a job document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}

/// A page of job summaries of this shard (the router fans it out and merges). Heavy parts
/// are dropped inside SQLite (`json_remove`), so the object never holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    pub query: ListQuery,
}

/// A shard's page of a listing. A filter SQLite cannot answer from an index (state, type,
/// tag, times, id prefix, search) reads at most [`MAX_SCAN`] rows per call: when it stops
/// there, `scanned_to` is the last id it read, and the listing may go on below it only on
/// a later page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListPage {
    pub items: Vec<Listed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_to: Option<JobId>,
}

/// Most rows one shard reads for one page of a filtered listing.
pub const MAX_SCAN: u32 = 2000;

/// One listed job: its id (for merging) and its summary as stored JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    pub id: JobId,
    pub doc: Box<serde_json::value::RawValue>,
}

/// Whole jobs by id (the ones that exist), for a page that includes payloads or results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetMany {
    pub ids: Vec<JobId>,
}

/// Replays up to `limit` dead jobs (oldest death first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayDead {
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    /// Only jobs with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub limit: u32,
    /// Only this tenant's jobs (an admin's `tenant` filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<crate::tenant::Tenant>,
}

/// Records the stream entries that carry native attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoffMany {
    pub entries: Vec<Handoff>,
}

/// This shard's numbers for a scrape or a health check. With `flush` (an authenticated
/// scrape) the shard first writes the counts it holds in memory, so the scrape is current;
/// without it (health, anonymous scrapes) the call writes nothing. Either way only written
/// counts are reported, so counters never go down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    #[serde(default)]
    pub flush: bool,
}

/// A page of this shard's jobs for a backup, ordered by id, after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub after: Option<String>,
    pub max_rows: u32,
    pub max_bytes: u64,
}

/// One exported page: NDJSON, its row count, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPage {
    pub ndjson: String,
    pub rows: u64,
    /// The id of the last row; `None` when the page is empty.
    pub last: Option<String>,
    /// No rows remain after this page.
    pub done: bool,
}

/// A page of a restore: jobs of this shard as NDJSON. The first page replaces every job
/// and idempotency key the shard holds; later pages add to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    pub shard: u16,
    pub ndjson: String,
    pub first: bool,
    pub idempotency_window_ms: u64,
    /// The restore's epoch (its time, ms), stamped on every imported job.
    #[serde(default)]
    pub epoch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    pub rows: u64,
}

/// Per type, the `(updated_at, id)` of this shard's newest `keep` finished jobs of each
/// class (`done`: completed and cancelled; `dead`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionTops {
    pub done_keep: u32,
    pub dead_keep: u32,
}

/// Class (`done`, `dead`) → type → newest rows.
pub type RetentionTopsReply = BTreeMap<String, BTreeMap<String, Vec<(u64, String)>>>;

/// Up to `limit` finished jobs that retention removes: older than their class's age, or
/// beyond their type's cut-off `(updated_at, id)` (the newest N across shards are kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPage {
    pub now: u64,
    pub done_age_ms: u64,
    pub dead_age_ms: u64,
    #[serde(default)]
    pub done_cutoffs: BTreeMap<String, (u64, String)>,
    #[serde(default)]
    pub dead_cutoffs: BTreeMap<String, (u64, String)>,
    pub limit: u32,
    /// Types whose age differs from the class's (`JOB_TYPES` retention overrides).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub done_age_by_type: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dead_age_by_type: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPageReply {
    pub ndjson: String,
    pub rows: u64,
    pub ids: Vec<String>,
}

/// Deletes the planned jobs that are still finished (a replay in between keeps a job),
/// and counts them (and the `archived` rows the caller wrote to R2) in the same commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDelete {
    pub ids: Vec<String>,
    #[serde(default)]
    pub archived: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: u64,
}

/// The sweep of one shard: re-sends stale queued jobs, fails lost attempts, re-arms the
/// alarm. Works in pages; `complete` is false when it stopped at its page budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    pub policy: SweepPolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub resent: u64,
    pub timed_out: u64,
    pub complete: bool,
}

/// Records counter deltas (they travel in [`ShardCall::deltas`]); used when no other call
/// would carry them soon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {}

/// Re-seals, under the newest `PAYLOAD_ENCRYPTION_KEYS` key, the sealed header values of up
/// to `limit` of this shard's jobs (ordered by id, after `after`) and, on the first page
/// (`after` absent), of every schedule the shard holds. Idempotent: values under the newest
/// key are left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reseal {
    pub after: Option<String>,
    pub limit: u32,
}

/// One page of a re-seal, and where the next starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealReport {
    /// The key values are sealed under now (the newest).
    pub key: String,
    /// Jobs read on this page.
    pub scanned: u64,
    /// Jobs with at least one value re-sealed (written).
    pub jobs_resealed: u64,
    /// Schedules with at least one value re-sealed (first page only).
    pub schedules_resealed: u64,
    /// Jobs and schedules holding a value no configured key opens: left as they were.
    pub unopenable: u64,
    /// The id to continue after (`after` of the next call); `None` when done.
    pub cursor: Option<String>,
    /// No job remains after this page.
    pub done: bool,
}

/// Sets a stored gauge (the stats object keeps the last backup and sweep times).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetGauge {
    pub name: crate::stats::Metric,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Event;
    use crate::stats::Metric;
    use serde_json::json;

    #[test]
    fn requests_round_trip_and_misspellings_are_refused() {
        let call = ShardCall {
            request: ApplyMany {
                events: vec![JobEvent { id: JobId::new(3, 5, 7), event: Event::Start { attempt: 1 } }],
                full: true,
                tenant: None,
            }
            .into(),
            deltas: vec![Delta::count(Metric::WorkerInvocationsTotal, &[("kind", "queue")], 1.0)],
        };
        let text = serde_json::to_string(&call).expect("encodes");
        let back: ShardCall = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, call);
        assert_eq!(back.request.name(), "apply_many");
        let typo = json!({ "request": { "op": "aply_many", "args": { "events": [] } } });
        assert!(serde_json::from_value::<ShardCall>(typo).is_err());
        let field = json!({ "request": { "op": "apply_many", "args": { "evnts": [] } } });
        assert!(serde_json::from_value::<ShardCall>(field).is_err());
    }

    #[test]
    fn replies_encode_errors_and_values_distinctly() {
        let ok: ShardReply<Vec<Result<(), ApiError>>> =
            Ok(vec![Ok(()), Err(ApiError::new(crate::ErrorCode::StaleAttempt, "x"))]);
        let text = serde_json::to_string(&ok).expect("encodes");
        let back: ShardReply<Vec<Result<(), ApiError>>> = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back, ok);
    }
}

/// An operation on the schedules a shard holds (a schedule lives in the shard of its runs'
/// flow key, else in the shard its name hashes to, and its runs' jobs are created in that
/// shard; see `schedule::home`). Answers are [`ScheduleReply`]:
/// domain data, which the edge turns into the API's `ScheduleView`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedules {
    pub op: ScheduleOp,
}

/// What to do with schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum ScheduleOp {
    /// Stores a new schedule (validated and sealed by the router); 409 when the name exists.
    Create {
        schedule: Box<crate::schedule::Schedule>,
    },
    /// One schedule with its runs' states and upcoming times.
    Get {
        name: String,
    },
    /// Schedules by name after `after`, at most `limit` (only `tenant`'s, when given).
    List {
        after: Option<String>,
        limit: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<crate::tenant::Tenant>,
    },
    /// Merges a patch body (validated whole in the shard, against the stored schedule).
    Patch {
        name: String,
        body: serde_json::Value,
    },
    Delete {
        name: String,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Creates a run now, whatever the overlap policy.
    Trigger {
        name: String,
    },
    /// Every schedule of the shard, as stored (backups).
    Export,
    /// Replaces every schedule of the shard, and the names it keeps for schedules living
    /// elsewhere (restores).
    Import {
        schedules: Vec<crate::schedule::Schedule>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        claims: Vec<NameClaim>,
    },
    /// At the name's shard: records that schedule `name` lives on shard `home` (its runs'
    /// flow key's), before it is created there; 409 when the name is taken here, by a
    /// schedule or by a claim for another shard. A claim for the same shard answers again.
    Claim {
        name: String,
        home: u16,
    },
    /// At the name's shard: forgets its claim (the schedule was deleted at its home).
    Unclaim {
        name: String,
    },
}

impl ScheduleOp {
    /// The schedule an operation names, if it names one.
    pub fn name(&self) -> Option<&str> {
        match self {
            ScheduleOp::Get { name }
            | ScheduleOp::Patch { name, .. }
            | ScheduleOp::Delete { name }
            | ScheduleOp::Pause { name }
            | ScheduleOp::Resume { name }
            | ScheduleOp::Trigger { name } => Some(name),
            ScheduleOp::Create { .. }
            | ScheduleOp::List { .. }
            | ScheduleOp::Export
            | ScheduleOp::Import { .. }
            | ScheduleOp::Claim { .. }
            | ScheduleOp::Unclaim { .. } => None,
        }
    }
}

/// A name kept at its shard for a schedule that lives on shard `home`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameClaim {
    pub name: String,
    pub home: u16,
}

/// A schedule as a shard shows it: as stored, with the state of each run's job (`None`:
/// retention removed it), whether it is overdue, and (on a single read) its next ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleShown {
    pub schedule: crate::schedule::Schedule,
    pub run_states: Vec<Option<JobState>>,
    pub overdue: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upcoming: Option<Vec<u64>>,
}

/// What a schedule operation answers, one variant per kind of answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleReply {
    /// Get, create, patch, pause, resume: the schedule after it.
    Shown {
        schedule: Box<ScheduleShown>,
    },
    /// List: a page by name (each with its newest run only).
    Page {
        schedules: Vec<ScheduleShown>,
    },
    /// Export: every schedule, as stored.
    Stored {
        schedules: Vec<crate::schedule::Schedule>,
    },
    Deleted {
        name: String,
    },
    /// Trigger: the run's job (`created`: new) and the schedule after it.
    Triggered {
        created: bool,
        job: Box<Job>,
        schedule: Box<ScheduleShown>,
    },
    Imported {
        schedules: u64,
    },
    /// Claim: the name is kept for its home.
    Claimed {
        name: String,
    },
    /// An operation on a name whose schedule lives on shard `home`: ask there.
    Elsewhere {
        home: u16,
    },
}

impl ScheduleReply {
    fn unexpected(&self, wanted: &str) -> ApiError {
        ApiError::new(
            crate::error::ErrorCode::Internal,
            format!("a shard answered a schedule operation with {self:?}, not {wanted}"),
        )
    }

    /// The schedule of a `Shown` answer.
    pub fn shown(self) -> Result<ScheduleShown, ApiError> {
        match self {
            ScheduleReply::Shown { schedule } => Ok(*schedule),
            other => Err(other.unexpected("one schedule")),
        }
    }

    pub fn page(self) -> Result<Vec<ScheduleShown>, ApiError> {
        match self {
            ScheduleReply::Page { schedules } => Ok(schedules),
            other => Err(other.unexpected("a page")),
        }
    }

    pub fn stored(self) -> Result<Vec<crate::schedule::Schedule>, ApiError> {
        match self {
            ScheduleReply::Stored { schedules } => Ok(schedules),
            other => Err(other.unexpected("stored schedules")),
        }
    }
}
