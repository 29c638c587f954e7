//! Schedules: recurring jobs defined through the API. The record, the validation of a
//! create or a patch, and what a wake-up of the schedule's alarm decides (pure: the shard
//! applies it in the same transaction that creates the runs' jobs).
//!
//! Rules (ARCHITECTURE.md has the reasons):
//! - A tick fires when the alarm comes within [`MISFIRE_GRACE_MS`] of it. Of the ticks that
//!   passed while nothing ran (downtime, a lost alarm), only the most recent can run: with
//!   `catch_up: none` only when it is within the grace, with `catch_up: last` always, once.
//!   The others are counted as missed.
//! - `overlap: skip` fires no run while the previous run's job is not final;
//!   `queue_one` keeps at most one tick waiting and fires it when the previous run ends.
//! - Each run is an ordinary job tagged `schedule:{name}` with the idempotency key
//!   `schedule:{name}:{tick}`, so a tick fired twice creates one job.
//! - Each run starts a new trace (#32), linked to the context the schedule was created or
//!   last changed with (its `traceparent`): one trace per run, not one trace that grows
//!   forever.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cron::{self, Cron};
use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::spec::{JobSpec, parse_spec_in};
use crate::time::{format_rfc3339, parse_rfc3339, rfc3339, rfc3339_opt};
use crate::trace::TraceContext;
use crate::types::Types;

/// Longest schedule name (its tag, `schedule:{name}`, must stay within a tag's 64 bytes).
pub const MAX_NAME_LEN: usize = 48;
/// Most schedules one shard holds (a deployment holds `SHARD_COUNT` times this).
pub const MAX_PER_SHARD: usize = 1000;
/// Runs kept in a schedule's history, newest first.
pub const RUNS_KEPT: usize = 20;
/// A tick fires when its alarm comes at most this late; older ticks are missed.
pub const MISFIRE_GRACE_MS: u64 = 60_000;
/// `/health` reports a schedule whose next tick is this far in the past.
pub const OVERDUE_MS: u64 = 2 * MISFIRE_GRACE_MS;
/// How often a waiting `queue_one` tick checks whether the previous run ended.
pub const WAIT_POLL_MS: u64 = 1000;
/// Upcoming run times shown by `GET /v1/schedules/{name}`.
pub const UPCOMING: usize = 5;
/// Most due ticks walked in one wake-up to find the latest (the rest are counted as this).
const MAX_WALK: usize = 2000;

/// What happens to a tick while the previous run's job is not final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Run anyway (the default).
    #[default]
    Allow,
    /// Skip the tick.
    Skip,
    /// Keep one tick waiting; run it when the previous run ends.
    QueueOne,
}

/// What a schedule does about ticks it missed (downtime, a paused period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Nothing (the default).
    #[default]
    None,
    /// Run the most recent missed tick once.
    Last,
}

/// Why a run was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Its tick came.
    Tick,
    /// A missed tick run by `catch_up: last`.
    CatchUp,
    /// `POST /v1/schedules/{name}/trigger`.
    Trigger,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Tick => "tick",
            RunKind::CatchUp => "catch_up",
            RunKind::Trigger => "trigger",
        }
    }
}

/// One run: its tick, when it was created, and its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    #[serde(with = "rfc3339")]
    pub tick: u64,
    #[serde(with = "rfc3339")]
    pub at: u64,
    pub job_id: JobId,
    pub kind: RunKind,
}

/// A schedule as stored (and, with its runs' states and upcoming times, as shown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    /// The job spec each run is made from (`payload.headers` values sealed).
    pub job: Value,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default)]
    pub paused: bool,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<u64>,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<u64>,
    #[serde(with = "rfc3339")]
    pub created_at: u64,
    #[serde(with = "rfc3339")]
    pub updated_at: u64,
    /// The next tick; `None` when no tick remains (past `ends_at`, or never).
    #[serde(default, with = "rfc3339_opt")]
    pub next_at: Option<u64>,
    /// The last tick handled (run, queued or skipped).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<u64>,
    /// A `queue_one` tick waiting for the previous run to end.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub waiting_tick: Option<u64>,
    /// When the schedule was paused (the catch-up after a resume starts there).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<u64>,
    /// The newest runs, newest first (at most [`RUNS_KEPT`]).
    #[serde(default)]
    pub runs: Vec<Run>,
    #[serde(default)]
    pub runs_total: u64,
    #[serde(default)]
    pub skips_total: u64,
    /// The W3C trace context of the request that created the schedule, or of the last
    /// change that sent one (#32): each run's new trace links to it. Schedules stored
    /// before #32 have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// The fields a create may carry; a patch may carry all but `name`.
const FIELDS: &[&str] = &["name", "cron", "timezone", "job", "overlap", "catch_up", "paused", "starts_at", "ends_at"];
/// Job spec fields a schedule sets itself.
const JOB_FIELDS_SET_BY_SCHEDULE: &[&str] = &["idempotency_key", "delay", "run_at"];

/// Checks a schedule name: 1 to [`MAX_NAME_LEN`] of `A-Z a-z 0-9 . _ -`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field("name", format!("must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9, '.', '_', '-'")))
    }
}

/// The error for a missing schedule.
pub fn missing(name: &str) -> ApiError {
    ApiError::new(ErrorCode::ScheduleNotFound, format!("no schedule named {name:?}"))
}

/// The tag of every run of schedule `name` (also the associated data its job spec's header
/// values are sealed with).
pub fn tag_of(name: &str) -> String {
    format!("schedule:{name}")
}

/// An error about a schedule's job spec, its field named under `job`: `job.payload.url`,
/// or, for a JSON pointer into the body (a schema violation), `/job/payload/width`.
pub fn under_job(mut e: ApiError) -> ApiError {
    if let Some(f) = &e.field {
        let (f, message) = match f.strip_prefix('/') {
            Some(_) => (format!("/job{f}"), format!("/job{}", e.message)),
            None => (format!("job.{f}"), format!("job.{}", e.message)),
        };
        e.message = message;
        e.field = Some(f);
    }
    e
}

fn time_field(obj: &Map<String, Value>, name: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| ApiError::field(name, "must be an RFC 3339 time such as \"2027-01-01T00:00:00Z\"")),
        Some(_) => Err(ApiError::field(name, "must be an RFC 3339 time string")),
    }
}

fn enum_field<T: serde::de::DeserializeOwned + Default>(
    obj: &Map<String, Value>,
    name: &str,
    allowed: &str,
) -> Result<T, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|_| ApiError::field(name, format!("must be one of {allowed}")))
        }
    }
}

/// A validated schedule definition: the record's user-set fields, and the job spec its
/// runs are made from.
#[derive(Debug, Clone)]
pub struct Definition {
    pub schedule: Schedule,
    pub spec: JobSpec,
}

impl Schedule {
    /// The parsed cron and time zone (validated when the schedule was stored).
    pub fn clock(&self) -> Result<(Cron, jiff::tz::TimeZone), ApiError> {
        let cron = Cron::parse(&self.cron).map_err(|e| ApiError::field("cron", e.to_string()))?;
        let tz = cron::time_zone(&self.timezone).map_err(|e| ApiError::field("timezone", e))?;
        Ok((cron, tz))
    }

    /// The first tick strictly after `after` within `starts_at`/`ends_at`.
    pub fn tick_after(&self, cron: &Cron, tz: &jiff::tz::TimeZone, after: u64) -> Option<u64> {
        let from = match self.starts_at {
            Some(s) if s > after => s.saturating_sub(1),
            _ => after,
        };
        let next = cron.next_after(tz, i64::try_from(from).ok()?)?;
        let next = u64::try_from(next).ok()?;
        match self.ends_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// The next [`UPCOMING`] ticks after `now`.
    pub fn upcoming(&self, now: u64) -> Vec<u64> {
        let Ok((cron, tz)) = self.clock() else { return Vec::new() };
        let mut out = Vec::new();
        let mut t = now;
        while out.len() < UPCOMING {
            match self.tick_after(&cron, &tz, t) {
                Some(n) => {
                    out.push(n);
                    t = n;
                }
                None => break,
            }
        }
        out
    }

    /// The definition as a create body (what a patch is merged into).
    pub fn definition(&self) -> Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "job": self.job,
            "overlap": self.overlap,
            "catch_up": self.catch_up,
            "paused": self.paused,
        });
        if let Some(s) = self.starts_at {
            v["starts_at"] = Value::String(format_rfc3339(s));
        }
        if let Some(e) = self.ends_at {
            v["ends_at"] = Value::String(format_rfc3339(e));
        }
        v
    }

    /// Whether its next tick is overdue at `now` (its alarm was lost, or its shard fails).
    pub fn overdue(&self, now: u64) -> bool {
        !self.paused && self.next_at.is_some_and(|n| now > n.saturating_add(OVERDUE_MS))
    }

    /// When the shard's alarm must wake for this schedule.
    pub fn wake_at(&self, now: u64) -> Option<u64> {
        if self.paused {
            return None;
        }
        let poll = self.waiting_tick.map(|_| now + WAIT_POLL_MS);
        match (self.next_at, poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The idempotency key of a run.
    pub fn run_key(&self, tick: u64) -> String {
        format!("schedule:{}:{}", self.name, format_rfc3339(tick))
    }

    /// The tenant the schedule's runs belong to (its job spec's `tenant`, else `default`);
    /// that tenant's `jobs` keys may read the schedule. A stored name that no longer parses
    /// reads as nobody's but an admin's.
    pub fn tenant(&self) -> Option<crate::tenant::Tenant> {
        match self.job.get("tenant") {
            None | Some(Value::Null) => Some(crate::tenant::Tenant::default()),
            Some(Value::String(t)) => crate::tenant::Tenant::parse(t).ok(),
            Some(_) => None,
        }
    }

    /// The tag every run carries.
    pub fn tag(&self) -> String {
        tag_of(&self.name)
    }

    /// The enqueue body of the run for `tick`: the schedule's job spec with its key and tag.
    pub fn run_body(&self, tick: u64) -> Value {
        let mut body = self.job.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("idempotency_key".into(), Value::String(self.run_key(tick)));
            let mut tags: Vec<Value> = obj.get("tags").and_then(Value::as_array).cloned().unwrap_or_default();
            tags.push(Value::String(self.tag()));
            obj.insert("tags".into(), Value::Array(tags));
        }
        body
    }

    /// Records a run (newest first, [`RUNS_KEPT`] kept).
    pub fn record_run(&mut self, run: Run) {
        self.runs.insert(0, run);
        self.runs.truncate(RUNS_KEPT);
        self.runs_total += 1;
    }

    /// The job of the newest run, if any.
    pub fn last_job(&self) -> Option<&JobId> {
        self.runs.first().map(|r| &r.job_id)
    }
}

/// The body as an object of known fields.
fn known_fields(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    match obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::field(unknown, "unknown field")),
        None => Ok(obj),
    }
}

/// Validates a create body at `now`.
pub fn parse_create(body: &Value, now: u64, types: &Types) -> Result<Definition, ApiError> {
    let obj = known_fields(body)?;
    let name = match obj.get("name") {
        Some(Value::String(s)) => s.clone(),
        None => return Err(ApiError::field("name", "is required")),
        Some(_) => return Err(ApiError::field("name", "must be a string")),
    };
    check_name(&name)?;
    let cron_text = match obj.get("cron") {
        Some(Value::String(s)) => s.trim().to_owned(),
        None => return Err(ApiError::field("cron", "is required")),
        Some(_) => return Err(ApiError::field("cron", "must be a string such as \"*/5 * * * *\"")),
    };
    let cron = Cron::parse(&cron_text).map_err(|e| ApiError::field("cron", e.to_string()))?;
    let timezone = match obj.get("timezone") {
        None | Some(Value::Null) => "UTC".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("timezone", "must be an IANA time zone name")),
    };
    let tz = cron::time_zone(&timezone).map_err(|e| ApiError::field("timezone", e))?;
    let job = obj.get("job").cloned().ok_or_else(|| ApiError::field("job", "is required"))?;
    let spec = parse_job(&job, now, types)?;
    let overlap = enum_field(obj, "overlap", "\"allow\", \"skip\", \"queue_one\"")?;
    let catch_up = enum_field(obj, "catch_up", "\"none\", \"last\"")?;
    let paused = match obj.get("paused") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("paused", "must be true or false")),
    };
    let starts_at = time_field(obj, "starts_at")?;
    let ends_at = time_field(obj, "ends_at")?;
    if let (Some(s), Some(e)) = (starts_at, ends_at)
        && e <= s
    {
        return Err(ApiError::field("ends_at", "must be after starts_at"));
    }
    if ends_at.is_some_and(|e| e <= now) {
        return Err(ApiError::field("ends_at", "is in the past"));
    }
    let mut schedule = Schedule {
        name,
        cron: cron_text,
        timezone,
        job,
        overlap,
        catch_up,
        paused,
        starts_at,
        ends_at,
        created_at: now,
        updated_at: now,
        next_at: None,
        last_tick: None,
        waiting_tick: None,
        paused_at: paused.then_some(now),
        runs: Vec::new(),
        runs_total: 0,
        skips_total: 0,
        trace: None,
    };
    schedule.next_at = schedule.tick_after(&cron, &tz, now);
    if schedule.next_at.is_none() {
        let why = if ends_at.is_some() { " before ends_at" } else { "" };
        return Err(ApiError::field(
            "cron",
            format!("{:?} has no run time{why} in the next {} years", schedule.cron, cron::HORIZON_YEARS),
        ));
    }
    Ok(Definition { schedule, spec })
}

/// Validates a schedule's job spec: an enqueue body without the fields the schedule sets.
pub fn parse_job(job: &Value, now: u64, types: &Types) -> Result<JobSpec, ApiError> {
    let Some(obj) = job.as_object() else {
        return Err(ApiError::field("job", "must be a job spec object such as {\"type\": \"noop\"}"));
    };
    if let Some(f) = JOB_FIELDS_SET_BY_SCHEDULE.iter().find(|f| obj.contains_key(**f)) {
        return Err(ApiError::field(&format!("job.{f}"), "is set by the schedule for each run"));
    }
    if obj.get("tags").and_then(Value::as_array).is_some_and(|t| t.len() >= crate::spec::MAX_TAGS) {
        return Err(ApiError::field(
            "job.tags",
            format!("at most {} tags (each run adds schedule:{{name}})", crate::spec::MAX_TAGS - 1),
        ));
    }
    let spec = parse_spec_in(job, now, types).map_err(under_job)?;
    // Its flow keys resolve now (a type's pointer that names nothing is refused here, not at
    // every run); the run resolves them again with its own tenant and webhook settings.
    crate::spec::flow_of(&spec, None).map_err(under_job)?;
    Ok(spec)
}

/// The shard a schedule named `name` with job `spec` lives on: its runs' flow key's home
/// when they have one, so a run counts with the key's other jobs (one shard decides a key),
/// else its name's. Keys that do not resolve (refused when the schedule is stored) leave
/// it at its name's home.
pub fn home(name: &str, spec: &JobSpec, webhook_concurrency: Option<u32>, topology: &crate::topology::Topology) -> u16 {
    let flow = crate::spec::flow_of(spec, webhook_concurrency).ok().flatten();
    let tenant = spec.tenant.clone().unwrap_or_default();
    crate::flow::home(flow.as_ref(), &tenant, topology).unwrap_or_else(|| topology.schedule_home(name))
}

/// The home of a stored schedule (a restore places it there): [`home`] of its job as
/// stored, or its name's when the job no longer validates (a type removed since).
pub fn stored_home(
    s: &Schedule,
    now: u64,
    types: &Types,
    webhook_concurrency: Option<u32>,
    topology: &crate::topology::Topology,
) -> u16 {
    match parse_spec_in(&s.job, now, types) {
        Ok(spec) => home(&s.name, &spec, webhook_concurrency, topology),
        Err(_) => topology.schedule_home(&s.name),
    }
}

/// Applies a patch body to a schedule at `now`: the merged definition is validated whole;
/// the history stays. A change of cron, time zone or window recomputes the next tick.
pub fn parse_patch(current: &Schedule, body: &Value, now: u64, types: &Types) -> Result<Definition, ApiError> {
    let (body, trace) = take_trace(body)?;
    let obj = known_fields(&body)?;
    if obj.get("name").is_some_and(|n| n.as_str() != Some(current.name.as_str())) {
        return Err(ApiError::field("name", "cannot be changed (create a new schedule and delete this one)"));
    }
    let mut merged = current.definition();
    for (k, v) in obj {
        merged[k.as_str()] = v.clone();
    }
    let mut def = parse_create(&merged, now, types)?;
    let s = &mut def.schedule;
    s.created_at = current.created_at;
    s.last_tick = current.last_tick;
    s.waiting_tick = current.waiting_tick;
    s.runs = current.runs.clone();
    s.runs_total = current.runs_total;
    s.skips_total = current.skips_total;
    s.trace = trace.or_else(|| current.trace.clone());
    s.paused_at = match (current.paused, s.paused) {
        (false, true) => Some(now),
        (true, true) => current.paused_at,
        _ => None,
    };
    if !current.paused && s.paused {
        s.waiting_tick = None;
    }
    if current.paused && !s.paused {
        resume_next(s, now);
    }
    Ok(def)
}

/// The key of a patch body that carries the context of the request's `traceparent` (#32).
/// Only the edge puts it there ([`with_trace`]), after refusing a caller's own `trace`
/// field as unknown: the header is the one way to set it.
pub const PATCH_TRACE: &str = "trace";

/// Puts `trace` into a patch body (an object), so the patch replaces the schedule's context.
pub fn with_trace(body: &mut Value, trace: &TraceContext) {
    if let (Some(obj), Ok(v)) = (body.as_object_mut(), serde_json::to_value(trace)) {
        obj.insert(PATCH_TRACE.into(), v);
    }
}

/// A patch body without its [`PATCH_TRACE`], and the context it carried (`None`: the patch
/// keeps the schedule's).
fn take_trace(body: &Value) -> Result<(Value, Option<TraceContext>), ApiError> {
    let mut body = body.clone();
    let trace = match body.as_object_mut().and_then(|o| o.remove(PATCH_TRACE)) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v)
                .map_err(|_| ApiError::field(PATCH_TRACE, "must be {\"traceparent\": ..., \"tracestate\"?: ...}"))?,
        ),
    };
    Ok((body, trace))
}

/// Pauses: no tick fires until a resume; a waiting tick is dropped.
pub fn pause(s: &mut Schedule, now: u64) {
    if !s.paused {
        s.paused = true;
        s.paused_at = Some(now);
        s.waiting_tick = None;
        s.updated_at = now;
    }
}

/// Resumes: the next tick is the first after now, or, with `catch_up: last`, the first
/// after the pause began (so the wake-up runs the most recent missed tick once).
pub fn resume(s: &mut Schedule, now: u64) {
    if s.paused {
        s.paused = false;
        resume_next(s, now);
        s.paused_at = None;
        s.updated_at = now;
    }
}

fn resume_next(s: &mut Schedule, now: u64) {
    let Ok((cron, tz)) = s.clock() else { return };
    let from = match (s.catch_up, s.paused_at) {
        (CatchUp::Last, Some(p)) => p.max(s.last_tick.unwrap_or(0)),
        _ => now,
    };
    s.next_at = s.tick_after(&cron, &tz, from);
}

/// What one wake-up decided for a schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wake {
    /// Runs to create: (tick, kind).
    pub fire: Vec<(u64, RunKind)>,
    /// Ticks not run, with the reason (`overlap` or `missed`).
    pub skipped: Vec<(&'static str, u64)>,
    /// A tick now waiting for the previous run (`queue_one`).
    pub queued: bool,
}

/// Decides a wake-up of `s` at `now` and updates its state (the caller creates the runs and
/// records them). `previous_running`: whether the newest run's job is not final.
pub fn wake(s: &mut Schedule, now: u64, previous_running: bool) -> Wake {
    let mut out = Wake::default();
    if s.paused {
        return out;
    }
    let Ok((cron, tz)) = s.clock() else {
        // Stored invalid (it was valid when written): it must not keep the alarm busy.
        s.next_at = None;
        s.waiting_tick = None;
        return out;
    };
    let mut running = previous_running;
    if let Some(w) = s.waiting_tick
        && !running
    {
        out.fire.push((w, RunKind::Tick));
        s.waiting_tick = None;
        running = true;
    }
    let Some(first) = s.next_at.filter(|n| *n <= now) else { return out };
    let (latest, earlier) = latest_due(s, &cron, &tz, first, now);
    let late = now - latest;
    if earlier > 0 {
        out.skipped.push(("missed", earlier));
    }
    let kind = if late <= MISFIRE_GRACE_MS {
        Some(RunKind::Tick)
    } else if s.catch_up == CatchUp::Last {
        Some(RunKind::CatchUp)
    } else {
        out.skipped.push(("missed", 1));
        None
    };
    if let Some(kind) = kind {
        match s.overlap {
            Overlap::Allow => out.fire.push((latest, kind)),
            _ if !running => out.fire.push((latest, kind)),
            Overlap::QueueOne if s.waiting_tick.is_none() => {
                s.waiting_tick = Some(latest);
                out.queued = true;
            }
            _ => out.skipped.push(("overlap", 1)),
        }
    }
    s.last_tick = Some(latest);
    s.next_at = s.tick_after(&cron, &tz, latest.max(now));
    s.skips_total += out.skipped.iter().map(|(_, n)| n).sum::<u64>();
    out
}

/// The latest tick at or before `now`, starting from the due tick `first`, and how many
/// due ticks came before it (walked up to [`MAX_WALK`]; past that the latest is found by
/// searching back from `now` in growing windows).
fn latest_due(s: &Schedule, cron: &Cron, tz: &jiff::tz::TimeZone, first: u64, now: u64) -> (u64, u64) {
    let mut latest = first;
    let mut walked = 0u64;
    for _ in 0..MAX_WALK {
        match s.tick_after(cron, tz, latest) {
            Some(n) if n <= now => {
                latest = n;
                walked += 1;
            }
            _ => return (latest, walked),
        }
    }
    for window in [60_000u64, 3_600_000, 86_400_000, 31 * 86_400_000, 366 * 86_400_000] {
        let Some(mut t) = s.tick_after(cron, tz, now.saturating_sub(window)) else { continue };
        if t > now {
            continue;
        }
        for _ in 0..MAX_WALK * 50 {
            match s.tick_after(cron, tz, t) {
                Some(n) if n <= now => t = n,
                _ => break,
            }
        }
        return (t.max(latest), walked);
    }
    (latest, walked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> u64 {
        parse_rfc3339(s).unwrap_or(0)
    }

    #[test]
    fn a_schedule_lives_on_its_runs_flow_key_shard_else_its_names() {
        let topology = crate::topology::Topology::single(16);
        let types = Types::builtins();
        let now = t("2026-12-06T10:00:00Z");
        let def = |name: &str, job: Value| {
            let body = json!({ "name": name, "cron": "0 * * * *", "job": job });
            parse_create(&body, now, &types).unwrap_or_else(|e| panic!("{e:?}"))
        };
        // Names whose shard is not the key's (for the default and for acme).
        let key_home = |tenant: &str| {
            topology.schedule_home(&crate::tenant::Tenant::parse(tenant).expect("a tenant").scope_key("k"))
        };
        let name = (0..)
            .map(|i| format!("s{i}"))
            .find(|n| topology.schedule_home(n) != key_home("default"))
            .expect("a name off the key's shard");
        let keyed = def(&name, json!({ "type": "noop", "concurrency": { "key": "k", "limit": 1 } }));
        assert_eq!(home(&name, &keyed.spec, None, &topology), key_home("default"));
        assert_eq!(stored_home(&keyed.schedule, now, &types, None, &topology), key_home("default"));
        let theirs =
            def(&name, json!({ "type": "noop", "tenant": "acme", "rate": { "key": "k", "limit": 1, "period": "1s" } }));
        assert_eq!(home(&name, &theirs.spec, None, &topology), key_home("acme"), "a key is its tenant's");
        let plain = def(&name, json!({ "type": "noop", "priority": 9 }));
        assert_eq!(home(&name, &plain.spec, None, &topology), topology.schedule_home(&name));
        // A stored job that no longer validates (its type is gone) stays at its name's shard.
        let mut gone = keyed.schedule.clone();
        gone.job["type"] = json!("removed.type");
        assert_eq!(stored_home(&gone, now, &types, None, &topology), topology.schedule_home(&name));
    }

    fn make(body: Value, now: &str) -> Schedule {
        match parse_create(&body, t(now), &Types::builtins()) {
            Ok(d) => d.schedule,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn job_id(n: u64) -> JobId {
        JobId::new(0, 1_800_000_000_000 + n, n)
    }

    #[test]
    fn create_validates_every_field() {
        let ok = json!({ "name": "nightly", "cron": "0 3 * * *", "job": { "type": "noop" } });
        let table: Vec<(Value, &str)> = vec![
            (json!({ "cron": "* * * * *", "job": { "type": "noop" } }), "name"),
            (json!({ "name": "a b", "cron": "* * * * *", "job": { "type": "noop" } }), "name"),
            (json!({ "name": "x".repeat(49), "cron": "* * * * *", "job": { "type": "noop" } }), "name"),
            (json!({ "name": "a", "job": { "type": "noop" } }), "cron"),
            (json!({ "name": "a", "cron": "61 * * * *", "job": { "type": "noop" } }), "cron"),
            (json!({ "name": "a", "cron": "0 0 30 2 *", "job": { "type": "noop" } }), "cron"),
            (
                json!({ "name": "a", "cron": "* * * * *", "timezone": "Mars/Base", "job": { "type": "noop" } }),
                "timezone",
            ),
            (json!({ "name": "a", "cron": "* * * * *" }), "job"),
            (json!({ "name": "a", "cron": "* * * * *", "job": 3 }), "job"),
            (json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop", "delay": "5s" } }), "job.delay"),
            (
                json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop", "idempotency_key": "k" } }),
                "job.idempotency_key",
            ),
            (
                json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop", "max_attempts": 0 } }),
                "job.max_attempts",
            ),
            (json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop" }, "overlap": "never" }), "overlap"),
            (json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop" }, "catch_up": "all" }), "catch_up"),
            (json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop" }, "paused": "yes" }), "paused"),
            (
                json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop" }, "ends_at": "2020-01-01T00:00:00Z" }),
                "ends_at",
            ),
            (json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop" }, "starts_at": "soon" }), "starts_at"),
            (json!({ "name": "a", "cron": "* * * * *", "job": { "type": "noop" }, "extra": 1 }), "extra"),
        ];
        for (body, field) in table {
            match parse_create(&body, t("2026-12-01T00:00:00Z"), &Types::builtins()) {
                Err(e) => assert_eq!(e.field.as_deref(), Some(field), "{body}: {e:?}"),
                Ok(_) => panic!("accepted {body}"),
            }
        }
        let s = make(ok, "2026-12-01T10:00:00Z");
        assert_eq!(s.next_at, Some(t("2026-12-02T03:00:00Z")));
        assert_eq!(s.timezone, "UTC");
        assert!(
            matches!(parse_create(&json!({ "name": "a", "cron": "* * * * *", "job": { "type": "nope" } }), 0, &Types::builtins()),
            Err(e) if e.code == ErrorCode::UnknownType)
        );
    }

    #[test]
    fn job_errors_are_named_under_job_and_pointers_stay_pointers() {
        let types = Types::parse(
            r#"{"img": {"lane": "native", "schema": {"properties": {"w": {"type": "integer"}}}}}"#,
            &crate::outbound::Allow::default(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let bad = json!({ "name": "n", "cron": "* * * * *", "job": { "type": "img", "payload": { "w": "x" } } });
        let e = parse_create(&bad, 0, &types).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.field.as_deref(), Some("/job/payload/w"));
        assert!(e.message.starts_with("/job/payload/w: "), "{}", e.message);
        let bad =
            json!({ "name": "n", "cron": "* * * * *", "job": { "type": "webhook", "payload": { "url": "nope" } } });
        let e = parse_create(&bad, 0, &types).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.field.as_deref(), Some("job.payload.url"));
    }

    #[test]
    fn a_run_carries_its_key_and_tag() {
        let s = make(
            json!({ "name": "n", "cron": "* * * * *", "job": { "type": "noop", "tags": ["a"] } }),
            "2026-12-01T00:00:00Z",
        );
        let body = s.run_body(t("2026-12-01T00:01:00Z"));
        assert_eq!(body["idempotency_key"], "schedule:n:2026-12-01T00:01:00.000Z");
        assert_eq!(body["tags"], json!(["a", "schedule:n"]));
        assert!(crate::spec::parse_spec(&body, 0).is_ok());
    }

    #[test]
    fn wake_fires_the_due_tick_and_moves_on() {
        let mut s =
            make(json!({ "name": "n", "cron": "* * * * * *", "job": { "type": "noop" } }), "2026-12-01T00:00:00Z");
        assert_eq!(s.next_at, Some(t("2026-12-01T00:00:01Z")));
        let w = wake(&mut s, t("2026-12-01T00:00:01.050Z"), false);
        assert_eq!(w.fire, vec![(t("2026-12-01T00:00:01Z"), RunKind::Tick)]);
        assert_eq!(s.next_at, Some(t("2026-12-01T00:00:02Z")));
        // Not due yet: nothing.
        assert_eq!(wake(&mut s, t("2026-12-01T00:00:01.500Z"), false), Wake::default());
    }

    #[test]
    fn downtime_runs_at_most_the_latest_tick() {
        let body = json!({ "name": "n", "cron": "*/5 * * * *", "job": { "type": "noop" } });
        // Down from 00:01 to 00:32:10: ticks 00:05..00:30 passed; 00:30 is within the grace.
        let mut s = make(body.clone(), "2026-12-01T00:01:00Z");
        let w = wake(&mut s, t("2026-12-01T00:30:40Z"), false);
        assert_eq!(w.fire, vec![(t("2026-12-01T00:30:00Z"), RunKind::Tick)]);
        assert_eq!(w.skipped, vec![("missed", 5)]);
        assert_eq!(s.next_at, Some(t("2026-12-01T00:35:00Z")));
        // Past the grace: none runs with catch_up none...
        let mut s = make(body.clone(), "2026-12-01T00:01:00Z");
        let w = wake(&mut s, t("2026-12-01T00:33:00Z"), false);
        assert!(w.fire.is_empty());
        assert_eq!(s.skips_total, 6);
        // ...and the latest once with catch_up last.
        let mut body = body;
        body["catch_up"] = json!("last");
        let mut s = make(body, "2026-12-01T00:01:00Z");
        let w = wake(&mut s, t("2026-12-01T00:33:00Z"), false);
        assert_eq!(w.fire, vec![(t("2026-12-01T00:30:00Z"), RunKind::CatchUp)]);
        assert_eq!(s.next_at, Some(t("2026-12-01T00:35:00Z")));
    }

    #[test]
    fn a_long_downtime_of_a_per_second_schedule_is_bounded() {
        let body = json!({ "name": "n", "cron": "* * * * * *", "catch_up": "last", "job": { "type": "noop" } });
        let mut s = make(body, "2026-12-01T00:00:00Z");
        let w = wake(&mut s, t("2026-12-03T00:00:00.500Z"), false);
        assert_eq!(w.fire, vec![(t("2026-12-03T00:00:00Z"), RunKind::Tick)]);
        assert_eq!(s.next_at, Some(t("2026-12-03T00:00:01Z")));
    }

    #[test]
    fn overlap_skip_and_queue_one() {
        let at = |s: &str| t(s);
        let mut s = make(
            json!({ "name": "n", "cron": "* * * * * *", "overlap": "skip", "job": { "type": "noop" } }),
            "2026-12-01T00:00:00Z",
        );
        let w = wake(&mut s, at("2026-12-01T00:00:01Z"), true);
        assert!(w.fire.is_empty());
        assert_eq!(w.skipped, vec![("overlap", 1)]);
        let w = wake(&mut s, at("2026-12-01T00:00:02Z"), false);
        assert_eq!(w.fire.len(), 1);

        let mut s = make(
            json!({ "name": "n", "cron": "* * * * * *", "overlap": "queue_one", "job": { "type": "noop" } }),
            "2026-12-01T00:00:00Z",
        );
        let w = wake(&mut s, at("2026-12-01T00:00:01Z"), true);
        assert!(w.queued && w.fire.is_empty());
        assert_eq!(s.waiting_tick, Some(at("2026-12-01T00:00:01Z")));
        assert_eq!(s.wake_at(at("2026-12-01T00:00:01Z")), Some(at("2026-12-01T00:00:02Z")));
        let w = wake(&mut s, at("2026-12-01T00:00:02Z"), true);
        assert_eq!(w.skipped, vec![("overlap", 1)]);
        // The previous run ended: the waiting tick runs, and the due one waits behind it.
        let w = wake(&mut s, at("2026-12-01T00:00:03Z"), false);
        assert_eq!(w.fire, vec![(at("2026-12-01T00:00:01Z"), RunKind::Tick)]);
        assert!(w.queued);
        assert_eq!(s.waiting_tick, Some(at("2026-12-01T00:00:03Z")));
    }

    #[test]
    fn pause_and_resume() {
        let body = json!({ "name": "n", "cron": "*/5 * * * *", "job": { "type": "noop" } });
        let mut s = make(body.clone(), "2026-12-01T00:01:00Z");
        pause(&mut s, t("2026-12-01T00:02:00Z"));
        assert_eq!(s.wake_at(t("2026-12-01T00:02:00Z")), None);
        assert_eq!(wake(&mut s, t("2026-12-01T00:05:00Z"), false), Wake::default());
        resume(&mut s, t("2026-12-01T00:21:00Z"));
        assert_eq!(s.next_at, Some(t("2026-12-01T00:25:00Z")));
        // catch_up last: the resume runs the latest tick missed while paused.
        let mut body = body;
        body["catch_up"] = json!("last");
        let mut s = make(body, "2026-12-01T00:01:00Z");
        pause(&mut s, t("2026-12-01T00:02:00Z"));
        resume(&mut s, t("2026-12-01T00:21:00Z"));
        assert_eq!(s.next_at, Some(t("2026-12-01T00:05:00Z")));
        let w = wake(&mut s, t("2026-12-01T00:21:00Z"), false);
        assert_eq!(w.fire, vec![(t("2026-12-01T00:20:00Z"), RunKind::Tick)]);
    }

    #[test]
    fn patch_keeps_history_and_refuses_renames() {
        let mut s =
            make(json!({ "name": "n", "cron": "*/5 * * * *", "job": { "type": "noop" } }), "2026-12-01T00:01:00Z");
        s.record_run(Run { tick: t("2026-12-01T00:05:00Z"), at: 0, job_id: job_id(1), kind: RunKind::Tick });
        let d = parse_patch(
            &s,
            &json!({ "cron": "0 * * * *", "timezone": "Europe/Berlin" }),
            t("2026-12-01T00:06:00Z"),
            &Types::builtins(),
        );
        let p = d.map(|d| d.schedule).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.next_at, Some(t("2026-12-01T01:00:00Z")));
        assert_eq!(p.runs.len(), 1);
        assert_eq!(p.created_at, s.created_at);
        assert!(
            parse_patch(&s, &json!({ "name": "other" }), 0, &Types::builtins())
                .is_err_and(|e| e.field.as_deref() == Some("name"))
        );
        assert!(
            parse_patch(&s, &json!({ "cron": "x" }), 0, &Types::builtins())
                .is_err_and(|e| e.field.as_deref() == Some("cron"))
        );
    }

    #[test]
    fn overdue_when_the_next_tick_is_long_past_and_not_paused() {
        let mut s =
            make(json!({ "name": "n", "cron": "*/5 * * * *", "job": { "type": "noop" } }), "2026-12-01T00:01:00Z");
        assert!(!s.overdue(t("2026-12-01T00:06:59Z")));
        assert!(s.overdue(t("2026-12-01T00:07:01Z")));
        pause(&mut s, t("2026-12-01T00:07:01Z"));
        assert!(!s.overdue(t("2026-12-01T01:00:00Z")));
    }

    #[test]
    fn a_schedule_stored_invalid_stops_instead_of_waking_forever() {
        let mut s =
            make(json!({ "name": "n", "cron": "* * * * * *", "job": { "type": "noop" } }), "2026-12-01T00:00:00Z");
        s.timezone = "Nowhere/Land".into();
        let now = t("2026-12-01T00:00:05Z");
        assert_eq!(wake(&mut s, now, false), Wake::default());
        assert_eq!(s.wake_at(now), None);
    }

    #[test]
    fn window_bounds_the_ticks() {
        let s = make(
            json!({ "name": "n", "cron": "0 * * * *", "job": { "type": "noop" },
                    "starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-02T02:00:00Z" }),
            "2026-12-01T00:00:00Z",
        );
        assert_eq!(s.next_at, Some(t("2026-12-02T00:00:00Z")));
        assert_eq!(s.upcoming(t("2026-12-01T00:00:00Z")).len(), 3);
    }

    #[test]
    fn a_schedule_with_runs_round_trips_as_stored() {
        let mut s = make(
            json!({ "name": "n", "cron": "* * * * *",
                    "job": { "type": "webhook", "payload": { "url": "https://example.com/", "headers": { "authorization": "Bearer x" } } } }),
            "2026-12-01T00:00:00Z",
        );
        s.record_run(Run { tick: 1000, at: 1000, job_id: job_id(1), kind: RunKind::Tick });
        let back: Schedule =
            serde_json::from_value(serde_json::to_value(&s).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, s);
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_schedule_stored_before_tracing_still_loads_and_keeps_no_trace() {
        let s = make(json!({ "name": "n", "cron": "0 * * * *", "job": { "type": "noop" } }), "2026-12-01T00:00:00Z");
        let mut stored = serde_json::to_value(&s).unwrap_or_default();
        assert!(stored.get("trace").is_none(), "no context, no field: {stored}");
        stored.as_object_mut().map(|o| o.remove("trace"));
        let back: Schedule = serde_json::from_value(stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.trace, None);
        // With a context, it is stored as the two header values and read back.
        let mut traced = s;
        traced.trace = TraceContext::parse(TP, Some("v=1"));
        let v = serde_json::to_value(&traced).unwrap_or_default();
        assert_eq!(v["trace"], json!({ "traceparent": TP, "tracestate": "v=1" }));
        let back: Schedule = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, traced);
    }

    #[test]
    fn a_patch_keeps_the_context_or_replaces_it_with_the_requests() {
        let mut s =
            make(json!({ "name": "n", "cron": "0 * * * *", "job": { "type": "noop" } }), "2026-12-01T00:00:00Z");
        s.trace = TraceContext::parse(TP, None);
        let patch = |body: &Value| {
            parse_patch(&s, body, t("2026-12-01T00:01:00Z"), &Types::builtins())
                .map(|d| d.schedule.trace)
                .unwrap_or_else(|e| panic!("{e:?}"))
        };
        assert_eq!(patch(&json!({ "paused": true })), s.trace, "a patch without a traceparent keeps it");
        let other = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", Some("a=b"))
            .expect("a valid context");
        let mut body = json!({ "paused": true });
        with_trace(&mut body, &other);
        assert_eq!(patch(&body), Some(other), "one with a traceparent replaces it");
        let bad = json!({ "trace": { "traceparent": "00-x" } });
        assert!(parse_patch(&s, &bad, 0, &Types::builtins()).is_err_and(|e| e.field.as_deref() == Some(PATCH_TRACE)));
        // A create never takes one from the body: the edge sets it from the header.
        let create =
            json!({ "name": "n", "cron": "0 * * * *", "job": { "type": "noop" }, "trace": { "traceparent": TP } });
        assert!(parse_create(&create, 0, &Types::builtins()).is_err_and(|e| e.field.as_deref() == Some("trace")));
    }
}
