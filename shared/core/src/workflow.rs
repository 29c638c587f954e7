//! Durable workflows (#29): a job whose handler is re-executed from the start on each attempt
//! and whose *steps* run once. Every step a handler reaches is reported to the job's shard
//! (a [`StepReport`], carried by [`crate::machine::Event::Step`] and fenced by attempt and
//! lease like any report) and recorded in the job document ([`Step`]); a later execution gets
//! the recorded steps with the job and returns their results without running them again.
//!
//! A sleep, a wait for an event and a step retry *suspend* the run: the attempt ends without
//! counting against `max_attempts`, the job becomes `scheduled` until the sleep's end, the
//! wait's timeout or the retry time (or until an event resumes it), and holds no worker and
//! no lease meanwhile. The shard's alarm, or [`resume`], brings it back.
//!
//! Steps are identified by their position (`seq`) and their name: a report whose name does
//! not match the step recorded at its position, that skips a position, or that reuses a name
//! is refused with `nondeterministic_step` — the handler changed between executions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{Job, JobState};
use crate::outcome::{Effect, Refusal, Transition};
use crate::retry::Backoff;
use crate::steps::json_len;
pub use crate::steps::{Child, MAX_CHILDREN, Match, Parent, Step, StepKind, StepState, WaitFor};
use crate::time::rfc3339_opt;

/// Most steps one run may record.
pub const MAX_STEPS: usize = 1_000;
/// Largest result of one step (JSON text), the same cap as a job's result.
pub const MAX_STEP_RESULT_BYTES: usize = 64 * 1024;
/// Most bytes of step results (and errors) one run may hold, so a job document stays well
/// under SQLite's 2 MB row limit on Durable Objects.
pub const MAX_RUN_BYTES: usize = 1024 * 1024;
/// Longest step name.
pub const MAX_STEP_NAME_BYTES: usize = 128;
/// Longest event name.
pub const MAX_EVENT_NAME_BYTES: usize = 128;
/// Longest step error kept.
pub const MAX_STEP_ERROR_BYTES: usize = 2_048;
/// Longest sleep, wait or retry delay: one year.
pub const MAX_SUSPEND_MS: u64 = 365 * 86_400_000;
/// Longest look-back of a wait (how old an event it may take), and how long the shard that
/// indexes an event name keeps its events and event ids.
pub const MAX_LOOKBACK_MS: u64 = 86_400_000;
/// Most match conditions of one wait.
pub const MAX_MATCHES: usize = 4;
/// Most attempts of one step.
pub const MAX_STEP_ATTEMPTS: u32 = 100;
/// `run_at` of a run waiting for an event without a timeout: never due.
pub const NEVER: u64 = u64::MAX / 2;

impl Step {
    /// The wait to index for this step, when it is one still waiting: events sent since its
    /// start (less its look-back) match it, so one sent while it was being registered is not
    /// missed.
    pub fn wait_entry(&self, job: &Job) -> Option<crate::steps::WaitEntry> {
        let wait = self.wait.clone().filter(|_| self.state == StepState::Waiting)?;
        Some(crate::steps::WaitEntry {
            tenant: job.tenant.clone(),
            key: crate::steps::WaitKey { job: job.id.clone(), step: self.name.clone() },
            wait,
            expires_at: self.until.unwrap_or(NEVER),
            since: self.started_at.saturating_sub(self.lookback_ms),
        })
    }
}

/// A step's retry policy: how many executions in all, and the delay between them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRetry {
    pub attempts: u32,
    #[serde(default)]
    pub backoff: Backoff,
}

impl Default for StepRetry {
    fn default() -> Self {
        StepRetry { attempts: 1, backoff: Backoff::default() }
    }
}

/// What a handler reports about the step at position `seq` of its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepReport {
    /// A `run` step succeeded with `result`.
    Run { seq: u32, name: String, result: Value },
    /// A `run` step failed; `retry` decides whether the run sleeps and tries it again or the
    /// error is recorded for good (and returned to the handler).
    Fail {
        seq: u32,
        name: String,
        error: String,
        #[serde(default)]
        retry: StepRetry,
    },
    /// Sleep for `ms` or until `until` (exactly one of them).
    Sleep {
        seq: u32,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
        #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
    /// Wait for an event matching `wait`, for at most `timeout_ms` (none: until an event or a
    /// cancel). `lookback_ms` lets an event sent up to that long before the wait match it.
    Wait {
        seq: u32,
        name: String,
        #[serde(flatten)]
        wait: WaitFor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        #[serde(default)]
        lookback_ms: u64,
    },
    /// Start one child job (`jobs` holds its spec, as `POST /v1/jobs` takes it) and resume
    /// with its result.
    Invoke {
        seq: u32,
        name: String,
        jobs: Vec<Value>,
        /// Set by the edge, never by a handler: the children made from `jobs`, with ids in
        /// the run's shard (the run's shard inserts them with the step).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        children: Vec<Job>,
    },
    /// Start child jobs and resume when all are final.
    FanOut {
        seq: u32,
        name: String,
        jobs: Vec<Value>,
        /// As [`StepReport::Invoke`]'s.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        children: Vec<Job>,
    },
}

impl StepReport {
    /// The children the edge prepared, for an invoke or a fan-out.
    pub fn children_mut(&mut self) -> Option<(&[Value], &mut Vec<Job>)> {
        match self {
            StepReport::Invoke { jobs, children, .. } | StepReport::FanOut { jobs, children, .. } => {
                Some((jobs, children))
            }
            _ => None,
        }
    }

    pub fn seq(&self) -> u32 {
        match self {
            StepReport::Run { seq, .. }
            | StepReport::Fail { seq, .. }
            | StepReport::Sleep { seq, .. }
            | StepReport::Wait { seq, .. }
            | StepReport::Invoke { seq, .. }
            | StepReport::FanOut { seq, .. } => *seq,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            StepReport::Run { name, .. }
            | StepReport::Fail { name, .. }
            | StepReport::Sleep { name, .. }
            | StepReport::Wait { name, .. }
            | StepReport::Invoke { name, .. }
            | StepReport::FanOut { name, .. } => name,
        }
    }

    pub fn kind(&self) -> StepKind {
        match self {
            StepReport::Run { .. } | StepReport::Fail { .. } => StepKind::Run,
            StepReport::Sleep { .. } => StepKind::Sleep,
            StepReport::Wait { .. } => StepKind::Wait,
            StepReport::Invoke { .. } => StepKind::Invoke,
            StepReport::FanOut { .. } => StepKind::FanOut,
        }
    }

    /// Checks what a report must satisfy whatever the run holds: names, sizes, durations and
    /// pointers. The message names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let name = self.name();
        if name.is_empty() || name.len() > MAX_STEP_NAME_BYTES || name.chars().any(char::is_control) {
            return Err((
                "name",
                format!("a step name is 1 to {MAX_STEP_NAME_BYTES} bytes without control characters"),
            ));
        }
        match self {
            StepReport::Run { result, .. } if json_len(result) > MAX_STEP_RESULT_BYTES => {
                Err(("result", format!("a step result has at most {MAX_STEP_RESULT_BYTES} bytes")))
            }
            StepReport::Fail { retry, .. } if retry.attempts == 0 || retry.attempts > MAX_STEP_ATTEMPTS => {
                Err(("retry.attempts", format!("a step has 1 to {MAX_STEP_ATTEMPTS} attempts")))
            }
            StepReport::Sleep { ms, until, .. } => match (ms, until) {
                (Some(ms), None) if *ms <= MAX_SUSPEND_MS => Ok(()),
                (Some(_), None) => Err(("ms", format!("a sleep lasts at most {MAX_SUSPEND_MS} ms"))),
                (None, Some(_)) => Ok(()),
                _ => Err(("ms", "a sleep has exactly one of ms and until".to_owned())),
            },
            StepReport::Wait { wait, timeout_ms, lookback_ms, .. } => {
                // As `POST /v1/events` takes them: a name it refuses could never be matched.
                if wait.event.is_empty()
                    || wait.event.len() > MAX_EVENT_NAME_BYTES
                    || wait.event.chars().any(char::is_control)
                {
                    return Err((
                        "event",
                        format!("an event name is 1 to {MAX_EVENT_NAME_BYTES} bytes without control characters"),
                    ));
                }
                if wait.matches.len() > MAX_MATCHES {
                    return Err(("matches", format!("a wait has at most {MAX_MATCHES} match conditions")));
                }
                if let Some(m) = wait.matches.iter().find(|m| !is_pointer(&m.event)) {
                    return Err(("matches", format!("{:?} is not a JSON pointer into the event", m.event)));
                }
                if timeout_ms.is_some_and(|t| t > MAX_SUSPEND_MS) {
                    return Err(("timeout_ms", format!("a wait lasts at most {MAX_SUSPEND_MS} ms")));
                }
                if *lookback_ms > MAX_LOOKBACK_MS {
                    return Err(("lookback_ms", format!("a look-back is at most {MAX_LOOKBACK_MS} ms")));
                }
                Ok(())
            }
            StepReport::Invoke { jobs, .. } if jobs.len() != 1 => {
                Err(("jobs", "an invoke starts exactly one job".to_owned()))
            }
            StepReport::FanOut { jobs, .. } if jobs.is_empty() || jobs.len() > MAX_CHILDREN => {
                Err(("jobs", format!("a fan-out starts 1 to {MAX_CHILDREN} jobs")))
            }
            StepReport::Invoke { jobs, children, .. } | StepReport::FanOut { jobs, children, .. }
                if children.len() != jobs.len() =>
            {
                Err(("jobs", "the children were not prepared".to_owned()))
            }
            _ => Ok(()),
        }
    }
}

/// A JSON pointer as RFC 6901 writes it: empty, or `/`-separated tokens, at most 256 bytes.
pub fn is_pointer(p: &str) -> bool {
    p.len() <= 256 && (p.is_empty() || p.starts_with('/'))
}

/// The event object match pointers are resolved against.
pub fn event_subject(name: &str, data: &Value, id: Option<&str>) -> Value {
    serde_json::json!({ "name": name, "data": data, "id": id })
}

/// Whether every condition of `matches` holds for `event` (an [`event_subject`]).
pub fn matches_event(matches: &[Match], event: &Value) -> bool {
    matches.iter().all(|m| event.pointer(&m.event) == Some(&m.value))
}

/// The canonical form of a wait's conditions, which the event index keys on: the sorted
/// pointers (`ptrs`) and their values in that order (`values`, JSON text). An event is
/// matched by computing the same `values` from its own data for each `ptrs` registered.
pub fn index_key(matches: &[Match]) -> (String, String) {
    let mut sorted: Vec<&Match> = matches.iter().collect();
    sorted.sort_by(|a, b| a.event.cmp(&b.event));
    let ptrs: Vec<&str> = sorted.iter().map(|m| m.event.as_str()).collect();
    let values: Vec<&Value> = sorted.iter().map(|m| &m.value).collect();
    (serde_json::to_string(&ptrs).unwrap_or_default(), serde_json::to_string(&values).unwrap_or_default())
}

/// The `values` an event has at the pointers `ptrs` (an [`index_key`]'s first half), or
/// `None` when one of them names nothing in the event (no wait with these pointers matches).
pub fn event_values(ptrs: &str, event: &Value) -> Option<String> {
    let ptrs: Vec<String> = serde_json::from_str(ptrs).ok()?;
    let values: Option<Vec<&Value>> = ptrs.iter().map(|p| event.pointer(p)).collect();
    serde_json::to_string(&values?).ok()
}

fn nondeterministic(seq: u32, message: String) -> Refusal {
    Refusal::Nondeterministic { seq, message }
}

/// Records `report` for the running attempt of `job` at `now` (the attempt, its lease and a
/// pending cancel were checked by the caller). `unit` is the jitter sample of a retry.
pub fn record(job: &Job, report: &StepReport, now: u64, unit: f64) -> Result<Transition, Refusal> {
    if let Err((field, message)) = report.check() {
        return Err(Refusal::BadStep { field: field.to_owned(), message });
    }
    let seq = report.seq() as usize;
    let name = report.name();
    let mut next = job.clone();
    next.updated_at = now;
    let unchanged = |job: &Job| Ok(Transition { job: job.clone(), effect: Effect::None, refusal: None });
    match job.steps.get(seq) {
        Some(old) if old.name != name => {
            return Err(nondeterministic(
                report.seq(),
                format!("step {seq} was recorded as {:?}, and this execution reached {name:?}", old.name),
            ));
        }
        Some(old) if old.kind != report.kind() => {
            return Err(nondeterministic(
                report.seq(),
                format!("step {name:?} was recorded as a {:?} step", old.kind).to_lowercase(),
            ));
        }
        // Recorded already (an event came first, or a report arrived twice): nothing changes
        // and the answer carries the recorded outcome.
        Some(old) if old.state.is_recorded() => return unchanged(job),
        Some(old) if old.state != StepState::Retrying => {
            return Err(Refusal::InvalidTransition {
                event: format!("report step {name:?} of"),
                state: format!("{:?}", old.state).to_lowercase(),
            });
        }
        Some(_) => {}
        None if seq > job.steps.len() => {
            return Err(nondeterministic(
                report.seq(),
                format!("step {seq} ({name:?}) comes after only {} recorded steps", job.steps.len()),
            ));
        }
        None => {
            if job.steps.iter().any(|s| s.name == name) {
                return Err(nondeterministic(report.seq(), format!("step name {name:?} is used twice in one run")));
            }
            if job.steps.len() >= MAX_STEPS {
                return Err(Refusal::StepLimit { message: format!("a run has at most {MAX_STEPS} steps") });
            }
            next.steps.push(Step {
                name: name.to_owned(),
                kind: report.kind(),
                state: StepState::Retrying,
                attempts: 0,
                started_at: now,
                ended_at: None,
                until: None,
                result: None,
                error: None,
                wait: None,
                lookback_ms: 0,
                children: Vec::new(),
            });
        }
    }
    let mut suspend_until = None;
    {
        let step = &mut next.steps[seq];
        step.attempts += 1;
        match report {
            StepReport::Run { result, .. } => {
                step.state = StepState::Completed;
                step.result = Some(result.clone());
                step.ended_at = Some(now);
                step.until = None;
            }
            StepReport::Fail { error, retry, .. } => {
                step.error = Some(crate::job::clip(error, MAX_STEP_ERROR_BYTES));
                if step.attempts < retry.attempts {
                    let at = now.saturating_add(retry.backoff.delay_ms(step.attempts, unit).min(MAX_SUSPEND_MS));
                    step.state = StepState::Retrying;
                    step.until = Some(at);
                    suspend_until = Some(at);
                } else {
                    step.state = StepState::Failed;
                    step.ended_at = Some(now);
                    step.until = None;
                }
            }
            StepReport::Sleep { ms, until, .. } => {
                let at = until.or(ms.map(|ms| now.saturating_add(ms))).unwrap_or(now).min(now + MAX_SUSPEND_MS);
                step.until = Some(at);
                if at <= now {
                    step.state = StepState::Completed;
                    step.ended_at = Some(now);
                } else {
                    step.state = StepState::Sleeping;
                    suspend_until = Some(at);
                }
            }
            StepReport::Wait { wait, timeout_ms, lookback_ms, .. } => {
                step.wait = Some(wait.clone());
                step.lookback_ms = *lookback_ms;
                let at = timeout_ms.map_or(NEVER, |t| now.saturating_add(t));
                step.state = StepState::Waiting;
                step.until = timeout_ms.map(|_| at);
                suspend_until = Some(at);
            }
            StepReport::Invoke { children, .. } | StepReport::FanOut { children, .. } => {
                step.children = children.iter().map(|c| Child { id: c.id.clone(), outcome: None }).collect();
                step.state = StepState::Waiting;
                suspend_until = Some(NEVER);
            }
        }
    }
    let total: usize = next.steps.iter().map(Step::weight).sum();
    if total > MAX_RUN_BYTES {
        return Err(Refusal::StepLimit { message: format!("a run's steps hold at most {MAX_RUN_BYTES} bytes") });
    }
    Ok(match suspend_until {
        None => Transition { job: next, effect: Effect::None, refusal: None },
        Some(at) => suspend(next, at, now),
    })
}

/// Ends the running attempt without counting it: the run waits, `scheduled`, until `at`.
fn suspend(mut job: Job, at: u64, now: u64) -> Transition {
    job.record_attempt(now, "suspended", None);
    job.free_attempts += 1;
    job.state = JobState::Scheduled;
    job.run_at = at;
    job.started_at = None;
    job.heartbeat_at = None;
    // A suspended run keeps its progress (#30): it is the run's, not the attempt's.
    let effect = if at >= NEVER { Effect::None } else { Effect::Alarm(at) };
    Transition { job, effect, refusal: None }
}

/// What the alarm's wake-up does to a suspended run's steps at `now`: a sleep that ended is
/// completed, a wait past its timeout timed out.
pub fn wake(job: &mut Job, now: u64) {
    for step in job.steps.iter_mut().filter(|s| s.until.is_some_and(|u| u <= now)) {
        match step.state {
            StepState::Sleeping => {
                step.state = StepState::Completed;
                step.ended_at = Some(now);
            }
            StepState::Waiting => {
                step.state = StepState::TimedOut;
                step.ended_at = Some(now);
            }
            _ => {}
        }
    }
}

/// An event matched the wait `step` of `job`: the step completes with `data`, and the
/// suspended run is queued at once. Anything else is refused (`not_waiting`): a wait
/// resumes once.
pub fn resume(job: &Job, step: &str, data: &Value, now: u64) -> Result<Transition, Refusal> {
    let mut next = job.clone();
    next.updated_at = now;
    match next.steps.iter_mut().find(|s| s.name == step) {
        Some(s) if s.state == StepState::Waiting && job.state == JobState::Scheduled => {
            s.state = StepState::Completed;
            s.result = Some(data.clone());
            s.ended_at = Some(now);
            next.state = JobState::Queued;
            next.run_at = now;
            Ok(Transition { job: next, effect: Effect::Enqueue, refusal: None })
        }
        _ => Err(Refusal::NotWaiting),
    }
}

/// A child job of `parent` ended (`child` is final): its outcome is recorded in the step that
/// started it, and when that step's children are all final the step completes (an invoke
/// with its child's result, or fails with its error; a fan-out with every child's outcome
/// in order) and the suspended run is queued. `None` when nothing changes (the run is
/// final, the step no longer waits, the child was recorded already).
pub fn child_done(parent: &Job, child: &Job, now: u64) -> Option<Transition> {
    let link = child.parent.as_ref()?;
    if parent.state.is_finished() || !child.state.is_finished() {
        return None;
    }
    let mut next = parent.clone();
    let step = next.steps.iter_mut().find(|s| s.name == link.step && s.state == StepState::Waiting)?;
    let slot = step.children.iter_mut().find(|c| c.id == child.id && c.outcome.is_none())?;
    let mut outcome = serde_json::json!({ "id": child.id.as_str(), "state": child.state.as_str() });
    if let Some(r) = &child.result {
        outcome["result"] = r.clone();
    }
    if child.state != JobState::Completed {
        let error = child.last_error.clone().unwrap_or_else(|| format!("the child job ended {}", child.state.as_str()));
        outcome["error"] = Value::String(crate::job::clip(&error, MAX_STEP_ERROR_BYTES));
    }
    slot.outcome = Some(outcome);
    // A child's result that would take the run past its bytes is not kept, and says so.
    let total: usize = next.steps.iter().map(Step::weight).sum();
    let step = next.steps.iter_mut().find(|s| s.name == link.step)?;
    if total > MAX_RUN_BYTES
        && let Some(o) = step.children.iter_mut().find(|c| c.id == child.id).and_then(|c| c.outcome.as_mut())
        && let Some(map) = o.as_object_mut()
    {
        map.remove("result");
        map.insert(
            "error".into(),
            Value::String(format!("the child's result does not fit the run's {MAX_RUN_BYTES} bytes of steps")),
        );
    }
    next.updated_at = now;
    if step.children.iter().any(|c| c.outcome.is_none()) {
        return Some(Transition { job: next, effect: Effect::None, refusal: None });
    }
    step.ended_at = Some(now);
    // The outcomes move into the step's result (held once, not twice).
    let outcomes: Vec<Value> = step.children.iter_mut().filter_map(|c| c.outcome.take()).collect();
    match step.kind {
        StepKind::FanOut => {
            step.state = StepState::Completed;
            step.result = Some(Value::Array(outcomes));
        }
        _ => match outcomes.first() {
            Some(o) if o["state"] == "completed" => {
                step.state = StepState::Completed;
                step.result = Some(o.get("result").cloned().unwrap_or(Value::Null));
            }
            o => {
                step.state = StepState::Failed;
                step.error = Some(o.and_then(|o| o["error"].as_str()).unwrap_or("the child job failed").to_owned());
            }
        },
    }
    if next.state == JobState::Scheduled {
        next.state = JobState::Queued;
        next.run_at = now;
        return Some(Transition { job: next, effect: Effect::Enqueue, refusal: None });
    }
    Some(Transition { job: next, effect: Effect::None, refusal: None })
}

/// The children a run that ended leaves waiting: cancelling a run cancels them.
pub fn waiting_children(job: &Job) -> Vec<crate::JobId> {
    job.steps
        .iter()
        .filter(|s| s.state == StepState::Waiting)
        .flat_map(|s| s.children.iter().filter(|c| c.outcome.is_none()).map(|c| c.id.clone()))
        .collect()
}

/// What a workflow endpoint answers a call of the HTTP protocol (#29, README "Workflows"):
/// the first step its handler reached that the run has not recorded, or the run's end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Answer {
    Step {
        step: StepReport,
    },
    Complete {
        #[serde(default)]
        result: Value,
    },
    Fail {
        error: String,
        #[serde(default)]
        retryable: bool,
    },
}

/// The body of a call of the HTTP protocol: the run (`id`, `type`, `tenant`, `attempt`,
/// `payload`, `metadata`) and its recorded steps with their outcomes, in order.
pub fn call_body(job: &Job) -> Value {
    let steps: Vec<Value> = job
        .steps
        .iter()
        .enumerate()
        .map(|(seq, s)| {
            let mut v = serde_json::json!({
                "seq": seq, "name": s.name, "kind": s.kind.as_str(), "state": s.state.as_str(), "attempts": s.attempts,
            });
            if let Some(r) = &s.result {
                v["result"] = r.clone();
            }
            if let Some(e) = &s.error {
                v["error"] = Value::String(e.clone());
            }
            v
        })
        .collect();
    serde_json::json!({
        "run": {
            "id": job.id.as_str(), "type": job.job_type, "tenant": job.tenant.to_string(),
            "attempt": job.attempt, "payload": job.payload, "metadata": job.metadata,
        },
        "steps": steps,
    })
}

/// The Standard Webhooks id of a call: the run, its attempt and how many steps it has
/// recorded, so a repeated call of the same state has the same id.
pub fn call_id(job: &Job) -> String {
    format!("{}_{}_{}", job.id, job.attempt, job.steps.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{self, Event};
    use serde_json::json;

    fn running() -> Job {
        let mut job = crate::spec::parse_spec(&json!({ "type": "noop", "max_attempts": 3 }), 1_000)
            .expect("valid")
            .into_job(crate::JobId::new(0, 1_000, 1), 1_000)
            .0;
        job.lane = crate::job::Lane::Native;
        machine::apply(&job, Event::Start { attempt: 1 }, 1_000, 0.5).expect("start").job
    }

    fn run(seq: u32, name: &str, v: Value) -> StepReport {
        StepReport::Run { seq, name: name.into(), result: v }
    }

    fn apply(job: &Job, report: StepReport, now: u64) -> Result<Transition, Refusal> {
        machine::apply(job, Event::Step { attempt: job.attempt, step: report }, now, 0.5)
    }

    #[test]
    fn a_recorded_step_is_kept_and_a_second_report_changes_nothing() {
        let job = running();
        let t = apply(&job, run(0, "a", json!(1)), 2_000).expect("recorded");
        assert_eq!(t.job.state, JobState::Active);
        assert_eq!(t.job.steps[0].state, StepState::Completed);
        assert_eq!(t.job.steps[0].result, Some(json!(1)));
        let again = apply(&t.job, run(0, "a", json!(2)), 3_000).expect("answered");
        assert_eq!(again.job, t.job, "the first result stays");
    }

    #[test]
    fn a_changed_handler_is_refused_as_nondeterministic() {
        let job = apply(&running(), run(0, "a", json!(1)), 2_000).expect("a").job;
        let other = apply(&job, run(0, "b", json!(1)), 3_000).expect_err("renamed");
        assert!(matches!(other, Refusal::Nondeterministic { seq: 0, .. }), "{other:?}");
        let gap = apply(&job, run(2, "c", json!(1)), 3_000).expect_err("gap");
        assert!(matches!(gap, Refusal::Nondeterministic { seq: 2, .. }), "{gap:?}");
        let twice = apply(&job, run(1, "a", json!(1)), 3_000).expect_err("name reused");
        assert!(matches!(twice, Refusal::Nondeterministic { seq: 1, .. }), "{twice:?}");
        let kind = apply(&job, StepReport::Sleep { seq: 0, name: "a".into(), ms: Some(5), until: None }, 3_000)
            .expect_err("kind changed");
        assert!(matches!(kind, Refusal::Nondeterministic { .. }), "{kind:?}");
        assert_eq!(kind.code(), crate::ErrorCode::NondeterministicStep);
    }

    #[test]
    fn a_sleep_suspends_without_spending_an_attempt_and_the_wake_completes_it() {
        let mut job = running();
        job.max_attempts = 1;
        let t = apply(&job, StepReport::Sleep { seq: 0, name: "nap".into(), ms: Some(60_000), until: None }, 2_000)
            .expect("slept");
        assert_eq!((t.job.state, t.job.run_at, t.effect), (JobState::Scheduled, 62_000, Effect::Alarm(62_000)));
        assert_eq!(t.job.lease, None, "a suspended run holds no lease");
        assert_eq!(t.job.attempts_in_series(), 0, "the suspension is free");
        assert!(machine::apply(&t.job, Event::Wake, 61_999, 0.5).is_err(), "not before its end");
        let woke = machine::apply(&t.job, Event::Wake, 62_000, 0.5).expect("woke");
        assert_eq!(woke.job.state, JobState::Queued);
        assert_eq!(woke.job.steps[0].state, StepState::Completed);
        let next = machine::apply(&woke.job, Event::Start { attempt: 2 }, 62_001, 0.5).expect("runs again");
        assert_eq!(next.job.attempts_in_series(), 1, "one attempt of one allowed");
    }

    #[test]
    fn a_failing_step_retries_by_its_policy_then_records_its_error() {
        let job = running();
        let retry = StepRetry { attempts: 2, backoff: Backoff { base_ms: 1_000, factor: 2.0, cap_ms: 1_000 } };
        let fail = |seq| StepReport::Fail { seq, name: "call".into(), error: "boom".into(), retry };
        let t = apply(&job, fail(0), 2_000).expect("first failure");
        assert_eq!(t.job.state, JobState::Scheduled, "the run sleeps until the retry");
        assert_eq!(t.job.steps[0].state, StepState::Retrying);
        let woke = machine::apply(&t.job, Event::Wake, t.job.run_at, 0.5).expect("woke").job;
        let again = machine::apply(&woke, Event::Start { attempt: 2 }, t.job.run_at + 1, 0.5).expect("start").job;
        let t = apply(&again, fail(0), t.job.run_at + 2).expect("second failure");
        assert_eq!(t.job.state, JobState::Active, "the handler gets the error and goes on");
        assert_eq!((t.job.steps[0].state, t.job.steps[0].attempts), (StepState::Failed, 2));
        assert_eq!(t.job.steps[0].error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_wait_resumes_once_with_the_event_or_times_out() {
        let job = running();
        let wait = |timeout_ms| StepReport::Wait {
            seq: 0,
            name: "approved".into(),
            wait: WaitFor { event: "approval".into(), matches: vec![] },
            timeout_ms,
            lookback_ms: 0,
        };
        let t = apply(&job, wait(Some(10_000)), 2_000).expect("waits");
        assert_eq!((t.job.state, t.job.run_at), (JobState::Scheduled, 12_000));
        let r = resume(&t.job, "approved", &json!({"ok": true}), 3_000).expect("resumed");
        assert_eq!((r.job.state, r.effect), (JobState::Queued, Effect::Enqueue));
        assert_eq!(r.job.steps[0].result, Some(json!({"ok": true})));
        assert_eq!(resume(&r.job, "approved", &json!(2), 3_001).expect_err("once"), Refusal::NotWaiting);
        let timed = machine::apply(&t.job, Event::Wake, 12_000, 0.5).expect("timeout").job;
        assert_eq!(timed.steps[0].state, StepState::TimedOut);
        assert_eq!(resume(&timed, "approved", &json!(2), 12_001).expect_err("late"), Refusal::NotWaiting);
        let forever = apply(&job, wait(None), 2_000).expect("waits");
        assert_eq!((forever.job.run_at, forever.effect), (NEVER, Effect::None));
    }

    #[test]
    fn limits_and_bad_reports_are_refused_and_change_nothing() {
        let job = running();
        let big = run(0, "a", json!("x".repeat(MAX_STEP_RESULT_BYTES)));
        assert!(matches!(apply(&job, big, 2_000), Err(Refusal::BadStep { .. })));
        assert!(matches!(apply(&job, run(0, "", json!(1)), 2_000), Err(Refusal::BadStep { .. })));
        let mut full = job.clone();
        for i in 0..MAX_STEPS {
            full = apply(&full, run(i as u32, &format!("s{i}"), json!(i)), 2_000).expect("room").job;
        }
        let over = apply(&full, run(MAX_STEPS as u32, "one-more", json!(0)), 2_000).expect_err("over");
        assert!(matches!(over, Refusal::StepLimit { .. }));
        assert_eq!(over.code(), crate::ErrorCode::StepLimit);
        let mut heavy = job.clone();
        let chunk = json!("y".repeat(60_000));
        let mut refused = None;
        for i in 0..40u32 {
            match apply(&heavy, run(i, &format!("h{i}"), chunk.clone()), 2_000) {
                Ok(t) => heavy = t.job,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(matches!(refused, Some(Refusal::StepLimit { .. })), "{refused:?}");
    }

    #[test]
    fn the_protocol_answers_parse_and_the_call_carries_the_recorded_outcomes() {
        let step: Answer = serde_json::from_value(json!({ "op": "step",
            "step": { "kind": "run", "seq": 0, "name": "quote", "result": { "price": 9 } } }))
        .expect("a step");
        assert_eq!(step, Answer::Step { step: run(0, "quote", json!({ "price": 9 })) });
        let fail: Answer = serde_json::from_value(json!({ "op": "fail", "error": "no" })).expect("a fail");
        assert_eq!(fail, Answer::Fail { error: "no".into(), retryable: false });
        assert!(serde_json::from_value::<Answer>(json!({ "op": "done" })).is_err());
        assert!(serde_json::from_value::<Answer>(json!({ "op": "complete", "extra": 1 })).is_err());
        let job = apply(&running(), run(0, "quote", json!(9)), 2_000).expect("recorded").job;
        let body = call_body(&job);
        assert_eq!(
            body["steps"][0],
            json!({ "seq": 0, "name": "quote", "kind": "run", "state": "completed",
            "attempts": 1, "result": 9 })
        );
        assert_eq!(body["run"]["attempt"], 1);
        assert_eq!(call_id(&job), format!("{}_1_1", job.id));
    }

    #[test]
    fn a_fan_out_resumes_with_every_outcome_and_keeps_within_the_runs_bytes() {
        let job = running();
        let kid = |n: u64| {
            let mut k = job.clone();
            k.id = crate::JobId::new(0, 1_000, 100 + n);
            k.steps.clear();
            k
        };
        let kids = vec![kid(1), kid(2)];
        let fan =
            StepReport::FanOut { seq: 0, name: "all".into(), jobs: vec![json!({}), json!({})], children: kids.clone() };
        let run = apply(&job, fan, 2_000).expect("fanned out").job;
        assert_eq!((run.state, run.steps[0].state), (JobState::Scheduled, StepState::Waiting));
        let ended = |k: &Job, result: Value| {
            let mut k = k.clone();
            k.state = JobState::Completed;
            k.result = Some(result);
            k.parent = Some(Parent { job: run.id.clone(), step: "all".into() });
            k
        };
        let big = json!("z".repeat(600_000));
        let one = child_done(&run, &ended(&kids[0], big.clone()), 3_000).expect("recorded").job;
        assert_eq!(one.state, JobState::Scheduled, "one child of two");
        let two = child_done(&one, &ended(&kids[1], big), 4_000).expect("resumed");
        assert_eq!((two.job.state, two.effect), (JobState::Queued, Effect::Enqueue));
        let outcomes = two.job.steps[0].result.clone().unwrap_or_default();
        assert_eq!(outcomes[0]["state"], "completed");
        assert!(outcomes[0]["result"].is_string(), "the first result fits");
        assert!(outcomes[1].get("result").is_none() && outcomes[1]["error"].is_string(), "the second does not");
        assert!(two.job.steps.iter().map(Step::weight).sum::<usize>() <= MAX_RUN_BYTES);
        assert!(child_done(&two.job, &ended(&kids[1], json!(1)), 5_000).is_none(), "a child ends once");
    }

    #[test]
    fn the_index_key_is_the_same_for_the_wait_and_the_event() {
        let matches = vec![
            Match { event: "/data/order".into(), value: json!(7) },
            Match { event: "/data/a".into(), value: json!("x") },
        ];
        let (ptrs, values) = index_key(&matches);
        let event = event_subject("paid", &json!({"order": 7, "a": "x", "other": 1}), None);
        assert_eq!(event_values(&ptrs, &event), Some(values));
        assert!(matches_event(&matches, &event));
        let other = event_subject("paid", &json!({"order": 8, "a": "x"}), None);
        assert!(!matches_event(&matches, &other));
        assert_eq!(event_values(&ptrs, &event_subject("paid", &json!({}), None)), None);
    }
}
