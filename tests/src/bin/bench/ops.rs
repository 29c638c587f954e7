//! Operations per job, counted by the system itself, and what they cost at published prices.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use crate::prom::Prom;

// ---------------------------------------------------------------------------------------
// Prices. Published list prices as of 2026-11-23, read from:
//   https://developers.cloudflare.com/workers/platform/pricing/
//   https://developers.cloudflare.com/durable-objects/platform/pricing/
//   https://developers.cloudflare.com/queues/platform/pricing/
//   https://upstash.com/pricing/redis
// Included free allowances, duration/CPU-time charges and storage (GB-month) are ignored:
// the estimate is the marginal cost of operations and row writes/reads per job.
// ---------------------------------------------------------------------------------------

pub const PRICES_AS_OF: &str = "2026-11-23";
pub const PRICE_SOURCES: &[&str] = &[
    "https://developers.cloudflare.com/workers/platform/pricing/",
    "https://developers.cloudflare.com/durable-objects/platform/pricing/",
    "https://developers.cloudflare.com/queues/platform/pricing/",
    "https://upstash.com/pricing/redis",
];
/// Workers Paid: US$0.30 per million requests.
pub const USD_PER_M_WORKER_REQUESTS: f64 = 0.30;
/// Durable Objects: US$0.15 per million requests (alarms and RPC calls included).
pub const USD_PER_M_DO_REQUESTS: f64 = 0.15;
/// Durable Objects SQLite storage: US$1.00 per million rows written.
pub const USD_PER_M_ROWS_WRITTEN: f64 = 1.00;
/// Durable Objects SQLite storage: US$0.001 per million rows read.
pub const USD_PER_M_ROWS_READ: f64 = 0.001;
/// Queues: US$0.40 per million operations.
pub const USD_PER_M_QUEUE_OPS: f64 = 0.40;
/// Queues: a message costs a write, a read and a delete per 64 KB (ours are far smaller).
pub const QUEUE_OPS_PER_MESSAGE: f64 = 3.0;
/// Upstash pay-as-you-go: US$0.20 per 100,000 commands.
pub const USD_PER_M_UPSTASH_COMMANDS: f64 = 2.00;

// ---------------------------------------------------------------------------------------
// What we count. Each measure is read from the edge's /metrics, a consumer's /metrics, or
// redis-server's own command statistics.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Edge,
    Consumer,
    Redis,
}

#[derive(Debug)]
pub struct Measure {
    pub key: &'static str,
    pub source: Source,
    pub family: &'static str,
    pub what: &'static str,
}

pub const MEASURES: &[Measure] = &[
    Measure {
        key: "worker_requests",
        source: Source::Edge,
        family: "edgejobs_worker_invocations_total",
        what: "Worker requests (fetch, queue and scheduled invocations)",
    },
    Measure {
        key: "do_requests",
        source: Source::Edge,
        family: "edgejobs_do_requests_total",
        what: "Durable Object requests, alarms included",
    },
    Measure {
        key: "do_rows_written",
        source: Source::Edge,
        family: "edgejobs_do_rows_written_total",
        what: "SQLite rows written",
    },
    Measure {
        key: "do_rows_read",
        source: Source::Edge,
        family: "edgejobs_do_rows_read_total",
        what: "SQLite rows read",
    },
    Measure {
        key: "queue_messages_sent",
        source: Source::Edge,
        family: "edgejobs_queue_messages_sent_total",
        what: "queue messages sent",
    },
    Measure {
        key: "queue_jobs_sent",
        source: Source::Edge,
        family: "edgejobs_queue_jobs_sent_total",
        what: "job references sent to the queue (one message may carry several)",
    },
    Measure {
        key: "queue_messages_received",
        source: Source::Edge,
        family: "edgejobs_queue_messages_received_total",
        what: "queue messages received (deliveries)",
    },
    Measure {
        key: "upstash_commands_edge",
        source: Source::Edge,
        family: "edgejobs_upstash_commands_total",
        what: "Upstash commands the edge sent",
    },
    Measure {
        key: "upstash_commands_consumer",
        source: Source::Consumer,
        family: "edgejobs_consumer_upstash_commands_total",
        what: "Upstash commands the consumer sent",
    },
    Measure {
        key: "consumer_edge_requests",
        source: Source::Consumer,
        family: "edgejobs_consumer_edge_requests_total",
        what: "requests the consumer made to the edge (already among the Worker requests)",
    },
    Measure {
        key: "redis_commands",
        source: Source::Redis,
        family: "",
        what: "commands redis-server executed (its INFO commandstats; a cross-check of the Upstash counts)",
    },
];

/// One read of every counter, and how many reads came before it (each read of the edge's
/// `/metrics` costs Worker and Durable Object requests itself; those are subtracted).
#[derive(Debug, Clone)]
pub struct Snap {
    /// Reads of the edge's `/metrics` so far, this one included (failed attempts count too).
    pub reads: u64,
    pub at: Instant,
    pub edge: Prom,
    /// `None`: no consumer runs (its counts are 0); `Some(None)`: it did not answer.
    pub consumer: Option<Option<Prom>>,
    pub redis_commands: Option<f64>,
    pub settled: bool,
}

impl Snap {
    pub fn value(&self, m: &Measure) -> Option<f64> {
        match m.source {
            Source::Edge => self.edge.sum(m.family),
            Source::Consumer => match &self.consumer {
                None => Some(0.0),
                Some(p) => p.as_ref()?.sum(m.family),
            },
            Source::Redis => self.redis_commands,
        }
    }

    pub fn completed(&self, job_type: &str) -> Option<f64> {
        self.edge.sum_where("edgejobs_jobs_completed_total", "type", job_type)
    }

    pub fn enqueued(&self, job_type: &str) -> Option<f64> {
        self.edge.sum_where("edgejobs_jobs_enqueued_total", "type", job_type)
    }

    /// Counters that only move while jobs move; a settled read has them unchanged.
    pub fn job_counters(&self) -> [Option<f64>; 3] {
        [
            self.edge.sum("edgejobs_jobs_enqueued_total"),
            self.edge.sum("edgejobs_jobs_completed_total"),
            self.edge.sum("edgejobs_attempts_total"),
        ]
    }
}

/// Per-read cost of reading the counters (one edge `/metrics` + one redis INFO), by measure.
pub type Overhead = BTreeMap<&'static str, f64>;

/// A measure's change over a scenario, with the reads' own cost taken out.
#[derive(Debug, Clone)]
pub struct OpDelta {
    pub raw: Option<f64>,
    pub reads: u64,
    pub overhead: f64,
    pub net: Option<f64>,
    pub per_job: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Ops {
    pub jobs: f64,
    pub by: BTreeMap<&'static str, OpDelta>,
    pub settled: bool,
}

impl Ops {
    pub fn between(before: &Snap, after: &Snap, overhead: &Overhead, jobs: f64) -> Ops {
        let reads = after.reads.saturating_sub(before.reads);
        let by = MEASURES
            .iter()
            .map(|m| {
                let raw = before.value(m).zip(after.value(m)).map(|(b, a)| a - b);
                let oh = overhead.get(m.key).copied().unwrap_or(0.0);
                let net = raw.map(|r| (r - oh * reads as f64).max(0.0));
                let per_job = net.filter(|_| jobs > 0.0).map(|n| n / jobs);
                (m.key, OpDelta { raw, reads, overhead: oh, net, per_job })
            })
            .collect();
        Ops { jobs, by, settled: before.settled && after.settled }
    }

    pub fn per_job(&self, key: &str) -> Option<f64> {
        self.by.get(key).and_then(|d| d.per_job)
    }

    /// Upstash commands per job, edge and consumer together.
    pub fn upstash_per_job(&self) -> Option<f64> {
        Some(self.per_job("upstash_commands_edge")? + self.per_job("upstash_commands_consumer")?)
    }

    pub fn cost(&self) -> Cost {
        let parts: [(&str, Option<f64>, f64); 4] = [
            ("worker_requests", self.per_job("worker_requests"), USD_PER_M_WORKER_REQUESTS),
            ("do_requests", self.per_job("do_requests"), USD_PER_M_DO_REQUESTS),
            (
                "queue_operations",
                self.per_job("queue_messages_sent").map(|m| m * QUEUE_OPS_PER_MESSAGE),
                USD_PER_M_QUEUE_OPS,
            ),
            ("upstash_commands", self.upstash_per_job(), USD_PER_M_UPSTASH_COMMANDS),
        ];
        let storage: [(&str, Option<f64>, f64); 2] = [
            ("rows_written", self.per_job("do_rows_written"), USD_PER_M_ROWS_WRITTEN),
            ("rows_read", self.per_job("do_rows_read"), USD_PER_M_ROWS_READ),
        ];
        let part = |items: &[(&str, Option<f64>, f64)]| -> CostPart {
            // Per job × US$ per million = US$ per million jobs.
            // `+ 0.0`: an empty float sum is -0.0.
            let known: f64 = items.iter().filter_map(|(_, n, p)| n.map(|n| n * p)).sum::<f64>() + 0.0;
            let missing: Vec<String> =
                items.iter().filter(|(_, n, _)| n.is_none()).map(|(k, _, _)| k.to_string()).collect();
            let by: BTreeMap<String, Option<f64>> =
                items.iter().map(|(k, n, p)| (k.to_string(), n.map(|n| n * p))).collect();
            CostPart { usd: missing.is_empty().then_some(known), known_usd: known, missing, by }
        };
        let operations = part(&parts);
        let storage_writes = part(&storage);
        let total = operations.usd.zip(storage_writes.usd).map(|(a, b)| a + b);
        Cost { operations, storage_writes, total }
    }

    pub fn to_json(&self) -> Value {
        let by: serde_json::Map<String, Value> = self
            .by
            .iter()
            .map(|(k, d)| {
                (
                    k.to_string(),
                    json!({ "raw_delta": d.raw, "counter_reads": d.reads, "per_read_overhead": d.overhead,
                            "net": d.net, "per_job": d.per_job }),
                )
            })
            .collect();
        json!({
            "jobs": self.jobs,
            "settled": self.settled,
            "per_job": {
                "worker_requests": self.per_job("worker_requests"),
                "do_requests": self.per_job("do_requests"),
                "queue_messages": self.per_job("queue_messages_sent"),
                "queue_messages_received": self.per_job("queue_messages_received"),
                "queue_jobs_sent": self.per_job("queue_jobs_sent"),
                "upstash_commands": self.upstash_per_job(),
                "upstash_commands_edge": self.per_job("upstash_commands_edge"),
                "upstash_commands_consumer": self.per_job("upstash_commands_consumer"),
                "consumer_edge_requests": self.per_job("consumer_edge_requests"),
                "do_rows_written": self.per_job("do_rows_written"),
                "do_rows_read": self.per_job("do_rows_read"),
                "redis_commands": self.per_job("redis_commands"),
            },
            "counters": by,
            "cost_usd_per_million_jobs": self.cost().to_json(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct CostPart {
    pub usd: Option<f64>,
    pub known_usd: f64,
    pub missing: Vec<String>,
    pub by: BTreeMap<String, Option<f64>>,
}

impl CostPart {
    pub fn to_json(&self) -> Value {
        json!({ "usd": self.usd, "known_part_usd": self.known_usd, "missing": self.missing, "by": self.by })
    }
}

#[derive(Debug, Clone)]
pub struct Cost {
    pub operations: CostPart,
    pub storage_writes: CostPart,
    pub total: Option<f64>,
}

impl Cost {
    pub fn to_json(&self) -> Value {
        json!({ "operations": self.operations.to_json(), "storage_writes": self.storage_writes.to_json(),
                "total": self.total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(reads: u64, edge: &str, redis: Option<f64>) -> Snap {
        Snap {
            reads,
            at: Instant::now(),
            edge: Prom::parse(edge),
            consumer: None,
            redis_commands: redis,
            settled: true,
        }
    }

    #[test]
    fn operations_per_job_subtract_the_reads_and_keep_missing_counters_missing() {
        let before = snap(
            10,
            "edgejobs_do_requests_total{op=\"create\"} 100\nedgejobs_worker_invocations_total{kind=\"fetch\"} 50\n",
            Some(1_000.0),
        );
        let after = snap(
            14,
            "edgejobs_do_requests_total{op=\"create\"} 200\nedgejobs_do_requests_total{op=\"alarm\"} 68\n\
             edgejobs_worker_invocations_total{kind=\"fetch\"} 150\n",
            Some(1_004.0),
        );
        let overhead: Overhead = [("do_requests", 17.0), ("worker_requests", 1.0), ("redis_commands", 1.0)].into();
        let ops = Ops::between(&before, &after, &overhead, 100.0);
        // 168 raw DO requests, 4 reads × 17 of them were ours.
        assert_eq!(ops.per_job("do_requests"), Some(1.0));
        assert_eq!(ops.per_job("worker_requests"), Some(0.96));
        assert_eq!(ops.per_job("redis_commands"), Some(0.0));
        assert_eq!(ops.per_job("queue_messages_sent"), None);
        // No consumer ran: its counts are 0, not missing.
        assert_eq!(ops.per_job("upstash_commands_consumer"), Some(0.0));
        assert_eq!(ops.upstash_per_job(), None);
        let cost = ops.cost();
        assert_eq!(cost.total, None);
        assert_eq!(cost.operations.usd, None);
        let known = 0.96 * USD_PER_M_WORKER_REQUESTS + 1.0 * USD_PER_M_DO_REQUESTS;
        assert!((cost.operations.known_usd - known).abs() < 1e-12);
        assert_eq!(cost.operations.missing, vec!["queue_operations".to_owned(), "upstash_commands".to_owned()]);
    }

    #[test]
    fn cost_per_million_jobs_adds_operations_and_storage() {
        let before = snap(
            0,
            "edgejobs_worker_invocations_total 0\nedgejobs_do_requests_total 0\nedgejobs_do_rows_written_total 0\n\
             edgejobs_do_rows_read_total 0\nedgejobs_queue_messages_sent_total 0\nedgejobs_upstash_commands_total 0\n",
            None,
        );
        let after = snap(
            0,
            "edgejobs_worker_invocations_total 30\nedgejobs_do_requests_total 40\nedgejobs_do_rows_written_total 300\n\
             edgejobs_do_rows_read_total 1000\nedgejobs_queue_messages_sent_total 10\nedgejobs_upstash_commands_total 0\n",
            None,
        );
        let cost = Ops::between(&before, &after, &Overhead::new(), 1_000.0).cost();
        // Per job: 0.03 Worker requests, 0.04 DO requests, 0.03 queue operations, 0.3 rows written, 1 row read.
        let ops = 0.03 * 0.30 + 0.04 * 0.15 + 0.03 * 0.40;
        let rows = 0.3 * 1.00 + 1.0 * 0.001;
        assert!((cost.operations.usd.expect("known") - ops).abs() < 1e-12);
        assert!((cost.storage_writes.usd.expect("known") - rows).abs() < 1e-12);
        assert!((cost.total.expect("known") - (ops + rows)).abs() < 1e-12);
    }
}
