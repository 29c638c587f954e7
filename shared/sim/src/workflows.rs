//! Durable workflows in the simulation (#29): the workflow share of the workload (runs of
//! two to four steps: `run`, `sleep`, `wait` for an event, `invoke` a child job or
//! `fan_out` to two or three), the handler's replay as the
//! native consumer does it (`functions/consumer/src/handlers/steps.rs`), and what the
//! simulation knows of runs and events independently of the shards, with the invariants it
//! holds them to (ARCHITECTURE.md, "The simulation"):
//!
//! - **a-recorded-step-never-reruns**: an execution of a run (from the start or the takeover
//!   that began it) never executes a step whose `run` report was answered accepted before it
//!   began; it replays it. Executions that began before the record (a holder that crashed
//!   between executing and reporting, a paused holder whose lease was taken) may run it again.
//! - **an-event-resumes-a-wait-once**: a wait is completed by at most one accepted resume,
//!   with the data of an event sent (since the wait's start less its look-back) by the run's
//!   tenant, of the wait's name, that meets its conditions, and that data is its result; a
//!   resume is refused only when the wait no longer waits; and every wait that an event met
//!   after its registration (or within its look-back when it registered) is reached by a
//!   resume once the deliveries ran.
//!
//! The world's side (the consumers' executions, the edge's registration and sends) is in
//! `world/workflows.rs`.

use std::collections::{BTreeMap, BTreeSet};

use edgejobs_core::workflow::{Match, Step, StepKind, StepState, WaitFor};
use serde_json::{Value, json};

use crate::rng::Rng;

/// The event names waits use (and events are sent with).
pub const EVENTS: &[&str] = &["paid", "approved"];
/// Orders a run and an event name (small, so events meet several waits, of both tenants).
pub const ORDERS: u64 = 5;
/// Regions, the second condition some waits have.
pub const REGIONS: &[&str] = &["eu", "us"];

/// One step of a run's plan, as its payload lists it (`{"wf": [..], "order", "region"}`).
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Run,
    Sleep {
        ms: u64,
    },
    /// Waits for `event` whose `/data/<field>` equals the run's payload's, for each field of
    /// `on`; `timeout` none waits until an event (or a cancel).
    Wait {
        event: String,
        on: Vec<String>,
        timeout: Option<u64>,
        lookback: u64,
    },
    /// Starts child jobs (their specs, as `POST /v1/jobs` takes them) and waits for them to
    /// end: one (`invoke`, resumed with its result or failed with its error) or several
    /// (`fan_out`, resumed with every outcome).
    Children {
        fan_out: bool,
        jobs: Vec<Value>,
    },
}

impl Planned {
    pub fn kind(&self) -> StepKind {
        match self {
            Planned::Run => StepKind::Run,
            Planned::Sleep { .. } => StepKind::Sleep,
            Planned::Wait { .. } => StepKind::Wait,
            Planned::Children { fan_out: false, .. } => StepKind::Invoke,
            Planned::Children { fan_out: true, .. } => StepKind::FanOut,
        }
    }
}

/// The name of step `seq` of a plan (positions and names must match on every execution).
pub fn step_name(seq: usize, step: &Planned) -> String {
    format!("{}-{seq}", step.kind().as_str())
}

/// Gives `body` (a job spec without a type) the type and payload of a workflow run: a `run`
/// first, then one to three of `run`, `sleep` and `wait`, of which a fifth become an
/// `invoke` or a `fan_out` (drawn from `side`, so the rest of the workload is drawn as it
/// was before children existed).
pub fn spec(rng: &mut Rng, side: &mut Rng, body: &mut Value) {
    let n = 2 + rng.below(3);
    let mut wf = vec![json!({ "k": "run" })];
    for _ in 1..n {
        let pick = rng.below(100);
        let step = if pick < 30 {
            json!({ "k": "run" })
        } else if pick < 55 {
            json!({ "k": "sleep", "ms": 1_000 + rng.below(15_000) })
        } else {
            let on: Vec<&str> = match rng.below(10) {
                0 | 1 => vec![],
                2..=7 => vec!["order"],
                _ => vec!["order", "region"],
            };
            let timeout = if rng.chance(0.8) { json!(10_000 + rng.below(80_000)) } else { Value::Null };
            let lookback = if rng.chance(0.3) { 1_000 + rng.below(30_000) } else { 0 };
            let event = EVENTS[rng.below(EVENTS.len() as u64) as usize];
            json!({ "k": "wait", "event": event, "on": on, "timeout": timeout, "lookback": lookback })
        };
        wf.push(if side.chance(0.2) { children(side) } else { step });
    }
    body["type"] = json!("sleep");
    body["payload"] = json!({
        "wf": wf,
        "order": rng.below(ORDERS),
        "region": REGIONS[rng.below(REGIONS.len() as u64) as usize],
    });
}

/// An `invoke` (one child) or a `fan_out` (two or three) step: children of either lane,
/// sometimes delayed (inserted scheduled, woken by the alarm), sometimes retried.
fn children(rng: &mut Rng) -> Value {
    let fan_out = rng.chance(0.5);
    let count = if fan_out { 2 + rng.below(2) } else { 1 };
    let jobs: Vec<Value> = (0..count)
        .map(|_| {
            let mut job = json!({
                "type": if rng.chance(0.3) { "sleep" } else { "noop" },
                "max_attempts": 1 + rng.below(2),
            });
            if rng.chance(0.2) {
                job["delay"] = json!(1_000 + rng.below(10_000));
            }
            job
        })
        .collect();
    json!({ "k": if fan_out { "fan_out" } else { "invoke" }, "jobs": jobs })
}

/// A run's plan, read from its payload (`None`: not a workflow run).
pub fn plan(payload: &Value) -> Option<Vec<Planned>> {
    let steps = payload.get("wf")?.as_array()?;
    steps
        .iter()
        .map(|s| match s.get("k")?.as_str()? {
            "run" => Some(Planned::Run),
            "sleep" => Some(Planned::Sleep { ms: s.get("ms")?.as_u64()? }),
            "wait" => Some(Planned::Wait {
                event: s.get("event")?.as_str()?.to_owned(),
                on: s.get("on")?.as_array()?.iter().filter_map(|f| f.as_str().map(str::to_owned)).collect(),
                timeout: s.get("timeout").and_then(Value::as_u64),
                lookback: s.get("lookback")?.as_u64()?,
            }),
            k @ ("invoke" | "fan_out") => {
                Some(Planned::Children { fan_out: k == "fan_out", jobs: s.get("jobs")?.as_array()?.clone() })
            }
            _ => None,
        })
        .collect()
}

/// What a wait of a run waits for: its conditions resolved against the run's payload, as
/// the handler resolves `/payload/<field>`.
pub fn wait_for(event: &str, on: &[String], payload: &Value) -> WaitFor {
    let matches = on
        .iter()
        .map(|f| Match { event: format!("/data/{f}"), value: payload.get(f).cloned().unwrap_or(Value::Null) })
        .collect();
    WaitFor { event: event.to_owned(), matches }
}

/// How the step at `seq` finds the run's record (the consumer's `steps::replay`; a recorded
/// step is answered with its state).
#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    Recorded(StepState),
    Run,
    Nondeterministic,
}

pub fn replay(recorded: &[Step], seq: usize, name: &str, kind: StepKind) -> Replay {
    match recorded.get(seq) {
        None if recorded.iter().any(|s| s.name == name) => Replay::Nondeterministic,
        None => Replay::Run,
        Some(s) if s.name != name || s.kind != kind => Replay::Nondeterministic,
        Some(s) if s.state.is_recorded() => Replay::Recorded(s.state),
        Some(_) => Replay::Run,
    }
}

/// One execution of a run by a consumer: the plan, the steps its start (or takeover)
/// answered, where the handler is, and when (in [`WorkflowSeen::clock`]) it began.
#[derive(Debug, Clone)]
pub struct Exec {
    pub plan: Vec<Planned>,
    pub payload: Value,
    /// The run's context as its start answered it: a step's report names its span, a child
    /// of it (#32).
    pub trace: Option<edgejobs_core::trace::TraceContext>,
    pub steps: Vec<Step>,
    pub next: usize,
    pub began: u64,
}

/// An event sent (its first send, for an id sent again).
#[derive(Debug, Clone)]
pub struct Sent {
    pub tenant: String,
    pub name: String,
    pub data: Value,
    pub id: Option<String>,
    pub at: u64,
    /// The latest send of the same data (a send duplicated without an id is two events).
    pub last: u64,
}

/// A wait recorded by a run, as the simulation follows it.
#[derive(Debug, Clone)]
pub struct WaitSeen {
    pub tenant: String,
    pub wait: WaitFor,
    /// Events sent at or after this time may meet it (its start less its look-back).
    pub since: u64,
    pub until: Option<u64>,
    pub registered: bool,
    /// When an event that must reach it was sent (after its registration, or found by the
    /// look-back when it registered).
    pub owed: Option<u64>,
    /// A resume reached it: accepted, or refused because it no longer waited.
    pub settled: bool,
    /// Resumes accepted.
    pub accepted: u32,
    /// The drain sent it a matching event (waits without a timeout end that way).
    pub drained: bool,
}

/// What the simulation knows of workflow runs and events.
#[derive(Debug, Default)]
pub struct WorkflowSeen {
    /// Orders executions' beginnings and records.
    pub clock: u64,
    /// Per (run, step position): when its `run` report was first answered accepted.
    pub recorded: BTreeMap<(String, usize), u64>,
    /// Events sent, by their data's serial (`/n`).
    pub sent: BTreeMap<u64, Sent>,
    /// Per (run, step name): its wait.
    pub waits: BTreeMap<(String, String), WaitSeen>,
    /// Waits not settled yet (what a send looks at).
    pub open: BTreeSet<(String, String)>,
    /// Ids sent, with their tenant, name and data (a client's retry sends one again).
    pub ids: Vec<(String, String, String, Value)>,
    pub runs: u64,
    pub executed: u64,
    pub replayed: u64,
    pub suspended: u64,
    pub events: u64,
    pub duplicates: u64,
    pub resumed: u64,
    pub refused: u64,
}
