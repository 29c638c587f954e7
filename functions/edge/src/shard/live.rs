//! Live results (#30) at the shard's object: subscribers of a job's stream or of many jobs
//! (by tag), over Server-Sent Events or a hibernatable WebSocket, and the long polls of
//! `GET /v1/jobs/{id}?wait=`. After every commit the object calls [`Hub::publish`] with the
//! jobs the commit wrote (`Effects::touched`); nothing is read when nobody listens.
//!
//! A subscriber first gets the job's chunks after its `Last-Event-ID` and the job's state,
//! then every change as it commits. The reading of the backlog and the registration of the
//! subscriber happen in one synchronous step, so no commit falls between them.
//!
//! SSE subscribers live in this object's memory (an open response keeps the object in
//! memory anyway); WebSocket subscribers are accepted with the hibernation API, tagged by
//! what they watch, so an idle object can be evicted while they stay connected, and are
//! found again with `get_websockets_with_tag` after it wakes.

use std::cell::RefCell;
use std::time::Duration;

use edgejobs_core::live::{Row, StateView, chunk_event, state_event};
use edgejobs_core::protocol::Get;
use edgejobs_core::tenant::Tenant;
use edgejobs_core::{Job, JobId};
use edgejobs_shard::Shard;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_channel::oneshot;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{Delay, State, WebSocket};

use super::EdgeHost;
use super::sql::DoSql;
use crate::http::log;

/// How often an idle SSE stream gets a comment line, so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Most subscribers (SSE and WebSocket together) one shard's object holds; past it a new
/// subscription is refused with 503 and the client retries later.
pub const MAX_SUBSCRIBERS: usize = 10_000;

/// What a subscriber watches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// One job: its chunks and its states.
    Job(JobId),
    /// Many jobs' states (no chunks): those of `tenant` (`None`: an admin's, all) that carry
    /// `tag` (`None`: every job).
    Jobs { tenant: Option<Tenant>, tag: Option<String> },
}

impl Filter {
    /// The hibernation tag a WebSocket with this filter is accepted under.
    pub fn ws_tag(&self) -> String {
        match self {
            Filter::Job(id) => format!("j:{id}"),
            Filter::Jobs { .. } => "many".to_owned(),
        }
    }

    fn wants_state(&self, job: &Job) -> bool {
        match self {
            Filter::Job(id) => *id == job.id,
            Filter::Jobs { tenant, tag } => {
                tenant.as_ref().is_none_or(|t| *t == job.tenant) && tag.as_ref().is_none_or(|t| job.tags.contains(t))
            }
        }
    }
}

struct Sub {
    filter: Filter,
    tx: UnboundedSender<Vec<u8>>,
}

struct Waiter {
    id: JobId,
    tx: oneshot::Sender<()>,
}

/// The object's subscribers and long polls.
#[derive(Default)]
pub struct Hub {
    subs: RefCell<Vec<Sub>>,
    waiters: RefCell<Vec<Waiter>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subs", &self.subs.borrow().len())
            .field("waiters", &self.waiters.borrow().len())
            .finish()
    }
}

/// A WebSocket message: the same events as SSE, as one JSON object each.
#[derive(Debug, Serialize)]
struct WsEvent<'a, T: Serialize> {
    id: u64,
    event: &'a str,
    data: T,
}

impl Hub {
    /// Subscribers held now (open SSE streams; WebSockets are counted by the runtime).
    pub fn len(&self, state: &State) -> usize {
        self.prune();
        self.subs.borrow().len() + state.get_websockets().len()
    }

    fn prune(&self) {
        self.subs.borrow_mut().retain(|s| !s.tx.is_closed());
        self.waiters.borrow_mut().retain(|w| !w.tx.is_canceled());
    }

    /// Registers an SSE subscriber and returns its stream; `first` is what it gets at once
    /// (the backlog and the job's state). A subscription to a job that is already final gets
    /// `first` and its stream ends.
    pub fn subscribe_sse(&self, filter: Filter, first: Vec<String>, done: bool) -> UnboundedReceiver<Vec<u8>> {
        let (tx, rx) = unbounded();
        for e in first {
            let _ = tx.unbounded_send(e.into_bytes());
        }
        if !done {
            self.subs.borrow_mut().push(Sub { filter, tx });
        }
        rx
    }

    /// A long poll of `id`: resolves when a commit ends the job (or the caller gives up).
    pub fn wait_for(&self, id: JobId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().push(Waiter { id, tx });
        rx
    }

    /// Tells every subscriber and long poll what a commit wrote. Reads each touched job
    /// once, and only when someone watches it (a job's subscribers, a many-jobs subscriber,
    /// a long poll of it).
    pub fn publish(&self, state: &State, shard: &Shard<DoSql, EdgeHost>, touched: &[edgejobs_core::live::Touched]) {
        if touched.is_empty() {
            return;
        }
        // Long polls first: they need no read.
        {
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.is_empty() {
                let ended: Vec<&JobId> = touched.iter().filter(|t| t.finished).map(|t| &t.id).collect();
                let (fire, keep): (Vec<Waiter>, Vec<Waiter>) =
                    std::mem::take(&mut *waiters).into_iter().partition(|w| ended.contains(&&w.id));
                *waiters = keep;
                fire.into_iter().for_each(|w| {
                    let _ = w.tx.send(());
                });
            }
        }
        let many_ws = state.get_websockets_with_tag("many");
        let any_many =
            !many_ws.is_empty() || self.subs.borrow().iter().any(|s| matches!(s.filter, Filter::Jobs { .. }));
        for t in touched {
            let job_ws = state.get_websockets_with_tag(&format!("j:{}", t.id));
            let watched = any_many
                || !job_ws.is_empty()
                || self.subs.borrow().iter().any(|s| matches!(&s.filter, Filter::Job(id) if *id == t.id));
            if !watched {
                continue;
            }
            let job = match shard.settle(shard.get(Get { id: t.id.clone(), tenant: None, wait_ms: 0 })) {
                Ok(j) => j,
                Err(e) => {
                    log("warn", "a live subscriber's job could not be read", json!({ "error": e.message }));
                    continue;
                }
            };
            let n = t.rows.last().map(|r| r.n);
            self.send(&job, &t.rows, n, &job_ws, &many_ws);
        }
        self.prune();
    }

    /// Sends one job's new chunks and its state to its subscribers, and its state to the
    /// many-jobs subscribers that want it; a finished job's own subscribers are let go.
    fn send(&self, job: &Job, rows: &[Row], newest: Option<u64>, job_ws: &[WebSocket], many_ws: &[WebSocket]) {
        let view = StateView::of(job);
        // Over a WebSocket a state message carries the newest chunk number it follows (0:
        // none in this commit); a client resumes with `?after=` of the last chunk it got.
        let n = newest.unwrap_or(0);
        let finished = job.state.is_finished();
        let state_sse = state_event(&view);
        // A job's subscribers get the commit's chunks and its state as one write (one body
        // chunk each), built once: the fan-out bench spent most of the Worker's time on one
        // write per event per subscriber.
        let mut for_job: String = rows.iter().map(chunk_event).collect();
        for_job.push_str(&state_sse);
        let mut subs = self.subs.borrow_mut();
        for s in subs.iter() {
            match &s.filter {
                Filter::Job(id) if *id == job.id => {
                    let _ = s.tx.unbounded_send(for_job.clone().into_bytes());
                }
                f @ Filter::Jobs { .. } if f.wants_state(job) => {
                    let _ = s.tx.unbounded_send(state_sse.clone().into_bytes());
                }
                _ => {}
            }
        }
        if finished {
            // Dropping the sender ends the subscriber's response after what it was sent.
            subs.retain(|s| !matches!(&s.filter, Filter::Job(id) if *id == job.id));
        }
        drop(subs);
        for ws in job_ws {
            for r in rows {
                ws_chunk(ws, r);
            }
            ws_send(ws, n, "state", &view);
            if finished {
                let _ = ws.close(Some(1000), Some("the job is final"));
            }
        }
        for ws in many_ws {
            let wants = ws.deserialize_attachment::<Filter>().ok().flatten().is_some_and(|f| f.wants_state(job));
            if wants {
                ws_send(ws, 0, "state", &view);
            }
        }
    }
}

/// Sends one stored chunk over a WebSocket.
pub fn ws_chunk(ws: &WebSocket, r: &Row) {
    let body = edgejobs_core::live::ChunkView { attempt: r.attempt, stream: r.stream.clone(), data: r.data.clone() };
    ws_send(ws, r.n, "chunk", &body);
}

/// Sends one event over a WebSocket (a closed one is skipped: the runtime drops it).
pub fn ws_send<T: Serialize>(ws: &WebSocket, id: u64, event: &str, data: &T) {
    if let Ok(text) = serde_json::to_string(&WsEvent { id, event, data }) {
        let _ = ws.send_with_str(text);
    }
}

/// What a new subscriber of one job gets first: its chunks after `after` and its state.
pub fn backlog(job: &Job, rows: &[Row]) -> Vec<String> {
    let mut out: Vec<String> = rows.iter().map(chunk_event).collect();
    out.push(state_event(&StateView::of(job)));
    out
}

/// An SSE body: the subscriber's events, with a comment line every [`KEEPALIVE`] while
/// nothing else is sent; it ends when the hub lets the subscriber go.
pub fn sse_body(rx: UnboundedReceiver<Vec<u8>>) -> impl futures_util::Stream<Item = worker::Result<Vec<u8>>> {
    // The first bytes tell EventSource how long to wait before it reconnects.
    let hello = futures_util::stream::once(async { Ok(b"retry: 2000\n\n".to_vec()) });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let next = rx.next();
        let tick = Delay::from(KEEPALIVE);
        futures_util::pin_mut!(next, tick);
        match futures_util::future::select(next, tick).await {
            futures_util::future::Either::Left((Some(bytes), _)) => Some((Ok(bytes), rx)),
            futures_util::future::Either::Left((None, _)) => None,
            futures_util::future::Either::Right(_) => Some((Ok(b": keepalive\n\n".to_vec()), rx)),
        }
    });
    hello.chain(events)
}
