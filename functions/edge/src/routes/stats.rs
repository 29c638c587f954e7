//! `GET /v1/stats` and `GET /v1/whoami` (scope `jobs`): what the dashboard's overview and
//! its admin buttons are drawn from, through the public API like any other client.

use edgejobs_api::{Consumer, Consumers, MinutePoint, ShardsAnswered, Stats, StatsJobs, Whoami};
use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::stats::{MINUTE_SERIES, minute_points};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::time::format_rfc3339;
use edgejobs_core::wire::{CONSUMERS_KEY, PRESENCE_STALE_MS, Presence};
use edgejobs_upstash::Reply;
use serde_json::Value;
use std::collections::BTreeMap;
use worker::{Env, Request};

use super::jobs::{Out, respond};
use crate::platform::now_ms;

/// `GET /v1/stats`: jobs by state and type, the oldest queued job, the last hour per
/// minute (jobs created, completed, failed attempts, dead jobs), the native consumers as
/// they announce themselves, and the shards that answered. One read of every shard
/// (as `/health`) and one Upstash command.
///
/// A `jobs` key sees its own tenant's jobs, oldest job and minutes; an admin key sees
/// every tenant's, or one tenant's with `?tenant=`. Consumers are the platform's (names,
/// types and load, no job data): every key sees them.
pub async fn stats(req: &Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let mut asked = None;
    for (k, v) in super::jobs::query_pairs(req)? {
        match k.as_str() {
            "tenant" => asked = Some(Tenant::from_field("tenant", &v)?),
            other => return Err(edgejobs_core::ApiError::field(other, "unknown parameter; known: tenant")),
        }
    }
    let tenant = who.sees.filter(asked)?;
    let only = tenant.as_ref().map(Tenant::as_str);
    let fetched = crate::gauges::fetch(env, cfg.shard_count, false).await;
    let now = now_ms();
    let shards: Vec<_> = fetched.shards.iter().flatten().collect();
    let mut jobs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut rows = Vec::new();
    for s in &shards {
        for c in s.jobs.iter().filter(|c| only.is_none_or(|t| t == c.tenant)) {
            *jobs.entry((c.state.clone(), c.job_type.clone())).or_default() += c.n;
        }
        rows.extend(s.minutes.iter().cloned());
    }
    let oldest = match only {
        None => shards.iter().filter_map(|s| s.oldest_queued_ms).min(),
        Some(t) => shards
            .iter()
            .flat_map(|s| s.oldest_queued_by_tenant.iter())
            .filter(|(n, _)| n == t)
            .map(|(_, ms)| *ms)
            .min(),
    };
    let minutes: Vec<MinutePoint> = minute_points(&rows, now, only)
        .into_iter()
        .map(|(at, [enqueued, completed, failed, dead])| MinutePoint {
            at: format_rfc3339(at),
            enqueued,
            completed,
            failed,
            dead,
        })
        .collect();
    let consumers = match crate::ratelimit::upstash(cfg).command(&["HGETALL", CONSUMERS_KEY]).await {
        Ok(reply) => Consumers { ok: true, list: consumers(&reply, now) },
        Err(_) => Consumers { ok: false, list: Vec::new() },
    };
    // The shards name states as strings; one this edge does not know is left out.
    let jobs = jobs
        .into_iter()
        .filter_map(|((state, job_type), count)| {
            let state = serde_json::from_value(Value::String(state)).ok()?;
            Some(StatsJobs { state, job_type, count })
        })
        .collect();
    respond(
        200,
        &Stats {
            jobs,
            oldest_queued_at: oldest.map(format_rfc3339),
            minutes,
            consumers,
            shards: ShardsAnswered { answered: shards.len(), of: fetched.shards.len() },
            at: format_rfc3339(now),
        },
    )
}

/// The minute points are read as (enqueued, completed, failed, dead): that order.
const _: () = assert!(MINUTE_SERIES.len() == 4);

/// The consumers of the presence hash (`HGETALL`: name, JSON, name, JSON…), newest
/// announcement first: what each said and whether it said so recently enough to count as
/// running. Entries that do not parse are left out.
pub fn consumers(reply: &Reply, now: u64) -> Vec<Consumer> {
    let items = reply.as_array().unwrap_or_default();
    let mut out: Vec<(u64, Consumer)> = items
        .chunks(2)
        .filter_map(|pair| {
            let name = pair.first()?.as_str()?;
            let p: Presence = serde_json::from_str(pair.get(1)?.as_str()?).ok()?;
            let age = now.saturating_sub(p.seen_at);
            let v = Consumer {
                name: name.to_owned(),
                seen_seconds_ago: age as f64 / 1000.0,
                running: age <= PRESENCE_STALE_MS,
                in_flight: p.in_flight,
                concurrency: p.concurrency,
                types: p.types,
                version: p.version,
            };
            Some((p.seen_at, v))
        })
        .collect();
    out.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
    out.into_iter().map(|(_, v)| v).collect()
}

/// `GET /v1/whoami`: which scopes the key has (`admin` or not), its tenant (`null` for an
/// admin key, which sees every tenant), and its id (the first 8 bytes of its SHA-256: safe
/// to show; `binding-<tenant>` for a service binding). The key itself is never echoed.
pub fn whoami(who: &Principal) -> Out {
    // Only an admin key sees every tenant on a jobs route (a consumer token cannot call it).
    let admin = who.tenant().is_none();
    let who = who.clone();
    let scopes: Vec<&str> = if admin { vec!["jobs", "admin"] } else { vec!["jobs"] };
    let tenant = who.tenant().map(|t| t.to_string());
    respond(200, &Whoami { key_id: who.key_id, scopes: scopes.into_iter().map(str::to_owned).collect(), tenant })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Reply {
        Reply::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn consumers_are_read_from_their_presence() {
        let p = |seen: u64| {
            format!(r#"{{"seen_at":{seen},"concurrency":25,"in_flight":3,"types":["sleep"],"version":"0.1.0"}}"#)
        };
        let reply =
            Reply::Array(vec![b("host-old"), b(&p(1_000)), b("host-new"), b(&p(95_000)), b("broken"), b("{not json")]);
        let c = consumers(&reply, 100_000);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[0].name.as_str(), c[0].running), ("host-new", true));
        assert_eq!(c[0].seen_seconds_ago, 5.0);
        assert_eq!(c[0].types, vec!["sleep".to_owned()]);
        assert_eq!((c[1].name.as_str(), c[1].running), ("host-old", false));
        assert!(consumers(&Reply::Nil, 0).is_empty());
    }
}
