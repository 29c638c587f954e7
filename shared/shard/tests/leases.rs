//! Lease tokens on rusqlite: a native start issues one (from the host's randomness, carried
//! by the start's answer), only reports carrying it change the job, a takeover issues a new
//! one, edge-lane jobs take no consumer report, and refusals are logged with the consumer's
//! name, never a token. The API never shows the token.

use std::cell::{Cell, RefCell};

use edgejobs_core::machine::{Event, Refusal};
use edgejobs_core::protocol::{Applied, Get, ReportMany};
use edgejobs_core::report::Report;
use edgejobs_core::wire::Include;
use edgejobs_core::{ErrorCode, Job, JobId, JobState};
use edgejobs_shard::native::Sqlite;
use edgejobs_shard::{Host, Level, Shard};
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;

#[derive(Debug, Default)]
struct World {
    now: Cell<u64>,
    n: Cell<u64>,
    logs: RefCell<Vec<String>>,
}

impl Host for &World {
    fn now_ms(&self) -> u64 {
        NOW + self.now.get()
    }
    fn random_u64(&self) -> u64 {
        self.n.set(self.n.get() + 1);
        self.n.get().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn log(&self, level: Level, msg: &str, fields: serde_json::Value) {
        self.logs.borrow_mut().push(format!("{}: {msg} {fields}", level.as_str()));
    }
}

fn shard(w: &World) -> Shard<Sqlite, &World> {
    let s = Shard::new(Sqlite::memory().expect("db"), w, Some(0));
    s.migrate().expect("schema");
    s
}

fn enqueue(s: &Shard<Sqlite, &World>, w: &World, job_type: &str) -> JobId {
    let spec = edgejobs_core::spec::parse_spec(&json!({ "type": job_type, "max_attempts": 3 }), NOW).expect("spec");
    let job = spec.into_job(JobId::new(0, NOW, w.random_u64()), NOW).0;
    let id = job.id.clone();
    s.create(vec![job], 60_000).expect("create");
    id
}

fn report(s: &Shard<Sqlite, &World>, id: &JobId, event: Event, lease: Option<&str>) -> Result<Applied, Refusal> {
    let r = ReportMany {
        reports: vec![Report::new(id.clone(), event, lease.map(str::to_owned))],
        consumer: "host-a".into(),
        full: false,
    };
    let (mut answers, _) = s.report_many(r).expect("the call");
    answers.remove(0)
}

fn get(s: &Shard<Sqlite, &World>, id: &JobId) -> Job {
    s.get(Get { id: id.clone(), tenant: None, wait_ms: 0 }).expect("the job")
}

fn code(r: Result<Applied, Refusal>) -> Option<ErrorCode> {
    r.err().map(|e| e.code())
}

#[test]
fn only_the_holder_of_the_live_lease_changes_a_native_job() {
    let w = World::default();
    let s = shard(&w);
    let id = enqueue(&s, &w, "sleep");
    let started = report(&s, &id, Event::Start { attempt: 1 }, None).expect("started");
    assert_eq!(started.job.as_ref().map(|j| j.lease.clone()), Some(None), "the token is never in a job document");
    let lease = started.lease.clone().expect("a start issues a token");
    assert_eq!(lease.len(), 48, "192 bits in hex");
    let before = get(&s, &id);
    w.now.set(1_000);
    let beat = |p| Event::Heartbeat { attempt: 1, progress: Some(json!(p)) };
    // Forged reports: no token, a made-up one, the token's prefix. Nothing changes.
    for (event, forged) in [
        (Event::Complete { attempt: 1, result: Some(json!("forged")) }, None),
        (beat(1), Some("0".repeat(48))),
        (
            Event::Fail { attempt: 1, error: "x".into(), disposition: edgejobs_core::machine::Disposition::Permanent },
            Some(lease[..47].to_owned()),
        ),
    ] {
        assert_eq!(code(report(&s, &id, event, forged.as_deref())), Some(ErrorCode::LeaseMismatch));
        assert_eq!(get(&s, &id), before, "a refused report changes nothing");
    }
    let logs = w.logs.borrow().join("\n");
    assert!(logs.contains("host-a") && !logs.contains(&lease), "named, never the token: {logs}");
    // The holder's heartbeat (with progress) is accepted.
    assert_eq!(report(&s, &id, beat(2), Some(&lease)).map(|a| a.state), Ok(JobState::Active));
    assert_eq!(get(&s, &id).progress, Some(json!(2)));
    // A takeover after the lease issues a new token; the old holder is refused, at its old
    // attempt (fencing, as before) and even if it named the new one.
    w.now.set(100_000);
    let taken = report(&s, &id, Event::Reclaim { attempt: 1, lease_ms: 30_000 }, None).expect("taken over");
    let new = taken.lease.expect("a new token");
    assert_ne!(new, lease);
    assert_eq!(code(report(&s, &id, beat(3), Some(&lease))), Some(ErrorCode::LeaseLost));
    let late = Event::Complete { attempt: 2, result: None };
    assert_eq!(code(report(&s, &id, late.clone(), Some(&lease))), Some(ErrorCode::LeaseMismatch));
    assert_eq!(report(&s, &id, late, Some(&new)).map(|a| a.state), Ok(JobState::Completed));
    assert_eq!(get(&s, &id).lease, None, "the token ends with its attempt");
    // No live attempt: nothing to report on.
    let after = Event::Heartbeat { attempt: 2, progress: None };
    assert_eq!(code(report(&s, &id, after, Some(&new))), Some(ErrorCode::NotLeased));
}

#[test]
fn edge_lane_jobs_take_no_consumer_report_and_listings_never_show_a_token() {
    let w = World::default();
    let s = shard(&w);
    let edge = enqueue(&s, &w, "noop");
    let before = get(&s, &edge);
    assert_eq!(code(report(&s, &edge, Event::Start { attempt: 1 }, None)), Some(ErrorCode::NotLeased));
    assert_eq!(get(&s, &edge), before);
    let native = enqueue(&s, &w, "sleep");
    let lease = report(&s, &native, Event::Start { attempt: 1 }, None).ok().and_then(|a| a.lease).expect("a token");
    let q = edgejobs_core::wire::ListQuery { limit: 10, ..Default::default() };
    let page = s.list(edgejobs_core::protocol::List { query: q }).expect("a page");
    let text = format!("{page:?}");
    assert!(text.contains(native.as_str()) && !text.contains(&lease), "{text}");
    assert!(Include::default().dropped_paths().contains(&"$.lease"));
}
