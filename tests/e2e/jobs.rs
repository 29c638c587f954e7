//! Tests of the job API and the job lifecycle.

use std::time::Duration;

use serde_json::json;

use crate::util::{Ctx, Test, ensure};

pub const TESTS: &[Test] = &[
    ("noop_job_completes_end_to_end", noop_job_completes_end_to_end),
    ("health_is_public", health_is_public),
    ("errors_are_json_with_stable_codes", errors_are_json_with_stable_codes),
];

fn noop_job_completes_end_to_end(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.post("/v1/jobs", &json!({ "type": "noop", "payload": { "hello": "world" } }))?;
    ensure(r.status == 201, || format!("enqueue: {} {}", r.status, r.body))?;
    ensure(r.body["state"] == "queued", || format!("new job state: {}", r.body))?;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let job = ctx.wait_state(&id, "completed", Duration::from_secs(30))?;
    ensure(job["payload"] == json!({ "hello": "world" }), || format!("payload: {job}"))?;
    ensure(job["attempt"] == 1, || format!("attempt: {job}"))?;
    for field in ["created_at", "started_at", "finished_at"] {
        ensure(job[field].is_string(), || format!("{field} missing: {job}"))?;
    }
    Ok(())
}

fn health_is_public(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.send(ctx.http.get(ctx.url("/health")))?;
    ensure(r.status == 200 && r.body["status"] == "healthy", || format!("health: {} {}", r.status, r.body))
}

fn errors_are_json_with_stable_codes(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.get("/v1/nope")?;
    ensure(r.status == 404 && r.code() == "not_found", || format!("unknown route: {} {}", r.status, r.body))?;
    let r = ctx.send(ctx.http.delete(ctx.url("/v1/jobs")).bearer_auth(&ctx.api_key))?;
    ensure(r.status == 405 && r.code() == "method_not_allowed", || format!("wrong method: {} {}", r.status, r.body))?;
    ensure(r.headers.get("allow").is_some_and(|v| v == "POST"), || format!("allow header: {:?}", r.headers))?;
    let r = ctx.send(ctx.http.post(ctx.url("/v1/jobs")).json(&json!({ "type": "noop" })))?;
    ensure(r.status == 401 && r.code() == "unauthorized", || format!("no key: {} {}", r.status, r.body))?;
    // A job created with the helper is readable; a malformed id is simply not found.
    let id = ctx.enqueue(&json!({ "type": "noop" }))?;
    ensure(ctx.get(&format!("/v1/jobs/{id}"))?.status == 200, || "created job is readable".into())?;
    let r = ctx.get("/v1/jobs/not-an-id")?;
    ensure(r.status == 404 && r.code() == "job_not_found", || format!("bad id: {} {}", r.status, r.body))
}
