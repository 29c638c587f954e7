//! Workflow waits and the event index (#29), as the edge's callers and the job shard's own
//! alarm use them: `register` indexes the waits runs recorded (from the consumer routes, the
//! queue consumer's workflow runner, a restore, and the shard's outbox check), `deliver`
//! resumes matched waits on their runs' shards and tells the index. An event name's waits
//! are indexed by one shard (`protocol::event_home`).

use std::collections::BTreeMap;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, EventsOp, EventsReply, WaitEntry, WaitKey, event_home};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::{ApiError, Job, JobState};
use serde_json::Value;
use worker::Env;

use super::client as shard;

/// Resumes the matched waits on their runs' shards (one call per shard, only `tenant`'s
/// jobs), then tells the index at `home` which matches are settled: resumed now, or no
/// longer waiting (resumed before, timed out, cancelled, gone). Answers how many resumed.
pub async fn deliver(
    env: &Env,
    cfg: &EdgeConfig,
    tenant: &Tenant,
    home: u16,
    resumes: Vec<(WaitKey, Value)>,
) -> Result<u32, ApiError> {
    if resumes.is_empty() {
        return Ok(0);
    }
    let mut by_shard: BTreeMap<u16, Vec<(WaitKey, Value)>> = BTreeMap::new();
    for (k, data) in resumes {
        if k.job.shard() < cfg.shard_count {
            by_shard.entry(k.job.shard()).or_default().push((k, data));
        }
    }
    let calls = by_shard.into_iter().map(|(s, items)| async move {
        let events = items
            .iter()
            .map(|(k, data)| JobEvent {
                id: k.job.clone(),
                event: Event::Resume { step: k.step.clone(), data: data.clone() },
            })
            .collect();
        let answers = shard::call(env, s, ApplyMany { events, full: false, tenant: Some(tenant.clone()) }).await;
        (items, answers)
    });
    let mut settled = Vec::new();
    let mut resumed = 0u32;
    for (items, answers) in futures_util::future::join_all(calls).await {
        // A shard that failed keeps its matches in the index: a repeated send delivers them.
        let Ok(answers) = answers else { continue };
        for ((k, _), a) in items.into_iter().zip(answers) {
            resumed += u32::from(a.is_ok());
            settled.push(k);
        }
    }
    if !settled.is_empty() {
        shard::call(env, home, EventsOp::Delivered { keys: settled }).await?;
    }
    Ok(resumed)
}

/// Indexes the waits that answered reports recorded (`jobs`: the runs as their shards
/// answered, a wait's report's answer carries its job), and resumes at once those an
/// event already matched (sent since the wait began, or within its look-back). One call per
/// event home, tried twice; what still fails is indexed by the run's shard at its alarm
/// (`waits_to_index`). Answers the waits the index took.
pub async fn register(env: &Env, cfg: &EdgeConfig, jobs: Vec<Job>) -> Vec<WaitKey> {
    let entries = jobs
        .iter()
        .filter(|j| j.state == JobState::Scheduled)
        .flat_map(|job| job.steps.iter().filter_map(|s| s.wait_entry(job)))
        .collect();
    index(env, cfg, entries).await
}

/// [`register`] of the entries themselves; answers the waits the index took.
pub async fn index(env: &Env, cfg: &EdgeConfig, entries: Vec<WaitEntry>) -> Vec<WaitKey> {
    let mut by_home: BTreeMap<u16, Vec<WaitEntry>> = BTreeMap::new();
    for entry in entries {
        let home = event_home(&entry.tenant, &entry.wait.event, &cfg.topology);
        by_home.entry(home).or_default().push(entry);
    }
    let calls = by_home.into_iter().map(|(home, waits)| async move {
        let keys: Vec<(Tenant, WaitKey)> = waits.iter().map(|w| (w.tenant.clone(), w.key.clone())).collect();
        let mut answer = shard::call(env, home, EventsOp::Register { waits: waits.clone() }).await;
        if answer.is_err() {
            answer = shard::call(env, home, EventsOp::Register { waits }).await;
        }
        let matched = match answer {
            Ok(EventsReply::Registered { matched }) => matched,
            Ok(_) => return Vec::new(),
            Err(e) => {
                // The run's shard checks again at its alarm (`waits_to_index`).
                crate::http::log(
                    "warn",
                    "cannot index workflow waits now; their shards try again",
                    serde_json::json!({ "error": e }),
                );
                return Vec::new();
            }
        };
        let mut by_tenant: BTreeMap<Tenant, Vec<(WaitKey, Value)>> = BTreeMap::new();
        for ((tenant, key), data) in keys.iter().cloned().zip(matched) {
            if let Some(data) = data {
                by_tenant.entry(tenant).or_default().push((key, data));
            }
        }
        for (tenant, resumes) in by_tenant {
            if let Err(e) = deliver(env, cfg, &tenant, home, resumes).await {
                crate::http::log(
                    "error",
                    "cannot resume a workflow wait an event already matched",
                    serde_json::json!({ "error": e }),
                );
            }
        }
        keys.into_iter().map(|(_, k)| k).collect::<Vec<WaitKey>>()
    });
    futures_util::future::join_all(calls).await.into_iter().flatten().collect()
}
