//! Completion callbacks (#30): what a job enqueues when it ends, and what a batch enqueues
//! once every one of its jobs has. A callback is either a URL (`{"url": "https://...",
//! "headers": {...}}`: a `webhook` job to it, signed and retried like any) or a job spec
//! (`{"job": {...}}`: that job, its payload given the key `"callback"`). The edge validates
//! it completely with its job ([`parse`]), gives it its id and seals its header values, and
//! the job carries it as a [`Callback`] template; the job's shard inserts it, in the
//! transaction that ends the job, with the finished job's [`job_summary`] merged in
//! ([`Callback::fire`]). Nothing here does I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::job::{Job, JobState, Lane};
use crate::machine::Effect;
use crate::retry::Backoff;
use crate::spec::JobSpec;
use crate::tenant::Tenant;
use crate::time::{format_rfc3339, rfc3339_opt};
use crate::types::Types;

/// Largest serialized payload of a callback job as enqueued (its job carries it until it
/// ends, and every read of that job with it): 16 KiB. The finished job's summary is added
/// when it fires.
pub const MAX_CALLBACK_PAYLOAD_BYTES: usize = 16 * 1024;

/// The key a job-spec callback's payload gets the summary under.
pub const PAYLOAD_KEY: &str = "callback";

/// The two forms of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `webhook` job to a URL: the summary is its body.
    Url,
    /// A job spec: the summary goes into its payload under [`PAYLOAD_KEY`].
    Job,
}

/// Which end of a job a callback answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// `on_complete`: the job completed.
    Complete,
    /// `on_fail`: the job died (its attempts spent, or a permanent error).
    Fail,
}

impl Which {
    pub fn field(self) -> &'static str {
        match self {
            Which::Complete => "on_complete",
            Which::Fail => "on_fail",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Which::Complete => "complete",
            Which::Fail => "fail",
        }
    }
}

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

/// A callback job ready to insert, as its job (or its batch's row) carries it: everything
/// the job will be but its times, its tenant (its job's) and the summary it gets. Header
/// values in `payload.headers` are sealed under `id`, which is fixed at enqueue for that
/// reason (the shard that fires it holds no key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub kind: Kind,
    /// The callback job's id, in its job's shard.
    pub id: JobId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub lane: Lane,
    pub payload: Value,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_group: Option<String>,
    /// How long after the firing the callback job first runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// When its job's shard inserted the callback job: it fires once.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A batch that `POST /v1/jobs/batch` opens with its `on_complete` (carried by the create
/// to the batch's shard, which keeps it in its `batches` table beside the counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOpen {
    /// `b` + the shard (2 hex digits) + the creation time in ms (11) + 64 random bits (16):
    /// a job id's layout, so the batch names its shard.
    pub id: String,
    pub tenant: Tenant,
    pub on_complete: Callback,
}

/// A new batch's id in `shard`, created at `now`.
pub fn batch_id(shard: u16, now: u64, rand: u64) -> String {
    let job = JobId::new(shard, now, rand);
    format!("b{}", &job.as_str()[1..])
}

/// The shard a batch id names (`None`: not a batch id).
pub fn batch_shard(id: &str) -> Option<u16> {
    let rest = id.strip_prefix('b')?;
    let as_job: JobId = format!("j{rest}").parse().ok()?;
    Some(as_job.shard())
}

/// 64 bits of SHA-256 over `parts`, each ended by a newline.
fn digest(parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    h.update(b"edgejobs/callback/v1\n");
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The id of job `parent`'s callback `which`: in the parent's shard, at the parent's
/// creation time, its random part derived from both. Deterministic, so one callback can
/// only ever be one row.
pub fn callback_id(parent: &JobId, which: Which) -> JobId {
    JobId::new(parent.shard(), parent.created_ms(), digest(&[parent.as_str(), which.tag()]))
}

/// The id of batch `batch`'s callback (in the batch's shard, at its creation time).
pub fn batch_callback_id(batch: &str) -> Option<JobId> {
    let shard = batch_shard(batch)?;
    let created: JobId = format!("j{}", batch.strip_prefix('b')?).parse().ok()?;
    Some(JobId::new(shard, created.created_ms(), digest(&[batch, "batch"])))
}

/// Fields of the URL form.
const URL_FIELDS: &[&str] = &["url", "headers"];

/// Validates a callback (`on_complete`, `on_fail`, a batch's `on_complete`) at `now`
/// against the deployment's `types`: every check an enqueue of the callback job would pass
/// but its type's tenants, its outbound URL and its schema, which [`JobSpec`]'s checks run
/// with their job's (`spec::check_outbound`, `spec::check_schema`; the router checks the
/// tenants). Errors name the field inside the callback: `on_complete.url`,
/// `on_complete.job.type`, `/on_complete/job/payload/width` (a schema's pointer).
pub fn parse(v: &Value, field: &str, now: u64, types: &Types) -> Result<CallbackSpec, ApiError> {
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
    /// type's tenants) renamed to the request's field (see [`parse`]).
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

/// `payload` with `summary` where the callback's kind puts it: a URL callback's webhook
/// body, a job callback's `"callback"` key.
fn merged(payload: &Value, kind: Kind, summary: Value) -> Value {
    let mut p = match payload {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let key = match kind {
        Kind::Url => "body",
        Kind::Job => PAYLOAD_KEY,
    };
    p.insert(key.to_owned(), summary);
    Value::Object(p)
}

impl Callback {
    /// The callback job, created at `now` for `tenant` with `summary` merged in, and what
    /// its shard must do next (send it, or arm the alarm for its delay).
    pub fn fire(&self, tenant: &Tenant, now: u64, summary: Value) -> (Job, Effect) {
        let (state, run_at, effect) = match self.delay_ms {
            0 => (JobState::Queued, now, Effect::Enqueue),
            d => (JobState::Scheduled, now.saturating_add(d), Effect::Alarm(now.saturating_add(d))),
        };
        let job = Job {
            id: self.id.clone(),
            tenant: tenant.clone(),
            job_type: self.job_type.clone(),
            lane: self.lane,
            state,
            payload: merged(&self.payload, self.kind, summary),
            attempt: 0,
            series_base: 0,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            idempotency_key: None,
            schedule: None,
            rate_group: self.rate_group.clone(),
            tags: self.tags.clone(),
            metadata: self.metadata.clone(),
            created_at: now,
            updated_at: now,
            run_at,
            started_at: None,
            finished_at: None,
            heartbeat_at: None,
            result: None,
            progress: None,
            last_error: None,
            lease_lost_attempt: None,
            cancel_requested: false,
            stream_entry: None,
            lease: None,
            epoch: 0,
            attempts: Vec::new(),
            flow: None,
            waiting_for: None,
            steps: Vec::new(),
            free_attempts: 0,
            parent: None,
            on_complete: None,
            on_fail: None,
            batch: None,
            batch_counted: false,
            tape: Default::default(),
        };
        (job, effect)
    }
}

/// What a callback of `job` (completed or dead) gets: `{"type": "job.completed" |
/// "job.failed", "job": {id, type, state, attempt, result, last_error, metadata, tags,
/// finished_at}}`.
pub fn job_summary(job: &Job) -> Value {
    let kind = if job.state == JobState::Completed { "job.completed" } else { "job.failed" };
    json!({
        "type": kind,
        "job": {
            "id": job.id.as_str(),
            "type": job.job_type,
            "state": job.state.as_str(),
            "attempt": job.attempt,
            "result": job.result,
            "last_error": job.last_error,
            "metadata": job.metadata,
            "tags": job.tags,
            "finished_at": job.finished_at.map(format_rfc3339),
        }
    })
}

/// What a batch's callback gets once every job of the batch is final.
pub fn batch_summary(id: &str, total: u64, completed: u64, dead: u64, cancelled: u64) -> Value {
    json!({
        "type": "batch.completed",
        "batch": { "id": id, "total": total, "completed": completed, "dead": dead, "cancelled": cancelled }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn parse_at(v: Value) -> Result<CallbackSpec, ApiError> {
        parse(&v, "on_complete", NOW, &Types::builtins())
    }

    #[test]
    fn ids_are_deterministic_and_live_in_the_parent_shard() {
        let parent = JobId::new(7, NOW, 42);
        let a = callback_id(&parent, Which::Complete);
        assert_eq!(a, callback_id(&parent, Which::Complete));
        assert_ne!(a, callback_id(&parent, Which::Fail));
        assert_ne!(a, callback_id(&JobId::new(7, NOW, 43), Which::Complete));
        assert_eq!((a.shard(), a.created_ms()), (7, NOW));
        let b = batch_id(3, NOW, 9);
        assert!(b.starts_with("b03") && b.len() == 30, "{b}");
        assert_eq!(batch_shard(&b), Some(3));
        assert_eq!(batch_shard("j03000000000000000000000000000"), None);
        let cb = batch_callback_id(&b).expect("a batch id");
        assert_eq!((cb.shard(), cb.created_ms()), (3, NOW));
        assert_eq!(Some(cb), batch_callback_id(&b));
    }

    #[test]
    fn a_fired_callback_carries_the_summary_where_its_kind_puts_it() {
        let url = parse_at(json!({ "url": "https://example.com/done" })).expect("valid");
        let t = url.template(JobId::new(1, NOW, 1));
        let mut parent = crate::spec::parse_spec(&json!({ "type": "noop", "tags": ["t"] }), NOW)
            .expect("valid")
            .into_job(JobId::new(1, NOW, 2), NOW)
            .0;
        parent.state = JobState::Completed;
        parent.result = Some(json!({ "ok": true }));
        parent.finished_at = Some(NOW + 5);
        let (job, effect) = t.fire(&Tenant::default(), NOW + 5, job_summary(&parent));
        assert_eq!((job.state, effect, job.job_type.as_str()), (JobState::Queued, Effect::Enqueue, "webhook"));
        assert_eq!(job.payload["url"], "https://example.com/done");
        assert_eq!(job.payload["body"]["type"], "job.completed");
        assert_eq!(job.payload["body"]["job"]["result"], json!({ "ok": true }));
        assert_eq!(job.payload["body"]["job"]["tags"], json!(["t"]));
        let spec = parse_at(json!({ "job": { "type": "noop", "payload": { "k": 1 }, "delay": "5s" } })).expect("valid");
        assert_eq!(spec.delay_ms, 5000);
        let (job, effect) = spec.template(JobId::new(1, NOW, 3)).fire(&Tenant::default(), NOW, json!({ "x": 1 }));
        assert_eq!((job.state, effect), (JobState::Scheduled, Effect::Alarm(NOW + 5000)));
        assert_eq!(job.payload, json!({ "k": 1, "callback": { "x": 1 } }));
    }
}
