//! The router's view of the shard topology (`edgejobs_core::topology`): read from shard 0
//! when an isolate starts and again every `REFRESH_MS`; the isolate's `SHARD_COUNT` is
//! recorded there when it is a growth. Routes, the queue consumer and the cron tasks use
//! the config this gives: its `shard_count` is the newest recorded count, never lower.

use edgejobs_core::ApiError;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::TopologyOp;
use edgejobs_core::topology::{Lowered, REFRESH_MS, Topology};
use worker::Env;

use crate::platform::now_ms;

thread_local! {
    /// The topology shard 0 last answered, and when.
    static VIEW: std::cell::RefCell<Option<(Topology, u64)>> = const { std::cell::RefCell::new(None) };
}

/// The config with the deployment's topology: `shard_count` is the newest count recorded.
/// When shard 0 cannot be reached, the last topology read is used (503 before any was).
pub async fn load(env: &Env) -> Result<EdgeConfig, ApiError> {
    let mut cfg = crate::config::load(env)?;
    let now = now_ms();
    let cached = VIEW.with(|v| v.borrow().clone());
    let topology = match cached {
        Some((t, at)) if now.saturating_sub(at) < REFRESH_MS => t,
        cached => match crate::shard::call(env, 0, TopologyOp { configured: cfg.shard_count }).await {
            Ok(t) => {
                if let Some(l) = lowered_by(cfg.shard_count, &t) {
                    crate::http::log(
                        "error",
                        "SHARD_COUNT lowered: refused",
                        serde_json::json!({ "error": l.to_string() }),
                    );
                }
                VIEW.with(|v| *v.borrow_mut() = Some((t.clone(), now)));
                t
            }
            Err(e) => match cached {
                Some((t, _)) => t,
                None => return Err(e),
            },
        },
    };
    cfg.shard_count = topology.count();
    cfg.topology = topology;
    Ok(cfg)
}

/// Forgets the topology read, so the next request reads it again (a shard answered that a
/// key moved: another isolate recorded a growth this one has not seen).
pub fn forget() {
    VIEW.with(|v| *v.borrow_mut() = None);
}

/// Whether this isolate's `SHARD_COUNT` is below the recorded count (what `/health` shows).
pub fn lowered(env: &Env) -> Option<Lowered> {
    let configured = crate::config::load(env).ok()?.shard_count;
    VIEW.with(|v| v.borrow().as_ref().and_then(|(t, _)| lowered_by(configured, t)))
}

fn lowered_by(configured: u16, t: &Topology) -> Option<Lowered> {
    (configured < t.count()).then_some(Lowered { configured, recorded: t.count() })
}
