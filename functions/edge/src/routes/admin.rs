//! Admin routes (admin scope): backups (list, latest, start, verify) and restore.

use edgejobs_api::{BackupList, BackupSummary, VerifyResult, WebhookSecret};
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::{Reseal, ResealReport};
use edgejobs_core::{ApiError, ErrorCode, backup};
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{Out, respond};
use crate::http;
use crate::platform::now_ms;
use crate::tasks;

/// A backup id from a path or body: only ids this system writes are accepted, so no key
/// outside `backups/<id>/` can ever be named.
fn backup_id(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && backup::id_time_ms(raw).is_some();
    if ok { Ok(raw.to_owned()) } else { Err(ApiError::new(ErrorCode::NotFound, format!("no backup {raw:?}"))) }
}

fn summary(id: &str, m: Option<&backup::Manifest>) -> BackupSummary {
    BackupSummary {
        id: id.to_owned(),
        valid: m.is_some(),
        created_at: backup::id_time_ms(id).map(edgejobs_core::time::format_rfc3339),
        rows: m.map(|m| m.total_rows),
        bytes: m.map(|m| m.total_bytes),
        shards: m.map(|m| u64::from(m.shard_count)),
        age_seconds: None,
    }
}

/// `GET /v1/admin/backups`: newest first; `valid` means complete (a manifest exists) —
/// `verify` re-checks the contents.
pub async fn list(env: &Env) -> Out {
    let mut all = tasks::list(env).await?;
    all.reverse();
    respond(200, &BackupList { backups: all.iter().map(|(id, m)| summary(id, m.as_ref())).collect() })
}

/// `GET /v1/admin/backups/latest`: the newest complete backup, its age, size and counts.
pub async fn latest(env: &Env) -> Out {
    let all = tasks::list(env).await?;
    let Some((id, Some(m))) = all.iter().rev().find(|(_, m)| m.is_some()) else {
        return Err(ApiError::new(ErrorCode::NotFound, "there is no complete backup yet"));
    };
    let age = backup::id_time_ms(id).map(|t| now_ms().saturating_sub(t) as f64 / 1000.0);
    // `age_seconds` is always there here, null only for an id without a time.
    #[derive(serde::Serialize)]
    struct Latest {
        #[serde(flatten)]
        summary: BackupSummary,
        age_seconds: Option<f64>,
    }
    respond(200, &Latest { summary: summary(id, Some(m)), age_seconds: age })
}

/// `POST /v1/admin/backups`: runs a backup now.
pub async fn start(env: &Env, cfg: &EdgeConfig) -> Out {
    let m = tasks::run_backup(env, cfg).await?;
    respond(201, &m)
}

/// `POST /v1/admin/backups/{id}/verify`
pub async fn verify(env: &Env, raw: &str) -> Out {
    let id = backup_id(raw)?;
    let (m, problems) = tasks::verify(env, &id).await?;
    respond(200, &VerifyResult { valid: problems.is_empty(), id, problems, rows: m.total_rows })
}

/// `POST /v1/admin/webhook-secret` with `{"url": "...", "type": "..."}`: the Standard
/// Webhooks secret (`whsec_...`) that receiver verifies its deliveries with. Each origin
/// (scheme, host, port) has its own, derived from `WEBHOOK_SIGNING_SECRET`, so a delivery
/// captured at one receiver does not verify at another; a type declared with a fixed URL
/// (`type`, default `webhook`) has its own too, so a `webhook` job cannot pass for it.
/// `secrets` holds one per configured secret, newest first (a rotation's overlap).
pub async fn webhook_secret(req: &mut Request, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "url" | "type")) {
        return Err(ApiError::field(k, "unknown field"));
    }
    let raw = obj
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field("url", "is required (the receiver's URL)"))?;
    // The syntax a webhook job's URL must have (what the receiver will be called with).
    let url = edgejobs_core::spec::parse_target_url(raw).ok_or_else(|| {
        ApiError::field("url", "must be an http:// or https:// URL without spaces or control characters")
    })?;
    let origin = url.origin().ascii_serialization();
    let job_type = match obj.get("type") {
        None => edgejobs_core::webhook::WEBHOOK_TYPE,
        Some(Value::String(t)) if t == edgejobs_core::webhook::WEBHOOK_TYPE => t.as_str(),
        Some(Value::String(t)) => {
            // Only a type that delivers to a fixed URL at this origin has deliveries here.
            let fixed = cfg.types.get(t).and_then(|d| d.url.as_deref()).and_then(edgejobs_core::spec::parse_target_url);
            match fixed {
                Some(u) if u.origin().ascii_serialization() == origin => t.as_str(),
                Some(_) => return Err(ApiError::field("type", "this type delivers to another origin than url's")),
                None => return Err(ApiError::field("type", "must be webhook or a type declared with a fixed url")),
            }
        }
        Some(_) => return Err(ApiError::field("type", "must be a string")),
    };
    let secrets: Vec<String> = cfg
        .webhook_secret
        .iter()
        .map(|s| {
            let master = edgejobs_core::webhook::master_key(s.expose());
            edgejobs_core::webhook::type_secret(&master, &origin, job_type)
        })
        .collect();
    let secret = secrets.first().cloned().unwrap_or_default();
    respond(200, &WebhookSecret { origin, job_type: job_type.to_owned(), secret, secrets })
}

/// `POST /v1/admin/reseal` with `{"shard": n, "cursor": "...", "limit": n}`: re-seals one
/// page of shard `n`'s stored header values (jobs after `cursor`, at most `limit`, default
/// [`RESEAL_PAGE`]; on the first page, without `cursor`, its schedules too) under the newest
/// `PAYLOAD_ENCRYPTION_KEYS` key. Call it for each shard with the `cursor` it answers until
/// `done`; then no stored value needs an older key (unless `unopenable` counted some).
/// Idempotent: values under the newest key are left alone.
pub async fn reseal(req: &mut Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "shard" | "cursor" | "limit")) {
        return Err(ApiError::field(k, "unknown field"));
    }
    let shard = match obj.get("shard").map(Value::as_u64) {
        Some(Some(n)) if n < u64::from(cfg.shard_count) => n as u16,
        Some(_) => {
            return Err(ApiError::field(
                "shard",
                format!("must be a shard number from 0 to {}", cfg.shard_count.saturating_sub(1)),
            ));
        }
        None => return Err(ApiError::field("shard", "is required (a shard number)")),
    };
    let cursor = match obj.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Some(c.clone())
        }
        Some(_) => return Err(ApiError::field("cursor", "must be the cursor a previous call answered")),
    };
    let limit = match obj.get("limit").map(Value::as_u64) {
        None => RESEAL_PAGE,
        Some(Some(n)) if (1..=u64::from(edgejobs_shard::reseal::MAX_PAGE)).contains(&n) => n as u32,
        Some(_) => {
            return Err(ApiError::field(
                "limit",
                format!("must be an integer from 1 to {}", edgejobs_shard::reseal::MAX_PAGE),
            ));
        }
    };
    let report = crate::shard::call(env, shard, Reseal { after: cursor, limit }).await?;
    #[derive(serde::Serialize)]
    struct Resealed {
        shard: u16,
        #[serde(flatten)]
        report: ResealReport,
    }
    respond(200, &Resealed { shard, report })
}

/// Jobs a re-seal call reads when it names no `limit`.
pub const RESEAL_PAGE: u32 = 50;

/// `POST /v1/admin/restore` with `{"backup": "<id>"}`: verifies, then replaces every
/// shard's jobs with the backup's. A backup that fails verification is refused (409).
pub async fn restore(req: &mut Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "backup") {
        return Err(ApiError::field(k, "unknown field"));
    }
    let raw = obj
        .get("backup")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field("backup", "is required (a backup id)"))?;
    let id = backup_id(raw)?;
    respond(200, &tasks::restore(env, cfg, &id).await?)
}
