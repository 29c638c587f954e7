//! Flow control's replies and request bodies (#28): one key's state (`GET /v1/flow`), the
//! busiest keys (`GET /v1/flow/busiest`), a pause or resume (`POST /v1/admin/flow/pause`,
//! `.../resume`), and the flow fields a job spec may carry.

use serde::{Deserialize, Serialize};

/// `GET /v1/flow?key=&tenant=`: what the key's shard knows of one key of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FlowKey {
    pub tenant: String,
    pub key: String,
    /// Jobs holding a slot of the key (sent to their lane or running).
    pub running: u64,
    /// The concurrency limit the key's newest job named (0: no concurrency job seen).
    pub limit: u64,
    /// Jobs waiting for a slot of the key.
    pub waiting: u64,
    /// Jobs waiting for the key's rate.
    pub rate_waiting: u64,
    /// When the rate lets the next job start; `null` when nothing waits for it.
    #[cfg_attr(test, schemars(required))]
    pub rate_next_at: Option<String>,
    /// Jobs parked while the key is paused.
    pub parked: u64,
    pub paused: bool,
}

/// One of the busiest keys: `kind` is `concurrency`, `rate`, `paused` (a paused key's
/// parked jobs) or `paused_type` (`key` is then the type's name and `tenant` empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BusyKey {
    pub kind: String,
    pub tenant: String,
    pub key: String,
    pub running: u64,
    pub limit: u64,
    pub waiting: u64,
}

/// `GET /v1/flow/busiest?n=`: the keys with the most waiting jobs across the shards, most
/// first (ties: most running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BusyKeys {
    pub keys: Vec<BusyKey>,
}

/// `POST /v1/admin/flow/pause` and `.../resume`'s body: a key of a tenant (`tenant`
/// defaults to `default`), or a job type (paused everywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FlowPauseRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub job_type: Option<String>,
}

/// A pause's or resume's answer: whether anything changed (false: it already was so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct FlowChanged {
    pub changed: bool,
}

/// `POST /v1/events`'s answer (202): how many waiting workflow runs the event resumed, and
/// whether it repeated an earlier send with the same `id` (then nothing new happened, and
/// `resumed` counts the earlier send's matches that were delivered again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct EventSent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub duplicate: bool,
    pub resumed: u32,
    /// The jobs the event started (types declared with `on_event`); a repeated id answers
    /// the same jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<String>,
}
