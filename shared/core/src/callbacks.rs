//! Completion callbacks (#30): what a job enqueues when it ends, and what a batch enqueues
//! once every one of its jobs has. A callback is either a URL (`{"url": "https://...",
//! "headers": {...}}`: a `webhook` job to it, signed and retried like any) or a job spec
//! (`{"job": {...}}`: that job, its payload given the key `"callback"`). The edge validates
//! it completely with its job ([`parse`]), gives it its id and seals its header values, and
//! the job carries it as a [`Callback`] template; the job's shard inserts it, in the
//! transaction that ends the job, with the finished job's [`job_summary`] merged in
//! ([`Callback::fire`]). Nothing here does I/O.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::id::JobId;
use crate::job::{Job, JobState};
use crate::machine::Effect;
use crate::tenant::Tenant;
use crate::time::format_rfc3339;

/// Largest serialized payload of a callback job as enqueued (its job carries it until it
/// ends, and every read of that job with it): 16 KiB. The finished job's summary is added
/// when it fires.
pub const MAX_CALLBACK_PAYLOAD_BYTES: usize = 16 * 1024;

/// The key a job-spec callback's payload gets the summary under.
pub const PAYLOAD_KEY: &str = "callback";

pub use crate::callback::{BatchOpen, Callback, Kind};

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

/// `payload` with `summary` where the callback's kind puts it: a URL callback's webhook
/// body, a job callback's `"callback"` key.
pub(crate) fn merged(payload: &Value, kind: Kind, summary: Value) -> Value {
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
            trace: None,
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
    use crate::error::ApiError;
    use crate::spec::{CallbackSpec, parse_callback as parse};
    use crate::types::Types;

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
