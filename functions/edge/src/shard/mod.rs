//! The `JobShard` Durable Object: one SQLite database per shard holding its jobs, their
//! idempotency keys and metric counters, and the alarm that wakes scheduled jobs.
//!
//! **Invariant:** no `await` between reading a job and writing it. Every operation loads
//! what it touches, plans with the pure functions of `edgejobs_core::plan`, and writes the
//! plan in one synchronous transaction ([`store::Store::transaction`]); effects (queue
//! sends, the alarm) run after the commit. Operations take many jobs at once.
//!
//! Layout: this file is the object and its dispatch; [`store`] the schema and storage;
//! [`ops`] the batch operations; [`timers`] the alarm and the sweep; [`snapshot`] export,
//! import and retention pages; [`schedules`] the schedules and their runs; [`client`] how
//! the rest of the Worker calls a shard.

use std::cell::{Cell, RefCell};

use edgejobs_core::plan::Effects;
use edgejobs_core::protocol::{ShardCall, ShardOp, ShardReply, ShardRequest};
use edgejobs_core::stats::{Delta, Merged};
use edgejobs_core::wire::{Envelope, envelopes, send_batches};
use edgejobs_core::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::json;
use wasm_bindgen::JsValue;
use worker::{
    DurableObject, Env, QueueContentType, RawMessageBuilder, Request, Response, Result, State, durable_object,
};

use crate::config::QUEUE_BINDING;
use crate::http::log;
use crate::platform::now_ms;

pub mod client;
mod ops;
mod rounds;
mod schedules;
mod snapshot;
pub mod store;
mod timers;

pub use client::{STATS, call, call_named};

use edgejobs_core::Lane;
use edgejobs_core::protocol::{CreateMany, Stored};
use edgejobs_core::wire::JobRef;
use rounds::{Rounds, Turn};
use store::Store;

// `Env` and `State` are JS handles without Debug.
#[allow(missing_debug_implementations)]
#[durable_object]
pub struct JobShard {
    state: State,
    env: Env,
    store: Store,
    /// Counts not written yet: what calls carried, queue messages sent, alarms, rows (in
    /// the store). Written with a commit at most about once a second, at once when a call
    /// carried counts, and before every scrape; a scrape reports only written counts, so
    /// counters never go down (a restart may lose up to a second of these).
    pending: RefCell<Merged>,
    /// When `pending` was last written, and whether the next commit must write it.
    written_at: Cell<u64>,
    write_now: Cell<bool>,
    /// Job references waiting to be sent with those of concurrent requests.
    sends: Rounds<Vec<(Lane, JobRef)>, ()>,
    /// Creates waiting to be committed with those of concurrent requests (group commit).
    creates: Rounds<CreateMany, std::result::Result<Vec<Stored>, ApiError>>,
    /// The number of this shard, from its name (`shard-N`); `None` for the stats object.
    shard: Option<u16>,
}

impl DurableObject for JobShard {
    fn new(state: State, env: Env) -> Self {
        let store = Store::new(&state);
        if let Err(e) = store.migrate() {
            log("error", "shard schema setup failed", json!({ "error": e.message }));
        }
        let shard = state.id().name().and_then(|n| n.strip_prefix("shard-").and_then(|s| s.parse().ok()));
        JobShard {
            state,
            env,
            store,
            pending: RefCell::new(Merged::default()),
            written_at: Cell::new(0),
            write_now: Cell::new(false),
            sends: Rounds::default(),
            creates: Rounds::default(),
            shard,
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let bytes = req.bytes().await.unwrap_or_default();
        let call: ShardCall = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(e) => {
                let e = ApiError::new(ErrorCode::InvalidJson, format!("not a shard call: {e}"));
                return Response::from_json(&ShardReply::<()>::Err(e));
            }
        };
        // The caller counted this request; what it carries is written by this call's commit.
        if !call.deltas.is_empty() {
            let mut p = self.pending.borrow_mut();
            call.deltas.iter().for_each(|d| p.add(d));
            self.write_now.set(true);
        }
        match call.request {
            ShardRequest::CreateMany(r) => reply(self.create_many(r).await),
            ShardRequest::Get(r) => reply(self.get(r)),
            ShardRequest::ApplyMany(r) => reply(self.apply_many(r).await),
            ShardRequest::List(r) => reply(self.list(r)),
            ShardRequest::GetMany(r) => reply(self.get_many(r)),
            ShardRequest::ReplayDead(r) => reply(self.replay_dead(r).await),
            ShardRequest::HandoffMany(r) => reply(self.handoff_many(r)),
            ShardRequest::Stats(r) if r.flush => {
                // Write what is pending first, so the scrape is current.
                self.write_now.set(true);
                reply(self.commit(|_| Ok(())).and_then(|()| self.stats()))
            }
            ShardRequest::Stats(_) => reply(self.stats()),
            ShardRequest::Export(r) => reply(self.export(r)),
            ShardRequest::Import(r) => reply(self.import(r).await),
            ShardRequest::RetentionTops(r) => reply(self.retention_tops(r)),
            ShardRequest::RetentionPage(r) => reply(self.retention_page(r)),
            ShardRequest::RetentionDelete(r) => reply(self.retention_delete(r)),
            ShardRequest::Sweep(r) => reply(self.sweep(r).await),
            ShardRequest::Record(_) => reply(self.commit(|_| Ok(()))),
            ShardRequest::SetGauge(r) => reply(self.set_gauge(r)),
            ShardRequest::Schedules(r) => reply(self.schedules(r).await),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.count("edgejobs_do_requests_total", &[("op", "alarm")], 1.0);
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
    fn count(&self, name: &str, labels: &[(&str, &str)], n: f64) {
        self.pending.borrow_mut().add(&Delta::count(name, labels, n));
    }

    /// Runs `f` in one transaction. When due (a call carried counts, a scrape, or a second
    /// since the last time), the same transaction writes the pending counts and the rows
    /// this object read and wrote meanwhile.
    fn commit<T>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, ApiError>,
    ) -> std::result::Result<T, ApiError> {
        let now = now_ms();
        let due = self.write_now.get() || now.saturating_sub(self.written_at.get()) >= 1000;
        let pending = if due { std::mem::take(&mut *self.pending.borrow_mut()) } else { Merged::default() };
        let out = self.store.transaction(|tx| {
            let out = f(tx)?;
            if due {
                let (read, written) = tx.take_row_counts();
                let mut deltas = pending.clone().into_deltas();
                if read > 0 {
                    deltas.push(Delta::count("edgejobs_do_rows_read_total", &[], read as f64));
                }
                if written > 0 {
                    deltas.push(Delta::count("edgejobs_do_rows_written_total", &[], written as f64));
                }
                if !deltas.is_empty() {
                    tx.record(&deltas)?;
                }
            }
            Ok(out)
        });
        match &out {
            Ok(_) if due => {
                self.written_at.set(now);
                self.write_now.set(false);
            }
            Ok(_) => {}
            // Rolled back: keep the counts for the next commit.
            Err(_) => pending.into_deltas().iter().for_each(|d| self.pending.borrow_mut().add(d)),
        }
        out
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
            self.send(envelopes(self.shard.unwrap_or(0), refs)).await;
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
        let texts: Vec<String> = messages.iter().map(|m| serde_json::to_string(m).unwrap_or_default()).collect();
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
            self.count("edgejobs_queue_messages_sent_total", &[], sent as f64);
            self.count("edgejobs_queue_jobs_sent_total", &[], jobs as f64);
        }
        if sent < messages.len() {
            self.count("edgejobs_queue_send_failures_total", &[], (messages.len() - sent) as f64);
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
        let next = match self.store.next_wake() {
            Ok(Some(at)) => at,
            Ok(None) => return,
            Err(e) => {
                log("error", "could not read the next wake-up", json!({ "error": e.message }));
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
