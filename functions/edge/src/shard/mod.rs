//! The `JobShard` Durable Object: one SQLite database per shard holding its jobs, their
//! idempotency keys and metric counters, and the alarm that wakes scheduled jobs.
//!
//! **Invariant:** no `await` between reading a job and writing it. Every operation loads
//! what it touches, plans with the pure functions of `edgejobs_core::plan`, and writes the
//! plan in one synchronous transaction; effects (queue sends, the alarm) run after the
//! commit. Operations take many jobs at once. The operations themselves are
//! `edgejobs_shard`'s, the same code the simulation runs; this object is their glue.
//!
//! Layout: this file is the object, its dispatch and the effects (queue sends, the
//! alarm); [`sql`] the storage seam on workerd (`transactionSync`); [`rounds`] group commit
//! and shared sends; [`client`] how the rest of the Worker calls a shard.

use edgejobs_core::plan::Effects;
use edgejobs_core::protocol::{ShardCall, ShardOp, ShardReply, ShardRequest};
use edgejobs_core::stats::Metric;
use edgejobs_core::wire::{Envelope, envelopes, send_batches};
use edgejobs_core::{ApiError, ErrorCode};
use edgejobs_shard::timers::{MAX_PAGES, SweepRun};
use edgejobs_shard::{Host, Level, Outcome, Shard};
use serde::Serialize;
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::{
    DurableObject, Env, QueueContentType, RawMessageBuilder, Request, Response, Result, State, durable_object,
};

use crate::config::QUEUE_BINDING;
use crate::http::log;
use crate::platform::{now_ms, random_u64};

pub mod client;
mod rounds;
mod sql;
pub mod waits;

pub use client::{STATS, call, call_named};

use edgejobs_core::Lane;
use edgejobs_core::protocol::{CreateMany, Stored};
use edgejobs_core::wire::JobRef;
use rounds::{Rounds, Turn};
use sql::DoSql;

/// What the shard's code takes from workerd: `Date.now()`, `crypto.getRandomValues` and
/// the console.
#[derive(Debug, Clone, Copy)]
pub struct EdgeHost;

impl Host for EdgeHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn random_u64(&self) -> u64 {
        random_u64()
    }

    fn random_nonce(&self) -> std::result::Result<[u8; 12], String> {
        crate::platform::random_nonce()
    }

    fn log(&self, level: Level, msg: &str, fields: serde_json::Value) {
        log(level.as_str(), msg, fields)
    }
}

// `Env` and `State` are JS handles without Debug.
#[allow(missing_debug_implementations)]
#[durable_object]
pub struct JobShard {
    state: State,
    env: Env,
    /// The shard's operations on this object's SQLite (the same code the simulation runs).
    shard: Shard<DoSql, EdgeHost>,
    /// Whether the schema is set up; until it is, every call tries again or is refused.
    ready: std::cell::Cell<bool>,
    /// Job references waiting to be sent with those of concurrent requests.
    sends: Rounds<Vec<(Lane, JobRef)>, ()>,
    /// Creates waiting to be committed with those of concurrent requests (group commit).
    creates: Rounds<CreateMany, std::result::Result<Vec<Stored>, ApiError>>,
}

impl DurableObject for JobShard {
    fn new(state: State, env: Env) -> Self {
        let number = state.id().name().and_then(|n| n.strip_prefix("shard-").and_then(|s| s.parse().ok()));
        let shard = Shard::new(DoSql::new(&state), EdgeHost, number);
        let ready = std::cell::Cell::new(shard.migrate().is_ok());
        JobShard { state, env, shard, ready, sends: Rounds::default(), creates: Rounds::default() }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // A body that cannot be read is refused, never taken for an empty call.
        let bytes = match req.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let e = ApiError::new(ErrorCode::InvalidJson, format!("the shard call's body could not be read: {e}"));
                return Response::from_json(&ShardReply::<()>::Err(e));
            }
        };
        let call: ShardCall = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => {
                let e = ApiError::new(ErrorCode::InvalidJson, format!("not a shard call: {e}"));
                return Response::from_json(&ShardReply::<()>::Err(e));
            }
        };
        if !self.ready.get() {
            if self.shard.migrate().is_err() {
                let e = ApiError::new(ErrorCode::Internal, "the job shard's storage is not set up; retry");
                return Response::from_json(&ShardReply::<()>::Err(e));
            }
            self.ready.set(true);
        }
        // The caller counted this request; what it carries is written by this call's commit.
        self.shard.carry(&call.deltas);
        let s = &self.shard;
        match call.request {
            ShardRequest::CreateMany(r) => reply(self.create_many(r).await),
            ShardRequest::Get(r) => self.answer(s.get(r)),
            ShardRequest::ApplyMany(r) => self.effects(s.apply_many(r)).await,
            ShardRequest::ReportMany(r) => self.effects(s.report_many(r)).await,
            ShardRequest::FinishMany(r) => self.effects(s.finish_many(r)).await,
            ShardRequest::List(r) => self.answer(s.list(r)),
            ShardRequest::GetMany(r) => self.answer(s.get_many(r)),
            ShardRequest::ReplayDead(r) => self.effects(s.replay_dead(r)).await,
            ShardRequest::HandoffMany(r) => self.answer(s.handoff_many(r)),
            ShardRequest::Stats(r) => self.answer(s.stats(r.flush)),
            ShardRequest::Pending(r) => self.answer(s.pending(r)),
            ShardRequest::Export(r) => self.answer(s.export(r)),
            ShardRequest::Import(r) => self.effects(s.import(r)).await,
            ShardRequest::RetentionTops(r) => self.answer(s.retention_tops(r)),
            ShardRequest::RetentionPage(r) => self.answer(s.retention_page(r)),
            ShardRequest::RetentionDelete(r) => self.answer(s.retention_delete(r)),
            ShardRequest::Sweep(r) => reply(self.sweep(r.policy).await),
            ShardRequest::Record(_) => self.answer(s.record()),
            ShardRequest::SetGauge(r) => self.answer(s.set_gauge(r)),
            ShardRequest::Schedules(r) => reply(self.schedules(r).await),
            ShardRequest::Reseal(r) => reply(self.reseal(r)),
            ShardRequest::Topology(r) => self.answer(s.topology(r)),
            ShardRequest::ClaimKeys(r) => self.answer(s.claim_keys(r)),
            ShardRequest::Flow(r) => self.effects(s.flow(r)).await,
            ShardRequest::Events(r) => self.answer(s.events(r)),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.shard.count(Metric::DoRequestsTotal, &[("op", "alarm")], 1.0);
        self.wake_due().await;
        Response::ok("ok")
    }
}

fn reply<T: Serialize>(out: std::result::Result<T, ApiError>) -> Result<Response> {
    Response::from_json(&out)
}

/// What the handler of operation `O` returns: its protocol reply type, so the compiler
/// keeps every handler in step with `edgejobs_core::protocol`.
type Out<O> = std::result::Result<<O as ShardOp>::Reply, ApiError>;

impl JobShard {
    fn answer<T: Serialize>(&self, out: Outcome<T>) -> Result<Response> {
        reply(self.shard.settle(out))
    }

    /// Answers an operation that committed, after carrying out its effects.
    async fn effects<T: Serialize>(&self, out: Outcome<(T, Effects)>) -> Result<Response> {
        match self.shard.settle(out) {
            Ok((answer, effects)) => {
                self.carry_out(effects).await;
                reply(Ok(answer))
            }
            Err(e) => reply::<T>(Err(e)),
        }
    }

    /// Creates jobs with group commit: the creates of concurrent requests are committed in
    /// one transaction and their queue messages sent together (see `rounds`). Each request
    /// gets its own answers; a failed commit fails every request of its round.
    async fn create_many(&self, r: CreateMany) -> Out<CreateMany> {
        let (parts, mine) = match self.creates.submit(r).await {
            Turn::Done(answers) => return answers,
            Turn::Lead { parts, mine } => (parts, mine),
        };
        let counts: Vec<(u64, usize)> = parts.iter().map(|(t, p)| (*t, p.jobs.len())).collect();
        // One window for the round: every request of a deployment sends the configured one.
        let window = parts.iter().map(|(_, p)| p.idempotency_window_ms).max().unwrap_or(0);
        let jobs = parts.into_iter().flat_map(|(_, p)| p.jobs).collect();
        let results: Vec<(u64, std::result::Result<Vec<Stored>, ApiError>)> =
            match self.shard.settle(self.shard.create(jobs, window)) {
                Ok((stored, effects)) => {
                    self.carry_out(effects).await;
                    let mut stored = stored.into_iter();
                    counts.into_iter().map(|(t, n)| (t, Ok(stored.by_ref().take(n).collect()))).collect()
                }
                Err(e) => counts.into_iter().map(|(t, _)| (t, Err(e.clone()))).collect(),
            };
        self.creates
            .finish(mine, results)
            .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "the create round lost this request's result")))
    }

    /// Runs pages of an alarm's work (`page` commits one and says whether more remain),
    /// carrying out each page's effects before the next, at most [`MAX_PAGES`].
    async fn pages(&self, what: &str, page: impl Fn() -> Outcome<(Effects, bool)>) {
        for _ in 0..MAX_PAGES {
            match self.shard.settle(page()) {
                Ok((effects, more)) => {
                    self.carry_out(effects).await;
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    log("error", &format!("the alarm could not {what}"), json!({ "error": e.message }));
                    break;
                }
            }
        }
    }

    /// The alarm: wakes every scheduled job that is due, page by page, fires the schedules
    /// that are due, then sets the alarm for the next one (at once, when pages remained).
    async fn wake_due(&self) {
        self.pages("wake due jobs", || self.shard.wake_page()).await;
        if self.shard.number.is_some() {
            match crate::config::load(&self.env) {
                Ok(cfg) => {
                    self.pages("fire due schedules", || self.shard.fire_schedules_page(&cfg)).await;
                    self.index_waits(&cfg).await;
                    self.redeliver(&cfg).await;
                }
                Err(e) => {
                    log("error", "schedules cannot fire: the configuration is invalid", json!({ "error": e.message }))
                }
            }
        }
        self.rearm_with(true).await;
    }

    /// The event index's matched waits that no send delivered (one failed half-way): this
    /// shard, their index, delivers them itself, each to its run's shard with its tenant.
    async fn redeliver(&self, cfg: &edgejobs_core::config::EdgeConfig) {
        let due = match self.shard.settle(self.shard.undelivered()) {
            Ok(due) => due,
            Err(e) => {
                log("error", "the alarm could not read undelivered waits", json!({ "error": e.message }));
                return;
            }
        };
        let Some(home) = self.shard.number else { return };
        let mut by_tenant: std::collections::BTreeMap<_, Vec<_>> = std::collections::BTreeMap::new();
        for (tenant, key, data) in due {
            by_tenant.entry(tenant).or_default().push((key, data));
        }
        for (tenant, resumes) in by_tenant {
            if let Err(e) = waits::deliver(&self.env, cfg, &tenant, home, resumes).await {
                log("warn", "matched waits could not be delivered yet", json!({ "error": e.message }));
            }
        }
    }

    /// The outbox of wait indexing: the waits this shard's runs recorded a while ago and
    /// still wait on are indexed (again: indexing is idempotent), and their rows go once the
    /// index took them; an edge that died before indexing a wait is caught here.
    async fn index_waits(&self, cfg: &edgejobs_core::config::EdgeConfig) {
        let due = match self.shard.settle(self.shard.waits_to_index()) {
            Ok(due) => due,
            Err(e) => {
                log("error", "the alarm could not read the waits to index", json!({ "error": e.message }));
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let taken = waits::index(&self.env, cfg, due).await;
        if let Err(e) = self.shard.settle(self.shard.indexed(&taken)) {
            log("error", "the alarm could not record indexed waits", json!({ "error": e.message }));
        }
    }

    /// The sweep of this shard, page by page with each page's effects after it; then the
    /// alarm is set again.
    async fn sweep(&self, policy: edgejobs_core::plan::SweepPolicy) -> Out<edgejobs_core::protocol::Sweep> {
        let mut run = SweepRun::new(policy);
        while let Some(effects) = self.shard.settle(self.shard.sweep_page(&mut run))? {
            self.carry_out(effects).await;
        }
        self.rearm().await;
        Ok(run.report)
    }

    async fn schedules(&self, r: edgejobs_core::protocol::Schedules) -> Out<edgejobs_core::protocol::Schedules> {
        let cfg = crate::config::load(&self.env)?;
        let (answer, effects, rearm) = self.shard.settle(self.shard.schedules(r.op, &cfg))?;
        self.carry_out(effects).await;
        if rearm {
            self.rearm().await;
        }
        Ok(answer)
    }

    /// One page of a re-seal under the deployment's payload keys (`edgejobs_shard::reseal`).
    fn reseal(&self, r: edgejobs_core::protocol::Reseal) -> Out<edgejobs_core::protocol::Reseal> {
        let cfg = crate::config::load(&self.env)?;
        self.shard.settle(self.shard.reseal(r, &cfg.payload_keys))
    }

    /// Carries out the effects of a committed plan: the jobs to send, grouped with those of
    /// concurrent requests ([`rounds`]) into envelopes of one lane and up to 100 jobs, in as
    /// few `sendBatch` calls as Cloudflare's limits allow; then the alarm. A failed send is
    /// logged, not returned: the jobs are safely queued and the sweep re-sends them.
    async fn carry_out(&self, effects: Effects) {
        if !effects.enqueue.is_empty()
            && let Turn::Lead { parts, mine } = self.sends.submit(effects.enqueue).await
        {
            let tickets: Vec<u64> = parts.iter().map(|(t, _)| *t).collect();
            let refs: Vec<(Lane, JobRef)> = parts.into_iter().flat_map(|(_, refs)| refs).collect();
            self.send(envelopes(self.shard.number.unwrap_or(0), refs)).await;
            self.sends.finish(mine, tickets.into_iter().map(|t| (t, ())));
        }
        if effects.alarm.is_some() {
            self.rearm().await;
        }
    }

    async fn send(&self, messages: Vec<Envelope>) {
        let queue = match self.env.queue(QUEUE_BINDING) {
            Ok(q) => q,
            Err(e) => {
                log("error", "the queue binding is missing", json!({ "error": e.to_string() }));
                return;
            }
        };
        // Each message is sent as JSON text: cheaper on both sides than converting the
        // envelope to a JavaScript object and back.
        // An envelope that does not encode is not sent as an empty message: it is left out,
        // counted as a failed send and logged, and the sweep re-sends its jobs.
        let (messages, unencodable): (Vec<(Envelope, String)>, Vec<String>) =
            messages.into_iter().fold((Vec::new(), Vec::new()), |(mut ok, mut bad), m| {
                match serde_json::to_string(&m) {
                    Ok(t) => ok.push((m, t)),
                    Err(e) => bad.push(e.to_string()),
                }
                (ok, bad)
            });
        if let Some(e) = unencodable.first() {
            log(
                "error",
                "queue envelopes could not be encoded; the sweep will re-send",
                json!({ "messages": unencodable.len(), "error": e }),
            );
            self.shard.count(Metric::QueueSendFailuresTotal, &[], unencodable.len() as f64);
        }
        let (messages, texts): (Vec<Envelope>, Vec<String>) = messages.into_iter().unzip();
        let sizes: Vec<usize> = texts.iter().map(String::len).collect();
        let mut sent = 0usize;
        for range in send_batches(&sizes) {
            let batch = texts[range.clone()]
                .iter()
                .map(|t| RawMessageBuilder::new(JsValue::from_str(t)).build_with_content_type(QueueContentType::Text));
            match queue.send_raw_batch(batch).await {
                Ok(()) => sent += range.len(),
                Err(e) => log(
                    "warn",
                    "queue send failed; the sweep will re-send",
                    json!({ "messages": range.len(), "error": e.to_string() }),
                ),
            }
        }
        if sent > 0 {
            let jobs: usize = messages.iter().take(sent).map(|m| m.jobs.len()).sum();
            self.shard.count(Metric::QueueMessagesSentTotal, &[], sent as f64);
            self.shard.count(Metric::QueueJobsSentTotal, &[], jobs as f64);
        }
        if sent < messages.len() {
            self.shard.count(Metric::QueueSendFailuresTotal, &[], (messages.len() - sent) as f64);
        }
    }

    /// Sets the alarm for the earliest scheduled job, if any. The earliest time is read
    /// synchronously and the storage calls that follow hold the input gate, so no commit
    /// of another request can slip in between (each rearm sees every committed job).
    /// `set_alarm` takes an absolute time only as a Date: an integer would be an offset.
    async fn rearm(&self) {
        self.rearm_with(false).await
    }

    /// [`rearm`](Self::rearm); `always` sets the alarm even when it seems set already (the
    /// alarm handler: the alarm being handled is consumed when it returns).
    async fn rearm_with(&self, always: bool) {
        let next = match self.shard.next_wake() {
            Ok(Some(at)) => at,
            Ok(None) => return,
            Err(e) => {
                log("error", "could not read the next wake-up", json!({ "error": format!("{e:?}") }));
                return;
            }
        };
        let storage = self.state.storage();
        if !always && storage.get_alarm().await.ok().flatten().is_some_and(|c| c as u64 == next) {
            return;
        }
        let when = worker::ScheduledTime::new(js_sys::Date::new(&(next as f64).into()));
        if let Err(e) = storage.set_alarm(when).await {
            log("error", "could not set the shard alarm", json!({ "error": e.to_string() }));
        }
    }
}
