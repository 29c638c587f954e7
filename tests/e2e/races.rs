//! Races between a user's cancel and the shard's own work: the alarm waking scheduled jobs
//! and the sweep re-sending queued ones. Both used to load a list of jobs and await queue
//! sends between saves, so a cancel landing during an await was overwritten by the stale
//! copy and the cancelled job ran. Each test first proves the race window was hit (a
//! delivery refused because its job was cancelled after the wake or re-send was committed).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, job_on, metric_on, unique};

pub const TESTS: &[Test] =
    &[("cancels_never_lose_to_the_alarm_or_the_sweep", cancels_never_lose_to_the_alarm_or_the_sweep)];

const MAINTENANCE_CRON: &str = "*/5+*+*+*+*";

fn cancels_never_lose_to_the_alarm_or_the_sweep(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        // Rate limit off: the two races enqueue 600 jobs within a minute, the tenant's default
        // limit. The receiver's origin limit off: every woken job goes through the queue (a
        // key's next job is otherwise started by the previous one's report, with no window
        // between its wake and its start for a cancel to land in).
        let vars = vec![
            ("SWEEP_QUEUED_AFTER".into(), "1s".into()),
            ("RATE_LIMIT".into(), "off".into()),
            ("WEBHOOK_CONCURRENCY".into(), "off".into()),
        ];
        stack.restart_wrangler(vars)?;
        let result = alarm_race(ctx, stack).and_then(|()| sweep_race(ctx, stack));
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

/// Idempotency keys that all land in shard 0 (of 16): the jobs of a race share one shard,
/// so one alarm or one sweep page holds them all and the race window is as wide as it gets.
fn same_shard_keys(tag: &str, n: usize) -> Vec<String> {
    (0u64..).map(|i| format!("{tag}-{i}")).filter(|k| edgejobs_core::id::shard_for_key(k, 16) == 0).take(n).collect()
}

/// Enqueues `jobs` in one batch and returns their ids.
fn batch_on(ctx: &Ctx, stack: &Stack, jobs: Vec<Value>) -> anyhow::Result<Vec<String>> {
    let r = ctx.send(
        ctx.http
            .post(format!("{}/v1/jobs/batch", stack.edge_url))
            .bearer_auth(&stack.secrets.api_key)
            .json(&json!({ "jobs": jobs })),
    )?;
    ensure(r.status == 200, || format!("batch: {} {}", r.status, r.body))?;
    let results = r.body["results"].as_array().cloned().unwrap_or_default();
    ensure(results.iter().all(|i| i["status"] == 201), || format!("batch items: {}", r.body))?;
    Ok(results.iter().filter_map(|i| i["job"]["id"].as_str().map(str::to_owned)).collect())
}

/// How the cancels of a race are spaced.
#[derive(Clone, Copy)]
enum Pace {
    /// Each client pauses this long after each of its cancels.
    Gap(Duration),
    /// The i-th of n cancels is sent no earlier than `from + over * i / n`: the cancels cover
    /// the whole window whatever a request costs on this machine.
    Spread { from: Instant, over: Duration },
}

/// Cancels every job from `threads` clients; returns the ids whose cancel answered with the
/// job cancelled.
fn cancel_all(ctx: &Ctx, stack: &Stack, ids: &[String], threads: usize, pace: Pace) -> anyhow::Result<Vec<String>> {
    let cancelled = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<Vec<String>> {
                    let mut mine = Vec::new();
                    for (i, id) in ids.iter().enumerate().skip(t).step_by(threads) {
                        if let Pace::Spread { from, over } = pace {
                            let at = from + over.mul_f64(i as f64 / ids.len() as f64);
                            std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        }
                        let r = crate::util::cancel_on(ctx, stack, id)?;
                        // 409: the job finished (or started and finished) before the cancel.
                        ensure(r.status == 200 || r.status == 409, || format!("cancel {id}: {} {}", r.status, r.body))?;
                        if r.status == 200 && r.body["state"] == "cancelled" {
                            mine.push(id.clone());
                        }
                        if let Pace::Gap(gap) = pace {
                            std::thread::sleep(gap);
                        }
                    }
                    Ok(mine)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow::anyhow!("a cancel thread panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok(cancelled.into_iter().flatten().collect())
}

/// Waits (bounded) until `name` on the stack's edge has grown past `before`; its value.
fn grown(ctx: &Ctx, stack: &Stack, name: &str, before: f64) -> f64 {
    let mut now = before;
    wait_until(Duration::from_secs(15), || {
        now = metric_on(ctx, stack, name).unwrap_or(before);
        now > before
    });
    now
}

/// The alarm race, in up to three rounds: a round whose cancels all landed before the wake
/// or after the start (the alarm fires late on a loaded machine) proves nothing, so another
/// one runs. A cancelled job that ran fails the test in any round.
fn alarm_race(ctx: &Ctx, stack: &Stack) -> anyhow::Result<()> {
    in_rounds("alarm race", "no job was cancelled between its wake and its start", || alarm_round(ctx, stack))
}

/// Runs `round` up to three times until one hits the race window (answers true); an error
/// of any round (a cancel lost) fails at once.
fn in_rounds(race: &str, missed: &str, mut round: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    for n in 1..=3 {
        if round()? {
            return Ok(());
        }
        eprintln!("{race}: round {n} did not hit the window");
    }
    Err(anyhow::anyhow!("{race}: the race window was not hit in 3 rounds: {missed}"))
}

/// One round of the alarm race; whether a cancel landed between a wake and its start.
fn alarm_round(ctx: &Ctx, stack: &Stack) -> anyhow::Result<bool> {
    let tag = unique("alarm-race");
    let path = format!("/{tag}");
    let url = ctx.hooks.script(&path, vec![Reply::status(200)]);
    let due_in = Duration::from_millis(4000);
    let due_at = Instant::now() + due_in;
    let run_at = edgejobs_core::time::format_rfc3339(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64
            + due_in.as_millis() as u64,
    );
    // 300 jobs, one wake: a woken job's message reaches the edge consumer within tens of
    // milliseconds (max_batch_timeout = 0), so the cancels must be dense to land in between.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let jobs =
            (0..100).map(|_| json!({ "type": "webhook", "payload": { "url": url }, "run_at": run_at, "tags": [tag] }));
        ids.extend(batch_on(ctx, stack, jobs.collect())?);
    }
    let refused = "edgejobs_deliveries_refused_total{lane=\"edge\"}";
    let refused0 = metric_on(ctx, stack, refused)?;
    // Cancels from just before the jobs are due until well after the alarm woke them (the
    // alarm fires a few hundred milliseconds late), 200 a second spread evenly over 1.5 s.
    let from = due_at.checked_sub(Duration::from_millis(300)).unwrap_or(due_at);
    let cancelled = cancel_all(ctx, stack, &ids, 4, Pace::Spread { from, over: Duration::from_millis(1500) })?;
    let finished = |j: &Value| ["cancelled", "completed", "dead"].contains(&j["state"].as_str().unwrap_or(""));
    let all_final =
        wait_until(Duration::from_secs(60), || ids.iter().all(|id| job_on(ctx, stack, id).is_ok_and(|j| finished(&j))));
    ensure(all_final, || "every job of the alarm race reached a final state".into())?;
    let refused_now = grown(ctx, stack, refused, refused0);
    let ran: BTreeSet<String> =
        ctx.hooks.received(&path).iter().filter_map(|r| r.headers.get("x-edgejobs-job-id").cloned()).collect();
    eprintln!(
        "alarm race: {} of {} cancels won, {} jobs ran, {} deliveries refused at start",
        cancelled.len(),
        ids.len(),
        ran.len(),
        refused_now - refused0
    );
    for id in &cancelled {
        let job = job_on(ctx, stack, id)?;
        ensure(job["state"] == "cancelled" && job["attempt"] == 0 && job.get("started_at").is_none(), || {
            format!("a cancelled job was revived or started: {job}")
        })?;
        ensure(!ran.contains(id), || format!("cancelled job {id} ran its webhook"))?;
    }
    Ok(refused_now > refused0)
}

/// The sweep race, in up to three rounds, as the alarm race (a round whose cancels all
/// landed before the re-sends or after the hand-offs proves nothing).
fn sweep_race(ctx: &Ctx, stack: &Stack) -> anyhow::Result<()> {
    in_rounds("sweep race", "no job was cancelled after its re-send", || sweep_round(ctx, stack))
}

/// One round of the sweep race; whether a cancel landed between a re-send and its hand-off.
fn sweep_round(ctx: &Ctx, stack: &Stack) -> anyhow::Result<bool> {
    // No consumer runs on the fault stack: native jobs are handed to the stream and stay
    // queued, so the sweep re-sends them once they are a second old.
    let tag = unique("sweep-race");
    let keys = same_shard_keys(&tag, 300);
    let mut ids = Vec::new();
    for chunk in keys.chunks(100) {
        let jobs = chunk
            .iter()
            .map(|k| json!({ "type": "sleep", "payload": { "ms": 1 }, "tags": [tag], "idempotency_key": k }));
        ids.extend(batch_on(ctx, stack, jobs.collect())?);
    }
    let handed_off = wait_until(Duration::from_secs(30), || {
        ids.iter().step_by(25).all(|id| job_on(ctx, stack, id).is_ok_and(|j| j["stream_entry"].is_object()))
    });
    ensure(handed_off, || "the native jobs were handed to the stream".into())?;
    std::thread::sleep(Duration::from_millis(1200));
    let (resent, refused) = ("edgejobs_sweep_resent_total", "edgejobs_deliveries_refused_total{lane=\"native\"}");
    let (resent0, refused0) = (metric_on(ctx, stack, resent)?, metric_on(ctx, stack, refused)?);
    let fire = || -> anyhow::Result<()> {
        let r = ctx.http.get(format!("{}/__scheduled?cron={MAINTENANCE_CRON}", stack.edge_url)).send()?;
        ensure(r.status().is_success(), || format!("/__scheduled answered {}", r.status()))
    };
    let cancelled = std::thread::scope(|s| {
        let sweep = s.spawn(fire);
        let cancelled = cancel_all(ctx, stack, &ids, 4, Pace::Gap(Duration::from_millis(2)));
        sweep.join().map_err(|_| anyhow::anyhow!("the sweep thread panicked"))??;
        cancelled
    })?;
    // A second sweep must not revive anything either.
    fire()?;
    let resent_now = grown(ctx, stack, resent, resent0);
    let refused_now = grown(ctx, stack, refused, refused0);
    eprintln!(
        "sweep race: {} of {} cancels won, {} re-sent, {} hand-offs refused",
        cancelled.len(),
        ids.len(),
        resent_now - resent0,
        refused_now - refused0
    );
    ensure(resent_now > resent0, || "the sweep re-sent the jobs".into())?;
    for id in &cancelled {
        let job = job_on(ctx, stack, id)?;
        ensure(job["state"] == "cancelled", || format!("a cancelled job was revived by the sweep: {job}"))?;
    }
    Ok(refused_now > refused0)
}
