//! Edge-lane job handlers. A handler gets the job and returns a result or a failure that
//! says how to retry.

use edgejobs_core::Job;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Disposition;
use edgejobs_core::webhook::{self, SIGNATURE_HEADER};
use serde_json::{Value, json};
use worker::{Fetch, Headers, Method, Request, RequestInit};

use crate::platform::now_ms;

/// Why an attempt failed, and whether to retry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: String,
    pub disposition: Disposition,
}

pub type Outcome = std::result::Result<Option<Value>, Failure>;

/// How much of a webhook's answer is kept in the job's result or error.
const KEPT_BODY_BYTES: usize = 2048;

/// Runs the handler of an edge-lane job type.
pub async fn run(job: &Job, cfg: &EdgeConfig) -> Outcome {
    match job.job_type.as_str() {
        "noop" => Ok(Some(json!({ "ok": true }))),
        "webhook" => webhook(job, cfg).await,
        other => {
            Err(Failure { error: format!("no edge handler for type {other:?}"), disposition: Disposition::Permanent })
        }
    }
}

fn truncate(s: &str) -> &str {
    if s.len() <= KEPT_BODY_BYTES {
        return s;
    }
    let mut end = KEPT_BODY_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `webhook`: POSTs `payload.body` (JSON; `null` when absent) to `payload.url` with the
/// job's headers, a signature, the job id and the attempt number. The consumer bounds it
/// with the job's timeout.
async fn webhook(job: &Job, cfg: &EdgeConfig) -> Outcome {
    let url = job.payload["url"].as_str().unwrap_or_default();
    let body = job.payload.get("body").cloned().unwrap_or(Value::Null).to_string();
    let fail = |error: String, disposition| Err(Failure { error, disposition });
    let headers = Headers::new();
    let set = |k: &str, v: &str| headers.set(k, v).is_ok();
    let mut ok = true;
    if let Some(extra) = job.payload.get("headers").and_then(Value::as_object) {
        for (k, v) in extra {
            ok &= set(k, v.as_str().unwrap_or_default());
        }
    }
    ok &= set("content-type", "application/json");
    ok &= set("user-agent", "edgejobs-webhook/1");
    ok &= set("x-edgejobs-job-id", job.id.as_str());
    ok &= set("x-edgejobs-attempt", &job.attempt.to_string());
    ok &= set(SIGNATURE_HEADER, &webhook::signature(cfg.webhook_secret.expose(), now_ms() / 1000, &body));
    if !ok {
        return fail(
            "payload.headers holds a header name or value that HTTP does not allow".into(),
            Disposition::Permanent,
        );
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let req = match Request::new_with_init(url, &init) {
        Ok(r) => r,
        Err(e) => return fail(format!("invalid webhook request: {e}"), Disposition::Permanent),
    };
    let mut resp = match Fetch::Request(req).send().await {
        Ok(r) => r,
        Err(e) => return fail(format!("webhook network error: {e}"), Disposition::Retryable),
    };
    let status = resp.status_code();
    let retry_after = resp.headers().get("retry-after").ok().flatten();
    let text = resp.text().await.unwrap_or_default();
    match webhook::classify(status, retry_after.as_deref()) {
        None => Ok(Some(json!({ "status": status, "body": truncate(&text) }))),
        Some(d) => fail(format!("webhook answered {status}: {}", truncate(&text)), d),
    }
}
