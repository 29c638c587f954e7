//! `edgejobs`: the command line of edgejobs. Every command but `consume` and `completions`
//! goes through the public HTTP API with a key, like any client.
//!
//! The URL and key come from `--url`/`--key`, else the environment (`EDGEJOBS_URL`,
//! `EDGEJOBS_KEY`, else `EDGEJOBS_ADMIN_KEY`, else `EDGEJOBS_API_KEY`), else
//! `.edgejobs/dev.env` in the current directory or one above it (what `scripts/dev` writes).
//! The key is never printed.

use std::collections::BTreeSet;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use serde_json::{Value, json};

mod input;
mod output;

use input::{Spec, read_ndjson};
use output::{print_jobs, table};

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  the API could not be reached, or answered something unexpected
  2  usage error (also: no URL or key found)
  3  the API refused the request (400, 409, 413, ...; a bulk command: any item refused)
  4  the key is missing, unknown or lacks the scope (401, 403)
  5  not found (404)
  6  the service is unavailable (5xx, 429 after retries; `health`: unhealthy)
  7  `get --wait`: no final state before the timeout
  8  `get --wait`: the job ended dead or cancelled";

/// The edgejobs command line.
#[derive(Debug, Parser)]
#[command(name = "edgejobs", version, about, after_long_help = EXIT_CODES)]
struct Cli {
    /// The edge API's base URL [env: EDGEJOBS_URL; else .edgejobs/dev.env].
    #[arg(long, global = true)]
    url: Option<String>,
    /// The API key [env: EDGEJOBS_KEY, EDGEJOBS_ADMIN_KEY or EDGEJOBS_API_KEY; else .edgejobs/dev.env].
    #[arg(long, global = true, hide_env_values = true)]
    key: Option<String>,
    /// Print JSON (one document; one object per line for `list --all` and `tail`).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue one job, or every line of an NDJSON file (`--from`), in batches of 100.
    Enqueue(Enqueue),
    /// Show a job; with --wait, wait until it is completed, dead or cancelled.
    Get {
        id: String,
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// List jobs, newest first.
    List(ListArgs),
    /// Cancel a job (queued or scheduled: at once; active: its report is refused).
    Cancel { id: String },
    /// Replay a dead job as a new series of attempts.
    Retry { id: String },
    /// The dead-letter set.
    #[command(subcommand)]
    Dead(Dead),
    /// Backups in R2 (admin key).
    #[command(subcommand)]
    Backups(Backups),
    /// Schedules: recurring jobs (reading: any key; changing: an admin key).
    #[command(subcommand)]
    Schedules(Schedules),
    /// The edge's health; exit code 6 when unhealthy.
    Health,
    /// Follow new jobs and failures as they happen (Ctrl-C stops).
    Tail {
        #[arg(long = "type")]
        job_type: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// How often to look.
        #[arg(long, default_value = "1s", value_parser = duration)]
        interval: Duration,
        /// Stop after this long (default: until Ctrl-C).
        #[arg(long = "for", value_parser = duration)]
        run_for: Option<Duration>,
    },
    /// Run the native consumer (the same code as the `edgejobs-consumer` binary).
    Consume(Box<edgejobs_consumer::Config>),
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
struct Enqueue {
    /// The job type (not with --from).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    job_type: Option<String>,
    /// The payload: JSON, or @FILE to read it from a file.
    #[arg(long)]
    payload: Option<String>,
    /// Run after this long (e.g. 30s, 5m).
    #[arg(long)]
    delay: Option<String>,
    /// Run at this time (RFC 3339).
    #[arg(long)]
    run_at: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
    /// A tag (repeat for more).
    #[arg(long = "tag")]
    tags: Vec<String>,
    #[arg(long)]
    max_attempts: Option<u32>,
    /// How long one attempt may run (e.g. 30s).
    #[arg(long)]
    timeout: Option<String>,
    /// An NDJSON file of job specs (`-`: standard input); each line is what POST /v1/jobs takes.
    #[arg(long, conflicts_with_all = ["payload", "delay", "run_at", "idempotency_key", "tags", "max_attempts", "timeout"])]
    from: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Filters {
    #[arg(long = "type")]
    job_type: Option<String>,
    #[arg(long)]
    tag: Option<String>,
    /// Changed at or after (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Changed before (RFC 3339).
    #[arg(long)]
    to: Option<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    filters: Filters,
    #[arg(long)]
    id_prefix: Option<String>,
    /// Text in the payload or metadata.
    #[arg(long)]
    search: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Follow every page (at most 1,000).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Subcommand)]
enum Dead {
    /// List dead jobs.
    List {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Replay every dead job that matches (asks first unless --yes).
    Replay {
        #[command(flatten)]
        filters: Filters,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Backups {
    List,
    /// Check a backup's objects against its manifest.
    Verify {
        id: String,
    },
    /// Start a backup now.
    Start,
    /// Replace every job with a backup's (asks first unless --yes).
    Restore {
        id: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum Schedules {
    /// Every schedule, by name.
    List,
    /// One schedule: its definition, next runs and last runs.
    Show {
        name: String,
    },
    /// Create a schedule: a name, a cron expression and the job it enqueues.
    Create {
        name: String,
        /// Five fields, or six with seconds first; or @hourly, @daily, ...
        cron: String,
        /// The job type each run enqueues.
        job_type: String,
        /// The job's payload: JSON, or @FILE.
        #[arg(long)]
        payload: Option<String>,
        /// An IANA time zone (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// allow, skip or queue_one.
        #[arg(long)]
        overlap: Option<String>,
        /// none or last.
        #[arg(long)]
        catch_up: Option<String>,
        /// A tag for the runs' jobs (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    Pause {
        name: String,
    },
    Resume {
        name: String,
    },
    /// Run it now, whatever its overlap policy.
    Trigger {
        name: String,
    },
    /// Delete it (asks first unless --yes); its jobs stay.
    Delete {
        name: String,
        #[arg(long)]
        yes: bool,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// A failure, with the exit code it means.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

type Res<T> = Result<T, Failure>;

/// The exit code an HTTP error status means.
fn exit_code(status: u16) -> u8 {
    match status {
        401 | 403 => 4,
        404 => 5,
        429 | 500..=599 => 6,
        400..=499 => 3,
        _ => 1,
    }
}

/// The API at one URL with one key.
struct Api {
    url: String,
    key: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// Sends a request; 429 is retried after its Retry-After (at most 5 times). Any other
    /// non-2xx answer is a failure carrying the API's error code and message.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Res<Value> {
        let url = format!("{}{path}", self.url);
        for _ in 0..6 {
            let mut req = match method {
                "POST" => self.http.post(&url),
                "DELETE" => self.http.delete(&url),
                _ => self.http.get(&url),
            }
            .bearer_auth(&self.key);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().map_err(|e| Failure::new(1, format!("cannot reach {}: {}", self.url, short(e))))?;
            let status = resp.status().as_u16();
            let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let text = resp.text().unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                return Ok(v);
            }
            if status == 429 {
                std::thread::sleep(Duration::from_secs(wait.unwrap_or(1).clamp(1, 60)));
                continue;
            }
            let (code, msg) = (v["error"]["code"].as_str(), v["error"]["message"].as_str());
            return Err(Failure::new(
                exit_code(status),
                match (code, msg) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    _ => format!("HTTP {status}"),
                },
            ));
        }
        Err(Failure::new(6, "rate_limited: still limited after 5 retries"))
    }
}

/// An error's message without the URL's query (reqwest prints the URL).
fn short(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

/// `NAME=value` lines (blank lines and `#` comments skipped; quotes around a value dropped).
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// `.edgejobs/dev.env` in `dir` or the nearest directory above it.
fn find_dev_env(dir: &Path) -> Option<Vec<(String, String)>> {
    dir.ancestors()
        .take(64)
        .find_map(|d| std::fs::read_to_string(d.join(".edgejobs/dev.env")).ok())
        .map(|t| parse_env_file(&t))
}

/// The URL and key from flags, the environment, or `.edgejobs/dev.env`.
fn connect(cli: &Cli) -> Res<Api> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let file = std::env::current_dir().ok().and_then(|d| find_dev_env(&d)).unwrap_or_default();
    let from_file = |k: &str| file.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let url = cli.url.clone().or_else(|| env("EDGEJOBS_URL")).or_else(|| from_file("EDGEJOBS_URL"));
    let key = cli
        .key
        .clone()
        .or_else(|| env("EDGEJOBS_KEY"))
        .or_else(|| env("EDGEJOBS_ADMIN_KEY"))
        .or_else(|| env("EDGEJOBS_API_KEY"))
        .or_else(|| from_file("EDGEJOBS_ADMIN_KEY"))
        .or_else(|| from_file("EDGEJOBS_API_KEY"));
    let (Some(url), Some(key)) = (url, key) else {
        return Err(Failure::new(
            2,
            "no API URL or key: pass --url and --key, set EDGEJOBS_URL and EDGEJOBS_KEY, or run scripts/dev (it writes .edgejobs/dev.env)",
        ));
    };
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Failure::new(1, format!("cannot build the HTTP client: {e}")))?;
    Ok(Api { url: url.trim_end_matches('/').to_owned(), key, http })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Consume(config) => return edgejobs_consumer::main_with((**config).clone()),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "edgejobs", &mut std::io::stdout());
            Ok(())
        }
        _ => connect(&cli).and_then(|api| run(&cli, &api)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn run(cli: &Cli, api: &Api) -> Res<()> {
    match &cli.command {
        Command::Enqueue(e) => match &e.from {
            Some(file) => enqueue_file(cli, api, file),
            None => enqueue_one(cli, api, e),
        },
        Command::Get { id, wait, timeout } => get(cli, api, id, *wait, *timeout),
        Command::List(a) => list(cli, api, a),
        Command::Cancel { id } | Command::Retry { id } => {
            let verb = if matches!(cli.command, Command::Cancel { .. }) { "cancel" } else { "retry" };
            let job = api.call("POST", &format!("/v1/jobs/{}/{verb}", enc(id)), None)?;
            if cli.json {
                print_json(&job);
            } else {
                println!("{} {}", job["id"].as_str().unwrap_or(id), job["state"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        Command::Dead(Dead::List { filters, limit }) => {
            let page =
                api.call("GET", &format!("/v1/dead?{}", query(filters, &[("limit", limit.to_string())])), None)?;
            if cli.json {
                print_json(&page)
            } else {
                print_jobs(&page["jobs"])
            }
            Ok(())
        }
        Command::Dead(Dead::Replay { filters, yes }) => replay(cli, api, filters, *yes),
        Command::Backups(b) => backups(cli, api, b),
        Command::Schedules(s) => schedules(cli, api, s),
        Command::Health => {
            let h = api.call("GET", "/health", None).or_else(|f| if f.code == 6 { Ok(Value::Null) } else { Err(f) })?;
            let status = h["status"].as_str().unwrap_or("unhealthy");
            if cli.json {
                print_json(&h);
            } else {
                println!("{status}");
                for (name, check) in h["checks"].as_object().into_iter().flatten() {
                    println!("  {name:<18} {}", if check["ok"] == true { "ok" } else { "FAILING" });
                }
            }
            if status == "unhealthy" { Err(Failure::new(6, "the edge is unhealthy")) } else { Ok(()) }
        }
        Command::Tail { job_type, tag, interval, run_for } => tail(cli, api, job_type, tag, *interval, *run_for),
        Command::Consume(_) | Command::Completions { .. } => Ok(()),
    }
}

/// Percent-encodes one path segment or query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(f: &Filters, extra: &[(&str, String)]) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (k, v) in [("type", &f.job_type), ("tag", &f.tag), ("from", &f.from), ("to", &f.to)] {
        if let Some(v) = v {
            pairs.push((k, v.clone()));
        }
    }
    pairs.extend(extra.iter().cloned());
    pairs.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&")
}

fn enqueue_one(cli: &Cli, api: &Api, e: &Enqueue) -> Res<()> {
    let spec = Spec {
        job_type: e.job_type.clone().unwrap_or_default(),
        payload: e.payload.clone(),
        delay: e.delay.clone(),
        run_at: e.run_at.clone(),
        idempotency_key: e.idempotency_key.clone(),
        tags: e.tags.clone(),
        max_attempts: e.max_attempts,
        timeout: e.timeout.clone(),
    };
    let body = spec.to_json().map_err(|m| Failure::new(2, m))?;
    let job = api.call("POST", "/v1/jobs", Some(&body))?;
    if cli.json {
        print_json(&job);
    } else {
        println!("{} {}", job["id"].as_str().unwrap_or(""), job["state"].as_str().unwrap_or(""));
    }
    Ok(())
}

fn enqueue_file(cli: &Cli, api: &Api, file: &Path) -> Res<()> {
    let lines = if file == Path::new("-") {
        read_ndjson(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(file).map_err(|e| Failure::new(2, format!("cannot read {}: {e}", file.display())))?;
        read_ndjson(std::io::BufReader::new(f))
    }
    .map_err(|m| Failure::new(3, format!("{}: {m}; nothing was sent", file.display())))?;
    let bar = progress(lines.len() as u64, "enqueued");
    let (mut created, mut existing, mut refused) = (0u64, 0u64, Vec::new());
    for (chunk_no, chunk) in lines.chunks(100).enumerate() {
        let jobs: Vec<Value> = chunk.iter().map(|(_, v)| v.clone()).collect();
        let answer = api.call("POST", "/v1/jobs/batch", Some(&json!({ "jobs": jobs })))?;
        for (i, r) in answer["results"].as_array().into_iter().flatten().enumerate() {
            match r["status"].as_u64() {
                Some(201) => created += 1,
                Some(200) => existing += 1,
                _ => refused.push(json!({
                    "line": chunk.get(i).map_or(chunk_no * 100 + i + 1, |(n, _)| *n),
                    "code": r["error"]["code"], "message": r["error"]["message"],
                })),
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let summary = json!({ "created": created, "existing": existing, "refused": refused.len(), "errors": refused });
    if cli.json {
        print_json(&summary);
    } else {
        println!("{created} created, {existing} existing, {} refused", refused.len());
        for r in &refused {
            println!(
                "  line {}: {}: {}",
                r["line"],
                r["code"].as_str().unwrap_or(""),
                r["message"].as_str().unwrap_or("")
            );
        }
    }
    if refused.is_empty() { Ok(()) } else { Err(Failure::new(3, format!("{} lines refused", refused.len()))) }
}

/// A progress bar on standard error, drawn only when it is a terminal.
fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
    )) {
        bar.set_style(style);
    }
    bar
}

const FINAL: [&str; 3] = ["completed", "dead", "cancelled"];

fn get(cli: &Cli, api: &Api, id: &str, wait: bool, timeout: Duration) -> Res<()> {
    let path = format!("/v1/jobs/{}", enc(id));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let job = loop {
        let job = api.call("GET", &path, None)?;
        let state = job["state"].as_str().unwrap_or("");
        if !wait || FINAL.contains(&state) {
            break job;
        }
        if Instant::now() + pause > deadline {
            if cli.json {
                print_json(&job);
            }
            return Err(Failure::new(
                7,
                format!("job {id} is still {state} after {}", humantime::format_duration(timeout)),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    };
    if cli.json {
        print_json(&job);
    } else {
        let rows: Vec<[String; 2]> =
            ["id", "type", "state", "attempt", "created_at", "finished_at", "last_error", "result"]
                .iter()
                .filter(|k| !job[**k].is_null())
                .map(|k| [(*k).to_owned(), output::cell(&job[*k])])
                .collect();
        table(&["field", "value"], rows.iter().map(|r| r.to_vec()).collect());
    }
    let state = job["state"].as_str().unwrap_or("");
    if wait && state != "completed" {
        return Err(Failure::new(8, format!("job {id} ended {state}")));
    }
    Ok(())
}

fn list(cli: &Cli, api: &Api, a: &ListArgs) -> Res<()> {
    let mut extra: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    for (k, v) in [("state", &a.state), ("id_prefix", &a.id_prefix), ("q", &a.search)] {
        if let Some(v) = v {
            extra.push((k, v.clone()));
        }
    }
    let base = format!("/v1/jobs?{}", query(&a.filters, &extra));
    if !a.all {
        let page = api.call("GET", &base, None)?;
        if cli.json {
            print_json(&page)
        } else {
            print_jobs(&page["jobs"])
        }
        return Ok(());
    }
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("{base}&cursor={}", enc(c)),
            None => base.clone(),
        };
        let page = api.call("GET", &path, None)?;
        for j in page["jobs"].as_array().into_iter().flatten() {
            if cli.json {
                println!("{j}");
            } else {
                all.push(j.clone());
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    if !cli.json {
        print_jobs(&Value::Array(all));
    }
    Ok(())
}

/// Counts the dead jobs that match (up to 10,000).
fn count_dead(api: &Api, f: &Filters) -> Res<u64> {
    let mut n = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut extra = vec![("limit", "100".to_owned())];
        if let Some(c) = &cursor {
            extra.push(("cursor", c.clone()));
        }
        let page = api.call("GET", &format!("/v1/dead?{}", query(f, &extra)), None)?;
        n += page["jobs"].as_array().map_or(0, |a| a.len() as u64);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    Ok(n)
}

fn confirm(question: &str, yes: bool) -> Res<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(2, format!("{question} Pass --yes to confirm (no terminal to ask on).")));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(3, "not confirmed; nothing changed"))
    }
}

fn replay(cli: &Cli, api: &Api, f: &Filters, yes: bool) -> Res<()> {
    let n = count_dead(api, f)?;
    if n == 0 {
        if cli.json {
            print_json(&json!({ "replayed": 0, "ids": [] }));
        } else {
            println!("no dead job matches");
        }
        return Ok(());
    }
    confirm(&format!("Replay {n} dead job{}?", if n == 1 { "" } else { "s" }), yes)?;
    let bar = progress(n, "replayed");
    let mut ids: Vec<Value> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // Each call replays up to 1,000; a replayed job is no longer dead, so the next call
    // takes the next ones. Bounded by what was counted.
    for _ in 0..=(n / 1000 + 1) {
        let mut body = json!({ "limit": 1000 });
        for (k, v) in [("type", &f.job_type), ("tag", &f.tag), ("from", &f.from), ("to", &f.to)] {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        let out = api.call("POST", "/v1/dead/replay", Some(&body))?;
        let got = out["ids"].as_array().cloned().unwrap_or_default();
        let fresh: Vec<Value> = got.into_iter().filter(|i| seen.insert(i.as_str().unwrap_or("").to_owned())).collect();
        bar.inc(fresh.len() as u64);
        let done = fresh.is_empty() || ids.len() + fresh.len() >= n as usize;
        ids.extend(fresh);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    if cli.json {
        print_json(&json!({ "replayed": ids.len(), "ids": ids }));
    } else {
        println!("{} dead jobs replayed", ids.len());
    }
    Ok(())
}

fn backups(cli: &Cli, api: &Api, b: &Backups) -> Res<()> {
    let out = match b {
        Backups::List => api.call("GET", "/v1/admin/backups", None)?,
        Backups::Verify { id } => api.call("POST", &format!("/v1/admin/backups/{}/verify", enc(id)), None)?,
        Backups::Start => api.call("POST", "/v1/admin/backups", None)?,
        Backups::Restore { id, yes } => {
            confirm(&format!("Replace every job with those of backup {id}?"), *yes)?;
            api.call("POST", "/v1/admin/restore", Some(&json!({ "backup": id })))?
        }
    };
    if cli.json {
        print_json(&out);
    } else {
        match b {
            Backups::List => table(
                &["id", "created", "rows", "bytes", "complete"],
                out["backups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        ["id", "created_at", "rows", "bytes", "valid"].iter().map(|k| output::cell(&b[*k])).collect()
                    })
                    .collect(),
            ),
            Backups::Verify { id } => {
                println!("{id}: {}", if out["valid"] == true { "valid" } else { "DAMAGED" });
                for p in out["problems"].as_array().into_iter().flatten() {
                    println!("  {}", p.as_str().unwrap_or(""));
                }
            }
            Backups::Start => println!("{} {} rows", out["id"].as_str().unwrap_or(""), out["total_rows"]),
            Backups::Restore { .. } => print_json(&out),
        }
    }
    if matches!(b, Backups::Verify { .. }) && out["valid"] != true {
        return Err(Failure::new(3, "the backup is damaged"));
    }
    Ok(())
}

fn schedules(cli: &Cli, api: &Api, s: &Schedules) -> Res<()> {
    let path = |name: &str, action: &str| format!("/v1/schedules/{}{action}", enc(name));
    let out = match s {
        Schedules::List => {
            // Every page (at most 50 of 200).
            let mut all: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..50 {
                let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={}", enc(c)));
                let page = api.call("GET", &format!("/v1/schedules?limit=200{q}"), None)?;
                all.extend(page["schedules"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            Value::Array(all)
        }
        Schedules::Show { name } => api.call("GET", &path(name, ""), None)?,
        Schedules::Create { name, cron, job_type, payload, timezone, overlap, catch_up, tags, paused } => {
            let spec =
                Spec { job_type: job_type.clone(), payload: payload.clone(), tags: tags.clone(), ..Spec::default() };
            let job = spec.to_json().map_err(|e| Failure::new(2, e))?;
            let mut body = json!({ "name": name, "cron": cron, "job": job, "paused": paused });
            for (k, v) in [("timezone", timezone), ("overlap", overlap), ("catch_up", catch_up)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            api.call("POST", "/v1/schedules", Some(&body))?
        }
        Schedules::Pause { name } => api.call("POST", &path(name, "/pause"), None)?,
        Schedules::Resume { name } => api.call("POST", &path(name, "/resume"), None)?,
        Schedules::Trigger { name } => api.call("POST", &path(name, "/trigger"), None)?,
        Schedules::Delete { name, yes } => {
            confirm(&format!("Delete schedule {name}?"), *yes)?;
            api.call("DELETE", &path(name, ""), None)?
        }
    };
    if cli.json {
        print_json(&out);
        return Ok(());
    }
    let row = |s: &Value| -> Vec<String> {
        let state = if s["paused"] == true {
            "paused"
        } else if s["overdue"] == true {
            "OVERDUE"
        } else {
            "active"
        };
        let last = &s["runs"][0];
        let last = if last.is_null() {
            "-".to_owned()
        } else {
            format!("{} {}", output::cell(&last["tick"]), output::cell(&last["state"]))
        };
        vec![
            output::cell(&s["name"]),
            output::cell(&s["cron"]),
            output::cell(&s["timezone"]),
            state.to_owned(),
            if s["paused"] == true { "-".to_owned() } else { output::cell(&s["next_at"]) },
            last,
        ]
    };
    let header = ["name", "cron", "timezone", "state", "next", "last run"];
    match s {
        Schedules::List => table(&header, out.as_array().into_iter().flatten().map(row).collect()),
        Schedules::Trigger { .. } => {
            println!("{} {}", out["job"]["id"].as_str().unwrap_or(""), out["job"]["state"].as_str().unwrap_or(""))
        }
        Schedules::Delete { name, .. } => println!("{name} deleted"),
        _ => {
            table(&header, vec![row(&out)]);
            if let Some(next) = out["upcoming"].as_array().filter(|u| !u.is_empty()) {
                let times: Vec<String> = next.iter().map(output::cell).collect();
                println!("\nnext runs: {}", times.join(", "));
            }
            if let Some(runs) = out["runs"].as_array().filter(|r| !r.is_empty()) {
                println!();
                table(
                    &["tick", "kind", "job", "state"],
                    runs.iter()
                        .map(|r| ["tick", "kind", "job_id", "state"].iter().map(|k| output::cell(&r[*k])).collect())
                        .collect(),
                );
            }
        }
    }
    Ok(())
}

/// Follows jobs that changed since the last look: one line per job and state (and attempt)
/// not shown before. Looks back 5 s each time, so a change that took a moment to land is
/// not missed; what was shown is remembered (the newest 100,000).
fn tail(
    cli: &Cli,
    api: &Api,
    job_type: &Option<String>,
    tag: &Option<String>,
    every: Duration,
    run_for: Option<Duration>,
) -> Res<()> {
    let stop_at = run_for.map(|d| Instant::now() + d);
    let filters = Filters { job_type: job_type.clone(), tag: tag.clone(), from: None, to: None };
    let mut shown: BTreeSet<String> = BTreeSet::new();
    let mut since = std::time::SystemTime::now();
    loop {
        let look_from = since - Duration::from_secs(5);
        let now = std::time::SystemTime::now();
        let from = humantime::format_rfc3339_millis(look_from).to_string();
        let mut cursor: Option<String> = None;
        let mut fresh: Vec<Value> = Vec::new();
        for _ in 0..50 {
            let mut extra = vec![("limit", "100".to_owned()), ("from", from.clone())];
            if let Some(c) = &cursor {
                extra.push(("cursor", c.clone()));
            }
            let page = api.call("GET", &format!("/v1/jobs?{}", query(&filters, &extra)), None)?;
            fresh.extend(page["jobs"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        fresh.sort_by(|a, b| a["updated_at"].as_str().cmp(&b["updated_at"].as_str()));
        for j in fresh {
            let key =
                format!("{} {} {}", j["id"].as_str().unwrap_or(""), j["state"].as_str().unwrap_or(""), j["attempt"]);
            if !shown.insert(key) {
                continue;
            }
            if cli.json {
                println!("{j}");
            } else {
                let err = j["last_error"].as_str().filter(|_| j["state"] != "completed").unwrap_or("");
                println!(
                    "{}  {}  {:<14} {:<10} attempt {}  {}",
                    j["updated_at"].as_str().unwrap_or(""),
                    j["id"].as_str().unwrap_or(""),
                    j["type"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["attempt"],
                    err
                );
            }
            let _ = std::io::stdout().flush();
        }
        if shown.len() > 100_000 {
            shown.clear();
        }
        since = now;
        if stop_at.is_some_and(|t| Instant::now() + every > t) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        let table =
            [(400, 3), (409, 3), (413, 3), (401, 4), (403, 4), (404, 5), (429, 6), (500, 6), (503, 6), (302, 1)];
        for (status, code) in table {
            assert_eq!(exit_code(status), code, "{status}");
        }
        for code in 0..=8 {
            assert!(EXIT_CODES.contains(&format!("  {code}  ")), "exit code {code} is documented");
        }
    }

    #[test]
    fn dev_env_lines_are_read_and_found_above() {
        let v = parse_env_file("# c\n\nEDGEJOBS_URL=http://127.0.0.1:1\nEDGEJOBS_API_KEY=\"k=1\"\nbroken\n");
        assert_eq!(
            v,
            vec![("EDGEJOBS_URL".into(), "http://127.0.0.1:1".into()), ("EDGEJOBS_API_KEY".into(), "k=1".into())]
        );
        let dir = std::env::temp_dir().join(format!("edgejobs-cli-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".edgejobs")).expect("dir");
        std::fs::create_dir_all(dir.join("a/b")).expect("dir");
        std::fs::write(dir.join(".edgejobs/dev.env"), "EDGEJOBS_URL=u\n").expect("write");
        assert_eq!(find_dev_env(&dir.join("a/b")), Some(vec![("EDGEJOBS_URL".into(), "u".into())]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        let f = Filters { job_type: Some("noop".into()), tag: Some("x y".into()), from: None, to: None };
        assert_eq!(query(&f, &[("limit", "5".into())]), "type=noop&tag=x%20y&limit=5");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
