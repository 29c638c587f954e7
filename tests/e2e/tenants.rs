//! Tenants end to end: two tenants on the shared stack (`default`, whose key is the suite's
//! `api_key`, and `globex`, with two keys as during a rotation), and `initech`, capped at
//! three jobs not yet final. Tenant `globex` tries every job route on `default`'s jobs,
//! dead letters and schedules, and sees nothing and changes nothing; `default`'s own calls
//! still work; an admin key sees both and filters by tenant. The schedules' idempotency
//! namespace is refused to every caller.

use std::time::{Duration, Instant};

use edgejobs_tests::hooks::Reply;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("tenants_see_and_change_nothing_of_another_tenant", see_and_change_nothing_of_another_tenant),
    ("tenants_admin_keys_see_every_tenant_and_filter", admin_keys_see_every_tenant_and_filter),
    ("tenants_schedule_namespace_is_refused_to_callers", schedule_namespace_is_refused_to_callers),
    ("tenants_pending_cap_answers_429_until_a_job_ends", pending_cap_answers_429_until_a_job_ends),
];

const WAIT: Duration = Duration::from_secs(60);

fn get(ctx: &Ctx, key: &str, path: &str) -> anyhow::Result<Resp> {
    ctx.with_key(ctx.http.get(ctx.url(path)), Some(key))
}

fn post(ctx: &Ctx, key: &str, path: &str, body: &Value) -> anyhow::Result<Resp> {
    ctx.with_key(ctx.http.post(ctx.url(path)).json(body), Some(key))
}

fn enqueue_as(ctx: &Ctx, key: &str, body: &Value) -> anyhow::Result<Value> {
    let r = post(ctx, key, "/v1/jobs", body)?;
    ensure(r.status == 201, || format!("enqueue answered {}: {}", r.status, r.body))?;
    Ok(r.body)
}

/// Every id a key lists under `path`, following cursors.
fn ids_as(ctx: &Ctx, key: &str, path: &str) -> anyhow::Result<Vec<String>> {
    ctx.list_all_as(key, path)
}

/// The answer for `id` must read exactly as the answer for a job that does not exist in
/// the same shard: same status, code and message (but the id).
fn same_as_missing(got: &Resp, missing: &Resp, id: &str, missing_id: &str, what: &str) -> anyhow::Result<()> {
    let msg = |r: &Resp, id: &str| r.body["error"]["message"].as_str().unwrap_or_default().replace(id, "<id>");
    ensure(got.status == 404 && got.code() == "job_not_found", || format!("{what}: {} {}", got.status, got.body))?;
    ensure((got.status, got.code(), msg(got, id)) == (missing.status, missing.code(), msg(missing, missing_id)), || {
        format!("{what} differs from a missing job's answer: {} vs {}", got.body, missing.body)
    })
}

/// An id in the same shard as `id` that names no job.
fn missing_like(id: &str) -> String {
    let mut s = id.to_owned();
    s.replace_range(s.len() - 4.., "0000");
    s
}

fn see_and_change_nothing_of_another_tenant(ctx: &Ctx) -> anyhow::Result<()> {
    let (a, b, b2) = (ctx.api_key.as_str(), ctx.tenant_keys[0].as_str(), ctx.tenant_keys[1].as_str());
    let tag = unique("tenant-a");
    let word = unique("secretword");
    let key = unique("shared-key");
    // Tenant default (A): a delayed job holding a word only it has, under an idempotency key,
    // and a dead job.
    let waiting = enqueue_as(
        ctx,
        a,
        &json!({ "type": "noop", "delay": "1h", "tags": [tag], "idempotency_key": key, "payload": { "note": word } }),
    )?;
    let wid = waiting["id"].as_str().unwrap_or_default().to_owned();
    ensure(waiting["tenant"] == "default", || format!("A's job: {waiting}"))?;
    let url = ctx.hooks.script(&format!("/{}", unique("tenant-dead")), vec![Reply::status(500)]);
    let dead =
        enqueue_as(ctx, a, &json!({ "type": "webhook", "payload": { "url": url }, "max_attempts": 1, "tags": [tag] }))?;
    let did = dead["id"].as_str().unwrap_or_default().to_owned();
    ctx.wait_state(&did, "dead", WAIT)?;
    let whoami = get(ctx, b, "/v1/whoami")?;
    ensure(whoami.body["tenant"] == "globex", || format!("whoami: {}", whoami.body))?;

    // Reads by id: exactly a missing job's answer.
    for id in [&wid, &did] {
        let got = get(ctx, b, &format!("/v1/jobs/{id}"))?;
        let other = missing_like(id);
        let missing = get(ctx, b, &format!("/v1/jobs/{other}"))?;
        same_as_missing(&got, &missing, id, &other, "get")?;
    }
    // Listings with every filter, and the dead letters: none of A's jobs.
    let prefix = &wid[..10];
    for path in [
        "/v1/jobs?limit=100".to_owned(),
        format!("/v1/jobs?tag={tag}"),
        format!("/v1/jobs?q={word}"),
        format!("/v1/jobs?id_prefix={prefix}"),
        "/v1/jobs?state=scheduled&type=noop".to_owned(),
        format!("/v1/jobs?state=dead&tag={tag}"),
        "/v1/jobs?include=payload,metadata,result".to_owned(),
        "/v1/dead?limit=100".to_owned(),
        format!("/v1/dead?tag={tag}"),
    ] {
        let ids = ids_as(ctx, b, &path)?;
        ensure(!ids.contains(&wid) && !ids.contains(&did), || format!("{path} shows A's jobs to B: {ids:?}"))?;
    }
    let asked = get(ctx, b, "/v1/jobs?tenant=default")?;
    ensure(asked.status == 403 && asked.code() == "forbidden", || format!("tenant=default by B: {}", asked.body))?;
    // Changes: cancel and retry answer as for a missing job and change nothing.
    for (path, id) in [(format!("/v1/jobs/{wid}/cancel"), &wid), (format!("/v1/jobs/{did}/retry"), &did)] {
        let got = post(ctx, b, &path, &json!({}))?;
        let other = missing_like(id);
        let missing = post(ctx, b, &path.replace(id.as_str(), &other), &json!({}))?;
        same_as_missing(&got, &missing, id, &other, &path)?;
    }
    ensure(ctx.get(&format!("/v1/jobs/{wid}"))?.body["state"] == "scheduled", || "A's waiting job changed".into())?;
    ensure(ctx.get(&format!("/v1/jobs/{did}"))?.body["state"] == "dead", || "A's dead job changed".into())?;
    // The same idempotency key is B's own: a new job, and A's key still names A's job.
    let mine =
        enqueue_as(ctx, b, &json!({ "type": "noop", "delay": "1h", "idempotency_key": key, "payload": { "b": 1 } }))?;
    let bid = mine["id"].as_str().unwrap_or_default().to_owned();
    ensure(bid != wid && mine["tenant"] == "globex" && mine["payload"] == json!({ "b": 1 }), || {
        format!("B's keyed job: {mine}")
    })?;
    let again = post(ctx, a, "/v1/jobs", &json!({ "type": "noop", "delay": "1h", "idempotency_key": key }))?;
    ensure(again.status == 200 && again.body["id"] == wid.as_str(), || format!("A's key again: {}", again.body))?;
    // B's two keys count in one rate-limit window (a rotation gives a tenant no more).
    let remaining = |r: &Resp| {
        r.headers.get("ratelimit-remaining").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    };
    let first = post(ctx, b, "/v1/jobs", &json!({ "type": "noop" }))?;
    let second = post(ctx, b2, "/v1/jobs", &json!({ "type": "noop" }))?;
    let (r1, r2) = (remaining(&first), remaining(&second));
    ensure(r1.is_some() && r2 < r1, || format!("B's keys' remaining: {r1:?} then {r2:?}"))?;
    // B's rotated key is the same tenant: it sees B's job; B sees its own.
    ensure(get(ctx, b2, &format!("/v1/jobs/{bid}"))?.status == 200, || "B's second key cannot read B's job".into())?;
    ensure(ids_as(ctx, b, &format!("/v1/jobs?id_prefix={}", &bid[..10]))?.contains(&bid), || "B lists its job".into())?;
    // Naming another tenant in a job is refused to a jobs key.
    let other = post(ctx, b, "/v1/jobs", &json!({ "type": "noop", "tenant": "default" }))?;
    ensure(other.status == 403, || format!("B creating for default: {} {}", other.status, other.body))?;
    // Stats: B's counts are B's. B never made a webhook job; A's dead one must not show, and
    // B's minutes count no dead job (only A's died); A's stats do show it.
    let stats = get(ctx, b, "/v1/stats")?;
    let webhooks = stats.body["jobs"].as_array().into_iter().flatten().filter(|j| j["type"] == "webhook").count();
    let dead: u64 = stats.body["minutes"].as_array().into_iter().flatten().filter_map(|m| m["dead"].as_u64()).sum();
    ensure(webhooks == 0 && dead == 0, || format!("B's stats show A's jobs: {}", stats.body))?;
    let theirs = get(ctx, a, "/v1/stats")?;
    let dead_a: u64 = theirs.body["minutes"].as_array().into_iter().flatten().filter_map(|m| m["dead"].as_u64()).sum();
    ensure(dead_a >= 1, || format!("A's stats miss its dead job: {}", theirs.body))?;
    // Schedules: an admin makes one per tenant; B reads only its own.
    let (sa, sb) = (unique("sched-a"), unique("sched-b"));
    for (name, tenant) in [(&sa, "default"), (&sb, "globex")] {
        let body =
            json!({ "name": name, "cron": "0 0 1 1 *", "paused": true, "job": { "type": "noop", "tenant": tenant } });
        let r = post(ctx, &ctx.admin_key, "/v1/schedules", &body)?;
        ensure(r.status == 201, || format!("schedule {name}: {} {}", r.status, r.body))?;
    }
    let listed = get(ctx, b, "/v1/schedules?limit=100")?;
    let names: Vec<&str> =
        listed.body["schedules"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    ensure(names.contains(&sb.as_str()) && !names.contains(&sa.as_str()), || format!("B's schedules: {names:?}"))?;
    let theirs = get(ctx, b, &format!("/v1/schedules/{sa}"))?;
    ensure(theirs.status == 404 && theirs.code() == "schedule_not_found", || format!("A's schedule: {}", theirs.body))?;
    ensure(get(ctx, a, &format!("/v1/schedules/{sa}"))?.status == 200, || "A reads its schedule".into())?;
    // The CLI with B's key: A's job does not exist; B's does.
    let cli = edgejobs_tests::stack::binary(&edgejobs_tests::stack::StackOptions::default_root(), "edgejobs")?;
    let run = |id: &str| {
        std::process::Command::new(&cli)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EDGEJOBS_URL", &ctx.edge)
            .env("EDGEJOBS_KEY", b)
            .args(["get", id])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let (theirs, own) = (run(&wid)?, run(&bid)?);
    ensure(!theirs.status.success() && own.status.success(), || {
        format!("CLI get as B: A's job exit {:?}, B's job exit {:?}", theirs.status.code(), own.status.code())
    })?;
    ensure(!String::from_utf8_lossy(&theirs.stdout).contains(&word), || "the CLI printed A's payload".into())?;
    // A's own calls still work.
    ensure(ctx.list_all(&format!("/v1/jobs?q={word}"))? == vec![wid.clone()], || "A finds its job by word".into())?;
    let cancelled = ctx.post(&format!("/v1/jobs/{wid}/cancel"), &json!({}))?;
    ensure(cancelled.status == 200 && cancelled.body["state"] == "cancelled", || {
        format!("A cancels: {}", cancelled.body)
    })?;
    Ok(())
}

fn admin_keys_see_every_tenant_and_filter(ctx: &Ctx) -> anyhow::Result<()> {
    let admin = ctx.admin_key.as_str();
    let tag = unique("tenant-admin");
    let a = enqueue_as(ctx, &ctx.api_key, &json!({ "type": "noop", "delay": "1h", "tags": [tag] }))?;
    let b = enqueue_as(ctx, &ctx.tenant_keys[0], &json!({ "type": "noop", "delay": "1h", "tags": [tag] }))?;
    let (aid, bid) = (a["id"].as_str().unwrap_or_default(), b["id"].as_str().unwrap_or_default());
    let all = ids_as(ctx, admin, &format!("/v1/jobs?tag={tag}"))?;
    ensure(all.len() == 2 && all.iter().any(|i| i == aid) && all.iter().any(|i| i == bid), || {
        format!("admin: {all:?}")
    })?;
    let only_b = ids_as(ctx, admin, &format!("/v1/jobs?tag={tag}&tenant=globex"))?;
    ensure(only_b == vec![bid.to_owned()], || format!("admin, tenant=globex: {only_b:?}"))?;
    ensure(get(ctx, admin, &format!("/v1/jobs/{bid}"))?.body["tenant"] == "globex", || "admin reads B's job".into())?;
    // An admin creates jobs for a configured tenant, never for an unknown one.
    let made = enqueue_as(ctx, admin, &json!({ "type": "noop", "delay": "1h", "tags": [tag], "tenant": "globex" }))?;
    ensure(made["tenant"] == "globex", || format!("admin-made job: {made}"))?;
    let mid = made["id"].as_str().unwrap_or_default();
    ensure(get(ctx, &ctx.tenant_keys[1], &format!("/v1/jobs/{mid}"))?.status == 200, || "B reads it".into())?;
    let unknown = post(ctx, admin, "/v1/jobs", &json!({ "type": "noop", "tenant": "initrode" }))?;
    ensure(unknown.status == 400 && unknown.body["error"]["field"] == "tenant", || format!("{}", unknown.body))?;
    let whoami = get(ctx, admin, "/v1/whoami")?;
    ensure(whoami.body["tenant"].is_null(), || format!("admin whoami: {}", whoami.body))?;
    // /metrics carries the tenant of each job counter, bounded by the configured tenants.
    let page = ctx.http.get(ctx.url("/metrics")).bearer_auth(admin).send()?.text()?;
    ensure(page.contains("edgejobs_jobs_enqueued_total{type=\"noop\",tenant=\"globex\"}"), || {
        "no globex series in /metrics".into()
    })?;
    ensure(page.contains("edgejobs_tenant_pending_jobs{tenant=\"globex\"}"), || "no pending gauge for globex".into())?;
    for t in page.lines().filter_map(|l| l.split("tenant=\"").nth(1)).filter_map(|r| r.split('"').next()) {
        ensure(["default", "globex", "initech"].contains(&t), || format!("a tenant label no key has: {t}"))?;
    }
    Ok(())
}

fn schedule_namespace_is_refused_to_callers(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("hijack");
    for key in [ctx.api_key.as_str(), ctx.tenant_keys[0].as_str(), ctx.admin_key.as_str()] {
        for body in [
            json!({ "type": "noop", "tags": [tag], "idempotency_key": "schedule:nightly:2030-01-01T00:00:00.000Z" }),
            json!({ "type": "noop", "tags": [tag, "schedule:nightly"] }),
        ] {
            let r = post(ctx, key, "/v1/jobs", &body)?;
            ensure(r.status == 400 && r.code() == "invalid_field", || format!("{body}: {} {}", r.status, r.body))?;
            let batch = post(ctx, key, "/v1/jobs/batch", &json!({ "jobs": [body] }))?;
            ensure(batch.status == 200 && batch.body["results"][0]["status"] == 400, || {
                format!("batch {body}: {}", batch.body)
            })?;
        }
    }
    let stored = ids_as(ctx, &ctx.admin_key, &format!("/v1/jobs?tag={tag}"))?;
    ensure(stored.is_empty(), || format!("refused jobs were stored: {stored:?}"))?;
    Ok(())
}

fn pending_cap_answers_429_until_a_job_ends(ctx: &Ctx) -> anyhow::Result<()> {
    let key = ctx.tenant_keys[2].as_str();
    let tag = unique("capped");
    let body = json!({ "type": "noop", "delay": "1h", "tags": [tag] });
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(enqueue_as(ctx, key, &body)?["id"].as_str().unwrap_or_default().to_owned());
    }
    let over = post(ctx, key, "/v1/jobs", &body)?;
    ensure(over.status == 429 && over.code() == "tenant_pending_limit", || {
        format!("4th: {} {}", over.status, over.body)
    })?;
    let batch = post(ctx, key, "/v1/jobs/batch", &json!({ "jobs": [body.clone(), body.clone()] }))?;
    ensure(batch.status == 429, || format!("batch over the cap: {} {}", batch.status, batch.body))?;
    ensure(ids_as(ctx, key, &format!("/v1/jobs?tag={tag}"))?.len() == 3, || "a refused job was stored".into())?;
    // Other tenants are not capped by initech's jobs.
    enqueue_as(ctx, &ctx.tenant_keys[0], &json!({ "type": "noop", "tags": [tag] }))?;
    // A job that ends frees a place (within the isolate's second of caching).
    let c = post(ctx, key, &format!("/v1/jobs/{}/cancel", ids[0]), &json!({}))?;
    ensure(c.status == 200, || format!("cancel: {}", c.body))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = post(ctx, key, "/v1/jobs", &body)?;
        if r.status == 201 {
            break;
        }
        ensure(r.status == 429 && Instant::now() < deadline, || format!("after a cancel: {} {}", r.status, r.body))?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let again = post(ctx, key, "/v1/jobs", &body)?;
    ensure(again.status == 429, || format!("the cap holds again: {} {}", again.status, again.body))?;
    Ok(())
}
