//! `GET /metrics`: Prometheus text (or JSON with `Accept: application/json`), merged from
//! every shard's counters and the stats object at scrape time, so counters are monotonic
//! across scrapes and isolate restarts. Protected by `METRICS_TOKEN` when that secret is
//! set (an admin key works too).

use edgejobs_core::auth::{Scope, constant_time_eq};
use edgejobs_core::metrics::{render, render_json};
use edgejobs_core::stats::{ShardStats, families};
use edgejobs_core::{ApiError, ErrorCode};
use worker::{Env, Request, Response, Result};

use crate::http;
use crate::platform::now_ms;

/// Whether the scrape may proceed, and whether it carried a valid credential (the metrics
/// token or an admin key). Without `METRICS_TOKEN` anyone may scrape, anonymously.
fn authorized(req: &Request, env: &Env) -> std::result::Result<bool, ApiError> {
    let header = req.headers().get("authorization").ok().flatten().unwrap_or_default();
    let given = header.strip_prefix("Bearer ").unwrap_or("");
    let admin = || crate::config::load(env).is_ok_and(|cfg| http::authorize(req, Scope::Admin, &cfg).is_ok());
    let Ok(token) = env.secret("METRICS_TOKEN").map(|s| s.to_string()) else { return Ok(admin()) };
    if !given.is_empty() && constant_time_eq(given, &token) {
        return Ok(true);
    }
    let cfg = crate::config::load(env)?;
    http::authorize(req, Scope::Admin, &cfg).map(|_| true).map_err(|e| {
        if e.code == ErrorCode::Forbidden {
            ApiError::new(ErrorCode::Unauthorized, "metrics need the metrics token")
        } else {
            e
        }
    })
}

/// `GET /metrics`. An authenticated scrape first writes what this isolate and every shard
/// hold in memory, so it is current; an anonymous one only reads (it writes nothing).
/// Returns the answer and whether the scrape was authenticated.
pub async fn metrics(req: &Request, env: &Env) -> Result<(Response, bool)> {
    let authenticated = match authorized(req, env) {
        Ok(a) => a,
        Err(e) => return http::error(&e).map(|r| (r, false)),
    };
    scrape(req, env, authenticated).await.map(|r| (r, authenticated))
}

async fn scrape(req: &Request, env: &Env, flush: bool) -> Result<Response> {
    let cfg = crate::config::load(env).ok();
    let shard_count = cfg.as_ref().map_or(16, |c| c.shard_count);
    if flush {
        let shard = (crate::platform::random_u64() % shard_count as u64) as u16;
        let _ = crate::shard::call(env, shard, edgejobs_core::protocol::Record {}).await;
    }
    let fetched = crate::gauges::fetch(env, shard_count, flush).await;
    // A partial scrape would make counters go backwards; refuse it instead.
    let Some(mut all) = fetched.shards.iter().cloned().collect::<Option<Vec<ShardStats>>>() else {
        return http::error(&ApiError::new(ErrorCode::Unavailable, "a shard did not answer; scrape again"));
    };
    let Some(stats_object) = fetched.stats_object.clone() else {
        return http::error(&ApiError::new(ErrorCode::Unavailable, "the stats object did not answer; scrape again"));
    };
    all.push(stats_object);
    let (health, _) = super::health::evaluate_with(env, cfg.as_ref(), &fetched).await;
    let fams = families(&all, now_ms(), health);
    let wants_json = req.headers().get("accept").ok().flatten().is_some_and(|a| a.contains("application/json"));
    if wants_json {
        return http::json(200, &render_json(&fams));
    }
    let mut resp = Response::ok(render(&fams))?;
    resp.headers_mut().set("content-type", "text/plain; version=0.0.4; charset=utf-8")?;
    Ok(resp)
}
