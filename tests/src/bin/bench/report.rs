//! The report: machine facts, targets and whether they were met, and the printed tables.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::ops::PRICES_AS_OF;

// ---------------------------------------------------------------------------------------
// Targets (from the issue). Timing is never asserted in tests; it is printed here.
// ---------------------------------------------------------------------------------------

pub const TARGET_EDGE_E2E_JOBS_PER_S: f64 = 1_000.0;
pub const TARGET_BATCH_ENQUEUE_JOBS_PER_S: f64 = 2_000.0;
pub const TARGET_SINGLE_VS_LIVENESS_RPS: f64 = 0.45;
pub const TARGET_SINGLE_VS_LIVENESS_P99: f64 = 3.0;
pub const TARGET_DO_PER_JOB_BATCH: f64 = 0.5;
pub const TARGET_DO_PER_JOB_SINGLE: f64 = 3.0;
pub const TARGET_USD_PER_M_JOBS_BATCH: f64 = 0.50;

// ---------------------------------------------------------------------------------------
// Machine and environment facts.
// ---------------------------------------------------------------------------------------

pub fn machine() -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).ok();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    json!({ "cores": cores, "mem_total_bytes": mem, "kernel": kernel, "cpu_model": model, "loadavg_start": loadavg() })
}

pub fn loadavg() -> Option<Vec<f64>> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).filter_map(|x| x.parse().ok()).collect())
}

pub fn git(root: &Path) -> Value {
    let run = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({ "commit": commit, "dirty": dirty })
}

pub fn package_version(root: &Path, pkg: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join("node_modules").join(pkg).join("package.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_owned)
}

pub fn tools(root: &Path) -> Value {
    let wrk = Command::new("wrk")
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
        .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()));
    json!({ "wrangler": package_version(root, "wrangler"), "workerd": package_version(root, "workerd"), "wrk": wrk })
}

// ---------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------

pub fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

pub fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "n/a".into(),
    }
}

/// Targets with their values and whether each was met (`None`: not measured).
/// One target as the report keeps it: the value measured, how it compares (`>=` or `<=`) with
/// the target, and whether it is met (`null` when the value is missing).
pub fn target(id: &str, what: &str, value: Option<f64>, op: &str, target: f64) -> Value {
    let met = value.map(|v| if op == ">=" { v >= target } else { v <= target });
    json!({ "id": id, "what": what, "value": value, "op": op, "target": target, "met": met })
}

pub fn targets(report: &Value) -> Vec<Value> {
    let sc = &report["scenarios"];
    let live_rps = f(&sc["liveness"]["wrk"]["requests_per_s"]);
    let live_p99 = f(&sc["liveness"]["wrk"]["p99_ms"]);
    let single_rps = f(&sc["single_enqueue"]["wrk"]["requests_per_s"]);
    let single_p99 = f(&sc["single_enqueue"]["wrk"]["p99_ms"]);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let edge = &sc["edge_lane"];
    // A lane that timed out has no end-to-end rate; what it reached is in the scenario.
    let edge_rate = if edge["all_completed"].as_bool() == Some(true) { f(&edge["jobs_per_s"]) } else { None };
    let stream = &report["stream_after_run"];
    let t = target;
    let mut out = vec![
        t("edge_lane_jobs_per_s", "edge lane end to end, jobs/s", edge_rate, ">=", TARGET_EDGE_E2E_JOBS_PER_S),
        t(
            "batch_enqueue_jobs_per_s",
            "batch enqueue, jobs/s",
            f(&sc["batch_enqueue"]["jobs_per_s"]),
            ">=",
            TARGET_BATCH_ENQUEUE_JOBS_PER_S,
        ),
        t(
            "single_enqueue_rps_vs_liveness",
            "single enqueue req/s ÷ liveness req/s",
            ratio(single_rps, live_rps),
            ">=",
            TARGET_SINGLE_VS_LIVENESS_RPS,
        ),
        t(
            "single_enqueue_p99_vs_liveness",
            "single enqueue p99 ÷ liveness p99",
            ratio(single_p99, live_p99),
            "<=",
            TARGET_SINGLE_VS_LIVENESS_P99,
        ),
        t(
            "do_requests_per_job_batch",
            "DO requests per edge-lane job, batch enqueue",
            f(&edge["ops"]["per_job"]["do_requests"]),
            "<=",
            TARGET_DO_PER_JOB_BATCH,
        ),
        t(
            "do_requests_per_job_single",
            "DO requests per edge-lane job, single enqueue",
            f(&sc["single_enqueue"]["ops"]["per_job"]["do_requests"]),
            "<=",
            TARGET_DO_PER_JOB_SINGLE,
        ),
        t(
            "usd_per_million_jobs_batch",
            "US$ per million edge-lane jobs, batch enqueue",
            f(&edge["ops"]["cost_usd_per_million_jobs"]["total"]),
            "<=",
            TARGET_USD_PER_M_JOBS_BATCH,
        ),
        t("stream_length_after_run", "stream length (XLEN) after the run", f(&stream["xlen"]), "<=", 0.0),
        t("stream_pending_after_run", "pending stream entries after the run", f(&stream["pending"]), "<=", 0.0),
    ];
    out.extend(crate::latency::targets(report));
    out.extend(crate::flow::targets(report));
    out.extend(crate::traces::targets(report));
    out.extend(crate::workflow::targets(report));
    out.extend(crate::live::targets(report));
    out
}

pub fn met_str(t: Option<&Value>) -> String {
    match t.map(|t| &t["met"]) {
        Some(Value::Bool(true)) => "yes".into(),
        Some(Value::Bool(false)) => "NO".into(),
        _ => "n/a".into(),
    }
}

pub fn print_table(r: &Value) {
    let m = &r["machine"];
    let g = &r["git"];
    let sc = &r["scenarios"];
    let tg: Vec<Value> = r["targets"].as_array().cloned().unwrap_or_default();
    let target = |id: &str| tg.iter().find(|t| t["id"] == id);
    println!();
    println!(
        "edgejobs bench — {} cores, {:.1} GiB, Linux {}, commit {}{}, load at start {}",
        m["cores"],
        f(&m["mem_total_bytes"]).unwrap_or(0.0) / (1u64 << 30) as f64,
        m["kernel"].as_str().unwrap_or("?"),
        g["commit"].as_str().unwrap_or("?"),
        if g["dirty"] == true { " (dirty tree)" } else { "" },
        m["loadavg_start"]
    );
    println!("release binaries, wrangler dev {} on 127.0.0.1", r["tools"]["wrangler"].as_str().unwrap_or("?"));
    println!();
    let mut rows: Vec<[String; 4]> = Vec::new();
    let lv = &sc["liveness"]["wrk"];
    if !lv.is_null() {
        rows.push([
            "runtime ceiling: GET /health/live".into(),
            format!(
                "{} req/s, p50 {} ms, p99 {} ms",
                num(f(&lv["requests_per_s"]), 0),
                num(f(&lv["p50_ms"]), 1),
                num(f(&lv["p99_ms"]), 1)
            ),
            "—".into(),
            "".into(),
        ]);
    }
    let se = &sc["single_enqueue"];
    if !se.is_null() {
        let w = &se["wrk"];
        let tr = target("single_enqueue_rps_vs_liveness");
        let tp = target("single_enqueue_p99_vs_liveness");
        rows.push([
            "single enqueue: POST /v1/jobs".into(),
            format!(
                "{} req/s ({}× liveness), p50 {} ms, p99 {} ms ({}×), non-2xx {}",
                num(f(&w["requests_per_s"]), 0),
                num(tr.and_then(|t| f(&t["value"])), 2),
                num(f(&w["p50_ms"]), 1),
                num(f(&w["p99_ms"]), 1),
                num(tp.and_then(|t| f(&t["value"])), 1),
                w["non_2xx_3xx"]
            ),
            format!("≥{TARGET_SINGLE_VS_LIVENESS_RPS}×, p99 ≤{TARGET_SINGLE_VS_LIVENESS_P99}×"),
            format!("{} / {}", met_str(tr), met_str(tp)),
        ]);
    }
    let rf = &sc["reference"];
    if !rf.is_null() {
        let result = if rf["error"].is_string() {
            format!("failed: {}", rf["error"].as_str().unwrap_or_default())
        } else {
            let single = f(&rf["single_enqueue"]["requests_per_s"]);
            let ours = f(&se["wrk"]["requests_per_s"]);
            format!(
                "{} req/s single ({}× its own liveness of {} req/s); edgejobs single enqueue = {}× this",
                num(single, 0),
                num(f(&rf["single_vs_liveness"]), 2),
                num(f(&rf["liveness"]["requests_per_s"]), 0),
                num(ours.zip(single).filter(|(_, r)| *r > 0.0).map(|(o, r)| o / r), 2)
            )
        };
        rows.push([
            "reference: JS Worker, 1 DO write + 1 send".into(),
            result,
            "the runtime's limit".into(),
            "".into(),
        ]);
    }
    let be = &sc["batch_enqueue"];
    if !be.is_null() {
        let w = &be["wrk"];
        rows.push([
            "batch enqueue: POST /v1/jobs/batch ×100".into(),
            format!(
                "{} jobs/s ({} req/s, p99 {} ms, non-2xx {}; ≤{} by the edge's counter, with requests in flight at the end)",
                num(f(&be["jobs_per_s"]), 0),
                num(f(&w["requests_per_s"]), 1),
                num(f(&w["p99_ms"]), 0),
                w["non_2xx_3xx"],
                num(f(&be["jobs_created_by_counter_per_wrk_s"]), 0)
            ),
            format!("≥{TARGET_BATCH_ENQUEUE_JOBS_PER_S} jobs/s"),
            met_str(target("batch_enqueue_jobs_per_s")),
        ]);
    }
    let lane_row = |name: String, v: &Value, tgt: String, met: String| -> [String; 4] {
        let result = if v["all_completed"] == true {
            format!(
                "{} jobs/s ({} jobs in {} s; enqueue {} s)",
                num(f(&v["jobs_per_s"]), 0),
                v["jobs_created"],
                num(f(&v["elapsed_s"]), 1),
                num(f(&v["enqueue_s"]), 1)
            )
        } else {
            format!(
                "TIMED OUT: {} of {} completed in {} s ({} jobs/s)",
                num(f(&v["completed"]), 0),
                v["jobs_created"],
                num(f(&v["elapsed_s"]), 0),
                num(f(&v["jobs_per_s"]), 0)
            )
        };
        [name, result, tgt, met]
    };
    let el = &sc["edge_lane"];
    if !el.is_null() {
        rows.push(lane_row(
            "edge lane end to end (noop, batches)".into(),
            el,
            format!("≥{TARGET_EDGE_E2E_JOBS_PER_S} jobs/s"),
            met_str(target("edge_lane_jobs_per_s")),
        ));
    }
    for (_, v) in ordered(sc).into_iter().filter(|(n, _)| n.starts_with("native")) {
        let mut row = lane_row(
            format!("native lane, c={} ({} ms sleeps)", v["concurrency"], v["sleep_ms"]),
            v,
            format!("ideal {} jobs/s", num(f(&v["ideal_jobs_per_s"]), 0)),
            format!("{}× ideal", num(f(&v["ratio_to_ideal"]), 2)),
        );
        if v.get("error").is_some() {
            row[1] = format!("FAILED: {}", v["error"]);
        }
        rows.push(row);
    }
    let sch = &sc["schedules"];
    if !sch.is_null() {
        rows.push([
            format!("schedules: {} every second for {} s", sch["schedules"], sch["seconds"]),
            format!(
                "{} runs for {} ticks ({}×), {} skipped; run created after its tick: p50 ≤ {} s, p99 ≤ {} s",
                sch["runs"],
                sch["ticks"],
                num(f(&sch["runs_per_tick"]), 2),
                sch["skips"],
                sch["lateness_p50_le_s"],
                sch["lateness_p99_le_s"]
            ),
            "—".into(),
            "".into(),
        ]);
    }
    let ft = &r["footprint"];
    let mib = |v: &Value| f(v).map(|b| b / (1u64 << 20) as f64);
    rows.push([
        "footprint: peak RSS".into(),
        format!(
            "consumer {} MiB (largest of the runs); workerd running the Worker {} MiB, wrangler's dev proxy \
             workerd {} MiB",
            num(mib(&ft["consumer_peak_rss_bytes"]), 1),
            num(mib(&ft["workerd_worker_peak_rss_bytes"]), 0),
            num(mib(&ft["workerd_proxy_peak_rss_bytes"]), 0),
        ),
        "—".into(),
        "".into(),
    ]);
    rows.push([
        "footprint: wasm".into(),
        format!("{} KiB (functions/edge/build/index_bg.wasm)", num(f(&ft["wasm_bytes"]).map(|b| b / 1024.0), 0)),
        "—".into(),
        "".into(),
    ]);
    let st = &r["stream_after_run"];
    rows.push([
        "stream after the run".into(),
        format!("XLEN {}, pending {}", st["xlen"], st["pending"]),
        "0, 0".into(),
        format!("{} / {}", met_str(target("stream_length_after_run")), met_str(target("stream_pending_after_run"))),
    ]);
    print_rows(&["scenario", "result", "target", "met?"], &rows);
    crate::latency::print(r);
    crate::flow::print(r);
    crate::traces::print(r);
    crate::workflow::print(r);
    crate::live::print(r);

    // Operations per job.
    println!();
    println!("operations per job (counted by the system; the counter reads' own cost subtracted):");
    let mut notes: Vec<String> = Vec::new();
    let mut ops_rows: Vec<Vec<String>> = Vec::new();
    let scen: Vec<(String, &Value)> = ordered(sc).into_iter().filter(|(_, v)| !v["ops"].is_null()).collect();
    for (name, v) in &scen {
        let p = &v["ops"]["per_job"];
        let c = &v["ops"]["cost_usd_per_million_jobs"];
        let part = |x: &Value| {
            x["usd"].as_f64().map(|u| format!("${u:.3}")).unwrap_or_else(|| {
                let known = f(&x["known_part_usd"]).unwrap_or(0.0);
                if known > 0.0 { format!("≥${known:.3}") } else { "n/a".into() }
            })
        };
        ops_rows.push(vec![
            name.to_string(),
            num(f(&p["worker_requests"]), 2),
            num(f(&p["do_requests"]), 2),
            num(f(&p["queue_messages"]), 2),
            num(f(&p["upstash_commands"]), 2),
            num(f(&p["redis_commands"]), 2),
            num(f(&p["do_rows_written"]), 2),
            part(&c["operations"]),
            part(&c["storage_writes"]),
            f(&c["total"]).map_or_else(|| "n/a".to_owned(), |t| format!("${t:.3}")),
        ]);
        if v["ops"]["settled"] == false {
            notes.push(format!("{name}: the counters had not settled when read"));
        }
    }
    print_rows(
        &[
            "scenario",
            "Worker req",
            "DO req",
            "queue msgs",
            "Upstash cmds",
            "redis cmds*",
            "rows written",
            "US$/M ops",
            "US$/M rows",
            "US$/M total",
        ],
        &ops_rows,
    );
    for n in notes {
        println!("  note: {n}");
    }
    println!(
        "  targets: ≤{TARGET_DO_PER_JOB_BATCH} DO requests/job with batch enqueue ({}), ≤{TARGET_DO_PER_JOB_SINGLE} with single \
         enqueue ({}); ≤US${TARGET_USD_PER_M_JOBS_BATCH} per million edge-lane jobs with batch enqueue ({})",
        met_str(target("do_requests_per_job_batch")),
        met_str(target("do_requests_per_job_single")),
        met_str(target("usd_per_million_jobs_batch"))
    );
    println!(
        "  * redis cmds: what redis-server itself executed (INFO commandstats), a cross-check of the Upstash counts."
    );
    println!(
        "  US$ per million jobs from published prices as of {PRICES_AS_OF} (Workers $0.30/M requests, DO $0.15/M \
         requests, $1.00/M rows written, $0.001/M rows read, Queues $0.40/M ops × 3 per message, Upstash $2/M \
         commands); free allowances, duration/CPU and storage GB-month are ignored. n/a = the counter does not exist."
    );

    // Where the CPU went.
    println!();
    println!(
        "CPU seconds by component; busy = the whole machine, Worker thread = how busy the Worker's busiest \
         workerd thread was (100% = that thread is the ceiling); 'other' is everything else on the machine:"
    );
    let mut cpu_rows: Vec<Vec<String>> = Vec::new();
    let all: Vec<(String, Value)> = ordered(sc)
        .into_iter()
        .map(|(name, v)| (name, if v["cpu"].is_object() { v["cpu"].clone() } else { v["cpu_during_wrk"].clone() }))
        .filter(|(_, c)| c.is_object())
        .collect();
    // The stack's parts first, then us, then the rest of the machine.
    let order = [
        crate::procfs::WORKERD_WORKER,
        crate::procfs::WORKERD_PROXY,
        "wrangler (node)",
        "upstash-local",
        "redis-server",
        "consumer",
        "bench + wrk",
    ];
    let mut comps: Vec<String> = order.iter().map(|s| s.to_string()).collect();
    for (_, c) in &all {
        for (k, _) in c["cpu_s_by_component"].as_object().into_iter().flatten() {
            if !comps.contains(k) {
                comps.push(k.clone());
            }
        }
    }
    let other = "other (rest of the machine)".to_owned();
    comps.retain(|c| c != &other);
    comps.push(other.clone());
    let mut busy_notes = Vec::new();
    for (name, c) in &all {
        let wall = f(&c["wall_s"]).unwrap_or(0.0);
        let thread = f(&c["busiest_thread_cpu_s_by_component"][crate::procfs::WORKERD_WORKER])
            .filter(|_| wall > 0.0)
            .map(|t| 100.0 * t / wall);
        let mut row = vec![
            name.clone(),
            num(f(&c["wall_s"]), 1),
            format!("{}%", num(f(&c["machine_busy_fraction"]).map(|x| x * 100.0), 0)),
            format!("{}%", num(thread, 0)),
        ];
        row.extend(comps.iter().map(|k| num(f(&c["cpu_s_by_component"][k]), 1)));
        cpu_rows.push(row);
        let capacity = f(&c["machine_capacity_s"]).unwrap_or(0.0);
        let others = f(&c["cpu_s_by_component"][&other]).unwrap_or(0.0);
        if capacity > 0.0 && others > 0.2 * capacity {
            busy_notes
                .push(format!("{name}: {:.0}% of the machine went to other processes", 100.0 * others / capacity));
        }
    }
    let mut header: Vec<&str> = vec!["scenario", "wall s", "busy", "Worker thread"];
    header.extend(comps.iter().map(String::as_str));
    print_rows(&header, &cpu_rows);
    for n in busy_notes {
        println!("  note: {n}; this scenario's figures are lower than a quiet machine would give");
    }
    println!();
}

/// The native scenarios of a report (`native_c<concurrency>`), with their concurrency.
pub fn native_scenarios(sc: &Value) -> Vec<(u64, &Value)> {
    sc.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.strip_prefix("native_c")?.parse().ok()?, v)))
        .collect()
}

/// The scenarios present in the report, in reading order, with their display names.
pub fn ordered(sc: &Value) -> Vec<(String, &Value)> {
    let mut out: Vec<(String, &Value)> = [
        ("liveness", "liveness (wrk)"),
        ("single_enqueue", "single enqueue (wrk)"),
        ("batch_enqueue", "batch enqueue (wrk)"),
        ("edge_lane", "edge lane (batches)"),
    ]
    .into_iter()
    .filter(|(k, _)| sc.get(*k).is_some())
    .map(|(k, name)| (name.to_owned(), &sc[k]))
    .collect();
    let mut native = native_scenarios(sc);
    native.sort_by_key(|(c, _)| *c);
    out.extend(native.into_iter().map(|(c, v)| (format!("native c={c}"), v)));
    // Workflow lanes: a run of 5 steps is their job.
    for (k, name) in [("native", "workflow native (per run)"), ("http", "workflow http (per run)")] {
        let v = &sc["workflow"][k];
        if v.is_object() && v["error"].is_null() {
            out.push((name.to_owned(), v));
        }
    }
    out
}

pub fn print_rows<R: AsRef<[String]>>(header: &[&str], rows: &[R]) {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.as_ref().iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c}{}", " ".repeat(w[i] - c.chars().count()))).collect();
        println!("  {}", s.join(" | ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    line(w.iter().map(|n| "-".repeat(*n)).collect());
    for r in rows {
        line(r.as_ref().iter().take(n).cloned().collect());
    }
}
