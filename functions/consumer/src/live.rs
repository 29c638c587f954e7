//! Live results (#30) of a running attempt: `ctx.progress(..)`, `ctx.metadata(..)` and
//! `ctx.stream(..)` make no request each. They feed one coalescer per attempt ([`Live`]),
//! whose task folds what gathered into one `update` event (`edgejobs_core::live::Update`)
//! and hands it to the batcher every report uses: at most every `EDGEJOBS_LIVE_LINGER`, at
//! once when the chunk text waiting reaches what one update may carry (64 KiB), and at once
//! when someone waits for it ([`Live::flush`]). One update of a job is in flight at a time,
//! so the edge applies them in order. The worker closes the coalescer (flushing it and
//! awaiting the answer) before it reports the attempt's outcome, and a workflow step flushes
//! it before the step's report, so chunks always precede the state they lead to.
//!
//! A refused update is logged and ends the attempt's live output: every later call answers
//! the refusal, so a handler can notice. A refusal that says the attempt is no longer this
//! consumer's (lease lost, cancelled, stale) also cancels the handler, like a refused
//! heartbeat.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgejobs_core::live::{Chunk, MAX_JOB_STREAM_BYTES, MAX_MESSAGE_BYTES, MAX_METADATA_BYTES, MAX_UPDATE_BYTES};
use edgejobs_core::live::{Progress, Update, is_stream_name};
use edgejobs_core::machine::Event;
use edgejobs_core::{ApiError, ErrorCode, Job, JobId};
use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::edge::{Answer, Edge};
use crate::metrics::Metrics;

/// Why a live call was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LiveError {
    /// The call itself is wrong (a percent outside 0..=100, a message over 256 bytes, a bad
    /// stream name, metadata over 8 KiB): nothing was queued, and later calls still work.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    /// The edge refused an update of this attempt: nothing more is sent.
    #[error("the edge refused a live update: {0}")]
    Refused(ApiError),
    /// The edge could not be reached (after bounded retries): nothing more is sent.
    #[error("a live update could not be delivered: {0}")]
    Unavailable(String),
    /// The attempt's chunks would pass what a job's streams may hold (1 MiB): nothing more
    /// is sent (the edge would refuse it with `live_limit`).
    #[error("the job's streams would pass {MAX_JOB_STREAM_BYTES} bytes")]
    Limit,
    /// The attempt is over (its outcome is being reported).
    #[error("the attempt's live output is closed")]
    Closed,
}

/// Where the coalescer's updates go: one attempt of one job, reported through the edge.
#[derive(Debug, Clone)]
struct Target {
    edge: Edge,
    id: JobId,
    attempt: u32,
    lease: Option<String>,
}

/// The live output of one attempt (cheap to clone; every clone feeds the same coalescer).
/// When the last clone is dropped without [`Live::close`] (an abandoned attempt), the
/// sender still sends what waits, then stops.
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<Inner>,
    _open: Arc<Open>,
}

/// Closes the coalescer when the last [`Live`] goes (the sender holds only [`Inner`]).
#[derive(Debug)]
struct Open(Arc<Inner>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.0.wake.notify_one();
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Wakes the sending task: something was queued, a flush was asked for, or it closes.
    wake: Notify,
    /// How many calls have been answered by the edge (or dropped after a failure): what
    /// [`Live::flush`] waits on.
    answered: watch::Sender<u64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct State {
    /// Updates waiting, oldest first. Only the last one takes more: the others are full.
    queue: VecDeque<Update>,
    /// Calls queued so far.
    queued: u64,
    /// Chunk bytes taken in this attempt (sent or waiting), against the job's limit.
    taken_bytes: u64,
    /// Send without waiting out the linger (someone flushes).
    urgent: bool,
    closed: bool,
    /// Why every call fails from now on.
    failed: Option<LiveError>,
}

impl State {
    fn check_open(&self) -> Result<(), LiveError> {
        match (&self.failed, self.closed) {
            (Some(e), _) => Err(e.clone()),
            (None, true) => Err(LiveError::Closed),
            (None, false) => Ok(()),
        }
    }

    fn pending(&self) -> bool {
        self.queue.iter().any(|u| !u.is_empty())
    }

    /// The update that takes the next call (a new one when there is none).
    fn back(&mut self) -> &mut Update {
        if self.queue.is_empty() {
            self.queue.push_back(Update::default());
        }
        let last = self.queue.len() - 1;
        &mut self.queue[last]
    }

    /// Drops what waits (the edge would refuse it too) and fails every later call with `why`.
    fn fail(&mut self, why: LiveError) {
        self.queue.clear();
        self.urgent = false;
        self.failed.get_or_insert(why);
    }
}

impl Live {
    /// The live output of `job`'s running attempt, reported through `edge`; spawns the
    /// task that sends it (ended by [`Live::close`]). `cancel` is the handler's token: a
    /// refusal saying the attempt is no longer ours fires it.
    pub fn start(edge: Edge, job: &Job, linger: Duration, cancel: CancellationToken, metrics: Arc<Metrics>) -> Live {
        let inner = Arc::new(Inner {
            state: Mutex::default(),
            wake: Notify::new(),
            answered: watch::Sender::new(0),
            task: Mutex::new(None),
        });
        let target = Target { edge, id: job.id.clone(), attempt: job.attempt, lease: job.lease.clone() };
        let task = tokio::spawn(send_loop(Arc::clone(&inner), target, linger, cancel, metrics));
        *inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Live { _open: Arc::new(Open(Arc::clone(&inner))), inner }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the attempt's progress: `percent` from 0 to 100 and an optional message (at
    /// most 256 bytes). The newest one within a linger is the one sent.
    pub fn progress(&self, percent: f64, message: Option<&str>) -> Result<(), LiveError> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return Err(LiveError::Invalid {
                field: "progress.percent",
                message: format!("{percent} is not from 0 to 100"),
            });
        }
        if let Some(m) = message.filter(|m| m.len() > MAX_MESSAGE_BYTES) {
            return Err(LiveError::Invalid {
                field: "progress.message",
                message: format!("{} bytes; at most {MAX_MESSAGE_BYTES}", m.len()),
            });
        }
        let mut st = self.state();
        st.check_open()?;
        st.back().progress = Some(Progress { percent, message: message.map(str::to_owned) });
        self.queued(st);
        Ok(())
    }

    /// Merges `keys` into the job's metadata (a `null` value removes its key).
    pub fn set_metadata(&self, keys: Map<String, Value>) -> Result<(), LiveError> {
        if keys.is_empty() {
            return Ok(());
        }
        let len = serde_json::to_string(&keys).map_or(usize::MAX, |s| s.len());
        if len > MAX_METADATA_BYTES {
            return Err(LiveError::Invalid {
                field: "metadata",
                message: format!("{len} bytes of JSON; at most {MAX_METADATA_BYTES}"),
            });
        }
        let mut st = self.state();
        st.check_open()?;
        // Coalesced keys must still fit one update: what does not goes in the next one.
        let merged = st.back().metadata.as_ref().map_or(0, |m| {
            let mut m = m.clone();
            m.extend(keys.clone());
            serde_json::to_string(&m).map_or(usize::MAX, |s| s.len())
        });
        if merged > MAX_METADATA_BYTES {
            st.queue.push_back(Update::default());
        }
        st.back().metadata.get_or_insert_with(Map::new).extend(keys);
        self.queued(st);
        Ok(())
    }

    /// Sets one metadata key (`Value::Null` removes it).
    pub fn metadata(&self, key: impl Into<String>, value: impl Into<Value>) -> Result<(), LiveError> {
        let mut keys = Map::new();
        keys.insert(key.into(), value.into());
        self.set_metadata(keys)
    }

    /// Appends `data` to the stream `name` (`[A-Za-z0-9_.:-]{1,64}`), e.g. an LLM's tokens.
    /// An empty chunk is dropped; one larger than an update may carry is cut in pieces (at
    /// character boundaries), which readers join back.
    pub fn stream(&self, name: &str, data: impl Into<String>) -> Result<(), LiveError> {
        if !is_stream_name(name) {
            return Err(LiveError::Invalid {
                field: "chunks.stream",
                message: format!("{name:?} is not 1 to 64 characters of A-Z a-z 0-9 _ . : -"),
            });
        }
        let data = data.into();
        if data.is_empty() {
            return Ok(());
        }
        let mut st = self.state();
        st.check_open()?;
        if st.taken_bytes + data.len() as u64 > MAX_JOB_STREAM_BYTES {
            // What already waits still goes out (the sender answers the flushes); nothing
            // more is taken.
            st.failed = Some(LiveError::Limit);
            drop(st);
            self.inner.wake.notify_one();
            return Err(LiveError::Limit);
        }
        st.taken_bytes += data.len() as u64;
        for piece in pieces(&data) {
            let room = MAX_UPDATE_BYTES - st.back().chunk_bytes();
            if piece.len() > room {
                st.queue.push_back(Update::default());
            }
            st.back().chunks.push(Chunk { stream: name.to_owned(), data: piece.to_owned() });
        }
        self.queued(st);
        Ok(())
    }

    /// Counts a queued call and wakes the sender.
    fn queued(&self, mut st: std::sync::MutexGuard<'_, State>) {
        st.queued += 1;
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Sends what waits now (no linger) and waits for the edge's answer to it.
    pub async fn flush(&self) -> Result<(), LiveError> {
        let target = {
            let mut st = self.state();
            if st.pending() {
                st.urgent = true;
            }
            st.queued
        };
        self.inner.wake.notify_one();
        let mut answered = self.inner.answered.subscribe();
        // The sender answers every queued call, even after a failure or when closing.
        let _ = answered.wait_for(|n| *n >= target).await;
        match self.state().failed.clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Ends the live output: sends what waits, waits for the answer, and stops the sender.
    /// Later calls answer [`LiveError::Closed`] (or the failure that came first).
    pub async fn close(&self) {
        self.state().closed = true;
        self.inner.wake.notify_one();
        let task = self.inner.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the live update sender failed");
        }
    }
}

/// `data` in pieces of at most [`MAX_UPDATE_BYTES`], cut at character boundaries.
fn pieces(data: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() > MAX_UPDATE_BYTES {
        let mut cut = MAX_UPDATE_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

/// Whether a refusal says the attempt is no longer this consumer's to run (as a refused
/// heartbeat does), rather than that the update itself was wrong.
fn ends_the_attempt(code: ErrorCode) -> bool {
    !matches!(code, ErrorCode::InvalidField | ErrorCode::LiveLimit)
}

/// The sending task: waits for calls, lingers for company, sends the oldest update and
/// awaits its answer, until closed with nothing left.
async fn send_loop(inner: Arc<Inner>, to: Target, linger: Duration, cancel: CancellationToken, metrics: Arc<Metrics>) {
    let state = || inner.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        // Something to send, or closed.
        loop {
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let st = state();
                if st.pending() || st.closed {
                    break;
                }
                // Calls that queued nothing to send (failed ones) are answered here.
                inner.answered.send_replace(st.queued);
            }
            woken.await;
        }
        // Wait out the linger, unless the update is full, someone waits, or it closes.
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            {
                let st = state();
                if st.closed || st.urgent || st.queue.len() > 1 {
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = woken => {}
            }
        }
        let (update, upto) = {
            let mut st = state();
            match st.queue.pop_front() {
                Some(u) if !u.is_empty() => {
                    // The last update holds every call made so far: its answer answers them.
                    let upto = st.queue.is_empty().then_some(st.queued);
                    if upto.is_some() {
                        st.urgent = false;
                    }
                    (u, upto)
                }
                _ => {
                    if st.closed && !st.pending() {
                        inner.answered.send_replace(st.queued);
                        return;
                    }
                    continue;
                }
            }
        };
        let chunks = update.chunks.len() as u64;
        let event = Event::Update { attempt: to.attempt, update };
        match to.edge.report_persistently(&to.id, &event, to.lease.as_deref()).await {
            Answer::Accepted(..) => {
                metrics.live_updates.fetch_add(1, Ordering::Relaxed);
                metrics.live_chunks.fetch_add(chunks, Ordering::Relaxed);
                if let Some(n) = upto {
                    inner.answered.send_replace(n);
                }
            }
            Answer::Refused(err) => {
                tracing::warn!(job = %to.id, attempt = to.attempt, code = err.code.as_str(), error = %err.message,
                    "the edge refused a live update; later live calls of this attempt fail");
                if ends_the_attempt(err.code) {
                    cancel.cancel();
                }
                let mut st = state();
                st.fail(LiveError::Refused(err));
                inner.answered.send_replace(st.queued);
            }
            Answer::Unavailable(why) => {
                tracing::warn!(job = %to.id, attempt = to.attempt, error = why,
                    "cannot deliver a live update; later live calls of this attempt fail");
                let mut st = state();
                st.fail(LiveError::Unavailable(why));
                inner.answered.send_replace(st.queued);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeEdge;
    use serde_json::json;

    fn updates(events: &[(JobId, Event)]) -> Vec<Update> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Update { update, .. } => Some(update.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn many_calls_within_a_linger_are_one_update_in_order() {
        let edge = FakeEdge::start().await;
        let job = crate::testing::job(1);
        let metrics = Arc::new(Metrics::default());
        let live =
            Live::start(edge.edge(), &job, Duration::from_secs(3600), CancellationToken::new(), Arc::clone(&metrics));
        let tokens: Vec<String> = (0..50).map(|i| format!(" t{i}")).collect();
        for t in &tokens {
            live.stream("tokens", t.as_str()).expect("queued");
        }
        live.progress(40.0, Some("half")).expect("queued");
        live.progress(60.0, None).expect("queued");
        live.metadata("pages", 2).expect("queued");
        live.set_metadata(Map::from_iter([("old".to_owned(), Value::Null), ("pages".to_owned(), json!(3))]))
            .expect("queued");
        // The linger is an hour: only the flush sends, and it sends everything as one.
        live.flush().await.expect("accepted");
        let sent = updates(&edge.events());
        assert_eq!(sent.len(), 1, "{sent:?}");
        let u = &sent[0];
        assert_eq!(u.chunks.iter().map(|c| c.data.clone()).collect::<Vec<_>>(), tokens);
        assert!(u.chunks.iter().all(|c| c.stream == "tokens"));
        assert_eq!(u.progress, Some(Progress { percent: 60.0, message: None }), "the newest progress");
        assert_eq!(u.metadata, Some(Map::from_iter([("pages".to_owned(), json!(3)), ("old".to_owned(), Value::Null)])));
        assert_eq!(edge.requests(), 1, "one request, not one per call");
        assert_eq!(
            (metrics.live_updates.load(Ordering::Relaxed), metrics.live_chunks.load(Ordering::Relaxed)),
            (1, 50)
        );
        live.close().await;
        assert_eq!(live.stream("tokens", "late"), Err(LiveError::Closed));
    }

    #[tokio::test]
    async fn the_linger_sends_without_a_flush_and_full_updates_go_at_once() {
        let edge = FakeEdge::start().await;
        let job = crate::testing::job(1);
        let metrics = Arc::new(Metrics::default());
        let live = Live::start(edge.edge(), &job, Duration::from_millis(20), CancellationToken::new(), metrics);
        live.stream("tokens", "a").expect("queued");
        live.stream("tokens", "b").expect("queued");
        assert!(edge.wait_for(|events| !updates(events).is_empty()).await, "the linger sent it");
        assert_eq!(updates(&edge.events())[0].chunks.len(), 2);
        // Chunk text past what one update may carry splits into several updates.
        let long = "é".repeat(MAX_UPDATE_BYTES / 2 + 10);
        live.stream("tokens", long.as_str()).expect("queued");
        live.close().await;
        let sent = updates(&edge.events());
        assert!(sent.iter().all(|u| u.check().is_ok()), "every update is within the limits");
        let text: String = sent[1..].iter().flat_map(|u| u.chunks.iter().map(|c| c.data.as_str())).collect();
        assert_eq!(text, long, "the pieces join back");
        assert!(sent.len() >= 3, "{}", sent.len());
    }

    #[tokio::test]
    async fn bad_calls_are_refused_locally_and_a_refused_update_fails_later_calls() {
        let edge = FakeEdge::start().await;
        let job = crate::testing::job(1);
        let cancel = CancellationToken::new();
        let live = Live::start(edge.edge(), &job, Duration::ZERO, cancel.clone(), Arc::new(Metrics::default()));
        assert!(matches!(live.progress(101.0, None), Err(LiveError::Invalid { .. })));
        assert!(matches!(live.progress(f64::NAN, None), Err(LiveError::Invalid { .. })));
        assert!(matches!(live.progress(1.0, Some(&"m".repeat(257))), Err(LiveError::Invalid { .. })));
        assert!(matches!(live.stream("a b", "x"), Err(LiveError::Invalid { .. })));
        // The edge refuses the next update as over the job's limit: later calls say so, and
        // the handler goes on (the update was wrong, not the attempt).
        edge.refuse_updates(ErrorCode::LiveLimit);
        live.stream("tokens", "x").expect("queued");
        let refused = live.flush().await;
        assert!(matches!(&refused, Err(LiveError::Refused(e)) if e.code == ErrorCode::LiveLimit), "{refused:?}");
        assert!(matches!(live.stream("tokens", "y"), Err(LiveError::Refused(_))));
        assert!(matches!(live.progress(5.0, None), Err(LiveError::Refused(_))));
        assert!(!cancel.is_cancelled());
        live.close().await;
        // A lost lease stops the handler, as a refused heartbeat does.
        edge.refuse_updates(ErrorCode::LeaseLost);
        let cancel = CancellationToken::new();
        let live = Live::start(edge.edge(), &job, Duration::ZERO, cancel.clone(), Arc::new(Metrics::default()));
        live.stream("tokens", "x").expect("queued");
        assert!(live.flush().await.is_err());
        assert!(cancel.is_cancelled());
        live.close().await;
    }
}
