//! The schedules a shard holds, and their runs. A schedule lives in the shard of its runs'
//! flow key (`schedule::home`), else in the shard its name hashes to; the name's shard then
//! keeps a claim (`schedule_names`) that sends the name's operations there. The shard's
//! alarm wakes at its next tick, and the runs' jobs are created in
//! this shard, in the same transaction that moves the schedule on: a tick is handled once,
//! whatever restarts in between, and its idempotency key (`schedule:{name}:{tick}`) makes a
//! second fire of the same tick answer with the first job.
//!
//! Each run starts a new trace (#32) whose root names the schedule's context as a link; the
//! alarm returns the runs it created ([`RunStarted`]) so the edge records their root spans.

use edgejobs_core::stats::Metric;
use std::collections::BTreeMap;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::otlp::{self, SpanKind, SpanRecord};
use edgejobs_core::plan::{self, Effects};
use edgejobs_core::protocol::{ScheduleOp, ScheduleReply, ScheduleShown};
use edgejobs_core::sampler::Sampler;
use edgejobs_core::schedule::{self, Run, RunKind, Schedule};
use edgejobs_core::seal;
use edgejobs_core::spec::parse_spec_in;
use edgejobs_core::stats::Delta;
use edgejobs_core::trace::{SpanId, TraceContext, TraceId};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId, JobState};
use serde_json::{Value, json};

type Answer = (ScheduleReply, Effects, bool);

use crate::sql::{Cols, Sql, StoreError, Value as Sv, int, text};
use crate::store;
use crate::{Failure, Host, Level, Outcome, Shard};

/// Schedules handled per alarm wake-up (the rest wake the alarm again at once).
pub const WAKE_BATCH: u64 = 100;
/// Largest page of `GET /v1/schedules`.
pub const MAX_LIST: u32 = 200;

fn load_where(db: &impl Sql, cond: &str, binds: &[Sv]) -> Result<Vec<Schedule>, StoreError> {
    let rows = db.rows(&format!("SELECT doc FROM schedules WHERE {cond}"), binds)?;
    rows.into_iter().map(|r| store::parse(&Cols::new(r).text()?)).collect()
}

fn load(db: &impl Sql, name: &str) -> Result<Option<Schedule>, StoreError> {
    Ok(load_where(db, "name = ?", &[text(name)])?.pop())
}

fn save(db: &impl Sql, s: &Schedule, now: u64) -> Result<(), StoreError> {
    let wake = s.wake_at(now).map_or(Sv::Null, int);
    db.rows(
        "INSERT OR REPLACE INTO schedules (name, wake_at, doc) VALUES (?, ?, ?)",
        &[text(s.name.clone()), wake, text(store::to_json(s)?)],
    )?;
    Ok(())
}

fn put_claim(db: &impl Sql, name: &str, home: u16) -> Result<(), StoreError> {
    db.rows("INSERT OR REPLACE INTO schedule_names (name, home) VALUES (?, ?)", &[text(name), int(home as u64)])?;
    Ok(())
}

/// The shard a claim kept here says schedule `name` lives on.
fn claim(db: &impl Sql, name: &str) -> Result<Option<u16>, StoreError> {
    match db.rows("SELECT home FROM schedule_names WHERE name = ?", &[text(name)])?.into_iter().next() {
        Some(r) => Ok(Some(Cols::new(r).u64()? as u16)),
        None => Ok(None),
    }
}

fn taken(name: &str) -> Failure {
    Failure::Refused(ApiError::new(
        ErrorCode::ScheduleExists,
        format!("a schedule named {name:?} exists; change it with PATCH or delete it first"),
    ))
}

fn existing(db: &impl Sql, name: &str) -> Outcome<Schedule> {
    load(db, name)?.ok_or_else(|| Failure::Refused(schedule::missing(name)))
}

/// A schedule with the states of its runs' jobs (`None`: gone), overdue or not, and its
/// next ticks when asked.
fn shown(s: Schedule, states: &BTreeMap<JobId, JobState>, now: u64, upcoming: bool) -> ScheduleShown {
    let run_states = s.runs.iter().map(|r| states.get(&r.job_id).copied()).collect();
    ScheduleShown { overdue: s.overdue(now), upcoming: upcoming.then(|| s.upcoming(now)), run_states, schedule: s }
}

/// A run that was created (#32): what the edge needs to record the root span of the run's
/// new trace (the shard itself records no span: it does no I/O and exports nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct RunStarted {
    pub schedule: String,
    pub job_id: JobId,
    pub job_type: String,
    /// The run's root: the span its job names as its parent (its deliveries' parent).
    pub trace: TraceContext,
    /// The schedule's context, which the root links to (none for a schedule stored
    /// without one).
    pub link: Option<TraceContext>,
}

impl RunStarted {
    /// The run of schedule `s` whose job is `job`; `None` for a job without a trace (one
    /// made before #32, answered again by its tick's key).
    pub fn of(s: &Schedule, job: &Job) -> Option<RunStarted> {
        Some(RunStarted {
            schedule: s.name.clone(),
            job_id: job.id.clone(),
            job_type: job.job_type.clone(),
            trace: job.trace.clone()?,
            link: s.trace.clone(),
        })
    }

    /// The root span of the run's trace at `now_ns`: `send <type>`, a producer span without
    /// a parent, linked to the schedule's context, with the messaging attributes of an
    /// enqueue (`system` is the edge's `messaging.system`), the schedule's name and the job.
    /// It lasts no time: the run was made inside the alarm's commit, which it does not time.
    pub fn span(&self, system: &str, now_ns: u64) -> SpanRecord {
        let t = &self.trace;
        let name = otlp::messaging_span_name("send", &self.job_type);
        let span = SpanRecord::root(t.trace_id, t.span_id, t.sampled(), name, SpanKind::Producer, now_ns)
            .attrs(otlp::messaging_attrs(system, "send", &self.job_type, Some(self.job_id.as_str()), None))
            .attr(otlp::keys::SCHEDULE_ID, self.schedule.as_str())
            .attr(otlp::keys::JOB_ID, self.job_id.as_str());
        match &self.link {
            Some(l) => span.link(l, Vec::new()),
            None => span,
        }
    }
}

/// The root context of a run's new trace (#32): new ids from the host's random source,
/// sampled as `sampler` decides for a span that continues the schedule's context `link`.
/// With the default (`parentbased_always_on`) a run follows the schedule's `sampled` flag,
/// and is sampled when the schedule has no context; a ratio sampler decides by the new
/// trace id, as it will for every later span of the run.
pub fn run_trace(random: &mut impl FnMut() -> u64, link: Option<&TraceContext>, sampler: &Sampler) -> TraceContext {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random().to_le_bytes());
    // Never zero, so the id is always valid.
    b[8..].copy_from_slice(&random().max(1).to_le_bytes());
    let trace_id = TraceId::new(b).unwrap_or(TraceId([1; 16]));
    let span_id = SpanId::new(random().max(1).to_le_bytes()).unwrap_or(SpanId([1, 0, 0, 0, 0, 0, 0, 0]));
    TraceContext::root(trace_id, span_id, sampler.decide(trace_id, link))
}

/// A run to create: the schedule (by index), its tick and why.
#[derive(Debug)]
struct Fire {
    index: usize,
    tick: u64,
    kind: RunKind,
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// A schedule operation. Returns its answer, the effects, and whether the alarm must be
    /// set again (a schedule was written).
    pub fn schedules(&self, op: ScheduleOp, cfg: &EdgeConfig) -> Outcome<Answer> {
        if self.number.is_none() {
            return Err(ApiError::new(ErrorCode::InvalidField, "the stats object holds no schedules").into());
        }
        let now = self.host.now_ms();
        let read = |r: ScheduleReply| Ok((r, Effects::default(), false));
        // A name kept here for a schedule living elsewhere: the router asks there.
        if let Some(name) = op.name()
            && let Some(home) = claim(&self.db, name)?
        {
            return read(ScheduleReply::Elsewhere { home });
        }
        let shown = |s: ScheduleShown| ScheduleReply::Shown { schedule: Box::new(s) };
        let changed =
            |s: Schedule| -> Outcome<Answer> { Ok((shown(self.view(s, now, true)?), Effects::default(), true)) };
        match op {
            ScheduleOp::Get { name } => read(shown(self.view(existing(&self.db, &name)?, now, true)?)),
            ScheduleOp::List { after, limit, tenant } => {
                read(ScheduleReply::Page { schedules: self.list_schedules(after, limit, tenant, now)? })
            }
            ScheduleOp::Export => {
                read(ScheduleReply::Stored { schedules: load_where(&self.db, "1 = 1 ORDER BY name", &[])? })
            }
            ScheduleOp::Create { schedule } => changed(self.commit(|db| {
                if load(db, &schedule.name)?.is_some() || claim(db, &schedule.name)?.is_some() {
                    return Err(taken(&schedule.name));
                }
                let n = match db.rows("SELECT COUNT(*) FROM schedules", &[])?.into_iter().next() {
                    Some(r) => Cols::new(r).u64()?,
                    None => 0,
                };
                if n as usize >= schedule::MAX_PER_SHARD {
                    return Err(ApiError::new(
                        ErrorCode::InvalidTransition,
                        format!(
                            "this deployment's shard for {:?} holds {} schedules already",
                            schedule.name,
                            schedule::MAX_PER_SHARD
                        ),
                    )
                    .into());
                }
                save(db, &schedule, now)?;
                Ok(*schedule)
            })?),
            ScheduleOp::Patch { name, body } => changed(self.commit(|db| {
                let current = existing(db, &name)?;
                let mut next = schedule::parse_patch(&current, &body, now, &cfg.types)?.schedule;
                next.updated_at = now;
                save(db, &next, now)?;
                Ok(next)
            })?),
            ScheduleOp::Pause { name } => changed(self.update(&name, now, schedule::pause)?),
            ScheduleOp::Resume { name } => changed(self.update(&name, now, schedule::resume)?),
            ScheduleOp::Delete { name } => self.commit(|db| {
                existing(db, &name)?;
                db.rows("DELETE FROM schedules WHERE name = ?", &[text(name.clone())])?;
                Ok((ScheduleReply::Deleted { name }, Effects::default(), true))
            }),
            ScheduleOp::Trigger { name } => self.trigger(&name, cfg),
            ScheduleOp::Import { schedules, claims } => self.commit(|db| {
                db.rows("DELETE FROM schedules", &[])?;
                db.rows("DELETE FROM schedule_names", &[])?;
                for s in &schedules {
                    schedule::check_name(&s.name)?;
                    save(db, s, now)?;
                }
                for c in &claims {
                    schedule::check_name(&c.name)?;
                    put_claim(db, &c.name, c.home)?;
                }
                Ok((ScheduleReply::Imported { schedules: schedules.len() as u64 }, Effects::default(), true))
            }),
            ScheduleOp::Claim { name, home } => self.commit(|db| {
                schedule::check_name(&name)?;
                if load(db, &name)?.is_some() || claim(db, &name)?.is_some_and(|h| h != home) {
                    return Err(taken(&name));
                }
                put_claim(db, &name, home)?;
                Ok((ScheduleReply::Claimed { name }, Effects::default(), false))
            }),
            ScheduleOp::Unclaim { name } => self.commit(|db| {
                db.rows("DELETE FROM schedule_names WHERE name = ?", &[text(name.clone())])?;
                Ok((ScheduleReply::Deleted { name }, Effects::default(), false))
            }),
        }
    }

    /// Loads schedule `name`, changes it with `f` and writes it, in one transaction.
    fn update(&self, name: &str, now: u64, f: impl FnOnce(&mut Schedule, u64)) -> Outcome<Schedule> {
        self.commit(|db| {
            let mut s = existing(db, name)?;
            f(&mut s, now);
            save(db, &s, now)?;
            Ok(s)
        })
    }

    /// A schedule as a shard shows it, its runs' states read from this shard.
    fn view(&self, s: Schedule, now: u64, upcoming: bool) -> Outcome<ScheduleShown> {
        let states = self.states(s.runs.iter().map(|r| &r.job_id))?;
        Ok(shown(s, &states, now, upcoming))
    }

    /// The states of these jobs, in one read (a job gone is left out).
    fn states<'a>(&self, ids: impl IntoIterator<Item = &'a JobId>) -> Outcome<BTreeMap<JobId, JobState>> {
        Ok(store::load_many(&self.db, ids)?.into_iter().map(|j| (j.id.clone(), j.state)).collect())
    }

    fn list_schedules(
        &self,
        after: Option<String>,
        limit: u32,
        tenant: Option<edgejobs_core::tenant::Tenant>,
        now: u64,
    ) -> Outcome<Vec<ScheduleShown>> {
        // One more than the largest page, to know whether more remain.
        let limit = limit.clamp(1, MAX_LIST + 1);
        let mut all = match tenant {
            // The same rule as `Schedule::tenant`: a spec without `tenant` is the default's.
            Some(t) => load_where(
                &self.db,
                "name > ? AND COALESCE(json_extract(doc, '$.job.tenant'), 'default') = ? ORDER BY name LIMIT ?",
                &[text(after.unwrap_or_default()), text(t.as_str()), int(limit as u64)],
            )?,
            None => load_where(
                &self.db,
                "name > ? ORDER BY name LIMIT ?",
                &[text(after.unwrap_or_default()), int(limit as u64)],
            )?,
        };
        // A listing shows each schedule's newest run only, their states read at once.
        all.iter_mut().for_each(|s| s.runs.truncate(1));
        let states = self.states(all.iter().flat_map(|s| s.runs.iter().map(|r| &r.job_id)))?;
        Ok(all.into_iter().map(|s| shown(s, &states, now, false)).collect())
    }

    /// Builds the job of a run: the schedule's spec with its key and tag, validated as an
    /// enqueue is, its header values opened (sealed for the schedule) and sealed for the job.
    fn run_job(&self, s: &Schedule, tick: u64, now: u64, cfg: &EdgeConfig) -> Outcome<Job> {
        let shard = self.numbered()?;
        let mut body = s.run_body(tick);
        if let Some(payload) = body.get_mut("payload") {
            let opened = seal::open_headers(payload, &s.tag(), Some(&cfg.payload_keys))
                .map_err(|e| ApiError::new(ErrorCode::Internal, format!("schedule {}: {e}", s.name)))?;
            if let Some(Value::Object(h)) = payload.get_mut("headers") {
                for (name, plain) in opened {
                    h.insert(name, Value::String(plain));
                }
            }
        }
        let spec = parse_spec_in(&body, now, &cfg.types)?;
        // A run goes through this shard's flow gate: the schedule lives on its runs' flow
        // key's home (`schedule::home`), so they count with the key's other jobs.
        let flow = edgejobs_core::spec::flow_of(&spec, cfg.webhook_concurrency)?;
        let mut job = spec.into_job(JobId::new(shard, now, self.host.random_u64()), now).0;
        job.flow = flow;
        job.schedule = Some(s.name.clone());
        job.trace = Some(run_trace(&mut || self.host.random_u64(), s.trace.as_ref(), &cfg.tracing.sampler));
        #[cfg(feature = "bugs")]
        if self.bugs.schedule_ticks_twice {
            // The bug: a run without its tick's key, so nothing stops a second run of it.
            job.idempotency_key = None;
        }
        // No nonce, no run: the whole alarm transaction fails (logged) and the next retries.
        seal::seal_headers(&mut job.payload, job.id.as_str(), &cfg.payload_keys, &mut || self.host.random_nonce())
            .map_err(|e| Failure::Storage(StoreError(format!("header values could not be sealed: {e}"))))?;
        Ok(job)
    }

    /// The jobs of the runs `fires`; a fire whose job cannot be made (a spec stored valid
    /// that fails now: a type removed from `JOB_TYPES`) is logged and counted as skipped
    /// (`invalid`) in `deltas`.
    fn prepare_runs(
        &self,
        schedules: &[Schedule],
        fires: Vec<Fire>,
        now: u64,
        cfg: &EdgeConfig,
        deltas: &mut Vec<Delta>,
    ) -> Outcome<Vec<(Fire, Job)>> {
        let mut out = Vec::with_capacity(fires.len());
        for f in fires {
            let s = &schedules[f.index];
            match self.run_job(s, f.tick, now, cfg) {
                Ok(job) => out.push((f, job)),
                Err(Failure::Refused(e)) => {
                    self.host.log(
                        Level::Error,
                        "a schedule's run could not be created",
                        json!({ "schedule": s.name, "error": e.message }),
                    );
                    let labels = [("schedule", s.name.as_str()), ("reason", "invalid")];
                    deltas.push(Delta::count(Metric::ScheduleSkipsTotal, &labels, 1.0));
                }
                Err(storage) => return Err(storage),
            }
        }
        Ok(out)
    }

    /// Creates the runs `made` of `schedules`: their jobs (deduplicated by idempotency key),
    /// the runs recorded, the counts. Returns the effects and, per run, the job (new or
    /// existing) and whether it is new.
    fn create_runs(
        &self,
        db: &S,
        schedules: &mut [Schedule],
        made: Vec<(Fire, Job)>,
        now: u64,
        cfg: &EdgeConfig,
    ) -> Outcome<(Effects, Vec<(Job, bool)>)> {
        let (made, jobs): (Vec<Fire>, Vec<Job>) = made.into_iter().unzip();
        let keys: Vec<String> = jobs.iter().filter_map(Job::scoped_key).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut known = store::known_keys(db, &keys, now)?;
        // A tick's key reuses only the schedule's own run: a job that got the key some
        // other way (stored before callers were refused the namespace) is left alone, and
        // the key is written over to name the run.
        #[cfg(feature = "bugs")]
        let trust_any = self.bugs.schedule_key_hijack;
        #[cfg(not(feature = "bugs"))]
        let trust_any = false;
        if !trust_any {
            let own: BTreeMap<String, Option<String>> =
                jobs.iter().filter_map(|j| j.scoped_key().map(|k| (k, j.schedule.clone()))).collect();
            known.retain(|k, existing| own.get(k).is_some_and(|name| existing.schedule == *name));
        }
        let (mut plan, key_writes, answers) = plan::create(jobs, known, now, cfg.idempotency_window_ms);
        let mut out = Vec::with_capacity(answers.len());
        for (f, created) in made.into_iter().zip(answers) {
            let s = &mut schedules[f.index];
            s.record_run(Run { tick: f.tick, at: now, job_id: created.job.id.clone(), kind: f.kind });
            let labels = [("schedule", s.name.as_str()), ("kind", f.kind.as_str())];
            plan.deltas.push(Delta::count(Metric::ScheduleRunsTotal, &labels, 1.0));
            if f.kind != RunKind::Trigger {
                plan.deltas.push(Delta::Observe {
                    name: Metric::ScheduleLatenessSeconds,
                    labels: Vec::new(),
                    secs: now.saturating_sub(f.tick) as f64 / 1000.0,
                });
            }
            out.push((created.job, created.created));
        }
        crate::flow::apply(db, &mut plan, now)?;
        store::put_keys(db, &key_writes)?;
        Ok((plan.effects, out))
    }

    /// A page of the alarm's part for schedules: up to [`WAKE_BATCH`] schedules whose
    /// wake-up is due decide (pure, `schedule::wake`) with their previous run's state read
    /// in the same transaction, and their runs are created there. Returns the effects and
    /// whether a full batch was due (more may be).
    pub fn fire_schedules_page(&self, cfg: &EdgeConfig) -> Outcome<(Effects, bool)> {
        self.fire_schedules_page_traced(cfg).map(|(effects, more, _)| (effects, more))
    }

    /// [`fire_schedules_page`](Self::fire_schedules_page), with the runs it created (a tick
    /// whose key answered with an existing job is not a new run) for their root spans.
    pub fn fire_schedules_page_traced(&self, cfg: &EdgeConfig) -> Outcome<(Effects, bool, Vec<RunStarted>)> {
        if self.number.is_none() {
            return Ok((Effects::default(), false, Vec::new()));
        }
        let now = self.host.now_ms();
        self.commit(|db| {
            let mut due = load_where(db, "wake_at <= ? ORDER BY wake_at LIMIT ?", &[int(now), int(WAKE_BATCH)])?;
            let n = due.len();
            let mut fires = Vec::new();
            let mut deltas = Vec::new();
            for (index, s) in due.iter_mut().enumerate() {
                let running = match s.last_job() {
                    Some(id) => store::load(db, id)?.is_some_and(|j| !j.state.is_finished()),
                    None => false,
                };
                let w = schedule::wake(s, now, running);
                for (reason, count) in &w.skipped {
                    let labels = [("schedule", s.name.as_str()), ("reason", *reason)];
                    deltas.push(Delta::count(Metric::ScheduleSkipsTotal, &labels, *count as f64));
                }
                fires.extend(w.fire.into_iter().map(|(tick, kind)| Fire { index, tick, kind }));
            }
            let made = self.prepare_runs(&due, fires, now, cfg, &mut deltas)?;
            store::record(db, &deltas, now)?;
            let (effects, jobs) = self.create_runs(db, &mut due, made, now, cfg)?;
            let started = jobs
                .iter()
                .filter(|(_, created)| *created)
                .filter_map(|(job, _)| {
                    let s = due.iter().find(|s| job.schedule.as_deref() == Some(s.name.as_str()))?;
                    RunStarted::of(s, job)
                })
                .collect();
            #[cfg(feature = "bugs")]
            let skip_save = self.bugs.schedule_ticks_twice;
            #[cfg(not(feature = "bugs"))]
            let skip_save = false;
            if !skip_save {
                for s in &due {
                    save(db, s, now)?;
                }
            }
            Ok((effects, n as u64 == WAKE_BATCH, started))
        })
    }

    /// `POST /v1/schedules/{name}/trigger`: a run now, whatever the overlap policy.
    fn trigger(&self, name: &str, cfg: &EdgeConfig) -> Outcome<Answer> {
        let now = self.host.now_ms();
        let (effects, schedule, job, created) = self.commit(|db| {
            let mut one = [existing(db, name)?];
            // A spec that no longer validates is refused, with its error.
            let job = self.run_job(&one[0], now, now, cfg)?;
            let fire = Fire { index: 0, tick: now, kind: RunKind::Trigger };
            let (effects, mut jobs) = self.create_runs(db, &mut one, vec![(fire, job)], now, cfg)?;
            let [s] = one;
            save(db, &s, now)?;
            let (job, created) = jobs.pop().ok_or_else(|| StoreError("the run was not created".into()))?;
            Ok((effects, s, job, created))
        })?;
        let schedule = Box::new(self.view(schedule, now, true)?);
        Ok((ScheduleReply::Triggered { created, job: Box::new(job), schedule }, effects, true))
    }

    /// This shard's schedules for a scrape: (active, paused) and the overdue ones' names,
    /// read by SQLite (no document is parsed here). A paused or ended schedule has no
    /// wake-up; an active one whose wake-up is long past is overdue.
    pub fn schedule_stats(&self, now: u64) -> Outcome<((u64, u64), Vec<String>)> {
        let counts = self.db.rows("SELECT COUNT(*), SUM(json_extract(doc, '$.paused')) FROM schedules", &[])?;
        let (n, paused) = match counts.into_iter().next() {
            Some(r) => {
                let mut c = Cols::new(r);
                (c.u64()?, c.opt_f64()?.unwrap_or(0.0) as u64)
            }
            None => (0, 0),
        };
        let overdue = self.db.rows(
            "SELECT name FROM schedules WHERE wake_at < ? ORDER BY name",
            &[int(now.saturating_sub(schedule::OVERDUE_MS))],
        )?;
        let names = overdue.into_iter().map(|r| Cols::new(r).text()).collect::<Result<Vec<_>, _>>()?;
        Ok(((n - paused, paused), names))
    }
}
