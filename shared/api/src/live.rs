//! The data of a job stream's Server-Sent Events (#30): `state` and `chunk`. The stream is
//! `text/event-stream` in `openapi.json`; README "Live results" documents these bodies.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::JobState;

/// A job's state as a `state` event carries it: what changed shows here, the rest is
/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub state: JobState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    pub updated_at: String,
}

/// A piece of a job's stream (such as an LLM's tokens) as a `chunk` event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub attempt: u32,
    pub stream: String,
    pub data: String,
}
