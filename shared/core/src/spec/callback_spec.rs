//! Completion callbacks as a job spec carries them (#30): their validation at enqueue,
//! before they have an id, and their templates once the job has one. A child of `spec`,
//! because a callback's job is itself a job spec (the firing and the summaries are in
//! [`crate::callbacks`]).

use serde_json::{Map, Value, json};

use crate::callbacks::{Callback, Kind, MAX_CALLBACK_PAYLOAD_BYTES, PAYLOAD_KEY, batch_summary, merged};
use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::spec::JobSpec;
use crate::time::format_rfc3339;
use crate::types::Types;

/// A validated callback, before it has an id: the callback job's spec (its `run_at` unset;
/// a `delay` is kept apart, counted from the firing).
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackSpec {
    /// The request field it came from (`on_complete`, `on_fail`), for the errors of the
    /// checks that come after the parse.
    pub field: String,
    pub kind: Kind,
    pub spec: JobSpec,
    pub delay_ms: u64,
}

/// Fields of the URL form.
const URL_FIELDS: &[&str] = &["url", "headers"];

/// Validates a callback (`on_complete`, `on_fail`, a batch's `on_complete`) at `now`
/// against the deployment's `types`: every check an enqueue of the callback job would pass
/// but its type's tenants, its outbound URL and its schema, which [`JobSpec`]'s checks run
/// with their job's (`spec::check_outbound`, `spec::check_schema`; the router checks the
/// tenants). Errors name the field inside the callback: `on_complete.url`,
/// `on_complete.job.type`, `/on_complete/job/payload/width` (a schema's pointer).
pub fn parse_callback(v: &Value, field: &str, now: u64, types: &Types) -> Result<CallbackSpec, ApiError> {
    let shape = || {
        ApiError::field(field, "must be {\"url\": \"https://...\", \"headers\": {...}} or {\"job\": {<a job spec>}}")
    };
    let Some(obj) = v.as_object() else { return Err(shape()) };
    let (kind, body) = match (obj.get("url"), obj.get("job")) {
        (Some(_), None) => {
            if let Some(k) = obj.keys().find(|k| !URL_FIELDS.contains(&k.as_str())) {
                return Err(ApiError::field(
                    &format!("{field}.{k}"),
                    "unknown field (a URL callback has url and headers)",
                ));
            }
            let mut payload = Map::new();
            payload.insert("url".into(), obj["url"].clone());
            if let Some(h) = obj.get("headers").filter(|h| !h.is_null()) {
                payload.insert("headers".into(), h.clone());
            }
            (Kind::Url, json!({ "type": "webhook", "payload": payload }))
        }
        (None, Some(job)) => {
            if let Some(k) = obj.keys().find(|k| k.as_str() != "job") {
                return Err(ApiError::field(&format!("{field}.{k}"), "unknown field (a job callback has job alone)"));
            }
            if !job.is_object() {
                return Err(ApiError::field(&format!("{field}.job"), "must be a job spec (an object)"));
            }
            (Kind::Job, job.clone())
        }
        _ => return Err(shape()),
    };
    let named = |e: ApiError| rename(field, kind, e);
    let given = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    // A callback job's own callbacks are refused by the parse (no chains).
    let mut spec = crate::spec::parse_spec_unchecked(&body, now, types).map_err(named)?;
    let refuse = |inner: &str, why: &str| Err(named(ApiError::field(inner, why)));
    if given("idempotency_key") {
        return refuse("idempotency_key", "a callback job takes none: its job's end creates it once");
    }
    if given("tenant") {
        return refuse("tenant", "a callback job belongs to its job's tenant");
    }
    if given("run_at") {
        return refuse("run_at", "a callback job runs when its job ends: give `delay`, counted from then");
    }
    if !spec.flow.is_empty() {
        let f = &spec.flow;
        let named = [
            ("concurrency", !f.concurrency.is_empty()),
            ("rate", f.rate.is_some()),
            ("priority", f.priority.is_some()),
            ("debounce", f.debounce.is_some()),
            ("throttle", f.throttle.is_some()),
        ];
        let inner = named.iter().find(|(_, set)| *set).map_or("concurrency", |(n, _)| n);
        let whose = if given(inner) { "" } else { " (its type declares it)" };
        return refuse(inner, &format!("a callback job lives in its job's shard and takes no flow control{whose}"));
    }
    match (&mut spec.payload, kind) {
        // An absent payload of a job callback is an empty object, which gets the summary.
        (p @ Value::Null, Kind::Job) => *p = Value::Object(Map::new()),
        (Value::Object(p), Kind::Job) if p.contains_key(PAYLOAD_KEY) => {
            return refuse("payload.callback", "is set when the callback fires (the job's summary)");
        }
        (Value::Object(_), _) => {}
        (_, _) => return refuse("payload", "must be an object: the callback adds its key \"callback\""),
    }
    let size = serde_json::to_string(&spec.payload).map_or(usize::MAX, |s| s.len());
    if size > MAX_CALLBACK_PAYLOAD_BYTES {
        return refuse(
            "payload",
            &format!(
                "is {size} bytes serialized; a callback's is at most {MAX_CALLBACK_PAYLOAD_BYTES} (its job carries it)"
            ),
        );
    }
    let delay_ms = spec.run_at.map_or(0, |t| t.saturating_sub(now));
    spec.run_at = None;
    Ok(CallbackSpec { field: field.to_owned(), kind, spec, delay_ms })
}

/// An error about a callback job (`payload.url`, `type`, `/payload/w`) renamed to the
/// request's field: `on_complete.url` for a URL callback's own parts, else
/// `on_complete.job.<field>` (`/on_complete/job/...` for a JSON pointer).
fn rename(field: &str, kind: Kind, e: ApiError) -> ApiError {
    let inner = match (&e.field, e.code) {
        (Some(f), _) => f.clone(),
        (None, ErrorCode::UnknownType) => "type".to_owned(),
        (None, _) => {
            let at = match kind {
                Kind::Url => field.to_owned(),
                Kind::Job => format!("{field}.job"),
            };
            return ApiError { message: format!("{at}: {}", e.message), ..e };
        }
    };
    let named = match (kind, inner.as_str()) {
        (Kind::Url, "payload.url") => format!("{field}.url"),
        (Kind::Url, "payload.headers") => format!("{field}.headers"),
        (Kind::Url, "payload") => field.to_owned(),
        (Kind::Url, other) if other.starts_with('/') => format!("/{field}{other}"),
        (Kind::Job, other) if other.starts_with('/') => format!("/{field}/job{other}"),
        (Kind::Url, other) => format!("{field}.{other}"),
        (Kind::Job, other) => format!("{field}.job.{other}"),
    };
    let message = e.message.strip_prefix(&format!("{inner}: ")).unwrap_or(&e.message).to_owned();
    ApiError { code: e.code, message: format!("{named}: {message}"), field: Some(named) }
}

impl CallbackSpec {
    /// An error of a later check of the callback job (its outbound URL, its schema, its
    /// type's tenants) renamed to the request's field (see [`parse_callback`]).
    pub fn rename(&self, e: ApiError) -> ApiError {
        rename(&self.field, self.kind, e)
    }

    /// The payload the callback job will have when it fires, with a summary of the shape
    /// it gets (its values made up): what its type's schema must accept.
    pub fn payload_when_fired(&self, batch: bool) -> Value {
        let sample = if batch {
            batch_summary("b000000000000000000000000000000", 1, 1, 0, 0)
        } else {
            json!({ "type": "job.completed", "job": {
                "id": "j000000000000000000000000000000", "type": "noop", "state": "completed", "attempt": 1,
                "result": null, "last_error": null, "metadata": {}, "tags": [],
                "finished_at": format_rfc3339(0) } })
        };
        merged(&self.spec.payload, self.kind, sample)
    }

    /// The template its job carries, with its id.
    pub fn template(self, id: JobId) -> Callback {
        let CallbackSpec { kind, spec, delay_ms, .. } = self;
        Callback {
            kind,
            id,
            job_type: spec.job_type.name.clone(),
            lane: spec.job_type.lane,
            payload: spec.payload,
            max_attempts: spec.max_attempts,
            backoff: spec.backoff,
            timeout_ms: spec.timeout_ms,
            tags: spec.tags,
            metadata: spec.metadata,
            rate_group: spec.job_type.rate_group.clone(),
            delay_ms,
            fired_at: None,
        }
    }
}
