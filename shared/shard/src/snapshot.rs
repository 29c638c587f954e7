//! Bulk data out of and into a shard, in bounded pages: export for backups, import for
//! restores, and the pages retention archives and deletes.

use edgejobs_core::stats::Metric;
use std::collections::BTreeMap;

use edgejobs_core::machine::Effect;
use edgejobs_core::plan::{Effects, KeyWrite};
use edgejobs_core::protocol::{
    Deleted, Export, ExportPage, Import, Imported, RetentionDelete, RetentionPage, RetentionPageReply, RetentionTops,
    RetentionTopsReply,
};
use edgejobs_core::stats::Delta;
use edgejobs_core::{ApiError, ErrorCode, JobState};

use crate::sql::{Cols, Sql, StoreError, int, text};
use crate::store;
use crate::{Host, Outcome, Shard};

/// Most types with an age of their own one retention page honours (two parameters each,
/// of the 100 a statement may bind).
pub const MAX_AGE_OVERRIDES: usize = 40;

/// Most rows and bytes one page may carry, whatever the caller asks.
const MAX_PAGE_ROWS: u32 = 5000;
const MAX_PAGE_BYTES: u64 = 16 * 1024 * 1024;

fn id_docs(rows: Vec<crate::sql::Row>) -> Result<Vec<(String, String)>, StoreError> {
    rows.into_iter()
        .map(|r| {
            let mut c = Cols::new(r);
            Ok((c.text()?, c.text()?))
        })
        .collect()
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// A page of this shard's jobs by id, read in one synchronous stretch: each page is a
    /// consistent snapshot of its rows, and every job lands in exactly one page.
    pub fn export(&self, r: Export) -> Outcome<ExportPage> {
        let max_rows = r.max_rows.clamp(1, MAX_PAGE_ROWS);
        let max_bytes = r.max_bytes.clamp(1, MAX_PAGE_BYTES);
        let mut ndjson = String::new();
        let (mut rows, mut last, mut full) = (0u64, None, false);
        let mut bad: Option<StoreError> = None;
        self.db.scan(
            "SELECT id, doc FROM jobs WHERE id > ? ORDER BY id LIMIT ?",
            &[text(r.after.unwrap_or_default()), int(max_rows as u64)],
            &mut |row| {
                let mut c = Cols::new(row);
                let (id, doc) = match (c.text(), c.text()) {
                    (Ok(id), Ok(doc)) => (id, doc),
                    (Err(e), _) | (_, Err(e)) => {
                        bad = Some(e);
                        return false;
                    }
                };
                ndjson.push_str(&doc);
                ndjson.push('\n');
                rows += 1;
                last = Some(id);
                if ndjson.len() as u64 >= max_bytes {
                    full = true;
                    return false;
                }
                true
            },
        )?;
        if let Some(e) = bad {
            return Err(e.into());
        }
        let done = !full && rows < max_rows as u64;
        Ok(ExportPage { ndjson, rows, last, done })
    }

    /// A page of a restore. Every line is checked (a job of this shard) before anything is
    /// written; the first page replaces the shard's jobs and keys. Queued jobs are sent
    /// again and the alarm is set for scheduled ones.
    pub fn import(&self, r: Import) -> Outcome<(Imported, Effects)> {
        if Some(r.shard) != self.number {
            return Err(ApiError::new(ErrorCode::InvalidField, format!("this object is not shard {}", r.shard)).into());
        }
        let mut jobs = edgejobs_core::backup::jobs_for_restore(&r.ndjson, r.shard)
            .map_err(|e| ApiError::new(ErrorCode::InvalidField, e))?;
        for j in &mut jobs {
            j.epoch = r.epoch;
        }
        let mut effects = Effects::default();
        for j in &jobs {
            if j.state == JobState::Scheduled {
                effects.add(j, Effect::Alarm(j.run_at));
            }
        }
        let rows = jobs.len() as u64;
        let now = self.host.now_ms();
        let sends = self.commit(|db| {
            if r.first {
                db.rows("DELETE FROM jobs", &[])?;
                // Keys that moved away after a growth stay moved: their jobs live elsewhere,
                // and a router that missed the growth must not create them here again.
                db.rows(store::DELETE_KEYS_NOT_MOVED, &[])?;
            }
            let mut keys = Vec::new();
            for j in &jobs {
                db.rows("DELETE FROM jobs WHERE id = ?", &[text(j.id.as_str())])?;
                store::write_rows(db, std::slice::from_ref(j), false)?;
                // Keys are scoped by the job's tenant, as at enqueue (a backup from before
                // tenants restores its jobs, and their keys, as the default tenant's).
                // A key whose window is over names nothing any more: it is not written (it
                // would replace the mark of a key that moved away after a growth, and a
                // router that missed the growth would then create the key's job twice).
                let expires_at = j.created_at.saturating_add(r.idempotency_window_ms);
                if let Some(key) = j.scoped_key().filter(|_| expires_at > now) {
                    keys.push(KeyWrite { key, job: j.id.clone(), expires_at });
                }
            }
            store::put_keys(db, &keys)?;
            store::recount_pending(db)?;
            // Queued jobs are sent through the flow gate: those that waited wait again.
            let plan = crate::flow::restore(db, &jobs, r.first, now)?;
            store::write_rows(db, &plan.updates, true)?;
            Ok(plan.effects)
        })?;
        effects.merge(sends);
        Ok((Imported { rows }, effects))
    }

    /// Per type, the `(updated_at, id)` of this shard's newest `keep` finished jobs of each
    /// class (`done`: completed and cancelled; `dead`). The router merges every shard's to
    /// find the global cut-off of "the newest N per type".
    pub fn retention_tops(&self, r: RetentionTops) -> Outcome<RetentionTopsReply> {
        let mut out = BTreeMap::new();
        for (class, states, keep) in
            [("done", "'completed', 'cancelled'", r.done_keep), ("dead", "'dead'", r.dead_keep)]
        {
            let sql = format!(
                "SELECT type, updated_at, id FROM (
                   SELECT type, updated_at, id, ROW_NUMBER() OVER (PARTITION BY type ORDER BY updated_at DESC, id DESC) AS pos
                   FROM jobs WHERE state IN ({states}))
                 WHERE pos <= ?"
            );
            let mut by_type: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
            for row in self.db.rows(&sql, &[int(keep as u64)])? {
                let mut c = Cols::new(row);
                let (job_type, at, id) = (c.text()?, c.u64()?, c.text()?);
                by_type.entry(job_type).or_default().push((at, id));
            }
            out.insert(class.to_owned(), by_type);
        }
        Ok(out)
    }

    /// Up to `limit` finished jobs the retention policy removes: older than their class's
    /// age, or beyond their type's cut-off `(updated_at, id)` (the newest N across all
    /// shards are kept). Read only; [`retention_delete`](Self::retention_delete) deletes.
    pub fn retention_page(&self, r: RetentionPage) -> Outcome<RetentionPageReply> {
        let limit = r.limit.clamp(1, MAX_PAGE_ROWS) as usize;
        let mut docs: Vec<(String, String)> = Vec::new();
        let classes = [
            ("'completed', 'cancelled'", r.done_age_ms, &r.done_cutoffs, &r.done_age_by_type),
            ("'dead'", r.dead_age_ms, &r.dead_cutoffs, &r.dead_age_by_type),
        ];
        for (states, age, cutoffs, by_type) in classes {
            let left = limit.saturating_sub(docs.len());
            if left == 0 {
                break;
            }
            // The oldest moment a job of each type may have changed and stay: the class's
            // age, or its type's own (at most MAX_AGE_OVERRIDES types, bound as parameters).
            let age_of = |t: &str| by_type.get(t).copied().unwrap_or(age);
            let overrides: Vec<(&String, &u64)> = by_type.iter().take(MAX_AGE_OVERRIDES).collect();
            let mut binds = Vec::new();
            // SQLite's CASE needs a WHEN: without overrides the bound is the class's alone.
            let mut case = String::from(if overrides.is_empty() { "" } else { "CASE type" });
            for (t, a) in &overrides {
                case.push_str(" WHEN ? THEN ?");
                binds.extend([text((*t).clone()), int(r.now.saturating_sub(**a))]);
            }
            case.push_str(if overrides.is_empty() { "?" } else { " ELSE ? END" });
            binds.extend([int(r.now.saturating_sub(age)), int(left as u64)]);
            let old = self.db.rows(
                &format!("SELECT id, doc FROM jobs WHERE state IN ({states}) AND updated_at < ({case}) LIMIT ?"),
                &binds,
            )?;
            docs.extend(id_docs(old)?);
            for (job_type, (at, id)) in cutoffs {
                let left = limit.saturating_sub(docs.len());
                if left == 0 {
                    break;
                }
                let beyond = self.db.rows(
                    &format!(
                        "SELECT id, doc FROM jobs WHERE state IN ({states}) AND type = ? AND updated_at >= ?
                         AND (updated_at < ? OR (updated_at = ? AND id < ?)) LIMIT ?"
                    ),
                    &[
                        text(job_type.clone()),
                        int(r.now.saturating_sub(age_of(job_type))),
                        int(*at),
                        int(*at),
                        text(id.clone()),
                        int(left as u64),
                    ],
                )?;
                docs.extend(id_docs(beyond)?);
            }
        }
        let mut ndjson = String::with_capacity(docs.iter().map(|(_, d)| d.len() + 1).sum());
        for (_, d) in &docs {
            ndjson.push_str(d);
            ndjson.push('\n');
        }
        Ok(RetentionPageReply { ndjson, rows: docs.len() as u64, ids: docs.into_iter().map(|(id, _)| id).collect() })
    }

    /// Deletes the planned jobs that are still finished (a replay in between keeps a job).
    pub fn retention_delete(&self, r: RetentionDelete) -> Outcome<Deleted> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let mut deleted = 0u64;
            for id in r.ids {
                let gone = db.rows(
                    "DELETE FROM jobs WHERE id = ? AND state IN ('completed', 'cancelled', 'dead') RETURNING id",
                    &[text(id)],
                )?;
                deleted += gone.len() as u64;
            }
            let mut counts = vec![Delta::count(Metric::RetentionDeletedTotal, &[], deleted as f64)];
            if r.archived > 0 {
                counts.push(Delta::count(Metric::RetentionArchivedTotal, &[], r.archived as f64));
            }
            store::record(db, &counts, now)?;
            Ok(Deleted { deleted })
        })
    }
}
