//! `scripts/chaos`: a fault battery against a private local stack. Each case injects real
//! faults (SIGKILL, SIGSTOP, a crashed workerd, Redis and the gateway down, a fault proxy,
//! a broken R2 store) under load, then checks every job it got a 2xx for against its final
//! state and counts executions at a local counting upstream. One row per case, a total (the
//! drain), a JSON file under target/chaos/; exit 1 when a guarantee was broken.

mod api;
mod cases;
mod ledger;
mod proxy;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use edgejobs_tests::hooks::Hooks;
use edgejobs_tests::stack::{Profile, Stack, StackOptions};
use serde_json::json;

use crate::api::Api;
use crate::ledger::{Row, Tracked};

/// The battery's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub quick: bool,
    pub cases: Vec<u8>,
    pub profile: Profile,
    pub out: PathBuf,
    pub keep_state: bool,
    pub root: PathBuf,
}

/// A small deterministic generator (splitmix64), so a run can be replayed with `--seed`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (ms or counts).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Everything a case works with.
pub struct Battery {
    pub s: Settings,
    pub stack: Stack,
    pub hooks: Hooks,
    pub api: Api,
    pub rng: Rng,
    /// Every job any case got a 2xx for (the drain checks them all at the end).
    pub all: Vec<Tracked>,
    pub started: Instant,
}

pub fn say(msg: impl AsRef<str>) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    eprintln!("[chaos {:02}:{:02}:{:02}] {}", (t / 3600) % 24, (t / 60) % 60, t % 60, msg.as_ref());
}

fn usage() -> &'static str {
    "scripts/chaos [--quick] [--seed N] [--cases 1,3,7] [--debug] [--keep-state] [--out DIR]

Starts a private stack (release builds; --debug uses the debug ones) on 127.0.0.1 and runs
the fault battery, one row per case:
  1 kill -9 a native consumer mid-job (two running, under load)
  2 SIGSTOP a consumer past its lease, SIGCONT later
  3 kill -9 workerd (wrangler dev) while jobs are enqueued and processed
  4 Redis and the Upstash gateway down for 10 s under load
  5 a fault proxy between the edge and the gateway (latency, resets, 500s, a black hole)
  6 R2 failures during a backup (a failing put, a damaged object)
  7 100 concurrent enqueues with one idempotency key; a poison job; replay
  8 the drain: every job the battery got a 2xx for, checked against its final state
  9 workflow runs (examples/agent-workflow's steps.demo): kill -9 consumers mid-step,
    workerd killed while runs sleep and wait, each run's event sent twice at once
--quick: cases 1, 3, 7 and 9 with smaller counts (scripts/test runs it, under 4 minutes).
Writes target/chaos/chaos-<unix time>.json and latest.json; exits 1 when a guarantee broke."
}

fn parse() -> anyhow::Result<Settings> {
    let root = std::env::var_os("EDGEJOBS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let mut s = Settings {
        seed: getrandom::u64().unwrap_or(42) % 1_000_000,
        quick: false,
        cases: Vec::new(),
        profile: Profile::Release,
        out: root.join("target/chaos"),
        keep_state: false,
        root,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => s.quick = true,
            "--seed" => s.seed = value("--seed")?.parse().context("--seed: a number")?,
            "--cases" => {
                s.cases = value("--cases")?
                    .split(',')
                    .map(|c| c.trim().parse::<u8>().ok().filter(|n| (1..=9).contains(n)))
                    .collect::<Option<Vec<u8>>>()
                    .context("--cases: numbers from 1 to 9, comma-separated")?
            }
            "--debug" => s.profile = Profile::Debug,
            "--keep-state" => s.keep_state = true,
            "--out" => s.out = PathBuf::from(value("--out")?),
            "--help" | "-h" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown option {other} (see --help)"),
        }
    }
    if s.cases.is_empty() {
        // The drain (8) checks every case's jobs, so it runs last.
        s.cases = if s.quick { vec![1, 3, 7, 9, 8] } else { vec![1, 2, 3, 4, 5, 6, 7, 9, 8] };
    }
    Ok(s)
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("[chaos] error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let s = parse()?;
    ctrlc::set_handler(|| {
        eprintln!("[chaos] interrupted: stopping the stack");
        std::process::exit(130);
    })
    .context("cannot install the signal handler")?;
    let state_dir = std::env::temp_dir().join(format!("edgejobs-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)?;
    let hooks = Hooks::start()?;
    let hooks_port = hooks.base.rsplit(':').next().unwrap_or("0").to_owned();
    let proxy = proxy::Proxy::start()?;
    say(format!(
        "seed {} · cases {:?} · {} binaries · state in {}",
        s.seed,
        s.cases,
        s.profile.dir_name(),
        state_dir.display()
    ));
    let opts = StackOptions {
        root: s.root.clone(),
        state_dir: state_dir.clone(),
        dev_vars: None,
        consumer: false,
        persist_redis: true,
        vars: cases::base_vars(),
        consumer_env: vec![("EDGEJOBS_LEASE_RENEW".into(), "500ms".into())],
        profile: s.profile,
        outbound_allow: format!("127.0.0.1:{hooks_port}"),
        native_lease: Some("3s".into()),
        edge_upstash_url: None,
        traces: false,
    };
    let stack = Stack::start(opts).inspect_err(|_| say(format!("logs kept in {}", state_dir.display())))?;
    proxy.target(&stack.upstash_url);
    let api = Api::new(&stack.edge_url, &stack.secrets.api_key, &stack.secrets.admin_key)?;
    let mut b = Battery { rng: Rng(s.seed), s: s.clone(), stack, hooks, api, all: Vec::new(), started: Instant::now() };
    let mut rows: Vec<Row> = Vec::new();
    for &case in &s.cases {
        let t = Instant::now();
        say(format!("case {case}: {}", cases::name(case)));
        let row = match cases::run(&mut b, &proxy, case) {
            Ok(row) => row,
            Err(e) => Row {
                case,
                name: cases::name(case).into(),
                notes: vec![format!("the case could not run: {e:#}")],
                ..Row::default()
            },
        };
        say(format!(
            "case {case}: {} in {:.0} s — n {} lost {} unexpected {} dup-state {} extra-exec {} repeated {} recovered {} indeterminate {}{}",
            if row.ok { "ok" } else { "BROKEN" },
            t.elapsed().as_secs_f64(),
            row.n,
            row.lost,
            row.unexpected,
            row.duplicate_state_changes,
            row.extra_executions,
            row.repeated_attempts,
            row.recovered,
            row.indeterminate,
            if row.notes.is_empty() { String::new() } else { format!(" · {}", row.notes.join("; ")) }
        ));
        rows.push(row);
    }
    let all_ok = rows.iter().all(|r| r.ok);
    print_table(&b, &rows);
    let report = json!({
        "chaos": "edgejobs-chaos",
        "seed": s.seed,
        "quick": s.quick,
        "profile": s.profile.dir_name(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "git": git(&s.root),
        "duration_s": b.started.elapsed().as_secs_f64(),
        "rows": rows,
        "ok": all_ok,
    });
    std::fs::create_dir_all(&s.out)?;
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(s.out.join(format!("chaos-{unix}.json")), &text)?;
    std::fs::write(s.out.join("latest.json"), &text)?;
    say(format!("JSON: {}", s.out.join(format!("chaos-{unix}.json")).display()));
    b.stack.stop();
    if s.keep_state || !all_ok {
        say(format!("state and logs kept in {}", state_dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    Ok(all_ok)
}

fn git(root: &std::path::Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn print_table(b: &Battery, rows: &[Row]) {
    let ms = |v: Option<u64>| v.map_or("—".to_owned(), |v| format!("{:.1} s", v as f64 / 1000.0));
    println!();
    println!(
        "edgejobs chaos · seed {} · {} cores · git {} · {:.0} s",
        b.s.seed,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        git(&b.s.root),
        b.started.elapsed().as_secs_f64()
    );
    println!(
        "  {:<2} | {:<44} | {:>5} | {:>6} | {:>4} | {:>9} | {:>10} | {:>8} | {:>9} | {:>13} | {:>8} | {:>8} | result",
        "#",
        "case",
        "N",
        "faults",
        "lost",
        "dup state",
        "extra exec",
        "repeated",
        "recovered",
        "indeterminate",
        "rec p50",
        "rec p99",
    );
    for r in rows {
        println!(
            "  {:<2} | {:<44} | {:>5} | {:>6} | {:>4} | {:>9} | {:>10} | {:>8} | {:>9} | {:>13} | {:>8} | {:>8} | {}",
            r.case,
            r.name,
            r.n,
            r.faults,
            r.lost,
            r.duplicate_state_changes,
            r.extra_executions,
            r.repeated_attempts,
            r.recovered,
            r.indeterminate,
            ms(r.p(0.5)),
            ms(r.p(0.99)),
            if r.ok { "ok".to_owned() } else { format!("BROKEN: {}", r.notes.join("; ")) }
        );
    }
    println!(
        "  lost = 2xx jobs not final at the end; dup state = final-state counter increments beyond one per job; extra exec = upstream calls beyond one per completed job (at least once); repeated = a native attempt executed twice (fencing says 0); unexpected final states are in the notes."
    );
}
