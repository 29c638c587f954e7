//! Re-sealing on rusqlite: jobs' and schedules' sealed header values move to the newest
//! `PAYLOAD_ENCRYPTION_KEYS` key, page by page, so the old key can be dropped: afterwards a
//! configuration holding only the new key opens the job's headers and runs the schedule.

mod common;

use std::cell::Cell;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::{Reseal, ResealReport, ScheduleOp};
use edgejobs_core::seal::{self, Keys};
use edgejobs_core::{JobId, schedule};
use edgejobs_shard::native::Sqlite;
use edgejobs_shard::{Host, Level, Shard};
use serde_json::json;

const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "k2:HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";
const K3: &str = "k3:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const NOW: u64 = 1_800_000_000_000;

#[derive(Debug, Default)]
struct Counter {
    n: Cell<u64>,
}

impl Host for &Counter {
    fn now_ms(&self) -> u64 {
        NOW
    }
    fn random_u64(&self) -> u64 {
        self.n.set(self.n.get() + 1);
        self.n.get().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn log(&self, _: Level, _: &str, _: serde_json::Value) {}
}

fn config(keys: &str) -> EdgeConfig {
    common::edge_config_keyed(1, keys)
}

fn nonce(host: &Counter) -> impl FnMut() -> Result<[u8; 12], String> + '_ {
    move || {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&host.random_u64().to_le_bytes());
        Ok(b)
    }
}

/// Enqueues a webhook job whose `authorization` header is sealed under `keys`.
fn enqueue(shard: &Shard<Sqlite, &Counter>, host: &Counter, keys: &Keys, secret: &str) -> JobId {
    let body = json!({ "type": "webhook", "delay": "1h",
        "payload": { "url": "https://hooks.example/in", "headers": { "authorization": secret } } });
    let spec = edgejobs_core::spec::parse_spec(&body, NOW).unwrap_or_else(|e| panic!("spec: {e:?}"));
    let mut job = spec.into_job(JobId::new(0, NOW, host.random_u64()), NOW).0;
    seal::seal_headers(&mut job.payload, job.id.as_str(), keys, &mut nonce(host)).unwrap_or_else(|e| panic!("{e}"));
    let id = job.id.clone();
    shard.create(vec![job], 60_000).unwrap_or_else(|e| panic!("create: {e:?}"));
    id
}

fn stored_header(shard: &Shard<Sqlite, &Counter>, id: &JobId) -> String {
    let job = edgejobs_shard::store::load(&shard.db, id).expect("read").expect("the job exists");
    job.payload["headers"]["authorization"].as_str().unwrap_or_default().to_owned()
}

fn reseal_all(shard: &Shard<Sqlite, &Counter>, keys: &Keys, limit: u32) -> (Vec<ResealReport>, ResealReport) {
    let (mut pages, mut total) = (Vec::new(), ResealReport::default());
    let mut after = None;
    for _ in 0..100 {
        let r = shard.reseal(Reseal { after: after.clone(), limit }, keys).unwrap_or_else(|e| panic!("reseal: {e:?}"));
        total.scanned += r.scanned;
        total.jobs_resealed += r.jobs_resealed;
        total.schedules_resealed += r.schedules_resealed;
        total.unopenable += r.unopenable;
        total.key = r.key.clone();
        after = r.cursor.clone();
        let done = r.done;
        pages.push(r);
        if done {
            total.done = true;
            return (pages, total);
        }
    }
    panic!("the re-seal did not end in 100 pages");
}

#[test]
fn reseal_moves_jobs_and_schedules_to_the_newest_key_so_the_old_one_can_go() {
    let host = Counter::default();
    let shard = Shard::new(Sqlite::memory().expect("db"), &host, Some(0));
    shard.migrate().expect("schema");
    let old = config(K1);
    // Five jobs with a sealed header, one without, under k1; a schedule sealed under k1.
    let ids: Vec<JobId> = (0..5).map(|i| enqueue(&shard, &host, &old.payload_keys, &format!("Bearer s{i}"))).collect();
    let plain = edgejobs_core::spec::parse_spec(&json!({ "type": "noop" }), NOW).expect("spec");
    shard.create(vec![plain.into_job(JobId::new(0, NOW, 1), NOW).0], 60_000).expect("create");
    let create = json!({ "name": "nightly", "cron": "0 3 * * *",
        "job": { "type": "webhook", "payload": { "url": "https://hooks.example/nightly",
            "headers": { "authorization": "Bearer nightly" } } } });
    let mut def = schedule::parse_create(&create, NOW, &old.types).unwrap_or_else(|e| panic!("{e:?}"));
    if let Some(p) = def.schedule.job.get_mut("payload") {
        seal::seal_headers(p, &schedule::tag_of("nightly"), &old.payload_keys, &mut nonce(&host)).expect("sealed");
    }
    shard.schedules(ScheduleOp::Create { schedule: Box::new(def.schedule) }, &old).expect("schedule created");
    assert!(stored_header(&shard, &ids[0]).starts_with("ejenc:v1:k1:"));

    // With k2 alone, before the re-seal: the header does not open and the schedule cannot run.
    let only_new = config(K2);
    let job = edgejobs_shard::store::load(&shard.db, &ids[0]).expect("read").expect("exists");
    assert!(seal::open_headers(&job.payload, ids[0].as_str(), Some(&only_new.payload_keys)).is_err());
    let trigger = || shard.schedules(ScheduleOp::Trigger { name: "nightly".into() }, &only_new);
    assert!(trigger().is_err(), "k2 alone cannot run the schedule before the re-seal");

    // The re-seal under "k2,k1", two jobs a page.
    let rotating = config(&format!("{K2},{K1}"));
    let (pages, total) = reseal_all(&shard, &rotating.payload_keys, 2);
    // Six jobs, two a page; a page that comes back full is not known to be the last.
    assert_eq!(pages.len(), 4, "{pages:?}");
    assert!(pages[..3].iter().all(|p| !p.done && p.cursor.is_some() && p.scanned == 2), "{pages:?}");
    assert_eq!(pages[0].schedules_resealed, 1, "schedules on the first page");
    assert_eq!((total.scanned, total.jobs_resealed, total.schedules_resealed, total.unopenable), (6, 5, 1, 0));
    assert_eq!(total.key, "k2");

    // Now k2 alone opens every job's header (the same value) and runs the schedule.
    for (i, id) in ids.iter().enumerate() {
        assert!(stored_header(&shard, id).starts_with("ejenc:v1:k2:"));
        let job = edgejobs_shard::store::load(&shard.db, id).expect("read").expect("exists");
        let opened = seal::open_headers(&job.payload, id.as_str(), Some(&only_new.payload_keys)).expect("opens");
        assert_eq!(opened, vec![("authorization".to_owned(), format!("Bearer s{i}"))]);
        assert_eq!(job.state, edgejobs_core::JobState::Scheduled, "only the sealed values changed");
    }
    let (reply, _, _) = trigger().unwrap_or_else(|e| panic!("the schedule runs with k2 alone: {e:?}"));
    let edgejobs_core::protocol::ScheduleReply::Triggered { job, .. } = reply else { panic!("{reply:?}") };
    let run = seal::open_headers(&job.payload, job.id.as_str(), Some(&only_new.payload_keys)).expect("opens");
    assert_eq!(run, vec![("authorization".to_owned(), "Bearer nightly".to_owned())]);

    // Idempotent: a second pass changes nothing.
    let before = stored_header(&shard, &ids[0]);
    let (_, again) = reseal_all(&shard, &rotating.payload_keys, 500);
    assert_eq!((again.jobs_resealed, again.schedules_resealed, again.unopenable), (0, 0, 0), "{again:?}");
    assert_eq!(stored_header(&shard, &ids[0]), before);
}

/// A page stops before its byte budget of loaded documents (not done, with a cursor), so
/// large payloads take more calls, not more memory; every job is still re-sealed once.
#[test]
fn a_page_stops_at_its_byte_budget() {
    let host = Counter::default();
    let shard = Shard::new(Sqlite::memory().expect("db"), &host, Some(0));
    shard.migrate().expect("schema");
    let old = Keys::parse(K1).expect("valid");
    let big = "x".repeat(20_000);
    for i in 0..6 {
        let body = json!({ "type": "webhook", "delay": "1h",
            "payload": { "url": "https://hooks.example/in", "body": big, "headers": { "authorization": format!("b{i}") } } });
        let spec = edgejobs_core::spec::parse_spec(&body, NOW).unwrap_or_else(|e| panic!("spec: {e:?}"));
        let mut job = spec.into_job(JobId::new(0, NOW, (&host).random_u64()), NOW).0;
        seal::seal_headers(&mut job.payload, job.id.as_str(), &old, &mut nonce(&host)).expect("sealed");
        shard.create(vec![job], 60_000).expect("create");
    }
    let keys = Keys::parse(&format!("{K2},{K1}")).expect("valid");
    let (mut after, mut pages, mut resealed) = (None, Vec::new(), 0);
    for _ in 0..20 {
        let r = shard.reseal_within(Reseal { after: after.clone(), limit: 100 }, &keys, 50_000).expect("reseal");
        resealed += r.jobs_resealed;
        after = r.cursor.clone();
        pages.push(r.scanned);
        if r.done {
            break;
        }
    }
    assert_eq!(pages, vec![2, 2, 2], "two ~20 KB documents fit in 50 KB; the last page ends done");
    assert_eq!(resealed, 6);
}

/// A value that no configured key opens is left exactly as it was, and counted.
#[test]
fn a_value_no_key_opens_is_left_alone_and_counted() {
    let host = Counter::default();
    let shard = Shard::new(Sqlite::memory().expect("db"), &host, Some(0));
    shard.migrate().expect("schema");
    let lost = Keys::parse(K3).expect("valid");
    let id = enqueue(&shard, &host, &lost, "Bearer lost");
    let before = stored_header(&shard, &id);
    let r = shard
        .reseal(Reseal { after: None, limit: 10 }, &Keys::parse(&format!("{K2},{K1}")).expect("valid"))
        .expect("reseal");
    assert_eq!((r.scanned, r.jobs_resealed, r.unopenable, r.done, r.cursor), (1, 0, 1, true, None));
    assert_eq!(stored_header(&shard, &id), before);
    // The stats object holds no jobs: refused.
    let stats = Shard::new(Sqlite::memory().expect("db"), &host, None);
    stats.migrate().expect("schema");
    assert!(stats.reseal(Reseal { after: None, limit: 10 }, &lost).is_err());
}
