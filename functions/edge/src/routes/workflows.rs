//! Workflow events (#29): `POST /v1/events`, and the registration of the waits that reports
//! record. An event name's waits are indexed by one shard (`protocol::event_home`); a send
//! asks that shard which waits it matches, resumes them on their runs' shards (one call per
//! shard), then tells the index they were delivered.

use std::collections::BTreeMap;

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, EventsOp, EventsReply, WaitEntry, WaitKey, event_home};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::workflow::{MAX_EVENT_NAME_BYTES, MAX_STEP_RESULT_BYTES};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId, JobState};
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{self, Out, respond};
use crate::http;
use crate::shard;

/// Longest event id.
pub const MAX_EVENT_ID_BYTES: usize = 128;

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// `POST /v1/events` with `{"name", "data"?, "id"?, "tenant"? (admin keys)}`: resumes every
/// run of the tenant waiting for `name` whose conditions the event meets. With `id`, a
/// repeated send is answered as the first (`duplicate: true`) and resumes nothing new.
pub async fn send(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "name" | "data" | "id" | "tenant")) {
        return Err(ApiError::field(k, "unknown field; known: name, data, id, tenant"));
    }
    let name = match obj.get("name") {
        Some(Value::String(s)) if name_ok(s, MAX_EVENT_NAME_BYTES) => s.clone(),
        _ => {
            return Err(ApiError::field(
                "name",
                format!("the event's name: a string of 1 to {MAX_EVENT_NAME_BYTES} bytes without control characters"),
            ));
        }
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if name_ok(s, MAX_EVENT_ID_BYTES) => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::field(
                "id",
                format!("a string of 1 to {MAX_EVENT_ID_BYTES} bytes without control characters"),
            ));
        }
    };
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    let size = serde_json::to_string(&data).map_or(usize::MAX, |s| s.len());
    if size > MAX_STEP_RESULT_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("data is {size} bytes; an event's data has at most {MAX_STEP_RESULT_BYTES}"),
        ));
    }
    let asked = match obj.get("tenant") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(Tenant::from_field("tenant", t)?),
        Some(_) => return Err(ApiError::field("tenant", "must be a tenant name")),
    };
    let tenant = who.sees.owner_of_new(asked)?;
    // The jobs the event starts (types declared with `on_event`) are checked first: one
    // that cannot be created refuses the send before anything changed.
    let now = crate::platform::now_ms();
    let mut starts = Vec::new();
    for t in cfg.types.all().filter(|t| t.on_event.as_deref() == Some(name.as_str()) && t.open_to(&tenant)) {
        let mut body = serde_json::json!({ "type": t.name, "payload": data });
        if let Some(id) = &id {
            body["idempotency_key"] = Value::String(trigger_key(&name, id, &t.name));
        }
        let mut spec = jobs::parse(cfg, &body, who, now)?;
        spec.tenant = Some(tenant.clone());
        starts.push(jobs::prepare(cfg, spec, jobs::random_shard(cfg.shard_count), now)?);
    }
    let home = event_home(&tenant, &name, &cfg.topology);
    let op = EventsOp::Signal { tenant: tenant.clone(), name: name.clone(), data, id: id.clone() };
    let signaled = match shard::call(env, home, op).await? {
        EventsReply::Signaled(s) => s,
        _ => return Err(ApiError::new(ErrorCode::Internal, "the event index answered another operation")),
    };
    let resumes: Vec<(WaitKey, Value)> = signaled.resumes.into_iter().map(|k| (k, signaled.data.clone())).collect();
    let resumed = deliver(env, cfg, &tenant, home, resumes).await?;
    let mut started = Vec::new();
    for stored in jobs::persist_many(env, cfg, starts).await {
        let (_, job) = stored?;
        let job: Value = serde_json::from_str(job.get())
            .map_err(|_| ApiError::new(ErrorCode::Internal, "a started job does not read back"))?;
        started.extend(job["id"].as_str().map(str::to_owned));
    }
    respond(202, &edgejobs_api::EventSent { name, id, duplicate: signaled.duplicate, resumed, started })
}

/// The idempotency key of the job an event with `id` starts for type `ty`: a repeated send
/// starts nothing new. Hashed, so any name and id fit the key's 256 bytes.
fn trigger_key(name: &str, id: &str, ty: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{name}\u{1f}{id}\u{1f}{ty}").as_bytes());
    format!("event:{}", hex::encode(&digest[..16]))
}

/// Resumes the matched waits on their runs' shards (one call per shard, only `tenant`'s
/// jobs), then tells the index at `home` which matches are settled: resumed now, or no
/// longer waiting (resumed before, timed out, cancelled, gone). Answers how many resumed.
async fn deliver(
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
    let now = crate::platform::now_ms();
    let mut made = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let named = |e: ApiError| match e.field {
            Some(f) => ApiError::field(&format!("step.jobs[{i}].{f}"), e.message),
            None => ApiError { message: format!("step.jobs[{i}]: {}", e.message), ..e },
        };
        let parsed = jobs::parse(cfg, spec, who, now).map_err(named)?;
        made.push(jobs::child_job(cfg, parsed, parent, now).map_err(named)?);
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
