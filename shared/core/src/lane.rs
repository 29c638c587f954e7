//! Where a job runs: the edge lane or the native lane (its own module, so the records a job
//! carries can name a lane without importing the job).

use serde::{Deserialize, Serialize};

/// Where a job type runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// Short jobs, run by the edge queue consumer.
    Edge,
    /// Long jobs, handed to the Upstash stream and run by the native consumer.
    Native,
}

impl Lane {
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Edge => "edge",
            Lane::Native => "native",
        }
    }
}
