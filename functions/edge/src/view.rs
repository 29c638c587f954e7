//! What the public API shows of a job: everything but the values of `payload.headers`, which
//! appear as `[redacted]` (they are sealed at rest and opened only where a request is made).

use edgejobs_core::seal::{self, PREFIX};
use edgejobs_core::time::format_rfc3339;
use edgejobs_core::{Job, JobState, Lane};
use serde_json::Value;
use serde_json::value::RawValue;

/// A job as the API shows it. Every field is named, so a field added to the stored job
/// does not compile until it is shown here (or left out on purpose).
pub fn job(mut job: Job) -> edgejobs_api::Job {
    seal::redact_headers(&mut job.payload);
    let Job {
        id,
        tenant,
        job_type,
        lane,
        state,
        payload,
        attempt,
        series_base,
        max_attempts,
        backoff,
        timeout_ms,
        idempotency_key,
        schedule,
        rate_group,
        tags,
        metadata,
        created_at,
        updated_at,
        run_at,
        started_at,
        finished_at,
        heartbeat_at,
        result,
        progress,
        last_error,
        lease_lost_attempt,
        cancel_requested,
        stream_entry,
        epoch,
        attempts,
        // The holder's credential: only the consumer's start answer carries it.
        lease: _,
        flow,
        waiting_for,
        steps,
        free_attempts,
        parent,
        on_complete,
        on_fail,
        batch,
        // Whether its batch counted its end: the shard's bookkeeping.
        batch_counted: _,
        trace,
        // The shard's working copy of the job's stream, never stored or shown.
        tape: _,
    } = job;
    edgejobs_api::Job {
        id: id.as_str().to_owned(),
        tenant: tenant.to_string(),
        job_type,
        lane: lane_of(lane),
        state: state_of(state),
        payload,
        attempt,
        series_base,
        max_attempts,
        backoff: edgejobs_api::Backoff { base_ms: backoff.base_ms, factor: backoff.factor, cap_ms: backoff.cap_ms },
        timeout_ms,
        idempotency_key,
        schedule,
        rate_group,
        tags,
        metadata,
        created_at: format_rfc3339(created_at),
        updated_at: format_rfc3339(updated_at),
        run_at: format_rfc3339(run_at),
        started_at: started_at.map(format_rfc3339),
        finished_at: finished_at.map(format_rfc3339),
        heartbeat_at: heartbeat_at.map(format_rfc3339),
        result,
        progress,
        last_error,
        lease_lost_attempt,
        cancel_requested,
        stream_entry: stream_entry.map(|e| edgejobs_api::StreamEntry { attempt: e.attempt, entry: e.entry }),
        epoch,
        attempts: attempts
            .into_iter()
            .map(|a| edgejobs_api::AttemptRecord {
                attempt: a.attempt,
                started_at: format_rfc3339(a.started_at),
                ended_at: format_rfc3339(a.ended_at),
                duration_ms: a.duration_ms,
                outcome: a.outcome,
                error: a.error,
            })
            .collect(),
        flow: flow.map(flow_view),
        waiting_for,
        steps: steps.into_iter().map(step_view).collect(),
        free_attempts,
        parent: parent.map(|p| edgejobs_api::JobParent { job: p.job.to_string(), step: p.step }),
        on_complete: on_complete.map(|c| callback_view(*c)),
        on_fail: on_fail.map(|c| callback_view(*c)),
        batch,
        trace: trace.map(|t| edgejobs_api::JobTrace { traceparent: t.traceparent(), tracestate: t.state }),
        // Set by the enqueue's answer (see `flagged`), never on a read.
        debounced: None,
        throttled: None,
    }
}

/// A completion callback as the API shows it (#30): every field named, header values
/// `[redacted]`.
fn callback_view(c: edgejobs_core::callbacks::Callback) -> edgejobs_api::JobCallback {
    use edgejobs_core::callbacks::{Callback, Kind};
    let Callback {
        kind,
        id,
        job_type,
        lane,
        mut payload,
        max_attempts,
        backoff,
        timeout_ms,
        tags,
        metadata,
        rate_group,
        delay_ms,
        fired_at,
    } = c;
    seal::redact_headers(&mut payload);
    edgejobs_api::JobCallback {
        kind: match kind {
            Kind::Url => "url".to_owned(),
            Kind::Job => "job".to_owned(),
        },
        id: id.to_string(),
        job_type,
        lane: lane_of(lane),
        payload,
        max_attempts,
        backoff: edgejobs_api::Backoff { base_ms: backoff.base_ms, factor: backoff.factor, cap_ms: backoff.cap_ms },
        timeout_ms,
        tags,
        metadata,
        rate_group,
        delay_ms,
        fired_at: fired_at.map(format_rfc3339),
    }
}

/// A recorded workflow step as the API shows it: its result's size, not the result.
fn step_view(s: edgejobs_core::workflow::Step) -> edgejobs_api::Step {
    edgejobs_api::Step {
        name: s.name,
        kind: s.kind.as_str().to_owned(),
        state: s.state.as_str().to_owned(),
        attempts: s.attempts,
        started_at: format_rfc3339(s.started_at),
        ended_at: s.ended_at.map(format_rfc3339),
        until: s.until.filter(|u| *u < edgejobs_core::workflow::NEVER).map(format_rfc3339),
        result_bytes: s.result.map(|r| serde_json::to_string(&r).map_or(0, |t| t.len() as u64)),
        error: s.error,
        event: s.wait.map(|w| w.event),
        children: s.children.into_iter().map(|c| c.id.to_string()).collect(),
    }
}

/// A job's flow control as the API shows it: what it asked, not where it stands in the
/// gate (`waiting_for` says that).
fn flow_view(f: edgejobs_core::flow::Flow) -> edgejobs_api::Flow {
    use edgejobs_core::flow::{Flow, OnLimit};
    let Flow { concurrency, rate, priority, debounce, throttle, held: _, admitted: _, spot: _ } = f;
    edgejobs_api::Flow {
        concurrency: concurrency.into_iter().map(|c| edgejobs_api::FlowLimit { key: c.key, limit: c.limit }).collect(),
        rate: rate.map(|r| edgejobs_api::FlowRate { key: r.key, limit: r.limit, period_ms: r.period_ms }),
        priority,
        debounce: debounce.map(|d| edgejobs_api::FlowDebounce {
            key: d.key,
            period_ms: d.period_ms,
            max_wait_ms: d.max_wait_ms,
        }),
        throttle: throttle.map(|t| edgejobs_api::FlowThrottle {
            key: t.key,
            limit: t.limit,
            period_ms: t.period_ms,
            on_limit: match t.on_limit {
                OnLimit::Drop => "drop".to_owned(),
                OnLimit::Reject => "reject".to_owned(),
            },
        }),
    }
}

/// A lane as the API names it.
pub fn lane_of(lane: Lane) -> edgejobs_api::Lane {
    match lane {
        Lane::Edge => edgejobs_api::Lane::Edge,
        Lane::Native => edgejobs_api::Lane::Native,
    }
}

/// A state as the API names it.
pub fn state_of(state: JobState) -> edgejobs_api::JobState {
    match state {
        JobState::Queued => edgejobs_api::JobState::Queued,
        JobState::Scheduled => edgejobs_api::JobState::Scheduled,
        JobState::Active => edgejobs_api::JobState::Active,
        JobState::Completed => edgejobs_api::JobState::Completed,
        JobState::Dead => edgejobs_api::JobState::Dead,
        JobState::Cancelled => edgejobs_api::JobState::Cancelled,
    }
}

/// A schedule as the API shows it: every field named (a field added to the stored schedule
/// does not compile until it is shown here), times as RFC 3339, header values of its job
/// spec `[redacted]`, each run with its job's state (`deleted` once retention removed it).
pub fn schedule(shown: edgejobs_core::protocol::ScheduleShown) -> edgejobs_api::ScheduleView {
    use edgejobs_api::{CatchUp, Overlap, RunKind, ScheduleRunView};
    use edgejobs_core::schedule as core;
    let edgejobs_core::protocol::ScheduleShown { schedule, run_states, overdue, upcoming } = shown;
    let core::Schedule {
        name,
        cron,
        timezone,
        mut job,
        overlap,
        catch_up,
        paused,
        starts_at,
        ends_at,
        created_at,
        updated_at,
        next_at,
        last_tick,
        waiting_tick,
        paused_at,
        runs,
        runs_total,
        skips_total,
        trace,
    } = schedule;
    if let Some(p) = job.get_mut("payload") {
        seal::redact_headers(p);
    }
    let time = |t: Option<u64>| t.map(format_rfc3339);
    let runs = runs
        .into_iter()
        .zip(run_states.into_iter().chain(std::iter::repeat(None)))
        .map(|(r, state)| ScheduleRunView {
            tick: format_rfc3339(r.tick),
            at: format_rfc3339(r.at),
            job_id: r.job_id.to_string(),
            kind: match r.kind {
                core::RunKind::Tick => RunKind::Tick,
                core::RunKind::CatchUp => RunKind::CatchUp,
                core::RunKind::Trigger => RunKind::Trigger,
            },
            state: Some(state.map_or("deleted", |s| s.as_str()).to_owned()),
        })
        .collect();
    edgejobs_api::ScheduleView {
        name,
        cron,
        timezone,
        job: match job {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        overlap: match overlap {
            core::Overlap::Allow => Overlap::Allow,
            core::Overlap::Skip => Overlap::Skip,
            core::Overlap::QueueOne => Overlap::QueueOne,
        },
        catch_up: match catch_up {
            core::CatchUp::None => CatchUp::None,
            core::CatchUp::Last => CatchUp::Last,
        },
        paused,
        starts_at: time(starts_at),
        ends_at: time(ends_at),
        created_at: format_rfc3339(created_at),
        updated_at: format_rfc3339(updated_at),
        next_at: time(next_at),
        last_tick: time(last_tick),
        waiting_tick: time(waiting_tick),
        paused_at: time(paused_at),
        runs,
        runs_total,
        skips_total,
        overdue,
        upcoming: upcoming.map(|u| u.into_iter().map(format_rfc3339).collect()),
        trace: trace.map(|t| edgejobs_api::JobTrace { traceparent: t.traceparent(), tracestate: t.state }),
    }
}

/// Stored job JSON as the API shows it; passed through untouched unless it holds a sealed
/// value (only jobs with headers do), so the common case costs no parsing.
pub fn raw(doc: Box<RawValue>) -> Box<RawValue> {
    // A running native job holds its consumer's lease token, which the API never shows;
    // a flow-controlled job, where it stands in its shard's gate (`waiting_for` says it);
    // a job of a batch, whether the batch counted its end.
    let d = doc.get();
    if !d.contains(PREFIX) && !d.contains(LEASE_FIELD) && !d.contains(FLOW_FIELD) && !d.contains(BATCH_COUNTED_FIELD) {
        return doc;
    }
    let Ok(mut v) = serde_json::from_str::<Value>(doc.get()) else { return doc };
    if let Some(o) = v.as_object_mut() {
        o.remove("lease");
        o.remove("batch_counted");
        strip_gate_state(o);
        redact_all_headers(o);
    }
    serde_json::value::to_raw_value(&v).unwrap_or(doc)
}

/// How a stored job's batch bookkeeping starts in its JSON (compact).
const BATCH_COUNTED_FIELD: &str = "\"batch_counted\":";

/// Redacts the header values of a stored job's payload and of its callbacks' (#30).
fn redact_all_headers(job: &mut serde_json::Map<String, Value>) {
    if let Some(p) = job.get_mut("payload") {
        seal::redact_headers(p);
    }
    for cb in ["on_complete", "on_fail"] {
        if let Some(p) = job.get_mut(cb).and_then(|c| c.get_mut("payload")) {
            seal::redact_headers(p);
        }
    }
}

/// Removes where a job stands in its shard's flow gate (`flow.held`, `admitted`, `spot`):
/// the API shows what the job asked, and `waiting_for`.
fn strip_gate_state(job: &mut serde_json::Map<String, Value>) {
    if let Some(f) = job.get_mut("flow").and_then(Value::as_object_mut) {
        for internal in ["held", "admitted", "spot"] {
            f.remove(internal);
        }
    }
}

/// How a stored job's flow control starts in its JSON (compact).
const FLOW_FIELD: &str = "\"flow\":{";

/// An enqueue's answer when a debounce or throttle answered with the key's existing job:
/// the job as [`raw`] shows it, with `"debounced": true` or `"throttled": true`.
pub fn flagged(doc: Box<RawValue>, outcome: edgejobs_core::protocol::FlowOutcome) -> Box<RawValue> {
    let doc = raw(doc);
    let Ok(mut v) = serde_json::from_str::<Value>(doc.get()) else { return doc };
    let flag = match outcome {
        edgejobs_core::protocol::FlowOutcome::Debounced => "debounced",
        _ => "throttled",
    };
    if let Some(o) = v.as_object_mut() {
        o.insert(flag.to_owned(), Value::Bool(true));
    }
    serde_json::value::to_raw_value(&v).unwrap_or(doc)
}

/// How a stored job's lease token starts in its JSON (compact, as serde_json writes it).
const LEASE_FIELD: &str = "\"lease\":";

/// Stored job JSON as the API shows it, keeping only the parts a listing asked for.
pub fn listed(doc: &RawValue, include: edgejobs_core::wire::Include) -> Option<Value> {
    let mut v: Value = serde_json::from_str(doc.get()).ok()?;
    let obj = v.as_object_mut()?;
    for path in include.dropped_paths() {
        obj.remove(path.trim_start_matches("$."));
    }
    obj.remove("lease");
    // A summary leaves out a job's callbacks (#30; `GET /v1/jobs/{id}` shows them) and its
    // batch bookkeeping.
    for internal in ["on_complete", "on_fail", "batch_counted"] {
        obj.remove(internal);
    }
    strip_gate_state(obj);
    // A job stored before tenants has none in its document: it is the default tenant's.
    obj.entry("tenant").or_insert_with(|| Value::String(edgejobs_core::tenant::Tenant::DEFAULT.to_owned()));
    if let Some(p) = obj.get_mut("payload") {
        seal::redact_headers(p);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgejobs_core::JobId;
    use serde_json::json;

    /// The API's job writes exactly what the stored job writes (which enqueue replies pass
    /// through unparsed), every optional field set.
    #[test]
    fn the_api_job_writes_what_the_stored_job_writes() {
        let mut stored = json!({
            "id": JobId::new(1, 1_800_000_000_000, 7).as_str(), "tenant": "acme", "type": "webhook", "lane": "native", "state": "dead",
            "payload": { "url": "https://example.com/" }, "attempt": 2, "series_base": 1, "max_attempts": 3,
            "backoff": { "base_ms": 1000, "factor": 2.5, "cap_ms": 60000 }, "timeout_ms": 30000,
            "idempotency_key": "k", "schedule": "nightly", "rate_group": "g", "tags": ["a", "b"], "metadata": { "m": [1] },
            "created_at": "2027-01-15T08:00:00.000Z", "updated_at": "2027-01-15T08:00:02.500Z",
            "run_at": "2027-01-15T08:00:00.000Z", "started_at": "2027-01-15T08:00:01.000Z",
            "finished_at": "2027-01-15T08:00:02.500Z", "heartbeat_at": "2027-01-15T08:00:02.000Z",
            "result": { "r": true }, "progress": 0.5, "last_error": "boom", "lease_lost_attempt": 1,
            "cancel_requested": true, "stream_entry": { "attempt": 2, "entry": "1-0" }, "epoch": 5,
            "attempts": [{ "attempt": 1, "started_at": "2027-01-15T08:00:00.000Z", "ended_at": "2027-01-15T08:00:01.000Z",
                           "duration_ms": 1000, "outcome": "failed", "error": "boom" }]
        });
        // Completion callbacks (#30), each form, every optional field set on one.
        stored["on_complete"] = json!({ "kind": "url", "id": JobId::new(1, 1_800_000_000_000, 8).as_str(), "type": "webhook",
                             "lane": "edge", "payload": { "url": "https://example.com/cb", "headers": { "a": "[redacted]" } },
                             "max_attempts": 5, "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 },
                             "timeout_ms": 30000 });
        stored["on_fail"] = json!({ "kind": "job", "id": JobId::new(1, 1_800_000_000_000, 9).as_str(), "type": "sleep",
                         "lane": "native", "payload": { "ms": 1 }, "max_attempts": 2,
                         "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 }, "timeout_ms": 60000,
                         "tags": ["cb"], "metadata": { "m": 2 }, "rate_group": "g", "delay_ms": 5000,
                         "fired_at": "2027-01-15T08:00:02.500Z" });
        stored["batch"] = json!("b01000000000000000000000000001");
        let core: Job = serde_json::from_value(stored.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::to_value(&core).ok(), Some(stored.clone()), "the sample is a stored job");
        assert_eq!(serde_json::to_value(job(core)).ok(), Some(stored));
    }

    /// A job's callbacks (#30) are shown with their header values redacted, whichever way
    /// the job is read; its batch bookkeeping never is.
    #[test]
    fn callbacks_show_without_their_header_values() {
        let sealed = format!("{PREFIX}k1:c2VhbGVk");
        let stored = json!({
            "id": JobId::new(1, 1_800_000_000_000, 7).as_str(), "type": "noop", "lane": "edge", "state": "dead",
            "payload": {}, "attempt": 1, "series_base": 0, "max_attempts": 1,
            "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 60000 }, "timeout_ms": 30000,
            "created_at": "2027-01-15T08:00:00.000Z", "updated_at": "2027-01-15T08:00:00.000Z",
            "run_at": "2027-01-15T08:00:00.000Z", "finished_at": "2027-01-15T08:00:00.000Z", "cancel_requested": false,
            "on_complete": { "kind": "url", "id": JobId::new(1, 1_800_000_000_000, 8).as_str(), "type": "webhook",
                             "lane": "edge", "payload": { "url": "https://example.com/cb", "headers": { "authorization": sealed } },
                             "max_attempts": 5, "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 },
                             "timeout_ms": 30000 },
            "on_fail": { "kind": "job", "id": JobId::new(1, 1_800_000_000_000, 9).as_str(), "type": "webhook",
                         "lane": "edge", "payload": { "url": "https://example.com/f", "headers": { "x-key": sealed } },
                         "max_attempts": 5, "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 },
                         "timeout_ms": 30000 },
            "batch": "b01000000000000000000000000001", "batch_counted": true
        });
        let raw_doc = RawValue::from_string(stored.to_string()).expect("json");
        let shown: Value = serde_json::from_str(raw(raw_doc).get()).expect("json");
        let core: Job = serde_json::from_value(stored.clone()).unwrap_or_else(|e| panic!("{e}"));
        let typed = serde_json::to_value(job(core)).expect("json");
        for v in [&shown, &typed] {
            assert_eq!(v["on_complete"]["payload"]["headers"]["authorization"], seal::REDACTED, "{v}");
            assert_eq!(v["on_fail"]["payload"]["headers"]["x-key"], seal::REDACTED, "{v}");
            assert_eq!(v["batch"], "b01000000000000000000000000001");
            assert!(v.get("batch_counted").is_none() && !v.to_string().contains(PREFIX), "{v}");
        }
        let listed =
            listed(&RawValue::from_string(stored.to_string()).expect("json"), Default::default()).expect("a job");
        assert!(listed.get("on_complete").is_none() && listed.get("batch_counted").is_none(), "{listed}");
        assert_eq!(listed["batch"], "b01000000000000000000000000001");
    }
}
