//! Completion callbacks on rusqlite (#30): a job's end inserts its callback job in its shard,
//! in the same transaction, once, with the finished job's summary; a dead job fires
//! `on_fail`, a cancelled one nothing; a batch's callback fires once when its last job ends,
//! also when two of its jobs end in one call, and a replayed dead job is counted once.

mod common;

use edgejobs_core::callbacks::{self, BatchOpen, Which, batch_callback_id, callback_id};
use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::ApplyMany;
use edgejobs_core::tenant::Tenant;
use edgejobs_core::types::Types;
use edgejobs_core::{Job, JobId, JobState};
use edgejobs_shard::{Effects, Host};
use serde_json::{Value, json};

use common::{NOW, S, World, get, sent, shard};

/// A job of `body` (an enqueue's, callbacks allowed) for tenant `acme`, with an id in shard 0.
fn job(w: &World, body: Value) -> Job {
    let mut spec =
        edgejobs_core::spec::parse_enqueue_in(&body, NOW, &Types::builtins()).unwrap_or_else(|e| panic!("{e}"));
    spec.tenant = Some(Tenant::parse("acme").expect("tenant"));
    spec.into_job(JobId::new(0, NOW, w.random_u64()), NOW).0
}

fn create(s: &S, jobs: Vec<Job>) {
    s.create(jobs, 60_000).expect("create");
}

fn apply(s: &S, events: Vec<(&JobId, Event)>) -> Effects {
    let events = events.into_iter().map(|(id, event)| JobEvent { id: id.clone(), event }).collect();
    let (answers, effects) = s.apply_many(ApplyMany { events, full: false, tenant: None }).expect("the call");
    for a in answers {
        a.unwrap_or_else(|e| panic!("refused: {e:?}"));
    }
    effects
}

fn start(s: &S, id: &JobId) {
    let attempt = get(s, id).attempt + 1;
    apply(s, vec![(id, Event::Start { attempt })]);
}

fn complete(attempt: u32, result: Value) -> Event {
    Event::Complete { attempt, result: Some(result) }
}

fn die(attempt: u32) -> Event {
    Event::Fail { attempt, error: "boom".into(), disposition: Disposition::Permanent }
}

/// How many jobs the shard holds.
fn jobs_here(s: &S) -> u64 {
    s.stats(false).expect("stats").jobs.iter().map(|c| c.n).sum()
}

fn exists(s: &S, id: &JobId) -> bool {
    s.get(edgejobs_core::protocol::Get { id: id.clone(), tenant: None, wait_ms: 0 }).is_ok()
}

#[test]
fn completing_a_job_inserts_its_callback_once_in_its_shard_with_the_result() {
    let w = World::default();
    let s = shard(&w);
    let parent = job(
        &w,
        json!({ "type": "noop", "tags": ["t1"], "metadata": { "order": 7 },
                "on_complete": { "url": "https://example.com/done" },
                "on_fail": { "job": { "type": "noop" } } }),
    );
    let id = parent.id.clone();
    create(&s, vec![parent]);
    start(&s, &id);
    assert_eq!(jobs_here(&s), 1, "nothing fires before the end");
    w.now.set(500);
    let effects = apply(&s, vec![(&id, complete(1, json!({ "n": 42 })))]);
    let cb_id = callback_id(&id, Which::Complete);
    assert!(sent(&effects).contains(&cb_id), "the commit sends the callback job: {effects:?}");
    let cb = get(&s, &cb_id);
    assert_eq!((cb.id.shard(), cb.state, cb.job_type.as_str()), (id.shard(), JobState::Queued, "webhook"));
    assert_eq!((cb.tenant.as_str(), cb.created_at), ("acme", NOW + 500));
    assert_eq!(cb.payload["url"], "https://example.com/done");
    let body = &cb.payload["body"];
    assert_eq!(body["type"], "job.completed");
    assert_eq!(body["job"]["id"], id.as_str());
    assert_eq!(body["job"]["state"], "completed");
    assert_eq!(body["job"]["result"], json!({ "n": 42 }));
    assert_eq!((body["job"]["tags"].clone(), body["job"]["metadata"].clone()), (json!(["t1"]), json!({ "order": 7 })));
    assert_eq!(body["job"]["attempt"], 1);
    assert!(body["job"]["finished_at"].is_string(), "{body}");
    // The parent records the firing; on_fail did not fire.
    let p = get(&s, &id);
    assert_eq!(p.on_complete.as_ref().and_then(|c| c.fired_at), Some(NOW + 500));
    assert_eq!(p.on_fail.as_ref().and_then(|c| c.fired_at), None);
    assert!(!exists(&s, &callback_id(&id, Which::Fail)));
    assert_eq!(jobs_here(&s), 2);
    // A second report of the same end is refused and fires nothing.
    let (answers, _) = s
        .apply_many(ApplyMany {
            events: vec![JobEvent { id: id.clone(), event: complete(1, json!({})) }],
            full: false,
            tenant: None,
        })
        .expect("the call");
    assert!(answers[0].is_err(), "a completed job completes once");
    // The callback job runs like any job; its own end fires nothing.
    start(&s, &cb_id);
    apply(&s, vec![(&cb_id, complete(1, json!({ "status": 200 })))]);
    assert_eq!(jobs_here(&s), 2, "exactly one callback job");
}

#[test]
fn a_dead_job_fires_on_fail_and_a_cancelled_one_fires_nothing() {
    let w = World::default();
    let s = shard(&w);
    let both = json!({ "type": "noop", "max_attempts": 1,
        "on_complete": { "url": "https://example.com/ok" },
        "on_fail": { "job": { "type": "noop", "payload": { "k": "v" }, "tags": ["cb"], "delay": "10s" } } });
    let (dies, cancelled, cancelled_running) = (job(&w, both.clone()), job(&w, both.clone()), job(&w, both));
    let (d, c, r) = (dies.id.clone(), cancelled.id.clone(), cancelled_running.id.clone());
    create(&s, vec![dies, cancelled, cancelled_running]);
    start(&s, &d);
    let effects = apply(&s, vec![(&d, die(1))]);
    assert_eq!(get(&s, &d).state, JobState::Dead);
    let cb = get(&s, &callback_id(&d, Which::Fail));
    // A delayed callback waits for the alarm.
    assert_eq!((cb.state, cb.run_at, effects.alarm), (JobState::Scheduled, NOW + 10_000, Some(NOW + 10_000)));
    assert_eq!(cb.tags, vec!["cb".to_owned()]);
    assert_eq!(cb.payload["k"], "v");
    assert_eq!(cb.payload["callback"]["type"], "job.failed");
    assert_eq!(cb.payload["callback"]["job"]["state"], "dead");
    assert_eq!(cb.payload["callback"]["job"]["last_error"], "boom");
    assert_eq!(cb.payload["callback"]["job"]["result"], Value::Null);
    assert!(!exists(&s, &callback_id(&d, Which::Complete)));
    assert_eq!(jobs_here(&s), 4);
    // Cancelled while queued, and while running (its next report ends it cancelled).
    apply(&s, vec![(&c, Event::Cancel)]);
    start(&s, &r);
    apply(&s, vec![(&r, Event::Cancel)]);
    let (answers, _) = s
        .apply_many(ApplyMany {
            events: vec![JobEvent { id: r.clone(), event: complete(1, json!({})) }],
            full: false,
            tenant: None,
        })
        .expect("the call");
    assert!(answers[0].is_err(), "the cancelled attempt's report is refused");
    assert_eq!((get(&s, &c).state, get(&s, &r).state), (JobState::Cancelled, JobState::Cancelled));
    for id in [&c, &r] {
        assert!(!exists(&s, &callback_id(id, Which::Complete)) && !exists(&s, &callback_id(id, Which::Fail)));
    }
    assert_eq!(jobs_here(&s), 4, "a cancel fires nothing");
}

/// A batch of `n` noop jobs (one with on_fail) opened with a job callback tagged `batch-cb`.
fn batch(w: &World, s: &S, n: usize) -> (String, Vec<JobId>) {
    let id = callbacks::batch_id(0, NOW, w.random_u64());
    let cb = edgejobs_core::spec::parse_callback(
        &json!({ "job": { "type": "noop", "tags": ["batch-cb"] } }),
        "on_complete",
        NOW,
        &Types::builtins(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let open = BatchOpen {
        id: id.clone(),
        tenant: Tenant::parse("acme").expect("tenant"),
        on_complete: cb.template(batch_callback_id(&id).expect("a batch id")),
    };
    let jobs: Vec<Job> = (0..n)
        .map(|i| {
            let body = if i == 0 {
                json!({ "type": "noop", "on_fail": { "job": { "type": "noop", "tags": ["fail-cb"] } } })
            } else {
                json!({ "type": "noop" })
            };
            let mut j = job(w, body);
            j.batch = Some(id.clone());
            j
        })
        .collect();
    let ids = jobs.iter().map(|j| j.id.clone()).collect();
    s.create_batches(jobs, 60_000, vec![open]).expect("create");
    (id, ids)
}

#[test]
fn two_jobs_of_a_batch_ending_in_one_call_fire_its_callback_once() {
    let w = World::default();
    let s = shard(&w);
    let (batch_id, ids) = batch(&w, &s, 3);
    let cb_id = batch_callback_id(&batch_id).expect("a batch id");
    apply(&s, vec![(&ids[2], Event::Cancel)]);
    start(&s, &ids[0]);
    start(&s, &ids[1]);
    assert!(!exists(&s, &cb_id), "the batch is not done yet");
    assert_eq!(jobs_here(&s), 3);
    // The two last jobs end in one transaction, at one instant.
    w.now.set(1000);
    let effects = apply(&s, vec![(&ids[0], complete(1, json!({ "a": 1 }))), (&ids[1], complete(1, json!({ "b": 2 })))]);
    assert_eq!(sent(&effects).iter().filter(|i| **i == cb_id).count(), 1, "{effects:?}");
    let cb = get(&s, &cb_id);
    assert_eq!((cb.tenant.as_str(), cb.tags.clone()), ("acme", vec!["batch-cb".to_owned()]));
    assert_eq!(
        cb.payload["callback"],
        json!({ "type": "batch.completed",
                "batch": { "id": batch_id, "total": 3, "completed": 2, "dead": 0, "cancelled": 1 } })
    );
    assert_eq!(jobs_here(&s), 4, "one batch callback, and no job callback (none completed with one)");
    // Nothing that happens later fires it again: its callback job ends, the jobs are read.
    start(&s, &cb_id);
    apply(&s, vec![(&cb_id, complete(1, json!({})))]);
    assert_eq!(jobs_here(&s), 4);
    assert!(ids.iter().all(|id| get(&s, id).batch_counted));
}

#[test]
fn a_replayed_dead_job_that_dies_again_is_counted_once() {
    let w = World::default();
    let s = shard(&w);
    let (batch_id, ids) = batch(&w, &s, 2);
    let cb_id = batch_callback_id(&batch_id).expect("a batch id");
    start(&s, &ids[0]);
    apply(&s, vec![(&ids[0], die(1))]);
    assert!(exists(&s, &callback_id(&ids[0], Which::Fail)), "its own on_fail fired");
    assert_eq!(jobs_here(&s), 3);
    // Replayed, it dies again: counted once (else dead 2 + 0 would complete the batch of 2).
    apply(&s, vec![(&ids[0], Event::Replay)]);
    start(&s, &ids[0]);
    apply(&s, vec![(&ids[0], die(2))]);
    assert_eq!(get(&s, &ids[0]).state, JobState::Dead);
    assert!(!exists(&s, &cb_id), "the batch still waits for its other job");
    assert_eq!(jobs_here(&s), 3, "on_fail fires once too");
    start(&s, &ids[1]);
    apply(&s, vec![(&ids[1], complete(1, json!({})))]);
    assert_eq!(
        get(&s, &cb_id).payload["callback"]["batch"],
        json!({ "id": batch_id, "total": 2, "completed": 1, "dead": 1, "cancelled": 0 })
    );
    assert_eq!(jobs_here(&s), 4);
}

#[test]
fn a_create_naming_a_batch_it_does_not_open_is_refused_whole() {
    let w = World::default();
    let s = shard(&w);
    let mut j = job(&w, json!({ "type": "noop" }));
    j.batch = Some(callbacks::batch_id(0, NOW, 1));
    let plain = job(&w, json!({ "type": "noop" }));
    assert!(s.create(vec![plain, j], 60_000).is_err());
    assert_eq!(jobs_here(&s), 0, "nothing was created");
}
