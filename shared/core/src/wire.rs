//! Messages between the edge's parts: the queue message body and the shard's internal API.

use serde::{Deserialize, Serialize};

use crate::id::JobId;

/// The body of a message on the `jobs` queue: "run attempt `attempt` of job `id`".
/// Duplicate deliveries are harmless: the shard accepts the start of an attempt once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub id: JobId,
    pub attempt: u32,
}

/// The position after which a job listing continues: newest first, ordered by
/// `(created_at, id)` descending. Encoded for clients as `"<created_ms>.<id>"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub created_ms: u64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (ms, id) = s.split_once('.')?;
        let id: JobId = id.parse().ok()?;
        Some(Cursor { created_ms: ms.parse().ok()?, id: id.to_string() })
    }
}

/// A query for jobs in one shard (the router fans it out over all shards and merges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    pub state: Option<crate::job::JobState>,
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    /// Only jobs created in `[from_ms, to_ms)`.
    #[serde(default)]
    pub from_ms: Option<u64>,
    #[serde(default)]
    pub to_ms: Option<u64>,
    pub after: Option<Cursor>,
    pub limit: u32,
}
