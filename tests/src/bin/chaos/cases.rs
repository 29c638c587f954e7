//! The cases. Each injects its faults under load, waits (bounded) until its jobs are final,
//! and fills a row. Every case starts and stops its own consumers.

use std::collections::HashSet;

use anyhow::Context as _;
use std::time::{Duration, Instant};

use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use serde_json::{Value, json};

use crate::api::{self, consumer_metric};
use crate::ledger::{self, Row, Sends, Tracked};
use crate::proxy::{Mode, Proxy};
use crate::{Battery, say};

/// The stack's Worker settings for the battery: no rate limit (load is the point), a sweep
/// that re-sends and fails within seconds rather than minutes, and a retention that keeps
/// every job (the sweep's cron runs retention too, which keeps the newest 1,000 finished
/// jobs per type by default: the evidence would be deleted).
pub fn base_vars() -> Vec<(String, String)> {
    [
        ("RATE_LIMIT", "off"),
        ("SWEEP_QUEUED_AFTER", "5s"),
        ("SWEEP_ACTIVE_GRACE", "5s"),
        ("SWEEP_NATIVE_LEASE", "10s"),
        ("RETENTION_COMPLETED_AGE", "30d"),
        ("RETENTION_COMPLETED_KEEP", "10000000"),
        ("RETENTION_DEAD_KEEP", "10000000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

pub fn name(case: u8) -> &'static str {
    match case {
        1 => "kill -9 a native consumer mid-job",
        2 => "SIGSTOP a consumer past its lease, SIGCONT",
        3 => "kill -9 workerd during enqueue and work",
        4 => "Redis and the gateway down for 10 s",
        5 => "fault proxy between the edge and Upstash",
        6 => "R2 failures during a backup",
        7 => "one idempotency key ×100; a poison job",
        8 => "drain: every 2xx job of the battery",
        9 => "workflow runs: kill -9 consumers mid-step, workerd during sleeps and waits, events twice",
        _ => "unknown",
    }
}

pub fn run(b: &mut Battery, proxy: &Proxy, case: u8) -> anyhow::Result<Row> {
    let mut row = match case {
        1 => kill_consumers(b)?,
        2 => pause_consumers(b)?,
        3 => kill_workerd(b)?,
        4 => upstash_down(b)?,
        5 => fault_proxy(b, proxy)?,
        6 => r2_failures(b)?,
        7 => idempotency_and_poison(b)?,
        8 => drain(b)?,
        9 => workflows(b)?,
        _ => anyhow::bail!("no case {case}"),
    };
    row.case = case;
    row.name = name(case).into();
    row.ok = row.ok && !row.broken;
    Ok(row)
}

fn tag(b: &Battery, case: u8) -> String {
    format!("chaos-c{case}-{:x}", b.s.seed)
}

/// Jobs of a case, made before the load starts (upstream paths scripted, delays drawn).
fn plan(b: &mut Battery, case: u8, n: usize, native_share: f64, delay_ms: (u64, u64)) -> Vec<(Value, Tracked)> {
    let t = tag(b, case);
    (0..n)
        .map(|i| {
            let native = (b.rng.range(0, 1000) as f64) < native_share * 1000.0;
            let delay = Duration::from_millis(b.rng.range(delay_ms.0, delay_ms.1.max(delay_ms.0 + 1)));
            let (path, url) = ledger::upstream(&b.hooks, case, i, b.s.seed, Reply::status(200).delay(delay));
            let mut spec = if native { api::native(&url, 10) } else { api::edge(&url, 10) };
            spec["tags"] = json!([t]);
            (spec, Tracked { id: String::new(), case, path, native, expect: "completed" })
        })
        .collect()
}

/// Settles the case's jobs and judges them against the counters read before.
fn finish(b: &mut Battery, case: u8, sends: Sends, finals_before: f64, bound: Duration, mut row: Row) -> Row {
    let states = ledger::settle(&b.api, &sends.created, bound);
    let finals_after = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let tagged = b.api.list_tag(&tag(b, case)).unwrap_or_default();
    row.refused += sends.refused;
    row.indeterminate += sends.indeterminate;
    ledger::judge(&mut row, &b.hooks, &sends.created, &states, finals_after - finals_before, &tagged);
    b.all.extend(sends.created);
    row
}

fn consumers(b: &mut Battery, n: usize, concurrency: &str) -> anyhow::Result<Vec<usize>> {
    (0..n).map(|_| b.stack.start_consumer(&[("EDGEJOBS_CONCURRENCY", concurrency)])).collect()
}

fn stop_consumers(b: &mut Battery, ids: &[usize]) {
    for &i in ids {
        b.stack.terminate_consumer(i, Duration::from_secs(15));
    }
}

fn in_flight(b: &Battery, i: usize) -> f64 {
    consumer_metric(&b.api.http, &b.stack.consumer_url(i), "edgejobs_consumer_in_flight", None)
}

/// The first upstream call after each fault, per job that was called before and after it:
/// how long the system took to run the job again.
fn recovery_after(b: &Battery, jobs: &[Tracked], faults: &[Instant]) -> Vec<u64> {
    let mut out = Vec::new();
    for t in jobs {
        let calls = ledger::calls(&b.hooks, t);
        for f in faults {
            let before = calls.iter().any(|c| c < f);
            if let Some(next) = calls.iter().filter(|c| *c > f).min()
                && before
            {
                out.push(next.duration_since(*f).as_millis() as u64);
                break;
            }
        }
    }
    out
}

/// SIGKILL to one of the two consumers `ids` (`binary`), a random one that runs jobs when one
/// does, replaced by a new one (concurrency 10); whether the killed one ran jobs.
fn kill_a_busy_one(b: &mut Battery, ids: &mut [usize], binary: &str) -> anyhow::Result<bool> {
    let pick = b.rng.range(0, 2) as usize;
    let victim = if in_flight(b, ids[pick]) > 0.0 { pick } else { 1 - pick };
    let busy = in_flight(b, ids[victim]) > 0.0;
    b.stack.kill_consumer(ids[victim]);
    ids[victim] = b.stack.start_consumer_binary(binary, &[("EDGEJOBS_CONCURRENCY", "10")])?;
    Ok(busy)
}

/// 1: two consumers under load; a random one is killed with SIGKILL while it runs jobs
/// (checked: its in-flight gauge was above 0), then replaced.
fn kill_consumers(b: &mut Battery) -> anyhow::Result<Row> {
    let (cycles, jobs) = if b.s.quick { (8, 160) } else { (50, 1000) };
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let work = plan(b, 1, jobs, 1.0, (200, 1500));
    let mut ids = consumers(b, 2, "10")?;
    let rate = jobs as f64 / (cycles as f64 * 1.1);
    let api = b.api.clone();
    let mut kills = Vec::new();
    let mut missed = 0;
    let sends = std::thread::scope(|s| -> anyhow::Result<Sends> {
        let load = s.spawn(|| ledger::load(&api, work.len(), 2, rate, Duration::from_secs(600), |i| work[i].clone()));
        for _ in 0..cycles {
            std::thread::sleep(Duration::from_millis(b.rng.range(500, 1200)));
            missed += usize::from(!kill_a_busy_one(b, &mut ids, "edgejobs-consumer")?);
            kills.push(Instant::now());
        }
        load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))
    })?;
    row.faults = kills.len();
    if missed > 0 {
        row.notes.push(format!("{missed} kills found no job running"));
    }
    let mut row = finish(b, 1, sends, before, Duration::from_secs(180), row);
    let tracked: Vec<Tracked> = b.all.iter().filter(|t| t.case == 1).cloned().collect();
    row.recovery_ms = recovery_after(b, &tracked, &kills);
    stop_consumers(b, &ids);
    Ok(row)
}

/// 2: SIGSTOP a consumer that runs jobs for longer than the lease, SIGCONT it while the
/// other one runs its jobs: the paused one's reports are refused (`lease_lost`) and it
/// acknowledges nothing; every job completes once and the stream ends empty.
fn pause_consumers(b: &mut Battery) -> anyhow::Result<Row> {
    let (cycles, jobs) = if b.s.quick { (4, 40) } else { (20, 200) };
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let work = plan(b, 2, jobs, 1.0, (1000, 6000));
    let ids = consumers(b, 2, "10")?;
    let rate = jobs as f64 / (cycles as f64 * 6.0);
    let api = b.api.clone();
    let mut pauses = Vec::new();
    let sends = std::thread::scope(|s| -> anyhow::Result<Sends> {
        let load = s.spawn(|| ledger::load(&api, work.len(), 2, rate, Duration::from_secs(600), |i| work[i].clone()));
        for _ in 0..cycles {
            std::thread::sleep(Duration::from_millis(b.rng.range(300, 900)));
            let pick = b.rng.range(0, 2) as usize;
            let victim = if in_flight(b, ids[pick]) > 0.0 { ids[pick] } else { ids[1 - pick] };
            let Some(pid) = b.stack.consumer_pid(victim) else { continue };
            let signal = |sig: &str| std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
            signal("-STOP")?;
            pauses.push(Instant::now());
            // Past the 3 s lease and the takeover's slack (idle > 4 s, looked for each second).
            std::thread::sleep(Duration::from_millis(b.rng.range(5500, 7000)));
            signal("-CONT")?;
        }
        load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))
    })?;
    row.faults = pauses.len();
    let mut row = finish(b, 2, sends, before, Duration::from_secs(180), row);
    let refused: f64 = ids
        .iter()
        .map(|&i| {
            consumer_metric(
                &b.api.http,
                &b.stack.consumer_url(i),
                "edgejobs_consumer_jobs_total",
                Some(("outcome", "refused")),
            )
        })
        .sum();
    let lost: f64 = ids
        .iter()
        .map(|&i| {
            consumer_metric(&b.api.http, &b.stack.consumer_url(i), "edgejobs_consumer_lease_renewals_lost_total", None)
        })
        .sum();
    row.notes.push(format!("{refused:.0} late reports refused, {lost:.0} renewals found the entry taken"));
    if refused + lost < 1.0 {
        row.broken = true;
        row.notes.push("no pause outlived a lease: the window was not hit".into());
    }
    let empty = wait_until(Duration::from_secs(20), || stream_len(b).is_some_and(|(l, p)| l == 0 && p == 0));
    if !empty {
        row.broken = true;
        row.notes.push(format!("the stream did not empty: {:?}", stream_len(b)));
    }
    let tracked: Vec<Tracked> = b.all.iter().filter(|t| t.case == 2).cloned().collect();
    row.recovery_ms = recovery_after(b, &tracked, &pauses);
    stop_consumers(b, &ids);
    Ok(row)
}

/// XLEN and pending entries of the stream, through the gateway.
fn stream_len(b: &Battery) -> Option<(i64, i64)> {
    let call = |cmd: Value| -> Option<Value> {
        let r =
            b.api.http.post(&b.stack.upstash_url).bearer_auth(&b.stack.secrets.upstash_token).json(&cmd).send().ok()?;
        r.json::<Value>().ok().map(|v| v["result"].clone())
    };
    let len = call(json!(["XLEN", "edgejobs:jobs"]))?.as_i64()?;
    let pending = call(json!(["XPENDING", "edgejobs:jobs", "edgejobs"])).and_then(|v| v[0].as_i64()).unwrap_or(0);
    Some((len, pending))
}

/// 3: workerd is killed with SIGKILL (with wrangler) several times while jobs of both lanes
/// are enqueued and run; each time it is started again on the same state. Requests that
/// got no answer are indeterminate; every 2xx job must end final (the sweep re-sends what
/// the in-memory local queue lost).
fn kill_workerd(b: &mut Battery) -> anyhow::Result<Row> {
    let (kills, jobs) = if b.s.quick { (2, 600) } else { (5, 5000) };
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let work = plan(b, 3, jobs, 0.5, (0, 50));
    let ids = consumers(b, 1, "25")?;
    let rate = if b.s.quick { 60.0 } else { 150.0 };
    let api = b.api.clone();
    let mut restarts = Vec::new();
    let sends = std::thread::scope(|s| -> anyhow::Result<Sends> {
        let load = s.spawn(|| ledger::load(&api, work.len(), 4, rate, Duration::from_secs(600), |i| work[i].clone()));
        let spacing = jobs as f64 / rate / (kills as f64 + 1.0);
        for _ in 0..kills {
            std::thread::sleep(Duration::from_secs_f64(spacing * (0.5 + b.rng.range(0, 100) as f64 / 100.0)));
            b.stack.kill_wrangler();
            let t = Instant::now();
            b.stack.start_wrangler()?;
            restarts.push(t.elapsed().as_millis() as u64);
            say(format!("  workerd back after {:.1} s", t.elapsed().as_secs_f64()));
        }
        load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))
    })?;
    row.faults = restarts.len();
    let mut row = finish(b, 3, sends, before, Duration::from_secs(240), row);
    row.recovery_ms = restarts;
    stop_consumers(b, &ids);
    Ok(row)
}

/// 4: redis-server and the gateway stopped for 10 s during load: edge-lane jobs keep
/// completing; native hand-offs fail, are retried (queue retries, then the sweep) and
/// complete after recovery.
fn upstash_down(b: &mut Battery) -> anyhow::Result<Row> {
    let jobs = if b.s.quick { 300 } else { 900 };
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let work = plan(b, 4, jobs, 0.5, (0, 50));
    let ids = consumers(b, 1, "25")?;
    let rate = jobs as f64 / 30.0;
    let api = b.api.clone();
    let mut window = (Instant::now(), Instant::now());
    let sends = std::thread::scope(|s| -> anyhow::Result<Sends> {
        let load = s.spawn(|| ledger::load(&api, work.len(), 2, rate, Duration::from_secs(120), |i| work[i].clone()));
        std::thread::sleep(Duration::from_secs(8));
        b.stack.stop_gateway();
        b.stack.stop_redis();
        window.0 = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        b.stack.start_redis()?;
        b.stack.restart_gateway()?;
        window.1 = Instant::now();
        load.join().map_err(|_| anyhow::anyhow!("the load thread panicked"))
    })?;
    row.faults = 1;
    let mut row = finish(b, 4, sends, before, Duration::from_secs(180), row);
    let tracked: Vec<Tracked> = b.all.iter().filter(|t| t.case == 4).cloned().collect();
    let during = |native: bool| {
        tracked
            .iter()
            .filter(|t| t.native == native)
            .filter(|t| {
                ledger::calls(&b.hooks, t).iter().any(|c| *c > window.0 + Duration::from_secs(1) && *c < window.1)
            })
            .count()
    };
    let (edge_during, native_during) = (during(false), during(true));
    row.notes.push(format!("during the outage: {edge_during} edge-lane jobs ran, {native_during} native"));
    if edge_during == 0 {
        row.broken = true;
        row.notes.push("the edge lane stopped while Upstash was down".into());
    }
    // Recovery: from Upstash's return to the last native job that had waited for it.
    let last = tracked
        .iter()
        .filter(|t| t.native)
        .filter_map(|t| ledger::calls(&b.hooks, t).into_iter().min())
        .filter(|c| *c > window.1)
        .max();
    row.recovery_ms = last.map(|l| vec![l.duration_since(window.1).as_millis() as u64]).unwrap_or_default();
    stop_consumers(b, &ids);
    Ok(row)
}

/// 5: the edge reaches Upstash through a fault proxy. Phases of latency, resets, 500s and
/// a black hole, first with `RATE_LIMIT_ON_ERROR=open` (enqueues go on), then `closed`
/// (enqueues are refused with 503 `unavailable` and nothing is written). Native jobs
/// enqueued through it run once per attempt.
fn fault_proxy(b: &mut Battery, proxy: &Proxy) -> anyhow::Result<Row> {
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let phases = [Mode::Latency(300), Mode::Reset, Mode::Error500, Mode::BlackHole, Mode::Pass];
    let per_phase = if b.s.quick { 10 } else { 30 };
    let ids = consumers(b, 1, "25")?;
    proxy.target(&b.stack.upstash_url);
    proxy.set(Mode::Pass);
    b.stack.opts.edge_upstash_url = Some(proxy.url.clone());
    let mut sends = Sends::default();
    let mut n = 0;
    let mut summary = Vec::new();
    for on_error in ["open", "closed"] {
        let mut vars = base_vars();
        vars.retain(|(k, _)| k != "RATE_LIMIT");
        vars.push(("RATE_LIMIT".into(), "100000/60s".into()));
        vars.push(("RATE_LIMIT_ON_ERROR".into(), on_error.into()));
        b.stack.restart_wrangler(vars)?;
        for mode in phases {
            proxy.set(mode);
            let work = plan(b, 5, per_phase, 1.0, (0, 20));
            let work: Vec<(Value, Tracked)> = work
                .into_iter()
                .map(|(s, t)| {
                    n += 1;
                    let path = format!("{}-{on_error}-{n}", t.path);
                    let url = b.hooks.script(&path, vec![Reply::status(200)]);
                    let mut s = s;
                    s["payload"]["url"] = json!(url);
                    (s, Tracked { path, ..t })
                })
                .collect();
            let got = ledger::load(&b.api, work.len(), 4, 1000.0, Duration::from_secs(60), |i| work[i].clone());
            summary.push(format!(
                "{on_error}/{mode:?}: {} created, {} refused, {} indeterminate",
                got.created.len(),
                got.refused,
                got.indeterminate
            ));
            let fails_closed = on_error == "closed" && mode != Mode::Pass && !matches!(mode, Mode::Latency(_));
            if fails_closed && !got.created.is_empty() {
                row.broken = true;
                row.notes.push(format!("closed/{mode:?} let {} enqueues through", got.created.len()));
            }
            if fails_closed && got.refused < per_phase {
                row.broken = true;
                row.notes.push(format!("closed/{mode:?}: {} of {per_phase} answered 503 unavailable", got.refused));
            }
            if on_error == "open" && got.created.len() < per_phase {
                row.notes.push(format!("open/{mode:?}: {} of {per_phase} enqueues answered 2xx", got.created.len()));
            }
            row.faults += 1;
            sends.add(got);
        }
        proxy.set(Mode::Pass);
    }
    say(format!("  {}", summary.join(" · ")));
    b.stack.opts.edge_upstash_url = None;
    b.stack.restart_wrangler(base_vars())?;
    let mut row = finish(b, 5, sends, before, Duration::from_secs(180), row);
    row.notes.extend(summary);
    stop_consumers(b, &ids);
    Ok(row)
}

/// 6: a backup meets a broken R2 store (the local bucket's blob directory replaced by a
/// file: every put fails, root or not); the backup is reported failed and the previous good
/// one stays the latest. Then a stored object is damaged: verify and restore refuse it.
fn r2_failures(b: &mut Battery) -> anyhow::Result<Row> {
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    // Enough rows that shard objects are large (a failed write of a small one was answered
    // at once; of a large one, never, until writes were bounded).
    let work = plan(b, 6, if b.s.quick { 200 } else { 2000 }, 0.0, (0, 10));
    let sends = ledger::load(&b.api, work.len(), 2, 1000.0, Duration::from_secs(60), |i| work[i].clone());
    let states = ledger::settle(&b.api, &sends.created, Duration::from_secs(60));
    let _ = states;
    let (s, good) = b.api.post("/v1/admin/backups", &json!({}), true)?;
    anyhow::ensure!(s < 300, "a backup on a healthy store answered {s}: {good}");
    let good_id = backup_id(&good).context("the healthy backup's id")?;
    // Every job the battery made so far is in it (rows = jobs stored).
    let known = b.all.len() + sends.created.len();
    let rows = good["total_rows"].as_u64().unwrap_or(0) as usize;
    row.notes.push(format!("backup of {rows} rows; the battery knows {known} jobs"));
    if rows < known {
        row.broken = true;
        row.notes.push(format!("the backup misses jobs: {rows} rows for {known} known jobs"));
    }
    let blobs = r2_blobs(&b.stack.opts.state_dir).context("the local R2 blob directory")?;
    let aside = blobs.with_extension("aside");
    std::fs::rename(&blobs, &aside)?;
    std::fs::write(&blobs, b"not a directory")?;
    let failed = b.api.post_timed("/v1/admin/backups", &json!({}), true, Duration::from_secs(120));
    std::fs::remove_file(&blobs)?;
    std::fs::rename(&aside, &blobs)?;
    row.faults += 1;
    match failed {
        Ok((s, body)) if s < 300 => {
            row.broken = true;
            row.notes.push(format!("a backup on a failing store answered {s}: {body}"));
        }
        Ok((s, body)) => row.notes.push(format!("failing put: {s} {}", body["error"]["code"].as_str().unwrap_or(""))),
        Err(e) => {
            row.broken = true;
            row.notes.push(format!("a backup on a failing store gave no answer: {e}"));
        }
    }
    let (_, latest) = b.api.http_get_admin("/v1/admin/backups/latest")?;
    if backup_id(&latest).as_deref() != Some(good_id.as_str()) {
        row.broken = true;
        row.notes.push(format!("the latest backup is not the good one: {latest}"));
    }
    // Damage the good backup's copy of one job: verify must say so, and only then is a
    // restore tried (it must refuse; a restore that went through would replace the store).
    let probe = sends.created.first().map(|t| t.id.clone()).context("a job of this case")?;
    let damaged = damage_blob_holding(&blobs, &probe)?;
    row.faults += 1;
    let (vs, verify) = b.api.post(&format!("/v1/admin/backups/{good_id}/verify"), &json!({}), true)?;
    if vs == 200 && verify["valid"] == false {
        let (rs, restore) = b.api.post("/v1/admin/restore", &json!({ "backup": good_id }), true)?;
        if rs < 300 {
            row.broken = true;
            row.notes.push(format!("a damaged backup was restored: {rs} {restore}"));
        } else {
            row.notes.push(format!("damaged object: verify invalid, restore {rs} {}", restore["error"]["code"]));
        }
    } else {
        row.broken = true;
        row.notes.push(format!("verify did not see the damage: {vs} {verify}"));
    }
    std::fs::write(&damaged.0, &damaged.1)?;
    let row = finish(b, 6, sends, before, Duration::from_secs(60), row);
    Ok(row)
}

fn backup_id(v: &Value) -> Option<String> {
    ["id", "backup", "prefix"]
        .iter()
        .find_map(|k| v[*k].as_str().or_else(|| v["backup"][*k].as_str()).map(str::to_owned))
}

/// The directory where wrangler keeps the local R2 bucket's object bodies.
fn r2_blobs(state: &std::path::Path) -> Option<std::path::PathBuf> {
    let r2 = state.join("wrangler/v3/r2");
    let mut stack = vec![r2];
    for _ in 0..1000 {
        let dir = stack.pop()?;
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "blobs") {
                    return Some(p);
                }
                stack.push(p);
            }
        }
    }
    None
}

/// Flips a digit of job `id` in the newest blob that holds it; returns the blob's path and
/// original bytes to put back.
fn damage_blob_holding(blobs: &std::path::Path, id: &str) -> anyhow::Result<(std::path::PathBuf, Vec<u8>)> {
    let mut holding: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(blobs)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(id)))
        .filter_map(|p| Some((std::fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
        .collect();
    holding.sort();
    let (_, blob) = holding.pop().ok_or_else(|| anyhow::anyhow!("no R2 blob holds {id}"))?;
    let original = std::fs::read(&blob)?;
    let mut bad = original.clone();
    let at = String::from_utf8_lossy(&original).find(id).unwrap_or(0) + 5;
    if let Some(byte) = bad.get_mut(at) {
        *byte = if *byte == b'0' { b'1' } else { b'0' };
    }
    std::fs::write(&blob, &bad)?;
    Ok((blob, original))
}

/// 7: one idempotency key sent by 100 concurrent requests makes exactly one job; a poison
/// job (its upstream always answers 500) makes exactly `max_attempts` attempts, ends dead,
/// and a replay after the upstream is fixed completes it.
fn idempotency_and_poison(b: &mut Battery) -> anyhow::Result<Row> {
    let mut row = Row::default();
    let before = ledger::settled_finals(&b.api, &["http.request", "webhook", "noop"]);
    let t = tag(b, 7);
    let key = format!("chaos-key-{:x}-{}", b.s.seed, b.rng.next_u64() % 1_000_000);
    let (path, url) = ledger::upstream(&b.hooks, 7, 0, b.s.seed, Reply::status(200));
    let mut spec = api::edge(&url, 3);
    spec["tags"] = json!([t]);
    spec["idempotency_key"] = json!(key);
    let answers: Vec<api::Sent> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..100).map(|_| s.spawn(|| b.api.enqueue(&spec))).collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    row.faults = 100;
    let ids: HashSet<String> =
        answers.iter().filter_map(|a| if let api::Sent::Created(id) = a { Some(id.clone()) } else { None }).collect();
    let created = answers.iter().filter(|a| matches!(a, api::Sent::Created(_))).count();
    row.indeterminate = answers.iter().filter(|a| matches!(a, api::Sent::Indeterminate(_))).count();
    row.refused = answers.len() - created - row.indeterminate;
    row.notes.push(format!("one key ×100: {created} answered 2xx with {} distinct job(s)", ids.len()));
    let mut sends = Sends::default();
    for id in &ids {
        sends.created.push(Tracked { id: id.clone(), case: 7, path: path.clone(), native: false, expect: "completed" });
    }
    // The poison job: a native call whose upstream always fails.
    let ids_ok = ids.len() == 1;
    let consumer = consumers(b, 1, "5")?;
    let (ppath, purl) = ledger::upstream(&b.hooks, 7, 1, b.s.seed, Reply::status(500));
    let mut poison = api::native(&purl, 3);
    poison["tags"] = json!([t]);
    let api::Sent::Created(pid) = b.api.enqueue(&poison) else { anyhow::bail!("the poison job was not created") };
    let dead =
        wait_until(Duration::from_secs(60), || b.api.job(&pid).ok().flatten().is_some_and(|j| j["state"] == "dead"));
    let attempts = b.hooks.received(&ppath).len();
    row.notes.push(format!("poison job: {attempts} attempts, then {}", if dead { "dead" } else { "not dead" }));
    let poison_ok = dead && attempts == 3;
    // Fixed upstream, replay: it completes.
    b.hooks.script(&ppath, vec![Reply::status(200)]);
    let (rs, _) = b.api.post(&format!("/v1/jobs/{pid}/retry"), &json!({}), false)?;
    row.notes.push(format!("replay answered {rs}"));
    sends.created.push(Tracked { id: pid, case: 7, path: ppath, native: true, expect: "completed" });
    let mut row = finish(b, 7, sends, before, Duration::from_secs(60), row);
    // The poison's three failed calls are its attempts, not duplicates; it reached a final
    // state twice by design (dead, then completed after the replay).
    row.extra_executions = row.extra_executions.saturating_sub(attempts);
    if dead {
        row.duplicate_state_changes -= 1;
        row.ok = row.lost == 0 && row.unexpected == 0 && row.duplicate_state_changes == 0 && row.repeated_attempts == 0;
    }
    row.broken |= !(ids_ok && poison_ok && rs < 300);
    stop_consumers(b, &consumer);
    Ok(row)
}

/// 8: every job any case got a 2xx for, read once more (after sweeps) against its final
/// state: lost, unexpected, recovered, over the whole battery.
fn drain(b: &mut Battery) -> anyhow::Result<Row> {
    let mut row = Row::default();
    let ids = consumers(b, 1, "25")?;
    let all = b.all.clone();
    let states = ledger::settle(&b.api, &all, Duration::from_secs(120));
    for t in &all {
        let j = states.get(&t.id).cloned().unwrap_or(Value::Null);
        let state = j["state"].as_str().unwrap_or("unread");
        if !ledger::FINAL.contains(&state) {
            row.lost += 1;
        } else if state != t.expect {
            row.unexpected += 1;
        }
        if j["attempt"].as_u64().unwrap_or(1) > 1 {
            row.recovered += 1;
        }
        // Calls beyond the attempts made: a delivery of an attempt that already ran.
        let attempts = j["attempt"].as_u64().unwrap_or(1) as usize;
        row.extra_executions += b.hooks.received(&t.path).len().saturating_sub(attempts);
    }
    row.n = all.len();
    row.notes.push(format!("{} jobs of {} cases", all.len(), all.iter().map(|t| t.case).collect::<HashSet<_>>().len()));
    row.ok = row.lost == 0 && row.unexpected == 0;
    stop_consumers(b, &ids);
    Ok(row)
}

/// 9: workflow runs (`steps.demo` of examples/agent-workflow: a call, a sleep, a call, a
/// wait for `chaos.go`, a call; each call a step at a counting upstream) under faults: the
/// consumers are killed with SIGKILL mid-step and replaced, workerd is killed while the
/// runs sleep and wait, and each run's event is sent twice at once with one id and once
/// more with another. Checked: every run completes; no upstream call of a step arrives after
/// the step was recorded (`repeated_attempts` counts those); each run is resumed once.
fn workflows(b: &mut Battery) -> anyhow::Result<Row> {
    let (runs, kills) = if b.s.quick { (16, 4) } else { (60, 12) };
    let mut row = Row::default();
    let mut vars = base_vars();
    vars.push(("JOB_TYPES".into(), json!({ "steps.demo": { "lane": "native", "timeout": "60s" } }).to_string()));
    b.stack.restart_wrangler(vars)?;
    // Wall time of the hooks' receipt instants, to compare with the steps' ended_at.
    let (wall0, mono0) = (std::time::SystemTime::now(), Instant::now());
    let wall_ms = |at: Instant| {
        let t = wall0 + at.saturating_duration_since(mono0);
        t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    };
    let env = [("EDGEJOBS_CONCURRENCY", "10")];
    let mut ids = vec![
        b.stack.start_consumer_binary("agent-workflow", &env)?,
        b.stack.start_consumer_binary("agent-workflow", &env)?,
    ];
    let seed = b.s.seed;
    let mut made = Vec::new();
    for r in 0..runs {
        let urls: Vec<String> = (0..3)
            .map(|step| {
                let delay = Duration::from_millis(b.rng.range(200, 1200));
                ledger::upstream(&b.hooks, 9, r * 3 + step, seed, Reply::status(200).delay(delay)).1
            })
            .collect();
        let spec = json!({ "type": "steps.demo", "max_attempts": 10,
            "payload": { "urls": urls, "order_id": r, "sleep_ms": b.rng.range(200, 2000) } });
        match b.api.enqueue(&spec) {
            api::Sent::Created(id) => made.push((r, id)),
            api::Sent::Refused(..) => row.refused += 1,
            api::Sent::Indeterminate(_) => row.indeterminate += 1,
        }
    }
    row.n = made.len();
    // Kill a consumer that runs steps, then replace it.
    let mut missed = 0;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(b.rng.range(300, 900)));
        missed += usize::from(!kill_a_busy_one(b, &mut ids, "agent-workflow")?);
        row.faults += 1;
    }
    if missed > 0 {
        row.notes.push(format!("{missed} kills found no step running"));
    }
    // workerd dies while the runs sleep and wait.
    b.stack.kill_wrangler();
    row.faults += 1;
    b.stack.start_wrangler()?;
    let waiting = |id: &str| {
        b.api.job(id).ok().flatten().is_some_and(|j| {
            j["state"] == "scheduled"
                && j["steps"]
                    .as_array()
                    .and_then(|s| s.last())
                    .is_some_and(|s| s["name"] == "go" && s["state"] == "waiting")
        })
    };
    // The sweep re-sends what the killed workerd's in-memory queue lost (as `ledger::settle`).
    let mut swept = Instant::now();
    let mut sweep = |b: &Battery| {
        if swept.elapsed() >= Duration::from_secs(4) {
            b.api.sweep();
            swept = Instant::now();
        }
    };
    let all_wait = wait_until(Duration::from_secs(180), || {
        sweep(b);
        made.iter().all(|(_, id)| waiting(id))
    });
    if !all_wait {
        let stuck: Vec<String> = made
            .iter()
            .filter(|(_, id)| !waiting(id))
            .filter_map(|(_, id)| b.api.job(id).ok().flatten())
            .map(|j| format!("{} {} {}", j["id"], j["state"], j["steps"]))
            .take(3)
            .collect();
        row.notes.push(format!("not every run reached its wait in 180 s: {stuck:?}"));
    }
    // Each run's event: twice at once with one id, then once more with another id.
    let mut resumed = 0u64;
    let mut duplicates = 0u64;
    for (r, _) in &made {
        let event = json!({ "name": "chaos.go", "id": format!("go-{seed:x}-{r}"), "data": { "order_id": r } });
        let answers: Vec<Value> = std::thread::scope(|s| {
            let sends: Vec<_> = (0..2).map(|_| s.spawn(|| b.api.post("/v1/events", &event, false))).collect();
            sends.into_iter().filter_map(|h| h.join().ok().and_then(Result::ok)).map(|(_, v)| v).collect()
        });
        let again = b.api.post("/v1/events", &json!({ "name": "chaos.go", "data": { "order_id": r } }), false);
        for a in answers.iter().chain(again.iter().map(|(_, v)| v)) {
            resumed += a["resumed"].as_u64().unwrap_or(0);
            duplicates += u64::from(a["duplicate"] == true);
        }
    }
    row.notes.push(format!("{resumed} resumes for {} runs, {duplicates} duplicate sends answered", made.len()));
    if all_wait && resumed != made.len() as u64 {
        row.broken = true;
        row.notes.push("an event resumed a run twice, or a run was not resumed".into());
    }
    // Every run completes; no step's upstream call arrives after its record.
    let done = |id: &str| b.api.job(id).ok().flatten().filter(|j| j["state"] == "completed");
    wait_until(Duration::from_secs(180), || {
        sweep(b);
        made.iter().all(|(_, id)| done(id).is_some())
    });
    for (r, id) in &made {
        let Some(job) = done(id) else {
            row.lost += 1;
            continue;
        };
        for step in 0..3 {
            let path = format!("/c9/{seed:x}/{}", r * 3 + step);
            let calls = b.hooks.received(&path);
            row.extra_executions += calls.len().saturating_sub(1);
            let name = format!("call-{step}");
            let ended = job["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == name.as_str()))
                .and_then(|s| s["ended_at"].as_str())
                .and_then(edgejobs_core::time::parse_rfc3339)
                .unwrap_or(0);
            row.repeated_attempts += calls.iter().filter(|c| wall_ms(c.at) > ended + 5).count();
            if calls.is_empty() {
                row.unexpected += 1;
            }
        }
    }
    row.recovered = made.len();
    row.ok = row.lost == 0 && row.unexpected == 0 && row.repeated_attempts == 0;
    if row.repeated_attempts > 0 {
        row.notes.push(format!("{} step calls arrived after their step was recorded", row.repeated_attempts));
    }
    stop_consumers(b, &ids);
    b.stack.restart_wrangler(base_vars())?;
    Ok(row)
}
