//! The `jobs` queue consumer. For each message it asks the shard to start the attempt the
//! message names (a duplicate delivery is refused there and simply acknowledged), runs the
//! edge handler with the job's timeout, and reports the outcome to the shard. Messages are
//! acknowledged once the shard has the outcome; a shard that cannot be reached makes the
//! message retry.

use std::time::Duration;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::wire::{HANDOFF_SCRIPT, QueueMessage, STREAM_KEY, handoff_key};
use edgejobs_core::{ApiError, Job, Lane};
use futures_util::future::{Either, join_all, select};
use serde_json::{Value, json};
use worker::{Delay, Env, MessageBatch, MessageExt, Result};

use crate::config::DLQ_NAME;
use crate::handlers::{self, Failure};
use crate::http::log;
use crate::shard;

enum Verdict {
    Ack,
    Retry,
}

pub async fn handle_batch(batch: MessageBatch<Value>, env: Env) -> Result<()> {
    let queue = batch.queue();
    let cfg = match crate::config::load(&env) {
        Ok(c) => c,
        Err(_) => {
            batch.retry_all();
            return Ok(());
        }
    };
    let messages: Vec<_> = batch.raw_iter().collect();
    let work = messages.iter().map(|m| {
        let body: Option<QueueMessage> = serde_wasm_bindgen::from_value(m.body()).ok();
        let env = &env;
        let cfg = &cfg;
        let queue = queue.as_str();
        async move {
            match body {
                None => {
                    log("error", "dropping a malformed queue message", json!({ "queue": queue, "message_id": m.id() }));
                    Verdict::Ack
                }
                Some(msg) if queue == DLQ_NAME => {
                    // The runtime gave up delivering this message. The job is still queued in its
                    // shard, so the sweep will send it again; record that it happened.
                    log(
                        "warn",
                        "message reached the dead-letter queue",
                        json!({ "job": msg.id, "attempt": msg.attempt }),
                    );
                    Verdict::Ack
                }
                Some(msg) => process(env, cfg, msg).await,
            }
        }
    });
    let verdicts = join_all(work).await;
    for (m, v) in messages.iter().zip(verdicts) {
        match v {
            Verdict::Ack => m.ack(),
            Verdict::Retry => m.retry(),
        }
    }
    Ok(())
}

async fn report(env: &Env, job: &Job, event: Event) -> std::result::Result<(), ApiError> {
    shard::call_job(env, job.id.shard(), "event", &json!({ "id": job.id, "event": event })).await.map(|_| ())
}

/// Hands a native-lane attempt to the long-job stream, at most once per attempt (the script
/// remembers the entry), then tells the shard which entry carries it. The native consumer
/// reports the start itself when it takes the entry.
async fn hand_off(env: &Env, cfg: &EdgeConfig, msg: &QueueMessage) -> Verdict {
    let keys_and_args = [
        "EVAL".to_owned(),
        HANDOFF_SCRIPT.to_owned(),
        "2".to_owned(),
        STREAM_KEY.to_owned(),
        handoff_key(&msg.id, msg.attempt),
        msg.id.to_string(),
        msg.attempt.to_string(),
    ];
    let entry = match crate::ratelimit::upstash(cfg).command(&keys_and_args).await {
        Ok(reply) => reply.as_array().and_then(|a| a.get(1)).and_then(|e| e.as_str()).map(str::to_owned),
        Err(e) => {
            log(
                "warn",
                "hand-off to the long-job stream failed; the queue retries it",
                json!({ "job": msg.id, "error": e.to_string() }),
            );
            return Verdict::Retry;
        }
    };
    let Some(entry) = entry else {
        log("error", "malformed hand-off reply", json!({ "job": msg.id }));
        return Verdict::Retry;
    };
    let body = json!({ "id": msg.id, "attempt": msg.attempt, "entry": entry });
    match shard::call(env, msg.id.shard(), "handoff", &body).await {
        Ok((status, _)) if status < 500 => Verdict::Ack,
        _ => Verdict::Retry,
    }
}

async fn process(env: &Env, cfg: &EdgeConfig, msg: QueueMessage) -> Verdict {
    if msg.lane == Lane::Native {
        return hand_off(env, cfg, &msg).await;
    }
    let start = Event::Start { attempt: msg.attempt };
    let job = match shard::call_job(env, msg.id.shard(), "event", &json!({ "id": msg.id, "event": start })).await {
        Ok((_, job)) => job,
        // Refused (a duplicate delivery, a stale attempt, a cancelled or deleted job): nothing to run.
        Err(e) if e.status() < 500 => return Verdict::Ack,
        Err(_) => return Verdict::Retry,
    };
    let timeout = Delay::from(Duration::from_millis(job.timeout_ms));
    let outcome = match select(Box::pin(handlers::run(&job, cfg)), timeout).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(_) => Err(Failure {
            error: format!("timed out after {} ms", job.timeout_ms),
            disposition: Disposition::Retryable,
        }),
    };
    let event = match outcome {
        Ok(result) => Event::Complete { attempt: job.attempt, result },
        Err(f) => Event::Fail { attempt: job.attempt, error: f.error, disposition: f.disposition },
    };
    match report(env, &job, event).await {
        Ok(()) => Verdict::Ack,
        Err(e) if e.status() < 500 => Verdict::Ack,
        Err(e) => {
            // The attempt ran but its outcome is not recorded; the job stays active until the
            // sweep times it out and retries it by policy.
            log("error", "could not report an attempt's outcome", json!({ "job": job.id, "error": e.message }));
            Verdict::Ack
        }
    }
}
