//! The `edgejobs` CLI against the shared stack: output (human and `--json`), bulk enqueue
//! from NDJSON, the exit codes, and where it finds its URL and key; and on the fault stack
//! (the test is the consumer there) `get --wait` and `tail` following the event streams.
//! Every run is checked for the key in its output.

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use edgejobs_tests::hooks::Reply;
use edgejobs_tests::stack::{Stack, StackOptions};
use serde_json::{Value, json};

use crate::util::{Ctx, Test, cancel_on, enqueue_on, ensure, job_on, report_on, unique};

pub const TESTS: &[Test] = &[
    ("cli_enqueue_and_get_wait_human_and_json", cli_enqueue_and_get_wait),
    ("cli_bulk_enqueue_of_1000_jobs_from_ndjson", cli_bulk_enqueue),
    ("cli_refuses_a_broken_file_and_sends_nothing", cli_refuses_a_broken_file),
    ("cli_exit_codes", cli_exit_codes),
    ("cli_list_cancel_retry_and_dead_replay", cli_list_cancel_retry_and_dead_replay),
    ("cli_finds_dev_env_above_the_current_directory", cli_finds_dev_env),
    ("cli_completions_tail_and_backups", cli_completions_tail_and_backups),
    ("cli_schedules_create_show_trigger_pause_delete", cli_schedules),
    ("cli_get_prints_a_workflow_runs_steps", cli_get_prints_steps),
    ("cli_get_wait_follows_the_jobs_stream", cli_get_wait_follows_the_stream),
    ("cli_tail_follows_the_events_stream", cli_tail_follows_the_events_stream),
];

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }
}

fn scratch() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(unique("edgejobs-cli"));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Runs the CLI with only PATH in its environment plus `env`, in `cwd`; fails if a key of
/// the stack appears in what it printed.
fn run_in(ctx: &Ctx, cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Out> {
    let bin = edgejobs_tests::stack::binary(&StackOptions::default_root(), "edgejobs")?;
    let mut cmd = Command::new(bin);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(cwd).args(args);
    cmd.envs(env.iter().copied()).stdin(Stdio::null());
    let o = cmd.output().context("cannot run edgejobs")?;
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    for key in [&ctx.api_key, &ctx.admin_key] {
        ensure(!out.stdout.contains(key.as_str()) && !out.stderr.contains(key.as_str()), || {
            format!("a key was printed by {args:?}")
        })?;
    }
    Ok(out)
}

/// Runs the CLI against the shared stack with `key`.
fn run(ctx: &Ctx, key: &str, args: &[&str]) -> anyhow::Result<Out> {
    run_in(ctx, &std::env::temp_dir(), &[("EDGEJOBS_URL", &ctx.edge), ("EDGEJOBS_KEY", key)], args)
}

fn expect(out: &Out, code: i32, what: &str) -> anyhow::Result<()> {
    ensure(out.code == code, || {
        format!("{what}: exit {} (want {code})\nstdout: {}\nstderr: {}", out.code, out.stdout, out.stderr)
    })
}

fn cli_enqueue_and_get_wait(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("cli");
    let out = run(ctx, &ctx.api_key, &["enqueue", "noop", "--payload", r#"{"hello":"cli"}"#, "--tag", &tag])?;
    expect(&out, 0, "enqueue")?;
    let id = out.stdout.split_whitespace().next().unwrap_or_default().to_owned();
    ensure(id.starts_with('j') && out.stdout.contains("queued"), || format!("enqueue printed {}", out.stdout))?;
    let out = run(ctx, &ctx.api_key, &["get", &id, "--wait", "--json"])?;
    expect(&out, 0, "get --wait")?;
    let job = out.json()?;
    ensure(
        job["id"] == id.as_str() && job["state"] == "completed" && job["payload"] == json!({ "hello": "cli" }),
        || format!("job: {job}"),
    )?;
    let out = run(ctx, &ctx.api_key, &["get", &id])?;
    expect(&out, 0, "get")?;
    ensure(out.stdout.contains(&id) && out.stdout.contains("completed") && out.stdout.starts_with("FIELD"), || {
        format!("human get: {}", out.stdout)
    })?;
    // A payload from a file.
    let dir = scratch()?;
    std::fs::write(dir.join("p.json"), r#"{"from":"file"}"#)?;
    let at = format!("@{}", dir.join("p.json").display());
    let out = run(ctx, &ctx.api_key, &["enqueue", "noop", "--payload", &at, "--json"])?;
    expect(&out, 0, "enqueue @file")?;
    ensure(out.json()?["payload"] == json!({ "from": "file" }), || format!("payload from file: {}", out.stdout))
}

fn ndjson(dir: &Path, name: &str, lines: &[Value]) -> anyhow::Result<String> {
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    let p = dir.join(name);
    std::fs::write(&p, text.join("\n") + "\n")?;
    Ok(p.display().to_string())
}

fn count_tag(ctx: &Ctx, tag: &str) -> anyhow::Result<usize> {
    Ok(ctx.list_all(&format!("/v1/jobs?tag={tag}&limit=100"))?.len())
}

fn cli_bulk_enqueue(ctx: &Ctx) -> anyhow::Result<()> {
    // The admin key: 1,000 enqueues are more than the per-key rate limit (600 a minute), so
    // the CLI meets 429 and waits as told; the jobs key the other tests use is not touched.
    let dir = scratch()?;
    let tag = unique("bulk");
    let lines: Vec<Value> =
        (0..1000).map(|i| json!({ "type": "noop", "tags": [tag], "payload": { "n": i } })).collect();
    let file = ndjson(&dir, "jobs.ndjson", &lines)?;
    let out = run(ctx, &ctx.admin_key, &["enqueue", "--from", &file, "--json"])?;
    expect(&out, 0, "bulk enqueue")?;
    let summary = out.json()?;
    ensure(summary["created"] == 1000 && summary["existing"] == 0 && summary["refused"] == 0, || {
        format!("summary: {summary}")
    })?;
    let n = count_tag(ctx, &tag)?;
    ensure(n == 1000, || format!("{n} jobs with the tag, want 1000"))?;
    // With idempotency keys, a second run of the same file creates nothing.
    let tag = unique("bulk-keys");
    let keyed: Vec<Value> =
        (0..150).map(|i| json!({ "type": "noop", "tags": [tag], "idempotency_key": format!("{tag}-{i}") })).collect();
    let file = ndjson(&dir, "keyed.ndjson", &keyed)?;
    let first = run(ctx, &ctx.admin_key, &["enqueue", "--from", &file])?;
    expect(&first, 0, "keyed run")?;
    ensure(first.stdout.contains("150 created, 0 existing, 0 refused"), || format!("first: {}", first.stdout))?;
    let again = run(ctx, &ctx.admin_key, &["enqueue", "--from", &file])?;
    expect(&again, 0, "keyed rerun")?;
    ensure(again.stdout.contains("0 created, 150 existing, 0 refused"), || format!("again: {}", again.stdout))?;
    ensure(count_tag(ctx, &tag)? == 150, || "the rerun created jobs".into())
}

fn cli_refuses_a_broken_file(ctx: &Ctx) -> anyhow::Result<()> {
    let dir = scratch()?;
    let tag = unique("broken");
    let p = dir.join("broken.ndjson");
    let good = json!({ "type": "noop", "tags": [tag] }).to_string();
    std::fs::write(&p, format!("{good}\n{good}\n{{\"type\": \"noop\",\n{good}\n"))?;
    let out = run(ctx, &ctx.api_key, &["enqueue", "--from", &p.display().to_string()])?;
    expect(&out, 3, "broken file")?;
    ensure(out.stderr.contains("line 3") && out.stderr.contains("nothing was sent"), || {
        format!("stderr: {}", out.stderr)
    })?;
    ensure(count_tag(ctx, &tag)? == 0, || "a broken file created jobs".into())?;
    // A file the API refuses a line of: the rest is created, the line is named, exit 3.
    let lines = vec![json!({ "type": "noop", "tags": [tag] }), json!({ "type": "no-such-type", "tags": [tag] })];
    let file = ndjson(&dir, "refused.ndjson", &lines)?;
    let out = run(ctx, &ctx.api_key, &["enqueue", "--from", &file])?;
    expect(&out, 3, "a refused line")?;
    ensure(
        out.stdout.contains("1 created, 0 existing, 1 refused") && out.stdout.contains("line 2: unknown_type"),
        || format!("stdout: {}", out.stdout),
    )
}

fn cli_exit_codes(ctx: &Ctx) -> anyhow::Result<()> {
    let out = run(ctx, &ctx.api_key, &["get", "j000000000000000000000000000000"])?;
    expect(&out, 5, "unknown job")?;
    ensure(out.stderr.contains("job_not_found"), || format!("stderr: {}", out.stderr))?;
    let out = run(ctx, "ej_wrong_key_0000000000000000", &["list"])?;
    expect(&out, 4, "wrong key")?;
    ensure(out.stderr.contains("unauthorized"), || format!("stderr: {}", out.stderr))?;
    let out = run(ctx, &ctx.api_key, &["backups", "list"])?;
    expect(&out, 4, "jobs key on an admin route")?;
    let out = run(ctx, &ctx.api_key, &["enqueue", "no-such-type"])?;
    expect(&out, 3, "unknown type")?;
    ensure(out.stderr.contains("unknown_type"), || format!("stderr: {}", out.stderr))?;
    let port = edgejobs_tests::proc::free_port()?;
    let nowhere = format!("http://127.0.0.1:{port}");
    let out =
        run_in(ctx, &std::env::temp_dir(), &[("EDGEJOBS_URL", &nowhere), ("EDGEJOBS_KEY", &ctx.api_key)], &["list"])?;
    expect(&out, 1, "nobody listening")?;
    let later = run(ctx, &ctx.api_key, &["enqueue", "noop", "--delay", "1h", "--json"])?;
    let id = later.json()?["id"].as_str().unwrap_or_default().to_owned();
    let out = run(ctx, &ctx.api_key, &["get", &id, "--wait", "--timeout", "1s"])?;
    expect(&out, 7, "wait timed out")?;
    let out = run(ctx, &ctx.api_key, &["cancel", &id])?;
    expect(&out, 0, "cancel")?;
    ensure(out.stdout.contains("cancelled"), || format!("cancel printed {}", out.stdout))?;
    let out = run(ctx, &ctx.api_key, &["get", &id, "--wait"])?;
    expect(&out, 8, "waited for a cancelled job")?;
    let out = run(ctx, &ctx.api_key, &["health"])?;
    expect(&out, 0, "health")?;
    let dir = scratch()?;
    let out = run_in(ctx, &dir, &[], &["list"])?;
    expect(&out, 2, "no URL anywhere")?;
    let out = run(ctx, &ctx.api_key, &["list", "--state", "done"])?;
    expect(&out, 3, "a bad filter")?;
    ensure(out.stderr.contains("invalid_field"), || format!("stderr: {}", out.stderr))?;
    let out = run(ctx, &ctx.api_key, &["frobnicate"])?;
    expect(&out, 2, "unknown command")
}

fn cli_list_cancel_retry_and_dead_replay(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("cli-dead");
    let path = format!("/{}", unique("cli-dead"));
    let url = ctx.hooks.script(&path, vec![Reply::status(400)]);
    let payload = json!({ "url": url }).to_string();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = run(
            ctx,
            &ctx.api_key,
            &["enqueue", "webhook", "--payload", &payload, "--max-attempts", "1", "--tag", &tag, "--json"],
        )?;
        expect(&out, 0, "enqueue a webhook")?;
        ids.push(out.json()?["id"].as_str().unwrap_or_default().to_owned());
    }
    for id in &ids {
        ctx.wait_state(id, "dead", WAIT)?;
    }
    let out = run(ctx, &ctx.api_key, &["list", "--tag", &tag, "--json"])?;
    expect(&out, 0, "list --json")?;
    let listed: Vec<String> = out.json()?["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["id"].as_str().map(str::to_owned))
        .collect();
    let mut want = ids.clone();
    want.reverse(); // newest first
    ensure(listed == want, || format!("listed {listed:?}, want {want:?}"))?;
    let out = run(ctx, &ctx.api_key, &["dead", "list", "--tag", &tag])?;
    ensure(out.code == 0 && ids.iter().all(|i| out.stdout.contains(i.as_str())), || {
        format!("dead list: {}", out.stdout)
    })?;
    ctx.hooks.script(&path, vec![Reply::status(200)]);
    let out = run(ctx, &ctx.api_key, &["retry", &ids[0]])?;
    expect(&out, 0, "retry")?;
    ctx.wait_state(&ids[0], "completed", WAIT)?;
    // Bulk replay asks first; with no terminal and no --yes it refuses and changes nothing.
    let out = run(ctx, &ctx.admin_key, &["dead", "replay", "--tag", &tag])?;
    expect(&out, 2, "replay without --yes")?;
    ensure(out.stderr.contains("Replay 2 dead jobs?"), || format!("stderr: {}", out.stderr))?;
    ensure(ctx.get(&format!("/v1/jobs/{}", ids[1]))?.body["state"] == "dead", || "replayed without --yes".into())?;
    let out = run(ctx, &ctx.admin_key, &["dead", "replay", "--tag", &tag, "--yes", "--json"])?;
    expect(&out, 0, "replay --yes")?;
    ensure(out.json()?["replayed"] == 2, || format!("replay: {}", out.stdout))?;
    for id in &ids[1..] {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    Ok(())
}

fn cli_finds_dev_env(ctx: &Ctx) -> anyhow::Result<()> {
    let dir = scratch()?;
    std::fs::create_dir_all(dir.join(".edgejobs"))?;
    std::fs::create_dir_all(dir.join("deep/er"))?;
    std::fs::write(
        dir.join(".edgejobs/dev.env"),
        format!("EDGEJOBS_URL={}\nEDGEJOBS_API_KEY={}\n", ctx.edge, ctx.api_key),
    )?;
    let out = run_in(ctx, &dir.join("deep/er"), &[], &["list", "--limit", "1", "--json"])?;
    expect(&out, 0, "list with dev.env")?;
    ensure(out.json()?["jobs"].is_array(), || format!("list: {}", out.stdout))?;
    // One source for both: a key from a flag or the environment never pairs with the
    // file's URL, nor the file's key with a URL from elsewhere (usage error, exit 2).
    type Half<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let half: [Half; 4] = [
        (&[], &["--key", "ej_wrong_key_0000000000000000", "list"]),
        (&[("EDGEJOBS_KEY", "ej_wrong_key_0000000000000000")], &["list"]),
        (&[], &["--url", "http://127.0.0.1:9", "list"]),
        (&[("EDGEJOBS_URL", "http://127.0.0.1:9")], &["list"]),
    ];
    for (env, args) in half {
        let out = run_in(ctx, &dir, env, args)?;
        expect(&out, 2, &format!("half a source beside dev.env: {env:?} {args:?}"))?;
        ensure(out.stderr.contains("must come from the same place"), || format!("{args:?}: {}", out.stderr))?;
    }
    // Both from flags: the flags are the source, whatever the file holds.
    let out = run_in(ctx, &dir, &[], &["--url", &ctx.edge, "--key", "ej_wrong_key_0000000000000000", "list"])?;
    expect(&out, 4, "--url and --key over dev.env")
}

fn cli_completions_tail_and_backups(ctx: &Ctx) -> anyhow::Result<()> {
    let out = run(ctx, &ctx.api_key, &["completions", "bash"])?;
    ensure(out.code == 0 && out.stdout.contains("edgejobs") && out.stdout.contains("enqueue"), || {
        "bash completions".into()
    })?;
    // tail: started first, then a job of its tag; it must print that job.
    let tag = unique("tail");
    let bin = edgejobs_tests::stack::binary(&StackOptions::default_root(), "edgejobs")?;
    let child = Command::new(bin)
        .env_clear()
        .env("EDGEJOBS_URL", &ctx.edge)
        .env("EDGEJOBS_KEY", &ctx.api_key)
        .args(["tail", "--tag", &tag, "--for", "6s", "--interval", "500ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let id = ctx.enqueue(&json!({ "type": "noop", "tags": [tag] }))?;
    ctx.wait_state(&id, "completed", WAIT)?;
    let o = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&o.stdout);
    let states: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["id"] == id.as_str())
        .filter_map(|j| j["state"].as_str().map(str::to_owned))
        .collect();
    ensure(o.status.success() && states.last().is_some_and(|s| s == "completed"), || {
        format!("tail printed {text} (stderr {})", String::from_utf8_lossy(&o.stderr))
    })?;
    // Backups with the admin key.
    let out = run(ctx, &ctx.admin_key, &["backups", "start", "--json"])?;
    expect(&out, 0, "backups start")?;
    let backup = out.json()?["id"].as_str().unwrap_or_default().to_owned();
    let out = run(ctx, &ctx.admin_key, &["backups", "list", "--json"])?;
    ensure(out.json()?["backups"].as_array().is_some_and(|b| b.iter().any(|b| b["id"] == backup.as_str())), || {
        format!("backups list: {}", out.stdout)
    })?;
    let out = run(ctx, &ctx.admin_key, &["backups", "verify", &backup])?;
    expect(&out, 0, "verify")?;
    ensure(out.stdout.contains("valid"), || format!("verify: {}", out.stdout))
}

fn cli_schedules(ctx: &Ctx) -> anyhow::Result<()> {
    let name = unique("cli-sched");
    let create = ["schedules", "create", &name, "0 7 * * MON-FRI", "noop", "--timezone", "America/New_York"];
    // Creating takes an admin key: a jobs key is refused with exit code 4.
    expect(&run(ctx, &ctx.api_key, &create)?, 4, "create with a jobs key")?;
    let out = run(ctx, &ctx.admin_key, &[&create[..], &["--payload", r#"{"r":1}"#, "--tag", "daily"]].concat())?;
    expect(&out, 0, "create")?;
    ensure(out.stdout.starts_with("NAME") && out.stdout.contains(&name) && out.stdout.contains("next runs:"), || {
        format!("create printed {}", out.stdout)
    })?;
    let bad = run(ctx, &ctx.admin_key, &["schedules", "create", &unique("bad"), "0 7 * * FOO", "noop"])?;
    expect(&bad, 3, "a bad cron")?;
    ensure(bad.stderr.contains("day of week field at position 9"), || {
        format!("the error names the field: {}", bad.stderr)
    })?;
    let out = run(ctx, &ctx.admin_key, &["schedules", "trigger", &name])?;
    expect(&out, 0, "trigger")?;
    let id = out.stdout.split_whitespace().next().unwrap_or_default().to_owned();
    let job = run(ctx, &ctx.api_key, &["get", &id, "--wait", "--json"])?.json()?;
    ensure(job["tags"] == json!(["daily", format!("schedule:{name}")]) && job["payload"] == json!({ "r": 1 }), || {
        format!("the run's job: {job}")
    })?;
    let shown = run(ctx, &ctx.api_key, &["schedules", "show", &name, "--json"])?.json()?;
    ensure(shown["runs"][0]["job_id"] == id.as_str() && shown["runs"][0]["state"] == "completed", || {
        format!("show: {shown}")
    })?;
    expect(&run(ctx, &ctx.admin_key, &["schedules", "pause", &name])?, 0, "pause")?;
    let listed = run(ctx, &ctx.api_key, &["schedules", "list"])?;
    ensure(listed.stdout.lines().any(|l| l.starts_with(&name) && l.contains("paused")), || {
        format!("list shows it paused: {}", listed.stdout)
    })?;
    expect(&run(ctx, &ctx.admin_key, &["schedules", "delete", &name, "--yes"])?, 0, "delete")?;
    expect(&run(ctx, &ctx.api_key, &["schedules", "show", &name])?, 5, "show after delete")
}

/// A workflow run on the fault stack (where no consumer runs), its steps reported by hand
/// with the consumer token: `plan` completed, `call` failed for good, and `approval` waiting
/// for `order.approved` (10 minutes at most), which suspended the run. Its id; the caller
/// cancels it.
pub fn run_with_steps(ctx: &Ctx, stack: &Stack) -> anyhow::Result<String> {
    let id = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
    let r = report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
    ensure(r.status == 200, || format!("start: {} {}", r.status, r.body))?;
    let lease = r.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    ensure(!lease.is_empty(), || "the start issued a lease".into())?;
    for step in [
        json!({ "kind": "run", "seq": 0, "name": "plan", "result": { "plan": "basic" } }),
        json!({ "kind": "fail", "seq": 1, "name": "call", "error": "upstream 503" }),
        json!({ "kind": "wait", "seq": 2, "name": "approval", "event": "order.approved", "timeout_ms": 600_000 }),
    ] {
        let r = report_on(ctx, stack, &id, &json!({ "event": "step", "attempt": 1, "lease": lease, "step": step }))?;
        ensure(r.status == 200, || format!("{step}: {} {}", r.status, r.body))?;
    }
    let job = job_on(ctx, stack, &id)?;
    let states: Vec<&str> = job["steps"].as_array().into_iter().flatten().filter_map(|s| s["state"].as_str()).collect();
    ensure(job["state"] == "scheduled" && states == ["completed", "failed", "waiting"], || format!("the run: {job}"))?;
    Ok(id)
}

fn cli_get_prints_steps(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let id = run_with_steps(ctx, stack)?;
        let env = [("EDGEJOBS_URL", stack.edge_url.as_str()), ("EDGEJOBS_KEY", stack.secrets.api_key.as_str())];
        let out = run_in(ctx, &std::env::temp_dir(), &env, &["get", &id])?;
        expect(&out, 0, "get")?;
        ensure(!out.stdout.contains(stack.secrets.api_key.as_str()), || "the key was printed".into())?;
        // The fields, then a blank line, then a row per step in order.
        let lines: Vec<&str> = out.stdout.lines().collect();
        let head = lines.iter().position(|l| l.starts_with("SEQ")).unwrap_or(lines.len());
        let rows = &lines[head.min(lines.len())..];
        let cols = |l: &str| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect();
        let cells: Vec<Vec<String>> = rows.iter().map(|l| cols(l)).collect();
        let want = |seq: &str, name: &str, kind: &str, state: &str, last: &str| {
            cells.iter().any(|c| {
                c.len() >= 6 && c[..5] == [seq, name, kind, state, "1"] && c.last().is_some_and(|l| l.as_str() == last)
            })
        };
        ensure(
            out.stdout.starts_with("FIELD")
                && head > 0
                && lines[head - 1].is_empty()
                && cells.len() == 4
                && want("0", "plan", "run", "completed", "16 bytes")
                && want("1", "call", "run", "failed", "error: upstream 503")
                && want("2", "approval", "wait", "waiting", "waits for order.approved")
                && cells[3].iter().any(|c| c.starts_with("until ")),
            || format!("human get:\n{}", out.stdout),
        )?;
        ensure(lines.iter().any(|l| cols(l) == ["free_attempts", "1"]), || format!("fields:\n{}", out.stdout))?;
        // --json prints the API's document unchanged.
        let out = run_in(ctx, &std::env::temp_dir(), &env, &["get", &id, "--json"])?;
        expect(&out, 0, "get --json")?;
        let api = job_on(ctx, stack, &id)?;
        ensure(out.json()? == api, || format!("--json: {}\nthe API: {api}", out.stdout))?;
        let r = cancel_on(ctx, stack, &id)?;
        ensure(r.status == 200, || format!("cancel: {} {}", r.status, r.body))
    })
}

/// A native job started on the fault stack by the test as its consumer: its id and the
/// attempt's lease.
pub fn started_native(ctx: &Ctx, stack: &Stack, tag: &str) -> anyhow::Result<(String, String)> {
    let id = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 }, "tags": [tag] }))?;
    let start = report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
    let lease = start.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    ensure(start.status == 200 && !lease.is_empty(), || format!("start: {} {}", start.status, start.body))?;
    Ok((id, lease))
}

/// Sends attempt 1's `update` report (progress, metadata, chunks: `body`'s fields).
pub fn live_update(ctx: &Ctx, stack: &Stack, id: &str, lease: &str, body: Value) -> anyhow::Result<()> {
    let mut event = json!({ "event": "update", "attempt": 1, "lease": lease });
    if let (Some(e), Some(b)) = (event.as_object_mut(), body.as_object()) {
        e.extend(b.clone());
    }
    let r = report_on(ctx, stack, id, &event)?;
    ensure(r.status == 200, || format!("update: {} {}", r.status, r.body))
}

/// Completes attempt 1 with `{"ok": 1}`.
pub fn complete_native(ctx: &Ctx, stack: &Stack, id: &str, lease: &str) -> anyhow::Result<()> {
    let r = report_on(
        ctx,
        stack,
        id,
        &json!({ "event": "complete", "attempt": 1, "result": { "ok": 1 }, "lease": lease }),
    )?;
    ensure(r.status == 200 && r.body["state"] == "completed", || format!("complete: {} {}", r.status, r.body))
}

/// Starts the CLI against the fault stack with its standard output and error piped.
fn spawn_on(stack: &Stack, args: &[&str]) -> anyhow::Result<Child> {
    let bin = edgejobs_tests::stack::binary(&StackOptions::default_root(), "edgejobs")?;
    Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EDGEJOBS_URL", &stack.edge_url)
        .env("EDGEJOBS_KEY", &stack.secrets.api_key)
        .current_dir(std::env::temp_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run edgejobs")
}

/// The lines of a child's pipe as they are written (read on a thread).
fn lines_of(pipe: Option<impl Read + Send + 'static>) -> anyhow::Result<mpsc::Receiver<String>> {
    let pipe = pipe.ok_or_else(|| anyhow::anyhow!("the pipe was not captured"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Lines from `rx` until one satisfies `done` (returned with every line before it), for at
/// most `limit`.
fn until_line(
    rx: &mpsc::Receiver<String>,
    what: &str,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = done(&line);
                got.push(line);
                if hit {
                    return Ok(got);
                }
            }
            Err(e) => anyhow::bail!("no line {what} within {limit:?} ({e}); got {got:?}"),
        }
    }
}

/// `get --wait --stream` follows a running job's stream: a line per state and progress as
/// they come (standard error), the chunks as they come (standard output), then the job, and
/// exit 0 once it completed. Again afterwards, with `--json`: the chunks as JSON lines
/// with their numbers, then the job.
fn cli_get_wait_follows_the_stream(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started_native(ctx, stack, &unique("cli-live"))?;
        let mut child = spawn_on(stack, &["get", &id, "--wait", "--stream", "--timeout", "50s"])?;
        let stderr = lines_of(child.stderr.take())?;
        // Its first line is the state at subscription: from then on it hears every change.
        until_line(&stderr, "for the running job", WAIT, |l| l == "active  attempt 1")?;
        let chunks = json!([{ "stream": "tokens", "data": "Hello" }, { "stream": "tokens", "data": "," }]);
        live_update(
            ctx,
            stack,
            &id,
            &lease,
            json!({ "progress": { "percent": 40, "message": "reading page 2" }, "chunks": chunks }),
        )?;
        until_line(&stderr, "with the progress", WAIT, |l| l == "active  attempt 1  40%  reading page 2")?;
        live_update(ctx, stack, &id, &lease, json!({ "chunks": [{ "stream": "tokens", "data": " world" }] }))?;
        complete_native(ctx, stack, &id, &lease)?;
        let rest = until_line(&stderr, "with the final state", WAIT, |l| l.starts_with("completed  attempt 1"))?;
        let o = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        ensure(o.status.code() == Some(0), || format!("exit {:?}\nstdout: {stdout}\nstderr: {rest:?}", o.status))?;
        ensure(!stdout.contains(stack.secrets.api_key.as_str()), || "the key was printed".into())?;
        let lines: Vec<&str> = stdout.lines().collect();
        ensure(
            lines.first() == Some(&"[tokens] Hello, world")
                && lines.get(1).is_some_and(|l| l.starts_with("FIELD"))
                && lines.iter().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["state", "completed"]),
            || format!("get --wait --stream printed:\n{stdout}"),
        )?;

        // The job is final: its stream replays the chunks and the final state, then ends.
        let env = [("EDGEJOBS_URL", stack.edge_url.as_str()), ("EDGEJOBS_KEY", stack.secrets.api_key.as_str())];
        let out = run_in(ctx, &std::env::temp_dir(), &env, &["get", &id, "--wait", "--stream", "--json"])?;
        expect(&out, 0, "get --wait --stream --json")?;
        let docs: Vec<Value> =
            serde_json::Deserializer::from_str(&out.stdout).into_iter::<Value>().collect::<Result<_, _>>()?;
        let got: Vec<(u64, &str)> =
            docs.iter().filter_map(|d| Some((d["id"].as_u64()?, d["data"].as_str()?))).collect();
        ensure(got == [(1, "Hello"), (2, ","), (3, " world")], || format!("chunks: {}", out.stdout))?;
        ensure(docs.last().is_some_and(|j| j["id"] == id.as_str() && j["state"] == "completed"), || {
            format!("the job last: {}", out.stdout)
        })
    })
}

/// `tail` follows `GET /v1/events`: once it says it is following, a job of its tag that is
/// enqueued, started and completed is printed as each change comes, while it runs.
fn cli_tail_follows_the_events_stream(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let tag = unique("cli-tail");
        let mut child = spawn_on(stack, &["tail", "--tag", &tag, "--for", "90s", "--json"])?;
        let (stdout, stderr) = (lines_of(child.stdout.take())?, lines_of(child.stderr.take())?);
        let outcome = (|| {
            until_line(&stderr, "saying it follows", WAIT, |l| l.starts_with("following /v1/events"))?;
            let (id, lease) = started_native(ctx, stack, &tag)?;
            live_update(ctx, stack, &id, &lease, json!({ "progress": { "percent": 50 } }))?;
            complete_native(ctx, stack, &id, &lease)?;
            let lines = until_line(&stdout, "for the completed job", WAIT, |l| {
                serde_json::from_str::<Value>(l).is_ok_and(|j| j["id"] == id.as_str() && j["state"] == "completed")
            })?;
            let states: Vec<String> = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|j| j["id"] == id.as_str())
                .filter_map(|j| j["state"].as_str().map(str::to_owned))
                .collect();
            // One line per state (the progress update changed no state), in order.
            ensure(states.ends_with(&["active".to_owned(), "completed".to_owned()]) && states.len() <= 3, || {
                format!("tail printed {lines:?}")
            })?;
            ensure(lines.iter().all(|l| !l.contains(stack.secrets.api_key.as_str())), || "the key was printed".into())
        })();
        // The test started it; --for would end it later.
        let _ = child.kill();
        let _ = child.wait();
        outcome
    })
}
