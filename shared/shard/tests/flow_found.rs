//! Flow-gate rules the simulation found broken (#28), each pinned on rusqlite: a restore
//! in pages gives every job back exactly what it had, whatever page holds it; a job that
//! waits for its rate while its type is paused is parked, not sent, when the rate allows.

mod common;

use edgejobs_core::flow::{self, FlowOp, FlowReply, KeyState, Subject, Target};
use edgejobs_core::machine::Event;
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, Export, Import};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::{Job, JobId};
use edgejobs_shard::Host;
use serde_json::{Value, json};

use common::{NOW, S, World, get, sent, shard};

fn create(s: &S, w: &World, spec: Value) -> (JobId, Vec<JobId>) {
    w.now.set(w.now.get() + 1);
    let now = NOW + w.now.get();
    let mut spec = edgejobs_core::spec::parse_spec(&spec, now).expect("spec");
    spec.tenant = Some(Tenant::parse("acme").expect("tenant"));
    let f = flow::resolve(&spec.flow, &Subject { job: &Value::Null, tenant: "acme" }, None).expect("flow");
    let mut j: Job = spec.into_job(JobId::new(0, now, w.random_u64()), now).0;
    j.flow = f;
    let id = j.id.clone();
    let (_, effects) = s.create(vec![j], 60_000).expect("create");
    (id, sent(&effects))
}

fn event(s: &S, id: &JobId, event: Event) -> Vec<JobId> {
    let events = vec![JobEvent { id: id.clone(), event }];
    let (answers, effects) = s.apply_many(ApplyMany { events, full: false, tenant: None }).expect("apply");
    for a in answers {
        a.expect("the event is accepted");
    }
    sent(&effects)
}

fn consistent(s: &S) {
    let problems = edgejobs_shard::flow::check(&s.db).expect("check");
    assert!(problems.is_empty(), "{problems:#?}");
}

fn key(s: &S, k: &str) -> KeyState {
    match s.flow(FlowOp::Key { tenant: Tenant::parse("acme").expect("t"), key: k.into() }).expect("flow").0 {
        FlowReply::Key(k) => k,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restore_in_pages_gives_each_job_back_what_it_had_whatever_page_holds_it() {
    let w = World::default();
    let s = shard(&w);
    let limited = |p: u8| json!({ "type": "noop", "priority": p, "concurrency": { "key": "k", "limit": 1 } });
    let (first, _) = create(&s, &w, limited(5));
    let (low, _) = create(&s, &w, limited(0));
    let (high, _) = create(&s, &w, limited(9));
    event(&s, &first, Event::Start { attempt: 1 });
    // The higher priority goes first: the job holding the key is newer than the one waiting.
    assert_eq!(event(&s, &first, Event::Complete { attempt: 1, result: None }), std::slice::from_ref(&high));
    event(&s, &high, Event::Start { attempt: 1 });
    assert!(low < high, "the waiting job sorts (and is exported) before the holder");
    // One job per page: the waiting one is restored before the one holding its key.
    let fresh = shard(&w);
    let mut after = None;
    let mut restored = Vec::new();
    for i in 0..10 {
        let page = s.export(Export { after: after.clone(), max_rows: 1, max_bytes: 1 << 20 }).expect("export");
        after = page.last.clone();
        let import = Import { shard: 0, ndjson: page.ndjson, first: i == 0, idempotency_window_ms: 60_000, epoch: NOW };
        let (_, effects) = fresh.import(import).expect("import");
        restored.extend(sent(&effects));
        if page.done {
            break;
        }
    }
    assert!(!restored.contains(&low), "the waiting job was sent by the restore: {restored:?}");
    assert_eq!(key(&fresh, "k"), KeyState { running: 1, limit: 1, waiting: 1, ..KeyState::default() });
    assert_eq!(get(&fresh, &low).waiting_for.as_deref(), Some("concurrency:k"));
    consistent(&fresh);
    assert_eq!(event(&fresh, &high, Event::Complete { attempt: 1, result: None }), [low]);
    consistent(&fresh);
}

#[test]
fn a_restore_keeps_a_sent_job_holding_its_slot_and_sends_it_again() {
    let w = World::default();
    let s = shard(&w);
    let limited = json!({ "type": "noop", "concurrency": { "key": "k", "limit": 1 } });
    let (a, sent_a) = create(&s, &w, limited.clone());
    let (b, _) = create(&s, &w, limited);
    assert_eq!(sent_a, std::slice::from_ref(&a));
    let page = s.export(Export { after: None, max_rows: 100, max_bytes: 1 << 20 }).expect("export");
    let fresh = shard(&w);
    let import = Import { shard: 0, ndjson: page.ndjson, first: true, idempotency_window_ms: 60_000, epoch: NOW };
    let (_, effects) = fresh.import(import).expect("import");
    // Its message may still be in the queue: it keeps its slot, and is sent again.
    assert_eq!(sent(&effects), std::slice::from_ref(&a));
    assert_eq!(get(&fresh, &b).waiting_for.as_deref(), Some("concurrency:k"));
    consistent(&fresh);
    event(&fresh, &a, Event::Start { attempt: 1 });
    assert_eq!(event(&fresh, &a, Event::Complete { attempt: 1, result: None }), [b]);
    consistent(&fresh);
}

#[test]
fn a_job_waiting_for_its_rate_is_parked_when_its_type_is_paused() {
    let w = World::default();
    let s = shard(&w);
    let rated = json!({ "type": "noop", "rate": { "key": "rx", "limit": 1, "period": "1s" } });
    let (a, sent_a) = create(&s, &w, rated.clone());
    let (b, sent_b) = create(&s, &w, rated);
    assert_eq!((sent_a, sent_b), (vec![a], vec![]));
    assert_eq!(get(&s, &b).waiting_for.as_deref(), Some("rate:rx"));
    let (reply, _) =
        s.flow(FlowOp::Pause { target: Target::Type { name: "noop".into() }, paused: true }).expect("pause");
    assert_eq!(reply, FlowReply::Changed(true));
    w.now.set(w.now.get() + 2_000);
    let (effects, _) = s.wake_page().expect("alarm");
    assert!(sent(&effects).is_empty(), "the alarm sent a job of a paused type: {effects:?}");
    assert_eq!(get(&s, &b).waiting_for.as_deref(), Some("paused"));
    consistent(&s);
    let (_, effects) =
        s.flow(FlowOp::Pause { target: Target::Type { name: "noop".into() }, paused: false }).expect("resume");
    assert_eq!(sent(&effects), [b]);
    consistent(&s);
}

#[test]
fn a_restore_sends_a_job_parked_for_a_pause_that_is_over() {
    let w = World::default();
    let s = shard(&w);
    let target = Target::Key { tenant: Tenant::parse("acme").expect("t"), key: "k".into() };
    s.flow(FlowOp::Pause { target, paused: true }).expect("pause");
    let (a, sent_a) = create(&s, &w, json!({ "type": "noop", "concurrency": { "key": "k", "limit": 1 } }));
    assert!(sent_a.is_empty());
    assert_eq!(get(&s, &a).waiting_for.as_deref(), Some("paused"));
    // Restored where the key is not paused (resumed since the backup): it starts.
    let page = s.export(Export { after: None, max_rows: 100, max_bytes: 1 << 20 }).expect("export");
    let fresh = shard(&w);
    let import = Import { shard: 0, ndjson: page.ndjson, first: true, idempotency_window_ms: 60_000, epoch: NOW };
    let (_, effects) = fresh.import(import).expect("import");
    assert_eq!(sent(&effects), std::slice::from_ref(&a));
    assert_eq!(key(&fresh, "k"), KeyState { running: 1, limit: 1, ..KeyState::default() });
    consistent(&fresh);
    // Restored where it is still paused: it stays parked.
    let paused = shard(&w);
    let target = Target::Key { tenant: Tenant::parse("acme").expect("t"), key: "k".into() };
    paused.flow(FlowOp::Pause { target, paused: true }).expect("pause");
    let page = s.export(Export { after: None, max_rows: 100, max_bytes: 1 << 20 }).expect("export");
    let import = Import { shard: 0, ndjson: page.ndjson, first: true, idempotency_window_ms: 60_000, epoch: NOW };
    let (_, effects) = paused.import(import).expect("import");
    assert!(sent(&effects).is_empty(), "{effects:?}");
    assert_eq!(get(&paused, &a).waiting_for.as_deref(), Some("paused"));
    consistent(&paused);
}
