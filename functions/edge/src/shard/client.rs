//! How the rest of the Worker calls a shard: [`call`] sends one typed operation and returns
//! that operation's reply type. Each call is counted here (a billed Durable Object
//! request); writing calls carry the isolate's pending counts.

use edgejobs_core::protocol::{ShardCall, ShardOp, ShardReply};
use edgejobs_core::{ApiError, ErrorCode};
use serde_json::json;
use worker::{Env, Method, Request, RequestInit};

use crate::config::SHARD_BINDING;
use crate::counters;
use crate::http::log;

/// The name of the object that keeps stored gauges (last backup, last sweep). It is a
/// `JobShard` holding no jobs; nothing on the request path calls it.
pub const STATS: &str = "stats";

/// Calls operation `op` of shard number `shard`.
pub async fn call<O: ShardOp>(env: &Env, shard: u16, op: O) -> Result<O::Reply, ApiError> {
    call_named(env, &format!("shard-{shard}"), op).await
}

/// Calls operation `op` of the object named `name`. A refusal of the whole call comes back
/// as its [`ApiError`]; an unreachable object as 503 `unavailable`.
pub async fn call_named<O: ShardOp>(env: &Env, name: &str, op: O) -> Result<O::Reply, ApiError> {
    let request: edgejobs_core::protocol::ShardRequest = op.into();
    counters::add("edgejobs_do_requests_total", &[("op", request.name())], 1.0);
    // Only a writing call carries the pending counts: a read must not cost a write.
    let deltas = if O::WRITES { counters::take() } else { Vec::new() };
    let body = ShardCall { request, deltas };
    let text = match serde_json::to_string(&body) {
        Ok(t) => t,
        Err(e) => {
            counters::restore(body.deltas);
            return Err(ApiError::new(ErrorCode::Internal, format!("could not encode a shard call: {e}")));
        }
    };
    match send(env, name, text).await {
        Ok(reply) => serde_json::from_slice::<ShardReply<O::Reply>>(&reply)
            .map_err(|e| unavailable("shard response", &e.to_string()))?,
        Err(e) => {
            counters::restore(body.deltas);
            Err(e)
        }
    }
}

async fn send(env: &Env, name: &str, text: String) -> Result<Vec<u8>, ApiError> {
    let stub = env
        .durable_object(SHARD_BINDING)
        .and_then(|ns| ns.get_by_name(name))
        .map_err(|e| unavailable("shard binding", &e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(text.into()));
    let req = Request::new_with_init("https://shard/call", &init)
        .map_err(|e| unavailable("shard request", &e.to_string()))?;
    let mut resp = stub.fetch_with_request(req).await.map_err(|e| unavailable("shard call", &e.to_string()))?;
    resp.bytes().await.map_err(|e| unavailable("shard response", &e.to_string()))
}

fn unavailable(what: &str, e: &str) -> ApiError {
    log("error", "shard unreachable", json!({ "what": what, "error": e }));
    ApiError::new(ErrorCode::Unavailable, "the job store is temporarily unavailable; retry")
}
