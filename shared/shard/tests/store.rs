//! The shard's schema and storage on rusqlite: creation, the version 1 → 2 and 2 → 3
//! migrations run on real old tables, and the failures that must be loud.

use edgejobs_shard::native::Sqlite;
use edgejobs_shard::sql::{Cols, Sql, text};
use edgejobs_shard::store::{self, Migrated, SCHEMA_V1, SCHEMA_V2};
use edgejobs_shard::{Host, Level, Shard};

#[derive(Debug, Default)]
struct Fixed {
    logs: std::cell::RefCell<Vec<String>>,
}

impl Host for &Fixed {
    fn now_ms(&self) -> u64 {
        1_000_000
    }
    fn random_u64(&self) -> u64 {
        7
    }
    fn log(&self, level: Level, msg: &str, _: serde_json::Value) {
        self.logs.borrow_mut().push(format!("{}: {msg}", level.as_str()));
    }
}

fn count(db: &Sqlite, sql: &str) -> u64 {
    let rows = db.rows(sql, &[]).expect("query");
    Cols::new(rows.into_iter().next().expect("a row")).u64().expect("a count")
}

#[test]
fn a_fresh_database_is_created_then_left_alone() {
    let db = Sqlite::memory().expect("db");
    assert_eq!(store::migrate(&db), Ok(Migrated::Created));
    assert_eq!(store::migrate(&db), Ok(Migrated::Current));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_scheduled'"), 1);
}

#[test]
fn version_1_jobs_survive_the_migration_and_lose_their_old_indexes() {
    let db = Sqlite::memory().expect("db");
    db.script(SCHEMA_V1).expect("v1 schema");
    db.rows(
        "INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc) VALUES (?, 'noop', 'queued', 1, 1, 1, '', '{}')",
        &[text("j00abc")],
    )
    .expect("a v1 row");
    assert_eq!(store::migrate(&db), Ok(Migrated::From(1)));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs WHERE id = 'j00abc'"), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('jobs_created', 'jobs_state_run_at')"), 0);
    let without_rowid =
        count(&db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs' AND sql LIKE '%WITHOUT ROWID%'");
    assert_eq!(without_rowid, 1, "the jobs table is clustered on the id after the migration");
}

#[test]
fn a_schema_newer_than_the_code_is_refused_not_overwritten() {
    let db = Sqlite::memory().expect("db");
    store::migrate(&db).expect("created");
    db.rows("UPDATE meta SET value = '9' WHERE key = 'schema'", &[]).expect("a newer version");
    let err = store::migrate(&db).expect_err("refused");
    assert!(err.0.contains("version 9"), "{err}");
    let host = Fixed::default();
    let shard = Shard::new(db, &host, Some(0));
    assert!(shard.migrate().is_err());
    assert!(host.logs.borrow().iter().any(|l| l.starts_with("error: shard schema setup failed")), "{:?}", host.logs);
}

#[test]
fn a_corrupt_histogram_fails_the_write_instead_of_restarting_from_zero() {
    let db = Sqlite::memory().expect("db");
    store::migrate(&db).expect("created");
    db.rows(
        "INSERT INTO histograms (name, labels, doc) VALUES ('edgejobs_attempt_duration_seconds', '[]', 'not json')",
        &[],
    )
    .expect("corrupt row");
    let name = edgejobs_core::stats::Metric::AttemptDurationSeconds;
    let delta = edgejobs_core::stats::Delta::Observe { name, labels: vec![], secs: 1.0 };
    let err = store::record(&db, &[delta], 1_000).expect_err("loud");
    assert!(err.0.contains("does not parse"), "{err}");
}

#[test]
fn a_failed_transaction_writes_nothing() {
    let db = Sqlite::memory().expect("db");
    store::migrate(&db).expect("created");
    let out: Result<(), edgejobs_shard::sql::StoreError> = db.transaction(|| {
        db.rows("INSERT INTO gauges (name, value) VALUES ('g', 1)", &[])?;
        Err(edgejobs_shard::sql::StoreError("stop".into()))
    });
    assert!(out.is_err());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM gauges"), 0);
}

#[test]
fn version_2_jobs_and_keys_become_the_default_tenants() {
    use edgejobs_core::{JobId, tenant::Tenant};
    let db = Sqlite::memory().expect("db");
    db.script(SCHEMA_V2).expect("v2 schema");
    // A job as version 2 stored it: no tenant in the document, its key unscoped.
    let spec = serde_json::json!({ "type": "noop", "idempotency_key": "order-1" });
    let job =
        edgejobs_core::spec::parse_spec(&spec, 999_000).expect("spec").into_job(JobId::new(0, 999_000, 1), 999_000).0;
    let mut doc = serde_json::to_value(&job).expect("json");
    doc.as_object_mut().expect("object").remove("tenant");
    db.rows(
        "INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc) VALUES (?, 'noop', 'queued', 1, 1, 1, '', ?)",
        &[text(job.id.as_str()), text(doc.to_string())],
    )
    .expect("a v2 row");
    db.rows(
        "INSERT INTO idempotency (key, job_id, expires_at) VALUES ('order-1', ?, 9999999999)",
        &[text(job.id.as_str())],
    )
    .expect("a v2 key");
    assert_eq!(store::migrate(&db), Ok(Migrated::From(2)));
    assert_eq!(count(&db, "SELECT COUNT(*) FROM jobs WHERE tenant = 'default'"), 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_tenant'"), 1);
    let host = Fixed::default();
    let shard = Shard::new(db, &host, Some(0));
    let stored = store::load(&shard.db, &job.id).expect("load").expect("there");
    assert_eq!(stored.tenant, Tenant::default());
    // The old key still names its job for the default tenant; another tenant's equal key is its own.
    let again = edgejobs_core::spec::parse_spec(&spec, 1_000_000)
        .expect("spec")
        .into_job(JobId::new(0, 1_000_000, 2), 1_000_000)
        .0;
    let (answers, _) = shard.create(vec![again.clone()], 60_000).expect("create");
    assert!(!answers[0].created, "the default tenant's old key still dedupes");
    assert!(answers[0].job.get().contains(job.id.as_str()));
    let mut theirs = again;
    theirs.id = JobId::new(0, 1_000_000, 3);
    theirs.tenant = Tenant::parse("globex").expect("valid");
    let (answers, _) = shard.create(vec![theirs], 60_000).expect("create");
    assert!(answers[0].created, "another tenant's equal key makes its own job");
}
