//! Tests of the job API and the job lifecycle, through `wrangler dev`.

use std::collections::HashSet;
use std::time::Duration;

use edgejobs_core::time::parse_rfc3339;
use edgejobs_tests::hooks::Reply;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("noop_job_completes_end_to_end", noop_job_completes_end_to_end),
    ("health_is_public", health_is_public),
    ("errors_are_json_with_stable_codes", errors_are_json_with_stable_codes),
    ("auth_scopes", auth_scopes),
    ("bad_input_writes_nothing", bad_input_writes_nothing),
    ("batch_answers_each_item", batch_answers_each_item),
    ("list_filters_and_paginates_newest_first", list_filters_and_paginates_newest_first),
    ("idempotency_key_under_concurrency", idempotency_key_under_concurrency),
    ("delay_and_run_at_wait_for_the_alarm", delay_and_run_at_wait_for_the_alarm),
    ("webhook_retries_with_backoff_then_completes", webhook_retries_with_backoff_then_completes),
    ("poison_job_dies_after_max_attempts_and_replays", poison_job_dies_after_max_attempts_and_replays),
    ("permanent_4xx_and_retry_after", permanent_4xx_and_retry_after),
    ("timeout_fails_the_attempt", timeout_fails_the_attempt),
    ("cancel_queued_scheduled_and_active", cancel_queued_scheduled_and_active),
    ("bulk_dead_replay_is_admin_only", bulk_dead_replay_is_admin_only),
    ("cancel_a_queued_job", cancel_a_queued_job),
];

const WAIT: Duration = Duration::from_secs(40);

fn ms(v: &Value) -> u64 {
    v.as_str().and_then(parse_rfc3339).unwrap_or(0)
}

fn noop_job_completes_end_to_end(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.post("/v1/jobs", &json!({ "type": "noop", "payload": { "hello": "world" } }))?;
    ensure(r.status == 201, || format!("enqueue: {} {}", r.status, r.body))?;
    ensure(r.body["state"] == "queued", || format!("new job state: {}", r.body))?;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(job["payload"] == json!({ "hello": "world" }), || format!("payload: {job}"))?;
    ensure(job["attempt"] == 1, || format!("attempt: {job}"))?;
    for field in ["created_at", "started_at", "finished_at"] {
        ensure(job[field].is_string(), || format!("{field} missing: {job}"))?;
    }
    Ok(())
}

fn health_is_public(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.send(ctx.http.get(ctx.url("/health")))?;
    ensure(r.status == 200 && r.body["status"] != "unhealthy", || format!("health: {} {}", r.status, r.body))?;
    let r = ctx.send(ctx.http.get(ctx.url("/health/live")))?;
    ensure(r.status == 200, || format!("live: {} {}", r.status, r.body))
}

fn expect_error(r: &crate::util::Resp, status: u16, code: &str) -> anyhow::Result<()> {
    ensure(r.status == status && r.code() == code, || format!("want {status} {code}, got {} {}", r.status, r.body))?;
    ensure(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), || format!("no message: {}", r.body))
}

fn errors_are_json_with_stable_codes(ctx: &Ctx) -> anyhow::Result<()> {
    let post_raw = |body: &str, ct: &str| {
        ctx.send(
            ctx.http
                .post(ctx.url("/v1/jobs"))
                .bearer_auth(&ctx.api_key)
                .header("content-type", ct)
                .body(body.to_owned()),
        )
    };
    expect_error(&post_raw("{\"type\":", "application/json")?, 400, "invalid_json")?;
    expect_error(&post_raw("{\"type\":\"noop\"}", "text/plain")?, 415, "unsupported_media_type")?;
    let r = ctx.post("/v1/jobs", &json!({ "type": "noop", "max_attempts": 0 }))?;
    expect_error(&r, 400, "invalid_field")?;
    ensure(r.body["error"]["field"] == "max_attempts", || format!("field named: {}", r.body))?;
    expect_error(&ctx.post("/v1/jobs", &json!({ "type": "no-such-type" }))?, 400, "unknown_type")?;
    let big = "x".repeat(130 * 1024);
    expect_error(&ctx.post("/v1/jobs", &json!({ "type": "noop", "payload": big }))?, 413, "payload_too_large")?;
    let huge = "y".repeat(1100 * 1024);
    expect_error(&ctx.post("/v1/jobs", &json!({ "type": "noop", "payload": huge }))?, 413, "payload_too_large")?;
    expect_error(&ctx.get("/v1/nope")?, 404, "not_found")?;
    let r = ctx.send(ctx.http.delete(ctx.url("/v1/jobs")).bearer_auth(&ctx.api_key))?;
    expect_error(&r, 405, "method_not_allowed")?;
    ensure(r.headers.get("allow").is_some_and(|v| v == "GET, POST"), || format!("allow header: {:?}", r.headers))?;
    expect_error(&ctx.get("/v1/jobs/not-an-id")?, 404, "job_not_found")?;
    expect_error(&ctx.get("/v1/jobs/j00000000000000000000000000000")?, 404, "job_not_found")?;
    expect_error(&ctx.get("/v1/jobs?state=finished")?, 400, "invalid_field")?;
    // Cancelling a completed job is an illegal transition.
    let id = ctx.enqueue(&json!({ "type": "noop" }))?;
    ctx.wait_state(&id, "completed", WAIT)?;
    expect_error(&ctx.post(&format!("/v1/jobs/{id}/cancel"), &json!({}))?, 409, "invalid_transition")?;
    expect_error(&ctx.post(&format!("/v1/jobs/{id}/retry"), &json!({}))?, 409, "invalid_transition")
}

fn auth_scopes(ctx: &Ctx) -> anyhow::Result<()> {
    let jobs = || ctx.http.get(ctx.url("/v1/jobs"));
    expect_error(&ctx.with_key(jobs(), None)?, 401, "unauthorized")?;
    expect_error(&ctx.with_key(jobs(), Some("ej_jobs_wrong_wrong_wrong"))?, 401, "unauthorized")?;
    ensure(ctx.with_key(jobs(), Some(&ctx.api_key))?.status == 200, || "jobs key on the job API".into())?;
    ensure(ctx.with_key(jobs(), Some(&ctx.admin_key))?.status == 200, || "admin key covers the job API".into())?;
    expect_error(&ctx.with_key(jobs(), Some(&ctx.consumer_token))?, 403, "forbidden")?;
    let replay = || ctx.http.post(ctx.url("/v1/dead/replay")).json(&json!({ "type": "nothing-here" }));
    expect_error(&ctx.with_key(replay(), Some(&ctx.api_key))?, 403, "forbidden")?;
    ensure(ctx.with_key(replay(), Some(&ctx.admin_key))?.status == 200, || "admin key on an admin route".into())?;
    let events = || ctx.http.post(ctx.url("/v1/internal/jobs/j00000000000000000000000000000/events")).json(&json!({}));
    expect_error(&ctx.with_key(events(), Some(&ctx.api_key))?, 403, "forbidden")?;
    // Errors never echo a key.
    let r = ctx.with_key(jobs(), Some("ej_jobs_wrong_wrong_wrong"))?;
    ensure(!r.body.to_string().contains("wrong_wrong"), || format!("key echoed: {}", r.body))?;
    // /health stays public.
    ensure(ctx.with_key(ctx.http.get(ctx.url("/health")), None)?.status == 200, || "health is public".into())
}

fn bad_input_writes_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("bad");
    let bad_bodies = [
        json!({ "type": "noop", "tags": [tag], "max_attempts": 1000 }),
        json!({ "type": "nope", "tags": [tag] }),
        json!({ "type": "webhook", "tags": [tag], "payload": { "url": "not a url" } }),
        json!({ "type": "noop", "tags": [tag], "delay": "soon" }),
        json!({ "type": "noop", "tags": [tag], "unknown": true }),
    ];
    for b in &bad_bodies {
        let r = ctx.post("/v1/jobs", b)?;
        ensure(r.status == 400, || format!("{b}: {} {}", r.status, r.body))?;
    }
    let r = ctx.post("/v1/jobs/batch", &json!({ "jobs": vec![json!({ "type": "noop", "tags": [tag] }); 101] }))?;
    expect_error(&r, 400, "invalid_field")?;
    let listed = ctx.list_all(&format!("/v1/jobs?tag={tag}"))?;
    ensure(listed.is_empty(), || format!("bad input wrote jobs: {listed:?}"))
}

fn batch_answers_each_item(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("batch");
    let key = unique("batch-key");
    let r = ctx.post(
        "/v1/jobs/batch",
        &json!({ "jobs": [
            { "type": "noop", "tags": [tag], "idempotency_key": key },
            { "type": "nope", "tags": [tag] },
            { "type": "noop", "tags": [tag], "idempotency_key": key },
            { "type": "noop", "tags": [tag], "max_attempts": -1 },
        ] }),
    )?;
    ensure(r.status == 200, || format!("batch: {} {}", r.status, r.body))?;
    let res = r.body["results"].as_array().cloned().unwrap_or_default();
    ensure(res.len() == 4, || format!("results: {}", r.body))?;
    ensure(res[1]["status"] == 400 && res[1]["error"]["code"] == "unknown_type", || format!("item 2: {}", res[1]))?;
    ensure(res[3]["status"] == 400 && res[3]["error"]["field"] == "max_attempts", || format!("item 4: {}", res[3]))?;
    // Items 1 and 3 share a key: one creates, the other gets the same job.
    let statuses: HashSet<u64> = [res[0]["status"].as_u64(), res[2]["status"].as_u64()].into_iter().flatten().collect();
    ensure(statuses == HashSet::from([200, 201]), || format!("idempotent items: {} / {}", res[0], res[2]))?;
    ensure(res[0]["job"]["id"] == res[2]["job"]["id"], || "same job for the same key".into())?;
    let listed = ctx.list_all(&format!("/v1/jobs?tag={tag}"))?;
    ensure(listed.len() == 1, || format!("exactly one job created: {listed:?}"))
}

fn list_filters_and_paginates_newest_first(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("page");
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(ctx.enqueue(&json!({ "type": "noop", "tags": [tag, format!("n{i}")] }))?);
        std::thread::sleep(Duration::from_millis(5));
    }
    for id in &created {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    let listed = ctx.list_all(&format!("/v1/jobs?tag={tag}&limit=3"))?;
    let mut want = created.clone();
    want.reverse();
    ensure(listed == want, || format!("pages newest first: {listed:?} vs {want:?}"))?;
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&limit=3"))?;
    ensure(r.body["jobs"].as_array().is_some_and(|j| j.len() == 3) && r.body["next_cursor"].is_string(), || {
        format!("first page: {}", r.body)
    })?;
    // Whole tags only: "n3" matches the fourth job and nothing else (no other test uses n*).
    let one = ctx.list_all("/v1/jobs?tag=n3")?;
    ensure(one == [created[3].clone()], || format!("tag filter: {one:?}"))?;
    let by_state = ctx.list_all(&format!("/v1/jobs?tag={tag}&state=completed&type=noop"))?;
    ensure(by_state.len() == 7, || format!("state+type filter: {by_state:?}"))?;
    let none = ctx.list_all(&format!("/v1/jobs?tag={tag}&state=dead"))?;
    ensure(none.is_empty(), || format!("state filter excludes: {none:?}"))?;
    long_tags_filter_and_impossible_ones_are_400(ctx)
}

/// The longest tag a job may carry (64 bytes: four-byte characters and a unique suffix)
/// filters a listing like any other. Durable Objects' SQLite refuses a `LIKE` pattern over
/// 50 bytes, so a filter by a long tag used to answer 500 once the shard held jobs
/// (Schemathesis found it). A tag no job can carry (65 bytes, a comma, empty) is a 400.
fn long_tags_filter_and_impossible_ones_are_400(ctx: &Ctx) -> anyhow::Result<()> {
    let suffix = unique("t");
    let emoji = (64 - suffix.len()) / 4;
    let long = format!("{}{}{}", "😍".repeat(emoji), "x".repeat(64 - suffix.len() - 4 * emoji), suffix);
    ensure(long.len() == 64, || format!("a tag of 64 bytes: {}", long.len()))?;
    let id = ctx.enqueue(&json!({ "type": "noop", "tags": [long] }))?;
    let enc: String = long.bytes().map(|b| format!("%{b:02X}")).collect();
    let listed = ctx.list_all(&format!("/v1/jobs?tag={enc}"))?;
    ensure(listed == [id.clone()], || format!("listed by a {}-byte tag: {listed:?}", long.len()))?;
    for bad in [format!("{enc}x"), "a%2Cb".to_owned(), String::new()] {
        let r = ctx.get(&format!("/v1/jobs?tag={bad}"))?;
        ensure(r.status == 400 && r.body["error"]["field"] == "tag", || format!("tag={bad}: {} {}", r.status, r.body))?;
    }
    Ok(())
}

fn idempotency_key_under_concurrency(ctx: &Ctx) -> anyhow::Result<()> {
    let key = unique("idem");
    let tag = unique("idem-tag");
    let body = json!({ "type": "noop", "idempotency_key": key, "tags": [tag] });
    let results: Vec<anyhow::Result<(u16, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                s.spawn(|| {
                    let r = ctx.post("/v1/jobs", &body)?;
                    Ok((r.status, r.body["id"].as_str().unwrap_or_default().to_owned()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("thread panicked")))).collect()
    });
    let mut created = 0;
    let mut ids = HashSet::new();
    for r in results {
        let (status, id) = r?;
        ensure(status == 201 || status == 200, || format!("status {status}"))?;
        created += usize::from(status == 201);
        ids.insert(id);
    }
    ensure(created == 1 && ids.len() == 1, || format!("{created} created, ids {ids:?}"))?;
    let listed = ctx.list_all(&format!("/v1/jobs?tag={tag}"))?;
    ensure(listed.len() == 1, || format!("one job stored: {listed:?}"))
}

fn delay_and_run_at_wait_for_the_alarm(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.post("/v1/jobs", &json!({ "type": "noop", "delay": "2s" }))?;
    ensure(r.status == 201 && r.body["state"] == "scheduled", || format!("delayed: {} {}", r.status, r.body))?;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let created = ms(&r.body["created_at"]);
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(ms(&job["started_at"]) >= created + 2000, || format!("ran too early: {job}"))?;
    // run_at: three seconds after the edge's clock as it read when the first job finished.
    let at = ms(&job["finished_at"]) + 3000;
    let r = ctx.post("/v1/jobs", &json!({ "type": "noop", "run_at": edgejobs_core::time::format_rfc3339(at) }))?;
    ensure(r.body["state"] == "scheduled", || format!("run_at: {}", r.body))?;
    let id = r.body["id"].as_str().unwrap_or_default().to_owned();
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(ms(&job["started_at"]) >= at, || format!("ran before run_at: {job}"))
}

fn webhook_job(url: &str, extra: Value) -> Value {
    let mut j = json!({ "type": "webhook", "payload": { "url": url, "body": { "order": 42 } }, "backoff": { "base": "300ms", "cap": "2s" } });
    if let (Some(o), Value::Object(e)) = (j.as_object_mut(), extra) {
        o.extend(e);
    }
    j
}

fn webhook_retries_with_backoff_then_completes(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("flaky"));
    let url = ctx.hooks.script(&path, vec![Reply::status(500), Reply::status(503), Reply::status(200)]);
    let id = ctx.enqueue(&webhook_job(&url, json!({ "max_attempts": 5 })))?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(job["attempt"] == 3, || format!("3 attempts: {job}"))?;
    ensure(job["result"]["status"] == 200, || format!("result: {job}"))?;
    let got = ctx.hooks.received(&path);
    ensure(got.len() == 3, || format!("target saw {} requests", got.len()))?;
    // The receiver verifies with the Standard Webhooks library, using the secret an admin
    // reads for its origin; another receiver's secret does not verify.
    let secret = |url: &str| -> anyhow::Result<String> {
        let r = ctx.send(
            ctx.http.post(ctx.url("/v1/admin/webhook-secret")).bearer_auth(&ctx.admin_key).json(&json!({ "url": url })),
        )?;
        ensure(r.status == 200, || format!("webhook-secret: {} {}", r.status, r.body))?;
        Ok(r.body["secret"].as_str().unwrap_or_default().to_owned())
    };
    let receiver = standardwebhooks::Webhook::new(&secret(&url)?).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let other = standardwebhooks::Webhook::new(&secret("https://elsewhere.example/hook")?)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, req) in got.iter().enumerate() {
        ensure(req.body == r#"{"order":42}"#, || format!("body: {}", req.body))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &req.headers {
            if let (Ok(k), Ok(v)) =
                (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
            {
                headers.insert(k, v);
            }
        }
        ensure(receiver.verify(req.body.as_bytes(), &headers).is_ok(), || {
            format!("the Standard Webhooks library refuses delivery {i}: {:?}", req.headers)
        })?;
        ensure(other.verify(req.body.as_bytes(), &headers).is_err(), || "another receiver's secret verifies".into())?;
        // Standard Webhooks: "the same when the same webhook is being resent (e.g. due to a
        // previous failure)", so a receiver that did the work but answered 500 can tell.
        ensure(req.headers.get("webhook-id") == Some(&id), || {
            format!("webhook-id is the job id on every retry: {:?}", req.headers)
        })?;
        ensure(req.headers.get("x-edgejobs-attempt").map(String::as_str) == Some(&(i + 1).to_string()), || {
            format!("attempt header: {:?}", req.headers)
        })?;
        ensure(req.headers.get("x-edgejobs-job-id") == Some(&id), || "job id header".into())?;
    }
    // The reference Python library verifies the same three deliveries (the retried ones
    // included) and reads one id from them; another receiver's secret verifies none.
    let ids = edgejobs_tests::hooks::verify_with_python(&secret(&url)?, &got)?;
    ensure(ids == vec![Some(id.clone()); 3], || format!("python standardwebhooks: {ids:?}"))?;
    let ids = edgejobs_tests::hooks::verify_with_python(&secret("https://elsewhere.example/hook")?, &got)?;
    ensure(ids == vec![None; 3], || format!("python standardwebhooks, another receiver's secret: {ids:?}"))?;
    Ok(())
}

fn poison_job_dies_after_max_attempts_and_replays(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("poison"));
    let url = ctx.hooks.script(&path, vec![Reply::status(500)]);
    let id = ctx.enqueue(&webhook_job(&url, json!({ "max_attempts": 3 })))?;
    let job = ctx.wait_state(&id, "dead", WAIT)?;
    ensure(job["attempt"] == 3 && job["last_error"].as_str().is_some_and(|e| e.contains("500")), || {
        format!("dead: {job}")
    })?;
    std::thread::sleep(Duration::from_secs(2));
    ensure(ctx.hooks.received(&path).len() == 3, || {
        format!("exactly 3 attempts, saw {}", ctx.hooks.received(&path).len())
    })?;
    let dead = ctx.list_all("/v1/dead?type=webhook&limit=100")?;
    ensure(dead.contains(&id), || format!("{id} in the dead-letter set"))?;
    // Replay it once the target recovers: a new series, attempt numbers continue.
    ctx.hooks.script(&path, vec![Reply::status(500), Reply::status(500), Reply::status(500), Reply::status(200)]);
    let r = ctx.post(&format!("/v1/jobs/{id}/retry"), &json!({}))?;
    ensure(r.status == 200 && r.body["state"] == "queued" && r.body["series_base"] == 3, || {
        format!("retry: {} {}", r.status, r.body)
    })?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(job["attempt"] == 4, || format!("attempt 4 of the job's life: {job}"))?;
    // The first series shared one webhook-id; the replay is a new series with a new one, so a
    // receiver that deduplicated the dead job's deliveries still takes the replay.
    let got = ctx.hooks.received(&path);
    let ids: Vec<_> = got.iter().map(|r| r.headers.get("webhook-id").cloned().unwrap_or_default()).collect();
    let replayed = format!("{id}_r3");
    ensure(ids == [id.as_str(), id.as_str(), id.as_str(), replayed.as_str()], || format!("webhook-ids: {ids:?}"))?;
    let dead = ctx.list_all("/v1/dead?type=webhook&limit=100")?;
    ensure(!dead.contains(&id), || "left the dead-letter set".into())
}

fn permanent_4xx_and_retry_after(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("gone"));
    let url = ctx.hooks.script(&path, vec![Reply::status(404)]);
    let id = ctx.enqueue(&webhook_job(&url, json!({ "max_attempts": 5 })))?;
    let job = ctx.wait_state(&id, "dead", WAIT)?;
    ensure(job["attempt"] == 1, || format!("a 404 is permanent: {job}"))?;
    let path = format!("/{}", unique("busy"));
    let url = ctx.hooks.script(&path, vec![Reply::status(429).retry_after("2"), Reply::status(200)]);
    let id =
        ctx.enqueue(&webhook_job(&url, json!({ "max_attempts": 5, "backoff": { "base": "10ms", "cap": "20ms" } })))?;
    ctx.wait_state(&id, "completed", WAIT)?;
    let got = ctx.hooks.received(&path);
    ensure(got.len() == 2, || format!("two attempts, saw {}", got.len()))?;
    let gap = got[1].at.duration_since(got[0].at);
    ensure(gap >= Duration::from_millis(1900), || format!("Retry-After honoured: second attempt after {gap:?}"))
}

fn timeout_fails_the_attempt(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("slow"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200).delay(Duration::from_secs(4))]);
    let id = ctx.enqueue(&webhook_job(&url, json!({ "max_attempts": 1, "timeout": "1s" })))?;
    let job = ctx.wait_state(&id, "dead", WAIT)?;
    ensure(job["last_error"].as_str().is_some_and(|e| e.contains("timed out")), || format!("timeout: {job}"))
}

fn cancel_queued_scheduled_and_active(ctx: &Ctx) -> anyhow::Result<()> {
    // Scheduled → cancelled, and a second cancel is refused.
    let id = ctx.enqueue(&json!({ "type": "noop", "delay": "60s" }))?;
    let r = ctx.post(&format!("/v1/jobs/{id}/cancel"), &json!({}))?;
    ensure(r.status == 200 && r.body["state"] == "cancelled", || format!("cancel: {} {}", r.status, r.body))?;
    expect_error(&ctx.post(&format!("/v1/jobs/{id}/cancel"), &json!({}))?, 409, "invalid_transition")?;
    // Active → marked; its report is refused and the job ends cancelled.
    let path = format!("/{}", unique("cancel-active"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200).delay(Duration::from_secs(3))]);
    let id = ctx.enqueue(&webhook_job(&url, json!({ "max_attempts": 3 })))?;
    ctx.wait_state(&id, "active", WAIT)?;
    let r = ctx.post(&format!("/v1/jobs/{id}/cancel"), &json!({}))?;
    ensure(r.status == 200 && r.body["cancel_requested"] == true && r.body["state"] == "active", || {
        format!("mark: {}", r.body)
    })?;
    let job = ctx.wait_state(&id, "cancelled", WAIT)?;
    ensure(job.get("result").is_none(), || format!("a cancelled job records no result: {job}"))?;
    ensure(ctx.hooks.received(&path).len() == 1, || "not retried after the cancel".into())
}

/// A replay without a tag replays every dead job of the type: on the fault stack, so it
/// cannot revive the shared stack's dead jobs that other tests, running meanwhile, expect
/// to stay dead (it once replayed the dashboard test's job of another tag).
fn bulk_dead_replay_is_admin_only(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let path = format!("/{}", unique("bulk"));
        let url = ctx.hooks.script(&path, vec![Reply::status(400)]);
        let tag = unique("bulk-tag");
        let ids: Vec<String> = (0..3)
            .map(|_| {
                crate::util::enqueue_on(ctx, stack, &webhook_job(&url, json!({ "max_attempts": 2, "tags": [tag] })))
            })
            .collect::<anyhow::Result<_>>()?;
        let state_is = |id: &str, state: &str| {
            edgejobs_tests::proc::wait_until(WAIT, || {
                crate::util::job_on(ctx, stack, id).is_ok_and(|j| j["state"] == state)
            })
        };
        for id in &ids {
            ensure(state_is(id, "dead"), || format!("{id} died"))?;
        }
        let at = |path: &str| format!("{}{path}", stack.edge_url);
        let dead = ctx.send(ctx.http.get(at(&format!("/v1/dead?tag={tag}"))).bearer_auth(&stack.secrets.api_key))?;
        let listed = dead.body["jobs"].as_array().map_or(0, Vec::len);
        ensure(dead.status == 200 && listed == 3, || format!("dead listing by tag: {} {}", dead.status, dead.body))?;
        let replay =
            |key: &str, body: Value| ctx.send(ctx.http.post(at("/v1/dead/replay")).bearer_auth(key).json(&body));
        let r = replay(&stack.secrets.api_key, json!({ "type": "webhook" }))?;
        expect_error(&r, 403, "forbidden")?;
        ctx.hooks.script(&path, vec![Reply::status(200)]);
        let r = replay(&stack.secrets.admin_key, json!({ "type": "webhook", "limit": 1000 }))?;
        ensure(r.status == 200, || format!("replay: {} {}", r.status, r.body))?;
        let replayed: HashSet<String> =
            r.body["ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        ensure(ids.iter().all(|id| replayed.contains(id)), || format!("ours replayed: {replayed:?}"))?;
        for id in &ids {
            ensure(state_is(id, "completed"), || format!("{id} completed after its replay"))?;
        }
        let r = replay(&stack.secrets.admin_key, json!({ "limit": 0 }))?;
        expect_error(&r, 400, "invalid_field")
    })
}

fn cancel_a_queued_job(ctx: &Ctx) -> anyhow::Result<()> {
    // On the fault stack no consumer runs, so a native job stays queued until cancelled.
    ctx.with_fault_stack(|stack| {
        let id = crate::util::enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
        ensure(crate::util::job_on(ctx, stack, &id)?["state"] == "queued", || "queued".into())?;
        let r = crate::util::cancel_on(ctx, stack, &id)?;
        ensure(r.status == 200 && r.body["state"] == "cancelled", || {
            format!("cancel queued: {} {}", r.status, r.body)
        })?;
        // A consumer's start for it is refused afterwards.
        let r = crate::util::report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
        ensure(r.status == 409, || format!("start after cancel: {} {}", r.status, r.body))
    })
}
