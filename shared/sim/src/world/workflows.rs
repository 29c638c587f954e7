//! The world's share of durable workflows (#29): native consumers execute workflow runs as
//! `functions/consumer/src/handlers/steps.rs` does (from the start on every attempt, recorded
//! steps replayed, the first one not recorded executed and reported, one step per action so
//! crashes, pauses and takeovers fall between steps), and the edge's glue of
//! `functions/edge/src/routes/workflows.rs` runs as separate pieces of work taken in any
//! order: the registration of a run's wait after its report, the signal of a send at the
//! event's home shard, the resumes on the runs' shards (with the sender's tenant), the
//! delivery note back to the index. Answers may be lost after their commit: the edge then
//! registers again, and a client sends again with its event id, as they would.

use std::collections::BTreeMap;

use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::{ApplyMany, EventsOp, EventsReply, WaitEntry, WaitKey, event_home};
use edgejobs_core::retry::Backoff;
use edgejobs_core::tenant::Tenant;
use edgejobs_core::workflow::{StepReport, StepRetry, StepState};
use edgejobs_core::{Job, JobId, JobState};
use edgejobs_shard::Host;
use serde_json::{Value, json};

use super::{LEASE_MS, Run, TENANTS, World};
use crate::rng::Rng;
use crate::workflows::{self as wf, Exec, Planned, Replay, Sent};

/// A piece of the edge's event work, done when an action (or the drain) takes it.
#[derive(Debug, Clone)]
pub(super) enum EdgeWork {
    /// Index the waits of a run as its wait report answered it, and resume those an event
    /// already met.
    Register(Box<Job>),
    /// `POST /v1/events`: the signal at the event name's home shard.
    Signal { tenant: Tenant, name: String, data: Value, id: Option<String> },
    /// The resumes of matched waits on their runs' shards, then the delivery note to `home`
    /// (`retry`: the send's name, data and id, sent again when the answers are lost).
    Resume { tenant: Tenant, home: u16, items: Vec<(WaitKey, Value)>, retry: Option<(String, Value, String)> },
    /// The index forgets settled matches.
    Delivered { home: u16, keys: Vec<WaitKey> },
}

impl World {
    /// A workflow run for `shard` (a native job whose payload lists its steps).
    pub(super) fn workflow_job(&mut self, shard: u16, tenant: &str, rng: &mut Rng, side: &mut Rng) -> Job {
        let now = self.now();
        let mut body = json!({ "tenant": tenant, "max_attempts": 1 + rng.below(3) });
        wf::spec(rng, side, &mut body);
        let spec = match edgejobs_core::spec::parse_spec_in(&body, now, &self.cfg.types) {
            Ok(s) => s,
            Err(e) => panic!("a simulated workflow spec is invalid: {} ({body})", e.message),
        };
        self.oracle.wf.runs += 1;
        let rand = self.shards[0].host.random_u64();
        spec.into_job(JobId::new(shard, now, rand), now).0
    }

    /// The execution a start or takeover answered with `job` begins, if it is a workflow run.
    pub(super) fn exec_of(&mut self, job: Option<&Job>) -> Option<Box<Exec>> {
        let job = job?;
        let plan = wf::plan(&job.payload)?;
        let began = self.oracle.wf_began();
        let (payload, steps, trace) = (job.payload.clone(), job.steps.clone(), job.trace.clone());
        Some(Box::new(Exec { plan, payload, trace, steps, next: 0, began }))
    }

    /// The handler of `run` (held by consumer `c`) goes on: it replays what its start
    /// answered recorded, executes the first step that is not and reports it. Answers the
    /// hold when the handler goes on (its next step later), `None` when it suspended, ended,
    /// crashed or was refused.
    pub(super) fn wf_step(&mut self, c: usize, mut run: Run, rng: &mut Rng) -> Option<Run> {
        let mut exec = run.wf.take()?;
        let id = run.id.clone();
        let key = id.to_string();
        let ack = |w: &mut World| w.stream.retain(|e| !(e.id == id && e.owner == Some(c)));
        let mut seq = exec.next;
        while let Some(step) = exec.plan.get(seq) {
            let name = wf::step_name(seq, step);
            match wf::replay(&exec.steps, seq, &name, step.kind()) {
                Replay::Recorded(state) => {
                    self.oracle.wf_step(&key, seq, &name, exec.began, false);
                    if state == StepState::Failed {
                        // The step failed for good: the handler's `?` fails the run.
                        let fail = Event::Fail {
                            attempt: run.attempt,
                            error: format!("step {name} failed"),
                            disposition: Disposition::Permanent,
                        };
                        self.report(id.clone(), fail, run.via.clone());
                        ack(self);
                        return None;
                    }
                    seq += 1;
                }
                Replay::Run => break,
                Replay::Nondeterministic => {
                    self.note(|| format!("consumer {c}: {id} recorded other steps than its handler reaches"));
                    ack(self);
                    return None;
                }
            }
        }
        exec.next = seq;
        let Some(step) = exec.plan.get(seq).cloned() else {
            // The handler returns: the attempt's outcome, as for any job.
            match Self::end_event(&run) {
                Some(event) => {
                    self.report(id.clone(), event, run.via.clone());
                    ack(self);
                }
                None => self.note(|| format!("consumer {c} loses {id} silently")),
            }
            return None;
        };
        let name = wf::step_name(seq, &step);
        let n = seq as u32;
        let report = match &step {
            Planned::Run => {
                self.oracle.wf_step(&key, seq, &name, exec.began, true);
                self.note(|| format!("consumer {c} runs {name} of {id} (attempt {})", run.attempt));
                if rng.chance(self.faults.crash) {
                    self.note(|| format!("consumer {c} crashes after running {name} of {id}, before reporting it"));
                    return None;
                }
                if rng.chance(0.15) {
                    let backoff = Backoff { base_ms: 1_000, factor: 2.0, cap_ms: 4_000 };
                    let retry = StepRetry { attempts: 3, backoff };
                    StepReport::Fail { seq: n, name: name.clone(), error: "simulated step failure".into(), retry }
                } else {
                    StepReport::Run { seq: n, name: name.clone(), result: json!({ "step": name, "by": run.attempt }) }
                }
            }
            Planned::Sleep { ms } => StepReport::Sleep { seq: n, name: name.clone(), ms: Some(*ms), until: None },
            Planned::Wait { event, on, timeout, lookback } => StepReport::Wait {
                seq: n,
                name: name.clone(),
                wait: wf::wait_for(event, on, &exec.payload),
                timeout_ms: *timeout,
                lookback_ms: *lookback,
            },
            Planned::Children { fan_out, jobs } => {
                // Half the reports name the step's span (a child of the run's context, as a
                // consumer's report sends its `traceparent`), half name none.
                let mut side = rng.fork(0x5EED_C41D);
                let named =
                    exec.trace.as_ref().filter(|_| side.chance(0.5)).map(|t| t.child(crate::traces::span(&mut side)));
                let children = self.prepare_children(&id, jobs, named);
                let (jobs, name) = (jobs.clone(), name.clone());
                if *fan_out {
                    StepReport::FanOut { seq: n, name, jobs, children }
                } else {
                    StepReport::Invoke { seq: n, name, jobs, children }
                }
            }
        };
        let recorded_run = matches!(report, StepReport::Run { .. });
        let event = Event::Step { attempt: run.attempt, step: report };
        if rng.chance(self.faults.late_report) {
            let late = JobEvent { id: id.clone(), event: event.clone() };
            self.late.push((self.now() + rng.below(30_000), late, run.via.clone()));
        }
        let answer = self.report_answer(id.clone(), event, run.via.clone());
        let Some(Ok(a)) = answer else {
            // Refused (the lease was taken, the run cancelled): the handler stops.
            ack(self);
            return None;
        };
        if recorded_run || a.state == JobState::Active && matches!(step, Planned::Run) {
            // A `run` result, or a failure recorded for good (the run goes on, active).
            self.oracle.wf_recorded(&key, seq);
        }
        if a.state != JobState::Active {
            // Suspended (a sleep, a wait, a step retry): nothing more to report.
            self.oracle.wf.suspended += 1;
            if let (Planned::Wait { .. }, Some(job)) = (&step, a.job) {
                if let Some(s) = job.steps.get(seq) {
                    self.oracle.wf_waits(&key, job.tenant.as_str(), s);
                }
                self.edge_work.push(EdgeWork::Register(Box::new(job)));
            }
            ack(self);
            return None;
        }
        if let Some(job) = a.job {
            exec.steps = job.steps;
        } else if let Some(s) = exec.steps.get_mut(seq) {
            // Answered at once (a sleep already over, a failure for good): the next execution
            // would find it recorded; this one goes on past it.
            s.state = StepState::Completed;
        }
        exec.next = seq + 1;
        if matches!(step, Planned::Run) && !recorded_run {
            // The step failed for good: the handler's `?` fails the run.
            let fail = Event::Fail {
                attempt: run.attempt,
                error: format!("step {name} failed"),
                disposition: Disposition::Permanent,
            };
            self.report(id.clone(), fail, run.via.clone());
            ack(self);
            return None;
        }
        run.at = self.now() + rng.below(LEASE_MS);
        run.wf = Some(exec);
        Some(run)
    }

    /// The children of an invoke or fan-out step of `run`, as the edge prepares them
    /// (`functions/edge/src/runs.rs`): each spec parsed, its id in the run's shard, the
    /// context the report `named` (the shard gives the run's to those without one). Each
    /// is announced to the oracle with its origin.
    fn prepare_children(
        &mut self,
        run: &JobId,
        jobs: &[Value],
        named: Option<edgejobs_core::trace::TraceContext>,
    ) -> Vec<Job> {
        let now = self.now();
        jobs.iter()
            .map(|spec| {
                let parsed = match edgejobs_core::spec::parse_spec_in(spec, now, &self.cfg.types) {
                    Ok(s) => s,
                    Err(e) => panic!("a simulated child spec is invalid: {} ({spec})", e.message),
                };
                let rand = self.shards[0].host.random_u64();
                let mut child = parsed.into_job(JobId::new(run.shard(), now, rand), now).0;
                child.trace = named.clone();
                let origin = crate::traces::Origin::Child { run: run.to_string(), named: named.clone() };
                self.oracle.traces.origin(child.id.as_str(), origin);
                child
            })
            .collect()
    }

    /// A client sends an event: for a wait that is open (of its tenant or the other, data
    /// that meets its conditions), or any; without an id, with a new one, or again with an
    /// earlier one (a client's retry, sometimes with other data). Sometimes the send is made
    /// twice at once.
    pub(super) fn send_event(&mut self, rng: &mut Rng) -> Vec<u16> {
        self.event_serial += 1;
        let serial = self.event_serial;
        let ids = &self.oracle.wf.ids;
        if !ids.is_empty() && rng.chance(0.15) {
            let (tenant, name, id, data) = ids[rng.below(ids.len() as u64) as usize].clone();
            let data = if rng.chance(0.5) { data } else { json!({ "order": rng.below(wf::ORDERS), "n": serial }) };
            let Ok(tenant) = Tenant::parse(&tenant) else { return vec![] };
            self.note(|| format!("event {name} sent again with id {id}"));
            self.edge_work.push(EdgeWork::Signal { tenant, name, data, id: Some(id) });
            return vec![];
        }
        let open: Vec<&(String, String)> = self.oracle.wf.open.iter().collect();
        let target = rng.pick(&open).and_then(|k| self.oracle.wf.waits.get(*k)).cloned();
        let mut data = json!({
            "order": rng.below(wf::ORDERS),
            "region": wf::REGIONS[rng.below(wf::REGIONS.len() as u64) as usize],
            "n": serial,
        });
        let (mut tenant, name) = match target {
            Some(w) if rng.chance(0.7) => {
                for m in &w.wait.matches {
                    if let Some(field) = m.event.strip_prefix("/data/") {
                        data[field] = m.value.clone();
                    }
                }
                (w.tenant.clone(), w.wait.event.clone())
            }
            _ => (
                TENANTS[rng.below(TENANTS.len() as u64) as usize].to_owned(),
                wf::EVENTS[rng.below(wf::EVENTS.len() as u64) as usize].to_owned(),
            ),
        };
        if rng.chance(0.15) {
            // The other tenant sends what would meet the wait: it must not.
            tenant = TENANTS.iter().find(|t| **t != tenant).map_or(tenant, |t| (*t).to_owned());
        }
        let id = rng.chance(0.5).then(|| format!("e{serial}"));
        if let Some(id) = &id {
            self.oracle.wf.ids.push((tenant.clone(), name.clone(), id.clone(), data.clone()));
            if self.oracle.wf.ids.len() > 50 {
                self.oracle.wf.ids.remove(0);
            }
        }
        let Ok(tenant) = Tenant::parse(&tenant) else { return vec![] };
        let copies = if rng.chance(0.3) { 2 } else { 1 };
        self.note(|| format!("event {name} sent by {tenant} ({copies} sends): {data}"));
        for _ in 0..copies {
            let work =
                EdgeWork::Signal { tenant: tenant.clone(), name: name.clone(), data: data.clone(), id: id.clone() };
            self.edge_work.push(work);
        }
        vec![]
    }

    /// Takes one to three pieces of the edge's event work, in any order.
    pub(super) fn edge_events(&mut self, rng: &mut Rng) -> Vec<u16> {
        let mut touched = Vec::new();
        for _ in 0..1 + rng.below(3) {
            if self.edge_work.is_empty() {
                break;
            }
            let i = rng.below(self.edge_work.len() as u64) as usize;
            let work = self.edge_work.swap_remove(i);
            touched.extend(self.run_work(work, rng));
        }
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// The drain's share: a waiting run without a timeout gets an event that meets its
    /// wait (once), and every piece of work is done (what it adds too, bounded).
    pub(super) fn drain_events(&mut self) {
        let due: Vec<(String, String)> = self
            .oracle
            .wf
            .open
            .iter()
            .filter(|k| self.oracle.wf.waits.get(*k).is_some_and(|w| w.registered && !w.drained && w.until.is_none()))
            .cloned()
            .collect();
        for key in due {
            let Some(w) = self.oracle.wf.waits.get_mut(&key) else { continue };
            w.drained = true;
            let (tenant, wait) = (w.tenant.clone(), w.wait.clone());
            self.event_serial += 1;
            let mut data = json!({ "n": self.event_serial });
            for m in &wait.matches {
                if let Some(field) = m.event.strip_prefix("/data/") {
                    data[field] = m.value.clone();
                }
            }
            let Ok(tenant) = Tenant::parse(&tenant) else { continue };
            self.edge_work.push(EdgeWork::Signal { tenant, name: wait.event, data, id: None });
        }
        let mut rng = Rng::new(self.now() ^ 0xE7E7);
        for _ in 0..10_000 {
            if self.edge_work.is_empty() {
                break;
            }
            let work = self.edge_work.remove(0);
            self.run_work(work, &mut rng);
        }
    }

    fn index(&mut self, home: u16, op: EventsOp) -> Option<EventsReply> {
        let s = &self.shards[home as usize];
        match s.settle(s.events(op)) {
            Ok(r) => Some(r),
            Err(e) => {
                self.note(|| format!("the event index on shard {home} refused: {}", e.message));
                None
            }
        }
    }

    /// Does one piece of work; the shards whose jobs it may have changed (the index's
    /// operations change no job, so their shards need no observation).
    fn run_work(&mut self, work: EdgeWork, rng: &mut Rng) -> Vec<u16> {
        let now = self.now();
        match work {
            EdgeWork::Register(job) => {
                if job.state != JobState::Scheduled {
                    return vec![];
                }
                let mut by_home: BTreeMap<u16, Vec<WaitEntry>> = BTreeMap::new();
                for entry in job.steps.iter().filter_map(|s| s.wait_entry(&job)) {
                    let home = event_home(&entry.tenant, &entry.wait.event, &self.topology);
                    by_home.entry(home).or_default().push(entry);
                }
                for (home, waits) in by_home {
                    let keys: Vec<WaitKey> = waits.iter().map(|w| w.key.clone()).collect();
                    let Some(EventsReply::Registered { matched }) = self.index(home, EventsOp::Register { waits })
                    else {
                        continue;
                    };
                    if rng.chance(self.faults.drop * 2.0) {
                        // The answer is lost after the commit: the edge registers again.
                        let id = job.id.clone();
                        self.note(|| format!("the registration of {id}'s waits is answered too late; again"));
                        self.edge_work.push(EdgeWork::Register(job.clone()));
                        continue;
                    }
                    let mut items = Vec::new();
                    for (k, m) in keys.into_iter().zip(matched) {
                        self.oracle.wf_registered(k.job.as_str(), &k.step, now);
                        if let Some(data) = m {
                            items.push((k, data));
                        }
                    }
                    let id = job.id.clone();
                    self.note(|| format!("the waits of {id} registered at shard {home}: {} met already", items.len()));
                    if !items.is_empty() {
                        self.edge_work.push(EdgeWork::Resume { tenant: job.tenant.clone(), home, items, retry: None });
                    }
                }
                vec![]
            }
            EdgeWork::Signal { tenant, name, data, id } => {
                let home = event_home(&tenant, &name, &self.topology);
                let op =
                    EventsOp::Signal { tenant: tenant.clone(), name: name.clone(), data: data.clone(), id: id.clone() };
                let Some(EventsReply::Signaled(s)) = self.index(home, op) else { return vec![] };
                let sent = Sent {
                    tenant: tenant.to_string(),
                    name: name.clone(),
                    data: data.clone(),
                    id: id.clone(),
                    at: now,
                    last: now,
                };
                self.oracle.wf_signaled(sent, s.duplicate);
                let n = s.resumes.len();
                let dup = s.duplicate;
                self.note(|| format!("signal {name} of {tenant} at shard {home}: {n} waits met (duplicate: {dup})"));
                if !s.resumes.is_empty() {
                    let items = s.resumes.into_iter().map(|k| (k, s.data.clone())).collect();
                    let retry = id.map(|i| (name, data, i));
                    self.edge_work.push(EdgeWork::Resume { tenant, home, items, retry });
                }
                vec![]
            }
            EdgeWork::Resume { tenant, home, items, retry } => {
                let mut by_shard: BTreeMap<u16, Vec<(WaitKey, Value)>> = BTreeMap::new();
                for (k, data) in items {
                    by_shard.entry(k.job.shard()).or_default().push((k, data));
                }
                let mut settled = Vec::new();
                let mut touched = Vec::new();
                for (shard, items) in by_shard {
                    touched.push(shard);
                    let load = |w: &World, id: &JobId| {
                        edgejobs_shard::store::load(&w.shards[shard as usize].db, id).ok().flatten()
                    };
                    let before: Vec<Option<Job>> = items.iter().map(|(k, _)| load(self, &k.job)).collect();
                    let events = items
                        .iter()
                        .map(|(k, data)| JobEvent {
                            id: k.job.clone(),
                            event: Event::Resume { step: k.step.clone(), data: data.clone() },
                        })
                        .collect();
                    let s = &self.shards[shard as usize];
                    let r = ApplyMany { events, full: false, tenant: Some(tenant.clone()) };
                    let answers = match s.settle(s.apply_many(r)) {
                        Ok((answers, effects)) => {
                            self.effects(shard, effects);
                            answers
                        }
                        // A shard that failed keeps its matches in the index.
                        Err(_) => continue,
                    };
                    for (((k, data), before), a) in items.into_iter().zip(before).zip(answers) {
                        let after = load(self, &k.job);
                        let ok = a.is_ok();
                        self.oracle.wf_resumed((k.job.as_str(), &k.step), &data, ok, before.as_ref(), after.as_ref());
                        self.note(|| {
                            format!("resume {} of {}: {}", k.step, k.job, if ok { "accepted" } else { "refused" })
                        });
                        settled.push(k);
                    }
                }
                if rng.chance(self.faults.drop * 2.0) {
                    // The answers are lost after the commits: the index keeps the matches, and
                    // a client with an event id sends again.
                    self.note(|| "the resumes' answers are lost".to_owned());
                    if let Some((name, data, id)) = retry {
                        self.edge_work.push(EdgeWork::Signal { tenant, name, data, id: Some(id) });
                    }
                } else if !settled.is_empty() {
                    self.edge_work.push(EdgeWork::Delivered { home, keys: settled });
                }
                touched
            }
            EdgeWork::Delivered { home, keys } => {
                self.index(home, EventsOp::Delivered { keys });
                vec![]
            }
        }
    }
}
