//! edgejobs-core: the pure domain of edgejobs, shared by the edge Worker and the native consumer.
//!
//! Nothing here does I/O or reads a clock or a random source: time (`now_ms`) and random
//! samples are arguments, so every rule is a plain function that unit and property tests
//! can drive. The crate builds for `wasm32-unknown-unknown` and native.
//!
//! Layout:
//! - [`id`]: job ids, which carry their shard so lookups need no index.
//! - [`lane`]: the lanes a job runs in.
//! - [`tape`]: a job's stream chunks in one shard transaction (#30).
//! - [`callback`]: the callback records a job carries (#30).
//! - [`job`]: the job record, its states and lanes.
//! - [`fields`]: durations, backoff and the bounds a job spec and a type declaration share.
//! - [`spec`]: the registry of job types and validation of enqueue requests.
//! - [`callbacks`]: completion callbacks (#30): what a job or a batch enqueues when it ends.
//! - [`live`]: live results: progress, metadata and stream chunks of a running attempt.
//! - [`machine`]: the state machine; the only place that decides legal transitions.
//! - [`otlp`]: the edge's spans and their OTLP/JSON export request, with semconv attributes.
//! - [`outcome`]: what the state machine answers: a transition and its effect, or a refusal.
//! - [`outbound`]: outbound safety: which URLs and addresses the system may call for a user.
//! - [`plan`]: batch planning: what a shard writes and does for many jobs at once.
//! - [`protocol`]: the typed requests and replies between the router and the shards.
//! - [`ratelimit`]: rate limits and the sliding-window decision.
//! - [`metrics`]: Prometheus text exposition shared by the edge and the consumer.
//! - [`seal`]: payload header values sealed with AES-256-GCM, opened only where used.
//! - [`retry`]: the backoff policy (exponential, full jitter, cap).
//! - [`scripts`]: the project's Lua scripts (stream hand-off and leases), the only ones
//!   the local Upstash gateway runs.
//! - [`schedule`]: schedules (recurring jobs): validation, and what each alarm wake-up decides.
//! - [`backup`]: the backup format (NDJSON per shard + manifest), checks and retention.
//! - [`auth`]: API key scopes and constant-time comparison.
//! - [`config`]: the typed edge configuration.
//! - [`sampler`]: trace sampling as `OTEL_TRACES_SAMPLER` configures it, as the SDK decides.
//! - [`secret`]: the redacting [`secret::Secret`] and constant-time comparison of keys.
//! - [`cron`]: cron expressions and their run times in any IANA time zone (DST rules).
//! - [`stats`]: what each state change adds to the edge metrics, and their merge.
//! - [`error`]: the one API error type: a stable code, an HTTP status and a message.
//! - [`tenant`]: tenants, which own jobs, and what a key may see.
//! - [`token`]: signed read-only tokens for one job or tag, for browsers (#30).
//! - [`time`]: ms timestamps and their RFC 3339 form.
//! - [`trace`]: W3C Trace Context, which a job carries from its enqueue to its outbound calls.
//! - [`tracing_config`]: the edge's trace export settings (the standard `OTEL_*` variables).
//! - [`types`]: job types: the built-ins and those declared in `JOB_TYPES`, with their
//!   defaults, payload schemas and fixed webhook URLs.
//! - [`webhook`]: webhook signatures and the classification of answers.
//! - [`wire`]: the messages exchanged between the edge router, the shards and the queue.
//! - [`steps`]: the records of a workflow run's steps, as a job document holds them.
//! - [`workflow`]: durable workflows: a run's steps, suspensions and the event index's keys.

pub mod auth;
pub mod backup;
pub mod callback;
pub mod callbacks;
pub mod config;
pub mod cron;
pub mod error;
pub mod fields;
pub mod flow;
pub mod id;
pub mod job;
pub mod lane;
pub mod live;
pub mod machine;
pub mod metrics;
pub mod otlp;
pub mod outbound;
pub mod outcome;
pub mod plan;
pub mod protocol;
pub mod ratelimit;
pub mod report;
pub mod retry;
pub mod sampler;
pub mod schedule;
pub mod scripts;
pub mod seal;
pub mod secret;
pub mod settings;
pub mod spec;
pub mod stats;
pub mod steps;
pub mod tape;
pub mod tenant;
pub mod time;
pub mod token;
pub mod topology;
pub mod trace;
pub mod tracing_config;
pub mod types;
pub mod webhook;
pub mod wire;
pub mod workflow;

pub use error::{ApiError, ErrorCode};
pub use id::JobId;
pub use job::{Job, JobState, Lane};
