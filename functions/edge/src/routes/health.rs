//! `GET /health` (public): an overall status, and, for an operator (an admin key or the
//! metrics token), one check per dependency with its latency:
//! `unhealthy` (503) when the shards or the queue binding fail, `degraded` (200) when
//! Upstash, backups, the backlog, the sweep, an overdue schedule or a declared native type
//! without a consumer need attention, else
//! `healthy`. No secret, internal address or schedule name appears in the output (the
//! schedule API shows which schedule is `overdue`); anyone else (anonymous, a jobs or a
//! consumer key) gets the status alone, which names no configuration problem, job type or
//! schedule. `GET /health/live` checks nothing.

use edgejobs_api::{Check, Checks, Health, HealthStatus, Live};
use edgejobs_core::auth::{Scope, constant_time_eq};
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::stats::Metric;
use edgejobs_core::stats::ShardStats;
use serde_json::{Value, json};
use worker::{Env, Request, Response, Result};

use crate::config::QUEUE_BINDING;
use crate::gauges::{self, BACKUP_GAUGE, FIRST_SEEN_GAUGE, Fetched, SWEEP_GAUGE, fetch};
use crate::http;
use crate::platform::now_ms;

/// The result of every check: (status 0/1/2, body). Reads only: a health check writes
/// nothing.
pub async fn evaluate(env: &Env) -> (u8, Health) {
    let cfg: Option<EdgeConfig> = crate::topology::load(env).await.ok();
    let fetched = fetch(env, cfg.as_ref().map_or(16, |c| c.shard_count), false).await;
    evaluate_with(env, cfg.as_ref(), &fetched).await
}

/// The checks, given numbers already read (a scrape reads them once for both).
pub async fn evaluate_with(env: &Env, cfg: Option<&EdgeConfig>, fetched: &Fetched) -> (u8, Health) {
    let now = now_ms();
    let count = fetched.shards.len();
    let shards_ms = fetched.latency_ms;
    let stats: Vec<&ShardStats> = fetched.shards.iter().flatten().collect();
    let shards_ok = stats.len() == count;
    let oldest = stats.iter().filter_map(|s| s.oldest_queued_ms).min();
    let oldest_age_ms = oldest.map_or(0, |o| now.saturating_sub(o));
    // Thresholds from the configuration (its defaults when it failed to load: health still
    // answers, and says the config is broken).
    let m = cfg.map(|c| c.maintenance.clone()).unwrap_or_default();
    let queued_ok = oldest_age_ms <= m.health_queued_max_age_ms;
    let queue_ok = env.queue(QUEUE_BINDING).is_ok();
    // Upstash: PING with the configured timeout.
    let t1 = now_ms();
    let upstash_ok = match cfg {
        Some(c) => crate::ratelimit::upstash(c).ping().await.is_ok(),
        None => false,
    };
    let upstash_ms = now_ms() - t1;
    // Native types declared in JOB_TYPES that no running consumer registers: their jobs
    // would wait in the stream. (Built-ins are left out: every consumer has them, and a
    // deployment may run no consumer at all.)
    let unserved = match cfg {
        Some(c) if upstash_ok => unserved_types(c, now).await,
        _ => Vec::new(),
    };
    let types_ok = unserved.is_empty();
    // Backups and the sweep: gauges the stats object keeps.
    let gauges = fetched.stats_object.as_ref().map(|s| s.gauges.clone()).unwrap_or_default();
    let gauge = |name: Metric| gauges.iter().find(|(n, _)| n == name.name()).map(|(_, v)| (*v * 1000.0) as u64);
    // A deployment is first seen by its first health check; until a backup or a sweep is
    // overdue from then, their checks are `pending`, not failing.
    let first_seen = match gauge(FIRST_SEEN_GAUGE) {
        Some(t) => t,
        None => {
            if fetched.stats_object.is_some() {
                gauges::set(env, FIRST_SEEN_GAUGE, now as f64 / 1000.0).await;
            }
            now
        }
    };
    let backup = Periodic::judge(gauge(BACKUP_GAUGE), first_seen, now, m.health_backup_max_age_ms);
    let sweep = Periodic::judge(gauge(SWEEP_GAUGE), first_seen, now, m.health_sweep_max_age_ms);
    let (backup_ok, sweep_ok) = (backup.ok(), sweep.ok());
    // Schedules whose next tick is long past: a lost alarm (the sweep re-arms it) or a
    // shard that fails to fire them.
    let overdue: usize = stats.iter().map(|s| s.schedules_overdue.len()).sum();
    let schedules_ok = overdue == 0;
    let (active, paused) = stats.iter().fold((0, 0), |(a, p), s| (a + s.schedules.0, p + s.schedules.1));
    // A `SHARD_COUNT` below the recorded count is refused (the recorded one stays in use).
    let lowered = crate::topology::lowered(env);
    let count_ok = lowered.is_none();
    let status = if cfg.is_none() || !shards_ok || !queue_ok {
        2
    } else if !(upstash_ok && backup_ok && queued_ok && sweep_ok && schedules_ok && types_ok && count_ok) {
        1
    } else {
        0
    };
    let name = [HealthStatus::Healthy, HealthStatus::Degraded, HealthStatus::Unhealthy][status as usize];
    let more = [
        ("schedules", check(schedules_ok, json!({ "active": active, "paused": paused, "overdue": overdue }))),
        ("job_types", check(types_ok, json!({ "without_consumer": unserved }))),
        (
            "shard_count",
            check(
                count_ok,
                json!({
                    "count": cfg.map(|c| c.shard_count),
                    "epochs": cfg.map(|c| &c.topology.epochs),
                    "refused": lowered.map(|l| l.to_string()),
                }),
            ),
        ),
    ];
    let body = Health {
        status: name,
        checks: Some(Checks {
            config: check(cfg.is_some(), json!({})),
            shards: check(shards_ok, json!({ "answered": stats.len(), "of": count, "latency_ms": shards_ms })),
            queue: check(queue_ok, json!({})),
            upstash: check(upstash_ok, json!({ "latency_ms": upstash_ms })),
            backup: backup.check(),
            oldest_queued_job: check(queued_ok, json!({ "age_seconds": oldest_age_ms as f64 / 1000.0 })),
            sweep: sweep.check(),
            more: more.into_iter().map(|(k, c)| (k.to_owned(), c)).collect(),
        }),
        checked_at: edgejobs_core::time::format_rfc3339(now),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    (status as u8, body)
}

/// A check: `ok` and what it adds (`detail`: an object).
fn check(ok: bool, detail: Value) -> Check {
    let detail = match detail {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    Check { ok, detail }
}

/// The native types declared in `JOB_TYPES` that no running consumer announces (the
/// presence hash the consumers write every few seconds).
async fn unserved_types(cfg: &EdgeConfig, now: u64) -> Vec<String> {
    let declared: Vec<&str> = cfg
        .types
        .all()
        .filter(|t| !t.builtin && t.lane == edgejobs_core::Lane::Native)
        .map(|t| t.name.as_str())
        .collect();
    if declared.is_empty() {
        return Vec::new();
    }
    let reply = match crate::ratelimit::upstash(cfg).command(&["HGETALL", edgejobs_core::wire::CONSUMERS_KEY]).await {
        Ok(r) => r,
        Err(_) => return Vec::new(),
    };
    let running = crate::routes::stats::consumers(&reply, now);
    let served: std::collections::BTreeSet<&str> =
        running.iter().filter(|c| c.running).flat_map(|c| c.types.iter().map(String::as_str)).collect();
    declared.into_iter().filter(|t| !served.contains(t)).map(str::to_owned).collect()
}

/// A task that must run periodically (the backup, the sweep), as a health check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Periodic {
    /// Ran `age_ms` ago, within its bound (`ok`) or not.
    Ran { age_ms: u64, ok: bool },
    /// Never ran, and the deployment is younger than the bound: not due yet.
    Pending { due_in_ms: u64 },
    /// Never ran, and the deployment is older than the bound.
    Overdue { since_ms: u64 },
}

impl Periodic {
    /// `last_ms`: when it last ran (if ever); `first_seen_ms`: when the deployment was first
    /// checked; `max_ms`: the longest it may go without running.
    pub fn judge(last_ms: Option<u64>, first_seen_ms: u64, now_ms: u64, max_ms: u64) -> Periodic {
        match last_ms {
            Some(t) => {
                let age_ms = now_ms.saturating_sub(t);
                Periodic::Ran { age_ms, ok: age_ms <= max_ms }
            }
            None => {
                let waited = now_ms.saturating_sub(first_seen_ms);
                if waited <= max_ms {
                    Periodic::Pending { due_in_ms: max_ms - waited }
                } else {
                    Periodic::Overdue { since_ms: waited - max_ms }
                }
            }
        }
    }

    pub fn ok(self) -> bool {
        matches!(self, Periodic::Ran { ok: true, .. } | Periodic::Pending { .. })
    }

    pub fn check(self) -> Check {
        let s = |ms: u64| ms as f64 / 1000.0;
        match self {
            Periodic::Ran { age_ms, ok } => {
                let state = if ok { "ok" } else { "overdue" };
                check(ok, json!({ "state": state, "age_seconds": s(age_ms) }))
            }
            Periodic::Pending { due_in_ms } => {
                check(true, json!({ "state": "pending", "age_seconds": null, "due_in_seconds": s(due_in_ms) }))
            }
            Periodic::Overdue { since_ms } => {
                check(false, json!({ "state": "overdue", "age_seconds": null, "overdue_seconds": s(since_ms) }))
            }
        }
    }
}

thread_local! {
    /// The last health result of this isolate: when, the status, the body.
    static CACHED: std::cell::RefCell<Option<(u64, u8, Health)>> = const { std::cell::RefCell::new(None) };
}

/// How old a health result an anonymous request may get.
pub const ANONYMOUS_MAX_AGE_MS: u64 = 5_000;

/// `GET /health` (public). An operator (an admin key, or the metrics token when set) gets
/// fresh checks with every detail; anyone else gets the status alone, from a result at most
/// 5 s old, so a flood of probes costs at most one round of checks per isolate every 5 s
/// (17 reads and a PING). Returns whether it was authenticated (an operator).
pub async fn health(req: &worker::Request, env: &Env) -> Result<(Response, bool)> {
    let operator = operator(req, env);
    let now = now_ms();
    let cached = CACHED.with(|c| c.borrow().clone());
    let (status, mut body) = match cached {
        Some((at, status, body)) if !operator && now.saturating_sub(at) <= ANONYMOUS_MAX_AGE_MS => (status, body),
        _ => {
            let (status, body) = evaluate(env).await;
            CACHED.with(|c| *c.borrow_mut() = Some((now_ms(), status, body.clone())));
            (status, body)
        }
    };
    if !operator {
        body.checks = None;
    }
    http::json(if status == 2 { 503 } else { 200 }, &body).map(|r| (r, operator))
}

/// `GET /health/live`: the process answers; checks nothing else.
pub fn live() -> Result<Response> {
    http::json(200, &Live { status: "live".to_owned() })
}

/// The bearer token of a request, if any.
fn bearer(req: &Request) -> String {
    let header = req.headers().get("authorization").ok().flatten().unwrap_or_default();
    header.strip_prefix("Bearer ").unwrap_or("").to_owned()
}

/// Whether the request carries an operator's credential: the metrics token (when set) or
/// an admin key. Such a request gets fresh metrics and `/health`'s details (it lives here,
/// with the route that decides the most by it; `/metrics` uses it from here).
pub fn operator(req: &Request, env: &Env) -> bool {
    let given = bearer(req);
    if given.is_empty() {
        return false;
    }
    if let Ok(token) = env.secret("METRICS_TOKEN").map(|s| s.to_string())
        && constant_time_eq(&given, &token)
    {
        return true;
    }
    crate::config::load(env).is_ok_and(|cfg| http::authorize(req, Scope::Admin, &cfg).is_ok())
}

#[cfg(test)]
mod tests {
    use super::Periodic;

    #[test]
    fn a_fresh_deployment_is_pending_until_the_task_is_overdue() {
        let hour = 3_600_000;
        assert_eq!(Periodic::judge(None, 0, hour, 26 * hour), Periodic::Pending { due_in_ms: 25 * hour });
        assert!(Periodic::judge(None, 0, hour, 26 * hour).ok(), "pending is healthy");
        assert_eq!(Periodic::judge(None, 0, 27 * hour, 26 * hour), Periodic::Overdue { since_ms: hour });
        assert!(!Periodic::judge(None, 0, 27 * hour, 26 * hour).ok());
        assert!(Periodic::judge(Some(30 * hour), 0, 31 * hour, 26 * hour).ok(), "ran an hour ago");
        assert!(!Periodic::judge(Some(0), 0, 27 * hour, 26 * hour).ok(), "ran too long ago");
        assert_eq!(Periodic::judge(None, 0, 27 * hour, 26 * hour).check().detail["state"], "overdue");
        assert_eq!(Periodic::judge(None, 0, 0, 26 * hour).check().detail["state"], "pending");
    }
}
