//! Flow control's HTTP API end to end (#28): a key's state (`GET /v1/flow`) while its jobs
//! run and wait, pausing and resuming a key and a type, who may read and pause what, the
//! busiest keys, bad inputs, and the `edgejobs flow` CLI. Every answer is also checked
//! against openapi.json (`Ctx::send`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use edgejobs_tests::browser::Browser;
use edgejobs_tests::hooks::Reply;
use edgejobs_tests::stack::StackOptions;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, enqueue_on, ensure, job_on, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("flow_api_key_shows_running_and_waiting_jobs", key_shows_running_and_waiting_jobs),
    ("flow_api_paused_key_parks_jobs_until_resumed", paused_key_parks_jobs_until_resumed),
    ("flow_api_tenants_see_their_own_keys_and_only_admins_pause", tenants_see_their_own_keys),
    ("flow_api_bad_inputs_answer_400", bad_inputs_answer_400),
    ("flow_api_type_pause_parks_a_plain_job", type_pause_parks_a_plain_job),
    ("flow_api_cli_show_pause_resume_busiest", cli_show_pause_resume_busiest),
    ("flow_api_dashboard_shows_busiest_keys_and_resumes_one", dashboard_shows_busiest_keys_and_resumes_one),
];

const WAIT: Duration = Duration::from_secs(60);

fn get_as(ctx: &Ctx, key: &str, path: &str) -> anyhow::Result<Resp> {
    ctx.with_key(ctx.http.get(ctx.url(path)), Some(key))
}

fn post_as(ctx: &Ctx, key: &str, path: &str, body: &Value) -> anyhow::Result<Resp> {
    ctx.with_key(ctx.http.post(ctx.url(path)).json(body), Some(key))
}

/// A key's state (as `key_holder` sees it), failing unless 200.
fn flow(ctx: &Ctx, key_holder: &str, query: &str) -> anyhow::Result<Value> {
    let r = get_as(ctx, key_holder, &format!("/v1/flow?{query}"))?;
    ensure(r.status == 200, || format!("GET /v1/flow?{query}: {} {}", r.status, r.body))?;
    Ok(r.body)
}

/// Pauses (`pause`) or resumes with the admin key; answers `changed`.
fn pause(ctx: &Ctx, body: &Value, paused: bool) -> anyhow::Result<bool> {
    let path = if paused { "/v1/admin/flow/pause" } else { "/v1/admin/flow/resume" };
    let r = post_as(ctx, &ctx.admin_key, path, body)?;
    ensure(r.status == 200, || format!("{path} {body}: {} {}", r.status, r.body))?;
    r.body["changed"].as_bool().context("no changed in the answer")
}

/// Polls `read` until `done` holds for what it answers, for at most `WAIT`.
fn wait_for(
    what: &str,
    mut read: impl FnMut() -> anyhow::Result<Value>,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = read()?;
        if done(&v) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what} within {WAIT:?}; last: {v}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three webhook jobs with one key of limit 1, each held 4 s by its receiver: the key shows
/// one running and two waiting (`waiting_for` names the key), then all complete, one at a
/// time (the receiver never sees two at once), and the key is idle again.
fn key_shows_running_and_waiting_jobs(ctx: &Ctx) -> anyhow::Result<()> {
    let key = unique("flow-run");
    let path = format!("/{}", unique("flow-slow"));
    let url = ctx.hooks.script(&path, vec![Reply::status(200).delay(Duration::from_secs(4))]);
    let job = json!({ "type": "webhook", "payload": { "url": url }, "concurrency": { "key": key, "limit": 1 } });
    let r = ctx.post("/v1/jobs/batch", &json!({ "jobs": [job, job, job] }))?;
    ensure(r.status == 200, || format!("batch: {} {}", r.status, r.body))?;
    let ids: Vec<String> = r.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["job"]["id"].as_str())
        .map(str::to_owned)
        .collect();
    ensure(ids.len() == 3, || format!("batch answered {}", r.body))?;
    let q = format!("key={key}");
    let seen = wait_for(
        "the key never showed one running and two waiting",
        || flow(ctx, &ctx.api_key, &q),
        |v| v["running"] == 1 && v["waiting"] == 2,
    )
    .map_err(|e| {
        // What the shards and the jobs said instead.
        let busiest = get_as(ctx, &ctx.admin_key, "/v1/flow/busiest?n=100").map(|r| r.body).unwrap_or_default();
        let jobs: Vec<Value> =
            ids.iter().filter_map(|id| ctx.get(&format!("/v1/jobs/{id}")).ok().map(|r| r.body)).collect();
        anyhow::anyhow!("{e:#}\nbusiest: {busiest}\njobs: {jobs:?}")
    })?;
    ensure(seen["limit"] == 1 && seen["tenant"] == "default" && seen["key"] == key.as_str(), || format!("{seen}"))?;
    ensure(seen["paused"] == false && seen["parked"] == 0 && seen["rate_next_at"].is_null(), || format!("{seen}"))?;
    let waiting: Vec<Value> =
        ids.iter().map(|id| ctx.get(&format!("/v1/jobs/{id}")).map(|r| r.body)).collect::<anyhow::Result<_>>()?;
    let reasons: Vec<&str> = waiting.iter().filter_map(|j| j["waiting_for"].as_str()).collect();
    let expected = format!("concurrency:{key}");
    ensure(reasons.iter().any(|r| *r == expected), || format!("no job waits for its key: {waiting:?}"))?;
    ensure(waiting.iter().all(|j| j["flow"]["concurrency"][0]["limit"] == 1), || {
        format!("flow not shown: {waiting:?}")
    })?;
    for id in &ids {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    ensure(ctx.hooks.received(&path).len() == 3, || "the receiver did not get three deliveries".into())?;
    let after = flow(ctx, &ctx.api_key, &q)?;
    ensure(after["running"] == 0 && after["waiting"] == 0, || format!("after: {after}"))
}

/// A paused key: its two jobs stay queued, parked (`waiting_for: "paused"`), and run once
/// it is resumed. A second pause changes nothing.
fn paused_key_parks_jobs_until_resumed(ctx: &Ctx) -> anyhow::Result<()> {
    let key = unique("flow-pause");
    let target = json!({ "key": key });
    ensure(pause(ctx, &target, true)?, || "the first pause changed nothing".into())?;
    ensure(!pause(ctx, &target, true)?, || "a second pause changed something".into())?;
    let job = json!({ "type": "noop", "concurrency": { "key": key, "limit": 1 } });
    let ids = [ctx.enqueue(&job)?, ctx.enqueue(&job)?];
    let q = format!("key={key}");
    let parked =
        wait_for("the key's two jobs were never parked", || flow(ctx, &ctx.api_key, &q), |v| v["parked"] == 2)?;
    ensure(parked["paused"] == true && parked["running"] == 0, || format!("{parked}"))?;
    for id in &ids {
        let j = ctx.get(&format!("/v1/jobs/{id}"))?.body;
        ensure(j["state"] == "queued" && j["waiting_for"] == "paused", || format!("a parked job: {j}"))?;
    }
    // The admin's view of the same key names the default tenant.
    let admin = flow(ctx, &ctx.admin_key, &q)?;
    ensure(admin["parked"] == 2 && admin["tenant"] == "default", || format!("admin: {admin}"))?;
    ensure(pause(ctx, &target, false)?, || "the resume changed nothing".into())?;
    for id in &ids {
        let j = ctx.wait_state(id, "completed", WAIT)?;
        ensure(j.get("waiting_for").is_none(), || format!("a completed job still waits: {j}"))?;
    }
    let after = flow(ctx, &ctx.api_key, &q)?;
    ensure(after["paused"] == false && after["parked"] == 0 && after["waiting"] == 0, || format!("after: {after}"))
}

/// A jobs key reads its own tenant's keys only (another tenant: 403), cannot pause (403),
/// and lists only its own busiest keys; an admin names the tenant.
fn tenants_see_their_own_keys(ctx: &Ctx) -> anyhow::Result<()> {
    let globex = ctx.tenant_keys[0].as_str();
    let key = unique("flow-tenant");
    ensure(pause(ctx, &json!({ "key": key, "tenant": "globex" }), true)?, || "pause changed nothing".into())?;
    let outcome = (|| -> anyhow::Result<()> {
        let r =
            post_as(ctx, globex, "/v1/jobs", &json!({ "type": "noop", "concurrency": { "key": key, "limit": 2 } }))?;
        ensure(r.status == 201, || format!("enqueue: {} {}", r.status, r.body))?;
        let id = r.body["id"].as_str().unwrap_or_default().to_owned();
        let q = format!("key={key}");
        let own = wait_for("globex's job was never parked", || flow(ctx, globex, &q), |v| v["parked"] == 1)?;
        ensure(own["tenant"] == "globex" && own["paused"] == true, || format!("globex: {own}"))?;
        // The same key name of the default tenant is another key: nothing there.
        let other = flow(ctx, &ctx.api_key, &q)?;
        ensure(other["parked"] == 0 && other["paused"] == false, || format!("default's key of that name: {other}"))?;
        let admin = flow(ctx, &ctx.admin_key, &format!("{q}&tenant=globex"))?;
        ensure(admin["parked"] == 1, || format!("admin: {admin}"))?;
        for (holder, query) in
            [(globex, format!("{q}&tenant=default")), (ctx.api_key.as_str(), format!("{q}&tenant=globex"))]
        {
            let r = get_as(ctx, holder, &format!("/v1/flow?{query}"))?;
            ensure(r.status == 403 && r.code() == "forbidden", || {
                format!("another tenant's key: {} {}", r.status, r.body)
            })?;
        }
        for (path, body) in [
            ("/v1/admin/flow/pause", json!({ "key": key })),
            ("/v1/admin/flow/resume", json!({ "key": key, "tenant": "globex" })),
            ("/v1/admin/flow/pause", json!({ "type": "noop" })),
        ] {
            let r = post_as(ctx, globex, path, &body)?;
            ensure(r.status == 403 && r.code() == "forbidden", || {
                format!("{path} with a jobs key: {} {}", r.status, r.body)
            })?;
        }
        // Busiest: globex sees its parked key; the default tenant's key does not.
        let mine = get_as(ctx, globex, "/v1/flow/busiest?n=100")?;
        ensure(mine.status == 200, || format!("busiest: {} {}", mine.status, mine.body))?;
        let listed = |r: &Resp| {
            r.body["keys"].as_array().into_iter().flatten().any(|k| k["key"] == key.as_str() && k["kind"] == "paused")
        };
        ensure(listed(&mine), || format!("globex's busiest lacks its key: {}", mine.body))?;
        let keys = mine.body["keys"].as_array().cloned().unwrap_or_default();
        ensure(keys.iter().all(|k| k["tenant"] == "globex"), || format!("globex sees others: {keys:?}"))?;
        let theirs = get_as(ctx, &ctx.api_key, "/v1/flow/busiest?n=100")?;
        ensure(theirs.status == 200 && !listed(&theirs), || format!("default sees globex's key: {}", theirs.body))?;
        let all = get_as(ctx, &ctx.admin_key, "/v1/flow/busiest?n=100")?;
        ensure(all.status == 200 && listed(&all), || format!("admin's busiest lacks it: {}", all.body))?;
        ensure(pause(ctx, &json!({ "key": key, "tenant": "globex" }), false)?, || "resume changed nothing".into())?;
        let j = wait_for(
            "globex's job did not complete after the resume",
            || get_as(ctx, globex, &format!("/v1/jobs/{id}")).map(|r| r.body),
            |j| j["state"] == "completed",
        )?;
        ensure(j["tenant"] == "globex", || format!("{j}"))
    })();
    // Never leave the key paused, whatever failed.
    let _ = pause(ctx, &json!({ "key": key, "tenant": "globex" }), false);
    outcome
}

/// Bad inputs: 400 with a stable code naming the field; nothing paused.
fn bad_inputs_answer_400(ctx: &Ctx) -> anyhow::Result<()> {
    let long = "x".repeat(257);
    for (query, field) in [
        ("", "key"),
        ("key=", "key"),
        ("key=a%1Fb", "key"),
        (&*format!("key={long}"), "key"),
        ("key=k&tenant=Bad%20Name", "tenant"),
        ("key=k&nope=1", "nope"),
    ] {
        let r = get_as(ctx, &ctx.admin_key, &format!("/v1/flow?{query}"))?;
        ensure(r.status == 400 && r.code() == "invalid_field" && r.body["error"]["field"] == field, || {
            format!("GET /v1/flow?{query}: {} {}", r.status, r.body)
        })?;
    }
    for (query, field) in [("n=0", "n"), ("n=101", "n"), ("n=abc", "n"), ("x=1", "x")] {
        let r = get_as(ctx, &ctx.api_key, &format!("/v1/flow/busiest?{query}"))?;
        ensure(r.status == 400 && r.code() == "invalid_field" && r.body["error"]["field"] == field, || {
            format!("busiest?{query}: {} {}", r.status, r.body)
        })?;
    }
    for (body, code, field) in [
        (json!({}), "invalid_field", Some("key")),
        (json!({ "key": "k", "extra": 1 }), "invalid_field", Some("extra")),
        (json!({ "key": 5 }), "invalid_field", Some("key")),
        (json!({ "key": "" }), "invalid_field", Some("key")),
        (json!({ "key": "k", "type": "noop" }), "invalid_field", Some("type")),
        (json!({ "type": "noop", "tenant": "acme" }), "invalid_field", Some("tenant")),
        (json!({ "key": "k", "tenant": "NOT A TENANT" }), "invalid_field", Some("tenant")),
        (json!({ "type": "no-such-type" }), "unknown_type", None),
        (json!([1, 2]), "invalid_json", None),
    ] {
        for path in ["/v1/admin/flow/pause", "/v1/admin/flow/resume"] {
            let r = post_as(ctx, &ctx.admin_key, path, &body)?;
            ensure(r.status == 400 && r.code() == code && field.is_none_or(|f| r.body["error"]["field"] == f), || {
                format!("{path} {body}: {} {}", r.status, r.body)
            })?;
        }
    }
    let r = ctx.send(ctx.http.get(ctx.url("/v1/flow?key=k")))?;
    ensure(r.status == 401, || format!("no key: {} {}", r.status, r.body))
}

/// On the fault stack (a type's pause reaches every job of it): a paused `noop` type parks
/// a plain `noop` job (no flow fields), which runs once resumed.
fn type_pause_parks_a_plain_job(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let admin = |paused: bool| -> anyhow::Result<bool> {
            let path = if paused { "pause" } else { "resume" };
            let r = ctx.send(
                ctx.http
                    .post(format!("{}/v1/admin/flow/{path}", stack.edge_url))
                    .bearer_auth(&stack.secrets.admin_key)
                    .json(&json!({ "type": "noop" })),
            )?;
            ensure(r.status == 200, || format!("{path}: {} {}", r.status, r.body))?;
            r.body["changed"].as_bool().context("changed")
        };
        admin(false)?; // whatever an earlier run left
        ensure(admin(true)?, || "the type's pause changed nothing".into())?;
        let outcome = (|| -> anyhow::Result<()> {
            let id = enqueue_on(ctx, stack, &json!({ "type": "noop" }))?;
            let deadline = Instant::now() + WAIT;
            let parked = loop {
                let j = job_on(ctx, stack, &id)?;
                if j["waiting_for"] == "paused" || Instant::now() >= deadline {
                    break j;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            ensure(parked["state"] == "queued" && parked["waiting_for"] == "paused", || format!("parked: {parked}"))?;
            let busiest = ctx.send(
                ctx.http.get(format!("{}/v1/flow/busiest", stack.edge_url)).bearer_auth(&stack.secrets.admin_key),
            )?;
            let listed = busiest.body["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"] == "paused_type" && k["key"] == "noop" && k["waiting"].as_u64() >= Some(1));
            ensure(listed, || format!("busiest lacks the paused type: {}", busiest.body))?;
            ensure(admin(false)?, || "the type's resume changed nothing".into())?;
            wait_on(ctx, stack, &id, "completed").map(|_| ())
        })();
        let _ = admin(false);
        outcome
    })
}

/// Runs the CLI against the shared stack with only PATH, the URL and `key` in its
/// environment.
fn cli(ctx: &Ctx, key: &str, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let bin = edgejobs_tests::stack::binary(&StackOptions::default_root(), "edgejobs")?;
    let o = Command::new(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EDGEJOBS_URL", &ctx.edge)
        .env("EDGEJOBS_KEY", key)
        .current_dir(std::env::temp_dir())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run edgejobs")?;
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    ensure(!out.contains(key) && !err.contains(key), || "the CLI printed its key".into())?;
    Ok((o.status.code().unwrap_or(-1), out, err))
}

/// `edgejobs flow pause|show|resume|busiest`, human and `--json`; a jobs key may not pause.
fn cli_show_pause_resume_busiest(ctx: &Ctx) -> anyhow::Result<()> {
    let key = unique("flow-cli");
    let admin = ctx.admin_key.as_str();
    let (code, out, err) = cli(ctx, admin, &["flow", "pause", &key])?;
    ensure(code == 0 && out.contains("paused"), || format!("pause: {code} {out} {err}"))?;
    let id = ctx.enqueue(&json!({ "type": "noop", "concurrency": { "key": key, "limit": 3 } }))?;
    let deadline = Instant::now() + WAIT;
    let shown = loop {
        let (code, out, err) = cli(ctx, &ctx.api_key, &["flow", "show", &key, "--json"])?;
        ensure(code == 0, || format!("show --json: {code} {out} {err}"))?;
        let v: Value = serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))?;
        if v["parked"] == 1 || Instant::now() >= deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    ensure(shown["parked"] == 1 && shown["paused"] == true && shown["key"] == key.as_str(), || format!("{shown}"))?;
    let (code, out, err) = cli(ctx, &ctx.api_key, &["flow", "show", &key])?;
    ensure(code == 0 && out.contains(&key) && out.contains("paused") && out.contains("parked"), || {
        format!("show: {code} {out} {err}")
    })?;
    let (code, out, err) = cli(ctx, admin, &["flow", "busiest", "-n", "100", "--json"])?;
    ensure(code == 0, || format!("busiest: {code} {out} {err}"))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))?;
    ensure(v["keys"].as_array().into_iter().flatten().any(|k| k["key"] == key.as_str()), || format!("busiest: {v}"))?;
    let (code, out, err) = cli(ctx, admin, &["flow", "busiest"])?;
    ensure(code == 0 && out.contains("KEY"), || format!("busiest: {code} {out} {err}"))?;
    // A jobs key may not pause: the CLI says so and exits non-zero.
    let (code, out, err) = cli(ctx, &ctx.api_key, &["flow", "resume", &key])?;
    ensure(code != 0 && err.contains("forbidden"), || format!("resume with a jobs key: {code} {out} {err}"))?;
    // Neither a key nor a type: refused before any request.
    let (code, _, err) = cli(ctx, admin, &["flow", "pause"])?;
    ensure(code != 0, || format!("pause without a target: {code} {err}"))?;
    let (code, out, err) = cli(ctx, admin, &["flow", "resume", &key, "--json"])?;
    ensure(code == 0, || format!("resume: {code} {out} {err}"))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))?;
    ensure(v["changed"] == true, || format!("resume: {v}"))?;
    ctx.wait_state(&id, "completed", WAIT).map(|_| ())
}

/// The dashboard's Flow view in a real browser: a jobs key sees its parked key and no
/// button; an admin resumes it with the row's button, and the parked job then runs.
fn dashboard_shows_busiest_keys_and_resumes_one(ctx: &Ctx) -> anyhow::Result<()> {
    let key = unique("flow-ui");
    ensure(pause(ctx, &json!({ "key": key }), true)?, || "pause changed nothing".into())?;
    let outcome = (|| -> anyhow::Result<()> {
        let id = ctx.enqueue(&json!({ "type": "noop", "concurrency": { "key": key, "limit": 1 } }))?;
        let q = format!("key={key}");
        wait_for("the job was never parked", || flow(ctx, &ctx.api_key, &q), |v| v["parked"] == 1)?;
        let shots = StackOptions::default_root().join("target/dashboard");
        std::fs::create_dir_all(&shots)?;
        let mut b = Browser::launch(&shots)?;
        b.goto(&format!("{}/dashboard", ctx.edge))?;
        let row = format!("#flow-list tr[data-key='{key}'][data-kind='paused']");
        let sign_in = |b: &mut Browser, k: &str| -> anyhow::Result<()> {
            b.wait_for(
                "document.body.dataset.view === 'login' && document.querySelector('#key')",
                Duration::from_secs(20),
            )?;
            b.fill("#key", k)?;
            b.click("#login button[type=submit]")?;
            b.wait_for(
                "document.body.dataset.view === 'overview' && document.querySelector('#tiles')",
                Duration::from_secs(20),
            )?;
            b.eval("location.hash = '#/flow'")?;
            b.wait_for(
                &format!("document.body.dataset.view === 'flow' && document.querySelector(\"{row}\") !== null"),
                Duration::from_secs(20),
            )
        };
        sign_in(&mut b, &ctx.api_key)?;
        ensure(b.eval(&format!("document.querySelectorAll(\"{row} button\").length"))? == json!(0), || {
            "a pause button offered to a jobs key".into()
        })?;
        b.click("#logout")?;
        sign_in(&mut b, &ctx.admin_key)?;
        ensure(b.text(&row)?.contains("default"), || "the row names the tenant".into())?;
        b.screenshot("flow")?;
        b.click(&format!("{row} button.resume"))?;
        b.wait_for("document.querySelector('#flash').textContent.includes('resumed')", Duration::from_secs(20))?;
        let after = flow(ctx, &ctx.api_key, &q)?;
        ensure(after["paused"] == false, || format!("not resumed through the page: {after}"))?;
        ctx.wait_state(&id, "completed", WAIT).map(|_| ())
    })();
    let _ = pause(ctx, &json!({ "key": key }), false);
    outcome
}
