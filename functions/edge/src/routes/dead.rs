//! The dead-letter set: jobs whose attempts ran out or that failed permanently.

use edgejobs_api::ReplayResult;
use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::ReplayDead;
use edgejobs_core::time::parse_rfc3339_bound;
use edgejobs_core::wire::parse_list_params;
use edgejobs_core::{ApiError, ErrorCode, JobId, JobState};
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{Out, fan_out_list, query_pairs, respond};
use crate::http;
use crate::shard;

/// Largest number of jobs one bulk replay may requeue.
pub const MAX_REPLAY: u64 = 1000;

/// `GET /v1/dead?type=&from=&to=&limit=&cursor=` (`from`/`to`: when the job died).
pub async fn list(req: &Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let pairs = query_pairs(req)?;
    let mut q = parse_list_params(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["type", "tag", "from", "to", "limit", "cursor", "include", "tenant"],
    )?;
    q.state = Some(JobState::Dead);
    fan_out_list(env, cfg, who, q).await
}

/// `POST /v1/dead/replay` with `{"type"?, "tag"?, "tenant"?, "from"?, "to"?, "limit"?}` (admin scope):
/// requeues up to `limit` (default 100, at most 1000) dead jobs as new attempt series.
pub async fn replay(req: &mut Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !["type", "tag", "from", "to", "limit", "tenant"].contains(&k.as_str())) {
        return Err(ApiError::field(k, "unknown field"));
    }
    let time = |k: &str| -> Result<Option<u64>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                parse_rfc3339_bound(s).map(Some).ok_or_else(|| ApiError::field(k, "must be an RFC 3339 timestamp"))
            }
            Some(_) => Err(ApiError::field(k, "must be an RFC 3339 timestamp string")),
        }
    };
    let (from_ms, to_ms) = (time("from")?, time("to")?);
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && f > t
    {
        return Err(ApiError::field("from", "must not be later than to"));
    }
    let string = |k: &str| match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::field(k, "must be a string")),
    };
    let (job_type, tag) = (string("type")?, string("tag")?);
    if tag.as_deref().is_some_and(|t| !edgejobs_core::fields::is_tag(t)) {
        return Err(ApiError::field("tag", edgejobs_core::fields::TAG_RULE));
    }
    let tenant = string("tenant")?.map(|t| edgejobs_core::tenant::Tenant::from_field("tenant", &t)).transpose()?;
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => 100,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_REPLAY).contains(n))
            .ok_or_else(|| ApiError::field("limit", format!("must be an integer from 1 to {MAX_REPLAY}")))?,
    };
    let mut remaining = limit;
    let mut ids: Vec<JobId> = Vec::new();
    for s in 0..cfg.shard_count {
        if remaining == 0 {
            break;
        }
        let replay = ReplayDead {
            job_type: job_type.clone(),
            tag: tag.clone(),
            from_ms,
            to_ms,
            limit: remaining as u32,
            tenant: tenant.clone(),
        };
        let got = shard::call(env, s, replay).await?;
        remaining = remaining.saturating_sub(got.len() as u64);
        ids.extend(got);
    }
    let ids: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    respond(200, &ReplayResult { replayed: ids.len(), ids })
}
