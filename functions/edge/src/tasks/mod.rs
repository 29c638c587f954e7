//! The scheduled operations, one file per cron task: backups to R2 ([`backup`]: write,
//! verify, list, restore, backup retention), retention of finished jobs with an archive to
//! R2 ([`retention`]), and the sweep ([`sweep`]). Cron triggers call [`scheduled`]; the
//! admin routes call the same functions.

use edgejobs_core::stats::Metric;
use edgejobs_core::{ApiError, ErrorCode};
use serde_json::{Value, json};
use std::time::Duration;

use futures_util::future::{Either, select};
use worker::{Bucket, Delay, Env};

use crate::config::BACKUP_BUCKET_BINDING;
use crate::http::log;

pub mod backup;
pub mod retention;
pub mod sweep;

pub use backup::{list, manifest, restore, run_backup, verify};

pub(crate) fn bucket(env: &Env) -> Result<Bucket, ApiError> {
    env.bucket(BACKUP_BUCKET_BINDING)
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the backup bucket is not bound"))
}

pub(crate) fn storage(e: worker::Error) -> ApiError {
    log("error", "R2 operation failed", json!({ "error": e.to_string() }));
    ApiError::new(ErrorCode::Unavailable, "the backup bucket failed; retry")
}

/// Longest one R2 write may take: a store that never answers fails the task (503) instead of
/// hanging it (the fault battery found a local store that did not answer a failed write).
pub(crate) const R2_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes one object, bounded by [`R2_WRITE_TIMEOUT`].
pub(crate) async fn put(b: &Bucket, key: &str, body: Vec<u8>) -> Result<(), ApiError> {
    let write = Box::pin(b.put(key, body).execute());
    match select(write, Delay::from(R2_WRITE_TIMEOUT)).await {
        Either::Left((r, _)) => r.map(|_| ()).map_err(storage),
        Either::Right(_) => {
            log("error", "R2 write timed out", json!({ "key": key, "after_s": R2_WRITE_TIMEOUT.as_secs() }));
            Err(ApiError::new(ErrorCode::Unavailable, "the backup bucket did not answer; retry"))
        }
    }
}

/// The cron entry point.
pub async fn scheduled(cron: &str, env: &Env) {
    let Ok(cfg) = crate::topology::load(env).await else { return };
    if cron.trim() == cfg.maintenance.backup_cron.trim() {
        match run_backup(env, &cfg).await {
            Ok(m) => log("info", "scheduled backup done", json!({ "cron": cron, "backup": m.id })),
            Err(e) => {
                crate::counters::add(Metric::CronFailuresTotal, &[("step", "backup")], 1.0);
                log("error", "scheduled backup failed", json!({ "cron": cron, "error": e.message }))
            }
        }
        return;
    }
    // Every maintenance step runs even when another failed.
    let swept = sweep::sweep(env, &cfg).await;
    let retention = retention::job_retention(env, &cfg).await;
    let backups = backup::backup_retention(env, &cfg).await;
    let step = |name: &str, r: Result<Value, ApiError>| match r {
        Ok(v) => log("info", "scheduled step done", json!({ "cron": cron, "step": name, "result": v })),
        Err(e) => {
            crate::counters::add(Metric::CronFailuresTotal, &[("step", name)], 1.0);
            log("error", "scheduled step failed", json!({ "cron": cron, "step": name, "error": e.message }))
        }
    };
    step("sweep", swept.map(|s| json!({ "resent": s.resent, "timed_out": s.timed_out, "complete": s.complete })));
    step("job_retention", retention.map(|(deleted, archived)| json!({ "deleted": deleted, "archived": archived })));
    step("backup_retention", backups.map(|old| json!({ "backups_deleted": old.len() })));
}
