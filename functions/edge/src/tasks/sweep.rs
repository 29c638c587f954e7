//! The sweep over every shard: re-sends jobs whose queue message was lost, fails attempts
//! that were lost (retried by policy) and re-arms alarms (`SWEEP_QUEUED_AFTER`, default
//! 2 min; `SWEEP_ACTIVE_GRACE`, 30 s; `SWEEP_NATIVE_LEASE`, 5 min).

use edgejobs_core::ApiError;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::plan::SweepPolicy;
use edgejobs_core::protocol::{Sweep, SweepReport};
use futures_util::future::join_all;
use serde_json::json;
use worker::Env;

use crate::gauges::{self, SWEEP_GAUGE};
use crate::http::log;
use crate::platform::now_ms;
use crate::shard;

/// The sweep's thresholds from configuration.
pub fn policy(cfg: &EdgeConfig) -> SweepPolicy {
    let m = &cfg.maintenance;
    SweepPolicy {
        queued_after_ms: m.sweep_queued_after_ms,
        active_grace_ms: m.sweep_active_grace_ms,
        native_lease_ms: m.sweep_native_lease_ms,
    }
}

/// Sweeps every shard concurrently; the totals. A shard that fails is logged and the rest
/// still run; the first error is returned after all of them ran.
pub async fn sweep(env: &Env, cfg: &EdgeConfig) -> Result<SweepReport, ApiError> {
    let policy = policy(cfg);
    let answers = join_all((0..cfg.shard_count).map(|s| shard::call(env, s, Sweep { policy }))).await;
    let mut total = SweepReport { complete: true, ..SweepReport::default() };
    let mut first_error = None;
    for (s, a) in answers.into_iter().enumerate() {
        match a {
            Ok(r) => {
                total.resent += r.resent;
                total.timed_out += r.timed_out;
                total.complete &= r.complete;
            }
            Err(e) => {
                log("error", "the sweep of a shard failed", json!({ "shard": s, "error": e.message }));
                total.complete = false;
                first_error.get_or_insert(e);
            }
        }
    }
    gauges::set(env, SWEEP_GAUGE, now_ms() as f64 / 1000.0).await;
    if total.resent > 0 || total.timed_out > 0 {
        log(
            "info",
            "sweep",
            json!({ "resent": total.resent, "timed_out": total.timed_out, "complete": total.complete }),
        );
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}
