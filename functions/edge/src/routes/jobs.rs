//! The job API: enqueue (one or a batch), read, list, cancel, retry.

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::ratelimit::Decision;
use edgejobs_core::spec::parse_spec;
use edgejobs_core::wire::{ListQuery, merge_pages, parse_list_params};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId};
use futures_util::future::join_all;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use worker::{Env, Request, Response};

use crate::http;
use crate::platform::{now_ms, random_u64};
use crate::ratelimit;
use crate::shard;

pub type Out = std::result::Result<Response, ApiError>;

/// Largest batch accepted by `POST /v1/jobs/batch`.
pub const MAX_BATCH: usize = 100;

pub fn respond(status: u16, body: &impl serde::Serialize) -> Out {
    http::json(status, body).map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed"))
}

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

/// A validated job, with its shard, not yet stored.
#[derive(Debug)]
pub struct Prepared {
    shard: u16,
    job: Job,
}

/// Validates one job spec and gives it an id.
pub fn prepare(cfg: &EdgeConfig, body: &Value) -> std::result::Result<Prepared, ApiError> {
    let now = now_ms();
    let spec = parse_spec(body, now)?;
    let shard = shard_for(spec.idempotency_key.as_deref(), cfg.shard_count);
    let id = JobId::new(shard, now, random_u64());
    Ok(Prepared { shard, job: spec.into_job(id, now).0 })
}

/// Stores a prepared job; returns the status (201 new, 200 existing) and the job.
pub async fn persist(env: &Env, cfg: &EdgeConfig, p: Prepared) -> std::result::Result<(u16, Job), ApiError> {
    shard::call_job(
        env,
        p.shard,
        "create",
        &json!({ "job": p.job, "idempotency_window_ms": cfg.idempotency_window_ms }),
    )
    .await
}

/// Applies the rate limit for `cost` jobs: `Err(response)` is the 429 (or the 503 when the
/// limiter fails closed), `Ok(decision)` the headers to add.
async fn limit(cfg: &EdgeConfig, who: &Principal, cost: u32) -> std::result::Result<Option<Decision>, Out> {
    match ratelimit::admit(cfg, who, cost).await {
        Ok(Some(d)) if !d.allowed => {
            Err(ratelimit::refusal(&d).map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed")))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(Err(e)),
    }
}

fn with_limit_headers(resp: Out, d: Option<Decision>) -> Out {
    let mut resp = resp?;
    if let Some(d) = d {
        ratelimit::headers(&mut resp, &d);
    }
    Ok(resp)
}

/// `POST /v1/jobs`
pub async fn create(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let body = http::read_json(req).await?;
    let prepared = prepare(cfg, &body)?;
    let decision = match limit(cfg, who, 1).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let (status, job) = persist(env, cfg, prepared).await?;
    with_limit_headers(respond(status, &job), decision)
}

/// `POST /v1/jobs/batch` with `{"jobs":[...]}` (1 to 100): every item is validated and
/// created on its own and answered in order with `{"status":201,"job":{...}}` or
/// `{"status":400,"error":{...}}`. A malformed envelope creates nothing. The valid items
/// count against the rate limit together; over it, nothing is created.
pub async fn batch(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "jobs") {
        return Err(ApiError::field(k, "unknown field"));
    }
    let items = match obj.get("jobs") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH => items,
        _ => return Err(ApiError::field("jobs", format!("must be an array of 1 to {MAX_BATCH} job specs"))),
    };
    let prepared: Vec<std::result::Result<Prepared, ApiError>> = items.iter().map(|i| prepare(cfg, i)).collect();
    let valid = prepared.iter().filter(|p| p.is_ok()).count() as u32;
    let decision = if valid > 0 {
        match limit(cfg, who, valid).await {
            Ok(d) => d,
            Err(refused) => return refused,
        }
    } else {
        None
    };
    let results = join_all(prepared.into_iter().map(|p| async move {
        match p {
            Ok(p) => persist(env, cfg, p).await,
            Err(e) => Err(e),
        }
    }))
    .await;
    let out: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok((status, job)) => json!({ "status": status, "job": job }),
            Err(e) => json!({ "status": e.status(), "error": e }),
        })
        .collect();
    with_limit_headers(respond(200, &json!({ "results": out })), decision)
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
    respond(200, &job)
}

async fn user_event(env: &Env, raw_id: &str, event: Event) -> Out {
    let id = parse_id(raw_id)?;
    let (_, job) = shard::call_job(env, id.shard(), "event", &json!({ "id": id, "event": event })).await?;
    respond(200, &job)
}

/// `POST /v1/jobs/{id}/cancel`: a queued or scheduled job is cancelled at once; an active
/// job is marked, and the report of its running attempt is refused.
pub async fn cancel(env: &Env, raw_id: &str) -> Out {
    user_event(env, raw_id, Event::Cancel).await
}

/// `POST /v1/jobs/{id}/retry`: replays a dead job as a new attempt series.
pub async fn retry(env: &Env, raw_id: &str) -> Out {
    user_event(env, raw_id, Event::Replay).await
}

/// Runs a listing over every shard and merges the pages, newest first.
pub async fn fan_out_list(env: &Env, cfg: &EdgeConfig, q: ListQuery) -> Out {
    let limit = q.limit;
    let per_shard = ListQuery { limit: limit + 1, ..q };
    let body = serde_json::to_value(&per_shard).map_err(|_| ApiError::new(ErrorCode::Internal, "query encoding"))?;
    let calls = (0..cfg.shard_count).map(|s| shard::call(env, s, "list", &body));
    let mut pages = Vec::with_capacity(cfg.shard_count as usize);
    for r in join_all(calls).await {
        let (status, v) = r?;
        if status >= 400 {
            return Err(
                ApiError::from_body(&v).unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "shard list failed"))
            );
        }
        let jobs: Vec<Job> = serde_json::from_value(v["jobs"].clone())
            .map_err(|_| ApiError::new(ErrorCode::Internal, "malformed shard listing"))?;
        pages.push(jobs);
    }
    let (jobs, next) = merge_pages(pages, limit);
    respond(200, &json!({ "jobs": jobs, "next_cursor": next.map(|c| c.encode()) }))
}

/// Query pairs of a request, decoded.
pub fn query_pairs(req: &Request) -> std::result::Result<Vec<(String, String)>, ApiError> {
    let url = req.url().map_err(|_| ApiError::new(ErrorCode::InvalidField, "malformed URL"))?;
    Ok(url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
}

/// `GET /v1/jobs?state=&type=&tag=&limit=&cursor=`
pub async fn list(req: &Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let pairs = query_pairs(req)?;
    let q = parse_list_params(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["state", "type", "tag", "limit", "cursor"],
    )?;
    fan_out_list(env, cfg, q).await
}
