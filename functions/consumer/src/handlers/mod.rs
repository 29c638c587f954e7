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

/// Reports progress of the running job; the latest value goes out with the next heartbeat.
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
}

impl JobCtx {
    /// Time left before the attempt's timeout.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
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
