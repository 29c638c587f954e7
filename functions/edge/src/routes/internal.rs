//! Reports from the native consumer about the attempts it runs (consumer token scope).

use edgejobs_core::machine::Event;
use edgejobs_core::{ApiError, ErrorCode};
use serde_json::json;
use worker::{Env, Request};

use super::jobs::{Out, parse_id, respond};
use crate::http;
use crate::shard;

/// Largest serialized `result` or `progress` a report may carry.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// `POST /v1/internal/jobs/{id}/events` with an event (`start`, `heartbeat`, `complete`,
/// `fail`) naming its attempt. Answers the job (200), or 409 `stale_attempt`,
/// `invalid_transition` or `job_cancelled` when the shard refuses the report.
pub async fn event(req: &mut Request, env: &Env, raw_id: &str) -> Out {
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
    if matches!(event, Event::Wake | Event::Cancel | Event::Replay) {
        return Err(ApiError::field("event", "a consumer may report start, heartbeat, complete or fail"));
    }
    let id = parse_id(raw_id)?;
    let (_, job) = shard::call_job(env, id.shard(), "event", &json!({ "id": id, "event": event })).await?;
    respond(200, &job)
}
