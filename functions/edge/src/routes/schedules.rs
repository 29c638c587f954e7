//! The schedule API: `POST/GET /v1/schedules`, `GET/PATCH/DELETE /v1/schedules/{name}`,
//! `POST /v1/schedules/{name}/{pause,resume,trigger}`. Reads need a `jobs` key; writes an
//! admin key (a schedule enqueues on its own, forever, outside any key's rate limit).
//! Validation happens here (and, for a patch, again in the shard against the stored
//! schedule). A schedule lives in the shard of its runs' flow key (so a run counts with the
//! key's other jobs), else in the shard its name hashes to; the name's shard then keeps a
//! claim naming the schedule's, and an operation by name asked there is asked again at the
//! schedule's (`ScheduleReply::Elsewhere`).
//!
//! Tracing (#32): a create keeps the request's `traceparent`/`tracestate` with the
//! schedule, and a patch that sends them replaces it. Each run starts a new trace whose
//! root span (`send <type>`) links to that context: the shard's alarm names the runs it
//! made and the Durable Object records their roots; a trigger's root is recorded here.

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
use crate::{shard, telemetry, view};

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

/// Asks the name's shard, then the schedule's when the name's keeps a claim for it;
/// answers with the shard that answered.
async fn call_at(env: &Env, cfg: &EdgeConfig, name: &str, op: ScheduleOp) -> Result<(u16, ScheduleReply), ApiError> {
    let at = shard_of(name, cfg);
    match shard::call(env, at, Schedules { op: op.clone() }).await? {
        ScheduleReply::Elsewhere { home } if home != at => match shard::call(env, home, Schedules { op }).await? {
            ScheduleReply::Elsewhere { .. } => {
                Err(ApiError::new(ErrorCode::Internal, format!("schedule {name:?}: shard {home} sent it back")))
            }
            reply => Ok((home, reply)),
        },
        ScheduleReply::Elsewhere { .. } => {
            Err(ApiError::new(ErrorCode::Internal, format!("schedule {name:?}: its shard names itself as elsewhere")))
        }
        reply => Ok((at, reply)),
    }
}

async fn call(env: &Env, cfg: &EdgeConfig, name: &str, op: ScheduleOp) -> Result<ScheduleReply, ApiError> {
    Ok(call_at(env, cfg, name, op).await?.1)
}

/// The shard a schedule of `spec` lives on (see `schedule::home`).
fn home_of(name: &str, spec: &edgejobs_core::spec::JobSpec, cfg: &EdgeConfig) -> u16 {
    schedule::home(name, spec, cfg.webhook_concurrency, &cfg.topology)
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
    s.trace = telemetry::incoming(req);
    let name = s.name.clone();
    seal_job(&mut s.job, &name, cfg)?;
    let home = home_of(&name, &def.spec, cfg);
    if home != shard_of(&name, cfg) {
        // The name is kept first: a second create of it, for any shard, is refused there.
        // A create that fails after the claim leaves it; the same create claims again.
        match shard::call(env, shard_of(&name, cfg), Schedules { op: ScheduleOp::Claim { name: name.clone(), home } })
            .await?
        {
            ScheduleReply::Claimed { .. } => {}
            other => return Err(ApiError::new(ErrorCode::Internal, format!("a claim was answered with {other:?}"))),
        }
    }
    let created = shard::call(env, home, Schedules { op: ScheduleOp::Create { schedule: Box::new(s) } }).await?;
    respond(201, &view::schedule(created.shown()?))
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
    let mut moves_to = None;
    if let Some(job) = body.get_mut("job") {
        let spec = schedule::parse_job(job, now_ms(), &cfg.types)?;
        edgejobs_core::spec::check_outbound(&spec, &cfg.outbound_allow).map_err(schedule::under_job)?;
        check_spec_tenant(&spec, cfg)?;
        seal_job(job, name, cfg)?;
        moves_to = Some(home_of(name, &spec, cfg));
    }
    if !body.is_object() {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    }
    // The context comes from the request's headers only: a body's own `trace` is unknown
    // (as in a create), and one with `traceparent` replaces the schedule's.
    if body.get(schedule::PATCH_TRACE).is_some() {
        return Err(ApiError::field(schedule::PATCH_TRACE, "unknown field"));
    }
    if let Some(trace) = telemetry::incoming(req) {
        schedule::with_trace(&mut body, &trace);
    }
    if let Some(to) = moves_to {
        // A schedule stays where it is: a job whose flow key lives elsewhere is refused
        // (its runs would be counted apart from the key's other jobs).
        let (at, _) = call_at(env, cfg, name, ScheduleOp::Get { name: name.to_owned() }).await?;
        if at != to {
            return Err(ApiError::field(
                "job",
                "names a flow key that lives on another shard than this schedule (its runs are counted with the key's other jobs there); delete the schedule and create it again with this job",
            ));
        }
    }
    respond(200, &one(env, cfg, name, ScheduleOp::Patch { name: name.to_owned(), body }).await?)
}

/// `DELETE /v1/schedules/{name}`: its jobs stay.
pub async fn delete(env: &Env, cfg: &EdgeConfig, name: &str) -> Out {
    let name = named(name)?;
    let at = shard_of(name, cfg);
    let op = || Schedules { op: ScheduleOp::Delete { name: name.to_owned() } };
    let reply = match shard::call(env, at, op()).await? {
        ScheduleReply::Elsewhere { home } if home != at => {
            // Deleted at its home (or gone from there: a create that never finished), then
            // the name is freed; a failure in between leaves the claim, and the same
            // delete frees it. A home that fails keeps the claim (the schedule is there).
            let deleted = shard::call(env, home, op()).await;
            let gone = match &deleted {
                Ok(_) => true,
                Err(e) => e.code == ErrorCode::ScheduleNotFound,
            };
            if gone {
                shard::call(env, at, Schedules { op: ScheduleOp::Unclaim { name: name.to_owned() } }).await?;
            }
            deleted?
        }
        reply => reply,
    };
    match reply {
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
        ScheduleReply::Triggered { created, job, schedule } => {
            if created {
                trace_run(cfg, &schedule.schedule, &job);
            }
            respond(
                if created { 201 } else { 200 },
                &Triggered { created, job: view::job(*job), schedule: view::schedule(*schedule) },
            )
        }
        other => respond(200, &view::schedule(other.shown()?)),
    }
}

/// Records the root span of a run's new trace, linked to its schedule's context (#32); the
/// invocation exports it after answering.
fn trace_run(cfg: &EdgeConfig, s: &schedule::Schedule, job: &edgejobs_core::Job) {
    if let Some(run) = edgejobs_shard::schedules::RunStarted::of(s, job) {
        telemetry::keep(&cfg.tracing, run.span(telemetry::SYSTEM, telemetry::now_ns()));
    }
}
