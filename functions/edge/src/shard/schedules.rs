//! The schedules a shard holds, and their runs. A schedule lives in the shard its name
//! hashes to; the shard's alarm wakes at its next tick, and the runs' jobs are created in
//! this shard, in the same transaction that moves the schedule on: a tick is handled once,
//! whatever restarts in between, and its idempotency key (`schedule:{name}:{tick}`) makes a
//! second fire of the same tick answer with the first job.

use std::collections::BTreeMap;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::plan::{self, Effects};
use edgejobs_core::protocol::{ScheduleOp, Schedules};
use edgejobs_core::schedule::{self, Run, RunKind, Schedule};
use edgejobs_core::seal;
use edgejobs_core::spec::parse_spec_in;
use edgejobs_core::stats::Delta;
use edgejobs_core::{ApiError, ErrorCode, Job, JobId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::store::{Store, int, internal, text};
use super::{JobShard, Out};
use crate::http::log;
use crate::platform::{now_ms, random_nonce, random_u64};

/// Schedules handled per alarm wake-up (the rest wake the alarm again at once).
const WAKE_BATCH: u64 = 100;
/// Largest page of a listing (the router's largest page, and one more to know whether more
/// remain).
const MAX_LIST: u32 = crate::routes::schedules::MAX_LIST + 1;

#[derive(Deserialize)]
struct DocRow {
    doc: String,
}

fn load(tx: &Store, name: &str) -> Result<Option<Schedule>, ApiError> {
    let rows: Vec<DocRow> = tx.rows("SELECT doc FROM schedules WHERE name = ?", vec![text(name)])?;
    rows.first().map(|r| serde_json::from_str(&r.doc).map_err(internal)).transpose()
}

fn load_where(tx: &Store, cond: &str, binds: Vec<worker::SqlStorageValue>) -> Result<Vec<Schedule>, ApiError> {
    let rows: Vec<DocRow> = tx.rows(&format!("SELECT doc FROM schedules WHERE {cond}"), binds)?;
    rows.iter().map(|r| serde_json::from_str(&r.doc).map_err(internal)).collect()
}

fn save(tx: &Store, s: &Schedule, now: u64) -> Result<(), ApiError> {
    let doc = serde_json::to_string(s).map_err(internal)?;
    let wake = s.wake_at(now).map_or(worker::SqlStorageValue::Null, int);
    tx.exec(
        "INSERT OR REPLACE INTO schedules (name, wake_at, doc) VALUES (?, ?, ?)",
        vec![text(s.name.clone()), wake, text(doc)],
    )
    .map(|_| ())
}

fn existing(tx: &Store, name: &str) -> Result<Schedule, ApiError> {
    load(tx, name)?.ok_or_else(|| schedule::missing(name))
}

/// A run to create: the schedule (by index), its tick and why.
struct Fire {
    index: usize,
    tick: u64,
    kind: RunKind,
}

impl JobShard {
    pub(super) async fn schedules(&self, r: Schedules) -> Out<Schedules> {
        if self.shard.is_none() {
            return Err(ApiError::new(ErrorCode::InvalidField, "the stats object holds no schedules"));
        }
        let now = now_ms();
        let changed = |out: Result<Schedule, ApiError>| out.map(|s| self.view(&s, now, true));
        let answer = match r.op {
            ScheduleOp::Get { name } => return existing(&self.store, &name).map(|s| self.view(&s, now, true)),
            ScheduleOp::List { after, limit } => return self.list_schedules(after, limit, now),
            ScheduleOp::Export => {
                let all = load_where(&self.store, "1 = 1 ORDER BY name", vec![])?;
                return serde_json::to_value(all).map_err(internal);
            }
            ScheduleOp::Create { schedule } => changed(self.commit(|tx| {
                if load(tx, &schedule.name)?.is_some() {
                    return Err(ApiError::new(
                        ErrorCode::ScheduleExists,
                        format!("a schedule named {:?} exists; change it with PATCH or delete it first", schedule.name),
                    ));
                }
                #[derive(Deserialize)]
                struct N {
                    n: f64,
                }
                let n: Vec<N> = tx.rows("SELECT COUNT(*) AS n FROM schedules", vec![])?;
                if n.first().is_some_and(|n| n.n as usize >= schedule::MAX_PER_SHARD) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidTransition,
                        format!(
                            "this deployment's shard for {:?} holds {} schedules already",
                            schedule.name,
                            schedule::MAX_PER_SHARD
                        ),
                    ));
                }
                save(tx, &schedule, now)?;
                Ok(*schedule)
            })),
            ScheduleOp::Patch { name, body } => {
                let cfg = crate::config::load(&self.env)?;
                changed(self.commit(|tx| {
                    let current = existing(tx, &name)?;
                    let mut next = schedule::parse_patch(&current, &body, now, &cfg.types)?.schedule;
                    next.updated_at = now;
                    save(tx, &next, now)?;
                    Ok(next)
                }))
            }
            ScheduleOp::Pause { name } => changed(self.update(&name, now, schedule::pause)),
            ScheduleOp::Resume { name } => changed(self.update(&name, now, schedule::resume)),
            ScheduleOp::Delete { name } => self.commit(|tx| {
                existing(tx, &name)?;
                tx.exec("DELETE FROM schedules WHERE name = ?", vec![text(name.clone())])?;
                Ok(json!({ "deleted": true, "name": name }))
            }),
            ScheduleOp::Trigger { name } => return self.trigger(&name).await,
            ScheduleOp::Import { schedules } => self.commit(|tx| {
                tx.exec("DELETE FROM schedules", vec![])?;
                for s in &schedules {
                    schedule::check_name(&s.name)?;
                    save(tx, s, now)?;
                }
                Ok(json!({ "schedules": schedules.len() }))
            }),
        };
        if answer.is_ok() {
            self.rearm().await;
        }
        answer
    }

    /// Loads schedule `name`, changes it with `f` and writes it, in one transaction.
    fn update(&self, name: &str, now: u64, f: impl FnOnce(&mut Schedule, u64)) -> Result<Schedule, ApiError> {
        self.commit(|tx| {
            let mut s = existing(tx, name)?;
            f(&mut s, now);
            save(tx, &s, now)?;
            Ok(s)
        })
    }

    /// A schedule as the API shows it, its runs' states read from this shard.
    fn view(&self, s: &Schedule, now: u64, upcoming: bool) -> Value {
        let states = self.states(s.runs.iter().map(|r| &r.job_id));
        schedule::view(s, &|id| states.get(id).copied(), now, upcoming)
    }

    /// The states of these jobs, in one read (a job gone is left out).
    fn states<'a>(&self, ids: impl IntoIterator<Item = &'a JobId>) -> BTreeMap<JobId, &'static str> {
        match self.store.load_many(ids) {
            Ok(jobs) => jobs.into_iter().map(|j| (j.id.clone(), j.state.as_str())).collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    fn list_schedules(&self, after: Option<String>, limit: u32, now: u64) -> Out<Schedules> {
        let limit = limit.clamp(1, MAX_LIST);
        let mut all = load_where(
            &self.store,
            "name > ? ORDER BY name LIMIT ?",
            vec![text(after.unwrap_or_default()), int(limit as u64)],
        )?;
        // A listing shows each schedule's newest run only, their states read at once.
        all.iter_mut().for_each(|s| s.runs.truncate(1));
        let states = self.states(all.iter().flat_map(|s| s.runs.iter().map(|r| &r.job_id)));
        let items = all.iter().map(|s| schedule::view(s, &|id| states.get(id).copied(), now, false)).collect();
        Ok(Value::Array(items))
    }

    /// Builds the job of a run: the schedule's spec with its key and tag, validated as an
    /// enqueue is, its header values opened (sealed for the schedule) and sealed for the job.
    fn run_job(&self, s: &Schedule, tick: u64, now: u64, cfg: &EdgeConfig) -> Result<Job, ApiError> {
        let shard = self.shard.ok_or_else(|| ApiError::new(ErrorCode::Internal, "no shard number"))?;
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
        let mut job = spec.into_job(JobId::new(shard, now, random_u64()), now).0;
        seal::seal_headers(&mut job.payload, job.id.as_str(), &cfg.payload_keys, &mut random_nonce);
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
    ) -> Vec<(Fire, Job)> {
        let mut out = Vec::with_capacity(fires.len());
        for f in fires {
            let s = &schedules[f.index];
            match self.run_job(s, f.tick, now, cfg) {
                Ok(job) => out.push((f, job)),
                Err(e) => {
                    log(
                        "error",
                        "a schedule's run could not be created",
                        json!({ "schedule": s.name, "error": e.message }),
                    );
                    let labels = [("schedule", s.name.as_str()), ("reason", "invalid")];
                    deltas.push(Delta::count("edgejobs_schedule_skips_total", &labels, 1.0));
                }
            }
        }
        out
    }

    /// Creates the runs `made` of `schedules` in transaction `tx`: their jobs (deduplicated
    /// by idempotency key), the runs recorded, the counts. Returns the effects and, per run,
    /// the job (new or existing) and whether it is new.
    fn create_runs(
        &self,
        tx: &Store,
        schedules: &mut [Schedule],
        made: Vec<(Fire, Job)>,
        now: u64,
        cfg: &EdgeConfig,
    ) -> Result<(Effects, Vec<(Job, bool)>), ApiError> {
        let (made, jobs): (Vec<Fire>, Vec<Job>) = made.into_iter().unzip();
        let keys: Vec<String> = jobs.iter().filter_map(|j| j.idempotency_key.clone()).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let known = tx.known_keys(&keys, now)?;
        let (mut plan, key_writes, answers) = plan::create(jobs, known, now, cfg.idempotency_window_ms);
        let mut out = Vec::with_capacity(answers.len());
        for (f, created) in made.into_iter().zip(answers) {
            let s = &mut schedules[f.index];
            s.record_run(Run { tick: f.tick, at: now, job_id: created.job.id.clone(), kind: f.kind });
            let labels = [("schedule", s.name.as_str()), ("kind", f.kind.as_str())];
            plan.deltas.push(Delta::count("edgejobs_schedule_runs_total", &labels, 1.0));
            if f.kind != RunKind::Trigger {
                plan.deltas.push(Delta::Observe {
                    name: "edgejobs_schedule_lateness_seconds".into(),
                    labels: Vec::new(),
                    secs: now.saturating_sub(f.tick) as f64 / 1000.0,
                });
            }
            out.push((created.job, created.created));
        }
        tx.apply(&plan)?;
        tx.put_keys(&key_writes)?;
        Ok((plan.effects, out))
    }

    /// The alarm's part for schedules: every schedule whose wake-up is due decides (pure,
    /// `schedule::wake`) with its previous run's state read in the same transaction, and
    /// its runs are created there. Effects (queue sends) after the commit.
    pub(super) async fn fire_schedules(&self) {
        if self.shard.is_none() {
            return;
        }
        let cfg = match crate::config::load(&self.env) {
            Ok(c) => c,
            Err(e) => {
                log("error", "schedules cannot fire: the configuration is invalid", json!({ "error": e.message }));
                return;
            }
        };
        for _ in 0..super::timers::MAX_PAGES {
            let now = now_ms();
            let done = self.commit(|tx| {
                let mut due = load_where(tx, "wake_at <= ? ORDER BY wake_at LIMIT ?", vec![int(now), int(WAKE_BATCH)])?;
                let n = due.len();
                let mut fires = Vec::new();
                let mut deltas = Vec::new();
                for (index, s) in due.iter_mut().enumerate() {
                    let running = match s.last_job() {
                        Some(id) => tx.load(id)?.is_some_and(|j| !j.state.is_finished()),
                        None => false,
                    };
                    let w = schedule::wake(s, now, running);
                    for (reason, count) in &w.skipped {
                        let labels = [("schedule", s.name.as_str()), ("reason", *reason)];
                        deltas.push(Delta::count("edgejobs_schedule_skips_total", &labels, *count as f64));
                    }
                    fires.extend(w.fire.into_iter().map(|(tick, kind)| Fire { index, tick, kind }));
                }
                let made = self.prepare_runs(&due, fires, now, &cfg, &mut deltas);
                tx.record(&deltas)?;
                let (effects, _) = self.create_runs(tx, &mut due, made, now, &cfg)?;
                for s in &due {
                    save(tx, s, now)?;
                }
                Ok((effects, (n as u64) < WAKE_BATCH))
            });
            match done {
                Ok((effects, last)) => {
                    self.carry_out(effects).await;
                    if last {
                        break;
                    }
                }
                Err(e) => {
                    log("error", "the alarm could not fire due schedules", json!({ "error": e.message }));
                    break;
                }
            }
        }
    }

    /// `POST /v1/schedules/{name}/trigger`: a run now, whatever the overlap policy.
    async fn trigger(&self, name: &str) -> Out<Schedules> {
        let cfg = crate::config::load(&self.env)?;
        let now = now_ms();
        let (effects, schedule, job, created) = self.commit(|tx| {
            let mut one = [existing(tx, name)?];
            // A spec that no longer validates is refused, with its error.
            let job = self.run_job(&one[0], now, now, &cfg)?;
            let fire = Fire { index: 0, tick: now, kind: RunKind::Trigger };
            let (effects, mut jobs) = self.create_runs(tx, &mut one, vec![(fire, job)], now, &cfg)?;
            let [s] = one;
            save(tx, &s, now)?;
            let (job, created) =
                jobs.pop().ok_or_else(|| ApiError::new(ErrorCode::Internal, "the run was not created"))?;
            Ok((effects, s, job, created))
        })?;
        self.carry_out(effects).await;
        let job = serde_json::to_value(crate::view::job(job)).map_err(internal)?;
        Ok(json!({ "created": created, "job": job, "schedule": self.view(&schedule, now, true) }))
    }

    /// This shard's schedules for a scrape: (active, paused) and the overdue ones' names,
    /// read by SQLite (no document is parsed here). A paused or ended schedule has no
    /// wake-up; an active one whose wake-up is long past is overdue.
    pub(super) fn schedule_stats(&self, now: u64) -> Result<((u64, u64), Vec<String>), ApiError> {
        #[derive(Deserialize)]
        struct Counts {
            n: f64,
            paused: Option<f64>,
        }
        #[derive(Deserialize)]
        struct Name {
            name: String,
        }
        let counts: Vec<Counts> = self
            .store
            .rows("SELECT COUNT(*) AS n, SUM(json_extract(doc, '$.paused')) AS paused FROM schedules", vec![])?;
        let (n, paused) = counts.first().map_or((0, 0), |c| (c.n as u64, c.paused.unwrap_or(0.0) as u64));
        let overdue: Vec<Name> = self.store.rows(
            "SELECT name FROM schedules WHERE wake_at < ? ORDER BY name",
            vec![int(now.saturating_sub(schedule::OVERDUE_MS))],
        )?;
        Ok(((n - paused, paused), overdue.into_iter().map(|r| r.name).collect()))
    }
}
