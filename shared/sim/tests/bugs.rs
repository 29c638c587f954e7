//! The simulation must be able to fail: with each known bug switched back on it finds a
//! violation within a bounded number of steps, and without one a short run holds.

use std::process::Command;

const SIM: &str = env!("CARGO_BIN_EXE_edgejobs-sim");
/// Steps a bug may take to be found (the closing note of #25 lists the actual counts).
const BOUND: usize = 20_000;

fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(SIM).args(args).output().expect("the simulation runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

fn found(bug: &str, invariant: &str) {
    let steps = BOUND.to_string();
    let (ok, out) = sim(&["--seed", "1", "--steps", &steps, "--bug", bug, "--expect-violation"]);
    assert!(ok, "bug {bug} was not found in {BOUND} steps:\n{out}");
    assert!(out.contains(&format!("invariant {invariant} broken")), "bug {bug} broke another invariant:\n{out}");
    let line = out.lines().find(|l| l.starts_with("found after")).expect("the steps it took");
    println!("{bug}: {line}");
}

#[test]
fn an_await_between_load_and_save_is_found() {
    found("stale-overwrite", "final-is-final");
}

#[test]
fn a_report_without_its_attempt_check_is_found() {
    found("unchecked-attempts", "stale-reports-change-nothing");
}

#[test]
fn a_sweep_that_resends_cancelled_jobs_is_found() {
    found("sweep-resends-cancelled", "final-is-final");
}

#[test]
fn a_schedule_that_fires_a_tick_twice_is_found() {
    found("schedule-ticks-twice", "one-run-per-schedule-tick");
}

#[test]
fn a_report_applied_without_its_lease_check_is_found() {
    found("unchecked-lease", "unleased-reports-change-nothing");
}

#[test]
fn a_schedule_run_that_reuses_a_callers_job_is_found() {
    found("schedule-key-hijack", "schedule-keys-name-their-own-runs");
}

#[test]
fn a_tenant_count_that_forgets_jobs_that_end_is_found() {
    found("pending-uncounted", "pending-counts-match");
}

#[test]
fn a_reseal_that_unbinds_values_from_their_job_is_found() {
    found("reseal-unbound", "sealed-values-survive-reseal");
}

#[test]
fn without_a_bug_a_run_holds_every_invariant_and_says_so() {
    let (ok, out) = sim(&["--seed", "7", "--steps", "3000"]);
    assert!(ok, "{out}");
    for name in [
        "acknowledged-jobs-exist",
        "stale-reports-change-nothing",
        "unleased-reports-change-nothing",
        "liveness-after-faults-stop",
        "flow-limit-never-exceeded",
        "flow-counts-match",
        "waiting-jobs-start",
        "paused-starts-nothing",
        "debounce-one-run-per-quiet-window",
        "throttle-at-most-limit-per-window",
        "a-recorded-step-never-reruns",
        "an-event-resumes-a-wait-once",
        "a-job-keeps-its-trace",
        "children-continue-their-origins-trace",
    ] {
        let line = out.lines().find(|l| l.contains(&format!("invariant {name}:"))).expect("reported");
        assert!(!line.contains("checked 0 times"), "{name} was never exercised: {line}");
    }
}

#[test]
fn a_failing_run_is_shrunk_and_printed_and_exits_1() {
    let (ok, out) = sim(&["--seed", "1", "--steps", "2000", "--bug", "sweep-resends-cancelled"]);
    assert!(!ok, "{out}");
    assert!(out.contains("shortest failing run found"), "{out}");
    assert!(out.contains("=> final-is-final"), "the shrunk run fails the same way:\n{out}");
}

#[test]
fn a_create_that_ignores_a_moved_key_is_found() {
    found("moved-key-created", "one-job-per-idempotency-key");
}

#[test]
fn a_gate_that_admits_over_a_keys_limit_is_found() {
    found("flow-over-limit", "flow-limit-never-exceeded");
}

#[test]
fn a_cancelled_or_dead_job_that_keeps_its_slots_is_found() {
    found("flow-slot-leak", "flow-counts-match");
}

#[test]
fn a_release_that_does_not_start_the_next_waiting_job_is_found() {
    found("flow-no-wake", "waiting-jobs-start");
}

#[test]
fn a_suspend_that_forgets_a_recorded_step_is_found() {
    found("step-forgotten", "a-recorded-step-never-reruns");
}

#[test]
fn a_resume_of_a_wait_that_no_longer_waits_is_found() {
    found("resume-twice", "an-event-resumes-a-wait-once");
}

#[test]
fn a_child_inserted_without_its_runs_trace_is_found() {
    found("child-trace-dropped", "children-continue-their-origins-trace");
}

#[test]
fn a_found_workflow_bug_is_shrunk_to_a_run_that_fails_the_same_way() {
    let (ok, out) = sim(&["--seed", "1", "--steps", "2000", "--bug", "step-forgotten"]);
    assert!(!ok, "{out}");
    assert!(out.contains("shortest failing run found"), "{out}");
    assert!(out.contains("=> a-recorded-step-never-reruns"), "the shrunk run fails the same way:\n{out}");
}
