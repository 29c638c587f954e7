//! Job types from configuration only: a `JOB_TYPES` with an edge type (a fixed webhook URL)
//! and a native type, on the fault stack's Worker without a rebuild; the native type run by
//! `examples/custom-consumer` (edgejobs-consumer as a library); payload schemas answered
//! with the JSON pointer; `/health` naming a type no consumer runs.

use std::time::Duration;

use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, enqueue_on, ensure, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("job_types_declared_in_configuration_run_on_both_lanes", declared_types_run_on_both_lanes),
    ("job_types_check_env_lists_every_problem", check_env_lists_every_problem),
];

/// `scripts/check-env --job-types FILE` (what `scripts/deploy --job-types` runs): every
/// problem of a broken file at once, exit 1; the README's example file passes.
fn check_env_lists_every_problem(_ctx: &Ctx) -> anyhow::Result<()> {
    let root = edgejobs_tests::stack::StackOptions::default_root();
    let bin = edgejobs_tests::stack::binary(&root, "edgejobs-check-env")?;
    let dir = std::env::temp_dir().join(unique("job-types"));
    std::fs::create_dir_all(&dir)?;
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        json!({
            "hook": { "lane": "edge" },
            "shape": { "lane": "native", "schema": { "type": "nope" } },
            "typo": { "lane": "native", "timeuot": "1s" },
            "local": { "lane": "edge", "url": "http://127.0.0.1:9/x" }
        })
        .to_string(),
    )?;
    let run = |file: &std::path::Path| {
        std::process::Command::new(&bin)
            .current_dir(&root)
            .args(["--only", "edge", "--vars-only", "--job-types"])
            .arg(file)
            .output()
    };
    let out = run(&bad)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure(out.status.code() == Some(1), || format!("exit {:?}: {text}", out.status.code()))?;
    for (ty, what) in [("hook", "url: is required"), ("shape", "schema:"), ("typo", "timeuot"), ("local", "url:")] {
        ensure(text.contains(&format!("type {ty:?}: {what}")), || format!("{ty}: {what} missing from:\n{text}"))?;
    }
    ensure(text.contains("4 problem(s)"), || format!("every problem at once: {text}"))?;
    let good = run(&root.join("examples/job-types.json"))?;
    ensure(good.status.success(), || format!("the README's example: {}", String::from_utf8_lossy(&good.stdout)))?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn post(ctx: &Ctx, stack: &Stack, body: &Value) -> anyhow::Result<Resp> {
    ctx.send(ctx.http.post(format!("{}/v1/jobs", stack.edge_url)).bearer_auth(&stack.secrets.api_key).json(body))
}

fn health(ctx: &Ctx, stack: &Stack) -> anyhow::Result<Value> {
    // The checks (and the type names in them) are shown to an admin key only.
    Ok(ctx.http.get(format!("{}/health", stack.edge_url)).bearer_auth(&stack.secrets.admin_key).send()?.json()?)
}

fn declared_types_run_on_both_lanes(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let path = format!("/{}", unique("greet"));
        let url = ctx.hooks.script(&path, vec![Reply::status(200)]);
        let types = json!({
            "greet": {
                "lane": "edge", "url": url, "tags": ["greetings"], "max_attempts": 2,
                "retention": { "completed_age": "1s" },
                "schema": { "type": "object", "required": ["name"],
                            "properties": { "name": { "type": "string", "maxLength": 20 } } }
            },
            "text.stats": {
                "lane": "native", "timeout": "30s", "rate_group": "nlp",
                "schema": { "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } }
            }
        });
        stack.restart_wrangler(vec![("JOB_TYPES".into(), types.to_string())])?;
        let outcome = exercise(ctx, stack, &path);
        // Whatever happened, the fault stack goes back to the built-in types.
        stack.kill_consumers();
        stack.restart_wrangler(Vec::new())?;
        outcome
    })
}

fn exercise(ctx: &Ctx, stack: &mut Stack, path: &str) -> anyhow::Result<()> {
    // The edge type: its jobs are POSTed to the fixed URL, the payload as the body, signed.
    let greet = enqueue_on(ctx, stack, &json!({ "type": "greet", "payload": { "name": "Ada" }, "tags": ["mine"] }))?;
    let job = wait_on(ctx, stack, &greet, "completed")?;
    ensure(job["tags"] == json!(["greetings", "mine"]) && job["max_attempts"] == 2, || {
        format!("the type's defaults: {job}")
    })?;
    let got = ctx.hooks.received(path);
    ensure(got.len() == 1, || format!("{} deliveries", got.len()))?;
    let body: Value = serde_json::from_str(&got[0].body).unwrap_or(Value::Null);
    ensure(body == json!({ "name": "Ada" }), || format!("the body is the payload: {}", got[0].body))?;
    let h = &got[0].headers;
    ensure(
        h.get("webhook-signature").is_some_and(|s| s.starts_with("v1,"))
            && h.get("x-edgejobs-type").map(String::as_str) == Some("greet"),
        || format!("signed, with its type: {h:?}"),
    )?;
    // The schema: the first violation, as a JSON pointer into the body; nothing created.
    let r = post(ctx, stack, &json!({ "type": "greet", "payload": { "name": "x".repeat(21) } }))?;
    ensure(r.status == 400 && r.code() == "invalid_field" && r.body["error"]["field"] == "/payload/name", || {
        format!("schema: {} {}", r.status, r.body)
    })?;
    let r = post(ctx, stack, &json!({ "type": "text.stats", "payload": {} }))?;
    ensure(r.status == 400 && r.body["error"]["field"] == "/payload", || format!("required: {} {}", r.status, r.body))?;
    ensure(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("text")), || format!("{}", r.body))?;
    let r = post(ctx, stack, &json!({ "type": "text.count" }))?;
    let msg = r.body["error"]["message"].as_str().unwrap_or_default().to_owned();
    ensure(
        r.status == 400 && r.code() == "unknown_type" && msg.contains("text.stats") && msg.contains("greet"),
        || format!("unknown type names the configured ones: {}", r.body),
    )?;

    // The native type: /health says no consumer runs it until the example consumer starts.
    let h = health(ctx, stack)?;
    ensure(h["checks"]["job_types"]["without_consumer"] == json!(["text.stats"]) && h["status"] == "degraded", || {
        format!("/health before the consumer: {}", h["checks"]["job_types"])
    })?;
    let id = enqueue_on(ctx, stack, &json!({ "type": "text.stats", "payload": { "text": "hello edge jobs" } }))?;
    // The type's rate group: this consumer admits one `nlp` attempt a second.
    stack.start_consumer_binary("custom-consumer", &[("EDGEJOBS_UPSTREAM_LIMITS", "nlp=1/1s")])?;
    let job = wait_on(ctx, stack, &id, "completed")?;
    ensure(job["result"] == json!({ "words": 3, "chars": 15 }), || format!("the example's handler ran: {job}"))?;
    ensure(
        wait_until(Duration::from_secs(30), || {
            health(ctx, stack).is_ok_and(|h| h["checks"]["job_types"]["ok"] == true)
        }),
        || "the consumer announced text.stats".into(),
    )?;
    ensure(job["rate_group"] == "nlp", || format!("the job carries its type's rate group: {job}"))?;
    // Three more at once finish a second apart: every attempt waited for a token of `nlp`.
    let ids: Vec<String> = (0..3)
        .map(|i| enqueue_on(ctx, stack, &json!({ "type": "text.stats", "payload": { "text": format!("n {i}") } })))
        .collect::<anyhow::Result<_>>()?;
    let mut finished = Vec::new();
    for id in &ids {
        let j = wait_on(ctx, stack, id, "completed")?;
        finished.push(edgejobs_core::time::parse_rfc3339(j["finished_at"].as_str().unwrap_or("")).unwrap_or(0));
    }
    finished.sort_unstable();
    let spread = finished[2].saturating_sub(finished[0]);
    ensure(spread >= 1500, || format!("three nlp attempts finished within {spread} ms"))?;
    // The example still runs the built-ins next to its own.
    let sleep = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 10 } }))?;
    wait_on(ctx, stack, &sleep, "completed")?;

    // Retention per type: `greet` keeps completed jobs 1 s, the others the default 24 h. The
    // maintenance cron runs until the greet job is past its age and gone.
    let gone = |id: &str| {
        let r = ctx.http.get(format!("{}/v1/jobs/{id}", stack.edge_url)).bearer_auth(&stack.secrets.api_key).send();
        r.is_ok_and(|r| r.status() == 404)
    };
    let cron = || ctx.http.get(format!("{}/__scheduled?cron=*/5+*+*+*+*", stack.edge_url)).send();
    ensure(
        wait_until(Duration::from_secs(20), || cron().is_ok_and(|r| r.status().is_success()) && gone(&greet)),
        || format!("the greet job {greet} was kept"),
    )?;
    ensure(!gone(&sleep), || "a sleep job was deleted with greet's retention".into())?;
    Ok(())
}
