//! The Rust client (`edgejobs-client`) against the shared stack: every scenario a newcomer
//! meets, each through the client's typed methods only, and each error code the client can
//! provoke read as its typed error.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use edgejobs_client::api::{BatchItem, JobSpec, JobState, ReplayRequest, ScheduleSpec};
use edgejobs_client::{Client, DeadQuery, Error, ErrorCode, EventRequest, JobQuery, RetryPolicy, Step};
use edgejobs_tests::stack::Stack;
use serde_json::json;

use crate::util::{Ctx, Test, enqueue_on, ensure, report_on, unique};

pub const TESTS: &[Test] = &[
    ("client_enqueue_get_and_wait", enqueue_get_wait),
    ("client_batch_reports_each_items_error", batch),
    ("client_list_pages_follow_the_cursor", pages),
    ("client_cancel_and_retry", cancel_retry),
    ("client_dead_jobs_are_listed_and_replayed", dead_replay),
    ("client_schedule_create_pause_delete", schedules),
    ("client_an_event_resumes_a_waiting_run", event_resumes),
    ("client_streams_an_llm_chat_jobs_tokens", stream_tokens),
    ("client_429_is_retried_after_retry_after", rate_limited),
    ("client_error_codes_are_typed", typed_errors),
    ("client_verifies_a_real_delivery", verifies_a_delivery),
];

/// Runs one async scenario on a runtime of its own.
fn run<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("runtime")?.block_on(f)
}

fn client(ctx: &Ctx, key: &str) -> anyhow::Result<Client> {
    Client::new(&ctx.edge, key).context("client")
}

fn spec(job_type: &str, payload: serde_json::Value, tag: &str) -> JobSpec {
    JobSpec { job_type: job_type.into(), payload: Some(payload), tags: Some(vec![tag.into()]), ..JobSpec::default() }
}

fn enqueue_get_wait(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let tag = unique("rs-enq");
        let job = c.enqueue(&spec("sleep", json!({ "ms": 300 }), &tag)).await?;
        ensure(job.job_type == "sleep" && !job.state.is_final(), || format!("enqueued: {job:?}"))?;
        let got = c.job(&job.id).await?;
        ensure(got.id == job.id && got.tags == [tag.clone()], || format!("got: {got:?}"))?;
        let done = c.wait_for(&job.id, Duration::from_secs(30)).await?;
        ensure(done.state == JobState::Completed, || format!("waited: {done:?}"))?;
        ensure(done.result == Some(json!({ "slept_ms": 300 })), || format!("result: {:?}", done.result))?;
        // An idempotency key: the second enqueue answers the first job.
        let keyed = JobSpec { idempotency_key: Some(unique("rs-key")), ..spec("noop", json!({}), &tag) };
        let (a, b) = (c.enqueue(&keyed).await?, c.enqueue(&keyed).await?);
        ensure(a.id == b.id, || format!("one job per key: {} {}", a.id, b.id))
    })
}

fn batch(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let tag = unique("rs-batch");
        let specs =
            [spec("noop", json!({}), &tag), spec("no-such-type", json!({}), &tag), spec("noop", json!({}), &tag)];
        let out = c.enqueue_batch(&specs).await?;
        ensure(out.results.len() == 3, || format!("three results: {out:?}"))?;
        let created = |i: usize| matches!(&out.results[i], BatchItem::Created(c) if c.status == 201);
        ensure(created(0) && created(2), || format!("items 0 and 2 created: {out:?}"))?;
        match &out.results[1] {
            BatchItem::Failed(f) => ensure(f.status == 400 && f.error.code == "unknown_type", || format!("{f:?}")),
            other => anyhow::bail!("item 1 should fail: {other:?}"),
        }
    })
}

fn pages(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let tag = unique("rs-pages");
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(c.enqueue(&spec("noop", json!({ "i": i }), &tag)).await?.id);
        }
        let q = JobQuery { tag: Some(tag.clone()), limit: Some(2), ..JobQuery::default() };
        let first = c.jobs(&q).await?;
        ensure(first.jobs.len() == 2 && first.next_cursor.is_some(), || format!("first page: {first:?}"))?;
        let all = c.job_pages(&q).collect(10).await?;
        let mut listed: Vec<String> = all.into_iter().map(|j| j.id).collect();
        listed.sort();
        ids.sort();
        ensure(listed == ids, || format!("every job once over the pages: {listed:?} vs {ids:?}"))
    })
}

fn cancel_retry(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let tag = unique("rs-cancel");
        let later = JobSpec {
            delay: Some(edgejobs_client::api::DurationInput::Text("1h".into())),
            ..spec("noop", json!({}), &tag)
        };
        let job = c.enqueue(&later).await?;
        ensure(job.state == JobState::Scheduled, || format!("scheduled: {job:?}"))?;
        let cancelled = c.cancel(&job.id).await?;
        ensure(cancelled.state == JobState::Cancelled, || format!("cancelled: {cancelled:?}"))?;
        // A cancelled job is not dead: retry refuses it with a typed 409.
        let e = c.retry(&job.id).await.err().context("retry of a cancelled job")?;
        ensure(e.code() == Some(ErrorCode::InvalidTransition) && e.status() == Some(409), || format!("{e:?}"))?;
        // A dead job is retried as a new series.
        let dead = c
            .enqueue(&JobSpec { max_attempts: Some(1), ..spec("sleep", json!({ "ms": 0, "fail": "permanent" }), &tag) })
            .await?;
        let d = c.wait_for(&dead.id, Duration::from_secs(30)).await?;
        ensure(d.state == JobState::Dead, || format!("dead: {d:?}"))?;
        let again = c.retry(&dead.id).await?;
        ensure(!again.state.is_final() || again.attempt > d.attempt, || format!("retried: {again:?}"))
    })
}

fn dead_replay(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let admin = client(ctx, &ctx.admin_key)?;
        let tag = unique("rs-dead");
        let dying = JobSpec { max_attempts: Some(1), ..spec("sleep", json!({ "ms": 0, "fail": "permanent" }), &tag) };
        let ids = [c.enqueue(&dying).await?.id, c.enqueue(&dying).await?.id];
        for id in &ids {
            let j = c.wait_for(id, Duration::from_secs(30)).await?;
            ensure(j.state == JobState::Dead, || format!("dead: {j:?}"))?;
        }
        let q = DeadQuery { tag: Some(tag.clone()), ..DeadQuery::default() };
        let listed = c.dead(&q).await?;
        ensure(listed.jobs.len() == 2, || format!("two dead: {listed:?}"))?;
        let out = admin.replay_dead(&ReplayRequest { tag: Some(tag.clone()), ..ReplayRequest::default() }).await?;
        ensure(out.replayed == 2, || format!("replayed: {out:?}"))?;
        // A jobs key may not replay: a typed 403.
        let e = c.replay_dead(&ReplayRequest::default()).await.err().context("a jobs key replays")?;
        ensure(e.code() == Some(ErrorCode::Forbidden), || format!("{e:?}"))
    })
}

fn schedules(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let admin = client(ctx, &ctx.admin_key)?;
        let name = unique("rs-sched");
        let s = ScheduleSpec {
            name: name.clone(),
            cron: "0 7 * * *".into(),
            timezone: Some("Europe/Paris".into()),
            job: JobSpec { job_type: "noop".into(), ..JobSpec::default() },
            overlap: None,
            catch_up: None,
            paused: None,
            starts_at: None,
            ends_at: None,
        };
        let made = admin.create_schedule(&s).await?;
        ensure(made.name == name && !made.paused && made.next_at.is_some(), || format!("created: {made:?}"))?;
        let e = admin.create_schedule(&s).await.err().context("a second create")?;
        ensure(e.code() == Some(ErrorCode::ScheduleExists), || format!("{e:?}"))?;
        let paused = admin.pause_schedule(&name).await?;
        ensure(paused.paused, || format!("paused: {paused:?}"))?;
        let shown = admin.schedule(&name).await?;
        ensure(shown.paused && shown.upcoming.is_some(), || format!("shown: {shown:?}"))?;
        let deleted = admin.delete_schedule(&name).await?;
        ensure(deleted.deleted, || format!("deleted: {deleted:?}"))?;
        let e = admin.schedule(&name).await.err().context("a deleted schedule")?;
        ensure(e.code() == Some(ErrorCode::ScheduleNotFound) && e.status() == Some(404), || format!("{e:?}"))
    })
}

/// A workflow run waiting for an event (reported by hand on the fault stack, which has no
/// consumer to take the job) is resumed by the client's `send_event`, once.
fn event_resumes(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack: &mut Stack| {
        let id = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
        let r = report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
        ensure(r.status == 200, || format!("start: {} {}", r.status, r.body))?;
        let lease = r.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let event = unique("rs-approved");
        let wait = json!({ "event": "step", "attempt": 1, "lease": lease, "step": { "kind": "wait", "seq": 0,
            "name": "approval", "event": event, "timeout_ms": 600_000 } });
        let r = report_on(ctx, stack, &id, &wait)?;
        ensure(r.status == 200 && r.body["state"] == "scheduled", || format!("the wait: {} {}", r.status, r.body))?;
        run(async {
            let c = Client::new(&stack.edge_url, &stack.secrets.api_key).context("client")?;
            let send = EventRequest {
                name: event.clone(),
                data: Some(json!({ "ok": true })),
                id: Some(unique("ev")),
                tenant: None,
            };
            let sent = c.send_event(&send).await?;
            ensure(sent.resumed == 1 && !sent.duplicate, || format!("sent: {sent:?}"))?;
            let again = c.send_event(&send).await?;
            ensure(again.duplicate, || format!("the same id again is a duplicate: {again:?}"))?;
            let job = c.job(&id).await?;
            ensure(job.state == JobState::Queued, || format!("the run is queued again: {job:?}"))
        })
    })
}

fn stream_tokens(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let message = unique("rs-hello");
        let job = c
            .enqueue(&JobSpec {
                job_type: "llm.chat".into(),
                payload: Some(json!({ "messages": [{ "role": "user", "content": message }] })),
                ..JobSpec::default()
            })
            .await?;
        let mut events = c.job_events(&job.id);
        let (mut text, mut last_state) = (String::new(), None);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.checked_duration_since(Instant::now()).context("no final state within 60 s")?;
            match tokio::time::timeout(left, events.next()).await.context("no final state within 60 s")?? {
                Step::Event(e) if e.event == "chunk" => text.push_str(&e.chunk()?.data),
                Step::Event(e) if e.event == "state" => last_state = Some(e.state()?.state),
                Step::Ended => break,
                _ => {}
            }
        }
        ensure(last_state == Some(JobState::Completed), || format!("final state: {last_state:?}"))?;
        let done = c.job(&job.id).await?;
        let content = done.result.as_ref().and_then(|r| r["content"].as_str()).unwrap_or_default().to_owned();
        ensure(!text.is_empty() && text == content, || format!("streamed {text:?}, result {content:?}"))
    })
}

/// `sdk_keys[2]` (3 enqueues per 10 s, the Rust client's own): without retries the fourth
/// enqueue is a typed, retryable 429; with them, every enqueue goes through after waiting
/// what `Retry-After` says.
fn rate_limited(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let key = &ctx.sdk_keys[2];
        ensure(!key.is_empty(), || "the stack has the Rust client's limited key".into())?;
        let tag = unique("rs-429");
        let bare = client(ctx, key)?.with_retry(RetryPolicy::none());
        let mut refused = None;
        for _ in 0..6 {
            if let Err(e) = bare.enqueue(&spec("noop", json!({}), &tag)).await {
                refused = Some(e);
                break;
            }
        }
        let e = refused.context("six enqueues in a row were all accepted")?;
        ensure(e.code() == Some(ErrorCode::RateLimited) && e.status() == Some(429) && e.is_retryable(), || {
            format!("{e:?}")
        })?;
        let patient = client(ctx, key)?;
        let started = Instant::now();
        for _ in 0..4 {
            patient.enqueue(&spec("noop", json!({}), &tag)).await?;
        }
        ensure(started.elapsed() >= Duration::from_secs(1), || format!("no wait: {:?}", started.elapsed()))
    })
}

/// Each error code a client can provoke, read as its typed error.
fn typed_errors(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let check = |what: &str, r: Result<(), Error>, status: u16, code: ErrorCode| -> anyhow::Result<()> {
            match r {
                Err(Error::Api { status: s, code: got, .. })
                    if s == status && got == edgejobs_client::Code::Known(code) =>
                {
                    Ok(())
                }
                other => anyhow::bail!("{what}: expected {status} {}, got {other:?}", code.as_str()),
            }
        };
        check("unknown job", c.job("j0nosuchjob").await.map(drop), 404, ErrorCode::JobNotFound)?;
        check(
            "unknown type",
            c.enqueue(&spec("no-such-type", json!({}), "x")).await.map(drop),
            400,
            ErrorCode::UnknownType,
        )?;
        let bad = JobSpec { max_attempts: Some(0), ..spec("noop", json!({}), "x") };
        match c.enqueue(&bad).await {
            Err(Error::Api { status: 400, code, field, .. }) if code.as_str() == "invalid_field" => {
                ensure(field.is_some(), || "invalid_field names its field".into())?
            }
            other => anyhow::bail!("max_attempts 0: {other:?}"),
        }
        let big = spec("noop", json!({ "blob": "x".repeat(2 << 20) }), "x");
        check("too large", c.enqueue(&big).await.map(drop), 413, ErrorCode::PayloadTooLarge)?;
        let nobody = client(ctx, "ej_not_a_key")?;
        check("unknown key", nobody.whoami().await.map(drop), 401, ErrorCode::Unauthorized)?;
        check("jobs key on admin", c.backups().await.map(drop), 403, ErrorCode::Forbidden)?;
        check("no schedule", c.schedule(&unique("none")).await.map(drop), 404, ErrorCode::ScheduleNotFound)?;
        let later = JobSpec {
            delay: Some(edgejobs_client::api::DurationInput::Text("1h".into())),
            ..spec("noop", json!({}), "x")
        };
        let j = c.enqueue(&later).await?;
        c.cancel(&j.id).await?;
        check("cancel twice", c.cancel(&j.id).await.map(drop), 409, ErrorCode::InvalidTransition)?;
        // A refused stream is the same typed error.
        check("stream of no job", c.job_events("j0nosuchjob").next().await.map(drop), 404, ErrorCode::JobNotFound)
    })
}

/// The README's fifth step against the stack: a real edge delivery, captured by the webhook
/// target, verifies with the receiver's secret (read with the admin key); the same bytes
/// with another body, or under another receiver's secret, do not.
fn verifies_a_delivery(ctx: &Ctx) -> anyhow::Result<()> {
    run(async {
        let c = client(ctx, &ctx.api_key)?;
        let path = format!("/{}", unique("rs-verify"));
        let url = ctx.hooks.script(&path, vec![edgejobs_tests::hooks::Reply::status(200)]);
        let job = c.enqueue(&spec("webhook", json!({ "url": url, "body": { "order": 7 } }), "rs-verify")).await?;
        let done = c.wait_for(&job.id, Duration::from_secs(30)).await?;
        ensure(done.state == JobState::Completed, || format!("the delivery: {done:?}"))?;
        let got = ctx.hooks.received(&path).into_iter().next().context("no delivery captured")?;
        let headers: Vec<(String, String)> = got.headers.into_iter().collect();
        let admin = client(ctx, &ctx.admin_key)?;
        let secret = admin.webhook_secret(&url, None).await?.secret;
        edgejobs_client::verify_webhook(&secret, &headers, got.body.as_bytes())?;
        let forged = edgejobs_client::verify_webhook(&secret, &headers, br#"{"order":8}"#);
        ensure(forged.is_err(), || "a changed body verifies".into())?;
        // Each receiver origin has its own secret: another allowed port is another receiver.
        let elsewhere_url = format!("http://127.0.0.1:{}/hooks", ctx.receiver_port);
        let other = admin.webhook_secret(&elsewhere_url, None).await?.secret;
        let elsewhere = edgejobs_client::verify_webhook(&other, &headers, got.body.as_bytes());
        ensure(other != secret && elsewhere.is_err(), || "another receiver's secret verifies".into())
    })
}
