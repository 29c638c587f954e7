//! Durable workflow steps for Rust handlers (#29): `ctx.step.run("call-model", || async {
//! .. }).await?`. A handler that uses steps is re-executed from the start on each attempt;
//! a step its run already recorded returns the recorded outcome without running, the first
//! one not recorded runs (or, for a sleep or a wait, is requested) and is reported to the
//! edge, which records it in the run's shard. A sleep, a wait or a step retry suspends the
//! run: the step call answers [`StepError::Suspended`], which the handler returns with `?`
//! and the worker settles without a report (the shard already holds the run, `scheduled`,
//! and holds no slot or lease for it).
//!
//! Steps are told apart by their order and name: a handler that reaches another name at a
//! position than it recorded there fails the run for good (`nondeterministic_step`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use edgejobs_core::machine::Event;
use edgejobs_core::workflow::{Match, Step, StepKind, StepReport, StepRetry, StepState, WaitFor};
use edgejobs_core::{ErrorCode, Job, JobState};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::HandlerError;
use crate::edge::{Answer, Edge};

/// Why a step call did not give the handler a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The step failed for good (its attempts are spent), now or in an earlier execution.
    /// Returned with `?` it fails the run for good: a retry would meet the same record.
    #[error("step {step:?} failed: {error}")]
    Failed { step: String, error: String },
    /// The run sleeps or waits now: return this (with `?`) and the run resumes later.
    #[error("the run is suspended")]
    Suspended,
    /// The edge refused the step: the handler changed its steps (`nondeterministic_step`),
    /// the run is over a limit, or this attempt no longer holds the run.
    #[error("the step was refused: {0}")]
    Refused(edgejobs_core::ApiError),
    /// The edge could not be reached: the attempt fails and is retried.
    #[error("the step could not be recorded: {0}")]
    Unavailable(String),
    /// The recorded result does not deserialize into the type asked for.
    #[error("step {step:?}: the recorded result does not fit: {error}")]
    Decode { step: String, error: String },
}

impl From<StepError> for HandlerError {
    fn from(e: StepError) -> HandlerError {
        match e {
            StepError::Suspended => HandlerError::Suspended,
            StepError::Unavailable(_) => HandlerError::Retryable(e.to_string()),
            StepError::Refused(ref api)
                if matches!(api.code, ErrorCode::LeaseLost | ErrorCode::LeaseMismatch | ErrorCode::StaleAttempt) =>
            {
                HandlerError::Retryable(e.to_string())
            }
            _ => HandlerError::Permanent(e.to_string()),
        }
    }
}

/// How a step call at some position finds the run's record.
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Recorded: return this outcome without running.
    Recorded(Step),
    /// Not recorded (or due for a retry): run it and report.
    Run,
    /// Another step was recorded at this position.
    Nondeterministic(String),
}

/// What the step at `seq` named `name` of kind `kind` finds in `recorded`.
pub fn replay(recorded: &[Step], seq: usize, name: &str, kind: StepKind) -> Replay {
    match recorded.get(seq) {
        None => {
            if recorded.iter().any(|s| s.name == name) {
                Replay::Nondeterministic(format!("step name {name:?} is used twice in one run"))
            } else {
                Replay::Run
            }
        }
        Some(s) if s.name != name || s.kind != kind => Replay::Nondeterministic(format!(
            "step {seq} was recorded as {:?} ({}), and this execution reached {name:?} ({})",
            s.name,
            s.kind.as_str(),
            kind.as_str()
        )),
        Some(s) if s.state.is_recorded() => Replay::Recorded(s.clone()),
        // A sleep the alarm ended is completed by then; a wait that is still waiting here
        // was resumed by the event that queued this execution (its record came with it).
        Some(_) => Replay::Run,
    }
}

/// The step context of one execution of a run.
#[derive(Debug, Clone)]
pub struct Steps {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    edge: Option<Edge>,
    /// The attempt's live output, flushed before each step report.
    live: Option<crate::live::Live>,
    job: Job,
    /// What match conditions resolve against: `{payload, metadata, id, type}`.
    subject: Value,
    next: AtomicU32,
}

impl Steps {
    /// The steps of `job`'s running attempt, reported through `edge` (`None`: a context with
    /// no edge, for handlers run outside a consumer; every new step is then unavailable).
    pub fn new(job: &Job, edge: Option<Edge>) -> Steps {
        Steps::build(job, edge, None)
    }

    /// [`Steps::new`] for an attempt with live output (#30): what the handler streamed is
    /// sent, and answered, before each step report, so a step's chunks precede its record
    /// (and reach the edge while the run still holds the attempt, before a sleep or a wait).
    pub fn with_live(job: &Job, edge: Option<Edge>, live: crate::live::Live) -> Steps {
        Steps::build(job, edge, Some(live))
    }

    fn build(job: &Job, edge: Option<Edge>, live: Option<crate::live::Live>) -> Steps {
        let subject = serde_json::json!({
            "payload": job.payload, "metadata": job.metadata, "id": job.id.as_str(), "type": job.job_type,
        });
        Steps { inner: Arc::new(Inner { edge, live, job: job.clone(), subject, next: AtomicU32::new(0) }) }
    }

    fn claim(&self, name: &str, kind: StepKind) -> Result<(u32, Replay), StepError> {
        let seq = self.inner.next.fetch_add(1, Ordering::SeqCst);
        match replay(&self.inner.job.steps, seq as usize, name, kind) {
            Replay::Nondeterministic(m) => {
                Err(StepError::Refused(edgejobs_core::ApiError::new(ErrorCode::NondeterministicStep, m)))
            }
            r => Ok((seq, r)),
        }
    }

    /// Reports a step; answers the run's state after it and the run when the edge sent it.
    async fn report(&self, step: StepReport) -> Result<(JobState, Option<Box<Job>>), StepError> {
        let Some(edge) = &self.inner.edge else {
            return Err(StepError::Unavailable("no edge to record steps with".into()));
        };
        if let Some(live) = &self.inner.live {
            // A refused or undelivered update was logged by the live sender; the step's own
            // report answers for the attempt.
            let _ = live.flush().await;
        }
        let job = &self.inner.job;
        let event = Event::Step { attempt: job.attempt, step };
        match edge.report_persistently(&job.id, &event, job.lease.as_deref()).await {
            Answer::Accepted(answered, state) => Ok((state, answered)),
            Answer::Refused(e) => Err(StepError::Refused(e)),
            Answer::Unavailable(why) => Err(StepError::Unavailable(why)),
        }
    }

    /// Runs `f` once for the run: its result is recorded and returned by every later
    /// execution. A failure is recorded as the step's final error (no retry; see
    /// [`Self::run_with`]).
    pub async fn run<T, F, Fut>(&self, name: &str, f: F) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        self.run_with(name, StepRetry::default(), f).await
    }

    /// [`Self::run`] with a retry policy: a failure with attempts left suspends the run until
    /// the policy's delay, and the next execution runs the step again.
    pub async fn run_with<T, F, Fut>(&self, name: &str, retry: StepRetry, f: F) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        self.run_inner(name, retry, None, f).await
    }

    /// [`Self::run_with`] with a timeout: an execution of the step that takes longer is cut
    /// and counts as a failure (`timed out after ..`), retried by `retry`.
    pub async fn run_timed<T, F, Fut>(
        &self,
        name: &str,
        retry: StepRetry,
        timeout: Duration,
        f: F,
    ) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        self.run_inner(name, retry, Some(timeout), f).await
    }

    async fn run_inner<T, F, Fut>(
        &self,
        name: &str,
        retry: StepRetry,
        timeout: Option<Duration>,
        f: F,
    ) -> Result<T, StepError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let (seq, replay) = self.claim(name, StepKind::Run)?;
        if let Replay::Recorded(step) = replay {
            return recorded(step);
        }
        let ran = match timeout {
            None => f().await,
            Some(t) => tokio::time::timeout(t, f())
                .await
                .unwrap_or_else(|_| Err(format!("the step timed out after {} ms", t.as_millis()))),
        };
        match ran {
            Ok(value) => {
                let result = serde_json::to_value(&value)
                    .map_err(|e| StepError::Decode { step: name.to_owned(), error: e.to_string() })?;
                self.report(StepReport::Run { seq, name: name.to_owned(), result }).await?;
                Ok(value)
            }
            Err(error) => {
                let report = StepReport::Fail { seq, name: name.to_owned(), error: error.clone(), retry };
                match self.report(report).await? {
                    (JobState::Active, _) => Err(StepError::Failed { step: name.to_owned(), error }),
                    _ => Err(StepError::Suspended),
                }
            }
        }
    }

    /// Sleeps `d` without holding a worker: the run is suspended and resumed by the alarm.
    pub async fn sleep(&self, name: &str, d: Duration) -> Result<(), StepError> {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.sleep_report(name, Some(ms), None).await
    }

    /// Sleeps until `at_ms` (ms since the epoch).
    pub async fn sleep_until(&self, name: &str, at_ms: u64) -> Result<(), StepError> {
        self.sleep_report(name, None, Some(at_ms)).await
    }

    async fn sleep_report(&self, name: &str, ms: Option<u64>, until: Option<u64>) -> Result<(), StepError> {
        let (seq, replay) = self.claim(name, StepKind::Sleep)?;
        if let Replay::Recorded(_) = replay {
            return Ok(());
        }
        match self.report(StepReport::Sleep { seq, name: name.to_owned(), ms, until }).await? {
            (JobState::Active, _) => Ok(()), // the time had already come
            _ => Err(StepError::Suspended),
        }
    }

    /// Starts the child job `spec` (as `POST /v1/jobs` takes it, in this run's tenant) and
    /// resumes with its result, or [`StepError::Failed`] with its final error. The run holds
    /// no worker while the child runs.
    pub async fn invoke(&self, name: &str, spec: Value) -> Result<Value, StepError> {
        let (seq, replay) = self.claim(name, StepKind::Invoke)?;
        if let Replay::Recorded(step) = replay {
            return recorded(step);
        }
        let report = StepReport::Invoke { seq, name: name.to_owned(), jobs: vec![spec], children: Vec::new() };
        self.report(report).await?;
        Err(StepError::Suspended)
    }

    /// Starts the child jobs `specs` (1 to 1,000) and resumes when all are final, with each
    /// one's outcome in order: `{"id", "state", "result"?, "error"?}`.
    pub async fn fan_out(&self, name: &str, specs: Vec<Value>) -> Result<Vec<Value>, StepError> {
        let (seq, replay) = self.claim(name, StepKind::FanOut)?;
        if let Replay::Recorded(step) = replay {
            return recorded(step);
        }
        self.report(StepReport::FanOut { seq, name: name.to_owned(), jobs: specs, children: Vec::new() }).await?;
        Err(StepError::Suspended)
    }

    /// Waits for event `wait.event` whose conditions hold: answers its data, or `None` when
    /// `wait.timeout` passed first. Conditions pair a pointer into the event (`/data/id`)
    /// with a pointer into this run (`/payload/order_id`), resolved here.
    pub async fn wait_for_event(&self, name: &str, wait: Wait) -> Result<Option<Value>, StepError> {
        let (seq, replay) = self.claim(name, StepKind::Wait)?;
        if let Replay::Recorded(step) = replay {
            return Ok(match step.state {
                StepState::TimedOut => None,
                _ => step.result,
            });
        }
        let mut matches = Vec::with_capacity(wait.matches.len());
        for (event_ptr, run_ptr) in wait.matches {
            let Some(value) = self.inner.subject.pointer(&run_ptr) else {
                return Err(StepError::Refused(edgejobs_core::ApiError::field(
                    "matches",
                    format!("{run_ptr:?} names nothing in the run"),
                )));
            };
            matches.push(Match { event: event_ptr, value: value.clone() });
        }
        let report = StepReport::Wait {
            seq,
            name: name.to_owned(),
            wait: WaitFor { event: wait.event, matches },
            timeout_ms: wait.timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            lookback_ms: wait.lookback.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        match self.report(report).await? {
            // Recorded at once: the answer carries the run with the step's outcome.
            (JobState::Active, Some(job)) => match job.steps.get(seq as usize) {
                Some(s) if s.state == StepState::TimedOut => Ok(None),
                Some(s) => Ok(s.result.clone()),
                None => Err(StepError::Unavailable("the answer lacks the step".into())),
            },
            _ => Err(StepError::Suspended),
        }
    }
}

fn recorded<T: DeserializeOwned>(step: Step) -> Result<T, StepError> {
    match step.state {
        StepState::Failed => Err(StepError::Failed { step: step.name, error: step.error.unwrap_or_default() }),
        _ => serde_json::from_value(step.result.unwrap_or(Value::Null))
            .map_err(|e| StepError::Decode { step: step.name, error: e.to_string() }),
    }
}

/// What [`Steps::wait_for_event`] waits for.
#[derive(Debug, Clone, Default)]
pub struct Wait {
    pub event: String,
    /// `(pointer into the event, pointer into the run)` pairs that must be equal.
    pub matches: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Take an event sent up to this long before the wait (at most a day).
    pub lookback: Option<Duration>,
}

impl Wait {
    pub fn event(name: &str) -> Wait {
        Wait { event: name.to_owned(), ..Wait::default() }
    }

    /// The event's value at `event_ptr` must equal the run's at `run_ptr`.
    pub fn matching(mut self, event_ptr: &str, run_ptr: &str) -> Wait {
        self.matches.push((event_ptr.to_owned(), run_ptr.to_owned()));
        self
    }

    pub fn timeout(mut self, d: Duration) -> Wait {
        self.timeout = Some(d);
        self
    }

    pub fn lookback(mut self, d: Duration) -> Wait {
        self.lookback = Some(d);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(name: &str, kind: StepKind, state: StepState) -> Step {
        Step {
            name: name.into(),
            kind,
            state,
            attempts: 1,
            started_at: 1,
            ended_at: None,
            until: None,
            result: Some(json!(name)),
            error: None,
            wait: None,
            lookback_ms: 0,
            children: Vec::new(),
        }
    }

    #[test]
    fn a_recorded_step_is_replayed_and_a_changed_one_is_refused() {
        let rec = vec![step("a", StepKind::Run, StepState::Completed), step("b", StepKind::Run, StepState::Retrying)];
        assert!(matches!(replay(&rec, 0, "a", StepKind::Run), Replay::Recorded(s) if s.result == Some(json!("a"))));
        assert_eq!(replay(&rec, 1, "b", StepKind::Run), Replay::Run, "a retrying step runs again");
        assert_eq!(replay(&rec, 2, "c", StepKind::Run), Replay::Run);
        assert!(matches!(replay(&rec, 0, "x", StepKind::Run), Replay::Nondeterministic(_)));
        assert!(matches!(replay(&rec, 0, "a", StepKind::Sleep), Replay::Nondeterministic(_)));
        assert!(matches!(replay(&rec, 2, "a", StepKind::Run), Replay::Nondeterministic(_)), "a name used twice");
    }

    #[tokio::test]
    async fn recorded_steps_never_run_again_and_a_failed_one_returns_its_error() {
        let mut job = edgejobs_core::spec::parse_spec(&json!({ "type": "sleep" }), 1)
            .expect("spec")
            .into_job(edgejobs_core::JobId::new(0, 1, 1), 1)
            .0;
        let mut failed = step("b", StepKind::Run, StepState::Failed);
        failed.error = Some("boom".into());
        job.steps = vec![step("a", StepKind::Run, StepState::Completed), failed];
        let steps = Steps::new(&job, None);
        let ran = std::sync::atomic::AtomicU32::new(0);
        let a: String = steps
            .run("a", || async {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok("fresh".to_owned())
            })
            .await
            .expect("recorded");
        assert_eq!((a.as_str(), ran.load(Ordering::SeqCst)), ("a", 0), "the record, not a new run");
        let b = steps.run("b", || async { Ok::<u32, String>(1) }).await;
        assert_eq!(b, Err(StepError::Failed { step: "b".into(), error: "boom".into() }));
        let c = steps.run("c", || async { Ok::<u32, String>(1) }).await;
        assert!(matches!(c, Err(StepError::Unavailable(_))), "a new step needs the edge");
        assert!(matches!(HandlerError::from(StepError::Suspended), HandlerError::Suspended));
    }

    #[tokio::test]
    async fn what_a_step_streamed_reaches_the_edge_before_the_step_record() {
        let fake = crate::testing::FakeEdge::start().await;
        let job = crate::testing::job(3);
        // A linger longer than the test: only the flush before the step report sends.
        let mut ctx = crate::testing::ctx(&job, &fake, Duration::from_secs(10), "");
        ctx.step = Steps::with_live(&job, Some(fake.edge()), ctx.live.clone());
        let ctx = &ctx;
        let n: u32 = ctx
            .step
            .run("write", || async move {
                ctx.stream("tokens", "Hel").map_err(|e| e.to_string())?;
                ctx.stream("tokens", "lo").map_err(|e| e.to_string())?;
                Ok(2)
            })
            .await
            .expect("recorded");
        assert_eq!(n, 2);
        let events = fake.events();
        let names: Vec<&str> = events.iter().map(|(_, e)| e.name()).collect();
        assert_eq!(names, ["update", "step"]);
        ctx.live.close().await;
    }

    #[tokio::test]
    async fn a_step_past_its_timeout_is_cut_and_reported_as_a_failure() {
        let job = edgejobs_core::spec::parse_spec(&json!({ "type": "sleep" }), 1)
            .expect("spec")
            .into_job(edgejobs_core::JobId::new(0, 1, 1), 1)
            .0;
        let steps = Steps::new(&job, None);
        let slow = steps.run_timed("slow", StepRetry::default(), Duration::from_millis(20), || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<u32, String>(1)
        });
        // Cut well before the minute: the failure is then reported (here: no edge to report to).
        let out = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("the step was cut");
        assert!(matches!(out, Err(StepError::Unavailable(_))), "{out:?}");
    }
}
