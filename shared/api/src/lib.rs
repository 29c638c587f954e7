//! The HTTP API's request and response types: what the edge Worker answers and what the
//! CLI and other clients read. Plain serde types, no logic; they build for wasm32 too.
//!
//! `functions/edge/openapi.json` describes the same documents; the test in `tests.rs`
//! (`cargo test -p edgejobs-api`) holds the two together: every type's JSON Schema, as
//! `schemars` derives it in test builds, is diffed (`json-schema-diff`) against the
//! document's schema for it, and a full sample of each is validated against the document.
//!
//! Layout:
//! - `job.rs`: a job as the API shows it (`Job`), a listing's summary (`JobSummary`), pages.
//! - `reply.rs`: the other replies: batch enqueue, replay, errors, stats, whoami, backups.
//! - `schedule.rs`: a schedule as the API shows it (`ScheduleView`) and its replies.
//! - `flow.rs`: flow control's replies: a key's state, the busiest keys, a pause's answer.
//! - `health.rs`: `GET /health` and `GET /health/live`.
//! - `spec.rs`: request bodies: a job spec, a schedule spec, an event, a re-seal page.
//! - `live.rs`: the data of a job stream's `state` and `chunk` events.
//!
//! Times are RFC 3339 strings here: the types carry what the wire carries, and the crate
//! stays serde-only.

mod flow;
mod health;
mod job;
mod live;
mod reply;
mod schedule;
mod spec;
#[cfg(test)]
mod tests;

pub use flow::{BusyKey, BusyKeys, EventSent, FlowChanged, FlowKey, FlowPauseRequest};
pub use health::{Check, Checks, Health, HealthStatus, Live};
pub use job::{
    AttemptRecord, Backoff, Flow, FlowDebounce, FlowLimit, FlowRate, FlowThrottle, Job, JobCallback, JobList,
    JobParent, JobState, JobSummary, JobTrace, Lane, Step, StreamEntry,
};
pub use live::{Chunk, StateEvent};
pub use reply::{
    BackupList, BackupSummary, BatchItem, BatchItemCreated, BatchItemFailed, BatchRequest, BatchResult, Consumer,
    Consumers, ErrorBody, ErrorReply, Manifest, ManifestEntry, ManifestSchedules, MinutePoint, ReadToken,
    ReplayRequest, ReplayResult, ResealPage, RestoreRequest, Restored, ShardRows, ShardsAnswered, Stats, StatsJobs,
    VerifyResult, WebhookSecret, Whoami,
};
pub use schedule::{
    CatchUp, Overlap, RunKind, ScheduleDeleted, ScheduleList, ScheduleRunView, ScheduleView, Triggered,
};
pub use spec::{
    BackoffInput, CallbackInput, CallbackJobSpec, ConcurrencyInput, DebounceInput, DurationInput, EventRequest,
    JobCallbackInput, JobSpec, RateInput, ResealRequest, ScheduleSpec, ThrottleInput, UrlCallbackInput,
};
