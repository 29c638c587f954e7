//! Durable workflows on rusqlite (#29): a consumer's step reports are recorded in the run and
//! fenced by its lease; a sleep suspends the run until the alarm; a wait is indexed by the
//! event name's shard and an event resumes it once, by id once, matched by its conditions;
//! a look-back takes an event sent before the wait.

mod common;

use edgejobs_core::machine::{Event, Refusal};
use edgejobs_core::plan::{JobEvent, Report};
use edgejobs_core::protocol::{Applied, ApplyMany, EventsOp, EventsReply, ReportMany, Signaled, WaitEntry};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::workflow::{Match, StepReport, StepState, WaitFor};
use edgejobs_core::{ErrorCode, Job, JobId, JobState};
use edgejobs_shard::Host;
use serde_json::{Value, json};

use common::{NOW, S, World, get, sent, shard};

fn acme() -> Tenant {
    Tenant::parse("acme").expect("tenant")
}

/// A native job of tenant `acme`, started by a consumer: its id and lease token.
fn running(s: &S, w: &World, payload: Value) -> (JobId, String) {
    let mut spec =
        edgejobs_core::spec::parse_spec(&json!({ "type": "sleep", "payload": payload, "max_attempts": 2 }), NOW)
            .expect("spec");
    spec.tenant = Some(acme());
    let job = spec.into_job(JobId::new(0, NOW, w.random_u64()), NOW).0;
    let id = job.id.clone();
    s.create(vec![job], 60_000).expect("create");
    let lease = start(s, &id);
    (id, lease)
}

fn start(s: &S, id: &JobId) -> String {
    let attempt = get(s, id).attempt + 1;
    let a = report(s, id, Event::Start { attempt }, None).expect("started");
    a.lease.expect("a start issues a lease")
}

fn report(s: &S, id: &JobId, event: Event, lease: Option<&str>) -> Result<Applied, Refusal> {
    let r = ReportMany {
        reports: vec![Report::new(id.clone(), event, lease.map(str::to_owned))],
        consumer: "host-a".into(),
        full: false,
    };
    let (mut answers, _) = s.report_many(r).expect("the call");
    answers.remove(0)
}

fn step(s: &S, id: &JobId, lease: &str, step: StepReport) -> Result<Applied, Refusal> {
    let attempt = get(s, id).attempt;
    report(s, id, Event::Step { attempt, step }, Some(lease))
}

fn wait(seq: u32, name: &str, event: &str, matches: Vec<Match>, timeout_ms: Option<u64>) -> StepReport {
    StepReport::Wait {
        seq,
        name: name.into(),
        wait: WaitFor { event: event.into(), matches },
        timeout_ms,
        lookback_ms: 0,
    }
}

fn signal(s: &S, name: &str, data: Value, id: Option<&str>) -> Signaled {
    let op = EventsOp::Signal { tenant: acme(), name: name.into(), data, id: id.map(str::to_owned) };
    match s.events(op).expect("signal") {
        EventsReply::Signaled(sig) => sig,
        other => panic!("{other:?}"),
    }
}

fn register(s: &S, job: &Job) -> Vec<Option<Value>> {
    let waits: Vec<WaitEntry> = job.steps.iter().filter_map(|st| st.wait_entry(job)).collect();
    assert!(!waits.is_empty(), "the run has a wait to index");
    match s.events(EventsOp::Register { waits }).expect("register") {
        EventsReply::Registered { matched } => matched,
        other => panic!("{other:?}"),
    }
}

fn resume(s: &S, id: &JobId, name: &str, data: Value) -> (Result<Applied, Refusal>, Vec<JobId>) {
    let events = vec![JobEvent { id: id.clone(), event: Event::Resume { step: name.into(), data } }];
    let (mut answers, effects) = s.apply_many(ApplyMany { events, full: false, tenant: Some(acme()) }).expect("apply");
    (answers.remove(0), sent(&effects))
}

#[test]
fn steps_are_recorded_once_fenced_by_the_lease_and_a_changed_handler_is_refused() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    let first = StepReport::Run { seq: 0, name: "call-model".into(), result: json!({"text": "hi"}) };
    step(&s, &id, &lease, first.clone()).expect("recorded");
    let forged = step(&s, &id, "not-the-token", StepReport::Run { seq: 1, name: "b".into(), result: json!(1) });
    assert_eq!(forged.err().map(|e| e.code()), Some(ErrorCode::LeaseMismatch));
    let renamed = step(&s, &id, &lease, StepReport::Run { seq: 0, name: "other".into(), result: json!(1) });
    assert_eq!(renamed.err().map(|e| e.code()), Some(ErrorCode::NondeterministicStep));
    step(&s, &id, &lease, StepReport::Run { seq: 0, name: "call-model".into(), result: json!("late") })
        .expect("a repeated report is answered");
    let job = get(&s, &id);
    assert_eq!(job.steps.len(), 1, "nothing but the first report was recorded");
    assert_eq!(job.steps[0].result, Some(json!({"text": "hi"})));
    assert_eq!((job.steps[0].state, job.state), (StepState::Completed, JobState::Active));
}

#[test]
fn a_sleep_frees_the_run_until_the_alarm_and_the_next_execution_sees_it_done() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    let nap = StepReport::Sleep { seq: 0, name: "nap".into(), ms: Some(5_000), until: None };
    let a = step(&s, &id, &lease, nap).expect("slept");
    assert_eq!(a.state, JobState::Scheduled);
    let heartbeat = report(&s, &id, Event::Heartbeat { attempt: 1, progress: None }, Some(&lease));
    assert!(heartbeat.is_err(), "the suspended attempt holds no lease");
    w.now.set(5_000);
    let (effects, _) = s.wake_page().expect("alarm");
    assert_eq!(sent(&effects), vec![id.clone()], "the alarm sends the run again");
    let job = get(&s, &id);
    assert_eq!((job.state, job.steps[0].state), (JobState::Queued, StepState::Completed));
    start(&s, &id);
    assert_eq!(get(&s, &id).attempts_in_series(), 1, "the sleep cost no attempt");
}

#[test]
fn an_event_resumes_the_matching_wait_once_and_a_repeated_id_resumes_nothing_new() {
    let w = World::default();
    let s = shard(&w);
    let (a, lease_a) = running(&s, &w, json!({"order": 7}));
    let (b, lease_b) = running(&s, &w, json!({"order": 8}));
    for (id, lease, order) in [(&a, &lease_a, 7), (&b, &lease_b, 8)] {
        let m = vec![Match { event: "/data/order".into(), value: json!(order) }];
        let answer = step(&s, id, lease, wait(0, "paid", "payment", m, Some(60_000))).expect("waits");
        assert_eq!(answer.state, JobState::Scheduled);
        assert_eq!(register(&s, &get(&s, id)), vec![None], "nothing matched yet");
    }
    let other = signal(&s, "payment", json!({"order": 9}), Some("p9"));
    assert!(other.resumes.is_empty(), "no wait has order 9");
    let sig = signal(&s, "payment", json!({"order": 7, "amount": 10}), Some("p7"));
    assert_eq!(sig.resumes.iter().map(|k| k.job.clone()).collect::<Vec<_>>(), vec![a.clone()]);
    let (answer, sent_now) = resume(&s, &a, "paid", sig.data.clone());
    assert_eq!(answer.map(|x| x.state).ok(), Some(JobState::Queued));
    assert_eq!(sent_now, vec![a.clone()], "the resumed run is sent at once");
    let again = signal(&s, "payment", json!({"order": 7}), Some("p7"));
    assert!(again.duplicate, "the id was seen");
    assert_eq!(again.data, json!({"order": 7, "amount": 10}), "the first send's data");
    assert_eq!(again.resumes.len(), 1, "an undelivered match is answered again");
    let (twice, _) = resume(&s, &a, "paid", again.data);
    assert_eq!(twice.err(), Some(Refusal::NotWaiting), "a wait resumes once");
    s.events(EventsOp::Delivered { keys: again.resumes }).expect("delivered");
    assert!(signal(&s, "payment", json!({"order": 7}), Some("p7")).resumes.is_empty(), "settled");
    let job = get(&s, &a);
    assert_eq!(job.steps[0].result, Some(json!({"order": 7, "amount": 10})));
    assert_eq!(get(&s, &b).state, JobState::Scheduled, "the other order still waits");
    let wrong_tenant = {
        let events = vec![JobEvent { id: b.clone(), event: Event::Resume { step: "paid".into(), data: json!(1) } }];
        let t = Tenant::parse("other").expect("t");
        s.apply_many(ApplyMany { events, full: false, tenant: Some(t) }).expect("apply").0.remove(0)
    };
    assert!(matches!(wrong_tenant, Err(Refusal::NotFound { .. })), "another tenant's event resumes nothing");
}

#[test]
fn a_wait_takes_an_event_within_its_look_back_and_not_an_older_one() {
    let w = World::default();
    let s = shard(&w);
    signal(&s, "approved", json!({"by": "ann"}), None);
    w.now.set(10_000);
    let (late, lease) = running(&s, &w, json!({}));
    step(&s, &late, &lease, wait(0, "ok", "approved", vec![], None)).expect("waits");
    assert_eq!(register(&s, &get(&s, &late)), vec![None], "sent 10 s before the wait: not matched");
    let (back, lease) = running(&s, &w, json!({}));
    let report = StepReport::Wait {
        seq: 0,
        name: "ok".into(),
        wait: WaitFor { event: "approved".into(), matches: vec![] },
        timeout_ms: None,
        lookback_ms: 60_000,
    };
    step(&s, &back, &lease, report).expect("waits");
    assert_eq!(register(&s, &get(&s, &back)), vec![Some(json!({"by": "ann"}))], "within its look-back");
}

#[test]
fn a_wait_times_out_at_the_alarm_and_a_late_event_changes_nothing() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    step(&s, &id, &lease, wait(0, "ok", "approved", vec![], Some(1_000))).expect("waits");
    register(&s, &get(&s, &id));
    w.now.set(1_000);
    s.wake_page().expect("alarm");
    assert_eq!(get(&s, &id).steps[0].state, StepState::TimedOut);
    let sig = signal(&s, "approved", json!(1), None);
    for k in sig.resumes {
        assert_eq!(resume(&s, &k.job, &k.step, json!(1)).0.err(), Some(Refusal::NotWaiting));
    }
    assert_eq!(get(&s, &id).steps[0].state, StepState::TimedOut);
}

/// A child job the edge would prepare for run `parent` (an id in its shard, no tenant yet).
fn child(w: &World, parent: &JobId) -> Job {
    let spec = edgejobs_core::spec::parse_spec(&json!({ "type": "noop" }), NOW).expect("spec");
    spec.into_job(JobId::new(parent.shard(), NOW, w.random_u64()), NOW).0
}

fn finish_child(s: &S, id: &JobId, ok: bool) -> Vec<JobId> {
    let start = vec![JobEvent { id: id.clone(), event: Event::Start { attempt: 1 } }];
    s.apply_many(ApplyMany { events: start, full: false, tenant: None }).expect("start").0.remove(0).expect("started");
    let end = if ok {
        Event::Complete { attempt: 1, result: Some(json!({ "child": id.as_str() })) }
    } else {
        Event::Fail { attempt: 1, error: "broke".into(), disposition: edgejobs_core::machine::Disposition::Permanent }
    };
    let (mut answers, effects) = s
        .apply_many(ApplyMany { events: vec![JobEvent { id: id.clone(), event: end }], full: false, tenant: None })
        .expect("end");
    answers.remove(0).expect("ended");
    sent(&effects)
}

#[test]
fn a_fan_out_starts_its_children_in_the_runs_shard_and_resumes_it_when_all_are_final() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    let kids = vec![child(&w, &id), child(&w, &id)];
    let ids: Vec<JobId> = kids.iter().map(|k| k.id.clone()).collect();
    let specs = vec![json!({ "type": "noop" }), json!({ "type": "noop" })];
    let fan = StepReport::FanOut { seq: 0, name: "all".into(), jobs: specs.clone(), children: kids.clone() };
    let attempt = get(&s, &id).attempt;
    let r = ReportMany {
        reports: vec![Report::new(id.clone(), Event::Step { attempt, step: fan.clone() }, Some(lease.clone()))],
        consumer: "host-a".into(),
        full: false,
    };
    let (answers, effects) = s.report_many(r).expect("call");
    assert_eq!(answers[0].as_ref().map(|a| a.state).ok(), Some(JobState::Scheduled), "the run waits");
    assert_eq!(sent(&effects), ids, "the children are sent with the step");
    for k in &ids {
        let kid = get(&s, k);
        assert_eq!((kid.tenant.clone(), kid.parent.as_ref().map(|p| p.step.as_str())), (acme(), Some("all")));
    }
    // The same report again (a retry) starts nothing new.
    step(&s, &id, &lease, fan).expect_err("the run no longer runs this attempt");
    assert!(finish_child(&s, &ids[0], true).is_empty(), "one child of two: the run still waits");
    assert_eq!(get(&s, &id).state, JobState::Scheduled);
    assert_eq!(finish_child(&s, &ids[1], false), vec![id.clone()], "the last child sends the run");
    let run = get(&s, &id);
    assert_eq!((run.state, run.steps[0].state), (JobState::Queued, StepState::Completed));
    let outcomes = run.steps[0].result.clone().unwrap_or_default();
    assert_eq!(outcomes[0]["result"], json!({ "child": ids[0].as_str() }));
    assert_eq!((outcomes[1]["state"].clone(), outcomes[1]["error"].clone()), (json!("dead"), json!("broke")));
}

#[test]
fn cancelling_a_run_cancels_its_waiting_children_and_an_invoke_takes_its_childs_error() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    let kid = child(&w, &id);
    let kid_id = kid.id.clone();
    let invoke =
        StepReport::Invoke { seq: 0, name: "one".into(), jobs: vec![json!({ "type": "noop" })], children: vec![kid] };
    step(&s, &id, &lease, invoke).expect("invoked");
    let cancel = vec![JobEvent { id: id.clone(), event: Event::Cancel }];
    s.apply_many(ApplyMany { events: cancel, full: false, tenant: None }).expect("cancel").0.remove(0).expect("ok");
    assert_eq!(get(&s, &kid_id).state, JobState::Cancelled, "the child went with its run");

    let (id, lease) = running(&s, &w, json!({}));
    let kid = child(&w, &id);
    let kid_id = kid.id.clone();
    let invoke =
        StepReport::Invoke { seq: 0, name: "one".into(), jobs: vec![json!({ "type": "noop" })], children: vec![kid] };
    step(&s, &id, &lease, invoke).expect("invoked");
    finish_child(&s, &kid_id, false);
    let run = get(&s, &id);
    assert_eq!(
        (run.state, run.steps[0].state, run.steps[0].error.as_deref()),
        (JobState::Queued, StepState::Failed, Some("broke"))
    );
    let unprepared =
        StepReport::Invoke { seq: 1, name: "two".into(), jobs: vec![json!({ "type": "noop" })], children: vec![] };
    let lease = start(&s, &id);
    let refused = step(&s, &id, &lease, unprepared);
    assert!(matches!(refused, Err(Refusal::BadStep { .. })), "children the edge did not prepare: {refused:?}");
}

#[test]
fn a_recorded_wait_is_kept_in_the_outbox_until_indexed_and_the_alarm_comes_for_it() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    step(&s, &id, &lease, wait(0, "ok", "approved", vec![], None)).expect("waits");
    let check = NOW + edgejobs_shard::events::INDEX_CHECK_MS;
    assert_eq!(s.next_wake().expect("next"), Some(check), "the alarm comes back for the wait (no timeout of its own)");
    assert!(s.waits_to_index().expect("page").is_empty(), "not due before the check");
    w.now.set(edgejobs_shard::events::INDEX_CHECK_MS);
    let due = s.waits_to_index().expect("page");
    assert_eq!(
        due.iter().map(|e| (e.key.job.clone(), e.key.step.clone())).collect::<Vec<_>>(),
        vec![(id.clone(), "ok".into())]
    );
    assert_eq!(due[0].tenant, acme());
    assert_eq!(
        s.next_wake().expect("next"),
        Some(check + edgejobs_shard::events::INDEX_CHECK_MS),
        "tried again unless indexed"
    );
    s.indexed(&due.iter().map(|e| e.key.clone()).collect::<Vec<_>>()).expect("indexed");
    assert_eq!(s.next_wake().expect("next"), None, "indexed: nothing left to wake for");
    // A wait that ended before its check is dropped without indexing.
    let (other, lease) = running(&s, &w, json!({}));
    step(&s, &other, &lease, wait(0, "ok", "approved", vec![], None)).expect("waits");
    let cancel = vec![JobEvent { id: other.clone(), event: Event::Cancel }];
    s.apply_many(ApplyMany { events: cancel, full: false, tenant: None }).expect("cancel");
    w.now.set(3 * edgejobs_shard::events::INDEX_CHECK_MS);
    assert!(s.waits_to_index().expect("page").is_empty(), "a cancelled run's wait is not indexed");
    assert_eq!(s.next_wake().expect("next"), None);
}

#[test]
fn a_match_no_send_delivered_is_handed_to_the_alarm_until_delivered() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = running(&s, &w, json!({}));
    step(&s, &id, &lease, wait(0, "ok", "approved", vec![], None)).expect("waits");
    register(&s, &get(&s, &id));
    // A send without an id matched the wait, then its delivery failed: nobody repeats it.
    let sig = signal(&s, "approved", json!({ "by": "ann" }), None);
    assert_eq!(sig.resumes.len(), 1);
    assert!(s.undelivered().expect("page").is_empty(), "not before the delay");
    let at = s.next_wake().expect("next").unwrap_or(0);
    assert!(at <= NOW + edgejobs_shard::events::REDELIVER_MS, "the alarm comes back for it at {at}");
    w.now.set(edgejobs_shard::events::REDELIVER_MS + edgejobs_shard::events::INDEX_CHECK_MS);
    let due = s.undelivered().expect("page");
    assert_eq!(due.len(), 1, "handed over for delivery");
    let (tenant, key, data) = due[0].clone();
    assert_eq!((tenant, key.job.clone(), data.clone()), (acme(), id.clone(), json!({ "by": "ann" })));
    assert!(s.undelivered().expect("page").is_empty(), "moved on while its delivery runs");
    let (resumed, _) = resume(&s, &id, "ok", data);
    assert!(resumed.is_ok(), "the run resumes with the event's data");
    s.events(EventsOp::Delivered { keys: vec![key] }).expect("delivered");
    w.now.set(10 * edgejobs_shard::events::REDELIVER_MS);
    assert!(s.undelivered().expect("page").is_empty(), "delivered: forgotten");
}
