//! Tests of the native consumer: long jobs run through the Upstash stream, leases and
//! takeovers, draining on SIGTERM, upstream 429 storms, and several consumers on one stream.

use std::time::Duration;

use edgejobs_tests::hooks::{Hooks, Reply};
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, enqueue_on, ensure, job_on, metric, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("long_job_completes_in_the_consumer", long_job_completes_in_the_consumer),
    ("llm_chat_records_tokens_used", llm_chat_records_tokens_used),
    ("llm_429_storm_slows_down_without_losing_jobs", llm_429_storm_slows_down_without_losing_jobs),
    (
        "native_reports_are_fenced_and_cancel_reaches_the_handler",
        native_reports_are_fenced_and_cancel_reaches_the_handler,
    ),
    ("consumer_health_and_metrics", consumer_health_and_metrics),
    ("kill_9_mid_job_is_taken_over_after_the_lease", kill_9_mid_job_is_taken_over_after_the_lease),
    ("sigterm_drains_in_flight_jobs", sigterm_drains_in_flight_jobs),
    ("a_prefetched_job_waits_for_a_slot_and_can_be_cancelled", a_prefetched_job_waits_for_a_slot_and_can_be_cancelled),
    ("a_paused_consumer_loses_its_lease_and_leaves_the_entry", a_paused_consumer_loses_its_lease_and_leaves_the_entry),
    ("two_consumers_share_the_stream_without_double_runs", two_consumers_share_the_stream_without_double_runs),
    ("permanent_failures_reach_sentry", permanent_failures_reach_sentry),
    ("a_job_whose_consumers_all_died_is_retried_by_the_sweep", a_job_whose_consumers_all_died_is_retried_by_the_sweep),
];

const WAIT: Duration = Duration::from_secs(60);

fn long_job_completes_in_the_consumer(ctx: &Ctx) -> anyhow::Result<()> {
    let id = ctx.enqueue(&json!({ "type": "sleep", "payload": { "ms": 300 } }))?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(job["lane"] == "native" && job["result"]["slept_ms"] == 300 && job["attempt"] == 1, || format!("{job}"))?;
    ensure(job["stream_entry"]["attempt"] == 1, || format!("the shard knows the stream entry: {job}"))
}

fn llm_chat_records_tokens_used(ctx: &Ctx) -> anyhow::Result<()> {
    let id = ctx.enqueue(
        &json!({ "type": "llm.chat", "payload": { "messages": [{ "role": "user", "content": "hello there" }] } }),
    )?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    let r = &job["result"];
    ensure(r["content"] == "echo: hello there" && r["model"] == "fake-model", || format!("{job}"))?;
    ensure(r["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0), || format!("tokens recorded: {job}"))?;
    // Two 500s are retried within the attempt; the job still completes on its first attempt.
    ctx.llm.fail_next(2);
    let id = ctx.enqueue(
        &json!({ "type": "llm.chat", "payload": { "messages": [{ "role": "user", "content": "after errors" }] } }),
    )?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(job["attempt"] == 1 && job["result"]["content"] == "echo: after errors", || format!("{job}"))?;
    // A request the LLM's API refuses (a model it does not have) is permanent: dead after one
    // attempt.
    let id = ctx.enqueue(&json!({ "type": "llm.chat",
        "payload": { "model": "no-such-model", "messages": [{ "role": "user", "content": "hi" }] } }))?;
    let job = ctx.wait_state(&id, "dead", WAIT)?;
    ensure(job["attempt"] == 1, || format!("{job}"))?;
    // One that can never run (no messages) is refused at enqueue, as the OpenAPI description's
    // shape of an llm.chat payload says, instead of dying later.
    let r = ctx.post("/v1/jobs", &json!({ "type": "llm.chat", "payload": { "messages": [] } }))?;
    ensure(r.status == 400 && r.body["error"]["field"] == "payload.messages", || format!("{} {}", r.status, r.body))
}

fn llm_429_storm_slows_down_without_losing_jobs(ctx: &Ctx) -> anyhow::Result<()> {
    let before_429 = ctx.llm.answered_429();
    ctx.llm.rate_limit_next(10, 1);
    let ids: Vec<String> = (0..4)
        .map(|i| ctx.enqueue(&json!({ "type": "llm.chat", "payload": { "messages": [{ "role": "user", "content": format!("storm {i}") }] } })))
        .collect::<anyhow::Result<_>>()?;
    for (i, id) in ids.iter().enumerate() {
        let job = ctx.wait_state(id, "completed", WAIT)?;
        ensure(job["result"]["content"] == format!("echo: storm {i}"), || format!("{job}"))?;
    }
    ensure(ctx.llm.answered_429() >= before_429 + 10, || {
        format!("the storm happened: {} 429s", ctx.llm.answered_429())
    })?;
    let page = ctx.http.get(format!("{}/metrics", ctx.consumer_url)).send()?.text()?;
    let waited = metric(&page, "edgejobs_consumer_upstream_wait_seconds_total{upstream=\"llm\"}").unwrap_or(0.0);
    ensure(waited >= 1.0, || format!("the consumer waited for the upstream: {waited} s"))
}

fn native_reports_are_fenced_and_cancel_reaches_the_handler(ctx: &Ctx) -> anyhow::Result<()> {
    let id = ctx.enqueue(&json!({ "type": "sleep", "payload": { "ms": 2500 } }))?;
    ctx.wait_state(&id, "active", WAIT)?;
    let expect = |r: Resp, code: &str| {
        ensure(r.status == 409 && r.code() == code, || format!("want {code}: {} {}", r.status, r.body))
    };
    expect(ctx.report(&id, &json!({ "event": "complete", "attempt": 2 }))?, "stale_attempt")?;
    expect(ctx.report(&id, &json!({ "event": "heartbeat", "attempt": 0 }))?, "stale_attempt")?;
    expect(ctx.report(&id, &json!({ "event": "start", "attempt": 1 }))?, "invalid_transition")?;
    // The edge's lease decides a takeover: a consumer asking with a 1 ms lease is refused.
    expect(ctx.report(&id, &json!({ "event": "reclaim", "attempt": 1, "lease_ms": 1 }))?, "lease_held")?;
    // The same reports in one batch: each answered on its own, in order; an id naming a
    // shard the deployment does not have is refused without failing the others, and a
    // heartbeat without the attempt's lease token (this test does not hold it) is refused.
    let far = "jff000000000000000000000000000";
    let events = json!({ "events": [
        { "id": id, "event": { "event": "heartbeat", "attempt": 1 } },
        { "id": id, "event": { "event": "complete", "attempt": 2 } },
        { "id": far, "event": { "event": "heartbeat", "attempt": 1 } },
        { "id": id, "event": { "event": "reclaim", "attempt": 1 } },
        { "id": id, "event": { "event": "cancel" } },
    ] });
    let r = ctx.send(ctx.http.post(ctx.url("/v1/internal/events")).bearer_auth(&ctx.consumer_token).json(&events))?;
    let answers = r.body["answers"].as_array().cloned().unwrap_or_default();
    let codes: Vec<&str> = answers
        .iter()
        .map(|a| if a.get("ok").is_some() { "ok" } else { a["error"]["code"].as_str().unwrap_or("?") })
        .collect();
    ensure(
        r.status == 200 && codes == ["lease_mismatch", "stale_attempt", "job_not_found", "lease_held", "invalid_field"],
        || format!("batch answers: {} {}", r.status, r.body),
    )?;
    ensure(r.body["lease_ms"] == 3000, || format!("{}", r.body))?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    ensure(job["result"]["slept_ms"] == 2500 && job["attempt"] == 1, || {
        format!("the consumer's result stands: {job}")
    })?;
    // Late or malformed reports change nothing.
    expect(
        ctx.report(
            &id,
            &json!({ "event": "fail", "attempt": 1, "error": "late", "disposition": { "kind": "retryable" } }),
        )?,
        "not_leased",
    )?;
    for bad in [json!({ "event": "cancel" }), json!({ "event": "complete" }), json!({ "event": "wake" })] {
        let r = ctx.report(&id, &bad)?;
        ensure(r.status == 400 && r.code() == "invalid_field", || format!("{bad}: {} {}", r.status, r.body))?;
    }
    ensure(ctx.get(&format!("/v1/jobs/{id}"))?.body["result"]["slept_ms"] == 2500, || "unchanged".into())?;
    // Cancelling a running native job: its next heartbeat is refused and the handler stops.
    let id = ctx.enqueue(&json!({ "type": "sleep", "payload": { "ms": 30000 } }))?;
    ctx.wait_state(&id, "active", WAIT)?;
    let r = ctx.post(&format!("/v1/jobs/{id}/cancel"), &json!({}))?;
    ensure(r.body["cancel_requested"] == true, || format!("{}", r.body))?;
    let job = ctx.wait_state(&id, "cancelled", Duration::from_secs(10))?;
    ensure(job.get("result").is_none(), || format!("{job}"))
}

fn consumer_health_and_metrics(ctx: &Ctx) -> anyhow::Result<()> {
    let r = ctx.send_unchecked(ctx.http.get(format!("{}/health", ctx.consumer_url)))?;
    ensure(r.status == 200 && r.body["status"] == "healthy", || format!("{} {}", r.status, r.body))?;
    ensure(r.body["checks"]["upstash"]["ok"] == true && r.body["checks"]["edge"]["ok"] == true, || {
        format!("{}", r.body)
    })?;
    ensure(r.body["in_flight"].is_number(), || format!("{}", r.body))?;
    let id = ctx.enqueue(&json!({ "type": "sleep", "payload": { "ms": 10 } }))?;
    ctx.wait_state(&id, "completed", WAIT)?;
    let page = ctx.http.get(format!("{}/metrics", ctx.consumer_url)).send()?.text()?;
    for family in [
        "edgejobs_consumer_jobs_total",
        "edgejobs_consumer_job_duration_seconds",
        "edgejobs_consumer_in_flight",
        "edgejobs_consumer_lease_renewals_total",
        "edgejobs_consumer_reclaims_total",
        "edgejobs_consumer_upstream_wait_seconds_total",
        "edgejobs_consumer_healthy",
        "edgejobs_consumer_last_poll_age_seconds",
        "edgejobs_consumer_lease_renewals_lost_total",
        "edgejobs_consumer_acks_skipped_total",
        "edgejobs_consumer_stream_length",
        "edgejobs_consumer_stream_pending",
    ] {
        ensure(page.contains(&format!("# TYPE {family} ")), || format!("{family} missing from /metrics"))?;
    }
    let done = metric(&page, "edgejobs_consumer_jobs_total{type=\"sleep\",outcome=\"completed\"}").unwrap_or(0.0);
    ensure(done >= 1.0, || format!("completed sleep jobs counted: {done}"))?;
    // promtool, the real Prometheus tool, accepts the exposition.
    crate::util::promtool_check_metrics(&page)
}

/// Starts a consumer on the fault stack with `env` and returns its index.
fn consumer(stack: &mut Stack, env: &[(&str, &str)]) -> anyhow::Result<usize> {
    stack.start_consumer(env)
}

fn kill_9_mid_job_is_taken_over_after_the_lease(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let hooks = &ctx.hooks;
        let slow = format!("/{}", crate::util::unique("slow"));
        let url = hooks.script(&slow, vec![Reply::status(200).delay(Duration::from_secs(6)), Reply::status(200)]);
        let a = consumer(stack, &[])?;
        let id =
            enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": url, "body": { "n": 1 } } }))?;
        ensure(wait_until(WAIT, || hooks.received(&slow).len() == 1), || "consumer A called the upstream".into())?;
        stack.kill_consumer(a);
        let b = consumer(stack, &[])?;
        let job = wait_on(ctx, stack, &id, "completed")?;
        ensure(job["attempt"] == 2, || format!("taken over as attempt 2: {job}"))?;
        std::thread::sleep(Duration::from_secs(2));
        ensure(hooks.received(&slow).len() == 2, || {
            format!("two executions, no more: {}", hooks.received(&slow).len())
        })?;
        let page = ctx.http.get(format!("{}/metrics", stack.consumer_url(b))).send()?.text()?;
        ensure(metric(&page, "edgejobs_consumer_reclaims_total").unwrap_or(0.0) >= 1.0, || {
            "B counted its takeover".into()
        })?;
        let job = job_on(ctx, stack, &id)?;
        ensure(job["state"] == "completed" && job["attempt"] == 2, || format!("completed once: {job}"))?;
        stack.terminate_consumer(b, Duration::from_secs(10));
        Ok(())
    })
}

/// One Redis command through the stack's gateway.
fn redis(ctx: &Ctx, stack: &Stack, command: &[&str]) -> anyhow::Result<Value> {
    let r = ctx.http.post(&stack.upstash_url).bearer_auth(&stack.secrets.upstash_token).json(command).send()?;
    Ok(r.json::<Value>()?["result"].clone())
}

/// Consumer A runs a job and is paused (SIGSTOP) past the edge's lease; B takes the entry
/// over and runs the job again; A resumes (SIGCONT) while B still runs, and its late report
/// is refused with `lease_lost`: A leaves the entry alone (it stays pending, owned by B),
/// the job completes once (B's attempt), and the stream is empty at the end.
fn a_paused_consumer_loses_its_lease_and_leaves_the_entry(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let hooks = &ctx.hooks;
        let slow = format!("/{}", crate::util::unique("paused"));
        let url = hooks.script(
            &slow,
            vec![Reply::status(200).delay(Duration::from_secs(3)), Reply::status(200).delay(Duration::from_secs(6))],
        );
        let a = consumer(stack, &[])?;
        let id = enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": url } }))?;
        ensure(wait_until(WAIT, || hooks.received(&slow).len() == 1), || "A called the upstream".into())?;
        let pid = stack.consumer_pid(a).ok_or_else(|| anyhow::anyhow!("consumer A has no pid"))?;
        let signal = |sig: &str| std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
        ensure(signal("-STOP")?.success(), || "SIGSTOP A".into())?;
        let result = (|| -> anyhow::Result<()> {
            let b = consumer(stack, &[])?;
            // B takes over after the lease (3 s, plus a renewal's slack) and calls again.
            ensure(wait_until(WAIT, || hooks.received(&slow).len() == 2), || "B took the job over".into())?;
            let job = job_on(ctx, stack, &id)?;
            ensure(job["state"] == "active" && job["attempt"] == 2 && job["lease_lost_attempt"] == 1, || {
                format!("attempt 2 runs, attempt 1 lost its lease: {job}")
            })?;
            let entry = job["stream_entry"]["entry"].as_str().unwrap_or_default().to_owned();
            // A resumes while B still runs: its answer arrived long ago, so it reports at once.
            ensure(signal("-CONT")?.success(), || "SIGCONT A".into())?;
            let page_a = format!("{}/metrics", stack.consumer_url(a));
            let refused = || -> f64 {
                let page = ctx.http.get(&page_a).send().and_then(|r| r.text()).unwrap_or_default();
                metric(&page, "edgejobs_consumer_jobs_total{type=\"http.request\",outcome=\"refused\"}").unwrap_or(0.0)
            };
            ensure(wait_until(Duration::from_secs(10), || refused() >= 1.0), || {
                format!("A's late report was refused: {}", stack.tail(&format!("consumer-{a}")))
            })?;
            let log = stack.tail(&format!("consumer-{a}"));
            ensure(log.contains("lease_lost"), || format!("refused as lease_lost: {log}"))?;
            // The window: B still runs (its upstream answers after 6 s), and the entry is
            // still pending, owned by B. A did not acknowledge it.
            let pending = redis(ctx, stack, &["XPENDING", "edgejobs:jobs", "edgejobs", "-", "+", "10"])?;
            let owners: Vec<(String, String)> = pending
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| (p[0].as_str().unwrap_or("").to_owned(), p[1].as_str().unwrap_or("").to_owned()))
                .collect();
            ensure(job_on(ctx, stack, &id)?["state"] == "active", || "B was still running".into())?;
            ensure(owners.contains(&(entry.clone(), format!("consumer-{b}"))), || {
                format!("entry {entry} stays pending with B: {pending}")
            })?;
            let job = wait_on(ctx, stack, &id, "completed")?;
            ensure(job["attempt"] == 2, || format!("completed by B's attempt: {job}"))?;
            std::thread::sleep(Duration::from_millis(500));
            ensure(hooks.received(&slow).len() == 2, || "two executions, no third".into())?;
            ensure(job_on(ctx, stack, &id)? == job, || "completed once".into())?;
            let empty = wait_until(Duration::from_secs(10), || {
                redis(ctx, stack, &["XLEN", "edgejobs:jobs"]).is_ok_and(|n| n == 0)
                    && redis(ctx, stack, &["XPENDING", "edgejobs:jobs", "edgejobs"]).is_ok_and(|p| p[0] == 0)
            });
            ensure(empty, || "the stream is empty at the end".into())?;
            stack.terminate_consumer(b, Duration::from_secs(10));
            Ok(())
        })();
        let _ = signal("-CONT");
        stack.terminate_consumer(a, Duration::from_secs(10));
        result
    })
}

fn sigterm_drains_in_flight_jobs(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let c = consumer(stack, &[])?;
        let ids: Vec<String> = (0..3)
            .map(|_| enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 2500 } })))
            .collect::<anyhow::Result<_>>()?;
        for id in &ids {
            wait_on(ctx, stack, id, "active")?;
        }
        let code = stack.terminate_consumer(c, Duration::from_secs(20));
        ensure(code == Some(0), || format!("exit code after a clean drain: {code:?}"))?;
        for id in &ids {
            let job = job_on(ctx, stack, id)?;
            ensure(job["state"] == "completed" && job["attempt"] == 1, || format!("finished during the drain: {job}"))?;
        }
        Ok(())
    })
}

/// With one slot and a prefetch of one, a second job is started at the edge while the first
/// runs (so the slot never waits for the edge), yet only one handler runs; cancelling the
/// waiting job ends it without running it to completion, and the stream empties.
fn a_prefetched_job_waits_for_a_slot_and_can_be_cancelled(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let c = consumer(stack, &[("EDGEJOBS_CONCURRENCY", "1"), ("EDGEJOBS_PREFETCH", "1")])?;
        let sleep = |ms: u64| json!({ "type": "sleep", "payload": { "ms": ms } });
        let first = enqueue_on(ctx, stack, &sleep(4000))?;
        wait_on(ctx, stack, &first, "active")?;
        let waiting = enqueue_on(ctx, stack, &sleep(4000))?;
        let third = enqueue_on(ctx, stack, &sleep(10))?;
        wait_on(ctx, stack, &waiting, "active")?;
        // The precondition: the second is started while the first still runs, and one
        // handler runs (the gauge counts handlers, not started jobs).
        ensure(job_on(ctx, stack, &first)?["state"] == "active", || "the first job still runs".into())?;
        let page = ctx.http.get(format!("{}/metrics", stack.consumer_url(c))).send()?.text()?;
        let running = metric(&page, "edgejobs_consumer_in_flight").unwrap_or(-1.0);
        ensure(running == 1.0, || format!("one handler runs with one slot: {running}"))?;
        ensure(job_on(ctx, stack, &third)?["state"] == "queued", || "the prefetch is one job".into())?;
        let cancelled = crate::util::cancel_on(ctx, stack, &waiting)?;
        ensure(cancelled.status == 200, || format!("cancel answered {}: {}", cancelled.status, cancelled.body))?;
        let done = wait_on(ctx, stack, &first, "completed")?;
        ensure(done["attempt"] == 1, || format!("the first ran once: {done}"))?;
        wait_on(ctx, stack, &third, "completed")?;
        let job = job_on(ctx, stack, &waiting)?;
        ensure(job["state"] == "cancelled" && job["result"].is_null(), || {
            format!("the cancelled job never completed: {job}")
        })?;
        let empty =
            wait_until(Duration::from_secs(10), || redis(ctx, stack, &["XLEN", "edgejobs:jobs"]).is_ok_and(|n| n == 0));
        ensure(empty, || "the stream is empty at the end".into())?;
        stack.terminate_consumer(c, Duration::from_secs(10));
        Ok(())
    })
}

fn two_consumers_share_the_stream_without_double_runs(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let hooks = &ctx.hooks;
        let share = crate::util::unique("share");
        let a = consumer(stack, &[("EDGEJOBS_CONCURRENCY", "4")])?;
        let b = consumer(stack, &[("EDGEJOBS_CONCURRENCY", "4")])?;
        let mut jobs = Vec::new();
        for i in 0..16 {
            let path = format!("/{share}-{i}");
            let url = hooks.script(&path, vec![Reply::status(200).delay(Duration::from_millis(300))]);
            jobs.push((path, enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": url } }))?));
        }
        for (path, id) in &jobs {
            let job = wait_on(ctx, stack, id, "completed")?;
            ensure(job["attempt"] == 1, || format!("no takeover while both live: {job}"))?;
            ensure(hooks.received(path).len() == 1, || format!("{path} ran {} times", hooks.received(path).len()))?;
        }
        let ran = |i: usize| -> anyhow::Result<f64> {
            let page = ctx.http.get(format!("{}/metrics", stack.consumer_url(i))).send()?.text()?;
            Ok(metric(&page, "edgejobs_consumer_jobs_total{type=\"http.request\",outcome=\"completed\"}")
                .unwrap_or(0.0))
        };
        let (ra, rb) = (ran(a)?, ran(b)?);
        ensure(ra + rb == 16.0 && ra > 0.0 && rb > 0.0, || format!("both consumers worked: {ra} + {rb}"))?;
        stack.terminate_consumer(a, Duration::from_secs(10));
        stack.terminate_consumer(b, Duration::from_secs(10));
        Ok(())
    })
}

fn permanent_failures_reach_sentry(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        // A stand-in for Sentry's ingestion endpoint (outside this machine): it records envelopes.
        let sentry = Hooks::start()?;
        let port = sentry.base.rsplit(':').next().unwrap_or("0").to_owned();
        let dsn = format!("http://0123456789abcdef0123456789abcdef@127.0.0.1:{port}/42");
        let c = consumer(stack, &[("SENTRY_DSN", &dsn)])?;
        let marker = unique("boom");
        let id = enqueue_on(
            ctx,
            stack,
            &json!({ "type": "sleep", "payload": { "ms": 1, "fail": "permanent" }, "tags": [marker] }),
        )?;
        wait_on(ctx, stack, &id, "dead")?;
        let got = wait_until(Duration::from_secs(15), || {
            sentry
                .received("/api/42/envelope/")
                .iter()
                .any(|r| r.body.contains(&id) && r.body.contains("job failed for good"))
        });
        stack.terminate_consumer(c, Duration::from_secs(10));
        ensure(got, || format!("no Sentry envelope mentions {id}: {:?}", sentry.received("/api/42/envelope/").len()))
    })
}

fn a_job_whose_consumers_all_died_is_retried_by_the_sweep(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let vars = || vec![("SWEEP_NATIVE_LEASE".to_owned(), "2s".to_owned())];
        stack.restart_wrangler(vars())?;
        let result = (|| -> anyhow::Result<()> {
            let a = consumer(stack, &[])?;
            let id = enqueue_on(
                ctx,
                stack,
                &json!({ "type": "sleep", "payload": { "ms": 4000 }, "backoff": { "base": "100ms" } }),
            )?;
            wait_on(ctx, stack, &id, "active")?;
            stack.kill_consumer(a); // the only consumer: nobody takes the job over
            std::thread::sleep(Duration::from_secs(3));
            let r = ctx.http.get(format!("{}/__scheduled?cron=*/5+*+*+*+*", stack.edge_url)).send()?;
            ensure(r.status().is_success(), || "fired the sweep".into())?;
            let failed = wait_until(Duration::from_secs(20), || {
                job_on(ctx, stack, &id).is_ok_and(|j| {
                    j["state"] != "active" && j["last_error"].as_str().is_some_and(|e| e.contains("lost its consumer"))
                })
            });
            ensure(failed, || {
                format!("the sweep failed the orphaned attempt: {}", job_on(ctx, stack, &id).unwrap_or_default())
            })?;
            // A consumer that comes back runs the retry; the old entry is refused as stale.
            let b = consumer(stack, &[])?;
            let job = wait_on(ctx, stack, &id, "completed")?;
            ensure(job["attempt"] == 2, || format!("completed as attempt 2: {job}"))?;
            stack.terminate_consumer(b, Duration::from_secs(10));
            Ok(())
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}
