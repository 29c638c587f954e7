//! The simulated world: shards on in-memory SQLite running `edgejobs_shard`'s code, a queue
//! that delays, reorders, duplicates and drops messages, edge handlers and native
//! consumers that crash, pause past their lease and send late reports, alarms that fire
//! late or twice, sweeps, backups and restores, schedules, retention. One clock, one seed.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::plan::{JobEvent, SweepPolicy};
use edgejobs_core::protocol::{
    ApplyMany, Export, FinishMany, HandoffMany, Import, ReplayDead, ReportMany, RetentionDelete, RetentionPage,
    ScheduleOp,
};
use edgejobs_core::report::Report;
use edgejobs_core::wire::JobRef;
use edgejobs_core::{JobId, Lane};
use edgejobs_shard::native::Sqlite;
use edgejobs_shard::sql::{Cols, Sql};
use edgejobs_shard::timers::{MAX_PAGES, SweepRun};
use edgejobs_shard::{Effects, Host, Level, Shard};
use serde_json::json;

use crate::oracle::{Allow, Oracle, Seen, is_final};
use crate::rng::Rng;

mod workflows;

pub const SHARDS: u16 = 4;
/// The shard count the deployment starts with; it grows to [`SHARDS`] in [`GROWTHS`].
pub const INITIAL_SHARDS: u16 = 2;
/// When (after the start) `SHARD_COUNT` is raised, and to what.
pub const GROWTHS: &[(u64, u16)] = &[(120_000, 3), (240_000, SHARDS)];
/// How long after a growth a router may still route as before it (one that read the
/// topology before the growth): at most the settling margin the real router allows.
pub const STALE_ROUTER_MS: u64 = edgejobs_core::topology::SETTLE_MS;
/// Steps between two checks of every shard's flow counts against its jobs (a check reads
/// every queued and running flow job; after every step it would cost most of the run).
pub const FLOW_CHECK_EVERY: u64 = 20;
/// The share of enqueued jobs that are workflow runs (each goes through the stream once per
/// execution, so a larger share saturates the simulated consumers).
pub const WORKFLOW_SHARE: f64 = 0.05;
/// The idempotency window of the simulated deployment.
pub const WINDOW_MS: u64 = 60_000;
pub const LEASE_MS: u64 = 10_000;
/// 2026-03-08 06:30 UTC: 01:30 in New York, half an hour before clocks jump to 03:00.
pub const START_MS: u64 = 1_772_951_400_000;

/// How often each fault happens (0 = never).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    pub max_delay_ms: u64,
    pub crash: f64,
    pub late_report: f64,
    pub alarm_twice: f64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults { drop: 0.0, duplicate: 0.0, max_delay_ms: 0, crash: 0.0, late_report: 0.0, alarm_twice: 0.0 }
    }

    /// Faults at `level` (1 the default, 0 none, higher more).
    pub fn at(level: f64) -> Faults {
        let p = |x: f64| (x * level).min(0.9);
        Faults {
            drop: p(0.05),
            duplicate: p(0.05),
            max_delay_ms: (5_000.0 * level) as u64,
            crash: p(0.05),
            late_report: p(0.1),
            alarm_twice: p(0.1),
        }
    }
}

/// The host a simulated shard sees: the world's clock and generator; errors are kept.
#[derive(Debug, Clone)]
pub struct SimHost {
    clock: Rc<Cell<u64>>,
    rng: Rc<RefCell<Rng>>,
    errors: Rc<RefCell<Vec<String>>>,
}

impl Host for SimHost {
    fn now_ms(&self) -> u64 {
        self.clock.get()
    }

    fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }

    fn log(&self, level: Level, msg: &str, fields: serde_json::Value) {
        if level == Level::Error {
            self.errors.borrow_mut().push(format!("{msg}: {fields}"));
        }
    }
}

#[derive(Debug, Clone)]
struct Msg {
    at: u64,
    lane: Lane,
    r: JobRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Fail,
    Crash,
}

#[derive(Debug, Clone)]
struct Run {
    id: JobId,
    attempt: u32,
    at: u64,
    end: End,
    /// How its reports travel: the edge's own (edge lane) or a consumer's with the lease
    /// token its start or takeover was answered with (a stale holder keeps its old one).
    via: Via,
    /// A workflow run's execution (its handler's place in its steps).
    wf: Option<Box<crate::workflows::Exec>>,
}

/// Who reports: the edge runner (its own events, no lease) or a native consumer through
/// the consumer route, with the lease token it holds (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Via {
    Edge,
    Consumer(Option<String>),
}

#[derive(Debug, Clone)]
struct Entry {
    id: JobId,
    attempt: u32,
    owner: Option<usize>,
    idle_since: u64,
}

#[derive(Debug, Default, Clone)]
struct Consumer {
    paused_until: u64,
    holds: Vec<Run>,
}

/// One step of a run: what happens, its own random draws, and how far the clock moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub kind: Kind,
    pub r: u64,
    pub dt: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Enqueue,
    Deliver,
    EdgeFinish,
    NativeTake,
    NativeBeat,
    NativeFinish,
    NativePause,
    NativeCrash,
    NativeReclaim,
    Forge,
    LateReport,
    Cancel,
    Replay,
    Alarm,
    Sweep,
    BackupRestore,
    Retention,
    WriteStaged,
    CrossTenant,
    Reseal,
    FlowPause,
    SendEvent,
    EdgeEvents,
}

/// Weighted choice of the next action.
pub const KINDS: &[(Kind, u64)] = &[
    (Kind::Enqueue, 14),
    (Kind::Deliver, 20),
    (Kind::EdgeFinish, 12),
    (Kind::NativeTake, 8),
    (Kind::NativeBeat, 6),
    (Kind::NativeFinish, 8),
    (Kind::NativePause, 1),
    (Kind::NativeCrash, 1),
    (Kind::NativeReclaim, 3),
    (Kind::Forge, 2),
    (Kind::LateReport, 4),
    (Kind::Cancel, 4),
    (Kind::Replay, 2),
    (Kind::Alarm, 8),
    (Kind::Sweep, 2),
    (Kind::BackupRestore, 1),
    (Kind::Retention, 4),
    (Kind::WriteStaged, 6),
    (Kind::CrossTenant, 3),
    (Kind::Reseal, 2),
    (Kind::FlowPause, 1),
    (Kind::SendEvent, 4),
    (Kind::EdgeEvents, 5),
];

/// The payload keys of the simulated deployment: the new one seals, the old one still opens
/// the values stored before the rotation, until a re-seal moves them.
const RESEAL_NEW_KEY: &str = "k2:HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";
const RESEAL_OLD_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The tenants jobs are made for (the simulated deployment has a key for each).
const TENANTS: &[&str] = &["default", "acme"];

/// The schedules every run starts with: name, cron, zone, period bound (ms between runs
/// at the least, for the count check).
const SCHEDULES: &[(&str, &str, &str, u64)] = &[
    ("every-5m", "*/5 * * * *", "America/New_York", 300_000),
    ("nightly-0230", "30 2 * * *", "America/New_York", 86_400_000),
    ("every-10m-london", "*/10 * * * *", "Europe/London", 600_000),
];

/// A schedule whose runs hold concurrency key `c0` (limit 1) of the default tenant, as the
/// workload's jobs do: named so that its name's shard is not the key's, where the router
/// must place it (`schedule::home`).
const FLOW_SCHEDULE_NAMES: &[&str] = &["every-7m-c0", "every-7m-c0-b", "every-7m-c0-c", "every-7m-c0-d"];
/// The count check's period of `*/7 * * * *`: nine ticks an hour (the gap across the hour is
/// four minutes, so 7 minutes undercounts runs of several hours).
const FLOW_SCHEDULE_PERIOD: u64 = 400_000;

pub struct World {
    clock: Rc<Cell<u64>>,
    errors: Rc<RefCell<Vec<String>>>,
    pub shards: Vec<Shard<Sqlite, SimHost>>,
    alarms: Vec<Option<u64>>,
    queue: Vec<Msg>,
    edge_runs: Vec<Run>,
    /// Jobs seen sent that have no flow keys (see `know_flow`).
    plain: std::collections::BTreeSet<JobId>,
    stream: Vec<Entry>,
    consumers: Vec<Consumer>,
    late: Vec<(u64, JobEvent, Via)>,
    staged: Vec<(u16, edgejobs_shard::bugs::Staged)>,
    /// The chunks each job's accepted live updates sent, in order (#30).
    streams: BTreeMap<String, Vec<String>>,
    cfg: EdgeConfig,
    policy: SweepPolicy,
    pub faults: Faults,
    pub oracle: Oracle,
    schedules: Vec<(String, u16, u64)>,
    /// Per shard, where its re-seal continues (`None`: from the start).
    reseal_cursors: Vec<Option<String>>,
    started: u64,
    pub trace: Option<Vec<String>>,
    pub ops: u64,
    pub peak_jobs: usize,
    /// Numbers the flow workload's payloads (a debounce's last payload is recognisable).
    flow_serial: u64,
    /// The shard counts the deployment has had, as shard 0 recorded them.
    topology: edgejobs_core::topology::Topology,
    /// The edge's event work not done yet (workflows, see `world/workflows.rs`).
    edge_work: Vec<workflows::EdgeWork>,
    /// Numbers the events sent (their data's `n`).
    event_serial: u64,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("now", &self.clock.get()).finish_non_exhaustive()
    }
}

fn config() -> EdgeConfig {
    let vars: BTreeMap<&str, String> = BTreeMap::from([
        ("SHARD_COUNT", SHARDS.to_string()),
        ("IDEMPOTENCY_WINDOW", "60s".to_owned()),
        ("EDGEJOBS_API_KEYS", "ej_sim_jobs_key_0123456789,acme=ej_sim_acme_key_0123456789".to_owned()),
        ("EDGEJOBS_ADMIN_KEYS", "ej_sim_admin_key_0123456789".to_owned()),
        ("EDGEJOBS_CONSUMER_TOKEN", "ej_sim_consumer_token_0123456789".to_owned()),
        ("WEBHOOK_SIGNING_SECRET", "whsec_c2ltdWxhdGlvbi1zZWNyZXQtMDEyMzQ1Njc4OQ==".to_owned()),
        ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1".to_owned()),
        ("UPSTASH_REDIS_REST_TOKEN", "sim-token-0123456789".to_owned()),
        ("NATIVE_LEASE", "10s".to_owned()),
        // Mid-rotation: k2 seals, k1 still opens (jobs stored before the rotation; a re-seal
        // moves them to k2).
        ("PAYLOAD_ENCRYPTION_KEYS", format!("{RESEAL_NEW_KEY},{RESEAL_OLD_KEY}")),
    ]);
    match EdgeConfig::parse(|k| vars.get(k).cloned()) {
        Ok(c) => c,
        Err(errors) => panic!("the simulation's configuration is invalid: {errors:?}"),
    }
}

impl World {
    /// A world for `seed`. `bugs` are switched on in every shard.
    pub fn new(seed: u64, faults: Faults, bugs: edgejobs_shard::bugs::Bugs) -> World {
        let clock = Rc::new(Cell::new(START_MS));
        let rng = Rc::new(RefCell::new(Rng::new(seed ^ 0x005E_ED0F_5EED)));
        let errors = Rc::new(RefCell::new(Vec::new()));
        let shards = (0..SHARDS)
            .map(|n| {
                let host = SimHost { clock: clock.clone(), rng: rng.clone(), errors: errors.clone() };
                let db = Sqlite::memory().unwrap_or_else(|e| panic!("an in-memory database: {e}"));
                let mut shard = Shard::new(db, host, Some(n));
                shard.bugs = bugs.clone();
                edgejobs_shard::bugs::switch_flow(&bugs);
                if let Err(e) = shard.migrate() {
                    panic!("the shard schema: {e}");
                }
                shard
            })
            .collect();
        let mut w = World {
            clock,
            errors,
            shards,
            alarms: vec![None; SHARDS as usize],
            queue: Vec::new(),
            edge_runs: Vec::new(),
            plain: Default::default(),
            stream: Vec::new(),
            consumers: vec![Consumer::default(); 3],
            late: Vec::new(),
            staged: Vec::new(),
            streams: BTreeMap::new(),
            cfg: config(),
            policy: SweepPolicy { queued_after_ms: 15_000, active_grace_ms: 5_000, native_lease_ms: 3 * LEASE_MS },
            faults,
            oracle: Oracle::new(SHARDS as usize),
            schedules: Vec::new(),
            reseal_cursors: vec![None; SHARDS as usize],
            started: START_MS,
            trace: None,
            ops: 0,
            peak_jobs: 0,
            flow_serial: 0,
            topology: edgejobs_core::topology::Topology::single(INITIAL_SHARDS),
            edge_work: Vec::new(),
            event_serial: 0,
        };
        w.record_topology(INITIAL_SHARDS);
        w.create_schedules();
        w
    }

    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let at = edgejobs_core::time::format_rfc3339(self.clock.get());
            t.push(format!("{at} {}", line()));
        }
    }

    fn create_schedules(&mut self) {
        for (name, cron, tz, period) in SCHEDULES {
            let body = json!({ "name": name, "cron": cron, "timezone": tz, "job": { "type": "noop" } });
            let def = match edgejobs_core::schedule::parse_create(&body, self.now(), &self.cfg.types) {
                Ok(d) => d,
                Err(e) => panic!("schedule {name}: {}", e.message),
            };
            let shard = self.topology.schedule_home(name);
            let op = ScheduleOp::Create { schedule: Box::new(def.schedule) };
            match self.shards[shard as usize].schedules(op, &self.cfg) {
                Ok((_, effects, _)) => self.effects(shard, effects),
                Err(e) => panic!("schedule {name}: {e:?}"),
            }
            self.rearm(shard);
            self.schedules.push(((*name).to_owned(), shard, *period));
        }
        self.create_flow_schedule();
    }

    /// The schedule of [`FLOW_SCHEDULE_NAMES`], placed as the router places it: on its runs'
    /// flow key's shard, its name kept at its name's shard.
    fn create_flow_schedule(&mut self) {
        let job = json!({ "type": "noop", "concurrency": { "key": "c0", "limit": 1 } });
        let defs = FLOW_SCHEDULE_NAMES.iter().map(|name| {
            let body = json!({ "name": name, "cron": "*/7 * * * *", "timezone": "UTC", "job": job });
            match edgejobs_core::schedule::parse_create(&body, self.now(), &self.cfg.types) {
                Ok(d) => d,
                Err(e) => panic!("schedule {name}: {}", e.message),
            }
        });
        let home = |d: &edgejobs_core::schedule::Definition| {
            edgejobs_core::schedule::home(&d.schedule.name, &d.spec, self.cfg.webhook_concurrency, &self.topology)
        };
        let mut defs: Vec<_> = defs.collect();
        let Some(i) = defs.iter().position(|d| home(d) != self.topology.schedule_home(&d.schedule.name)) else {
            panic!("every flow schedule name hashes to its key's shard");
        };
        let def = defs.swap_remove(i);
        let name = def.schedule.name.clone();
        let named = self.topology.schedule_home(&name);
        let shard = if self.shards[0].bugs.schedule_misplaced { named } else { home(&def) };
        if shard != named {
            let claim = ScheduleOp::Claim { name: name.clone(), home: shard };
            if let Err(e) = self.shards[named as usize].schedules(claim, &self.cfg) {
                panic!("schedule {name}: {e:?}");
            }
        }
        let op = ScheduleOp::Create { schedule: Box::new(def.schedule) };
        match self.shards[shard as usize].schedules(op, &self.cfg) {
            Ok((_, effects, _)) => self.effects(shard, effects),
            Err(e) => panic!("schedule {name}: {e:?}"),
        }
        self.rearm(shard);
        self.schedules.push((name, shard, FLOW_SCHEDULE_PERIOD));
    }

    /// Carries out a committed operation's effects: messages to the queue (dropped,
    /// duplicated, delayed by the faults), the alarm.
    fn effects(&mut self, shard: u16, effects: Effects) {
        for (lane, r) in effects.enqueue {
            self.know_flow(&r.id);
            self.oracle.flow_sent(r.id.as_str(), r.attempt);
            self.send(lane, r);
        }
        if effects.alarm.is_some() {
            self.rearm(shard);
        }
    }

    /// Makes sure the simulation knows a job it sees sent for the first time that it did
    /// not create itself (a schedule's run): its flow keys, read from its shard.
    fn know_flow(&mut self, id: &JobId) {
        if self.oracle.flow.jobs.contains_key(id.as_str()) || self.plain.contains(id) {
            return;
        }
        let db = &self.shards[id.shard() as usize].db;
        match edgejobs_shard::store::load(db, id).ok().flatten().as_ref().and_then(crate::oracle::FlowJob::of) {
            Some(f) => {
                self.oracle.flow.jobs.insert(id.to_string(), f);
            }
            None => {
                self.plain.insert(id.clone());
            }
        }
    }

    fn send(&mut self, lane: Lane, r: JobRef) {
        let mut rng = Rng::new(self.now() ^ 0x51 ^ r.attempt as u64 ^ self.queue.len() as u64);
        if rng.chance(self.faults.drop) {
            let id = r.id.clone();
            self.note(|| format!("queue drops {id}"));
            return;
        }
        let copies = if rng.chance(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now() + rng.below(self.faults.max_delay_ms + 1);
            self.queue.push(Msg { at, lane, r: r.clone() });
        }
    }

    fn rearm(&mut self, shard: u16) {
        let s = &self.shards[shard as usize];
        self.alarms[shard as usize] = match s.next_wake() {
            Ok(at) => at,
            Err(e) => {
                self.errors.borrow_mut().push(format!("next_wake: {e:?}"));
                None
            }
        };
    }

    fn apply(
        &mut self,
        shard: u16,
        events: Vec<JobEvent>,
    ) -> Vec<Result<edgejobs_core::protocol::Applied, edgejobs_core::machine::Refusal>> {
        let s = &self.shards[shard as usize];
        match s.settle(s.apply_many(ApplyMany { events, full: false, tenant: None })) {
            Ok((answers, effects)) => {
                self.effects(shard, effects);
                answers
            }
            Err(_) => Vec::new(),
        }
    }

    /// An edge runner's outcomes, as the edge consumer reports them (`finish_many`): every
    /// other call takes up to 3 of the jobs they let start, which run as delivered ones do
    /// (a taken job is a new admission: the pause and limit checks see it).
    fn finish(
        &mut self,
        shard: u16,
        events: Vec<JobEvent>,
    ) -> Vec<Result<edgejobs_core::protocol::Applied, edgejobs_core::machine::Refusal>> {
        let take = if self.ops.is_multiple_of(2) { 3 } else { 0 };
        let s = &self.shards[shard as usize];
        match s.settle(s.finish_many(FinishMany { events, take })) {
            Ok((finished, effects)) => {
                self.effects(shard, effects);
                for job in finished.next {
                    self.know_flow(&job.id);
                    self.oracle.flow.taken += 1;
                    self.oracle.flow_sent(job.id.as_str(), job.attempt);
                    let mut rng = Rng::new(self.now() ^ 0x7a ^ job.attempt as u64 ^ self.edge_runs.len() as u64);
                    let end = Self::outcome(&mut rng, &self.faults);
                    let (id, attempt) = (job.id, job.attempt);
                    self.note(|| format!("finish takes {id} attempt {attempt} (edge): started"));
                    self.edge_runs.push(Run {
                        id,
                        attempt,
                        at: self.now() + rng.below(4_000),
                        end,
                        via: Via::Edge,
                        wf: None,
                    });
                }
                finished.answers
            }
            Err(_) => Vec::new(),
        }
    }

    /// One job's row, read now.
    fn row(&self, id: &JobId) -> Option<Seen> {
        let q = "SELECT state, json_extract(doc, '$.attempt'), updated_at,
                 (SELECT count(*) FROM live WHERE live.job = jobs.id) FROM jobs WHERE id = ?";
        let rows = self.shards[id.shard() as usize].db.rows(q, &[edgejobs_shard::sql::text(id.as_str())]).ok()?;
        let mut c = Cols::new(rows.into_iter().next()?);
        Some(Seen { state: c.text().ok()?, attempt: c.u64().ok()?, updated_at: c.u64().ok()?, chunks: c.u64().ok()? })
    }

    /// Native consumers' reports, through the consumer route's operation.
    fn report_many(
        &mut self,
        shard: u16,
        reports: Vec<Report>,
    ) -> Vec<Result<edgejobs_core::protocol::Applied, edgejobs_core::machine::Refusal>> {
        let s = &self.shards[shard as usize];
        match s.settle(s.report_many(ReportMany { reports, consumer: "sim".into(), full: false })) {
            Ok((answers, effects)) => {
                self.effects(shard, effects);
                answers
            }
            Err(_) => Vec::new(),
        }
    }

    /// A job's lane and live lease token, read now.
    fn lease_of(&self, id: &JobId) -> Option<(String, Option<String>)> {
        let q = "SELECT json_extract(doc, '$.lane'), json_extract(doc, '$.lease') FROM jobs WHERE id = ?";
        let rows = self.shards[id.shard() as usize].db.rows(q, &[edgejobs_shard::sql::text(id.as_str())]).ok()?;
        let mut c = Cols::new(rows.into_iter().next()?);
        Some((c.text().ok()?, c.opt_text().ok()?))
    }

    /// A report, applied and answered (`via` the edge's own events or a consumer's route).
    /// A report naming an attempt that is not the job's current running one must change
    /// nothing, and so must a consumer's report that does not carry the job's live lease
    /// token (a forged one, an edge-lane job's): its row is read just before and just
    /// after, so nothing else can be blamed.
    fn report(&mut self, id: JobId, event: Event, via: Via) -> bool {
        self.report_answer(id, event, via).is_some_and(|a| a.is_ok())
    }

    /// [`report`](Self::report), answered as the shard answered.
    fn report_answer(
        &mut self,
        id: JobId,
        event: Event,
        via: Via,
    ) -> Option<Result<edgejobs_core::protocol::Applied, edgejobs_core::machine::Refusal>> {
        let attempt = match &event {
            Event::Heartbeat { attempt, .. }
            | Event::Complete { attempt, .. }
            | Event::Fail { attempt, .. }
            | Event::Step { attempt, .. }
            | Event::Update { attempt, .. } => *attempt,
            _ => 0,
        };
        let before = self.row(&id);
        let stale = before.as_ref().filter(|b| b.state != "active" || b.attempt != attempt as u64).cloned();
        // A consumer's report other than a start or a takeover without the live token, or
        // any consumer report about an edge-lane job.
        let unleased = match (&via, self.lease_of(&id)) {
            (Via::Consumer(held), Some((lane, live))) => {
                let reports = !matches!(event, Event::Start { .. } | Event::Reclaim { .. });
                lane == "edge" || (reports && (held.is_none() || *held != live))
            }
            _ => false,
        };
        let unleased = before.clone().filter(|_| unleased);
        let shard = id.shard();
        let name = match &event {
            Event::Step { step: edgejobs_core::workflow::StepReport::Fail { name, .. }, .. } => {
                format!("step {name} (failed)")
            }
            Event::Step { step, .. } => format!("step {}", step.name()),
            e => e.name().to_owned(),
        };
        let answers = match via {
            Via::Edge => self.finish(shard, vec![JobEvent { id: id.clone(), event }]),
            Via::Consumer(lease) => self.report_many(shard, vec![Report::new(id.clone(), event, lease)]),
        };
        let ok = answers.first().is_some_and(Result::is_ok);
        if let Some(was) = stale {
            let now = self.row(&id);
            self.oracle.stale_report(id.as_str(), &was, now.as_ref());
        }
        if let Some(was) = unleased {
            let now = self.row(&id);
            self.oracle.unleased_report(id.as_str(), &was, now.as_ref());
        }
        self.note(|| format!("report {name} attempt {attempt} of {id}: {}", if ok { "accepted" } else { "refused" }));
        answers.into_iter().next()
    }

    fn outcome(rng: &mut Rng, faults: &Faults) -> End {
        if rng.chance(faults.crash) {
            End::Crash
        } else if rng.chance(0.25) {
            End::Fail
        } else {
            End::Complete
        }
    }

    fn end_event(run: &Run) -> Option<Event> {
        match run.end {
            End::Complete => Some(Event::Complete { attempt: run.attempt, result: None }),
            End::Fail => Some(Event::Fail {
                attempt: run.attempt,
                error: "simulated failure".into(),
                disposition: Disposition::Retryable,
            }),
            End::Crash => None,
        }
    }

    /// One step: moves the clock, does the action, checks the invariants on what it touched.
    pub fn step(&mut self, a: Action) {
        self.clock.set(self.clock.get() + a.dt);
        let due = GROWTHS.iter().find(|(at, count)| *count > self.topology.count() && self.now() >= self.started + at);
        if let Some((_, count)) = due {
            self.record_topology(*count);
        }
        self.ops += 1;
        let mut rng = Rng::new(a.r);
        let mut allow = Allow::default();
        let touched = self.act(a.kind, &mut rng, &mut allow);
        // Every touched shard is observed before the flow checks, which count a key's
        // holders across shards.
        for &shard in &touched {
            let rows = self.rows(shard);
            self.oracle.observe(shard as usize, rows, &allow);
        }
        if !touched.is_empty() {
            self.oracle.flow_limits();
        }
        for shard in touched {
            self.check_flow(shard);
        }
        if self.ops.is_multiple_of(crate::traces::CHECK_EVERY) {
            self.check_traces();
        }
        let errors = self.errors.borrow().clone();
        self.oracle.storage(&errors);
        if self.ops.is_multiple_of(100) {
            self.peak_jobs = self.peak_jobs.max(self.jobs());
        }
        if self.ops.is_multiple_of(5000) && std::env::var_os("SIM_DEBUG").is_some() {
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for m in &self.oracle.rows {
                for s in m.values() {
                    *by.entry(s.state.as_str()).or_default() += 1;
                }
            }
            eprintln!("step {}: {by:?} queue {} stream {}", self.ops, self.queue.len(), self.stream.len());
        }
    }

    /// The shards whose rows the action may have changed.
    fn act(&mut self, kind: Kind, rng: &mut Rng, allow: &mut Allow) -> Vec<u16> {
        let any_shard = rng.below(SHARDS as u64) as u16;
        match kind {
            Kind::Enqueue => self.enqueue(any_shard, rng),
            Kind::Deliver => {
                // A batch of due messages, picked in any order, as a queue consumer gets them.
                let now = self.now();
                let mut due: Vec<usize> = (0..self.queue.len()).filter(|i| self.queue[*i].at <= now).collect();
                let n = 1 + rng.below(16) as usize;
                let mut batch = Vec::new();
                while batch.len() < n && !due.is_empty() {
                    let k = rng.below(due.len() as u64) as usize;
                    batch.push(due.swap_remove(k));
                }
                batch.sort_unstable_by(|a, b| b.cmp(a));
                let msgs: Vec<Msg> = batch.into_iter().map(|i| self.queue.swap_remove(i)).collect();
                let mut touched = BTreeSet::new();
                for m in msgs {
                    touched.insert(m.r.id.shard());
                    self.deliver(m, rng);
                }
                touched.into_iter().collect()
            }
            Kind::EdgeFinish => {
                let mut touched = BTreeSet::new();
                for _ in 0..1 + rng.below(8) {
                    touched.extend(self.edge_finish(rng));
                }
                touched.into_iter().collect()
            }
            Kind::LateReport => {
                let now = self.now();
                let due: Vec<usize> = (0..self.late.len()).filter(|i| self.late[*i].0 <= now).collect();
                let Some(&i) = rng.pick(&due) else { return vec![] };
                let (_, e, via) = self.late.swap_remove(i);
                let shard = e.id.shard();
                let run = match &e.event {
                    Event::Step { step: edgejobs_core::workflow::StepReport::Run { seq, .. }, .. } => Some(*seq),
                    _ => None,
                };
                let key = e.id.to_string();
                if self.report(e.id, e.event, via)
                    && let Some(seq) = run
                {
                    self.oracle.wf_recorded(&key, seq as usize);
                }
                vec![shard]
            }
            Kind::NativeTake => {
                let mut touched = BTreeSet::new();
                for _ in 0..1 + rng.below(8) {
                    touched.extend(self.native_take(rng));
                }
                touched.into_iter().collect()
            }
            Kind::NativeBeat => self.native_beat(rng),
            Kind::NativeFinish => {
                let mut touched = BTreeSet::new();
                for _ in 0..1 + rng.below(8) {
                    touched.extend(self.native_finish(rng));
                }
                touched.into_iter().collect()
            }
            Kind::NativePause => {
                let c = rng.below(self.consumers.len() as u64) as usize;
                let until = self.now() + LEASE_MS + rng.below(3 * LEASE_MS);
                self.consumers[c].paused_until = until;
                self.note(|| format!("consumer {c} pauses past its lease"));
                vec![]
            }
            Kind::NativeCrash => {
                if !rng.chance(self.faults.crash * 10.0) {
                    return vec![];
                }
                let c = rng.below(self.consumers.len() as u64) as usize;
                self.consumers[c].holds.clear();
                self.note(|| format!("consumer {c} crashes"));
                vec![]
            }
            Kind::NativeReclaim => self.native_reclaim(rng),
            Kind::Forge => self.forge(rng),
            Kind::Cancel => {
                let shard = any_shard as usize;
                let open: Vec<&String> =
                    self.oracle.rows[shard].iter().filter(|(_, s)| !is_final(&s.state)).map(|(id, _)| id).collect();
                let Some(id) = rng.pick(&open).map(|s| (*s).clone()) else { return vec![] };
                let Ok(id) = id.parse::<JobId>() else { return vec![] };
                let answers = self.apply(any_shard, vec![JobEvent { id: id.clone(), event: Event::Cancel }]);
                if let Some(Ok(a)) = answers.first() {
                    if a.state.as_str() == "cancelled" {
                        self.oracle.cancelled.insert(id.to_string());
                    }
                    let state = a.state.as_str();
                    self.note(|| format!("cancel {id}: {state}"));
                }
                vec![any_shard]
            }
            Kind::CrossTenant => self.cross_tenant(any_shard, rng),
            Kind::Replay => {
                let s = &self.shards[any_shard as usize];
                let r = ReplayDead {
                    job_type: None,
                    tag: None,
                    from_ms: None,
                    to_ms: None,
                    limit: 1 + rng.below(5) as u32,
                    tenant: None,
                };
                if let Ok((ids, effects)) = s.settle(s.replay_dead(r)) {
                    allow.replayed.extend(ids.iter().map(|i| i.to_string()));
                    let n = ids.len();
                    self.note(|| format!("replay dead on shard {any_shard}: {n}"));
                    self.effects(any_shard, effects);
                }
                vec![any_shard]
            }
            Kind::Alarm => {
                let now = self.now();
                let due = self.alarms[any_shard as usize].is_some_and(|at| at <= now);
                if !due && !rng.chance(self.faults.alarm_twice) {
                    return vec![];
                }
                self.alarm(any_shard);
                vec![any_shard]
            }
            Kind::Sweep => {
                self.sweep(any_shard);
                vec![any_shard]
            }
            Kind::BackupRestore => {
                self.backup_restore(any_shard);
                vec![any_shard]
            }
            Kind::Retention => {
                self.retention(any_shard, allow);
                vec![any_shard]
            }
            Kind::WriteStaged => self.write_staged(rng),
            Kind::Reseal => self.reseal(any_shard, rng),
            Kind::SendEvent => self.send_event(rng),
            Kind::EdgeEvents => self.edge_events(rng),
            Kind::FlowPause => {
                // Pauses are short (about a minute): half the time one of them ends.
                let paused: Vec<edgejobs_core::flow::Target> = self.oracle.flow.paused.values().cloned().collect();
                match rng.pick(&paused).cloned() {
                    Some(target) if rng.chance(0.5) => self.set_paused(target, false),
                    _ => {
                        let target = crate::flow::target(rng, TENANTS);
                        let paused = !self.oracle.flow.paused.contains_key(&target.stored());
                        self.set_paused(target, paused)
                    }
                }
            }
        }
    }

    /// Starts the deployment with `count` shards (shard 0 records a growth).
    fn record_topology(&mut self, count: u16) {
        let s = &self.shards[0];
        match s.settle(s.topology(edgejobs_core::protocol::TopologyOp { configured: count })) {
            Ok(t) => self.topology = t,
            Err(e) => panic!("shard 0 refused the topology: {}", e.message),
        }
        self.note(|| format!("SHARD_COUNT is {count}"));
    }

    /// Where a keyed job goes: its home under the newest count once any earlier home
    /// (within the window after a growth) did not answer the claim with the key's job
    /// (`Err(job id)`), as the router does. A router that has not seen a recent growth
    /// goes straight to the old home.
    fn route_keyed(&mut self, key: &str, scoped: &str, rng: &mut Rng) -> Result<u16, String> {
        let now = self.now();
        let grown = self.topology.epochs.last().map_or(0, |e| e.since_ms);
        let n = self.topology.epochs.len();
        if n > 1 && now < grown + STALE_ROUTER_MS && rng.chance(0.5) {
            return Ok(edgejobs_core::id::shard_for_key(key, self.topology.epochs[n - 2].count));
        }
        let route = self.topology.route_key(key, now, WINDOW_MS);
        for old in route.claim_first {
            let claims = vec![edgejobs_core::protocol::KeyClaim { key: scoped.to_owned(), to: route.home }];
            let s = &self.shards[old as usize];
            let answer =
                s.settle(s.claim_keys(edgejobs_core::protocol::ClaimKeys { claims, idempotency_window_ms: WINDOW_MS }));
            if let Ok(mut got) = answer
                && let Some(Some(job)) = got.pop()
            {
                let id = serde_json::from_str::<serde_json::Value>(job.get())
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                self.note(|| format!("key {key} claimed at its old home {old}: {id}"));
                return Err(id);
            }
        }
        Ok(route.home)
    }

    /// Enqueues one to three jobs as the router does: a job with an idempotency key goes to
    /// its shard ([`World::route_keyed`]), the others to `keyless`; one create call per shard.
    fn enqueue(&mut self, keyless: u16, rng: &mut Rng) -> Vec<u16> {
        // Contexts (#32), callbacks (#30) and children (#29) are drawn apart from the rest.
        let mut side = rng.fork(0x7ACE_CA11);
        let n = 1 + rng.below(3);
        let now = self.now();
        let keyless = keyless % self.topology.count();
        let mut by_shard: BTreeMap<u16, Vec<edgejobs_core::Job>> = BTreeMap::new();
        let mut specs: BTreeMap<String, edgejobs_core::spec::JobSpec> = BTreeMap::new();
        let mut last_key: Option<String> = None;
        let mut windows: BTreeMap<String, crate::flow::Window> = BTreeMap::new();
        for _ in 0..n {
            if rng.chance(WORKFLOW_SHARE) {
                // A workflow run (#29): a native job whose handler's steps are recorded.
                let tenant = TENANTS[rng.below(TENANTS.len() as u64) as usize];
                let mut job = self.workflow_job(keyless, tenant, rng, &mut side);
                self.traced(&mut job, Some(crate::traces::new_context(&mut side)));
                by_shard.entry(keyless).or_default().push(job);
                continue;
            }
            let native = rng.chance(0.35);
            let mut body = json!({ "type": if native { "sleep" } else { "noop" }, "max_attempts": 1 + rng.below(3) });
            if rng.chance(0.2) {
                body["delay"] = json!(1_000 + rng.below(20_000));
            }
            let mut shard = keyless;
            // Both tenants draw keys from one small pool: equal keys of two tenants are two.
            let tenant = TENANTS[rng.below(TENANTS.len() as u64) as usize];
            body["tenant"] = json!(tenant);
            if rng.chance(0.3) {
                // A flow-controlled job, placed as the router places it: on its flow key's shard.
                let mut f = Rng::new(rng.next_u64());
                self.flow_serial += 1;
                let window = crate::flow::spec(&mut f, &mut body, tenant, self.flow_serial);
                let spec = match edgejobs_core::spec::parse_spec_in(&body, now, &self.cfg.types) {
                    Ok(s) => s,
                    Err(e) => panic!("a simulated flow spec is invalid: {} ({body})", e.message),
                };
                let flow = match edgejobs_core::spec::flow_of(&spec, self.cfg.webhook_concurrency) {
                    Ok(f) => f,
                    Err(e) => panic!("a simulated flow spec does not resolve: {} ({body})", e.message),
                };
                let t = spec.tenant.clone().unwrap_or_default();
                let shard = edgejobs_core::flow::home(flow.as_ref(), &t, &self.topology).unwrap_or(keyless);
                let rand = self.shards[0].host.random_u64();
                let mut job = spec.into_job(JobId::new(shard, now, rand), now).0;
                job.flow = flow;
                self.traced(&mut job, Some(crate::traces::new_context(&mut side)));
                if let Some(w) = window {
                    windows.insert(job.id.to_string(), w);
                }
                by_shard.entry(shard).or_default().push(job);
                continue;
            }
            if rng.chance(0.35) {
                // Often the key of the item before: two requests with one key in one round.
                let key = match &last_key {
                    Some(k) if rng.chance(0.5) => k.clone(),
                    _ => format!("k{}", rng.below(8)),
                };
                let scoped = edgejobs_core::tenant::Tenant::parse(tenant)
                    .map(|t| t.scope_key(&key))
                    .unwrap_or_else(|e| panic!("tenant {tenant}: {e:?}"));
                match self.route_keyed(&key, &scoped, rng) {
                    Ok(home) => shard = home,
                    Err(id) => {
                        // The key's old home answered with its job: nothing is created.
                        self.oracle.acked.insert(id.clone());
                        self.oracle.keyed(&scoped, &id, now, WINDOW_MS);
                        continue;
                    }
                }
                last_key = Some(key.clone());
                body["idempotency_key"] = json!(key);
            } else if rng.chance(0.05) {
                // A caller takes the key of a schedule's next run, in the schedule's shard
                // (where the hash may put it): it must be refused there too.
                let (name, sched_shard, period) = self.schedules[0].clone();
                let tick = (now / period + 1) * period;
                body["idempotency_key"] =
                    json!(format!("schedule:{name}:{}", edgejobs_core::time::format_rfc3339(tick)));
                body["tenant"] = json!("default");
                shard = sched_shard;
            }
            // Completion callbacks (#30): their jobs continue their job's trace (#32).
            if side.chance(0.1) {
                body["on_complete"] = json!({ "job": { "type": "noop", "payload": { "cb": "complete" } } });
            }
            if side.chance(0.1) {
                body["on_fail"] = json!({ "job": { "type": "noop", "max_attempts": 1 } });
            }
            let spec = match edgejobs_core::spec::parse_enqueue_in(&body, now, &self.cfg.types) {
                Ok(s) => s,
                Err(e) => panic!("a simulated spec is invalid: {} ({body})", e.message),
            };
            let rand = self.shards[0].host.random_u64();
            let mut job = spec.clone().into_job(JobId::new(shard, now, rand), now).0;
            self.traced(&mut job, Some(crate::traces::new_context(&mut side)));
            specs.insert(job.id.to_string(), spec);
            by_shard.entry(shard).or_default().push(job);
        }
        let mut touched: Vec<u16> = by_shard.keys().copied().collect();
        let mut moved: Vec<(u16, edgejobs_core::Job)> = Vec::new();
        self.create_at(by_shard, &mut moved, &windows);
        // A key that moved after a growth: the client's retry, routed afresh, creates it at
        // the new home the old one named.
        let mut again: BTreeMap<u16, Vec<edgejobs_core::Job>> = BTreeMap::new();
        for (to, job) in moved {
            if let Some(spec) = specs.get(job.id.as_str()) {
                let rand = self.shards[0].host.random_u64();
                let mut retry = spec.clone().into_job(JobId::new(to, now, rand), now).0;
                // The client's retry sends its `traceparent` again: the router continues it.
                self.traced(&mut retry, job.trace.clone());
                again.entry(to).or_default().push(retry);
                touched.push(to);
            }
        }
        self.create_at(again, &mut Vec::new(), &windows);
        touched
    }

    /// Gives `job` the context the router gives it at enqueue (#32), remembered as the one it
    /// is created with, and announces its callback jobs, which must continue it.
    fn traced(&mut self, job: &mut edgejobs_core::Job, context: Option<edgejobs_core::trace::TraceContext>) {
        job.trace = context;
        let id = job.id.to_string();
        self.oracle.traces.created(&id, job.trace.as_ref());
        for cb in job.on_complete.iter().chain(job.on_fail.iter()) {
            self.oracle.traces.origin(cb.id.as_str(), crate::traces::Origin::Callback { job: id.clone() });
        }
    }

    /// Every shard's stored contexts against the ones their jobs were created with (and each
    /// new child's and callback job's against its origin's).
    fn check_traces(&mut self) {
        let q = "SELECT id, json_extract(doc, '$.trace.traceparent'), json_extract(doc, '$.trace.tracestate')
                 FROM jobs ORDER BY id";
        for shard in 0..SHARDS {
            let mut stored = Vec::new();
            let r = self.shards[shard as usize].db.scan(q, &[], &mut |row| {
                let mut c = Cols::new(row);
                if let (Ok(id), Ok(parent), Ok(state)) = (c.text(), c.opt_text(), c.opt_text()) {
                    // A stored context that no longer reads as one is held as none.
                    let context = parent.and_then(|p| edgejobs_core::trace::TraceContext::parse(&p, state.as_deref()));
                    stored.push((id, context));
                }
                true
            });
            if let Err(e) = r {
                self.errors.borrow_mut().push(format!("reading traces: {e}"));
            }
            self.oracle.traces(stored);
        }
    }

    /// One create call per shard; jobs whose key moved away are handed back with their new home.
    fn create_at(
        &mut self,
        by_shard: BTreeMap<u16, Vec<edgejobs_core::Job>>,
        moved: &mut Vec<(u16, edgejobs_core::Job)>,
        windows: &BTreeMap<String, crate::flow::Window>,
    ) {
        let now = self.now();
        for (shard, jobs) in by_shard {
            let sent = jobs.clone();
            // Each debounce key's open window before this create: its job, still scheduled
            // and never run.
            let mut open: BTreeMap<String, Option<String>> = BTreeMap::new();
            // The answers show the jobs as this create left them: a key's last payload of
            // the call wins for every one of its answers.
            let mut last: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            for j in &jobs {
                if let Some(crate::flow::Window::Debounce(key, _, _, payload)) = windows.get(j.id.as_str()) {
                    last.insert(key.clone(), payload.clone());
                }
            }
            for j in &jobs {
                if let Some(crate::flow::Window::Debounce(key, ..)) = windows.get(j.id.as_str()) {
                    let known = self.oracle.flow.debounce.get(key).map(|(id, _)| id.clone());
                    let still = known.filter(|id| {
                        id.parse::<JobId>()
                            .ok()
                            .and_then(|id| self.row(&id))
                            .is_some_and(|r| r.state == "scheduled" && r.attempt == 0)
                    });
                    open.insert(key.clone(), still);
                }
            }
            let keys: Vec<Option<String>> = jobs.iter().map(|j| j.scoped_key()).collect();
            let s = &self.shards[shard as usize];
            match s.settle(s.create(jobs, WINDOW_MS)) {
                Ok((stored, effects)) => {
                    for ((st, key), job) in stored.iter().zip(keys).zip(sent) {
                        if let Some(to) = st.moved_to {
                            self.note(|| format!("enqueue {}: its key moved to shard {to}", job.id));
                            moved.push((to, job));
                            continue;
                        }
                        let doc = serde_json::from_str::<serde_json::Value>(st.job.get()).unwrap_or_default();
                        let id = doc.get("id").and_then(|i| i.as_str()).map(str::to_owned).unwrap_or_default();
                        self.flow_answer(&job, (&id, st.created, st.flow), &doc, windows, (&mut open, &last));
                        if id.is_empty() {
                            // Over a throttle that rejects: nothing was created.
                            continue;
                        }
                        self.oracle.acked.insert(id.clone());
                        if let Some(k) = key {
                            self.oracle.keyed(&k, &id, now, WINDOW_MS);
                        }
                        let created = st.created;
                        self.note(|| format!("enqueue {id} on shard {shard} (created: {created})"));
                    }
                    self.effects(shard, effects);
                    // The last payload wins: each key's window job holds the call's last.
                    for (key, payload) in &last {
                        let Some(Some(id)) = open.get(key) else { continue };
                        let q = "SELECT json_extract(doc, '$.payload') FROM jobs WHERE id = ?";
                        let s = &self.shards[shard as usize];
                        let stored =
                            s.db.rows(q, &[edgejobs_shard::sql::text(id.as_str())])
                                .ok()
                                .and_then(|r| r.into_iter().next())
                                .and_then(|r| Cols::new(r).text().ok())
                                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
                        self.oracle.debounce_payload(key, id, stored.as_ref(), payload);
                    }
                }
                Err(e) => self.note(|| format!("enqueue refused: {}", e.message)),
            }
        }
    }

    /// Another tenant reads and cancels a job by its id: it must be answered as a missing
    /// job and stay exactly as it was.
    fn cross_tenant(&mut self, shard: u16, rng: &mut Rng) -> Vec<u16> {
        let ids: Vec<&String> = self.oracle.rows[shard as usize].keys().collect();
        let Some(id) = rng.pick(&ids).map(|s| (*s).clone()) else { return vec![] };
        let Ok(id) = id.parse::<JobId>() else { return vec![] };
        let q = "SELECT tenant FROM jobs WHERE id = ?";
        let s = &self.shards[shard as usize];
        let owner = match s.db.rows(q, &[edgejobs_shard::sql::text(id.as_str())]) {
            Ok(rows) => rows.into_iter().next().and_then(|r| Cols::new(r).text().ok()),
            Err(_) => None,
        };
        let Some(owner) = owner else { return vec![] };
        let other = TENANTS.iter().find(|t| **t != owner).copied().unwrap_or("acme");
        let other = edgejobs_core::tenant::Tenant::parse(other).ok();
        let before = self.row(&id);
        let read = s.get(edgejobs_core::protocol::Get { id: id.clone(), tenant: other.clone(), wait_ms: 0 });
        let events = vec![JobEvent { id: id.clone(), event: Event::Cancel }];
        let answers = match s.settle(s.apply_many(ApplyMany { events, full: false, tenant: other })) {
            Ok((answers, effects)) => {
                self.effects(shard, effects);
                answers
            }
            Err(_) => Vec::new(),
        };
        let after = self.row(&id);
        let refused = answers
            .first()
            .is_none_or(|a| a.as_ref().is_err_and(|r| r.code() == edgejobs_core::ErrorCode::JobNotFound));
        self.oracle.cross_tenant(id.as_str(), read.is_err() && refused, before.as_ref(), after.as_ref());
        self.note(|| format!("tenant {owner}'s job {id} read and cancelled by another tenant: refused"));
        vec![shard]
    }

    fn deliver(&mut self, m: Msg, rng: &mut Rng) {
        let shard = m.r.id.shard();
        let id = m.r.id.clone();
        let attempt = m.r.attempt;
        match m.lane {
            Lane::Edge => {
                if self.shards[shard as usize].bugs.stale_overwrite {
                    let s = &self.shards[shard as usize];
                    let events = vec![JobEvent { id: id.clone(), event: Event::Start { attempt } }];
                    if let Ok(staged) = s.settle(s.stage_apply(ApplyMany { events, full: false, tenant: None })) {
                        self.staged.push((shard, staged));
                    }
                    self.note(|| format!("deliver {id} attempt {attempt}: start staged"));
                    return;
                }
                let answers = self.apply(shard, vec![JobEvent { id: id.clone(), event: Event::Start { attempt } }]);
                let started = answers.first().is_some_and(Result::is_ok);
                self.note(|| {
                    format!("deliver {id} attempt {attempt} (edge): {}", if started { "started" } else { "refused" })
                });
                if started {
                    let end = Self::outcome(rng, &self.faults);
                    self.edge_runs.push(Run {
                        id,
                        attempt,
                        at: self.now() + rng.below(4_000),
                        end,
                        via: Via::Edge,
                        wf: None,
                    });
                }
            }
            Lane::Native => {
                let entry = format!("{}-{}", self.now(), rng.below(1000));
                self.stream.push(Entry { id: id.clone(), attempt, owner: None, idle_since: self.now() });
                let s = &self.shards[shard as usize];
                let h = edgejobs_core::plan::Handoff { id: id.clone(), attempt, entry };
                let _ = s.settle(s.handoff_many(HandoffMany { entries: vec![h] }));
                self.note(|| format!("deliver {id} attempt {attempt} (native): handed off"));
            }
        }
    }
    /// A job stored before the payload key's rotation (its header sealed under the old key
    /// alone), then one page of the shard's re-seal: every sealed value of the shard must
    /// still open, with the configured keys, to what was sealed (`s-<job id>`).
    fn reseal(&mut self, shard: u16, rng: &mut Rng) -> Vec<u16> {
        let now = self.now();
        let body = json!({ "type": "noop", "tenant": "default", "payload": { "headers": { "authorization": "x" } } });
        let Ok(spec) = edgejobs_core::spec::parse_spec_in(&body, now, &self.cfg.types) else { return vec![] };
        let s = &self.shards[shard as usize];
        let mut job = spec.into_job(JobId::new(shard, now, s.host.random_u64()), now).0;
        job.payload["headers"]["authorization"] = json!(format!("s-{}", job.id));
        let old = edgejobs_core::seal::Keys::parse(RESEAL_OLD_KEY).unwrap_or_else(|e| panic!("the old key: {e}"));
        let id = job.id.to_string();
        if edgejobs_core::seal::seal_headers(&mut job.payload, &id, &old, &mut || s.host.random_nonce()).is_err() {
            return vec![];
        }
        // Stored before #32: no context, and a re-seal must not give it one.
        self.oracle.traces.created(&id, None);
        match s.settle(s.create(vec![job], WINDOW_MS)) {
            Ok((_, effects)) => {
                self.oracle.acked.insert(id.clone());
                self.effects(shard, effects);
            }
            Err(e) => self.note(|| format!("legacy enqueue refused: {}", e.message)),
        }
        let s = &self.shards[shard as usize];
        let r = edgejobs_core::protocol::Reseal {
            after: self.reseal_cursors[shard as usize].clone(),
            limit: 1 + rng.below(4) as u32,
        };
        match s.settle(s.reseal(r, &self.cfg.payload_keys)) {
            Ok(report) => {
                self.reseal_cursors[shard as usize] = report.cursor.clone();
                self.note(|| format!("reseal shard {shard}: {report:?}"));
            }
            Err(e) => self.note(|| format!("reseal refused: {}", e.message)),
        }
        let q = "SELECT id, doc FROM jobs WHERE instr(doc, 'ejenc:v1:') > 0";
        let rows = self.shards[shard as usize].db.rows(q, &[]).unwrap_or_default();
        for row in rows {
            let mut c = Cols::new(row);
            let (Ok(id), Ok(doc)) = (c.text(), c.text()) else { continue };
            let opened = serde_json::from_str::<edgejobs_core::Job>(&doc)
                .map_err(|e| e.to_string())
                .and_then(|j| edgejobs_core::seal::open_headers(&j.payload, &id, Some(&self.cfg.payload_keys)));
            self.oracle.sealed(&id, opened, &format!("s-{id}"));
        }
        vec![shard]
    }

    fn write_staged(&mut self, rng: &mut Rng) -> Vec<u16> {
        if self.staged.is_empty() {
            return vec![];
        }
        let i = rng.below(self.staged.len() as u64) as usize;
        let (shard, staged) = self.staged.swap_remove(i);
        let s = &self.shards[shard as usize];
        if let Ok((answers, effects)) = s.settle(s.write_staged(staged)) {
            self.effects(shard, effects);
            for job in answers.into_iter().flatten() {
                if job.state.as_str() == "active" {
                    let end = Self::outcome(rng, &self.faults);
                    self.edge_runs.push(Run {
                        id: job.id.clone(),
                        attempt: job.attempt,
                        at: self.now() + rng.below(4_000),
                        end,
                        via: Via::Edge,
                        wf: None,
                    });
                }
            }
        }
        self.note(|| "a staged start is written".to_owned());
        vec![shard]
    }

    fn edge_finish(&mut self, rng: &mut Rng) -> Vec<u16> {
        let now = self.now();
        let due: Vec<usize> = (0..self.edge_runs.len()).filter(|i| self.edge_runs[*i].at <= now).collect();
        let Some(&i) = rng.pick(&due) else { return vec![] };
        let run = self.edge_runs.swap_remove(i);
        let Some(event) = Self::end_event(&run) else {
            let id = run.id.clone();
            self.note(|| format!("edge handler crashed running {id}"));
            return vec![];
        };
        if rng.chance(self.faults.late_report) {
            let at = now + rng.below(60_000);
            self.late.push((at, JobEvent { id: run.id.clone(), event: event.clone() }, run.via.clone()));
        }
        let shard = run.id.shard();
        self.report(run.id, event, run.via);
        vec![shard]
    }

    fn live_consumer(&self, rng: &mut Rng) -> Option<usize> {
        let now = self.now();
        let live: Vec<usize> = (0..self.consumers.len()).filter(|c| self.consumers[*c].paused_until <= now).collect();
        rng.pick(&live).copied()
    }

    /// A consumer reads the stream: it starts a free entry's attempt; an entry whose start
    /// is refused (a stale or repeated one) is acknowledged and the read goes on to another
    /// (up to four), as a read of a batch does.
    fn native_take(&mut self, rng: &mut Rng) -> Vec<u16> {
        let Some(c) = self.live_consumer(rng) else { return vec![] };
        let mut touched = Vec::new();
        for _ in 0..4 {
            let free: Vec<usize> = (0..self.stream.len()).filter(|i| self.stream[*i].owner.is_none()).collect();
            let Some(&i) = rng.pick(&free) else { break };
            let (id, attempt) = (self.stream[i].id.clone(), self.stream[i].attempt);
            let shard = id.shard();
            touched.push(shard);
            let answers = self.report_many(shard, vec![Report::new(id.clone(), Event::Start { attempt }, None)]);
            let (lease, wf) = match answers.into_iter().next() {
                Some(Ok(a)) => (Some(a.lease), self.exec_of(a.job.as_ref())),
                _ => (None, None),
            };
            let ok = lease.is_some();
            self.note(|| {
                format!("consumer {c} takes {id} attempt {attempt}: {}", if ok { "started" } else { "refused" })
            });
            if let Some(lease) = lease {
                self.stream[i].owner = Some(c);
                self.stream[i].idle_since = self.now();
                let end = Self::outcome(rng, &self.faults);
                let at = self.now() + rng.below(3 * LEASE_MS);
                self.consumers[c].holds.push(Run { id, attempt, at, end, via: Via::Consumer(lease), wf });
                break;
            }
            self.stream.swap_remove(i);
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    fn native_beat(&mut self, rng: &mut Rng) -> Vec<u16> {
        let Some(c) = self.live_consumer(rng) else { return vec![] };
        let holds = self.consumers[c].holds.clone();
        let mut touched = BTreeSet::new();
        for h in holds {
            touched.insert(h.id.shard());
            // Half the beats are live updates (#30) with a few chunks, named by attempt and
            // order so a lost or repeated one shows.
            let sent = self.streams.get(h.id.as_str()).map_or(0, Vec::len);
            let chunks: Vec<String> =
                (0..1 + rng.below(3)).map(|i| format!("{}:{}", h.attempt, sent as u64 + i)).collect();
            let event = if rng.chance(0.5) {
                let update = edgejobs_core::live::Update {
                    progress: Some(edgejobs_core::live::Progress { percent: rng.below(101) as f64, message: None }),
                    metadata: None,
                    chunks: chunks
                        .iter()
                        .map(|d| edgejobs_core::live::Chunk { stream: "s".into(), data: d.clone() })
                        .collect(),
                };
                Event::Update { attempt: h.attempt, update }
            } else {
                Event::Heartbeat { attempt: h.attempt, progress: None }
            };
            let is_update = matches!(event, Event::Update { .. });
            let ok = self.report(h.id.clone(), event, h.via.clone());
            if ok && is_update {
                self.streams.entry(h.id.to_string()).or_default().extend(chunks);
                self.check_stream(&h.id);
            }
            if ok {
                let now = self.now();
                for e in self.stream.iter_mut().filter(|e| e.id == h.id && e.owner == Some(c)) {
                    e.idle_since = now;
                }
            } else {
                self.consumers[c].holds.retain(|x| !(x.id == h.id && x.attempt == h.attempt));
            }
        }
        touched.into_iter().collect()
    }

    /// The stream of `id` against the chunks its accepted updates sent.
    fn check_stream(&mut self, id: &JobId) {
        let q = "SELECT n, data FROM live WHERE job = ? ORDER BY n";
        let rows = self.shards[id.shard() as usize].db.rows(q, &[edgejobs_shard::sql::text(id.as_str())]);
        let stored: Vec<(u64, String)> = rows
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let mut c = Cols::new(r);
                Some((c.u64().ok()?, c.text().ok()?))
            })
            .collect();
        let sent = self.streams.get(id.as_str()).cloned().unwrap_or_default();
        self.oracle.stream(id.as_str(), &stored, &sent);
    }

    fn native_finish(&mut self, rng: &mut Rng) -> Vec<u16> {
        let Some(c) = self.live_consumer(rng) else { return vec![] };
        let now = self.now();
        let due: Vec<usize> =
            (0..self.consumers[c].holds.len()).filter(|i| self.consumers[c].holds[*i].at <= now).collect();
        let Some(&i) = rng.pick(&due) else { return vec![] };
        let run = self.consumers[c].holds.swap_remove(i);
        let shard = run.id.shard();
        if run.wf.is_some() {
            if let Some(run) = self.wf_step(c, run, rng) {
                self.consumers[c].holds.push(run);
            }
            return vec![shard];
        }
        match Self::end_event(&run) {
            Some(event) => {
                if rng.chance(self.faults.late_report) {
                    let late = JobEvent { id: run.id.clone(), event: event.clone() };
                    self.late.push((now + rng.below(60_000), late, run.via.clone()));
                }
                self.report(run.id.clone(), event, run.via.clone());
                self.stream.retain(|e| !(e.id == run.id && e.owner == Some(c)));
            }
            None => self.note(|| format!("consumer {c} loses {} silently", run.id)),
        }
        vec![shard]
    }

    fn native_reclaim(&mut self, rng: &mut Rng) -> Vec<u16> {
        let Some(c) = self.live_consumer(rng) else { return vec![] };
        let now = self.now();
        let idle: Vec<usize> = (0..self.stream.len())
            .filter(|i| self.stream[*i].owner != Some(c) && self.stream[*i].idle_since + LEASE_MS < now)
            .collect();
        let Some(&i) = rng.pick(&idle) else { return vec![] };
        let (id, attempt) = (self.stream[i].id.clone(), self.stream[i].attempt);
        let shard = id.shard();
        let reclaim = Report::new(id.clone(), Event::Reclaim { attempt, lease_ms: LEASE_MS }, None);
        let answers = self.report_many(shard, vec![reclaim]);
        match answers.into_iter().next() {
            Some(Ok(a)) => {
                self.stream[i].owner = Some(c);
                self.stream[i].idle_since = now;
                let end = Self::outcome(rng, &self.faults);
                let lease = a.lease;
                let at = now + rng.below(3 * LEASE_MS);
                let wf = self.exec_of(a.job.as_ref());
                let run = Run { id: id.clone(), attempt: a.attempt, at, end, via: Via::Consumer(lease), wf };
                self.consumers[c].holds.push(run);
                self.note(|| format!("consumer {c} reclaims {id}: runs attempt {}", a.attempt));
            }
            Some(Err(edgejobs_core::machine::Refusal::LeaseHeld)) => {}
            _ => {
                self.stream.swap_remove(i);
            }
        }
        vec![shard]
    }

    /// A consumer host that knows a job's id and running attempt but does not hold it
    /// reports on it anyway: no token, a made-up one, or another job's live token; or it
    /// starts an edge-lane job through the consumer route. The shard must refuse them all.
    fn forge(&mut self, rng: &mut Rng) -> Vec<u16> {
        let shard = rng.below(SHARDS as u64) as u16;
        let open: Vec<&String> =
            self.oracle.rows[shard as usize].iter().filter(|(_, s)| !is_final(&s.state)).map(|(id, _)| id).collect();
        let Some(id) = rng.pick(&open).and_then(|s| s.parse::<JobId>().ok()) else { return vec![] };
        let Some(row) = self.row(&id) else { return vec![] };
        let attempt = row.attempt as u32;
        let stolen: Vec<Option<String>> = self
            .consumers
            .iter()
            .flat_map(|c| c.holds.iter())
            .filter(|r| r.id != id)
            .filter_map(|r| match &r.via {
                Via::Consumer(l) => Some(l.clone()),
                Via::Edge => None,
            })
            .collect();
        let lease = match rng.below(3) {
            0 => None,
            1 => Some(format!("{:032x}", rng.next_u64())),
            _ => rng.pick(&stolen).cloned().flatten(),
        };
        let event = match rng.below(5) {
            0 => Event::Heartbeat { attempt, progress: Some(json!("forged")) },
            3 => Event::Update {
                attempt,
                update: edgejobs_core::live::Update {
                    chunks: vec![edgejobs_core::live::Chunk { stream: "s".into(), data: "forged".into() }],
                    ..Default::default()
                },
            },
            1 => Event::Complete { attempt, result: Some(json!("forged")) },
            2 => Event::Fail { attempt, error: "forged".into(), disposition: Disposition::Permanent },
            _ => Event::Start { attempt: attempt + 1 },
        };
        // A forged start is only a forgery on an edge-lane job: on a native one it is the
        // hand-off's start, which whoever reads the stream may make.
        if matches!(event, Event::Start { .. }) && self.lease_of(&id).is_some_and(|(lane, _)| lane != "edge") {
            return vec![];
        }
        let name = event.name();
        let ok = self.report(id.clone(), event, Via::Consumer(lease));
        self.note(|| format!("a forged {name} on {id}: {}", if ok { "accepted" } else { "refused" }));
        vec![shard]
    }

    fn alarm(&mut self, shard: u16) {
        self.note(|| format!("alarm of shard {shard}"));
        let cfg = self.cfg.clone();
        self.pages(shard, |s| s.wake_page());
        self.pages(shard, |s| s.fire_schedules_page(&cfg));
        self.rearm(shard);
        self.check_schedules(shard);
    }

    /// Pages of an alarm's work on `shard`, each page's effects carried out before the next.
    fn pages(
        &mut self,
        shard: u16,
        page: impl Fn(&Shard<Sqlite, SimHost>) -> edgejobs_shard::Outcome<(Effects, bool)>,
    ) {
        for _ in 0..MAX_PAGES {
            let s = &self.shards[shard as usize];
            match s.settle(page(s)) {
                Ok((effects, more)) => {
                    self.effects(shard, effects);
                    if !more {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }

    /// Each schedule's runs so far against its ticks since it was created.
    fn check_schedules(&mut self, shard: u16) {
        let now = self.now();
        let list: Vec<(String, u64)> =
            self.schedules.iter().filter(|(_, s, _)| *s == shard).map(|(n, _, p)| (n.clone(), *p)).collect();
        for (name, period) in list {
            let pattern = edgejobs_shard::ops::tag_pattern(&edgejobs_core::schedule::tag_of(&name));
            let rows = self.shards[shard as usize]
                .db
                .rows(&format!("SELECT id FROM jobs WHERE {}", edgejobs_shard::ops::TAG_CONDITION), &[pattern]);
            let ids: Vec<String> =
                rows.unwrap_or_default().into_iter().filter_map(|r| Cols::new(r).text().ok()).collect();
            // Ticks in (created, now]: at most one per period, plus one at the transition of
            // a DST gap.
            let most = (now - self.started) / period + 2;
            self.oracle.schedule_runs(&name, ids, most);
        }
        // Every key in the schedules' namespace names its schedule's own run.
        let q = "SELECT i.key, json_extract(j.doc, '$.schedule') FROM idempotency i JOIN jobs j ON j.id = i.job_id
                 WHERE instr(i.key, char(31) || 'schedule:') > 0";
        let rows = self.shards[shard as usize].db.rows(q, &[]).unwrap_or_default();
        for r in rows {
            let mut c = Cols::new(r);
            let (Ok(key), Ok(made_by)) = (c.text(), c.opt_text()) else { continue };
            let name =
                key.split('\u{1f}').nth(1).and_then(|k| k.strip_prefix("schedule:")).and_then(|k| k.split(':').next());
            self.oracle.schedule_key(&key, name, made_by.as_deref());
        }
    }

    fn sweep(&mut self, shard: u16) {
        let mut run = SweepRun::new(self.policy);
        loop {
            let s = &self.shards[shard as usize];
            match s.settle(s.sweep_page(&mut run)) {
                Ok(Some(effects)) => self.effects(shard, effects),
                _ => break,
            }
        }
        self.rearm(shard);
        let r = run.report.clone();
        self.note(|| format!("sweep of shard {shard}: {r:?}"));
    }

    /// A backup and a restore of it, at one instant: the shard's jobs, keys and alarm are
    /// as before, queued jobs are sent again.
    fn backup_restore(&mut self, shard: u16) {
        let s = &self.shards[shard as usize];
        let mut pages = Vec::new();
        let mut after = None;
        for _ in 0..1000 {
            let Ok(page) = s.settle(s.export(Export { after: after.clone(), max_rows: 50, max_bytes: 1 << 20 })) else {
                return;
            };
            after = page.last.clone();
            let done = page.done;
            pages.push(page.ndjson);
            if done {
                break;
            }
        }
        let n = pages.len();
        for (i, ndjson) in pages.into_iter().enumerate() {
            let s = &self.shards[shard as usize];
            let r = Import {
                shard,
                ndjson,
                first: i == 0,
                epoch: 1 + (self.now() % 1000),
                idempotency_window_ms: WINDOW_MS,
            };
            match s.settle(s.import(r)) {
                Ok((_, effects)) => self.effects(shard, effects),
                Err(e) => self.errors.borrow_mut().push(format!("restore page {i} of shard {shard}: {}", e.message)),
            }
        }
        self.rearm(shard);
        self.note(|| format!("backup and restore of shard {shard} ({n} pages)"));
    }

    /// Retention: finished jobs older than twice the idempotency window go.
    fn retention(&mut self, shard: u16, allow: &mut Allow) {
        let s = &self.shards[shard as usize];
        let page = RetentionPage {
            now: self.now(),
            limit: 1000,
            done_age_ms: 2 * WINDOW_MS,
            dead_age_ms: 2 * WINDOW_MS,
            done_cutoffs: BTreeMap::new(),
            dead_cutoffs: BTreeMap::new(),
            done_age_by_type: BTreeMap::new(),
            dead_age_by_type: BTreeMap::new(),
        };
        let Ok(page) = s.settle(s.retention_page(page)) else { return };
        let ids = page.ids.clone();
        if let Ok(d) = s.settle(s.retention_delete(RetentionDelete { ids: ids.clone(), archived: 0 })) {
            allow.deleted.extend(ids);
            let n = d.deleted;
            self.note(|| format!("retention on shard {shard}: {n} deleted"));
        }
    }

    /// Every row of a shard, as the oracle compares them (states and change times: the
    /// attempt is read per job where a check needs it, see [`report`](Self::report)).
    fn rows(&self, shard: u16) -> BTreeMap<String, Seen> {
        let q = "SELECT id, state, updated_at FROM jobs";
        let mut out = BTreeMap::new();
        let r = self.shards[shard as usize].db.scan(q, &[], &mut |row| {
            let mut c = Cols::new(row);
            if let (Ok(id), Ok(state), Ok(updated_at)) = (c.text(), c.text(), c.u64()) {
                out.insert(id, Seen { state, attempt: 0, updated_at, chunks: 0 });
            }
            true
        });
        if let Err(e) = r {
            self.errors.borrow_mut().push(format!("reading rows: {e}"));
        }
        out
    }

    /// Jobs stored across the shards now.
    pub fn jobs(&self) -> usize {
        self.oracle.rows.iter().map(|m| m.len()).sum()
    }

    /// Observes every shard (the drain's phases touch many).
    fn observe_all(&mut self, allow: &mut Allow) {
        for shard in 0..SHARDS {
            let rows = self.rows(shard);
            self.oracle.observe(shard as usize, rows, allow);
        }
    }

    /// Sum of the final-state counters of every shard, after writing what is pending.
    pub fn check_counters(&mut self) {
        // Each tenant's count of jobs not yet final, as the shard keeps it, against its rows.
        for (n, s) in self.shards.iter().enumerate() {
            let q =
                "SELECT tenant, COUNT(*) FROM jobs WHERE state IN ('queued', 'scheduled', 'active') GROUP BY tenant";
            let counted: BTreeMap<String, u64> =
                s.db.rows(q, &[])
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| {
                        let mut c = Cols::new(r);
                        Some((c.text().ok()?, c.u64().ok()?))
                    })
                    .collect();
            for t in TENANTS {
                let Ok(tenant) = edgejobs_core::tenant::Tenant::parse(t) else { continue };
                let kept = edgejobs_shard::store::pending_of(&s.db, &tenant).unwrap_or(u64::MAX);
                self.oracle.pending(n, t, kept, counted.get(*t).copied().unwrap_or(0));
            }
        }
        let mut total = 0.0;
        for s in &self.shards {
            match s.settle(s.stats(true)) {
                Ok(st) => {
                    for (name, _, v) in &st.counters {
                        use edgejobs_core::stats::Metric;
                        let finals = [Metric::JobsCompletedTotal, Metric::JobsDeadTotal, Metric::JobsCancelledTotal];
                        if finals.iter().any(|m| m.name() == name) {
                            total += v;
                        }
                    }
                }
                Err(e) => self.errors.borrow_mut().push(format!("stats: {}", e.message)),
            }
        }
        self.oracle.counters(total as u64);
    }

    /// The flow invariants of `shard` after a step (the count of slots held per key across
    /// shards is checked once per step, in `step`): no list idle with jobs waiting; every [`FLOW_CHECK_EVERY`] steps, every
    /// shard's own counts against its jobs (`flow::check`, which reads every flow job).
    fn check_flow(&mut self, shard: u16) {
        let db = &self.shards[shard as usize].db;
        let (idle, waiting) = crate::flow::idle_lists(db);
        self.oracle.flow.waiting_lists += waiting;
        self.oracle.flow_idle(shard as usize, idle);
        if self.ops.is_multiple_of(FLOW_CHECK_EVERY) {
            for n in 0..SHARDS {
                let problems = edgejobs_shard::flow::check(&self.shards[n as usize].db).map_err(|e| e.to_string());
                self.oracle.flow_counts(n as usize, problems);
            }
        }
    }

    /// Pauses or resumes `target` as the admin API does: a key on its home shard, a type on
    /// every shard of the current count. The simulation's view changes first (a resume's
    /// sends are new starts that are allowed).
    fn set_paused(&mut self, target: edgejobs_core::flow::Target, paused: bool) -> Vec<u16> {
        use edgejobs_core::flow::{FlowOp, Target};
        let shards: Vec<u16> = match &target {
            Target::Key { tenant, key } => vec![self.topology.schedule_home(&tenant.scope_key(key))],
            Target::Type { .. } => (0..self.topology.count()).collect(),
        };
        let name = target.stored();
        self.oracle.flow.pauses += 1;
        if paused {
            self.oracle.flow.paused.insert(name.clone(), target.clone());
        } else {
            self.oracle.flow.paused.remove(&name);
        }
        for shard in &shards {
            let s = &self.shards[*shard as usize];
            match s.settle(s.flow(FlowOp::Pause { target: target.clone(), paused })) {
                Ok((_, effects)) => self.effects(*shard, effects),
                Err(e) => self.note(|| format!("flow pause refused: {}", e.message)),
            }
        }
        let shown = name.replace('\u{1f}', "/");
        self.note(|| format!("{} {shown}", if paused { "pause" } else { "resume" }));
        shards
    }

    /// A flow job's create answer: remembered (its keys) when created; a debounce's or a
    /// throttle's answer checked against its window. `open`: each debounce key's open
    /// window job in this create, moved on as the answers come.
    fn flow_answer(
        &mut self,
        job: &edgejobs_core::Job,
        (id, created, outcome): (&str, bool, Option<edgejobs_core::protocol::FlowOutcome>),
        doc: &serde_json::Value,
        windows: &BTreeMap<String, crate::flow::Window>,
        (open, last): (&mut BTreeMap<String, Option<String>>, &BTreeMap<String, serde_json::Value>),
    ) {
        if created && let Some(f) = crate::oracle::FlowJob::of(job) {
            self.oracle.flow.jobs.insert(id.to_owned(), f);
        }
        let now = self.now();
        match windows.get(job.id.as_str()) {
            Some(crate::flow::Window::Debounce(key, period, max_wait, payload)) => {
                let before = open.get(key).cloned().flatten();
                // A debounced answer shows the job as this enqueue left it; a created one
                // as the whole call did (later enqueues of the call collapse into it).
                let payload = if created { last.get(key).unwrap_or(payload) } else { payload };
                let limits = (now, *period, *max_wait);
                self.oracle.debounced(key, before.as_deref(), (id, created, outcome), doc, payload, limits);
                open.insert(key.clone(), Some(id.to_owned()));
            }
            Some(crate::flow::Window::Throttle(key, limit, period)) => {
                self.oracle.throttled(key, (id, created, outcome), (now, *limit, *period));
            }
            None => {}
        }
    }

    /// The faults stop: consumers come back, schedules pause, and the world runs until every
    /// job is final (bounded); then liveness is checked.
    pub fn drain(&mut self) {
        self.faults = Faults::none();
        let now = self.now();
        for c in &mut self.consumers {
            c.paused_until = now;
        }
        for (name, shard, _) in self.schedules.clone() {
            let s = &self.shards[shard as usize];
            let _ = s.settle(s.schedules(ScheduleOp::Pause { name }, &self.cfg));
        }
        let paused: Vec<edgejobs_core::flow::Target> = self.oracle.flow.paused.values().cloned().collect();
        for target in paused {
            self.set_paused(target, false);
        }
        let mut allow = Allow::default();
        for _ in 0..400 {
            self.clock.set(self.clock.get() + 5_000);
            let now = self.now();
            for shard in 0..SHARDS {
                if self.alarms[shard as usize].is_some_and(|at| at <= now) {
                    self.alarm(shard);
                }
                self.sweep(shard);
            }
            while !self.staged.is_empty() {
                let mut r = Rng::new(now);
                self.write_staged(&mut r);
            }
            self.observe_all(&mut allow);
            let mut r = Rng::new(now ^ 0xD4A1);
            let due: Vec<Msg> = self.queue.iter().filter(|m| m.at <= now).cloned().collect();
            self.queue.retain(|m| m.at > now);
            for m in due {
                self.deliver(m, &mut r);
            }
            self.observe_all(&mut allow);
            let runs: Vec<Run> = std::mem::take(&mut self.edge_runs);
            for mut run in runs {
                if run.end == End::Crash {
                    continue;
                }
                run.at = run.at.min(now);
                if let Some(e) = Self::end_event(&run) {
                    self.report(run.id, e, run.via);
                }
            }
            self.observe_all(&mut allow);
            for _ in 0..self.stream.len() {
                self.native_take(&mut r);
            }
            self.observe_all(&mut allow);
            for c in 0..self.consumers.len() {
                let holds = std::mem::take(&mut self.consumers[c].holds);
                for run in holds {
                    if run.wf.is_some() {
                        let mut hold = Some(run);
                        for _ in 0..16 {
                            match hold {
                                Some(h) => hold = self.wf_step(c, h, &mut r),
                                None => break,
                            }
                        }
                        continue;
                    }
                    if let Some(e) = Self::end_event(&run) {
                        self.report(run.id.clone(), e, run.via.clone());
                    }
                    self.stream.retain(|e| e.id != run.id || e.owner != Some(c));
                }
            }
            self.observe_all(&mut allow);
            for _ in 0..self.stream.len() {
                self.native_reclaim(&mut r);
            }
            self.late.clear();
            self.drain_events();
            self.observe_all(&mut allow);
            let open = self.oracle.rows.iter().flat_map(|m| m.values()).any(|s| !is_final(&s.state));
            if !open && self.queue.is_empty() && self.edge_work.is_empty() {
                break;
            }
        }
        let stuck: Vec<(String, String)> = self
            .oracle
            .rows
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(_, s)| !is_final(&s.state))
            .map(|(id, s)| (id.clone(), s.state.clone()))
            .collect();
        let waiting: Vec<(String, String)> =
            self.shards.iter().flat_map(|s| crate::flow::still_waiting(&s.db)).collect();
        self.oracle.flow_drained(waiting);
        for n in 0..SHARDS {
            let problems = edgejobs_shard::flow::check(&self.shards[n as usize].db).map_err(|e| e.to_string());
            self.oracle.flow_counts(n as usize, problems);
        }
        self.drain_events();
        self.oracle.wf_drained();
        self.check_traces();
        self.oracle.liveness(stuck);
        self.check_counters();
        let errors = self.errors.borrow().clone();
        self.oracle.storage(&errors);
    }
}
