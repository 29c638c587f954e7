//! The production model (#27, point 5): what 1,000, 10,000 and 100,000 jobs/s sustained need
//! — shards (SQLite Durable Objects), queues, queue-consumer concurrency, native consumers,
//! Upstash databases — which documented limit binds first, and the monthly cost, each
//! figure derived from the operations per job this bench counts ([`Ops`]) and nothing else
//! but the documented limits, the dated prices and the few stated assumptions below.
//!
//! Everything is linear in the rate: a limit `L` per unit (a shard, a queue, a database)
//! planned at [`Assumptions::utilization`] of it carries `L × u ÷ (per-job load)` jobs/s per
//! unit, so the units needed at a rate are `rate × per-job load ÷ (L × u)`, and which limit
//! binds first in a deployment (16 shards, one queue, one Upstash database) does not depend
//! on the rate: it is the one whose ceiling is lowest.
//!
//! `scripts/bench` prints the model after its run; `scripts/bench --model [FILE]` recomputes
//! it from a saved run (default `target/bench/latest.json`) without a stack.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use edgejobs_core::id::{JobId, MAX_SHARDS};
use edgejobs_core::job::Lane as JobLane;
use edgejobs_core::wire::{ENVELOPE_MAX, Envelope, HANDOFF_CHUNK, JobRef, handoff_command};
use serde_json::{Value, json};

use crate::ops::{
    MEASURES, OpDelta, Ops, PRICE_SOURCES, PRICES_AS_OF, QUEUE_OPS_PER_MESSAGE, USD_PER_M_DO_REQUESTS,
    USD_PER_M_QUEUE_OPS, USD_PER_M_ROWS_READ, USD_PER_M_ROWS_WRITTEN, USD_PER_M_UPSTASH_COMMANDS,
    USD_PER_M_WORKER_REQUESTS,
};
use crate::procfs::WORKERD_WORKER;
use crate::report::{num, print_rows};

// ---------------------------------------------------------------------------------------
// Documented limits and the prices ops.rs does not hold: one place, each with its source
// and the day it was read. The per-operation prices are ops.rs's (read 2026-11-23, checked
// again on READ_ON: unchanged).
// ---------------------------------------------------------------------------------------

/// The day the limits and prices below were read.
pub const READ_ON: &str = "2026-12-06";

const DO_FAQ: &str = "https://developers.cloudflare.com/durable-objects/reference/faq/";
const DO_PRICING: &str = "https://developers.cloudflare.com/durable-objects/platform/pricing/";
const QUEUES_LIMITS: &str = "https://developers.cloudflare.com/queues/platform/limits/";
const QUEUES_PRICING: &str = "https://developers.cloudflare.com/queues/platform/pricing/";
const WORKERS_LIMITS: &str = "https://developers.cloudflare.com/workers/platform/limits/";
const WORKERS_PRICING: &str = "https://developers.cloudflare.com/workers/platform/pricing/";
const UPSTASH_BILLING: &str = "https://upstash.com/docs/redis/overall/billing";
const UPSTASH_PRICING: &str = "https://upstash.com/pricing/redis";

/// A documented figure: its value, what it is, where it is written, when it was read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Documented {
    pub value: f64,
    pub what: &'static str,
    pub url: &'static str,
    pub read: &'static str,
}

const fn doc(value: f64, what: &'static str, url: &'static str) -> Documented {
    Documented { value, what, url, read: READ_ON }
}

/// The platform limits the model checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub do_requests_per_s: Documented,
    pub do_cpu_s_per_s: Documented,
    pub queue_messages_per_s: Documented,
    pub queue_consumer_batch: Documented,
    pub queue_consumer_concurrency: Documented,
    pub queue_message_bytes: Documented,
    pub queue_billing_unit_bytes: Documented,
    pub queues_per_account: Documented,
    pub worker_cpu_ms_per_invocation: Documented,
    pub upstash_commands_per_s: Documented,
    pub upstash_request_bytes: Documented,
    pub upstash_databases: Documented,
}

pub const LIMITS: Limits = Limits {
    do_requests_per_s: doc(
        1_000.0,
        "requests per second one Durable Object takes (a soft limit; beyond it, overloaded errors)",
        DO_FAQ,
    ),
    do_cpu_s_per_s: doc(1.0, "CPU seconds per second of one Durable Object (each is single-threaded)", DO_FAQ),
    queue_messages_per_s: doc(5_000.0, "messages per second one queue takes (send() throws beyond it)", QUEUES_LIMITS),
    queue_consumer_batch: doc(100.0, "messages per consumer batch (max_batch_size)", QUEUES_LIMITS),
    queue_consumer_concurrency: doc(250.0, "concurrent consumer invocations per queue (push consumers)", QUEUES_LIMITS),
    queue_message_bytes: doc(128_000.0, "bytes per queue message", QUEUES_LIMITS),
    queue_billing_unit_bytes: doc(64_000.0, "bytes billed as one queue operation", QUEUES_PRICING),
    queues_per_account: doc(10_000.0, "queues per account", QUEUES_LIMITS),
    worker_cpu_ms_per_invocation: doc(
        30_000.0,
        "CPU ms per Worker invocation, queue consumers included (default; configurable to 300,000)",
        WORKERS_LIMITS,
    ),
    upstash_commands_per_s: doc(
        10_000.0,
        "commands per second per Upstash database (Free, Pay-as-you-go; Enterprise: 100K+)",
        UPSTASH_BILLING,
    ),
    upstash_request_bytes: doc(10_000_000.0, "bytes per Upstash request", UPSTASH_BILLING),
    upstash_databases: doc(100.0, "Upstash databases per account (10 free, then US$0.50 each)", UPSTASH_PRICING),
};

/// Prices ops.rs does not hold (it prices operations per job; these are per month or per
/// CPU time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub workers_paid_usd_per_month: Documented,
    pub usd_per_m_cpu_ms: Documented,
    pub do_usd_per_m_gb_s: Documented,
    pub do_billed_gb: Documented,
    pub upstash_free_databases: Documented,
    pub upstash_usd_per_extra_database: Documented,
    pub upstash_prod_pack_usd_per_database: Documented,
    pub upstash_fixed_largest_usd_per_month: Documented,
}

pub const PRICES: Prices = Prices {
    workers_paid_usd_per_month: doc(5.0, "Workers Paid, per account and month", WORKERS_PRICING),
    usd_per_m_cpu_ms: doc(0.02, "Workers Standard, per million CPU ms (30 million a month included)", WORKERS_PRICING),
    do_usd_per_m_gb_s: doc(12.50, "Durable Objects duration, per million GB-s (400,000 GB-s included)", DO_PRICING),
    do_billed_gb: doc(0.128, "GB a Durable Object is billed for while active (128 MB)", DO_PRICING),
    upstash_free_databases: doc(10.0, "Upstash databases without a database fee", UPSTASH_PRICING),
    upstash_usd_per_extra_database: doc(0.50, "Upstash, per database beyond 10, per month", UPSTASH_PRICING),
    upstash_prod_pack_usd_per_database: doc(
        200.0,
        "Upstash Prod Pack (SLA, multi-zone), per database and month; optional, not added",
        UPSTASH_PRICING,
    ),
    upstash_fixed_largest_usd_per_month: doc(
        1_500.0,
        "Upstash Fixed 500GB, per month (flat; 20 TB bandwidth)",
        UPSTASH_PRICING,
    ),
};

/// What the model assumes beyond the documents and the measurements. Each is stated in the
/// printed table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assumptions {
    /// The fraction of each limit to plan for (soft limits, uneven random shard choice, bursts).
    pub utilization: f64,
    /// Wall time of one edge queue-consumer invocation (a start and a report call per shard
    /// plus the handlers; noop jobs).
    pub consumer_invocation_s: f64,
    /// Messages per consumer delivery: 1 is the worst case (`max_batch_timeout = 0` delivers
    /// whatever exists; under load batches fill up to 100).
    pub messages_per_delivery: f64,
    /// Shards a deployment has unless it sets `SHARD_COUNT` (wrangler.toml, core config).
    pub default_shards: f64,
    /// Seconds in a billed month (30 days).
    pub seconds_per_month: f64,
    /// Upstash commands the rate limiter sends per enqueue request when `RATE_LIMIT` is set
    /// (one pipeline in `shared/upstash/src/ratelimit.rs`: ZREMRANGEBYSCORE, ZADD, ZCARD,
    /// ZRANGE, PEXPIRE). The bench runs with `RATE_LIMIT=off`, so its counts leave them out.
    pub rate_limit_commands_per_request: f64,
}

pub const ASSUME: Assumptions = Assumptions {
    utilization: 0.7,
    consumer_invocation_s: 0.05,
    messages_per_delivery: 1.0,
    default_shards: 16.0,
    seconds_per_month: 30.0 * 86_400.0,
    rate_limit_commands_per_request: 5.0,
};

/// The sustained rates the model is asked about.
pub const RATES: [f64; 3] = [1_000.0, 10_000.0, 100_000.0];

// ---------------------------------------------------------------------------------------
// What was measured, per scenario of the model.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Edge,
    Native,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueue {
    Single,
    Batch,
}

/// One scenario's measured operations per job.
#[derive(Debug, Clone)]
pub struct Measured {
    pub lane: Lane,
    pub enqueue: Enqueue,
    /// Which bench scenario(s) the figures come from.
    pub from: String,
    pub ops: Ops,
    /// Jobs per enqueue request (1, or the batch size).
    pub jobs_per_request: f64,
    /// CPU of the Worker's workerd process per job, in seconds (locally one thread runs the
    /// Worker and every Durable Object, so this is an upper bound on a shard's part).
    pub cpu_s_per_job: Option<f64>,
    /// Native lane: jobs/s one consumer process ran, at `consumer_concurrency` and jobs of
    /// `job_ms`.
    pub consumer_jobs_per_s: Option<f64>,
    pub consumer_concurrency: Option<f64>,
    pub job_ms: Option<f64>,
}

impl Measured {
    pub fn name(&self) -> String {
        let lane = match self.lane {
            Lane::Edge => "edge",
            Lane::Native => "native",
        };
        let enq = match self.enqueue {
            Enqueue::Single => "single",
            Enqueue::Batch => "batch",
        };
        format!("{lane} lane, {enq} enqueue")
    }
}

/// An [`Ops`] from a saved report's `ops` object (its per-job figures; the raw counters are
/// not needed by the model).
pub fn ops_from_json(v: &Value) -> Ops {
    let by = MEASURES
        .iter()
        .map(|m| {
            let per_job = v["counters"][m.key]["per_job"].as_f64();
            (m.key, OpDelta { raw: None, reads: 0, overhead: 0.0, net: None, per_job })
        })
        .collect();
    Ops { jobs: v["jobs"].as_f64().unwrap_or(0.0), by, settled: v["settled"].as_bool().unwrap_or(false) }
}

/// `a + (b − c)` per measure (never below 0): the native lane's operations with single
/// instead of batch enqueue are the native batch run's plus what single enqueue costs more
/// than batch enqueue on the edge lane.
fn ops_shifted(a: &Ops, b: &Ops, c: &Ops) -> Ops {
    let by = MEASURES
        .iter()
        .map(|m| {
            let per_job = match (a.per_job(m.key), b.per_job(m.key), c.per_job(m.key)) {
                (Some(a), Some(b), Some(c)) => Some((a + b - c).max(0.0)),
                _ => None,
            };
            (m.key, OpDelta { raw: None, reads: 0, overhead: 0.0, net: None, per_job })
        })
        .collect();
    Ops { jobs: a.jobs, by, settled: a.settled && b.settled && c.settled }
}

fn cpu_per_job(cpu: &Value, jobs: f64) -> Option<f64> {
    cpu["cpu_s_by_component"][WORKERD_WORKER].as_f64().filter(|_| jobs > 0.0).map(|s| s / jobs)
}

/// The model's four scenarios from a bench report (those it has figures for).
pub fn measured_from_report(report: &Value) -> Vec<Measured> {
    let sc = &report["scenarios"];
    let batch_size = report["settings"]["batch_size"].as_f64().unwrap_or(100.0);
    let mut out = Vec::new();
    let has_ops = |v: &Value| v["ops"]["counters"].is_object();
    let edge_batch = &sc["edge_lane"];
    let edge_batch = has_ops(edge_batch).then(|| {
        let ops = ops_from_json(&edge_batch["ops"]);
        let cpu = cpu_per_job(&edge_batch["cpu"], ops.jobs);
        Measured {
            lane: Lane::Edge,
            enqueue: Enqueue::Batch,
            from: "edge_lane".into(),
            ops,
            jobs_per_request: batch_size,
            cpu_s_per_job: cpu,
            consumer_jobs_per_s: None,
            consumer_concurrency: None,
            job_ms: None,
        }
    });
    let single = &sc["single_enqueue"];
    let edge_single = has_ops(single).then(|| {
        let ops = ops_from_json(&single["ops"]);
        let jobs = single["jobs_created"].as_f64().unwrap_or(ops.jobs);
        Measured {
            lane: Lane::Edge,
            enqueue: Enqueue::Single,
            from: "single_enqueue".into(),
            cpu_s_per_job: cpu_per_job(&single["cpu_during_wrk"], jobs),
            ops,
            jobs_per_request: 1.0,
            consumer_jobs_per_s: None,
            consumer_concurrency: None,
            job_ms: None,
        }
    });
    // The native run with the most jobs/s (the highest concurrency, normally).
    let native =
        sc.as_object().into_iter().flatten().filter(|(k, v)| k.starts_with("native_c") && has_ops(v)).max_by(|a, b| {
            a.1["jobs_per_s"].as_f64().unwrap_or(0.0).total_cmp(&b.1["jobs_per_s"].as_f64().unwrap_or(0.0))
        });
    let native_batch = native.map(|(k, v)| {
        let ops = ops_from_json(&v["ops"]);
        Measured {
            lane: Lane::Native,
            enqueue: Enqueue::Batch,
            from: k.clone(),
            cpu_s_per_job: cpu_per_job(&v["cpu"], ops.jobs),
            ops,
            jobs_per_request: batch_size,
            consumer_jobs_per_s: v["jobs_per_s"].as_f64(),
            consumer_concurrency: v["concurrency"].as_f64(),
            job_ms: v["sleep_ms"].as_f64(),
        }
    });
    let native_single = match (&native_batch, &edge_single, &edge_batch) {
        (Some(n), Some(s), Some(b)) => Some(Measured {
            enqueue: Enqueue::Single,
            from: format!("{} + (single_enqueue − edge_lane)", n.from),
            ops: ops_shifted(&n.ops, &s.ops, &b.ops),
            jobs_per_request: 1.0,
            cpu_s_per_job: match (n.cpu_s_per_job, s.cpu_s_per_job, b.cpu_s_per_job) {
                (Some(n), Some(s), Some(b)) => Some((n + s - b).max(0.0)),
                _ => None,
            },
            ..n.clone()
        }),
        _ => None,
    };
    out.extend(edge_batch);
    out.extend(edge_single);
    out.extend(native_batch);
    out.extend(native_single);
    out
}

// ---------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Shards,
    Queues,
    UpstashDatabases,
}

impl Unit {
    pub fn label(self) -> &'static str {
        match self {
            Unit::Shards => "shards",
            Unit::Queues => "queues",
            Unit::UpstashDatabases => "Upstash databases",
        }
    }
}

/// One limit applied to one scenario: the load it sees per job and what one unit carries.
#[derive(Debug, Clone)]
pub struct Check {
    pub limit: &'static str,
    pub unit: Unit,
    /// Load per job in the limit's measure (DO requests, CPU seconds, messages, commands).
    pub per_job: f64,
    /// What one unit carries at the planned utilization.
    pub per_unit: f64,
    /// Units a deployment has today (16 shards, one queue, one database).
    pub today: f64,
    /// The design change that lifts it.
    pub lift: &'static str,
}

impl Check {
    /// Units needed at `rate` jobs/s (fractional).
    pub fn units(&self, rate: f64) -> f64 {
        rate * self.per_job / self.per_unit
    }

    /// Jobs/s today's units carry (infinite when the scenario puts no load on it).
    pub fn ceiling(&self) -> f64 {
        if self.per_job > 0.0 { self.today * self.per_unit / self.per_job } else { f64::INFINITY }
    }
}

/// The limits that apply to a scenario, with its measured load on each; `None` entries
/// (a counter the run did not have) are left out and named in `missing`.
pub fn checks(m: &Measured, limits: &Limits, a: &Assumptions) -> (Vec<Check>, Vec<&'static str>) {
    let u = a.utilization;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    let mut add = |what: &'static str, per_job: Option<f64>, check: Check| match per_job {
        Some(p) => out.push(Check { per_job: p, ..check }),
        None => missing.push(what),
    };
    let ops = &m.ops;
    add(
        "do_requests",
        ops.per_job("do_requests"),
        Check {
            limit: "DO requests/s per shard",
            unit: Unit::Shards,
            per_job: 0.0,
            per_unit: limits.do_requests_per_s.value * u,
            today: a.default_shards,
            lift: "more shards (SHARD_COUNT, grown online); fewer DO requests per job: batch enqueue",
        },
    );
    add(
        "cpu",
        m.cpu_s_per_job,
        Check {
            limit: "DO CPU per shard (single thread)",
            unit: Unit::Shards,
            per_job: 0.0,
            per_unit: limits.do_cpu_s_per_s.value * u,
            today: a.default_shards,
            lift: "more shards; less CPU per job",
        },
    );
    add(
        "queue_messages_sent",
        ops.per_job("queue_messages_sent"),
        Check {
            limit: "queue messages/s per queue",
            unit: Unit::Queues,
            per_job: 0.0,
            per_unit: limits.queue_messages_per_s.value * u,
            today: 1.0,
            lift: "per-shard queues (shard i sends to queue i mod Q, one consumer binding each); fuller envelopes: batch enqueue",
        },
    );
    // Concurrent consumer invocations: deliveries/s × their duration (Little's law), per queue.
    add(
        "queue_messages_received",
        ops.per_job("queue_messages_received").map(|r| r / a.messages_per_delivery * a.consumer_invocation_s),
        Check {
            limit: "consumer invocations per queue",
            unit: Unit::Queues,
            per_job: 0.0,
            per_unit: limits.queue_consumer_concurrency.value * u,
            today: 1.0,
            lift: "more queues (250 invocations each); fuller deliveries (max_batch_size 100 already)",
        },
    );
    if m.lane == Lane::Native {
        add(
            "upstash_commands",
            ops.upstash_per_job(),
            Check {
                limit: "Upstash commands/s per database",
                unit: Unit::UpstashDatabases,
                per_job: 0.0,
                per_unit: limits.upstash_commands_per_s.value * u,
                today: 1.0,
                lift: "a stream per shard group, in several databases (consumers read each; consumer groups per priority the same way); Upstash Enterprise (100K+ cmd/s)",
            },
        );
    }
    (out, missing)
}

/// What one scenario needs at one rate.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rate: f64,
    pub shards: u64,
    pub shards_by_requests: f64,
    pub shards_by_cpu: Option<f64>,
    pub queues: u64,
    pub upstash_databases: u64,
    pub upstash_commands_per_s: f64,
    /// Concurrent edge consumer invocations in all (Little's law).
    pub consumer_invocations: Option<f64>,
    /// Native consumer processes like the measured one.
    pub native_consumers: Option<u64>,
    pub do_requests_per_s: Option<f64>,
    pub queue_messages_per_s: Option<f64>,
    /// The checks today's deployment fails at this rate, worst first.
    pub exceeded: Vec<String>,
    /// More shards than ids can address ([`MAX_SHARDS`]).
    pub over_max_shards: bool,
    pub cost: MonthlyCost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyCost {
    /// Operations and rows at ops.rs's prices (`Ops::cost`), `None` when a counter is missing.
    pub operations_usd: Option<f64>,
    pub cpu_usd: Option<f64>,
    pub do_duration_usd: f64,
    pub fixed_usd: f64,
    pub total_usd: Option<f64>,
    /// The Upstash part of `operations_usd` (pay-as-you-go commands).
    pub upstash_payg_usd: Option<f64>,
}

/// The whole model for one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioModel {
    pub measured: Measured,
    pub checks: Vec<Check>,
    pub missing: Vec<&'static str>,
    /// The limit that binds first in today's deployment, and the jobs/s it allows.
    pub binds_first: Option<(String, f64)>,
    /// Jobs/s the default shard count carries (DO requests and CPU).
    pub default_shards_carry: Option<f64>,
    /// Jobs/s one shard carries (DO requests and CPU).
    pub per_shard_jobs_per_s: Option<f64>,
    pub plans: Vec<Plan>,
}

fn ceil_units(x: f64) -> u64 {
    // 1e-9: 2.0000000001 from floating point is 2 units, not 3.
    (x - 1e-9).ceil().max(1.0) as u64
}

/// The model of one scenario at each rate. Pure: measurements, limits, prices and
/// assumptions in, counts and costs out.
pub fn model(m: &Measured, rates: &[f64], limits: &Limits, prices: &Prices, a: &Assumptions) -> ScenarioModel {
    let (checks, missing) = checks(m, limits, a);
    let binds_first = checks
        .iter()
        .map(|c| (c.limit.to_owned(), c.ceiling()))
        .filter(|(_, ceiling)| ceiling.is_finite())
        .min_by(|x, y| x.1.total_cmp(&y.1));
    let shard_checks: Vec<&Check> = checks.iter().filter(|c| c.unit == Unit::Shards).collect();
    let per_shard =
        shard_checks.iter().map(|c| c.per_unit / c.per_job).filter(|x| x.is_finite()).min_by(f64::total_cmp);
    let cost_per_m_jobs = m.ops.cost();
    let plans = rates
        .iter()
        .map(|&rate| {
            let by = |limit: &str| checks.iter().find(|c| c.limit == limit).map(|c| c.units(rate));
            let shards_by_requests = by("DO requests/s per shard").unwrap_or(0.0);
            let shards_by_cpu = by("DO CPU per shard (single thread)");
            let need = |unit: Unit| checks.iter().filter(|c| c.unit == unit).map(|c| c.units(rate)).fold(0.0, f64::max);
            let shards = ceil_units(need(Unit::Shards));
            let queues = ceil_units(need(Unit::Queues));
            let upstash_commands_per_s = m.ops.upstash_per_job().unwrap_or(0.0) * rate;
            let upstash_databases = if m.lane == Lane::Native { ceil_units(need(Unit::UpstashDatabases)) } else { 0 };
            let mut exceeded: Vec<(f64, String)> = checks
                .iter()
                .filter(|c| c.units(rate) > c.today)
                .map(|c| {
                    let ratio = c.units(rate) / c.today;
                    (ratio, format!("{} ({:.1}× today's {})", c.limit, ratio, c.unit.label()))
                })
                .collect();
            exceeded.sort_by(|x, y| y.0.total_cmp(&x.0));
            let jobs_per_month = rate * a.seconds_per_month;
            let operations_usd = cost_per_m_jobs.total.map(|usd| usd * jobs_per_month / 1e6);
            let upstash_payg_usd =
                m.ops.upstash_per_job().map(|c| c * USD_PER_M_UPSTASH_COMMANDS * jobs_per_month / 1e6);
            let cpu_usd = m.cpu_s_per_job.map(|s| s * 1e3 * jobs_per_month * prices.usd_per_m_cpu_ms.value / 1e6);
            // Every shard is active all month at these rates.
            let do_duration_usd =
                shards as f64 * a.seconds_per_month * prices.do_billed_gb.value * prices.do_usd_per_m_gb_s.value / 1e6;
            let extra_dbs = (upstash_databases as f64 - prices.upstash_free_databases.value).max(0.0);
            let fixed_usd =
                prices.workers_paid_usd_per_month.value + extra_dbs * prices.upstash_usd_per_extra_database.value;
            let total_usd = operations_usd.zip(cpu_usd).map(|(o, c)| o + c + do_duration_usd + fixed_usd);
            Plan {
                rate,
                shards,
                shards_by_requests,
                shards_by_cpu,
                queues,
                upstash_databases,
                upstash_commands_per_s,
                consumer_invocations: m
                    .ops
                    .per_job("queue_messages_received")
                    .map(|r| rate * r / a.messages_per_delivery * a.consumer_invocation_s),
                native_consumers: m
                    .consumer_jobs_per_s
                    .filter(|j| *j > 0.0 && m.lane == Lane::Native)
                    .map(|j| ceil_units(rate / j)),
                do_requests_per_s: m.ops.per_job("do_requests").map(|d| d * rate),
                queue_messages_per_s: m.ops.per_job("queue_messages_sent").map(|q| q * rate),
                exceeded: exceeded.into_iter().map(|(_, s)| s).collect(),
                over_max_shards: shards > u64::from(MAX_SHARDS),
                cost: MonthlyCost { operations_usd, cpu_usd, do_duration_usd, fixed_usd, total_usd, upstash_payg_usd },
            }
        })
        .collect();
    ScenarioModel {
        measured: m.clone(),
        binds_first,
        default_shards_carry: per_shard.map(|p| p * a.default_shards),
        per_shard_jobs_per_s: per_shard,
        checks,
        missing,
        plans,
    }
}

/// Sizes computed with the code's own encoders, against the per-request limits.
#[derive(Debug, Clone)]
pub struct SizeCheck {
    pub what: String,
    pub bytes: f64,
    pub limit: Documented,
}

/// A trace context as long as a reference carries one (sampled, no `tracestate`).
fn longest_trace() -> edgejobs_core::trace::TraceContext {
    let id = edgejobs_core::trace::TraceId([0xff; 16]);
    edgejobs_core::trace::TraceContext::root(id, edgejobs_core::trace::SpanId([0xff; 8]), true)
}

pub fn size_checks(limits: &Limits) -> Vec<SizeCheck> {
    // The largest ids and attempt numbers encode longest.
    let refs: Vec<JobRef> = (0..HANDOFF_CHUNK.max(ENVELOPE_MAX))
        .map(|i| JobRef {
            id: JobId::new(255, u64::MAX, u64::MAX - i as u64),
            attempt: u32::MAX,
            epoch: u64::MAX,
            trace: Some(longest_trace()),
        })
        .collect();
    let envelope = Envelope { shard: 255, lane: JobLane::Native, jobs: refs[..ENVELOPE_MAX].to_vec() };
    let envelope_bytes = serde_json::to_vec(&envelope).map_or(0, |v| v.len()) as f64;
    let handoff = handoff_command(&refs[..HANDOFF_CHUNK]);
    let handoff_bytes = serde_json::to_vec(&handoff).map_or(0, |v| v.len()) as f64;
    vec![
        SizeCheck {
            what: format!("queue message: a full envelope of {ENVELOPE_MAX} references"),
            bytes: envelope_bytes,
            limit: limits.queue_billing_unit_bytes,
        },
        SizeCheck {
            what: format!("Upstash request: the hand-off of {HANDOFF_CHUNK} attempts (one EVAL)"),
            bytes: handoff_bytes,
            limit: limits.upstash_request_bytes,
        },
    ]
}

/// Worst-case CPU of one queue-consumer invocation: a full batch of full envelopes.
pub fn consumer_invocation_cpu_ms(m: &Measured, limits: &Limits) -> Option<f64> {
    m.cpu_s_per_job.map(|s| s * 1e3 * limits.queue_consumer_batch.value * ENVELOPE_MAX as f64)
}

// ---------------------------------------------------------------------------------------
// Report: JSON and the printed tables.
// ---------------------------------------------------------------------------------------

fn money(x: Option<f64>) -> String {
    match x {
        Some(v) if v >= 1e6 => format!("${:.2}M", v / 1e6),
        Some(v) if v >= 1e4 => format!("${:.0}k", v / 1e3),
        Some(v) => format!("${v:.0}"),
        None => "n/a".into(),
    }
}

fn rate_str(x: f64) -> String {
    if !x.is_finite() {
        "∞".into()
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

pub fn models_of(report: &Value) -> Vec<ScenarioModel> {
    measured_from_report(report).iter().map(|m| model(m, &RATES, &LIMITS, &PRICES, &ASSUME)).collect()
}

pub fn to_json(report: &Value) -> Value {
    let models = models_of(report);
    let scen: Vec<Value> = models
        .iter()
        .map(|s| {
            json!({
                "scenario": s.measured.name(),
                "from": s.measured.from,
                "per_job": {
                    "do_requests": s.measured.ops.per_job("do_requests"),
                    "queue_messages_sent": s.measured.ops.per_job("queue_messages_sent"),
                    "queue_messages_received": s.measured.ops.per_job("queue_messages_received"),
                    "upstash_commands": s.measured.ops.upstash_per_job(),
                    "cpu_s": s.measured.cpu_s_per_job,
                },
                "binds_first": s.binds_first.as_ref().map(|(l, c)| json!({ "limit": l, "jobs_per_s": c })),
                "default_shards_carry_jobs_per_s": s.default_shards_carry,
                "missing": s.missing,
                "plans": s.plans.iter().map(|p| json!({
                    "jobs_per_s": p.rate,
                    "shards": p.shards,
                    "shards_by_requests": p.shards_by_requests,
                    "shards_by_cpu": p.shards_by_cpu,
                    "over_max_shards": p.over_max_shards,
                    "queues": p.queues,
                    "consumer_invocations": p.consumer_invocations,
                    "native_consumers": p.native_consumers,
                    "upstash_commands_per_s": p.upstash_commands_per_s,
                    "upstash_databases": p.upstash_databases,
                    "exceeded_today": p.exceeded,
                    "usd_per_month": p.cost.total_usd,
                    "usd_per_month_upstash_payg": p.cost.upstash_payg_usd,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "limits_read_on": READ_ON, "prices_as_of": PRICES_AS_OF, "utilization": ASSUME.utilization, "scenarios": scen })
}

/// Prints the model of a bench report.
pub fn print(report: &Value) {
    let models = models_of(report);
    let a = &ASSUME;
    let l = &LIMITS;
    let p = &PRICES;
    println!();
    println!(
        "production model (#27): needs at sustained rates, from the operations per job of the run (commit {}, started at unix {}); \
         limits planned at {:.0}% (scripts/bench --model FILE recomputes this from a saved run):",
        report["git"]["commit"].as_str().unwrap_or("?"),
        report["started_at_unix"],
        a.utilization * 100.0
    );
    if models.is_empty() {
        println!("  no scenario with operations per job in this run (run edge, single and native)");
        return;
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for s in &models {
        for pl in &s.plans {
            let shards = format!(
                "{}{} (req {}, CPU {})",
                pl.shards,
                if pl.over_max_shards { " > 256!" } else { "" },
                num(Some(pl.shards_by_requests), 1),
                num(pl.shards_by_cpu, 1)
            );
            rows.push(vec![
                s.measured.name(),
                rate_str(pl.rate),
                pl.do_requests_per_s.map_or("n/a".into(), rate_str),
                shards,
                pl.queue_messages_per_s.map_or("n/a".into(), rate_str),
                pl.queues.to_string(),
                num(pl.consumer_invocations, 0),
                pl.native_consumers.map_or("—".into(), |n| n.to_string()),
                if s.measured.lane == Lane::Native { rate_str(pl.upstash_commands_per_s) } else { "—".into() },
                if s.measured.lane == Lane::Native { pl.upstash_databases.to_string() } else { "—".into() },
                money(pl.cost.total_usd),
                if s.measured.lane == Lane::Native { money(pl.cost.upstash_payg_usd) } else { "—".into() },
                if pl.exceeded.is_empty() { "none".into() } else { pl.exceeded.join("; ") },
            ]);
        }
    }
    print_rows(
        &[
            "scenario",
            "jobs/s",
            "DO req/s",
            "shards needed",
            "queue msg/s",
            "queues",
            "consumer inv.",
            "native consumers",
            "Upstash cmd/s",
            "Upstash DBs",
            "US$/month",
            "of it Upstash",
            "exceeded with 16 shards, 1 queue, 1 DB",
        ],
        &rows,
    );

    println!();
    println!("  what binds first (today: {} shards, one queue, one Upstash database):", a.default_shards);
    let mut first_rows: Vec<Vec<String>> = Vec::new();
    for s in &models {
        let ceilings: Vec<String> = s.checks.iter().map(|c| format!("{} {}", c.limit, rate_str(c.ceiling()))).collect();
        let lift =
            s.binds_first.as_ref().and_then(|(l, _)| s.checks.iter().find(|c| c.limit == l)).map_or("", |c| c.lift);
        first_rows.push(vec![
            s.measured.name(),
            s.binds_first.as_ref().map_or("n/a".into(), |(l, c)| format!("{l} at {} jobs/s", rate_str(*c))),
            ceilings.join(", "),
            lift.to_owned(),
        ]);
    }
    print_rows(&["scenario", "binds first", "jobs/s each limit allows today", "what lifts it"], &first_rows);

    println!();
    println!(
        "  shards (SHARD_COUNT, ids address at most {MAX_SHARDS}; grow online before the rate reaches what the count carries):"
    );
    let mut grow_rows: Vec<Vec<String>> = Vec::new();
    for s in &models {
        let Some(per) = s.per_shard_jobs_per_s else { continue };
        let per_by = |limit: &str| {
            s.checks.iter().find(|c| c.limit == limit).map_or("n/a".into(), |c| rate_str(c.per_unit / c.per_job))
        };
        grow_rows.push(vec![
            s.measured.name(),
            format!(
                "{} (requests {}, CPU {})",
                rate_str(per),
                per_by("DO requests/s per shard"),
                per_by("DO CPU per shard (single thread)")
            ),
            rate_str(per * 16.0),
            rate_str(per * 64.0),
            rate_str(per * f64::from(MAX_SHARDS)),
            s.plans.iter().map(|p| format!("{} → {}", rate_str(p.rate), p.shards)).collect::<Vec<_>>().join(", "),
        ]);
    }
    print_rows(&["scenario", "jobs/s per shard", "16 carry", "64 carry", "256 carry", "shards needed"], &grow_rows);

    println!();
    println!("  per-request sizes, from the code's own encoders (limits per request, not per second):");
    let mut size_rows: Vec<Vec<String>> = size_checks(l)
        .into_iter()
        .map(|c| {
            vec![
                c.what,
                format!("{:.0} bytes", c.bytes),
                format!("{:.0} bytes: {}", c.limit.value, c.limit.what),
                if c.bytes <= c.limit.value { "within".into() } else { "EXCEEDS".into() },
            ]
        })
        .collect();
    for s in models.iter().filter(|s| s.measured.lane == Lane::Edge && s.measured.enqueue == Enqueue::Batch) {
        if let Some(ms) = consumer_invocation_cpu_ms(&s.measured, l) {
            size_rows.push(vec![
                format!(
                    "consumer invocation CPU: {} messages × {ENVELOPE_MAX} jobs at {} µs (edge lane)",
                    l.queue_consumer_batch.value,
                    num(s.measured.cpu_s_per_job.map(|x| x * 1e6), 0)
                ),
                format!("{ms:.0} ms"),
                format!("{:.0} ms: {}", l.worker_cpu_ms_per_invocation.value, l.worker_cpu_ms_per_invocation.what),
                if ms <= l.worker_cpu_ms_per_invocation.value { "within".into() } else { "EXCEEDS".into() },
            ]);
        }
    }
    print_rows(&["what", "size", "limit", ""], &size_rows);

    println!();
    for s in &models {
        if !s.missing.is_empty() {
            println!("  note: {}: no figure for {} (left out of its limits)", s.measured.name(), s.missing.join(", "));
        }
        let billed = s.measured.ops.upstash_per_job();
        let executed = s.measured.ops.per_job("redis_commands");
        if let (Lane::Native, Some(billed), Some(executed)) = (s.measured.lane, billed, executed)
            && executed > billed
        {
            println!(
                "  note: {}: redis-server ran {executed:.2} commands per job against {billed:.2} sent (a script is one \
                 command sent, its calls run inside); if Upstash's {} cmd/s counted those, one database would carry {} \
                 jobs/s, not {}",
                s.measured.name(),
                l.upstash_commands_per_s.value,
                rate_str(l.upstash_commands_per_s.value * a.utilization / executed),
                rate_str(l.upstash_commands_per_s.value * a.utilization / billed.max(f64::MIN_POSITIVE))
            );
        }
        if s.measured.lane == Lane::Native {
            println!(
                "  note: {}: native consumers = jobs/s ÷ {} jobs/s (one consumer at concurrency {}, {} ms jobs, from {}); \
                 longer jobs need proportionally more",
                s.measured.name(),
                num(s.measured.consumer_jobs_per_s, 0),
                num(s.measured.consumer_concurrency, 0),
                num(s.measured.job_ms, 0),
                s.measured.from
            );
        }
    }
    let payg_per_cmd_s = a.seconds_per_month * USD_PER_M_UPSTASH_COMMANDS / 1e6;
    println!(
        "  note: Upstash pay-as-you-go costs ${payg_per_cmd_s:.2}/month per command/s sustained: above {:.0} cmd/s one \
         flat Fixed database (largest: ${:.0}/month, bandwidth-capped; 10,000 cmd/s each) costs less, so the US$/month \
         above is an upper bound for the native lane",
        p.upstash_fixed_largest_usd_per_month.value / payg_per_cmd_s,
        p.upstash_fixed_largest_usd_per_month.value
    );
    for s in models.iter().filter(|s| s.measured.lane == Lane::Edge) {
        let per_job = a.rate_limit_commands_per_request / s.measured.jobs_per_request;
        let cap = l.upstash_commands_per_s.value * a.utilization / per_job;
        println!(
            "  note: with RATE_LIMIT set, {} adds {per_job:.2} Upstash commands per job ({} per request, not counted \
             by the bench): one database then caps it at {} jobs/s",
            s.measured.name(),
            a.rate_limit_commands_per_request,
            rate_str(cap)
        );
    }
    println!(
        "  assumptions: consumer invocation {:.0} ms wall, {} message(s) per delivery (worst case), all shards active \
         all month, CPU per job = the local workerd Worker process's (Worker and shards on one thread: an upper bound \
         for a shard), native single enqueue = native batch + (edge single − edge batch); free allowances ignored \
         (under 1% at 1,000 jobs/s)",
        a.consumer_invocation_s * 1e3,
        a.messages_per_delivery
    );
    println!(
        "  prices: ops.rs as of {PRICES_AS_OF} (Workers ${USD_PER_M_WORKER_REQUESTS}/M requests, DO \
         ${USD_PER_M_DO_REQUESTS}/M requests, ${USD_PER_M_ROWS_WRITTEN}/M rows written, ${USD_PER_M_ROWS_READ}/M rows \
         read, Queues ${USD_PER_M_QUEUE_OPS}/M ops × {QUEUE_OPS_PER_MESSAGE}, Upstash ${USD_PER_M_UPSTASH_COMMANDS}/M \
         commands; {}) plus, read {READ_ON}:",
        PRICE_SOURCES.join(", ")
    );
    for d in [
        p.workers_paid_usd_per_month,
        p.usd_per_m_cpu_ms,
        p.do_usd_per_m_gb_s,
        p.do_billed_gb,
        p.upstash_usd_per_extra_database,
        p.upstash_prod_pack_usd_per_database,
        p.upstash_fixed_largest_usd_per_month,
    ] {
        println!("    {} = {} ({}, read {})", d.what, d.value, d.url, d.read);
    }
    println!("  limits, read {READ_ON}:");
    for d in [
        l.do_requests_per_s,
        l.do_cpu_s_per_s,
        l.queue_messages_per_s,
        l.queue_consumer_batch,
        l.queue_consumer_concurrency,
        l.queue_message_bytes,
        l.queue_billing_unit_bytes,
        l.queues_per_account,
        l.worker_cpu_ms_per_invocation,
        l.upstash_commands_per_s,
        l.upstash_request_bytes,
        l.upstash_databases,
    ] {
        println!("    {} = {} ({}, read {})", d.what, d.value, d.url, d.read);
    }
    println!();
}

// ---------------------------------------------------------------------------------------
// `--model [FILE]`: the model of a saved run, no stack.
// ---------------------------------------------------------------------------------------

/// `Some(file)` when the command line asks for the model of a saved run (`--model`, with
/// an optional file; default `target/bench/latest.json`).
pub fn requested(args: &[String], root: &Path) -> Option<PathBuf> {
    let i = args.iter().position(|a| a == "--model")?;
    Some(
        args.get(i + 1)
            .filter(|f| !f.starts_with("--"))
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/bench/latest.json")),
    )
}

pub fn run_file(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let report: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    println!("model of {}", path.display());
    print(&report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(per_job: &[(&str, f64)]) -> Ops {
        let by = MEASURES
            .iter()
            .map(|m| {
                let v = per_job.iter().find(|(k, _)| *k == m.key).map(|(_, v)| *v).or(Some(0.0));
                (m.key, OpDelta { raw: None, reads: 0, overhead: 0.0, net: None, per_job: v })
            })
            .collect();
        Ops { jobs: 1_000.0, by, settled: true }
    }

    fn measured(lane: Lane, per_job: &[(&str, f64)], cpu_s: f64) -> Measured {
        Measured {
            lane,
            enqueue: Enqueue::Batch,
            from: "test".into(),
            ops: ops(per_job),
            jobs_per_request: 100.0,
            cpu_s_per_job: Some(cpu_s),
            consumer_jobs_per_s: Some(1_600.0),
            consumer_concurrency: Some(250.0),
            job_ms: Some(100.0),
        }
    }

    fn run(m: &Measured) -> ScenarioModel {
        model(m, &RATES, &LIMITS, &PRICES, &ASSUME)
    }

    const EDGE: &[(&str, f64)] = &[
        ("worker_requests", 0.03),
        ("do_requests", 0.05),
        ("queue_messages_sent", 0.01),
        ("queue_messages_received", 0.01),
        ("do_rows_written", 3.0),
        ("do_rows_read", 10.0),
    ];

    #[test]
    fn doubling_do_requests_per_job_doubles_the_shards_they_need() {
        // CPU small enough that requests decide.
        let one = run(&measured(Lane::Edge, &[("do_requests", 1.0)], 1e-6));
        let two = run(&measured(Lane::Edge, &[("do_requests", 2.0)], 1e-6));
        for (a, b) in one.plans.iter().zip(&two.plans) {
            assert!((b.shards_by_requests - 2.0 * a.shards_by_requests).abs() < 1e-9);
        }
        // 100,000 jobs/s × 1 DO request ÷ (1,000 × 0.7) = 142.9 → 143 shards; twice → 286.
        assert_eq!(one.plans[2].shards, 143);
        assert_eq!(two.plans[2].shards, 286);
        assert!(!one.plans[2].over_max_shards);
        assert!(two.plans[2].over_max_shards, "more than 256 shards is flagged");
        assert_eq!(one.binds_first.as_ref().map(|b| b.0.as_str()), Some("DO requests/s per shard"));
    }

    #[test]
    fn the_binding_limit_moves_to_what_grew() {
        // Batch-enqueue edge lane: 0.05 DO requests, 0.01 messages, 100 µs CPU per job.
        let base = run(&measured(Lane::Edge, EDGE, 100e-6));
        // Ceilings today: requests 16 × 700 / 0.05 = 224k; CPU 16 × 0.7 / 1e-4 = 112k;
        // queue 3,500 / 0.01 = 350k; consumers 175 / (0.01 × 0.05) = 350k.
        let (limit, ceiling) = base.binds_first.clone().expect("a binding limit");
        assert_eq!(limit, "DO CPU per shard (single thread)");
        assert!((ceiling - 112_000.0).abs() < 1e-6);
        // Ten times the messages per job (single enqueue's small envelopes): the queue binds.
        let mut more_msgs = EDGE.to_vec();
        more_msgs[2] = ("queue_messages_sent", 0.1);
        let q = run(&measured(Lane::Edge, &more_msgs, 100e-6));
        assert_eq!(q.binds_first.expect("binds").0, "queue messages/s per queue");
        assert_eq!(q.plans[2].queues, 3, "100k × 0.1 ÷ 3,500 = 2.9 queues");
        // The native lane adds Upstash: 3 commands per job bind at 10,000 × 0.7 ÷ 3.
        let mut native = EDGE.to_vec();
        native.push(("upstash_commands_edge", 1.0));
        native.push(("upstash_commands_consumer", 2.0));
        let n = run(&measured(Lane::Native, &native, 100e-6));
        let (limit, ceiling) = n.binds_first.clone().expect("binds");
        assert_eq!(limit, "Upstash commands/s per database");
        assert!((ceiling - 7_000.0 / 3.0).abs() < 1e-6);
        assert_eq!(n.plans[0].upstash_databases, 1);
        assert_eq!(n.plans[2].upstash_databases, 43, "300k cmd/s ÷ 7,000");
        assert_eq!(n.plans[2].native_consumers, Some(63), "100k ÷ 1,600 per consumer");
        assert!(n.plans[0].exceeded.is_empty(), "1,000 jobs/s fits today: {:?}", n.plans[0].exceeded);
        assert!(n.plans[1].exceeded[0].starts_with("Upstash commands/s per database"));
    }

    #[test]
    fn costs_scale_linearly_with_the_rate() {
        let s = run(&measured(Lane::Edge, EDGE, 100e-6));
        let (a, b, c) = (&s.plans[0].cost, &s.plans[1].cost, &s.plans[2].cost);
        let ops = |x: &MonthlyCost| x.operations_usd.expect("known");
        assert!((ops(b) - 10.0 * ops(a)).abs() < 1e-6 * ops(b));
        assert!((ops(c) - 100.0 * ops(a)).abs() < 1e-6 * ops(c));
        let cpu = |x: &MonthlyCost| x.cpu_usd.expect("known");
        assert!((cpu(c) - 100.0 * cpu(a)).abs() < 1e-6 * cpu(c));
        // Operations: the per-million figure of ops.rs times millions of jobs a month.
        let per_m = s.measured.ops.cost().total.expect("known");
        assert!((ops(a) - per_m * 1_000.0 * ASSUME.seconds_per_month / 1e6).abs() < 1e-6);
        // Doubling every operation doubles the operations cost.
        let doubled: Vec<(&str, f64)> = EDGE.iter().map(|(k, v)| (*k, v * 2.0)).collect();
        let d = run(&measured(Lane::Edge, &doubled, 100e-6));
        assert!((ops(&d.plans[1].cost) - 2.0 * ops(b)).abs() < 1e-6 * ops(b));
        // Duration: one active shard for a month is 2,592,000 s × 0.128 GB × $12.50/M GB-s.
        let per_shard = 2_592_000.0 * 0.128 * 12.5 / 1e6;
        assert!((c.do_duration_usd - s.plans[2].shards as f64 * per_shard).abs() < 1e-9);
        assert_eq!(c.total_usd, Some(ops(c) + cpu(c) + c.do_duration_usd + c.fixed_usd));
    }

    #[test]
    fn a_missing_counter_is_named_and_leaves_the_cost_unknown() {
        let mut m = measured(Lane::Edge, EDGE, 100e-6);
        m.ops.by.get_mut("queue_messages_sent").expect("measure").per_job = None;
        m.cpu_s_per_job = None;
        let s = run(&m);
        assert_eq!(s.missing, vec!["cpu", "queue_messages_sent"]);
        assert_eq!(s.plans[0].cost.total_usd, None);
        assert_eq!(s.binds_first.expect("still binds").0, "DO requests/s per shard");
    }

    #[test]
    fn a_saved_report_gives_four_scenarios() {
        let counters = |d: f64, q: f64, u: f64| {
            json!({ "jobs": 1000.0, "settled": true, "counters": {
                "worker_requests": { "per_job": 0.03 }, "do_requests": { "per_job": d },
                "do_rows_written": { "per_job": 3.0 }, "do_rows_read": { "per_job": 5.0 },
                "queue_messages_sent": { "per_job": q }, "queue_messages_received": { "per_job": q },
                "queue_jobs_sent": { "per_job": 1.0 },
                "upstash_commands_edge": { "per_job": u }, "upstash_commands_consumer": { "per_job": u },
                "consumer_edge_requests": { "per_job": 0.0 }, "redis_commands": { "per_job": 2.0 * u } } })
        };
        let cpu = |s: f64| json!({ "cpu_s_by_component": { WORKERD_WORKER: s } });
        let report = json!({
            "settings": { "batch_size": 100 },
            "scenarios": {
                "edge_lane": { "ops": counters(0.05, 0.01, 0.0), "cpu": cpu(0.2) },
                "single_enqueue": { "ops": counters(1.05, 0.3, 0.0), "jobs_created": 1000.0, "cpu_during_wrk": cpu(1.0) },
                "native_c25": { "ops": counters(0.2, 0.02, 1.5), "cpu": cpu(0.3), "jobs_per_s": 240.0, "concurrency": 25 },
                "native_c250": { "ops": counters(0.1, 0.01, 1.0), "cpu": cpu(0.3), "jobs_per_s": 1600.0,
                                 "concurrency": 250, "sleep_ms": 100 },
            }
        });
        let m = measured_from_report(&report);
        let names: Vec<String> = m.iter().map(Measured::name).collect();
        assert_eq!(
            names,
            [
                "edge lane, batch enqueue",
                "edge lane, single enqueue",
                "native lane, batch enqueue",
                "native lane, single enqueue"
            ]
        );
        assert_eq!(m[0].cpu_s_per_job, Some(0.2 / 1000.0));
        assert_eq!(m[2].from, "native_c250", "the faster native run");
        assert_eq!(m[2].consumer_jobs_per_s, Some(1600.0));
        assert_eq!(m[2].ops.upstash_per_job(), Some(2.0));
        // Native single: 0.1 + (1.05 − 0.05) DO requests per job.
        assert!((m[3].ops.per_job("do_requests").expect("known") - 1.1).abs() < 1e-12);
        assert!((m[3].cpu_s_per_job.expect("known") - (0.3 + 1.0 - 0.2) / 1000.0).abs() < 1e-12);
        // The JSON form has every scenario and rate.
        let v = to_json(&report);
        assert_eq!(v["scenarios"].as_array().map(Vec::len), Some(4));
        assert_eq!(v["scenarios"][0]["plans"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn per_request_sizes_are_within_the_documented_limits() {
        for c in size_checks(&LIMITS) {
            assert!(c.bytes > 0.0 && c.bytes <= c.limit.value, "{}: {} > {}", c.what, c.bytes, c.limit.value);
        }
    }

    #[test]
    fn model_takes_an_optional_file() {
        let root = Path::new("/r");
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(requested(&args(&["--quick"]), root), None);
        assert_eq!(requested(&args(&["--model"]), root), Some(PathBuf::from("/r/target/bench/latest.json")));
        assert_eq!(requested(&args(&["--model", "x.json"]), root), Some(PathBuf::from("x.json")));
        assert_eq!(requested(&args(&["--model", "--quick"]), root), Some(PathBuf::from("/r/target/bench/latest.json")));
    }
}
