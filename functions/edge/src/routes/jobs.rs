//! The job API: enqueue (one or a batch), read, list, cancel, retry.

use edgejobs_api::{BatchItem, BatchItemCreated, BatchItemFailed, BatchResult, JobList};
use edgejobs_core::auth::Principal;
use edgejobs_core::callbacks::BatchOpen;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::flow::Flow;
use edgejobs_core::machine::Event;
use edgejobs_core::otlp::{self, SpanKind, SpanRecord};
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{
    Applied, ApplyMany, ClaimKeys, CreateMany, FlowOutcome, GetMany, KeyClaim, List, Listed,
};
use edgejobs_core::ratelimit::Decision;
use edgejobs_core::spec::CallbackSpec;
use edgejobs_core::spec::{JobSpec, parse_enqueue_unchecked};
use edgejobs_core::trace::TraceContext;
use edgejobs_core::wire::{Include, ListQuery, merge_by, parse_list_params};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId};
use futures_util::future::join_all;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use worker::{Env, Request, Response};

use crate::http;
use crate::platform::{now_ms, random_nonce, random_u64};
use crate::ratelimit;
use crate::scatter;
use crate::shard;
use crate::telemetry;
use crate::view;

pub type Out = std::result::Result<Response, ApiError>;

/// Largest batch accepted by `POST /v1/jobs/batch`.
pub const MAX_BATCH: usize = 100;

pub fn respond(status: u16, body: &impl serde::Serialize) -> Out {
    http::json(status, body).map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed"))
}

/// Picks the shard of a new job: from the idempotency key when there is one (its home
/// under the newest count, so every request with that key meets in one shard, which
/// serializes them; see [`persist_many`] for the claim at earlier homes after a growth),
/// else `keyless` (a random shard per request, so a batch without keys is one shard call).
pub fn shard_for(cfg: &EdgeConfig, key: Option<&str>, keyless: u16, now: u64) -> u16 {
    match key {
        Some(k) => cfg.topology.route_key(k, now, cfg.idempotency_window_ms).home,
        None => keyless % cfg.shard_count,
    }
}

thread_local! {
    /// This isolate's current shard for keyless jobs, and until when it holds.
    static STICKY: std::cell::Cell<(u16, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// How long an isolate sends its keyless jobs to one shard before it picks another.
const STICKY_MS: u64 = 100;

/// The shard for the jobs of one request that have no idempotency key: random, but kept
/// by this isolate for [`STICKY_MS`], so concurrent single enqueues meet in one shard,
/// which sends their queue messages together (see `shard::outbox`). Every isolate picks
/// its own, so load still spreads over the shards.
pub fn random_shard(shard_count: u16) -> u16 {
    let now = now_ms();
    STICKY.with(|s| {
        let (shard, until) = s.get();
        if now < until && shard < shard_count {
            return shard;
        }
        let shard = (random_u64() % shard_count as u64) as u16;
        s.set((shard, now + STICKY_MS));
        shard
    })
}

/// A validated job, with its shard, not yet stored.
#[derive(Debug)]
pub struct Prepared {
    shard: u16,
    job: Job,
}

/// Validates one job spec at `now` (the request's one time: a `delay` and the job's
/// creation are counted from it), all but its payload schema (which [`prepare`] checks once
/// the request passed the rate limit).
/// The job's tenant is decided here: a `jobs` key's own (naming another is refused), an
/// admin's choice among the configured tenants, or `default`. Its completion callbacks
/// (#30) are checked as enqueues of their jobs for that tenant would be.
pub fn parse(cfg: &EdgeConfig, body: &Value, who: &Principal, now: u64) -> std::result::Result<JobSpec, ApiError> {
    let mut spec = parse_enqueue_unchecked(body, now, &cfg.types).map_err(|e| for_tenant(e, body, cfg, who))?;
    // A type declared for other tenants does not exist for this key.
    if let Some(t) = who.tenant()
        && !spec.job_type.open_to(t)
    {
        return Err(unknown_type(&spec.job_type.name, cfg, who));
    }
    edgejobs_core::spec::check_outbound(&spec, &cfg.outbound_allow)?;
    edgejobs_core::spec::check_user_namespace(&spec)?;
    let owner = who.sees.owner_of_new(spec.tenant.take())?;
    cfg.check_tenant(&owner)?;
    if !spec.job_type.open_to(&owner) {
        return Err(ApiError::field(
            "tenant",
            format!("type {:?} is not declared for tenant {owner}", spec.job_type.name),
        ));
    }
    for c in spec.callbacks() {
        check_callback_tenant(cfg, who, c, &owner)?;
    }
    spec.tenant = Some(owner);
    Ok(spec)
}

/// A callback job's type must exist for its job's tenant (a callback job is its job's
/// tenant's): otherwise it is an unknown type, named by the callback's field.
fn check_callback_tenant(
    cfg: &EdgeConfig,
    who: &Principal,
    c: &CallbackSpec,
    owner: &edgejobs_core::tenant::Tenant,
) -> std::result::Result<(), ApiError> {
    if c.spec.job_type.open_to(owner) {
        return Ok(());
    }
    Err(c.rename(unknown_type(&c.spec.job_type.name, cfg, who)))
}

/// Checks a parsed spec's payload against its type's schema and gives the job an id in
/// its shard, created at `now`: the time the spec was parsed at, not a later one (the rate
/// limit awaits between the two, and a `delay` is counted from the creation).
pub fn prepare(cfg: &EdgeConfig, spec: JobSpec, keyless: u16, now: u64) -> std::result::Result<Prepared, ApiError> {
    prepare_in(cfg, spec, keyless, now, None)
}

/// [`prepare`], for a job of `batch` (#30) when given: it lives in the batch's shard
/// (`keyless`; a batch with `on_complete` takes no idempotency key and no keyed flow
/// control, refused before this), so an edge webhook does not get its origin's
/// concurrency key either (the key would place it in another shard), as a workflow's child
/// does not.
fn prepare_in(
    cfg: &EdgeConfig,
    spec: JobSpec,
    keyless: u16,
    now: u64,
    batch: Option<&str>,
) -> std::result::Result<Prepared, ApiError> {
    edgejobs_core::spec::check_schema(&spec)?;
    let flow = match batch {
        Some(_) => edgejobs_core::spec::flow_of(&spec, None)?,
        None => resolve_flow(cfg, &spec)?,
    };
    // Every key a job names is decided by the shard of its flow key, placed by the first
    // count so it never moves when `SHARD_COUNT` grows (ARCHITECTURE.md, "Flow control").
    let shard = match edgejobs_core::flow::home(flow.as_ref(), &spec.tenant.clone().unwrap_or_default(), &cfg.topology)
    {
        Some(home) => home,
        None => shard_for(cfg, spec.idempotency_key.as_deref(), keyless, now),
    };
    let id = JobId::new(shard, now, random_u64());
    let mut job = spec.into_job(id, now).0;
    job.flow = flow;
    job.batch = batch.map(str::to_owned);
    // Header values are sealed before the job leaves the router: shards, backups and
    // archives only ever see them encrypted. A callback's are sealed under the callback
    // job's own id (fixed now for that reason), which its handler opens them with.
    edgejobs_core::seal::seal_headers(&mut job.payload, job.id.as_str(), &cfg.payload_keys, &mut random_nonce)
        .map_err(crate::http::unsealable)?;
    for t in job.on_complete.iter_mut().chain(job.on_fail.iter_mut()) {
        seal_callback(cfg, t)?;
    }
    Ok(Prepared { shard, job })
}

/// Seals a callback template's header values under its id.
fn seal_callback(cfg: &EdgeConfig, t: &mut edgejobs_core::callbacks::Callback) -> std::result::Result<(), ApiError> {
    edgejobs_core::seal::seal_headers(&mut t.payload, t.id.as_str(), &cfg.payload_keys, &mut random_nonce)
        .map_err(crate::http::unsealable)
}

/// The job's flow control with its keys resolved (see `edgejobs_core::spec::flow_of`).
pub fn resolve_flow(cfg: &EdgeConfig, spec: &JobSpec) -> std::result::Result<Option<Flow>, ApiError> {
    edgejobs_core::spec::flow_of(spec, cfg.webhook_concurrency)
}

thread_local! {
    /// This isolate's view of each tenant's jobs not yet final: the total the shards
    /// answered, when, and how many this isolate admitted since.
    static PENDING: std::cell::RefCell<BTreeMap<String, (u64, u64, u64)>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// How long an isolate trusts the shards' pending totals of a tenant before asking again.
const PENDING_FRESH_MS: u64 = 1000;

/// `TENANT_MAX_PENDING`: refuses (429 `tenant_pending_limit`) `n` more jobs of `tenant`
/// when they would take it over the cap. The total is read from every shard (one counter
/// row each, kept in the same transaction as the jobs) at most once a second per isolate,
/// plus what this isolate admitted since: a cap, not a reservation, which concurrent
/// isolates can overshoot by what they admit within that second (ARCHITECTURE.md).
pub async fn check_pending(
    env: &Env,
    cfg: &EdgeConfig,
    tenant: &edgejobs_core::tenant::Tenant,
    n: u64,
) -> std::result::Result<(), ApiError> {
    let Some(max) = cfg.tenant_max_pending.of(tenant) else { return Ok(()) };
    let now = now_ms();
    let cached = PENDING.with(|p| {
        p.borrow()
            .get(tenant.as_str())
            .filter(|(_, at, _)| now.saturating_sub(*at) < PENDING_FRESH_MS)
            .map(|(total, _, admitted)| total + admitted)
    });
    let current = match cached {
        Some(c) => c,
        None => {
            let calls = (0..cfg.shard_count)
                .map(|s| shard::call(env, s, edgejobs_core::protocol::Pending { tenant: tenant.clone() }));
            let mut total = 0u64;
            for r in join_all(calls).await {
                total += r?;
            }
            PENDING.with(|p| p.borrow_mut().insert(tenant.to_string(), (total, now, 0)));
            total
        }
    };
    if current.saturating_add(n) > max {
        return Err(ApiError::new(
            ErrorCode::TenantPendingLimit,
            format!("tenant {tenant} holds {current} jobs not yet final; TENANT_MAX_PENDING is {max}"),
        ));
    }
    PENDING.with(|p| {
        if let Some(e) = p.borrow_mut().get_mut(tenant.as_str()) {
            e.2 += n;
        }
    });
    Ok(())
}

/// `check_pending` for every tenant among a request's valid jobs.
async fn check_pending_all<'a>(
    env: &Env,
    cfg: &EdgeConfig,
    specs: impl Iterator<Item = &'a JobSpec>,
) -> std::result::Result<(), ApiError> {
    let mut per: BTreeMap<edgejobs_core::tenant::Tenant, u64> = BTreeMap::new();
    for s in specs {
        *per.entry(s.tenant.clone().unwrap_or_default()).or_default() += 1;
    }
    for (t, n) in per {
        check_pending(env, cfg, &t, n).await?;
    }
    Ok(())
}

/// The `unknown_type` error as a key sees it: it lists only the types the key may use.
fn unknown_type(name: &str, cfg: &EdgeConfig, who: &Principal) -> ApiError {
    let visible: Vec<&str> =
        cfg.types.all().filter(|t| who.tenant().is_none_or(|w| t.open_to(w))).map(|t| t.name.as_str()).collect();
    let shown: String = name.chars().take(64).collect();
    ApiError::new(
        ErrorCode::UnknownType,
        format!("unknown job type {shown:?}; this deployment's types: {}", visible.join(", ")),
    )
}

/// Rewrites an `unknown_type` error so it names only the types `who` may use (also one
/// about a callback's job, `on_complete.job.type`, whose field it keeps).
fn for_tenant(e: ApiError, body: &Value, cfg: &EdgeConfig, who: &Principal) -> ApiError {
    if e.code != ErrorCode::UnknownType || who.tenant().is_none() {
        return e;
    }
    if let Some(field) = e.field.clone()
        && let Some(callback) = field.strip_suffix(".job.type")
    {
        let name = body.get(callback).and_then(|c| c.get("job")).and_then(|j| j.get("type"));
        let own = unknown_type(name.and_then(Value::as_str).unwrap_or_default(), cfg, who);
        return ApiError { message: format!("{field}: {}", own.message), ..e };
    }
    unknown_type(body.get("type").and_then(Value::as_str).unwrap_or_default(), cfg, who)
}

/// A stored job's status (201 new, 200 existing) and its JSON as the shard wrote it.
pub type Persisted = std::result::Result<(u16, Box<RawValue>), ApiError>;

/// Stores prepared jobs with one call per shard they fall in (concurrently); returns each
/// job's status and JSON, or its error, in the order given. Within an idempotency window
/// after a growth of `SHARD_COUNT`, keyed jobs are first claimed at their homes under the
/// earlier counts (one call per such shard, a round per earlier count): a key found there
/// answers with its job, and only the others are created.
pub async fn persist_many(env: &Env, cfg: &EdgeConfig, items: Vec<Prepared>) -> Vec<Persisted> {
    persist_in(env, cfg, items, None).await
}

/// [`persist_many`], opening `batch` (#30) in its shard with the create of its jobs.
async fn persist_in(env: &Env, cfg: &EdgeConfig, items: Vec<Prepared>, batch: Option<BatchOpen>) -> Vec<Persisted> {
    let window = cfg.idempotency_window_ms;
    let mut answers = claim_moved_keys(env, cfg, &items).await;
    let jobs =
        items.into_iter().zip(&answers).filter(|(_, a)| a.is_none()).map(|(p, _)| Ok((p.shard, p.job))).collect();
    let opens_in = |s: u16| batch.clone().filter(|b| edgejobs_core::callbacks::batch_shard(&b.id) == Some(s));
    let created = scatter::by_shard(jobs, |s, jobs| {
        shard::call(env, s, CreateMany { jobs, idempotency_window_ms: window, batch: opens_in(s) })
    })
    .await;
    let mut created = created.into_iter().map(|c| {
        c.and_then(|c| match c.moved_to {
            // Another isolate recorded a growth this one had not read: read it again; the
            // client's retry with the same key finds the job or creates it once.
            Some(to) => {
                crate::topology::forget();
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("SHARD_COUNT grew meanwhile (this key now lives in shard {to}); retry with the same key"),
                ))
            }
            None => match c.flow {
                Some(FlowOutcome::Rejected { retry_after_ms }) => Err(ApiError::new(
                    ErrorCode::Throttled,
                    format!(
                        "over the job's throttle (on_limit \"reject\"); its window reopens in {} s",
                        retry_after_ms.div_ceil(1000).max(1)
                    ),
                )),
                Some(outcome) => Ok((200, view::flagged(c.job, outcome))),
                None => Ok((if c.created { 201 } else { 200 }, view::raw(c.job))),
            },
        })
    });
    for a in answers.iter_mut().filter(|a| a.is_none()) {
        *a = created.next();
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "no answer from the shard"))))
        .collect()
}

/// After a growth, claims each keyed job's key at its homes under the earlier counts
/// (`Topology::route_key`): `Some` answers an item (its key's existing job, or an error),
/// `None` leaves it to be created at its new home.
async fn claim_moved_keys(env: &Env, cfg: &EdgeConfig, items: &[Prepared]) -> Vec<Option<Persisted>> {
    let mut answers: Vec<Option<Persisted>> = items.iter().map(|_| None).collect();
    let now = now_ms();
    let window = cfg.idempotency_window_ms;
    if !cfg.topology.settling(now, window) {
        return answers;
    }
    let routes: Vec<(Vec<u16>, Option<String>)> = items
        .iter()
        .map(|p| match (p.job.idempotency_key.as_deref(), p.job.scoped_key()) {
            // A flow-controlled job lives on its flow key's shard, which never moves: its
            // idempotency key was never anywhere else.
            _ if p.job.flow.as_ref().and_then(|f| f.route_key()).is_some() => (Vec::new(), None),
            (Some(k), Some(scoped)) => (cfg.topology.route_key(k, now, window).claim_first, Some(scoped)),
            _ => (Vec::new(), None),
        })
        .collect();
    let rounds = routes.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
    for round in 0..rounds {
        let asks: Vec<(usize, u16, KeyClaim)> = routes
            .iter()
            .enumerate()
            .filter(|(i, _)| answers[*i].is_none())
            .filter_map(|(i, (homes, key))| {
                let (home, key) = (homes.get(round)?, key.as_ref()?);
                Some((i, *home, KeyClaim { key: key.clone(), to: items[i].shard }))
            })
            .collect();
        let claims = asks.iter().map(|(_, s, c)| Ok((*s, c.clone()))).collect();
        let got = scatter::by_shard(claims, |s, claims| {
            shard::call(env, s, ClaimKeys { claims, idempotency_window_ms: window })
        })
        .await;
        for ((i, _, _), g) in asks.iter().zip(got) {
            match g {
                Ok(Some(job)) => answers[*i] = Some(Ok((200, view::raw(job)))),
                Ok(None) => {}
                Err(e) => answers[*i] = Some(Err(e)),
            }
        }
    }
    answers
}

/// Applies the rate limit for `cost` jobs: `Err(response)` is the 429 (or the 503 when the
/// limiter fails closed), `Ok(decision)` the headers to add.
async fn limit(cfg: &EdgeConfig, who: &Principal, cost: u32) -> std::result::Result<Option<Decision>, Out> {
    match ratelimit::admit(cfg, who, cost).await {
        Ok(Some(d)) if !d.allowed => {
            Err(ratelimit::refusal(&d).map_err(|_| ApiError::new(ErrorCode::Internal, "response encoding failed")))
        }
        Ok(d) => Ok(d),
        Err(e) => Err(Err(e)),
    }
}

fn with_limit_headers(resp: Out, d: Option<Decision>) -> Out {
    let mut resp = resp?;
    if let Some(d) = d {
        ratelimit::headers(&mut resp, &d);
    }
    Ok(resp)
}

/// `POST /v1/jobs`
pub async fn create(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    // Cheapest first: the body's size (read_json), the spec's fields, the rate limit, and
    // only then the payload's schema.
    let body = http::read_json(req).await?;
    let now = now_ms();
    let spec = parse(cfg, &body, who, now)?;
    let decision = match limit(cfg, who, 1).await {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    check_pending_all(env, cfg, std::iter::once(&spec)).await?;
    let mut prepared = prepare(cfg, spec, random_shard(cfg.shard_count), now)?;
    let span = enqueue_span(cfg, telemetry::incoming(req).as_ref(), &prepared.job.job_type, None);
    trace_job(&mut prepared, &span);
    let commit = commit_span(cfg, &span, prepared.shard, 1);
    let answer = persist_many(env, cfg, vec![prepared]).await.pop();
    telemetry::end(&cfg.tracing, commit);
    telemetry::end(&cfg.tracing, span);
    let (status, job) =
        answer.unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "no answer from the shard")))?;
    with_limit_headers(respond(status, &view::raw(job)), decision)
}

/// The enqueue's span (#32): a producer span under the caller's `traceparent` (or the root
/// of a new trace), which every job of the request names as its parent. A batch's is one
/// span for all its jobs, named by their types when they share one.
fn enqueue_span(cfg: &EdgeConfig, parent: Option<&TraceContext>, job_type: &str, batch: Option<usize>) -> SpanRecord {
    let name = otlp::messaging_span_name("send", job_type);
    telemetry::start(&cfg.tracing, parent, name, SpanKind::Producer).attrs(otlp::messaging_attrs(
        telemetry::SYSTEM,
        "send",
        job_type,
        None,
        batch,
    ))
}

/// Gives a prepared job the enqueue span as its parent, and names the job on the span of a
/// single enqueue.
fn trace_job(p: &mut Prepared, span: &SpanRecord) {
    set_trace(p, span.context());
}

/// Makes `ctx` the prepared job's parent (#32): the span that created it.
pub fn set_trace(p: &mut Prepared, ctx: TraceContext) {
    p.job.trace = Some(ctx);
}

/// The shard commit under an enqueue span: how long the shard took to write `jobs` jobs.
fn commit_span(cfg: &EdgeConfig, parent: &SpanRecord, shard: u16, jobs: usize) -> SpanRecord {
    telemetry::start(&cfg.tracing, Some(&parent.context()), "commit", SpanKind::Client)
        .attr(otlp::keys::SHARD, shard)
        .attr(otlp::keys::MESSAGING_BATCH_MESSAGE_COUNT, jobs)
}

/// `POST /v1/jobs/batch` with `{"jobs":[...]}` (1 to 100): every item is validated and
/// created on its own and answered in order with `{"status":201,"job":{...}}` or
/// `{"status":400,"error":{...}}`. A malformed envelope creates nothing. The valid items
/// count against the rate limit together; over it, nothing is created. Items without an
/// idempotency key share one shard, so such a batch is one Durable Object call.
///
/// With `on_complete` (#30; a URL or a job spec, as a job's), the jobs created are one
/// batch whose callback fires once all of them are final: they all live in one shard,
/// which keeps the batch's row, so items with an idempotency key or keyed flow control
/// (either would place the job elsewhere) or of another tenant than the first valid item's
/// are refused on their own; a bad `on_complete` refuses the whole request. The answer
/// names the batch (`"batch"`) when any job was created.
pub async fn batch(req: &mut Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let body = http::read_json(req).await?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "jobs" | "on_complete")) {
        return Err(ApiError::field(k, "unknown field"));
    }
    let items = match obj.get("jobs") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH => items,
        _ => return Err(ApiError::field("jobs", format!("must be an array of 1 to {MAX_BATCH} job specs"))),
    };
    let keyless = random_shard(cfg.shard_count);
    let now = now_ms();
    let on_complete = match obj.get("on_complete") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            edgejobs_core::spec::parse_callback(v, "on_complete", now, &cfg.types)
                .map_err(|e| for_tenant(e, &body, cfg, who))?,
        ),
    };
    let mut specs: Vec<std::result::Result<JobSpec, ApiError>> =
        items.iter().map(|i| parse(cfg, i, who, now)).collect();
    let on_complete = match on_complete {
        Some(c) => Some(batch_members(cfg, who, c, &mut specs)?),
        None => None,
    };
    let valid = specs.iter().filter(|p| p.is_ok()).count() as u32;
    let decision = if valid > 0 {
        match limit(cfg, who, valid).await {
            Ok(d) => d,
            Err(refused) => return refused,
        }
    } else {
        None
    };
    // Over a tenant's cap, nothing of the batch is created (as over the rate limit).
    check_pending_all(env, cfg, specs.iter().flatten()).await?;
    // Schemas only once the batch passed the limit (an item its schema refuses still
    // counted: the limit is decided before any schema work).
    let opened = match on_complete {
        Some((c, tenant)) => Some(open_batch(cfg, c, tenant, keyless, now)?),
        None => None,
    };
    let in_batch = opened.as_ref().map(|b| b.id.as_str());
    let prepared: Vec<std::result::Result<Prepared, ApiError>> = specs
        .into_iter()
        .map(|s| {
            s.and_then(|s| prepare_in(cfg, s, keyless, now, in_batch)).and_then(|p| match in_batch {
                Some(_) if p.shard != keyless => Err(ApiError::new(ErrorCode::Internal, "a batch job left its shard")),
                _ => Ok(p),
            })
        })
        .collect();
    let mut slots: Vec<Option<Persisted>> = Vec::with_capacity(prepared.len());
    let mut good = Vec::new();
    for p in prepared {
        match p {
            Ok(p) => {
                slots.push(None);
                good.push(p);
            }
            Err(e) => slots.push(Some(Err(e))),
        }
    }
    let types: BTreeSet<&str> = good.iter().map(|p| p.job.job_type.as_str()).collect();
    let one_type = if types.len() == 1 { types.first().copied().unwrap_or("jobs") } else { "jobs" }.to_owned();
    let span = enqueue_span(cfg, telemetry::incoming(req).as_ref(), &one_type, Some(good.len()));
    let shards: BTreeSet<u16> = good.iter().map(|p| p.shard).collect();
    for p in &mut good {
        trace_job(p, &span);
    }
    let commit = commit_span(cfg, &span, shards.first().copied().unwrap_or_default(), good.len());
    let mut stored = persist_in(env, cfg, good, opened.clone()).await.into_iter();
    telemetry::end(&cfg.tracing, commit);
    telemetry::end(&cfg.tracing, span);
    let out: Vec<Persisted> = slots
        .into_iter()
        .map(|slot| {
            slot.or_else(|| stored.next())
                .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "no answer from the shard")))
        })
        .collect();
    // Jobs are passed through as the shard wrote them.
    let results: Vec<BatchItem<&RawValue, &ApiError>> = out
        .iter()
        .map(|r| match r {
            Ok((status, job)) => BatchItem::Created(BatchItemCreated { status: *status, job: &**job }),
            Err(e) => BatchItem::Failed(BatchItemFailed { status: e.status(), error: e }),
        })
        .collect();
    let created = out.iter().any(|r| matches!(r, Ok((201, _))));
    let batch = opened.filter(|_| created).map(|b| b.id);
    with_limit_headers(respond(200, &BatchResult { results, batch }), decision)
}

/// The checks of a batch's `on_complete` (#30) and its items, before the rate limit: the
/// batch is the tenant's of its first valid item (the key's own when none is valid), its
/// callback is checked as an enqueue of its job for that tenant would be, and an item that
/// cannot join the batch (another tenant's, an idempotency key, keyed flow control) is
/// refused on its own. Returns the callback and the batch's tenant.
fn batch_members(
    cfg: &EdgeConfig,
    who: &Principal,
    c: CallbackSpec,
    specs: &mut [std::result::Result<JobSpec, ApiError>],
) -> std::result::Result<(CallbackSpec, edgejobs_core::tenant::Tenant), ApiError> {
    let tenant = match specs.iter().flatten().next() {
        Some(s) => s.tenant.clone().unwrap_or_default(),
        None => who.sees.owner_of_new(None)?,
    };
    check_callback_tenant(cfg, who, &c, &tenant)?;
    edgejobs_core::spec::check_outbound(&c.spec, &cfg.outbound_allow).map_err(|e| c.rename(e))?;
    edgejobs_core::spec::check_user_namespace(&c.spec).map_err(|e| c.rename(e))?;
    for slot in specs.iter_mut() {
        let Ok(s) = slot else { continue };
        let f = &s.flow;
        let keyed = [
            ("concurrency", !f.concurrency.is_empty()),
            ("rate", f.rate.is_some()),
            ("debounce", f.debounce.is_some()),
            ("throttle", f.throttle.is_some()),
        ];
        let refusal = if s.idempotency_key.is_some() {
            Some(ApiError::field(
                "idempotency_key",
                "a job of a batch with on_complete takes none: a key decides its job's shard, and a batch's jobs share one",
            ))
        } else if s.tenant.as_ref() != Some(&tenant) {
            Some(ApiError::field("tenant", format!("every job of a batch with on_complete is its tenant's ({tenant})")))
        } else {
            keyed.iter().find(|(_, set)| *set).map(|(field, _)| {
                ApiError::field(
                    field,
                    "a job of a batch with on_complete lives in the batch's shard and takes no keyed flow control \
                     (its key would place it in another)",
                )
            })
        };
        if let Some(e) = refusal {
            *slot = Err(e);
        }
    }
    Ok((c, tenant))
}

/// The batch `POST /v1/jobs/batch` opens in shard `shard` for its `on_complete` (#30): its
/// id, and its callback's template with its id, its schema checked and its header values
/// sealed under that id.
fn open_batch(
    cfg: &EdgeConfig,
    c: CallbackSpec,
    tenant: edgejobs_core::tenant::Tenant,
    shard: u16,
    now: u64,
) -> std::result::Result<BatchOpen, ApiError> {
    edgejobs_core::spec::check_batch_callback_schema(&c)?;
    let id = edgejobs_core::callbacks::batch_id(shard, now, random_u64());
    let cb_id = edgejobs_core::callbacks::batch_callback_id(&id)
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "a new batch id does not read back"))?;
    let mut on_complete = c.template(cb_id);
    seal_callback(cfg, &mut on_complete)?;
    Ok(BatchOpen { id, tenant, on_complete })
}

/// Parses a job id from a path, answering 404 `job_not_found` for anything that is not one
/// (a malformed id cannot name an existing job) and for an id naming a shard this
/// deployment does not have — refused here, so no Durable Object is ever created for it.
pub fn parse_id(raw: &str, cfg: &EdgeConfig) -> std::result::Result<JobId, ApiError> {
    let shown: String = raw.chars().take(64).collect();
    let not_found = || ApiError::new(ErrorCode::JobNotFound, format!("no job with id {shown:?}"));
    let id: JobId = raw.parse().map_err(|_| not_found())?;
    if id.shard() >= cfg.shard_count {
        return Err(not_found());
    }
    Ok(id)
}

/// `GET /v1/jobs/{id}`
/// Applies one event to one job of `tenant` (any job: `None`) and returns the job after it
/// (or why it was refused: another tenant's job is answered as a missing one).
pub async fn apply_one(
    env: &Env,
    id: JobId,
    event: Event,
    tenant: Option<&edgejobs_core::tenant::Tenant>,
) -> std::result::Result<Job, ApiError> {
    let shard = id.shard();
    let events = vec![JobEvent { id, event }];
    let answers = shard::call(env, shard, ApplyMany { events, full: true, tenant: tenant.cloned() }).await?;
    match answers.into_iter().next() {
        Some(Ok(Applied { job: Some(job), .. })) => Ok(job),
        Some(Err(e)) => Err(e.into()),
        _ => Err(ApiError::new(ErrorCode::Internal, "malformed shard answer")),
    }
}

async fn user_event(env: &Env, cfg: &EdgeConfig, who: &Principal, raw_id: &str, event: Event) -> Out {
    let id = parse_id(raw_id, cfg)?;
    respond(200, &view::job(apply_one(env, id, event, who.tenant()).await?))
}

/// `POST /v1/jobs/{id}/cancel`: a queued or scheduled job is cancelled at once; an active
/// job is marked, and the report of its running attempt is refused.
pub async fn cancel(env: &Env, cfg: &EdgeConfig, who: &Principal, raw_id: &str) -> Out {
    user_event(env, cfg, who, raw_id, Event::Cancel).await
}

/// `POST /v1/jobs/{id}/retry`: replays a dead job as a new attempt series.
pub async fn retry(env: &Env, cfg: &EdgeConfig, who: &Principal, raw_id: &str) -> Out {
    user_event(env, cfg, who, raw_id, Event::Replay).await
}

/// Runs a listing over every shard and merges the pages, newest first. Shards answer with
/// summaries (at most a few KiB each, so a page stays small whatever the jobs hold); when
/// payloads, results or metadata are asked for, the page's jobs (at most 20) are then read
/// whole from their shards.
pub async fn fan_out_list(env: &Env, cfg: &EdgeConfig, who: &Principal, mut q: ListQuery) -> Out {
    // A jobs key lists its own tenant's jobs whatever it asks; an admin may filter.
    q.tenant = who.sees.filter(q.tenant.take())?;
    let limit = q.limit;
    let include = q.include;
    // An id names its shard in its first three characters: a prefix that long asks one.
    let only: Option<u16> =
        q.id_prefix.as_deref().and_then(|p| p.get(1..3)).and_then(|h| u16::from_str_radix(h, 16).ok());
    let per_shard = ListQuery { limit: limit + 1, include: Include::default(), ..q };
    let shards = (0..cfg.shard_count).filter(|s| only.is_none_or(|o| o == *s));
    let calls = shards.map(|s| shard::call(env, s, List { query: per_shard.clone() }));
    let mut pages = Vec::with_capacity(cfg.shard_count as usize);
    let mut cut: Option<JobId> = None;
    for r in join_all(calls).await {
        let page = r?;
        // The shard that stopped scanning highest bounds what this page can tell.
        if let Some(to) = page.scanned_to {
            let key = |id: &JobId| (id.created_ms(), id.as_str().to_owned());
            if cut.as_ref().is_none_or(|c| key(&to) > key(c)) {
                cut = Some(to);
            }
        }
        pages.push(page.items);
    }
    let (listed, next) = cut_page(pages, limit, cut);
    let jobs: Vec<Value> = if include.any() {
        let ids = listed.iter().map(|l| Ok((l.id.shard(), l.id.clone()))).collect();
        let docs = scatter::by_shard(ids, |s, ids| async move {
            let wanted: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
            let mut found: BTreeMap<String, Box<RawValue>> = BTreeMap::new();
            for doc in shard::call(env, s, GetMany { ids }).await? {
                if let Ok(head) = serde_json::from_str::<IdOnly>(doc.get()) {
                    found.insert(head.id, doc);
                }
            }
            Ok(wanted.iter().map(|id| found.remove(id)).collect::<Vec<_>>())
        })
        .await;
        let whole: Vec<Option<Box<RawValue>>> = docs.into_iter().collect::<Result<_, _>>()?;
        // A job deleted between the two reads (retention) is left out of the page.
        whole.iter().flatten().filter_map(|d| view::listed(d, include)).collect()
    } else {
        listed.iter().filter_map(|l| view::listed(&l.doc, include)).collect()
    };
    respond(200, &JobList { jobs, next_cursor: next.map(|c| c.encode()) })
}

/// Merges shard pages into one of at most `limit`. `cut`: the highest id where a shard
/// stopped scanning (its filtered walk reached [`edgejobs_core::protocol::MAX_SCAN`] rows);
/// jobs below it are left for the next page, which starts there, so a page never skips a
/// job a shard did not look at yet.
pub fn cut_page(
    pages: Vec<Vec<Listed>>,
    limit: u32,
    cut: Option<JobId>,
) -> (Vec<Listed>, Option<edgejobs_core::wire::Cursor>) {
    let key = |l: &Listed| (l.id.created_ms(), l.id.as_str().to_owned());
    let Some(cut) = cut else {
        return merge_by(pages, limit, |l: &Listed| (l.id.created_ms(), l.id.as_str()));
    };
    let bound = (cut.created_ms(), cut.as_str().to_owned());
    let kept: Vec<Vec<Listed>> =
        pages.into_iter().map(|p| p.into_iter().filter(|l| key(l) >= bound).collect()).collect();
    let (listed, next) = merge_by(kept, limit, |l: &Listed| (l.id.created_ms(), l.id.as_str()));
    let next = next.or(Some(edgejobs_core::wire::Cursor { created_ms: cut.created_ms(), id: cut.as_str().to_owned() }));
    (listed, next)
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

/// Query pairs of a request, decoded.
pub fn query_pairs(req: &Request) -> std::result::Result<Vec<(String, String)>, ApiError> {
    let url = req.url().map_err(|_| ApiError::new(ErrorCode::InvalidField, "malformed URL"))?;
    Ok(url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
}

/// `GET /v1/jobs?state=&type=&tag=&from=&to=&id_prefix=&q=&limit=&cursor=&include=`
/// (`from`/`to`: when the job last changed; `q`: text in its payload or metadata).
pub async fn list(req: &Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let pairs = query_pairs(req)?;
    let q = parse_list_params(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &["state", "type", "tag", "from", "to", "id_prefix", "q", "limit", "cursor", "include", "tenant"],
    )?;
    fan_out_list(env, cfg, who, q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(shard: u16, ms: u64) -> Listed {
        let id = JobId::new(shard, ms, ms);
        let doc = serde_json::value::RawValue::from_string(format!("{{\"id\":\"{id}\"}}")).expect("json");
        Listed { id, doc }
    }

    #[test]
    fn a_page_stops_where_the_highest_bounded_scan_stopped() {
        // Shard 0 scanned down to ms 50 and found 90 and 60; shard 1 scanned everything and
        // found 80 and 10. The job at 10 is below shard 0's window: left for the next page,
        // which starts at shard 0's stop.
        let pages = vec![vec![listed(0, 90), listed(0, 60)], vec![listed(1, 80), listed(1, 10)]];
        let stop = JobId::new(0, 50, 1);
        let (page, next) = cut_page(pages, 10, Some(stop.clone()));
        let ms: Vec<u64> = page.iter().map(|l| l.id.created_ms()).collect();
        assert_eq!(ms, [90, 80, 60]);
        assert_eq!(next.map(|c| c.id), Some(stop.as_str().to_owned()));
        // Without a bounded scan, the same pages merge whole.
        let pages = vec![vec![listed(0, 90), listed(0, 60)], vec![listed(1, 80), listed(1, 10)]];
        let (page, next) = cut_page(pages, 10, None);
        assert_eq!((page.len(), next), (4, None));
        // A full page ends at its last job even when a scan stopped lower.
        let pages = vec![vec![listed(0, 90), listed(0, 60)], vec![listed(1, 80), listed(1, 70)]];
        let (page, next) = cut_page(pages, 2, Some(JobId::new(0, 50, 1)));
        assert_eq!(page.len(), 2);
        assert_eq!(next.map(|c| c.created_ms), Some(80));
    }
}
