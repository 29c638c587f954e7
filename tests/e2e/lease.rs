//! Leases only their holder can report on (#26): a consumer's report about a native attempt
//! must carry the lease token its start answered with; forged reports (no token, a wrong
//! one, another consumer's token), reports about edge-lane jobs, and reports with a revoked
//! or unknown consumer token are refused and change nothing, while the real consumer still
//! runs native jobs to the end.

use std::time::Duration;

use edgejobs_tests::hooks::Reply;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, ensure, job_on, report_on, unique};

pub const TESTS: &[Test] = &[
    ("lease_forged_reports_change_nothing_and_the_consumer_still_finishes", forged_reports_change_nothing),
    ("lease_reports_on_edge_lane_jobs_are_refused", edge_lane_jobs_are_refused),
    ("lease_unknown_or_revoked_consumer_tokens_are_refused", unknown_consumer_tokens_are_refused),
    ("lease_the_holder_reports_and_a_takeover_fences_it_out", the_holder_reports_and_a_takeover_fences_it_out),
];

const WAIT: Duration = Duration::from_secs(30);

/// A report's refusal: 409 with `code`.
fn refused(r: &Resp, code: &str) -> anyhow::Result<()> {
    ensure(r.status == 409 && r.code() == code, || format!("want 409 {code}, got {} {}", r.status, r.body))
}

/// What a report must not change about a job (the state, attempt, change time, progress,
/// result and error).
fn essence(job: &Value) -> Value {
    json!([job["state"], job["attempt"], job["updated_at"], job["progress"], job["result"], job["last_error"]])
}

/// Reports in one batch with `token`; each answer's error code, or `ok`.
fn batch(ctx: &Ctx, token: &str, events: Value) -> anyhow::Result<Vec<String>> {
    let r =
        ctx.send(ctx.http.post(ctx.url("/v1/internal/events")).bearer_auth(token).json(&json!({ "events": events })))?;
    ensure(r.status == 200, || format!("batch: {} {}", r.status, r.body))?;
    let answers = r.body["answers"].as_array().cloned().unwrap_or_default();
    Ok(answers
        .iter()
        .map(|a| {
            if a.get("ok").is_some() { "ok".to_owned() } else { a["error"]["code"].as_str().unwrap_or("?").to_owned() }
        })
        .collect())
}

/// A native job the stack's consumer runs: reports by anyone else, with no token, a made-up
/// one or through the other named consumer token, are refused `lease_mismatch` and leave it
/// as it was; the consumer's own reports (heartbeats with progress, the completion) go on,
/// and no API answer shows a lease token.
fn forged_reports_change_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("lease");
    let id = ctx.enqueue(&json!({ "type": "sleep", "payload": { "ms": 4000 }, "tags": [tag] }))?;
    let running = ctx.wait_state(&id, "active", WAIT)?;
    let attempt = running["attempt"].as_u64().unwrap_or(0);
    ensure(attempt == 1, || format!("the consumer runs attempt 1: {running}"))?;
    let forged_complete = json!({ "event": "complete", "attempt": 1, "result": { "forged": true } });
    let forged_fail =
        json!({ "event": "fail", "attempt": 1, "error": "forged", "disposition": { "kind": "permanent" } });
    refused(&ctx.report(&id, &forged_complete)?, "lease_mismatch")?;
    let mut with_made_up = forged_fail.clone();
    with_made_up["lease"] = json!("0".repeat(48));
    refused(&ctx.report(&id, &with_made_up)?, "lease_mismatch")?;
    refused(&ctx.report(&id, &json!({ "event": "heartbeat", "attempt": 1, "lease": "" }))?, "lease_mismatch")?;
    // The other named consumer token is a consumer too (its reports are answered, not 401),
    // but it holds no lease on this attempt.
    let codes = batch(
        ctx,
        &ctx.consumer_token_b,
        json!([
            { "id": id, "event": forged_complete },
            { "id": id, "event": { "event": "heartbeat", "attempt": 1, "progress": "forged" }, "lease": "x" },
        ]),
    )?;
    ensure(codes == ["lease_mismatch", "lease_mismatch"], || format!("host-b's forged batch: {codes:?}"))?;
    let after = ctx.get(&format!("/v1/jobs/{id}"))?.body;
    ensure(after["progress"] != json!("forged") && after["state"] == "active", || format!("unchanged: {after}"))?;
    // The consumer's own reports still land: the job completes with its handler's result.
    let done = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(done["result"]["slept_ms"] == 4000 && done["attempt"] == 1 && done.get("lease").is_none(), || {
        format!("the consumer's result stands: {done}")
    })?;
    let listed = ctx.get(&format!("/v1/jobs?tag={tag}&include=payload,result"))?.body;
    ensure(!listed.to_string().contains("\"lease\""), || format!("a listing shows no token: {listed}"))?;
    // Now nobody holds it: even a report with a token is refused.
    refused(&ctx.report(&id, &json!({ "event": "heartbeat", "attempt": 1, "lease": "x" }))?, "not_leased")
}

/// Edge-lane jobs are the edge's to run and report: a consumer's start of a queued or
/// scheduled one, and a consumer's outcome for a running one, are refused `not_leased`; the
/// edge's own outcome stands.
fn edge_lane_jobs_are_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let later = ctx.enqueue(&json!({ "type": "noop", "delay": "1h" }))?;
    let before = ctx.get(&format!("/v1/jobs/{later}"))?.body;
    refused(&ctx.report(&later, &json!({ "event": "start", "attempt": 1 }))?, "not_leased")?;
    refused(&ctx.report(&later, &json!({ "event": "reclaim", "attempt": 1, "lease_ms": 1 }))?, "not_leased")?;
    let after = ctx.get(&format!("/v1/jobs/{later}"))?.body;
    ensure(essence(&before) == essence(&after), || format!("unchanged: {before} -> {after}"))?;
    // A webhook the target answers after 4 s: active at the edge meanwhile.
    let path = format!("/{}", unique("lease-edge"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200).delay(Duration::from_secs(4))]);
    let id = ctx.enqueue(&json!({ "type": "webhook", "payload": { "url": url }, "max_attempts": 1 }))?;
    ctx.wait_state(&id, "active", WAIT)?;
    let forged = json!({ "event": "complete", "attempt": 1, "result": { "forged": true }, "lease": "x" });
    refused(&ctx.report(&id, &forged)?, "not_leased")?;
    let event = json!({ "event": "complete", "attempt": 1, "result": { "forged": true } });
    let codes = batch(ctx, &ctx.consumer_token, json!([{ "id": id, "event": event, "lease": "x" }]))?;
    ensure(codes == ["not_leased"], || format!("batch: {codes:?}"))?;
    let done = ctx.wait_job(&id, WAIT, |j| j["state"] == "completed" || j["state"] == "dead")?;
    ensure(done["state"] == "completed" && done["result"]["status"] == 200, || {
        format!("the edge's own outcome stands, not the forged one: {done}")
    })
}

/// A token not configured (or removed from `EDGEJOBS_CONSUMER_TOKENS`, which is how one is
/// revoked) is answered 401 on both report routes; the configured ones work.
fn unknown_consumer_tokens_are_refused(ctx: &Ctx) -> anyhow::Result<()> {
    ensure(!ctx.consumer_token_b.is_empty(), || "the stack has a second named consumer token".into())?;
    let id = "j000000000000000000000000000000";
    let revoked = format!("{}-revoked", ctx.consumer_token);
    for token in [revoked.as_str(), "ej_consumer_never_configured_0000"] {
        let one = ctx.send(
            ctx.http
                .post(ctx.url(&format!("/v1/internal/jobs/{id}/events")))
                .bearer_auth(token)
                .json(&json!({ "event": "heartbeat", "attempt": 1, "lease": "x" })),
        )?;
        ensure(one.status == 401 && one.code() == "unauthorized", || format!("{} {}", one.status, one.body))?;
        let many =
            ctx.send(ctx.http.post(ctx.url("/v1/internal/events")).bearer_auth(token).json(&json!({ "events": [] })))?;
        ensure(many.status == 401 && many.code() == "unauthorized", || format!("{} {}", many.status, many.body))?;
        ensure(!one.body.to_string().contains(token), || "the token is not echoed".into())?;
    }
    for token in [&ctx.consumer_token, &ctx.consumer_token_b] {
        ensure(batch(ctx, token, json!([]))?.is_empty(), || "a configured token is accepted".into())?;
    }
    Ok(())
}

/// On the fault stack (no consumer runs there, the lease is 3 s), the test is the consumer:
/// its start is answered with a token, its reports carrying it are accepted, and once
/// another consumer takes the attempt over after the lease, the old token is refused even
/// for the new attempt, while the new holder's token works; afterwards nothing is leased.
fn the_holder_reports_and_a_takeover_fences_it_out(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let id = crate::util::enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
        ensure(job_on(ctx, stack, &id)?["state"] == "queued", || "queued".into())?;
        let start = report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
        let lease = start.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        ensure(start.status == 200 && lease.len() == 48, || format!("a start answers a token: {} {}", start.status, start.body))?;
        ensure(!start.body.to_string().contains(&lease), || "the token is not in the job document".into())?;
        let beat = |lease: &str, attempt: u32, p: &str| {
            json!({ "event": "heartbeat", "attempt": attempt, "progress": { "step": p }, "lease": lease })
        };
        let r = report_on(ctx, stack, &id, &beat(&lease, 1, "one"))?;
        ensure(r.status == 200 && r.body["progress"]["step"] == "one", || format!("the holder's heartbeat: {}", r.body))?;
        let shown = job_on(ctx, stack, &id)?;
        ensure(!shown.to_string().contains(&lease), || format!("GET shows no token: {shown}"))?;
        // Silent past the 3 s lease: another consumer takes the attempt over.
        let mut taken = None;
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(250));
            let r = report_on(ctx, stack, &id, &json!({ "event": "reclaim", "attempt": 1, "lease_ms": 0 }))?;
            if r.status == 200 {
                taken = Some(r);
                break;
            }
            refused(&r, "lease_held")?;
        }
        let taken = taken.ok_or_else(|| anyhow::anyhow!("no takeover within 10 s"))?;
        let new = taken.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        ensure(taken.body["attempt"] == 2 && new.len() == 48 && new != lease, || format!("a new token: {}", taken.body))?;
        let before = job_on(ctx, stack, &id)?;
        // The old holder: refused at its own attempt (fencing) and at the new one (its token).
        refused(&report_on(ctx, stack, &id, &beat(&lease, 1, "late"))?, "lease_lost")?;
        let old_done = json!({ "event": "complete", "attempt": 2, "result": { "by": "old" }, "lease": lease });
        refused(&report_on(ctx, stack, &id, &old_done)?, "lease_mismatch")?;
        let after = job_on(ctx, stack, &id)?;
        ensure(essence(&before) == essence(&after), || format!("unchanged: {before} -> {after}"))?;
        let done = json!({ "event": "complete", "attempt": 2, "result": { "by": "new" }, "lease": new });
        let r = report_on(ctx, stack, &id, &done)?;
        ensure(r.status == 200 && r.body["state"] == "completed" && r.body["result"]["by"] == "new", || {
            format!("the new holder completes it: {} {}", r.status, r.body)
        })?;
        refused(&report_on(ctx, stack, &id, &beat(&new, 2, "after"))?, "not_leased")
    })
}
