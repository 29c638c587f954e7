//! Latency: enqueue-to-start and enqueue-to-complete of single jobs, from the job's own
//! timestamps (`GET /v1/jobs/{id}`: `created_at`, the first attempt's `started_at`,
//! `finished_at`), so the bench's own polling does not add to the figures.
//!
//! The pure parts ([`Percentiles`], [`JobTimes`], [`job_latency`]) are shared with the soak.

// Until the latency scenario (next commit) uses every function.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::{Value, json};

/// Nearest-rank percentiles of a set of samples (milliseconds in this bench).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (sorted in place; NaNs are left out). `None` when there
    /// is no sample. Nearest rank: the p-th percentile is the smallest sample with at least
    /// p % of the samples at or below it, so every figure is a value that was measured.
    pub fn of(samples: &mut [f64]) -> Option<Percentiles> {
        samples.sort_by(f64::total_cmp);
        let valid: &[f64] = {
            let start = samples.iter().position(|x| !x.is_nan()).unwrap_or(samples.len());
            let end = samples.iter().rposition(|x| !x.is_nan()).map_or(start, |i| i + 1);
            &samples[start..end.max(start)]
        };
        let n = valid.len();
        if n == 0 {
            return None;
        }
        let rank = |p: f64| {
            let r = (p / 100.0 * n as f64).ceil() as usize;
            valid[r.clamp(1, n) - 1]
        };
        Some(Percentiles { n, p50: rank(50.0), p90: rank(90.0), p99: rank(99.0), max: valid[n - 1] })
    }

    pub fn to_json(&self) -> Value {
        json!({ "n": self.n, "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max })
    }
}

/// [`Percentiles::of`] as JSON (`null` without samples).
pub fn percentiles_json(samples: &mut [f64]) -> Value {
    Percentiles::of(samples).map_or(Value::Null, |p| p.to_json())
}

/// An attempt's times, as `GET /v1/jobs/{id}` shows them (`shared/api/src/job.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct AttemptTimes {
    pub attempt: u32,
    pub started_at: String,
}

/// The fields of a job reply (`shared/api/src/job.rs`, `Job`) that latency needs.
#[derive(Debug, Clone, Deserialize)]
pub struct JobTimes {
    pub id: String,
    pub state: String,
    pub created_at: String,
    pub run_at: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub attempts: Vec<AttemptTimes>,
}

/// One job's latency, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobLatency {
    /// From enqueue (`created_at`, or `run_at` for a delayed job) to the first attempt's start.
    pub to_start_ms: f64,
    /// From enqueue to `finished_at`.
    pub to_complete_ms: f64,
}

/// Enqueue-to-start and enqueue-to-complete of a completed job, from its own timestamps;
/// `None` for a job that has not completed (or whose times do not parse).
pub fn job_latency(job: &JobTimes) -> Option<JobLatency> {
    use edgejobs_core::time::parse_rfc3339 as ms;
    if job.state != "completed" {
        return None;
    }
    // A job enqueued with a delay is due at run_at, not at created_at.
    let enqueued = ms(&job.created_at)?.max(ms(&job.run_at)?);
    // The first attempt's start: a retried job's started_at is its last attempt's.
    let started =
        job.attempts.iter().filter_map(|a| ms(&a.started_at)).chain(job.started_at.as_deref().and_then(ms)).min()?;
    let finished = ms(job.finished_at.as_deref()?)?;
    Some(JobLatency {
        to_start_ms: started.saturating_sub(enqueued) as f64,
        to_complete_ms: finished.saturating_sub(enqueued) as f64,
    })
}

/// Parses a `GET /v1/jobs/{id}` reply body.
pub fn parse_job(body: &str) -> anyhow::Result<JobTimes> {
    Ok(serde_json::from_str(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut v).expect("samples");
        assert_eq!((p.n, p.p50, p.p90, p.p99, p.max), (100, 50.0, 90.0, 99.0, 100.0));

        let mut v: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&mut v).expect("samples");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (100.0, 180.0, 198.0, 200.0));

        // Small sets: p99 of 10 samples is the largest; one sample is every percentile.
        let mut v = vec![5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0];
        let p = Percentiles::of(&mut v).expect("samples");
        assert_eq!((p.p50, p.p90, p.p99, p.max), (5.0, 9.0, 10.0, 10.0));
        let p = Percentiles::of(&mut [42.0]).expect("one");
        assert_eq!((p.n, p.p50, p.p99, p.max), (1, 42.0, 42.0, 42.0));

        // Nothing, or only NaNs: no percentiles; NaNs among samples are left out.
        assert_eq!(Percentiles::of(&mut []), None);
        assert_eq!(Percentiles::of(&mut [f64::NAN]), None);
        let p = Percentiles::of(&mut [f64::NAN, 3.0, 1.0, f64::NAN, 2.0]).expect("three");
        assert_eq!((p.n, p.p50, p.max), (3, 2.0, 3.0));
        assert_eq!(percentiles_json(&mut []), Value::Null);
    }

    fn job(v: Value) -> JobTimes {
        serde_json::from_value(v).expect("job")
    }

    #[test]
    fn latency_from_a_jobs_own_times() {
        let j = job(json!({
            "id": "j1", "type": "noop", "state": "completed",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:00.000Z",
            "started_at": "2026-12-06T03:00:00.012Z", "finished_at": "2026-12-06T03:00:00.020Z",
            "attempts": [{ "attempt": 1, "started_at": "2026-12-06T03:00:00.012Z",
                           "ended_at": "2026-12-06T03:00:00.020Z", "duration_ms": 8, "outcome": "completed" }],
        }));
        assert_eq!(job_latency(&j), Some(JobLatency { to_start_ms: 12.0, to_complete_ms: 20.0 }));

        // A retried job: to start is to its first attempt's start (started_at is the last's).
        let j = job(json!({
            "id": "j2", "state": "completed",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:00.000Z",
            "started_at": "2026-12-06T03:00:01.500Z", "finished_at": "2026-12-06T03:00:01.600Z",
            "attempts": [
                { "attempt": 1, "started_at": "2026-12-06T03:00:00.005Z" },
                { "attempt": 2, "started_at": "2026-12-06T03:00:01.500Z" },
            ],
        }));
        assert_eq!(job_latency(&j), Some(JobLatency { to_start_ms: 5.0, to_complete_ms: 1600.0 }));

        // A delayed job is measured from run_at, when it became due.
        let j = job(json!({
            "id": "j3", "state": "completed",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:05.000Z",
            "started_at": "2026-12-06T03:00:05.030Z", "finished_at": "2026-12-06T03:00:05.040Z",
        }));
        assert_eq!(job_latency(&j), Some(JobLatency { to_start_ms: 30.0, to_complete_ms: 40.0 }));

        // Not completed: no latency.
        let j = job(json!({
            "id": "j4", "state": "active",
            "created_at": "2026-12-06T03:00:00.000Z", "run_at": "2026-12-06T03:00:00.000Z",
            "started_at": "2026-12-06T03:00:00.010Z",
        }));
        assert_eq!(job_latency(&j), None);
    }
}
