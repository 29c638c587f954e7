//! Job handlers: the [`Handler`] trait, the [`Registry`] that maps job types to handlers,
//! and the built-ins (`sleep`, `http.request`, `llm.chat`).
//!
//! A handler of your own is a struct implementing [`Handler`], registered under its job
//! type (declared with lane `native` in the Worker's `JOB_TYPES`); see
//! `examples/custom-consumer` and [`crate::main_with_handlers`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgejobs_core::Job;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::upstreams::Upstreams;

pub mod http;
pub mod llm;
pub mod sleep;
pub mod steps;

/// How an attempt failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandlerError {
    /// Retried by the job's backoff policy while attempts remain.
    #[error("{0}")]
    Retryable(String),
    /// Never retried: the job goes to the dead-letter set.
    #[error("{0}")]
    Permanent(String),
    /// Retried no sooner than `after` (an upstream's Retry-After).
    #[error("{message}")]
    RetryAfter { after: Duration, message: String },
    /// A workflow run slept or waited ([`steps::StepError::Suspended`]): the shard already
    /// holds it until it resumes, so the attempt ends without a report.
    #[error("the run is suspended")]
    Suspended,
}

/// For `ctx.stream(..)?` in a handler: a malformed call or a job over its limits is
/// permanent (a retry makes the same calls); the rest is worth another attempt.
impl From<crate::live::LiveError> for HandlerError {
    fn from(e: crate::live::LiveError) -> HandlerError {
        use crate::live::LiveError;
        use edgejobs_core::ErrorCode;
        match &e {
            LiveError::Invalid { .. } | LiveError::Limit => HandlerError::Permanent(e.to_string()),
            LiveError::Refused(api) if matches!(api.code, ErrorCode::InvalidField | ErrorCode::LiveLimit) => {
                HandlerError::Permanent(e.to_string())
            }
            _ => HandlerError::Retryable(e.to_string()),
        }
    }
}

/// Free-form progress of the running job (any JSON): the latest value goes out with the next
/// heartbeat, so it costs no request of its own. For live progress (a percentage and a
/// message, seen within milliseconds by a stream's subscribers) use [`JobCtx::progress`].
#[derive(Debug, Clone)]
pub struct Progress(watch::Sender<Option<Value>>);

impl Progress {
    pub fn channel() -> (Progress, watch::Receiver<Option<Value>>) {
        let (tx, rx) = watch::channel(None);
        (Progress(tx), rx)
    }

    pub fn report(&self, v: Value) {
        let _ = self.0.send(Some(v));
    }
}

/// What a handler gets besides the job.
#[derive(Debug, Clone)]
pub struct JobCtx {
    pub job: Job,
    /// Fires when the job is cancelled, loses its lease, or the process must stop.
    pub cancel: CancellationToken,
    pub progress: Progress,
    /// When the attempt's timeout ends.
    pub deadline: Instant,
    pub upstreams: Arc<Upstreams>,
    pub metrics: Arc<Metrics>,
    /// The guarded client for requests made for the job's user (see [`crate::outbound`]).
    /// It follows no redirect itself: send with `outbound.send(&http, ..)`, which checks
    /// every hop and keeps secret headers with the first origin.
    pub http: reqwest::Client,
    /// The outbound rules, to check a URL before a request.
    pub outbound: Arc<crate::outbound::Guard>,
    /// The keys that open sealed `payload.headers` values.
    pub payload_keys: Option<edgejobs_core::seal::Keys>,
    /// Most bytes of an answer to read.
    pub max_response_bytes: usize,
    /// Durable workflow steps (#29): `ctx.step.run("name", || async { .. }).await?`.
    pub step: steps::Steps,
    /// The attempt's live output (#30), which [`JobCtx::progress`], [`JobCtx::metadata`],
    /// [`JobCtx::set_metadata`] and [`JobCtx::stream`] feed.
    pub live: crate::live::Live,
    /// The attempt's span (#32): outbound calls made with [`crate::outbound::Outgoing::trace`]
    /// set to it are its children and send its trace on (`traceparent`).
    pub trace: Arc<crate::telemetry::Traced>,
}

impl JobCtx {
    /// Time left before the attempt's timeout.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Live progress: `percent` from 0 to 100 and an optional message (at most 256 bytes).
    /// No request of its own: it goes out with the attempt's next live update (within
    /// `EDGEJOBS_LIVE_LINGER`), and the newest value wins. A percent out of range is refused
    /// here; after the edge refused an update, every live call answers that refusal.
    pub fn progress(&self, percent: f64, message: Option<&str>) -> Result<(), crate::live::LiveError> {
        self.live.progress(percent, message)
    }

    /// Sets one key of the job's metadata (`Value::Null` removes it), with the next live update.
    pub fn metadata(&self, key: impl Into<String>, value: impl Into<Value>) -> Result<(), crate::live::LiveError> {
        self.live.metadata(key, value)
    }

    /// Merges `keys` into the job's metadata (a `null` value removes its key), with the next
    /// live update.
    pub fn set_metadata(&self, keys: serde_json::Map<String, Value>) -> Result<(), crate::live::LiveError> {
        self.live.set_metadata(keys)
    }

    /// Appends `chunk` to the job's stream `name` (`[A-Za-z0-9_.:-]{1,64}`, e.g. `tokens`),
    /// which the job's live subscribers receive in order. Calls within a
    /// linger travel as one update; every chunk reaches the edge before the attempt's outcome.
    pub fn stream(&self, name: &str, chunk: impl Into<String>) -> Result<(), crate::live::LiveError> {
        self.live.stream(name, chunk)
    }
}

/// A job handler.
#[async_trait::async_trait]
pub trait Handler: Send + Sync {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError>;
}

/// Job types and their handlers.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The built-in handlers, configured from the settings.
    pub fn builtins(s: &crate::config::Settings) -> Registry {
        let mut r = Registry::new();
        r.register("sleep", sleep::Sleep);
        r.register("http.request", http::HttpRequest);
        r.register(
            "llm.chat",
            llm::LlmChat {
                base_url: s.llm_base_url.clone(),
                api_key: s.llm_api_key.clone(),
                model: s.llm_model.clone(),
            },
        );
        r
    }

    pub fn register(&mut self, job_type: &str, handler: impl Handler + 'static) {
        self.handlers.insert(job_type.to_owned(), Arc::new(handler));
    }

    pub fn get(&self, job_type: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(job_type).cloned()
    }

    /// The registered job types, sorted.
    pub fn types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.handlers.keys().cloned().collect();
        t.sort();
        t
    }
}

/// Reads an answer's body up to `cap` bytes (the rest is never read) as text.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> String {
    let mut out: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns a failed send into a handler error: a refused redirect is permanent (retrying meets
/// the same refusal; [`crate::outbound::Guard::send`] reports its own refusals before this),
/// anything else is retried. The message names `url` without its query and walks the
/// error's causes.
pub fn send_error(url: &str, e: reqwest::Error) -> HandlerError {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    let url = edgejobs_core::outbound::redact_url(url);
    if e.is_redirect() {
        HandlerError::Permanent(format!("calling {url}: {text}"))
    } else {
        HandlerError::Retryable(format!("network error calling {url}: {text}"))
    }
}

/// Parses `Retry-After` seconds (default 1 s when absent or unparsable), capped at 10 min.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| edgejobs_core::webhook::retry_after_ms(Some(v)))
        .map(|ms| Duration::from_millis(ms.min(600_000)))
        .unwrap_or(Duration::from_secs(1))
}
