//! Edge-lane job handlers. A handler gets the job and returns a result or a failure that
//! says how to retry.

use edgejobs_core::Job;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Disposition;
use serde_json::{Value, json};

/// Why an attempt failed, and whether to retry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub error: String,
    pub disposition: Disposition,
}

pub type Outcome = std::result::Result<Option<Value>, Failure>;

/// Runs the handler of an edge-lane job type.
pub async fn run(job: &Job, _cfg: &EdgeConfig) -> Outcome {
    match job.job_type.as_str() {
        "noop" => Ok(Some(json!({ "ok": true }))),
        other => {
            Err(Failure { error: format!("no edge handler for type {other:?}"), disposition: Disposition::Permanent })
        }
    }
}
