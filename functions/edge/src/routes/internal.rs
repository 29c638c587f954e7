//! Reports from the native consumer about the attempts it runs (consumer token scope).

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::protocol::ApplyMany;
use edgejobs_core::report::{self, Answer, Answers, MAX_EVENTS, Reports};
use edgejobs_core::{ApiError, ErrorCode};
use worker::{Env, Request};

use super::jobs::{Out, parse_id, respond};
use crate::http;
use crate::scatter;

/// Largest serialized `result` or `progress` a report may carry.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// `POST /v1/internal/jobs/{id}/events` with an event (`start`, `heartbeat`, `complete`,
/// `fail`) naming its attempt. Answers the job (200), or 409 `stale_attempt`,
/// `invalid_transition` or `job_cancelled` when the shard refuses the report.
pub async fn event(req: &mut Request, env: &Env, cfg: &edgejobs_core::config::EdgeConfig, raw_id: &str) -> Out {
    let body = http::read_json(req).await?;
    let size = body.to_string().len();
    if size > MAX_RESULT_BYTES + 1024 {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the report is {size} bytes; result and progress may hold {MAX_RESULT_BYTES}"),
        ));
    }
    let event: Event =
        serde_json::from_value(body).map_err(|e| ApiError::field("event", format!("not a valid report: {e}")))?;
    if !event.is_consumer_report() {
        return Err(ApiError::field("event", "a consumer may report start, heartbeat, complete, fail or reclaim"));
    }
    let id = parse_id(raw_id, cfg)?;
    let event = match event {
        Event::Reclaim { attempt, .. } => Event::Reclaim { attempt, lease_ms: cfg.native_lease_ms },
        e => e,
    };
    respond(200, &super::jobs::apply_one(env, id, event).await?)
}

/// `POST /v1/internal/events`: many reports in one request (`{"events":[{"id":..,"event":
/// {..}}, ..]}`, at most 500 and 1 MiB). Grouped per shard, each shard's applied in one call,
/// all shards at once; answered `{"lease_ms":..,"answers":[{"ok":{..}}|{"error":{..}}, ..]}`
/// in request order. A start or reclaim's answer holds the job.
pub async fn reports(req: &mut Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let Reports { events } = serde_json::from_value(body)
        .map_err(|e| ApiError::field("events", format!("not a valid report batch: {e}")))?;
    if events.len() > MAX_EVENTS {
        return Err(ApiError::field("events", format!("{} events; at most {MAX_EVENTS} per request", events.len())));
    }
    let planned = report::plan(events, cfg.shard_count, cfg.native_lease_ms);
    let applied =
        scatter::by_shard(planned, |s, events| crate::shard::call(env, s, ApplyMany { events, full: false })).await;
    let answers = applied.into_iter().map(|a| Answer::from(a.and_then(|a| a.map_err(ApiError::from)))).collect();
    respond(200, &Answers { lease_ms: cfg.native_lease_ms, answers })
}
