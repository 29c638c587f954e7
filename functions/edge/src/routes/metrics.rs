//! `GET /metrics`: Prometheus text (or JSON with `Accept: application/json`), merged from
//! every shard's counters and the stats object at scrape time, so counters are monotonic
//! across scrapes and isolate restarts. Protected by `METRICS_TOKEN` when that secret is
//! set (an admin key works too); `scripts/deploy` and `scripts/check-env` require it for
//! production. Without it (local development) anyone may scrape, and an anonymous scrape
//! gets a result at most [`ANONYMOUS_MAX_AGE_MS`] old, as `/health` does.

use edgejobs_core::auth::Scope;
use edgejobs_core::metrics::{Family, render, render_json};
use edgejobs_core::stats::{ShardStats, families};
use edgejobs_core::{ApiError, ErrorCode};
use worker::{Env, Request, Response, Result};

use crate::http;
use crate::platform::now_ms;

use super::health::operator;

/// Whether the scrape may proceed, and whether it carried a valid credential (the metrics
/// token or an admin key). Without `METRICS_TOKEN` anyone may scrape, anonymously.
fn authorized(req: &Request, env: &Env) -> std::result::Result<bool, ApiError> {
    if operator(req, env) {
        return Ok(true);
    }
    if env.secret("METRICS_TOKEN").is_err() {
        return Ok(false);
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

thread_local! {
    /// The last anonymous scrape of this isolate: when, and its families.
    static CACHED: std::cell::RefCell<Option<(u64, Vec<Family>)>> = const { std::cell::RefCell::new(None) };
}

/// How old a scrape an anonymous request may get: a flood of anonymous scrapes costs at
/// most one round of reads (every shard and the stats object) per isolate every 5 s.
pub const ANONYMOUS_MAX_AGE_MS: u64 = 5_000;

/// `GET /metrics`. An authenticated scrape first writes what this isolate and every shard
/// hold in memory, so it is current; an anonymous one only reads (it writes nothing).
/// Returns the answer and whether the scrape was authenticated.
pub async fn metrics(req: &Request, env: &Env) -> Result<(Response, bool)> {
    let authenticated = match authorized(req, env) {
        Ok(a) => a,
        Err(e) => return http::error(&e).map(|r| (r, false)),
    };
    let now = now_ms();
    let cached = if authenticated { None } else { CACHED.with(|c| c.borrow().clone()) };
    let fams = match cached {
        Some((at, fams)) if now.saturating_sub(at) <= ANONYMOUS_MAX_AGE_MS => fams,
        _ => match scrape(env, authenticated).await {
            Ok(fams) => {
                CACHED.with(|c| *c.borrow_mut() = Some((now_ms(), fams.clone())));
                fams
            }
            Err(e) => return http::error(&e).map(|r| (r, authenticated)),
        },
    };
    let wants_json = req.headers().get("accept").ok().flatten().is_some_and(|a| a.contains("application/json"));
    let resp = if wants_json {
        http::json(200, &render_json(&fams))
    } else {
        Response::ok(render(&fams)).and_then(|mut resp| {
            resp.headers_mut().set("content-type", "text/plain; version=0.0.4; charset=utf-8")?;
            Ok(resp)
        })
    };
    resp.map(|r| (r, authenticated))
}

/// Reads every shard and the stats object (after a flush when `flush`) into the families.
async fn scrape(env: &Env, flush: bool) -> std::result::Result<Vec<Family>, ApiError> {
    let cfg = crate::topology::load(env).await.ok();
    let shard_count = cfg.as_ref().map_or(16, |c| c.shard_count);
    if flush {
        let shard = (crate::platform::random_u64() % shard_count as u64) as u16;
        let _ = crate::shard::call(env, shard, edgejobs_core::protocol::Record {}).await;
    }
    let fetched = crate::gauges::fetch(env, shard_count, flush).await;
    // A partial scrape would make counters go backwards; refuse it instead.
    let Some(mut all) = fetched.shards.iter().cloned().collect::<Option<Vec<ShardStats>>>() else {
        return Err(ApiError::new(ErrorCode::Unavailable, "a shard did not answer; scrape again"));
    };
    let Some(stats_object) = fetched.stats_object.clone() else {
        return Err(ApiError::new(ErrorCode::Unavailable, "the stats object did not answer; scrape again"));
    };
    all.push(stats_object);
    let (health, _) = super::health::evaluate_with(env, cfg.as_ref(), &fetched).await;
    // Flow control's busiest lists (#28): gauges of the top keys only; a shard that does not
    // answer leaves them without samples, not the scrape refused.
    let lists = match &cfg {
        Some(c) => super::flow::busiest_lists(env, c, super::flow::MAX_BUSIEST).await.ok(),
        None => None,
    };
    let mut fams = families(&all, now_ms(), health);
    fams.extend(super::flow::metric_families(lists.as_deref()));
    Ok(fams)
}
