//! Tracing (issue #32): what exporting every span costs, in the same run, printed and never
//! asserted (`report.scenarios.tracing`, the target `tracing_edge_ratio`).
//!
//! - The edge lane end to end (noop jobs in batches, as the `edge` scenario) with the edge
//!   exporting every span to the stack's OTLP receiver (sampler ratio 1.0, the default)
//!   against the same Worker with `OTEL_SDK_DISABLED=true`, in the order off, on, on, off (a
//!   machine that slows down during the run weighs on both); each turn restarts
//!   `wrangler dev` with its setting and warms it with 100 jobs. The medians' ratio.
//! - The native consumer's peak RSS running the same `sleep` jobs with tracing on (OTLP/gRPC
//!   to the receiver) and off, one consumer each, one after the other.
//! - The spans the receiver got, and what the edge counted as exported and dropped.

use serde_json::{Value, json};

use crate::procfs::peak_rss;
use crate::report::{f, num, target};
use crate::{Bench, say};

/// The edge lane end to end with every span exported ÷ without (issue #32).
pub const TARGET_EDGE_RATIO: f64 = 0.9;

/// The `[vars]` of a turn: the stack's own, with tracing on or off.
fn vars(base: &[(String, String)], on: bool) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = base.iter().filter(|(k, _)| k != "OTEL_SDK_DISABLED").cloned().collect();
    v.push(("OTEL_SDK_DISABLED".into(), (!on).to_string()));
    v
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => None,
        n if n % 2 == 1 => Some(xs[n / 2]),
        n => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// The receiver's counters (`GET /api/stats`).
fn receiver_stats(b: &Bench) -> Value {
    let url = format!("{}/api/stats", b.stack.otlp_url);
    b.http.get(url).send().ok().and_then(|r| r.json::<Value>().ok()).unwrap_or(Value::Null)
}

pub fn run(b: &mut Bench, report: &mut Value) -> anyhow::Result<()> {
    if b.stack.otlp_url.is_empty() {
        anyhow::bail!("the tracing scenario needs the stack's OTLP receiver");
    }
    let base = b.stack.opts.vars.clone();
    let jobs = b.s.edge_jobs;
    let mut turns = Vec::new();
    for on in [false, true, true, false] {
        say(format!("tracing: edge lane, {jobs} noop jobs, tracing {}", if on { "on" } else { "off" }));
        b.stack.restart_wrangler(vars(&base, on))?;
        b.lane(json!({ "type": "noop" }), 100, None)?;
        let lane = b.lane(json!({ "type": "noop" }), jobs, None)?;
        let rate = if lane.completed >= lane.created as f64 { lane.jobs_per_s() } else { None };
        say(format!("tracing {}: {} jobs/s", if on { "on" } else { "off" }, num(rate, 0)));
        turns.push(
            json!({ "tracing": on, "jobs_per_s": rate, "completed": lane.completed, "elapsed_s": lane.elapsed_s }),
        );
    }
    b.stack.restart_wrangler(base)?;
    let rates = |on: bool| -> Vec<f64> {
        turns.iter().filter(|t| t["tracing"] == on).filter_map(|t| f(&t["jobs_per_s"])).collect()
    };
    let (on, off) = (median(rates(true)), median(rates(false)));
    let ratio = on.zip(off).filter(|(_, o)| *o > 0.0).map(|(a, o)| a / o);
    say(format!("tracing: edge lane on ÷ off = {}", num(ratio, 3)));

    // The consumer's footprint with and without its exporter.
    let native_jobs = b.s.native_jobs.min(2000);
    let mut rss = serde_json::Map::new();
    for on in [true, false] {
        let env: &[(&str, &str)] =
            &[("EDGEJOBS_CONCURRENCY", "50"), ("OTEL_SDK_DISABLED", if on { "false" } else { "true" })];
        let i = b.stack.start_consumer(env)?;
        let pid = b.stack.consumer_pid(i);
        let lane = b.lane(json!({ "type": "sleep", "payload": { "ms": 10 } }), native_jobs, Some(i));
        let peak = pid.and_then(peak_rss);
        b.stack.terminate_consumer(i, std::time::Duration::from_secs(30));
        let lane = lane?;
        say(format!(
            "tracing: consumer with tracing {}: peak RSS {} MiB over {native_jobs} jobs ({} jobs/s)",
            if on { "on" } else { "off" },
            num(peak.map(|p| p as f64 / 1_048_576.0), 1),
            num(lane.jobs_per_s(), 0)
        ));
        rss.insert(
            if on { "on" } else { "off" }.to_owned(),
            json!({ "peak_rss_bytes": peak, "jobs_per_s": lane.jobs_per_s() }),
        );
    }
    let metrics = b.edge_metrics().ok();
    let exported = metrics.as_ref().and_then(|m| m.sum("edgejobs_spans_exported_total"));
    let dropped = metrics.as_ref().and_then(|m| m.sum("edgejobs_spans_dropped_total"));
    let dropped_by: serde_json::Map<String, Value> = ["refused", "unreachable", "overflow"]
        .iter()
        .map(|r| {
            let n = metrics.as_ref().and_then(|m| m.sum_where("edgejobs_spans_dropped_total", "reason", r));
            ((*r).to_owned(), json!(n))
        })
        .collect();
    report["scenarios"]["tracing"] = json!({
        "edge_jobs": jobs,
        "turns": turns,
        "on_jobs_per_s": on,
        "off_jobs_per_s": off,
        "ratio": ratio,
        "consumer": { "native_jobs": native_jobs, "sleep_ms": 10, "concurrency": 50, "rss": rss },
        "edge_spans_exported": exported,
        "edge_spans_dropped": dropped,
        "edge_spans_dropped_by_reason": dropped_by,
        "receiver": receiver_stats(b),
    });
    Ok(())
}

pub fn targets(report: &Value) -> Vec<Value> {
    let t = &report["scenarios"]["tracing"];
    if t.is_null() {
        return Vec::new();
    }
    vec![target(
        "tracing_edge_ratio",
        "tracing: edge lane with every span exported ÷ without, jobs/s",
        f(&t["ratio"]),
        ">=",
        TARGET_EDGE_RATIO,
    )]
}

pub fn print(r: &Value) {
    let t = &r["scenarios"]["tracing"];
    if t.is_null() {
        return;
    }
    let mib = |v: &Value| num(f(v).map(|b| b / 1_048_576.0), 1);
    println!();
    println!("tracing (issue #32): same run, figures not assertions:");
    println!(
        "  edge lane, {} noop jobs: on {} jobs/s, off {} jobs/s = {}× (target ≥{TARGET_EDGE_RATIO}×; turns off, on, on, off)",
        t["edge_jobs"],
        num(f(&t["on_jobs_per_s"]), 0),
        num(f(&t["off_jobs_per_s"]), 0),
        num(f(&t["ratio"]), 3)
    );
    println!(
        "  consumer peak RSS over {} sleep jobs: tracing on {} MiB, off {} MiB",
        t["consumer"]["native_jobs"],
        mib(&t["consumer"]["rss"]["on"]["peak_rss_bytes"]),
        mib(&t["consumer"]["rss"]["off"]["peak_rss_bytes"])
    );
    let by = &t["edge_spans_dropped_by_reason"];
    println!(
        "  spans: the edge exported {} and dropped {} (refused {}, unreachable {}, overflow {}); the receiver stored {}",
        num(f(&t["edge_spans_exported"]), 0),
        num(f(&t["edge_spans_dropped"]), 0),
        num(f(&by["refused"]), 0),
        num(f(&by["unreachable"]), 0),
        num(f(&by["overflow"]), 0),
        num(f(&t["receiver"]["spans_received"]), 0)
    );
}
