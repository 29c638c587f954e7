//! Workflow events (#29): `POST /v1/events`. An event name's waits are indexed by one shard
//! (`protocol::event_home`); a send asks that shard which waits it matches, resumes them on
//! their runs' shards (one call per shard, `runs::deliver`), then tells the index they were
//! delivered; it also starts the jobs of the types declared with its name in `on_event`.
//! A send is a producer span `send <name>` (#32) under the request's `traceparent`, or the
//! root of a new trace.

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::otlp::{self, SpanKind, SpanRecord};
use edgejobs_core::protocol::{EventsOp, EventsReply, WaitKey, event_home};
use edgejobs_core::tenant::Tenant;
use edgejobs_core::trace::TraceContext;
use edgejobs_core::workflow::{MAX_EVENT_NAME_BYTES, MAX_STEP_RESULT_BYTES};
use edgejobs_core::{ApiError, ErrorCode};
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{self, Out, respond};
use crate::http;
use crate::shard;
use crate::telemetry;

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
    let span = event_span(cfg, telemetry::incoming(req).as_ref(), &name, id.as_deref(), &tenant);
    let mut span = telemetry::Scoped::new(&cfg.tracing, span);
    let sent = signal(env, cfg, who, Event { tenant, name, id, data }, span.context()).await;
    if let Err(e) = &sent {
        span.fail(&e.message);
    }
    sent
}

/// The span of an event's send (#32): a producer span `send <name>` under the caller's
/// context (or the root of a new trace), its destination the event's name and its message
/// id the event's `id` when it has one.
fn event_span(
    cfg: &EdgeConfig,
    parent: Option<&TraceContext>,
    name: &str,
    id: Option<&str>,
    tenant: &Tenant,
) -> SpanRecord {
    telemetry::start(&cfg.tracing, parent, otlp::messaging_span_name("send", name), SpanKind::Producer)
        .attrs(otlp::messaging_attrs(telemetry::SYSTEM, "send", name, id, None))
        .attr(otlp::keys::TENANT, tenant.as_str())
}

/// An event as the send read it.
struct Event {
    tenant: Tenant,
    name: String,
    id: Option<String>,
    data: Value,
}

/// The send itself, once the request is read: the jobs it starts (children of the send's
/// span `trace`) checked, the waits it matches resumed, those jobs created.
async fn signal(env: &Env, cfg: &EdgeConfig, who: &Principal, event: Event, trace: TraceContext) -> Out {
    let Event { tenant, name, id, data } = event;
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
        let mut start = jobs::prepare(cfg, spec, jobs::random_shard(cfg.shard_count), now)?;
        jobs::set_trace(&mut start, trace.clone());
        starts.push(start);
    }
    let home = event_home(&tenant, &name, &cfg.topology);
    let op = EventsOp::Signal { tenant: tenant.clone(), name: name.clone(), data, id: id.clone() };
    let signaled = match shard::call(env, home, op).await? {
        EventsReply::Signaled(s) => s,
        _ => return Err(ApiError::new(ErrorCode::Internal, "the event index answered another operation")),
    };
    let resumes: Vec<(WaitKey, Value)> = signaled.resumes.into_iter().map(|k| (k, signaled.data.clone())).collect();
    let resumed = crate::shard::waits::deliver(env, cfg, &tenant, home, resumes).await?;
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
