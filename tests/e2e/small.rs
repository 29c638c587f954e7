//! Smaller boundaries of #26: `/health` shows its checks to operators only, reads are rate
//! limited per key, the payload schema is checked only after the size check and the rate
//! limit, and the stack's files holding secrets are readable by their owner only. (The CLI's
//! one-source rule is in `cli.rs`; the gateway's scripts and redis password in
//! `shared/upstash-local/tests/gateway.rs`.)

use std::os::unix::fs::PermissionsExt as _;

use anyhow::bail;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, ensure};

pub const TESTS: &[Test] = &[
    ("small_health_shows_its_checks_to_operators_only", health_shows_its_checks_to_operators_only),
    ("small_reads_are_rate_limited_per_key", reads_are_rate_limited_per_key),
    ("small_schema_runs_after_the_size_check_and_the_rate_limit", schema_runs_after_size_and_rate_limit),
    ("small_secret_files_are_0600", secret_files_are_0600),
];

/// Anonymous and jobs-key `/health` answers are the status alone (no configuration problem,
/// type or schedule name); an admin key gets every check.
fn health_shows_its_checks_to_operators_only(ctx: &Ctx) -> anyhow::Result<()> {
    let anonymous = ctx.send(ctx.http.get(ctx.url("/health")))?;
    let jobs_key = ctx.send(ctx.http.get(ctx.url("/health")).bearer_auth(&ctx.api_key))?;
    for (who, r) in [("anonymous", &anonymous), ("a jobs key", &jobs_key)] {
        ensure(r.status == 200, || format!("{who}: {} {}", r.status, r.body))?;
        let keys: Vec<&String> = r.body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        ensure(keys == ["checked_at", "status", "version"], || format!("{who} gets the status alone: {}", r.body))?;
        let text = r.body.to_string();
        for detail in ["checks", "job_types", "schedules", "config", "without_consumer"] {
            ensure(!text.contains(detail), || format!("{who} sees {detail}: {text}"))?;
        }
    }
    let admin = ctx.send(ctx.http.get(ctx.url("/health")).bearer_auth(&ctx.admin_key))?;
    let checks = &admin.body["checks"];
    ensure(checks["config"]["ok"] == true && checks["shards"]["ok"] == true, || format!("admin: {}", admin.body))?;
    ensure(checks["schedules"].is_object() && checks["job_types"].is_object(), || format!("admin: {}", admin.body))
}

/// The stack's limited key allows 5 enqueues a minute, so 50 reads (a read costs a tenth of
/// an enqueue, in a window of its own): it is refused with 429 and `Retry-After` after about
/// that many, while other keys read on. The test reads only (the upstash test counts this
/// key's enqueues).
fn reads_are_rate_limited_per_key(ctx: &Ctx) -> anyhow::Result<()> {
    let read = |key: &str| ctx.send(ctx.http.get(ctx.url("/v1/jobs?limit=1")).bearer_auth(key));
    let mut refused: Option<(usize, Resp)> = None;
    for i in 1..=80 {
        let r = read(&ctx.limited_key)?;
        match r.status {
            200 => {}
            429 => {
                refused = Some((i, r));
                break;
            }
            s => bail!("read {i}: unexpected {s} {}", r.body),
        }
    }
    let Some((at, r)) = refused else { bail!("80 reads with a key limited to 50 a minute were all served") };
    // The window may hold a few reads of an earlier run of this test within the minute.
    ensure(at > 25, || format!("refused already at read {at}: {}", r.body))?;
    ensure(r.code() == "rate_limited", || format!("code: {}", r.body))?;
    let retry_after: u64 =
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    ensure((1..=60).contains(&retry_after), || format!("Retry-After: {:?}", r.headers.get("retry-after")))?;
    ensure(r.headers.get("ratelimit-limit").is_some_and(|v| v == "50"), || format!("headers: {:?}", r.headers))?;
    // Every read route counts, not only listing.
    let stats = ctx.send(ctx.http.get(ctx.url("/v1/stats")).bearer_auth(&ctx.limited_key))?;
    ensure(stats.status == 429, || format!("/v1/stats over the limit: {}", stats.status))?;
    // Other keys are unaffected.
    let other = read(&ctx.api_key)?;
    ensure(other.status == 200, || format!("the main key: {} {}", other.status, other.body))?;
    let admin = ctx.send(ctx.http.get(ctx.url("/v1/jobs?limit=1")).bearer_auth(&ctx.admin_key))?;
    ensure(admin.status == 200, || format!("an admin key: {}", admin.status))
}

/// On the fault stack, with a declared type that has a schema: a payload over the size limit
/// that also breaks the schema is refused for its size (413), and once the limited key has
/// used its enqueues, a schema-breaking enqueue is refused by the rate limit (429), before
/// any schema work.
fn schema_runs_after_size_and_rate_limit(ctx: &Ctx) -> anyhow::Result<()> {
    let types = json!({
        "small.schema": {
            "lane": "native",
            "schema": { "type": "object", "required": ["n"], "properties": { "n": { "type": "integer" } } }
        }
    });
    ctx.with_fault_stack(|stack| {
        stack.restart_wrangler(vec![("JOB_TYPES".into(), types.to_string())])?;
        let result = schema_checks(ctx, stack);
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

fn schema_checks(ctx: &Ctx, stack: &Stack) -> anyhow::Result<()> {
    let Some(limited) = stack.secrets.limited_key.clone() else { bail!("the fault stack has no limited key") };
    let post = |key: &str, body: &Value| {
        ctx.send(ctx.http.post(format!("{}/v1/jobs", stack.edge_url)).bearer_auth(key).json(body))
    };
    // Precondition: the type and its schema are in force.
    let r = post(&stack.secrets.api_key, &json!({ "type": "small.schema", "payload": { "n": "seven" } }))?;
    ensure(r.status == 400 && r.code() == "invalid_field", || format!("the schema applies: {} {}", r.status, r.body))?;
    // A payload over 128 KiB (the body under 1 MiB) that breaks the schema: the size speaks.
    let big = json!({ "type": "small.schema", "payload": { "n": "x".repeat(200 * 1024) } });
    let r = post(&stack.secrets.api_key, &big)?;
    ensure(r.status == 413 && r.code() == "payload_too_large", || {
        format!("oversize payload: {} {}", r.status, r.body)
    })?;
    // A body over 1 MiB: the same.
    let huge = json!({ "type": "small.schema", "payload": { "n": "x".repeat(1100 * 1024) } });
    let r = post(&stack.secrets.api_key, &huge)?;
    ensure(r.status == 413, || format!("oversize body: {} {}", r.status, r.body))?;
    // The limited key uses its five enqueues, then a schema-breaking one meets the limit.
    let mut admitted = 0;
    for _ in 0..10 {
        let r = post(&limited, &json!({ "type": "noop" }))?;
        match r.status {
            201 => admitted += 1,
            429 => break,
            s => bail!("noop with the limited key: {s} {}", r.body),
        }
    }
    ensure(admitted <= 5, || format!("{admitted} admitted with a limit of 5"))?;
    let r = post(&limited, &json!({ "type": "small.schema", "payload": { "n": "seven" } }))?;
    ensure(r.status == 429 && r.code() == "rate_limited", || {
        format!("over the limit, the limit answers before the schema: {} {}", r.status, r.body)
    })?;
    let r = ctx.send(
        ctx.http
            .post(format!("{}/v1/jobs/batch", stack.edge_url))
            .bearer_auth(&limited)
            .json(&json!({ "jobs": [{ "type": "small.schema", "payload": { "n": "seven" } }] })),
    )?;
    ensure(r.status == 429, || format!("a batch over the limit: {} {}", r.status, r.body))
}

/// The shared stack's `.dev.vars` (every key and secret) and redis's config (its password)
/// are mode 0600.
fn secret_files_are_0600(ctx: &Ctx) -> anyhow::Result<()> {
    for file in [ctx.state_dir.join("worker/.dev.vars"), ctx.state_dir.join("redis/redis.conf")] {
        let meta = std::fs::metadata(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        ensure(mode == 0o600, || format!("{} is {mode:o}, not 600", file.display()))?;
    }
    Ok(())
}
