//! OpenTelemetry (#32): one trace from the caller's `traceparent` through the enqueue, the
//! queue delivery, the hand-off, the attempt and the upstream call, exported by the edge
//! (OTLP/HTTP, JSON) and the consumer (OTLP/gRPC) to the stack's receiver (`otlp-local`,
//! built on the official OTLP protobuf definitions), and the upstream sees the same trace.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use edgejobs_otlp_local::model::{SpanKind, SpanView, StatusCode};
use edgejobs_tests::hooks::Reply;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, metric, unique};

pub const TESTS: &[Test] = &[
    ("tracing_one_trace_from_the_caller_to_the_upstream_call_on_the_native_lane", native_lane_trace),
    ("tracing_an_edge_webhook_without_traceparent_starts_its_own_trace", edge_lane_trace),
    ("tracing_an_invalid_traceparent_is_ignored_and_a_new_trace_started", invalid_traceparent),
    ("tracing_spans_are_dropped_and_counted_when_the_collector_refuses", collector_down),
    ("tracing_each_schedule_run_starts_a_new_trace_linked_to_the_schedule", schedule_runs),
    ("tracing_an_event_send_is_a_span_under_the_callers_trace", event_send),
];

/// The tests that read or switch the shared receiver run one at a time: the refusal test
/// would make another's spans disappear.
static RECEIVER: Mutex<()> = Mutex::new(());

/// How long a trace may take to arrive whole: the consumer exports every 200 ms, the edge
/// after each invocation.
const TRACE_WAIT: Duration = Duration::from_secs(30);

/// The receiver's spans of trace `id`, once `complete` holds for them (bounded by
/// [`TRACE_WAIT`]).
fn trace(ctx: &Ctx, id: &str, complete: impl Fn(&[SpanView]) -> bool) -> anyhow::Result<Vec<SpanView>> {
    let deadline = Instant::now() + TRACE_WAIT;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let r = ctx.http.get(format!("{}/api/traces/{id}", ctx.otlp_url)).send()?;
        if r.status() == 200 {
            let body: edgejobs_otlp_local::model::TraceResponse = r.json()?;
            last = body.spans;
            if complete(&last) {
                return Ok(last);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let names: Vec<String> = last.iter().map(|s| format!("{} ({:?}, {:?})", s.name, s.kind, s.service)).collect();
    bail!("trace {id} did not arrive whole within {TRACE_WAIT:?}; it has {names:?}")
}

/// The one span named `name` of `service` in `spans`.
fn one<'a>(spans: &'a [SpanView], service: &str, name: &str) -> anyhow::Result<&'a SpanView> {
    let found: Vec<&SpanView> =
        spans.iter().filter(|s| s.name == name && s.service.as_deref() == Some(service)).collect();
    match found.as_slice() {
        [s] => Ok(s),
        _ => bail!("expected one {name:?} span of {service}, found {}", found.len()),
    }
}

fn has(spans: &[SpanView], service: &str, name: &str) -> bool {
    spans.iter().any(|s| s.name == name && s.service.as_deref() == Some(service))
}

/// Checks that `child`'s parent is `parent`.
fn parent_of(child: &SpanView, parent: &SpanView) -> anyhow::Result<()> {
    ensure(child.parent_span_id.as_deref() == Some(parent.span_id.as_str()), || {
        format!("{:?}'s parent is {:?}, not {:?} ({})", child.name, child.parent_span_id, parent.name, parent.span_id)
    })
}

fn attr<'a>(s: &'a SpanView, key: &str) -> &'a Value {
    s.attributes.get(key).unwrap_or(&Value::Null)
}

/// A fresh caller context: trace id and parent span id, as a client's own span would be.
fn caller() -> (String, String) {
    (edgejobs_tests::stack::random_hex(16), edgejobs_tests::stack::random_hex(8))
}

/// The trace id and span id of a `traceparent` value.
fn ids(traceparent: &str) -> anyhow::Result<(&str, &str)> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    match parts.as_slice() {
        ["00", t, s, _] if t.len() == 32 && s.len() == 16 => Ok((t, s)),
        _ => bail!("not a traceparent: {traceparent:?}"),
    }
}

fn native_lane_trace(ctx: &Ctx) -> anyhow::Result<()> {
    let _one = RECEIVER.lock().unwrap_or_else(|p| p.into_inner());
    let path = format!("/{}", unique("traced"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200)]);
    let (trace_id, caller_span) = caller();
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let body =
        json!({ "type": "http.request", "payload": { "url": format!("{url}?token=secret"), "body": { "n": 1 } } });
    let r = ctx.send(
        ctx.http
            .post(ctx.url("/v1/jobs"))
            .bearer_auth(&ctx.api_key)
            .header("traceparent", &traceparent)
            .header("tracestate", "vendor=abc")
            .json(&body),
    )?;
    ensure(r.status == 201, || format!("enqueued: {} {}", r.status, r.body))?;
    let id = r.body["id"].as_str().context("id")?.to_owned();
    // The job names its enqueue span, in the caller's trace, and keeps the caller's state.
    let stored = r.body["trace"]["traceparent"].as_str().context("the job shows its trace")?;
    let (job_trace, enqueue_id) = ids(stored)?;
    ensure(job_trace == trace_id, || format!("the job continues the caller's trace: {stored}"))?;
    ensure(r.body["trace"]["tracestate"] == "vendor=abc", || format!("tracestate kept: {}", r.body))?;
    ctx.wait_state(&id, "completed", Duration::from_secs(30))?;

    let edge = "edgejobs-edge";
    let consumer = "edgejobs-consumer";
    let spans = trace(ctx, &trace_id, |s| {
        has(s, edge, "send http.request")
            && has(s, edge, "receive jobs")
            && has(s, edge, "send edgejobs:jobs")
            && has(s, consumer, "receive edgejobs:jobs")
            && has(s, consumer, "process http.request")
            && has(s, consumer, "POST")
    })?;
    // client → enqueue → delivery → hand-off → stream delivery → attempt → upstream call.
    let enqueue = one(&spans, edge, "send http.request")?;
    ensure(enqueue.parent_span_id.as_deref() == Some(caller_span.as_str()), || {
        format!("the enqueue's parent is the caller's span: {enqueue:?}")
    })?;
    ensure(enqueue.span_id == enqueue_id, || "the job's traceparent names the enqueue span".into())?;
    ensure(enqueue.kind == SpanKind::Producer, || format!("a producer span: {enqueue:?}"))?;
    ensure(attr(enqueue, "messaging.operation.type") == "send", || format!("{enqueue:?}"))?;
    let commit = one(&spans, edge, "commit")?;
    parent_of(commit, enqueue)?;
    let delivery = one(&spans, edge, "receive jobs")?;
    parent_of(delivery, enqueue)?;
    ensure(attr(delivery, "edgejobs.job.id") == id.as_str(), || format!("{delivery:?}"))?;
    let handoff = one(&spans, edge, "send edgejobs:jobs")?;
    parent_of(handoff, delivery)?;
    let received = one(&spans, consumer, "receive edgejobs:jobs")?;
    parent_of(received, handoff)?;
    let attempt = one(&spans, consumer, "process http.request")?;
    parent_of(attempt, received)?;
    ensure(attempt.kind == SpanKind::Consumer, || format!("{attempt:?}"))?;
    for (k, v) in [
        ("messaging.message.id", json!(id)),
        ("edgejobs.job.type", json!("http.request")),
        ("edgejobs.job.lane", json!("native")),
        ("edgejobs.job.attempt", json!(1)),
        ("edgejobs.job.outcome", json!("completed")),
    ] {
        ensure(attr(attempt, k) == &v, || format!("attempt {k} = {v}: {:?}", attempt.attributes))?;
    }
    let call = one(&spans, consumer, "POST")?;
    parent_of(call, attempt)?;
    ensure(call.kind == SpanKind::Client, || format!("{call:?}"))?;
    ensure(attr(call, "http.response.status_code") == 200, || format!("{:?}", call.attributes))?;
    ensure(attr(call, "server.address") == "127.0.0.1", || format!("{:?}", call.attributes))?;
    let full = attr(call, "url.full").as_str().unwrap_or_default();
    ensure(full.ends_with(&path) && !full.contains("secret"), || format!("url.full without its query: {full}"))?;
    ensure(call.status.code != StatusCode::Error, || format!("{call:?}"))?;
    // Every span of the job is in this one trace, and no attribute holds the query's secret.
    ensure(spans.iter().all(|s| !serde_json::to_string(&s.attributes).unwrap_or_default().contains("secret")), || {
        "no span holds the query string".into()
    })?;
    // The upstream got the same trace, its parent the call's span.
    let got = ctx.hooks.received(&path);
    let tp = got.first().and_then(|r| r.headers.get("traceparent")).context("the upstream got a traceparent")?;
    let (up_trace, up_parent) = ids(tp)?;
    ensure(up_trace == trace_id && up_parent == call.span_id, || {
        format!("the upstream's traceparent {tp} names the call span {}", call.span_id)
    })?;
    ensure(got[0].headers.get("tracestate").map(String::as_str) == Some("vendor=abc"), || {
        format!("the caller's tracestate travels on: {:?}", got[0].headers.get("tracestate"))
    })?;
    Ok(())
}

fn edge_lane_trace(ctx: &Ctx) -> anyhow::Result<()> {
    let _one = RECEIVER.lock().unwrap_or_else(|p| p.into_inner());
    let path = format!("/{}", unique("traced-hook"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200)]);
    let r = ctx.post("/v1/jobs", &json!({ "type": "webhook", "payload": { "url": url, "body": { "n": 1 } } }))?;
    ensure(r.status == 201, || format!("enqueued: {} {}", r.status, r.body))?;
    let id = r.body["id"].as_str().context("id")?.to_owned();
    let stored = r.body["trace"]["traceparent"].as_str().context("a job without traceparent gets a trace")?;
    let (trace_id, enqueue_id) = ids(stored)?;
    ctx.wait_state(&id, "completed", Duration::from_secs(30))?;
    let edge = "edgejobs-edge";
    let spans = trace(ctx, trace_id, |s| {
        has(s, edge, "send webhook") && has(s, edge, "process webhook") && has(s, edge, "POST")
    })?;
    let enqueue = one(&spans, edge, "send webhook")?;
    ensure(enqueue.parent_span_id.is_none() && enqueue.span_id == enqueue_id, || {
        format!("the enqueue is the trace's root: {enqueue:?}")
    })?;
    let delivery = one(&spans, edge, "receive jobs")?;
    parent_of(delivery, enqueue)?;
    let attempt = one(&spans, edge, "process webhook")?;
    parent_of(attempt, delivery)?;
    ensure(
        attr(attempt, "edgejobs.job.lane") == "edge" && attr(attempt, "edgejobs.job.outcome") == "completed",
        || format!("{:?}", attempt.attributes),
    )?;
    let call = one(&spans, edge, "POST")?;
    parent_of(call, attempt)?;
    ensure(attr(call, "http.response.status_code") == 200, || format!("{:?}", call.attributes))?;
    let got = ctx.hooks.received(&path);
    let tp = got.first().and_then(|r| r.headers.get("traceparent")).context("the receiver got a traceparent")?;
    let (up_trace, up_parent) = ids(tp)?;
    ensure(up_trace == trace_id && up_parent == call.span_id, || format!("{tp} names the call span {}", call.span_id))?;
    Ok(())
}

fn invalid_traceparent(ctx: &Ctx) -> anyhow::Result<()> {
    let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let r = ctx.send(
        ctx.http
            .post(ctx.url("/v1/jobs"))
            .bearer_auth(&ctx.api_key)
            .header("traceparent", bad)
            .json(&json!({ "type": "noop", "payload": {} })),
    )?;
    ensure(r.status == 201, || format!("an invalid traceparent refuses nothing: {} {}", r.status, r.body))?;
    let stored = r.body["trace"]["traceparent"].as_str().context("a new trace")?;
    let (t, _) = ids(stored)?;
    ensure(t != "00000000000000000000000000000000", || format!("a new trace id: {stored}"))?;
    Ok(())
}

fn collector_down(ctx: &Ctx) -> anyhow::Result<()> {
    let _one = RECEIVER.lock().unwrap_or_else(|p| p.into_inner());
    let dropped = || -> anyhow::Result<f64> {
        let page = ctx.http.get(ctx.url("/metrics")).bearer_auth(&ctx.admin_key).send()?.text()?;
        Ok(metric(&page, "edgejobs_spans_dropped_total{reason=\"refused\"} ").unwrap_or(0.0))
    };
    let before = dropped()?;
    let refuse = |status: Value| -> anyhow::Result<()> {
        let r = ctx.http.post(format!("{}/api/refuse", ctx.otlp_url)).json(&json!({ "status": status })).send()?;
        ensure(r.status().is_success(), || format!("the receiver took the switch: {}", r.status()))
    };
    refuse(json!(503))?;
    let outcome = (|| -> anyhow::Result<()> {
        let r = ctx.post("/v1/jobs", &json!({ "type": "noop", "payload": {} }))?;
        ensure(r.status == 201, || format!("enqueued while the collector refuses: {} {}", r.status, r.body))?;
        let id = r.body["id"].as_str().context("id")?.to_owned();
        ctx.wait_state(&id, "completed", Duration::from_secs(30))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if dropped()? > before {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("edgejobs_spans_dropped_total{{reason=\"refused\"}} stayed at {before}")
    })();
    refuse(Value::Null)?;
    outcome
}

/// A schedule keeps its creator's context; each run, by its tick and by a trigger, starts
/// a new trace whose root (`send noop`, recorded by the shard's Durable Object for a tick)
/// links to it, and the run's delivery is that root's child.
fn schedule_runs(ctx: &Ctx) -> anyhow::Result<()> {
    let _one = RECEIVER.lock().unwrap_or_else(|p| p.into_inner());
    let name = unique("traced-schedule");
    let (trace_id, caller_span) = caller();
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let body = json!({ "name": name, "cron": "* * * * * *", "job": { "type": "noop", "payload": {} } });
    let r = ctx.send(
        ctx.http
            .post(ctx.url("/v1/schedules"))
            .bearer_auth(&ctx.admin_key)
            .header("traceparent", &traceparent)
            .json(&body),
    )?;
    ensure(r.status == 201, || format!("created: {} {}", r.status, r.body))?;
    ensure(r.body["trace"]["traceparent"] == traceparent.as_str(), || format!("the schedule keeps it: {}", r.body))?;
    let outcome = (|| -> anyhow::Result<()> {
        // The first run of a tick (the schedule fires every second).
        let deadline = Instant::now() + Duration::from_secs(20);
        let tick_job = loop {
            let s = ctx.get(&format!("/v1/schedules/{name}"))?;
            let tick = s.body["runs"].as_array().and_then(|runs| runs.iter().find(|r| r["kind"] == "tick"));
            if let Some(id) = tick.and_then(|r| r["job_id"].as_str()) {
                break id.to_owned();
            }
            ensure(Instant::now() < deadline, || format!("no run of a tick within 20 s: {}", s.body))?;
            std::thread::sleep(Duration::from_millis(250));
        };
        let r =
            ctx.send(ctx.http.post(ctx.url(&format!("/v1/schedules/{name}/trigger"))).bearer_auth(&ctx.admin_key))?;
        ensure(r.status == 201, || format!("triggered: {} {}", r.status, r.body))?;
        let triggered = r.body["job"]["id"].as_str().context("the triggered run's job")?.to_owned();
        let mut seen = Vec::new();
        for id in [tick_job, triggered] {
            let job = ctx.wait_state(&id, "completed", Duration::from_secs(30))?;
            let stored = job["trace"]["traceparent"].as_str().context("a run's job has a trace")?;
            let (run_trace, root_id) = ids(stored)?;
            ensure(run_trace != trace_id, || format!("a run starts a new trace, not the schedule's: {stored}"))?;
            ensure(!seen.contains(&run_trace.to_owned()), || format!("each run has its own trace: {stored}"))?;
            seen.push(run_trace.to_owned());
            let edge = "edgejobs-edge";
            let spans = trace(ctx, run_trace, |s| has(s, edge, "send noop") && has(s, edge, "receive jobs"))?;
            let root = one(&spans, edge, "send noop")?;
            ensure(root.parent_span_id.is_none() && root.span_id == root_id, || {
                format!("the run's root names no parent and is the job's parent: {root:?}")
            })?;
            ensure(root.kind == SpanKind::Producer, || format!("a producer span: {root:?}"))?;
            ensure(root.links.iter().any(|l| l.trace_id == trace_id && l.span_id == caller_span), || {
                format!("the root links to the schedule's context {trace_id}/{caller_span}: {:?}", root.links)
            })?;
            for (k, v) in [
                ("edgejobs.schedule.id", json!(name)),
                ("edgejobs.job.id", json!(id)),
                ("messaging.system", json!("edgejobs")),
                ("messaging.operation.type", json!("send")),
                ("messaging.destination.name", json!("noop")),
            ] {
                ensure(attr(root, k) == &v, || format!("root {k} = {v}: {:?}", root.attributes))?;
            }
            let delivery = one(&spans, edge, "receive jobs")?;
            parent_of(delivery, root)?;
            ensure(attr(delivery, "edgejobs.job.id") == id.as_str(), || format!("{delivery:?}"))?;
        }
        Ok(())
    })();
    let r = ctx.send(ctx.http.delete(ctx.url(&format!("/v1/schedules/{name}"))).bearer_auth(&ctx.admin_key))?;
    outcome?;
    ensure(r.status == 200, || format!("deleted: {} {}", r.status, r.body))
}

/// `POST /v1/events` with a `traceparent` is a producer span `send <name>` under the
/// caller's span.
fn event_send(ctx: &Ctx) -> anyhow::Result<()> {
    let _one = RECEIVER.lock().unwrap_or_else(|p| p.into_inner());
    let name = unique("traced-event");
    let (trace_id, caller_span) = caller();
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let event_id = unique("event-id");
    let r = ctx.send(
        ctx.http
            .post(ctx.url("/v1/events"))
            .bearer_auth(&ctx.api_key)
            .header("traceparent", &traceparent)
            .json(&json!({ "name": name, "id": event_id, "data": { "n": 1 } })),
    )?;
    ensure(r.status == 202, || format!("sent: {} {}", r.status, r.body))?;
    let span_name = format!("send {name}");
    let edge = "edgejobs-edge";
    let spans = trace(ctx, &trace_id, |s| has(s, edge, &span_name))?;
    let sent = one(&spans, edge, &span_name)?;
    ensure(sent.parent_span_id.as_deref() == Some(caller_span.as_str()), || {
        format!("the send's parent is the caller's span: {sent:?}")
    })?;
    ensure(sent.kind == SpanKind::Producer, || format!("a producer span: {sent:?}"))?;
    for (k, v) in [
        ("messaging.system", json!("edgejobs")),
        ("messaging.operation.type", json!("send")),
        ("messaging.destination.name", json!(name)),
        ("messaging.message.id", json!(event_id)),
    ] {
        ensure(attr(sent, k) == &v, || format!("{k} = {v}: {:?}", sent.attributes))?;
    }
    ensure(sent.status.code != StatusCode::Error, || format!("{sent:?}"))?;
    Ok(())
}
