//! Backups to R2: every shard exported page by page (one object per page, so no shard is
//! ever held in memory whole), the schedules in one object, then the manifest, written last. Verify, list, restore
//! (page by page, after verifying) and backup retention.

use edgejobs_core::stats::Metric;
use std::collections::BTreeMap;

use edgejobs_core::backup::{self, Manifest, Manifested, ShardEntry};
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::{Export, Import, NameClaim, ScheduleOp, Schedules};
use edgejobs_core::schedule::{self, Schedule};
use edgejobs_core::time::format_rfc3339;
use edgejobs_core::{ApiError, ErrorCode};
use futures_util::future::join_all;
use serde_json::{Value, json};
use worker::{Bucket, Env};

use super::{bucket, put, storage};
use crate::gauges::{self, BACKUP_GAUGE};
use crate::http::log;
use crate::platform::{now_ms, random_u64};
use crate::shard;

/// Rows and bytes per exported page (one R2 object each).
pub const PAGE_ROWS: u32 = 2000;
pub const PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Most pages one shard may produce in one backup (2 million jobs at the default size).
const MAX_PARTS: u32 = 1000;

/// Runs a backup: every shard's pages under a fresh id, then the manifest last. Any failed
/// export or write aborts the backup (it stays without a manifest, so it is never valid).
pub async fn run_backup(env: &Env, cfg: &EdgeConfig) -> Result<Manifest, ApiError> {
    let started = now_ms();
    let id = backup::backup_id(started, random_u64());
    let b = bucket(env)?;
    let mut entries: Vec<ShardEntry> = Vec::new();
    for s in 0..cfg.shard_count {
        let mut after: Option<String> = None;
        for part in 0..MAX_PARTS {
            let page = shard::call(env, s, Export { after: after.clone(), max_rows: PAGE_ROWS, max_bytes: PAGE_BYTES })
                .await
                .map_err(|e| {
                    ApiError::new(ErrorCode::Unavailable, format!("shard {s} could not be exported: {}", e.message))
                })?;
            // Part 0 is written even when empty: every shard has an object.
            if page.rows > 0 || part == 0 {
                let e = backup::entry(&id, s, part, &page.ndjson);
                put(&b, &e.key, page.ndjson.into_bytes()).await?;
                entries.push(e);
            }
            if page.done || page.last.is_none() {
                break;
            }
            if part + 1 == MAX_PARTS {
                return Err(ApiError::new(ErrorCode::Internal, format!("shard {s} has more than {MAX_PARTS} pages")));
            }
            after = page.last;
        }
    }
    // The schedules, every shard's, in one object.
    let mut schedules = Vec::new();
    for s in 0..cfg.shard_count {
        let v = shard::call(env, s, Schedules { op: ScheduleOp::Export }).await.map_err(|e| {
            ApiError::new(ErrorCode::Unavailable, format!("shard {s}'s schedules could not be exported: {}", e.message))
        })?;
        let mut some: Vec<Schedule> = v.stored()?;
        schedules.append(&mut some);
    }
    let ndjson = backup::schedules_ndjson(&schedules);
    let schedules_entry = backup::schedules_entry(&id, &ndjson);
    put(&b, &schedules_entry.key, ndjson.into_bytes()).await?;
    let manifest = Manifest {
        schedules: Some(schedules_entry),
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
    put(&b, &backup::manifest_key(&id), text.into_bytes()).await?;
    gauges::set(env, BACKUP_GAUGE, started as f64 / 1000.0).await;
    gauges::set(env, Metric::BackupLastSizeBytes, manifest.total_bytes as f64).await;
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

/// Re-reads every object of a backup and checks the manifest's shape, counts and hashes;
/// the problems found.
pub async fn verify(env: &Env, id: &str) -> Result<(Manifest, Vec<String>), ApiError> {
    let m = manifest(env, id).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, format!("backup {id:?} does not exist or is incomplete (no manifest)"))
    })?;
    let b = bucket(env)?;
    let mut problems = Vec::new();
    if m.schema_version != backup::SCHEMA_VERSION {
        problems.push(format!("schema version {} is not {}", m.schema_version, backup::SCHEMA_VERSION));
    }
    problems.extend(backup::check_manifest(&m));
    for e in m.shards.iter().chain(&m.schedules) {
        let body = read(&b, &e.key).await?;
        if let Some(p) = backup::check(e, body.as_deref()) {
            problems.push(p);
        }
    }
    Ok((m, problems))
}

/// Every backup id with its manifest (`None`: incomplete), oldest first. A backup whose
/// manifest could not be read is left out: not knowing is not "invalid".
pub async fn list(env: &Env) -> Result<Vec<(String, Option<Manifest>)>, ApiError> {
    Ok(list_all(env).await?.into_iter().filter_map(|(id, m)| m.ok().map(|m| (id, m))).collect())
}

/// Every backup id with its manifest, or the error reading it, oldest first.
pub async fn list_all(env: &Env) -> Result<Vec<(String, Result<Option<Manifest>, ApiError>)>, ApiError> {
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
    Ok(ids.into_iter().zip(manifests).collect())
}

/// Restores every shard from a backup, after verifying it: each shard's parts in order,
/// the first replacing the shard's jobs.
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
    let mut entries = m.shards.clone();
    entries.sort_by_key(|e| (e.shard, e.part));
    // An object the manifest lists but the bucket lacks fails the restore: read as empty,
    // it would replace a shard's jobs with none.
    let text = |key: &str, body: Option<Vec<u8>>| match body {
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|_| ApiError::new(ErrorCode::InvalidField, "backup object is not UTF-8"))
        }
        None => Err(ApiError::new(
            ErrorCode::InvalidTransition,
            format!("backup {id} lists {key}, which the bucket does not hold; restore another backup"),
        )),
    };
    // Every job of every object is checked before anything is replaced: a backup with one
    // bad job restores nothing, and the answer says which shards hold what.
    let mut problems = Vec::new();
    for e in &entries {
        let ndjson = text(&e.key, read(&b, &e.key).await?)?;
        if let Err(p) = backup::jobs_for_restore(&ndjson, e.shard) {
            problems.push(json!({ "shard": e.shard, "part": e.part, "problem": p }));
        }
    }
    let schedules = match &m.schedules {
        Some(e) => match backup::schedules_for_restore(&text(&e.key, read(&b, &e.key).await?)?) {
            Ok(all) => Some(all),
            Err(p) => {
                problems.push(json!({ "schedules": e.key, "problem": p }));
                None
            }
        },
        None => None,
    };
    if !problems.is_empty() {
        let mut err = ApiError::new(
            ErrorCode::InvalidTransition,
            format!("backup {id} holds jobs that cannot be restored; nothing was changed: {}", Value::from(problems)),
        );
        err.field = Some("backup".into());
        return Err(err);
    }
    let epoch = now_ms();
    let mut per_shard: BTreeMap<u16, u64> = BTreeMap::new();
    for e in &entries {
        let ndjson = text(&e.key, read(&b, &e.key).await?)?;
        // Workflow runs restored waiting for an event are indexed again (the index lives in
        // the event name's shard, which a backup does not carry): from the jobs in hand.
        let waiting: Vec<edgejobs_core::Job> = backup::jobs_for_restore(&ndjson, e.shard)
            .unwrap_or_default()
            .into_iter()
            .filter(|j| {
                j.state == edgejobs_core::JobState::Scheduled && j.steps.iter().any(|s| s.wait_entry(j).is_some())
            })
            .collect();
        let import = Import {
            shard: e.shard,
            ndjson,
            first: e.part == 0,
            idempotency_window_ms: cfg.idempotency_window_ms,
            epoch,
        };
        *per_shard.entry(e.shard).or_default() += shard::call(env, e.shard, import).await?.rows;
        if !waiting.is_empty() {
            crate::shard::waits::register(env, cfg, waiting).await;
        }
    }
    // Then the schedules, every shard's replaced (a backup from before schedules leaves
    // them as they are).
    let restored_schedules = match schedules {
        Some(all) => {
            let n = all.len();
            let mut by_shard: BTreeMap<u16, (Vec<Schedule>, Vec<NameClaim>)> =
                (0..cfg.shard_count).map(|s| (s, Default::default())).collect();
            let now = now_ms();
            for s in all {
                // Where a create would put it: its runs' flow key's shard, its name kept at
                // its name's shard (see `schedule::home`).
                let home = schedule::stored_home(&s, now, &cfg.types, cfg.webhook_concurrency, &cfg.topology);
                let named = cfg.topology.schedule_home(&s.name);
                if home != named {
                    by_shard.entry(named).or_default().1.push(NameClaim { name: s.name.clone(), home });
                }
                by_shard.entry(home).or_default().0.push(s);
            }
            for (s, (schedules, claims)) in by_shard {
                shard::call(env, s, Schedules { op: ScheduleOp::Import { schedules, claims } }).await?;
            }
            Some(n)
        }
        None => None,
    };
    let rows: u64 = per_shard.values().sum();
    log("info", "restored from backup", json!({ "backup": id, "rows": rows, "schedules": restored_schedules }));
    let shards: Vec<Value> = per_shard.iter().map(|(s, r)| json!({ "shard": s, "rows": r })).collect();
    Ok(json!({
        "backup": id,
        "restored_rows": rows,
        "restored_schedules": restored_schedules,
        "shards": m.shard_count,
        "per_shard": shards,
    }))
}

/// Deletes backups past retention (`BACKUP_RETENTION`, default 7 days), never the newest
/// valid one, and never one whose manifest could not be read (a read error says nothing
/// about the backup; the next run decides). Such backups are logged.
pub async fn backup_retention(env: &Env, cfg: &EdgeConfig) -> Result<Vec<String>, ApiError> {
    let keep = cfg.maintenance.backup_retention_ms;
    let all = list_all(env).await?;
    let unreadable: Vec<&String> = all.iter().filter(|(_, m)| m.is_err()).map(|(id, _)| id).collect();
    if !unreadable.is_empty() {
        log("warn", "backup manifests could not be read; those backups are kept", json!({ "backups": unreadable }));
    }
    let flags: Vec<(String, Manifested)> = all
        .iter()
        .map(|(id, m)| {
            let known = match m {
                Ok(Some(_)) => Manifested::Valid,
                Ok(None) => Manifested::Incomplete,
                Err(_) => Manifested::Unreadable,
            };
            (id.clone(), known)
        })
        .collect();
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
