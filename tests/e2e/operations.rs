//! Tests of the scheduled operations through `/__scheduled`: backups with manifests and
//! hashes, verification, a double-fired cron, the disaster-recovery restore, retention of
//! jobs (with archive) and of backups, and the sweep recovering lost queue messages.

use std::collections::BTreeMap;
use std::time::Duration;

use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, enqueue_on, ensure, job_on, wait_on};

pub const TESTS: &[Test] = &[
    ("backup_writes_manifest_and_hashes_and_verifies", backup_writes_manifest_and_hashes_and_verifies),
    ("double_fired_backup_cron_yields_complete_backups", double_fired_backup_cron_yields_complete_backups),
    ("disaster_recovery_restores_every_job_identically", disaster_recovery_restores_every_job_identically),
    ("retention_archives_and_deletes_jobs_and_old_backups", retention_archives_and_deletes_jobs_and_old_backups),
    ("sweep_recovers_jobs_whose_queue_messages_were_lost", sweep_recovers_jobs_whose_queue_messages_were_lost),
    ("cron_steps_run_even_when_another_fails", cron_steps_run_even_when_another_fails),
];

const BACKUP_CRON: &str = "0+2+*+*+*";
const MAINTENANCE_CRON: &str = "*/5+*+*+*+*";

/// Fires a cron trigger the way `wrangler dev --test-scheduled` allows.
fn fire(ctx: &Ctx, edge: &str, cron: &str) -> anyhow::Result<()> {
    let r = ctx.http.get(format!("{edge}/__scheduled?cron={cron}")).send()?;
    ensure(r.status().is_success(), || format!("/__scheduled answered {}", r.status()))
}

fn admin(ctx: &Ctx, edge: &str, key: &str, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Resp> {
    let url = format!("{edge}{path}");
    let req = match method {
        "POST" => ctx.http.post(url).json(&body.unwrap_or(json!({}))),
        _ => ctx.http.get(url),
    };
    ctx.send(req.bearer_auth(key))
}

fn backups(ctx: &Ctx, edge: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let r = admin(ctx, edge, key, "GET", "/v1/admin/backups", None)?;
    ensure(r.status == 200, || format!("list: {} {}", r.status, r.body))?;
    Ok(r.body["backups"].as_array().cloned().unwrap_or_default())
}

fn backup_writes_manifest_and_hashes_and_verifies(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.enqueue(&json!({ "type": "noop" }))?;
    let r = admin(ctx, &ctx.edge, &ctx.api_key, "POST", "/v1/admin/backups", None)?;
    ensure(r.status == 403, || format!("a jobs key cannot back up: {}", r.status))?;
    let r = admin(ctx, &ctx.edge, &ctx.admin_key, "POST", "/v1/admin/backups", None)?;
    ensure(r.status == 201, || format!("backup: {} {}", r.status, r.body))?;
    let m = &r.body;
    ensure(
        m["schema_version"] == 1 && m["shard_count"] == 16 && m["shards"].as_array().is_some_and(|s| s.len() == 16),
        || format!("{m}"),
    )?;
    ensure(m["total_rows"].as_u64().is_some_and(|n| n >= 1), || format!("rows: {m}"))?;
    let id = m["id"].as_str().unwrap_or_default().to_owned();
    let v = admin(ctx, &ctx.edge, &ctx.admin_key, "POST", &format!("/v1/admin/backups/{id}/verify"), None)?;
    ensure(v.status == 200 && v.body["valid"] == true && v.body["problems"] == json!([]), || {
        format!("verify: {}", v.body)
    })?;
    let r = admin(ctx, &ctx.edge, &ctx.admin_key, "GET", "/v1/admin/backups/latest", None)?;
    ensure(
        r.status == 200 && r.body["valid"] == true && r.body["age_seconds"].as_f64().is_some_and(|a| a < 300.0),
        || format!("latest: {}", r.body),
    )?;
    let listed = backups(ctx, &ctx.edge, &ctx.admin_key)?;
    ensure(listed.iter().any(|b| b["id"] == id.as_str() && b["valid"] == true), || format!("listed: {listed:?}"))?;
    // The cron does the same; health and metrics see the backup.
    let before = listed.len();
    fire(ctx, &ctx.edge, BACKUP_CRON)?;
    ensure(
        wait_until(Duration::from_secs(20), || backups(ctx, &ctx.edge, &ctx.admin_key).is_ok_and(|b| b.len() > before)),
        || "the cron backed up".into(),
    )?;
    // Health's checks are shown to an admin key.
    let mut h = Value::Null;
    let seen = wait_until(Duration::from_secs(15), || {
        h = ctx
            .send(ctx.http.get(ctx.url("/health")).bearer_auth(&ctx.admin_key))
            .map(|r| r.body)
            .unwrap_or(Value::Null);
        h["checks"]["backup"]["ok"] == true
    });
    ensure(seen, || format!("health sees the backup: {h}"))?;
    let r = admin(
        ctx,
        &ctx.edge,
        &ctx.admin_key,
        "POST",
        "/v1/admin/backups/2001-01-01T00-00-00-000Z-00000000/verify",
        None,
    )?;
    ensure(r.status == 404 && r.code() == "not_found", || format!("unknown backup: {} {}", r.status, r.body))?;
    let r = admin(ctx, &ctx.edge, &ctx.admin_key, "POST", "/v1/admin/backups/..%2Fjobs/verify", None)?;
    ensure(r.status == 404, || format!("a path-like id: {} {}", r.status, r.body))
}

fn double_fired_backup_cron_yields_complete_backups(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let key = stack.secrets.admin_key.clone();
        let before = backups(ctx, &stack.edge_url, &key)?.len();
        std::thread::scope(|s| {
            let a = s.spawn(|| fire(ctx, &stack.edge_url, BACKUP_CRON));
            let b = s.spawn(|| fire(ctx, &stack.edge_url, BACKUP_CRON));
            a.join().map_err(|_| anyhow::anyhow!("panicked"))??;
            b.join().map_err(|_| anyhow::anyhow!("panicked"))?
        })?;
        let mut all = Vec::new();
        let done = wait_until(Duration::from_secs(30), || {
            all = backups(ctx, &stack.edge_url, &key).unwrap_or_default();
            all.len() >= before + 2 && all.iter().all(|b| b["valid"] == true)
        });
        ensure(done, || format!("two complete backups: {all:?}"))?;
        for b in &all[..2] {
            let id = b["id"].as_str().unwrap_or_default();
            let v = admin(ctx, &stack.edge_url, &key, "POST", &format!("/v1/admin/backups/{id}/verify"), None)?;
            ensure(v.body["valid"] == true, || format!("{id}: {}", v.body))?;
        }
        ensure(all[0]["id"] != all[1]["id"], || "distinct ids".into())
    })
}

fn disaster_recovery_restores_every_job_identically(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let bad = ctx.hooks.script(&format!("/{}", crate::util::unique("reject")), vec![Reply::status(400)]);
        let mut ids = Vec::new();
        // Every state, spread over shards (ids land on random shards).
        for _ in 0..3 {
            let done =
                enqueue_on(ctx, stack, &json!({ "type": "noop", "payload": { "k": "completed" }, "tags": ["dr"] }))?;
            wait_on(ctx, stack, &done, "completed")?;
            let dead =
                enqueue_on(ctx, stack, &json!({ "type": "webhook", "payload": { "url": bad }, "max_attempts": 1 }))?;
            wait_on(ctx, stack, &dead, "dead")?;
            let later = enqueue_on(
                ctx,
                stack,
                &json!({ "type": "noop", "delay": "1h", "idempotency_key": edgejobs_tests::stack::random_hex(6) }),
            )?;
            let gone = enqueue_on(ctx, stack, &json!({ "type": "noop", "delay": "1h" }))?;
            crate::util::cancel_on(ctx, stack, &gone)?;
            // No consumer runs on this stack: native jobs stay queued, or become active
            // when we report a start as a consumer would.
            let waiting = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
            let running = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
            let r = crate::util::report_on(ctx, stack, &running, &json!({ "event": "start", "attempt": 1 }))?;
            ensure(r.status == 200, || format!("start: {}", r.body))?;
            ids.extend([done, dead, later, gone, waiting, running]);
        }
        // A workflow run waiting for an event (its wait reported by hand, as a consumer would):
        // the restore gives it back its wait, indexed again (the wipe takes the index too).
        let order = edgejobs_tests::stack::random_hex(4);
        let run = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "order": order } }))?;
        let r = crate::util::report_on(ctx, stack, &run, &json!({ "event": "start", "attempt": 1 }))?;
        let lease = r.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let wait = json!({ "event": "step", "attempt": 1, "lease": lease, "step": { "kind": "wait", "seq": 0,
            "name": "paid", "event": "dr.paid", "matches": [{ "event": "/data/order", "value": order }] } });
        let r = crate::util::report_on(ctx, stack, &run, &wait)?;
        ensure(r.status == 200 && r.body["state"] == "scheduled", || format!("the wait: {} {}", r.status, r.body))?;
        ids.push(run.clone());
        std::thread::sleep(Duration::from_secs(2)); // let the hand-offs settle
        let before: BTreeMap<String, Value> =
            ids.iter().map(|id| Ok((id.clone(), job_on(ctx, stack, id)?))).collect::<anyhow::Result<_>>()?;
        let states: std::collections::BTreeSet<&str> = before.values().filter_map(|j| j["state"].as_str()).collect();
        ensure(states.len() == 6, || format!("every state present: {states:?}"))?;
        let key = stack.secrets.admin_key.clone();
        let r = admin(ctx, &stack.edge_url, &key, "POST", "/v1/admin/backups", None)?;
        ensure(r.status == 201, || format!("backup: {}", r.body))?;
        let backup = r.body["id"].as_str().unwrap_or_default().to_owned();
        // A second backup, which we damage on disk below.
        let r = admin(ctx, &stack.edge_url, &key, "POST", "/v1/admin/backups", None)?;
        ensure(r.status == 201, || "second backup".into())?;
        let tampered = r.body["id"].as_str().unwrap_or_default().to_owned();
        // Disaster: the job store is gone; the bucket survives.
        stack.stop_wrangler();
        stack.wipe_durable_objects()?;
        stack.start_wrangler()?;
        let gone = ctx
            .send(ctx.http.get(format!("{}/v1/jobs/{}", stack.edge_url, ids[0])).bearer_auth(&stack.secrets.api_key))?;
        ensure(gone.status == 404, || "the store really is empty".into())?;
        let r = admin(ctx, &stack.edge_url, &key, "POST", "/v1/admin/restore", Some(json!({ "backup": "nope" })))?;
        ensure(r.status == 404, || format!("unknown backup: {}", r.status))?;
        // A backup whose object was damaged fails verification and is refused.
        tamper_backup(stack, &before)?;
        let r = admin(ctx, &stack.edge_url, &key, "POST", &format!("/v1/admin/backups/{tampered}/verify"), None)?;
        ensure(r.status == 200 && r.body["valid"] == false, || format!("tampered verify: {}", r.body))?;
        let r = admin(ctx, &stack.edge_url, &key, "POST", "/v1/admin/restore", Some(json!({ "backup": tampered })))?;
        ensure(r.status == 409 && r.code() == "invalid_transition", || {
            format!("tampered restore: {} {}", r.status, r.body)
        })?;
        let r = admin(ctx, &stack.edge_url, &key, "POST", "/v1/admin/restore", Some(json!({ "backup": backup })))?;
        ensure(r.status == 200, || format!("restore: {} {}", r.status, r.body))?;
        for (id, job) in &before {
            let mut now = job_on(ctx, stack, id)?;
            // A restored job carries its restore epoch (hand-offs are keyed by it); the rest
            // is as it was.
            let epoch = now.as_object_mut().and_then(|o| o.remove("epoch"));
            ensure(epoch.as_ref().and_then(Value::as_u64).is_some_and(|e| e > 0), || {
                format!("{id} has no restore epoch: {now}")
            })?;
            // A queued native job is handed off again after a restore (its epoch is new), so
            // its stream entry may be a fresh one for the same attempt.
            let mut job = job.clone();
            if job["lane"] == "native" && job["state"] == "queued" {
                let (a, b) = (job["stream_entry"]["attempt"].clone(), now["stream_entry"]["attempt"].clone());
                ensure(b.is_null() || a == b, || format!("{id} handed off for another attempt: {job} / {now}"))?;
                for j in [&mut job, &mut now] {
                    j.as_object_mut().map(|o| o.remove("stream_entry"));
                }
            }
            ensure(now == job, || format!("{id} differs after restore:\nbefore {job}\nafter  {now}"))?;
        }
        // The restored run resumes where it was: its event finds it.
        let sent = ctx.send(
            ctx.http
                .post(format!("{}/v1/events", stack.edge_url))
                .bearer_auth(&stack.secrets.api_key)
                .json(&json!({ "name": "dr.paid", "data": { "order": order } })),
        )?;
        ensure(sent.status == 202 && sent.body["resumed"] == 1, || {
            format!("the event after the restore: {}", sent.body)
        })?;
        let resumed = job_on(ctx, stack, &run)?;
        ensure(resumed["state"] == "queued" && resumed["steps"][0]["state"] == "completed", || {
            format!("the restored run resumed: {resumed}")
        })?;
        Ok(())
    })
}

fn metric(ctx: &Ctx, stack: &Stack, name: &str) -> anyhow::Result<f64> {
    crate::util::metric_on(ctx, stack, name)
}

fn retention_archives_and_deletes_jobs_and_old_backups(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        stack.restart_wrangler(vec![
            ("RETENTION_COMPLETED_KEEP".into(), "2".into()),
            ("BACKUP_RETENTION".into(), "1s".into()),
            ("SWEEP_QUEUED_AFTER".into(), "1h".into()),
        ])?;
        let result = (|| -> anyhow::Result<()> {
            let key = stack.secrets.admin_key.clone();
            // Jobs of a type nothing else on this stack completes: only ours count.
            let ok = ctx.hooks.script(&format!("/{}", crate::util::unique("ok")), vec![Reply::status(200)]);
            let mut ids = Vec::new();
            for _ in 0..5 {
                let id = enqueue_on(ctx, stack, &json!({ "type": "webhook", "payload": { "url": ok } }))?;
                wait_on(ctx, stack, &id, "completed")?;
                ids.push(id);
                std::thread::sleep(Duration::from_millis(20));
            }
            for _ in 0..2 {
                ensure(admin(ctx, &stack.edge_url, &key, "POST", "/v1/admin/backups", None)?.status == 201, || {
                    "backup".into()
                })?;
            }
            std::thread::sleep(Duration::from_millis(1500));
            let (deleted0, archived0) = (
                metric(ctx, stack, "edgejobs_retention_deleted_total")?,
                metric(ctx, stack, "edgejobs_retention_archived_total")?,
            );
            fire(ctx, &stack.edge_url, MAINTENANCE_CRON)?;
            let gone = |id: &String| job_on(ctx, stack, id).is_ok_and(|j| j["error"]["code"] == "job_not_found");
            ensure(wait_until(Duration::from_secs(20), || ids[..3].iter().all(gone)), || {
                let states: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        job_on(ctx, stack, id).map(|j| format!("{}", j["state"])).unwrap_or_else(|e| e.to_string())
                    })
                    .collect();
                let deleted = metric(ctx, stack, "edgejobs_retention_deleted_total").unwrap_or(-1.0);
                format!("the 3 oldest completed jobs are deleted: states {states:?}, deleted {deleted0}→{deleted}")
            })?;
            for id in &ids[3..] {
                ensure(job_on(ctx, stack, id)?["state"] == "completed", || format!("{id}: the newest 2 are kept"))?;
            }
            let (deleted, archived) = (
                metric(ctx, stack, "edgejobs_retention_deleted_total")?,
                metric(ctx, stack, "edgejobs_retention_archived_total")?,
            );
            ensure(deleted - deleted0 >= 3.0 && archived - archived0 == deleted - deleted0, || {
                format!("deleted {deleted0}→{deleted}, archived {archived0}→{archived}")
            })?;
            // Backups: everything past the 1 s retention went, except the newest valid one.
            let left = backups(ctx, &stack.edge_url, &key)?;
            ensure(left.len() == 1 && left[0]["valid"] == true, || format!("backups left: {left:?}"))?;
            // Running the cron again changes nothing more.
            fire(ctx, &stack.edge_url, MAINTENANCE_CRON)?;
            std::thread::sleep(Duration::from_secs(2));
            ensure(backups(ctx, &stack.edge_url, &key)?.len() == 1, || "idempotent".into())?;
            ensure(ids[3..].iter().all(|id| job_on(ctx, stack, id).is_ok_and(|j| j["state"] == "completed")), || {
                "idempotent".into()
            })
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

fn sweep_recovers_jobs_whose_queue_messages_were_lost(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let vars = || vec![("SWEEP_QUEUED_AFTER".into(), "1s".into()), ("SWEEP_ACTIVE_GRACE".into(), "1s".into())];
        stack.restart_wrangler(vars())?;
        let result = (|| -> anyhow::Result<()> {
            let ids: Vec<String> = (0..10)
                .map(|_| {
                    enqueue_on(ctx, stack, &json!({ "type": "noop", "timeout": "1s", "backoff": { "base": "100ms" } }))
                })
                .collect::<anyhow::Result<_>>()?;
            // Local queues live in memory: a restart drops whatever was not delivered yet
            // (and an attempt cut off mid-way stays active until the sweep times it out).
            stack.restart_wrangler(vars())?;
            let stuck = ids.iter().filter(|id| job_on(ctx, stack, id).is_ok_and(|j| j["state"] == "queued")).count();
            std::thread::sleep(Duration::from_millis(1500));
            let resent0 = metric(ctx, stack, "edgejobs_sweep_resent_total")?;
            let all_done = || ids.iter().all(|id| job_on(ctx, stack, id).is_ok_and(|j| j["state"] == "completed"));
            let mut done = false;
            for _ in 0..15 {
                fire(ctx, &stack.edge_url, MAINTENANCE_CRON)?;
                if wait_until(Duration::from_secs(3), all_done) {
                    done = true;
                    break;
                }
            }
            ensure(done, || "every acknowledged job completes after the sweep".into())?;
            let resent = metric(ctx, stack, "edgejobs_sweep_resent_total")? - resent0;
            ensure(resent >= stuck as f64, || format!("{stuck} jobs were stuck; the sweep re-sent {resent}"))?;
            eprintln!("sweep: {stuck} of 10 jobs lost their queue message; {resent} re-sent");
            let h =
                ctx.send(ctx.http.get(format!("{}/health", stack.edge_url)).bearer_auth(&stack.secrets.admin_key))?;
            ensure(h.body["checks"]["sweep"]["ok"] == true, || format!("health sees the sweep: {}", h.body))
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

/// A deployment whose R2 bucket binding is missing: job retention (which archives to R2
/// first) and backup retention fail, each is logged and counted, and neither stops the
/// other or the sweep; no job is deleted unarchived. The backup cron fails and is counted.
fn cron_steps_run_even_when_another_fails(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let vars = vec![("RETENTION_COMPLETED_AGE".into(), "1s".into()), ("SWEEP_QUEUED_AFTER".into(), "1h".into())];
        stack.restart_wrangler_without(vars, &["[[r2_buckets]]"])?;
        let result = (|| -> anyhow::Result<()> {
            let ok = ctx.hooks.script(&format!("/{}", crate::util::unique("ok")), vec![Reply::status(200)]);
            let id = enqueue_on(ctx, stack, &json!({ "type": "webhook", "payload": { "url": ok } }))?;
            wait_on(ctx, stack, &id, "completed")?;
            std::thread::sleep(Duration::from_millis(1500));
            let failures = |step: &str| metric(ctx, stack, &format!("edgejobs_cron_failures_total{{step=\"{step}\"}}"));
            let sweep_gauge = "edgejobs_sweep_last_run_timestamp_seconds";
            let before = (
                failures("job_retention")?,
                failures("backup_retention")?,
                failures("sweep")?,
                metric(ctx, stack, sweep_gauge)?,
            );
            let log_path = stack.opts.state_dir.join("logs/wrangler.log");
            let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
            fire(ctx, &stack.edge_url, MAINTENANCE_CRON)?;
            let mut now = before;
            let counted = wait_until(Duration::from_secs(15), || {
                now = (
                    failures("job_retention").unwrap_or(0.0),
                    failures("backup_retention").unwrap_or(0.0),
                    failures("sweep").unwrap_or(0.0),
                    metric(ctx, stack, sweep_gauge).unwrap_or(0.0),
                );
                now.0 == before.0 + 1.0 && now.1 == before.1 + 1.0 && now.3 > before.3
            });
            ensure(counted && now.2 == before.2, || {
                format!("(job retention, backup retention, sweep failures, sweep gauge): {before:?} -> {now:?}")
            })?;
            ensure(job_on(ctx, stack, &id)?["state"] == "completed", || {
                "a job that could not be archived is kept".into()
            })?;
            let b0 = failures("backup")?;
            fire(ctx, &stack.edge_url, BACKUP_CRON)?;
            ensure(wait_until(Duration::from_secs(15), || failures("backup").is_ok_and(|b| b == b0 + 1.0)), || {
                "the failed backup is counted".into()
            })?;
            let log = std::fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
            for step in ["job_retention", "backup_retention"] {
                let logged = log
                    .lines()
                    .any(|l| l.contains("scheduled step failed") && l.contains(&format!("\"step\":\"{step}\"")));
                ensure(logged, || format!("{step}'s failure is logged: {log}"))?;
            }
            Ok(())
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

/// Flips one byte inside a shard object of the newest backup, in the local R2 blob store
/// (a stand-in for bit rot or a bad write), and returns that backup's id.
fn tamper_backup(stack: &Stack, jobs: &BTreeMap<String, Value>) -> anyhow::Result<()> {
    let root = stack.opts.state_dir.join("wrangler/v3/r2");
    let id = jobs.keys().next().cloned().unwrap_or_default();
    let mut blobs = Vec::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(&id)) {
                blobs.push(p);
            }
        }
    }
    // Two backups hold the job; damage the newest copy.
    blobs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let blob = blobs.last().ok_or_else(|| anyhow::anyhow!("no R2 blob holds {id}"))?;
    let mut bytes = std::fs::read(blob)?;
    let at = String::from_utf8_lossy(&bytes).find(&id).unwrap_or(0) + 5;
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(blob, bytes)?;
    Ok(())
}
