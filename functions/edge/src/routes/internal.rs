//! Reports from the native consumer about the attempts it runs (consumer token scope). Both
//! routes go to the shards as [`ReportMany`]: native-lane jobs only, and every report but a
//! start or a takeover carries the lease token the attempt's start answered with.

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::protocol::{Applied, ReportMany};
use edgejobs_core::report::{self, Answer, Answers, MAX_EVENTS, Report, Reports};
use edgejobs_core::{ApiError, ErrorCode, Job};
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{Out, parse_id, respond};
use crate::http;
use crate::scatter;
use crate::shard;

/// Largest serialized `result` or `progress` a report may carry.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// The header that carries a start's or takeover's lease token on the one-report route (the
/// batch route's answers carry it as `lease`).
pub const LEASE_HEADER: &str = "x-edgejobs-lease";

/// The name of the consumer token a request came with (the route's scope guarantees one).
fn consumer(who: &Principal) -> String {
    who.consumer.clone().unwrap_or_default()
}

/// `POST /v1/internal/jobs/{id}/events` with an event (`start`, `reclaim`, `heartbeat`,
/// `complete`, `fail`) naming its attempt, and `lease` (the token the start answered with)
/// for all but a start or a reclaim. Answers the job (200; a start's or reclaim's with the
/// attempt's token in the `x-edgejobs-lease` header), or
/// 409 `stale_attempt`, `lease_lost`, `lease_held`, `lease_mismatch`, `not_leased`,
/// `invalid_transition` or `job_cancelled` when the shard refuses the report.
pub async fn event(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal, raw_id: &str) -> Out {
    let trace = crate::telemetry::incoming(req);
    let mut body = http::read_json(req).await?;
    let size = body.to_string().len();
    if size > MAX_RESULT_BYTES + 1024 {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the report is {size} bytes; result and progress may hold {MAX_RESULT_BYTES}"),
        ));
    }
    let lease = match body.as_object_mut().and_then(|o| o.remove("lease")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= report::MAX_LEASE_BYTES => Some(s),
        Some(Value::String(_)) => {
            return Err(ApiError::field(
                "lease",
                format!("a lease token has at most {} bytes", report::MAX_LEASE_BYTES),
            ));
        }
        Some(_) => return Err(ApiError::field("lease", "must be the lease token (a string)")),
    };
    let event: Event =
        serde_json::from_value(body).map_err(|e| ApiError::field("event", format!("not a valid report: {e}")))?;
    let id = parse_id(raw_id, cfg)?;
    let planned = report::plan(vec![Report::new(id, event, lease)], cfg.shard_count, cfg.native_lease_ms);
    let Some(item) = planned.into_iter().next() else {
        return Err(ApiError::new(ErrorCode::Internal, "a report planned to nothing"));
    };
    let (s, mut r) = item?;
    crate::runs::prepare_children(cfg, who, &r.id, trace.as_ref(), &mut r.event)?;
    let waits = is_wait(&r.event);
    let answers = shard::call(env, s, ReportMany { reports: vec![r], consumer: consumer(who), full: true }).await?;
    let (job, lease): (Job, Option<String>) = match answers.into_iter().next() {
        Some(Ok(Applied { job: Some(job), lease, .. })) => (job, lease),
        Some(Err(e)) => return Err(e.into()),
        _ => return Err(ApiError::new(ErrorCode::Internal, "malformed shard answer")),
    };
    if waits {
        crate::shard::waits::register(env, cfg, vec![job.clone()]).await;
    }
    let mut resp = respond(200, &job)?;
    if let Some(lease) = lease {
        resp.headers_mut()
            .set(LEASE_HEADER, &lease)
            .map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed"))?;
    }
    Ok(resp)
}

/// Whether a report is a workflow wait (its answer carries the run, whose wait is indexed).
fn is_wait(e: &Event) -> bool {
    matches!(e, Event::Step { step: edgejobs_core::workflow::StepReport::Wait { .. }, .. })
}

/// `POST /v1/internal/events`: many reports in one request (`{"events":[{"id":..,"event":
/// {..},"lease":..}, ..]}`, at most 500 and 1 MiB). Grouped per shard, each shard's applied
/// in one call, all shards at once; answered `{"lease_ms":..,"answers":[{"ok":{..}}|
/// {"error":{..}}, ..]}` in request order. A start or reclaim's answer holds the job and,
/// beside it, the attempt's lease token (`lease`).
pub async fn reports(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    // A consumer reporting a step sends its attempt's context: the step's children join it.
    let trace = crate::telemetry::incoming(req);
    let body = http::read_json(req).await?;
    let Reports { events } = serde_json::from_value(body)
        .map_err(|e| ApiError::field("events", format!("not a valid report batch: {e}")))?;
    if events.len() > MAX_EVENTS {
        return Err(ApiError::field("events", format!("{} events; at most {MAX_EVENTS} per request", events.len())));
    }
    let planned: report::Planned = report::plan(events, cfg.shard_count, cfg.native_lease_ms)
        .into_iter()
        .map(|p| {
            let (s, mut r) = p?;
            crate::runs::prepare_children(cfg, who, &r.id, trace.as_ref(), &mut r.event)?;
            Ok((s, r))
        })
        .collect();
    let waits: Vec<bool> = planned.iter().map(|p| p.as_ref().is_ok_and(|(_, r)| is_wait(&r.event))).collect();
    let name = consumer(who);
    let applied = scatter::by_shard(planned, |s, reports| {
        shard::call(env, s, ReportMany { reports, consumer: name.clone(), full: false })
    })
    .await;
    // The waits the reports recorded are indexed before the consumer hears back.
    let recorded: Vec<Job> = applied
        .iter()
        .zip(&waits)
        .filter(|(_, w)| **w)
        .filter_map(|(a, _)| a.as_ref().ok()?.as_ref().ok()?.job.clone())
        .collect();
    if !recorded.is_empty() {
        crate::shard::waits::register(env, cfg, recorded).await;
    }
    let answers = applied.into_iter().map(|a| Answer::from(a.and_then(|a| a.map_err(ApiError::from)))).collect();
    respond(200, &Answers { lease_ms: cfg.native_lease_ms, answers })
}
