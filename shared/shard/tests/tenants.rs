//! Tenants in one shard on rusqlite: scoped reads and events, per-tenant idempotency keys,
//! the pending count kept with the jobs, listings filtered by tenant with a bounded scan,
//! and a backup (export) restored (import) into a fresh shard keeping every tenant.

use edgejobs_core::machine::Event;
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, Export, Get, Import, List, MAX_SCAN};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::wire::ListQuery;
use edgejobs_core::{ErrorCode, Job, JobId};
use edgejobs_shard::native::Sqlite;
use edgejobs_shard::{Host, Level, Shard, store};
use serde_json::json;

#[derive(Debug, Default)]
struct Clock {
    n: std::cell::Cell<u64>,
}

impl Host for &Clock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000
    }
    fn random_u64(&self) -> u64 {
        self.n.set(self.n.get() + 1);
        self.n.get()
    }
    fn log(&self, _: Level, _: &str, _: serde_json::Value) {}
}

fn tenant(t: &str) -> Tenant {
    Tenant::parse(t).expect("valid")
}

fn job(n: u64, owner: &str, key: Option<&str>) -> Job {
    let mut body = json!({ "type": "noop", "delay": "1h", "payload": { "word": format!("w{n}") } });
    if let Some(k) = key {
        body["idempotency_key"] = json!(k);
    }
    let now = 1_800_000_000_000 + n;
    let mut j = edgejobs_core::spec::parse_spec(&body, now).expect("spec").into_job(JobId::new(0, now, n), now).0;
    j.tenant = tenant(owner);
    j
}

fn shard(host: &Clock) -> Shard<Sqlite, &Clock> {
    let s = Shard::new(Sqlite::memory().expect("db"), host, Some(0));
    s.migrate().expect("schema");
    s
}

#[test]
fn a_tenant_sees_and_changes_only_its_own_jobs() {
    let host = Clock::default();
    let s = shard(&host);
    let (a, b) = (job(1, "acme", Some("k")), job(2, "globex", Some("k")));
    let (stored, _) = s.create(vec![a.clone(), b.clone()], 60_000).expect("create");
    assert!(stored.iter().all(|st| st.created), "equal keys of two tenants make two jobs");
    let missing = s.get(Get { id: JobId::new(0, 1_800_000_000_009, 9), tenant: Some(tenant("globex")), wait_ms: 0 });
    let theirs = s.get(Get { id: a.id.clone(), tenant: Some(tenant("globex")), wait_ms: 0 });
    let message = |r: Result<Job, edgejobs_shard::Failure>| match r {
        Err(edgejobs_shard::Failure::Refused(e)) => (e.code, e.message.replace(|c: char| c.is_ascii_hexdigit(), "")),
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(message(theirs), message(missing), "another tenant's job reads as a missing one");
    assert!(s.get(Get { id: a.id.clone(), tenant: Some(tenant("acme")), wait_ms: 0 }).is_ok());
    assert!(s.get(Get { id: a.id.clone(), tenant: None, wait_ms: 0 }).is_ok(), "an admin sees it");
    let cancel = |t: &str| ApplyMany {
        events: vec![JobEvent { id: a.id.clone(), event: Event::Cancel }],
        full: false,
        tenant: Some(tenant(t)),
    };
    let (answers, _) = s.apply_many(cancel("globex")).expect("answered");
    assert_eq!(answers[0].as_ref().err().map(|r| r.code()), Some(ErrorCode::JobNotFound));
    assert_eq!(store::load(&s.db, &a.id).expect("load").expect("there").state.as_str(), "scheduled");
    assert_eq!(
        (store::pending_of(&s.db, &tenant("acme")).ok(), store::pending_of(&s.db, &tenant("globex")).ok()),
        (Some(1), Some(1))
    );
    let (answers, _) = s.apply_many(cancel("acme")).expect("answered");
    assert!(answers[0].is_ok());
    assert_eq!(store::pending_of(&s.db, &tenant("acme")).ok(), Some(0), "a cancel counts the job off");
    // Listings: one tenant's jobs only, whatever the filter.
    let list = |t: &str, search: Option<&str>| {
        let query =
            ListQuery { limit: 10, tenant: Some(tenant(t)), search: search.map(str::to_owned), ..ListQuery::default() };
        s.list(List { query }).expect("list").items.into_iter().map(|l| l.id).collect::<Vec<_>>()
    };
    assert_eq!(list("globex", None), vec![b.id.clone()]);
    assert_eq!(list("globex", Some("w1")), Vec::<JobId>::new(), "a word only acme's payload has");
    assert_eq!(list("acme", Some("w1")), vec![a.id.clone()]);
}

#[test]
fn a_filtered_listing_scans_a_bounded_window_and_says_where_it_stopped() {
    let host = Clock::default();
    let s = shard(&host);
    let n = MAX_SCAN as u64 + 50;
    let jobs: Vec<Job> = (1..=n).map(|i| job(i, "acme", None)).collect();
    for chunk in jobs.chunks(500) {
        s.create(chunk.to_vec(), 60_000).expect("create");
    }
    // Only the oldest job holds the word: the first page stops after MAX_SCAN rows, empty,
    // and says where; the next page, from there, finds it.
    let query = ListQuery { limit: 10, search: Some("w1\"".to_owned()), ..ListQuery::default() };
    let first = s.list(List { query: query.clone() }).expect("list");
    assert!(first.items.is_empty());
    let to = first.scanned_to.expect("a bounded scan says where it stopped");
    assert_eq!(to, jobs[(n - MAX_SCAN as u64) as usize].id);
    let after = edgejobs_core::wire::Cursor { created_ms: to.created_ms(), id: to.as_str().to_owned() };
    let next = s.list(List { query: ListQuery { after: Some(after), ..query } }).expect("list");
    assert_eq!(next.items.iter().map(|l| l.id.clone()).collect::<Vec<_>>(), vec![jobs[0].id.clone()]);
    assert_eq!(next.scanned_to, None, "the rest of the shard was within the window");
}

#[test]
fn a_backup_restores_every_tenant_and_its_keys() {
    let host = Clock::default();
    let s = shard(&host);
    s.create(vec![job(1, "acme", Some("k")), job(2, "globex", Some("k")), job(3, "default", None)], 60_000)
        .expect("create");
    let page = s.export(Export { after: None, max_rows: 100, max_bytes: 1 << 20 }).expect("export");
    let host2 = Clock::default();
    let fresh = shard(&host2);
    fresh
        .import(Import { shard: 0, ndjson: page.ndjson, first: true, idempotency_window_ms: 60_000, epoch: 1 })
        .expect("import");
    let tenants: Vec<String> = store::load_where(&fresh.db, "1 = 1 ORDER BY id", &[])
        .expect("load")
        .into_iter()
        .map(|j| j.tenant.to_string())
        .collect();
    assert_eq!(tenants, ["acme", "globex", "default"]);
    for t in ["acme", "globex", "default"] {
        assert_eq!(store::pending_of(&fresh.db, &tenant(t)).ok(), Some(1), "{t}'s pending count is restored");
    }
    // Each tenant's key still names its own job after the restore.
    let (again, _) = fresh.create(vec![job(4, "globex", Some("k"))], 60_000).expect("create");
    assert!(!again[0].created && again[0].job.get().contains("\"globex\""));
}
