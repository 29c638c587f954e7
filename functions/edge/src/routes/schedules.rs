//! The schedule API: `POST/GET /v1/schedules`, `GET/PATCH/DELETE /v1/schedules/{name}`,
//! `POST /v1/schedules/{name}/{pause,resume,trigger}`. Reads need a `jobs` key; writes an
//! admin key (a schedule enqueues on its own, forever, outside any key's rate limit).
//! Validation happens here (and, for a patch, again in the shard against the stored
//! schedule); each schedule lives in the shard its name hashes to.

use edgejobs_api::{ScheduleDeleted, ScheduleList, ScheduleView, Triggered};
use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::protocol::{ScheduleOp, ScheduleReply, ScheduleShown, Schedules};
use edgejobs_core::schedule::{self, check_name};
use edgejobs_core::tenant::{Sees, Tenant};
use edgejobs_core::{ApiError, ErrorCode};
use futures_util::future::join_all;
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{Out, query_pairs, respond};
use crate::http;
use crate::platform::{now_ms, random_nonce};
use crate::{shard, view};

/// What a path under `/v1/schedules/{name}` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Trigger,
}

/// Largest page of `GET /v1/schedules` (the shard's, which reads one more).
pub use edgejobs_shard::schedules::MAX_LIST;

fn shard_of(name: &str, cfg: &EdgeConfig) -> u16 {
    // Schedules stay on the shards of the deployment's first count (see `topology`).
    cfg.topology.schedule_home(name)
}

/// A name from the path: one that cannot exist is answered like a missing schedule.
fn named(name: &str) -> Result<&str, ApiError> {
    check_name(name).map(|()| name).map_err(|_| schedule::missing(name))
}

/// Seals the header values of a job spec for schedule `name` (at rest they are never plain).
fn seal_job(job: &mut Value, name: &str, cfg: &EdgeConfig) -> Result<(), ApiError> {
    if let Some(payload) = job.get_mut("payload") {
        edgejobs_core::seal::seal_headers(payload, &schedule::tag_of(name), &cfg.payload_keys, &mut random_nonce)
            .map_err(crate::http::unsealable)?;
    }
    Ok(())
}

async fn call(env: &Env, cfg: &EdgeConfig, name: &str, op: ScheduleOp) -> Result<ScheduleReply, ApiError> {
    shard::call(env, shard_of(name, cfg), Schedules { op }).await
}

/// Calls an operation that answers one schedule, and shows it.
async fn one(env: &Env, cfg: &EdgeConfig, name: &str, op: ScheduleOp) -> Result<ScheduleView, ApiError> {
    Ok(view::schedule(call(env, cfg, name, op).await?.shown()?))
}

/// `POST /v1/schedules`
pub async fn create(req: &mut Request, env: &Env, cfg: &EdgeConfig) -> Out {
    let body = http::read_json(req).await?;
    let def = schedule::parse_create(&body, now_ms(), &cfg.types)?;
    edgejobs_core::spec::check_outbound(&def.spec, &cfg.outbound_allow).map_err(schedule::under_job)?;
    check_spec_tenant(&def.spec, cfg)?;
    let mut s = def.schedule;
    let name = s.name.clone();
    seal_job(&mut s.job, &name, cfg)?;
    respond(201, &one(env, cfg, &name, ScheduleOp::Create { schedule: Box::new(s) }).await?)
}

/// A schedule's runs belong to the tenant its job spec names (`job.tenant`), which must be
/// a configured one; a spec without it is the default tenant's.
fn check_spec_tenant(spec: &edgejobs_core::spec::JobSpec, cfg: &EdgeConfig) -> Result<(), ApiError> {
    let tenant = spec.tenant.clone().unwrap_or_default();
    cfg.check_tenant(&tenant).map_err(schedule::under_job)?;
    if !spec.job_type.open_to(&tenant) {
        let e = ApiError::field("tenant", format!("type {:?} is not declared for tenant {tenant}", spec.job_type.name));
        return Err(schedule::under_job(e));
    }
    Ok(())
}

/// `GET /v1/schedules?limit=&cursor=&tenant=`: by name, `next_cursor` when more remain. A
/// jobs key sees its tenant's schedules; an admin every one, or one tenant's.
pub async fn list(req: &Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let mut limit = 50u32;
    let mut cursor: Option<String> = None;
    let mut asked: Option<Tenant> = None;
    for (k, v) in query_pairs(req)? {
        match k.as_str() {
            "limit" => {
                limit = match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_LIST).contains(&n) => n,
                    _ => return Err(ApiError::field("limit", format!("must be an integer from 1 to {}", MAX_LIST))),
                }
            }
            "cursor" => cursor = Some(v),
            "tenant" => asked = Some(Tenant::from_field("tenant", &v)?),
            other => return Err(ApiError::field(other, "unknown parameter; known: limit, cursor, tenant")),
        }
    }
    let tenant = who.sees.filter(asked)?;
    let calls = (0..cfg.shard_count).map(|s| {
        let op = ScheduleOp::List { after: cursor.clone(), limit: limit + 1, tenant: tenant.clone() };
        shard::call(env, s, Schedules { op })
    });
    let mut all: Vec<ScheduleShown> = Vec::new();
    for page in join_all(calls).await {
        all.extend(page?.page()?);
    }
    all.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
    let more = all.len() > limit as usize;
    all.truncate(limit as usize);
    let next = if more { all.last().map(|s| s.schedule.name.clone()) } else { None };
    let schedules: Vec<ScheduleView> = all.into_iter().map(view::schedule).collect();
    respond(200, &ScheduleList { schedules, next_cursor: next })
}

/// `GET /v1/schedules/{name}`: another tenant's schedule is answered as a missing one.
pub async fn get(env: &Env, cfg: &EdgeConfig, who: &Principal, name: &str) -> Out {
    let name = named(name)?;
    let shown = call(env, cfg, name, ScheduleOp::Get { name: name.to_owned() }).await?.shown()?;
    if !shown.schedule.tenant().is_some_and(|t| who.sees.may_see(&t)) && who.sees != Sees::All {
        return Err(schedule::missing(name));
    }
    respond(200, &view::schedule(shown))
}

/// `PATCH /v1/schedules/{name}`: any field but `name`; the result is validated whole.
pub async fn patch(req: &mut Request, env: &Env, cfg: &EdgeConfig, name: &str) -> Out {
    let name = named(name)?;
    let mut body = http::read_json(req).await?;
    if let Some(job) = body.get_mut("job") {
        let spec = schedule::parse_job(job, now_ms(), &cfg.types)?;
        edgejobs_core::spec::check_outbound(&spec, &cfg.outbound_allow).map_err(schedule::under_job)?;
        check_spec_tenant(&spec, cfg)?;
        seal_job(job, name, cfg)?;
    }
    if !body.is_object() {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    }
    respond(200, &one(env, cfg, name, ScheduleOp::Patch { name: name.to_owned(), body }).await?)
}

/// `DELETE /v1/schedules/{name}`: its jobs stay.
pub async fn delete(env: &Env, cfg: &EdgeConfig, name: &str) -> Out {
    let name = named(name)?;
    match call(env, cfg, name, ScheduleOp::Delete { name: name.to_owned() }).await? {
        ScheduleReply::Deleted { name } => respond(200, &ScheduleDeleted { deleted: true, name }),
        other => Err(ApiError::new(ErrorCode::Internal, format!("a shard answered a delete with {other:?}"))),
    }
}

/// `POST /v1/schedules/{name}/pause|resume|trigger`
pub async fn act(env: &Env, cfg: &EdgeConfig, name: &str, action: Action) -> Out {
    let name = named(name)?.to_owned();
    let op = match action {
        Action::Pause => ScheduleOp::Pause { name: name.clone() },
        Action::Resume => ScheduleOp::Resume { name: name.clone() },
        Action::Trigger => ScheduleOp::Trigger { name: name.clone() },
    };
    match call(env, cfg, &name, op).await? {
        // A trigger that made a new job answers 201, as an enqueue does.
        ScheduleReply::Triggered { created, job, schedule } => respond(
            if created { 201 } else { 200 },
            &Triggered { created, job: view::job(*job), schedule: view::schedule(*schedule) },
        ),
        other => respond(200, &view::schedule(other.shown()?)),
    }
}
