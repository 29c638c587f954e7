//! Request and response helpers shared by the routes: JSON bodies with limits, the error
//! body, auth, and structured JSON log lines.

use edgejobs_core::auth::{self, Scope};
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::Value;
use worker::{Request, Response, Result};

/// Largest request body accepted: a batch of 100 jobs can carry more than one payload's
/// 128 KiB, so the body limit is separate from the payload limit.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Writes one structured JSON log line.
pub fn log(level: &str, msg: &str, fields: Value) {
    let mut line = serde_json::json!({ "level": level, "msg": msg, "ts": edgejobs_core::time::format_rfc3339(crate::platform::now_ms()) });
    if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
        obj.extend(extra);
    }
    // wrangler dev at --log-level warn shows console.warn/error only; route by level.
    match level {
        "error" => worker::console_error!("{line}"),
        "warn" => worker::console_warn!("{line}"),
        _ => worker::console_log!("{line}"),
    }
}

pub fn json<T: Serialize>(status: u16, body: &T) -> Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

pub fn error(e: &ApiError) -> Result<Response> {
    json(e.status(), &e.body())
}

/// Reads a JSON body: 415 unless the content type is `application/json` (optionally with
/// `charset=utf-8`), 413 past `MAX_BODY_BYTES` (also for a chunked body without a length:
/// it is read in pieces and given up at the limit, never held whole), 400 `invalid_json`
/// when it does not parse (serde_json also refuses nesting deeper than 128).
pub async fn read_json(req: &mut Request) -> std::result::Result<Value, ApiError> {
    let ct = req.headers().get("content-type").ok().flatten().unwrap_or_default();
    if !edgejobs_core::wire::is_json_content_type(&ct) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as 'Content-Type: application/json' (charset utf-8 or none)",
        ));
    }
    if let Some(len) = req.headers().get("content-length").ok().flatten().and_then(|l| l.parse::<usize>().ok())
        && len > MAX_BODY_BYTES
    {
        return Err(too_large(len));
    }
    let bytes = read_capped(req).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}")))
}

/// The request body, read chunk by chunk up to `MAX_BODY_BYTES`.
pub async fn read_capped(req: &mut Request) -> std::result::Result<Vec<u8>, ApiError> {
    use futures_util::StreamExt as _;
    let unreadable = || ApiError::new(ErrorCode::InvalidJson, "could not read the request body");
    let mut stream = match req.stream() {
        Ok(s) => s,
        // No body at all.
        Err(_) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| unreadable())?;
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large(out.len() + chunk.len()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(len: usize) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("the body is {len} bytes; the limit is {MAX_BODY_BYTES}"))
}

/// Checks the request's bearer token against `scope`.
pub fn authorize(req: &Request, scope: Scope, cfg: &EdgeConfig) -> std::result::Result<auth::Principal, ApiError> {
    let header = req.headers().get("authorization").ok().flatten();
    auth::authorize(header.as_deref(), scope, cfg)
}

/// [`authorize`] for a request that may have come through a service binding acting for
/// `binding` (#31): a key in `Authorization` decides when there is one; without, the
/// binding's tenant does (see `auth::authorize_binding`).
pub fn authorize_as(
    req: &Request,
    scope: Scope,
    cfg: &EdgeConfig,
    binding: Option<&str>,
) -> std::result::Result<auth::Principal, ApiError> {
    let header = req.headers().get("authorization").ok().flatten();
    match (header, binding) {
        (None, Some(tenant)) => auth::authorize_binding(tenant, scope, cfg),
        (header, _) => auth::authorize(header.as_deref(), scope, cfg),
    }
}

/// The error a request gets when header values cannot be sealed (the runtime's random
/// source failed): logged here, answered 503 without details.
pub fn unsealable(e: String) -> edgejobs_core::ApiError {
    log("error", "header values could not be sealed", serde_json::json!({ "error": e }));
    edgejobs_core::ApiError::new(edgejobs_core::ErrorCode::Unavailable, "header values could not be sealed; retry")
}
