//! What the edge does for workflow runs' steps (#29), below the routes: indexes the waits
//! that reports recorded (`register`), resumes matched waits on their runs' shards
//! (`deliver`), and makes the child jobs of invoke and fan-out steps (`prepare_children`).
//! The queue consumer's workflow runner, the consumer routes, the event route and the
//! restore use it. An event name's waits are indexed by one shard (`protocol::event_home`).

use std::collections::BTreeMap;

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, EventsOp, EventsReply, WaitEntry, WaitKey, event_home};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::{ApiError, Job, JobId, JobState};
use serde_json::Value;
use worker::Env;

use crate::platform::{now_ms, random_nonce, random_u64};
use crate::shard;

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

/// Prepares the children of an invoke or fan-out step report about run `parent` (whatever
/// the reporter put there is replaced): each spec is checked as `POST /v1/jobs` checks one,
/// with the errors naming `step.jobs[i]`.
pub fn prepare_children(cfg: &EdgeConfig, who: &Principal, parent: &JobId, event: &mut Event) -> Result<(), ApiError> {
    let Event::Step { step, .. } = event else { return Ok(()) };
    let Some((specs, children)) = step.children_mut() else { return Ok(()) };
    let now = now_ms();
    let mut made = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let named = |e: ApiError| match e.field {
            Some(f) => ApiError::field(&format!("step.jobs[{i}].{f}"), e.message),
            None => ApiError { message: format!("step.jobs[{i}]: {}", e.message), ..e },
        };
        let parsed = edgejobs_core::spec::parse_spec_unchecked(spec, now, &cfg.types).map_err(named)?;
        if let Some(t) = who.tenant()
            && !parsed.job_type.open_to(t)
        {
            return Err(named(ApiError::field("type", format!("no job type {:?}", parsed.job_type.name))));
        }
        made.push(child_job(cfg, parsed, parent, now).map_err(named)?);
    }
    *children = made;
    Ok(())
}

/// Indexes the waits that answered reports recorded (`jobs`: the runs as their shards
/// answered, a wait's report's answer carries its job), and resumes at once those an
/// event already matched (sent since the wait began, or within its look-back). One call per
/// event home. A failure is logged: the run then waits until its timeout.
pub async fn register(env: &Env, cfg: &EdgeConfig, jobs: Vec<Job>) {
    let mut by_home: BTreeMap<u16, Vec<WaitEntry>> = BTreeMap::new();
    for job in jobs.iter().filter(|j| j.state == JobState::Scheduled) {
        for entry in job.steps.iter().filter_map(|s| s.wait_entry(job)) {
            let home = event_home(&entry.tenant, &entry.wait.event, &cfg.topology);
            by_home.entry(home).or_default().push(entry);
        }
    }
    let calls = by_home.into_iter().map(|(home, waits)| async move {
        let keys: Vec<(Tenant, WaitKey)> = waits.iter().map(|w| (w.tenant.clone(), w.key.clone())).collect();
        let mut answer = shard::call(env, home, EventsOp::Register { waits: waits.clone() }).await;
        if answer.is_err() {
            answer = shard::call(env, home, EventsOp::Register { waits }).await;
        }
        let matched = match answer {
            Ok(EventsReply::Registered { matched }) => matched,
            Ok(_) => return,
            Err(e) => {
                crate::http::log(
                    "error",
                    "cannot index workflow waits; they end at their timeout",
                    serde_json::json!({ "error": e }),
                );
                return;
            }
        };
        let mut by_tenant: BTreeMap<Tenant, Vec<(WaitKey, Value)>> = BTreeMap::new();
        for ((tenant, key), data) in keys.into_iter().zip(matched) {
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
    });
    futures_util::future::join_all(calls).await;
}

/// A child job of run `parent`'s invoke or fan-out step, from its spec: its id in the run's
/// shard (a child's end resumes its run in one transaction), its header values sealed. A
/// child has no flow control of its own (its keys would be decided in another shard than
/// its home) and no idempotency key (its step runs once); an edge webhook child does not
/// get its origin's concurrency key either.
fn child_job(cfg: &EdgeConfig, spec: edgejobs_core::spec::JobSpec, parent: &JobId, now: u64) -> Result<Job, ApiError> {
    edgejobs_core::spec::check_schema(&spec)?;
    if spec.idempotency_key.is_some() {
        return Err(ApiError::field("idempotency_key", "a child job has none: its step runs once"));
    }
    if spec.flow != edgejobs_core::flow::FlowSpec::default() {
        return Err(ApiError::field("concurrency", "a child job lives in its run's shard and takes no flow control"));
    }
    let id = JobId::new(parent.shard(), now, random_u64());
    let mut job = spec.into_job(id, now).0;
    edgejobs_core::seal::seal_headers(&mut job.payload, job.id.as_str(), &cfg.payload_keys, &mut random_nonce)
        .map_err(crate::http::unsealable)?;
    Ok(job)
}
