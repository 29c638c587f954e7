//! A job's stream chunks as its shard handles them in one transaction (#30; see
//! [`crate::live`]): in a module of their own, so the job record can carry them without
//! importing the live rules.

use serde::{Deserialize, Serialize};

/// The job's stored chunks as its shard loaded them (the newest number and the bytes kept),
/// and the chunks an accepted update adds in this transaction. Never stored in the job
/// document: the shard fills `n` and `bytes` from its `live` table before applying updates,
/// and writes `out` as rows with the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tape {
    pub n: u64,
    pub bytes: u64,
    pub out: Vec<Row>,
}

/// One stored chunk row: its number in the job's stream, the attempt that emitted it (a
/// retry's chunks follow the failed attempt's: a reader starts over when it changes), when,
/// which stream, the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub n: u64,
    pub attempt: u32,
    pub at: u64,
    pub stream: String,
    pub data: String,
}
