//! The scheduled operations: backups to R2 (and their verification, listing, retention and
//! restore), retention of finished jobs with an archive to R2, and the sweep. Cron triggers
//! call [`scheduled`]; the admin routes call the same functions.

use std::collections::BTreeMap;

use edgejobs_core::backup::{self, Manifest};
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::stats::Delta;
use edgejobs_core::time::format_rfc3339;
use edgejobs_core::{ApiError, ErrorCode};
use futures_util::future::join_all;
use serde_json::{Value, json};
use worker::{Bucket, Env};

use crate::config::BACKUP_BUCKET_BINDING;
use crate::http::log;
use crate::platform::{now_ms, random_u64};
use crate::routes::health::{BACKUP_GAUGE, SWEEP_GAUGE};
use crate::shard;

/// The cron of the nightly backup (`BACKUP_CRON`, default `0 2 * * *`); any other cron runs
/// the maintenance: cleanup and the sweep.
pub const DEFAULT_BACKUP_CRON: &str = "0 2 * * *";

fn var(env: &Env, name: &str) -> Option<String> {
    crate::config::raw(env, name)
}

fn duration(env: &Env, name: &str, default_ms: u64) -> u64 {
    var(env, name).and_then(|v| edgejobs_core::spec::parse_duration(&Value::String(v))).unwrap_or(default_ms)
}

fn number(env: &Env, name: &str, default: u32) -> u32 {
    var(env, name).and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// A shard's answer, with an error status turned into its error.
fn checked(r: Result<(u16, Value), ApiError>) -> Result<Value, ApiError> {
    let (status, v) = r?;
    if status >= 400 {
        return Err(ApiError::from_body(&v)
            .unwrap_or_else(|| ApiError::new(ErrorCode::Internal, format!("shard answered {status}"))));
    }
    Ok(v)
}

fn bucket(env: &Env) -> Result<Bucket, ApiError> {
    env.bucket(BACKUP_BUCKET_BINDING)
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the backup bucket is not bound"))
}

fn storage(e: worker::Error) -> ApiError {
    log("error", "R2 operation failed", json!({ "error": e.to_string() }));
    ApiError::new(ErrorCode::Unavailable, "the backup bucket failed; retry")
}

async fn set_gauge(env: &Env, name: &str, value: f64) {
    let _ = shard::call_named(env, shard::STATS, "gauge", &json!({ "name": name, "value": value })).await;
}

/// Adds counter deltas in the stats object, in one call. A lost count is logged, not fatal.
pub async fn count(env: &Env, deltas: &[Delta]) {
    let body = serde_json::to_value(deltas).unwrap_or_default();
    if shard::call_named(env, shard::STATS, "count", &body).await.is_err() {
        log("warn", "could not record counters", json!({ "counters": deltas.len() }));
    }
}

/// Runs a backup: every shard's NDJSON under a fresh id, then the manifest last.
pub async fn run_backup(env: &Env, cfg: &EdgeConfig) -> Result<Manifest, ApiError> {
    let started = now_ms();
    let id = backup::backup_id(started, random_u64());
    let b = bucket(env)?;
    let mut entries = Vec::with_capacity(cfg.shard_count as usize);
    for s in 0..cfg.shard_count {
        let (status, v) = shard::call(env, s, "export", &json!({})).await?;
        if status != 200 {
            return Err(ApiError::new(ErrorCode::Unavailable, format!("shard {s} could not be exported")));
        }
        let body = v["ndjson"].as_str().unwrap_or_default().to_owned();
        let e = backup::entry(&id, s, &body);
        b.put(&e.key, body.into_bytes()).execute().await.map_err(storage)?;
        entries.push(e);
    }
    let manifest = Manifest {
        schema_version: backup::SCHEMA_VERSION,
        id: id.clone(),
        started_at: format_rfc3339(started),
        finished_at: format_rfc3339(now_ms()),
        shard_count: cfg.shard_count,
        total_rows: entries.iter().map(|e| e.rows).sum(),
        total_bytes: entries.iter().map(|e| e.bytes).sum(),
        shards: entries,
    };
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|_| ApiError::new(ErrorCode::Internal, "manifest encoding"))?;
    b.put(backup::manifest_key(&id), text.into_bytes()).execute().await.map_err(storage)?;
    set_gauge(env, BACKUP_GAUGE, started as f64 / 1000.0).await;
    set_gauge(env, "edgejobs_backup_last_size_bytes", manifest.total_bytes as f64).await;
    log("info", "backup written", json!({ "backup": id, "rows": manifest.total_rows, "bytes": manifest.total_bytes }));
    Ok(manifest)
}

async fn read(b: &Bucket, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match b.get(key).execute().await.map_err(storage)? {
        Some(obj) => match obj.body() {
            Some(body) => Ok(Some(body.bytes().await.map_err(storage)?)),
            None => Ok(Some(Vec::new())),
        },
        None => Ok(None),
    }
}

/// The manifest of a backup, if it has one.
pub async fn manifest(env: &Env, id: &str) -> Result<Option<Manifest>, ApiError> {
    let b = bucket(env)?;
    match read(&b, &backup::manifest_key(id)).await? {
        Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        None => Ok(None),
    }
}

/// Re-reads every object of a backup and checks counts and hashes; the problems found.
pub async fn verify(env: &Env, id: &str) -> Result<(Manifest, Vec<String>), ApiError> {
    let m = manifest(env, id).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("backup {id:?} does not exist or is incomplete (no manifest)"))
    })?;
    let b = bucket(env)?;
    let mut problems = Vec::new();
    if m.schema_version != backup::SCHEMA_VERSION {
        problems.push(format!("schema version {} is not {}", m.schema_version, backup::SCHEMA_VERSION));
    }
    for e in &m.shards {
        let body = read(&b, &e.key).await?;
        if let Some(p) = backup::check(e, body.as_deref()) {
            problems.push(p);
        }
    }
    Ok((m, problems))
}

/// Every backup id with whether it has a manifest, oldest first.
pub async fn list(env: &Env) -> Result<Vec<(String, Option<Manifest>)>, ApiError> {
    let b = bucket(env)?;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut req = b.list().prefix(backup::PREFIX).delimiter("/");
        if let Some(c) = &cursor {
            req = req.cursor(c.clone());
        }
        let page = req.execute().await.map_err(storage)?;
        ids.extend(
            page.delimited_prefixes()
                .into_iter()
                .map(|p| p.trim_start_matches(backup::PREFIX).trim_end_matches('/').to_owned()),
        );
        cursor = page.cursor();
        if !page.truncated() || cursor.is_none() {
            break;
        }
    }
    ids.sort();
    let manifests = join_all(ids.iter().map(|id| manifest(env, id))).await;
    Ok(ids.into_iter().zip(manifests).map(|(id, m)| (id, m.ok().flatten())).collect())
}

/// Restores every shard from a backup, after verifying it.
pub async fn restore(env: &Env, cfg: &EdgeConfig, id: &str) -> Result<Value, ApiError> {
    let (m, problems) = verify(env, id).await?;
    if !problems.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidTransition,
            format!("backup {id} failed verification: {}", problems.join("; ")),
        ));
    }
    if m.shard_count != cfg.shard_count {
        return Err(ApiError::new(
            ErrorCode::InvalidTransition,
            format!("backup {id} has {} shards; this deployment has {}", m.shard_count, cfg.shard_count),
        ));
    }
    let b = bucket(env)?;
    let mut rows = 0u64;
    for e in &m.shards {
        let body = read(&b, &e.key).await?.unwrap_or_default();
        let ndjson = String::from_utf8(body)
            .map_err(|_| ApiError::new(ErrorCode::InvalidField, "backup object is not UTF-8"))?;
        let (status, v) = shard::call(
            env,
            e.shard,
            "import",
            &json!({ "shard": e.shard, "ndjson": ndjson, "idempotency_window_ms": cfg.idempotency_window_ms }),
        )
        .await?;
        if status != 200 {
            return Err(ApiError::from_body(&v).unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "import failed")));
        }
        rows += v["rows"].as_u64().unwrap_or(0);
    }
    log("info", "restored from backup", json!({ "backup": id, "rows": rows }));
    Ok(json!({ "backup": id, "restored_rows": rows, "shards": m.shard_count }))
}

/// Deletes backups past retention (`BACKUP_RETENTION`, default 7 days), never the newest
/// valid one.
pub async fn backup_retention(env: &Env) -> Result<Vec<String>, ApiError> {
    let keep = duration(env, "BACKUP_RETENTION", 7 * 86_400_000);
    let all = list(env).await?;
    let flags: Vec<(String, bool)> = all.iter().map(|(id, m)| (id.clone(), m.is_some())).collect();
    let doomed = backup::to_delete(&flags, now_ms(), keep);
    let b = bucket(env)?;
    for id in &doomed {
        let listing = b.list().prefix(format!("{}{id}/", backup::PREFIX)).execute().await.map_err(storage)?;
        // The manifest goes first, so a half-deleted backup is never taken for valid.
        b.delete(backup::manifest_key(id)).await.map_err(storage)?;
        for o in listing.objects() {
            b.delete(o.key()).await.map_err(storage)?;
        }
    }
    if !doomed.is_empty() {
        log("info", "deleted old backups", json!({ "backups": doomed }));
    }
    Ok(doomed)
}

/// Retention of finished jobs, archiving each shard's doomed rows to R2 first when
/// `RETENTION_ARCHIVE` is on (the default). Returns (deleted, archived).
pub async fn job_retention(env: &Env, cfg: &EdgeConfig) -> Result<(u64, u64), ApiError> {
    let archive = var(env, "RETENTION_ARCHIVE").is_none_or(|v| v.trim() != "false");
    let (done_keep, dead_keep) =
        (number(env, "RETENTION_COMPLETED_KEEP", 1000), number(env, "RETENTION_DEAD_KEEP", 5000));
    // The newest N per type across all shards: merge every shard's newest N, per type.
    let keeps = json!({ "done_keep": done_keep, "dead_keep": dead_keep });
    let mut tops: BTreeMap<(&str, String), Vec<(u64, String)>> = BTreeMap::new();
    for s in 0..cfg.shard_count {
        let v = checked(shard::call(env, s, "retention_tops", &keeps).await)?;
        for class in ["done", "dead"] {
            let by_type: BTreeMap<String, Vec<(u64, String)>> =
                serde_json::from_value(v[class].clone()).unwrap_or_default();
            for (t, mut rows) in by_type {
                tops.entry((class, t)).or_default().append(&mut rows);
            }
        }
    }
    let mut cutoffs: BTreeMap<&str, BTreeMap<String, (u64, String)>> = BTreeMap::new();
    for ((class, t), mut rows) in tops {
        let keep = if class == "done" { done_keep } else { dead_keep } as usize;
        if rows.len() > keep && keep > 0 {
            rows.sort_by(|a, b| b.cmp(a));
            cutoffs.entry(class).or_default().insert(t, rows[keep - 1].clone());
        }
    }
    let plan = json!({
        "now": now_ms(),
        "done_age_ms": duration(env, "RETENTION_COMPLETED_AGE", 86_400_000),
        "dead_age_ms": duration(env, "RETENTION_DEAD_AGE", 7 * 86_400_000),
        "done_cutoffs": cutoffs.get("done").cloned().unwrap_or_default(),
        "dead_cutoffs": cutoffs.get("dead").cloned().unwrap_or_default(),
    });
    let run = backup::backup_id(now_ms(), random_u64());
    let (mut deleted, mut archived) = (0u64, 0u64);
    for s in 0..cfg.shard_count {
        let v = checked(shard::call(env, s, "retention_plan", &plan).await)?;
        let ndjson = v["ndjson"].as_str().unwrap_or_default().to_owned();
        let jobs = backup::from_ndjson(&ndjson).map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
        if jobs.is_empty() {
            continue;
        }
        if archive {
            let key = format!("archive/{}/shard-{s:03}.ndjson", run);
            bucket(env)?.put(&key, ndjson.into_bytes()).execute().await.map_err(storage)?;
            archived += jobs.len() as u64;
        }
        let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
        let v = checked(shard::call(env, s, "retention_delete", &json!({ "ids": ids })).await)?;
        deleted += v["deleted"].as_u64().unwrap_or(0);
    }
    if deleted > 0 || archived > 0 {
        let deltas = [
            Delta::count("edgejobs_retention_deleted_total", &[], deleted as f64),
            Delta::count("edgejobs_retention_archived_total", &[], archived as f64),
        ];
        count(env, &deltas).await;
        log(
            "info",
            "retention of finished jobs",
            json!({ "deleted": deleted, "archived": archived, "archive_run": run }),
        );
    }
    Ok((deleted, archived))
}

/// The sweep over every shard (`SWEEP_QUEUED_AFTER`, default 2 min). Returns the resent count.
pub async fn sweep(env: &Env, cfg: &EdgeConfig) -> Result<u64, ApiError> {
    let body = json!({
        "queued_after_ms": duration(env, "SWEEP_QUEUED_AFTER", 120_000),
        "active_grace_ms": duration(env, "SWEEP_ACTIVE_GRACE", 30_000),
        "native_lease_ms": duration(env, "SWEEP_NATIVE_LEASE", 300_000),
    });
    let answers = join_all((0..cfg.shard_count).map(|s| shard::call(env, s, "sweep", &body))).await;
    let mut resent = 0;
    for a in answers {
        let v = checked(a)?;
        resent += v["resent"].as_u64().unwrap_or(0);
    }
    set_gauge(env, SWEEP_GAUGE, now_ms() as f64 / 1000.0).await;
    if resent > 0 {
        log("info", "sweep re-sent queued jobs", json!({ "resent": resent }));
    }
    Ok(resent)
}

/// The cron entry point.
pub async fn scheduled(cron: &str, env: &Env) {
    let Ok(cfg) = crate::config::load(env) else { return };
    let backup_cron = var(env, "BACKUP_CRON").unwrap_or_else(|| DEFAULT_BACKUP_CRON.to_owned());
    let outcome = if cron.trim() == backup_cron.trim() {
        run_backup(env, &cfg).await.map(|m| json!({ "backup": m.id }))
    } else {
        async {
            let resent = sweep(env, &cfg).await?;
            let (deleted, archived) = job_retention(env, &cfg).await?;
            let old = backup_retention(env).await?;
            Ok(json!({ "resent": resent, "deleted": deleted, "archived": archived, "backups_deleted": old.len() }))
        }
        .await
    };
    match outcome {
        Ok(v) => log("info", "scheduled task done", json!({ "cron": cron, "result": v })),
        Err(e) => log("error", "scheduled task failed", json!({ "cron": cron, "error": e.message })),
    }
}
