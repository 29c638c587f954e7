//! Live results (#30): the chunks handlers stream, kept per job in the `live` table, and
//! the list of jobs each commit wrote, which the shard's object publishes to its subscribers
//! after the commit (see `edgejobs_core::live`).
//!
//! Tables:
//! - `live`: one row per chunk, keyed by job and number (`n`, from 1 in each job);
//! - `live_expiry`: when a final job's chunks go (it ended + [`RETENTION_MS`]); the alarm
//!   deletes them.
//!
//! Rows cost: one row per chunk (a consumer coalesces a handler's chunks between two flushes
//! into one update, but each chunk keeps its own number, so a reader resumes exactly), plus
//! one expiry row when a job that streamed ends.

use std::collections::BTreeSet;

use edgejobs_core::live::{RETENTION_MS, Row, Touched};
use edgejobs_core::machine::Event;
use edgejobs_core::plan::Plan;
use edgejobs_core::{Job, JobId};

use crate::sql::{Cols, Sql, StoreError, int, text};

/// The live tables, created with the others at every start.
pub const LIVE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS live (
    job TEXT NOT NULL,
    n INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    stream TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS live_expiry (job TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS live_expiry_at ON live_expiry(at);
";

#[cfg(feature = "bugs")]
thread_local! {
    static FORGETS_TAPE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Switches this thread's `live_forgets_tape` bug (feature `bugs`, for the simulation).
#[cfg(feature = "bugs")]
pub fn switch_bugs(forgets_tape: bool) {
    FORGETS_TAPE.with(|c| c.set(forgets_tape));
}

fn forgets_tape() -> bool {
    #[cfg(feature = "bugs")]
    return FORGETS_TAPE.with(std::cell::Cell::get);
    #[cfg(not(feature = "bugs"))]
    false
}

/// Most chunk rows one read returns (a reader asks again from the last it got).
pub const PAGE: u64 = 500;

/// Most expired jobs one alarm clears.
const EXPIRE_PAGE: u64 = 200;

/// Fills the tape (newest chunk number, bytes kept) of the loaded jobs that `events` send
/// chunks to, before the events are applied: the machine numbers new chunks after them and
/// checks the job's cap.
pub fn load_tapes<'a>(
    db: &impl Sql,
    loaded: &mut [Job],
    events: impl Iterator<Item = (&'a JobId, &'a Event)>,
) -> Result<(), StoreError> {
    let streaming: BTreeSet<&JobId> = events
        .filter(|(_, e)| matches!(e, Event::Update { update, .. } if !update.chunks.is_empty()))
        .map(|(id, _)| id)
        .collect();
    if forgets_tape() {
        return Ok(());
    }
    for job in loaded.iter_mut().filter(|j| streaming.contains(&j.id)) {
        let rows = db.rows(
            "SELECT coalesce(max(n), 0), coalesce(sum(length(CAST(data AS BLOB))), 0) FROM live WHERE job = ?",
            &[text(job.id.as_str())],
        )?;
        if let Some(row) = rows.into_iter().next() {
            let mut c = Cols::new(row);
            job.tape.n = c.u64()?;
            job.tape.bytes = c.u64()?;
        }
    }
    Ok(())
}

/// Writes the chunks the plan's jobs took on, and lists every job the plan writes in its
/// effects (for the subscribers); a job that ended gets its chunks' expiry, when it has any.
/// Runs inside every write of a plan (`flow::apply`).
pub fn note(db: &impl Sql, plan: &mut Plan, now: u64) -> Result<(), StoreError> {
    let mut touched = Vec::with_capacity(plan.inserts.len() + plan.updates.len());
    for job in plan.inserts.iter_mut().chain(plan.updates.iter_mut()) {
        let rows = std::mem::take(&mut job.tape.out);
        let insert = if forgets_tape() {
            "INSERT OR REPLACE INTO live (job, n, attempt, at, stream, data) VALUES (?, ?, ?, ?, ?, ?)"
        } else {
            "INSERT INTO live (job, n, attempt, at, stream, data) VALUES (?, ?, ?, ?, ?, ?)"
        };
        for r in &rows {
            db.rows(
                insert,
                &[
                    text(job.id.as_str()),
                    int(r.n),
                    int(u64::from(r.attempt)),
                    int(r.at),
                    text(r.stream.clone()),
                    text(r.data.clone()),
                ],
            )?;
        }
        let finished = job.state.is_finished();
        if finished {
            // One read for every job that ends; a write only for those that streamed.
            db.rows(
                "INSERT OR REPLACE INTO live_expiry (job, at)
                 SELECT ?, ? WHERE EXISTS (SELECT 1 FROM live WHERE job = ?)",
                &[text(job.id.as_str()), int(now.saturating_add(RETENTION_MS)), text(job.id.as_str())],
            )?;
        }
        touched.push(Touched { id: job.id.clone(), finished, rows });
    }
    plan.effects.touched.extend(touched);
    Ok(())
}

/// A job's chunks after number `after`, oldest first, at most `limit` (≤ [`PAGE`]).
pub fn read(db: &impl Sql, job: &JobId, after: u64, limit: u64) -> Result<Vec<Row>, StoreError> {
    db.rows(
        "SELECT n, attempt, at, stream, data FROM live WHERE job = ? AND n > ? ORDER BY n LIMIT ?",
        &[text(job.as_str()), int(after), int(limit.min(PAGE))],
    )?
    .into_iter()
    .map(|row| {
        let mut c = Cols::new(row);
        Ok(Row { n: c.u64()?, attempt: c.u64()? as u32, at: c.u64()?, stream: c.text()?, data: c.text()? })
    })
    .collect()
}

/// The newest chunk number of a job's stream (0: none).
pub fn newest(db: &impl Sql, job: &JobId) -> Result<u64, StoreError> {
    let rows = db.rows("SELECT coalesce(max(n), 0) FROM live WHERE job = ?", &[text(job.as_str())])?;
    match rows.into_iter().next() {
        Some(row) => Cols::new(row).u64(),
        None => Ok(0),
    }
}

/// Deletes the chunks of jobs whose retention ended (a page; the alarm comes back for more).
pub fn expire(db: &impl Sql, now: u64) -> Result<u64, StoreError> {
    let due: Vec<String> = db
        .rows("SELECT job FROM live_expiry WHERE at <= ? ORDER BY at LIMIT ?", &[int(now), int(EXPIRE_PAGE)])?
        .into_iter()
        .map(|r| Cols::new(r).text())
        .collect::<Result<_, _>>()?;
    for job in &due {
        db.rows("DELETE FROM live WHERE job = ?", &[text(job.clone())])?;
        db.rows("DELETE FROM live_expiry WHERE job = ?", &[text(job.clone())])?;
    }
    Ok(due.len() as u64)
}
