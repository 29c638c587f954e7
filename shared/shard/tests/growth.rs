//! A growth of `SHARD_COUNT` on rusqlite: shard 0 records the topology once and refuses a
//! lower count; a key's old home answers a claim with its job, or records that the key
//! moved, after which a create of that key there is refused with its new home.

use std::cell::Cell;

use edgejobs_core::protocol::{ClaimKeys, KeyClaim, TopologyOp};
use edgejobs_core::topology::Epoch;
use edgejobs_core::{Job, JobId};
use edgejobs_shard::native::Sqlite;
use edgejobs_shard::{Failure, Host, Level, Shard};
use serde_json::json;

const NOW: u64 = 1_800_000_000_000;
const WINDOW: u64 = 86_400_000;

#[derive(Debug, Default)]
struct Clock {
    now: Cell<u64>,
    n: Cell<u64>,
}

impl Host for &Clock {
    fn now_ms(&self) -> u64 {
        NOW + self.now.get()
    }
    fn random_u64(&self) -> u64 {
        self.n.set(self.n.get() + 1);
        self.n.get()
    }
    fn log(&self, _: Level, _: &str, _: serde_json::Value) {}
}

fn shard(host: &Clock, number: u16) -> Shard<Sqlite, &Clock> {
    let s = Shard::new(Sqlite::memory().expect("db"), host, Some(number));
    s.migrate().expect("schema");
    s
}

fn job(shard: u16, n: u64, key: &str) -> Job {
    let body = json!({ "type": "noop", "delay": "1h", "idempotency_key": key });
    edgejobs_core::spec::parse_spec(&body, NOW).expect("spec").into_job(JobId::new(shard, NOW, n), NOW).0
}

#[test]
fn shard_zero_records_a_growth_once_and_keeps_it_when_a_lower_count_starts() {
    let host = Clock::default();
    let s = shard(&host, 0);
    let t = s.topology(TopologyOp { configured: 16 }).expect("first start");
    assert_eq!(t.epochs, vec![Epoch { count: 16, since_ms: 0 }]);
    host.now.set(5_000);
    let t = s.topology(TopologyOp { configured: 64 }).expect("growth");
    assert_eq!(t.epochs, vec![Epoch { count: 16, since_ms: 0 }, Epoch { count: 64, since_ms: NOW + 5_000 }]);
    host.now.set(9_000);
    assert_eq!(s.topology(TopologyOp { configured: 64 }).expect("again"), t, "recorded once");
    assert_eq!(s.topology(TopologyOp { configured: 16 }).expect("lower"), t, "a lower count changes nothing");
    assert!(matches!(shard(&host, 3).topology(TopologyOp { configured: 16 }), Err(Failure::Refused(_))));
}

#[test]
fn an_old_home_answers_a_claim_with_its_job_or_records_the_move() {
    let host = Clock::default();
    let old = shard(&host, 5);
    let kept = job(5, 1, "seen-before");
    let (stored, _) = old.create(vec![kept.clone()], WINDOW).expect("create before the growth");
    assert!(stored[0].created);
    let scoped = |k: &str| kept.tenant.scope_key(k);
    let claims = ClaimKeys {
        claims: vec![
            KeyClaim { key: scoped("seen-before"), to: 40 },
            KeyClaim { key: scoped("new"), to: 41 },
            KeyClaim { key: scoped("new"), to: 41 },
        ],
        idempotency_window_ms: WINDOW,
    };
    let got = old.claim_keys(claims.clone()).expect("claimed");
    let found: serde_json::Value = serde_json::from_str(got[0].as_ref().expect("the key's job").get()).expect("json");
    assert_eq!(found["id"], kept.id.as_str(), "a key seen before the growth keeps its job");
    assert!(got[1].is_none() && got[2].is_none(), "an unknown key moves");
    // A router that has not seen the growth creates the moved key here: refused, with the
    // new home, and nothing is created.
    let (stored, _) = old.create(vec![job(5, 2, "new"), job(5, 3, "other")], WINDOW).expect("answered");
    assert_eq!(stored[0].moved_to, Some(41));
    assert!(!stored[0].created && stored[0].job.get() == "null");
    assert!(stored[1].created && stored[1].moved_to.is_none(), "another key is created as before");
    let claimed_again = old.claim_keys(claims).expect("again");
    assert!(claimed_again[1].is_none(), "still moved");
    // Past the window the mark expires with the keys.
    host.now.set(WINDOW + 1);
    let (stored, _) = old.create(vec![job(5, 4, "new")], WINDOW).expect("after the window");
    assert!(stored[0].created, "{:?}", stored[0].moved_to);
}

/// Found by the simulation (seeds 13 and 19): a restore wrote the key of every restored
/// job, even one whose window was over, over the mark of a key that had moved away since;
/// a router that missed the growth then created the key's job a second time.
#[test]
fn a_restore_keeps_a_moved_key_moved_over_an_expired_job_of_that_key() {
    use edgejobs_core::protocol::{Export, Import};
    let host = Clock::default();
    let old = shard(&host, 5);
    old.create(vec![job(5, 1, "k")], WINDOW).expect("created long ago");
    let page = old.export(Export { after: None, max_rows: 10, max_bytes: 1 << 20 }).expect("export");
    // The window is over; after a growth the key moves to shard 40.
    host.now.set(WINDOW + 1);
    let scoped = job(5, 0, "k").tenant.scope_key("k");
    let claims = ClaimKeys { claims: vec![KeyClaim { key: scoped, to: 40 }], idempotency_window_ms: WINDOW };
    assert!(old.claim_keys(claims).expect("claimed")[0].is_none(), "the key moved");
    let import = Import { shard: 5, ndjson: page.ndjson, first: true, idempotency_window_ms: WINDOW, epoch: NOW };
    old.import(import).expect("restored");
    let (stored, _) = old.create(vec![job(5, 2, "k")], WINDOW).expect("answered");
    assert_eq!(stored[0].moved_to, Some(40), "still moved after the restore");
}
