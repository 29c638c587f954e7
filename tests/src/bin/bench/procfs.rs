//! /proc: the stack's process trees, their CPU time and peak resident memory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde_json::{Value, json};

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every architecture we run on.
pub const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub ticks: u64,
}

pub fn read_proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// One `stat` line (a process's or a thread's).
fn parse_stat(pid: u32, text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat { pid, ppid, comm, ticks: utime + stime })
}

pub fn all_procs() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).filter_map(read_proc_stat).collect()
}

/// Every process of the stack, labelled by component: `workerd`, `wrangler (node)`,
/// `upstash-local`, `redis-server`, `consumer`.
pub fn stack_processes(roots: &[(String, u32)]) -> Vec<(String, ProcStat)> {
    let procs = all_procs();
    let mut out = Vec::new();
    for (name, root) in roots {
        let mut todo = vec![*root];
        let mut seen = BTreeSet::new();
        while let Some(pid) = todo.pop() {
            if !seen.insert(pid) {
                continue;
            }
            todo.extend(procs.iter().filter(|p| p.ppid == pid).map(|p| p.pid));
            let Some(p) = procs.iter().find(|p| p.pid == pid) else { continue };
            let component = match name.as_str() {
                "wrangler" if p.comm.contains("workerd") => workerd_role(p.pid).to_owned(),
                "wrangler" if p.comm == "node" => "wrangler (node)".to_owned(),
                "wrangler" => format!("wrangler ({})", p.comm),
                "redis" => "redis-server".to_owned(),
                n if n.starts_with("consumer") => "consumer".to_owned(),
                n => n.to_owned(),
            };
            out.push((component, p.clone()));
        }
    }
    out
}

/// wrangler dev runs two workerd processes: a dev proxy on the port clients use, which
/// forwards every request to a second one that runs the Worker (and has the inspector).
pub const WORKERD_WORKER: &str = "workerd (Worker)";
pub const WORKERD_PROXY: &str = "workerd (dev proxy)";

fn workerd_role(pid: u32) -> &'static str {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("--inspector-addr") { WORKERD_WORKER } else { WORKERD_PROXY }
}

/// `VmHWM` (peak resident set) of a process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Busy and total CPU ticks of the whole machine (all cores), from /proc/stat.
pub fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy, busy + get(3) + get(4))
}

/// This process and its waited-for children (wrk, git): utime + stime + cutime + cstime.
pub fn self_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(close) = text.rfind(')') else { return 0 };
    let f: Vec<u64> = text[close + 1..].split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // With the state field dropped by the parse filter, utime..cstime are at 10..13.
    f.get(10..14).map_or(0, |s| s.iter().sum())
}

/// CPU ticks of each thread of `pid`, by thread id.
fn thread_ticks(pid: u32) -> BTreeMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return BTreeMap::new() };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
        Some((tid, parse_stat(tid, &text)?.ticks))
    })
    .collect()
}

#[derive(Debug, Clone)]
pub struct CpuSnap {
    pub per_pid: BTreeMap<u32, (String, u64)>,
    /// Per thread of each stack process: a single busy thread (a JavaScript isolate's) is a
    /// ceiling that the process total hides.
    pub per_thread: BTreeMap<(u32, u32), (String, u64)>,
    pub machine_busy: u64,
    pub machine_total: u64,
    pub bench: u64,
    pub at: Instant,
}

pub fn cpu_snap(roots: &[(String, u32)]) -> CpuSnap {
    let procs = stack_processes(roots);
    let per_thread = procs
        .iter()
        .flat_map(|(c, p)| thread_ticks(p.pid).into_iter().map(move |(tid, t)| ((p.pid, tid), (c.clone(), t))))
        .collect();
    let per_pid = procs.into_iter().map(|(c, p)| (p.pid, (c, p.ticks))).collect();
    let (machine_busy, machine_total) = machine_ticks();
    CpuSnap { per_pid, per_thread, machine_busy, machine_total, bench: self_ticks(), at: Instant::now() }
}

/// CPU seconds by component between two snapshots, plus the rest of the machine.
pub fn cpu_between(a: &CpuSnap, b: &CpuSnap) -> Value {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for (pid, (component, ticks)) in &b.per_pid {
        let before = a.per_pid.get(pid).map_or(0, |(_, t)| *t);
        *by.entry(component.clone()).or_default() += ticks.saturating_sub(before) as f64 / TICKS_PER_S;
    }
    let bench = b.bench.saturating_sub(a.bench) as f64 / TICKS_PER_S;
    by.insert("bench + wrk".into(), bench);
    let busy = b.machine_busy.saturating_sub(a.machine_busy) as f64 / TICKS_PER_S;
    let total = b.machine_total.saturating_sub(a.machine_total) as f64 / TICKS_PER_S;
    let ours: f64 = by.values().sum();
    by.insert("other (rest of the machine)".into(), (busy - ours).max(0.0));
    let mut busiest: BTreeMap<String, f64> = BTreeMap::new();
    for (key, (component, ticks)) in &b.per_thread {
        let before = a.per_thread.get(key).map_or(0, |(_, t)| *t);
        let secs = ticks.saturating_sub(before) as f64 / TICKS_PER_S;
        let e = busiest.entry(component.clone()).or_default();
        *e = e.max(secs);
    }
    json!({
        "wall_s": b.at.duration_since(a.at).as_secs_f64(),
        "machine_busy_s": busy,
        "machine_capacity_s": total,
        "machine_busy_fraction": if total > 0.0 { Some(busy / total) } else { None },
        "cpu_s_by_component": by,
        "busiest_thread_cpu_s_by_component": busiest,
    })
}

/// CPU µs per job of one component over a scenario, from [`cpu_between`]'s JSON (`None`
/// without jobs or without that component).
pub fn cpu_us_per_job(cpu: &Value, component: &str, jobs: f64) -> Option<f64> {
    let secs = cpu["cpu_s_by_component"][component].as_f64()?;
    (jobs > 0.0).then(|| secs * 1e6 / jobs)
}
