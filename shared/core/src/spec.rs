//! Job specs: the registry of job types and the validation of an enqueue request into a new
//! [`Job`]. Every problem is reported as an [`ApiError`] naming the field; nothing is
//! silently dropped (unknown fields are refused, so a typo never goes unnoticed).

use serde_json::{Map, Value};

use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::job::{Job, JobState, Lane};
use crate::machine::Effect;
use crate::retry::Backoff;

/// Largest serialized payload: the Cloudflare Queues message limit.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Largest serialized `metadata`.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Longest accepted delay or distance of `run_at` into the future: 365 days.
pub const MAX_DELAY_MS: u64 = 365 * 86_400_000;
pub const MAX_TAGS: usize = 20;
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Edge-lane attempts run inside a queue consumer invocation, which Cloudflare limits to
/// 15 minutes of wall time.
pub const MAX_EDGE_TIMEOUT_MS: u64 = 15 * 60_000;
pub const MAX_NATIVE_TIMEOUT_MS: u64 = 24 * 3_600_000;

pub use crate::types::TypeDef as JobType;
use crate::types::Types;

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
}

const FIELDS: &[&str] = &[
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
];

/// Longest duration text accepted; anything longer is refused before it reaches the parser.
const MAX_DURATION_LEN: usize = 64;

/// Parses a duration: a non-negative integer of milliseconds, or a string in humantime's
/// syntax such as `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"` or `"1h 30m"`. `None` for
/// anything else, including durations that do not fit in u64 milliseconds. Total: no input
/// panics.
pub fn parse_duration(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s.len() <= MAX_DURATION_LEN => {
            let d = humantime::parse_duration(s.trim()).ok()?;
            u64::try_from(d.as_millis()).ok()
        }
        _ => None,
    }
}

fn duration_field(obj: &Map<String, Value>, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match parse_duration(v) {
            Some(ms) if (min..=max).contains(&ms) => Ok(Some(ms)),
            Some(_) => Err(ApiError::field(name, format!("must be between {min} ms and {max} ms"))),
            None => {
                Err(ApiError::field(name, "must be milliseconds (integer) or a duration like \"30s\", \"5m\", \"2h\""))
            }
        },
    }
}

/// Validates an enqueue request body against the built-in types only (tests, tools).
pub fn parse_spec(body: &Value, now: u64) -> Result<JobSpec, ApiError> {
    parse_spec_in(body, now, &Types::builtins())
}

/// Validates an enqueue request body (already parsed as JSON) at time `now` (ms) against the
/// deployment's job `types`.
pub fn parse_spec_in(body: &Value, now: u64, types: &Types) -> Result<JobSpec, ApiError> {
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
    validate_payload(&jt, &payload)?;
    let size = serde_json::to_string(&payload).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > MAX_PAYLOAD_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("payload is {size} bytes serialized; the limit is {MAX_PAYLOAD_BYTES}"),
        ));
    }
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
                    Value::String(s) if !s.is_empty() && s.len() <= 64 && !s.contains(',') => tags.push(s.clone()),
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
    Ok(JobSpec { job_type: jt, payload, idempotency_key, run_at, max_attempts, backoff, timeout_ms, tags, metadata })
}

/// Type-specific payload rules, checked at enqueue so a job that can never run is refused
/// up front instead of dying later.
fn validate_payload(jt: &JobType, payload: &Value) -> Result<(), ApiError> {
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
    match jt.name.as_str() {
        "webhook" | "http.request" => {
            let url = payload.get("url").and_then(Value::as_str).unwrap_or("");
            let parsed = url::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
            if parsed.is_none_or(|u| u.host().is_none()) || url.len() > crate::outbound::MAX_URL_BYTES {
                return Err(ApiError::field(
                    "payload.url",
                    format!("must be an http:// or https:// URL of at most {} bytes", crate::outbound::MAX_URL_BYTES),
                ));
            }
            if let Some(h) = payload.get("headers") {
                validate_headers(h)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
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
        let token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(ApiError::field("payload.headers", "header names must be HTTP tokens (letters, digits, -)"));
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
    if let Some(url) = spec.payload.get("url").and_then(Value::as_str)
        && matches!(spec.job_type.name.as_str(), "webhook" | "http.request")
    {
        crate::outbound::check_url(url, allow).map_err(|e| ApiError::field("payload.url", e))?;
    }
    Ok(())
}

pub(crate) fn parse_backoff(v: Option<&Value>, default: Backoff) -> Result<Backoff, ApiError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::field("backoff", "must be an object with base, factor and cap"));
        }
    };
    if let Some(k) = obj.keys().find(|k| !["base", "factor", "cap"].contains(&k.as_str())) {
        return Err(ApiError::field(&format!("backoff.{k}"), "unknown field"));
    }
    let base_ms =
        duration_field(obj, "base", 0, 86_400_000).map_err(|e| prefix("backoff", e))?.unwrap_or(default.base_ms);
    let cap_ms =
        duration_field(obj, "cap", 0, 7 * 86_400_000).map_err(|e| prefix("backoff", e))?.unwrap_or(default.cap_ms);
    let factor = match obj.get("factor") {
        None | Some(Value::Null) => default.factor,
        Some(v) => match v.as_f64() {
            Some(f) if (1.0..=10.0).contains(&f) => f,
            _ => {
                return Err(ApiError::field("backoff.factor", "must be a number from 1 to 10"));
            }
        },
    };
    if cap_ms < base_ms {
        return Err(ApiError::field("backoff.cap", "must not be smaller than backoff.base"));
    }
    Ok(Backoff { base_ms, factor, cap_ms })
}

fn prefix(parent: &str, e: ApiError) -> ApiError {
    match e.field {
        Some(f) => ApiError::field(
            &format!("{parent}.{f}"),
            e.message.split_once(": ").map_or(e.message.as_str(), |(_, m)| m).to_owned(),
        ),
        None => e,
    }
}

impl JobSpec {
    /// Builds the new job with id `id` at `now`, and says what the shard must do next.
    pub fn into_job(self, id: JobId, now: u64) -> (Job, Effect) {
        let (state, run_at, effect) = match self.run_at {
            Some(t) if t > now => (JobState::Scheduled, t, Effect::Alarm(t)),
            _ => (JobState::Queued, now, Effect::Enqueue),
        };
        let job = Job {
            id,
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
        ];
        for (body, code, field) in table {
            let e = parse_spec(&body, NOW).expect_err(&body.to_string());
            assert_eq!(e.code, code, "{body}: {e}");
            assert_eq!(e.field.as_deref(), field, "{body}: {e}");
        }
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
        ] {
            assert_eq!(parse_duration(&v), want, "{v}");
        }
    }
}
