//! Schedules end to end: a schedule every second runs and its jobs complete, pause stops
//! it, resume and trigger work, `skip` holds back a run while a long job is active, a
//! wrangler restart loses no schedule and creates no duplicate tick, a backup and restore
//! keep it, the API refuses bad input with the field and position, and a schedule whose
//! runs carry a concurrency key lives on the key's shard (its runs wait for the key's other
//! jobs) while its name answers as any schedule's.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, ensure, metric, unique};

pub const TESTS: &[Test] = &[
    ("schedules_every_second_runs_pauses_resumes_and_triggers", every_second_runs_pauses_resumes_and_triggers),
    ("schedules_skip_holds_back_runs_while_a_long_job_is_active", skip_holds_back_runs_while_a_long_job_is_active),
    ("schedules_queue_one_keeps_one_tick_waiting_for_the_long_job", queue_one_keeps_one_tick_waiting),
    ("schedules_refuse_bad_input_and_need_an_admin_key_to_change", refuse_bad_input_and_need_an_admin_key),
    ("schedules_survive_a_wrangler_restart_without_duplicate_ticks", survive_a_wrangler_restart),
    ("schedules_are_kept_by_backup_and_restore", kept_by_backup_and_restore),
    ("schedules_lost_alarm_is_rearmed_by_the_maintenance_cron", lost_alarm_is_rearmed_by_the_maintenance_cron),
    ("schedules_runs_count_with_their_concurrency_keys_other_jobs", runs_count_with_their_keys_other_jobs),
];

/// Where requests go: the shared stack or the fault stack, with its keys.
struct On<'a> {
    ctx: &'a Ctx,
    edge: String,
    jobs_key: String,
    admin_key: String,
}

impl<'a> On<'a> {
    fn shared(ctx: &'a Ctx) -> On<'a> {
        On { ctx, edge: ctx.edge.clone(), jobs_key: ctx.api_key.clone(), admin_key: ctx.admin_key.clone() }
    }

    fn fault(ctx: &'a Ctx, stack: &Stack) -> On<'a> {
        On {
            ctx,
            edge: stack.edge_url.clone(),
            jobs_key: stack.secrets.api_key.clone(),
            admin_key: stack.secrets.admin_key.clone(),
        }
    }

    fn req(&self, method: &str, path: &str, key: &str, body: Option<&Value>) -> anyhow::Result<Resp> {
        let url = format!("{}{path}", self.edge);
        let http = &self.ctx.http;
        let req = match method {
            "POST" => http.post(url).json(body.unwrap_or(&json!({}))),
            "PATCH" => http.patch(url).json(body.unwrap_or(&json!({}))),
            "DELETE" => http.delete(url),
            _ => http.get(url),
        };
        self.ctx.send(req.bearer_auth(key))
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Resp> {
        self.req(method, path, &self.admin_key, body)
    }

    fn read(&self, path: &str) -> anyhow::Result<Resp> {
        self.req("GET", path, &self.jobs_key, None)
    }

    fn create(&self, body: &Value) -> anyhow::Result<Value> {
        let r = self.admin("POST", "/v1/schedules", Some(body))?;
        ensure(r.status == 201, || format!("create: {} {}", r.status, r.body))?;
        Ok(r.body)
    }

    fn schedule(&self, name: &str) -> anyhow::Result<Value> {
        let r = self.read(&format!("/v1/schedules/{name}"))?;
        ensure(r.status == 200, || format!("get {name}: {} {}", r.status, r.body))?;
        Ok(r.body)
    }

    /// Every job the schedule made (by its tag), newest first, following cursors.
    fn runs(&self, name: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let mut path = format!("/v1/jobs?tag=schedule:{name}&limit=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = self.read(&path)?;
            ensure(r.status == 200, || format!("list: {} {}", r.status, r.body))?;
            out.extend(r.body["jobs"].as_array().cloned().unwrap_or_default());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
        anyhow::bail!("more than 50 pages of runs")
    }

    fn delete(&self, name: &str) -> anyhow::Result<()> {
        let r = self.admin("DELETE", &format!("/v1/schedules/{name}"), None)?;
        ensure(r.status == 200, || format!("delete: {} {}", r.status, r.body))
    }
}

/// The idempotency keys of a schedule's jobs.
fn keys_of(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|j| j["idempotency_key"].as_str().unwrap_or_default().to_owned()).collect()
}

fn every_second_runs_pauses_resumes_and_triggers(ctx: &Ctx) -> anyhow::Result<()> {
    let on = On::shared(ctx);
    let name = unique("every-second");
    let created = on.create(&json!({
        "name": name, "cron": "* * * * * *", "timezone": "Europe/Berlin",
        "job": { "type": "noop", "payload": { "from": "schedule" }, "tags": ["mine"] }
    }))?;
    ensure(created["next_at"].is_string() && created["upcoming"].as_array().map(Vec::len) == Some(5), || {
        format!("a new schedule shows its next tick and the next five: {created}")
    })?;
    // It runs every second and its jobs complete.
    ensure(
        wait_until(Duration::from_secs(30), || {
            on.runs(&name).is_ok_and(|r| r.iter().filter(|j| j["state"] == "completed").count() >= 3)
        }),
        || "three runs completed".into(),
    )?;
    let s = on.schedule(&name)?;
    let runs = s["runs"].as_array().cloned().unwrap_or_default();
    ensure(runs.iter().any(|r| r["state"] == "completed" && r["kind"] == "tick"), || {
        format!("GET shows the runs with their jobs' states: {s}")
    })?;
    let jobs = on.runs(&name)?;
    ensure(jobs.iter().all(|j| j["tags"] == json!(["mine", format!("schedule:{name}")])), || {
        format!("every run is tagged: {jobs:?}")
    })?;
    let keys = keys_of(&jobs);
    let distinct: BTreeSet<&String> = keys.iter().collect();
    ensure(keys.iter().all(|k| k.starts_with(&format!("schedule:{name}:"))) && distinct.len() == keys.len(), || {
        format!("one job per tick, keyed by it: {keys:?}")
    })?;
    // Lateness and runs are in /metrics.
    let page = ctx.http.get(ctx.url("/metrics")).bearer_auth(&ctx.admin_key).send()?.text()?;
    let series = format!("edgejobs_schedule_runs_total{{schedule=\"{name}\",kind=\"tick\"}}");
    ensure(metric(&page, &series).is_some_and(|n| n >= 3.0), || format!("{series} in /metrics"))?;
    ensure(metric(&page, "edgejobs_schedule_lateness_seconds_count").is_some_and(|n| n >= 3.0), || {
        "the lateness histogram counts runs".into()
    })?;
    let health = ctx.http.get(ctx.url("/health")).bearer_auth(&ctx.admin_key).send()?.json::<Value>()?;
    ensure(
        health["checks"]["schedules"]["ok"] == true && health["checks"]["schedules"]["active"].as_u64() >= Some(1),
        || format!("/health counts the schedule: {}", health["checks"]["schedules"]),
    )?;

    // Pause: no run is created while paused.
    let r = on.admin("POST", &format!("/v1/schedules/{name}/pause"), None)?;
    ensure(r.status == 200 && r.body["paused"] == true, || format!("pause: {} {}", r.status, r.body))?;
    let paused_total = r.body["runs_total"].as_u64().unwrap_or(0);
    let before = on.runs(&name)?.len();
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        std::thread::sleep(Duration::from_millis(500));
        let n = on.runs(&name)?.len();
        ensure(n == before, || format!("a paused schedule made a run: {before} -> {n}"))?;
    }
    ensure(on.schedule(&name)?["runs_total"].as_u64() == Some(paused_total), || {
        "runs_total stays while paused".into()
    })?;
    let health = ctx.http.get(ctx.url("/health")).bearer_auth(&ctx.admin_key).send()?.json::<Value>()?;
    ensure(health["checks"]["schedules"]["paused"].as_u64() >= Some(1), || {
        format!("/health counts the paused schedule: {}", health["checks"]["schedules"])
    })?;

    // Trigger: a run now, even while paused.
    let r = on.admin("POST", &format!("/v1/schedules/{name}/trigger"), None)?;
    ensure(r.status == 201 && r.body["created"] == true, || format!("trigger: {} {}", r.status, r.body))?;
    let tid = r.body["job"]["id"].as_str().unwrap_or_default().to_owned();
    ensure(r.body["schedule"]["runs"][0]["kind"] == "trigger", || format!("the trigger is a run: {}", r.body))?;
    ctx.wait_state(&tid, "completed", Duration::from_secs(20))?;

    // Resume: runs again.
    let r = on.admin("POST", &format!("/v1/schedules/{name}/resume"), None)?;
    ensure(r.status == 200 && r.body["paused"] == false, || format!("resume: {} {}", r.status, r.body))?;
    ensure(wait_until(Duration::from_secs(20), || on.runs(&name).is_ok_and(|r| r.len() >= before + 3)), || {
        "runs after the resume".into()
    })?;
    // PATCH moves it to another cadence and keeps the history.
    let r = on.admin("PATCH", &format!("/v1/schedules/{name}"), Some(&json!({ "cron": "0 0 1 1 *" })))?;
    ensure(
        r.status == 200 && r.body["cron"] == "0 0 1 1 *" && r.body["runs_total"].as_u64() > Some(paused_total),
        || format!("patch: {} {}", r.status, r.body),
    )?;
    let listed = on.read("/v1/schedules?limit=200")?;
    ensure(
        listed.body["schedules"].as_array().is_some_and(|all| all.iter().any(|s| s["name"] == name.as_str())),
        || format!("the listing has it: {}", listed.body),
    )?;
    on.delete(&name)?;
    let r = on.read(&format!("/v1/schedules/{name}"))?;
    ensure(r.status == 404 && r.code() == "schedule_not_found", || format!("deleted: {} {}", r.status, r.body))
}

/// A schedule every second whose runs sleep `ms` (native lane), with `overlap`: waits for
/// two runs to complete, pauses it, and returns its name and state.
fn long_runs(on: &On, overlap: &str, ms: u64) -> anyhow::Result<(String, Value)> {
    let name = unique(&overlap.replace('_', "-"));
    on.create(&json!({
        "name": name, "cron": "* * * * * *", "overlap": overlap,
        "job": { "type": "sleep", "payload": { "ms": ms } }
    }))?;
    ensure(
        wait_until(Duration::from_secs(60), || {
            on.runs(&name).is_ok_and(|r| r.iter().filter(|j| j["state"] == "completed").count() >= 2)
        }),
        || "two long runs completed".into(),
    )?;
    on.admin("POST", &format!("/v1/schedules/{name}/pause"), None)?;
    let s = on.schedule(&name)?;
    Ok((name, s))
}

fn skip_holds_back_runs_while_a_long_job_is_active(ctx: &Ctx) -> anyhow::Result<()> {
    let on = On::shared(ctx);
    let (name, s) = long_runs(&on, "skip", 4000)?;
    // The precondition: ticks came while a run was active, and were skipped.
    ensure(s["skips_total"].as_u64() >= Some(2), || format!("ticks were skipped: {s}"))?;
    // No run started before the previous one's job was final.
    let mut jobs: Vec<Value> = Vec::new();
    for j in on.runs(&name)? {
        let id = j["id"].as_str().unwrap_or_default();
        jobs.push(on.read(&format!("/v1/jobs/{id}"))?.body);
    }
    jobs.sort_by(|a, b| a["created_at"].as_str().cmp(&b["created_at"].as_str()));
    for pair in jobs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let finished = prev["finished_at"].as_str().unwrap_or("9999");
        ensure(next["created_at"].as_str().unwrap_or("") >= finished, || {
            format!("run {} was created before {} ended ({finished})", next["id"], prev["id"])
        })?;
    }
    ensure(jobs.len() >= 2, || "at least two runs".into())?;
    let page = ctx.http.get(ctx.url("/metrics")).bearer_auth(&ctx.admin_key).send()?.text()?;
    let series = format!("edgejobs_schedule_skips_total{{schedule=\"{name}\",reason=\"overlap\"}}");
    ensure(metric(&page, &series).is_some_and(|n| n >= 2.0), || format!("{series} in /metrics"))?;
    on.delete(&name)
}

fn queue_one_keeps_one_tick_waiting(ctx: &Ctx) -> anyhow::Result<()> {
    let on = On::shared(ctx);
    let (name, s) = long_runs(&on, "queue_one", 3000)?;
    let runs = s["runs"].as_array().cloned().unwrap_or_default();
    // Oldest first: the second run is the tick that waited while the first ran, so it was
    // created well after its tick; the ticks beyond the one waiting were skipped.
    let mut runs: Vec<Value> = runs.into_iter().rev().collect();
    runs.retain(|r| r["kind"] == "tick");
    ensure(runs.len() >= 2, || format!("two runs: {s}"))?;
    let ms = |v: &Value| edgejobs_core::time::parse_rfc3339(v.as_str().unwrap_or("")).unwrap_or(0);
    let waited = ms(&runs[1]["at"]).saturating_sub(ms(&runs[1]["tick"]));
    ensure(waited >= 1500, || {
        format!("the second run waited for the first: {} vs {}", runs[1]["at"], runs[1]["tick"])
    })?;
    ensure(ms(&runs[1]["tick"]) < ms(&runs[0]["at"]) + 1500, || {
        format!("the waiting tick is the first one after the first run: {:?}", runs)
    })?;
    ensure(s["skips_total"].as_u64() >= Some(1), || format!("ticks beyond the waiting one were skipped: {s}"))?;
    let first = on.read(&format!("/v1/jobs/{}", runs[0]["job_id"].as_str().unwrap_or("")))?.body;
    ensure(first["finished_at"].as_str() <= runs[1]["at"].as_str(), || {
        format!("the waiting tick ran after the first run ended: {} vs {}", first["finished_at"], runs[1]["at"])
    })?;
    on.delete(&name)
}

fn refuse_bad_input_and_need_an_admin_key(ctx: &Ctx) -> anyhow::Result<()> {
    let on = On::shared(ctx);
    let name = unique("bad");
    let ok = json!({ "name": name, "cron": "0 3 * * *", "job": { "type": "noop" } });
    // A jobs key may read but not write.
    let r = on.req("POST", "/v1/schedules", &ctx.api_key, Some(&ok))?;
    ensure(r.status == 403 && r.code() == "forbidden", || format!("jobs key: {} {}", r.status, r.body))?;
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({ "name": name, "cron": "0 3 * 13 *", "job": { "type": "noop" } }), "cron", "position 7"),
        (json!({ "name": name, "cron": "0 3 * *", "job": { "type": "noop" } }), "cron", "5"),
        (json!({ "name": name, "cron": "@sometimes", "job": { "type": "noop" } }), "cron", "alias"),
        (
            json!({ "name": name, "cron": "0 3 * * *", "timezone": "Europe/Atlantis", "job": { "type": "noop" } }),
            "timezone",
            "IANA",
        ),
        (
            json!({ "name": name, "cron": "0 3 * * *", "job": { "type": "noop", "delay": "1s" } }),
            "job.delay",
            "set by the schedule",
        ),
        (
            json!({ "name": name, "cron": "0 3 * * *", "job": { "type": "noop" }, "overlap": "sometimes" }),
            "overlap",
            "queue_one",
        ),
        (json!({ "name": "has space", "cron": "0 3 * * *", "job": { "type": "noop" } }), "name", "characters"),
        (json!({ "name": name, "cron": "0 0 30 2 *", "job": { "type": "noop" } }), "cron", "no run time"),
    ];
    for (body, field, says) in cases {
        let r = on.admin("POST", "/v1/schedules", Some(&body))?;
        ensure(r.status == 400 && r.body["error"]["field"] == field, || format!("{body}: {} {}", r.status, r.body))?;
        let msg = r.body["error"]["message"].as_str().unwrap_or_default();
        ensure(msg.contains(says), || format!("{body}: the message says {says:?}: {msg}"))?;
    }
    let r = on.admin(
        "POST",
        "/v1/schedules",
        Some(&json!({ "name": name, "cron": "0 3 * * *", "job": { "type": "nope" } })),
    )?;
    ensure(r.status == 400 && r.code() == "unknown_type", || format!("unknown type: {} {}", r.status, r.body))?;
    // Nothing was created by any of them.
    let r = on.read(&format!("/v1/schedules/{name}"))?;
    ensure(r.status == 404 && r.code() == "schedule_not_found", || format!("nothing created: {}", r.body))?;
    on.create(&ok)?;
    let r = on.admin("POST", "/v1/schedules", Some(&ok))?;
    ensure(r.status == 409 && r.code() == "schedule_exists", || format!("a second create: {} {}", r.status, r.body))?;
    // A bad patch changes nothing.
    let r = on.admin("PATCH", &format!("/v1/schedules/{name}"), Some(&json!({ "cron": "0 25 * * *" })))?;
    ensure(r.status == 400 && r.body["error"]["field"] == "cron", || format!("bad patch: {} {}", r.status, r.body))?;
    let r = on.admin("PATCH", &format!("/v1/schedules/{name}"), Some(&json!({ "name": "renamed" })))?;
    ensure(r.status == 400 && r.body["error"]["field"] == "name", || format!("rename: {} {}", r.status, r.body))?;
    ensure(on.schedule(&name)?["cron"] == "0 3 * * *", || "the schedule is unchanged".into())?;
    for path in ["/v1/schedules/none-such/trigger", "/v1/schedules/no%20such/pause"] {
        let r = on.admin("POST", path, None)?;
        ensure(r.status == 404 && r.code() == "schedule_not_found", || format!("{path}: {} {}", r.status, r.body))?;
    }
    let r = on.read("/v1/schedules?limit=0")?;
    ensure(r.status == 400 && r.body["error"]["field"] == "limit", || format!("limit=0: {}", r.body))?;
    on.delete(&name)
}

/// Ticks of a schedule's jobs, from their idempotency keys.
fn ticks(on: &On, name: &str) -> anyhow::Result<Vec<String>> {
    let jobs = on.runs(name)?;
    let prefix = format!("schedule:{name}:");
    Ok(keys_of(&jobs).into_iter().map(|k| k.trim_start_matches(&prefix).to_owned()).collect())
}

/// A noop schedule every second, once it has made `runs` runs; its name.
fn every_second(on: &On, prefix: &str, runs: usize) -> anyhow::Result<String> {
    let name = unique(prefix);
    on.create(&json!({ "name": name, "cron": "* * * * * *", "job": { "type": "noop" } }))?;
    ensure(wait_until(Duration::from_secs(30), || on.runs(&name).is_ok_and(|r| r.len() >= runs)), || {
        format!("{runs} runs of {name}")
    })?;
    Ok(name)
}

fn survive_a_wrangler_restart(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let name = every_second(&On::fault(ctx, stack), "restart", 3)?;
        stack.restart_wrangler(Vec::new())?;
        let on = On::fault(ctx, stack);
        let before = on.runs(&name)?.len();
        // The schedule is there and runs again on its own: its alarm is stored with its
        // Durable Object.
        let got = on.schedule(&name)?;
        ensure(got["cron"] == "* * * * * *", || format!("the schedule survived: {got}"))?;
        ensure(wait_until(Duration::from_secs(30), || on.runs(&name).is_ok_and(|r| r.len() >= before + 3)), || {
            "runs after the restart".into()
        })?;
        on.admin("POST", &format!("/v1/schedules/{name}/pause"), None)?;
        let s = on.schedule(&name)?;
        let ticks = ticks(&on, &name)?;
        let distinct: BTreeSet<&String> = ticks.iter().collect();
        ensure(distinct.len() == ticks.len(), || format!("a tick ran twice: {ticks:?}"))?;
        // Every run the schedule recorded is one job, and every job one run.
        ensure(s["runs_total"].as_u64() == Some(ticks.len() as u64), || {
            format!("runs_total {} vs {} jobs", s["runs_total"], ticks.len())
        })?;
        on.delete(&name)
    })
}

fn kept_by_backup_and_restore(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let on = On::fault(ctx, stack);
        let name = unique("kept");
        let created = on.create(&json!({
            "name": name, "cron": "30 2 * * *", "timezone": "America/New_York", "overlap": "queue_one",
            "catch_up": "last", "job": { "type": "noop", "payload": { "n": 1 } }
        }))?;
        // A schedule whose runs hold a key lives on the key's shard, its name kept at the
        // name's: the restore puts both back.
        let (keyed, key, key_home) = off_key_shard("kept-keyed");
        on.create(&json!({ "name": keyed, "cron": "0 0 1 1 *",
            "job": { "type": "noop", "concurrency": { "key": key, "limit": 1 } } }))?;
        let r = on.admin("POST", "/v1/admin/backups", None)?;
        ensure(r.status == 201, || format!("backup: {} {}", r.status, r.body))?;
        let id = r.body["id"].as_str().unwrap_or_default().to_owned();
        ensure(r.body["schedules"]["rows"].as_u64() >= Some(2), || {
            format!("the manifest lists the schedules: {}", r.body)
        })?;
        on.delete(&name)?;
        on.delete(&keyed)?;
        let other = unique("after-backup");
        on.create(&json!({ "name": other, "cron": "0 0 * * *", "job": { "type": "noop" } }))?;
        let r = on.admin("POST", "/v1/admin/restore", Some(&json!({ "backup": id })))?;
        ensure(r.status == 200 && r.body["restored_schedules"].as_u64() >= Some(1), || {
            format!("restore: {} {}", r.status, r.body)
        })?;
        let back = on.schedule(&name)?;
        for field in ["cron", "timezone", "overlap", "catch_up", "job", "created_at", "next_at"] {
            ensure(back[field] == created[field], || format!("{field}: {} vs {}", back[field], created[field]))?;
        }
        // The restore replaced the schedules: one made after the backup is gone.
        let r = on.read(&format!("/v1/schedules/{other}"))?;
        ensure(r.status == 404, || format!("a schedule newer than the backup: {} {}", r.status, r.body))?;
        // The keyed schedule answers by name, and its run is made on its key's shard.
        let t = on.admin("POST", &format!("/v1/schedules/{keyed}/trigger"), None)?;
        ensure(t.status == 201, || format!("trigger after the restore: {} {}", t.status, t.body))?;
        let run: edgejobs_core::JobId = t.body["job"]["id"].as_str().unwrap_or_default().parse()?;
        ensure(run.shard() == key_home, || format!("the run {run} is on shard {key_home}, the key's"))?;
        on.delete(&keyed)?;
        on.delete(&name)
    })
}

/// A unique schedule name, a unique key of the default tenant whose shard (of 16) is not
/// the name's, and that shard.
fn off_key_shard(tag: &str) -> (String, String, u16) {
    let topology = edgejobs_core::topology::Topology::single(16);
    let key = unique(&format!("{tag}-key"));
    let key_home = topology.schedule_home(&edgejobs_core::tenant::Tenant::default().scope_key(&key));
    let base = unique(tag);
    let name = (0..).map(|i| format!("{base}-{i}")).find(|n| topology.schedule_home(n) != key_home);
    (name.unwrap_or(base), key, key_home)
}

fn lost_alarm_is_rearmed_by_the_maintenance_cron(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let name = every_second(&On::fault(ctx, stack), "rearm", 2)?;
        stack.stop_wrangler();
        let dropped = stack.drop_alarms()?;
        ensure(dropped >= 1, || "an alarm was there to lose".into())?;
        stack.start_wrangler()?;
        let on = On::fault(ctx, stack);
        let before = on.runs(&name)?.len();
        // The precondition: without its alarm the schedule stands still.
        ensure(!wait_until(Duration::from_secs(4), || on.runs(&name).is_ok_and(|r| r.len() > before)), || {
            "the schedule ran without an alarm: the alarm was not lost".into()
        })?;
        let r = ctx.http.get(format!("{}/__scheduled?cron=*/5+*+*+*+*", stack.edge_url)).send()?;
        ensure(r.status().is_success(), || format!("the maintenance cron answered {}", r.status()))?;
        ensure(wait_until(Duration::from_secs(30), || on.runs(&name).is_ok_and(|r| r.len() >= before + 2)), || {
            "runs after the maintenance cron re-armed the alarm".into()
        })?;
        on.admin("POST", &format!("/v1/schedules/{name}/pause"), None)?;
        on.delete(&name)
    })
}

/// A schedule whose runs hold concurrency key K (limit 1), named so that its name's shard
/// (of 16) is not K's. A `sleep` of K holds the slot; a triggered run then waits for it
/// (`waiting_for: concurrency:K`) and runs after it ends. The name answers GET, pause,
/// resume, trigger, a listing and delete as any schedule's; a second create of the name is
/// 409; a patch to a key on another shard is 400; after the delete the name is free.
fn runs_count_with_their_keys_other_jobs(ctx: &Ctx) -> anyhow::Result<()> {
    let on = On::shared(ctx);
    let topology = edgejobs_core::topology::Topology::single(16);
    let (name, key, key_home) = off_key_shard("keyed");
    let job = json!({ "type": "noop", "concurrency": { "key": key, "limit": 1 } });
    let body = json!({ "name": name, "cron": "0 0 1 1 *", "job": job });
    on.create(&body)?;
    let again = on.admin("POST", "/v1/schedules", Some(&body))?;
    ensure(again.status == 409 && again.code() == "schedule_exists", || {
        format!("a second create of the name: {} {}", again.status, again.body)
    })?;
    // The slot of K is taken by a sleep of 4 s.
    let holder = ctx.enqueue(&json!({ "type": "sleep", "payload": { "ms": 4000 },
        "concurrency": { "key": key, "limit": 1 } }))?;
    let running = wait_until(Duration::from_secs(30), || {
        on.read(&format!("/v1/jobs/{holder}")).is_ok_and(|r| r.body["state"] == "active")
    });
    ensure(running, || "the holder of the key started".into())?;
    let t = on.admin("POST", &format!("/v1/schedules/{name}/trigger"), None)?;
    ensure(t.status == 201, || format!("trigger: {} {}", t.status, t.body))?;
    let run = t.body["job"]["id"].as_str().context("the run's id")?.to_owned();
    let seen = on.read(&format!("/v1/jobs/{run}"))?.body;
    let holder_now = on.read(&format!("/v1/jobs/{holder}"))?.body;
    ensure(holder_now["state"] == "active", || format!("the holder still runs: {holder_now}"))?;
    ensure(seen["state"] == "queued" && seen["waiting_for"] == format!("concurrency:{key}"), || {
        format!("the run waits for the key while the holder runs: {seen}")
    })?;
    let done = |id: &str| {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(60), || {
            last = on.read(&format!("/v1/jobs/{id}")).map(|r| r.body).unwrap_or(Value::Null);
            last["state"] == "completed"
        });
        ensure(ok, || format!("{id} completed: {last}")).map(|()| last)
    };
    let (held, ran) = (done(&holder)?, done(&run)?);
    ensure(ran["started_at"].as_str() >= held["finished_at"].as_str(), || {
        format!("the run started after the holder ended: {} vs {}", ran["started_at"], held["finished_at"])
    })?;
    // The name answers as any schedule's.
    ensure(on.schedule(&name)?["runs"].as_array().is_some_and(|r| r.len() == 1), || "one run recorded".into())?;
    for action in ["pause", "resume"] {
        let r = on.admin("POST", &format!("/v1/schedules/{name}/{action}"), None)?;
        ensure(r.status == 200 && r.body["paused"] == (action == "pause"), || {
            format!("{action}: {} {}", r.status, r.body)
        })?;
    }
    let listed = on.read("/v1/schedules?limit=200")?;
    let names: Vec<&str> =
        listed.body["schedules"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    ensure(names.contains(&name.as_str()), || format!("listed: {names:?}"))?;
    // A job whose key lives on another shard is refused; one on the same key is taken.
    let other = (0..)
        .map(|i| format!("{key}-{i}"))
        .find(|k| topology.schedule_home(&edgejobs_core::tenant::Tenant::default().scope_key(k)) != key_home)
        .context("a key on another shard")?;
    let moved = json!({ "job": { "type": "noop", "concurrency": { "key": other, "limit": 1 } } });
    let r = on.admin("PATCH", &format!("/v1/schedules/{name}"), Some(&moved))?;
    ensure(r.status == 400 && r.body["error"]["field"] == "job", || {
        format!("patch to {other}: {} {}", r.status, r.body)
    })?;
    let same = json!({ "job": { "type": "noop", "priority": 7, "concurrency": { "key": key, "limit": 1 } } });
    let r = on.admin("PATCH", &format!("/v1/schedules/{name}"), Some(&same))?;
    ensure(r.status == 200, || format!("patch on the same key: {} {}", r.status, r.body))?;
    on.delete(&name)?;
    let gone = on.read(&format!("/v1/schedules/{name}"))?;
    ensure(gone.status == 404, || format!("deleted: {} {}", gone.status, gone.body))?;
    // The name is free again, for a schedule without a key (on its name's shard).
    on.create(&json!({ "name": name, "cron": "0 0 1 1 *", "job": { "type": "noop" } }))?;
    on.delete(&name)
}
