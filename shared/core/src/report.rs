//! The native consumer's reports to the edge, in batches: `POST /v1/internal/events` carries
//! many events (start, reclaim, heartbeat, complete, fail) for many jobs; the edge groups them
//! per shard, applies each shard's in one call, and answers every event on its own (each is
//! still fenced by its attempt). Answers carry the edge's lease, so every consumer uses the
//! lease the edge decides takeovers with. Every report but a start or a takeover carries the
//! lease token the attempt's start answered with (`job.lease`): only its holder may report.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::machine::Event;
use crate::protocol::Applied;

/// Most events one report request may carry.
pub const MAX_EVENTS: usize = 500;

/// The body of `POST /v1/internal/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    pub events: Vec<Report>,
}

/// Longest lease token a report may carry (the shard issues 32 hex digits).
pub const MAX_LEASE_BYTES: usize = 64;

/// One consumer report (defined beside the events it plans, in `plan`).
pub use crate::plan::Report;

/// One event's answer: the job's state after it (and the job itself for a start or a
/// reclaim), or why it was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Ok(Box<Applied>),
    Error(ApiError),
}

impl From<Result<Applied, ApiError>> for Answer {
    fn from(r: Result<Applied, ApiError>) -> Self {
        match r {
            Ok(a) => Answer::Ok(Box::new(a)),
            Err(e) => Answer::Error(e),
        }
    }
}

/// A shard's answer to a consumer's event: a refusal becomes the API's error here, where
/// the consumer is answered.
impl From<Result<Applied, crate::machine::Refusal>> for Answer {
    fn from(r: Result<Applied, crate::machine::Refusal>) -> Self {
        Answer::from(r.map_err(ApiError::from))
    }
}

/// The answer to a report request: one answer per event, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answers {
    /// The edge's lease (`NATIVE_LEASE`) in ms: renew well within it; takeovers use it.
    pub lease_ms: u64,
    pub answers: Vec<Answer>,
}

/// Each event's shard, or why it was refused before reaching one, in request order.
pub type Planned = Vec<Result<(u16, Report), ApiError>>;

/// Each event's shard, in request order (the edge groups them per shard and puts the
/// answers back in this order). Events naming a shard the deployment does not have are
/// refused at once (`job_not_found`), as are events a consumer may not report and lease
/// tokens longer than any the shard issues; a reclaim gets the edge's lease whatever the
/// consumer sent.
pub fn plan(events: Vec<Report>, shard_count: u16, lease_ms: u64) -> Planned {
    events
        .into_iter()
        .map(|mut e| {
            if !e.event.is_consumer_report() {
                return Err(ApiError::field(
                    "event",
                    "a consumer may report start, heartbeat, complete, fail or reclaim",
                ));
            }
            if e.lease.as_ref().is_some_and(|l| l.len() > MAX_LEASE_BYTES) {
                return Err(ApiError::field("lease", format!("a lease token has at most {MAX_LEASE_BYTES} bytes")));
            }
            if e.id.shard() >= shard_count {
                return Err(ApiError::new(ErrorCode::JobNotFound, format!("no job with id {}", e.id)));
            }
            if let Event::Reclaim { lease_ms: l, .. } = &mut e.event {
                *l = lease_ms;
            }
            Ok((e.id.shard(), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::JobId;
    use crate::job::JobState;

    #[test]
    fn plans_each_event_in_order_with_its_shard_or_refusal_and_the_edge_lease() {
        let a = JobId::new(0, 1, 1);
        let b = JobId::new(1, 2, 2);
        let far = JobId::new(9, 3, 3);
        let events = vec![
            Report::new(a.clone(), Event::Start { attempt: 1 }, None),
            Report::new(far.clone(), Event::Start { attempt: 1 }, None),
            Report::new(b.clone(), Event::Reclaim { attempt: 1, lease_ms: 5 }, None),
            Report::new(a.clone(), Event::Cancel, None),
            Report::new(a.clone(), Event::Heartbeat { attempt: 1, progress: None }, Some("t".into())),
            Report::new(a.clone(), Event::Heartbeat { attempt: 1, progress: None }, Some("t".repeat(65))),
        ];
        let planned = plan(events, 4, 30_000);
        let shown: Vec<Result<u16, ErrorCode>> =
            planned.iter().map(|p| p.as_ref().map(|(s, _)| *s).map_err(|e| e.code)).collect();
        assert_eq!(
            shown,
            [
                Ok(0),
                Err(ErrorCode::JobNotFound),
                Ok(1),
                Err(ErrorCode::InvalidField),
                Ok(0),
                Err(ErrorCode::InvalidField)
            ]
        );
        assert_eq!(planned[4].as_ref().map(|(_, r)| r.lease.as_deref()), Ok(Some("t")), "the token travels on");
        let wire: Report = serde_json::from_str(&format!(r#"{{"id":"{a}","event":{{"event":"start","attempt":1}}}}"#))
            .expect("a start needs no lease");
        assert_eq!(wire.lease, None);
        let reclaim = planned[2].as_ref().map(|(_, e)| e.event.clone());
        assert_eq!(reclaim, Ok(Event::Reclaim { attempt: 1, lease_ms: 30_000 }), "the edge's lease wins");
        let applied = Applied { id: a.clone(), state: JobState::Active, attempt: 1, job: None, lease: None };
        let answers =
            [Answer::from(Ok::<_, ApiError>(applied)), Answer::from(Err(ApiError::new(ErrorCode::LeaseLost, "lost")))];
        let wire = serde_json::to_value(&answers[1]).expect("serializes");
        assert_eq!(wire["error"]["code"], "lease_lost");
    }
}
