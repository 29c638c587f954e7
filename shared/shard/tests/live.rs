//! Live results (#30) in a shard: an accepted update stores its chunks numbered per job in
//! the same transaction as the job's progress and metadata, and lists the job for the
//! subscribers; a refused update writes nothing; a reader resumes after any number; a final
//! job's chunks expire an hour after it ended.

mod common;

use common::{NOW, World, get, shard};
use edgejobs_core::live::{Chunk, Progress, Update};
use edgejobs_core::machine::{Event, Refusal};
use edgejobs_core::plan::Report;
use edgejobs_core::protocol::{Applied, Get, ReportMany};
use edgejobs_core::{ErrorCode, JobId};
use edgejobs_shard::Effects;
use serde_json::json;

fn enqueue(s: &common::S, w: &World) -> JobId {
    let spec = edgejobs_core::spec::parse_spec(&json!({ "type": "sleep", "max_attempts": 3 }), NOW).expect("spec");
    let job = spec.into_job(JobId::new(0, NOW, w.n.get() + 1000), NOW).0;
    let id = job.id.clone();
    s.create(vec![job], 60_000).expect("create");
    id
}

fn report(s: &common::S, id: &JobId, event: Event, lease: Option<&str>) -> (Result<Applied, Refusal>, Effects) {
    let r = ReportMany {
        reports: vec![Report::new(id.clone(), event, lease.map(str::to_owned))],
        consumer: "host-a".into(),
        full: false,
    };
    let (mut answers, effects) = s.report_many(r).expect("the call");
    (answers.remove(0), effects)
}

fn chunks(words: &[&str]) -> Vec<Chunk> {
    words.iter().map(|w| Chunk { stream: "tokens".into(), data: (*w).into() }).collect()
}

fn update(attempt: u32, u: Update) -> Event {
    Event::Update { attempt, update: u }
}

fn started(s: &common::S, w: &World) -> (JobId, String) {
    let id = enqueue(s, w);
    let (a, _) = report(s, &id, Event::Start { attempt: 1 }, None);
    (id, a.expect("started").lease.expect("a lease"))
}

fn stored(s: &common::S, id: &JobId, after: u64) -> Vec<(u64, String)> {
    let (_, rows, _) = s.live_start(Get { id: id.clone(), tenant: None, wait_ms: 0 }, after).expect("read");
    rows.into_iter().map(|r| (r.n, r.data)).collect()
}

#[test]
fn an_update_stores_numbered_chunks_progress_and_metadata_together() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = started(&s, &w);
    let mut meta = serde_json::Map::new();
    meta.insert("pages".into(), json!(1));
    let u = Update {
        progress: Some(Progress { percent: 30.0, message: Some("reading".into()) }),
        metadata: Some(meta),
        chunks: chunks(&["Hel", "lo"]),
    };
    let (a, effects) = report(&s, &id, update(1, u), Some(&lease));
    a.expect("accepted");
    // The subscribers hear of it: the job, not final, with its two new chunks.
    let t = effects.touched.iter().find(|t| t.id == id).expect("touched");
    assert_eq!((t.finished, t.rows.iter().map(|r| r.n).collect::<Vec<_>>()), (false, vec![1, 2]));
    let (a, _) = report(&s, &id, update(1, Update { chunks: chunks(&[" world"]), ..Default::default() }), Some(&lease));
    a.expect("accepted");
    assert_eq!(stored(&s, &id, 0), vec![(1, "Hel".into()), (2, "lo".into()), (3, " world".into())]);
    assert_eq!(stored(&s, &id, 2), vec![(3, " world".into())], "a reader resumes after any number");
    let job = get(&s, &id);
    assert_eq!(job.progress, Some(json!({ "percent": 30.0, "message": "reading" })));
    assert_eq!(job.metadata.get("pages"), Some(&json!(1)));
    assert!(job.tape.out.is_empty() && job.tape.n == 0, "the tape is never stored");
    // The final state is listed as finished.
    let (a, effects) =
        report(&s, &id, Event::Complete { attempt: 1, result: Some(json!({ "ok": true })) }, Some(&lease));
    a.expect("completed");
    assert!(effects.touched.iter().any(|t| t.id == id && t.finished && t.rows.is_empty()));
}

#[test]
fn a_refused_update_writes_nothing() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = started(&s, &w);
    let (a, _) = report(&s, &id, update(1, Update { chunks: chunks(&["kept"]), ..Default::default() }), Some(&lease));
    a.expect("accepted");
    let before = get(&s, &id);
    let cases: Vec<(Event, Option<&str>, ErrorCode)> = vec![
        (update(2, Update { chunks: chunks(&["stale"]), ..Default::default() }), Some(&lease), ErrorCode::StaleAttempt),
        (
            update(1, Update { chunks: chunks(&["forged"]), ..Default::default() }),
            Some("nope"),
            ErrorCode::LeaseMismatch,
        ),
        (update(1, Update { chunks: chunks(&["nolease"]), ..Default::default() }), None, ErrorCode::LeaseMismatch),
        (
            update(
                1,
                Update {
                    progress: Some(Progress { percent: -1.0, message: None }),
                    chunks: chunks(&["x"]),
                    ..Default::default()
                },
            ),
            Some(&lease),
            ErrorCode::InvalidField,
        ),
    ];
    for (event, l, code) in cases {
        let (a, effects) = report(&s, &id, event.clone(), l);
        assert_eq!(a.err().map(|e| e.code()), Some(code), "{event:?}");
        assert!(effects.touched.iter().all(|t| t.rows.is_empty()), "no chunk is published: {event:?}");
    }
    // The cap: one update that would pass 1 MiB is refused whole.
    let big = "x".repeat(60_000);
    let mut refused_at = None;
    for i in 0..20 {
        let u = Update { chunks: vec![Chunk { stream: "big".into(), data: big.clone() }], ..Default::default() };
        if let (Err(e), _) = report(&s, &id, update(1, u), Some(&lease)) {
            assert_eq!(e.code(), ErrorCode::LiveLimit);
            refused_at = Some(i);
            break;
        }
    }
    assert_eq!(refused_at, Some(17), "4 + 17 × 60,000 bytes fit in 1 MiB, the 18th does not");
    let after = get(&s, &id);
    assert_eq!((after.progress, after.metadata), (before.progress, before.metadata));
    let kept = stored(&s, &id, 0);
    assert_eq!(kept.len(), 18);
    assert_eq!(kept[0], (1, "kept".into()));
    assert!(kept.iter().all(|(_, d)| !["stale", "forged", "nolease", "x"].contains(&d.as_str())));
}

#[test]
fn a_final_jobs_chunks_expire_an_hour_after_it_ended() {
    let w = World::default();
    let s = shard(&w);
    let (id, lease) = started(&s, &w);
    let (quiet, quiet_lease) = started(&s, &w);
    report(&s, &id, update(1, Update { chunks: chunks(&["a", "b"]), ..Default::default() }), Some(&lease))
        .0
        .expect("ok");
    report(&s, &id, Event::Complete { attempt: 1, result: None }, Some(&lease)).0.expect("done");
    report(&s, &quiet, Event::Complete { attempt: 1, result: None }, Some(&quiet_lease)).0.expect("done");
    // The alarm is set for the expiry (a job that streamed nothing has none).
    let wake = s.next_wake().expect("read").expect("an alarm");
    assert_eq!(wake, NOW + edgejobs_core::live::RETENTION_MS);
    w.now.set(edgejobs_core::live::RETENTION_MS - 1);
    s.wake_page().expect("alarm");
    assert_eq!(stored(&s, &id, 0).len(), 2, "kept until the hour is over");
    w.now.set(edgejobs_core::live::RETENTION_MS);
    s.wake_page().expect("alarm");
    assert!(stored(&s, &id, 0).is_empty(), "gone after it");
    assert_eq!(s.next_wake().expect("read"), None, "nothing left to wake for");
    assert_eq!(get(&s, &id).state, edgejobs_core::JobState::Completed, "the job itself stays");
}
