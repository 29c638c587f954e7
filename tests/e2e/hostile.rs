//! Hostile input and outbound safety, on the fault stack (exclusive while a test runs):
//! hundreds of generated bad requests all answered 4xx with their documented codes and no
//! change to any state; outbound requests to private addresses refused before any
//! connection (names, redirects, the consumer's own port); and every secret kept out of
//! logs, metrics, health, error bodies, backups, archives and Sentry events.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use reqwest::blocking::{Body, Client, RequestBuilder};
use serde_json::{Value, json};

use crate::util::{Ctx, Test, enqueue_on, ensure, job_on, metric_on, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("hostile_requests_get_4xx_and_change_nothing", hostile_requests_get_4xx_and_change_nothing),
    ("outbound_requests_never_reach_private_addresses", outbound_requests_never_reach_private_addresses),
    ("secrets_stay_out_of_every_output", secrets_stay_out_of_every_output),
];

/// What a probe must be answered with: a status, and the error code when the edge answers.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Code(u16, &'static str),
    /// Any 4xx: the runtime itself answers (oversized headers), not our code.
    Runtime4xx,
}

type Build = Box<dyn Fn(&Client) -> RequestBuilder>;

struct Probe {
    name: String,
    build: Build,
    expect: Expect,
}

/// Every spelling of an address inside a private network we know of (core's list).
pub use edgejobs_core::outbound::REFUSED_EXAMPLES as SSRF_URLS;

fn probes(stack: &Stack) -> Vec<Probe> {
    let base = stack.edge_url.clone();
    let (jobs, admin, consumer) =
        (stack.secrets.api_key.clone(), stack.secrets.admin_key.clone(), stack.secrets.consumer_token.clone());
    let mut out: Vec<Probe> = Vec::new();
    let mut add = |name: String, expect: Expect, build: Build| out.push(Probe { name, build, expect });
    let post = {
        let base = base.clone();
        move |path: &str, key: &str, ct: &str, body: Vec<u8>| -> Build {
            let (url, key, ct) = (format!("{base}{path}"), key.to_owned(), ct.to_owned());
            Box::new(move |c: &Client| {
                let mut r = c.post(&url).body(body.clone());
                if !ct.is_empty() {
                    r = r.header("content-type", &ct);
                }
                if !key.is_empty() {
                    r = r.bearer_auth(&key);
                }
                r
            })
        }
    };
    let json_post = |path: &str, key: &str, v: Value| post(path, key, "application/json", v.to_string().into_bytes());
    let get = {
        let base = base.clone();
        move |path: &str, key: &str| -> Build {
            let (url, key) = (format!("{base}{path}"), key.to_owned());
            Box::new(move |c: &Client| {
                let r = c.get(&url);
                if key.is_empty() { r } else { r.bearer_auth(&key) }
            })
        }
    };

    // Content types other than JSON in UTF-8, on every route that reads a body.
    let routes: [(&str, &str); 6] = [
        ("/v1/jobs", jobs.as_str()),
        ("/v1/jobs/batch", jobs.as_str()),
        ("/v1/dead/replay", admin.as_str()),
        ("/v1/admin/restore", admin.as_str()),
        ("/v1/admin/webhook-secret", admin.as_str()),
        ("/v1/internal/jobs/j000000000000000000000000000000/events", consumer.as_str()),
    ];
    for (path, key) in routes {
        for ct in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
            "application/json; charset=utf-16",
            "application/jsonx",
            "",
            "multipart/form-data; boundary=x",
            "application/json; boundary=x",
        ] {
            add(
                format!("content type {ct:?} on {path}"),
                Expect::Code(415, "unsupported_media_type"),
                post(path, key, ct, br#"{"type":"noop"}"#.to_vec()),
            );
        }
    }
    // Malformed and deeply nested JSON.
    let malformed: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"}".to_vec(),
        b"[".to_vec(),
        br#"{"type":"#.to_vec(),
        b"nul".to_vec(),
        br#"{"type":"noop",}"#.to_vec(),
        br#"{'type':'noop'}"#.to_vec(),
        br#"{"type":"noop"}x"#.to_vec(),
        br#"{"type":"noop","payload":NaN}"#.to_vec(),
        vec![0xff, 0xfe, 0x7b, 0x7d],
        Vec::new(),
        b"   ".to_vec(),
        br#""just a string""#.to_vec(),
        b"[1,2,3]".to_vec(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        format!(r#"{{"type":"noop","payload":{}1{}}}"#, "[".repeat(200), "]".repeat(200)).into_bytes(),
        format!(r#"{{"type":"noop","payload":{}{}}}"#, r#"{"a":"#.repeat(150), "}".repeat(150)).into_bytes(),
    ];
    for (i, body) in malformed.into_iter().enumerate() {
        for path in ["/v1/jobs", "/v1/jobs/batch"] {
            add(
                format!("malformed JSON #{i} on {path}"),
                Expect::Code(400, "invalid_json"),
                post(path, &jobs, "application/json", body.clone()),
            );
        }
    }
    // Bodies at and over the limits (1 MiB body, 128 KiB payload, 8 KiB metadata).
    let mib = 1024 * 1024;
    let at_limit = format!("\"{}\"", "x".repeat(mib - 2)).into_bytes();
    add(
        "a 1 MiB body (a JSON string)".into(),
        Expect::Code(400, "invalid_json"),
        post("/v1/jobs", &jobs, "application/json", at_limit),
    );
    add(
        "a body one byte over 1 MiB".into(),
        Expect::Code(413, "payload_too_large"),
        post("/v1/jobs", &jobs, "application/json", vec![b' '; mib + 1]),
    );
    {
        let url = format!("{base}/v1/jobs");
        let key = jobs.clone();
        add(
            "a chunked body just over 1 MiB with no Content-Length".into(),
            Expect::Code(413, "payload_too_large"),
            Box::new(move |c: &Client| {
                // Just over the cap, so the whole body is sent before the edge stops reading
                // and answers (a far larger one is cut off mid-send and the answer is lost).
                let n = mib + 4096;
                let body = Body::new(std::io::Cursor::new(vec![b' '; n]).take(n as u64));
                c.post(&url).header("content-type", "application/json").bearer_auth(&key).body(body)
            }),
        );
    }
    add(
        "a payload over 128 KiB".into(),
        Expect::Code(413, "payload_too_large"),
        json_post("/v1/jobs", &jobs, json!({ "type": "noop", "payload": "x".repeat(128 * 1024) })),
    );
    add(
        "a payload of exactly 128 KiB with an unknown field".into(),
        Expect::Code(400, "invalid_field"),
        json_post("/v1/jobs", &jobs, json!({ "type": "noop", "payload": "x".repeat(128 * 1024 - 2), "oops": 1 })),
    );
    add(
        "metadata over 8 KiB".into(),
        Expect::Code(400, "invalid_field"),
        json_post("/v1/jobs", &jobs, json!({ "type": "noop", "metadata": { "m": "x".repeat(8 * 1024) } })),
    );
    add(
        "a batch of 101".into(),
        Expect::Code(400, "invalid_field"),
        json_post("/v1/jobs/batch", &jobs, json!({ "jobs": vec![json!({ "type": "noop" }); 101] })),
    );
    for (i, env) in
        [json!({ "jobs": [] }), json!({ "jobs": "x" }), json!({ "job": [] }), json!([]), json!({ "jobs": [1], "x": 1 })]
            .into_iter()
            .enumerate()
    {
        let code = if env.is_array() { "invalid_json" } else { "invalid_field" };
        add(format!("batch envelope #{i}"), Expect::Code(400, code), json_post("/v1/jobs/batch", &jobs, env));
    }
    let many: serde_json::Map<String, Value> = (0..51).map(|i| (format!("h{i}"), json!("v"))).collect();
    for (name, headers) in [
        ("51 headers", Value::Object(many)),
        ("8 KiB of headers", json!({ "a": "v".repeat(9000) })),
        ("a header with CRLF", json!({ "a": "x\r\nInjected: 1" })),
        ("a header name with a space", json!({ "bad name": "v" })),
        ("a non-string header", json!({ "a": 1 })),
    ] {
        add(
            format!("webhook with {name}"),
            Expect::Code(400, "invalid_field"),
            json_post(
                "/v1/jobs",
                &jobs,
                json!({ "type": "webhook", "payload": { "url": "https://example.com/", "headers": headers } }),
            ),
        );
    }
    // Headers that steer routing or speak for the system, in jobs and in a schedule's job
    // (#26; URLs with credentials and NAT64 spellings are in SSRF_URLS).
    for name in edgejobs_core::outbound::FORBIDDEN_HEADER_EXAMPLES {
        for t in ["webhook", "http.request"] {
            let payload = json!({ "url": "https://example.com/", "headers": { *name: "v" } });
            add(
                format!("{t} with a {name} header"),
                Expect::Code(400, "invalid_field"),
                json_post("/v1/jobs", &jobs, json!({ "type": t, "payload": payload })),
            );
        }
        let job = json!({ "type": "webhook", "payload": { "url": "https://example.com/", "headers": { *name: "v" } } });
        add(
            format!("a schedule whose job has a {name} header"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/schedules", &admin, json!({ "name": "hostile-header", "cron": "0 0 1 1 *", "job": job })),
        );
    }
    // Tenants (#26): a jobs key naming another tenant, a name that is no tenant's, keys and
    // tags in the schedules' namespace; listings asking for another tenant.
    let tenant_probes: [(&str, &str, Value, u16, &str); 8] = [
        (
            "a jobs key creating for another tenant",
            "/v1/jobs",
            json!({ "type": "noop", "tenant": "globex" }),
            403,
            "forbidden",
        ),
        ("a malformed tenant", "/v1/jobs", json!({ "type": "noop", "tenant": "Not A Tenant" }), 400, "invalid_field"),
        ("a tenant as a number", "/v1/jobs", json!({ "type": "noop", "tenant": 7 }), 400, "invalid_field"),
        (
            "a schedule run's key",
            "/v1/jobs",
            json!({ "type": "noop", "idempotency_key": "schedule:nightly:2030-01-01T00:00:00.000Z" }),
            400,
            "invalid_field",
        ),
        ("a schedule's tag", "/v1/jobs", json!({ "type": "noop", "tags": ["schedule:nightly"] }), 400, "invalid_field"),
        (
            "an admin creating for an unconfigured tenant",
            "/v1/jobs",
            json!({ "type": "noop", "tenant": "initrode" }),
            400,
            "invalid_field",
        ),
        (
            "a schedule for an unconfigured tenant",
            "/v1/schedules",
            json!({ "name": "hostile-tenant", "cron": "0 0 1 1 *", "job": { "type": "noop", "tenant": "initrode" } }),
            400,
            "invalid_field",
        ),
        ("a replay for a malformed tenant", "/v1/dead/replay", json!({ "tenant": "BAD" }), 400, "invalid_field"),
    ];
    for (name, path, body, status, code) in tenant_probes {
        let key = if path == "/v1/jobs" && !name.starts_with("an admin") { &jobs } else { &admin };
        add(name.to_owned(), Expect::Code(status, code), json_post(path, key, body));
    }
    for path in
        ["/v1/jobs?tenant=globex", "/v1/dead?tenant=globex", "/v1/schedules?tenant=globex", "/v1/stats?tenant=globex"]
    {
        add(format!("a jobs key asking {path}"), Expect::Code(403, "forbidden"), get(path, &jobs));
    }
    for path in ["/v1/jobs?tenant=NOPE", "/v1/stats?bogus=1"] {
        add(format!("an admin asking {path}"), Expect::Code(400, "invalid_field"), get(path, &admin));
    }
    // Wrong and missing keys and scopes.
    let bogus = "ej_jobs_00000000000000000000000000000000";
    for (path, method_post) in [
        ("/v1/jobs", true),
        ("/v1/jobs", false),
        ("/v1/jobs/batch", true),
        ("/v1/dead", false),
        ("/v1/dead/replay", true),
        ("/v1/admin/backups", false),
        ("/v1/admin/restore", true),
        ("/v1/admin/webhook-secret", true),
    ] {
        for key in ["", bogus] {
            let b = if method_post { json_post(path, key, json!({})) } else { get(path, key) };
            add(format!("{path} with key {key:?}"), Expect::Code(401, "unauthorized"), b);
        }
    }
    // Consumer reports (#26 leases): a revoked or unknown consumer token, and a lease token
    // that is no string or longer than any the shard issues.
    let one_report = "/v1/internal/jobs/j000000000000000000000000000000/events";
    let revoked = format!("{consumer}-revoked");
    for (path, body) in [
        (one_report, json!({ "event": "heartbeat", "attempt": 1, "lease": "x" })),
        ("/v1/internal/events", json!({ "events": [] })),
    ] {
        add(
            format!("{path} with a revoked consumer token"),
            Expect::Code(401, "unauthorized"),
            json_post(path, &revoked, body),
        );
    }
    for lease in [json!(7), json!({ "t": 1 }), json!("x".repeat(65))] {
        let body = json!({ "event": "complete", "attempt": 1, "lease": lease });
        add(
            format!("a report with lease {lease:.20}"),
            Expect::Code(400, "invalid_field"),
            json_post(one_report, &consumer, body),
        );
    }
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer", "Token abc"] {
        let url = format!("{base}/v1/jobs");
        let h = header.to_owned();
        add(
            format!("authorization {header:?}"),
            Expect::Code(401, "unauthorized"),
            Box::new(move |c: &Client| c.get(&url).header("authorization", &h)),
        );
    }
    for (path, key, post_it) in [
        ("/v1/admin/backups", jobs.as_str(), false),
        ("/v1/admin/backups", jobs.as_str(), true),
        ("/v1/admin/restore", jobs.as_str(), true),
        ("/v1/admin/webhook-secret", jobs.as_str(), true),
        ("/v1/dead/replay", jobs.as_str(), true),
        ("/v1/jobs", consumer.as_str(), false),
        ("/v1/internal/jobs/j000000000000000000000000000000/events", jobs.as_str(), true),
        ("/v1/internal/jobs/j000000000000000000000000000000/events", admin.as_str(), true),
    ] {
        let b = if post_it { json_post(path, key, json!({})) } else { get(path, key) };
        add(format!("{path} with a key lacking the scope"), Expect::Code(403, "forbidden"), b);
    }
    // Unknown types.
    for t in [json!("nope"), json!("NOOP"), json!("noop "), json!("../webhook"), json!("é")] {
        add(format!("type {t}"), Expect::Code(400, "unknown_type"), json_post("/v1/jobs", &jobs, json!({ "type": t })));
    }
    for t in [json!(""), json!(7), json!(null), json!(["noop"]), json!({ "t": 1 })] {
        add(
            format!("type {t}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/jobs", &jobs, json!({ "type": t })),
        );
    }
    // Invalid ids: traversal, huge, unicode, a shard this deployment does not have.
    let ids = [
        "..%2F..%2Fadmin".to_owned(),
        "%2e%2e%2fadmin".to_owned(),
        "j".repeat(5000),
        format!("j{}", "é".repeat(29)),
        "J00000000000000000000000000000".to_owned(),
        "jff1a2000000000000000000000000".to_owned(),
        "j10000000000000000000000000000".to_owned(),
        "%00".to_owned(),
    ];
    for id in &ids {
        add(format!("GET job {:.40}", id), Expect::Code(404, "job_not_found"), get(&format!("/v1/jobs/{id}"), &jobs));
        add(
            format!("cancel job {:.40}", id),
            Expect::Code(404, "job_not_found"),
            json_post(&format!("/v1/jobs/{id}/cancel"), &jobs, json!({})),
        );
        add(
            format!("retry job {:.40}", id),
            Expect::Code(404, "job_not_found"),
            json_post(&format!("/v1/jobs/{id}/retry"), &jobs, json!({})),
        );
    }
    // Re-seal and webhook secrets (#26): every malformed shard, cursor, limit and type is a
    // 400 on its field, and a jobs key may not re-seal.
    let reseal_probes: [(&str, Value); 12] = [
        ("no shard", json!({})),
        ("a negative shard", json!({ "shard": -1 })),
        ("a shard past SHARD_COUNT", json!({ "shard": 9999 })),
        ("a shard as text", json!({ "shard": "0" })),
        ("a fractional shard", json!({ "shard": 0.5 })),
        ("a cursor with a path", json!({ "shard": 0, "cursor": "../j0" })),
        ("a cursor as a number", json!({ "shard": 0, "cursor": 5 })),
        ("an overlong cursor", json!({ "shard": 0, "cursor": "j".repeat(65) })),
        ("a limit of 0", json!({ "shard": 0, "limit": 0 })),
        ("a limit past the page", json!({ "shard": 0, "limit": 501 })),
        ("a limit as text", json!({ "shard": 0, "limit": "5" })),
        ("an unknown field", json!({ "shard": 0, "keys": "k9:AAAA" })),
    ];
    for (what, body) in reseal_probes {
        add(
            format!("reseal with {what}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/admin/reseal", &admin, body),
        );
    }
    add(
        "reseal with a jobs key".into(),
        Expect::Code(403, "forbidden"),
        json_post("/v1/admin/reseal", &jobs, json!({ "shard": 0 })),
    );
    for t in [json!(5), json!("nope"), json!("noop")] {
        add(
            format!("webhook-secret for type {t}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/admin/webhook-secret", &admin, json!({ "url": "https://example.com/", "type": t })),
        );
    }
    // Multibyte and hostile text in every time and duration field.
    let times = [
        "2030-01-01T00:00:00+0é00",
        "２０３０-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z\u{202e}",
        "\u{0}",
        "2030-13-45T99:99:99Z",
    ];
    let durations = ["5é", "é", "1٣s", "5 years ago", "99999999999999999999999d", "-5s"];
    for t in times {
        add(
            format!("run_at {t:?}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/jobs", &jobs, json!({ "type": "noop", "run_at": t })),
        );
        add(
            format!("dead replay from {t:?}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/dead/replay", &admin, json!({ "from": t })),
        );
        let q = urlencode(t);
        add(format!("list from {t:?}"), Expect::Code(400, "invalid_field"), get(&format!("/v1/dead?from={q}"), &jobs));
    }
    for d in durations {
        for field in ["delay", "timeout"] {
            add(
                format!("{field} {d:?}"),
                Expect::Code(400, "invalid_field"),
                json_post("/v1/jobs", &jobs, json!({ "type": "noop", field: d })),
            );
        }
        add(
            format!("backoff.base {d:?}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/jobs", &jobs, json!({ "type": "noop", "backoff": { "base": d } })),
        );
    }
    add(
        "from later than to".into(),
        Expect::Code(400, "invalid_field"),
        get("/v1/dead?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z", &jobs),
    );
    add(
        "replay from later than to".into(),
        Expect::Code(400, "invalid_field"),
        json_post("/v1/dead/replay", &admin, json!({ "from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z" })),
    );
    // Listing parameters.
    for q in [
        "colour=red",
        "limit=0",
        "limit=101",
        "limit=abc",
        "cursor=garbage",
        "state=bogus",
        "state=dead&state=queued",
        "include=secrets",
        "include=payload&limit=50",
        "cursor=1.j%C3%A9",
    ] {
        add(format!("list ?{q}"), Expect::Code(400, "invalid_field"), get(&format!("/v1/jobs?{q}"), &jobs));
    }
    // Outbound targets inside a private network, in every spelling: refused at enqueue.
    for url in SSRF_URLS {
        for t in ["webhook", "http.request"] {
            add(
                format!("{t} to {url}"),
                Expect::Code(400, "invalid_field"),
                json_post("/v1/jobs", &jobs, json!({ "type": t, "payload": { "url": url } })),
            );
        }
    }
    // The receiver URL of a webhook secret has a webhook job's URL syntax (the URL parser
    // alone would strip the space and answer the secret of another spelling).
    for url in ["", " https://example.com/", "https://exa mple.com/", "ftp://example.com/"] {
        add(
            format!("webhook-secret for {url:?}"),
            Expect::Code(400, "invalid_field"),
            json_post("/v1/admin/webhook-secret", &admin, json!({ "url": url })),
        );
    }
    // Methods and routes.
    for (method, path) in [
        ("PUT", "/v1/jobs"),
        ("DELETE", "/v1/jobs/j000000000000000000000000000000"),
        ("GET", "/v1/jobs/batch"),
        ("GET", "/v1/admin/restore"),
        // Methods workers-rs does not know, which it reads as GET: refused, not served. (A
        // method the runtime does not know either, such as FOO, never reaches the Worker.)
        ("QUERY", "/v1/jobs"),
        ("PROPFIND", "/v1/stats"),
        ("QUERY", "/v1/schedules/nightly"),
    ] {
        let (url, key, m) =
            (format!("{base}{path}"), jobs.clone(), reqwest::Method::from_bytes(method.as_bytes()).expect("method"));
        add(
            format!("{method} {path}"),
            Expect::Code(405, "method_not_allowed"),
            Box::new(move |c: &Client| c.request(m.clone(), &url).bearer_auth(&key)),
        );
    }
    for path in ["/v2/jobs", "/v1/jobs/x/y/z", "/v1/admin", "/%F0%9F%92%A3"] {
        add(format!("GET {path}"), Expect::Code(404, "not_found"), get(path, &jobs));
    }
    // Oversized request headers: the runtime answers before the Worker runs.
    {
        let url = format!("{base}/v1/jobs");
        add(
            "a 128 KiB header".into(),
            Expect::Runtime4xx,
            Box::new(move |c: &Client| c.get(&url).header("x-big", "a".repeat(128 * 1024))),
        );
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What must not change: jobs per shard, the Redis key count (rate-limit windows left out:
/// every keyed read counts in one, bad or not), the R2 object count.
type State = (Vec<(String, f64)>, i64, usize);

fn state(ctx: &Ctx, stack: &Stack) -> anyhow::Result<State> {
    let page =
        ctx.http.get(format!("{}/metrics", stack.edge_url)).bearer_auth(&stack.secrets.admin_key).send()?.text()?;
    let shards: Vec<(String, f64)> = page
        .lines()
        .filter(|l| l.starts_with("edgejobs_shard_jobs{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(s, v)| v.parse().ok().map(|v| (s.to_owned(), v))))
        .collect();
    // Every Redis key but the rate limiter's windows, by SCAN (bounded).
    let mut dbsize = 0i64;
    let mut cursor = "0".to_owned();
    for _ in 0..10_000 {
        let reply = ctx
            .http
            .post(&stack.upstash_url)
            .bearer_auth(&stack.secrets.upstash_token)
            .json(&json!(["SCAN", cursor, "COUNT", "1000"]))
            .send()?
            .json::<Value>()?;
        let keys = reply["result"][1].as_array().cloned().unwrap_or_default();
        dbsize += keys.iter().filter(|k| !k.as_str().unwrap_or("").starts_with("edgejobs:ratelimit:")).count() as i64;
        cursor = reply["result"][0].as_str().unwrap_or("0").to_owned();
        if cursor == "0" {
            break;
        }
    }
    Ok((shards, dbsize, files_under(&stack.opts.state_dir.join("wrangler/v3/r2"))))
}

fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { dirs.push(p) } else { n += 1 }
        }
    }
    n
}

fn hostile_requests_get_4xx_and_change_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let probes = probes(stack);
        ensure(probes.len() >= 200, || format!("only {} hostile requests", probes.len()))?;
        let before = state(ctx, stack)?;
        let mut failures = Vec::new();
        for p in &probes {
            let req = (p.build)(&ctx.http);
            let r = match p.expect {
                Expect::Runtime4xx => ctx.send_unchecked(req),
                Expect::Code(..) => ctx.send(req),
            };
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{}: {e:#}", p.name));
                    continue;
                }
            };
            let ok = match p.expect {
                Expect::Code(status, code) => r.status == status && r.code() == code,
                Expect::Runtime4xx => (400..500).contains(&r.status),
            };
            if !ok {
                failures.push(format!(
                    "{}: want {:?}, got {} {}",
                    p.name,
                    p.expect,
                    r.status,
                    r.body.to_string().chars().take(200).collect::<String>()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let after = state(ctx, stack)?;
        eprintln!("hostile input: {} requests, {} answered otherwise", probes.len(), failures.len());
        ensure(failures.is_empty(), || format!("{} probes failed:\n{}", failures.len(), failures.join("\n")))?;
        ensure(before == after, || format!("state changed: before {before:?}, after {after:?}"))
    })
}

/// A loopback listener that counts the connections it accepts (none is expected).
fn canary() -> anyhow::Result<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hits);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    Ok((port, hits))
}

fn outbound_requests_never_reach_private_addresses(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (port, hits) = canary()?;
        let c = stack.start_consumer(&[("EDGEJOBS_RESOLVE", "evil.test=127.0.0.1,meta.test=127.0.0.1")])?;
        let result = (|| -> anyhow::Result<()> {
            // A name that resolves to loopback, on a port outside the allow-list: refused by
            // the consumer before it connects.
            let id = enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": format!("http://evil.test:{port}/x?token=s3cret") } }))?;
            let job = wait_on(ctx, stack, &id, "dead")?;
            let err = job["last_error"].as_str().unwrap_or_default();
            ensure(err.contains("refused") && !err.contains("s3cret"), || format!("refused, without the query: {job}"))?;
            // A redirect from an allowed target to the canary, for both lanes.
            let hop = ctx.hooks.script(&format!("/{}", unique("hop")), vec![Reply::status(302).location(&format!("http://127.0.0.1:{port}/in"))]);
            let native = enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": hop } }))?;
            let edge = enqueue_on(ctx, stack, &json!({ "type": "webhook", "payload": { "url": hop }, "max_attempts": 1 }))?;
            for id in [&native, &edge] {
                let job = wait_on(ctx, stack, id, "dead")?;
                ensure(job["last_error"].as_str().is_some_and(|e| e.contains("redirect") && e.contains("refused")), || {
                    format!("the redirect is refused: {job}")
                })?;
            }
            // The consumer's own /metrics, by a name that resolves to it.
            let own = stack.consumer_url(c).rsplit(':').next().unwrap_or("0").to_owned();
            let id = enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": format!("http://meta.test:{own}/metrics") } }))?;
            let job = wait_on(ctx, stack, &id, "dead")?;
            ensure(job.get("result").is_none(), || format!("nothing of /metrics was read: {job}"))?;
            std::thread::sleep(Duration::from_millis(300));
            ensure(hits.load(Ordering::SeqCst) == 0, || format!("{} connections reached the canary", hits.load(Ordering::SeqCst)))
        })();
        stack.terminate_consumer(c, Duration::from_secs(10));
        result
    })
}

fn secrets_stay_out_of_every_output(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        stack.restart_wrangler(vec![("RETENTION_COMPLETED_AGE".into(), "1s".into()), ("SWEEP_QUEUED_AFTER".into(), "1h".into())])?;
        // A stand-in for Sentry's ingestion endpoint on the webhook target: a project of its own.
        let project = u32::from_str_radix(&edgejobs_tests::stack::random_hex(3), 16).unwrap_or(7) + 1000;
        let dsn_port = ctx.hooks.base.rsplit(':').next().unwrap_or("0").to_owned();
        let sentry_path = format!("/api/{project}/envelope/");
        let dsn = format!("http://0123456789abcdef0123456789abcdef@127.0.0.1:{dsn_port}/{project}");
        let c = stack.start_consumer(&[("SENTRY_DSN", &dsn)])?;
        let result = (|| -> anyhow::Result<()> {
            let canary = format!("Bearer canary-{}", unique("secret"));
            let query_secret = unique("querytoken");
            let path = format!("/{}", unique("sealed"));
            let url = ctx.hooks.script(&path, vec![Reply::status(200)]);
            let headers = json!({ "Authorization": canary, "X-Api-Key": canary });
            let mut ids = Vec::new();
            ids.push(enqueue_on(ctx, stack, &json!({ "type": "webhook", "payload": { "url": url, "headers": headers } }))?);
            ids.push(enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": url, "headers": headers } }))?);
            // A permanent failure whose URL carries a token in its query: errors and Sentry
            // get the URL without it.
            let failing = ctx.hooks.script(&format!("/{}", unique("reject")), vec![Reply::status(400)]);
            let bad = enqueue_on(ctx, stack, &json!({ "type": "http.request", "payload": { "url": format!("{failing}?token={query_secret}"), "headers": headers } }))?;
            for id in &ids {
                let job = wait_on(ctx, stack, id, "completed")?;
                ensure(job["payload"]["headers"] == json!({ "Authorization": "[redacted]", "X-Api-Key": "[redacted]" }), || {
                    format!("the API shows header values redacted: {job}")
                })?;
            }
            let dead = wait_on(ctx, stack, &bad, "dead")?;
            // The receiver got the real header values (opened only where the request is made).
            let got = ctx.hooks.received(&path);
            ensure(got.len() == 2 && got.iter().all(|r| r.headers.get("authorization") == Some(&canary)), || {
                format!("the receiver gets the header: {:?}", got.iter().map(|r| r.headers.get("authorization")).collect::<Vec<_>>())
            })?;
            // Listings with payloads, a backup, then retention's archive of the finished jobs.
            let listed = ctx.send(ctx.http.get(format!("{}/v1/jobs?include=payload&limit=20", stack.edge_url)).bearer_auth(&stack.secrets.api_key))?;
            let backup = ctx.send(ctx.http.post(format!("{}/v1/admin/backups", stack.edge_url)).bearer_auth(&stack.secrets.admin_key).json(&json!({})))?;
            ensure(backup.status == 201, || format!("backup: {}", backup.body))?;
            std::thread::sleep(Duration::from_millis(1500));
            let archived0 = metric_on(ctx, stack, "edgejobs_retention_archived_total")?;
            let r = ctx.http.get(format!("{}/__scheduled?cron=*/5+*+*+*+*", stack.edge_url)).send()?;
            ensure(r.status().is_success(), || "fired retention".into())?;
            ensure(wait_until(Duration::from_secs(20), || ids.iter().all(|id| job_on(ctx, stack, id).is_ok_and(|j| j["error"]["code"] == "job_not_found"))), || "archived and deleted".into())?;
            let archived = metric_on(ctx, stack, "edgejobs_retention_archived_total")?;
            ensure(archived >= archived0 + 2.0, || format!("the jobs were archived: {archived0} -> {archived}"))?;
            ensure(wait_until(Duration::from_secs(15), || !ctx.hooks.received(&sentry_path).is_empty()), || "Sentry got the permanent failure".into())?;
            // Everything that leaves the system or stays on its disk, searched for secrets. A
            // URL's query is part of the payload the user gave (the API and backups keep it as
            // given; secrets belong in headers, which are sealed): only errors, logs, metrics
            // and Sentry must go without it.
            let mut haystacks: Vec<(String, String, bool)> = vec![
                ("GET /metrics".into(), ctx.http.get(format!("{}/metrics", stack.edge_url)).send()?.text()?, false),
                ("GET /health".into(), ctx.http.get(format!("{}/health", stack.edge_url)).send()?.text()?, false),
                ("consumer /metrics".into(), ctx.http.get(format!("{}/metrics", stack.consumer_url(c))).send()?.text()?, false),
                ("consumer /health".into(), ctx.http.get(format!("{}/health", stack.consumer_url(c))).send()?.text()?, false),
                ("listing with payloads".into(), listed.body.to_string(), true),
                ("the dead job".into(), dead.to_string(), true),
                ("the dead job's error".into(), dead["last_error"].to_string(), false),
                ("an error body".into(), ctx.http.get(format!("{}/v1/jobs", stack.edge_url)).bearer_auth("wrong-key-wrong-key").send()?.text()?, false),
            ];
            ensure(dead["last_error"].as_str().is_some_and(|e| e.contains("answered 400")), || format!("a permanent failure: {dead}"))?;
            for r in ctx.hooks.received(&sentry_path) {
                haystacks.push(("a Sentry event".into(), r.body, false));
            }
            haystacks.extend(files_text(&stack.opts.state_dir.join("logs"))?.into_iter().map(|(p, t)| (format!("log {p}"), t, false)));
            haystacks.extend(files_text(&stack.opts.state_dir.join("wrangler/v3/r2"))?.into_iter().map(|(p, t)| (format!("R2 {p}"), t, true)));
            let s = &stack.secrets;
            let needles: Vec<(&str, &str)> = vec![
                ("the header value", canary.as_str()),
                ("the query token", query_secret.as_str()),
                ("the jobs key", s.api_key.as_str()),
                ("the admin key", s.admin_key.as_str()),
                ("the consumer token", s.consumer_token.as_str()),
                ("the webhook secret", s.webhook_secret.as_str()),
                ("the Upstash token", s.upstash_token.as_str()),
                ("the payload key", s.payload_keys.trim_start_matches("k1:")),
            ];
            let mut leaks = Vec::new();
            for (what, text, holds_payload) in &haystacks {
                for (name, needle) in &needles {
                    if *holds_payload && *needle == query_secret {
                        continue;
                    }
                    if text.contains(needle) {
                        leaks.push(format!("{name} appears in {what}"));
                    }
                }
            }
            eprintln!("secrets: searched {} outputs and files for {} secrets", haystacks.len(), needles.len());
            ensure(leaks.is_empty(), || leaks.join("\n"))
        })();
        stack.terminate_consumer(c, Duration::from_secs(10));
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

/// The text of every file under `dir` (lossy), with its path.
fn files_text(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    Ok(out)
}
