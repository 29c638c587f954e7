//! Edge-lane job handlers. A handler gets the job and returns a result or a failure that
//! says how to retry.

use edgejobs_core::Job;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Disposition;
use edgejobs_core::otlp;
use edgejobs_core::outbound::{check_url, redact_url};
use edgejobs_core::types::TypeDef;
use edgejobs_core::webhook;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use worker::{Env, Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response};

use crate::platform::now_ms;
use crate::telemetry;

/// Why an attempt failed, and whether to retry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: String,
    pub disposition: Disposition,
}

pub type Outcome = std::result::Result<Option<Value>, Failure>;

/// How much of a webhook's answer is kept in the job's result or error.
const KEPT_BODY_BYTES: usize = 2048;
/// How much of an answer is read at all; the rest is never pulled into memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Redirects followed, each checked like the first URL.
pub const MAX_REDIRECTS: usize = 5;

/// Runs the handler of an edge-lane job type.
/// A type declared in `JOB_TYPES` with a fixed `url` is delivered there, its whole payload
/// as the body, signed as a `webhook` job is; one with a `service` goes to that service
/// binding's Worker (#31).
pub async fn run(env: &Env, job: &Job, cfg: &EdgeConfig) -> Outcome {
    match job.job_type.as_str() {
        "noop" => Ok(Some(json!({ "ok": true }))),
        "webhook" => webhook(job, cfg).await,
        other => match cfg.types.get(other) {
            Some(t) if t.workflow => Err(Failure {
                error: format!("type {other:?} is a workflow; the queue consumer runs it with the workflow runner"),
                disposition: Disposition::Permanent,
            }),
            Some(TypeDef { service: Some(binding), .. }) => to_service(env, job, cfg, binding).await,
            Some(TypeDef { url: Some(url), .. }) => deliver(job, cfg, url, job.payload.to_string(), Vec::new()).await,
            _ => Err(Failure {
                error: format!("no edge handler for type {other:?}"),
                disposition: Disposition::Permanent,
            }),
        },
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

pub fn permanent(error: String) -> Failure {
    Failure { error, disposition: Disposition::Permanent }
}

/// `webhook`: POSTs `payload.body` (JSON; `null` when absent) to `payload.url` with the
/// job's headers (opened only here) and a Standard Webhooks signature for that receiver.
/// Every URL — the first and each redirect, at most [`MAX_REDIRECTS`] — must pass the
/// outbound check; the answer is read up to [`MAX_ANSWER_BYTES`]. The consumer bounds the
/// attempt with the job's timeout.
async fn webhook(job: &Job, cfg: &EdgeConfig) -> Outcome {
    let raw_url = job.payload["url"].as_str().unwrap_or_default();
    let extra = edgejobs_core::seal::open_headers(&job.payload, job.id.as_str(), Some(&cfg.payload_keys))
        .map_err(|e| permanent(format!("webhook headers: {e}")))?;
    // Refused at enqueue; a job stored before that rule is refused here.
    if let Some((name, _)) = extra.iter().find(|(k, _)| edgejobs_core::outbound::forbidden_header(k)) {
        return Err(permanent(format!("payload.headers: header {name:?} is not allowed")));
    }
    let body = job.payload.get("body").cloned().unwrap_or(Value::Null).to_string();
    deliver(job, cfg, raw_url, body, extra).await
}

/// POSTs `body` to `raw_url` with `extra` headers and the Standard Webhooks signature. The
/// `extra` headers (the user's, opened from their sealed values) go to `raw_url`'s origin
/// only: from the first redirect to another origin on, no hop gets them.
async fn deliver(job: &Job, cfg: &EdgeConfig, raw_url: &str, body: String, extra: Vec<(String, String)>) -> Outcome {
    let msg_id = webhook::message_id(job.id.as_str(), job.series_base);
    let (status, retry_after, text) = exchange(job, cfg, raw_url, body, extra, &msg_id, MAX_ANSWER_BYTES).await?;
    match webhook::classify(status, retry_after.as_deref()) {
        None => Ok(Some(json!({ "status": status, "body": truncate(&text) }))),
        Some(d) => Err(Failure { error: format!("webhook answered {status}: {}", truncate(&text)), disposition: d }),
    }
}

/// The headers every delivery of `job` carries, signed or not: JSON, who sends it, the
/// message id (stable across attempts, for de-duplication) and the job's id, attempt, type.
fn delivery_headers(job: &Job, msg_id: &str, agent: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("user-agent", agent.into()),
        (webhook::HEADER_ID, msg_id.into()),
        ("x-edgejobs-job-id", job.id.as_str().into()),
        ("x-edgejobs-attempt", job.attempt.to_string()),
        ("x-edgejobs-type", job.job_type.clone()),
    ]
}

/// Where a binding's deliveries are POSTed: the bound Worker sees this URL (a service
/// binding ignores the host; the path tells its router what came in).
pub const SERVICE_DELIVERY_URL: &str = "https://edgejobs.internal/deliveries";

/// POSTs a job of a `service` type to the Worker behind the service binding `binding`: the
/// payload as the body, the job's id, attempt and type and the delivery's message id (for
/// the receiver's de-duplication) as headers, no signature (nothing but that binding reaches
/// the Worker this way). Its answer is judged like a webhook's. A binding missing from
/// `wrangler.toml` is a deployment error an operator fixes, so it is retried.
async fn to_service(env: &Env, job: &Job, cfg: &EdgeConfig, binding: &str) -> Outcome {
    let fetcher = env.service(binding).map_err(|_| Failure {
        error: format!("no service binding {binding:?} in wrangler.toml ([[services]] binding = {binding:?})"),
        disposition: Disposition::Retryable,
    })?;
    let msg_id = webhook::message_id(job.id.as_str(), job.series_base);
    let headers = Headers::new();
    let mut ok = true;
    let target = url::Url::parse(SERVICE_DELIVERY_URL).map_err(|e| permanent(format!("delivery URL: {e}")))?;
    let span = telemetry::outbound(&cfg.tracing, job.trace.as_ref(), "POST", &target)
        .attr(otlp::keys::SERVICE_BINDING, binding.to_owned());
    let mut own = delivery_headers(job, &msg_id, "edgejobs-binding/1");
    own.extend(span.context().headers());
    for (k, v) in own {
        ok &= headers.set(k, &v).is_ok();
    }
    if !ok {
        return Err(permanent("the job's id or type is not a valid header value".into()));
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(job.payload.to_string().into()));
    let req = Request::new_with_init(SERVICE_DELIVERY_URL, &init)
        .map_err(|e| permanent(format!("invalid delivery request: {e}")))?;
    let resp = match fetcher.fetch_request(req).await {
        Ok(r) => r,
        Err(e) => {
            telemetry::end_outbound(&cfg.tracing, span, "POST", &target, None);
            return Err(Failure {
                error: format!("service binding {binding} failed: {e}"),
                disposition: Disposition::Retryable,
            });
        }
    };
    let status = resp.status_code();
    telemetry::end_outbound(&cfg.tracing, span, "POST", &target, Some(status));
    let retry_after = resp.headers().get("retry-after").ok().flatten();
    let text = read_capped(resp, KEPT_BODY_BYTES).await;
    match webhook::classify(status, retry_after.as_deref()) {
        None => Ok(Some(json!({ "status": status, "body": truncate(&text) }))),
        Some(d) => {
            Err(Failure { error: format!("service {binding} answered {status}: {}", truncate(&text)), disposition: d })
        }
    }
}

/// The signed POST of [`deliver`], answering the final status, its `Retry-After` and up to
/// `keep` bytes of its body (all of it is read up to [`MAX_ANSWER_BYTES`]).
pub async fn exchange(
    job: &Job,
    cfg: &EdgeConfig,
    raw_url: &str,
    body: String,
    extra: Vec<(String, String)>,
    msg_id: &str,
    keep: usize,
) -> std::result::Result<(u16, Option<String>, String), Failure> {
    let mut url = check_url(raw_url, &cfg.outbound_allow)
        .map_err(|e| permanent(format!("webhook URL {} refused: {e}", redact_url(raw_url))))?;
    let mut body = Some(body);
    let masters: Vec<Vec<u8>> = cfg.webhook_secret.iter().map(|s| webhook::master_key(s.expose())).collect();
    let mut method = Method::Post;
    let home = url.origin();
    let mut at_home = true;
    for hop in 0..=MAX_REDIRECTS {
        at_home &= url.origin() == home;
        let origin = url.origin().ascii_serialization();
        let timestamp = now_ms() / 1000;
        // Signed with the type's key for this origin (a `webhook` job cannot pass for a
        // declared type), once per configured secret (a rotation's overlap).
        let signature =
            webhook::sign_all(&masters, &origin, &job.job_type, msg_id, timestamp, body.as_deref().unwrap_or(""));
        let headers = Headers::new();
        let mut ok = true;
        for (k, v) in extra.iter().filter(|_| at_home) {
            ok &= headers.set(k, v).is_ok();
        }
        // Each hop is a client span under the attempt (#32), whose context the receiver gets.
        let span = telemetry::outbound(&cfg.tracing, job.trace.as_ref(), method.as_ref(), &url);
        let mut own = delivery_headers(job, msg_id, "edgejobs-webhook/1");
        own.extend(span.context().headers());
        own.extend([(webhook::HEADER_TIMESTAMP, timestamp.to_string()), (webhook::HEADER_SIGNATURE, signature)]);
        for (k, v) in own {
            ok &= headers.set(k, &v).is_ok();
        }
        if !ok {
            return Err(permanent("payload.headers holds a header name or value that HTTP does not allow".into()));
        }
        let mut init = RequestInit::new();
        init.with_method(method.clone())
            .with_headers(headers)
            .with_redirect(RequestRedirect::Manual)
            .with_body(body.clone().map(Into::into));
        let req = Request::new_with_init(url.as_str(), &init)
            .map_err(|e| permanent(format!("invalid webhook request: {e}")))?;
        let resp = match Fetch::Request(req).send().await {
            Ok(r) => r,
            Err(e) => {
                telemetry::end_outbound(&cfg.tracing, span, method.as_ref(), &url, None);
                return Err(Failure {
                    error: format!("webhook network error calling {}: {e}", redact_url(url.as_str())),
                    disposition: Disposition::Retryable,
                });
            }
        };
        let status = resp.status_code();
        telemetry::end_outbound(&cfg.tracing, span, method.as_ref(), &url, Some(status));
        if (300..400).contains(&status)
            && let Some(location) = resp.headers().get("location").ok().flatten()
        {
            if hop == MAX_REDIRECTS {
                return Err(permanent(format!("webhook redirected more than {MAX_REDIRECTS} times")));
            }
            let next = url.join(&location).map_err(|_| permanent("webhook redirect to an invalid URL".into()))?;
            url = check_url(next.as_str(), &cfg.outbound_allow)
                .map_err(|e| permanent(format!("webhook redirect to {} refused: {e}", redact_url(next.as_str()))))?;
            // 307 and 308 repeat the request; the others continue with a GET (as browsers do).
            if !matches!(status, 307 | 308) {
                method = Method::Get;
                body = None;
            }
            continue;
        }
        let retry_after = resp.headers().get("retry-after").ok().flatten();
        let text = read_capped(resp, keep.min(MAX_ANSWER_BYTES)).await;
        return Ok((status, retry_after, text));
    }
    Err(permanent(format!("webhook redirected more than {MAX_REDIRECTS} times")))
}

/// An answer's body as text, read chunk by chunk and cut at `cap` bytes.
async fn read_capped(mut resp: Response, cap: usize) -> String {
    let mut out: Vec<u8> = Vec::new();
    if let Ok(mut stream) = resp.stream() {
        while let Some(Ok(chunk)) = stream.next().await {
            let room = cap.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= cap {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
