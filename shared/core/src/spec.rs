//! Job specs: the registry of job types and the validation of an enqueue request into a new
//! [`Job`]. Every problem is reported as an [`ApiError`] naming the field; nothing is
//! silently dropped (unknown fields are refused, so a typo never goes unnoticed).

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::job::{Job, JobState, Lane};
use crate::machine::Effect;
use crate::retry::Backoff;

pub use crate::fields::{MAX_ATTEMPTS_LIMIT, MAX_EDGE_TIMEOUT_MS, MAX_NATIVE_TIMEOUT_MS, MAX_TAGS, parse_duration};
use crate::fields::{duration_field, parse_backoff};

/// Largest serialized payload: the Cloudflare Queues message limit.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Largest serialized `metadata`.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Longest accepted delay or distance of `run_at` into the future: 365 days.
pub const MAX_DELAY_MS: u64 = 365 * 86_400_000;

use crate::callbacks::Which;

mod callback_spec;
pub use crate::types::TypeDef as JobType;
use crate::types::Types;
pub use callback_spec::{CallbackSpec, parse_callback};

/// A validated enqueue request, before it has an id.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub job_type: JobType,
    pub payload: Value,
    pub idempotency_key: Option<String>,
    /// Absolute time (ms) before which the job must not run; `None` means now.
    pub run_at: Option<u64>,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    pub tags: Vec<String>,
    pub metadata: Map<String, Value>,
    /// The tenant named in the body (`tenant`, for admin keys and schedules); the router
    /// decides the job's owner from it and the caller's key.
    pub tenant: Option<crate::tenant::Tenant>,
    /// Flow control (#28): the job's own fields over its type's, keys not yet resolved
    /// (the router resolves them once the tenant is known: [`crate::flow::resolve`]).
    pub flow: crate::flow::FlowSpec,
    /// Completion callbacks (#30): enqueued when the job completes, or dies
    /// ([`crate::callbacks`]). Only an enqueue's own job has them ([`parse_enqueue_unchecked`]).
    pub on_complete: Option<Box<CallbackSpec>>,
    pub on_fail: Option<Box<CallbackSpec>>,
}

impl JobSpec {
    /// The spec's callbacks, `on_complete` first.
    pub fn callbacks(&self) -> impl Iterator<Item = &CallbackSpec> {
        self.on_complete.iter().chain(self.on_fail.iter()).map(|c| &**c)
    }
}

/// Idempotency keys and tags in this namespace belong to schedules (`schedule:{name}:{tick}`
/// and `schedule:{name}`): a user who could take one could suppress a schedule's run.
pub const SCHEDULE_NAMESPACE: &str = "schedule:";

/// Refuses what only a schedule's run may carry: an idempotency key or a tag in the
/// schedules' namespace. Checked for every job a caller sends (not for schedule runs).
pub fn check_user_namespace(spec: &JobSpec) -> Result<(), ApiError> {
    for c in spec.callbacks() {
        check_user_namespace(&c.spec).map_err(|e| c.rename(e))?;
    }
    if spec.idempotency_key.as_deref().is_some_and(|k| k.starts_with(SCHEDULE_NAMESPACE)) {
        return Err(ApiError::field("idempotency_key", "keys starting with \"schedule:\" are reserved for schedules"));
    }
    let own_tags = spec.tags.iter().filter(|t| !spec.job_type.tags.contains(t));
    if own_tags.into_iter().any(|t| t.starts_with(SCHEDULE_NAMESPACE)) {
        return Err(ApiError::field("tags", "tags starting with \"schedule:\" are reserved for schedules"));
    }
    Ok(())
}

const FIELDS: &[&str] = &[
    "tenant",
    "type",
    "payload",
    "idempotency_key",
    "delay",
    "run_at",
    "max_attempts",
    "backoff",
    "timeout",
    "tags",
    "metadata",
    "concurrency",
    "rate",
    "priority",
    "debounce",
    "throttle",
    "on_complete",
    "on_fail",
];

/// Validates an enqueue request body against the built-in types only (tests, tools).
pub fn parse_spec(body: &Value, now: u64) -> Result<JobSpec, ApiError> {
    parse_spec_in(body, now, &Types::builtins())
}

/// Validates an enqueue request body (already parsed as JSON) at time `now` (ms) against the
/// deployment's job `types`: [`parse_spec_unchecked`], then the type's payload schema
/// ([`check_schema`]).
pub fn parse_spec_in(body: &Value, now: u64, types: &Types) -> Result<JobSpec, ApiError> {
    let spec = parse_spec_unchecked(body, now, types)?;
    check_schema(&spec)?;
    Ok(spec)
}

/// Validates everything of an enqueue request body but the payload's JSON Schema, the one
/// check whose cost grows with what the deployment declares. The edge runs it after the
/// body's size check and the rate limit, so a refused or over-limit request costs no schema
/// work; [`check_schema`] completes the validation.
///
/// The job may not have callbacks (`on_complete`, `on_fail`): this is the parse of the jobs
/// that take none — a schedule's, a workflow step's child, a callback job itself. An
/// enqueue's own job is parsed by [`parse_enqueue_unchecked`].
pub fn parse_spec_unchecked(body: &Value, now: u64, types: &Types) -> Result<JobSpec, ApiError> {
    parse_fields(body, now, types, false)
}

/// [`parse_spec_unchecked`] for the job of `POST /v1/jobs` (or an item of a batch), which
/// may have completion callbacks (#30): each is validated as an enqueue of its job would
/// be ([`parse_callback`]; [`check_outbound`], [`check_schema`] and
/// [`check_user_namespace`] check them with their job).
pub fn parse_enqueue_unchecked(body: &Value, now: u64, types: &Types) -> Result<JobSpec, ApiError> {
    parse_fields(body, now, types, true)
}

/// [`parse_enqueue_unchecked`], then [`check_schema`].
pub fn parse_enqueue_in(body: &Value, now: u64, types: &Types) -> Result<JobSpec, ApiError> {
    let spec = parse_enqueue_unchecked(body, now, types)?;
    check_schema(&spec)?;
    Ok(spec)
}

/// A job's `on_complete` or `on_fail`, where the job may have one.
fn callback_field(
    obj: &Map<String, Value>,
    which: Which,
    allowed: bool,
    now: u64,
    types: &Types,
) -> Result<Option<Box<CallbackSpec>>, ApiError> {
    let field = which.field();
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) if !allowed => Err(ApiError::field(
            field,
            "only a job enqueued by POST /v1/jobs or /v1/jobs/batch has callbacks (not a callback job, a schedule's \
             job or a workflow step's child)",
        )),
        Some(v) => Ok(Some(Box::new(parse_callback(v, field, now, types)?))),
    }
}

fn parse_fields(body: &Value, now: u64, types: &Types, callbacks: bool) -> Result<JobSpec, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::field(unknown, "unknown field"));
    }
    let name = match obj.get("type") {
        Some(Value::String(s)) if !s.is_empty() => s,
        None => return Err(ApiError::field("type", "is required")),
        _ => return Err(ApiError::field("type", "must be a non-empty string")),
    };
    let Some(jt) = types.get(name) else {
        let shown: String = name.chars().take(64).collect();
        return Err(ApiError::new(
            ErrorCode::UnknownType,
            format!("unknown job type {shown:?}; this deployment's types: {}", types.names().join(", ")),
        ));
    };
    let jt = jt.clone();
    let payload = obj.get("payload").cloned().unwrap_or(Value::Null);
    let size = serde_json::to_string(&payload).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("payload is {size} bytes serialized; the limit is {MAX_PAYLOAD_BYTES}"),
        ));
    }
    validate_payload(&jt, &payload)?;
    let idempotency_key = match obj.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::field("idempotency_key", "must be a string of 1 to 256 bytes"));
        }
    };
    let delay = duration_field(obj, "delay", 0, MAX_DELAY_MS)?;
    let run_at = match obj.get("run_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match crate::time::parse_rfc3339(s) {
            Some(t) if t <= now.saturating_add(MAX_DELAY_MS) => Some(t),
            Some(_) => {
                return Err(ApiError::field("run_at", "must be at most 365 days in the future"));
            }
            None => return Err(ApiError::field("run_at", "must be an RFC 3339 timestamp")),
        },
        Some(_) => {
            return Err(ApiError::field("run_at", "must be an RFC 3339 timestamp string"));
        }
    };
    if delay.is_some() && run_at.is_some() {
        return Err(ApiError::field("delay", "give either delay or run_at, not both"));
    }
    let run_at = run_at.or(delay.map(|d| now.saturating_add(d))).filter(|t| *t > now);
    let max_attempts = match obj.get("max_attempts") {
        None | Some(Value::Null) => jt.max_attempts,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_ATTEMPTS_LIMIT as u64).contains(&n) => n as u32,
            _ => {
                return Err(ApiError::field(
                    "max_attempts",
                    format!("must be an integer from 1 to {MAX_ATTEMPTS_LIMIT}"),
                ));
            }
        },
    };
    let max_timeout = match jt.lane {
        Lane::Edge => MAX_EDGE_TIMEOUT_MS,
        Lane::Native => MAX_NATIVE_TIMEOUT_MS,
    };
    let timeout_ms = duration_field(obj, "timeout", 1000, max_timeout)?.unwrap_or(jt.timeout_ms);
    let backoff = parse_backoff(obj.get("backoff"), jt.backoff)?;
    let mut tags = match obj.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_TAGS => {
            let mut tags = Vec::with_capacity(items.len());
            for t in items {
                match t {
                    Value::String(s) if crate::fields::is_tag(s) => tags.push(s.clone()),
                    _ => {
                        return Err(ApiError::field(
                            "tags",
                            "each tag must be a string of 1 to 64 bytes without commas",
                        ));
                    }
                }
            }
            tags
        }
        Some(_) => {
            return Err(ApiError::field("tags", format!("must be an array of at most {MAX_TAGS} strings")));
        }
    };
    // The type's tags come first; one the job repeats is kept once.
    if !jt.tags.is_empty() {
        let own = std::mem::take(&mut tags);
        tags = jt.tags.clone();
        tags.extend(own.into_iter().filter(|t| !jt.tags.contains(t)));
        if tags.len() > MAX_TAGS {
            return Err(ApiError::field(
                "tags",
                format!("with the type's {} tags, at most {MAX_TAGS} in all", jt.tags.len()),
            ));
        }
    }
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m))
            if serde_json::to_string(m).map(|s| s.len()).unwrap_or(usize::MAX) <= MAX_METADATA_BYTES =>
        {
            m.clone()
        }
        Some(Value::Object(_)) => {
            return Err(ApiError::field("metadata", format!("must be at most {MAX_METADATA_BYTES} bytes serialized")));
        }
        Some(_) => return Err(ApiError::field("metadata", "must be a JSON object")),
    };
    let tenant = match obj.get("tenant") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(crate::tenant::Tenant::from_field("tenant", t)?),
        Some(_) => return Err(ApiError::field("tenant", "must be a tenant name")),
    };
    let flow = crate::flow::parse(obj, false)?.over(&jt.flow);
    let on_complete = callback_field(obj, Which::Complete, callbacks, now, types)?;
    let on_fail = callback_field(obj, Which::Fail, callbacks, now, types)?;
    Ok(JobSpec {
        flow,
        on_complete,
        on_fail,
        job_type: jt,
        payload,
        idempotency_key,
        run_at,
        max_attempts,
        backoff,
        timeout_ms,
        tags,
        metadata,
        tenant,
    })
}

/// The flow control of a validated spec with its keys resolved: JSON pointers of its type
/// against the job (built only when a key needs one: `type`, `payload`, `tags`,
/// `metadata`, `tenant`), `"tenant"`, and an edge webhook's receiver origin (its type's
/// fixed `url`, or the `webhook` type's `payload.url`) with `webhook_concurrency`
/// (`WEBHOOK_CONCURRENCY`). The router and a schedule's runs resolve the same way.
pub fn flow_of(spec: &JobSpec, webhook_concurrency: Option<u32>) -> Result<Option<crate::flow::Flow>, ApiError> {
    use crate::flow::{KeyRef, Subject, origin_key, resolve};
    let tenant = spec.tenant.clone().unwrap_or_default();
    let f = &spec.flow;
    let pointers = f
        .concurrency
        .iter()
        .map(|c| &c.0)
        .chain(f.rate.iter().map(|r| &r.0))
        .chain(f.debounce.iter().map(|d| &d.0))
        .chain(f.throttle.iter().map(|t| &t.0))
        .any(|k| matches!(k, KeyRef::Pointer(_)));
    let view = if pointers {
        serde_json::json!({
            "type": spec.job_type.name,
            "payload": spec.payload,
            "tags": spec.tags,
            "metadata": spec.metadata,
            "tenant": tenant.as_str(),
        })
    } else {
        Value::Null
    };
    let webhook = match (spec.job_type.lane, webhook_concurrency) {
        (Lane::Edge, Some(limit)) => {
            let url = match &spec.job_type.url {
                Some(u) => Some(u.as_str()),
                None if spec.job_type.name == "webhook" => spec.payload.get("url").and_then(Value::as_str),
                None => None,
            };
            url.and_then(origin_key).map(|k| (k, limit))
        }
        _ => None,
    };
    resolve(f, &Subject { job: &view, tenant: tenant.as_str() }, webhook)
}

/// The payload against its type's JSON Schema (`JOB_TYPES`' `schema`), if it has one; and
/// each callback job's payload against its type's, as it will be when it fires (with the
/// summary it gets, so a schema that allows no other property refuses it now).
pub fn check_schema(spec: &JobSpec) -> Result<(), ApiError> {
    for c in spec.callbacks() {
        check_payload_schema(&c.spec.job_type, &c.payload_when_fired(false)).map_err(|e| c.rename(e))?;
    }
    check_payload_schema(&spec.job_type, &spec.payload)
}

/// A batch's callback (#30) against its type's schema, as it will be when it fires.
pub fn check_batch_callback_schema(c: &CallbackSpec) -> Result<(), ApiError> {
    check_payload_schema(&c.spec.job_type, &c.payload_when_fired(true)).map_err(|e| c.rename(e))
}

fn check_payload_schema(jt: &JobType, payload: &Value) -> Result<(), ApiError> {
    if let Some(schema) = &jt.schema
        && let Some((pointer, problem)) = schema.first_violation(payload)
    {
        // The field is a JSON pointer into the request body: `/payload` and the path of the
        // first value that breaks the type's schema.
        let field = format!("/payload{pointer}");
        return Err(ApiError {
            code: ErrorCode::InvalidField,
            message: format!("{field}: {problem} (the schema of type {:?})", jt.name),
            field: Some(field),
        });
    }
    Ok(())
}

/// Type-specific payload rules, checked at enqueue so a job that can never run is refused
/// up front instead of dying later.
fn validate_payload(jt: &JobType, payload: &Value) -> Result<(), ApiError> {
    // Only the built-ins have shapes of their own; a declared type has its schema
    // ([`check_schema`]).
    if !jt.builtin {
        return Ok(());
    }
    match jt.name.as_str() {
        "webhook" | "http.request" => {
            let Some(obj) = payload.as_object() else {
                return Err(ApiError::field("payload", "must be an object such as {\"url\": \"https://...\"}"));
            };
            let url = obj.get("url").and_then(Value::as_str).unwrap_or("");
            let Some(parsed) = parse_target_url(url) else {
                return Err(ApiError::field(
                    "payload.url",
                    format!(
                        "must be an http:// or https:// URL of at most {} bytes, without spaces or control characters",
                        crate::outbound::MAX_URL_BYTES
                    ),
                ));
            };
            if crate::outbound::has_userinfo(url, &parsed) {
                return Err(ApiError::field("payload.url", crate::outbound::USERINFO_REFUSED));
            }
            if let Some(h) = obj.get("headers") {
                validate_headers(h)?;
            }
            if jt.name == "http.request" {
                match obj.get("method") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(m)) if !m.is_empty() && m.len() <= 32 && m.bytes().all(is_token_byte) => {}
                    Some(_) => {
                        return Err(ApiError::field(
                            "payload.method",
                            "must be an HTTP method such as \"GET\" (a token of 1 to 32 characters)",
                        ));
                    }
                }
            }
            Ok(())
        }
        "sleep" => {
            let obj = match payload {
                Value::Null => return Ok(()),
                Value::Object(o) => o,
                _ => return Err(ApiError::field("payload", "must be an object such as {\"ms\": 100}")),
            };
            match obj.get("ms") {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64().is_some_and(|ms| ms <= MAX_SLEEP_MS) => {}
                Some(_) => {
                    return Err(ApiError::field("payload.ms", format!("must be an integer from 0 to {MAX_SLEEP_MS}")));
                }
            }
            match obj.get("fail").map(|v| (v, v.as_str())) {
                None | Some((Value::Null, _)) | Some((_, Some("retryable" | "permanent"))) => Ok(()),
                Some(_) => Err(ApiError::field("payload.fail", "must be \"retryable\" or \"permanent\"")),
            }
        }
        "llm.chat" => {
            let Some(obj) = payload.as_object() else {
                return Err(ApiError::field("payload", "must be an object with messages"));
            };
            let messages = obj.get("messages").and_then(Value::as_array);
            if messages.is_none_or(|m| m.is_empty() || !m.iter().all(Value::is_object)) {
                return Err(ApiError::field("payload.messages", "must be a non-empty array of message objects"));
            }
            match obj.get("model") {
                None | Some(Value::Null) => {}
                Some(Value::String(m)) if !m.is_empty() => {}
                Some(_) => return Err(ApiError::field("payload.model", "must be a non-empty string")),
            }
            match obj.get("max_tokens") {
                None | Some(Value::Null) => {}
                Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {}
                Some(_) => return Err(ApiError::field("payload.max_tokens", "must be a positive integer")),
            }
            match obj.get("temperature") {
                None | Some(Value::Null) => Ok(()),
                Some(v) if v.as_f64().is_some_and(|t| (0.0..=2.0).contains(&t)) => Ok(()),
                Some(_) => Err(ApiError::field("payload.temperature", "must be a number from 0 to 2")),
            }
        }
        _ => Ok(()),
    }
}

/// Longest `sleep` the native handler runs (`payload.ms`).
pub const MAX_SLEEP_MS: u64 = 3_600_000;

/// A URL a webhook or request may be sent to: `http://` or `https://` (any case), a host,
/// at most [`crate::outbound::MAX_URL_BYTES`], and no space or control character (which the
/// URL parser would strip or drop silently, so the URL called would not be the one given).
/// `Some` with the parsed URL when it has that syntax.
pub fn parse_target_url(url: &str) -> Option<url::Url> {
    let scheme_ok =
        ["http://", "https://"].iter().any(|p| url.get(..p.len()).is_some_and(|s| s.eq_ignore_ascii_case(p)));
    if !scheme_ok || url.len() > crate::outbound::MAX_URL_BYTES || url.chars().any(|c| c == ' ' || c.is_control()) {
        return None;
    }
    url::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A byte of an HTTP token (RFC 9110): header names and methods.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Most headers a payload may carry, and their total size.
pub const MAX_HEADERS: usize = 50;
pub const MAX_HEADERS_BYTES: usize = 8 * 1024;

/// `payload.headers`: an object of at most [`MAX_HEADERS`] string values, [`MAX_HEADERS_BYTES`]
/// in all, each name an HTTP token and each value free of control characters (a header
/// HTTP refuses would make every attempt fail).
fn validate_headers(h: &Value) -> Result<(), ApiError> {
    let Some(map) = h.as_object() else {
        return Err(ApiError::field("payload.headers", "must be an object of string values"));
    };
    if map.len() > MAX_HEADERS {
        return Err(ApiError::field("payload.headers", format!("must hold at most {MAX_HEADERS} headers")));
    }
    let mut bytes = 0;
    for (name, value) in map {
        let Some(value) = value.as_str() else {
            return Err(ApiError::field("payload.headers", "must be an object of string values"));
        };
        let token = !name.is_empty() && name.bytes().all(is_token_byte);
        if !token {
            return Err(ApiError::field("payload.headers", "header names must be HTTP tokens (letters, digits, -)"));
        }
        if crate::outbound::forbidden_header(name) {
            let shown: String = name.chars().take(64).collect();
            return Err(ApiError::field(
                "payload.headers",
                format!(
                    "header {shown:?} is not allowed: host, connection, keep-alive, content-length, transfer-encoding, te, \
                     trailer, upgrade, proxy-*, forwarded, x-forwarded-*, x-real-ip and x-edgejobs-* steer routing or \
                     speak for the system"
                ),
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ApiError::field("payload.headers", "header values must not contain control characters"));
        }
        bytes += name.len() + value.len();
    }
    if bytes > MAX_HEADERS_BYTES {
        return Err(ApiError::field("payload.headers", format!("must be at most {MAX_HEADERS_BYTES} bytes in all")));
    }
    Ok(())
}

/// The outbound check of a job that makes a request ([`crate::outbound::check_url`]): a
/// literal private address or a local name in `payload.url` is refused at enqueue, unless
/// `allow` opens it. Names are checked again where the request is made.
pub fn check_outbound(spec: &JobSpec, allow: &crate::outbound::Allow) -> Result<(), ApiError> {
    for c in spec.callbacks() {
        check_outbound(&c.spec, allow).map_err(|e| c.rename(e))?;
    }
    if let Some(url) = spec.payload.get("url").and_then(Value::as_str)
        && matches!(spec.job_type.name.as_str(), "webhook" | "http.request")
    {
        crate::outbound::check_url(url, allow).map_err(|e| ApiError::field("payload.url", e))?;
    }
    Ok(())
}

impl JobSpec {
    /// Builds the new job with id `id` at `now`, and says what the shard must do next. Its
    /// callbacks become the templates it carries, each with its id
    /// ([`crate::callbacks::callback_id`]); their header values are still to be sealed
    /// (under each template's id), which the edge does.
    pub fn into_job(self, id: JobId, now: u64) -> (Job, Effect) {
        let template = |c: Option<Box<CallbackSpec>>, which| {
            c.map(|c| Box::new(c.template(crate::callbacks::callback_id(&id, which))))
        };
        let on_complete = template(self.on_complete, Which::Complete);
        let on_fail = template(self.on_fail, Which::Fail);
        let (state, run_at, effect) = match self.run_at {
            Some(t) if t > now => (JobState::Scheduled, t, Effect::Alarm(t)),
            _ => (JobState::Queued, now, Effect::Enqueue),
        };
        let job = Job {
            id,
            tenant: self.tenant.unwrap_or_default(),
            job_type: self.job_type.name.clone(),
            rate_group: self.job_type.rate_group.clone(),
            lane: self.job_type.lane,
            state,
            payload: self.payload,
            attempt: 0,
            series_base: 0,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            idempotency_key: self.idempotency_key,
            schedule: None,
            tags: self.tags,
            metadata: self.metadata,
            created_at: now,
            updated_at: now,
            run_at,
            started_at: None,
            finished_at: None,
            heartbeat_at: None,
            lease_lost_attempt: None,
            epoch: 0,
            attempts: Vec::new(),
            result: None,
            progress: None,
            last_error: None,
            cancel_requested: false,
            stream_entry: None,
            lease: None,
            flow: None,
            waiting_for: None,
            steps: Vec::new(),
            free_attempts: 0,
            parent: None,
            on_complete,
            on_fail,
            batch: None,
            batch_counted: false,
            trace: None,
            tape: Default::default(),
        };
        (job, effect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn table_of_invalid_specs_names_the_field() {
        let big = "x".repeat(MAX_PAYLOAD_BYTES);
        let table: Vec<(Value, ErrorCode, Option<&str>)> = vec![
            (json!([]), ErrorCode::InvalidJson, None),
            (json!({}), ErrorCode::InvalidField, Some("type")),
            (json!({ "type": 7 }), ErrorCode::InvalidField, Some("type")),
            (json!({ "type": "nope" }), ErrorCode::UnknownType, None),
            (json!({ "type": "noop", "typo": 1 }), ErrorCode::InvalidField, Some("typo")),
            (json!({ "type": "noop", "payload": big }), ErrorCode::PayloadTooLarge, None),
            (json!({ "type": "noop", "idempotency_key": "" }), ErrorCode::InvalidField, Some("idempotency_key")),
            (json!({ "type": "noop", "delay": "soon" }), ErrorCode::InvalidField, Some("delay")),
            (json!({ "type": "noop", "delay": -1 }), ErrorCode::InvalidField, Some("delay")),
            (json!({ "type": "noop", "delay": "400d" }), ErrorCode::InvalidField, Some("delay")),
            (json!({ "type": "noop", "run_at": "tomorrow" }), ErrorCode::InvalidField, Some("run_at")),
            (
                json!({ "type": "noop", "delay": 5, "run_at": "2027-06-01T00:00:00Z" }),
                ErrorCode::InvalidField,
                Some("delay"),
            ),
            (json!({ "type": "noop", "max_attempts": 0 }), ErrorCode::InvalidField, Some("max_attempts")),
            (json!({ "type": "noop", "max_attempts": 1.5 }), ErrorCode::InvalidField, Some("max_attempts")),
            (json!({ "type": "noop", "timeout": "20m" }), ErrorCode::InvalidField, Some("timeout")),
            (json!({ "type": "noop", "backoff": { "factor": 0.5 } }), ErrorCode::InvalidField, Some("backoff.factor")),
            (
                json!({ "type": "noop", "backoff": { "base": "2s", "cap": "1s" } }),
                ErrorCode::InvalidField,
                Some("backoff.cap"),
            ),
            (json!({ "type": "noop", "backoff": { "bse": "2s" } }), ErrorCode::InvalidField, Some("backoff.bse")),
            (json!({ "type": "noop", "backoff": { "base": "x" } }), ErrorCode::InvalidField, Some("backoff.base")),
            (json!({ "type": "noop", "tags": "a" }), ErrorCode::InvalidField, Some("tags")),
            (json!({ "type": "noop", "tags": [""] }), ErrorCode::InvalidField, Some("tags")),
            (json!({ "type": "noop", "metadata": [] }), ErrorCode::InvalidField, Some("metadata")),
            (json!({ "type": "webhook", "payload": {} }), ErrorCode::InvalidField, Some("payload.url")),
            (
                json!({ "type": "webhook", "payload": { "url": "ftp://x" } }),
                ErrorCode::InvalidField,
                Some("payload.url"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http://x", "headers": { "a": 1 } } }),
                ErrorCode::InvalidField,
                Some("payload.headers"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http://x", "headers": { "bad name": "v" } } }),
                ErrorCode::InvalidField,
                Some("payload.headers"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http://x", "headers": { "a": "line\r\nInjected: 1" } } }),
                ErrorCode::InvalidField,
                Some("payload.headers"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http://x",
                    "headers": (0..51).map(|i| (format!("h{i}"), json!("v"))).collect::<serde_json::Map<_, _>>() } }),
                ErrorCode::InvalidField,
                Some("payload.headers"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http://x", "headers": { "a": "v".repeat(9000) } } }),
                ErrorCode::InvalidField,
                Some("payload.headers"),
            ),
            (json!({ "type": "noop", "run_at": "2030-01-01T00:00:00+0é00" }), ErrorCode::InvalidField, Some("run_at")),
            (json!({ "type": "noop", "delay": "5é" }), ErrorCode::InvalidField, Some("delay")),
            // Shapes of the built-ins' payloads, as the OpenAPI description gives them.
            (json!({ "type": "webhook", "payload": "http://x" }), ErrorCode::InvalidField, Some("payload")),
            (
                json!({ "type": "webhook", "payload": { "url": " http://example.com/" } }),
                ErrorCode::InvalidField,
                Some("payload.url"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http://exa\tmple.com/" } }),
                ErrorCode::InvalidField,
                Some("payload.url"),
            ),
            (
                json!({ "type": "webhook", "payload": { "url": "http:\\\\example.com/" } }),
                ErrorCode::InvalidField,
                Some("payload.url"),
            ),
            (
                json!({ "type": "http.request", "payload": { "url": "http://x", "method": 5 } }),
                ErrorCode::InvalidField,
                Some("payload.method"),
            ),
            (
                json!({ "type": "http.request", "payload": { "url": "http://x", "method": "GE T" } }),
                ErrorCode::InvalidField,
                Some("payload.method"),
            ),
            (json!({ "type": "sleep", "payload": [1] }), ErrorCode::InvalidField, Some("payload")),
            (json!({ "type": "sleep", "payload": { "ms": "5" } }), ErrorCode::InvalidField, Some("payload.ms")),
            (json!({ "type": "sleep", "payload": { "ms": 3_600_001 } }), ErrorCode::InvalidField, Some("payload.ms")),
            (json!({ "type": "sleep", "payload": { "fail": "yes" } }), ErrorCode::InvalidField, Some("payload.fail")),
            (json!({ "type": "llm.chat" }), ErrorCode::InvalidField, Some("payload")),
            (
                json!({ "type": "llm.chat", "payload": { "messages": [] } }),
                ErrorCode::InvalidField,
                Some("payload.messages"),
            ),
            (
                json!({ "type": "llm.chat", "payload": { "messages": ["hi"] } }),
                ErrorCode::InvalidField,
                Some("payload.messages"),
            ),
            (
                json!({ "type": "llm.chat", "payload": { "messages": [{}], "model": 1 } }),
                ErrorCode::InvalidField,
                Some("payload.model"),
            ),
            (
                json!({ "type": "llm.chat", "payload": { "messages": [{}], "max_tokens": 0 } }),
                ErrorCode::InvalidField,
                Some("payload.max_tokens"),
            ),
            (
                json!({ "type": "llm.chat", "payload": { "messages": [{}], "temperature": 3 } }),
                ErrorCode::InvalidField,
                Some("payload.temperature"),
            ),
        ];
        for (body, code, field) in table {
            let e = parse_spec(&body, NOW).expect_err(&body.to_string());
            assert_eq!(e.code, code, "{body}: {e}");
            assert_eq!(e.field.as_deref(), field, "{body}: {e}");
        }
    }

    #[test]
    fn headers_that_steer_routing_or_speak_for_the_system_are_refused() {
        for name in crate::outbound::FORBIDDEN_HEADER_EXAMPLES {
            for t in ["webhook", "http.request"] {
                let body =
                    json!({ "type": t, "payload": { "url": "https://example.com/", "headers": { *name: "v" } } });
                let e = parse_spec(&body, NOW).expect_err(name);
                assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some("payload.headers")), "{name}");
                assert!(e.message.contains(&format!("{name:?}")), "the header is named: {e}");
            }
        }
        // A schedule's job goes through the same validation.
        let sched = json!({ "type": "webhook", "payload": { "url": "https://example.com/", "headers": { "X-Forwarded-For": "1.2.3.4" } } });
        let e = crate::schedule::parse_job(&sched, NOW, &Types::builtins()).expect_err("refused");
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some("job.payload.headers")), "{e}");
        let ok = json!({ "type": "webhook", "payload": { "url": "https://example.com/",
            "headers": { "Authorization": "Bearer x", "Content-Type": "text/plain", "X-Api-Key": "k", "Hostname": "h" } } });
        parse_spec(&ok, NOW).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn urls_with_credentials_are_refused() {
        for url in [
            "https://user:pass@example.com/",
            "https://token@example.com/x",
            "https://@example.com/",
            "http://a:@b.example/",
        ] {
            for t in ["webhook", "http.request"] {
                let e = parse_spec(&json!({ "type": t, "payload": { "url": url } }), NOW).expect_err(url);
                assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some("payload.url")), "{url}");
                assert!(e.message.contains("credentials") && !e.message.contains(url), "{e}");
            }
        }
        parse_spec(&json!({ "type": "webhook", "payload": { "url": "https://example.com/a@b?c=@" } }), NOW)
            .unwrap_or_else(|e| panic!("an @ in the path or query is no credential: {e}"));
    }

    #[test]
    fn outbound_checks_refuse_private_targets_unless_allowed() {
        let spec = |url: &str| parse_spec(&json!({ "type": "http.request", "payload": { "url": url } }), NOW);
        let none = crate::outbound::Allow::default();
        for bad in ["http://169.254.169.254/latest", "http://0x7f.1:9090/metrics", "http://localhost/"] {
            let e = check_outbound(&spec(bad).expect("well-formed"), &none).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("payload.url"), "{bad}");
        }
        let allow = crate::outbound::Allow::parse("127.0.0.1:4000").expect("valid");
        assert!(check_outbound(&spec("http://127.0.0.1:4000/hook").expect("valid"), &allow).is_ok());
        assert!(check_outbound(&spec("https://example.com/").expect("valid"), &none).is_ok());
    }

    #[test]
    fn defaults_and_overrides() {
        let s = parse_spec(&json!({ "type": "webhook", "payload": { "url": "http://127.0.0.1:1/x" } }), NOW)
            .expect("valid");
        assert_eq!((s.max_attempts, s.timeout_ms, s.run_at), (5, 30_000, None));
        let s = parse_spec(
            &json!({ "type": "noop", "delay": "90s", "max_attempts": 7, "timeout": 5000,
                     "backoff": { "base": "250ms", "factor": 3, "cap": "10s" }, "tags": ["a"], "metadata": { "k": 1 },
                     "idempotency_key": "order-1" }),
            NOW,
        )
        .expect("valid");
        assert_eq!(s.run_at, Some(NOW + 90_000));
        assert_eq!((s.max_attempts, s.timeout_ms), (7, 5000));
        assert_eq!(s.backoff, Backoff { base_ms: 250, factor: 3.0, cap_ms: 10_000 });
        let s = parse_spec(&json!({ "type": "noop", "run_at": "2027-01-15T10:00:00+01:00" }), NOW).expect("valid");
        assert_eq!(s.run_at, crate::time::parse_rfc3339("2027-01-15T09:00:00Z"));
    }

    #[test]
    fn the_builtins_payload_shapes_accept_what_they_describe() {
        for body in [
            json!({ "type": "noop", "payload": [1, "any"] }),
            json!({ "type": "webhook", "payload": { "url": "HTTPS://example.com/a?b=c", "body": null, "headers": {} } }),
            json!({ "type": "http.request", "payload": { "url": "http://x/", "method": "PATCH", "body": [1] } }),
            json!({ "type": "http.request", "payload": { "url": "http://x/", "method": null } }),
            json!({ "type": "sleep" }),
            json!({ "type": "sleep", "payload": { "ms": 0, "fail": "retryable", "extra": 1 } }),
            json!({ "type": "sleep", "payload": { "ms": null, "fail": null } }),
            json!({ "type": "llm.chat", "payload": { "messages": [{ "role": "user", "content": "hi" }] } }),
            json!({ "type": "llm.chat", "payload": { "messages": [{}], "model": "m", "max_tokens": 1, "temperature": 0.5 } }),
        ] {
            parse_spec(&body, NOW).unwrap_or_else(|e| panic!("{body}: {e}"));
        }
    }

    #[test]
    fn a_run_at_in_the_past_means_now() {
        let s = parse_spec(&json!({ "type": "noop", "run_at": "2001-01-01T00:00:00Z" }), NOW).expect("valid");
        let (job, effect) = s.into_job(JobId::new(1, NOW, 2), NOW);
        assert_eq!((job.state, effect), (JobState::Queued, Effect::Enqueue));
    }

    #[test]
    fn durations() {
        for (v, want) in [
            (json!(10), Some(10)),
            (json!("250ms"), Some(250)),
            (json!("3m"), Some(180_000)),
            (json!("1d"), Some(86_400_000)),
            (json!("5 s"), Some(5000)),
            (json!("1h 30m"), Some(5_400_000)),
            (json!("h"), None),
            (json!("5x"), None),
            (json!("3é"), None),
            (json!("９s"), None),
            (json!("99999999999999999999999d"), None),
            (json!(-5), None),
            (json!(1.5), None),
            (json!("1.5h"), Some(5_400_000)),
            (json!("1h30m"), Some(5_400_000)),
            (json!(" 2 min "), Some(120_000)),
            // Forms humantime reads but the documented syntax does not have.
            (json!("1 0s"), None),
            (json!("30s\n"), None),
            (json!("\t30s"), None),
            (json!("5µs"), None),
            (json!(""), None),
            (json!("  "), None),
            (json!("1."), None),
        ] {
            assert_eq!(parse_duration(&v), want, "{v}");
        }
    }
}

#[cfg(test)]
mod schema_order_tests {
    use super::*;
    use crate::outbound::Allow;
    use serde_json::json;

    /// The payload schema is the last check, and a separate one: an oversize payload is
    /// refused for its size whatever its shape, and the unchecked parse does no schema work.
    #[test]
    fn the_schema_runs_after_the_size_check_and_apart() {
        let text = include_str!("../../../examples/job-types.json");
        let types = Types::parse(text, &Allow::default()).unwrap_or_else(|e| panic!("{e:?}"));
        let bad = json!({ "type": "welcome-email", "payload": { "user_id": "7" } });
        let unchecked = parse_spec_unchecked(&bad, 0, &types).expect("no schema work yet");
        assert_eq!(check_schema(&unchecked).map_err(|e| e.code), Err(ErrorCode::InvalidField));
        assert_eq!(parse_spec_in(&bad, 0, &types).map_err(|e| e.code).err(), Some(ErrorCode::InvalidField));
        let huge = json!({ "type": "welcome-email", "payload": { "user_id": "x".repeat(MAX_PAYLOAD_BYTES) } });
        assert_eq!(parse_spec_in(&huge, 0, &types).map_err(|e| e.code).err(), Some(ErrorCode::PayloadTooLarge));
    }
}

#[cfg(test)]
mod callback_tests {
    use super::*;
    use crate::callbacks::{Kind, callback_id};
    use crate::outbound::Allow;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000_000;

    fn enqueue(body: Value) -> Result<JobSpec, ApiError> {
        parse_enqueue_in(&body, NOW, &Types::builtins())
    }

    #[test]
    fn both_forms_parse_into_templates_with_fixed_ids() {
        let s = enqueue(json!({ "type": "noop",
            "on_complete": { "url": "https://example.com/done", "headers": { "Authorization": "Bearer x" } },
            "on_fail": { "job": { "type": "noop", "payload": { "a": 1 }, "tags": ["cb"], "delay": "2s", "max_attempts": 2 } } }))
        .unwrap_or_else(|e| panic!("{e}"));
        let url = s.on_complete.as_deref().expect("on_complete");
        assert_eq!((url.kind, url.spec.job_type.name.as_str(), url.delay_ms), (Kind::Url, "webhook", 0));
        assert_eq!(
            url.spec.payload,
            json!({ "url": "https://example.com/done", "headers": { "Authorization": "Bearer x" } })
        );
        let job = s.on_fail.as_deref().expect("on_fail");
        assert_eq!((job.kind, job.delay_ms, job.spec.max_attempts, job.spec.run_at), (Kind::Job, 2000, 2, None));
        let id = JobId::new(4, NOW, 9);
        let (j, _) = s.into_job(id.clone(), NOW);
        let (c, f) = (j.on_complete.expect("template"), j.on_fail.expect("template"));
        assert_eq!((c.id.clone(), f.id.clone()), (callback_id(&id, Which::Complete), callback_id(&id, Which::Fail)));
        assert_eq!((c.fired_at, f.tags.clone(), f.payload.clone()), (None, vec!["cb".to_owned()], json!({ "a": 1 })));
        // Absent or null: none; a job callback without a payload gets an object.
        let s = enqueue(json!({ "type": "noop", "on_complete": null, "on_fail": { "job": { "type": "noop" } } }))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.on_complete.is_none());
        assert_eq!(s.on_fail.expect("on_fail").spec.payload, json!({}));
    }

    #[test]
    fn table_of_invalid_callbacks_names_the_field() {
        let big = "x".repeat(crate::callbacks::MAX_CALLBACK_PAYLOAD_BYTES);
        let table: Vec<(Value, ErrorCode, &str)> = vec![
            (json!("https://example.com/"), ErrorCode::InvalidField, "on_complete"),
            (json!({}), ErrorCode::InvalidField, "on_complete"),
            (json!({ "url": "https://x.example/", "job": { "type": "noop" } }), ErrorCode::InvalidField, "on_complete"),
            (json!({ "url": "ftp://x" }), ErrorCode::InvalidField, "on_complete.url"),
            (json!({ "url": 5 }), ErrorCode::InvalidField, "on_complete.url"),
            (json!({ "url": "https://u:p@x.example/" }), ErrorCode::InvalidField, "on_complete.url"),
            (
                json!({ "url": "https://x.example/", "headers": { "a": 1 } }),
                ErrorCode::InvalidField,
                "on_complete.headers",
            ),
            (
                json!({ "url": "https://x.example/", "headers": { "Host": "h" } }),
                ErrorCode::InvalidField,
                "on_complete.headers",
            ),
            (json!({ "url": "https://x.example/", "method": "GET" }), ErrorCode::InvalidField, "on_complete.method"),
            (json!({ "job": "noop" }), ErrorCode::InvalidField, "on_complete.job"),
            (json!({ "job": { "type": "noop" }, "x": 1 }), ErrorCode::InvalidField, "on_complete.x"),
            (json!({ "job": { "type": "nope" } }), ErrorCode::UnknownType, "on_complete.job.type"),
            (json!({ "job": {} }), ErrorCode::InvalidField, "on_complete.job.type"),
            (json!({ "job": { "type": "noop", "typo": 1 } }), ErrorCode::InvalidField, "on_complete.job.typo"),
            // No chains.
            (
                json!({ "job": { "type": "noop", "on_complete": { "url": "https://x.example/" } } }),
                ErrorCode::InvalidField,
                "on_complete.job.on_complete",
            ),
            (
                json!({ "job": { "type": "noop", "on_fail": { "job": { "type": "noop" } } } }),
                ErrorCode::InvalidField,
                "on_complete.job.on_fail",
            ),
            (
                json!({ "job": { "type": "noop", "idempotency_key": "k" } }),
                ErrorCode::InvalidField,
                "on_complete.job.idempotency_key",
            ),
            (
                json!({ "job": { "type": "noop", "concurrency": { "key": "k", "limit": 1 } } }),
                ErrorCode::InvalidField,
                "on_complete.job.concurrency",
            ),
            (json!({ "job": { "type": "noop", "priority": 9 } }), ErrorCode::InvalidField, "on_complete.job.priority"),
            (json!({ "job": { "type": "noop", "tenant": "acme" } }), ErrorCode::InvalidField, "on_complete.job.tenant"),
            (
                json!({ "job": { "type": "noop", "run_at": "2030-01-01T00:00:00Z" } }),
                ErrorCode::InvalidField,
                "on_complete.job.run_at",
            ),
            // The payload must be an object, which gets the key "callback".
            (json!({ "job": { "type": "noop", "payload": [1] } }), ErrorCode::InvalidField, "on_complete.job.payload"),
            (json!({ "job": { "type": "noop", "payload": "x" } }), ErrorCode::InvalidField, "on_complete.job.payload"),
            (json!({ "job": { "type": "noop", "payload": 3 } }), ErrorCode::InvalidField, "on_complete.job.payload"),
            (
                json!({ "job": { "type": "noop", "payload": { "callback": 1 } } }),
                ErrorCode::InvalidField,
                "on_complete.job.payload.callback",
            ),
            (
                json!({ "job": { "type": "noop", "payload": { "b": big } } }),
                ErrorCode::InvalidField,
                "on_complete.job.payload",
            ),
            (
                json!({ "job": { "type": "webhook", "payload": {} } }),
                ErrorCode::InvalidField,
                "on_complete.job.payload.url",
            ),
            (
                json!({ "job": { "type": "sleep", "payload": { "ms": "x" } } }),
                ErrorCode::InvalidField,
                "on_complete.job.payload.ms",
            ),
        ];
        for (cb, code, field) in table {
            for which in ["on_complete", "on_fail"] {
                let e = enqueue(json!({ "type": "noop", which: cb })).expect_err(&cb.to_string());
                let want = field.replacen("on_complete", which, 1);
                assert_eq!((e.code, e.field.as_deref()), (code, Some(want.as_str())), "{which} {cb}: {e}");
                assert!(e.message.starts_with(&want), "the message names the field: {e}");
            }
        }
    }

    /// Callbacks belong to an enqueue's own job: the parse of the others (a schedule's job, a
    /// workflow step's child, a callback job) refuses them, naming the field.
    #[test]
    fn jobs_other_than_an_enqueues_take_no_callbacks() {
        let body = json!({ "type": "noop", "on_complete": { "url": "https://x.example/" } });
        let e = parse_spec(&body, NOW).expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("on_complete"));
        let e = crate::schedule::parse_job(&body, NOW, &Types::builtins()).expect_err("refused");
        assert!(e.field.as_deref().is_some_and(|f| f.ends_with("on_complete")), "{e}");
    }

    /// The checks an enqueue's job passes, its callbacks pass too, named by their field.
    #[test]
    fn outbound_namespace_and_schema_checks_reach_the_callbacks() {
        let none = Allow::default();
        let s = enqueue(json!({ "type": "noop", "on_complete": { "url": "http://169.254.169.254/latest" } }))
            .expect("well-formed");
        let e = check_outbound(&s, &none).expect_err("a private target");
        assert_eq!(e.field.as_deref(), Some("on_complete.url"), "{e}");
        let s = enqueue(json!({ "type": "noop",
            "on_fail": { "job": { "type": "http.request", "payload": { "url": "http://localhost/" } } } }))
        .expect("well-formed");
        let e = check_outbound(&s, &none).expect_err("a local name");
        assert_eq!(e.field.as_deref(), Some("on_fail.job.payload.url"), "{e}");
        let s = enqueue(json!({ "type": "noop", "on_fail": { "job": { "type": "noop", "tags": ["schedule:x"] } } }))
            .expect("well-formed");
        let e = check_user_namespace(&s).expect_err("a schedule's tag");
        assert_eq!(e.field.as_deref(), Some("on_fail.job.tags"), "{e}");
        // A schema that allows no other property refuses the payload the callback will have.
        let types = Types::parse(
            &json!({
                "strict": { "lane": "native", "schema": { "type": "object", "additionalProperties": false,
                            "properties": { "w": { "type": "integer" } } } },
                "open": { "lane": "native", "schema": { "type": "object", "required": ["w"],
                          "properties": { "w": { "type": "integer" }, "callback": { "type": "object" } } } }
            })
            .to_string(),
            &none,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let strict = json!({ "type": "noop", "on_complete": { "job": { "type": "strict", "payload": { "w": 1 } } } });
        let e = parse_enqueue_in(&strict, NOW, &types).expect_err("refused");
        assert!(e.field.as_deref().is_some_and(|f| f.starts_with("/on_complete/job/payload")), "{e}");
        let bad = json!({ "type": "noop", "on_complete": { "job": { "type": "open", "payload": { "w": "x" } } } });
        let e = parse_enqueue_in(&bad, NOW, &types).expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("/on_complete/job/payload/w"), "{e}");
        let good = json!({ "type": "noop", "on_complete": { "job": { "type": "open", "payload": { "w": 1 } } } });
        parse_enqueue_in(&good, NOW, &types).unwrap_or_else(|e| panic!("{e}"));
    }
}
