//! What bounds memory and cost: answers read only up to their cap, and requests without a
//! key that cost no Durable Object write and at most one round of health checks per 5 s.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use edgejobs_core::time::parse_rfc3339;
use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use serde_json::json;

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("answers_are_read_only_up_to_the_cap", answers_are_read_only_up_to_the_cap),
    ("requests_without_a_key_write_nothing", requests_without_a_key_write_nothing),
];

/// A target that sends 3 MiB at once and then stalls for 30 s before it ends: an attempt
/// that reads the answer whole cannot finish within its 10 s timeout; one that stops at
/// the 1 MiB cap completes at once. Both lanes.
fn answers_are_read_only_up_to_the_cap(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("huge"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200).stream(3 << 20, Duration::from_secs(30))]);
    let started = Instant::now();
    let edge =
        ctx.enqueue(&json!({ "type": "webhook", "payload": { "url": url }, "timeout": "10s", "max_attempts": 1 }))?;
    let native = ctx
        .enqueue(&json!({ "type": "http.request", "payload": { "url": url }, "timeout": "10s", "max_attempts": 1 }))?;
    for id in [&edge, &native] {
        let job = ctx.wait_job(id, Duration::from_secs(40), |j| j["state"] == "completed" || j["state"] == "dead")?;
        ensure(job["state"] == "completed" && job["result"]["status"] == 200, || {
            format!("the answer was cut at the cap instead of read whole: {job}")
        })?;
        let kept = job["result"]["body"].as_str().map_or(0, str::len);
        ensure(kept <= 4096, || format!("the result keeps at most 4 KiB of the answer, not {kept} bytes"))?;
    }
    ensure(ctx.hooks.received(&path).len() == 2, || "the target was called once per lane".into())?;
    ensure(started.elapsed() < Duration::from_secs(30), || "the jobs ended before the target's stall did".into())
}

/// Size and modification time of every Durable Object database file (not the `-shm`
/// index, which readers touch): any write changes one of them.
fn do_files(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let Ok(classes) = std::fs::read_dir(dir) else { return out };
    for class in classes.flatten() {
        for f in std::fs::read_dir(class.path()).into_iter().flatten().flatten() {
            let name = f.path().display().to_string();
            if name.ends_with("-shm") {
                continue;
            }
            if let Ok(m) = f.metadata() {
                out.insert(name, (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
    }
    out
}

/// On the fault stack (nothing else runs there): once the Durable Objects' files stop
/// changing, 160 requests without a valid key change none of them; the health checks they
/// get are at most 5 s old and shared; then a request with a key does cause a write (so the
/// probe can see one) and gets fresh checks.
fn requests_without_a_key_write_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let dir = stack.opts.state_dir.join("wrangler/v3/do");
        let edge = stack.edge_url.clone();
        // Touch every shard once so they all exist, then wait until nothing writes (alarms
        // and counter flushes of earlier tests end).
        let r = ctx.send(ctx.http.get(format!("{edge}/metrics")))?;
        ensure(r.status == 200, || format!("metrics: {}", r.status))?;
        let mut before = do_files(&dir);
        let quiet = wait_until(Duration::from_secs(30), || {
            std::thread::sleep(Duration::from_millis(1500));
            let now = do_files(&dir);
            let same = now == before;
            before = now;
            same
        });
        ensure(quiet && !before.is_empty(), || {
            format!("the Durable Objects never went quiet ({} files)", before.len())
        })?;
        let bad = "not-a-key-not-a-key";
        let mut checked_at = Vec::new();
        let started = Instant::now();
        for i in 0..40 {
            let h = ctx.send(ctx.http.get(format!("{edge}/health")))?;
            ensure(h.status == 200 || h.status == 503, || format!("health: {} {}", h.status, h.body))?;
            checked_at.push(h.body["checked_at"].as_str().and_then(parse_rfc3339).unwrap_or(0));
            let answers = [
                ctx.send_unchecked(ctx.http.get(format!("{edge}/health/live")))?.status,
                ctx.send_unchecked(ctx.http.get(format!("{edge}/metrics")))?.status,
                ctx.send_unchecked(ctx.http.get(format!("{edge}/v1/jobs")).bearer_auth(bad))?.status,
                ctx.send_unchecked(ctx.http.post(format!("{edge}/v1/jobs")).json(&json!({ "type": "noop" })))?.status,
            ];
            ensure(answers == [200, 200, 401, 401], || format!("round {i}: {answers:?}"))?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = started.elapsed();
        // Any flush an anonymous request scheduled would run about a second later.
        std::thread::sleep(Duration::from_millis(2500));
        let after = do_files(&dir);
        let changed: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
        ensure(changed.is_empty(), || {
            format!("requests without a key wrote {} Durable Object files: {changed:?}", changed.len())
        })?;
        // One round of checks per 5 s at most (an isolate keeps its last result).
        let mut rounds = checked_at.clone();
        rounds.dedup();
        let most = took.as_millis() as usize / 5000 + 2;
        ensure(checked_at.iter().all(|t| *t > 0) && rounds.len() <= most, || {
            format!(
                "{} rounds of health checks for 40 requests in {took:?} (at most {most}): {checked_at:?}",
                rounds.len()
            )
        })?;
        let newest = checked_at.iter().copied().max().unwrap_or(0);
        let age_ok =
            checked_at.first().is_some_and(|first| newest.saturating_sub(*first) <= took.as_millis() as u64 + 5000);
        ensure(age_ok, || format!("results older than 5 s: {checked_at:?}"))?;
        // With an admin key: fresh checks, and its counts are written (the probe sees writes).
        std::thread::sleep(Duration::from_millis(20));
        let fresh = ctx.send(ctx.http.get(format!("{edge}/health")).bearer_auth(&stack.secrets.admin_key))?;
        let at = fresh.body["checked_at"].as_str().and_then(parse_rfc3339).unwrap_or(0);
        ensure(at > newest, || format!("a request with a key gets fresh checks: {} after {newest}", fresh.body))?;
        let wrote = wait_until(Duration::from_secs(10), || do_files(&dir) != after);
        ensure(wrote, || "a request with a key had its counts written (else this test could not see a write)".into())?;
        Ok(())
    })
}
