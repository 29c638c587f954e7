//! Live results (#30): `GET /v1/jobs/{id}/events` (a job's stream over SSE or a WebSocket),
//! `GET /v1/events?tag=` (many jobs' states over SSE), the long poll of
//! `GET /v1/jobs/{id}?wait=30s`, and read tokens for browsers (`POST /v1/jobs/{id}/token`,
//! `POST /v1/tokens`).
//!
//! Who may see what: these read routes answer a `jobs` key (its tenant's jobs), an admin key
//! (all) or a read token (the one job, or the jobs of the one tag, it names, of its
//! tenant). A job a caller may not see is answered exactly as a missing one (404).

use edgejobs_api::ReadToken;
use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::Get;
use edgejobs_core::tenant::Tenant;
use edgejobs_core::token::{self, Grant};
use edgejobs_core::{ApiError, ErrorCode, JobId};
use serde::Deserialize;
use worker::{Env, Headers, Method, Request, RequestInit, Response};

use super::jobs::{Out, parse_id, respond};
use crate::config::SHARD_BINDING;
use crate::{http, shard, view};

/// Who a read route answers: a key, or a read token and what it grants.
#[derive(Debug)]
pub struct Reader<'a> {
    pub who: &'a Principal,
    pub grant: Option<&'a Grant>,
}

impl Reader<'_> {
    /// The tenant whose jobs the reader sees (`None`: an admin, all).
    fn tenant(&self) -> Option<Tenant> {
        match self.grant {
            Some(g) => Some(g.tenant.clone()),
            None => self.who.tenant().cloned(),
        }
    }

    /// Refuses a job the reader's token does not cover, as a missing job.
    fn check(&self, job: &edgejobs_core::Job) -> Result<(), ApiError> {
        match self.grant {
            Some(g) if !g.covers(&job.id, &job.tenant, &job.tags) => Err(not_found(&job.id)),
            _ => Ok(()),
        }
    }
}

fn not_found(id: &JobId) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("no job with id {id}"))
}

/// The read token a request carries: `?token=` (EventSource cannot set headers) or
/// `Authorization: Bearer ejr_...`.
pub fn presented_token(req: &Request) -> Option<String> {
    let from_query =
        req.url().ok().and_then(|u| u.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()));
    let from_header = req
        .headers()
        .get("authorization")
        .ok()
        .flatten()
        .and_then(|h| h.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
        .filter(|t| token::is_token(t));
    from_query.or(from_header)
}

/// `?name=` of the request's URL.
fn query(req: &Request, name: &str) -> Option<String> {
    req.url().ok().and_then(|u| u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()))
}

/// `GET /v1/jobs/{id}`, with `?wait=30s` a long poll: answered as soon as the job is final,
/// or when the wait (at most 60 s) is over, with the job as it is then.
pub async fn get(req: &Request, env: &Env, cfg: &EdgeConfig, r: Reader<'_>, raw_id: &str) -> Out {
    let id = parse_id(raw_id, cfg)?;
    let wait_ms = match query(req, "wait") {
        None => 0,
        Some(w) => match edgejobs_core::fields::parse_duration(&serde_json::Value::String(w)) {
            Some(ms) if ms <= edgejobs_core::live::MAX_WAIT_MS => ms,
            _ => return Err(ApiError::field("wait", "must be a duration from 0s to 60s, such as \"30s\"")),
        },
    };
    // A token for a tag is checked against the job first: a long poll must not wait on a
    // job its bearer may not see.
    let job = shard::call(env, id.shard(), Get { id: id.clone(), tenant: r.tenant(), wait_ms: 0 }).await?;
    r.check(&job)?;
    let job = if wait_ms > 0 && !job.state.is_finished() {
        shard::call(env, id.shard(), Get { id, tenant: r.tenant(), wait_ms }).await?
    } else {
        job
    };
    respond(200, &view::job(job))
}

/// `GET /v1/jobs/{id}/events`: the job's chunks after `Last-Event-ID` (or `?after=`) and its
/// states as they change, served by its shard's object: SSE, or a WebSocket when the
/// request asks to upgrade. The stream ends once the job is final.
pub async fn job_events(req: &Request, env: &Env, cfg: &EdgeConfig, r: Reader<'_>, raw_id: &str) -> Out {
    let id = parse_id(raw_id, cfg)?;
    if let Some(g) = r.grant
        && g.job.as_ref() != Some(&id)
    {
        // A tag token: the job must carry the tag (and be the token's tenant's).
        let job = shard::call(env, id.shard(), Get { id: id.clone(), tenant: r.tenant(), wait_ms: 0 }).await?;
        r.check(&job)?;
    }
    let last = req.headers().get("last-event-id").ok().flatten().or_else(|| query(req, "after"));
    let after = edgejobs_core::live::parse_last_id(last.as_deref());
    let mut q = format!("job={id}&after={after}");
    if let Some(t) = r.tenant() {
        q.push_str(&format!("&tenant={t}"));
    }
    if let Some(o) = cfg.allowed_origins.allow(origin(req).as_deref()) {
        q.push_str(&format!("&origin={}", encode(&o)));
    }
    forward(env, id.shard(), &q, is_upgrade(req)).await
}

/// `GET /v1/events?tag=`: the states of many jobs as they change (those with the tag; a key
/// may leave the tag out for all its tenant's jobs), over SSE. Every shard holds some, so
/// the stream merges one subscription per shard.
pub async fn many_events(req: &Request, env: &Env, cfg: &EdgeConfig, r: Reader<'_>) -> Out {
    let tag = query(req, "tag");
    if let Some(t) = &tag
        && !edgejobs_core::fields::is_tag(t)
    {
        return Err(ApiError::field("tag", "not a tag"));
    }
    if let Some(g) = r.grant
        && (g.tag.is_none() || g.tag != tag)
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "this read token does not grant this tag"));
    }
    if is_upgrade(req) {
        return Err(ApiError::field("upgrade", "subscriptions to many jobs are served over SSE only"));
    }
    let mut q = "many=1".to_owned();
    if let Some(t) = &tag {
        q.push_str(&format!("&tag={}", encode(t)));
    }
    if let Some(t) = r.tenant() {
        q.push_str(&format!("&tenant={t}"));
    }
    let mut bodies = Vec::new();
    for shard in 0..cfg.shard_count {
        let resp = forward(env, shard, &q, false).await?;
        if resp.status_code() != 200 {
            return Ok(resp);
        }
        let mut resp = resp;
        bodies.push(resp.stream().map_err(|e| unavailable(&e.to_string()))?);
    }
    // Each shard's stream starts with its own `retry:` line and keepalives; merged, they
    // interleave whole events (each chunk of a shard's body is one or more whole events).
    let merged = futures_util::stream::select_all(bodies);
    let mut resp = Response::from_stream(merged).map_err(|e| unavailable(&e.to_string()))?;
    let h = resp.headers_mut();
    let _ = h.set("content-type", "text/event-stream; charset=utf-8");
    let _ = h.set("cache-control", "no-cache, no-transform");
    if let Some(o) = cfg.allowed_origins.allow(origin(req).as_deref()) {
        let _ = h.set("access-control-allow-origin", &o);
        let _ = h.set("vary", "origin");
    }
    Ok(resp)
}

fn unavailable(e: &str) -> ApiError {
    http::log("error", "a live subscription failed", serde_json::json!({ "error": e }));
    ApiError::new(ErrorCode::Unavailable, "the job store is temporarily unavailable; retry")
}

fn origin(req: &Request) -> Option<String> {
    req.headers().get("origin").ok().flatten()
}

fn is_upgrade(req: &Request) -> bool {
    req.headers().get("upgrade").ok().flatten().is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Hands a subscription to shard `shard`'s object and returns its response as it is (an SSE
/// stream, a WebSocket, or an error as JSON).
async fn forward(env: &Env, shard: u16, query: &str, upgrade: bool) -> Out {
    crate::counters::add(edgejobs_core::stats::Metric::DoRequestsTotal, &[("op", "live")], 1.0);
    let stub = env
        .durable_object(SHARD_BINDING)
        .and_then(|ns| ns.get_by_name(&format!("shard-{shard}")))
        .map_err(|e| unavailable(&e.to_string()))?;
    let headers = Headers::new();
    if upgrade {
        let _ = headers.set("upgrade", "websocket");
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let req = Request::new_with_init(&format!("https://shard/live?{query}"), &init)
        .map_err(|e| unavailable(&e.to_string()))?;
    let resp = stub.fetch_with_request(req).await.map_err(|e| unavailable(&e.to_string()))?;
    if resp.status_code() == 200
        && resp.headers().get("content-type").ok().flatten().is_some_and(|c| c.contains("json"))
    {
        // The object answers a refusal as a JSON `Result` (`{"Err": ...}`) with 200.
        let mut resp = resp;
        let body: Result<serde_json::Value, ApiError> = resp.json().await.map_err(|e| unavailable(&e.to_string()))?;
        return Err(body.err().unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "malformed shard answer")));
    }
    Ok(resp)
}

/// The body of a token request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// How long the token lives (`"15m"`; default 15 minutes, at most 24 hours).
    #[serde(default)]
    ttl: Option<serde_json::Value>,
    /// `POST /v1/tokens` only: the tag whose jobs the token reads.
    #[serde(default)]
    tag: Option<String>,
    /// `POST /v1/tokens` with an admin key: the tenant whose jobs of that tag it reads.
    #[serde(default)]
    tenant: Option<String>,
}

async fn token_request(req: &mut Request) -> Result<TokenRequest, ApiError> {
    let bytes = http::read_capped(req).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(TokenRequest::default());
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}")))?;
    // Only an object: serde would also read a struct from an array (`[null, null]`).
    if !value.is_object() {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::field("body", format!("{e}")))
}

fn ttl_of(r: &TokenRequest) -> Result<Option<u64>, ApiError> {
    let bad = || ApiError::field("ttl", "must be a duration from 1s to 24h, such as \"15m\"");
    match &r.ttl {
        None | Some(serde_json::Value::Null) => Ok(None),
        // A string only (a bare number would read as milliseconds), of at least a second.
        Some(v @ serde_json::Value::String(_)) => match edgejobs_core::fields::parse_duration(v) {
            Some(ms) if ms >= 1000 => Ok(Some(ms)),
            _ => Err(bad()),
        },
        Some(_) => Err(bad()),
    }
}

/// `POST /v1/jobs/{id}/token` (jobs scope): a read token for one job the key sees.
pub async fn job_token(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal, raw_id: &str) -> Out {
    let body = token_request(req).await?;
    if body.tag.is_some() || body.tenant.is_some() {
        return Err(ApiError::field("tag", "a job's token names no tag or tenant: use POST /v1/tokens"));
    }
    let id = parse_id(raw_id, cfg)?;
    let job = shard::call(env, id.shard(), Get { id, tenant: who.tenant().cloned(), wait_ms: 0 }).await?;
    let exp = token::expiry(crate::platform::now_ms(), ttl_of(&body)?)?;
    mint(Grant { tenant: job.tenant, job: Some(job.id), tag: None, exp }, cfg)
}

/// `POST /v1/tokens` (jobs scope): a read token for the jobs of one tag (a dashboard of many
/// jobs): `{"tag": "batch-7", "ttl": "1h"}`; an admin key names the `tenant`.
pub async fn tag_token(req: &mut Request, cfg: &EdgeConfig, who: &Principal) -> Out {
    let body = token_request(req).await?;
    let tag = body.tag.clone().ok_or_else(|| ApiError::field("tag", "required"))?;
    if !edgejobs_core::fields::is_tag(&tag) {
        return Err(ApiError::field("tag", "not a tag"));
    }
    let asked = body.tenant.as_deref().map(|t| Tenant::from_field("tenant", t)).transpose()?;
    let tenant = who.sees.owner_of_new(asked)?;
    let exp = token::expiry(crate::platform::now_ms(), ttl_of(&body)?)?;
    mint(Grant { tenant, job: None, tag: Some(tag), exp }, cfg)
}

/// Signs `grant` and answers it (201).
fn mint(grant: Grant, cfg: &EdgeConfig) -> Out {
    let token = token::issue(&grant, &cfg.webhook_secret)?;
    respond(
        201,
        &ReadToken {
            token,
            expires_at: edgejobs_core::time::format_rfc3339(grant.exp),
            job: grant.job.map(|j| j.to_string()),
            tag: grant.tag,
            tenant: grant.tenant.to_string(),
        },
    )
}

/// The answer to a CORS preflight of a read route.
pub fn preflight(req: &Request, cfg: &EdgeConfig) -> worker::Result<Response> {
    let mut resp = Response::empty()?.with_status(204);
    if let Some(o) = cfg.allowed_origins.allow(origin(req).as_deref()) {
        let h = resp.headers_mut();
        h.set("access-control-allow-origin", &o)?;
        h.set("access-control-allow-methods", "GET")?;
        h.set("access-control-allow-headers", "authorization, last-event-id")?;
        h.set("access-control-max-age", "600")?;
        h.set("vary", "origin")?;
    }
    Ok(resp)
}

/// Adds the CORS origin to a read route's answer (an error's too: a browser must be able to
/// read why it was refused).
pub fn with_cors(mut resp: Response, req_origin: Option<&str>, cfg: &EdgeConfig) -> Response {
    if let Some(o) = cfg.allowed_origins.allow(req_origin)
        && resp.headers().get("access-control-allow-origin").ok().flatten().is_none()
    {
        let _ = resp.headers_mut().set("access-control-allow-origin", &o);
        let _ = resp.headers_mut().set("vary", "origin");
    }
    resp
}

/// The request's `Origin`, for [`with_cors`].
pub fn request_origin(req: &Request) -> Option<String> {
    origin(req)
}
