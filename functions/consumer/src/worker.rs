//! The consumer loop: take over idle entries, read new ones, run each job under a
//! concurrency limit with its lease renewed, report the outcome and acknowledge it only
//! once the edge has accepted the report.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::otlp;
use edgejobs_core::wire::{PRESENCE_EVERY_MS, PRESENCE_FORGET_MS, Presence};
use edgejobs_core::{ErrorCode, Job, JobId, Lane};
use edgejobs_upstash::transport::ReqwestTransport;
use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::batch;
use crate::config::Settings;
use crate::edge::{Answer, Edge};
use crate::handlers::{HandlerError, JobCtx, Progress, Registry};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::stream::{Entry, Stream};
use crate::telemetry::{Telemetry, Traced};
use crate::upstreams::Upstreams;

/// How often the poll loop looks for entries to take over.
pub const RECLAIM_EVERY: Duration = Duration::from_secs(1);

/// What the loop does on its next turn, when it has free slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Look for idle entries to take over (the reclaim script).
    pub reclaim: bool,
    /// Read new entries (XREADGROUP).
    pub read: bool,
}

/// The loop's state as [`next_step`] and [`idle_wait`] see it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Since the last takeover look and the last read (`None`: never).
    pub since_reclaim: Option<Duration>,
    pub since_read: Option<Duration>,
    /// The wake-up subscription is open.
    pub subscribed: bool,
    /// A wake-up arrived, or the last turn found work (or a slot freed): read at once.
    pub now: bool,
}

/// Takeovers keep their cadence (at most once a [`RECLAIM_EVERY`], whatever the wake-ups);
/// reads happen at once when woken (or after work was found), every turn while the
/// subscription is down (the old poll loop), and otherwise only every `wake_poll`, the
/// fallback for a missed wake-up.
pub fn next_step(c: Clock, wake_poll: Duration) -> Step {
    Step {
        reclaim: c.since_reclaim.is_none_or(|d| d >= RECLAIM_EVERY),
        read: c.now || !c.subscribed || c.since_read.is_none_or(|d| d >= wake_poll),
    }
}

/// How long an idle loop sleeps (unless a wake-up comes first): while subscribed, until the
/// next takeover look or fallback read is due; otherwise the poll backoff `interval`.
pub fn idle_wait(c: Clock, interval: Duration, wake_poll: Duration) -> Duration {
    if !c.subscribed {
        return interval;
    }
    let reclaim = RECLAIM_EVERY.saturating_sub(c.since_reclaim.unwrap_or(RECLAIM_EVERY));
    let read = wake_poll.saturating_sub(c.since_read.unwrap_or(wake_poll));
    reclaim.min(read)
}

/// Largest serialized result kept (the edge refuses larger reports).
pub const MAX_RESULT_BYTES: usize = 60 * 1024;

/// A job this consumer is running: what the lease keeper renews and reports on.
#[derive(Debug)]
struct Held {
    id: JobId,
    attempt: u32,
    /// The attempt's lease token (from the start's answer), which every report carries.
    lease: Option<String>,
    progress: tokio::sync::watch::Receiver<Option<Value>>,
    cancel: CancellationToken,
}

/// One held job as the lease keeper sees it at a renewal.
#[derive(Debug)]
struct Beat {
    entry: String,
    id: JobId,
    attempt: u32,
    lease: Option<String>,
    progress: Option<Value>,
    cancel: CancellationToken,
}

/// Acknowledgements: up to 200 entries per script call, the first waiting 5 ms for company.
const ACK_BATCH: batch::Limits =
    batch::Limits { max_items: 200, max_weight: usize::MAX, linger: Duration::from_millis(5) };

/// Everything a running consumer shares between its tasks.
#[derive(Debug)]
pub struct Worker {
    pub settings: Settings,
    pub stream: Stream<ReqwestTransport>,
    pub edge: Edge,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    /// The guarded client handlers use (requests made for a user).
    pub http: reqwest::Client,
    /// Wake-ups from the hand-off (`wake.rs`).
    pub wake: Arc<crate::wake::Wake>,
    /// Running jobs by stream entry.
    held: Mutex<HashMap<String, Held>>,
    /// Entries to acknowledge, sent in batches by `ack_batch`.
    acks: batch::Sender<String, bool>,
    acks_rx: Mutex<Option<batch::Receiver<String, bool>>>,
    /// Spans of deliveries, attempts and outbound calls (#32); off unless configured.
    pub telemetry: Telemetry,
}

/// The renewal interval: the configured one, but never more than a third of the edge's
/// lease (a configured value above it is an error, logged once, and not used).
pub fn renew_interval(configured: Option<Duration>, lease: Duration) -> Result<Duration, (Duration, String)> {
    let third = lease / 3;
    match configured {
        None => Ok(third),
        Some(r) if r <= third => Ok(r),
        Some(r) => Err((
            third,
            format!(
                "EDGEJOBS_LEASE_RENEW ({} ms) must be at most a third of the edge's NATIVE_LEASE ({} ms); renewing every {} ms",
                r.as_millis(),
                lease.as_millis(),
                third.as_millis()
            ),
        )),
    }
}

/// What to do with a stream entry after the edge refused a report about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Another consumer took the attempt over and runs it from this entry: leave it alone.
    Leave,
    /// A takeover was refused because the holder is alive: give the entry back to it.
    GiveBack,
    /// Nothing will run from this entry (finished, cancelled, stale): acknowledge it if this
    /// consumer still owns it.
    Ack,
}

pub fn after_refusal(code: ErrorCode) -> AfterRefusal {
    match code {
        // Another holder's attempt (a takeover, or a token this consumer never held): the
        // entry is the holder's.
        ErrorCode::LeaseLost | ErrorCode::LeaseMismatch => AfterRefusal::Leave,
        ErrorCode::LeaseHeld => AfterRefusal::GiveBack,
        _ => AfterRefusal::Ack,
    }
}

impl Worker {
    pub fn new(
        settings: Settings,
        stream: Stream<ReqwestTransport>,
        edge: Edge,
        registry: Registry,
        upstreams: Arc<Upstreams>,
        http: reqwest::Client,
    ) -> Worker {
        let (acks, acks_rx) = batch::channel(10_000);
        Worker {
            settings,
            stream,
            edge,
            registry,
            metrics: Arc::new(Metrics::default()),
            upstreams,
            http,
            wake: Arc::default(),
            held: Mutex::default(),
            acks,
            acks_rx: Mutex::new(Some(acks_rx)),
            telemetry: Telemetry::off(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns the edge's lease (retrying until the edge answers or `stop` fires) and the
    /// renewal interval that goes with it.
    async fn lease(&self, stop: &CancellationToken) -> Option<(Duration, Duration)> {
        let mut logged = false;
        loop {
            if let Some(lease) = self.edge.fetch_lease().await {
                let renew = match renew_interval(self.settings.lease_renew, lease) {
                    Ok(r) => r,
                    Err((r, why)) => {
                        tracing::error!(error = why, "lease renewal interval too long");
                        r
                    }
                };
                tracing::info!(
                    lease_ms = lease.as_millis() as u64,
                    renew_ms = renew.as_millis() as u64,
                    "lease from the edge"
                );
                return Some((lease, renew));
            }
            if !logged {
                tracing::warn!("cannot reach the edge to learn its lease; retrying");
                logged = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_max) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// Polls and runs jobs until `stop` fires, then waits for in-flight jobs up to the grace
    /// period. Returns true when every job finished (a clean drain).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> bool {
        while let Err(e) = self.stream.ensure_group().await {
            tracing::error!(error = %e, "cannot create the consumer group; retrying");
            tokio::select! {
                _ = tokio::time::sleep(self.settings.poll_max) => {}
                _ = stop.cancelled() => return true,
            }
        }
        let Some((_, renew)) = self.lease(&stop).await else { return true };
        let acks_rx = self.acks_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let background = CancellationToken::new();
        if let Some(rx) = acks_rx {
            let me = Arc::clone(&self);
            let flush = move |entries| {
                let me = Arc::clone(&me);
                async move { me.ack_batch(entries).await }
            };
            tokio::spawn(rx.run(ACK_BATCH, flush));
        }
        tokio::spawn(Arc::clone(&self).keep_leases(renew, background.clone()));
        tokio::spawn(Arc::clone(&self).watch_depth(background.clone()));
        if self.settings.wake {
            let target = crate::wake::Target {
                upstash_url: self.settings.upstash_url.clone(),
                token: self.settings.upstash_token.clone(),
                channel: crate::wake::channel(&self.settings.stream),
            };
            let (wake, metrics) = (Arc::clone(&self.wake), Arc::clone(&self.metrics));
            tokio::spawn(crate::wake::subscribe(wake, target, metrics, background.clone()));
        }
        // Jobs get their own token: stopping the poll loop must not interrupt them.
        let jobs_stop = CancellationToken::new();
        // Two limits: `slots` caps running handlers (handed out by priority: `slots.rs`); `intake` caps entries taken (started at
        // the edge, waiting for a slot, or running), so up to `prefetch` jobs are started
        // ahead and a slot that frees starts its next handler at once.
        let slots = crate::slots::Slots::new(self.settings.concurrency);
        let intake = Arc::new(Semaphore::new(self.settings.concurrency + self.settings.prefetch));
        let mut tasks = JoinSet::new();
        let mut interval = self.settings.poll_min;
        let (mut last_reclaim, mut last_read): (Option<Instant>, Option<Instant>) = (None, None);
        // `again`: the last turn found work or a slot freed; `woken`: a wake-up arrived.
        let (mut again, mut woken) = (true, false);
        while !stop.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = intake.available_permits().min(self.settings.batch);
            if free == 0 {
                // Wait for a permit, not for a task: a task goes on reporting after its slot frees.
                tokio::select! {
                    p = Arc::clone(&intake).acquire_owned() => drop(p),
                    _ = stop.cancelled() => break,
                }
                again = true; // a freed slot reads at once (wake-ups may have come meanwhile)
                continue;
            }
            let clock = |(last_reclaim, last_read): (Option<Instant>, Option<Instant>), now: bool| Clock {
                since_reclaim: last_reclaim.map(|t| t.elapsed()),
                since_read: last_read.map(|t| t.elapsed()),
                subscribed: self.wake.subscribed(),
                now,
            };
            // Takeovers need an entry idle for longer than the lease: looking once a second
            // is enough. Reads happen when woken, else at the fallback poll (`next_step`).
            let step = next_step(clock((last_reclaim, last_read), again || woken), self.settings.wake_poll);
            let mut found = Vec::new();
            if step.reclaim || step.read {
                if step.reclaim {
                    last_reclaim = Some(Instant::now());
                }
                if step.read {
                    last_read = Some(Instant::now());
                    if woken {
                        self.metrics.woken_reads.fetch_add(1, Ordering::Relaxed);
                    }
                    (again, woken) = (false, false);
                }
                found = match self.poll(free, step.reclaim, step.read).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(error = %e, "polling the stream failed");
                        // The wake-up this read answered is spent: read again next turn
                        // (within a second) rather than at the fallback.
                        again |= step.read;
                        Vec::new()
                    }
                };
            }
            if found.is_empty() {
                let c = clock((last_reclaim, last_read), false);
                let wait = idle_wait(c, interval, self.settings.wake_poll);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake.woken() => woken = true,
                    _ = stop.cancelled() => break,
                }
                if !c.subscribed && !woken {
                    interval = (interval * 2).min(self.settings.poll_max);
                }
                continue;
            }
            interval = self.settings.poll_min;
            // Read again at once: more may be waiting (a batch's worth, or entries another
            // consumer's wake-up left).
            again = true;
            for entry in found {
                let Ok(taken) = Arc::clone(&intake).acquire_owned().await else { break };
                let me = Arc::clone(&self);
                let cancel = jobs_stop.child_token();
                let slots = Arc::clone(&slots);
                tasks.spawn(async move { me.run_entry(entry, (taken, slots), cancel).await });
            }
        }
        tracing::info!(in_flight = tasks.len(), "stopped reading; draining in-flight jobs");
        let drained = tokio::time::timeout(self.settings.grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_ok();
        if !drained {
            // Their entries stay pending; another consumer takes them after the lease.
            tracing::warn!(abandoned = tasks.len(), "grace period over; abandoning jobs to be reclaimed");
            jobs_stop.cancel();
            tasks.abort_all();
        }
        background.cancel();
        drained
    }

    /// Idle entries taken over first (idle past the edge's lease plus one renewal, so a
    /// live holder always renewed in time), then new ones.
    async fn poll(&self, n: usize, reclaim: bool, read: bool) -> Result<Vec<Entry>, edgejobs_upstash::Error> {
        let lease = self.edge.lease().unwrap_or(Duration::from_millis(edgejobs_core::config::DEFAULT_NATIVE_LEASE_MS));
        let min_idle = (lease + lease / 3).as_millis() as u64;
        if reclaim {
            self.metrics.reclaim_tries.fetch_add(1, Ordering::Relaxed);
        }
        let mut found = if reclaim { self.stream.reclaim(min_idle, n).await? } else { Vec::new() };
        // Our own idle entries come back too; one we still run is not taken again.
        found.retain(|e| {
            !(e.previous_owner.as_deref() == Some(self.stream.me.as_str()) && self.held().contains_key(&e.entry))
        });
        if !found.is_empty() {
            self.metrics.reclaims.fetch_add(found.len() as u64, Ordering::Relaxed);
            tracing::info!(count = found.len(), "took over idle stream entries");
        }
        if read && found.len() < n {
            self.metrics.reads.fetch_add(1, Ordering::Relaxed);
            found.extend(self.stream.read(n - found.len()).await?);
        }
        self.metrics.polled();
        Ok(found)
    }

    /// Acknowledges (and deletes) an entry if this consumer still owns it, in a batch with
    /// other acknowledgements. False when it could not be done (another consumer owns it,
    /// or Upstash failed: the entry is then taken over later and its report refused).
    async fn ack(&self, entry: &str) -> bool {
        self.acks.call(entry.to_owned(), 1).await.unwrap_or(false)
    }

    /// Acknowledges one batch of entries; whether each was, in order.
    async fn ack_batch(&self, entries: Vec<String>) -> Vec<bool> {
        let done = match self.stream.ack(&entries).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(entries = entries.len(), error = %e, "XACK failed; the entries will be taken over and refused");
                vec![false; entries.len()]
            }
        };
        let kept = done.iter().filter(|d| !**d).count();
        if kept > 0 {
            self.metrics.acks_skipped.fetch_add(kept as u64, Ordering::Relaxed);
        }
        done
    }

    /// Settles an entry after a refusal, by [`after_refusal`].
    async fn settle_refused(&self, e: &Entry, code: ErrorCode) {
        match after_refusal(code) {
            AfterRefusal::Leave => {}
            AfterRefusal::Ack => {
                self.ack(&e.entry).await;
            }
            AfterRefusal::GiveBack => {
                if let Some(owner) = &e.previous_owner
                    && let Err(err) = self.stream.give_back(&e.entry, owner).await
                {
                    tracing::warn!(entry = e.entry, error = %err, "could not give a held entry back");
                }
            }
        }
    }

    /// Starts the entry's attempt at the edge, waits for a running slot, runs the handler,
    /// then reports the outcome and acknowledges. `taken` is the intake permit.
    async fn run_entry(
        self: Arc<Self>,
        e: Entry,
        (taken, slots): (OwnedSemaphorePermit, Arc<crate::slots::Slots>),
        cancel: CancellationToken,
    ) {
        let Some(id) = e.id.clone() else {
            self.ack(&e.entry).await; // a deleted or foreign entry
            return;
        };
        // The delivery's span (#32), under the hand-off's that the entry names (an entry
        // from before #32 starts a trace of its own).
        let parent = e.trace.clone().unwrap_or_else(crate::telemetry::new_root);
        let delivery = self.telemetry.delivery(&parent, &self.settings.stream, &e.entry);
        delivery.set_attribute(otlp::keys::JOB_ID, id.to_string());
        delivery.set_attribute(otlp::keys::CONSUMER, self.settings.name.clone());
        let (trace_id, span_id) = (delivery.trace_id_hex(), delivery.span_id_hex());
        let log = tracing::info_span!("job", job = %id, trace_id = %trace_id, span_id = %span_id);
        self.run_delivery(e, id, delivery, taken, slots, cancel).instrument(log).await
    }

    /// [`Worker::run_entry`] once its delivery has a span.
    async fn run_delivery(
        self: Arc<Self>,
        e: Entry,
        id: edgejobs_core::JobId,
        delivery: crate::telemetry::JobSpan,
        taken: OwnedSemaphorePermit,
        slots: Arc<crate::slots::Slots>,
        cancel: CancellationToken,
    ) {
        // The edge decides a takeover with its own lease; the number here is ignored.
        let start = if e.previous_owner.is_some() {
            Event::Reclaim { attempt: e.attempt, lease_ms: 0 }
        } else {
            Event::Start { attempt: e.attempt }
        };
        let job = match self.edge.report(&id, &start, None).await {
            Answer::Accepted(Some(job), _) => *job,
            Answer::Accepted(None, _) => {
                tracing::error!(job = %id, "the edge accepted the start without the job; not running it");
                return;
            }
            Answer::Refused(err) => {
                self.settle_refused(&e, err.code).await;
                self.metrics.job("unknown", "refused", None);
                tracing::info!(job = %id, code = err.code.as_str(), "the edge refused the start; not running it");
                return;
            }
            Answer::Unavailable(why) => {
                tracing::warn!(job = %id, error = why, "cannot report the start; the entry will be retried after its lease");
                return;
            }
        };
        delivery.event(
            otlp::keys::events::LEASE_TAKEN,
            [
                otlp::Attr::new(otlp::keys::JOB_ATTEMPT, job.attempt),
                otlp::Attr::new(otlp::keys::LEASE_TAKEOVER, e.previous_owner.is_some()),
            ],
        );
        // The stream entry carries no `tracestate` (it can be long); the job does, and its
        // attempt and calls send it on.
        let mut parent = delivery.context();
        parent.state = parent.state.or_else(|| job.trace.as_ref().and_then(|t| t.state.clone()));
        let attempt = self.telemetry.attempt(&parent, &job.job_type, id.as_str(), job.attempt, Lane::Native);
        attempt.set_attribute(otlp::keys::TENANT, job.tenant.to_string());
        let traced = Arc::new(Traced { telemetry: self.telemetry.clone(), span: attempt });
        let (trace_id, span_id) = (traced.span.trace_id_hex(), traced.span.span_id_hex());
        let log = tracing::info_span!("attempt", attempt = job.attempt, trace_id = %trace_id, span_id = %span_id);
        // A hub of the attempt's own: jobs run at once on the runtime's threads, so the
        // trace context goes on a scope this attempt alone uses, not the thread's.
        let hub = Arc::new(sentry::Hub::new_from_top(sentry::Hub::current()));
        let sentry_trace = traced.span.sentry_context();
        hub.configure_scope(|s| s.set_context("trace", sentry::protocol::Context::Trace(Box::new(sentry_trace))));
        use sentry::SentryFutureExt as _;
        self.run_attempt(e, id, job, traced, taken, slots, cancel).instrument(log).bind_hub(hub).await;
        delivery.end();
    }

    /// Runs a started attempt in its span: waits for a slot, runs the handler, reports the
    /// outcome and acknowledges.
    #[allow(clippy::too_many_arguments)]
    async fn run_attempt(
        self: Arc<Self>,
        e: Entry,
        id: edgejobs_core::JobId,
        job: Job,
        traced: Arc<Traced>,
        taken: OwnedSemaphorePermit,
        slots: Arc<crate::slots::Slots>,
        cancel: CancellationToken,
    ) {
        let (progress, progress_rx) = Progress::channel();
        // Held from the accepted start: a job waiting for a slot keeps its lease too.
        self.held().insert(
            e.entry.clone(),
            Held {
                id: id.clone(),
                attempt: job.attempt,
                lease: job.lease.clone(),
                progress: progress_rx,
                cancel: cancel.clone(),
            },
        );
        // A job cancelled while it waits still goes through its handler, which sees the
        // cancelled token at once; the refused outcome then settles the entry as usual.
        // The highest priority among the jobs this consumer took ahead runs first.
        let priority = job.flow.as_ref().map_or(edgejobs_core::flow::DEFAULT_PRIORITY, |f| f.priority);
        let slot = slots.acquire(priority).await;
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let outcome = self.execute(&job, progress, cancel.clone(), Arc::clone(&traced)).await;
        self.held().remove(&e.entry);
        // Both permits are for taking and running jobs: the report and the ack below hold
        // neither (the task itself is still awaited by the drain).
        drop((slot, taken));
        let took = began.elapsed();
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (event, label) = match outcome {
            Ok(result) => (Event::Complete { attempt: job.attempt, result: Some(result) }, "completed"),
            // The step's report suspended the run in its shard (accepted before the handler
            // heard of it): nothing is left to report, and the entry is done.
            Err(HandlerError::Suspended) => {
                traced.span.outcome("suspended", None, None);
                self.metrics.job(&job.job_type, "suspended", Some(took));
                self.ack(&e.entry).await;
                return;
            }
            Err(err) => {
                let (disposition, label) = match &err {
                    HandlerError::Suspended => (Disposition::Retryable, "retried"),
                    HandlerError::Permanent(_) => (Disposition::Permanent, "dead"),
                    HandlerError::Retryable(_) => (Disposition::Retryable, "retried"),
                    HandlerError::RetryAfter { after, .. } => {
                        (Disposition::RetryAfter(after.as_millis() as u64), "retried")
                    }
                };
                let label =
                    if label == "retried" && job.attempts_in_series() >= job.max_attempts { "dead" } else { label };
                // A job that dies is an error (Sentry gets it when configured); a retry is a warning.
                if label == "dead" {
                    tracing::error!(job = %id, r#type = job.job_type, attempt = job.attempt, error = %err, "job failed for good");
                } else {
                    tracing::warn!(job = %id, r#type = job.job_type, attempt = job.attempt, error = %err, "job attempt failed");
                }
                (Event::Fail { attempt: job.attempt, error: err.to_string(), disposition }, label)
            }
        };
        let error = match &event {
            Event::Fail { error, .. } => Some(error.clone()),
            _ => None,
        };
        match self.edge.report_persistently(&id, &event, job.lease.as_deref()).await {
            Answer::Accepted(after, _) => {
                // A retried attempt's delay is the shard's: when its job runs next.
                let delay = after
                    .filter(|j| j.state == edgejobs_core::JobState::Scheduled)
                    .map(|j| j.run_at.saturating_sub(now_ms()));
                let outcome = if label == "retried" { "failed" } else { label };
                traced.span.outcome(outcome, delay, error.as_deref());
                self.metrics.job(&job.job_type, label, Some(took));
                self.ack(&e.entry).await;
            }
            Answer::Refused(err) => {
                let outcome = if err.code == ErrorCode::LeaseLost { "lease_lost" } else { "cancelled" };
                traced.span.event(otlp::keys::events::LEASE_LOST, []);
                traced.span.outcome(outcome, None, Some(err.code.as_str()));
                self.metrics.job(&job.job_type, "refused", Some(took));
                tracing::info!(job = %id, code = err.code.as_str(), "the edge refused the outcome (cancelled or taken over)");
                self.settle_refused(&e, err.code).await;
            }
            Answer::Unavailable(why) => {
                tracing::error!(job = %id, error = why, "cannot report the outcome; the entry will be reclaimed and run again");
            }
        }
    }

    /// Runs the handler within the job's timeout; cancellation comes from the lease task.
    async fn execute(
        &self,
        job: &Job,
        progress: Progress,
        cancel: CancellationToken,
        trace: Arc<Traced>,
    ) -> Result<Value, HandlerError> {
        let Some(handler) = self.registry.get(&job.job_type) else {
            return Err(HandlerError::Permanent(format!("this consumer has no handler for {:?}", job.job_type)));
        };
        let timeout = Duration::from_millis(job.timeout_ms);
        let live =
            Live::start(self.edge.clone(), job, self.settings.live_linger, cancel.clone(), Arc::clone(&self.metrics));
        let ctx = JobCtx {
            job: job.clone(),
            cancel: cancel.clone(),
            progress,
            deadline: Instant::now() + timeout,
            upstreams: Arc::clone(&self.upstreams),
            metrics: Arc::clone(&self.metrics),
            http: self.http.clone(),
            outbound: std::sync::Arc::clone(&self.settings.outbound),
            payload_keys: self.settings.payload_keys.clone(),
            max_response_bytes: self.settings.max_response_bytes,
            step: crate::handlers::steps::Steps::with_live(job, Some(self.edge.clone()), live.clone()),
            live: live.clone(),
            trace,
        };
        // A type's `rate_group` takes a token from that upstream's bucket before each attempt
        // (the attempt's timeout includes the wait).
        let run = async {
            if let Some(group) = &job.rate_group {
                self.upstreams.acquire(group, &self.metrics, &cancel).await;
            }
            handler.run(&ctx).await
        };
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                cancel.cancel();
                Err(HandlerError::Retryable(format!("timed out after {} ms", job.timeout_ms)))
            }
        };
        // The live output is sent, and answered, before the outcome is reported: a stream's
        // subscribers get every chunk before the final state.
        live.close().await;
        result.and_then(|v| {
            let size = v.to_string().len();
            if size > MAX_RESULT_BYTES {
                Err(HandlerError::Permanent(format!("the result is {size} bytes; the limit is {MAX_RESULT_BYTES}")))
            } else {
                Ok(v)
            }
        })
    }

    /// Every renewal interval, for every job this consumer runs, at once: renew the stream
    /// entries it still owns (one script call) and send the heartbeats (one report request,
    /// through the batcher). A refused heartbeat (cancelled, or the lease lost) cancels that
    /// job's handler. An entry that is no longer ours is counted and logged; the edge's answer
    /// decides whether the job goes on.
    async fn keep_leases(self: Arc<Self>, renew: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            // A heartbeat carries free-form progress only when it changed since the last one
            // went out, so it never overwrites newer live progress (#30) with a stale value.
            let held: Vec<Beat> = self
                .held()
                .iter_mut()
                .map(|(entry, h)| Beat {
                    entry: entry.clone(),
                    id: h.id.clone(),
                    attempt: h.attempt,
                    lease: h.lease.clone(),
                    progress: match h.progress.has_changed() {
                        Ok(true) => h.progress.borrow_and_update().clone(),
                        _ => None,
                    },
                    cancel: h.cancel.clone(),
                })
                .collect();
            if held.is_empty() {
                continue;
            }
            let entries: Vec<String> = held.iter().map(|h| h.entry.clone()).collect();
            let beats = held.iter().map(|h| {
                let beat = Event::Heartbeat { attempt: h.attempt, progress: h.progress.clone() };
                let edge = self.edge.clone();
                async move { edge.report(&h.id, &beat, h.lease.as_deref()).await }
            });
            let (renewed, answers) = tokio::join!(self.stream.renew(&entries), join_all(beats));
            match renewed {
                Ok(flags) => {
                    let ok = flags.iter().filter(|f| **f).count();
                    self.metrics.lease_renewals.fetch_add(ok as u64, Ordering::Relaxed);
                    for (h, owned) in held.iter().zip(flags) {
                        if !owned {
                            self.metrics.renewals_lost.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(job = %h.id, entry = h.entry, "the stream entry is no longer ours");
                        }
                    }
                }
                Err(e) => tracing::warn!(entries = entries.len(), error = %e, "lease renewal failed"),
            }
            for (h, answer) in held.iter().zip(answers) {
                match answer {
                    Answer::Refused(err) => {
                        tracing::info!(job = %h.id, code = err.code.as_str(), "heartbeat refused; stopping the job");
                        h.cancel.cancel();
                    }
                    // The progress it carried goes with the next heartbeat instead.
                    Answer::Unavailable(_) if h.progress.is_some() => {
                        if let Some(held) = self.held().get_mut(&h.entry) {
                            held.progress.mark_changed();
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Samples the stream's length and pending entries for `/metrics`, every few seconds.
    async fn watch_depth(self: Arc<Self>, stop: CancellationToken) {
        let types = self.registry.types();
        for round in 0u64.. {
            let presence = Presence {
                seen_at: now_ms(),
                concurrency: self.settings.concurrency as u64,
                in_flight: self.metrics.in_flight.load(Ordering::Relaxed).max(0) as u64,
                types: types.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let json = serde_json::to_string(&presence).unwrap_or_default();
            match self.stream.depth(Some(&json)).await {
                Ok(d) => self.metrics.set_depth(d.length, d.pending),
                Err(e) => tracing::debug!(error = %e, "cannot read the stream depth"),
            }
            // Now and then, forget consumers gone for a day.
            if round % 720 == 0
                && let Err(e) = self.stream.prune_presence(now_ms(), PRESENCE_FORGET_MS, false).await
            {
                tracing::debug!(error = %e, "cannot prune the consumers' presence");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(PRESENCE_EVERY_MS)) => {}
                _ = stop.cancelled() => break,
            }
        }
        // A consumer that stops says so: it leaves the list at once.
        if let Err(e) = self.stream.prune_presence(now_ms(), PRESENCE_FORGET_MS, true).await {
            tracing::debug!(error = %e, "cannot remove this consumer's presence");
        }
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams 20 tokens and a progress, then completes.
    struct Streams;

    #[async_trait::async_trait]
    impl crate::handlers::Handler for Streams {
        async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
            for i in 0..20 {
                ctx.stream("tokens", format!("t{i} "))?;
            }
            ctx.progress(100.0, Some("done"))?;
            Ok(serde_json::json!({ "ok": true }))
        }
    }

    #[tokio::test]
    async fn the_live_output_is_sent_and_answered_before_the_outcome_is_reported() {
        use clap::Parser as _;
        let fake = crate::testing::FakeEdge::start().await;
        let job = crate::testing::job(7);
        fake.add_job(&job);
        // A linger longer than the job: only the flush before the outcome sends the update.
        let settings = crate::Config::try_parse_from([
            "edgejobs-consumer",
            "--edge-url",
            &fake.url,
            "--consumer-token",
            "ej_consumer_0123456789abcdef",
            "--upstash-url",
            "http://127.0.0.1:9",
            "--upstash-token",
            "tok",
            "--live-linger",
            "10s",
        ])
        .expect("parses")
        .settings()
        .expect("valid");
        let upstash = edgejobs_upstash::Client::new(
            edgejobs_upstash::Credentials { url: settings.upstash_url.clone(), token: settings.upstash_token.clone() },
            ReqwestTransport::new(),
        );
        let stream = Stream { client: upstash, key: "s".into(), group: "g".into(), me: "me".into() };
        let mut registry = Registry::new();
        registry.register("test", Streams);
        let upstreams = Arc::new(Upstreams::new(HashMap::new()));
        let w = Arc::new(Worker::new(settings, stream, fake.edge(), registry, upstreams, reqwest::Client::new()));
        // Acknowledgements are answered here (no Upstash in this test).
        let acked = Arc::new(Mutex::new(Vec::new()));
        let rx = w.acks_rx.lock().expect("lock").take().expect("receiver");
        let log = Arc::clone(&acked);
        tokio::spawn(rx.run(ACK_BATCH, move |entries: Vec<String>| {
            let n = entries.len();
            log.lock().expect("lock").extend(entries);
            async move { vec![true; n] }
        }));
        let entry =
            Entry { entry: "1-0".into(), id: Some(job.id.clone()), attempt: 1, trace: None, previous_owner: None };
        let taken = Arc::new(Semaphore::new(1)).acquire_owned().await.expect("permit");
        let slots = crate::slots::Slots::new(1);
        Arc::clone(&w).run_entry(entry, (taken, slots), CancellationToken::new()).await;

        let events = fake.events();
        let names: Vec<&str> = events.iter().map(|(_, e)| e.name()).collect();
        assert_eq!(names, ["start", "update", "complete"], "the update precedes the outcome");
        let Event::Update { attempt, update } = &events[1].1 else { panic!("{events:?}") };
        assert_eq!(*attempt, 1);
        let text: String = update.chunks.iter().map(|c| c.data.as_str()).collect();
        assert_eq!(text, (0..20).map(|i| format!("t{i} ")).collect::<String>(), "every chunk, in order, in one update");
        assert_eq!(update.progress.as_ref().map(|p| p.percent), Some(100.0));
        assert_eq!(*acked.lock().expect("lock"), ["1-0"]);
        assert_eq!(w.metrics.live_chunks.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn renewal_stays_within_a_third_of_the_edge_lease() {
        let lease = Duration::from_secs(30);
        assert_eq!(renew_interval(None, lease), Ok(Duration::from_secs(10)));
        assert_eq!(renew_interval(Some(Duration::from_secs(4)), lease), Ok(Duration::from_secs(4)));
        let (used, why) = renew_interval(Some(Duration::from_secs(15)), lease).expect_err("too long");
        assert_eq!(used, Duration::from_secs(10));
        assert!(why.contains("NATIVE_LEASE"), "{why}");
    }

    /// The loop's decisions over `minutes` of an idle stream (no work, no wake-ups): how many
    /// takeover looks and reads it makes.
    fn idle(subscribed: bool, minutes: u32) -> (u32, u32) {
        let (poll_min, poll_max, wake_poll) =
            (Duration::from_millis(100), Duration::from_secs(1), Duration::from_secs(30));
        let end = Duration::from_secs(60 * u64::from(minutes));
        let (mut t, mut interval) = (Duration::ZERO, poll_min);
        let (mut last_reclaim, mut last_read): (Option<Duration>, Option<Duration>) = (None, None);
        let (mut reclaims, mut reads) = (0, 0);
        let mut now = true;
        while t < end {
            let clock = |lr: Option<Duration>, ld: Option<Duration>, now| Clock {
                since_reclaim: lr.map(|x| t - x),
                since_read: ld.map(|x| t - x),
                subscribed,
                now,
            };
            let step = next_step(clock(last_reclaim, last_read, now), wake_poll);
            now = false;
            if step.reclaim {
                reclaims += 1;
                last_reclaim = Some(t);
            }
            if step.read {
                reads += 1;
                last_read = Some(t);
            }
            let wait = idle_wait(clock(last_reclaim, last_read, false), interval, wake_poll);
            assert!(!wait.is_zero() || !(step.reclaim || step.read), "an idle loop never spins");
            if !subscribed {
                interval = (interval * 2).min(poll_max);
            }
            t += wait.max(Duration::from_millis(1));
        }
        (reclaims, reads)
    }

    #[test]
    fn an_idle_subscribed_consumer_reads_only_at_the_fallback_and_keeps_its_takeover_cadence() {
        // Without a subscription: the old poll loop, one read per turn, a turn a second.
        let (old_reclaims, old_reads) = idle(false, 10);
        assert!((595..=610).contains(&old_reads), "{old_reads}");
        assert!((595..=610).contains(&old_reclaims), "{old_reclaims}");
        // Subscribed: takeovers keep their once-a-second cadence; reads every 30 s.
        let (reclaims, reads) = idle(true, 10);
        assert!((595..=601).contains(&reclaims), "takeovers keep their cadence: {reclaims}");
        assert!((20..=21).contains(&reads), "reads at the fallback only: {reads}");
        assert!(reclaims + reads < old_reclaims + old_reads, "fewer commands than the poll loop");
    }

    #[test]
    fn a_wake_up_reads_at_once() {
        let c = Clock {
            since_reclaim: Some(Duration::from_millis(10)),
            since_read: Some(Duration::from_millis(10)),
            subscribed: true,
            now: true,
        };
        let wake_poll = Duration::from_secs(30);
        assert_eq!(next_step(c, wake_poll), Step { reclaim: false, read: true });
        assert_eq!(next_step(Clock { now: false, ..c }, wake_poll), Step { reclaim: false, read: false });
        // Idle and subscribed, it sleeps until its next takeover look (a wake-up cuts it short).
        assert_eq!(idle_wait(Clock { now: false, ..c }, Duration::from_secs(1), wake_poll), Duration::from_millis(990));
        // Not subscribed: the poll backoff, and every turn reads.
        let polling = Clock { subscribed: false, now: false, ..c };
        assert_eq!(idle_wait(polling, Duration::from_millis(400), wake_poll), Duration::from_millis(400));
        assert!(next_step(polling, wake_poll).read);
    }

    #[test]
    fn a_lost_lease_never_acknowledges_the_entry() {
        assert_eq!(after_refusal(ErrorCode::LeaseLost), AfterRefusal::Leave);
        assert_eq!(after_refusal(ErrorCode::LeaseMismatch), AfterRefusal::Leave, "another holder's entry");
        assert_eq!(after_refusal(ErrorCode::NotLeased), AfterRefusal::Ack, "nothing runs from it");
        assert_eq!(after_refusal(ErrorCode::LeaseHeld), AfterRefusal::GiveBack);
        for code in
            [ErrorCode::StaleAttempt, ErrorCode::InvalidTransition, ErrorCode::JobCancelled, ErrorCode::JobNotFound]
        {
            assert_eq!(after_refusal(code), AfterRefusal::Ack, "{code:?}");
        }
    }
}
