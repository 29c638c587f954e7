//! The gate of flow control (#28): which queued jobs this shard lets through to the queue
//! or the stream, and which wait. It runs inside every write of a plan ([`apply`]: the gate, then `store::write_plan`),
//! so a job's admission, its wait and the release of its slots commit with the transition
//! that caused them: nothing awaits between reading a key's count and writing it.
//!
//! Tables (scoped keys: `{tenant}\x1f{key}`):
//! - `flow_lists`: one row per list: `c:<key>` (a concurrency key: slots held, its limit,
//!   jobs waiting), `r:<key>` (a rate: the earliest next start, the spacing, jobs waiting),
//!   `p:<key>` / `t:<type>` (jobs parked while paused).
//! - `flow_wait`: the waiting jobs, ordered in each list by `rank` (`9 - priority`) and
//!   arrival (`seq`); an index by arrival alone finds the oldest (the starvation guard).
//! - `flow_paused`: paused keys (`k:<key>`) and types (`t:<type>`).
//! - `flow_wakes`: when a rate list may start its next job (the alarm's business).
//! - `flow_windows`: the open debounce (`db:<key>`: its job, when it opened) and throttle
//!   (`th:<key>`: when the period began, jobs created in it, the last one) windows.
//!
//! A job takes all its concurrency keys at once or none (it waits, holding nothing, at the
//! first key without room); then its rate (holding its keys); then it is sent. A job that ends its attempt (retry, completed, dead, cancelled) gives back
//! every slot, and each list it freed starts its best waiting job: the highest effective
//! priority ([`effective_rank`]: priority plus one per 30 s of waiting), the oldest first
//! among equals. No loop polls a key: a release or the alarm moves the next job.

use std::collections::{BTreeMap, BTreeSet};

use edgejobs_core::flow::{BusyList, Flow, KeyState, Spot, effective_rank};
use edgejobs_core::plan::{Effects, Plan};
use edgejobs_core::wire::JobRef;
use edgejobs_core::{Job, JobId, JobState};

use crate::sql::{Cols, Sql, StoreError, int, text};
use crate::store;

/// Most jobs one call moves out of one list (a resume of a key with more parked jobs goes
/// on at the next alarm, which `flow_wakes` arms for now).
pub const MAX_MOVES: u64 = 500;

/// One list's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListRow {
    pub running: u64,
    pub lim: u64,
    pub waiting: u64,
    pub seq: u64,
    pub next_at: u64,
    pub spacing: u64,
}

/// The gate's work in one transaction: rows read once and written at the end.
struct Gate<'a, S: Sql> {
    db: &'a S,
    now: u64,
    /// Each list read: its row now, and as it was read (`None`: it had no row). Only rows
    /// that changed are written at the end.
    lists: BTreeMap<String, (ListRow, Option<ListRow>)>,
    paused: BTreeSet<String>,
    /// Jobs changed here that the plan did not hold (moved out of a list).
    moved: BTreeMap<JobId, Job>,
    /// Lists that gave back slots or were resumed: each starts what it can.
    to_pump: BTreeSet<String>,
    /// Rate lists that still hold jobs after this call: the alarm's next time for each.
    wakes: BTreeMap<String, Option<u64>>,
    out: Vec<(edgejobs_core::Lane, JobRef)>,
}

/// The gate's seeded bugs (feature `bugs`, for the simulation; see `bugs::switch_flow`).
#[cfg(feature = "bugs")]
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowBugs {
    /// Admission forgets `running < limit`.
    pub over_limit: bool,
    /// A cancelled or dead job keeps its slots.
    pub slot_leak: bool,
    /// A release does not start the next waiting job.
    pub no_wake: bool,
}

#[cfg(feature = "bugs")]
thread_local! {
    static BUGS: std::cell::Cell<FlowBugs> = std::cell::Cell::new(FlowBugs::default());
}

/// Switches this thread's gate bugs.
#[cfg(feature = "bugs")]
pub fn switch_bugs(b: FlowBugs) {
    BUGS.with(|c| c.set(b));
}

#[cfg(feature = "bugs")]
fn bugs() -> FlowBugs {
    BUGS.with(std::cell::Cell::get)
}

/// The list a concurrency key's jobs wait in.
pub fn concurrency_list(scoped: &str) -> String {
    format!("c:{scoped}")
}

pub fn rate_list(scoped: &str) -> String {
    format!("r:{scoped}")
}

fn holds(state: JobState) -> bool {
    matches!(state, JobState::Queued | JobState::Active)
}

/// Runs the gate over a plan before it is written: releases the slots of jobs whose attempt
/// ended, takes the plan's queue sends of flow-controlled jobs through admission (those
/// that must wait are taken out of `plan.effects.enqueue`), starts waiting jobs where slots
/// were freed, and adds every job it moved to `plan.updates`. A plan without flow-controlled
/// jobs costs one read (the paused types) when it sends anything, none otherwise.
pub fn gate(db: &impl Sql, plan: &mut Plan, now: u64) -> Result<(), StoreError> {
    let flowing = plan.inserts.iter().chain(&plan.updates).any(|j| j.flow.is_some());
    if !flowing && plan.effects.enqueue.is_empty() {
        return Ok(());
    }
    let paused = read_paused(db)?;
    if !flowing && !paused.iter().any(|p| p.starts_with("t:")) {
        return Ok(());
    }
    let mut g = Gate::new(db, now, paused);
    // 1. Attempts that ended give their slots back and leave their lists.
    for job in plan.inserts.iter_mut().chain(plan.updates.iter_mut()) {
        if job.flow.is_some() && !holds(job.state) {
            g.release(job)?;
        }
    }
    // 2. The plan's sends: a re-send of an admitted attempt passes; a new attempt goes
    // through admission (its old slots back first).
    let sends = std::mem::take(&mut plan.effects.enqueue);
    let mut index: BTreeMap<JobId, usize> = BTreeMap::new();
    let mut all: Vec<&mut Job> = plan.inserts.iter_mut().chain(plan.updates.iter_mut()).collect();
    for (i, j) in all.iter().enumerate() {
        index.insert(j.id.clone(), i);
    }
    for (lane, r) in sends {
        let Some(&i) = index.get(&r.id) else {
            g.out.push((lane, r));
            continue;
        };
        let job: &mut Job = &mut *all[i];
        let type_paused = g.paused.contains(&format!("t:{}", job.job_type));
        match job.flow.as_ref().map(|f| (f.spot.is_some(), f.admitted)) {
            None if type_paused => {
                // A job without flow control gets a record only to wait while its type is
                // paused.
                job.flow = Some(plain_flow());
                g.admit(job, None)?;
            }
            None => g.out.push((lane, r)),
            // Already waiting (a sweep's re-send of a job that was never sent).
            Some((true, _)) => {}
            Some((false, admitted)) if admitted == r.attempt && holds(job.state) => g.out.push((lane, r)),
            Some(_) => {
                g.release(job)?;
                g.admit(job, None)?;
            }
        }
    }
    drop(all);
    // 3. Freed lists start their next jobs.
    g.pump_all(plan)?;
    plan.effects.enqueue = std::mem::take(&mut g.out);
    if let Some(at) = g.finish()? {
        plan.effects.alarm = Some(plan.effects.alarm.map_or(at, |a| a.min(at)));
    }
    settle(plan, std::mem::take(&mut g.moved));
    Ok(())
}

/// Writes a plan after the gate decided which of its sends wait (and added the jobs it
/// moved): every operation's write goes through here.
pub fn apply(db: &impl Sql, plan: &mut Plan, now: u64) -> Result<Vec<String>, StoreError> {
    // Children that ended resume their runs, cancelled runs cancel their children: before
    // the gate, which then sends the runs queued again.
    crate::children::settle(db, plan, now)?;
    crate::callbacks::fire(db, plan, now)?;
    crate::events::note_new_waits(db, plan, now)?;
    gate(db, plan, now)?;
    crate::live::note(db, plan, now)?;
    store::write_plan(db, plan, now)
}

/// Puts the jobs the gate moved into the plan: over their insert when this plan creates
/// them, else as updates.
fn settle(plan: &mut Plan, moved: BTreeMap<JobId, Job>) {
    for (id, job) in moved {
        match plan.inserts.iter_mut().find(|j| j.id == id) {
            Some(slot) => *slot = job,
            None => plan.updates.push(job),
        }
    }
}

/// The alarm's share: starts the jobs of rate lists whose next start is due, and moves on
/// resumed lists that held more than one call moves. Their sends are added to `plan`.
pub fn wake(db: &impl Sql, plan: &mut Plan, now: u64) -> Result<(), StoreError> {
    let due: Vec<String> = db
        .rows("SELECT list FROM flow_wakes WHERE at <= ? ORDER BY at LIMIT 100", &[int(now)])?
        .into_iter()
        .map(|r| Cols::new(r).text())
        .collect::<Result<_, _>>()?;
    if due.is_empty() {
        return Ok(());
    }
    let mut g = Gate { to_pump: due.into_iter().collect(), ..Gate::new(db, now, read_paused(db)?) };
    for l in g.to_pump.clone() {
        g.wakes.insert(l, None);
    }
    g.pump_all(plan)?;
    plan.effects.enqueue.extend(std::mem::take(&mut g.out));
    if let Some(at) = g.finish()? {
        plan.effects.alarm = Some(plan.effects.alarm.map_or(at, |a| a.min(at)));
    }
    settle(plan, std::mem::take(&mut g.moved));
    Ok(())
}

fn read_paused(db: &impl Sql) -> Result<BTreeSet<String>, StoreError> {
    db.rows("SELECT what FROM flow_paused", &[])?.into_iter().map(|r| Cols::new(r).text()).collect()
}

fn plain_flow() -> Flow {
    Flow {
        concurrency: Vec::new(),
        rate: None,
        priority: edgejobs_core::flow::DEFAULT_PRIORITY,
        debounce: None,
        throttle: None,
        held: 0,
        admitted: 0,
        spot: None,
    }
}

impl<'a, S: Sql> Gate<'a, S> {
    fn new(db: &'a S, now: u64, paused: BTreeSet<String>) -> Gate<'a, S> {
        Gate {
            db,
            now,
            lists: BTreeMap::new(),
            paused,
            moved: BTreeMap::new(),
            to_pump: BTreeSet::new(),
            wakes: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    fn list(&mut self, name: &str) -> Result<&mut ListRow, StoreError> {
        if !self.lists.contains_key(name) {
            let rows = self.db.rows(
                "SELECT running, lim, waiting, seq, next_at, spacing FROM flow_lists WHERE list = ?",
                &[text(name)],
            )?;
            let row = match rows.into_iter().next() {
                Some(r) => {
                    let mut c = Cols::new(r);
                    Some(ListRow {
                        running: c.u64()?,
                        lim: c.u64()?,
                        waiting: c.u64()?,
                        seq: c.u64()?,
                        next_at: c.u64()?,
                        spacing: c.u64()?,
                    })
                }
                None => None,
            };
            self.lists.insert(name.to_owned(), (row.clone().unwrap_or_default(), row));
        }
        let (row, _) = self.lists.get_mut(name).ok_or_else(|| StoreError("a flow list vanished".into()))?;
        Ok(row)
    }

    /// Gives back every slot `job` holds and takes it out of the list it waits in.
    fn release(&mut self, job: &mut Job) -> Result<(), StoreError> {
        let tenant = job.tenant.clone();
        #[cfg(feature = "bugs")]
        let (leak, no_wake) = {
            let b = bugs();
            (b.slot_leak && matches!(job.state, JobState::Cancelled | JobState::Dead), b.no_wake)
        };
        let Some(flow) = job.flow.as_mut() else { return Ok(()) };
        let held: Vec<String> = flow
            .order()
            .iter()
            .take(usize::from(flow.held))
            .map(|c| concurrency_list(&tenant.scope_key(&c.key)))
            .collect();
        flow.held = 0;
        let spot = flow.spot.take();
        job.waiting_for = None;
        for l in held {
            #[cfg(feature = "bugs")]
            if leak {
                continue;
            }
            let row = self.list(&l)?;
            row.running = row.running.saturating_sub(1);
            #[cfg(feature = "bugs")]
            if no_wake {
                continue;
            }
            self.to_pump.insert(l);
        }
        if let Some(s) = spot {
            self.db.rows(
                "DELETE FROM flow_wait WHERE list = ? AND rank = ? AND seq = ?",
                &[text(s.list.clone()), int(u64::from(s.rank)), int(s.seq)],
            )?;
            let row = self.list(&s.list)?;
            row.waiting = row.waiting.saturating_sub(1);
            // A job that left the head of a list may have been what held the others back.
            self.to_pump.insert(s.list);
        }
        Ok(())
    }

    /// Takes `job` (holding nothing) as far as it can: paused → parked; its concurrency
    /// keys; its rate; then sent. `popped`: the list the job was just taken from.
    fn admit(&mut self, job: &mut Job, popped: Option<String>) -> Result<(), StoreError> {
        let tenant = job.tenant.clone();
        let Some(flow) = job.flow.clone() else { return Ok(()) };
        // Paused: the type, then each key. A parked job holds nothing.
        let paused_at = std::iter::once(format!("t:{}", job.job_type))
            .chain(flow.order().iter().map(|c| format!("k:{}", tenant.scope_key(&c.key))))
            .chain(flow.rate.iter().map(|r| format!("k:{}", tenant.scope_key(&r.key))))
            .find(|p| self.paused.contains(p));
        if let Some(p) = paused_at {
            let list = match p.strip_prefix("k:") {
                Some(k) => format!("p:{k}"),
                None => p,
            };
            return self.wait(job, &list, "paused".to_owned());
        }
        // All keys or none: a job that waits holds nothing (no slot is held by a job that
        // cannot run, and two jobs never each hold what the other waits for). It waits at
        // the first key without room; a key with jobs waiting has no room for a newcomer
        // (first come, first served), but does for the job its own list just gave up.
        let keys: Vec<(String, &edgejobs_core::flow::Concurrency)> =
            flow.order().into_iter().map(|c| (concurrency_list(&tenant.scope_key(&c.key)), c)).collect();
        for (l, c) in &keys {
            let row = self.list(l)?;
            row.lim = u64::from(c.limit);
            #[allow(unused_mut)]
            let mut below = row.running < row.lim;
            #[cfg(feature = "bugs")]
            if bugs().over_limit {
                below = true;
            }
            let room = below && (row.waiting == 0 || popped.as_deref() == Some(l.as_str()));
            if !room {
                return self.wait(job, l, format!("concurrency:{}", c.key));
            }
        }
        for (l, _) in &keys {
            self.list(l)?.running += 1;
        }
        if let Some(f) = job.flow.as_mut() {
            f.held = u8::try_from(keys.len()).unwrap_or(u8::MAX);
        }
        if let Some(rate) = &flow.rate {
            let l = rate_list(&tenant.scope_key(&rate.key));
            let now = self.now;
            let row = self.list(&l)?;
            row.spacing = rate.spacing_ms();
            if row.waiting > 0 || row.next_at > now {
                let reason = format!("rate:{}", rate.key);
                self.wakes.insert(l.clone(), None);
                return self.wait(job, &l, reason);
            }
            row.next_at = now.max(row.next_at) + row.spacing;
        }
        self.send(job);
        Ok(())
    }

    fn send(&mut self, job: &mut Job) {
        let attempt = job.attempt + 1;
        if let Some(f) = job.flow.as_mut() {
            f.admitted = attempt;
            f.spot = None;
        }
        job.waiting_for = None;
        self.out.push((
            job.lane,
            JobRef {
                id: job.id.clone(),
                attempt,
                epoch: job.epoch,
                trace: job.trace.as_ref().map(edgejobs_core::trace::TraceContext::parent_only),
            },
        ));
    }

    fn wait(&mut self, job: &mut Job, list: &str, reason: String) -> Result<(), StoreError> {
        let rank = edgejobs_core::flow::MAX_PRIORITY.saturating_sub(job.flow.as_ref().map_or(5, |f| f.priority));
        let row = self.list(list)?;
        row.seq += 1;
        row.waiting += 1;
        let seq = row.seq;
        self.db.rows(
            "INSERT INTO flow_wait (list, rank, seq, job_id, since) VALUES (?, ?, ?, ?, ?)",
            &[text(list), int(u64::from(rank)), int(seq), text(job.id.as_str()), int(self.now)],
        )?;
        if let Some(f) = job.flow.as_mut() {
            f.spot = Some(Spot { list: list.to_owned(), rank, seq, since: self.now });
        }
        job.waiting_for = Some(reason);
        Ok(())
    }

    /// The best waiting job of `list`: the highest effective priority, the oldest among
    /// equals. Two indexed reads: the head by rank and the oldest.
    fn best(&self, list: &str) -> Result<Option<(u8, u64, String)>, StoreError> {
        let read = |q: &str| -> Result<Option<(u8, u64, String, u64)>, StoreError> {
            match self.db.rows(q, &[text(list)])?.into_iter().next() {
                Some(r) => {
                    let mut c = Cols::new(r);
                    let rank = u8::try_from(c.u64()?).unwrap_or(u8::MAX);
                    Ok(Some((rank, c.u64()?, c.text()?, c.u64()?)))
                }
                None => Ok(None),
            }
        };
        let top = read("SELECT rank, seq, job_id, since FROM flow_wait WHERE list = ? ORDER BY rank, seq LIMIT 1")?;
        let oldest = read("SELECT rank, seq, job_id, since FROM flow_wait WHERE list = ? ORDER BY seq LIMIT 1")?;
        let pick = match (top, oldest) {
            (Some(t), Some(o)) => {
                let (et, eo) = (effective_rank(t.0, t.3, self.now), effective_rank(o.0, o.3, self.now));
                if eo <= et { o } else { t }
            }
            (Some(t), None) => t,
            (None, Some(o)) => o,
            (None, None) => return Ok(None),
        };
        Ok(Some((pick.0, pick.1, pick.2)))
    }

    /// Takes the waiting job `id` out of `list` (its row is deleted by the caller's pick).
    fn take(&mut self, plan: &mut Plan, list: &str, rank: u8, seq: u64, id: &str) -> Result<Option<Job>, StoreError> {
        self.db.rows(
            "DELETE FROM flow_wait WHERE list = ? AND rank = ? AND seq = ?",
            &[text(list), int(u64::from(rank)), int(seq)],
        )?;
        let row = self.list(list)?;
        row.waiting = row.waiting.saturating_sub(1);
        let id = id.parse::<JobId>().ok().ok_or_else(|| StoreError(format!("flow_wait holds a bad job id {id:?}")))?;
        // The plan's own version if it holds the job; else this call's; else the stored one.
        if let Some(pos) = plan.updates.iter().position(|j| j.id == id) {
            return Ok(Some(plan.updates.remove(pos)));
        }
        if let Some(j) = plan.inserts.iter().find(|j| j.id == id) {
            return Ok(Some(j.clone()));
        }
        if let Some(j) = self.moved.remove(&id) {
            return Ok(Some(j));
        }
        store::load(self.db, &id)
    }

    /// Starts what each list in `to_pump` can start, until nothing moves.
    fn pump_all(&mut self, plan: &mut Plan) -> Result<(), StoreError> {
        let mut rounds = 0;
        while let Some(l) = self.to_pump.pop_first() {
            rounds += 1;
            if rounds > 10_000 {
                return Err(StoreError("the flow gate did not settle".into()));
            }
            self.pump(plan, &l)?;
        }
        Ok(())
    }

    fn pump(&mut self, plan: &mut Plan, l: &str) -> Result<(), StoreError> {
        let key = &l[2.min(l.len())..];
        let paused_key = self.paused.contains(&format!("k:{key}"));
        for _ in 0..MAX_MOVES {
            let now = self.now;
            let row = self.list(l)?.clone();
            if row.waiting == 0 {
                return Ok(());
            }
            let may = match &l[..2.min(l.len())] {
                "c:" => !paused_key && row.running < row.lim,
                "r:" => !paused_key && row.next_at <= now,
                "p:" => !paused_key,
                "t:" => !self.paused.contains(l),
                _ => false,
            };
            if !may {
                if l.starts_with("r:") && !paused_key {
                    self.wakes.insert(l.to_owned(), Some(row.next_at));
                }
                return Ok(());
            }
            let Some((rank, seq, id)) = self.best(l)? else {
                // The count says jobs wait but none is listed: trust the rows.
                self.list(l)?.waiting = 0;
                return Ok(());
            };
            let Some(mut job) = self.take(plan, l, rank, seq, &id)? else { continue };
            let Some(flow) = job.flow.as_mut() else { continue };
            flow.spot = None;
            job.waiting_for = None;
            if job.state != JobState::Queued {
                self.keep(job);
                continue;
            }
            if l.starts_with("c:") {
                self.admit(&mut job, Some(l.to_owned()))?;
            } else if l.starts_with("r:") && self.stopped(&job) {
                // Its type or one of its keys was paused while it waited for the rate: it
                // gives its keys back and is parked (admission parks it).
                self.release(&mut job)?;
                self.admit(&mut job, None)?;
            } else if l.starts_with("r:") {
                let r = self.list(l)?;
                r.next_at = now.max(r.next_at) + r.spacing;
                self.send(&mut job);
            } else {
                self.admit(&mut job, None)?;
            }
            self.keep(job);
        }
        // More than one call moves: the alarm goes on at once.
        self.wakes.insert(l.to_owned(), Some(self.now));
        Ok(())
    }

    /// Whether a pause stops `job`: its type's, or one of its keys'.
    fn stopped(&self, job: &Job) -> bool {
        let Some(flow) = &job.flow else { return self.paused.contains(&format!("t:{}", job.job_type)) };
        std::iter::once(format!("t:{}", job.job_type))
            .chain(flow.concurrency.iter().map(|c| format!("k:{}", job.tenant.scope_key(&c.key))))
            .chain(flow.rate.iter().map(|r| format!("k:{}", job.tenant.scope_key(&r.key))))
            .any(|p| self.paused.contains(&p))
    }

    fn keep(&mut self, job: Job) {
        self.moved.insert(job.id.clone(), job);
    }

    /// Writes the lists' rows and the rate wake-ups; answers the earliest wake-up.
    fn finish(&mut self) -> Result<Option<u64>, StoreError> {
        for (name, (row, read)) in &self.lists {
            let spent = row.running == 0 && row.waiting == 0 && row.next_at <= self.now;
            // Unchanged: nothing to write (a spent row that exists is still cleaned up).
            if read.as_ref() == Some(row) && !spent || read.is_none() && spent {
                continue;
            }
            if spent {
                self.db.rows("DELETE FROM flow_lists WHERE list = ?", &[text(name.clone())])?;
                continue;
            }
            self.db.rows(
                "INSERT INTO flow_lists (list, running, lim, waiting, seq, next_at, spacing) VALUES (?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(list) DO UPDATE SET running = excluded.running, lim = excluded.lim,
                 waiting = excluded.waiting, seq = excluded.seq, next_at = excluded.next_at, spacing = excluded.spacing",
                &[
                    text(name.clone()),
                    int(row.running),
                    int(row.lim),
                    int(row.waiting),
                    int(row.seq),
                    int(row.next_at),
                    int(row.spacing),
                ],
            )?;
        }
        let mut earliest: Option<u64> = None;
        let wakes = std::mem::take(&mut self.wakes);
        for (l, at) in wakes {
            let waiting = self.lists.get(&l).map_or(0, |(r, _)| r.waiting);
            let at = at.or_else(|| self.lists.get(&l).map(|(r, _)| r.next_at));
            match at {
                Some(at) if waiting > 0 => {
                    self.db.rows(
                        "INSERT INTO flow_wakes (list, at) VALUES (?, ?) ON CONFLICT(list) DO UPDATE SET at = excluded.at",
                        &[text(l), int(at)],
                    )?;
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                }
                _ => {
                    self.db.rows("DELETE FROM flow_wakes WHERE list = ?", &[text(l)])?;
                }
            }
        }
        Ok(earliest)
    }
}

/// Pauses or resumes `what` (`k:<scoped key>` or `t:<type>`). A resume moves the parked
/// jobs and the key's waiting ones on: their sends join `plan`.
pub fn set_paused(db: &impl Sql, plan: &mut Plan, what: &str, paused: bool, now: u64) -> Result<bool, StoreError> {
    let was = !db.rows("SELECT what FROM flow_paused WHERE what = ?", &[text(what)])?.is_empty();
    if paused {
        db.rows("INSERT OR REPLACE INTO flow_paused (what, at) VALUES (?, ?)", &[text(what), int(now)])?;
        return Ok(was != paused);
    }
    db.rows("DELETE FROM flow_paused WHERE what = ?", &[text(what)])?;
    let mut g = Gate::new(db, now, read_paused(db)?);
    match what.strip_prefix("k:") {
        Some(k) => {
            g.to_pump.extend([format!("p:{k}"), concurrency_list(k), rate_list(k)]);
        }
        None => {
            g.to_pump.insert(what.to_owned());
        }
    }
    g.pump_all(plan)?;
    plan.effects.enqueue.extend(std::mem::take(&mut g.out));
    if let Some(at) = g.finish()? {
        plan.effects.alarm = Some(plan.effects.alarm.map_or(at, |a| a.min(at)));
    }
    settle(plan, std::mem::take(&mut g.moved));
    Ok(was != paused)
}

pub fn key_state(db: &impl Sql, scoped: &str) -> Result<KeyState, StoreError> {
    let row = |l: String| -> Result<ListRow, StoreError> {
        match db
            .rows("SELECT running, lim, waiting, next_at FROM flow_lists WHERE list = ?", &[text(l)])?
            .into_iter()
            .next()
        {
            Some(r) => {
                let mut c = Cols::new(r);
                Ok(ListRow {
                    running: c.u64()?,
                    lim: c.u64()?,
                    waiting: c.u64()?,
                    next_at: c.u64()?,
                    ..ListRow::default()
                })
            }
            None => Ok(ListRow::default()),
        }
    };
    let c = row(concurrency_list(scoped))?;
    let r = row(rate_list(scoped))?;
    let p = row(format!("p:{scoped}"))?;
    let paused = !db.rows("SELECT what FROM flow_paused WHERE what = ?", &[text(format!("k:{scoped}"))])?.is_empty();
    Ok(KeyState {
        running: c.running,
        limit: c.lim,
        waiting: c.waiting,
        rate_waiting: r.waiting,
        rate_next_at: r.next_at,
        parked: p.waiting,
        paused,
    })
}

/// The lists with the most waiting jobs (the busiest keys), at most `n`.
pub fn busiest(db: &impl Sql, n: u64) -> Result<Vec<BusyList>, StoreError> {
    db.rows(
        "SELECT list, running, lim, waiting FROM flow_lists ORDER BY waiting DESC, running DESC LIMIT ?",
        &[int(n)],
    )?
    .into_iter()
    .map(|r| {
        let mut c = Cols::new(r);
        let list = c.text()?;
        let (prefix, rest) = list.split_at(2.min(list.len()));
        let kind = match prefix {
            "c:" => "concurrency",
            "r:" => "rate",
            "p:" => "paused",
            _ => "paused_type",
        };
        let (tenant, key) = match rest.split_once('\u{1f}') {
            Some((t, k)) => (t.to_owned(), k.to_owned()),
            None => (String::new(), rest.to_owned()),
        };
        Ok(BusyList { kind: kind.to_owned(), tenant, key, running: c.u64()?, limit: c.u64()?, waiting: c.u64()? })
    })
    .collect()
}

/// Every list's counts against the jobs themselves (the simulation's invariant): each
/// concurrency list's `running` is the number of jobs holding it and never above its
/// limit; each list's `waiting` is its rows; every waiting row names a queued job that
/// says it waits there. Answers what is wrong, if anything.
pub fn check(db: &impl Sql) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    let mut limits: BTreeMap<String, u64> = BTreeMap::new();
    let jobs = store::load_where(db, "state IN ('queued', 'active') AND doc LIKE '%\"flow\":%' LIMIT 100000", &[])?;
    let mut spots: BTreeMap<(String, u64), JobId> = BTreeMap::new();
    for j in &jobs {
        let Some(f) = &j.flow else { continue };
        for c in f.order().iter().take(usize::from(f.held)) {
            let l = concurrency_list(&j.tenant.scope_key(&c.key));
            *held.entry(l.clone()).or_default() += 1;
            let lim = limits.entry(l).or_insert(u64::from(c.limit));
            *lim = (*lim).max(u64::from(c.limit));
        }
        if let Some(s) = &f.spot {
            spots.insert((s.list.clone(), s.seq), j.id.clone());
            if j.waiting_for.is_none() {
                problems.push(format!("{} is in list {} but not waiting", j.id, s.list));
            }
        }
    }
    let lists: Vec<(String, ListRow)> = db
        .rows("SELECT list, running, lim, waiting FROM flow_lists", &[])?
        .into_iter()
        .map(|r| {
            let mut c = Cols::new(r);
            Ok((c.text()?, ListRow { running: c.u64()?, lim: c.u64()?, waiting: c.u64()?, ..ListRow::default() }))
        })
        .collect::<Result<_, StoreError>>()?;
    let mut by_list: BTreeMap<String, u64> = BTreeMap::new();
    for r in db.rows("SELECT list, seq, job_id FROM flow_wait", &[])? {
        let mut c = Cols::new(r);
        let (l, seq, id) = (c.text()?, c.u64()?, c.text()?);
        *by_list.entry(l.clone()).or_default() += 1;
        if spots.get(&(l.clone(), seq)).map(JobId::as_str) != Some(id.as_str()) {
            problems.push(format!("flow_wait row {l}#{seq} names {id}, which does not wait there"));
        }
    }
    let names: BTreeSet<&String> = lists.iter().map(|(n, _)| n).chain(held.keys()).chain(by_list.keys()).collect();
    for name in names {
        let row = lists.iter().find(|(n, _)| n == name).map(|(_, r)| r.clone()).unwrap_or_default();
        let h = held.get(name).copied().unwrap_or(0);
        if name.starts_with("c:") && row.running != h {
            problems.push(format!("{name}: running {} but {h} jobs hold it", row.running));
        }
        if let Some(lim) = limits.get(name)
            && h > *lim
        {
            problems.push(format!("{name}: {h} jobs hold it, over its limit {lim}"));
        }
        let w = by_list.get(name).copied().unwrap_or(0);
        if row.waiting != w {
            problems.push(format!("{name}: waiting {} but {w} rows", row.waiting));
        }
    }
    Ok(problems)
}

impl<S: Sql, H: crate::Host> crate::Shard<S, H> {
    /// The flow operation: pause or resume a key or a type (a resume sends what it lets
    /// through), one key's state, or the busiest lists.
    pub fn flow(&self, op: edgejobs_core::flow::FlowOp) -> crate::Outcome<(edgejobs_core::flow::FlowReply, Effects)> {
        use edgejobs_core::flow::{FlowOp, FlowReply};
        let now = self.host.now_ms();
        match op {
            FlowOp::Pause { target, paused } => self.commit(|db| {
                let mut plan = Plan::default();
                let changed = set_paused(db, &mut plan, &target.stored(), paused, now)?;
                apply(db, &mut plan, now)?;
                Ok((FlowReply::Changed(changed), plan.effects))
            }),
            FlowOp::Key { tenant, key } => {
                Ok((FlowReply::Key(key_state(&self.db, &tenant.scope_key(&key))?), Effects::default()))
            }
            FlowOp::Busiest { n } => {
                let lists = busiest(&self.db, u64::from(n.min(100)))?;
                let total = self.db.rows("SELECT COALESCE(SUM(waiting), 0) FROM flow_lists", &[])?;
                let waiting = match total.into_iter().next() {
                    Some(r) => Cols::new(r).u64()?,
                    None => 0,
                };
                Ok((FlowReply::Busiest(edgejobs_core::flow::Busiest { lists, waiting }), Effects::default()))
            }
        }
    }
}

/// What a create's debounce or throttle decided for one job.
#[derive(Debug, Clone, PartialEq)]
pub enum Window {
    /// Create it (a debounced job becomes scheduled for when its key is quiet).
    Create(Job),
    /// Answer with this existing job instead (debounced into it, or over a throttle that
    /// drops).
    Answer(Job, edgejobs_core::protocol::FlowOutcome),
}

/// The debounce and throttle windows of a create, in order (one transaction, so two
/// enqueues with one key never both open a window). `known`: jobs whose idempotency key
/// already names a job (they are answered with it and open no window). A job over a
/// throttle that rejects is answered `Answer` with `Rejected`.
pub fn windows(db: &impl Sql, jobs: Vec<Job>, known: &BTreeSet<String>, now: u64) -> Result<Vec<Window>, StoreError> {
    use edgejobs_core::protocol::FlowOutcome;
    let mut out: Vec<Window> = Vec::with_capacity(jobs.len());
    // Jobs this call creates, by id (a later job of the batch may debounce into one).
    let mut fresh: BTreeMap<JobId, usize> = BTreeMap::new();
    for mut job in jobs {
        let windowed = job.flow.as_ref().is_some_and(|f| f.debounce.is_some() || f.throttle.is_some());
        if !windowed || job.scoped_key().is_some_and(|k| known.contains(&k)) {
            out.push(Window::Create(job));
            continue;
        }
        let flow = job.flow.clone().unwrap_or_else(plain_flow);
        if let Some(t) = &flow.throttle {
            let key = format!("th:{}", job.tenant.scope_key(&t.key));
            let row = window_row(db, &key)?;
            let (start, n, last) = match row {
                Some((start, n, last)) if now < start.saturating_add(t.period_ms) => (start, n, Some(last)),
                _ => (now, 0, None),
            };
            if n >= u64::from(t.limit) {
                let retry_after_ms = start.saturating_add(t.period_ms).saturating_sub(now);
                let existing = match (t.on_limit, last) {
                    (edgejobs_core::flow::OnLimit::Drop, Some(id)) => find(db, &out, &fresh, &id)?,
                    _ => None,
                };
                out.push(match existing {
                    Some(j) => Window::Answer(j, FlowOutcome::Throttled),
                    None => Window::Answer(job, FlowOutcome::Rejected { retry_after_ms }),
                });
                continue;
            }
            put_window(db, &key, start, n + 1, job.id.as_str())?;
        }
        if let Some(d) = &flow.debounce {
            let key = format!("db:{}", job.tenant.scope_key(&d.key));
            let open = match window_row(db, &key)? {
                Some((start, _, id)) => find(db, &out, &fresh, &id)?
                    .filter(|j| j.state == JobState::Scheduled && j.attempt == 0)
                    .map(|j| (start, j)),
                None => None,
            };
            let due = |start: u64| {
                let quiet = now.saturating_add(d.period_ms);
                d.max_wait_ms.map_or(quiet, |w| quiet.min(start.saturating_add(w)))
            };
            if let Some((start, mut existing)) = open {
                // The last payload wins; the run waits for the key to be quiet, at most
                // `max_wait` after the first enqueue.
                existing.payload = std::mem::take(&mut job.payload);
                existing.run_at = due(start);
                existing.updated_at = now;
                match fresh.get(&existing.id).and_then(|i| out.get_mut(*i)) {
                    Some(Window::Create(j)) => *j = existing.clone(),
                    _ => {
                        store::write_rows(db, std::slice::from_ref(&existing), true)?;
                    }
                }
                out.push(Window::Answer(existing, FlowOutcome::Debounced));
                continue;
            }
            job.state = JobState::Scheduled;
            job.run_at = job.run_at.max(due(now));
            put_window(db, &key, now, 1, job.id.as_str())?;
        }
        fresh.insert(job.id.clone(), out.len());
        out.push(Window::Create(job));
    }
    Ok(out)
}

fn window_row(db: &impl Sql, key: &str) -> Result<Option<(u64, u64, String)>, StoreError> {
    match db.rows("SELECT start, n, job_id FROM flow_windows WHERE key = ?", &[text(key)])?.into_iter().next() {
        Some(r) => {
            let mut c = Cols::new(r);
            Ok(Some((c.u64()?, c.u64()?, c.text()?)))
        }
        None => Ok(None),
    }
}

fn put_window(db: &impl Sql, key: &str, start: u64, n: u64, job: &str) -> Result<(), StoreError> {
    db.rows(
        "INSERT INTO flow_windows (key, start, n, job_id) VALUES (?, ?, ?, ?)
         ON CONFLICT(key) DO UPDATE SET start = excluded.start, n = excluded.n, job_id = excluded.job_id",
        &[text(key), int(start), int(n), text(job)],
    )?;
    Ok(())
}

/// A job by id: one this call creates, else the stored one.
fn find(db: &impl Sql, out: &[Window], fresh: &BTreeMap<JobId, usize>, id: &str) -> Result<Option<Job>, StoreError> {
    let Ok(id) = id.parse::<JobId>() else { return Ok(None) };
    if let Some(Window::Create(j)) = fresh.get(&id).and_then(|i| out.get(*i)) {
        return Ok(Some(j.clone()));
    }
    store::load(db, &id)
}

/// A restore's share (one page of a shard's jobs, already written): the first page clears
/// the lists (pauses and the debounce and throttle windows stay: they are the keys', not
/// the jobs'). Each job takes back exactly what it had, so the result does not depend on
/// which page holds which job: a running job, and a queued one the backup caught sent
/// (its next attempt admitted), hold their keys again (the sent one is sent again, a
/// re-send the gate passes); a job that waited waits again in its list (holding its keys
/// if it waited for a rate), keeping its age. Only a queued job the gate never saw goes
/// through it. Answers the jobs changed (to write) and the plan's effects.
pub fn restore(db: &impl Sql, jobs: &[Job], first: bool, now: u64) -> Result<Plan, StoreError> {
    if first {
        db.script("DELETE FROM flow_lists; DELETE FROM flow_wait; DELETE FROM flow_wakes;")?;
    }
    let mut plan = Plan::default();
    let paused = read_paused(db)?;
    // A job parked for a pause that is over (resumed between the backup and the restore)
    // goes through the gate like a new one.
    let parked_for_nothing = |list: &str| match list.strip_prefix("p:") {
        Some(k) => !paused.contains(&format!("k:{k}")),
        None => list.starts_with("t:") && !paused.contains(list),
    };
    let mut g = Gate::new(db, now, BTreeSet::new());
    for j in jobs {
        let Some(f) = j.flow.clone() else {
            // Through the gate (its type may be paused).
            if j.state == JobState::Queued {
                plan.effects.add(j, edgejobs_core::machine::Effect::Enqueue);
                plan.updates.push(j.clone());
            }
            continue;
        };
        let mut job = j.clone();
        let hold = |g: &mut Gate<'_, _>, job: &mut Job| -> Result<(), StoreError> {
            for c in f.order() {
                let row = g.list(&concurrency_list(&job.tenant.scope_key(&c.key)))?;
                row.running += 1;
                row.lim = row.lim.max(u64::from(c.limit));
            }
            if let Some(f) = job.flow.as_mut() {
                f.held = u8::try_from(f.concurrency.len()).unwrap_or(u8::MAX);
            }
            Ok(())
        };
        match (j.state, &f.spot) {
            (JobState::Active, _) => {
                hold(&mut g, &mut job)?;
                if let Some(f) = job.flow.as_mut() {
                    f.spot = None;
                }
                job.waiting_for = None;
            }
            (JobState::Queued, Some(spot)) if !parked_for_nothing(&spot.list) => {
                // It waits again where it waited, as old as it was.
                let in_rate = spot.list.starts_with("r:");
                if let Some(fl) = job.flow.as_mut() {
                    fl.held = 0;
                    fl.spot = None;
                }
                if in_rate {
                    hold(&mut g, &mut job)?;
                    let spacing = f.rate.as_ref().map_or(0, edgejobs_core::flow::Rate::spacing_ms);
                    g.list(&spot.list)?.spacing = spacing;
                    g.wakes.insert(spot.list.clone(), None);
                }
                if spot.list.starts_with("c:") {
                    let limit = f
                        .concurrency
                        .iter()
                        .find(|c| concurrency_list(&job.tenant.scope_key(&c.key)) == spot.list)
                        .map_or(0, |c| u64::from(c.limit));
                    let row = g.list(&spot.list)?;
                    row.lim = row.lim.max(limit);
                }
                let reason = job.waiting_for.clone().unwrap_or_else(|| "paused".to_owned());
                g.wait(&mut job, &spot.list, reason)?;
                if let Some(s) = job.flow.as_mut().and_then(|f| f.spot.as_mut()) {
                    s.since = spot.since;
                    db.rows(
                        "UPDATE flow_wait SET since = ? WHERE list = ? AND rank = ? AND seq = ?",
                        &[int(spot.since), text(s.list.clone()), int(u64::from(s.rank)), int(s.seq)],
                    )?;
                }
            }
            (JobState::Queued, None) if j.waiting_for.is_none() && f.admitted == j.attempt + 1 => {
                hold(&mut g, &mut job)?;
                plan.effects.add(&job, edgejobs_core::machine::Effect::Enqueue);
            }
            (JobState::Queued, _) => {
                if let Some(f) = job.flow.as_mut() {
                    f.held = 0;
                    f.spot = None;
                    f.admitted = 0;
                }
                job.waiting_for = None;
                plan.effects.add(&job, edgejobs_core::machine::Effect::Enqueue);
            }
            _ => {
                if let Some(f) = job.flow.as_mut() {
                    f.held = 0;
                    f.spot = None;
                }
                job.waiting_for = None;
            }
        }
        plan.updates.push(job);
    }
    g.finish()?;
    gate(db, &mut plan, now)?;
    Ok(plan)
}
