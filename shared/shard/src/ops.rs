//! The shard's batch operations: create, read, apply events (starts, outcomes, cancels,
//! retries), list, replay dead jobs, record hand-offs, and the numbers for a scrape. Each
//! write is one [`Shard::commit`]: load, plan (pure), write; the effects are returned.

use std::collections::BTreeSet;

use edgejobs_core::machine::{Event, Refusal};
use edgejobs_core::plan::{self, JobEvent};
use edgejobs_core::protocol::{
    Applied, ApplyMany, FinishMany, Finished, FlowOutcome, Get, GetMany, HandoffMany, List, ListPage, Listed, MAX_SCAN,
    Pending, ReplayDead, ReportMany, SetGauge, Stored,
};
use edgejobs_core::stats::{JobCount, ShardStats};
use edgejobs_core::wire::{Cursor, Include};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId, Lane};
use serde_json::value::RawValue;

use crate::sql::{Cols, Sql, StoreError, Value, int, text};
use crate::store::{self, tags_column};
use crate::{Effects, Failure, Host, Level, Outcome, Shard};

/// Largest page a listing may ask one shard for.
pub const MAX_LIST: u32 = 1000;

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn not_found(id: &JobId) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("no job with id {id}"))
}

fn raw(doc: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(doc).map_err(|e| StoreError(format!("a stored document is not JSON: {e}")))
}

/// The condition of a filter by tag, with [`tag_pattern`] as its one bind: `instr`, not
/// `LIKE`, because Durable Objects' SQLite refuses a `LIKE` pattern over 50 bytes (a tag
/// may have 64), and a substring needs no escaping.
pub const TAG_CONDITION: &str = "instr(tags, ?) > 0";

/// What [`TAG_CONDITION`] looks for: the tag's entry in the tags column (`,tag,`; a tag
/// has no comma, so the entry is found only where the tag is whole).
pub fn tag_pattern(tag: &str) -> Value {
    text(tags_column(&[tag.to_owned()]))
}

/// How many steps each loaded run had (an invoke's children are inserted only with the
/// step's first record).
fn steps_of(loaded: &[Job]) -> std::collections::BTreeMap<JobId, usize> {
    loaded.iter().map(|j| (j.id.clone(), j.steps.len())).collect()
}

/// An event's answer as its caller gets it: the job when `want`ed, and, when `hand_over`
/// (a start or a takeover, to its consumer), the attempt's lease token beside it. The token
/// is its holder's alone: never inside an answer's job.
fn applied(a: Result<Job, Refusal>, want: bool, hand_over: bool) -> Result<Applied, Refusal> {
    a.map(|mut job| {
        let lease = if hand_over { job.lease.take() } else { None };
        job.lease = None;
        Applied { id: job.id.clone(), state: job.state, attempt: job.attempt, job: want.then_some(job), lease }
    })
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// Creates jobs (validated, with ids of this shard) in one transaction, each answered
    /// in order with the JSON written. The edge hands in the jobs of every request that
    /// arrived meanwhile (group commit) with the deployment's idempotency window.
    pub fn create(&self, jobs: Vec<Job>, window_ms: u64) -> Outcome<(Vec<Stored>, Effects)> {
        self.create_batches(jobs, window_ms, Vec::new())
    }

    /// [`Self::create`], opening `batches` (#30: `POST /v1/jobs/batch` with `on_complete`)
    /// in the same transaction: each gets its row, its total the jobs of it created. A job
    /// naming a batch that this call does not open is refused with the whole call (its end
    /// would count against no row, and the batch's callback would never fire).
    pub fn create_batches(
        &self,
        jobs: Vec<Job>,
        window_ms: u64,
        batches: Vec<edgejobs_core::callbacks::BatchOpen>,
    ) -> Outcome<(Vec<Stored>, Effects)> {
        let number = self.numbered()?;
        if let Some(j) = jobs.iter().find(|j| j.id.shard() != number) {
            return Err(
                ApiError::new(ErrorCode::InvalidField, format!("job {} does not belong to this shard", j.id)).into()
            );
        }
        if let Some(b) = batches.iter().find(|b| edgejobs_core::callbacks::batch_shard(&b.id) != Some(number)) {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("batch {} does not belong to this shard", b.id),
            )
            .into());
        }
        let unopened = |j: &&Job| j.batch.as_ref().is_some_and(|b| !batches.iter().any(|o| &o.id == b));
        if let Some(j) = jobs.iter().find(unopened) {
            return Err(ApiError::new(
                ErrorCode::Internal,
                format!(
                    "job {} names batch {}, which this create does not open",
                    j.id,
                    j.batch.as_deref().unwrap_or("")
                ),
            )
            .into());
        }
        // The schedules' namespace is theirs (the router refuses such keys first): a job
        // holding a run's key would stand in for that run.
        #[cfg(feature = "bugs")]
        let hijack_allowed = self.bugs.schedule_key_hijack;
        #[cfg(not(feature = "bugs"))]
        let hijack_allowed = false;
        if let Some(j) = jobs.iter().find(|j| {
            !hijack_allowed
                && j.idempotency_key.as_deref().is_some_and(|k| k.starts_with(edgejobs_core::spec::SCHEDULE_NAMESPACE))
        }) {
            return Err(ApiError::field(
                "idempotency_key",
                format!("job {}: keys starting with \"schedule:\" are reserved for schedules", j.id),
            )
            .into());
        }
        let now = self.host.now_ms();
        let keys: Vec<String> = jobs.iter().filter_map(Job::scoped_key).collect();
        self.commit(|db| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            #[allow(unused_mut)]
            let mut here = store::keys_here(db, &keys, now)?;
            #[cfg(feature = "bugs")]
            if self.bugs.moved_key_created {
                here.moved.clear();
            }
            // A key that moved to another shard after a growth is not created here (the
            // caller read the topology before the growth): answered with its new home.
            let moved_to: Vec<Option<u16>> =
                jobs.iter().map(|j| j.scoped_key().and_then(|k| here.moved.get(&k).copied())).collect();
            let jobs: Vec<Job> = jobs.into_iter().zip(&moved_to).filter(|(_, m)| m.is_none()).map(|(j, _)| j).collect();
            // Debounce and throttle windows answer some jobs instead of creating them.
            let known: BTreeSet<String> = here.jobs.keys().cloned().collect();
            let windows = crate::flow::windows(db, jobs, &known, now)?;
            let mut instead: Vec<Option<Stored>> = Vec::with_capacity(windows.len());
            let mut jobs = Vec::with_capacity(windows.len());
            for w in windows {
                match w {
                    crate::flow::Window::Create(j) => {
                        instead.push(None);
                        jobs.push(j);
                    }
                    crate::flow::Window::Answer(j, outcome) => {
                        let doc = match outcome {
                            FlowOutcome::Rejected { .. } => "null".to_owned(),
                            _ => store::to_json(&j)?,
                        };
                        instead.push(Some(Stored {
                            created: false,
                            job: raw(doc)?,
                            moved_to: None,
                            flow: Some(outcome),
                        }));
                    }
                }
            }
            let (mut plan, key_writes, answers) = plan::create(jobs, here.jobs, now, window_ms);
            crate::callbacks::open(db, &plan, &batches)?;
            let mut docs = crate::flow::apply(db, &mut plan, now)?.into_iter();
            store::put_keys(db, &key_writes)?;
            // Answer with the JSON just written (created jobs come in insert order).
            let mut answers = answers.into_iter();
            let mut instead = instead.into_iter();
            let stored = moved_to
                .into_iter()
                .map(|m| {
                    if let Some(to) = m {
                        return Ok(Stored {
                            created: false,
                            job: raw("null".to_owned())?,
                            moved_to: Some(to),
                            flow: None,
                        });
                    }
                    if let Some(Some(s)) = instead.next() {
                        return Ok(s);
                    }
                    let c = answers.next().ok_or_else(|| StoreError("a create lost an answer".to_owned()))?;
                    let written = if c.created { docs.next() } else { None };
                    let doc = match written {
                        Some(doc) => doc,
                        None => store::to_json(&c.job)?,
                    };
                    Ok(Stored { created: c.created, job: raw(doc)?, moved_to: None, flow: None })
                })
                .collect::<Result<Vec<Stored>, StoreError>>()?;
            Ok((stored, plan.effects))
        })
    }

    /// One job; another tenant's is answered exactly as a missing one (one read either way).
    pub fn get(&self, r: Get) -> Outcome<Job> {
        let visible = |j: &Job| r.tenant.as_ref().is_none_or(|t| *t == j.tenant);
        store::load(&self.db, &r.id)?.filter(visible).ok_or_else(|| not_found(&r.id).into())
    }

    /// What a new subscriber of a job's stream gets first (#30): the job, its chunks after
    /// `after` (one page), and the newest chunk number. Reads only.
    pub fn live_start(&self, r: Get, after: u64) -> Outcome<(Job, Vec<edgejobs_core::live::Row>, u64)> {
        let job = self.get(r)?;
        let rows = crate::live::read(&self.db, &job.id, after, crate::live::PAGE)?;
        let newest = match rows.last() {
            Some(last) if (rows.len() as u64) < crate::live::PAGE => last.n,
            _ => crate::live::newest(&self.db, &job.id)?,
        };
        Ok((job, rows, newest))
    }

    /// Applies events (starts, heartbeats, outcomes, cancels, retries) in one transaction,
    /// each answered on its own.
    pub fn apply_many(&self, r: ApplyMany) -> Outcome<(Vec<Result<Applied, Refusal>>, Effects)> {
        let now = self.host.now_ms();
        let ApplyMany { events, full, tenant } = r;
        #[cfg(feature = "bugs")]
        let events = self.bugs.unchecked_attempts(&self.db, events)?;
        let ids: BTreeSet<JobId> = events.iter().map(|e| e.id.clone()).collect();
        // A start or a reclaim needs the job (its payload) to run it.
        let wants: Vec<bool> =
            events.iter().map(|e| full || matches!(e.event, Event::Start { .. } | Event::Reclaim { .. })).collect();
        let (answers, effects) = self.commit(|db| {
            let mut loaded = store::load_many(db, &ids)?;
            // Another tenant's job is left out, so its event is answered as a missing job's.
            loaded.retain(|j| tenant.as_ref().is_none_or(|t| *t == j.tenant));
            crate::live::load_tapes(db, &mut loaded, events.iter().map(|e| (&e.id, &e.event)))?;
            #[cfg(feature = "bugs")]
            self.bugs.resume_twice(&mut loaded, &events);
            let invoked = crate::children::invoked(events.iter().map(|e| (&e.id, &e.event)));
            let before = steps_of(&loaded);
            #[allow(unused_mut)]
            let (mut plan, answers) = plan::apply_events(loaded, events, now, &mut || self.host.random_unit());
            crate::children::insert(&mut plan, &before, invoked);
            #[cfg(feature = "bugs")]
            self.bugs.pending_uncounted(&mut plan);
            crate::flow::apply(db, &mut plan, now)?;
            Ok((answers, plan.effects))
        })?;
        let applied = answers.into_iter().zip(wants).map(|(a, want)| applied(a, want, false)).collect();
        Ok((applied, effects))
    }

    /// The edge consumer's outcomes (see [`FinishMany`]): applied as [`Self::apply_many`]
    /// does, then up to `take` of the edge-lane jobs the gate sends because of them are
    /// started in the same transaction and handed to the caller instead of the queue. A
    /// job taken this way was admitted by the gate like any send (its key had room, it is
    /// not paused); if its caller dies, it is an active job without a runner, which the
    /// sweep times out as any other.
    pub fn finish_many(&self, r: FinishMany) -> Outcome<(Finished, Effects)> {
        let now = self.host.now_ms();
        let FinishMany { events, take } = r;
        #[cfg(feature = "bugs")]
        let events = self.bugs.unchecked_attempts(&self.db, events)?;
        let ids: BTreeSet<JobId> = events.iter().map(|e| e.id.clone()).collect();
        let (answers, next, effects) = self.commit(|db| {
            let mut loaded = store::load_many(db, &ids)?;
            crate::live::load_tapes(db, &mut loaded, events.iter().map(|e| (&e.id, &e.event)))?;
            #[allow(unused_mut)]
            let (mut plan, answers) = plan::apply_events(loaded, events, now, &mut || self.host.random_unit());
            #[cfg(feature = "bugs")]
            self.bugs.pending_uncounted(&mut plan);
            crate::flow::apply(db, &mut plan, now)?;
            let (next, effects) = self.take_next(db, plan.effects, take as usize, now)?;
            Ok((answers, next, effects))
        })?;
        let answers = answers.into_iter().map(|a| applied(a, false, false)).collect();
        Ok((Finished { answers, next }, effects))
    }

    /// Starts up to `take` of the edge-lane sends of `effects` for the caller (within the
    /// caller's transaction); answers them and the effects left (a start refused keeps its
    /// send).
    fn take_next(&self, db: &S, effects: Effects, take: usize, now: u64) -> Outcome<(Vec<Job>, Effects)> {
        #[cfg(feature = "bugs")]
        let effects = self.bugs.skip_gate_on_take(db, effects, take, now)?;
        let mut effects = effects;
        if take == 0 || !effects.enqueue.iter().any(|(lane, _)| *lane == Lane::Edge) {
            return Ok((Vec::new(), effects));
        }
        let (mut mine, mut rest) = (Vec::new(), Vec::new());
        for (lane, r) in std::mem::take(&mut effects.enqueue) {
            if lane == Lane::Edge && mine.len() < take {
                mine.push(r);
            } else {
                rest.push((lane, r));
            }
        }
        let loaded = store::load_many(db, mine.iter().map(|r| &r.id))?;
        let events = mine.iter().map(|r| JobEvent { id: r.id.clone(), event: Event::Start { attempt: r.attempt } });
        let (mut plan, answers) = plan::apply_events(loaded, events.collect(), now, &mut || self.host.random_unit());
        crate::flow::apply(db, &mut plan, now)?;
        let mut next = Vec::with_capacity(mine.len());
        for (r, a) in mine.into_iter().zip(answers) {
            match applied(a, true, false).ok().and_then(|a| a.job) {
                Some(job) => next.push(job),
                None => rest.push((Lane::Edge, r)),
            }
        }
        effects.enqueue = rest;
        effects.merge(plan.effects);
        Ok((next, effects))
    }

    /// Applies native consumers' reports in one transaction (see `plan::apply_reports`):
    /// native-lane jobs only; a start or a takeover issues the attempt's lease token, which
    /// its answer carries; every other report must carry the live token. Refusals for want
    /// of the lease are logged with the consumer's name (never a token).
    pub fn report_many(&self, r: ReportMany) -> Outcome<(Vec<Result<Applied, Refusal>>, Effects)> {
        let now = self.host.now_ms();
        let ReportMany { reports, consumer, full } = r;
        #[cfg(feature = "bugs")]
        let reports = self.bugs.unchecked_lease(&self.db, reports)?;
        let order: Vec<JobId> = reports.iter().map(|e| e.id.clone()).collect();
        let ids: BTreeSet<JobId> = order.iter().cloned().collect();
        let begins: Vec<bool> =
            reports.iter().map(|e| matches!(e.event, Event::Start { .. } | Event::Reclaim { .. })).collect();
        // A wait's answer carries the job: an event that came first completed it at once.
        let waits = reports
            .iter()
            .map(|e| matches!(e.event, Event::Step { step: edgejobs_core::workflow::StepReport::Wait { .. }, .. }));
        let wants: Vec<bool> = begins.iter().zip(waits).map(|(b, w)| full || *b || w).collect();
        // Tokens are drawn before the transaction: a failing random source refuses the call
        // (503, the consumer tries again) instead of issuing a weak token.
        let mut tokens = begins.iter().filter(|b| **b).map(|_| self.lease_token()).collect::<Outcome<Vec<String>>>()?;
        let (answers, effects) = self.commit(|db| {
            let mut loaded = store::load_many(db, &ids)?;
            crate::live::load_tapes(db, &mut loaded, reports.iter().map(|e| (&e.id, &e.event)))?;
            let mut token = || {
                tokens
                    .pop()
                    .unwrap_or_else(|| format!("{:016x}{:016x}", self.host.random_u64(), self.host.random_u64()))
            };
            let invoked = crate::children::invoked(reports.iter().map(|r| (&r.id, &r.event)));
            let before = steps_of(&loaded);
            let (mut plan, answers) =
                plan::apply_reports(loaded, reports, now, &mut || self.host.random_unit(), &mut token);
            crate::children::insert(&mut plan, &before, invoked);
            #[cfg(feature = "bugs")]
            self.bugs.step_forgotten(&mut plan);
            crate::flow::apply(db, &mut plan, now)?;
            Ok((answers, plan.effects))
        })?;
        let refused: Vec<String> = order
            .iter()
            .zip(&answers)
            .filter(|(_, a)| {
                matches!(a, Err(Refusal::LeaseMismatch { .. } | Refusal::EdgeLane | Refusal::NotLeased { .. }))
            })
            .map(|(id, _)| id.to_string())
            .collect();
        if !refused.is_empty() {
            self.host.log(
                Level::Warn,
                "consumer reports refused: not the holder of a live lease",
                serde_json::json!({ "consumer": consumer, "refused": refused.len(), "jobs": &refused[..refused.len().min(10)] }),
            );
        }
        let applied =
            answers.into_iter().zip(wants).zip(begins).map(|((a, want), begins)| applied(a, want, begins)).collect();
        Ok((applied, effects))
    }

    /// A new lease token: 192 bits of the host's cryptographic randomness, in hex.
    fn lease_token(&self) -> Outcome<String> {
        let mut bytes = Vec::with_capacity(24);
        for _ in 0..2 {
            let nonce = self.host.random_nonce().map_err(|e| {
                Failure::Refused(ApiError::new(ErrorCode::Unavailable, format!("cannot issue a lease token: {e}")))
            })?;
            bytes.extend_from_slice(&nonce);
        }
        Ok(hex_string(&bytes))
    }

    /// A page of this shard's job summaries, newest first (the primary key is the creation
    /// order). The heavy parts are removed by SQLite, so they never reach this object.
    pub fn list(&self, r: List) -> Outcome<ListPage> {
        let q = r.query;
        // What an index answers (the tenant, the cursor) bounds the walk; the other filters
        // are tested on at most MAX_SCAN rows of it per call.
        let mut walk = vec!["1 = 1".to_owned()];
        let mut walk_binds: Vec<Value> = Vec::new();
        if let Some(t) = &q.tenant {
            walk.push("tenant = ?".into());
            walk_binds.push(text(t.as_str()));
        }
        if let Some(c) = &q.after {
            walk.push("id < ?".into());
            walk_binds.push(text(Cursor::bound_in_shard(c, self.number.unwrap_or(0))));
        }
        let mut cond = vec!["1 = 1".to_owned()];
        let mut binds: Vec<Value> = Vec::new();
        if let Some(s) = q.state {
            cond.push("state = ?".into());
            binds.push(text(s.as_str()));
        }
        if let Some(t) = &q.job_type {
            cond.push("type = ?".into());
            binds.push(text(t.clone()));
        }
        if let Some(tag) = &q.tag {
            cond.push(TAG_CONDITION.into());
            binds.push(tag_pattern(tag));
        }
        if let Some(from) = q.from_ms {
            cond.push("updated_at >= ?".into());
            binds.push(int(from));
        }
        if let Some(to) = q.to_ms {
            cond.push("updated_at < ?".into());
            binds.push(int(to));
        }
        if let Some(p) = &q.id_prefix {
            cond.push("substr(id, 1, ?) = ?".into());
            binds.push(int(p.len() as u64));
            binds.push(text(p.clone()));
        }
        if let Some(needle) = &q.search {
            // Payload and metadata as stored (sealed header values are ciphertext), ASCII
            // case folded on both sides; instr, so the text needs no escaping.
            cond.push(
                "(instr(lower(json_extract(doc, '$.payload')), ?) > 0 OR instr(lower(json_extract(doc, '$.metadata')), ?) > 0)"
                    .into(),
            );
            let folded = needle.to_ascii_lowercase();
            binds.push(text(folded.clone()));
            binds.push(text(folded));
        }
        let filtered = cond.len() > 1;
        let limit = int(q.limit.min(MAX_LIST) as u64);
        let drop: Vec<String> = Include::default().dropped_paths().iter().map(|p| format!("'{p}'")).collect();
        let parse_id = |id: String| -> Result<JobId, StoreError> {
            id.parse().map_err(|_| StoreError(format!("a stored job id {id:?} does not parse")))
        };
        let (rows, scanned_to) = if filtered {
            // The window: the next MAX_SCAN ids of the walk.
            let mut wb = walk_binds;
            wb.push(int(MAX_SCAN as u64));
            let window = format!("SELECT id FROM jobs WHERE {} ORDER BY id DESC LIMIT ?", walk.join(" AND "));
            let mut all = wb.clone();
            all.extend(binds);
            all.push(limit);
            let rows = self.db.rows(
                &format!(
                    "SELECT id, json_remove(doc, {}) AS doc FROM jobs WHERE id IN ({window}) AND {} ORDER BY id DESC LIMIT ?",
                    drop.join(", "),
                    cond.join(" AND ")
                ),
                &all,
            )?;
            // A short page may have stopped at the window's end rather than the shard's:
            // then the listing goes on below the window's last id on a later page.
            let mut scanned_to = None;
            if (rows.len() as u64) < q.limit.min(MAX_LIST) as u64 {
                let edge = self.db.rows(&format!("SELECT COUNT(*), MIN(id) FROM ({window})"), &wb)?;
                let row = edge.into_iter().next().ok_or_else(|| StoreError("no count row".into()))?;
                let mut c = Cols::new(row);
                let (seen, last) = (c.u64()?, c.opt_text()?);
                if let (true, Some(id)) = (seen >= MAX_SCAN as u64, last) {
                    scanned_to = Some(parse_id(id)?);
                }
            }
            (rows, scanned_to)
        } else {
            let mut wb = walk_binds;
            wb.push(limit);
            let rows = self.db.rows(
                &format!(
                    "SELECT id, json_remove(doc, {}) AS doc FROM jobs WHERE {} ORDER BY id DESC LIMIT ?",
                    drop.join(", "),
                    walk.join(" AND ")
                ),
                &wb,
            )?;
            (rows, None)
        };
        let items = rows
            .into_iter()
            .map(|r| {
                let mut c = Cols::new(r);
                let id = parse_id(c.text()?)?;
                Ok(Listed { id, doc: raw(c.text()?)? })
            })
            .collect::<Result<Vec<Listed>, StoreError>>()?;
        Ok(ListPage { items, scanned_to })
    }

    /// Whole jobs by id (those that exist), as stored.
    pub fn get_many(&self, r: GetMany) -> Outcome<Vec<Box<RawValue>>> {
        Ok(store::docs_many(&self.db, &r.ids)?.into_iter().map(raw).collect::<Result<_, _>>()?)
    }

    /// Replays up to `limit` dead jobs, oldest death first, in one transaction.
    pub fn replay_dead(&self, r: ReplayDead) -> Outcome<(Vec<JobId>, Effects)> {
        let mut cond = vec!["state = 'dead'".to_owned()];
        let mut binds: Vec<Value> = Vec::new();
        if let Some(t) = r.job_type {
            cond.push("type = ?".into());
            binds.push(text(t));
        }
        if let Some(tag) = &r.tag {
            cond.push(TAG_CONDITION.into());
            binds.push(tag_pattern(tag));
        }
        if let Some(t) = &r.tenant {
            cond.push("tenant = ?".into());
            binds.push(text(t.as_str()));
        }
        if let Some(from) = r.from_ms {
            cond.push("updated_at >= ?".into());
            binds.push(int(from));
        }
        if let Some(to) = r.to_ms {
            cond.push("updated_at < ?".into());
            binds.push(int(to));
        }
        binds.push(int(r.limit.min(MAX_LIST) as u64));
        let query = format!("{} ORDER BY updated_at ASC, id ASC LIMIT ?", cond.join(" AND "));
        let now = self.host.now_ms();
        self.commit(|db| {
            let dead = store::load_where(db, &query, &binds)?;
            let events = dead.iter().map(|j| JobEvent { id: j.id.clone(), event: Event::Replay }).collect();
            let (mut plan, answers) = plan::apply_events(dead, events, now, &mut || self.host.random_unit());
            crate::flow::apply(db, &mut plan, now)?;
            Ok((answers.into_iter().filter_map(Result::ok).map(|j| j.id).collect(), plan.effects))
        })
    }

    /// Records which stream entries carry native attempts (see `plan::handoffs`).
    pub fn handoff_many(&self, r: HandoffMany) -> Outcome<Vec<Result<(), Refusal>>> {
        let ids: BTreeSet<JobId> = r.entries.iter().map(|h| h.id.clone()).collect();
        let now = self.host.now_ms();
        self.commit(|db| {
            let loaded = store::load_many(db, &ids)?;
            let (mut plan, answers) = plan::handoffs(loaded, r.entries);
            crate::flow::apply(db, &mut plan, now)?;
            Ok(answers)
        })
    }

    /// How many of a tenant's jobs here are not final yet.
    pub fn pending(&self, r: Pending) -> Outcome<u64> {
        Ok(store::pending_of(&self.db, &r.tenant)?)
    }

    pub fn set_gauge(&self, r: SetGauge) -> Outcome<()> {
        self.commit(|db| {
            db.rows(
                "INSERT OR REPLACE INTO gauges (name, value) VALUES (?, ?)",
                &[text(r.name.name()), Value::Real(r.value)],
            )?;
            Ok(())
        })
    }

    /// This shard's numbers for a scrape: what is written (never what is only in memory, so
    /// counters never go down across restarts). `flush`: write what is pending first.
    pub fn stats(&self, flush: bool) -> Outcome<ShardStats> {
        if flush {
            self.flush_soon();
            self.record()?;
        }
        let db = &self.db;
        let labels = |s: &str| -> Result<Vec<(String, String)>, StoreError> { store::parse(s) };
        let mut counters = Vec::new();
        for r in db.rows("SELECT name, labels, value FROM counters", &[])? {
            let mut c = Cols::new(r);
            counters.push((c.text()?, labels(&c.text()?)?, c.f64()?));
        }
        let mut histograms = Vec::new();
        for r in db.rows("SELECT name, labels, doc FROM histograms", &[])? {
            let mut c = Cols::new(r);
            histograms.push((c.text()?, labels(&c.text()?)?, store::parse(&c.text()?)?));
        }
        let mut jobs = Vec::new();
        for r in db.rows("SELECT state, type, tenant, COUNT(*) AS n FROM jobs GROUP BY state, type, tenant", &[])? {
            let mut c = Cols::new(r);
            jobs.push(JobCount { state: c.text()?, job_type: c.text()?, tenant: c.text()?, n: c.u64()? });
        }
        let mut oldest_queued_by_tenant = Vec::new();
        for r in db.rows("SELECT tenant, MIN(created_at) FROM jobs WHERE state = 'queued' GROUP BY tenant", &[])? {
            let mut c = Cols::new(r);
            oldest_queued_by_tenant.push((c.text()?, c.u64()?));
        }
        let oldest = oldest_queued_by_tenant.iter().map(|(_, ms)| *ms).min();
        let mut gauges = Vec::new();
        for r in db.rows("SELECT name, value FROM gauges", &[])? {
            let mut c = Cols::new(r);
            gauges.push((c.text()?, c.f64()?));
        }
        let now = self.host.now_ms();
        let since = now - now % 60_000 - (edgejobs_core::stats::MINUTES_KEPT - 1) * 60_000;
        let mut minutes = Vec::new();
        for r in db.rows("SELECT minute, series, n FROM minutes WHERE minute >= ?", &[int(since)])? {
            let mut c = Cols::new(r);
            minutes.push((c.u64()?, c.text()?, c.f64()?));
        }
        let (schedules, schedules_overdue) = self.schedule_stats(now)?;
        Ok(ShardStats {
            counters,
            histograms,
            jobs,
            oldest_queued_ms: oldest,
            oldest_queued_by_tenant,
            gauges,
            shard: self.number,
            minutes,
            schedules,
            schedules_overdue,
        })
    }
}
