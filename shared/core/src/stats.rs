//! Edge metrics as data: what each state change adds to the counters (computed from the
//! job before and after, so it is committed in the same write as the change), and the
//! merge of every shard's numbers into Prometheus families at scrape time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobState};
use crate::metrics::{Family, Histogram, Kind};
use crate::workflow::{Step, StepKind, StepState};

/// One change to a counter or histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Delta {
    /// Add `n` to counter `name` with these labels.
    Count { name: Metric, labels: Vec<(String, String)>, n: f64 },
    /// Observe `secs` in histogram `name`.
    Observe { name: Metric, labels: Vec<(String, String)>, secs: f64 },
}

impl Delta {
    /// Adds `n` to counter `name` with these labels.
    pub fn count(name: Metric, labels: &[(&str, &str)], n: f64) -> Delta {
        Delta::Count { name, labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), n }
    }
}

/// Deltas merged for one write: counters summed per series, observations grouped per
/// histogram series, so a batch of 100 transitions costs a few row writes, not hundreds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    pub counters: BTreeMap<(Metric, Labels), f64>,
    pub observations: BTreeMap<(Metric, Labels), Vec<f64>>,
}

impl Merged {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.observations.is_empty()
    }

    /// Adds one delta.
    pub fn add(&mut self, d: &Delta) {
        match d {
            Delta::Count { name, labels, n } => *self.counters.entry((*name, labels.clone())).or_default() += n,
            Delta::Observe { name, labels, secs } => {
                self.observations.entry((*name, labels.clone())).or_default().push(*secs)
            }
        }
    }

    /// The merged deltas, one per counter series (observations kept one by one).
    pub fn into_deltas(self) -> Vec<Delta> {
        let counts = self.counters.into_iter().map(|((name, labels), n)| Delta::Count { name, labels, n });
        let observed = self.observations.into_iter().flat_map(|((name, labels), secs)| {
            secs.into_iter().map(move |secs| Delta::Observe { name, labels: labels.clone(), secs })
        });
        counts.chain(observed).collect()
    }
}

/// Merges deltas by series.
pub fn merge<'a>(deltas: impl IntoIterator<Item = &'a Delta>) -> Merged {
    let mut m = Merged::default();
    for d in deltas {
        m.add(d);
    }
    m
}

fn count(name: Metric, labels: &[(&str, &str)]) -> Delta {
    Delta::count(name, labels, 1.0)
}

/// What a new job adds.
pub fn created(job: &Job) -> Vec<Delta> {
    let mut out = vec![count(Metric::JobsEnqueuedTotal, &[("type", &job.job_type), ("tenant", job.tenant.as_str())])];
    if !job.state.is_finished() {
        out.push(pending(job, 1.0));
    }
    out
}

/// A job of `job`'s tenant became pending (`+1`) or final (`-1`).
fn pending(job: &Job, n: f64) -> Delta {
    Delta::count(Metric::TenantPendingJobs, &[("tenant", job.tenant.as_str())], n)
}

/// What the sweep's re-send of a job adds.
pub fn resent() -> Delta {
    count(Metric::SweepResentTotal, &[])
}

/// What a committed transition from `before` to `after` at `now` adds.
pub fn transition(before: &Job, after: &Job, now: u64) -> Vec<Delta> {
    let t = after.job_type.as_str();
    let lane = after.lane.as_str();
    // Tenants are bounded (the configured ones), so the per-job counters carry them.
    let tenant = after.tenant.as_str();
    let mut out = Vec::new();
    // A workflow run suspended by a sleep, a wait or a step retry (#29): its attempt ended
    // without counting against `max_attempts`, so it is neither a failed attempt nor a retry
    // (the failure-rate alert would otherwise fire on runs that merely sleep).
    let suspended = is_suspension(before, after);
    // An attempt ended: completed, failed (retried or dead), or lost its lease (a takeover
    // bumps the attempt number while the job stays active).
    let attempt_ended = before.state == JobState::Active
        && (after.state != JobState::Active || after.attempt != before.attempt)
        && after.state != JobState::Cancelled
        && !suspended;
    if attempt_ended {
        let outcome = if after.state == JobState::Completed { "completed" } else { "failed" };
        out.push(count(
            Metric::AttemptsTotal,
            &[("type", t), ("lane", lane), ("outcome", outcome), ("tenant", tenant)],
        ));
        if let Some(started) = before.started_at {
            out.push(Delta::Observe {
                name: Metric::AttemptDurationSeconds,
                labels: vec![("type".into(), t.into()), ("lane".into(), lane.into())],
                secs: now.saturating_sub(started) as f64 / 1000.0,
            });
        }
    }
    match (before.state.is_finished(), after.state.is_finished()) {
        (false, true) => out.push(pending(after, -1.0)),
        (true, false) => out.push(pending(after, 1.0)),
        _ => {}
    }
    if before.state != after.state || before.attempt != after.attempt {
        match after.state {
            JobState::Completed => out.push(count(Metric::JobsCompletedTotal, &[("type", t), ("tenant", tenant)])),
            JobState::Dead => out.push(count(Metric::JobsDeadTotal, &[("type", t), ("tenant", tenant)])),
            JobState::Cancelled => out.push(count(Metric::JobsCancelledTotal, &[("type", t), ("tenant", tenant)])),
            JobState::Scheduled | JobState::Queued if before.state == JobState::Active && !suspended => {
                out.push(count(Metric::JobsRetriedTotal, &[("type", t)]))
            }
            JobState::Active if before.state == JobState::Active => {
                out.push(count(Metric::JobsRetriedTotal, &[("type", t)]))
            }
            _ => {}
        }
    }
    if !before.steps.is_empty() || !after.steps.is_empty() {
        workflow(before, after, suspended, &mut out);
    }
    out
}

/// Whether the transition from `before` to `after` suspended a workflow run: the running
/// attempt ended as a free one and the run waits, `scheduled` (see `workflow::record`).
fn is_suspension(before: &Job, after: &Job) -> bool {
    before.state == JobState::Active && after.state == JobState::Scheduled && after.free_attempts > before.free_attempts
}

/// The steps of `after` with their version in `before` (`None`: new in this transition). A
/// run only appends steps, so a step keeps its position; a name that differs there is taken
/// as new.
fn steps_changed<'a>(before: &'a Job, after: &'a Job) -> impl Iterator<Item = (Option<&'a Step>, &'a Step)> {
    after
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (before.steps.get(i).filter(|p| p.name == s.name), s))
        .filter(|(p, s)| p.is_none_or(|p| p.state != s.state || p.attempts != s.attempts || p.ended_at != s.ended_at))
}

/// What a transition adds to the workflow counters (#29). Labels are fixed sets: a step's
/// kind and state, a suspension's reason, a resume's cause (never a step or event name).
fn workflow(before: &Job, after: &Job, suspended: bool, out: &mut Vec<Delta>) {
    let mut reason = None;
    let mut by = "alarm";
    for (prev, step) in steps_changed(before, after) {
        let retried = step.state == StepState::Retrying && step.attempts > prev.map_or(0, |p| p.attempts);
        let reached = step.state.is_recorded() && prev.is_none_or(|p| p.state != step.state);
        if retried || reached {
            out.push(count(
                Metric::WorkflowStepsTotal,
                &[("kind", step.kind.as_str()), ("state", step.state.as_str())],
            ));
        }
        let was = prev.map(|p| p.state);
        match step.state {
            StepState::Sleeping if was != Some(StepState::Sleeping) => reason = Some("sleep"),
            StepState::Waiting if was != Some(StepState::Waiting) => reason = Some("wait"),
            StepState::Retrying if retried => reason = Some("retry"),
            // A step waiting for children completes (or fails) when the last one ends.
            StepState::Completed | StepState::Failed
                if was == Some(StepState::Waiting) && matches!(step.kind, StepKind::Invoke | StepKind::FanOut) =>
            {
                by = "children"
            }
            StepState::Completed if was == Some(StepState::Waiting) => by = "event",
            StepState::TimedOut if was == Some(StepState::Waiting) && by != "event" => by = "timeout",
            _ => {}
        }
    }
    if suspended && let Some(reason) = reason {
        out.push(count(Metric::WorkflowSuspensionsTotal, &[("reason", reason)]));
    }
    // A suspended run comes back: the last attempt record says it ended by suspending, so
    // a run waiting out an ordinary retry of its job is not counted.
    let was_suspended = before.attempts.last().is_some_and(|a| a.outcome == "suspended");
    if before.state == JobState::Scheduled && after.state == JobState::Queued && was_suspended {
        out.push(count(Metric::WorkflowResumesTotal, &[("by", by)]));
    }
}

/// What an event send adds (#29), counted by the shard that indexes the event's name:
/// `duplicate` when its id was seen before (nothing new is resumed).
pub fn event_sent(duplicate: bool) -> Delta {
    count(Metric::EventsTotal, &[("outcome", if duplicate { "duplicate" } else { "sent" })])
}

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

/// How many jobs of one state, type and tenant a shard holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCount {
    pub state: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub tenant: String,
    pub n: u64,
}

/// A per-minute series as one tenant's share of it (`enqueued@acme`).
pub fn tenant_series(series: &str, tenant: &str) -> String {
    format!("{series}@{tenant}")
}

/// What one shard (or the stats object) reports at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardStats {
    pub counters: Vec<(String, Labels, f64)>,
    pub histograms: Vec<(String, Labels, Histogram)>,
    /// The jobs stored now, by state, type and tenant.
    pub jobs: Vec<JobCount>,
    /// Creation time of the oldest queued job, if any.
    pub oldest_queued_ms: Option<u64>,
    /// The same per tenant that has queued jobs.
    #[serde(default)]
    pub oldest_queued_by_tenant: Vec<(String, u64)>,
    /// Gauges kept by the stats object (e.g. the last backup), by name.
    #[serde(default)]
    pub gauges: Vec<(String, f64)>,
    /// Which shard answered (`None`: the stats object).
    #[serde(default)]
    pub shard: Option<u16>,
    /// (minute start in ms, series, count) for the last [`MINUTES_KEPT`] minutes.
    #[serde(default)]
    pub minutes: Vec<(u64, String, f64)>,
    /// Schedules held: (active, paused), and the names of those overdue.
    #[serde(default)]
    pub schedules: (u64, u64),
    #[serde(default)]
    pub schedules_overdue: Vec<String>,
}

/// The per-minute series a shard keeps for the dashboard's charts.
pub const MINUTE_SERIES: &[&str] = &["enqueued", "completed", "failed", "dead"];

/// How many minutes of those series a shard keeps (and `GET /v1/stats` shows).
pub const MINUTES_KEPT: u64 = 60;

/// The per-minute series a counter increment also counts in, if any: jobs created,
/// completed and dead, and attempts that failed (retried or not).
pub fn minute_series(name: Metric, labels: &Labels) -> Option<&'static str> {
    match name {
        Metric::JobsEnqueuedTotal => Some("enqueued"),
        Metric::JobsCompletedTotal => Some("completed"),
        Metric::JobsDeadTotal => Some("dead"),
        Metric::AttemptsTotal if labels.iter().any(|(k, v)| k == "outcome" && v == "failed") => Some("failed"),
        _ => None,
    }
}

/// Sums shards' minute rows into one point per minute of the window that ends with the
/// minute of `now_ms`: (minute start, count per [`MINUTE_SERIES`] in that order), oldest
/// first, minutes without rows as zeros.
/// `tenant`: only that tenant's share of each series (see [`tenant_series`]); `None`: the
/// whole series.
pub fn minute_points(rows: &[(u64, String, f64)], now_ms: u64, tenant: Option<&str>) -> Vec<(u64, [u64; 4])> {
    let last = now_ms - now_ms % 60_000;
    let first = last.saturating_sub((MINUTES_KEPT - 1) * 60_000);
    let mut points: Vec<(u64, [u64; 4])> = (0..MINUTES_KEPT).map(|i| (first + i * 60_000, [0; 4])).collect();
    let wanted: Vec<String> =
        MINUTE_SERIES.iter().map(|s| tenant.map_or_else(|| (*s).to_owned(), |t| tenant_series(s, t))).collect();
    for (minute, series, n) in rows {
        let (Some(slot), Some(k)) =
            (points.iter_mut().find(|(m, _)| m == minute), wanted.iter().position(|s| s == series))
        else {
            continue;
        };
        slot.1[k] += *n as u64;
    }
    points
}

/// What a registered metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A counter the shards keep and the edge exports (a family even when empty).
    Counter,
    /// A histogram the shards keep and the edge exports.
    Histogram,
    /// A gauge the stats object keeps and the edge exports.
    Gauge,
    /// A gauge the stats object keeps for the edge's own use (not exported).
    Internal,
    /// A level the shards keep as a sum of ups and downs in their counters table (so it
    /// moves in the same transaction as the jobs it counts), exported as a gauge summed
    /// over the shards.
    Level,
    /// A gauge the edge computes at scrape time from the shards' flow lists (#28), not
    /// stored: the busiest keys only, so its labels stay bounded.
    Scrape,
}

macro_rules! registry {
    ($($variant:ident $name:literal $role:ident $help:literal;)*) => {
        /// Every metric the edge writes, with its name, role and help: the registry. A delta,
        /// a counter and a stored gauge take a `Metric`, so a name not here cannot be
        /// written; one arriving on the wire does not parse, and the call carrying it is
        /// refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Metric {
            $(#[serde(rename = $name)] $variant,)*
        }

        impl Metric {
            /// Every metric, in the order `/metrics` prints their families.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            pub const fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            pub const fn help(self) -> &'static str {
                match self { $(Metric::$variant => $help,)* }
            }

            pub const fn role(self) -> Role {
                match self { $(Metric::$variant => Role::$role,)* }
            }
        }

        impl std::fmt::Display for Metric {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

registry! {
    AttemptsTotal "edgejobs_attempts_total" Counter "Attempts that ended, by type, lane and outcome (completed or failed).";
    JobsEnqueuedTotal "edgejobs_jobs_enqueued_total" Counter "Jobs created, by type.";
    TenantPendingJobs "edgejobs_tenant_pending_jobs" Level "Jobs not yet final (queued, scheduled or active), by tenant: what TENANT_MAX_PENDING caps.";
    JobsCompletedTotal "edgejobs_jobs_completed_total" Counter "Jobs completed, by type.";
    JobsRetriedTotal "edgejobs_jobs_retried_total" Counter "Failed attempts scheduled for a retry, by type.";
    JobsDeadTotal "edgejobs_jobs_dead_total" Counter "Jobs that reached the dead-letter set, by type.";
    JobsCancelledTotal "edgejobs_jobs_cancelled_total" Counter "Jobs cancelled, by type.";
    EnqueueRequestsTotal "edgejobs_enqueue_requests_total" Counter "Enqueue requests (POST /v1/jobs and /v1/jobs/batch), by HTTP status.";
    RateLimitedTotal "edgejobs_rate_limited_total" Counter "Enqueue requests refused by the rate limit.";
    RateLimiterErrorsTotal "edgejobs_rate_limiter_errors_total" Counter "Rate-limit checks that could not reach Upstash.";
    SweepResentTotal "edgejobs_sweep_resent_total" Counter "Jobs the sweep sent to their queue again.";
    RetentionDeletedTotal "edgejobs_retention_deleted_total" Counter "Finished jobs deleted by the retention policy.";
    RetentionArchivedTotal "edgejobs_retention_archived_total" Counter "Finished jobs archived to R2 before deletion.";
    WorkerInvocationsTotal "edgejobs_worker_invocations_total" Counter "Invocations of the Worker, by kind (fetch, queue, scheduled) and route.";
    DoRequestsTotal "edgejobs_do_requests_total" Counter "Requests to Durable Objects (alarms included), by operation.";
    DoRowsWrittenTotal "edgejobs_do_rows_written_total" Counter "SQLite rows written by the Durable Objects (what Cloudflare bills).";
    DoRowsReadTotal "edgejobs_do_rows_read_total" Counter "SQLite rows read by the Durable Objects (what Cloudflare bills).";
    QueueMessagesSentTotal "edgejobs_queue_messages_sent_total" Counter "Messages sent to the jobs queue.";
    QueueJobsSentTotal "edgejobs_queue_jobs_sent_total" Counter "Job references sent to the jobs queue (a message carries up to 100).";
    QueueSendFailuresTotal "edgejobs_queue_send_failures_total" Counter "Messages whose send to the jobs queue failed (the sweep re-sends their jobs).";
    QueueMessagesReceivedTotal "edgejobs_queue_messages_received_total" Counter "Messages the queue consumer received, by queue.";
    UpstashCommandsTotal "edgejobs_upstash_commands_total" Counter "Upstash commands the edge sent.";
    CronFailuresTotal "edgejobs_cron_failures_total" Counter "Scheduled steps that failed, by step (backup, sweep, job_retention, backup_retention).";
    ScheduleRunsTotal "edgejobs_schedule_runs_total" Counter "Runs created by schedules, by schedule and kind (tick, catch_up, trigger).";
    ScheduleSkipsTotal "edgejobs_schedule_skips_total" Counter "Schedule ticks not run, by schedule and reason (overlap, missed).";
    WorkflowStepsTotal "edgejobs_workflow_steps_total" Counter "Workflow steps that reached a recorded state (completed, failed, timed_out) or failed with attempts left (retrying), by kind (run, sleep, wait) and state.";
    WorkflowSuspensionsTotal "edgejobs_workflow_suspensions_total" Counter "Workflow runs suspended without spending an attempt, by reason (sleep, wait, retry).";
    WorkflowResumesTotal "edgejobs_workflow_resumes_total" Counter "Suspended workflow runs queued again, by cause (event, children: an invoke's or a fan-out's last child ended, timeout: a wait's, alarm: a sleep's end or a step's retry time).";
    EventsTotal "edgejobs_events_total" Counter "Events sent (POST /v1/events), by outcome (sent, duplicate: an id seen before).";
    SpansExportedTotal "edgejobs_spans_exported_total" Counter "Spans the edge exported to its OTLP endpoint (#32).";
    SpansDroppedTotal "edgejobs_spans_dropped_total" Counter "Spans the edge recorded but did not export, by reason (refused: the collector answered an error; unreachable: no answer in time; overflow: more than an isolate buffers).";
    DeliveriesRefusedTotal "edgejobs_deliveries_refused_total" Counter "Queue deliveries the shard refused, by lane: a duplicate, a stale attempt, or a job cancelled meanwhile.";
    AttemptDurationSeconds "edgejobs_attempt_duration_seconds" Histogram "Duration of attempts, by type and lane.";
    ScheduleLatenessSeconds "edgejobs_schedule_lateness_seconds" Histogram "How late a schedule's run was created after its tick.";
    BackupLastSuccessTimestampSeconds "edgejobs_backup_last_success_timestamp_seconds" Gauge "Unix time of the newest valid backup.";
    BackupLastSizeBytes "edgejobs_backup_last_size_bytes" Gauge "Size of the newest valid backup.";
    SweepLastRunTimestampSeconds "edgejobs_sweep_last_run_timestamp_seconds" Gauge "Unix time the sweep last ran.";
    DeploymentFirstSeenTimestampSeconds "edgejobs_deployment_first_seen_timestamp_seconds" Internal "When the edge first answered /health (the grace before a backup is due).";
    FlowWaiting "edgejobs_flow_waiting" Scrape "Jobs waiting in the 10 busiest flow lists across the shards, by kind (concurrency, rate, paused, paused_type), tenant and key.";
    FlowRunning "edgejobs_flow_running" Scrape "Jobs holding a slot of the 10 busiest concurrency keys across the shards, by tenant and key.";
    FlowWaitingJobs "edgejobs_flow_waiting_jobs" Scrape "Jobs waiting in flow lists (for a concurrency slot, a rate or a resume), every shard's.";
}

/// The registered metrics of one role, in registry order.
pub fn registered(role: Role) -> impl Iterator<Item = Metric> {
    Metric::ALL.iter().copied().filter(move |m| m.role() == role)
}

/// Merges every shard's numbers into the edge's families. `health_status` is 0 healthy,
/// 1 degraded, 2 unhealthy.
pub fn families(all: &[ShardStats], now: u64, health_status: u8) -> Vec<Family> {
    let mut counters: BTreeMap<(String, Vec<(String, String)>), f64> = BTreeMap::new();
    let mut hists: BTreeMap<(String, Vec<(String, String)>), Histogram> = BTreeMap::new();
    let mut jobs: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut gauges: BTreeMap<String, f64> = BTreeMap::new();
    let mut oldest: Option<u64> = None;
    for s in all {
        for (n, l, v) in &s.counters {
            *counters.entry((n.clone(), l.clone())).or_default() += v;
        }
        for (n, l, h) in &s.histograms {
            hists.entry((n.clone(), l.clone())).or_default().merge(h);
        }
        for c in &s.jobs {
            *jobs.entry((c.state.clone(), c.job_type.clone(), c.tenant.clone())).or_default() += c.n;
        }
        for (n, v) in &s.gauges {
            gauges.insert(n.clone(), *v);
        }
        oldest = match (oldest, s.oldest_queued_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let mut out = Vec::new();
    // Counters and levels are both sums over the shards' counters table; a level is shown
    // as a gauge (it goes down).
    let summed =
        registered(Role::Counter).map(|m| (m, Kind::Counter)).chain(registered(Role::Level).map(|m| (m, Kind::Gauge)));
    for (m, kind) in summed {
        let mut f = Family::new(m.name(), m.help(), kind);
        for ((n, l), v) in &counters {
            if n == m.name() {
                let labels: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                f.sample(&labels, *v);
            }
        }
        out.push(f);
    }
    for m in registered(Role::Histogram) {
        let mut h = Family::new(m.name(), m.help(), Kind::Histogram);
        for ((n, l), hist) in &hists {
            if n == m.name() {
                let labels: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                h.histogram(&labels, hist);
            }
        }
        out.push(h);
    }
    let (mut active, mut paused, mut overdue) = (0u64, 0u64, 0u64);
    for s in all {
        active += s.schedules.0;
        paused += s.schedules.1;
        overdue += s.schedules_overdue.len() as u64;
    }
    let mut sc = Family::new("edgejobs_schedules", "Schedules defined, by state (active, paused).", Kind::Gauge);
    sc.sample(&[("state", "active")], active as f64).sample(&[("state", "paused")], paused as f64);
    out.push(sc);
    let mut od = Family::new(
        "edgejobs_schedules_overdue",
        "Active schedules whose next tick is more than two minutes past (a lost alarm or a failing shard).",
        Kind::Gauge,
    );
    od.sample(&[], overdue as f64);
    out.push(od);
    let mut g = Family::new("edgejobs_jobs", "Jobs stored now, by state, type and tenant.", Kind::Gauge);
    for ((st, t, tenant), c) in &jobs {
        g.sample(&[("state", st), ("type", t), ("tenant", tenant)], *c as f64);
    }
    out.push(g);
    let mut age = Family::new(
        "edgejobs_oldest_queued_job_age_seconds",
        "Age of the oldest queued job (0 when none).",
        Kind::Gauge,
    );
    age.sample(&[], oldest.map_or(0.0, |o| now.saturating_sub(o) as f64 / 1000.0));
    out.push(age);
    for m in registered(Role::Gauge) {
        let mut f = Family::new(m.name(), m.help(), Kind::Gauge);
        if let Some(v) = gauges.get(m.name()) {
            f.sample(&[], *v);
        }
        out.push(f);
    }
    let mut per_shard =
        Family::new("edgejobs_shard_jobs", "Jobs stored now in each shard (how evenly work spreads).", Kind::Gauge);
    for s in all {
        if let Some(shard) = s.shard {
            per_shard.sample(&[("shard", &shard.to_string())], s.jobs.iter().map(|c| c.n).sum::<u64>() as f64);
        }
    }
    out.push(per_shard);
    let mut hs =
        Family::new("edgejobs_health_status", "Health of the edge: 0 healthy, 1 degraded, 2 unhealthy.", Kind::Gauge);
    hs.sample(&[], health_status as f64);
    out.push(hs);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn minute_series_and_points() {
        use super::{MINUTES_KEPT, minute_points, minute_series};
        let l = |o: &str| vec![("type".to_owned(), "noop".to_owned()), ("outcome".to_owned(), o.to_owned())];
        assert_eq!(minute_series(Metric::AttemptsTotal, &l("failed")), Some("failed"));
        assert_eq!(minute_series(Metric::AttemptsTotal, &l("completed")), None);
        assert_eq!(minute_series(Metric::JobsCompletedTotal, &vec![]), Some("completed"));
        assert_eq!(minute_series(Metric::JobsRetriedTotal, &vec![]), None);
        let now = 10 * 3_600_000 + 90_500; // 10:01:30.5
        let rows = vec![
            (10 * 3_600_000 + 60_000, "completed".to_owned(), 3.0),
            (10 * 3_600_000 + 60_000, "completed".to_owned(), 2.0), // another shard
            (10 * 3_600_000, "dead".to_owned(), 1.0),
            (9 * 3_600_000, "completed".to_owned(), 7.0), // older than the window
            (10 * 3_600_000, "bogus".to_owned(), 7.0),
        ];
        let p = minute_points(&rows, now, None);
        assert_eq!(p.len() as u64, MINUTES_KEPT);
        assert_eq!(p[59], (10 * 3_600_000 + 60_000, [0, 5, 0, 0]));
        assert_eq!(p[58], (10 * 3_600_000, [0, 0, 0, 1]));
        assert_eq!(p[0].0, 10 * 3_600_000 + 60_000 - 59 * 60_000);
        assert_eq!(p.iter().map(|(_, c)| c.iter().sum::<u64>()).sum::<u64>(), 6);
        // A tenant sees its own share only; the whole series ignores the shares.
        let mut rows = rows;
        rows.push((10 * 3_600_000 + 60_000, tenant_series("completed", "acme"), 2.0));
        rows.push((10 * 3_600_000 + 60_000, tenant_series("completed", "globex"), 3.0));
        assert_eq!(minute_points(&rows, now, Some("acme"))[59].1, [0, 2, 0, 0]);
        assert_eq!(minute_points(&rows, now, None)[59].1, [0, 5, 0, 0]);
    }

    use super::*;
    use crate::id::JobId;
    use crate::machine::{Disposition, Event, apply};
    use crate::spec::parse_spec;
    use serde_json::json;

    fn job() -> Job {
        parse_spec(&json!({ "type": "noop", "max_attempts": 2 }), 1000)
            .expect("valid")
            .into_job(JobId::new(0, 1000, 1), 1000)
            .0
    }

    /// The registry is the only way to name a metric: every name is unique, documented and
    /// ours, and a delta naming anything else does not even parse off the wire.
    #[test]
    fn only_registered_metrics_can_be_written() {
        let names: std::collections::BTreeSet<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len(), "a name is registered twice");
        for m in Metric::ALL {
            assert!(m.name().starts_with("edgejobs_") && !m.help().is_empty(), "{m:?}");
            let wire = serde_json::to_string(&Delta::count(*m, &[], 1.0)).unwrap_or_default();
            assert!(wire.contains(&format!("\"{}\"", m.name())), "{wire}");
        }
        let forged = r#"{"Count":{"name":"edgejobs_made_up_total","labels":[],"n":1.0}}"#;
        assert!(serde_json::from_str::<Delta>(forged).is_err(), "an unregistered name parsed");
        let known = r#"{"Count":{"name":"edgejobs_jobs_dead_total","labels":[],"n":1.0}}"#;
        assert_eq!(serde_json::from_str::<Delta>(known).ok(), Some(Delta::count(Metric::JobsDeadTotal, &[], 1.0)));
    }

    fn names(d: &[Delta]) -> Vec<String> {
        d.iter()
            .map(|d| match d {
                Delta::Count { name, labels, .. } => format!("{name}{labels:?}"),
                Delta::Observe { name, .. } => name.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_retry_then_a_death_is_counted_once_each() {
        let j0 = job();
        let j1 = apply(&j0, Event::Start { attempt: 1 }, 2000, 0.5).expect("start").job;
        assert!(transition(&j0, &j1, 2000).is_empty());
        let fail = |a| Event::Fail { attempt: a, error: "x".into(), disposition: Disposition::Retryable };
        let j2 = apply(&j1, fail(1), 3500, 0.5).expect("fail").job;
        let d = transition(&j1, &j2, 3500);
        assert_eq!(
            names(&d),
            [
                "edgejobs_attempts_total[(\"type\", \"noop\"), (\"lane\", \"edge\"), (\"outcome\", \"failed\"), (\"tenant\", \"default\")]",
                "edgejobs_attempt_duration_seconds",
                "edgejobs_jobs_retried_total[(\"type\", \"noop\")]"
            ]
        );
        assert!(matches!(&d[1], Delta::Observe { secs, .. } if (*secs - 1.5).abs() < 1e-9));
        let j3 =
            apply(&apply(&j2, Event::Wake, 10_000, 0.5).expect("wake").job, Event::Start { attempt: 2 }, 10_000, 0.5)
                .expect("start")
                .job;
        let j4 = apply(&j3, fail(2), 11_000, 0.5).expect("fail").job;
        let d = names(&transition(&j3, &j4, 11_000));
        assert!(
            d.iter().any(|n| n.starts_with("edgejobs_jobs_dead_total")) && !d.iter().any(|n| n.contains("retried"))
        );
    }

    /// Every counter a run of transitions adds, as `name{k=v,...}` → sum.
    fn tally(d: &[Delta]) -> BTreeMap<String, f64> {
        let mut t = BTreeMap::new();
        for d in d {
            if let Delta::Count { name, labels, n } = d {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                *t.entry(format!("{name}{{{}}}", l.join(","))).or_default() += n;
            }
        }
        t
    }

    /// A workflow run through every kind of step, each transition counted as the shard
    /// counts it: steps as they are recorded or retried, each suspension with its reason,
    /// each resume with its cause; a suspension is neither a failed attempt nor a retry.
    #[test]
    fn a_runs_steps_suspensions_and_resumes_are_counted() {
        use crate::retry::Backoff;
        use crate::workflow::{StepReport, StepRetry, WaitFor};
        /// Applies the event `e` makes of the run at `at` (`None`: when the run is due, its
        /// `run_at`), keeping what the shard would count.
        fn go(j: &mut Job, deltas: &mut Vec<Delta>, at: Option<u64>, e: impl FnOnce(&Job) -> Event) {
            let at = at.unwrap_or(j.run_at);
            let next = apply(j, e(j), at, 0.5).expect("applies").job;
            deltas.extend(transition(j, &next, at));
            *j = next;
        }
        let start = |j: &Job| Event::Start { attempt: j.attempt + 1 };
        let step = |step| move |j: &Job| Event::Step { attempt: j.attempt, step };
        let retry = StepRetry { attempts: 2, backoff: Backoff { base_ms: 1_000, factor: 2.0, cap_ms: 1_000 } };
        let fail = || StepReport::Fail { seq: 1, name: "call".into(), error: "boom".into(), retry };
        let wait = |seq, name: &str, timeout_ms| StepReport::Wait {
            seq,
            name: name.into(),
            wait: WaitFor { event: "approved".into(), matches: vec![] },
            timeout_ms,
            lookback_ms: 0,
        };
        let (mut j, mut d) = (job(), Vec::new());
        go(&mut j, &mut d, Some(2_000), start);
        go(&mut j, &mut d, Some(2_000), step(StepReport::Run { seq: 0, name: "plan".into(), result: json!(1) }));
        go(&mut j, &mut d, Some(2_000), step(fail())); // retrying: the run sleeps until the retry
        assert_eq!(j.state, JobState::Scheduled);
        go(&mut j, &mut d, None, |_| Event::Wake); // the alarm
        go(&mut j, &mut d, None, start);
        go(&mut j, &mut d, None, step(fail())); // failed for good; the run goes on
        assert_eq!(j.state, JobState::Active);
        go(&mut j, &mut d, None, step(StepReport::Sleep { seq: 2, name: "nap".into(), ms: Some(5_000), until: None }));
        go(&mut j, &mut d, None, |_| Event::Wake); // the sleep's end
        let now = j.run_at;
        go(&mut j, &mut d, Some(now), start);
        go(&mut j, &mut d, Some(now), step(wait(3, "approval", None)));
        go(&mut j, &mut d, Some(now + 1), |_| Event::Resume { step: "approval".into(), data: json!({ "ok": true }) });
        go(&mut j, &mut d, Some(now + 2), start);
        go(&mut j, &mut d, Some(now + 2), step(wait(4, "second", Some(10_000))));
        go(&mut j, &mut d, None, |_| Event::Wake); // the wait's timeout
        go(&mut j, &mut d, None, start);
        go(&mut j, &mut d, None, |j| Event::Complete { attempt: j.attempt, result: Some(json!("done")) });
        let deltas = d;
        let t = tally(&deltas);
        let n = |k: &str| t.get(k).copied().unwrap_or(0.0);
        let steps = |kind: &str, state: &str| n(&format!("edgejobs_workflow_steps_total{{kind={kind},state={state}}}"));
        assert_eq!(steps("run", "completed"), 1.0, "{t:#?}");
        assert_eq!(steps("run", "retrying"), 1.0, "{t:#?}");
        assert_eq!(steps("run", "failed"), 1.0, "{t:#?}");
        assert_eq!(steps("sleep", "completed"), 1.0, "{t:#?}");
        assert_eq!(steps("wait", "completed"), 1.0, "{t:#?}");
        assert_eq!(steps("wait", "timed_out"), 1.0, "{t:#?}");
        for reason in ["retry", "sleep"] {
            assert_eq!(n(&format!("edgejobs_workflow_suspensions_total{{reason={reason}}}")), 1.0, "{t:#?}");
        }
        assert_eq!(n("edgejobs_workflow_suspensions_total{reason=wait}"), 2.0, "{t:#?}");
        for by in ["event", "timeout"] {
            assert_eq!(n(&format!("edgejobs_workflow_resumes_total{{by={by}}}")), 1.0, "{t:#?}");
        }
        assert_eq!(n("edgejobs_workflow_resumes_total{by=alarm}"), 2.0, "{t:#?}");
        assert_eq!(t.keys().filter(|k| k.starts_with("edgejobs_workflow_")).count(), 12, "{t:#?}");
        // Four suspensions and one completion: one attempt ended as attempts count them.
        let attempts: f64 = t.iter().filter(|(k, _)| k.starts_with("edgejobs_attempts_total")).map(|(_, v)| v).sum();
        assert_eq!(attempts, 1.0, "{t:#?}");
        assert_eq!(n("edgejobs_jobs_retried_total{type=noop}"), 0.0, "{t:#?}");
        assert_eq!(n("edgejobs_jobs_completed_total{type=noop,tenant=default}"), 1.0, "{t:#?}");
        assert_eq!(j.state, JobState::Completed);
    }

    /// An ordinary retry of a run's job (its attempt failed) is not a resume, and a report
    /// repeated for a recorded step counts nothing again.
    #[test]
    fn a_runs_job_retry_and_a_repeated_report_count_no_step() {
        use crate::workflow::StepReport;
        let j0 = apply(&job(), Event::Start { attempt: 1 }, 2_000, 0.5).expect("start").job;
        let report = Event::Step { attempt: 1, step: StepReport::Run { seq: 0, name: "a".into(), result: json!(1) } };
        let j1 = apply(&j0, report.clone(), 2_000, 0.5).expect("step").job;
        assert_eq!(
            names(&transition(&j0, &j1, 2_000)),
            ["edgejobs_workflow_steps_total[(\"kind\", \"run\"), (\"state\", \"completed\")]"]
        );
        let again = apply(&j1, report, 2_001, 0.5).expect("answered").job;
        assert!(transition(&j1, &again, 2_001).is_empty());
        let fail = Event::Fail { attempt: 1, error: "x".into(), disposition: Disposition::Retryable };
        let j2 = apply(&j1, fail, 2_500, 0.5).expect("fail").job;
        let d = names(&transition(&j1, &j2, 2_500));
        assert!(d.iter().any(|n| n.starts_with("edgejobs_jobs_retried_total")), "{d:?}");
        assert!(!d.iter().any(|n| n.contains("workflow")), "{d:?}");
        let j3 = apply(&j2, Event::Wake, j2.run_at, 0.5).expect("wake").job;
        assert!(transition(&j2, &j3, j2.run_at).is_empty(), "an ordinary retry is no resume");
    }

    #[test]
    fn events_are_counted_sent_or_duplicate() {
        let d = tally(&[event_sent(false), event_sent(true), event_sent(false)]);
        assert_eq!(d.get("edgejobs_events_total{outcome=sent}"), Some(&2.0));
        assert_eq!(d.get("edgejobs_events_total{outcome=duplicate}"), Some(&1.0));
    }

    #[test]
    fn shards_merge_into_one_exposition() {
        let mut a = ShardStats::default();
        a.counters.push(("edgejobs_jobs_enqueued_total".into(), vec![("type".into(), "noop".into())], 2.0));
        a.jobs.push(JobCount { state: "queued".into(), job_type: "noop".into(), tenant: "default".into(), n: 1 });
        a.oldest_queued_ms = Some(5_000);
        let mut b = a.clone();
        b.oldest_queued_ms = Some(8_000);
        b.gauges.push(("edgejobs_backup_last_size_bytes".into(), 42.0));
        let text = crate::metrics::render(&families(&[a, b], 10_000, 1));
        assert!(text.contains("edgejobs_jobs_enqueued_total{type=\"noop\"} 4\n"));
        assert!(text.contains("edgejobs_jobs{state=\"queued\",type=\"noop\",tenant=\"default\"} 2\n"));
        assert!(text.contains("edgejobs_oldest_queued_job_age_seconds 5\n"));
        assert!(text.contains("edgejobs_backup_last_size_bytes 42\n"));
        assert!(text.contains("# TYPE edgejobs_sweep_resent_total counter\n"), "empty families still print");
        assert!(text.contains("edgejobs_health_status 1\n"));
    }
}
