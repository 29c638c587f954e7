//! What the public API shows of a job: everything but the values of `payload.headers`, which
//! appear as `[redacted]` (they are sealed at rest and opened only where a request is made).

use edgejobs_core::Job;
use edgejobs_core::seal::{self, PREFIX};
use serde_json::Value;
use serde_json::value::RawValue;

/// A job as the API shows it.
pub fn job(mut job: Job) -> Job {
    seal::redact_headers(&mut job.payload);
    job
}

/// Stored job JSON as the API shows it; passed through untouched unless it holds a sealed
/// value (only jobs with headers do), so the common case costs no parsing.
pub fn raw(doc: Box<RawValue>) -> Box<RawValue> {
    if !doc.get().contains(PREFIX) {
        return doc;
    }
    let Ok(mut v) = serde_json::from_str::<Value>(doc.get()) else { return doc };
    if let Some(p) = v.get_mut("payload") {
        seal::redact_headers(p);
    }
    serde_json::value::to_raw_value(&v).unwrap_or(doc)
}

/// Stored job JSON as the API shows it, keeping only the parts a listing asked for.
pub fn listed(doc: &RawValue, include: edgejobs_core::wire::Include) -> Option<Value> {
    let mut v: Value = serde_json::from_str(doc.get()).ok()?;
    let obj = v.as_object_mut()?;
    for path in include.dropped_paths() {
        obj.remove(path.trim_start_matches("$."));
    }
    if let Some(p) = obj.get_mut("payload") {
        seal::redact_headers(p);
    }
    Some(v)
}
