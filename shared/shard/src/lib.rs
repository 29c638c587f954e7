//! A job shard's operations, written once against a small storage seam ([`sql::Sql`]) and a
//! host ([`Host`]: the clock, randomness, the log). The edge's `JobShard` Durable Object runs
//! them on workerd's SQLite inside `transactionSync`; the simulation and the tests run the
//! very same code on rusqlite ([`native::Sqlite`]).
//!
//! **Invariant:** no operation here awaits. Each loads what it touches, plans with the pure
//! functions of `edgejobs_core::plan`, and writes the plan in one transaction; it returns
//! the [`Effects`] (queue sends, the alarm) for its caller to carry out after the commit.
//!
//! Layout: [`sql`] the seam; [`store`] the schema and shared reads and writes; [`ops`] the
//! batch operations; [`timers`] the alarm's pages and the sweep's; [`snapshot`] export,
//! import and retention; [`schedules`] schedules and their runs; [`native`] rusqlite;
//! [`live`] stream chunks and what each commit wrote, for subscribers;
//! [`bugs`] (feature `bugs`) switches that bring back known bugs, for the simulation to
//! prove it finds them.

use std::cell::{Cell, RefCell};

pub use edgejobs_core::plan::Effects;
use edgejobs_core::stats::{Delta, Merged, Metric};
use edgejobs_core::{ApiError, ErrorCode};

#[cfg(feature = "bugs")]
pub mod bugs;
pub mod callbacks;
pub mod children;
pub mod events;
pub mod flow;
pub mod growth;
pub mod live;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod ops;
pub mod reseal;
pub mod schedules;
pub mod snapshot;
pub mod sql;
pub mod store;
pub mod timers;

use sql::{Sql, StoreError};

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// What a shard takes from the world it runs in: the clock, randomness and a log. The
/// edge reads `Date.now()` and `crypto.getRandomValues`; the simulation its own clock and
/// a seeded generator.
pub trait Host {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// A uniformly random u64 (ids, jitter, nonces).
    fn random_u64(&self) -> u64;
    /// A structured log line (`fields` is a JSON object).
    fn log(&self, level: Level, msg: &str, fields: serde_json::Value);

    /// A uniform sample in `[0, 1)`.
    fn random_unit(&self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random 96-bit nonce for sealing. The edge overrides this with its CSPRNG, which
    /// fails instead of falling back; this default suits a host whose `random_u64` is
    /// already as good as it gets (the simulation's seeded generator).
    fn random_nonce(&self) -> Result<[u8; 12], String> {
        let (a, b) = (self.random_u64().to_le_bytes(), self.random_u64().to_le_bytes());
        let mut buf = [0u8; 12];
        buf[..8].copy_from_slice(&a);
        buf[8..].copy_from_slice(&b[..4]);
        Ok(buf)
    }
}

/// Why an operation did not happen: refused (the caller's answer says why, nothing was
/// written), or storage failed (logged where it is settled, answered 500 without details).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Refused(ApiError),
    Storage(StoreError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure::Refused(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Storage(e)
    }
}

/// What an operation returns before it is settled into an answer.
pub type Outcome<T> = Result<T, Failure>;

/// One shard: its database, its host, its number (`None` for the object that keeps only
/// stored gauges) and the counts not written yet.
#[derive(Debug)]
pub struct Shard<S, H> {
    pub db: S,
    pub host: H,
    pub number: Option<u16>,
    /// Counts not written yet: what calls carried, queue messages sent, alarms, rows read
    /// and written. Written with a commit at most about once a second, at once when a call
    /// carried counts, and before every scrape; a scrape reports only written counts, so
    /// counters never go down (a restart may lose up to a second of these).
    pending: RefCell<Merged>,
    written_at: Cell<u64>,
    write_now: Cell<bool>,
    #[cfg(feature = "bugs")]
    pub bugs: bugs::Bugs,
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// A shard on `db`; call [`migrate`](Self::migrate) before anything else.
    pub fn new(db: S, host: H, number: Option<u16>) -> Shard<S, H> {
        Shard {
            db,
            host,
            number,
            pending: RefCell::new(Merged::default()),
            written_at: Cell::new(0),
            write_now: Cell::new(false),
            #[cfg(feature = "bugs")]
            bugs: bugs::Bugs::default(),
        }
    }

    /// Creates or migrates the schema (logged; a failure too, and it is returned: every
    /// operation would fail anyway, so the caller refuses them until a migration succeeds).
    pub fn migrate(&self) -> Result<(), StoreError> {
        match store::migrate(&self.db) {
            Ok(store::Migrated::From(v)) => {
                self.host.log(
                    Level::Info,
                    "migrated the shard schema",
                    serde_json::json!({ "from": v, "to": store::SCHEMA_VERSION }),
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.host.log(Level::Error, "shard schema setup failed", serde_json::json!({ "error": e.0 }));
                Err(e)
            }
        }
    }

    /// Turns an outcome into the answer a caller gets: a storage failure is logged here
    /// and answered 500 without details.
    pub fn settle<T>(&self, out: Outcome<T>) -> Result<T, ApiError> {
        out.map_err(|f| match f {
            Failure::Refused(e) => e,
            Failure::Storage(e) => {
                self.host.log(Level::Error, "shard storage error", serde_json::json!({ "error": e.0 }));
                ApiError::new(ErrorCode::Internal, "storage error in the job shard")
            }
        })
    }

    /// Adds a counter delta to the pending counts.
    pub fn count(&self, name: Metric, labels: &[(&str, &str)], n: f64) {
        self.pending.borrow_mut().add(&Delta::count(name, labels, n));
    }

    /// Adds the deltas a call carried; the next commit writes them.
    pub fn carry(&self, deltas: &[Delta]) {
        if !deltas.is_empty() {
            let mut p = self.pending.borrow_mut();
            deltas.iter().for_each(|d| p.add(d));
            self.write_now.set(true);
        }
    }

    /// Makes the next commit write the pending counts (a scrape wants them current).
    pub fn flush_soon(&self) {
        self.write_now.set(true);
    }

    /// Runs `f` in one transaction. When due (a call carried counts, a scrape, or a second
    /// since the last time), the same transaction writes the pending counts and the rows
    /// read and written meanwhile.
    pub fn commit<T>(&self, f: impl FnOnce(&S) -> Outcome<T>) -> Outcome<T> {
        let now = self.host.now_ms();
        let due = self.write_now.get() || now.saturating_sub(self.written_at.get()) >= 1000;
        let pending = if due { std::mem::take(&mut *self.pending.borrow_mut()) } else { Merged::default() };
        let db = &self.db;
        let out = db.transaction(|| {
            let out = f(db)?;
            if due {
                let (read, written) = db.take_row_counts();
                let mut deltas = pending.clone().into_deltas();
                if read > 0 {
                    deltas.push(Delta::count(Metric::DoRowsReadTotal, &[], read as f64));
                }
                if written > 0 {
                    deltas.push(Delta::count(Metric::DoRowsWrittenTotal, &[], written as f64));
                }
                if !deltas.is_empty() {
                    store::record(db, &deltas, now)?;
                }
            }
            Ok(out)
        });
        match &out {
            Ok(_) if due => {
                self.written_at.set(now);
                self.write_now.set(false);
            }
            Ok(_) => {}
            // Rolled back: keep the counts for the next commit.
            Err(_) => pending.into_deltas().iter().for_each(|d| self.pending.borrow_mut().add(d)),
        }
        out
    }

    /// Writes what is pending (a `record` call, or before a scrape).
    pub fn record(&self) -> Outcome<()> {
        self.commit(|_| Ok(()))
    }

    /// The earliest time this shard's alarm must fire, if any.
    pub fn next_wake(&self) -> Outcome<Option<u64>> {
        Ok(store::next_wake(&self.db)?)
    }

    /// The shard number, for operations that only a numbered shard can do.
    fn numbered(&self) -> Outcome<u16> {
        self.number
            .ok_or_else(|| Failure::Refused(ApiError::new(ErrorCode::InvalidField, "the stats object holds no jobs")))
    }
}
