//! The consumer's metrics, rendered with the shared exposition in `edgejobs-core`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgejobs_core::metrics::{Family, Histogram, Kind, render};

#[derive(Debug, Default)]
struct Maps {
    jobs: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    upstream_wait: BTreeMap<String, f64>,
}

/// Counters and gauges of one consumer process.
#[derive(Debug)]
pub struct Metrics {
    maps: Mutex<Maps>,
    pub in_flight: AtomicI64,
    pub lease_renewals: AtomicU64,
    pub reclaims: AtomicU64,
    /// Renewals of entries another consumer had taken over.
    pub renewals_lost: AtomicU64,
    /// Acknowledgements not done because another consumer owned the entry (or Upstash failed).
    pub acks_skipped: AtomicU64,
    stream_length: AtomicU64,
    stream_pending: AtomicU64,
    /// Wake-up messages received on the stream's wake channel (`wake.rs`).
    pub wakes: AtomicU64,
    /// Reads (XREADGROUP) made because of a wake-up, and all reads.
    pub woken_reads: AtomicU64,
    pub reads: AtomicU64,
    /// Takeover attempts (the reclaim script), found something or not.
    pub reclaim_tries: AtomicU64,
    /// 1 while the wake-up subscription is open.
    pub wake_subscribed: AtomicU64,
    /// Subscriptions requested (each is one Upstash command).
    pub wake_subscribes: AtomicU64,
    /// Live updates (#30) the edge accepted, and the stream chunks they carried.
    pub live_updates: AtomicU64,
    pub live_chunks: AtomicU64,
    started: Instant,
    /// Ms since `started` of the last successful poll; 0 = never.
    last_poll_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            maps: Mutex::default(),
            in_flight: AtomicI64::new(0),
            lease_renewals: AtomicU64::new(0),
            reclaims: AtomicU64::new(0),
            renewals_lost: AtomicU64::new(0),
            acks_skipped: AtomicU64::new(0),
            stream_length: AtomicU64::new(0),
            stream_pending: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            woken_reads: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            reclaim_tries: AtomicU64::new(0),
            wake_subscribed: AtomicU64::new(0),
            wake_subscribes: AtomicU64::new(0),
            live_updates: AtomicU64::new(0),
            live_chunks: AtomicU64::new(0),
            started: Instant::now(),
            last_poll_ms: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a finished job run: `outcome` is completed, retried, dead or refused.
    pub fn job(&self, job_type: &str, outcome: &'static str, took: Option<Duration>) {
        let mut m = self.maps();
        *m.jobs.entry((job_type.to_owned(), outcome)).or_default() += 1;
        if let Some(d) = took {
            m.durations.entry(job_type.to_owned()).or_default().observe(d.as_secs_f64());
        }
    }

    pub fn upstream_wait(&self, upstream: &str, d: Duration) {
        *self.maps().upstream_wait.entry(upstream.to_owned()).or_default() += d.as_secs_f64();
    }

    /// The stream's last sampled length and pending entries.
    pub fn set_depth(&self, length: u64, pending: u64) {
        self.stream_length.store(length, Ordering::Relaxed);
        self.stream_pending.store(pending, Ordering::Relaxed);
    }

    pub fn polled(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_poll_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// Seconds since the last successful poll (since start when none yet).
    pub fn last_poll_age(&self) -> Duration {
        let at = self.last_poll_ms.load(Ordering::Relaxed);
        self.started.elapsed().saturating_sub(Duration::from_millis(at))
    }

    pub fn render(&self, healthy: bool) -> String {
        let m = self.maps();
        let mut jobs = Family::new(
            "edgejobs_consumer_jobs_total",
            "Jobs run by this consumer, by type and outcome.",
            Kind::Counter,
        );
        for ((t, o), n) in &m.jobs {
            jobs.sample(&[("type", t), ("outcome", o)], *n as f64);
        }
        let mut dur =
            Family::new("edgejobs_consumer_job_duration_seconds", "Run time of jobs, by type.", Kind::Histogram);
        for (t, h) in &m.durations {
            dur.histogram(&[("type", t)], h);
        }
        let mut wait = Family::new(
            "edgejobs_consumer_upstream_wait_seconds_total",
            "Time jobs waited for an upstream's rate limit or 429 pause.",
            Kind::Counter,
        );
        for (u, s) in &m.upstream_wait {
            wait.sample(&[("upstream", u)], *s);
        }
        let mut in_flight = Family::new("edgejobs_consumer_in_flight", "Jobs running now.", Kind::Gauge);
        in_flight.sample(&[], self.in_flight.load(Ordering::Relaxed) as f64);
        let mut renewals =
            Family::new("edgejobs_consumer_lease_renewals_total", "Lease renewals of running jobs.", Kind::Counter);
        renewals.sample(&[], self.lease_renewals.load(Ordering::Relaxed) as f64);
        let mut reclaims = Family::new(
            "edgejobs_consumer_reclaims_total",
            "Stream entries taken over from silent consumers.",
            Kind::Counter,
        );
        reclaims.sample(&[], self.reclaims.load(Ordering::Relaxed) as f64);
        let mut up =
            Family::new("edgejobs_consumer_healthy", "1 when the consumer reaches Upstash and polls.", Kind::Gauge);
        up.sample(&[], if healthy { 1.0 } else { 0.0 });
        let mut age = Family::new(
            "edgejobs_consumer_last_poll_age_seconds",
            "Seconds since the last successful poll.",
            Kind::Gauge,
        );
        age.sample(&[], self.last_poll_age().as_secs_f64());
        let counter = |name: &str, help: &str, v: &AtomicU64| {
            let mut f = Family::new(name, help, Kind::Counter);
            f.sample(&[], v.load(Ordering::Relaxed) as f64);
            f
        };
        let gauge = |name: &str, help: &str, v: &AtomicU64| {
            let mut f = Family::new(name, help, Kind::Gauge);
            f.sample(&[], v.load(Ordering::Relaxed) as f64);
            f
        };
        let lost = counter(
            "edgejobs_consumer_lease_renewals_lost_total",
            "Renewals refused because another consumer had taken the entry over.",
            &self.renewals_lost,
        );
        let skipped = counter(
            "edgejobs_consumer_acks_skipped_total",
            "Entries left unacknowledged because another consumer owned them (or Upstash failed).",
            &self.acks_skipped,
        );
        let length = gauge(
            "edgejobs_consumer_stream_length",
            "Entries in the long-job stream (acknowledged entries are deleted), sampled every 5 s.",
            &self.stream_length,
        );
        let pending = gauge(
            "edgejobs_consumer_stream_pending",
            "Entries delivered to a consumer and not yet acknowledged, sampled every 5 s.",
            &self.stream_pending,
        );
        // Every Upstash command this process sent (each command of a pipeline counts, a
        // script call is one), plus the wake-up subscriptions it opened.
        let mut commands = Family::new(
            "edgejobs_consumer_upstash_commands_total",
            "Upstash commands this consumer sent (a pipeline's commands each; a script call as one; each wake-up subscription opened as one).",
            Kind::Counter,
        );
        commands.sample(
            &[],
            (edgejobs_upstash::client::commands_sent() + self.wake_subscribes.load(Ordering::Relaxed)) as f64,
        );
        let wakes = counter(
            "edgejobs_consumer_wakes_total",
            "Wake-up messages received on the stream's wake channel (a hand-off added entries).",
            &self.wakes,
        );
        let woken_reads = counter(
            "edgejobs_consumer_woken_reads_total",
            "Stream reads made because of a wake-up rather than a poll.",
            &self.woken_reads,
        );
        let reads = counter("edgejobs_consumer_stream_reads_total", "Stream reads (XREADGROUP).", &self.reads);
        let tries = counter(
            "edgejobs_consumer_reclaim_tries_total",
            "Looks for idle entries to take over (once a second at most).",
            &self.reclaim_tries,
        );
        let subscribed = gauge(
            "edgejobs_consumer_wake_subscribed",
            "1 while the wake-up subscription is open (0: polling only).",
            &self.wake_subscribed,
        );
        let live_updates = counter(
            "edgejobs_consumer_live_updates_total",
            "Live updates (progress, metadata, stream chunks of a running job, coalesced per linger) the edge accepted.",
            &self.live_updates,
        );
        let live_chunks = counter(
            "edgejobs_consumer_live_chunks_total",
            "Stream chunks (e.g. LLM tokens) carried by the live updates the edge accepted.",
            &self.live_chunks,
        );
        render(&[
            jobs,
            dur,
            wait,
            in_flight,
            renewals,
            reclaims,
            up,
            age,
            lost,
            skipped,
            length,
            pending,
            commands,
            wakes,
            woken_reads,
            reads,
            tries,
            subscribed,
            live_updates,
            live_chunks,
        ])
    }
}
