//! The deterministic simulation of the job protocol (`scripts/sim`): shards running
//! `edgejobs_shard`'s code on in-memory SQLite, a faulty queue, crashing and pausing
//! consumers, one simulated clock, one seed. After every step the invariants of
//! ARCHITECTURE.md ("The simulation") are checked; a failing seed is shrunk to the
//! shortest run of steps that still fails, printed, and the process exits 1.
//!
//! `--seed N` (default 1), `--seeds K` (runs seeds N..N+K), `--steps S` per seed (default
//! 20000), `--faults F` (fault level, default 1; 0 none), `--bug NAME` (switch a known
//! bug on: `stale-overwrite`, `unchecked-attempts`, `sweep-resends-cancelled`,
//! `schedule-ticks-twice`, `unchecked-lease`, `schedule-key-hijack`, `pending-uncounted`,
//! `reseal-unbound`, `moved-key-created`, `flow-over-limit`, `flow-slot-leak`, `flow-no-wake`,
//! `schedule-misplaced`, `take-past-gate`, `step-forgotten`, `resume-twice`, `update-unleased`,
//! `live-forgets-tape`, `child-trace-dropped`),
//! `--expect-violation` (exit 0 only when a violation is found).

mod flow;
mod oracle;
mod rng;
mod traces;
mod workflows;
mod world;

use std::process::ExitCode;
use std::time::Instant;

use edgejobs_shard::bugs::Bugs;
use oracle::{INVARIANTS, Violation};
use rng::Rng;
use world::{Action, Faults, KINDS, World};

#[derive(Debug, Clone)]
struct Args {
    seed: u64,
    seeds: u64,
    steps: usize,
    faults: f64,
    bug: Option<String>,
    expect_violation: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { seed: 1, seeds: 1, steps: 20_000, faults: 1.0, bug: None, expect_violation: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--seed" => a.seed = value("--seed")?.parse().map_err(|_| "--seed: an integer")?,
            "--seeds" => a.seeds = value("--seeds")?.parse().map_err(|_| "--seeds: an integer")?,
            "--steps" => a.steps = value("--steps")?.parse().map_err(|_| "--steps: an integer")?,
            "--faults" => a.faults = value("--faults")?.parse().map_err(|_| "--faults: a number")?,
            "--bug" => a.bug = Some(value("--bug")?),
            "--expect-violation" => a.expect_violation = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn bugs(name: Option<&str>) -> Result<Bugs, String> {
    let mut b = Bugs::default();
    match name {
        None => {}
        Some("stale-overwrite") => b.stale_overwrite = true,
        Some("unchecked-attempts") => b.unchecked_attempts = true,
        Some("sweep-resends-cancelled") => b.sweep_resends_cancelled = true,
        Some("schedule-ticks-twice") => b.schedule_ticks_twice = true,
        Some("unchecked-lease") => b.unchecked_lease = true,
        Some("schedule-key-hijack") => b.schedule_key_hijack = true,
        Some("pending-uncounted") => b.pending_uncounted = true,
        Some("reseal-unbound") => b.reseal_unbound = true,
        Some("moved-key-created") => b.moved_key_created = true,
        Some("flow-over-limit") => b.flow_over_limit = true,
        Some("flow-slot-leak") => b.flow_slot_leak = true,
        Some("flow-no-wake") => b.flow_no_wake = true,
        Some("schedule-misplaced") => b.schedule_misplaced = true,
        Some("take-past-gate") => b.take_past_gate = true,
        Some("step-forgotten") => b.step_forgotten = true,
        Some("resume-twice") => b.resume_twice = true,
        Some("update-unleased") => b.update_unleased = true,
        Some("live-forgets-tape") => b.live_forgets_tape = true,
        Some("child-trace-dropped") => b.child_trace_dropped = true,
        Some(other) => return Err(format!("unknown bug {other}")),
    }
    Ok(b)
}

/// The actions of a run: drawn from the seed alone, each with its own random draws, so a
/// subset of them still runs (that is how a failure shrinks).
fn actions(seed: u64, steps: usize) -> Vec<Action> {
    let mut rng = Rng::new(seed);
    let total: u64 = KINDS.iter().map(|(_, w)| w).sum();
    (0..steps)
        .map(|_| {
            let mut pick = rng.below(total);
            let mut kind = KINDS[0].0;
            for (k, w) in KINDS {
                if pick < *w {
                    kind = *k;
                    break;
                }
                pick -= w;
            }
            Action { kind, r: rng.next_u64(), dt: rng.below(600) }
        })
        .collect()
}

/// Runs `actions` in a fresh world; the violation and the step it happened at, if any.
fn run(seed: u64, faults: Faults, bugs: &Bugs, actions: &[Action], trace: bool) -> (World, Option<(usize, Violation)>) {
    let mut w = World::new(seed, faults, bugs.clone());
    if trace {
        w.trace = Some(Vec::new());
    }
    for (i, a) in actions.iter().enumerate() {
        w.step(*a);
        if (i + 1) % 2000 == 0 {
            w.check_counters();
        }
        if let Some(v) = w.oracle.violation.clone() {
            return (w, Some((i + 1, v)));
        }
    }
    w.check_counters();
    w.drain();
    let v = w.oracle.violation.clone().map(|v| (actions.len(), v));
    (w, v)
}

/// Removes steps while the same invariant still breaks (chunks, then single steps),
/// within a budget of runs.
fn shrink(seed: u64, faults: Faults, bugs: &Bugs, mut steps: Vec<Action>, invariant: &str) -> Vec<Action> {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let fails = |s: &[Action]| matches!(run(seed, faults, bugs, s, false).1, Some((_, v)) if v.invariant == invariant);
    let mut chunk = steps.len() / 2;
    while chunk >= 1 && Instant::now() < deadline {
        let mut i = 0;
        while i < steps.len() && Instant::now() < deadline {
            let end = (i + chunk).min(steps.len());
            let candidate: Vec<Action> = steps[..i].iter().chain(&steps[end..]).copied().collect();
            if fails(&candidate) {
                steps = candidate;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    steps
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    let bugs = match bugs(args.bug.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    let faults = Faults::at(args.faults);
    let started = Instant::now();
    let mut total_ops = 0u64;
    let mut peak_jobs = 0usize;
    let mut checks: std::collections::BTreeMap<&str, u64> = Default::default();
    let (mut waiting_lists, mut collapsed, mut pauses, mut taken) = (0u64, 0u64, 0u64, 0u64);
    let mut wf = [0u64; 7];
    let mut traced = [0u64; 3];
    for seed in args.seed..args.seed + args.seeds {
        let steps = actions(seed, args.steps);
        let (w, failed) = run(seed, faults, &bugs, &steps, false);
        total_ops += w.ops;
        peak_jobs = peak_jobs.max(w.peak_jobs);
        waiting_lists += w.oracle.flow.waiting_lists;
        collapsed += w.oracle.flow.collapsed;
        pauses += w.oracle.flow.pauses;
        taken += w.oracle.flow.taken;
        let seen = &w.oracle.wf;
        let figures =
            [seen.runs, seen.executed, seen.replayed, seen.suspended, seen.events, seen.resumed, seen.refused];
        for (sum, n) in wf.iter_mut().zip(figures) {
            *sum += n;
        }
        let t = &w.oracle.traces;
        for (sum, n) in traced.iter_mut().zip([t.enqueued, t.children, t.callbacks]) {
            *sum += n;
        }
        for (k, v) in &w.oracle.checks {
            *checks.entry(k).or_default() += v;
        }
        if let Some((at, v)) = failed {
            println!("seed {seed}: invariant {} broken at step {at}: {}", v.invariant, v.message);
            if args.expect_violation {
                println!("found after {at} steps (bug {})", args.bug.as_deref().unwrap_or("none"));
                return ExitCode::SUCCESS;
            }
            let prefix: Vec<Action> = steps[..at.min(steps.len())].to_vec();
            let short = shrink(seed, faults, &bugs, prefix, v.invariant);
            let (w, again) = run(seed, faults, &bugs, &short, true);
            println!("shortest failing run found: {} steps (replay: --seed {seed} --steps {at})", short.len());
            for line in w.trace.unwrap_or_default() {
                println!("  {line}");
            }
            if let Some((_, v)) = again {
                println!("  => {}: {}", v.invariant, v.message);
            }
            return ExitCode::from(1);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim: {} seeds x {} steps = {} steps in {:.1} s ({:.0} steps/s), faults {}, bug {}",
        args.seeds,
        args.steps,
        total_ops,
        secs,
        total_ops as f64 / secs.max(1e-9),
        args.faults,
        args.bug.as_deref().unwrap_or("none")
    );
    println!("  at most {peak_jobs} jobs stored at once");
    println!(
        "  flow: {waiting_lists} waiting lists seen by the checks, {collapsed} debounced or throttled answers, {pauses} pauses and resumes, {taken} jobs taken by a finish"
    );
    let [runs, executed, replayed, suspended, events, resumed, refused] = wf;
    println!(
        "  workflows: {runs} runs, {executed} steps executed and {replayed} replayed, {suspended} suspensions, {events} events sent, {resumed} resumes accepted and {refused} refused"
    );
    let [enqueued, children, callbacks] = traced;
    println!(
        "  traces: {enqueued} jobs enqueued with a context, {children} children and {callbacks} callback jobs checked against their origin's"
    );
    for name in INVARIANTS {
        println!("  invariant {name}: checked {} times, held", checks.get(name).copied().unwrap_or(0));
    }
    if args.expect_violation {
        println!("sim: expected a violation with bug {}, found none", args.bug.as_deref().unwrap_or("none"));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
