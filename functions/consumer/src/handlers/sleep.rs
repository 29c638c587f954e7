//! `sleep`: waits `payload.ms` (at most 1 h), reporting progress; for tests and benchmarks.
//! `payload.fail` = `"retryable"` or `"permanent"` fails after the sleep instead.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Handler, HandlerError, JobCtx};

#[derive(Debug, Clone, Copy)]
pub struct Sleep;

#[async_trait::async_trait]
impl Handler for Sleep {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let ms = ctx.job.payload.get("ms").and_then(Value::as_u64).unwrap_or(0);
        // The edge refuses more at enqueue; a job stored before that rule still ends here.
        if ms > edgejobs_core::spec::MAX_SLEEP_MS {
            return Err(HandlerError::Permanent(format!(
                "payload.ms must be at most {}",
                edgejobs_core::spec::MAX_SLEEP_MS
            )));
        }
        // Steps end at fixed points from the start, so the timer's rounding of each step
        // does not add up: a 100 ms sleep takes 100 ms, not four roundings more.
        let steps = 4u64;
        let began = tokio::time::Instant::now();
        for i in 1..=steps {
            tokio::select! {
                _ = tokio::time::sleep_until(began + Duration::from_millis(ms * i / steps)) => ctx.progress.report(json!({ "pct": i * 100 / steps })),
                _ = ctx.cancel.cancelled() => return Err(HandlerError::Retryable("interrupted".into())),
            }
        }
        match ctx.job.payload.get("fail").and_then(Value::as_str) {
            Some("permanent") => Err(HandlerError::Permanent("asked to fail permanently".into())),
            Some("retryable") => Err(HandlerError::Retryable("asked to fail".into())),
            _ => Ok(json!({ "slept_ms": ms })),
        }
    }
}
