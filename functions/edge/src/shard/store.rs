//! A shard's SQLite storage: the schema and its migration, synchronous transactions
//! (`transactionSync`, so a failed batch rolls back whole), and the reads and writes the
//! operations use. Every call here is synchronous: nothing awaits between a load and the
//! write that follows it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use edgejobs_core::metrics::Histogram;
use edgejobs_core::plan::{KeyWrite, Plan};
use edgejobs_core::stats::{self, Delta};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen::closure::ScopedClosure;
use worker::{SqlCursor, SqlStorage, SqlStorageValue, State};

use crate::http::log;

/// The current schema. Version 2 keeps jobs in a `WITHOUT ROWID` table clustered on the id
/// (ids sort by creation time within a shard, so listings walk the primary key) and
/// indexes only scheduled jobs by `run_at` (what the alarm looks for). A job's state
/// changes then write one row each, where version 1 also wrote a rowid, a creation-time
/// index and a state index: Cloudflare bills every row written, index rows included.
/// Everything else (the sweep, retention, listings by state) scans, bounded by `LIMIT`.
pub const SCHEMA_VERSION: u32 = 2;

const JOBS_TABLE: &str = "
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
";

/// Run at every start (idempotent): the one index jobs have.
const JOBS_INDEXES: &str = "
DROP INDEX IF EXISTS jobs_state_run_at;
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs(run_at) WHERE state = 'scheduled';
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
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
";

/// Version 1 → 2: the same columns in a table clustered on the id; its indexes go (the
/// new one is created by `JOBS_INDEXES`).
const MIGRATE_1_TO_2: &str = "
ALTER TABLE jobs RENAME TO jobs_v1;
DROP INDEX IF EXISTS jobs_state_run_at;
DROP INDEX IF EXISTS jobs_created;
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    doc TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc)
    SELECT id, type, state, run_at, created_at, updated_at, tags, doc FROM jobs_v1;
DROP TABLE jobs_v1;
";

/// Most bound parameters one statement may carry in a Durable Object.
const MAX_PARAMS: usize = 100;

/// The shard's storage. Cheap to clone (one shared handle).
#[derive(Clone)]
pub struct Store(Rc<Inner>);

struct Inner {
    sql: SqlStorage,
    storage: JsValue,
    rows_read: Cell<u64>,
    rows_written: Cell<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

pub fn text(s: impl Into<String>) -> SqlStorageValue {
    SqlStorageValue::String(s.into())
}

/// A storage failure: logged here (where it is handled) and answered 500 without details.
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    log("error", "shard storage error", json!({ "error": e.to_string() }));
    ApiError::new(ErrorCode::Internal, "storage error in the job shard")
}

#[derive(Deserialize)]
struct DocRow {
    doc: String,
}

/// Tags as stored for filtering: `,a,b,` so that `LIKE '%,a,%'` matches whole tags only.
pub fn tags_column(tags: &[String]) -> String {
    if tags.is_empty() { String::new() } else { format!(",{},", tags.join(",")) }
}

pub fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    pub fn new(state: &State) -> Store {
        let storage = state.storage();
        Store(Rc::new(Inner {
            sql: storage.sql(),
            storage: AsRef::<JsValue>::as_ref(storage.as_raw()).clone(),
            rows_read: Cell::new(0),
            rows_written: Cell::new(0),
        }))
    }

    /// Runs one statement and counts the rows it read and wrote (what Cloudflare bills).
    pub fn exec(&self, query: &str, binds: Vec<SqlStorageValue>) -> Result<SqlCursor, ApiError> {
        let cursor = self.0.sql.exec(query, binds).map_err(internal)?;
        self.count(&cursor);
        Ok(cursor)
    }

    /// Runs a query whose rows the caller iterates; call [`tally`](Self::tally) after.
    pub fn scan(&self, query: &str, binds: Vec<SqlStorageValue>) -> Result<SqlCursor, ApiError> {
        self.0.sql.exec(query, binds).map_err(internal)
    }

    /// Counts the rows a cursor read and wrote.
    pub fn tally(&self, cursor: &SqlCursor) {
        self.count(cursor)
    }

    fn count(&self, cursor: &SqlCursor) {
        self.0.rows_read.set(self.0.rows_read.get() + cursor.rows_read() as u64);
        self.0.rows_written.set(self.0.rows_written.get() + cursor.rows_written() as u64);
    }

    /// Runs a query and returns every row, deserialized.
    pub fn rows<T: DeserializeOwned>(&self, query: &str, binds: Vec<SqlStorageValue>) -> Result<Vec<T>, ApiError> {
        let cursor = self.0.sql.exec(query, binds).map_err(internal)?;
        let rows = cursor.to_array().map_err(internal)?;
        self.count(&cursor);
        Ok(rows)
    }

    /// Rows read and written since the last call (they become metric deltas).
    pub fn take_row_counts(&self) -> (u64, u64) {
        (self.0.rows_read.replace(0), self.0.rows_written.replace(0))
    }

    /// Runs `f` as one SQLite transaction (`transactionSync`): everything it writes commits
    /// together, or nothing does when it returns an error. `f` cannot await, so no other
    /// event of this object runs between its reads and its writes.
    pub fn transaction<T>(&self, f: impl FnOnce(&Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        const ROLLBACK: &str = "edgejobs: roll back";
        let mut f = Some(f);
        let mut out: Option<Result<T, ApiError>> = None;
        let called = {
            let mut body = || -> Result<JsValue, JsValue> {
                let Some(f) = f.take() else { return Err(JsValue::from_str("transaction body ran twice")) };
                let r = f(self);
                let failed = r.is_err();
                out = Some(r);
                if failed { Err(JsValue::from_str(ROLLBACK)) } else { Ok(JsValue::UNDEFINED) }
            };
            let closure: ScopedClosure<dyn FnMut() -> Result<JsValue, JsValue>> =
                ScopedClosure::borrow_mut_aborting(&mut body);
            js_sys::Reflect::get(&self.0.storage, &JsValue::from_str("transactionSync"))
                .and_then(|f| f.dyn_into::<js_sys::Function>())
                .and_then(|func| func.call1(&self.0.storage, closure.as_ref()))
        };
        match (out, called) {
            (Some(r), _) => r,
            (None, Err(e)) => Err(internal(format!("transactionSync failed: {e:?}"))),
            (None, Ok(_)) => Err(internal("transactionSync did not run its body")),
        }
    }

    /// Creates or migrates the schema. Runs once when the object starts.
    pub fn migrate(&self) -> Result<(), ApiError> {
        self.transaction(|tx| {
            tx.exec("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", vec![])?;
            #[derive(Deserialize)]
            struct V {
                value: String,
            }
            let version: Option<u32> = tx
                .rows::<V>("SELECT value FROM meta WHERE key = 'schema'", vec![])?
                .first()
                .and_then(|v| v.value.parse().ok());
            #[derive(Deserialize)]
            struct T {
                #[allow(dead_code)]
                name: String,
            }
            let has_jobs = !tx
                .rows::<T>("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'jobs'", vec![])?
                .is_empty();
            match version {
                Some(v) if v >= SCHEMA_VERSION => {}
                None if has_jobs => {
                    tx.exec(MIGRATE_1_TO_2, vec![])?;
                    log("info", "migrated the shard schema", json!({ "from": 1, "to": SCHEMA_VERSION }));
                }
                _ => tx.exec(JOBS_TABLE, vec![]).map(|_| ())?,
            }
            tx.exec(JOBS_INDEXES, vec![])?;
            tx.exec(OTHER_TABLES, vec![])?;
            tx.exec(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                vec![text(SCHEMA_VERSION.to_string())],
            )?;
            Ok(())
        })
    }

    fn parse_docs(rows: Vec<DocRow>) -> Result<Vec<Job>, ApiError> {
        rows.iter().map(|r| serde_json::from_str(&r.doc).map_err(internal)).collect()
    }

    /// The jobs with these ids that exist (in no particular order).
    pub fn load_many<'a>(&self, ids: impl IntoIterator<Item = &'a JobId>) -> Result<Vec<Job>, ApiError> {
        let ids: Vec<&JobId> = ids.into_iter().collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_PARAMS) {
            let q = format!("SELECT doc FROM jobs WHERE id IN ({})", placeholders(chunk.len()));
            let rows = self.rows(&q, chunk.iter().map(|id| text(id.as_str())).collect())?;
            out.extend(Self::parse_docs(rows)?);
        }
        Ok(out)
    }

    pub fn load(&self, id: &JobId) -> Result<Option<Job>, ApiError> {
        Ok(self.load_many([id])?.pop())
    }

    /// Jobs matching a SQL condition (with its order and `LIMIT`: callers always bound it).
    pub fn load_where(&self, cond: &str, binds: Vec<SqlStorageValue>) -> Result<Vec<Job>, ApiError> {
        let rows = self.rows(&format!("SELECT doc FROM jobs WHERE {cond}"), binds)?;
        Self::parse_docs(rows)
    }

    pub fn insert(&self, job: &Job) -> Result<(), ApiError> {
        self.write_rows(std::slice::from_ref(job), false).map(|_| ())
    }

    /// Writes jobs, many rows per statement (each statement costs a crossing into the
    /// runtime; the rows written are the same). `upsert`: the rows exist and are replaced.
    /// Returns each job's JSON as written.
    fn write_rows(&self, jobs: &[Job], upsert: bool) -> Result<Vec<String>, ApiError> {
        const COLUMNS: usize = 8;
        let mut docs = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(MAX_PARAMS / COLUMNS) {
            let mut binds = Vec::with_capacity(chunk.len() * COLUMNS);
            for job in chunk {
                let doc = serde_json::to_string(job).map_err(internal)?;
                docs.push(doc.clone());
                binds.extend([
                    text(job.id.as_str()),
                    text(job.job_type.clone()),
                    text(job.state.as_str()),
                    int(job.run_at),
                    int(job.created_at),
                    int(job.updated_at),
                    text(tags_column(&job.tags)),
                    text(doc),
                ]);
            }
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let conflict = if upsert {
                " ON CONFLICT(id) DO UPDATE SET state = excluded.state, run_at = excluded.run_at,
                  updated_at = excluded.updated_at, doc = excluded.doc"
            } else {
                ""
            };
            self.exec(
                &format!(
                    "INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc) VALUES {rows}{conflict}"
                ),
                binds,
            )?;
        }
        Ok(docs)
    }

    /// Writes a plan: its inserts, updates and metric deltas. Returns the JSON of the
    /// inserted jobs, in order (a create answers with it).
    pub fn apply(&self, plan: &Plan) -> Result<Vec<String>, ApiError> {
        let inserted = self.write_rows(&plan.inserts, false)?;
        self.write_rows(&plan.updates, true)?;
        self.record(&plan.deltas)?;
        Ok(inserted)
    }

    /// Adds metric deltas, merged per series: one write per counter and per histogram.
    pub fn record(&self, deltas: &[Delta]) -> Result<(), ApiError> {
        let merged = stats::merge(deltas);
        let mut minute: BTreeMap<&str, f64> = BTreeMap::new();
        for ((name, labels), n) in &merged.counters {
            if let Some(series) = stats::minute_series(name, labels) {
                *minute.entry(series).or_default() += n;
            }
        }
        if !minute.is_empty() {
            let now = crate::platform::now_ms();
            self.exec("DELETE FROM minutes WHERE minute < ?", vec![int(now.saturating_sub(2 * 3_600_000))])?;
            for (series, n) in minute {
                self.exec(
                    "INSERT INTO minutes (minute, series, n) VALUES (?, ?, ?)
                     ON CONFLICT(minute, series) DO UPDATE SET n = n + excluded.n",
                    vec![int(now - now % 60_000), text(series), SqlStorageValue::Float(n)],
                )?;
            }
        }
        for ((name, labels), n) in &merged.counters {
            let labels = serde_json::to_string(labels).map_err(internal)?;
            self.exec(
                "INSERT INTO counters (name, labels, value) VALUES (?, ?, ?)
                 ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
                vec![text(name.clone()), text(labels), SqlStorageValue::Float(*n)],
            )?;
        }
        for ((name, labels), secs) in &merged.observations {
            let labels = serde_json::to_string(labels).map_err(internal)?;
            let rows: Vec<DocRow> = self.rows(
                "SELECT doc FROM histograms WHERE name = ? AND labels = ?",
                vec![text(name.clone()), text(labels.clone())],
            )?;
            let mut h: Histogram = rows.first().and_then(|r| serde_json::from_str(&r.doc).ok()).unwrap_or_default();
            for s in secs {
                h.observe(*s);
            }
            let doc = serde_json::to_string(&h).map_err(internal)?;
            self.exec(
                "INSERT OR REPLACE INTO histograms (name, labels, doc) VALUES (?, ?, ?)",
                vec![text(name.clone()), text(labels), text(doc)],
            )?;
        }
        Ok(())
    }

    /// For each of `keys`, the live job it names (expired keys are dropped first; a key
    /// whose job was deleted names nothing).
    pub fn known_keys(&self, keys: &[&str], now: u64) -> Result<BTreeMap<String, Job>, ApiError> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        self.exec("DELETE FROM idempotency WHERE expires_at <= ?", vec![int(now)])?;
        #[derive(Deserialize)]
        struct KeyRow {
            key: String,
            job_id: String,
        }
        let mut named: Vec<(String, JobId)> = Vec::new();
        for chunk in keys.chunks(MAX_PARAMS) {
            let q = format!("SELECT key, job_id FROM idempotency WHERE key IN ({})", placeholders(chunk.len()));
            let rows: Vec<KeyRow> = self.rows(&q, chunk.iter().map(|k| text(*k)).collect())?;
            for r in rows {
                named.push((r.key, r.job_id.parse().map_err(internal)?));
            }
        }
        let jobs: BTreeMap<JobId, Job> =
            self.load_many(named.iter().map(|(_, id)| id))?.into_iter().map(|j| (j.id.clone(), j)).collect();
        Ok(named.into_iter().filter_map(|(k, id)| jobs.get(&id).map(|j| (k, j.clone()))).collect())
    }

    pub fn put_keys(&self, keys: &[KeyWrite]) -> Result<(), ApiError> {
        for k in keys {
            self.exec(
                "INSERT OR REPLACE INTO idempotency (key, job_id, expires_at) VALUES (?, ?, ?)",
                vec![text(k.key.clone()), text(k.job.as_str()), int(k.expires_at)],
            )?;
        }
        Ok(())
    }

    /// The earliest `run_at` of a scheduled job or wake-up of a schedule, if any.
    pub fn next_wake(&self) -> Result<Option<u64>, ApiError> {
        #[derive(Deserialize)]
        struct Next {
            run_at: Option<f64>,
        }
        let rows: Vec<Next> = self.rows(
            "SELECT MIN(run_at) AS run_at FROM (
                SELECT MIN(run_at) AS run_at FROM jobs WHERE state = 'scheduled'
                UNION ALL SELECT MIN(wake_at) AS run_at FROM schedules WHERE wake_at IS NOT NULL)",
            vec![],
        )?;
        Ok(rows.first().and_then(|r| r.run_at).map(|v| v as u64))
    }
}
