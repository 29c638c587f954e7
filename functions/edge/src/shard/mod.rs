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
//! alarm, the root spans of the schedule runs the alarm made); [`sql`] the storage seam on
//! workerd (`transactionSync`); [`rounds`] group commit and shared sends; [`client`] how
//! the rest of the Worker calls a shard.

use edgejobs_core::plan::Effects;
use edgejobs_core::protocol::{ShardCall, ShardOp, ShardReply, ShardRequest};
use edgejobs_core::stats::Metric;
use edgejobs_core::wire::{Envelope, envelopes, send_batches};
use edgejobs_core::{ApiError, ErrorCode};
use edgejobs_shard::schedules::RunStarted;
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
pub mod live;
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
    /// Live subscribers and long polls (#30).
    hub: live::Hub,
}

impl DurableObject for JobShard {
    fn new(state: State, env: Env) -> Self {
        let number = state.id().name().and_then(|n| n.strip_prefix("shard-").and_then(|s| s.parse().ok()));
        let shard = Shard::new(DoSql::new(&state), EdgeHost, number);
        let ready = std::cell::Cell::new(shard.migrate().is_ok());
        JobShard {
            state,
            env,
            shard,
            ready,
            sends: Rounds::default(),
            creates: Rounds::default(),
            hub: live::Hub::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        if req.path() == "/live" {
            return self.subscribe(&req);
        }
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
            ShardRequest::Get(r) => self.answer(self.get_waiting(r).await),
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

    // Subscribers send nothing that matters: a message is ignored, a close is answered.
    async fn websocket_message(&self, _ws: worker::WebSocket, _m: worker::WebSocketIncomingMessage) -> Result<()> {
        Ok(())
    }

    async fn websocket_close(&self, ws: worker::WebSocket, code: usize, _reason: String, _clean: bool) -> Result<()> {
        // 1005 (no status) and 1006 (abnormal) may not be sent back.
        let code = if code == 1005 || code == 1006 { 1000 } else { code as u16 };
        let _ = ws.close(Some(code), Some("bye"));
        Ok(())
    }

    async fn websocket_error(&self, _ws: worker::WebSocket, _e: worker::Error) -> Result<()> {
        Ok(())
    }
}

fn reply<T: Serialize>(out: std::result::Result<T, ApiError>) -> Result<Response> {
    Response::from_json(&out)
}

/// An SSE response of a subscriber's stream, with the CORS origin the router allowed.
fn sse_response(rx: futures_channel::mpsc::UnboundedReceiver<Vec<u8>>, origin: Option<&String>) -> Result<Response> {
    let mut resp = Response::from_stream(live::sse_body(rx))?;
    let h = resp.headers_mut();
    h.set("content-type", "text/event-stream; charset=utf-8")?;
    h.set("cache-control", "no-cache, no-transform")?;
    h.set("x-accel-buffering", "no")?;
    if let Some(o) = origin {
        h.set("access-control-allow-origin", o)?;
        h.set("vary", "origin")?;
    }
    Ok(resp)
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
        // A batch with `on_complete` (#30) opens its record in the same transaction.
        let batches = parts.iter().filter_map(|(_, p)| p.batch.clone()).collect();
        let jobs = parts.into_iter().flat_map(|(_, p)| p.jobs).collect();
        let results: Vec<(u64, std::result::Result<Vec<Stored>, ApiError>)> =
            match self.shard.settle(self.shard.create_batches(jobs, window, batches)) {
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
                    let started = std::cell::RefCell::new(Vec::new());
                    self.pages("fire due schedules", || {
                        let page = self.shard.fire_schedules_page_traced(&cfg);
                        page.map(|(effects, more, runs)| {
                            started.borrow_mut().extend(runs);
                            (effects, more)
                        })
                    })
                    .await;
                    self.trace_runs(&cfg, started.into_inner());
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

    /// Records the root span of each run the alarm created (#32): `send <type>`, the start
    /// of the run's new trace, linked to its schedule's context. The object exports them in
    /// its own `waitUntil` after the alarm (an alarm has no Worker invocation to do it).
    fn trace_runs(&self, cfg: &edgejobs_core::config::EdgeConfig, runs: Vec<RunStarted>) {
        if runs.is_empty() {
            return;
        }
        let now = crate::telemetry::now_ns();
        for run in &runs {
            crate::telemetry::keep(&cfg.tracing, run.span(crate::telemetry::SYSTEM, now));
        }
        if let Some(export) = crate::telemetry::flush(&cfg.tracing) {
            self.state.wait_until(export);
        }
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

    /// Reads a job; a long poll (`wait_ms`) of a job not final yet answers once a commit
    /// ends it, or when the wait is over, with the job as it is then.
    async fn get_waiting(&self, r: edgejobs_core::protocol::Get) -> Outcome<edgejobs_core::Job> {
        let wait = r.wait_ms.min(edgejobs_core::live::MAX_WAIT_MS);
        let job = self.shard.get(r.clone())?;
        if wait == 0 || job.state.is_finished() {
            return Ok(job);
        }
        // Registered in the same synchronous step as the read: no commit falls between.
        let ended = self.hub.wait_for(job.id.clone());
        let timeout = worker::Delay::from(std::time::Duration::from_millis(wait));
        futures_util::pin_mut!(timeout);
        let _ = futures_util::future::select(ended, timeout).await;
        self.shard.get(r)
    }

    /// A live subscription (#30): `GET /live?job=&after=&tenant=&origin=` (one job's chunks
    /// and states) or `?many=1&tag=&tenant=` (many jobs' states), over SSE or, with
    /// `Upgrade: websocket`, a hibernatable WebSocket. The router checked who may see what
    /// and passes the tenant to filter by (none: an admin) and the CORS origin to allow.
    fn subscribe(&self, req: &Request) -> Result<Response> {
        let url = req.url()?;
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        let tenant = q.get("tenant").map(|t| edgejobs_core::tenant::Tenant::parse(t)).transpose();
        let Ok(tenant) = tenant else {
            return reply::<()>(Err(ApiError::field("tenant", "not a tenant")));
        };
        let ws = req.headers().get("upgrade").ok().flatten().is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if self.hub.len(&self.state) >= live::MAX_SUBSCRIBERS {
            return reply::<()>(Err(ApiError::new(
                ErrorCode::Unavailable,
                "this shard holds too many subscribers; retry",
            )));
        }
        let after = edgejobs_core::live::parse_last_id(q.get("after").map(String::as_str));
        let (filter, first, done) = match q.get("job") {
            Some(id) => {
                let Ok(id) = id.parse::<edgejobs_core::JobId>() else {
                    return reply::<()>(Err(ApiError::field("id", "not a job id")));
                };
                let get = edgejobs_core::protocol::Get { id, tenant, wait_ms: 0 };
                let (job, rows, _) = match self.shard.settle(self.shard.live_start(get, after)) {
                    Ok(found) => found,
                    Err(e) => return reply::<()>(Err(e)),
                };
                let done = job.state.is_finished() && rows.len() < edgejobs_shard::live::PAGE as usize;
                (live::Filter::Job(job.id.clone()), (job, rows), done)
            }
            None => {
                let filter = live::Filter::Jobs { tenant, tag: q.get("tag").cloned() };
                return self.subscribe_many(filter, ws, q.get("origin"));
            }
        };
        let origin = q.get("origin");
        if ws {
            let pair = worker::WebSocketPair::new()?;
            self.state.accept_websocket_with_tags(&pair.server, &[&filter.ws_tag()]);
            let (job, rows) = first;
            for r in &rows {
                live::ws_chunk(&pair.server, r);
            }
            live::ws_send(
                &pair.server,
                rows.last().map_or(after, |r| r.n),
                "state",
                &edgejobs_core::live::StateView::of(&job),
            );
            if done {
                let _ = pair.server.close(Some(1000), Some("the job is final"));
            }
            return Response::from_websocket(pair.client);
        }
        let (job, rows) = first;
        let rx = self.hub.subscribe_sse(filter, live::backlog(&job, &rows), done);
        sse_response(rx, origin)
    }

    /// A subscription to many jobs' states (a tag, or all a tenant's).
    fn subscribe_many(&self, filter: live::Filter, ws: bool, origin: Option<&String>) -> Result<Response> {
        if ws {
            let pair = worker::WebSocketPair::new()?;
            self.state.accept_websocket_with_tags(&pair.server, &[&filter.ws_tag()]);
            pair.server.serialize_attachment(&filter)?;
            return Response::from_websocket(pair.client);
        }
        let rx = self.hub.subscribe_sse(filter, Vec::new(), false);
        sse_response(rx, origin)
    }

    /// Carries out the effects of a committed plan: the jobs to send, grouped with those of
    /// concurrent requests ([`rounds`]) into envelopes of one lane and up to 100 jobs, in as
    /// few `sendBatch` calls as Cloudflare's limits allow; then the alarm. A failed send is
    /// logged, not returned: the jobs are safely queued and the sweep re-sends them.
    async fn carry_out(&self, effects: Effects) {
        // Subscribers first, synchronously after the commit: they see exactly what it wrote.
        self.hub.publish(&self.state, &self.shard, &effects.touched);
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
