//! The stats object's gauges and every shard's numbers: the cron tasks set the gauges
//! ([`set`]); `/health`, `/metrics` and `/v1/stats` read everything at once ([`fetch`]);
//! [`flush_later`] writes this isolate's counters when no shard call carried them.
//! It sits below both `routes` and `tasks`, so neither imports the other for a gauge.

use edgejobs_core::protocol::{Record, SetGauge, Stats};
use edgejobs_core::stats::Metric;
use edgejobs_core::stats::ShardStats;
use futures_util::future::join_all;
use serde_json::json;
use worker::Env;

use crate::counters;
use crate::http::log;
use crate::platform::now_ms;
use crate::shard;

/// When the last backup succeeded (seconds since the epoch); `/health` judges it.
pub const BACKUP_GAUGE: Metric = Metric::BackupLastSuccessTimestampSeconds;
/// When the sweep last ran (seconds since the epoch); `/health` judges it.
pub const SWEEP_GAUGE: Metric = Metric::SweepLastRunTimestampSeconds;
/// When this deployment's first health check ran (seconds since the epoch).
pub const FIRST_SEEN_GAUGE: Metric = Metric::DeploymentFirstSeenTimestampSeconds;

/// Sets a gauge in the stats object (cron work only; never on the request path).
pub async fn set(env: &Env, name: Metric, value: f64) {
    if let Err(e) = shard::call_named(env, shard::STATS, SetGauge { name, value }).await {
        log("warn", "could not set a gauge", json!({ "gauge": name, "error": e.message }));
    }
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

/// This isolate's pending counts, written a second later to a random shard unless a shard
/// call carries them first ([`counters::flush_later`]); `None` when nothing is pending or a
/// flush is already scheduled.
pub fn flush_later(env: &Env, shard_count: u16) -> Option<impl std::future::Future<Output = ()> + 'static> {
    let env = env.clone();
    counters::flush_later(shard_count, move |shard| async move {
        // `call` carries the pending counts and restores them if the call fails.
        let _ = shard::call(&env, shard, Record {}).await;
    })
}
