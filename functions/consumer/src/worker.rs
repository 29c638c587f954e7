//! The consumer loop: take over idle entries, read new ones, run each job under a
//! concurrency limit with its lease renewed, report the outcome and acknowledge it only
//! once the edge has accepted the report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edgejobs_core::machine::{Disposition, Event};
use edgejobs_core::{ErrorCode, Job};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::edge::{Answer, Edge};
use crate::handlers::{HandlerError, JobCtx, Progress, Registry};
use crate::metrics::Metrics;
use crate::stream::{Entry, Stream};
use crate::upstreams::Upstreams;

/// Largest serialized result kept (the edge refuses larger reports).
pub const MAX_RESULT_BYTES: usize = 60 * 1024;

/// Everything a running consumer shares between its tasks.
#[derive(Debug)]
pub struct Worker {
    pub settings: Settings,
    pub stream: Stream,
    pub edge: Edge,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub upstreams: Arc<Upstreams>,
    /// The guarded client handlers use (requests made for a user).
    pub http: reqwest::Client,
}

impl Worker {
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
        // Jobs get their own token: stopping the poll loop must not interrupt them.
        let jobs_stop = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks = JoinSet::new();
        let mut interval = self.settings.poll_min;
        while !stop.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits().min(self.settings.batch);
            if free == 0 {
                tokio::select! {
                    _ = tasks.join_next() => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            let found = match self.poll(free).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %e, "polling the stream failed");
                    Vec::new()
                }
            };
            if found.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.cancelled() => break,
                }
                interval = (interval * 2).min(self.settings.poll_max);
                continue;
            }
            interval = self.settings.poll_min;
            for (entry, reclaimed) in found {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { break };
                let me = Arc::clone(&self);
                let cancel = jobs_stop.child_token();
                tasks.spawn(async move { me.run_entry(entry, reclaimed, permit, cancel).await });
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
        drained
    }

    /// Idle entries taken over first, then new ones; `true` marks a takeover.
    async fn poll(&self, n: usize) -> Result<Vec<(Entry, bool)>, edgejobs_upstash::Error> {
        let lease_ms = self.settings.lease_timeout.as_millis() as u64;
        let mut found: Vec<(Entry, bool)> =
            self.stream.reclaim(lease_ms, n).await?.into_iter().map(|e| (e, true)).collect();
        if !found.is_empty() {
            self.metrics.reclaims.fetch_add(found.len() as u64, Ordering::Relaxed);
            tracing::info!(count = found.len(), "took over idle stream entries");
        }
        if found.len() < n {
            found.extend(self.stream.read(n - found.len()).await?.into_iter().map(|e| (e, false)));
        }
        self.metrics.polled();
        Ok(found)
    }

    async fn ack(&self, entry: &str) {
        if let Err(e) = self.stream.ack(entry).await {
            tracing::warn!(entry, error = %e, "XACK failed; the entry will be reclaimed and refused");
        }
    }

    async fn run_entry(
        self: Arc<Self>,
        e: Entry,
        reclaimed: bool,
        _permit: OwnedSemaphorePermit,
        cancel: CancellationToken,
    ) {
        let Some(id) = e.id.clone() else {
            self.ack(&e.entry).await; // a deleted or foreign entry
            return;
        };
        // The edge takes the attempt over when the holder has been silent this long: the
        // lease timeout less half a renewal interval, so the check that follows a Redis
        // takeover (idle >= lease timeout) is not defeated by a heartbeat sent just after
        // the holder's last renewal.
        let lease_ms = (self.settings.lease_timeout - self.settings.lease_renew / 2).as_millis() as u64;
        let start = if reclaimed {
            Event::Reclaim { attempt: e.attempt, lease_ms }
        } else {
            Event::Start { attempt: e.attempt }
        };
        let job = match self.edge.report(&id, &start).await {
            Answer::Accepted(job) => *job,
            Answer::Refused(err) => {
                // A running attempt that still holds its lease stays with its holder.
                if err.code != ErrorCode::InvalidTransition || !err.message.contains("holds its lease") {
                    self.ack(&e.entry).await;
                }
                self.metrics.job("unknown", "refused", None);
                tracing::info!(job = %id, code = err.code.as_str(), "the edge refused the start; not running it");
                return;
            }
            Answer::Unavailable(why) => {
                tracing::warn!(job = %id, error = why, "cannot report the start; the entry will be retried after its lease");
                return;
            }
        };
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let (progress, progress_rx) = Progress::channel();
        let lease =
            tokio::spawn(Arc::clone(&self).keep_lease(e.entry.clone(), job.clone(), progress_rx, cancel.clone()));
        let outcome = self.execute(&job, progress, cancel.clone()).await;
        lease.abort();
        let took = began.elapsed();
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        let (event, label) = match outcome {
            Ok(result) => (Event::Complete { attempt: job.attempt, result: Some(result) }, "completed"),
            Err(err) => {
                let (disposition, label) = match &err {
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
        match self.edge.report_persistently(&id, &event).await {
            Answer::Accepted(_) => {
                self.metrics.job(&job.job_type, label, Some(took));
                self.ack(&e.entry).await;
            }
            Answer::Refused(err) => {
                self.metrics.job(&job.job_type, "refused", Some(took));
                tracing::info!(job = %id, code = err.code.as_str(), "the edge refused the outcome (cancelled or taken over)");
                self.ack(&e.entry).await;
            }
            Answer::Unavailable(why) => {
                tracing::error!(job = %id, error = why, "cannot report the outcome; the entry will be reclaimed and run again");
            }
        }
    }

    /// Runs the handler within the job's timeout; cancellation comes from the lease task.
    async fn execute(&self, job: &Job, progress: Progress, cancel: CancellationToken) -> Result<Value, HandlerError> {
        let Some(handler) = self.registry.get(&job.job_type) else {
            return Err(HandlerError::Permanent(format!("this consumer has no handler for {:?}", job.job_type)));
        };
        let timeout = Duration::from_millis(job.timeout_ms);
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
        };
        let result = match tokio::time::timeout(timeout, handler.run(&ctx)).await {
            Ok(r) => r,
            Err(_) => {
                cancel.cancel();
                Err(HandlerError::Retryable(format!("timed out after {} ms", job.timeout_ms)))
            }
        };
        result.and_then(|v| {
            let size = v.to_string().len();
            if size > MAX_RESULT_BYTES {
                Err(HandlerError::Permanent(format!("the result is {size} bytes; the limit is {MAX_RESULT_BYTES}")))
            } else {
                Ok(v)
            }
        })
    }

    /// Every `lease_renew`: renew the stream lease and send a heartbeat (with progress). A
    /// refused heartbeat (cancelled, or taken over) cancels the running handler.
    async fn keep_lease(
        self: Arc<Self>,
        entry: String,
        job: Job,
        progress: tokio::sync::watch::Receiver<Option<Value>>,
        cancel: CancellationToken,
    ) {
        loop {
            tokio::time::sleep(self.settings.lease_renew).await;
            match self.stream.renew(&entry).await {
                Ok(()) => {
                    self.metrics.lease_renewals.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(job = %job.id, error = %e, "lease renewal failed"),
            }
            let beat = Event::Heartbeat { attempt: job.attempt, progress: progress.borrow().clone() };
            if let Answer::Refused(err) = self.edge.report(&job.id, &beat).await {
                tracing::info!(job = %job.id, code = err.code.as_str(), "heartbeat refused; stopping the job");
                cancel.cancel();
                return;
            }
        }
    }
}
