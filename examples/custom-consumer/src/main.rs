//! A consumer of your own job type, built on `edgejobs-consumer` as a library: the built-in
//! handlers plus `text.stats`, which counts the words and characters of `payload.text`.
//!
//! Declare the type in the Worker's `JOB_TYPES` (no rebuild of the Worker):
//! `{"text.stats": {"lane": "native", "schema": {"type": "object", "required": ["text"]}}}`,
//! then run this binary with the consumer's usual settings (`EDGEJOBS_EDGE_URL`, ...; see
//! `--help`). It announces `text.stats` to the edge with the built-ins.

use clap::Parser as _;
use edgejobs_consumer::handlers::{Handler, HandlerError, JobCtx};
use serde_json::{Value, json};

/// Counts the words and characters of `payload.text`.
struct TextStats;

#[async_trait::async_trait]
impl Handler for TextStats {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let text = ctx.job.payload.get("text").and_then(Value::as_str);
        // A payload that can never succeed fails for good (no retry); the type's schema
        // refuses it at enqueue already.
        let text = text.ok_or_else(|| HandlerError::Permanent("payload.text must be a string".into()))?;
        ctx.progress.report(json!({ "stage": "counting" }));
        if ctx.cancel.is_cancelled() {
            return Err(HandlerError::Retryable("cancelled".into()));
        }
        Ok(json!({ "words": text.split_whitespace().count(), "chars": text.chars().count() }))
    }
}

fn main() -> std::process::ExitCode {
    edgejobs_consumer::main_with_handlers(edgejobs_consumer::Config::parse(), |_settings, registry| {
        registry.register("text.stats", TextStats);
    })
}
