//! Retention of finished jobs: the newest N per type across all shards are kept (merged
//! cut-offs), older ones past their class's age go; a type may have its own N and ages
//! (`retention` in `JOB_TYPES`). Each shard is worked in pages: a page
//! is archived to R2 (`RETENTION_ARCHIVE`, on by default), then deleted.

use std::collections::BTreeMap;

use edgejobs_core::ApiError;
use edgejobs_core::backup;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::{RetentionDelete, RetentionPage, RetentionTops};
use serde_json::json;
use worker::Env;

use super::{bucket, put};
use crate::http::log;
use crate::platform::{now_ms, random_u64};
use crate::shard;

/// Jobs per retention page (one archive object and one delete call each).
const PAGE: u32 = 1000;
/// Pages per shard per run; what is left waits for the next run.
const MAX_PAGES: u32 = 50;

/// Runs job retention over every shard. Returns (deleted, archived).
pub async fn job_retention(env: &Env, cfg: &EdgeConfig) -> Result<(u64, u64), ApiError> {
    let m = &cfg.maintenance;
    let archive = m.retention_archive;
    // Per-type overrides from JOB_TYPES: ages, and how many to keep.
    let overridden = |f: &dyn Fn(&edgejobs_core::types::Retention) -> Option<u64>| -> BTreeMap<String, u64> {
        cfg.types.all().filter_map(|t| f(&t.retention).map(|v| (t.name.clone(), v))).collect()
    };
    let done_keeps = overridden(&|r| r.completed_keep.map(u64::from));
    let dead_keeps = overridden(&|r| r.dead_keep.map(u64::from));
    let keep_of = |class: &str, t: &str| -> u32 {
        let (by_type, default) = if class == "done" {
            (&done_keeps, m.retention_completed_keep)
        } else {
            (&dead_keeps, m.retention_dead_keep)
        };
        by_type.get(t).map_or(default, |k| *k as u32)
    };
    // Each shard reports its newest N per type, N the largest keep of any type.
    let done_keep = done_keeps.values().map(|k| *k as u32).chain([m.retention_completed_keep]).max().unwrap_or(0);
    let dead_keep = dead_keeps.values().map(|k| *k as u32).chain([m.retention_dead_keep]).max().unwrap_or(0);
    // The newest N per type across all shards: merge every shard's newest N, per type.
    let mut tops: BTreeMap<(String, String), Vec<(u64, String)>> = BTreeMap::new();
    for s in 0..cfg.shard_count {
        let by_class = shard::call(env, s, RetentionTops { done_keep, dead_keep }).await?;
        for (class, by_type) in by_class {
            for (t, mut rows) in by_type {
                tops.entry((class.clone(), t)).or_default().append(&mut rows);
            }
        }
    }
    let mut cutoffs: BTreeMap<String, BTreeMap<String, (u64, String)>> = BTreeMap::new();
    for ((class, t), mut rows) in tops {
        let keep = keep_of(&class, &t) as usize;
        // Each shard reports at most `keep` rows, so `keep` rows in all may hide older jobs
        // on a shard that holds every job of the type (flow-controlled jobs live on their
        // key's shard): the keep-th newest is the cut-off whenever there are `keep` rows.
        if rows.len() >= keep && keep > 0 {
            rows.sort_by(|a, b| b.cmp(a));
            cutoffs.entry(class).or_default().insert(t, rows[keep - 1].clone());
        }
    }
    let page = RetentionPage {
        now: now_ms(),
        done_age_ms: m.retention_completed_age_ms,
        dead_age_ms: m.retention_dead_age_ms,
        done_cutoffs: cutoffs.remove("done").unwrap_or_default(),
        dead_cutoffs: cutoffs.remove("dead").unwrap_or_default(),
        limit: PAGE,
        done_age_by_type: overridden(&|r| r.completed_age_ms),
        dead_age_by_type: overridden(&|r| r.dead_age_ms),
    };
    let run = backup::backup_id(now_ms(), random_u64());
    let (mut deleted, mut archived) = (0u64, 0u64);
    for s in 0..cfg.shard_count {
        for n in 0..MAX_PAGES {
            let doomed = shard::call(env, s, page.clone()).await?;
            if doomed.rows == 0 {
                break;
            }
            let mut written = 0;
            if archive {
                let key = format!("archive/{run}/shard-{s:03}-{n:05}.ndjson");
                put(&bucket(env)?, &key, doomed.ndjson.into_bytes()).await?;
                written = doomed.rows;
            }
            archived += written;
            deleted += shard::call(env, s, RetentionDelete { ids: doomed.ids, archived: written }).await?.deleted;
            if doomed.rows < PAGE as u64 {
                break;
            }
        }
    }
    if deleted > 0 || archived > 0 {
        log(
            "info",
            "retention of finished jobs",
            json!({ "deleted": deleted, "archived": archived, "archive_run": run }),
        );
    }
    Ok((deleted, archived))
}
