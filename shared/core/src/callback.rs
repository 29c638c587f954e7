//! The records of completion callbacks (#30) that a job (or its batch's row) carries: what
//! the callback job will be. In a module of their own, so the job record can carry them
//! without importing the rules of [`crate::callbacks`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::JobId;
use crate::lane::Lane;
use crate::retry::Backoff;
use crate::tenant::Tenant;
use crate::time::rfc3339_opt;

/// The two forms of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `webhook` job to a URL: the summary is its body.
    Url,
    /// A job spec: the summary goes into its payload under [`crate::callbacks::PAYLOAD_KEY`].
    Job,
}

/// A callback job ready to insert, as its job (or its batch's row) carries it: everything
/// the job will be but its times, its tenant (its job's) and the summary it gets. Header
/// values in `payload.headers` are sealed under `id`, which is fixed at enqueue for that
/// reason (the shard that fires it holds no key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub kind: Kind,
    /// The callback job's id, in its job's shard.
    pub id: JobId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub lane: Lane,
    pub payload: Value,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_group: Option<String>,
    /// How long after the firing the callback job first runs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// When its job's shard inserted the callback job: it fires once.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A batch that `POST /v1/jobs/batch` opens with its `on_complete` (carried by the create
/// to the batch's shard, which keeps it in its `batches` table beside the counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOpen {
    /// `b` + the shard (2 hex digits) + the creation time in ms (11) + 64 random bits (16):
    /// a job id's layout, so the batch names its shard.
    pub id: String,
    pub tenant: Tenant,
    pub on_complete: Callback,
}
