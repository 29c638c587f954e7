//! The native consumer's reports to the edge, in batches: `POST /v1/internal/events` carries
//! many events (start, reclaim, heartbeat, complete, fail) for many jobs; the edge groups them
//! per shard, applies each shard's in one call, and answers every event on its own (each is
//! still fenced by its attempt). Answers carry the edge's lease, so every consumer uses the
//! lease the edge decides takeovers with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::plan::JobEvent;
use crate::protocol::Applied;

/// Most events one report request may carry.
pub const MAX_EVENTS: usize = 500;

/// The body of `POST /v1/internal/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    pub events: Vec<JobEvent>,
}

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

/// The answer to a report request: one answer per event, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answers {
    /// The edge's lease (`NATIVE_LEASE`) in ms: renew well within it; takeovers use it.
    pub lease_ms: u64,
    pub answers: Vec<Answer>,
}

/// Events grouped by shard, each with its position in the request.
pub type ByShard = BTreeMap<u16, Vec<(usize, JobEvent)>>;
/// Events refused before reaching a shard, with their positions.
pub type Refused = Vec<(usize, ApiError)>;
/// One shard's answers: the positions it answered, and its answers (or its failure).
pub type ShardAnswers = (Vec<usize>, Result<Vec<Result<Applied, ApiError>>, ApiError>);

/// Groups events by shard, keeping each one's position in the request. Events naming a
/// shard the deployment does not have are answered at once (`job_not_found`), and a
/// reclaim gets the edge's lease whatever the consumer sent.
pub fn plan(events: Vec<JobEvent>, shard_count: u16, lease_ms: u64) -> (ByShard, Refused) {
    let mut groups = ByShard::new();
    let mut refused = Vec::new();
    for (i, mut e) in events.into_iter().enumerate() {
        if !e.event.is_consumer_report() {
            refused.push((
                i,
                ApiError::field("event", "a consumer may report start, heartbeat, complete, fail or reclaim"),
            ));
            continue;
        }
        if e.id.shard() >= shard_count {
            refused.push((i, ApiError::new(ErrorCode::JobNotFound, format!("no job with id {}", e.id))));
            continue;
        }
        if let crate::machine::Event::Reclaim { lease_ms: l, .. } = &mut e.event {
            *l = lease_ms;
        }
        groups.entry(e.id.shard()).or_default().push((i, e));
    }
    (groups, refused)
}

/// Puts per-shard answers (and the refusals of [`plan`]) back in request order. A shard
/// that failed as a whole answers each of its events with its error.
pub fn assemble(n: usize, refused: Refused, shards: Vec<ShardAnswers>) -> Vec<Answer> {
    let mut out: Vec<Option<Answer>> = vec![None; n];
    for (i, e) in refused {
        out[i] = Some(Answer::Error(e));
    }
    for (idx, result) in shards {
        match result {
            Ok(answers) if answers.len() == idx.len() => {
                for (i, a) in idx.into_iter().zip(answers) {
                    out[i] = Some(a.into());
                }
            }
            Ok(_) => {
                for i in idx {
                    out[i] = Some(Answer::Error(ApiError::new(ErrorCode::Unavailable, "malformed shard answer")));
                }
            }
            Err(e) => {
                for i in idx {
                    out[i] = Some(Answer::Error(e.clone()));
                }
            }
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| Answer::Error(ApiError::new(ErrorCode::Internal, "unanswered event"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::JobId;
    use crate::job::JobState;
    use crate::machine::Event;

    #[test]
    fn groups_by_shard_sets_the_edge_lease_and_answers_in_order() {
        let a = JobId::new(0, 1, 1);
        let b = JobId::new(1, 2, 2);
        let far = JobId::new(9, 3, 3);
        let events = vec![
            JobEvent { id: a.clone(), event: Event::Start { attempt: 1 } },
            JobEvent { id: far.clone(), event: Event::Start { attempt: 1 } },
            JobEvent { id: b.clone(), event: Event::Reclaim { attempt: 1, lease_ms: 5 } },
            JobEvent { id: a.clone(), event: Event::Cancel },
            JobEvent { id: a.clone(), event: Event::Heartbeat { attempt: 1, progress: None } },
        ];
        let (groups, refused) = plan(events, 4, 30_000);
        assert_eq!(
            refused.iter().map(|(i, e)| (*i, e.code)).collect::<Vec<_>>(),
            vec![(1, ErrorCode::JobNotFound), (3, ErrorCode::InvalidField)]
        );
        assert_eq!(groups[&0].iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![0, 4]);
        assert_eq!(groups[&1][0].1.event, Event::Reclaim { attempt: 1, lease_ms: 30_000 }, "the edge's lease wins");
        let applied = |id: &JobId| Applied { id: id.clone(), state: JobState::Active, attempt: 1, job: None };
        let shards = vec![
            (vec![0, 4], Ok(vec![Ok(applied(&a)), Err(ApiError::new(ErrorCode::LeaseLost, "lost"))])),
            (vec![2], Err(ApiError::new(ErrorCode::Unavailable, "down"))),
        ];
        let answers = assemble(5, refused, shards);
        let codes: Vec<String> = answers
            .iter()
            .map(|a| match a {
                Answer::Ok(_) => "ok".to_owned(),
                Answer::Error(e) => e.code.as_str().to_owned(),
            })
            .collect();
        assert_eq!(codes, ["ok", "job_not_found", "unavailable", "invalid_field", "lease_lost"]);
        let wire = serde_json::to_value(&answers[4]).expect("serializes");
        assert_eq!(wire["error"]["code"], "lease_lost");
    }
}
