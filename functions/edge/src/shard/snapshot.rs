//! Bulk data out of and into a shard, in bounded pages: export for backups, import for
//! restores, and the pages retention archives and deletes.

use std::collections::BTreeMap;

use edgejobs_core::machine::Effect;
use edgejobs_core::plan::{Effects, KeyWrite};
use edgejobs_core::protocol::{
    Deleted, Export, ExportPage, Import, Imported, RetentionDelete, RetentionPage, RetentionPageReply, RetentionTops,
};
use edgejobs_core::stats::Delta;
use edgejobs_core::{ApiError, ErrorCode, JobState};
use serde::Deserialize;

use super::store::{int, internal, text};
use super::{JobShard, Out};

/// Most types with an age of their own one retention page honours (two parameters each,
/// of the 100 a statement may bind).
pub const MAX_AGE_OVERRIDES: usize = 40;

/// Most rows and bytes one page may carry, whatever the caller asks.
const MAX_PAGE_ROWS: u32 = 5000;
const MAX_PAGE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
struct IdDoc {
    id: String,
    doc: String,
}

impl JobShard {
    /// A page of this shard's jobs by id, read in one synchronous stretch: each page is a
    /// consistent snapshot of its rows, and every job lands in exactly one page.
    pub(super) fn export(&self, r: Export) -> Out<Export> {
        let max_rows = r.max_rows.clamp(1, MAX_PAGE_ROWS);
        let max_bytes = r.max_bytes.clamp(1, MAX_PAGE_BYTES);
        let cursor = self.store.scan(
            "SELECT id, doc FROM jobs WHERE id > ? ORDER BY id LIMIT ?",
            vec![text(r.after.unwrap_or_default()), int(max_rows as u64)],
        )?;
        let mut ndjson = String::new();
        let (mut rows, mut last, mut full) = (0u64, None, false);
        for row in cursor.next::<IdDoc>() {
            let row = row.map_err(internal)?;
            ndjson.push_str(&row.doc);
            ndjson.push('\n');
            rows += 1;
            last = Some(row.id);
            if ndjson.len() as u64 >= max_bytes {
                full = true;
                break;
            }
        }
        self.store.tally(&cursor);
        let done = !full && rows < max_rows as u64;
        Ok(ExportPage { ndjson, rows, last, done })
    }

    /// A page of a restore. Every line is checked (a job of this shard) before anything is
    /// written; the first page replaces the shard's jobs and keys. Queued jobs are sent
    /// again and the alarm is set for scheduled ones.
    pub(super) async fn import(&self, r: Import) -> Out<Import> {
        if Some(r.shard) != self.shard {
            return Err(ApiError::new(ErrorCode::InvalidField, format!("this object is not shard {}", r.shard)));
        }
        let mut jobs = edgejobs_core::backup::jobs_for_restore(&r.ndjson, r.shard)
            .map_err(|e| ApiError::new(ErrorCode::InvalidField, e))?;
        for j in &mut jobs {
            j.epoch = r.epoch;
        }
        let mut effects = Effects::default();
        for j in &jobs {
            match j.state {
                JobState::Queued => effects.add(j, Effect::Enqueue),
                JobState::Scheduled => effects.add(j, Effect::Alarm(j.run_at)),
                _ => {}
            }
        }
        let rows = jobs.len() as u64;
        self.commit(|tx| {
            if r.first {
                tx.exec("DELETE FROM jobs", vec![])?;
                tx.exec("DELETE FROM idempotency", vec![])?;
            }
            let mut keys = Vec::new();
            for j in &jobs {
                tx.exec("DELETE FROM jobs WHERE id = ?", vec![text(j.id.as_str())])?;
                tx.insert(j)?;
                if let Some(key) = &j.idempotency_key {
                    keys.push(KeyWrite {
                        key: key.clone(),
                        job: j.id.clone(),
                        expires_at: j.created_at.saturating_add(r.idempotency_window_ms),
                    });
                }
            }
            tx.put_keys(&keys)
        })?;
        self.carry_out(effects).await;
        Ok(Imported { rows })
    }

    /// Per type, the `(updated_at, id)` of this shard's newest `keep` finished jobs of each
    /// class (`done`: completed and cancelled; `dead`). The router merges every shard's to
    /// find the global cut-off of "the newest N per type".
    pub(super) fn retention_tops(&self, r: RetentionTops) -> Out<RetentionTops> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "type")]
            job_type: String,
            updated_at: f64,
            id: String,
        }
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
            let rows: Vec<Row> = self.store.rows(&sql, vec![int(keep as u64)])?;
            let mut by_type: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
            for row in rows {
                by_type.entry(row.job_type).or_default().push((row.updated_at as u64, row.id));
            }
            out.insert(class.to_owned(), by_type);
        }
        Ok(out)
    }

    /// Up to `limit` finished jobs the retention policy removes: older than their class's
    /// age, or beyond their type's cut-off `(updated_at, id)` (the newest N across all
    /// shards are kept). Read only; [`retention_delete`](Self::retention_delete) deletes.
    pub(super) fn retention_page(&self, r: RetentionPage) -> Out<RetentionPage> {
        let limit = r.limit.clamp(1, MAX_PAGE_ROWS) as usize;
        let mut docs: Vec<IdDoc> = Vec::new();
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
            let old: Vec<IdDoc> = self.store.rows(
                &format!("SELECT id, doc FROM jobs WHERE state IN ({states}) AND updated_at < ({case}) LIMIT ?"),
                binds,
            )?;
            docs.extend(old);
            for (job_type, (at, id)) in cutoffs {
                let left = limit.saturating_sub(docs.len());
                if left == 0 {
                    break;
                }
                let beyond: Vec<IdDoc> = self.store.rows(
                    &format!(
                        "SELECT id, doc FROM jobs WHERE state IN ({states}) AND type = ? AND updated_at >= ?
                         AND (updated_at < ? OR (updated_at = ? AND id < ?)) LIMIT ?"
                    ),
                    vec![
                        text(job_type.clone()),
                        int(r.now.saturating_sub(age_of(job_type))),
                        int(*at),
                        int(*at),
                        text(id.clone()),
                        int(left as u64),
                    ],
                )?;
                docs.extend(beyond);
            }
        }
        let mut ndjson = String::with_capacity(docs.iter().map(|d| d.doc.len() + 1).sum());
        for d in &docs {
            ndjson.push_str(&d.doc);
            ndjson.push('\n');
        }
        Ok(RetentionPageReply { ndjson, rows: docs.len() as u64, ids: docs.into_iter().map(|d| d.id).collect() })
    }

    /// Deletes the planned jobs that are still finished (a replay in between keeps a job).
    pub(super) fn retention_delete(&self, r: RetentionDelete) -> Out<RetentionDelete> {
        #[derive(Deserialize)]
        struct Gone {
            #[allow(dead_code)]
            id: String,
        }
        self.commit(|tx| {
            let mut deleted = 0u64;
            for id in r.ids {
                let gone: Vec<Gone> = tx.rows(
                    "DELETE FROM jobs WHERE id = ? AND state IN ('completed', 'cancelled', 'dead') RETURNING id",
                    vec![text(id)],
                )?;
                deleted += gone.len() as u64;
            }
            let mut counts = vec![Delta::count("edgejobs_retention_deleted_total", &[], deleted as f64)];
            if r.archived > 0 {
                counts.push(Delta::count("edgejobs_retention_archived_total", &[], r.archived as f64));
            }
            tx.record(&counts)?;
            Ok(Deleted { deleted })
        })
    }
}
