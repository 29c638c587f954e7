//! The dashboard and the API it is drawn from: `/v1/stats`, `/v1/whoami`, the explorer's
//! filters (search, id prefix, time range), the attempt history, replay by tag; and the
//! dashboard itself in a real headless chromium driven over the DevTools protocol, a
//! workflow run's steps included, and its live updates from the event streams (#30).

use std::collections::BTreeSet;
use std::time::Duration;

use edgejobs_tests::browser::Browser;
use edgejobs_tests::hooks::Reply;
use edgejobs_tests::stack::StackOptions;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("dashboard_api_explorer_filters_search_payload_and_metadata_by_id_prefix_and_time", explorer_filters),
    ("dashboard_api_a_search_never_matches_a_sealed_header", a_search_never_matches_a_sealed_header),
    ("dashboard_api_stats_and_whoami_show_what_the_dashboard_draws", stats_and_whoami),
    ("dashboard_api_a_job_shows_every_attempt_with_its_error_and_duration", a_job_shows_every_attempt),
    ("dashboard_api_dead_replay_by_tag_touches_only_that_tag", dead_replay_by_tag),
    ("dashboard_files_are_static_with_a_strict_policy", dashboard_files_are_static),
    ("dashboard_in_a_real_browser", dashboard_in_a_real_browser),
    ("dashboard_schedules_in_a_real_browser", dashboard_schedules_in_a_real_browser),
    ("dashboard_shows_a_workflow_runs_steps_in_a_real_browser", dashboard_steps_in_a_real_browser),
    ("dashboard_job_page_updates_live_in_a_real_browser", dashboard_job_page_updates_live),
];

const WAIT: Duration = Duration::from_secs(60);

fn ids_of(r: &crate::util::Resp) -> BTreeSet<String> {
    r.body["jobs"].as_array().into_iter().flatten().filter_map(|j| j["id"].as_str().map(str::to_owned)).collect()
}

fn explorer_filters(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("explore");
    let needle = unique("Needle");
    let in_payload =
        ctx.enqueue(&json!({ "type": "noop", "tags": [tag], "payload": { "note": format!("invoice {needle}") } }))?;
    let in_metadata = ctx.enqueue(&json!({ "type": "noop", "tags": [tag], "metadata": { "customer": needle } }))?;
    let plain = ctx.enqueue(&json!({ "type": "noop", "tags": [tag], "payload": { "note": "nothing" } }))?;
    // Case is ignored (ASCII), on both sides.
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&q={}", needle.to_uppercase()))?;
    ensure(r.status == 200, || format!("search: {} {}", r.status, r.body))?;
    let want: BTreeSet<String> = [in_payload.clone(), in_metadata.clone()].into();
    ensure(ids_of(&r) == want, || format!("search found {:?}, want {want:?}", ids_of(&r)))?;
    // An id prefix of 10 characters names the shard and the millisecond.
    let prefix = &plain[..10];
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&id_prefix={prefix}"))?;
    ensure(ids_of(&r).contains(&plain) && ids_of(&r).iter().all(|i| i.starts_with(prefix)), || {
        format!("prefix {prefix}: {:?}", ids_of(&r))
    })?;
    // The time range is on the last change: nothing of ours changed in the future.
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&from=2100-01-01T00:00:00Z"))?;
    ensure(r.status == 200 && ids_of(&r).is_empty(), || format!("future: {}", r.body))?;
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"))?;
    ensure(ids_of(&r).len() == 3, || format!("all time: {}", r.body))?;
    for bad in ["q=", "id_prefix=xyz", "id_prefix=j0Z", "from=yesterday"] {
        let r = ctx.get(&format!("/v1/jobs?{bad}"))?;
        ensure(r.status == 400 && r.code() == "invalid_field", || format!("{bad}: {} {}", r.status, r.body))?;
    }
    Ok(())
}

fn a_search_never_matches_a_sealed_header(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("sealed");
    let secret = unique("secretvalue");
    let url = ctx.hooks.script(&format!("/{}", unique("sealed")), vec![Reply::status(200)]);
    let id = ctx.enqueue(&json!({
        "type": "webhook", "tags": [tag],
        "payload": { "url": url, "headers": { "authorization": format!("Bearer {secret}") } },
    }))?;
    // The precondition: the job is listed by its tag, so the search below had it to scan.
    let r = ctx.get(&format!("/v1/jobs?tag={tag}"))?;
    ensure(ids_of(&r).contains(&id), || format!("listed: {}", r.body))?;
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&q={secret}"))?;
    ensure(r.status == 200 && ids_of(&r).is_empty(), || format!("a sealed value was searchable: {}", r.body))?;
    // The header's name is not secret and is found.
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&q=authorization"))?;
    ensure(ids_of(&r).contains(&id), || format!("header name: {}", r.body))
}

fn stats_and_whoami(ctx: &Ctx) -> anyhow::Result<()> {
    let completed = |s: &Value| -> u64 {
        s["minutes"].as_array().into_iter().flatten().map(|p| p["completed"].as_u64().unwrap_or(0)).sum()
    };
    let tag = unique("stats");
    let ids: Vec<String> =
        (0..3).map(|_| ctx.enqueue(&json!({ "type": "noop", "tags": [tag] }))).collect::<anyhow::Result<_>>()?;
    for id in &ids {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    let after = ctx.get("/v1/stats")?;
    let s = &after.body;
    ensure(s["minutes"].as_array().is_some_and(|m| m.len() == 60), || format!("60 minutes: {s}"))?;
    // Ours completed within the last minute, so the hour's window holds them (other
    // tests add theirs).
    ensure(completed(s) >= 3, || format!("completed in the last hour: {}", completed(s)))?;
    let noop_done: u64 = s["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "noop" && r["state"] == "completed")
        .filter_map(|r| r["count"].as_u64())
        .sum();
    ensure(noop_done >= 3, || format!("jobs by state and type: {}", s["jobs"]))?;
    ensure(s["shards"]["answered"] == 16 && s["shards"]["of"] == 16, || format!("shards: {}", s["shards"]))?;
    // The shared stack runs a native consumer: the stream's group knows it, reading now.
    ensure(
        s["consumers"]["ok"] == true
            && s["consumers"]["list"].as_array().is_some_and(|l| l.iter().any(|c| c["running"] == true)),
        || format!("consumers: {}", s["consumers"]),
    )?;
    let me = ctx.get("/v1/whoami")?;
    ensure(me.status == 200 && me.body["scopes"] == json!(["jobs"]), || format!("whoami: {}", me.body))?;
    let admin = ctx.with_key(ctx.http.get(ctx.url("/v1/whoami")), Some(&ctx.admin_key))?;
    ensure(admin.body["scopes"] == json!(["jobs", "admin"]), || format!("admin whoami: {}", admin.body))?;
    ensure(!admin.body.to_string().contains(&ctx.admin_key), || "the key is echoed".into())?;
    let anonymous = ctx.with_key(ctx.http.get(ctx.url("/v1/stats")), None)?;
    ensure(anonymous.status == 401, || format!("stats without a key: {}", anonymous.status))
}

fn a_job_shows_every_attempt(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("attempts"));
    let url = ctx.hooks.script(&path, vec![Reply::status(500), Reply::status(503), Reply::status(200)]);
    let tag = unique("attempts");
    let id = ctx.enqueue(&json!({
        "type": "webhook", "tags": [tag], "payload": { "url": url }, "max_attempts": 3,
        "backoff": { "base": "200ms", "cap": "1s" },
    }))?;
    let job = ctx.wait_state(&id, "completed", WAIT)?;
    let attempts = job["attempts"].as_array().cloned().unwrap_or_default();
    let outcomes: Vec<&str> = attempts.iter().filter_map(|a| a["outcome"].as_str()).collect();
    ensure(outcomes == ["failed", "failed", "completed"], || format!("attempts: {}", job["attempts"]))?;
    ensure(
        attempts.iter().enumerate().all(|(i, a)| a["attempt"] == i as u64 + 1 && a["duration_ms"].is_u64()),
        || format!("numbers and durations: {}", job["attempts"]),
    )?;
    ensure(
        attempts[0]["error"].as_str().is_some_and(|e| e.contains("500"))
            && attempts[1]["error"].as_str().is_some_and(|e| e.contains("503"))
            && attempts[2].get("error").is_none(),
        || format!("errors: {}", job["attempts"]),
    )?;
    // Listings leave the history out (a page stays small).
    let r = ctx.get(&format!("/v1/jobs?tag={tag}&include=payload,result,metadata"))?;
    let listed = r.body["jobs"].as_array().and_then(|j| j.first()).cloned().unwrap_or_default();
    ensure(listed["id"] == id.as_str() && listed.get("attempts").is_none(), || format!("listing: {listed}"))
}

fn dead_replay_by_tag(ctx: &Ctx) -> anyhow::Result<()> {
    let path = format!("/{}", unique("bytag"));
    let url = ctx.hooks.script(&path, vec![Reply::status(400)]);
    let (mine, other) = (unique("replay-mine"), unique("replay-other"));
    let job = |tag: &str| json!({ "type": "webhook", "tags": [tag], "payload": { "url": url }, "max_attempts": 1 });
    let ours: Vec<String> = (0..2).map(|_| ctx.enqueue(&job(&mine))).collect::<anyhow::Result<_>>()?;
    let theirs = ctx.enqueue(&job(&other))?;
    for id in ours.iter().chain([&theirs]) {
        ctx.wait_state(id, "dead", WAIT)?;
    }
    ctx.hooks.script(&path, vec![Reply::status(200)]);
    let r = ctx.send(
        ctx.http
            .post(ctx.url("/v1/dead/replay"))
            .bearer_auth(&ctx.admin_key)
            .json(&json!({ "tag": mine, "type": "webhook", "limit": 1000 })),
    )?;
    let replayed: BTreeSet<String> =
        r.body["ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    ensure(r.status == 200 && replayed == ours.iter().cloned().collect(), || format!("replay by tag: {}", r.body))?;
    for id in &ours {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    let left = ctx.get(&format!("/v1/jobs/{theirs}"))?;
    ensure(left.body["state"] == "dead", || format!("another tag was replayed: {}", left.body))?;
    let r =
        ctx.send(ctx.http.post(ctx.url("/v1/dead/replay")).bearer_auth(&ctx.admin_key).json(&json!({ "tag": 5 })))?;
    ensure(r.status == 400 && r.code() == "invalid_field", || format!("tag 5: {} {}", r.status, r.body))
}

fn dashboard_files_are_static(ctx: &Ctx) -> anyhow::Result<()> {
    let mut all = String::new();
    for (path, kind) in
        [("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/app.css", "text/css")]
    {
        let r = ctx.http.get(ctx.url(path)).send()?;
        let header = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let (csp, ct) = (header("content-security-policy"), header("content-type"));
        ensure(r.status() == 200 && ct.starts_with(kind), || format!("{path}: {} {ct}", r.status()))?;
        ensure(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("connect-src 'self'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe"),
            || format!("{path} policy: {csp}"),
        )?;
        ensure(header("x-content-type-options") == "nosniff", || format!("{path}: nosniff"))?;
        all.push_str(&r.text()?);
    }
    // Nothing is loaded from elsewhere, and the files carry no key or job data (the SVG
    // namespace is a name, not an address).
    let all = all.replace("\"http://www.w3.org/2000/svg\"", "");
    for bad in ["http://", "https://", "//cdn", &ctx.api_key, &ctx.admin_key] {
        ensure(!all.contains(bad), || format!("the dashboard files contain {bad:?}"))?;
    }
    let r = ctx.send_unchecked(ctx.http.get(ctx.url("/dashboard/secrets.txt")))?;
    ensure(r.status == 404 && r.code() == "not_found", || format!("unknown file: {} {}", r.status, r.body))?;
    let r = ctx.send_unchecked(ctx.http.post(ctx.url("/dashboard")))?;
    ensure(r.status == 405 && r.code() == "method_not_allowed", || format!("POST: {} {}", r.status, r.body))
}

/// Rows of the job table the page shows now: (id, state).
fn rows(b: &mut Browser) -> anyhow::Result<Vec<(String, String)>> {
    let v = b.eval("[...document.querySelectorAll('#job-list tbody tr')].map(r => [r.dataset.id, r.dataset.state])")?;
    Ok(serde_json::from_value(v)?)
}

/// Moves the page to `hash` and waits until that view has drawn.
fn show(b: &mut Browser, hash: &str) -> anyhow::Result<()> {
    let before = b.eval("Number(document.body.dataset.renders || 0)")?.as_u64().unwrap_or(0);
    b.eval(&format!("location.hash = {}", serde_json::to_string(hash)?))?;
    b.wait_for(&format!("Number(document.body.dataset.renders || 0) > {before}"), Duration::from_secs(20))?;
    let text = b.eval("document.body.innerText")?;
    ensure(!text.to_string().contains("[object"), || format!("{hash}: an object was shown as text"))
}

fn sign_in(b: &mut Browser, key: &str) -> anyhow::Result<()> {
    b.wait_for("document.body.dataset.view === 'login' && document.querySelector('#key')", Duration::from_secs(20))?;
    b.fill("#key", key)?;
    b.click("#login button[type=submit]")?;
    let shown = b.wait_for(
        "document.body.dataset.view === 'overview' && document.querySelector('#tiles')",
        Duration::from_secs(20),
    );
    shown.map_err(|e| {
        let page = b
            .eval("JSON.stringify({ data: document.body.dataset, flash: document.querySelector('#flash').textContent, who: document.querySelector('#who').textContent, main: document.querySelector('#main').innerText.slice(0, 300) })")
            .unwrap_or_default();
        anyhow::anyhow!("{e:#}\nthe page: {page}")
    })
}

fn dashboard_in_a_real_browser(ctx: &Ctx) -> anyhow::Result<()> {
    // What the dashboard will show: four jobs that complete (one mentions a word to search
    // for), one that dies, and two more dead ones under a second tag for the bulk replay.
    let (tag, bulk_tag, needle) = (unique("ui"), unique("ui-bulk"), unique("findme"));
    let path = format!("/{}", unique("ui"));
    let url = ctx.hooks.script(&path, vec![Reply::status(500)]);
    let mut done = Vec::new();
    for i in 0..4 {
        let note = if i == 2 { format!("invoice {needle}") } else { format!("order {i}") };
        done.push(ctx.enqueue(&json!({ "type": "noop", "tags": [tag], "payload": { "note": note } }))?);
    }
    let dead_job = |t: &str| json!({ "type": "webhook", "tags": [t], "payload": { "url": url }, "max_attempts": 1 });
    let dead = ctx.enqueue(&dead_job(&tag))?;
    let bulk: Vec<String> = (0..2).map(|_| ctx.enqueue(&dead_job(&bulk_tag))).collect::<anyhow::Result<_>>()?;
    for id in &done {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    for id in bulk.iter().chain([&dead]) {
        ctx.wait_state(id, "dead", WAIT)?;
    }

    let shots = StackOptions::default_root().join("target/dashboard");
    std::fs::create_dir_all(&shots)?;
    let mut b = Browser::launch(&shots)?;
    b.goto(&format!("{}/dashboard", ctx.edge))?;

    // A jobs key: no admin action is offered.
    sign_in(&mut b, &ctx.api_key)?;
    let hidden =
        b.eval("document.querySelector('#nav [data-view=backups]').hidden && document.body.dataset.admin === 'false'")?;
    ensure(hidden == Value::Bool(true), || "the backups view is offered to a jobs key".into())?;
    show(&mut b, &format!("#/dead?tag={bulk_tag}"))?;
    ensure(rows(&mut b)?.len() == 2, || "two dead jobs listed".into())?;
    ensure(b.eval("!document.querySelector('#replay-all')")? == Value::Bool(true), || {
        "bulk replay shown to a jobs key".into()
    })?;
    b.click("#logout")?;

    // An admin key: everything.
    sign_in(&mut b, &ctx.admin_key)?;
    ensure(b.eval("!document.querySelector('#nav [data-view=backups]').hidden")? == Value::Bool(true), || {
        "the backups view is hidden from an admin".into()
    })?;
    let charts = b.eval("document.querySelectorAll('svg.chart').length")?;
    let tiles = b.eval("document.querySelectorAll('#tiles .tile').length")?;
    ensure(charts == json!(2) && tiles == json!(6), || format!("overview: {charts} charts, {tiles} tiles"))?;
    let completed = b.text("#tiles [data-state=completed] .n")?.replace(',', "");
    ensure(completed.parse::<u64>().is_ok_and(|n| n >= 4), || format!("completed tile: {completed:?}"))?;
    ensure(b.text("#consumers")?.contains("running"), || "consumers shown".into())?;
    b.screenshot("overview")?;

    // The explorer shows exactly the jobs of the tag, and filters them.
    show(&mut b, &format!("#/jobs?tag={tag}"))?;
    let shown: BTreeSet<String> = rows(&mut b)?.into_iter().map(|(id, _)| id).collect();
    let want: BTreeSet<String> = done.iter().chain([&dead]).cloned().collect();
    ensure(shown == want, || format!("explorer shows {shown:?}, want {want:?}"))?;
    b.screenshot("jobs")?;
    b.fill("#filters [name=q]", &needle)?;
    let before = b.eval("Number(document.body.dataset.renders)")?.as_u64().unwrap_or(0);
    b.click("#filters button[type=submit]")?;
    b.wait_for(&format!("Number(document.body.dataset.renders) > {before}"), Duration::from_secs(20))?;
    let found = rows(&mut b)?;
    ensure(found.len() == 1 && found[0].0 == done[2], || format!("search {needle}: {found:?}"))?;
    show(&mut b, &format!("#/jobs?tag={tag}&state=dead"))?;
    ensure(rows(&mut b)? == vec![(dead.clone(), "dead".to_owned())], || "state filter".into())?;

    // The job page: its attempt and the retry button.
    let before = b.eval("Number(document.body.dataset.renders)")?.as_u64().unwrap_or(0);
    b.click(&format!("#job-list a[href='#/job/{dead}']"))?;
    b.wait_for(&format!("Number(document.body.dataset.renders) > {before}"), Duration::from_secs(20))?;
    ensure(b.text("#job-id")? == dead, || "job page".into())?;
    let attempts = b.eval("document.querySelectorAll('#attempts tbody tr').length")?;
    ensure(attempts == json!(1), || format!("attempt rows: {attempts}"))?;
    ensure(b.text("#attempts")?.contains("500"), || "the attempt's error is shown".into())?;
    let facts = b.text("#job")?;
    ensure(facts.contains("webhook") && facts.contains("1 of 1 in this series"), || format!("job facts: {facts}"))?;
    // The job's trace id (#32), as its traceparent holds it, for the tracing backend.
    let traced = ctx.get(&format!("/v1/jobs/{dead}"))?.body["trace"]["traceparent"].as_str().unwrap_or("").to_owned();
    let trace_id = traced.split('-').nth(1).unwrap_or("?").to_owned();
    ensure(trace_id.len() == 32 && b.text("#trace-id")? == trace_id, || format!("the page shows trace id {trace_id}"))?;
    ensure(b.eval("Boolean(document.querySelector('#retry'))")? == Value::Bool(true), || "no retry button".into())?;
    b.screenshot("job")?;

    // Replay one dead job from the dead letters; the target now answers 200.
    ctx.hooks.script(&path, vec![Reply::status(200)]);
    show(&mut b, &format!("#/dead?tag={tag}"))?;
    b.click(&format!("button.replay[data-id='{dead}']"))?;
    b.wait_for("document.querySelector('#flash').textContent.includes('replayed')", Duration::from_secs(20))?;
    ctx.wait_state(&dead, "completed", WAIT)?;

    // Replay in bulk, after a confirmation that says how many.
    show(&mut b, &format!("#/dead?tag={bulk_tag}"))?;
    b.click("#replay-all")?;
    b.wait_for("!document.querySelector('#confirm').hidden", Duration::from_secs(20))?;
    let question = b.text("#confirm-text")?;
    ensure(question.contains("Replay 2 dead jobs") && question.contains(&bulk_tag), || format!("confirm: {question}"))?;
    b.screenshot("confirm")?;
    b.click("#confirm-yes")?;
    b.wait_for(
        "document.querySelector('#flash').textContent.includes('2 dead jobs replayed')",
        Duration::from_secs(20),
    )?;
    for id in &bulk {
        ctx.wait_state(id, "completed", WAIT)?;
    }

    // Backups: start one, see it listed, verify it.
    show(&mut b, "#/backups")?;
    let before = b.eval("Number(document.body.dataset.renders)")?.as_u64().unwrap_or(0);
    b.click("#backup-start")?;
    b.wait_for(&format!("Number(document.body.dataset.renders) > {before}"), Duration::from_secs(60))?;
    ensure(b.text("#flash")?.contains("written"), || "backup started".into())?;
    b.click("#backup-list button.verify")?;
    b.wait_for("document.querySelector('#backup-list .verdict').textContent === 'valid'", Duration::from_secs(60))?;
    b.screenshot("backups")?;

    // Back to the overview for the picture the README shows, then: no error of any kind.
    show(&mut b, "#/overview")?;
    b.screenshot("dashboard")?;
    let problems = b.problems()?;
    ensure(problems.is_empty(), || format!("the page reported errors:\n{}", problems.join("\n")))
}

fn dashboard_schedules_in_a_real_browser(ctx: &Ctx) -> anyhow::Result<()> {
    let name = unique("ui-sched");
    let admin = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = ctx.http.request(method, ctx.url(path)).bearer_auth(&ctx.admin_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        ctx.send(req)
    };
    let body = json!({ "name": name, "cron": "0 4 * * *", "timezone": "Europe/Berlin", "paused": true, "job": { "type": "noop" } });
    let r = admin(reqwest::Method::POST, "/v1/schedules", Some(body))?;
    ensure(r.status == 201, || format!("create: {} {}", r.status, r.body))?;
    let schedule = || ctx.get(&format!("/v1/schedules/{name}")).map(|r| r.body);
    let shots = StackOptions::default_root().join("target/dashboard");
    std::fs::create_dir_all(&shots)?;
    let mut b = Browser::launch(&shots)?;
    b.goto(&format!("{}/dashboard", ctx.edge))?;

    // A jobs key sees the schedule and no action.
    sign_in(&mut b, &ctx.api_key)?;
    show(&mut b, "#/schedules")?;
    let row = format!("#schedule-list tr[data-name='{name}']");
    ensure(b.eval(&format!("document.querySelector(\"{row}\").dataset.paused"))? == json!("true"), || {
        "the paused schedule is listed".into()
    })?;
    ensure(b.eval(&format!("document.querySelectorAll(\"{row} button\").length"))? == json!(0), || {
        "actions offered to a jobs key".into()
    })?;
    b.click("#logout")?;

    // An admin resumes it, runs it now, and pauses it again.
    sign_in(&mut b, &ctx.admin_key)?;
    show(&mut b, "#/schedules")?;
    ensure(b.text(&row)?.contains("0 4 * * *") && b.text(&row)?.contains("Europe/Berlin"), || "the row".into())?;
    b.click(&format!("{row} button.resume"))?;
    b.wait_for("document.querySelector('#flash').textContent.includes('resumed')", Duration::from_secs(20))?;
    ensure(schedule()?["paused"] == false, || "resumed through the page".into())?;
    b.wait_for(&format!("document.querySelector(\"{row} button.trigger\") !== null"), Duration::from_secs(20))?;
    b.click(&format!("{row} button.trigger"))?;
    b.wait_for("document.querySelector('#flash').textContent.includes('ran: job')", Duration::from_secs(20))?;
    ensure(schedule()?["runs_total"] == 1, || "run through the page".into())?;
    b.wait_for(&format!("document.querySelector(\"{row} button.pause\") !== null"), Duration::from_secs(20))?;
    b.screenshot("schedules")?;
    b.click(&format!("{row} button.pause"))?;
    b.wait_for("document.querySelector('#flash').textContent.includes('paused')", Duration::from_secs(20))?;
    ensure(schedule()?["paused"] == true, || "paused through the page".into())?;
    let r = admin(reqwest::Method::DELETE, &format!("/v1/schedules/{name}"), None)?;
    ensure(r.status == 200, || format!("delete: {}", r.body))
}

/// A workflow run's page shows its steps as a timeline (a row and a bar per step, coloured
/// by state, with its times, attempts, result size, error or event) and its free attempts.
fn dashboard_steps_in_a_real_browser(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let id = crate::cli::run_with_steps(ctx, stack)?;
        let shots = StackOptions::default_root().join("target/dashboard");
        std::fs::create_dir_all(&shots)?;
        let mut b = Browser::launch(&shots)?;
        b.goto(&format!("{}/dashboard", stack.edge_url))?;
        sign_in(&mut b, &stack.secrets.api_key)?;
        show(&mut b, &format!("#/job/{id}"))?;
        ensure(b.text("#job-id")? == id, || "job page".into())?;
        let rows = b.eval(
            "[...document.querySelectorAll('#steps tbody tr')].map(r => [r.dataset.name, r.dataset.state, \
             getComputedStyle(r.querySelector('svg.span rect')).fill])",
        )?;
        let rows: Vec<(String, String, String)> = serde_json::from_value(rows)?;
        let got: Vec<(&str, &str)> = rows.iter().map(|(n, s, _)| (n.as_str(), s.as_str())).collect();
        ensure(got == [("plan", "completed"), ("call", "failed"), ("approval", "waiting")], || {
            format!("step rows: {rows:?}")
        })?;
        // Each state has its colour: three states, three fills, none the default black.
        let fills: BTreeSet<&str> = rows.iter().map(|(_, _, f)| f.as_str()).collect();
        ensure(fills.len() == 3 && !fills.contains("rgb(0, 0, 0)"), || format!("bar colours: {rows:?}"))?;
        let text = b.text("#steps")?;
        for want in ["16 bytes", "upstream 503", "waits for order.approved", "until", "→"] {
            ensure(text.contains(want), || format!("the steps do not show {want:?}:\n{text}"))?;
        }
        let facts = b.text("#job")?;
        ensure(facts.contains("free attempts") && facts.contains("and 1 free"), || format!("job facts: {facts}"))?;
        b.screenshot("steps")?;
        let problems = b.problems()?;
        ensure(problems.is_empty(), || format!("the page reported errors:\n{}", problems.join("\n")))?;
        let r = crate::util::cancel_on(ctx, stack, &id)?;
        ensure(r.status == 200, || format!("cancel: {} {}", r.status, r.body))
    })
}

/// A number the page holds (`expr`), 0 when it is not one.
fn number(b: &mut Browser, expr: &str) -> anyhow::Result<u64> {
    Ok(b.eval(&format!("Number({expr}) || 0"))?.as_u64().unwrap_or(0))
}

/// The overview and a running job's page follow the event streams (#30): on the fault stack,
/// where the test is the consumer, the overview's count of completed jobs changes when a job
/// completes, and a job's page shows its progress, its streamed text and at last its
/// completion, without the page being loaded again, drawn again by navigation, or refreshed
/// by any timer (the page's `setInterval` is counted from before the first view is drawn).
fn dashboard_job_page_updates_live(ctx: &Ctx) -> anyhow::Result<()> {
    use crate::cli::{complete_native, live_update, started_native};
    ctx.with_fault_stack(|stack| {
        let shots = StackOptions::default_root().join("target/dashboard");
        std::fs::create_dir_all(&shots)?;
        let mut b = Browser::launch(&shots)?;
        b.goto(&format!("{}/dashboard", stack.edge_url))?;
        // Set once per document: a reload would lose both.
        b.eval(
            "(() => { window.intervals = 0; window.loaded = 'once'; const si = window.setInterval.bind(window); \
             window.setInterval = (...a) => { window.intervals += 1; return si(...a); }; })()",
        )?;
        sign_in(&mut b, &stack.secrets.api_key)?;
        b.wait_for("document.body.dataset.live === 'open'", Duration::from_secs(20))?;
        let renders = number(&mut b, "document.body.dataset.renders")?;
        let tile = "document.querySelector('#tiles [data-state=completed] .n').textContent.replace(/,/g, '')";
        let completed = number(&mut b, tile)?;
        let stats = number(&mut b, "state.calls['GET /v1/stats']")?;

        // The overview: a job completes, and the count follows from its state events.
        let tag = unique("ui-live");
        let (done, lease) = started_native(ctx, stack, &tag)?;
        complete_native(ctx, stack, &done, &lease)?;
        b.wait_for(&format!("Number({tile}) > {completed}"), Duration::from_secs(30))?;
        let after = number(&mut b, "state.calls['GET /v1/stats']")?;
        let states = number(&mut b, "state.events.state")?;
        ensure(after > stats && states > 0, || format!("stats read {after} times after {states} state events"))?;
        ensure(number(&mut b, "window.intervals")? == 0, || "the page set an interval".into())?;
        ensure(number(&mut b, "document.body.dataset.renders")? == renders, || "the overview was drawn anew".into())?;
        b.screenshot("overview-live")?;

        // A running job's page.
        let (id, lease) = started_native(ctx, stack, &tag)?;
        show(&mut b, &format!("#/job/{id}"))?;
        b.wait_for("document.body.dataset.live === 'open'", Duration::from_secs(20))?;
        ensure(b.text("#job-state")? == "active", || "the job is shown running".into())?;
        let renders = number(&mut b, "document.body.dataset.renders")?;
        let (stats, states) =
            (number(&mut b, "state.calls['GET /v1/stats']")?, number(&mut b, "state.events.state")?);
        live_update(
            ctx,
            stack,
            &id,
            &lease,
            json!({ "progress": { "percent": 40, "message": "reading page 2" }, "metadata": { "pages": 2 },
                    "chunks": [{ "stream": "tokens", "data": "Hel" }, { "stream": "tokens", "data": "lo" }] }),
        )?;
        b.wait_for(
            "document.querySelector('#progress-text').textContent === '40% · reading page 2' \
             && document.querySelector('#progress-bar').value === 40 && !document.querySelector('#progress').hidden",
            Duration::from_secs(20),
        )?;
        let text = "(document.querySelector('#streams pre[data-stream=tokens]') || {}).textContent";
        b.wait_for(&format!("{text} === 'Hello'"), Duration::from_secs(20))?;
        // The state event made the page read the job again: its metadata.
        b.wait_for("document.querySelector('#metadata').textContent.includes('\"pages\": 2')", Duration::from_secs(20))?;
        live_update(ctx, stack, &id, &lease, json!({ "chunks": [{ "stream": "tokens", "data": ", world" }] }))?;
        b.wait_for(&format!("{text} === 'Hello, world'"), Duration::from_secs(20))?;
        b.screenshot("job-live")?;
        complete_native(ctx, stack, &id, &lease)?;
        b.wait_for(
            "document.querySelector('#job-state').textContent === 'completed' && document.body.dataset.live === 'ended'",
            Duration::from_secs(20),
        )?;
        b.wait_for(
            "document.querySelectorAll('#attempts tbody tr').length === 1 \
             && document.querySelector('#attempts').textContent.includes('completed') \
             && document.querySelector('#result').textContent.includes('ok')",
            Duration::from_secs(20),
        )?;
        ensure(b.eval(text)? == json!("Hello, world"), || "the text was kept".into())?;

        // Nothing but the stream drew it: the same document, no navigation, no timer, no
        // overview refresh behind it, and the job read once plus at most once per state event.
        ensure(b.eval("window.loaded")? == json!("once"), || "the page was loaded again".into())?;
        ensure(number(&mut b, "document.body.dataset.renders")? == renders, || "the job page was drawn anew".into())?;
        ensure(number(&mut b, "window.intervals")? == 0, || "the page set an interval".into())?;
        let stats_now = number(&mut b, "state.calls['GET /v1/stats']")?;
        ensure(stats_now == stats, || format!("the overview kept refreshing behind the job page: {stats} -> {stats_now}"))?;
        let reads = number(&mut b, &format!("state.calls['GET /v1/jobs/{id}']"))?;
        let seen = number(&mut b, "state.events.state")? - states;
        ensure(reads >= 2 && reads <= 1 + seen, || format!("the job was read {reads} times for {seen} state events"))?;
        b.screenshot("job-live-done")?;

        // Leaving the page: the job's stream is closed, the overview's opened.
        show(&mut b, "#/overview")?;
        b.wait_for("document.body.dataset.live === 'open'", Duration::from_secs(20))?;
        ensure(number(&mut b, "state.streams")? == 1, || "a stream was left open".into())?;
        let problems = b.problems()?;
        ensure(problems.is_empty(), || format!("the page reported errors:\n{}", problems.join("\n")))
    })
}
