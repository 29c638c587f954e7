//! `http.request`: one long HTTP call. Payload `{url, method?, headers?, body?}`; the body is
//! sent as JSON. 2xx completes; 408/429/5xx and network errors are retried (429 also pauses
//! the host for its Retry-After); other statuses are permanent. The URL (and each redirect)
//! must pass the outbound rules; sealed header values are opened here and nowhere else; the
//! answer is read up to the configured cap; errors name the URL without its query.

use edgejobs_core::outbound::{check_url, forbidden_header, redact_url};
use serde_json::{Value, json};

use super::{Handler, HandlerError, JobCtx, read_capped, retry_after, send_error};
use crate::outbound::{Outgoing, SendError};

#[derive(Debug, Clone, Copy)]
pub struct HttpRequest;

const KEPT: usize = 4096;

#[async_trait::async_trait]
impl Handler for HttpRequest {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        self.call(ctx, &ctx.job.payload).await
    }
}

impl HttpRequest {
    /// Makes one request of `http.request`'s payload form (`{url, method?, headers?, body?}`), for a workflow step or a handler of your own.
    pub async fn call(&self, ctx: &JobCtx, p: &Value) -> Result<Value, HandlerError> {
        let url = p.get("url").and_then(Value::as_str).unwrap_or_default();
        // The URL's form first (the host names the upstream); every hop, its addresses
        // included, is checked by the guard when sent.
        let parsed = check_url(url, &ctx.outbound.allow)
            .map_err(|e| HandlerError::Permanent(format!("payload.url {} refused: {e}", redact_url(url))))?;
        let host = parsed.host_str().unwrap_or("unknown").to_owned();
        let headers = edgejobs_core::seal::open_headers(p, ctx.job.id.as_str(), ctx.payload_keys.as_ref())
            .map_err(|e| HandlerError::Permanent(format!("payload.headers: {e}")))?;
        // Refused at enqueue; a job stored before that rule is refused here.
        if let Some((name, _)) = headers.iter().find(|(k, _)| forbidden_header(k)) {
            return Err(HandlerError::Permanent(format!("payload.headers: header {name:?} is not allowed")));
        }
        let method = p.get("method").and_then(Value::as_str).unwrap_or("POST").to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| HandlerError::Permanent("payload.method".into()))?;
        ctx.upstreams.acquire(&host, &ctx.metrics, &ctx.cancel).await;
        let system =
            [("x-edgejobs-job-id", ctx.job.id.to_string()), ("x-edgejobs-attempt", ctx.job.attempt.to_string())];
        let out = Outgoing {
            method,
            url,
            secret_headers: &headers,
            headers: &system,
            json: p.get("body"),
            deadline: ctx.deadline,
            trace: Some(&ctx.trace),
        };
        let resp = tokio::select! {
            r = ctx.outbound.send(&ctx.http, out) => match r {
                Ok(r) => r,
                Err(SendError::Refused(e)) => return Err(HandlerError::Permanent(e)),
                Err(SendError::Network(e)) => return Err(send_error(url, e)),
            },
            _ = ctx.cancel.cancelled() => return Err(HandlerError::Retryable("interrupted".into())),
        };
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let text = read_capped(resp, ctx.max_response_bytes).await;
        let kept: String = text.chars().take(KEPT).collect();
        match edgejobs_core::webhook::classify(status, None) {
            None => Ok(json!({ "status": status, "body": kept })),
            Some(_) if status == 429 => {
                ctx.upstreams.pause(&host, wait);
                Err(HandlerError::RetryAfter { after: wait, message: format!("{host} answered 429") })
            }
            Some(edgejobs_core::machine::Disposition::Permanent) => {
                Err(HandlerError::Permanent(format!("{host} answered {status}: {kept}")))
            }
            Some(_) => Err(HandlerError::Retryable(format!("{host} answered {status}"))),
        }
    }
}
