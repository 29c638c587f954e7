//! `GET /health` (public): one check per dependency with its latency, and an overall status:
//! `unhealthy` (503) when the shards or the queue binding fail, `degraded` (200) when
//! Upstash, backups, the backlog or the sweep need attention, else `healthy`. No secret or
//! internal address appears in the output. `GET /health/live` checks nothing.

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::Stats;
use edgejobs_core::stats::ShardStats;
use futures_util::future::join_all;
use serde_json::{Value, json};
use worker::{Env, Response, Result};

use edgejobs_core::auth::Scope;

use crate::config::QUEUE_BINDING;
use crate::http;
use crate::platform::now_ms;
use crate::shard;

/// The gauges the health checks read from the stats object.
pub const BACKUP_GAUGE: &str = "edgejobs_backup_last_success_timestamp_seconds";
pub const SWEEP_GAUGE: &str = "edgejobs_sweep_last_run_timestamp_seconds";

fn threshold(env: &Env, name: &str, default_ms: u64) -> u64 {
    crate::config::raw(env, name)
        .and_then(|v| edgejobs_core::spec::parse_duration(&Value::String(v)))
        .unwrap_or(default_ms)
}

/// Every shard's numbers and the stats object's, as one scrape reads them.
#[derive(Debug)]
pub struct Fetched {
    /// One entry per shard; `None` for a shard that did not answer.
    pub shards: Vec<Option<ShardStats>>,
    pub stats_object: Option<ShardStats>,
    pub latency_ms: u64,
}

/// Reads every shard's and the stats object's numbers, concurrently; with `flush`, each
/// first writes what it holds in memory.
pub async fn fetch(env: &Env, shard_count: u16, flush: bool) -> Fetched {
    let t0 = now_ms();
    let names: Vec<String> = (0..shard_count).map(|s| format!("shard-{s}")).chain([shard::STATS.to_owned()]).collect();
    let answers = join_all(names.iter().map(|n| shard::call_named(env, n, Stats { flush }))).await;
    let latency_ms = now_ms() - t0;
    let mut parsed: Vec<Option<ShardStats>> = answers.into_iter().map(Result::ok).collect();
    let stats_object = parsed.pop().flatten();
    Fetched { shards: parsed, stats_object, latency_ms }
}

/// The result of every check: (status 0/1/2, body). Reads only: a health check writes
/// nothing.
pub async fn evaluate(env: &Env) -> (u8, Value) {
    let cfg: Option<EdgeConfig> = crate::config::load(env).ok();
    let fetched = fetch(env, cfg.as_ref().map_or(16, |c| c.shard_count), false).await;
    evaluate_with(env, cfg.as_ref(), &fetched).await
}

/// The checks, given numbers already read (a scrape reads them once for both).
pub async fn evaluate_with(env: &Env, cfg: Option<&EdgeConfig>, fetched: &Fetched) -> (u8, Value) {
    let now = now_ms();
    let count = fetched.shards.len();
    let shards_ms = fetched.latency_ms;
    let stats: Vec<&ShardStats> = fetched.shards.iter().flatten().collect();
    let shards_ok = stats.len() == count;
    let oldest = stats.iter().filter_map(|s| s.oldest_queued_ms).min();
    let oldest_age_ms = oldest.map_or(0, |o| now.saturating_sub(o));
    let queued_ok = oldest_age_ms <= threshold(env, "HEALTH_QUEUED_MAX_AGE", 300_000);
    let queue_ok = env.queue(QUEUE_BINDING).is_ok();
    // Upstash: PING with the configured timeout.
    let t1 = now_ms();
    let upstash_ok = match cfg {
        Some(c) => crate::ratelimit::upstash(c).ping().await.is_ok(),
        None => false,
    };
    let upstash_ms = now_ms() - t1;
    // Backups and the sweep: gauges the stats object keeps.
    let gauges = fetched.stats_object.as_ref().map(|s| s.gauges.clone()).unwrap_or_default();
    let gauge = |name: &str| gauges.iter().find(|(n, _)| n == name).map(|(_, v)| (*v * 1000.0) as u64);
    let backup_age = gauge(BACKUP_GAUGE).map(|t| now.saturating_sub(t));
    let backup_ok = backup_age.is_some_and(|a| a <= threshold(env, "HEALTH_BACKUP_MAX_AGE", 26 * 3_600_000));
    let sweep_age = gauge(SWEEP_GAUGE).map(|t| now.saturating_sub(t));
    let sweep_ok = sweep_age.is_some_and(|a| a <= threshold(env, "HEALTH_SWEEP_MAX_AGE", 900_000));
    let status = if cfg.is_none() || !shards_ok || !queue_ok {
        2
    } else if !(upstash_ok && backup_ok && queued_ok && sweep_ok) {
        1
    } else {
        0
    };
    let secs = |ms: Option<u64>| ms.map(|m| m as f64 / 1000.0);
    let name = ["healthy", "degraded", "unhealthy"][status as usize];
    let body = json!({
        "status": name,
        "checks": {
            "config": { "ok": cfg.is_some() },
            "shards": { "ok": shards_ok, "answered": stats.len(), "of": count, "latency_ms": shards_ms },
            "queue": { "ok": queue_ok },
            "upstash": { "ok": upstash_ok, "latency_ms": upstash_ms },
            "backup": { "ok": backup_ok, "age_seconds": secs(backup_age) },
            "oldest_queued_job": { "ok": queued_ok, "age_seconds": oldest_age_ms as f64 / 1000.0 },
            "sweep": { "ok": sweep_ok, "age_seconds": secs(sweep_age) },
        },
        "checked_at": edgejobs_core::time::format_rfc3339(now),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (status as u8, body)
}

thread_local! {
    /// The last health result of this isolate: when, the status, the body.
    static CACHED: std::cell::RefCell<Option<(u64, u8, Value)>> = const { std::cell::RefCell::new(None) };
}

/// How old a health result an anonymous request may get.
pub const ANONYMOUS_MAX_AGE_MS: u64 = 5_000;

/// `GET /health` (public). An anonymous request gets a result at most 5 s old, so a flood
/// of probes costs at most one round of checks per isolate every 5 s (17 reads and a PING);
/// a request with any valid key gets fresh checks. Returns whether it was authenticated.
pub async fn health(req: &worker::Request, env: &Env) -> Result<(Response, bool)> {
    let authenticated = crate::config::load(env)
        .is_ok_and(|cfg| [Scope::Jobs, Scope::Consumer].iter().any(|s| http::authorize(req, *s, &cfg).is_ok()));
    let now = now_ms();
    let cached = CACHED.with(|c| c.borrow().clone());
    let (status, body) = match cached {
        Some((at, status, body)) if !authenticated && now.saturating_sub(at) <= ANONYMOUS_MAX_AGE_MS => (status, body),
        _ => {
            let (status, body) = evaluate(env).await;
            CACHED.with(|c| *c.borrow_mut() = Some((now_ms(), status, body.clone())));
            (status, body)
        }
    };
    http::json(if status == 2 { 503 } else { 200 }, &body).map(|r| (r, authenticated))
}

/// `GET /health/live`: the process answers; checks nothing else.
pub fn live() -> Result<Response> {
    http::json(200, &json!({ "status": "live" }))
}
