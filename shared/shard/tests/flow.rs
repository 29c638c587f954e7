//! The flow gate on rusqlite (#28): a concurrency key never runs more than its limit, the
//! others wait and start as slots free (complete, retry, dead, cancel), the best waiting
//! job goes first (priority, then age, with the starvation guard), two keys are taken in
//! one order, a rate spaces starts, pauses park jobs, debounce and throttle answer the
//! enqueue. After every step the shard's counts agree with its jobs (`flow::check`).

mod common;

use edgejobs_core::flow::{self, FlowOp, FlowReply, KeyState, Subject, Target};
use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, FlowOutcome};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::{Job, JobId, JobState};
use edgejobs_shard::Host;
use serde_json::{Value, json};

use common::{NOW, S, World, get, sent, shard};

/// Builds a job of `spec` (its flow fields resolved as the router does, tenant `acme`).
fn job(w: &World, spec: Value) -> Job {
    let now = NOW + w.now.get();
    let mut spec = edgejobs_core::spec::parse_spec(&spec, now).expect("spec");
    spec.tenant = Some(Tenant::parse("acme").expect("tenant"));
    let f = flow::resolve(&spec.flow, &Subject { job: &Value::Null, tenant: "acme" }, None).expect("flow");
    let mut j = spec.into_job(JobId::new(0, now, w.random_u64()), now).0;
    j.flow = f;
    j
}

/// Creates jobs in one call; answers the ids created and the ids sent.
fn create(s: &S, w: &World, specs: Vec<Value>) -> (Vec<JobId>, Vec<JobId>) {
    let jobs: Vec<Job> = specs.into_iter().map(|v| job(w, v)).collect();
    let ids = jobs.iter().map(|j| j.id.clone()).collect();
    let (_, effects) = s.create(jobs, 60_000).expect("create");
    (ids, sent(&effects))
}

fn events(s: &S, evs: Vec<(JobId, Event)>) -> Vec<JobId> {
    let events = evs.into_iter().map(|(id, event)| JobEvent { id, event }).collect();
    let (answers, effects) = s.apply_many(ApplyMany { events, full: false, tenant: None }).expect("apply");
    for a in answers {
        a.expect("each event is accepted");
    }
    sent(&effects)
}

fn start(s: &S, id: &JobId) {
    let attempt = get(s, id).attempt + 1;
    events(s, vec![(id.clone(), Event::Start { attempt })]);
}

fn complete(s: &S, id: &JobId) -> Vec<JobId> {
    let attempt = get(s, id).attempt;
    events(s, vec![(id.clone(), Event::Complete { attempt, result: None })])
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

fn limited(k: &str, limit: u32) -> Value {
    json!({ "type": "noop", "concurrency": { "key": k, "limit": limit } })
}

#[test]
fn a_key_runs_at_most_its_limit_and_the_next_starts_when_one_ends() {
    let w = World::default();
    let s = shard(&w);
    let (ids, sent) = create(&s, &w, (0..5).map(|_| limited("conv", 2)).collect());
    assert_eq!(sent, ids[..2], "two of five are sent");
    assert_eq!(get(&s, &ids[2]).waiting_for.as_deref(), Some("concurrency:conv"));
    assert_eq!(key(&s, "conv"), KeyState { running: 2, limit: 2, waiting: 3, ..KeyState::default() });
    consistent(&s);
    start(&s, &ids[0]);
    // A completion starts the oldest waiting job, in the same call.
    assert_eq!(complete(&s, &ids[0]), [ids[2].clone()]);
    assert_eq!(get(&s, &ids[2]).waiting_for, None);
    consistent(&s);
    // A cancel of a waiting job frees nothing and leaves the list; of a sent one, a slot.
    assert!(events(&s, vec![(ids[3].clone(), Event::Cancel)]).is_empty());
    consistent(&s);
    assert_eq!(events(&s, vec![(ids[1].clone(), Event::Cancel)]), [ids[4].clone()]);
    consistent(&s);
    assert_eq!(key(&s, "conv").waiting, 0);
}

#[test]
fn a_retry_and_a_dead_job_give_their_slot_back() {
    let w = World::default();
    let s = shard(&w);
    let spec = json!({ "type": "noop", "max_attempts": 2, "concurrency": { "key": "k", "limit": 1 } });
    let (ids, first) = create(&s, &w, vec![spec.clone(), spec.clone(), spec]);
    assert_eq!(first, [ids[0].clone()]);
    start(&s, &ids[0]);
    let fail = |_: &JobId, attempt| Event::Fail { attempt, error: "x".into(), disposition: Disposition::Retryable };
    // Into retry (scheduled): the slot goes to the next job.
    assert_eq!(events(&s, vec![(ids[0].clone(), fail(&ids[0], 1))]), [ids[1].clone()]);
    assert_eq!(get(&s, &ids[0]).state, JobState::Scheduled);
    consistent(&s);
    start(&s, &ids[1]);
    let dead = Event::Fail { attempt: 1, error: "x".into(), disposition: Disposition::Permanent };
    assert_eq!(events(&s, vec![(ids[1].clone(), dead)]), [ids[2].clone()]);
    assert_eq!(get(&s, &ids[1]).state, JobState::Dead);
    consistent(&s);
    // The retried job wakes up behind the one running: it waits.
    w.now.set(3_600_000);
    let (effects, _) = s.wake_page().expect("wake");
    assert!(sent(&effects).is_empty(), "{effects:?}");
    assert_eq!(get(&s, &ids[0]).waiting_for.as_deref(), Some("concurrency:k"));
    consistent(&s);
    start(&s, &ids[2]);
    assert_eq!(complete(&s, &ids[2]), [ids[0].clone()]);
    consistent(&s);
}

#[test]
fn the_highest_priority_goes_first_and_age_lifts_the_low_ones() {
    let w = World::default();
    let s = shard(&w);
    let p = |prio: u8| json!({ "type": "noop", "priority": prio, "concurrency": { "key": "k", "limit": 1 } });
    let (ids, _) = create(&s, &w, vec![p(5), p(1)]);
    w.now.set(1);
    let (hi, _) = create(&s, &w, vec![p(9), p(5)]);
    start(&s, &ids[0]);
    // 9 first, then the 5, then the 1.
    assert_eq!(complete(&s, &ids[0]), [hi[0].clone()]);
    start(&s, &hi[0]);
    assert_eq!(complete(&s, &hi[0]), [hi[1].clone()]);
    start(&s, &hi[1]);
    // A new 9 arrives, but the 1 has waited long enough to rank with it and is older.
    w.now.set(8 * flow::AGING_MS + 1);
    let (late, _) = create(&s, &w, vec![p(9)]);
    assert_eq!(complete(&s, &hi[1]), [ids[1].clone()], "the starvation guard");
    start(&s, &ids[1]);
    assert_eq!(complete(&s, &ids[1]), [late[0].clone()]);
    consistent(&s);
}

#[test]
fn two_keys_are_both_held_and_a_flood_of_one_user_cannot_crowd_the_tenant() {
    let w = World::default();
    let s = shard(&w);
    let two = |user: &str| json!({ "type": "noop", "concurrency": [{ "key": user, "limit": 1 }, { "key": "tenant", "limit": 2 }] });
    let (flood, sent) = create(&s, &w, (0..20).map(|_| two("u-flood")).collect());
    assert_eq!(sent, [flood[0].clone()], "the user's limit");
    let (small, sent) = create(&s, &w, vec![two("u-small")]);
    assert_eq!(sent, small, "the small user takes the tenant's other slot");
    assert_eq!(key(&s, "tenant").running, 2);
    consistent(&s);
    start(&s, &flood[0]);
    assert_eq!(complete(&s, &flood[0]), [flood[1].clone()]);
    consistent(&s);
}

#[test]
fn a_rate_spaces_starts_evenly_and_the_alarm_sends_the_next() {
    let w = World::default();
    let s = shard(&w);
    let r = json!({ "type": "noop", "rate": { "key": "rx", "limit": 2, "period": "1s" } });
    let (ids, sent) = create(&s, &w, vec![r.clone(), r.clone(), r]);
    assert_eq!(sent, [ids[0].clone()]);
    assert_eq!(get(&s, &ids[1]).waiting_for.as_deref(), Some("rate:rx"));
    assert_eq!(s.next_wake().expect("wake"), Some(NOW + 500), "the next start, 1 s / 2 later");
    w.now.set(499);
    assert!(sent_by_alarm(&s).is_empty());
    w.now.set(500);
    assert_eq!(sent_by_alarm(&s), [ids[1].clone()]);
    w.now.set(1000);
    assert_eq!(sent_by_alarm(&s), [ids[2].clone()]);
    assert_eq!(s.next_wake().expect("wake"), None);
    consistent(&s);
}

fn sent_by_alarm(s: &S) -> Vec<JobId> {
    sent(&s.wake_page().expect("wake").0)
}

fn pause(s: &S, target: Target, paused: bool) -> Vec<JobId> {
    let (reply, effects) = s.flow(FlowOp::Pause { target, paused }).expect("pause");
    assert_eq!(reply, FlowReply::Changed(true));
    sent(&effects)
}

#[test]
fn a_paused_key_or_type_starts_nothing_new_and_a_resume_sends_what_waited() {
    let w = World::default();
    let s = shard(&w);
    let acme = Tenant::parse("acme").expect("t");
    pause(&s, Target::Key { tenant: acme.clone(), key: "k".into() }, true);
    let (ids, sent) = create(&s, &w, vec![limited("k", 5), limited("k", 5)]);
    assert!(sent.is_empty());
    assert_eq!(get(&s, &ids[0]).waiting_for.as_deref(), Some("paused"));
    assert!(key(&s, "k").paused);
    consistent(&s);
    assert_eq!(pause(&s, Target::Key { tenant: acme, key: "k".into() }, false), ids);
    consistent(&s);
    // A type without any key.
    pause(&s, Target::Type { name: "noop".into() }, true);
    let (plain, sent) = create(&s, &w, vec![json!({ "type": "noop" })]);
    assert!(sent.is_empty());
    assert_eq!(get(&s, &plain[0]).waiting_for.as_deref(), Some("paused"));
    assert_eq!(pause(&s, Target::Type { name: "noop".into() }, false), plain);
    consistent(&s);
}

#[test]
fn a_waiting_job_cannot_be_started_by_a_stray_delivery() {
    let w = World::default();
    let s = shard(&w);
    let (ids, _) = create(&s, &w, vec![limited("k", 1), limited("k", 1)]);
    let (answers, _) = s
        .apply_many(ApplyMany {
            events: vec![JobEvent { id: ids[1].clone(), event: Event::Start { attempt: 1 } }],
            full: false,
            tenant: None,
        })
        .expect("apply");
    assert!(answers[0].is_err(), "{answers:?}");
    assert_eq!(get(&s, &ids[1]).state, JobState::Queued);
}

fn create_one(s: &S, w: &World, spec: Value) -> edgejobs_core::protocol::Stored {
    let (mut stored, _) = s.create(vec![job(w, spec)], 60_000).expect("create");
    stored.remove(0)
}

#[test]
fn debounce_collapses_a_burst_into_one_run_with_the_last_payload() {
    let w = World::default();
    let s = shard(&w);
    let d = |n: u64| json!({ "type": "noop", "payload": { "n": n }, "debounce": { "key": "d", "period": "2s", "max_wait": "5s" } });
    let first = create_one(&s, &w, d(0));
    assert!(first.created && first.flow.is_none());
    let first: Job = serde_json::from_str(first.job.get()).expect("job");
    assert_eq!((first.state, first.run_at), (JobState::Scheduled, NOW + 2000));
    for n in 1..=100 {
        w.now.set(n * 30);
        let again = create_one(&s, &w, d(n));
        assert_eq!((again.created, again.flow), (false, Some(FlowOutcome::Debounced)));
    }
    let job = get(&s, &first.id);
    assert_eq!(job.payload, json!({ "n": 100 }), "the last payload wins");
    assert_eq!(job.run_at, NOW + 3000 + 2000);
    // `max_wait` bounds the delay: 5 s after the first enqueue.
    w.now.set(4900);
    create_one(&s, &w, d(101));
    assert_eq!(get(&s, &first.id).run_at, NOW + 5000);
    w.now.set(5000);
    assert_eq!(sent_by_alarm(&s), std::slice::from_ref(&first.id));
    // Once it ran, a new enqueue opens a new window.
    w.now.set(5001);
    assert!(create_one(&s, &w, d(102)).created);
}

#[test]
fn throttle_drops_or_rejects_over_its_limit_and_reopens_after_the_period() {
    let w = World::default();
    let s = shard(&w);
    let t = |on: &str| json!({ "type": "noop", "throttle": { "key": on, "limit": 2, "period": "1m", "on_limit": on } });
    let a = create_one(&s, &w, t("drop"));
    let b = create_one(&s, &w, t("drop"));
    assert!(a.created && b.created);
    let over = create_one(&s, &w, t("drop"));
    assert_eq!((over.created, over.flow), (false, Some(FlowOutcome::Throttled)));
    let id = |s: &edgejobs_core::protocol::Stored| serde_json::from_str::<Job>(s.job.get()).expect("job").id;
    assert_eq!(id(&over), id(&b), "the key's last job");
    assert_ne!(id(&a), id(&b));
    create_one(&s, &w, t("reject"));
    create_one(&s, &w, t("reject"));
    w.now.set(15_000);
    let refused = create_one(&s, &w, t("reject"));
    assert_eq!(refused.flow, Some(FlowOutcome::Rejected { retry_after_ms: 45_000 }));
    w.now.set(60_000);
    assert!(create_one(&s, &w, t("reject")).created);
}

#[test]
fn a_restore_keeps_waiting_jobs_waiting_and_running_ones_holding_their_slots() {
    use edgejobs_core::protocol::{Export, Import};
    let w = World::default();
    let s = shard(&w);
    let (ids, _) = create(&s, &w, (0..3).map(|_| limited("k", 1)).collect());
    start(&s, &ids[0]);
    let page = s.export(Export { after: None, max_rows: 100, max_bytes: 1 << 20 }).expect("export");
    assert_eq!(page.rows, 3);
    let fresh = shard(&w);
    let import = Import { shard: 0, ndjson: page.ndjson, first: true, idempotency_window_ms: 60_000, epoch: NOW };
    let (_, effects) = fresh.import(import).expect("import");
    assert!(sent(&effects).is_empty(), "the running job holds the key's one slot: {effects:?}");
    assert_eq!(key(&fresh, "k"), KeyState { running: 1, limit: 1, waiting: 2, ..KeyState::default() });
    assert_eq!(get(&fresh, &ids[1]).waiting_for.as_deref(), Some("concurrency:k"));
    consistent(&fresh);
    assert_eq!(complete(&fresh, &ids[0]), [ids[1].clone()]);
    consistent(&fresh);
}

#[test]
fn a_schedules_runs_go_through_the_gate() {
    use edgejobs_core::protocol::{ScheduleOp, ScheduleReply};
    let cfg = common::edge_config(1);
    let w = World::default();
    let s = shard(&w);
    let create = json!({ "name": "every", "cron": "0 * * * *",
        "job": { "type": "noop", "priority": 8, "concurrency": { "key": "k", "limit": 1 } } });
    let def = edgejobs_core::schedule::parse_create(&create, NOW, &cfg.types).expect("schedule");
    s.schedules(ScheduleOp::Create { schedule: Box::new(def.schedule) }, &cfg).expect("created");
    let run = || match s.schedules(ScheduleOp::Trigger { name: "every".into() }, &cfg).expect("trigger") {
        (ScheduleReply::Triggered { job, .. }, effects, _) => (job, sent(&effects)),
        (other, _, _) => panic!("{other:?}"),
    };
    let (first, sent_first) = run();
    assert_eq!(sent_first, std::slice::from_ref(&first.id));
    assert_eq!(first.flow.as_ref().map(|f| f.priority), Some(8), "the run carries the schedule's flow");
    w.now.set(1);
    let (second, sent_second) = run();
    assert!(sent_second.is_empty(), "the key's one slot is the first run's");
    assert_eq!(get(&s, &second.id).waiting_for.as_deref(), Some("concurrency:k"));
    consistent(&s);
}

/// An edge runner's finish takes the job its outcome lets start (started here, not sent),
/// up to `take`; with `take` 0, or for a paused key, the gate's sends go as before.
#[test]
fn a_finish_takes_the_next_job_its_outcome_lets_start() {
    use edgejobs_core::protocol::FinishMany;
    let w = World::default();
    let s = shard(&w);
    let (ids, sent_now) = create(&s, &w, (0..4).map(|_| limited("k", 1)).collect());
    assert_eq!(sent_now, [ids[0].clone()]);
    start(&s, &ids[0]);
    let finish = |id: &JobId, take: u16| {
        let attempt = get(&s, id).attempt;
        let events = vec![JobEvent { id: id.clone(), event: Event::Complete { attempt, result: None } }];
        let (finished, effects) = s.finish_many(FinishMany { events, take }).expect("finish");
        assert!(finished.answers.iter().all(Result::is_ok), "{:?}", finished.answers);
        (finished.next.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), sent(&effects), finished.next)
    };
    let (next, sent_by_queue, jobs) = finish(&ids[0], 5);
    assert_eq!(next, [ids[1].clone()], "the key's next job is taken");
    assert!(sent_by_queue.is_empty(), "and not sent through the queue too");
    assert_eq!(jobs[0].state, JobState::Active, "taken started: {:?}", jobs[0]);
    assert_eq!(jobs[0].attempt, 1);
    assert_eq!(get(&s, &ids[1]).state, JobState::Active);
    assert_eq!(key(&s, "k").running, 1);
    consistent(&s);
    // Taking nothing: the next job goes to the queue as before.
    let (next, sent_by_queue, _) = finish(&ids[1], 0);
    assert!(next.is_empty());
    assert_eq!(sent_by_queue, [ids[2].clone()]);
    start(&s, &ids[2]);
    // A paused key: its next job is parked, neither taken nor sent.
    let paused = s.flow(FlowOp::Pause {
        target: Target::Key { tenant: Tenant::parse("acme").expect("t"), key: "k".into() },
        paused: true,
    });
    paused.expect("paused");
    let (next, sent_by_queue, _) = finish(&ids[2], 5);
    assert!(next.is_empty() && sent_by_queue.is_empty(), "{next:?} {sent_by_queue:?}");
    assert_eq!(get(&s, &ids[3]).state, JobState::Queued);
    consistent(&s);
}

/// A schedule living on its runs' flow key's shard leaves a claim at its name's shard: the
/// name's operations there answer where it is, a second create of the name is refused on
/// either shard, and the claim goes with an unclaim.
#[test]
fn a_schedules_name_is_kept_at_its_names_shard_when_it_lives_elsewhere() {
    use edgejobs_core::protocol::{ScheduleOp, ScheduleReply};
    let cfg = common::edge_config(1);
    let (w0, w1) = (World::default(), World::default());
    let (named, home) = (shard(&w0), shard(&w1));
    let create = json!({ "name": "nightly", "cron": "0 3 * * *", "job": { "type": "noop" } });
    let def = || edgejobs_core::schedule::parse_create(&create, NOW, &cfg.types).expect("schedule").schedule;
    let claim = |h: u16| ScheduleOp::Claim { name: "nightly".into(), home: h };
    assert!(matches!(named.schedules(claim(3), &cfg).expect("claimed").0, ScheduleReply::Claimed { .. }));
    // The same claim answers again (a create retried); one for another shard is refused.
    assert!(matches!(named.schedules(claim(3), &cfg).expect("again").0, ScheduleReply::Claimed { .. }));
    let refused = named.schedules(claim(4), &cfg).map(|r| r.0).expect_err("taken for shard 3");
    assert!(format!("{refused:?}").contains("ScheduleExists"), "{refused:?}");
    home.schedules(ScheduleOp::Create { schedule: Box::new(def()) }, &cfg).expect("created at its home");
    // At the name's shard: every operation by name answers where the schedule is, and a
    // create of the name there is refused.
    for op in [
        ScheduleOp::Get { name: "nightly".into() },
        ScheduleOp::Pause { name: "nightly".into() },
        ScheduleOp::Trigger { name: "nightly".into() },
        ScheduleOp::Delete { name: "nightly".into() },
    ] {
        let reply = named.schedules(op.clone(), &cfg).expect("answered").0;
        assert_eq!(reply, ScheduleReply::Elsewhere { home: 3 }, "{op:?}");
    }
    let refused = named.schedules(ScheduleOp::Create { schedule: Box::new(def()) }, &cfg).map(|r| r.0);
    assert!(format!("{:?}", refused.expect_err("claimed")).contains("ScheduleExists"));
    // At its home it answers as any schedule; once unclaimed, the name is free again.
    let shown = home.schedules(ScheduleOp::Get { name: "nightly".into() }, &cfg).expect("there").0;
    assert_eq!(shown.shown().expect("one schedule").schedule.name, "nightly");
    named.schedules(ScheduleOp::Unclaim { name: "nightly".into() }, &cfg).expect("unclaimed");
    named.schedules(ScheduleOp::Create { schedule: Box::new(def()) }, &cfg).expect("the name is free");
    // A claim is refused where a schedule of the name lives.
    let refused = named.schedules(claim(3), &cfg).map(|r| r.0).expect_err("a schedule has the name here");
    assert!(format!("{refused:?}").contains("ScheduleExists"), "{refused:?}");
}

#[test]
fn the_sweep_walks_past_waiting_jobs_and_re_sends_only_what_was_sent() {
    use edgejobs_core::plan::SweepPolicy;
    use edgejobs_shard::timers::SweepRun;
    let w = World::default();
    let s = shard(&w);
    // More waiting jobs than a sweep page (500) holds, then a plain job whose message is lost.
    for _ in 0..6 {
        create(&s, &w, (0..100).map(|_| limited("k", 1)).collect());
    }
    w.now.set(1);
    let (plain, _) = create(&s, &w, vec![json!({ "type": "noop" })]);
    w.now.set(180_000);
    let mut run =
        SweepRun::new(SweepPolicy { queued_after_ms: 120_000, active_grace_ms: 30_000, native_lease_ms: 300_000 });
    let mut resent = Vec::new();
    for _ in 0..50 {
        match s.sweep_page(&mut run).expect("sweep") {
            Some(e) => resent.extend(sent(&e)),
            None => break,
        }
    }
    assert!(run.report.complete, "{:?}", run.report);
    assert!(resent.contains(&plain[0]), "the plain job is re-sent");
    assert_eq!(run.report.resent, 2, "the plain job and the key's head, never a waiting job: {:?}", run.report);
    consistent(&s);
}
