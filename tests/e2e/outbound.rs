//! Outbound requests keep secrets home (#26, point 4): a redirect to another origin gets no
//! user header (edge webhooks and the consumer's `http.request`), a redirect or a name to a
//! port the allow-list does not open is refused before anything connects, and headers that
//! steer routing or speak for the system, and URLs with credentials, are refused at enqueue
//! with nothing stored. Two loopback fakes: the shared webhook target (`ctx.hooks`) and a
//! second origin on another port ([`second_origin_port`]), both in the stacks' allow-list.

use std::sync::OnceLock;
use std::time::Duration;

use edgejobs_tests::hooks::{Hooks, Reply};
use serde_json::{Value, json};

use crate::util::{Ctx, Test, enqueue_on, ensure, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("outbound_edge_redirect_to_another_origin_drops_user_headers", edge_redirect_to_another_origin_drops_user_headers),
    (
        "outbound_native_redirect_to_another_origin_drops_user_headers",
        native_redirect_to_another_origin_drops_user_headers,
    ),
    ("outbound_native_port_changing_redirect_is_refused", native_port_changing_redirect_is_refused),
    ("outbound_forbidden_headers_are_refused_at_enqueue", forbidden_headers_are_refused_at_enqueue),
    ("outbound_urls_with_credentials_are_refused", urls_with_credentials_are_refused),
];

const WAIT: Duration = Duration::from_secs(60);

/// The second origin: a webhook target on its own loopback port.
static SECOND: OnceLock<Option<Hooks>> = OnceLock::new();

/// Starts the second origin (once) and gives its port, for the stacks' allow-list; 0 when
/// it could not start (its tests then fail saying so).
pub fn second_origin_port() -> u16 {
    second().ok().and_then(|h| h.base.rsplit(':').next()?.parse().ok()).unwrap_or(0)
}

fn second() -> anyhow::Result<&'static Hooks> {
    SECOND
        .get_or_init(|| Hooks::start().ok())
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the second origin did not start"))
}

/// The headers a job carries (the edge seals their values at enqueue).
fn user_headers(secret: &str) -> Value {
    json!({ "X-Api-Key": secret, "Authorization": format!("Bearer {secret}") })
}

/// Sends one job of `job_type` through a redirect to the second origin and one through a
/// redirect inside the first origin, and checks who got the user's headers.
fn redirects_keep_secrets_home(ctx: &Ctx, job_type: &str) -> anyhow::Result<()> {
    let second = second()?;
    let secret = unique("s3cret");
    let away_path = format!("/{}", unique("landing"));
    let landing = second.script(&away_path, vec![Reply::status(200)]);
    // Another origin: the second fake's port. 307 keeps the method and the body.
    let away = ctx.hooks.script(&format!("/{}", unique("away")), vec![Reply::status(307).location(&landing)]);
    // The same origin: a relative Location on the first fake.
    let home_path = format!("/{}", unique("home"));
    let home = ctx.hooks.script(&format!("/{}", unique("stay")), vec![Reply::status(302).location(&home_path)]);
    ensure(second.received(&away_path).is_empty() && ctx.hooks.received(&home_path).is_empty(), || {
        "the fakes start with nothing".into()
    })?;
    let mut ids = Vec::new();
    for url in [&away, &home] {
        ids.push(ctx.enqueue(&json!({
            "type": job_type,
            "payload": { "url": url, "headers": user_headers(&secret), "body": { "n": 1 } },
            "max_attempts": 1,
        }))?);
    }
    for id in &ids {
        ctx.wait_state(id, "completed", WAIT)?;
    }
    let got = second.received(&away_path);
    ensure(got.len() == 1, || format!("the second origin got {} requests", got.len()))?;
    let h = &got[0].headers;
    ensure(!h.contains_key("x-api-key") && !h.contains_key("authorization"), || {
        format!("another origin must not get the user's headers: {h:?}")
    })?;
    ensure(!h.values().any(|v| v.contains(&secret)), || format!("nor the secret in any header: {h:?}"))?;
    ensure(h.get("x-edgejobs-job-id").map(String::as_str) == ids.first().map(String::as_str), || {
        format!("the system's headers go on every hop: {h:?}")
    })?;
    let got = ctx.hooks.received(&home_path);
    ensure(got.len() == 1, || format!("the same origin's landing got {} requests", got.len()))?;
    let h = &got[0].headers;
    ensure(h.get("x-api-key") == Some(&secret) && h.get("authorization") == Some(&format!("Bearer {secret}")), || {
        format!("the same origin keeps the user's headers: {h:?}")
    })
}

fn edge_redirect_to_another_origin_drops_user_headers(ctx: &Ctx) -> anyhow::Result<()> {
    redirects_keep_secrets_home(ctx, "webhook")
}

fn native_redirect_to_another_origin_drops_user_headers(ctx: &Ctx) -> anyhow::Result<()> {
    redirects_keep_secrets_home(ctx, "http.request")
}

/// A redirect from an allowed port to a port of the same address the allow-list does not
/// open, by the address and by a name that resolves to it (the consumer's `EDGEJOBS_RESOLVE`,
/// on the fault stack): refused, the job dead at once, and the closed port gets nothing.
fn native_port_changing_redirect_is_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let closed = Hooks::start()?;
    let closed_port = closed.base.rsplit(':').next().unwrap_or("0").to_owned();
    ensure(!ctx.outbound_allow.split(',').any(|e| e.trim().ends_with(&format!(":{closed_port}"))), || {
        format!("port {closed_port} must be outside the allow-list {}", ctx.outbound_allow)
    })?;
    let path = format!("/{}", unique("closed"));
    ctx.with_fault_stack(|stack| {
        let c = stack.start_consumer(&[("EDGEJOBS_RESOLVE", "alias.test=127.0.0.1")])?;
        let result = (|| -> anyhow::Result<()> {
            for target in
                [format!("http://127.0.0.1:{closed_port}{path}"), format!("http://alias.test:{closed_port}{path}")]
            {
                let hop = ctx.hooks.script(&format!("/{}", unique("hop")), vec![Reply::status(307).location(&target)]);
                let id = enqueue_on(
                    ctx,
                    stack,
                    &json!({ "type": "http.request", "payload": { "url": hop, "headers": { "X-Api-Key": "k" } } }),
                )?;
                let job = wait_on(ctx, stack, &id, "dead")?;
                let err = job["last_error"].as_str().unwrap_or_default();
                ensure(err.contains("redirect") && err.contains("refused") && err.contains(&closed_port), || {
                    format!("{target}: the redirect is refused, naming the port: {job}")
                })?;
                ensure(job["attempts"].as_array().is_some_and(|a| a.len() == 1), || {
                    format!("{target}: refused is permanent, no retry: {job}")
                })?;
            }
            // The name on the allowed port still works (the rule is the port, not the name).
            let ok = ctx.hooks.script(&format!("/{}", unique("named")), vec![Reply::status(200)]);
            let ok = ok.replace("127.0.0.1", "alias.test");
            let id = enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": ok } }))?;
            wait_on(ctx, stack, &id, "completed")?;
            Ok(())
        })();
        stack.terminate_consumer(c, Duration::from_secs(10));
        result
    })?;
    ensure(closed.received(&path).is_empty(), || {
        format!("{} requests reached the closed port", closed.received(&path).len())
    })
}

/// Jobs listed under `tag` (every page).
fn tagged(ctx: &Ctx, tag: &str) -> anyhow::Result<usize> {
    Ok(ctx.list_all(&format!("/v1/jobs?tag={tag}"))?.len())
}

fn forbidden_headers_are_refused_at_enqueue(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("forbidden");
    let hook = ctx.hooks.script(&format!("/{}", unique("never")), vec![Reply::status(200)]);
    for name in edgejobs_core::outbound::FORBIDDEN_HEADER_EXAMPLES {
        for t in ["webhook", "http.request"] {
            let job = json!({ "type": t, "tags": [tag], "payload": { "url": hook, "headers": { *name: "evil" } } });
            let r = ctx.post("/v1/jobs", &job)?;
            ensure(
                r.status == 400 && r.code() == "invalid_field" && r.body["error"]["field"] == "payload.headers",
                || format!("{t} with {name}: {} {}", r.status, r.body),
            )?;
            ensure(r.body["error"]["message"].as_str().is_some_and(|m| m.contains(name)), || {
                format!("the error names the header: {}", r.body)
            })?;
        }
    }
    // In a batch, the item is refused and its neighbour created.
    let r = ctx.post(
        "/v1/jobs/batch",
        &json!({ "jobs": [
            { "type": "webhook", "tags": [tag], "payload": { "url": hook, "headers": { "X-Forwarded-For": "10.0.0.1" } } },
            { "type": "noop", "tags": [tag] },
        ] }),
    )?;
    let res = r.body["results"].as_array().cloned().unwrap_or_default();
    ensure(r.status == 200 && res.len() == 2, || format!("batch: {} {}", r.status, r.body))?;
    ensure(res[0]["status"] == 400 && res[0]["error"]["field"] == "payload.headers", || format!("item 1: {}", res[0]))?;
    ensure(res[1]["status"] == 201, || format!("item 2: {}", res[1]))?;
    // A schedule's job spec: refused, and no schedule exists.
    let name = unique("fwd");
    let body = json!({ "name": name, "cron": "0 0 1 1 *",
        "job": { "type": "webhook", "payload": { "url": hook, "headers": { "Host": "internal.example" } } } });
    let r = ctx.send(ctx.http.post(ctx.url("/v1/schedules")).bearer_auth(&ctx.admin_key).json(&body))?;
    ensure(
        r.status == 400 && r.code() == "invalid_field" && r.body["error"]["field"] == "job.payload.headers",
        || format!("schedule: {} {}", r.status, r.body),
    )?;
    let r = ctx.send(ctx.http.get(ctx.url(&format!("/v1/schedules/{name}"))).bearer_auth(&ctx.admin_key))?;
    ensure(r.status == 404, || format!("no schedule was stored: {} {}", r.status, r.body))?;
    ensure(tagged(ctx, &tag)? == 1, || "only the batch's good item was stored".into())?;
    std::thread::sleep(Duration::from_millis(300));
    ensure(ctx.hooks.received(hook.trim_start_matches(&ctx.hooks.base)).is_empty(), || "nothing was delivered".into())
}

fn urls_with_credentials_are_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("userinfo");
    let port = ctx.hooks.base.rsplit(':').next().unwrap_or("0").to_owned();
    let path = format!("/{}", unique("creds"));
    for url in [
        format!("http://user:hunter2@127.0.0.1:{port}{path}"),
        format!("http://hunter2@127.0.0.1:{port}{path}"),
        "https://user:hunter2@example.com/".to_owned(),
        "https://@example.com/".to_owned(),
    ] {
        for t in ["webhook", "http.request"] {
            let r = ctx.post("/v1/jobs", &json!({ "type": t, "tags": [tag], "payload": { "url": url } }))?;
            ensure(
                r.status == 400 && r.code() == "invalid_field" && r.body["error"]["field"] == "payload.url",
                || format!("{t} to {url}: {} {}", r.status, r.body),
            )?;
            ensure(!r.body.to_string().contains("hunter2"), || format!("the error echoes no credential: {}", r.body))?;
        }
    }
    ensure(tagged(ctx, &tag)? == 0, || "nothing was stored".into())?;
    // A redirect to a URL with credentials is refused at delivery, at the edge and in the
    // consumer, and the target gets nothing.
    let target = format!("http://user:hunter2@127.0.0.1:{port}{path}");
    let hop = ctx.hooks.script(&format!("/{}", unique("to-creds")), vec![Reply::status(302).location(&target)]);
    for t in ["webhook", "http.request"] {
        let id = ctx.enqueue(&json!({ "type": t, "payload": { "url": hop }, "max_attempts": 1 }))?;
        let job = ctx.wait_state(&id, "dead", WAIT)?;
        let err = job["last_error"].as_str().unwrap_or_default();
        ensure(err.contains("credentials") && !err.contains("hunter2"), || format!("{t}: {job}"))?;
    }
    ensure(ctx.hooks.received(&path).is_empty(), || "the target behind the credentials got nothing".into())
}
