//! Re-sealing: moves the sealed header values a shard stores (its jobs' `payload.headers`
//! and its schedules' job specs) to the newest `PAYLOAD_ENCRYPTION_KEYS` key, so an old key
//! can be retired without losing a job's headers or a schedule's runs.
//!
//! A call does one bounded page of jobs (ordered by id, after a cursor) in one transaction,
//! and on the first page every schedule of the shard too (a shard holds at most
//! `schedule::MAX_PER_SHARD`). Only rows that change are written, with nothing but their
//! sealed values changed (state, times and attempts as they were). Values already under the
//! newest key are left alone, so running it again, or concurrently with enqueues (which seal
//! under the newest key anyway), changes nothing more. A row holding a value that no
//! configured key opens is left as it was and counted (`unopenable`): the operator keeps the
//! old key until that count is zero.

use edgejobs_core::protocol::{Reseal, ResealReport};
use edgejobs_core::schedule::{self, Schedule};
use edgejobs_core::seal::{self, Keys, PREFIX};
use edgejobs_core::{Job, JobId};

use crate::sql::{Cols, Sql, StoreError, int, text};
use crate::{Failure, Host, Level, Outcome, Shard, store};

/// Most jobs one call reads (the page a caller asks for is clamped to it).
pub const MAX_PAGE: u32 = 100;
/// Most bytes of job documents one call loads: a page ends early (not `done`) before the
/// job that would pass it, so a shard of large payloads takes more calls, not more memory.
/// A single job larger than this is still loaded alone (a page always moves on).
pub const MAX_PAGE_BYTES: u64 = 4 << 20;

impl<S: Sql, H: Host> Shard<S, H> {
    /// One page of a re-seal under `keys` (the deployment's, newest first).
    pub fn reseal(&self, r: Reseal, keys: &Keys) -> Outcome<ResealReport> {
        self.reseal_within(r, keys, MAX_PAGE_BYTES)
    }

    /// [`reseal`](Self::reseal) with a byte budget of its own (tests use small ones).
    pub fn reseal_within(&self, r: Reseal, keys: &Keys, max_bytes: u64) -> Outcome<ResealReport> {
        self.numbered()?;
        let limit = r.limit.clamp(1, MAX_PAGE);
        let mut nonce = || self.host.random_nonce();
        let out = self.commit(|db| {
            let mut report = ResealReport { key: keys.newest_id().to_owned(), ..ResealReport::default() };
            // The ids first, with the size of each document that holds a sealed value (0:
            // none): documents are loaded only for those, and only up to the byte budget.
            let rows = db.rows(
                "SELECT id, CASE WHEN instr(doc, ?) > 0 THEN length(doc) ELSE 0 END FROM jobs
                 WHERE id > ? ORDER BY id LIMIT ?",
                &[text(PREFIX), text(r.after.clone().unwrap_or_default()), int(u64::from(limit))],
            )?;
            let listed = rows.len();
            let (mut sealed, mut bytes, mut cut) = (Vec::new(), 0u64, false);
            for row in rows {
                let mut cols = Cols::new(row);
                let (id, size) = (cols.text()?, cols.u64()?);
                if size > 0 && bytes > 0 && bytes + size > max_bytes {
                    cut = true;
                    break;
                }
                bytes += size;
                report.scanned += 1;
                if size > 0 {
                    sealed.push(
                        id.parse::<JobId>().map_err(|_| StoreError(format!("a stored job id is malformed: {id:?}")))?,
                    );
                }
                report.cursor = Some(id);
            }
            let mut changed: Vec<Job> = Vec::new();
            for doc in store::docs_many(db, &sealed)? {
                let mut job: Job = store::parse(&doc)?;
                #[cfg(feature = "bugs")]
                if self.bugs.reseal_unbound && crate::bugs::reseal_unbound(&mut job.payload, job.id.as_str(), keys) {
                    changed.push(job);
                    continue;
                }
                match reseal_one(&mut job.payload, job.id.as_str(), keys, &mut nonce)? {
                    Some(0) => {}
                    Some(_) => changed.push(job),
                    None => report.unopenable += 1,
                }
            }
            report.jobs_resealed = changed.len() as u64;
            store::write_rows(db, &changed, true)?;
            if r.after.is_none() {
                let stored =
                    db.rows("SELECT doc FROM schedules ORDER BY name LIMIT ?", &[int(schedule::MAX_PER_SHARD as u64)])?;
                for row in stored {
                    let mut s: Schedule = store::parse(&Cols::new(row).text()?)?;
                    let tag = s.tag();
                    let Some(payload) = s.job.get_mut("payload") else { continue };
                    match reseal_one(payload, &tag, keys, &mut nonce)? {
                        Some(0) => {}
                        Some(_) => {
                            db.rows(
                                "UPDATE schedules SET doc = ? WHERE name = ?",
                                &[text(store::to_json(&s)?), text(s.name.clone())],
                            )?;
                            report.schedules_resealed += 1;
                        }
                        None => report.unopenable += 1,
                    }
                }
            }
            report.done = !cut && listed < limit as usize;
            if report.done {
                report.cursor = None;
            }
            Ok(report)
        })?;
        if out.unopenable > 0 {
            self.host.log(
                Level::Warn,
                "re-seal left values that no configured key opens",
                serde_json::json!({ "shard": self.number, "rows": out.unopenable }),
            );
        }
        Ok(out)
    }
}

/// Re-seals one payload: `Some(n)` values changed, `None` when a value does not open (the
/// payload is left as it was). No nonce fails the whole call (nothing is written).
fn reseal_one(
    payload: &mut serde_json::Value,
    aad_base: &str,
    keys: &Keys,
    nonce: &mut impl FnMut() -> Result<[u8; 12], String>,
) -> Outcome<Option<u32>> {
    let mut nonce_failed = None;
    let mut draw = || nonce().inspect_err(|e| nonce_failed = Some(e.clone()));
    let out = seal::reseal_headers(payload, aad_base, keys, &mut draw);
    if let Some(e) = nonce_failed {
        return Err(Failure::Storage(StoreError(format!("header values could not be sealed: {e}"))));
    }
    Ok(out.ok())
}
