//! Workflows served by the user's own endpoint (#29, README "Workflows: the HTTP protocol"):
//! an edge type declared with `"workflow": true` and a fixed `url`. One execution calls the
//! endpoint with the run's recorded steps (signed as Standard Webhooks), records the step it
//! answers in the run's shard, and calls again with the new record, until the endpoint
//! answers the run's end or a step that suspends it (a sleep, a wait, a retry later).

use edgejobs_core::config::EdgeConfig;
use edgejobs_core::live::Update;
use edgejobs_core::machine::{Disposition, Event, Refusal};
use edgejobs_core::otlp::{self, SpanKind};
use edgejobs_core::plan::JobEvent;
use edgejobs_core::protocol::ApplyMany;
use edgejobs_core::workflow::{self, Answer, MAX_STEPS, StepReport};
use edgejobs_core::{Job, JobState, webhook};
use serde_json::Value;
use worker::Env;

use crate::handlers::{Failure, Outcome, exchange, permanent};
use crate::shard;
use crate::telemetry;

/// Most bytes of an endpoint's answer read (a step result has at most 64 KiB).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// How an execution of a run ended.
#[derive(Debug)]
pub enum Ran {
    /// The run's end (or a failed execution), to report like any edge job's outcome.
    Outcome(Outcome),
    /// The run's shard already holds what happened (it suspended, or a cancel ended it):
    /// nothing to report.
    Settled,
}

/// Runs one execution of the workflow run `job` against its endpoint `url`.
pub async fn run(env: &Env, cfg: &EdgeConfig, job: &Job, url: &str) -> Ran {
    let mut job = job.clone();
    // The attempt's span (#32): each call to the endpoint is a step span under it.
    let attempt = job.trace.clone();
    // Each call records one step or ends the run; a run has at most MAX_STEPS steps.
    for _ in 0..=MAX_STEPS + 1 {
        let mut step = telemetry::Scoped::new(
            &cfg.tracing,
            telemetry::start(&cfg.tracing, attempt.as_ref(), "workflow step", SpanKind::Internal)
                .attr(otlp::keys::WORKFLOW_STEP_INDEX, job.steps.len()),
        );
        job.trace = Some(step.context());
        let (answer, live) = match call(cfg, &job, url).await {
            Ok(a) => a,
            Err(f) => {
                step.fail(&f.error);
                return Ran::Outcome(Err(f));
            }
        };
        if let Answer::Step { step: s } = &answer {
            step.rename(format!("step {}", s.name()));
            step.set_attr(otlp::keys::WORKFLOW_STEP, s.name().to_owned());
            step.set_attr(otlp::keys::WORKFLOW_STEP_KIND, s.kind().as_str());
        }
        let update =
            live.map(|update| JobEvent { id: job.id.clone(), event: Event::Update { attempt: job.attempt, update } });
        let step = match answer {
            Answer::Step { step } => step,
            end => {
                // The run's end: its live output is applied first (one call), so its chunks
                // come before the final state the outcome report writes.
                if let Some(u) = update
                    && let Err(e) = live_only(env, &job, u).await
                {
                    return Ran::Outcome(Err(e));
                }
                return match end {
                    Answer::Fail { error, retryable } => {
                        let disposition = if retryable { Disposition::Retryable } else { Disposition::Permanent };
                        Ran::Outcome(Err(Failure { error: format!("the workflow failed: {error}"), disposition }))
                    }
                    Answer::Complete { result } => Ran::Outcome(Ok(Some(result))),
                    Answer::Step { .. } => Ran::Outcome(Err(permanent("unreachable: a step is not an end".into()))),
                };
            }
        };
        let waits = matches!(step, StepReport::Wait { .. });
        let mut event = Event::Step { attempt: job.attempt, step };
        if let Err(e) = crate::runs::prepare_children(cfg, &runner(), &job.id, job.trace.as_ref(), &mut event) {
            return Ran::Outcome(Err(permanent(format!("the workflow's step was refused: {e}"))));
        }
        let event = JobEvent { id: job.id.clone(), event };
        // The step's live output and the step, in one call and in that order.
        let events: Vec<JobEvent> = update.into_iter().chain(std::iter::once(event)).collect();
        let with_live = events.len() == 2;
        let answered = shard::call(env, job.id.shard(), ApplyMany { events, full: true, tenant: None })
            .await
            .map(|a| live_answer(a, with_live));
        let answered = match answered {
            Ok(Err(e)) => return Ran::Outcome(Err(e)),
            Ok(Ok(a)) => Ok(a),
            Err(e) => Err(e),
        };
        job = match answered {
            Ok(Some(Ok(applied))) => match applied.job {
                Some(j) => Job { trace: job.trace.take(), ..j },
                None => return Ran::Outcome(Err(retryable("the shard answered the step without the run"))),
            },
            // The handler's own mistake (a changed handler, a malformed step, a limit): the
            // run fails for good, with the shard's words.
            Ok(Some(Err(
                r @ (Refusal::Nondeterministic { .. } | Refusal::BadStep { .. } | Refusal::StepLimit { .. }),
            ))) => return Ran::Outcome(Err(permanent(format!("the workflow's step was refused: {r}")))),
            // Cancelled meanwhile, or no longer this attempt's: nothing more to do.
            Ok(Some(Err(_))) => return Ran::Settled,
            Ok(None) => return Ran::Outcome(Err(retryable("the shard did not answer the step"))),
            Err(e) => return Ran::Outcome(Err(retryable(&format!("the step could not be recorded: {}", e.message)))),
        };
        if job.state != JobState::Active {
            if waits {
                crate::shard::waits::register(env, cfg, vec![job]).await;
            }
            return Ran::Settled;
        }
    }
    Ran::Outcome(Err(permanent(format!("the workflow answered more than {MAX_STEPS} steps"))))
}

/// The step's answer of a call that carried the step's live output first (each event is
/// answered on its own; the step's is the last). An update refused as malformed or over its
/// limits fails the run for good, with the shard's words: the endpoint's own mistake, like a
/// malformed step.
fn live_answer(
    mut answers: Vec<Result<edgejobs_core::protocol::Applied, Refusal>>,
    with_live: bool,
) -> Result<Option<Result<edgejobs_core::protocol::Applied, Refusal>>, Failure> {
    let step = answers.pop();
    if with_live && let Some(Err(r @ (Refusal::BadUpdate { .. } | Refusal::LiveLimit { .. }))) = answers.pop() {
        return Err(permanent(format!("the workflow's live output was refused: {r}")));
    }
    Ok(step)
}

/// Applies a run's live output on its own (before its end is reported).
async fn live_only(env: &Env, job: &Job, update: JobEvent) -> Result<(), Failure> {
    let answers = shard::call(env, job.id.shard(), ApplyMany { events: vec![update], full: false, tenant: None })
        .await
        .map_err(|e| retryable(&format!("the live output could not be recorded: {}", e.message)))?;
    match live_answer(answers, false) {
        Ok(Some(Err(r @ (Refusal::BadUpdate { .. } | Refusal::LiveLimit { .. })))) => {
            Err(permanent(format!("the workflow's live output was refused: {r}")))
        }
        _ => Ok(()),
    }
}

/// Who the edge's own runner acts as when it checks a run's child specs: it sees every
/// tenant (the shard gives each child its run's tenant).
fn runner() -> edgejobs_core::auth::Principal {
    edgejobs_core::auth::Principal {
        key_id: "workflow-runner".into(),
        limit: None,
        sees: edgejobs_core::tenant::Sees::All,
        consumer: None,
    }
}

fn retryable(error: &str) -> Failure {
    Failure { error: error.to_owned(), disposition: Disposition::Retryable }
}

/// One call of the protocol: the endpoint's answer, or why the execution failed (a status
/// the webhook rules retry or not, an answer that is not the protocol's).
async fn call(cfg: &EdgeConfig, job: &Job, url: &str) -> Result<(Answer, Option<Update>), Failure> {
    let body = workflow::call_body(job).to_string();
    let id = workflow::call_id(job);
    let (status, retry_after, text) = exchange(job, cfg, url, body, Vec::new(), &id, MAX_ANSWER_BYTES).await?;
    if let Some(d) = webhook::classify(status, retry_after.as_deref()) {
        let shown: String = text.chars().take(512).collect();
        return Err(Failure { error: format!("the workflow endpoint answered {status}: {shown}"), disposition: d });
    }
    if text.len() >= MAX_ANSWER_BYTES {
        return Err(permanent(format!("the workflow endpoint's answer is over {MAX_ANSWER_BYTES} bytes")));
    }
    let mut value: Value = serde_json::from_str(&text)
        .map_err(|e| retryable(&format!("the workflow endpoint's answer is not JSON: {e}")))?;
    // Live output (#30) rides along with any answer: `"live": {progress, metadata, chunks}`.
    let live = match value.as_object_mut().and_then(|o| o.remove("live")) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<Update>(v)
                .map_err(|e| permanent(format!("the workflow endpoint's answer is not the protocol's: live: {e}")))?,
        ),
    };
    let answer = serde_json::from_value(value)
        .map_err(|e| permanent(format!("the workflow endpoint's answer is not the protocol's: {e}")))?;
    Ok((answer, live.filter(|u| !u.is_empty())))
}
