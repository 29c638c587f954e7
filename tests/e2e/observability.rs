//! Tests of /health, /metrics and the monitoring files: real promtool on the expositions, a
//! real Prometheus scraping a stack, and the rules and dashboard checked against the metric
//! names the code exports.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use edgejobs_tests::proc::{Proc, free_port, wait_until};
use edgejobs_tests::stack::{Stack, StackOptions};
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, promtool_check_metrics};

pub const TESTS: &[Test] = &[
    ("health_reports_each_check_without_secrets", health_reports_each_check_without_secrets),
    ("edge_metrics_pass_promtool_and_count_what_happens", edge_metrics_pass_promtool_and_count_what_happens),
    ("metrics_survive_a_restart_and_honour_the_token", metrics_survive_a_restart_and_honour_the_token),
    ("a_real_prometheus_reads_back_what_was_enqueued", a_real_prometheus_reads_back_what_was_enqueued),
    ("rules_and_dashboard_use_only_exported_metrics", rules_and_dashboard_use_only_exported_metrics),
];

fn health_reports_each_check_without_secrets(ctx: &Ctx) -> anyhow::Result<()> {
    // The checks are an operator's (an admin key here; the metrics token works too).
    let r = ctx.send(ctx.http.get(ctx.url("/health")).bearer_auth(&ctx.admin_key))?;
    ensure(r.status == 200, || format!("{} {}", r.status, r.body))?;
    let checks = &r.body["checks"];
    for c in ["config", "shards", "queue", "upstash", "backup", "oldest_queued_job", "sweep"] {
        ensure(checks[c]["ok"].is_boolean(), || format!("check {c}: {}", r.body))?;
    }
    for c in ["shards", "queue", "upstash", "config"] {
        ensure(checks[c]["ok"] == true, || format!("{c} should pass: {}", r.body))?;
    }
    ensure(checks["shards"]["latency_ms"].is_number() && checks["upstash"]["latency_ms"].is_number(), || {
        format!("{}", r.body)
    })?;
    let text = r.body.to_string();
    for secret in [&ctx.api_key, &ctx.admin_key, &ctx.upstash_token, &ctx.consumer_token, &ctx.upstash_url] {
        ensure(!text.contains(secret.as_str()), || "health leaks a secret or an internal address".into())?;
    }
    ensure(!text.contains("127.0.0.1"), || "health leaks an address".into())
}

fn scrape(ctx: &Ctx, base: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut req = ctx.http.get(format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send()?;
    Ok((r.status().as_u16(), r.text()?))
}

/// Every sample of a page: series (name and labels) → value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(s, v)| v.parse().ok().map(|v| (s.to_owned(), v))))
        .collect()
}

fn edge_metrics_pass_promtool_and_count_what_happens(ctx: &Ctx) -> anyhow::Result<()> {
    let (status, before) = scrape(ctx, &ctx.edge, None)?;
    ensure(status == 200, || format!("metrics: {status} {before}"))?;
    promtool_check_metrics(&before)?;
    let id = ctx.enqueue(&json!({ "type": "noop" }))?;
    ctx.wait_state(&id, "completed", Duration::from_secs(30))?;
    ctx.post("/v1/jobs", &json!({ "type": "nope" }))?;
    let b = samples(&before);
    let grew = |a: &BTreeMap<String, f64>, series: &str| {
        a.get(series).copied().unwrap_or(0.0) >= b.get(series).copied().unwrap_or(0.0) + 1.0
    };
    let series = [
        "edgejobs_jobs_enqueued_total{type=\"noop\",tenant=\"default\"}",
        "edgejobs_jobs_completed_total{type=\"noop\",tenant=\"default\"}",
        "edgejobs_attempts_total{type=\"noop\",lane=\"edge\",outcome=\"completed\",tenant=\"default\"}",
        "edgejobs_attempt_duration_seconds_count{type=\"noop\",lane=\"edge\"}",
        // Request-level counts are written within about a second (with the next shard call
        // or a flush of their own).
        "edgejobs_enqueue_requests_total{status=\"201\"}",
        "edgejobs_enqueue_requests_total{status=\"400\"}",
        "edgejobs_worker_invocations_total{kind=\"fetch\",route=\"jobs\"}",
        "edgejobs_do_requests_total{op=\"create_many\"}",
    ];
    let mut after = String::new();
    let mut a = BTreeMap::new();
    let all_grew = wait_until(Duration::from_secs(10), || {
        after = scrape(ctx, &ctx.edge, None).map(|(_, page)| page).unwrap_or_default();
        a = samples(&after);
        series.iter().all(|s| grew(&a, s))
    });
    promtool_check_metrics(&after)?;
    for s in series {
        ensure(all_grew || grew(&a, s), || format!("{s} did not grow: {:?} -> {:?}", b.get(s), a.get(s)))?;
    }
    // Counters never go down between scrapes.
    for (series, v) in &b {
        if series.contains("_total") || series.contains("_count") || series.contains("_bucket") {
            ensure(a.get(series).is_some_and(|n| n >= v), || format!("{series} went down"))?;
        }
    }
    ensure(a.keys().any(|k| k.starts_with("edgejobs_jobs{state=\"completed\"")), || "jobs gauge by state".into())?;
    // The JSON form.
    let r = ctx.send_unchecked(ctx.http.get(ctx.url("/metrics")).header("accept", "application/json"))?;
    ensure(r.body["edgejobs_jobs_enqueued_total"]["type"] == "counter", || format!("json: {}", r.body))
}

fn metrics_survive_a_restart_and_honour_the_token(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let enqueue = |stack: &Stack| {
            ctx.send(
                ctx.http
                    .post(format!("{}/v1/jobs", stack.edge_url))
                    .bearer_auth(&stack.secrets.api_key)
                    .json(&json!({ "type": "noop" })),
            )
        };
        for _ in 0..3 {
            ensure(enqueue(stack)?.status == 201, || "enqueue".into())?;
        }
        let (_, before) = scrape(ctx, &stack.edge_url, None)?;
        let token = format!("mt_{}", edgejobs_tests::stack::random_hex(12));
        stack.restart_wrangler(vec![("METRICS_TOKEN".into(), token.clone())])?;
        let result = (|| -> anyhow::Result<()> {
            let (status, _) = scrape(ctx, &stack.edge_url, None)?;
            ensure(status == 401, || format!("no token: {status}"))?;
            let (status, _) = scrape(ctx, &stack.edge_url, Some("wrong-token-wrong"))?;
            ensure(status == 401, || format!("wrong token: {status}"))?;
            let (status, _) = scrape(ctx, &stack.edge_url, Some(&stack.secrets.admin_key))?;
            ensure(status == 200, || format!("admin key: {status}"))?;
            let (status, after) = scrape(ctx, &stack.edge_url, Some(&token))?;
            ensure(status == 200, || format!("token: {status}"))?;
            let (b, a) = (samples(&before), samples(&after));
            for (series, v) in b.iter().filter(|(s, _)| s.contains("_total")) {
                ensure(a.get(series).is_some_and(|n| n >= v), || {
                    format!("{series} lost across the restart: {v} -> {:?}", a.get(series))
                })?;
            }
            let key = "edgejobs_jobs_enqueued_total{type=\"noop\",tenant=\"default\"}";
            ensure(a.get(key).copied().unwrap_or(0.0) >= 3.0, || format!("{key}: {:?}", a.get(key)))
        })();
        stack.restart_wrangler(Vec::new())?;
        result
    })
}

fn a_real_prometheus_reads_back_what_was_enqueued(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        // Other fault-stack tests enqueue webhook jobs too: Prometheus must read 7 more than
        // it read before this test's enqueues.
        let dir = stack.opts.state_dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        let target = stack.edge_url.trim_start_matches("http://").to_owned();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: edgejobs-edge\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let port = free_port()?;
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut prom = Proc::spawn("prometheus", cmd, &dir.join("prometheus.log"))?;
        let api = format!("http://127.0.0.1:{port}/api/v1/query");
        let query = "sum(edgejobs_jobs_enqueued_total{type=\"webhook\"}) or vector(0)";
        let query_url = reqwest::Url::parse_with_params(&api, &[("query", query)])?;
        let read = || -> (Option<f64>, Value) {
            let v: Option<Value> = ctx.http.get(query_url.clone()).send().ok().and_then(|r| r.json().ok());
            let n = v.as_ref().and_then(|v| v["data"]["result"][0]["value"][1].as_str()).and_then(|s| s.parse::<f64>().ok());
            (n, v.unwrap_or(Value::Null))
        };
        // The count before: once Prometheus has scraped the edge (its `up` is 1).
        let up_url = reqwest::Url::parse_with_params(&api, &[("query", "up{job=\"edgejobs-edge\"}")])?;
        let scraped = wait_until(Duration::from_secs(60), || {
            let v: Option<Value> = ctx.http.get(up_url.clone()).send().ok().and_then(|r| r.json().ok());
            v.is_some_and(|v| v["data"]["result"][0]["value"][1] == "1")
        });
        ensure(scraped, || format!("Prometheus scraped the edge\n{}", prom.log_tail(20)))?;
        let (before, seen_before) = read();
        let before = before.with_context(|| format!("no count before: {seen_before}"))?;
        let url = ctx.hooks.script(
            &format!("/{}", crate::util::unique("prom")),
            vec![edgejobs_tests::hooks::Reply::status(200)],
        );
        for _ in 0..7 {
            let r = ctx.send(
                ctx.http
                    .post(format!("{}/v1/jobs", stack.edge_url))
                    .bearer_auth(&stack.secrets.api_key)
                    .json(&json!({ "type": "webhook", "payload": { "url": url } })),
            )?;
            ensure(r.status == 201, || format!("enqueue: {}", r.status))?;
        }
        let mut last = Value::Null;
        let seen = wait_until(Duration::from_secs(60), || {
            let (n, v) = read();
            last = v;
            n == Some(before + 7.0)
        });
        prom.stop(Duration::from_secs(5));
        ensure(seen, || format!("Prometheus never read {before} + 7: {last}\n{}", prom.log_tail(20)))
    })
}

fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("edgejobs_") {
        let start = i + pos;
        let ok_start = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end =
            text[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(text.len(), |e| start + e);
        if ok_start {
            out.push(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

fn rules_and_dashboard_use_only_exported_metrics(ctx: &Ctx) -> anyhow::Result<()> {
    let (_, edge) = scrape(ctx, &ctx.edge, None)?;
    let (_, consumer) = scrape(ctx, &ctx.consumer_url, None)?;
    let mut exported = std::collections::BTreeSet::new();
    for line in edge.lines().chain(consumer.lines()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            exported.insert(name.to_owned());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{s}"));
                }
            }
        }
    }
    let root = StackOptions::default_root().join("monitoring");
    let mut files = vec![root.join("grafana/edgejobs.json")];
    for e in std::fs::read_dir(root.join("rules")).context("monitoring/rules")? {
        files.push(e?.path());
    }
    let mut used = 0;
    for f in files {
        // Rule unit tests feed their own series; only rules and the dashboard must match.
        if f.to_string_lossy().contains(".test.") {
            continue;
        }
        let text = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
        for name in metric_names(&text) {
            used += 1;
            ensure(exported.contains(&name), || format!("{} uses {name}, which no /metrics exports", f.display()))?;
        }
    }
    ensure(used > 20, || format!("only {used} metric references found"))
}
