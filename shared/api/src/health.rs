//! `GET /health` and `GET /health/live`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The edge's overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One check: `ok`, and what each check adds (latencies, ages, counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Check {
    pub ok: bool,
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

/// The checks of `GET /health`: those always present by name, the others (schedules,
/// job_types, and any a newer edge adds) in `more`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Checks {
    pub config: Check,
    pub shards: Check,
    pub queue: Check,
    pub upstash: Check,
    pub backup: Check,
    pub oldest_queued_job: Check,
    pub sweep: Check,
    #[serde(flatten)]
    pub more: BTreeMap<String, Check>,
}

impl Checks {
    /// Every check with its name, by name.
    pub fn all(&self) -> Vec<(&str, &Check)> {
        let mut all: Vec<(&str, &Check)> = vec![
            ("config", &self.config),
            ("shards", &self.shards),
            ("queue", &self.queue),
            ("upstash", &self.upstash),
            ("backup", &self.backup),
            ("oldest_queued_job", &self.oldest_queued_job),
            ("sweep", &self.sweep),
        ];
        all.extend(self.more.iter().map(|(k, v)| (k.as_str(), v)));
        all.sort_by_key(|(k, _)| *k);
        all
    }
}

/// `GET /health` (200 healthy or degraded, 503 unhealthy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Health {
    pub status: HealthStatus,
    /// Each check with its detail: only for an admin key or the metrics token (an
    /// anonymous or jobs-key answer is the status alone, which names no configuration
    /// problem, type or schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Checks>,
    pub checked_at: String,
    pub version: String,
}

/// `GET /health/live`: `{"status":"live"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Live {
    pub status: String,
}
