//! `SHARD_COUNT` raised on a live deployment (16 → 64) while jobs are enqueued, waiting,
//! running and scheduled: no duplicate, no lost job, no 404, no error answered; keys seen
//! before the change keep their job; a schedule keeps running; listings and backups cover
//! every shard; lowering the count afterwards is refused and changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, ensure, job_on, unique};

pub const TESTS: &[Test] = &[("shard_count_grows_from_16_to_64_under_load", grows_under_load)];

/// What the load sent and was answered: every id per idempotency key (one expected), every
/// unkeyed id, every answer that was not 2xx, and the markers of unkeyed jobs whose request
/// `wrangler dev` cut off when it reloaded the Worker (created or not: at most once).
#[derive(Default)]
struct Ledger {
    by_key: BTreeMap<String, BTreeSet<String>>,
    unkeyed: Vec<String>,
    errors: Vec<String>,
    cut_off: Vec<String>,
}

impl Ledger {
    fn record(&mut self, key: Option<&str>, answer: &Value) {
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        match key {
            Some(k) => {
                self.by_key.entry(k.to_owned()).or_default().insert(id);
            }
            None => self.unkeyed.push(id),
        }
    }
    fn all_ids(&self) -> BTreeSet<String> {
        self.by_key.values().flatten().chain(&self.unkeyed).cloned().collect()
    }
}

/// What `wrangler dev` answers a request in flight when it reloads the Worker (a local
/// limit: a deploy in production lets the old version finish its requests). Not an answer
/// of edgejobs; the request may or may not have reached the shard.
const CUT_OFF: &str = "restarted mid-request";

/// The marker tag of one job (unique per job sent).
fn marker_of(spec: &Value) -> String {
    spec["tags"][1].as_str().unwrap_or_default().to_owned()
}

fn send(ctx: &Ctx, stack: &Stack, key: &str, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Resp> {
    let url = format!("{}{path}", stack.edge_url);
    let req = match method {
        "POST" => ctx.http.post(url).json(body.unwrap_or(&Value::Null)),
        _ => ctx.http.get(url),
    };
    ctx.send(req.bearer_auth(key))
}

fn health(ctx: &Ctx, stack: &Stack) -> Value {
    send(ctx, stack, &stack.secrets.admin_key, "GET", "/health", None).map(|r| r.body).unwrap_or(Value::Null)
}

fn recorded_count(ctx: &Ctx, stack: &Stack) -> Option<u64> {
    health(ctx, stack)["checks"]["shard_count"]["count"].as_u64()
}

/// One job of the load: both lanes, a tag to list them by and a marker tag of its own.
fn spec(tag: &str, n: usize, key: Option<&str>) -> Value {
    let marker = unique("m");
    let mut s = if n.is_multiple_of(3) {
        json!({ "type": "sleep", "payload": { "ms": 20 }, "tags": [tag, marker] })
    } else {
        json!({ "type": "noop", "payload": { "n": n }, "tags": [tag, marker] })
    };
    // Some wait across the change (scheduled a few seconds ahead).
    if n.is_multiple_of(5) {
        s["delay"] = json!("4s");
    }
    if let Some(k) = key {
        s["idempotency_key"] = json!(k);
    }
    s
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// Enqueues one job. A request the reload cut off is sent again when it has a key (the key
/// makes that safe, and tests it across the change); without a key its marker is kept.
fn one(ctx: &Ctx, stack: &Stack, spec: &Value, what: &str, ledger: &Mutex<Ledger>) {
    let key = spec["idempotency_key"].as_str();
    for _ in 0..20 {
        match send(ctx, stack, &stack.secrets.api_key, "POST", "/v1/jobs", Some(spec)) {
            Ok(r) if r.status == 200 || r.status == 201 => return lock(ledger).record(key, &r.body),
            Ok(r) => return lock(ledger).errors.push(format!("{what}: {} {}", r.status, r.body)),
            Err(e) if format!("{e:#}").contains(CUT_OFF) => {
                if key.is_none() {
                    return lock(ledger).cut_off.push(marker_of(spec));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return lock(ledger).errors.push(format!("{what}: {e:#}")),
        }
    }
    lock(ledger).errors.push(format!("{what}: cut off 20 times"));
}

/// Sends single jobs (a key seen before the change, a new key, none) and a batch of 10
/// (half keyed), recording every answer.
fn burst(ctx: &Ctx, stack: &Stack, tag: &str, round: usize, old_keys: &[String], ledger: &Mutex<Ledger>) {
    let old = &old_keys[round % old_keys.len()];
    one(ctx, stack, &spec(tag, round, Some(old)), "old key", ledger);
    let new = format!("{tag}-live-{round}");
    one(ctx, stack, &spec(tag, round, Some(&new)), "new key", ledger);
    let items: Vec<Value> = (0..10)
        .map(|i| {
            let k = (i % 2 == 0).then(|| format!("{tag}-batch-{round}-{i}"));
            spec(tag, round * 10 + i, k.as_deref())
        })
        .collect();
    let body = json!({ "jobs": items });
    match send(ctx, stack, &stack.secrets.api_key, "POST", "/v1/jobs/batch", Some(&body)) {
        Ok(r) if r.status == 200 => {
            let results = r.body["results"].as_array().cloned().unwrap_or_default();
            let mut l = lock(ledger);
            for (item, res) in items.iter().zip(&results) {
                let status = res["status"].as_u64().unwrap_or(0);
                if status == 200 || status == 201 {
                    l.record(item["idempotency_key"].as_str(), &res["job"]);
                } else {
                    l.errors.push(format!("batch item: {res}"));
                }
            }
            if results.len() != items.len() {
                l.errors.push(format!("batch answered {}", r.body));
            }
        }
        Ok(r) => lock(ledger).errors.push(format!("batch: {} {}", r.status, r.body)),
        Err(e) if format!("{e:#}").contains(CUT_OFF) => {
            for item in &items {
                match item["idempotency_key"].as_str() {
                    Some(_) => one(ctx, stack, item, "batch item again", ledger),
                    None => lock(ledger).cut_off.push(marker_of(item)),
                }
            }
        }
        Err(e) => lock(ledger).errors.push(format!("batch: {e:#}")),
    }
    one(ctx, stack, &spec(tag, round + 1, None), "unkeyed", ledger);
}

fn grows_under_load(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let outcome = grow(ctx, stack);
        // The fault stack goes back to a fresh 16-shard deployment for the tests after this
        // one (lowering is refused, so the shards' state goes with it).
        stack.stop_wrangler();
        stack.wipe_durable_objects()?;
        stack.restart_wrangler(Vec::new())?;
        outcome
    })
}

fn grow(ctx: &Ctx, stack: &mut Stack) -> anyhow::Result<()> {
    stack.stop_wrangler();
    stack.wipe_durable_objects()?;
    stack.restart_wrangler(vars(16))?;
    ensure(recorded_count(ctx, stack) == Some(16), || format!("starts with 16: {}", health(ctx, stack)))?;
    stack.start_consumer(&[])?;
    let tag = unique("grow");
    let admin = stack.secrets.admin_key.clone();
    // A schedule, every second, from before the change.
    let schedule = unique("grow-every-second");
    let r = send(
        ctx,
        stack,
        &admin,
        "POST",
        "/v1/schedules",
        Some(&json!({ "name": schedule, "cron": "* * * * * *", "job": { "type": "noop", "tags": [tag] } })),
    )?;
    ensure(r.status == 201, || format!("schedule: {} {}", r.status, r.body))?;
    // Keys seen before the change.
    let ledger = Mutex::new(Ledger::default());
    let old_keys: Vec<String> = (0..40).map(|i| format!("{tag}-old-{i}")).collect();
    for (i, k) in old_keys.iter().enumerate() {
        let r = send(ctx, stack, &stack.secrets.api_key, "POST", "/v1/jobs", Some(&spec(&tag, i, Some(k))))?;
        ensure(r.status == 201, || format!("before: {} {}", r.status, r.body))?;
        ledger.lock().unwrap_or_else(|p| p.into_inner()).record(Some(k), &r.body);
    }
    let before: BTreeMap<String, String> = ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .by_key
        .iter()
        .map(|(k, ids)| (k.clone(), ids.iter().next().cloned().unwrap_or_default()))
        .collect();
    ensure(before.values().all(|id| shard_of(id) < 16), || "16 shards before".into())?;

    // The load runs while the count is raised in place (wrangler reloads the Worker).
    let stop = AtomicBool::new(false);
    let shared: &Stack = stack;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let load = scope.spawn(|| {
            let started = Instant::now();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) && round < 400 && started.elapsed() < Duration::from_secs(150) {
                burst(ctx, shared, &tag, round, &old_keys, &ledger);
                round += 1;
            }
            round
        });
        let outcome = (|| -> anyhow::Result<()> {
            std::thread::sleep(Duration::from_secs(2));
            reload(shared, 64)?;
            let grown = wait_until(Duration::from_secs(90), || recorded_count(ctx, shared) == Some(64));
            ensure(grown, || format!("the count grew: {}", health(ctx, shared)))?;
            // Load on the new count for a while.
            std::thread::sleep(Duration::from_secs(4));
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        let rounds = load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
        outcome?;
        ensure(rounds >= 4, || format!("the load ran {rounds} rounds"))
    })?;
    check(ctx, stack, &tag, &schedule, &before, &ledger.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Rewrites the running wrangler's vars with `SHARD_COUNT=count`.
fn reload(stack: &Stack, count: u16) -> anyhow::Result<()> {
    stack.reload_wrangler(&vars(count))
}

/// The Worker's settings with `count` shards. Locally a reload drops the queue messages in
/// flight (Cloudflare's queues keep them): the sweep sends such jobs again, here after 5 s.
/// The load sends a few thousand enqueues in two minutes, more than the tenant's default
/// `RATE_LIMIT` allows (a CI run failed on its 429s), and growth is not about rate limits.
fn vars(count: u16) -> Vec<(String, String)> {
    vec![
        ("SHARD_COUNT".into(), count.to_string()),
        ("SWEEP_QUEUED_AFTER".into(), "5s".into()),
        ("RATE_LIMIT".into(), "off".into()),
    ]
}

/// Fires the five-minute cron (retention and the sweep).
fn sweep(ctx: &Ctx, stack: &Stack) {
    let _ = ctx.http.get(format!("{}/__scheduled?cron=*/5+*+*+*+*", stack.edge_url)).send();
}

fn shard_of(id: &str) -> u16 {
    id.get(1..3).and_then(|h| u16::from_str_radix(h, 16).ok()).unwrap_or(u16::MAX)
}

fn check(
    ctx: &Ctx,
    stack: &mut Stack,
    tag: &str,
    schedule: &str,
    before: &BTreeMap<String, String>,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    ensure(ledger.errors.is_empty(), || {
        format!("answers that were errors: {:?}", &ledger.errors[..ledger.errors.len().min(5)])
    })?;
    // Every key names one job; a key seen before the change still names that job.
    let dup: Vec<_> = ledger.by_key.iter().filter(|(_, ids)| ids.len() != 1).collect();
    ensure(dup.is_empty(), || format!("keys with more than one job: {dup:?}"))?;
    for (k, id) in before {
        ensure(ledger.by_key.get(k).is_some_and(|ids| ids.contains(id)), || format!("{k} lost its job {id}"))?;
    }
    let ids = ledger.all_ids();
    let high = ids.iter().filter(|id| shard_of(id) >= 16).count();
    ensure(high > 0, || "new jobs spread over the new shards".into())?;
    let moved_keys = ledger.by_key.values().flatten().filter(|id| shard_of(id) >= 16).count();
    eprintln!(
        "growth: {} jobs answered ({} keys, {} unkeyed), {high} on shards 16-63 ({moved_keys} keyed), {} requests cut off by the reload",
        ids.len(),
        ledger.by_key.len(),
        ledger.unkeyed.len(),
        ledger.cut_off.len()
    );
    ensure(moved_keys > 0, || "some new keys live on the new shards".into())?;
    // Every job resolves and becomes final (completed); none is a 404. The sweep runs
    // meanwhile, as its cron would.
    let mut swept = Instant::now();
    for id in &ids {
        let mut last = Value::Null;
        let done = wait_until(Duration::from_secs(60), || {
            if swept.elapsed() > Duration::from_secs(3) {
                sweep(ctx, stack);
                swept = Instant::now();
            }
            last = job_on(ctx, stack, id).unwrap_or(Value::Null);
            last["state"] == "completed"
        });
        ensure(done, || format!("job {id} did not complete: {last}"))?;
    }
    // Listings cover every shard: the tag lists exactly the jobs answered, plus the runs of
    // the schedule (which kept running, one job per tick).
    let listed = list_all(ctx, stack, &format!("/v1/jobs?tag={tag}&limit=100"))?;
    let listed_set: BTreeSet<&String> = listed.iter().map(|(id, _)| id).collect();
    ensure(listed_set.len() == listed.len(), || "a job listed twice".into())?;
    let runs: Vec<&(String, Value)> = listed
        .iter()
        .filter(|(_, j)| j["idempotency_key"].as_str().is_some_and(|k| k.starts_with("schedule:")))
        .collect();
    // A job whose request the reload cut off exists at most once.
    let markers: Vec<String> =
        listed.iter().map(|(_, j)| j["tags"][1].as_str().unwrap_or_default().to_owned()).collect();
    let cut_created = ledger.cut_off.iter().filter(|m| markers.contains(m)).count();
    for m in &ledger.cut_off {
        let n = markers.iter().filter(|x| *x == m).count();
        ensure(n <= 1, || format!("a cut-off request made {n} jobs"))?;
    }
    ensure(listed.len() == ids.len() + runs.len() + cut_created, || {
        format!(
            "listed {} jobs: {} answered + {} schedule runs + {cut_created} of {} cut off",
            listed.len(),
            ids.len(),
            runs.len(),
            ledger.cut_off.len()
        )
    })?;
    ensure(ids.iter().all(|id| listed_set.contains(id)), || "an answered job is missing from the listing".into())?;
    let ticks: BTreeSet<&str> = runs.iter().filter_map(|(_, j)| j["idempotency_key"].as_str()).collect();
    ensure(ticks.len() == runs.len() && runs.len() >= 3, || format!("{} runs, {} ticks", runs.len(), ticks.len()))?;
    let r = send(ctx, stack, &stack.secrets.admin_key, "GET", &format!("/v1/schedules/{schedule}"), None)?;
    ensure(r.status == 200, || format!("the schedule resolves: {} {}", r.status, r.body))?;
    // A backup covers all 64 shards.
    let r = send(ctx, stack, &stack.secrets.admin_key, "POST", "/v1/admin/backups", Some(&json!({})))?;
    ensure(r.status == 201 && r.body["shard_count"] == 64, || format!("backup: {} {}", r.status, r.body))?;
    // Lowering is refused: the recorded count stays, health says so, every job resolves.
    reload(stack, 16)?;
    let refused = wait_until(Duration::from_secs(90), || {
        let h = health(ctx, stack);
        h["checks"]["shard_count"]["ok"] == false && h["status"] == "degraded"
    });
    let h = health(ctx, stack);
    ensure(refused, || format!("lowering is refused: {h}"))?;
    let detail = &h["checks"]["shard_count"];
    ensure(
        detail["count"] == 64 && detail["refused"].as_str().is_some_and(|m| m.contains("lowering is refused")),
        || format!("{detail}"),
    )?;
    let high_id = ids.iter().find(|id| shard_of(id) >= 16).cloned().unwrap_or_default();
    let job = job_on(ctx, stack, &high_id)?;
    ensure(job["id"] == high_id.as_str(), || format!("a job on shard {} still resolves: {job}", shard_of(&high_id)))
}

/// Every job a listing holds (id and JSON), following cursors.
fn list_all(ctx: &Ctx, stack: &Stack, path: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let p = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let r = send(ctx, stack, &stack.secrets.api_key, "GET", &p, None)?;
        ensure(r.status == 200, || format!("list: {} {}", r.status, r.body))?;
        for j in r.body["jobs"].as_array().cloned().unwrap_or_default() {
            out.push((j["id"].as_str().unwrap_or_default().to_owned(), j));
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
    anyhow::bail!("more than 200 pages")
}
