//! Schedules and tracing (#32) on rusqlite: every run, by its tick or by a trigger, starts
//! a new trace linked to the schedule's context and sampled as the schedule is; the alarm
//! names the runs it created for their root spans; a schedule stored without a context
//! still loads and runs.

mod common;

use edgejobs_core::otlp::{self, AttrValue, SpanKind};
use edgejobs_core::protocol::{ScheduleOp, ScheduleReply};
use edgejobs_core::sampler::Sampler;
use edgejobs_core::schedule::{self, Schedule};
use edgejobs_core::trace::TraceContext;
use edgejobs_core::{Job, JobId};
use edgejobs_shard::schedules::{RunStarted, run_trace};
use serde_json::json;

use common::{NOW, S, World, get, shard};

const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const NOT_SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

/// Creates schedule `name` (every second, from `NOW`) with context `trace`.
fn create(s: &S, name: &str, trace: Option<TraceContext>) {
    let cfg = common::edge_config(1);
    let body = json!({ "name": name, "cron": "* * * * * *", "job": { "type": "noop" } });
    let mut def = schedule::parse_create(&body, NOW, &cfg.types).expect("a valid schedule");
    def.schedule.trace = trace;
    s.schedules(ScheduleOp::Create { schedule: Box::new(def.schedule) }, &cfg).expect("created");
}

/// Wakes the alarm at `at` ms after `NOW`: the runs it created.
fn fire(s: &S, w: &World, at: u64) -> Vec<RunStarted> {
    w.now.set(at);
    let (_, _, started) = s.fire_schedules_page_traced(&common::edge_config(1)).expect("the alarm's page");
    started
}

fn trigger(s: &S, name: &str) -> Job {
    match s.schedules(ScheduleOp::Trigger { name: name.into() }, &common::edge_config(1)).expect("triggered") {
        (ScheduleReply::Triggered { job, created: true, .. }, _, _) => *job,
        (other, _, _) => panic!("not a new run: {other:?}"),
    }
}

fn ctx(tp: &str) -> TraceContext {
    TraceContext::parse(tp, Some("vendor=1")).expect("a valid traceparent")
}

#[test]
fn a_ticks_run_starts_a_new_trace_linked_to_the_schedule_and_sampled_as_it() {
    let w = World::default();
    let s = shard(&w);
    let sampled = ctx(SAMPLED);
    let unsampled = ctx(NOT_SAMPLED);
    create(&s, "traced", Some(sampled.clone()));
    create(&s, "quiet", Some(unsampled.clone()));
    create(&s, "plain", None);
    let mut started = fire(&s, &w, 1050);
    started.sort_by(|a, b| a.schedule.cmp(&b.schedule));
    let names: Vec<&str> = started.iter().map(|r| r.schedule.as_str()).collect();
    assert_eq!(names, ["plain", "quiet", "traced"], "one run each");
    for run in &started {
        let job = get(&s, &run.job_id);
        assert_eq!(job.trace.as_ref(), Some(&run.trace), "the job names the run's root");
        assert_eq!(job.schedule.as_deref(), Some(run.schedule.as_str()));
        assert_eq!(run.job_type, "noop");
        assert_eq!(run.trace.state, None, "a new trace carries no vendor state");
    }
    let [plain, quiet, traced] = &started[..] else { panic!("three runs") };
    assert_ne!(traced.trace.trace_id, sampled.trace_id, "a new trace, not the schedule's");
    assert_eq!(traced.link.as_ref(), Some(&sampled), "linked to the schedule's context");
    assert!(traced.trace.sampled());
    assert_ne!(quiet.trace.trace_id, unsampled.trace_id);
    assert!(!quiet.trace.sampled(), "a schedule not sampled makes runs not sampled");
    assert_eq!(quiet.link.as_ref(), Some(&unsampled));
    assert!(plain.trace.sampled(), "without a context a run is sampled (the default sampler)");
    assert_eq!(plain.link, None);
    // The next tick is another run with another trace.
    let again = fire(&s, &w, 2050);
    let next = again.iter().find(|r| r.schedule == "traced").expect("the next tick's run");
    assert_ne!(next.trace.trace_id, traced.trace.trace_id, "one trace per run");
    assert_ne!(next.job_id, traced.job_id);
}

#[test]
fn a_triggered_run_starts_a_new_trace_too() {
    let w = World::default();
    let s = shard(&w);
    let sampled = ctx(SAMPLED);
    create(&s, "traced", Some(sampled.clone()));
    let job = trigger(&s, "traced");
    let t = job.trace.clone().expect("the run has a trace");
    assert_ne!(t.trace_id, sampled.trace_id);
    assert!(t.sampled());
    // What the edge records for it: the schedule as shown links the run to its context.
    let shown = match s.schedules(ScheduleOp::Get { name: "traced".into() }, &common::edge_config(1)).expect("get") {
        (ScheduleReply::Shown { schedule }, _, _) => schedule.schedule,
        (other, _, _) => panic!("{other:?}"),
    };
    let run = RunStarted::of(&shown, &job).expect("a traced run");
    assert_eq!(run.link, Some(sampled));
    assert_eq!(run.trace, t);
}

#[test]
fn a_runs_root_span_is_a_producer_without_parent_linked_to_the_schedule() {
    let run = RunStarted {
        schedule: "nightly".into(),
        job_id: JobId::new(0, NOW, 7),
        job_type: "webhook".into(),
        trace: TraceContext::parse("00-11111111111111111111111111111111-2222222222222222-01", None).expect("valid"),
        link: Some(ctx(SAMPLED)),
    };
    let span = run.span("edgejobs", 42);
    assert_eq!(span.name, "send webhook");
    assert_eq!(span.kind, SpanKind::Producer);
    assert_eq!((span.trace_id, span.span_id, span.parent), (run.trace.trace_id, run.trace.span_id, None));
    assert_eq!((span.start_ns, span.end_ns), (42, 42));
    assert!(span.is_sampled());
    assert_eq!(span.links.len(), 1);
    assert_eq!((span.links[0].trace_id, span.links[0].span_id), (ctx(SAMPLED).trace_id, ctx(SAMPLED).span_id));
    let attr = |k: &str| span.attrs.iter().find(|a| a.key == k).map(|a| a.value.clone());
    let text = |v: &str| Some(AttrValue::from(v));
    assert_eq!(attr(otlp::keys::MESSAGING_SYSTEM), text("edgejobs"));
    assert_eq!(attr(otlp::keys::MESSAGING_OPERATION_TYPE), text("send"));
    assert_eq!(attr(otlp::keys::MESSAGING_DESTINATION_NAME), text("webhook"));
    assert_eq!(attr(otlp::keys::MESSAGING_MESSAGE_ID), text(run.job_id.as_str()));
    assert_eq!(attr(otlp::keys::SCHEDULE_ID), text("nightly"));
    assert_eq!(attr(otlp::keys::JOB_ID), text(run.job_id.as_str()));
    // Without a context, no link; an unsampled run's span is not sampled (never exported).
    let plain = RunStarted { link: None, trace: ctx(NOT_SAMPLED), ..run };
    let span = plain.span("edgejobs", 42);
    assert!(span.links.is_empty() && !span.is_sampled());
}

#[test]
fn a_runs_context_is_always_valid_and_follows_the_sampler() {
    // A random source that gives zeros cannot make the invalid all-zero ids.
    let t = run_trace(&mut || 0, None, &Sampler::default());
    assert_ne!(t.trace_id.0, [0; 16]);
    assert_ne!(t.span_id.0, [0; 8]);
    assert!(TraceContext::parse(&t.traceparent(), None).is_some(), "{}", t.traceparent());
    // A sampler that is not parent-based decides by the new trace id, not the link's flag.
    let off = Sampler::from_env(Some("always_off"), None).expect("a sampler");
    let mut n = 0u64;
    let mut random = || {
        n += 1;
        n
    };
    assert!(!run_trace(&mut random, Some(&ctx(SAMPLED)), &off).sampled());
    let on = Sampler::from_env(Some("always_on"), None).expect("a sampler");
    assert!(run_trace(&mut random, Some(&ctx(NOT_SAMPLED)), &on).sampled());
}

#[test]
fn a_schedule_stored_without_a_context_still_loads_and_runs() {
    let w = World::default();
    let s = shard(&w);
    let cfg = common::edge_config(1);
    let body = json!({ "name": "old", "cron": "* * * * * *", "job": { "type": "noop" } });
    let made = schedule::parse_create(&body, NOW, &cfg.types).expect("a valid schedule").schedule;
    // The document as a shard stored it before #32: no `trace` field.
    let mut doc = serde_json::to_value(&made).expect("serializes");
    doc.as_object_mut().map(|o| o.remove("trace"));
    let old: Schedule = serde_json::from_value(doc).expect("an old document loads");
    assert_eq!(old.trace, None);
    s.schedules(ScheduleOp::Import { schedules: vec![old], claims: Vec::new() }, &cfg).expect("imported");
    let started = fire(&s, &w, 1050);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].link, None);
    assert!(get(&s, &started[0].job_id).trace.is_some(), "its run still gets a trace");
}
