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
//! import and retention pages; [`client`] how the rest of the Worker calls a shard.

use std::cell::RefCell;

use edgejobs_core::plan::Effects;
use edgejobs_core::protocol::{ShardCall, ShardOp, ShardReply, ShardRequest};
use edgejobs_core::stats::Delta;
use edgejobs_core::wire::{Envelope, envelopes, send_batches};
use edgejobs_core::{ApiError, ErrorCode};
use serde::Serialize;
use serde_json::json;
use worker::{DurableObject, Env, Request, Response, Result, State, durable_object};

use crate::config::QUEUE_BINDING;
use crate::http::log;

pub mod client;
mod ops;
mod snapshot;
pub mod store;
mod timers;

pub use client::{STATS, call, call_named};

use store::Store;

// `Env` and `State` are JS handles without Debug.
#[allow(missing_debug_implementations)]
#[durable_object]
pub struct JobShard {
    state: State,
    env: Env,
    store: Store,
    /// Counter deltas not written yet: those a call carried that failed before its commit,
    /// alarm invocations, failed sends. Written with the next commit; a scrape reports
    /// only written counts, so counters never go down (a restart may lose these).
    pending: RefCell<Vec<Delta>>,
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
        JobShard { state, env, store, pending: RefCell::new(Vec::new()), shard }
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
        // The caller counted this request; its deltas are written by this call's commit.
        self.pending.borrow_mut().extend(call.deltas);
        match call.request {
            ShardRequest::CreateMany(r) => reply(self.create_many(r).await),
            ShardRequest::Get(r) => reply(self.get(r)),
            ShardRequest::ApplyMany(r) => reply(self.apply_many(r).await),
            ShardRequest::List(r) => reply(self.list(r)),
            ShardRequest::ReplayDead(r) => reply(self.replay_dead(r).await),
            ShardRequest::HandoffMany(r) => reply(self.handoff_many(r)),
            ShardRequest::Stats(_) => reply(self.stats()),
            ShardRequest::Export(r) => reply(self.export(r)),
            ShardRequest::Import(r) => reply(self.import(r).await),
            ShardRequest::RetentionTops(r) => reply(self.retention_tops(r)),
            ShardRequest::RetentionPage(r) => reply(self.retention_page(r)),
            ShardRequest::RetentionDelete(r) => reply(self.retention_delete(r)),
            ShardRequest::Sweep(r) => reply(self.sweep(r).await),
            ShardRequest::Record(_) => reply(self.commit(|_| Ok(()))),
            ShardRequest::SetGauge(r) => reply(self.set_gauge(r)),
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
        self.pending.borrow_mut().push(Delta::count(name, labels, n));
    }

    /// Runs `f` in one transaction and records, in the same transaction, the pending
    /// counter deltas and the rows this object read and wrote since the last commit.
    fn commit<T>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, ApiError>,
    ) -> std::result::Result<T, ApiError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let out = self.store.transaction(|tx| {
            let out = f(tx)?;
            let (read, written) = tx.take_row_counts();
            let mut deltas = pending.clone();
            if read > 0 {
                deltas.push(Delta::count("edgejobs_do_rows_read_total", &[], read as f64));
            }
            if written > 0 {
                deltas.push(Delta::count("edgejobs_do_rows_written_total", &[], written as f64));
            }
            tx.record(&deltas)?;
            Ok(out)
        });
        if out.is_err() {
            // Rolled back: keep the counts for the next commit.
            self.pending.borrow_mut().extend(pending);
        }
        out
    }

    /// Carries out the effects of a committed plan: the jobs to send, in envelopes of one
    /// lane and up to 100 jobs, in as few `sendBatch` calls as Cloudflare's limits allow;
    /// then the alarm. A failed send is logged, not returned: the jobs are safely queued
    /// and the sweep re-sends them.
    async fn carry_out(&self, effects: Effects) {
        if !effects.enqueue.is_empty() {
            let shard = self.shard.unwrap_or(0);
            let messages = envelopes(shard, effects.enqueue);
            self.send(messages).await;
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
        let sizes: Vec<usize> = messages.iter().map(|m| serde_json::to_string(m).map_or(0, |s| s.len())).collect();
        let mut sent = 0usize;
        for range in send_batches(&sizes) {
            let batch: Vec<&Envelope> = messages[range.clone()].iter().collect();
            match queue.send_batch(batch).await {
                Ok(()) => sent += range.len(),
                Err(e) => log(
                    "warn",
                    "queue send failed; the sweep will re-send",
                    json!({ "messages": range.len(), "error": e.to_string() }),
                ),
            }
        }
        // Sends were counted with the commit that planned them; failures are counted here
        // and written with the next commit.
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
