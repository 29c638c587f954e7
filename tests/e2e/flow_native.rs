//! Flow control on the native lane (#28), end to end: `sleep` jobs through the Upstash
//! stream and the consumer. Concurrency is measured from the jobs' own times (`started_at`,
//! `finished_at`, recorded by the shard): a key never runs more than its limit and reaches
//! it; a flood of one user cannot delay another's few jobs (round-robin through a second,
//! per-user key); a cancel, a lease loss and a dead job each let the next job start; jobs
//! waiting survive a restart of workerd and then run once each, in order.

use std::time::Duration;

use edgejobs_tests::proc::wait_until;
use serde_json::{Value, json};

use crate::flow_edge::{Api, max_overlap, span};
use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("flow_native_limit_is_reached_never_exceeded_across_five_keys", limit_is_reached_never_exceeded),
    ("flow_native_round_robin_a_flood_cannot_delay_a_small_user", round_robin),
    ("flow_native_priority_starts_nine_nine_five_one", priority_order),
    ("flow_native_cancel_lease_loss_and_dead_each_free_the_slot", slot_is_freed),
    ("flow_native_jobs_waiting_survive_a_workerd_restart", restart_with_jobs_waiting),
];

fn sleep(ms: u64, key: &str, limit: u32, tag: &str) -> Value {
    json!({ "type": "sleep", "tags": [tag], "max_attempts": 1, "payload": { "ms": ms },
        "concurrency": { "key": key, "limit": limit } })
}

/// Five keys with limits 1 to 5, 40 sleeps of 250 ms each, enqueued by 20 threads at once,
/// run by one consumer with 40 slots (more than the limits' sum). From the jobs' run times:
/// each key's most runs at once equals its limit, every job ran once.
fn limit_is_reached_never_exceeded(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", "40")])?;
        let api = Api::on(ctx, stack);
        let tag = unique("flow-native-limit");
        let keys: Vec<(String, u32)> = (1..=5).map(|l| (format!("{tag}-k{l}"), l)).collect();
        let per_key = 40usize;
        let bodies: Vec<(usize, Value)> = (0..per_key * keys.len())
            .map(|i| {
                let k = i % keys.len();
                (k, sleep(250, &keys[k].0, keys[k].1, &tag))
            })
            .collect();
        let ids: Vec<(usize, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = bodies
                .chunks(10)
                .map(|chunk| {
                    let api = &api;
                    s.spawn(move || {
                        chunk.iter().map(|(k, b)| Ok((*k, api.enqueue(b)?))).collect::<anyhow::Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| anyhow::anyhow!("an enqueuer panicked"))?)
                .collect::<anyhow::Result<Vec<Vec<_>>>>()
        })?
        .concat();
        ensure(ids.len() == 200, || format!("200 enqueued: {}", ids.len()))?;
        let k1 = &keys[0].0;
        let seen = ids
            .iter()
            .filter(|(k, _)| *k == 0)
            .take(10)
            .any(|(_, id)| api.job(id).is_ok_and(|j| j["waiting_for"] == format!("concurrency:{k1}")));
        ensure(seen, || format!("a job of {k1} was seen waiting"))?;
        let mut jobs = Vec::new();
        let done = wait_until(Duration::from_secs(300), || {
            jobs = api.tagged(&tag).unwrap_or_default();
            jobs.len() == 200 && jobs.iter().all(|j| j["state"] == "completed" || j["state"] == "dead")
        });
        ensure(done, || {
            format!("all 200 ended: {} of {}", jobs.iter().filter(|j| j["state"] == "completed").count(), jobs.len())
        })?;
        ensure(jobs.iter().all(|j| j["state"] == "completed" && j["attempt"] == 1), || "each completed once".into())?;
        let by_id: std::collections::HashMap<String, &Value> =
            jobs.iter().map(|j| (j["id"].as_str().unwrap_or_default().to_owned(), j)).collect();
        let mut maxes = Vec::new();
        for (k, (key, limit)) in keys.iter().enumerate() {
            let spans: Vec<(u64, u64)> = ids
                .iter()
                .filter(|(kk, _)| *kk == k)
                .map(|(_, id)| {
                    by_id.get(id).map(|j| span(j)).unwrap_or_else(|| Err(anyhow::anyhow!("{id} not listed")))
                })
                .collect::<anyhow::Result<_>>()?;
            let max = max_overlap(&spans);
            maxes.push(max);
            ensure(max == *limit as usize, || format!("{key}: {max} at once at most, limit {limit}"))?;
        }
        println!("flow_native limits 1..5: most runs at once per key {maxes:?} (from started_at/finished_at)");
        Ok(())
    })
}

/// Jobs name two keys, the user's (limit 1) and the tenant's (limit 2): user A floods 30
/// sleeps, then user B enqueues 3. B's jobs take the tenant's second slot, so all three end
/// before A's 10th starts (an order of the jobs' own times, no duration asserted).
fn round_robin(ctx: &Ctx) -> anyhow::Result<()> {
    let api = Api::main(ctx);
    let tag = unique("flow-rr");
    let tenant = format!("{tag}-tenant");
    let job = |user: &str| {
        json!({ "type": "sleep", "tags": [tag], "payload": { "ms": 300 },
            "concurrency": [{ "key": format!("{tag}-{user}"), "limit": 1 }, { "key": tenant, "limit": 2 }] })
    };
    let a = api.enqueue_batch((0..30).map(|_| job("A")).collect())?;
    let b = api.enqueue_batch((0..3).map(|_| job("B")).collect())?;
    let waiting = api.job(&a[1])?;
    ensure(waiting["waiting_for"] == format!("concurrency:{tag}-A"), || format!("A's flood waits: {waiting}"))?;
    let mut b_end = 0;
    for id in &b {
        b_end = b_end.max(span(&api.wait_state(id, "completed")?)?.1);
    }
    let tenth = api.wait(&a[9], Duration::from_secs(120), |j| j["started_at"].is_string())?;
    let tenth_start = span(&api.wait_state(&a[9], "completed")?)?.0;
    println!("flow_native round robin: B's last ended at {b_end}, A's 10th started at {tenth_start} ({tenth})");
    ensure(b_end <= tenth_start, || format!("B's 3 ended ({b_end}) before A's 10th started ({tenth_start})"))?;
    // A's own jobs ran one at a time, in order.
    let mut spans = Vec::new();
    for id in &a {
        spans.push(span(&api.wait_state(id, "completed")?)?);
    }
    ensure(max_overlap(&spans) == 1, || format!("A one at a time: {spans:?}"))?;
    ensure(spans.windows(2).all(|w| w[0].0 <= w[1].0), || format!("A in its order: {spans:?}"))
}

/// The edge lane's priority test with `sleep` jobs: a paused limit-1 key, priorities
/// 1, 9, 5, 9 parked; on resume they start 9, 9, 5, 1.
fn priority_order(ctx: &Ctx) -> anyhow::Result<()> {
    crate::flow_edge::priority_order_of(ctx, |p| json!({ "type": "sleep", "priority": p, "payload": { "ms": 200 } }))
}

/// On the fault stack with one consumer, a key with a limit of 1, each time a running job
/// and one waiting behind it (seen `waiting_for`): cancelling the running one, a job dying
/// on its only attempt, and a consumer killed mid-job (another takes the attempt over after
/// the 3 s lease, the job completes as attempt 2): each time the next job starts only after
/// the first ended, and does start.
fn slot_is_freed(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let first = stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", "4")])?;
        let api = Api::on(ctx, stack);
        let tag = unique("flow-free");
        let key = format!("{tag}-k");
        let waits = |id: &str| -> anyhow::Result<()> {
            let j = api.job(id)?;
            ensure(j["state"] == "queued" && j["waiting_for"] == format!("concurrency:{key}"), || {
                format!("the next job waits: {j}")
            })
        };
        let after = |before: &Value, next: &Value| -> anyhow::Result<()> {
            let (end, start) = (span(before)?.1, span(next)?.0);
            ensure(start >= end, || format!("the next started ({start}) after the first ended ({end})"))
        };
        // A cancel.
        let long = api.enqueue(&sleep(30_000, &key, 1, &tag))?;
        let next = api.enqueue(&sleep(100, &key, 1, &tag))?;
        api.wait_state(&long, "active")?;
        waits(&next)?;
        let r = api.post(&format!("/v1/jobs/{long}/cancel"), &json!({}))?;
        ensure(r.status == 200, || format!("cancel: {} {}", r.status, r.body))?;
        let cancelled = api.wait_state(&long, "cancelled")?;
        let ran = api.wait_state(&next, "completed")?;
        after(&cancelled, &ran)?;
        // A dead job (its only attempt fails for good).
        let doomed = api.enqueue(&json!({ "type": "sleep", "tags": [tag], "max_attempts": 1,
            "payload": { "ms": 1500, "fail": "permanent" }, "concurrency": { "key": key, "limit": 1 } }))?;
        let next = api.enqueue(&sleep(100, &key, 1, &tag))?;
        api.wait_state(&doomed, "active")?;
        waits(&next)?;
        let dead = api.wait_state(&doomed, "dead")?;
        let ran = api.wait_state(&next, "completed")?;
        after(&dead, &ran)?;
        // A lease lost: the consumer dies mid-job; another takes the attempt over.
        let lost = api.enqueue(&json!({ "type": "sleep", "tags": [tag], "max_attempts": 3,
            "payload": { "ms": 5000 }, "concurrency": { "key": key, "limit": 1 } }))?;
        let next = api.enqueue(&sleep(100, &key, 1, &tag))?;
        api.wait_state(&lost, "active")?;
        waits(&next)?;
        stack.kill_consumer(first);
        stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", "4")])?;
        let taken = api.wait_state(&lost, "completed")?;
        let outcomes: Vec<Value> =
            taken["attempts"].as_array().into_iter().flatten().map(|a| a["outcome"].clone()).collect();
        ensure(taken["attempt"] == 2 && outcomes.first() == Some(&json!("lease_lost")), || {
            format!("taken over as attempt 2 after attempt 1 lost its lease: {taken}")
        })?;
        let ran = api.wait_state(&next, "completed")?;
        after(&taken, &ran)?;
        ensure(ran["attempt"] == 1, || format!("the next ran once: {ran}"))
    })
}

/// A key with a limit of 1: a long sleep running and two jobs waiting behind it when
/// workerd restarts (Durable Object state kept); afterwards the three complete, once each
/// (attempt 1), one at a time, in the order they were enqueued.
fn restart_with_jobs_waiting(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        stack.start_consumer(&[])?;
        let api = Api::on(ctx, stack);
        let tag = unique("flow-restart");
        let key = format!("{tag}-k");
        let ids = vec![
            api.enqueue(&sleep(6000, &key, 1, &tag))?,
            api.enqueue(&sleep(200, &key, 1, &tag))?,
            api.enqueue(&sleep(200, &key, 1, &tag))?,
        ];
        api.wait_state(&ids[0], "active")?;
        for id in &ids[1..] {
            let j = api.job(id)?;
            ensure(j["waiting_for"] == format!("concurrency:{key}"), || format!("waiting before the restart: {j}"))?;
        }
        stack.restart_wrangler(Vec::new())?;
        let api = Api::on(ctx, stack);
        let mut spans = Vec::new();
        for id in &ids {
            let j = api.wait_state(id, "completed")?;
            ensure(j["attempt"] == 1 && j["attempts"].as_array().is_none_or(|a| a.len() <= 1), || {
                format!("ran once: {j}")
            })?;
            spans.push(span(&j)?);
        }
        println!("flow_native restart: runs {spans:?}");
        ensure(max_overlap(&spans) == 1, || format!("one at a time: {spans:?}"))?;
        ensure(spans.windows(2).all(|w| w[0].1 <= w[1].0), || format!("in order: {spans:?}"))
    })
}
