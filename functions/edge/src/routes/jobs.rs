//! The job API: enqueue, read.

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::spec::parse_spec;
use edgejobs_core::{ApiError, ErrorCode, JobId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use worker::{Env, Request, Response};

use crate::http;
use crate::platform::{now_ms, random_u64};
use crate::shard;

type Out = std::result::Result<Response, ApiError>;

/// Picks the shard of a new job: from the idempotency key when there is one (so every
/// request with that key meets in one shard, which serializes them), else at random.
pub fn shard_for(key: Option<&str>, shard_count: u16) -> u16 {
    match key {
        Some(k) => {
            let d = Sha256::digest(k.as_bytes());
            (u16::from_be_bytes([d[0], d[1]])) % shard_count
        }
        None => (random_u64() % shard_count as u64) as u16,
    }
}

/// Creates one job from a parsed body; returns the status (201 new, 200 existing) and job.
pub async fn create_one(env: &Env, cfg: &EdgeConfig, body: &Value) -> std::result::Result<(u16, Value), ApiError> {
    let now = now_ms();
    let spec = parse_spec(body, now)?;
    let shard = shard_for(spec.idempotency_key.as_deref(), cfg.shard_count);
    let id = JobId::new(shard, now, random_u64());
    let (job, _effect) = spec.into_job(id, now);
    let (status, job) = shard::call_job(
        env,
        shard,
        "create",
        &json!({ "job": job, "idempotency_window_ms": cfg.idempotency_window_ms }),
    )
    .await?;
    Ok((status, serde_json::to_value(job).unwrap_or(Value::Null)))
}

/// `POST /v1/jobs`
pub async fn create(req: &mut Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let (status, job) = create_one(env, cfg, &body).await?;
    http::json(status, &job).map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed"))
}

/// Parses a job id from a path, answering 404 `job_not_found` for anything that is not one
/// (a malformed id cannot name an existing job).
pub fn parse_id(raw: &str) -> std::result::Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::new(ErrorCode::JobNotFound, format!("no job with id {raw:?}")))
}

/// `GET /v1/jobs/{id}`
pub async fn get(env: &Env, raw_id: &str) -> Out {
    let id = parse_id(raw_id)?;
    let (_, job) = shard::call_job(env, id.shard(), "get", &json!({ "id": id })).await?;
    http::json(200, &job).map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed"))
}
