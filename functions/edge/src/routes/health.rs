//! `GET /health`: public, no secrets. A later issue adds per-dependency checks.

use serde_json::json;
use worker::{Env, Response, Result};

use crate::config::{QUEUE_BINDING, SHARD_BINDING};
use crate::http;

pub async fn health(env: &Env) -> Result<Response> {
    let shards = env.durable_object(SHARD_BINDING).is_ok();
    let queue = env.queue(QUEUE_BINDING).is_ok();
    let healthy = shards && queue;
    http::json(
        if healthy { 200 } else { 503 },
        &json!({
            "status": if healthy { "healthy" } else { "unhealthy" },
            "checks": { "shards": { "ok": shards }, "queue": { "ok": queue } },
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// `GET /health/live`: the process answers; checks nothing else.
pub fn live() -> Result<Response> {
    http::json(200, &json!({ "status": "live" }))
}
