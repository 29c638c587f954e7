//! The `jobs` queue consumer, in batches. A batch's messages (envelopes of job references)
//! are grouped by shard and lane. Edge-lane jobs: per shard and chunk, one call starts
//! them all (the shard refuses duplicate deliveries and cancelled jobs), their handlers run
//! concurrently, and one call reports every outcome. Native-lane jobs: every reference of
//! the batch is handed to the long-job stream in one Upstash pipeline, then each shard
//! records its entries in one call. A message is retried only when a job in it could not
//! be started or handed off; everything else is acknowledged.

use edgejobs_core::stats::Metric;
use std::collections::BTreeSet;
use std::time::Duration;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::otlp::{self, SpanKind, SpanRecord};
use edgejobs_core::plan::{Handoff, JobEvent};
use edgejobs_core::protocol::{ApplyMany, FinishMany, HandoffMany};
use edgejobs_core::trace::TraceContext;
use edgejobs_core::wire::{HANDOFF_CHUNK, JobRef, QueueBody, STREAM_KEY, handoff_command};
use edgejobs_core::{ApiError, ErrorCode, Job, Lane};
use futures_util::future::{Either, join_all, select};
use serde_json::{Value, json};
use worker::{Delay, Env, MessageBatch, MessageExt};

use crate::config::DLQ_NAME;
use crate::counters;
use crate::handlers::{self, Failure};
use crate::http::log;
use crate::scatter;
use crate::shard;
use crate::telemetry;

/// Most edge jobs one start call begins: their handlers run together, so a chunk's last
/// job does not wait long after its start was recorded.
pub const CHUNK: usize = 50;

/// Handles one batch: acknowledges or retries each message.
pub async fn handle_batch(batch: MessageBatch<Value>, env: &Env) {
    let queue = batch.queue();
    let messages: Vec<_> = batch.raw_iter().collect();
    counters::add(Metric::QueueMessagesReceivedTotal, &[("queue", queue.as_str())], messages.len() as f64);
    let cfg = match crate::topology::load(env).await {
        Ok(c) => c,
        Err(_) => {
            batch.retry_all();
            return;
        }
    };
    // Every reference with the index of the message that carried it.
    let mut edge: Vec<(usize, JobRef)> = Vec::new();
    let mut native: Vec<(usize, JobRef)> = Vec::new();
    let mut malformed: Vec<usize> = Vec::new();
    let mut deliveries = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        // Bodies are JSON text; deployments before that sent JavaScript objects.
        let raw = m.body();
        let parsed = match raw.as_string() {
            Some(text) => serde_json::from_str::<QueueBody>(&text).ok(),
            None => serde_wasm_bindgen::from_value::<QueueBody>(raw).ok(),
        };
        let Some(body) = parsed else {
            // Never dropped: retried, it ends in the dead-letter queue, which keeps it. (There
            // it is acknowledged: nothing comes after the dead-letter queue.)
            log("error", "malformed queue message", json!({ "queue": queue, "message_id": m.id() }));
            if queue != DLQ_NAME {
                malformed.push(i);
            }
            continue;
        };
        if queue == DLQ_NAME {
            // The runtime gave up delivering this message. Its jobs are still queued in
            // their shards, so the sweep will send them again; record that it happened.
            let ids: Vec<String> = body.refs().iter().map(|(_, r)| r.id.to_string()).collect();
            log("warn", "message reached the dead-letter queue", json!({ "jobs": ids }));
            continue;
        }
        for (lane, mut r) in body.refs() {
            // The delivery's span (#32), under the job's enqueue span; the reference carries
            // it on as the parent of the attempt or the hand-off.
            let span = telemetry::start(
                &cfg.tracing,
                r.trace.as_ref(),
                otlp::messaging_span_name("receive", &queue),
                SpanKind::Consumer,
            )
            .attrs(otlp::messaging_attrs(otlp::keys::SYSTEM_CLOUDFLARE_QUEUES, "receive", &queue, Some(&m.id()), None))
            .attr(otlp::keys::JOB_ID, r.id.to_string())
            .attr(otlp::keys::JOB_ATTEMPT, r.attempt)
            .attr(otlp::keys::JOB_LANE, lane.as_str());
            r.trace = Some(span.context());
            deliveries.push(span);
            match lane {
                Lane::Edge => edge.push((i, r)),
                Lane::Native => native.push((i, r)),
            }
        }
    }
    let edge_items = edge.iter().map(|(_, r)| Ok((r.id.shard(), r.clone()))).collect();
    let edge_runs = scatter::by_shard(edge_items, |s, refs| run_shard(env, &cfg, s, refs));
    let (edge_retry, native_retry) = futures_util::join!(edge_runs, hand_off(env, &cfg, native));
    // An edge job is retried when its start could not be recorded.
    let edge_retry = edge.iter().zip(edge_retry).filter(|(_, retry)| !matches!(retry, Ok(false))).map(|((i, _), _)| *i);
    let retry: BTreeSet<usize> = edge_retry.chain(native_retry).chain(malformed).collect();
    for (i, m) in messages.iter().enumerate() {
        if retry.contains(&i) { m.retry() } else { m.ack() }
    }
    for span in deliveries {
        telemetry::end(&cfg.tracing, span);
    }
}

/// Runs one shard's edge jobs, chunk after chunk. Answers, for each job in order, whether
/// its message must be delivered again.
async fn run_shard(env: &Env, cfg: &EdgeConfig, shard: u16, refs: Vec<JobRef>) -> Result<Vec<bool>, ApiError> {
    let mut retry = Vec::with_capacity(refs.len());
    for chunk in refs.chunks(CHUNK) {
        let again = run_chunk(env, cfg, shard, chunk).await;
        retry.extend(std::iter::repeat_n(again, chunk.len()));
    }
    Ok(retry)
}

/// Rounds of jobs a chunk's call may take after its own (see [`run_chunk`]).
const MAX_ROUNDS: u32 = 20;
/// A chunk takes no more jobs once it has run this long (the invocation ends in time).
const ROUNDS_BUDGET_MS: u64 = 10_000;

/// Starts, runs and reports one chunk; true when its starts could not be recorded. The
/// report takes the jobs its outcomes let start (a key's next job, admitted by the flow
/// gate) and runs them in turn, up to [`MAX_ROUNDS`] rounds and [`ROUNDS_BUDGET_MS`]: a
/// key's jobs then follow each other without a queue hop and a start call each.
async fn run_chunk(env: &Env, cfg: &EdgeConfig, shard: u16, chunk: &[JobRef]) -> bool {
    let events =
        chunk.iter().map(|r| JobEvent { id: r.id.clone(), event: Event::Start { attempt: r.attempt } }).collect();
    let started = match shard::call(env, shard, ApplyMany { events, full: true, tenant: None }).await {
        Ok(answers) => answers,
        // The shard could not be reached: deliver these messages again.
        Err(_) => return true,
    };
    // Refused starts (a duplicate delivery, a stale attempt, a cancelled or deleted job)
    // have nothing to run.
    let refused = started.iter().filter(|a| a.is_err()).count();
    if refused > 0 {
        counters::add(Metric::DeliveriesRefusedTotal, &[("lane", "edge")], refused as f64);
    }
    let mut jobs: Vec<Job> = started.into_iter().filter_map(|a| a.ok().and_then(|a| a.job)).collect();
    let began = crate::platform::now_ms();
    for round in 0.. {
        if jobs.is_empty() {
            break;
        }
        // A delivered job's attempt is a child of its delivery; one a report took in a
        // later round, of its enqueue.
        let outcomes = join_all(jobs.iter().map(|job| {
            let parent = chunk.iter().find(|r| r.id == job.id).and_then(|r| r.trace.as_ref()).or(job.trace.as_ref());
            run_one(env, job, cfg, parent)
        }))
        .await;
        // A workflow run its steps suspended (or a cancel ended) has nothing to report.
        let events: Vec<JobEvent> = jobs
            .iter()
            .zip(outcomes)
            .filter_map(|(job, event)| Some(JobEvent { id: job.id.clone(), event: event? }))
            .collect();
        if events.is_empty() {
            break;
        }
        let n = events.len();
        let more = round < MAX_ROUNDS && crate::platform::now_ms().saturating_sub(began) < ROUNDS_BUDGET_MS;
        let take = if more { CHUNK as u16 } else { 0 };
        jobs = match shard::call(env, shard, FinishMany { events, take }).await {
            Ok(finished) => finished.next,
            Err(e) => {
                // The attempts ran but their outcomes are not recorded; the jobs stay
                // active until the sweep times them out and retries them by policy.
                let fields = json!({ "shard": shard, "jobs": n, "error": e.message });
                log("error", "could not report attempts' outcomes", fields);
                Vec::new()
            }
        };
    }
    false
}

/// Runs one job's handler within its timeout and turns the outcome into its report (none
/// when a workflow run's own step reports settled it).
async fn run_one(env: &Env, job: &Job, cfg: &EdgeConfig, parent: Option<&TraceContext>) -> Option<Event> {
    let mut span = attempt_span(cfg, job, parent);
    // The handler's outbound calls are children of the attempt: it reads its parent from
    // the job it is given.
    let mut traced = job.clone();
    traced.trace = Some(span.context());
    let job = &traced;
    let event = run_traced(env, job, cfg).await;
    let outcome = match &event {
        None => "suspended",
        Some(Event::Complete { .. }) => "completed",
        Some(Event::Fail { disposition: Disposition::Permanent, .. }) => "dead",
        Some(_) => "failed",
    };
    span.set_attr(otlp::keys::JOB_OUTCOME, outcome);
    if let Some(Event::Fail { error, .. }) = &event {
        span.set_status(otlp::Status::Error(error.clone()));
        // As the consumer does: a job that dies is an error, a retry a warning; the line
        // carries the attempt's trace and span ids (#32).
        let level = if outcome == "dead" { "error" } else { "warn" };
        let fields = json!({
            "job": job.id.as_str(), "type": job.job_type, "attempt": job.attempt, "error": error,
            "trace_id": span.trace_id.to_hex(), "span_id": span.span_id.to_hex(),
        });
        log(level, if outcome == "dead" { "job failed for good" } else { "job attempt failed" }, fields);
    }
    telemetry::end(&cfg.tracing, span);
    event
}

/// An attempt's span (#32): a consumer `process` span with the job's type, id, attempt and
/// lane.
fn attempt_span(cfg: &EdgeConfig, job: &Job, parent: Option<&TraceContext>) -> SpanRecord {
    let name = otlp::messaging_span_name("process", &job.job_type);
    telemetry::start(&cfg.tracing, parent, name, SpanKind::Consumer)
        .attrs(otlp::messaging_attrs(
            otlp::keys::SYSTEM_CLOUDFLARE_QUEUES,
            "process",
            &job.job_type,
            Some(job.id.as_str()),
            None,
        ))
        .attr(otlp::keys::JOB_TYPE, job.job_type.clone())
        .attr(otlp::keys::JOB_ATTEMPT, job.attempt)
        .attr(otlp::keys::JOB_LANE, "edge")
        .attr(otlp::keys::TENANT, job.tenant.to_string())
}

/// [`run_one`] without its span.
async fn run_traced(env: &Env, job: &Job, cfg: &EdgeConfig) -> Option<Event> {
    let timeout = Delay::from(Duration::from_millis(job.timeout_ms));
    let workflow_url = cfg.types.get(&job.job_type).filter(|t| t.workflow).and_then(|t| t.url.clone());
    let run = async {
        match &workflow_url {
            Some(url) => crate::workflow::run(env, cfg, job, url).await,
            None => crate::workflow::Ran::Outcome(handlers::run(env, job, cfg).await),
        }
    };
    let outcome = match select(Box::pin(run), timeout).await {
        Either::Left((crate::workflow::Ran::Settled, _)) => return None,
        Either::Left((crate::workflow::Ran::Outcome(outcome), _)) => outcome,
        Either::Right(_) => Err(Failure {
            error: format!("timed out after {} ms", job.timeout_ms),
            disposition: Disposition::Retryable,
        }),
    };
    Some(match outcome {
        Ok(result) => Event::Complete { attempt: job.attempt, result },
        Err(f) => Event::Fail { attempt: job.attempt, error: f.error, disposition: f.disposition },
    })
}

/// Hands native attempts to the long-job stream, at most once per attempt (the script
/// remembers each entry): one script call per chunk of up to `HANDOFF_CHUNK` attempts, the
/// chunks at once; then each shard records its entries in one call. The native consumer
/// reports the start itself when it takes an entry. Returns the messages to retry.
async fn hand_off(env: &Env, cfg: &EdgeConfig, refs: Vec<(usize, JobRef)>) -> Vec<usize> {
    if refs.is_empty() {
        return Vec::new();
    }
    let client = crate::ratelimit::upstash(cfg);
    // Each hand-off's span (#32), under its delivery's; the stream entry carries it, so the
    // native consumer's delivery is its child.
    let mut refs = refs;
    let mut spans = Vec::with_capacity(refs.len());
    for (_, r) in &mut refs {
        let span = telemetry::start(
            &cfg.tracing,
            r.trace.as_ref(),
            otlp::messaging_span_name("send", STREAM_KEY),
            SpanKind::Producer,
        )
        .attrs(otlp::messaging_attrs(otlp::keys::SYSTEM_REDIS_STREAMS, "send", STREAM_KEY, None, None))
        .attr(otlp::keys::JOB_ID, r.id.to_string())
        .attr(otlp::keys::JOB_ATTEMPT, r.attempt);
        r.trace = Some(span.context().parent_only());
        spans.push(span);
    }
    let chunks: Vec<&[(usize, JobRef)]> = refs.chunks(HANDOFF_CHUNK).collect();
    let calls = chunks.iter().map(|chunk| {
        let command = handoff_command(&chunk.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>());
        let client = &client;
        async move { client.command(&command).await }
    });
    let answers = join_all(calls).await;
    let mut replies: Vec<Option<String>> = Vec::with_capacity(refs.len());
    for (chunk, answer) in chunks.iter().zip(answers) {
        let entries: Vec<Option<String>> = match answer {
            Ok(reply) => handoff_entries(&reply, chunk.len()).unwrap_or_else(|| {
                log("error", "malformed hand-off reply; the queue retries it", json!({ "jobs": chunk.len() }));
                Vec::new()
            }),
            Err(e) => {
                log(
                    "warn",
                    "hand-off to the long-job stream failed; the queue retries it",
                    json!({ "jobs": chunk.len(), "error": e.to_string() }),
                );
                Vec::new()
            }
        };
        replies.extend((0..chunk.len()).map(|i| entries.get(i).cloned().flatten()));
    }
    for (span, entry) in spans.into_iter().zip(&replies) {
        let span = match entry {
            Some(e) => span.attr(otlp::keys::MESSAGING_MESSAGE_ID, e.clone()),
            None => span.status(otlp::Status::Error("not handed off".into())),
        };
        telemetry::end(&cfg.tracing, span);
    }
    // Each shard records its entries in one call; an attempt without an entry is retried.
    let items = refs
        .iter()
        .zip(replies)
        .map(|((_, r), entry)| match entry {
            Some(entry) => Ok((r.id.shard(), Handoff { id: r.id.clone(), attempt: r.attempt, entry })),
            None => Err(ApiError::new(ErrorCode::Unavailable, "not handed off")),
        })
        .collect();
    let recorded = scatter::by_shard(items, |s, entries| shard::call(env, s, HandoffMany { entries })).await;
    // Refusals (a stale hand-off) need nothing more: the entry is in the stream and the
    // consumer's start will be refused the same way.
    let refused = recorded.iter().filter(|r| matches!(r, Ok(Err(_)))).count();
    if refused > 0 {
        counters::add(Metric::DeliveriesRefusedTotal, &[("lane", "native")], refused as f64);
    }
    refs.iter().zip(recorded).filter(|(_, r)| r.is_err()).map(|((i, _), _)| *i).collect()
}

/// The stream entry of each attempt of a hand-off chunk of `n`, from the script's reply (an
/// array of `[attempt key, entry id]`, one a job); `None` when the reply is not that, so the
/// caller retries the chunk and says so instead of reading a malformed reply as no entries.
/// An attempt without an entry is retried on its own.
fn handoff_entries(reply: &edgejobs_upstash::Reply, n: usize) -> Option<Vec<Option<String>>> {
    let items = reply.as_array()?;
    let entries: Vec<Option<String>> =
        items.iter().map(|r| r.as_array().and_then(|a| a.get(1)).and_then(|e| e.as_str()).map(str::to_owned)).collect();
    (entries.len() == n).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::handoff_entries;
    use edgejobs_upstash::Reply;

    fn b(s: &str) -> Reply {
        Reply::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn a_malformed_handoff_reply_is_none_not_empty() {
        let pair = |k: &str, e: &str| Reply::Array(vec![b(k), b(e)]);
        let good = Reply::Array(vec![pair("j1:1", "1-0"), pair("j2:1", "1-1")]);
        assert_eq!(handoff_entries(&good, 2), Some(vec![Some("1-0".into()), Some("1-1".into())]));
        assert_eq!(handoff_entries(&Reply::Nil, 2), None, "not an array");
        assert_eq!(handoff_entries(&good, 3), None, "an entry short");
        let one_missing = handoff_entries(&Reply::Array(vec![pair("j1:1", "1-0"), Reply::Nil]), 2);
        assert_eq!(one_missing, Some(vec![Some("1-0".into()), None]), "that attempt alone is retried");
    }
}
