//! A shard's tables: the schema and its migration, and the reads and writes the operations
//! share (jobs by id, plans, metric deltas, idempotency keys, the next wake-up). Every call
//! is synchronous: nothing awaits between a load and the write that follows it.

use std::collections::BTreeMap;

use edgejobs_core::metrics::Histogram;
use edgejobs_core::plan::{KeyWrite, Plan};
use edgejobs_core::stats::{self, Delta};
use edgejobs_core::{Job, JobId};

use crate::Failure;
use crate::sql::{Cols, Sql, StoreError, Value, int, text};

/// The current schema. Version 2 keeps jobs in a `WITHOUT ROWID` table clustered on the id
/// (ids sort by creation time within a shard, so listings walk the primary key) and
/// indexes only scheduled jobs by `run_at` (what the alarm looks for). A job's state
/// changes then write one row each, where version 1 also wrote a rowid, a creation-time
/// index and a state index: Cloudflare bills every row written, index rows included.
/// Everything else (the sweep, retention, listings by state) scans, bounded by `LIMIT`.
///
/// Version 3 adds the `tenant` of each job (jobs from before read as `default`), an index
/// on it for one tenant's listings (written once per job: the tenant and the id never
/// change), and scopes idempotency keys by tenant (`{tenant}\x1f{key}`).
pub const SCHEMA_VERSION: u32 = 3;

/// The jobs table of version 2 (also what the 1 → 2 migration creates).
macro_rules! jobs_table {
    () => {
        "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    doc TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT 'default'
) WITHOUT ROWID;
"
    };
}

/// Version 2 → 3: every stored job and idempotency key belongs to the default tenant.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
UPDATE idempotency SET key = 'default' || char(31) || key;
";

const JOBS_TABLE: &str = jobs_table!();

/// Run at every start (idempotent): the one index jobs have.
const JOBS_INDEXES: &str = "
DROP INDEX IF EXISTS jobs_state_run_at;
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs(run_at) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, id);
";

/// The flow gate's tables (`crate::flow`), created with the others at every start.
pub const FLOW_TABLES: &str = "
CREATE TABLE IF NOT EXISTS flow_lists (
    list TEXT PRIMARY KEY,
    running INTEGER NOT NULL DEFAULT 0,
    lim INTEGER NOT NULL DEFAULT 0,
    waiting INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL DEFAULT 0,
    spacing INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flow_wait (
    list TEXT NOT NULL,
    rank INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (list, rank, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS flow_wait_age ON flow_wait(list, seq);
CREATE TABLE IF NOT EXISTS flow_paused (what TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flow_wakes (list TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flow_windows (
    key TEXT PRIMARY KEY,
    start INTEGER NOT NULL,
    n INTEGER NOT NULL,
    job_id TEXT NOT NULL
) WITHOUT ROWID;
";

/// The event index of workflow waits and the outbox of waits to index (#29; see
/// `events.rs`).
const EVENT_TABLES: &str = "
CREATE TABLE IF NOT EXISTS waits (
    job TEXT NOT NULL,
    step TEXT NOT NULL,
    tenant TEXT NOT NULL,
    event TEXT NOT NULL,
    ptrs TEXT NOT NULL,
    vals TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    matched TEXT,
    matched_by INTEGER,
    matched_at INTEGER,
    PRIMARY KEY (job, step)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS waits_by_event ON waits(tenant, event, ptrs, vals);
CREATE INDEX IF NOT EXISTS waits_expiry ON waits(expires_at);
CREATE INDEX IF NOT EXISTS waits_matched ON waits(matched_by) WHERE matched_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS waits_undelivered ON waits(matched_at) WHERE matched_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS wait_shapes (
    tenant TEXT NOT NULL,
    event TEXT NOT NULL,
    ptrs TEXT NOT NULL,
    PRIMARY KEY (tenant, event, ptrs)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    eid TEXT,
    at INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_name ON events(tenant, name, at);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events(tenant, name, eid) WHERE eid IS NOT NULL;
CREATE TABLE IF NOT EXISTS waits_to_index (
    job TEXT NOT NULL,
    step TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (job, step)
) WITHOUT ROWID;
";

const OTHER_TABLES: &str = "
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS histograms (
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS gauges (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER NOT NULL,
    series TEXT NOT NULL,
    n REAL NOT NULL,
    PRIMARY KEY (minute, series)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    wake_at INTEGER,
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_names (name TEXT PRIMARY KEY, home INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    total INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    fired INTEGER NOT NULL DEFAULT 0,
    doc TEXT NOT NULL
) WITHOUT ROWID;
";

/// Version 1: jobs in a rowid table with a creation-time and a state index. Kept so the
/// migration below is tested from the real thing.
pub const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state_run_at ON jobs(state, run_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
";

/// Version 2's jobs and idempotency tables, before tenants. Kept so the 2 → 3 migration is
/// tested from the real thing.
pub const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', '2');
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs(run_at) WHERE state = 'scheduled';
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
";

/// Version 1 → 2: the same columns in a table clustered on the id; its indexes go (the
/// new one is created by `JOBS_INDEXES`).
const MIGRATE_1_TO_2: &str = concat!(
    "
ALTER TABLE jobs RENAME TO jobs_v1;
DROP INDEX IF EXISTS jobs_state_run_at;
DROP INDEX IF EXISTS jobs_created;
",
    jobs_table!(),
    "
INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc)
    SELECT id, type, state, run_at, created_at, updated_at, tags, doc FROM jobs_v1;
DROP TABLE jobs_v1;
"
);

/// Idempotency keys stored before tenants, if the table exists: the default tenant's.
const SCOPE_OLD_KEYS: &str = "
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, job_id TEXT NOT NULL, expires_at INTEGER NOT NULL);
UPDATE idempotency SET key = 'default' || char(31) || key WHERE instr(key, char(31)) = 0;
";

/// How long a matched workflow wait may stay undelivered (its send failed half-way, or the
/// sender died) before the event index's own alarm delivers it again, and again after as
/// long while its run's shard cannot be reached (see `events.rs`; here, because the next
/// wake-up counts it and the event index reads the store, not the other way round).
pub const REDELIVER_MS: u64 = 30_000;

/// Most bound parameters one statement may carry in a Durable Object.
pub const MAX_PARAMS: usize = 100;

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrated {
    Current,
    Created,
    From(u32),
}

/// Tags as stored for filtering: `,a,b,` so that `LIKE '%,a,%'` matches whole tags only.
pub fn tags_column(tags: &[String]) -> String {
    if tags.is_empty() { String::new() } else { format!(",{},", tags.join(",")) }
}

pub fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A stored document that does not parse: the table is corrupt, a storage error.
pub fn parse<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError(format!("a stored document does not parse: {e}")))
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError(format!("could not encode a document: {e}")))
}

/// Creates or migrates the schema, in one transaction. Runs when the shard starts.
pub fn migrate(db: &impl Sql) -> Result<Migrated, StoreError> {
    db.transaction(|| {
        db.script("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
        let version = db.rows("SELECT value FROM meta WHERE key = 'schema'", &[])?;
        let version: Option<u32> = match version.into_iter().next() {
            None => None,
            Some(row) => {
                let v = Cols::new(row).text()?;
                Some(v.parse().map_err(|_| StoreError(format!("the stored schema version {v:?} is not a number")))?)
            }
        };
        let has_jobs =
            !db.rows("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'jobs'", &[])?.is_empty();
        let done = match version {
            Some(SCHEMA_VERSION) => Migrated::Current,
            // Version 1's jobs go straight into the current table (tenant `default`); its
            // idempotency table is created scoped below, and its old keys are scoped too.
            Some(1) => {
                db.script(MIGRATE_1_TO_2)?;
                db.script(SCOPE_OLD_KEYS)?;
                Migrated::From(1)
            }
            None if has_jobs => {
                db.script(MIGRATE_1_TO_2)?;
                db.script(SCOPE_OLD_KEYS)?;
                Migrated::From(1)
            }
            Some(2) => {
                db.script(MIGRATE_2_TO_3)?;
                Migrated::From(2)
            }
            None => {
                db.script(JOBS_TABLE)?;
                Migrated::Created
            }
            Some(v) => {
                return Err(StoreError(format!(
                    "the stored schema is version {v}; this code knows 1 to {SCHEMA_VERSION}"
                )));
            }
        };
        db.script(JOBS_INDEXES)?;
        db.script(OTHER_TABLES)?;
        db.script(FLOW_TABLES)?;
        db.script(EVENT_TABLES)?;
        db.script(crate::live::LIVE_TABLES)?;
        if let Migrated::From(_) = done {
            recount_pending(db)?;
        }
        db.rows("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", &[text(SCHEMA_VERSION.to_string())])?;
        Ok(done)
    })
}

fn docs(rows: Vec<crate::sql::Row>) -> Result<Vec<Job>, StoreError> {
    rows.into_iter().map(|r| parse(&Cols::new(r).text()?)).collect()
}

/// The jobs with these ids that exist (in no particular order).
pub fn load_many<'a>(db: &impl Sql, ids: impl IntoIterator<Item = &'a JobId>) -> Result<Vec<Job>, StoreError> {
    docs_many(db, ids)?.iter().map(|d| parse(d)).collect()
}

/// The stored JSON of the jobs with these ids that exist (in no particular order), read
/// [`MAX_PARAMS`] ids per statement.
pub fn docs_many<'a>(db: &impl Sql, ids: impl IntoIterator<Item = &'a JobId>) -> Result<Vec<String>, StoreError> {
    let ids: Vec<&JobId> = ids.into_iter().collect();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_PARAMS) {
        let q = format!("SELECT doc FROM jobs WHERE id IN ({})", placeholders(chunk.len()));
        let binds: Vec<Value> = chunk.iter().map(|id| text(id.as_str())).collect();
        for row in db.rows(&q, &binds)? {
            out.push(Cols::new(row).text()?);
        }
    }
    Ok(out)
}

pub fn load(db: &impl Sql, id: &JobId) -> Result<Option<Job>, StoreError> {
    Ok(load_many(db, [id])?.pop())
}

/// Jobs matching a SQL condition (with its order and `LIMIT`: callers always bound it).
pub fn load_where(db: &impl Sql, cond: &str, binds: &[Value]) -> Result<Vec<Job>, StoreError> {
    docs(db.rows(&format!("SELECT doc FROM jobs WHERE {cond}"), binds)?)
}

/// Writes jobs, many rows per statement (each statement costs a crossing into the
/// runtime; the rows written are the same). `upsert`: the rows exist and are replaced.
/// Returns each job's JSON as written (inserts only: an update's is not kept).
pub fn write_rows(db: &impl Sql, jobs: &[Job], upsert: bool) -> Result<Vec<String>, StoreError> {
    const COLUMNS: usize = 9;
    let mut written = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(MAX_PARAMS / COLUMNS) {
        let mut binds = Vec::with_capacity(chunk.len() * COLUMNS);
        for job in chunk {
            let doc = to_json(job)?;
            if !upsert {
                written.push(doc.clone());
            }
            binds.extend([
                text(job.id.as_str()),
                text(job.job_type.clone()),
                text(job.state.as_str()),
                int(job.run_at),
                int(job.created_at),
                int(job.updated_at),
                text(tags_column(&job.tags)),
                text(doc),
                text(job.tenant.as_str()),
            ]);
        }
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        // The tenant, the type, the creation time and the tags never change after the
        // insert (a restore deletes and inserts), so an update leaves their columns alone:
        // setting `tenant` rewrote its index entry, a billed row, on every state change.
        let conflict = if upsert {
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, run_at = excluded.run_at,
              updated_at = excluded.updated_at, doc = excluded.doc"
        } else {
            ""
        };
        db.rows(
            &format!(
                "INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc, tenant) VALUES {rows}{conflict}"
            ),
            &binds,
        )?;
    }
    Ok(written)
}

/// Writes a plan: its inserts, updates and metric deltas. Returns the JSON of the
/// inserted jobs, in order (a create answers with it). Operations write through
/// `flow::apply`, which runs the flow gate first.
pub fn write_plan(db: &impl Sql, plan: &Plan, now: u64) -> Result<Vec<String>, StoreError> {
    let inserted = write_rows(db, &plan.inserts, false)?;
    write_rows(db, &plan.updates, true)?;
    record(db, &plan.deltas, now)?;
    Ok(inserted)
}

/// Adds metric deltas, merged per series: one write per counter and per histogram.
pub fn record(db: &impl Sql, deltas: &[Delta], now: u64) -> Result<(), StoreError> {
    let merged = stats::merge(deltas);
    // Each minute series is kept whole and per tenant (a tenant's key sees its own share).
    let mut minute: BTreeMap<String, f64> = BTreeMap::new();
    for ((name, labels), n) in &merged.counters {
        if let Some(series) = stats::minute_series(*name, labels) {
            *minute.entry(series.to_owned()).or_default() += n;
            if let Some((_, tenant)) = labels.iter().find(|(k, _)| k == "tenant") {
                *minute.entry(stats::tenant_series(series, tenant)).or_default() += n;
            }
        }
    }
    if !minute.is_empty() {
        db.rows("DELETE FROM minutes WHERE minute < ?", &[int(now.saturating_sub(2 * 3_600_000))])?;
        for (series, n) in minute {
            db.rows(
                "INSERT INTO minutes (minute, series, n) VALUES (?, ?, ?)
                 ON CONFLICT(minute, series) DO UPDATE SET n = n + excluded.n",
                &[int(now - now % 60_000), text(series), Value::Real(n)],
            )?;
        }
    }
    for ((name, labels), n) in &merged.counters {
        db.rows(
            "INSERT INTO counters (name, labels, value) VALUES (?, ?, ?)
             ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
            &[text(name.name()), text(to_json(labels)?), Value::Real(*n)],
        )?;
    }
    for ((name, labels), secs) in &merged.observations {
        let labels = to_json(labels)?;
        let rows = db.rows(
            "SELECT doc FROM histograms WHERE name = ? AND labels = ?",
            &[text(name.name()), text(labels.clone())],
        )?;
        // A stored histogram that does not parse is an error, not an empty one: counts
        // would silently restart from zero.
        let mut h: Histogram = match rows.into_iter().next() {
            Some(row) => parse(&Cols::new(row).text()?)?,
            None => Histogram::default(),
        };
        for s in secs {
            h.observe(*s);
        }
        db.rows(
            "INSERT OR REPLACE INTO histograms (name, labels, doc) VALUES (?, ?, ?)",
            &[text(name.name()), text(labels), text(to_json(&h)?)],
        )?;
    }
    Ok(())
}

/// For each of `keys`, the live job it names (expired keys are dropped first; a key
/// whose job was deleted names nothing). A key marked as moved names nothing here.
pub fn known_keys(db: &impl Sql, keys: &[&str], now: u64) -> Result<BTreeMap<String, Job>, Failure> {
    Ok(keys_here(db, keys, now)?.jobs)
}

/// What this shard knows of idempotency keys: the live job each names, and the keys that
/// moved to another shard after a growth of `SHARD_COUNT` (see [`claim_keys`]).
#[derive(Debug, Default)]
pub struct KeysHere {
    pub jobs: BTreeMap<String, Job>,
    pub moved: BTreeMap<String, u16>,
}

/// The `job_id` a moved key is stored with: never a job id (those start with `j`).
const MOVED_PREFIX: &str = "moved:";

/// Deletes every idempotency key but those that moved to another shard (a restore).
pub const DELETE_KEYS_NOT_MOVED: &str = "DELETE FROM idempotency WHERE job_id NOT LIKE 'moved:%'";

/// [`known_keys`], with the moved keys beside them.
pub fn keys_here(db: &impl Sql, keys: &[&str], now: u64) -> Result<KeysHere, Failure> {
    let mut here = KeysHere::default();
    if keys.is_empty() {
        return Ok(here);
    }
    db.rows("DELETE FROM idempotency WHERE expires_at <= ?", &[int(now)])?;
    let mut named: Vec<(String, JobId)> = Vec::new();
    for chunk in keys.chunks(MAX_PARAMS) {
        let q = format!("SELECT key, job_id FROM idempotency WHERE key IN ({})", placeholders(chunk.len()));
        let binds: Vec<Value> = chunk.iter().map(|k| text(*k)).collect();
        for row in db.rows(&q, &binds)? {
            let mut c = Cols::new(row);
            let key = c.text()?;
            let id = c.text()?;
            if let Some(to) = id.strip_prefix(MOVED_PREFIX) {
                let to = to.parse().map_err(|_| StoreError(format!("a stored moved key {id:?} does not parse")))?;
                here.moved.insert(key, to);
                continue;
            }
            let id = id.parse().map_err(|_| StoreError(format!("a stored job id {id:?} does not parse")))?;
            named.push((key, id));
        }
    }
    let jobs: BTreeMap<JobId, Job> =
        load_many(db, named.iter().map(|(_, id)| id))?.into_iter().map(|j| (j.id.clone(), j)).collect();
    here.jobs = named.into_iter().filter_map(|(k, id)| jobs.get(&id).map(|j| (k, j.clone()))).collect();
    Ok(here)
}

/// Records that each key of `moved` (scoped, with its new home) now lives elsewhere, for
/// `window_ms`: a create of it here is refused with the new home from then on.
pub fn put_moved(db: &impl Sql, moved: &[(&str, u16)], now: u64, window_ms: u64) -> Result<(), StoreError> {
    for (key, to) in moved {
        db.rows(
            "INSERT OR REPLACE INTO idempotency (key, job_id, expires_at) VALUES (?, ?, ?)",
            &[text(*key), text(format!("{MOVED_PREFIX}{to}")), int(now.saturating_add(window_ms))],
        )?;
    }
    Ok(())
}

/// Sets each tenant's count of jobs not yet final from the jobs themselves (a migration or
/// a restore wrote jobs without their deltas); every state change keeps it after that.
pub fn recount_pending(db: &impl Sql) -> Result<(), StoreError> {
    let name = stats::Metric::TenantPendingJobs.name();
    db.rows("DELETE FROM counters WHERE name = ?", &[text(name)])?;
    db.rows(
        "INSERT INTO counters (name, labels, value)
         SELECT ?, json_array(json_array('tenant', tenant)), COUNT(*) FROM jobs
         WHERE state IN ('queued', 'scheduled', 'active') GROUP BY tenant",
        &[text(name)],
    )?;
    Ok(())
}

/// How many jobs of `tenant` this shard holds that are not final yet (one row read).
pub fn pending_of(db: &impl Sql, tenant: &edgejobs_core::tenant::Tenant) -> Result<u64, StoreError> {
    let labels = to_json(&vec![("tenant".to_owned(), tenant.as_str().to_owned())])?;
    let rows = db.rows(
        "SELECT value FROM counters WHERE name = ? AND labels = ?",
        &[text(stats::Metric::TenantPendingJobs.name()), text(labels)],
    )?;
    match rows.into_iter().next() {
        Some(r) => Ok(Cols::new(r).f64()?.max(0.0) as u64),
        None => Ok(0),
    }
}

pub fn put_keys(db: &impl Sql, keys: &[KeyWrite]) -> Result<(), StoreError> {
    for k in keys {
        db.rows(
            "INSERT OR REPLACE INTO idempotency (key, job_id, expires_at) VALUES (?, ?, ?)",
            &[text(k.key.clone()), text(k.job.as_str()), int(k.expires_at)],
        )?;
    }
    Ok(())
}

/// The earliest `run_at` of a scheduled job, wake-up of a schedule, start a flow rate list
/// waits for (`flow_wakes`), check of a wait's indexing (`waits_to_index`), or delivery of a
/// matched wait again (`waits.matched_at`), if any.
pub fn next_wake(db: &impl Sql) -> Result<Option<u64>, StoreError> {
    let rows = db.rows(
        "SELECT MIN(run_at) AS run_at FROM (
            SELECT MIN(run_at) AS run_at FROM jobs WHERE state = 'scheduled' AND run_at < ?
            UNION ALL SELECT MIN(wake_at) AS run_at FROM schedules WHERE wake_at IS NOT NULL
            UNION ALL SELECT MIN(at) AS run_at FROM flow_wakes
            UNION ALL SELECT MIN(at) AS run_at FROM waits_to_index
            UNION ALL SELECT MIN(matched_at) + ? AS run_at FROM waits WHERE matched_at IS NOT NULL)",
        // A run waiting for an event without a timeout is never due (`workflow::NEVER`).
        &[int(edgejobs_core::workflow::NEVER), int(REDELIVER_MS)],
    )?;
    // Workerd's SQLite allows at most five terms in a compound SELECT: the live results'
    // expiry (#30) is a query of its own.
    let expiry = db.rows("SELECT MIN(at) FROM live_expiry", &[])?;
    let first = |rows: Vec<crate::sql::Row>| -> Result<Option<u64>, StoreError> {
        match rows.into_iter().next() {
            Some(row) => Ok(Cols::new(row).opt_f64()?.map(|v| v as u64)),
            None => Ok(None),
        }
    };
    Ok(match (first(rows)?, first(expiry)?) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
