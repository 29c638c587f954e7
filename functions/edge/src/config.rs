//! Binding names (one place, matching wrangler.toml) and the typed config read from env.

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::{ApiError, ErrorCode};
use worker::Env;

/// The `JobShard` Durable Object namespace.
pub const SHARD_BINDING: &str = "JOB_SHARD";
/// The `jobs` queue producer.
pub const QUEUE_BINDING: &str = "JOBS";
/// The name of the jobs queue (what a consumer batch reports as its queue).
pub const QUEUE_NAME: &str = "jobs";
/// The dead-letter queue of `jobs` (messages the runtime gave up on).
pub const DLQ_NAME: &str = "jobs-dlq";
/// The R2 bucket for backups and archives.
pub const BACKUP_BUCKET_BINDING: &str = "BACKUPS";

/// Reads a `[vars]` value or a secret (`.dev.vars` entries arrive as either, locally).
pub fn raw(env: &Env, name: &str) -> Option<String> {
    env.secret(name).map(|s| s.to_string()).or_else(|_| env.var(name).map(|v| v.to_string())).ok()
}

thread_local! {
    /// The parsed config: an isolate's bindings never change (a new deployment or a
    /// restart of `wrangler dev` starts new isolates), so it is parsed once per isolate.
    static CACHED: std::cell::RefCell<Option<EdgeConfig>> = const { std::cell::RefCell::new(None) };
}

/// Loads the config. A misconfigured deployment answers 500 naming the settings (never
/// their values) so the operator sees what to fix.
pub fn load(env: &Env) -> Result<EdgeConfig, ApiError> {
    if let Some(c) = CACHED.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    let cfg = EdgeConfig::parse(|name| raw(env, name)).map_err(|errors| {
        crate::http::log("error", "invalid configuration", serde_json::json!({ "problems": errors }));
        ApiError::new(ErrorCode::Internal, format!("the deployment is misconfigured: {}", errors.join("; ")))
    })?;
    CACHED.with(|c| *c.borrow_mut() = Some(cfg.clone()));
    Ok(cfg)
}
