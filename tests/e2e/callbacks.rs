//! Completion callbacks (#30) on the shared stack: a URL callback is a signed `webhook` job
//! delivered once per completion with the job's result (its header values opened at the
//! edge), retried while its receiver fails; a job-spec callback enqueues a job whose payload
//! carries the result (or the error of a dead job); a batch's callback fires once, after
//! its last job, with the batch's counts. Every wait is for a condition, bounded.

use std::collections::BTreeSet;
use std::time::Duration;

use edgejobs_tests::hooks::{Received, Reply, verify_with_python};
use edgejobs_tests::proc::wait_until;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("callbacks_a_url_callback_is_delivered_once_per_completion_signed", url_callback_once_per_completion),
    ("callbacks_a_failing_receiver_gets_the_callback_retried_until_it_succeeds", url_callback_retried),
    ("callbacks_a_job_callback_enqueues_a_job_with_the_result_or_the_error", job_callback_carries_the_result),
    ("callbacks_a_batch_fires_its_callback_once_after_its_last_job", batch_fires_once),
];

const WAIT: Duration = Duration::from_secs(60);

/// Enqueues `body` and returns the job as answered (201).
fn enqueue(ctx: &Ctx, body: &Value) -> anyhow::Result<Value> {
    let r = ctx.post("/v1/jobs", body)?;
    ensure(r.status == 201, || format!("enqueue answered {}: {}", r.status, r.body))?;
    Ok(r.body)
}

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap_or_default().to_owned()
}

/// The callback job `which` (`on_complete`, `on_fail`) of `job`: its id, as the job shows it.
fn callback_of(job: &Value, which: &str) -> anyhow::Result<String> {
    job[which]["id"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("no {which} on {job}"))
}

/// Waits until job `id` exists and is final; returns it.
fn final_job(ctx: &Ctx, id: &str) -> anyhow::Result<Value> {
    ctx.wait_job(id, WAIT, |j| matches!(j["state"].as_str(), Some("completed" | "dead" | "cancelled")))
}

/// The receiver secrets an admin reads for `url`, newest first.
fn secret_for(ctx: &Ctx, url: &str) -> anyhow::Result<String> {
    let r = ctx.send(
        ctx.http.post(ctx.url("/v1/admin/webhook-secret")).bearer_auth(&ctx.admin_key).json(&json!({ "url": url })),
    )?;
    ensure(r.status == 200, || format!("webhook-secret: {} {}", r.status, r.body))?;
    Ok(r.body["secret"].as_str().unwrap_or_default().to_owned())
}

/// Whether the Standard Webhooks library, holding `secret`, accepts `delivery`.
fn verifies(secret: &str, delivery: &Received) -> anyhow::Result<bool> {
    let hook = standardwebhooks::Webhook::new(secret).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &delivery.headers {
        if let (Ok(k), Ok(v)) =
            (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
        {
            headers.insert(k, v);
        }
    }
    Ok(hook.verify(delivery.body.as_bytes(), &headers).is_ok())
}

/// Three jobs, each with a URL callback to one receiver (with a header whose value is
/// sealed at enqueue): once each has completed and its callback job is final, the receiver
/// got exactly three deliveries, one per job, each the job's summary with its result, under
/// the callback job's id, carrying the header, and verifying with the receiver's secret.
fn url_callback_once_per_completion(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("cb-once"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200)]);
    let tag = unique("cb-parent");
    let mut parents = Vec::new();
    for i in 0..3 {
        let job = enqueue(
            ctx,
            &json!({ "type": "noop", "payload": { "i": i }, "tags": [tag], "metadata": { "i": i },
                     "on_complete": { "url": url, "headers": { "X-Callback-Token": "s3cret" } } }),
        )?;
        ensure(job["on_complete"]["payload"]["headers"]["X-Callback-Token"] == "[redacted]", || {
            format!("the answer shows no header value: {job}")
        })?;
        ensure(job["on_complete"]["kind"] == "url" && job["on_complete"]["fired_at"].is_null(), || {
            format!("not fired yet: {job}")
        })?;
        parents.push(job);
    }
    let mut callbacks = BTreeSet::new();
    for p in &parents {
        let done = ctx.wait_state(&id_of(p), "completed", WAIT)?;
        ensure(done["on_complete"]["fired_at"].is_string(), || format!("the job shows its callback fired: {done}"))?;
        let cb = callback_of(p, "on_complete")?;
        let cb_job = final_job(ctx, &cb)?;
        ensure(cb_job["state"] == "completed" && cb_job["type"] == "webhook", || format!("delivered: {cb_job}"))?;
        ensure(cb_job["payload"]["headers"]["X-Callback-Token"] == "[redacted]", || format!("{cb_job}"))?;
        callbacks.insert(cb);
    }
    let got = ctx.hooks.received(&path);
    ensure(got.len() == 3, || format!("one delivery per completion, got {}: {got:?}", got.len()))?;
    let ids: BTreeSet<String> = got.iter().filter_map(|d| d.headers.get("webhook-id").cloned()).collect();
    ensure(ids == callbacks, || format!("each under its callback job's id: {ids:?} vs {callbacks:?}"))?;
    let secret = secret_for(ctx, &url)?;
    for d in &got {
        ensure(verifies(&secret, d)?, || format!("the delivery verifies: {d:?}"))?;
        ensure(d.headers.get("x-callback-token").is_some_and(|v| v == "s3cret"), || {
            format!("the sealed header opened for the callback job: {:?}", d.headers)
        })?;
        let body: Value = serde_json::from_str(&d.body)?;
        let parent = parents.iter().find(|p| p["id"] == body["job"]["id"]);
        ensure(parent.is_some(), || format!("the summary names one of the jobs: {body}"))?;
        let i = parent.map(|p| p["payload"]["i"].clone()).unwrap_or_default();
        ensure(body["type"] == "job.completed" && body["job"]["state"] == "completed", || format!("{body}"))?;
        ensure(body["job"]["result"] == json!({ "ok": true }), || format!("the job's result: {body}"))?;
        ensure(body["job"]["metadata"] == json!({ "i": i }) && body["job"]["tags"] == json!([tag]), || {
            format!("the job's metadata and tags: {body}")
        })?;
        ensure(body["job"]["attempt"] == 1 && body["job"]["finished_at"].is_string(), || format!("{body}"))?;
    }
    let python = verify_with_python(&secret, &got)?;
    ensure(python.iter().all(Option::is_some), || format!("python standardwebhooks verifies each: {python:?}"))
}

/// A receiver that answers 500 twice and then 200: the callback job is retried (a webhook
/// job's backoff) until it succeeds, three attempts, each the same delivery (its id and body).
fn url_callback_retried(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("cb-retry"));
    let url = ctx.hooks.script(&path, vec![Reply::status(500), Reply::status(500), Reply::status(200)]);
    let job = enqueue(ctx, &json!({ "type": "noop", "on_complete": { "url": url } }))?;
    ctx.wait_state(&id_of(&job), "completed", WAIT)?;
    let cb = callback_of(&job, "on_complete")?;
    let cb_job = final_job(ctx, &cb)?;
    ensure(cb_job["state"] == "completed" && cb_job["attempt"] == 3, || format!("three attempts: {cb_job}"))?;
    let failed = cb_job["attempts"].as_array().map_or(0, |a| a.iter().filter(|r| r["outcome"] == "failed").count());
    ensure(failed == 2, || format!("two failed attempts recorded: {cb_job}"))?;
    let got = ctx.hooks.received(&path);
    ensure(got.len() == 3, || format!("three deliveries: {got:?}"))?;
    ensure(got.iter().all(|d| d.headers.get("webhook-id") == Some(&cb)), || {
        format!("every retry is the same message (its webhook-id): {got:?}")
    })?;
    let bodies: BTreeSet<&str> = got.iter().map(|d| d.body.as_str()).collect();
    ensure(bodies.len() == 1, || format!("every retry carries the same summary: {bodies:?}"))?;
    let body: Value = serde_json::from_str(&got[0].body)?;
    ensure(body["job"]["id"] == job["id"] && body["type"] == "job.completed", || format!("{body}"))?;
    let secret = secret_for(ctx, &url)?;
    ensure(verifies(&secret, &got[2])?, || "the successful delivery verifies".into())
}

/// A job-spec callback: a completed job's enqueues its job with the summary (its result)
/// under `payload.callback`, beside the payload it was given; a dead native job's `on_fail`
/// carries its error. Exactly those two callback jobs exist (listed by their tag).
fn job_callback_carries_the_result(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("cb-job");
    let ok = enqueue(
        ctx,
        &json!({ "type": "noop", "on_complete": { "job": { "type": "noop", "payload": { "k": 1 }, "tags": [tag] } },
                 "on_fail": { "job": { "type": "noop", "tags": [tag] } } }),
    )?;
    let dies = enqueue(
        ctx,
        &json!({ "type": "sleep", "payload": { "ms": 0, "fail": "permanent" }, "max_attempts": 1,
                 "on_complete": { "job": { "type": "noop", "tags": [tag] } },
                 "on_fail": { "job": { "type": "noop", "payload": { "why": "dead" }, "tags": [tag] } } }),
    )?;
    ctx.wait_state(&id_of(&ok), "completed", WAIT)?;
    ctx.wait_state(&id_of(&dies), "dead", WAIT)?;
    let completed = final_job(ctx, &callback_of(&ok, "on_complete")?)?;
    ensure(completed["state"] == "completed" && completed["payload"]["k"] == 1, || format!("{completed}"))?;
    let summary = &completed["payload"]["callback"];
    ensure(summary["type"] == "job.completed" && summary["job"]["id"] == ok["id"], || format!("{summary}"))?;
    ensure(summary["job"]["result"] == json!({ "ok": true }), || format!("the job's result: {summary}"))?;
    let failed = final_job(ctx, &callback_of(&dies, "on_fail")?)?;
    let summary = &failed["payload"]["callback"];
    ensure(failed["payload"]["why"] == "dead" && summary["type"] == "job.failed", || format!("{failed}"))?;
    ensure(summary["job"]["state"] == "dead" && summary["job"]["id"] == dies["id"], || format!("{summary}"))?;
    ensure(summary["job"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), || format!("its error: {summary}"))?;
    // Every callback that will exist exists once its job is final (one transaction): only
    // these two, not the other callback of either job.
    let listed = ctx.list_all(&format!("/v1/jobs?tag={tag}"))?;
    let want: BTreeSet<String> = [id_of(&completed), id_of(&failed)].into();
    ensure(listed.iter().cloned().collect::<BTreeSet<_>>() == want && listed.len() == 2, || {
        format!("exactly the two callback jobs: {listed:?}")
    })
}

/// A batch with `on_complete`: its valid jobs (noop, and a native sleep that ends later) form
/// one batch named by the answer; an item with an idempotency key is refused on its own; the
/// callback fires once, after the last job, with the counts (listed by its tag: exactly one).
fn batch_fires_once(ctx: &Ctx) -> anyhow::Result<()> {
    let (tag, cb_tag) = (unique("batch-job"), unique("batch-cb"));
    let mut jobs: Vec<Value> =
        (0..8).map(|i| json!({ "type": "noop", "payload": { "i": i }, "tags": [tag] })).collect();
    jobs.push(json!({ "type": "sleep", "payload": { "ms": 1500 }, "tags": [tag] }));
    jobs.push(json!({ "type": "noop", "idempotency_key": unique("key") }));
    let r = ctx.post(
        "/v1/jobs/batch",
        &json!({ "jobs": jobs, "on_complete": { "job": { "type": "noop", "payload": { "n": 1 }, "tags": [cb_tag] } } }),
    )?;
    ensure(r.status == 200, || format!("batch: {} {}", r.status, r.body))?;
    let batch = r.body["batch"].as_str().unwrap_or_default().to_owned();
    ensure(batch.starts_with('b'), || format!("the answer names the batch: {}", r.body))?;
    let results = r.body["results"].as_array().cloned().unwrap_or_default();
    ensure(results.len() == 10, || format!("{}", r.body))?;
    ensure(results[9]["status"] == 400 && results[9]["error"]["field"] == "idempotency_key", || {
        format!("a keyed item is refused on its own: {}", results[9])
    })?;
    let created: Vec<String> = results[..9].iter().map(|x| id_of(&x["job"])).collect();
    ensure(results[..9].iter().all(|x| x["status"] == 201 && x["job"]["batch"] == batch), || {
        format!("every other item joined the batch: {}", r.body)
    })?;
    let shard = &created[0][1..3];
    ensure(created.iter().all(|id| &id[1..3] == shard), || format!("one shard: {created:?}"))?;
    // Not before the last job (the sleep) ends.
    let mut ends = Vec::new();
    for id in &created {
        ends.push(final_job(ctx, id)?);
    }
    ensure(ends.iter().all(|j| j["state"] == "completed"), || format!("every job completed: {ends:?}"))?;
    // The callback was inserted with the last end; wait for it to run, then count.
    let mut found = Vec::new();
    ensure(
        wait_until(WAIT, || {
            found = ctx.list_all(&format!("/v1/jobs?tag={cb_tag}")).unwrap_or_default();
            !found.is_empty()
        }),
        || "the batch's callback job exists".into(),
    )?;
    let cb = final_job(ctx, &found[0])?;
    ensure(cb["state"] == "completed" && cb["payload"]["n"] == 1, || format!("{cb}"))?;
    ensure(
        cb["payload"]["callback"]
            == json!({ "type": "batch.completed",
                       "batch": { "id": batch, "total": 9, "completed": 9, "dead": 0, "cancelled": 0 } }),
        || format!("the batch's counts: {cb}"),
    )?;
    ensure(&cb["id"].as_str().unwrap_or_default()[1..3] == shard, || format!("in the batch's shard: {cb}"))?;
    let listed = ctx.list_all(&format!("/v1/jobs?tag={cb_tag}"))?;
    ensure(listed.len() == 1, || format!("exactly one batch callback: {listed:?}"))
}
