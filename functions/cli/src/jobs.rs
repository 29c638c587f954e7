//! `enqueue`, `get`, `list`, `cancel`, `retry` and `tail`: the job commands. `get --wait`
//! and `tail` follow the API's event streams (`live.rs`) instead of polling.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use edgejobs_api::{BatchItem, BatchRequest, BatchResult, Job, JobList, JobState};
use serde_json::{Value, json};

use crate::client::{Api, Failure, Res, enc, query};
use crate::input::{Spec, read_ndjson};
use crate::live::{Chunk, Follow, StateEvent, Step};
use crate::output::{cell, cell_of, print_jobs, print_json, progress, steps_table, table};
use crate::{Cli, Enqueue, Filters, ListArgs};

/// `enqueue TYPE [flags]`
pub fn enqueue_one(cli: &Cli, api: &Api, e: &Enqueue) -> Res<()> {
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
    let body = spec.to_spec().map_err(|m| Failure::new(2, m))?;
    let job = api.call::<Job>("POST", "/v1/jobs", Some(&body))?;
    if cli.json {
        print_json(&job.raw);
    } else {
        println!("{} {}", job.value.id, job.value.state.as_str());
    }
    Ok(())
}

/// `enqueue --from FILE`: every line, in batches of 100.
pub fn enqueue_file(cli: &Cli, api: &Api, file: &Path) -> Res<()> {
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
        let answer = api.call::<BatchResult>("POST", "/v1/jobs/batch", Some(&BatchRequest { jobs }))?;
        for (i, r) in answer.value.results.iter().enumerate() {
            match r {
                BatchItem::Created(c) if c.status == 201 => created += 1,
                BatchItem::Created(_) => existing += 1,
                BatchItem::Failed(f) => refused.push(json!({
                    "line": chunk.get(i).map_or(chunk_no * 100 + i + 1, |(n, _)| *n),
                    "code": f.error.code, "message": f.error.message,
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

/// How `get --wait` ended.
enum Waited {
    Final,
    /// The timeout passed; the job's state as last seen, if any.
    TimedOut(Option<JobState>),
}

/// `get ID [--wait [--stream]]`. With `--wait` it follows the job's event stream until the
/// job is final (a line on standard error per change of state or progress; with `--stream`
/// the chunks on standard output as they come), then reads the job and prints it.
pub fn get(cli: &Cli, api: &Api, id: &str, wait: bool, timeout: Duration, stream: bool) -> Res<()> {
    let path = format!("/v1/jobs/{}", enc(id));
    if wait && let Waited::TimedOut(seen) = follow_job(cli, api, &path, Instant::now() + timeout, stream)? {
        // The job as it is now, for the message and for `--json` (as before the stream).
        let job = api.get::<Job>("GET", &path).ok();
        if cli.json
            && let Some(j) = &job
        {
            print_json(&j.raw);
        }
        let state = job.map(|j| j.value.state).or(seen).map_or("unfinished", JobState::as_str);
        return Err(Failure::new(
            7,
            format!("job {id} is still {state} after {}", humantime::format_duration(timeout)),
        ));
    }
    let job = api.get::<Job>("GET", &path)?;
    if cli.json {
        print_json(&job.raw);
    } else {
        let j = &job.value;
        let rows: Vec<[Option<String>; 2]> = vec![
            [Some("id".into()), Some(cell_of(&j.id))],
            [Some("type".into()), Some(cell_of(&j.job_type))],
            [Some("state".into()), Some(j.state.as_str().to_owned())],
            [Some("attempt".into()), Some(j.attempt.to_string())],
            [Some("created_at".into()), Some(cell_of(&j.created_at))],
            [Some("finished_at".into()), j.finished_at.as_ref().map(cell_of)],
            [Some("last_error".into()), j.last_error.as_ref().map(cell_of)],
            [Some("result".into()), j.result.as_ref().filter(|r| !r.is_null()).map(cell)],
            [Some("free_attempts".into()), (j.free_attempts > 0).then(|| j.free_attempts.to_string())],
        ];
        table(&["field", "value"], rows.into_iter().filter_map(|[k, v]| Some(vec![k?, v?])).collect());
        // A workflow run (#29): its steps after its fields.
        if !j.steps.is_empty() {
            println!();
            print!("{}", steps_table(&j.steps));
        }
    }
    let state = job.value.state;
    if wait && state != JobState::Completed {
        return Err(Failure::new(8, format!("job {id} ended {}", state.as_str())));
    }
    Ok(())
}

/// Follows the job at `path` until its final state or `deadline`.
fn follow_job(cli: &Cli, api: &Api, path: &str, deadline: Instant, stream: bool) -> Res<Waited> {
    let mut follow = Follow::new(api, &format!("{path}/events"), Some(deadline), Duration::from_secs(1));
    let mut text = StreamText { json: cli.json, terminal: std::io::stdout().is_terminal(), ..StreamText::default() };
    let mut last_line = String::new();
    let mut seen = None;
    let out = loop {
        let ev = match follow.next()? {
            Step::Deadline => break Waited::TimedOut(seen),
            Step::Opened { .. } => continue,
            Step::Dropped { why, retry_in } => {
                text.break_line();
                eprintln!("the job's stream was lost ({why}); again in {}", humantime::format_duration(retry_in));
                continue;
            }
            Step::Event(ev) => ev,
        };
        match ev.event.as_str() {
            "chunk" if stream => {
                let chunk: Chunk = serde_json::from_str(&ev.data)
                    .map_err(|e| Failure::new(1, format!("the job's stream sent a chunk that is not one: {e}")))?;
                text.show(ev.id.as_deref(), &chunk);
            }
            "state" => {
                let s: StateEvent = serde_json::from_str(&ev.data)
                    .map_err(|e| Failure::new(1, format!("the job's stream sent a state that is not one: {e}")))?;
                seen = Some(s.state);
                let line = progress_line(&s);
                if line != last_line {
                    text.break_line();
                    eprintln!("{line}");
                    last_line = line;
                }
                if s.state.is_final() {
                    break Waited::Final;
                }
            }
            _ => {}
        }
    };
    text.end();
    Ok(out)
}

/// A state as `get --wait` shows it: `active  attempt 1  40%  reading page 2`.
fn progress_line(s: &StateEvent) -> String {
    let mut line = format!("{}  attempt {}", s.state.as_str(), s.attempt);
    if let Some(p) = &s.progress {
        if let Some(pct) = p["percent"].as_f64() {
            line.push_str(&format!("  {}%", pct.round()));
        }
        if let Some(m) = p["message"].as_str() {
            line.push_str(&format!("  {}", cell(&Value::String(m.to_owned()))));
        }
    }
    if let Some(e) = s.last_error.as_deref().filter(|_| s.state != JobState::Completed) {
        line.push_str(&format!("  error: {}", cell(&Value::String(e.to_owned()))));
    }
    line
}

/// The chunks `get --wait --stream` prints as they come: each stream's text after a
/// `[name] ` at the start of a line (a new line when the stream changes), starting over when
/// a new attempt's chunks come; with `--json`, one chunk object per line.
#[derive(Default)]
struct StreamText {
    json: bool,
    /// Standard output is a terminal: a progress line (on standard error) starts on a line
    /// of its own there. Piped, the text is written exactly as it came.
    terminal: bool,
    attempt: Option<u32>,
    stream: Option<String>,
    mid_line: bool,
}

impl StreamText {
    fn show(&mut self, id: Option<&str>, c: &Chunk) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let n = id.and_then(|i| i.parse::<u64>().ok());
            let _ = writeln!(out, "{}", json!({ "id": n, "attempt": c.attempt, "stream": c.stream, "data": c.data }));
            let _ = out.flush();
            return;
        }
        if self.attempt.is_some_and(|a| a != c.attempt) {
            if self.mid_line {
                let _ = writeln!(out);
                self.mid_line = false;
            }
            eprintln!("attempt {} started over: its streams begin again", c.attempt);
            self.stream = None;
        }
        self.attempt = Some(c.attempt);
        if self.stream.as_deref() != Some(c.stream.as_str()) {
            if self.mid_line {
                let _ = writeln!(out);
            }
            let _ = write!(out, "[{}] ", c.stream);
            self.stream = Some(c.stream.clone());
        }
        let _ = write!(out, "{}", c.data);
        self.mid_line = !c.data.ends_with('\n');
        let _ = out.flush();
    }

    /// Ends the text's line on a terminal before a progress line is written.
    fn break_line(&mut self) {
        if self.terminal && self.mid_line {
            println!();
            self.mid_line = false;
            self.stream = None;
        }
    }

    /// Ends the text's last line, so what follows starts on a line of its own.
    fn end(&mut self) {
        if self.mid_line {
            println!();
            self.mid_line = false;
        }
    }
}

/// `cancel ID` and `retry ID` (`verb`).
pub fn act(cli: &Cli, api: &Api, id: &str, verb: &str) -> Res<()> {
    let job = api.get::<Job>("POST", &format!("/v1/jobs/{}/{verb}", enc(id)))?;
    if cli.json {
        print_json(&job.raw);
    } else {
        println!("{} {}", job.value.id, job.value.state.as_str());
    }
    Ok(())
}

/// The jobs of a page, each as read and as it came.
fn jobs_of(page: &crate::client::Reply<JobList>) -> impl Iterator<Item = (&edgejobs_api::JobSummary, &Value)> {
    let raw = page.raw["jobs"].as_array().map(Vec::as_slice).unwrap_or_default();
    page.value.jobs.iter().zip(raw)
}

/// `list`
pub fn list(cli: &Cli, api: &Api, a: &ListArgs) -> Res<()> {
    let mut extra: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    for (k, v) in [("state", &a.state), ("id_prefix", &a.id_prefix), ("q", &a.search)] {
        if let Some(v) = v {
            extra.push((k, v.clone()));
        }
    }
    let base = format!("/v1/jobs?{}", query(&a.filters, &extra));
    if !a.all {
        let page = api.get::<JobList>("GET", &base)?;
        if cli.json {
            print_json(&page.raw)
        } else {
            print_jobs(&page.value.jobs)
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
        let page = api.get::<JobList>("GET", &path)?;
        for (j, raw) in jobs_of(&page) {
            if cli.json {
                println!("{raw}");
            } else {
                all.push(j.clone());
            }
        }
        match page.value.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if !cli.json {
        print_jobs(&all);
    }
    Ok(())
}

/// What `tail` has printed: a line per job, state and attempt, and the newest change of
/// each job shown (an older one arriving late is not shown after it). Forgets all at 100,000.
#[derive(Default)]
struct Shown {
    lines: BTreeSet<String>,
    newest: HashMap<String, String>,
}

impl Shown {
    /// Whether a change is new: not shown before, and not older than the job's last shown.
    fn fresh(&mut self, id: &str, state: JobState, attempt: u32, updated_at: &str) -> bool {
        if self.lines.len() > 100_000 {
            *self = Shown::default();
        }
        if self.newest.get(id).is_some_and(|newest| newest.as_str() > updated_at) {
            return false;
        }
        if !self.lines.insert(format!("{id} {} {attempt}", state.as_str())) {
            return false;
        }
        self.newest.insert(id.to_owned(), updated_at.to_owned());
        true
    }
}

/// One line of `tail` (`raw`: the job as the API sent it, printed with `--json`).
fn tail_line(cli: &Cli, s: &StateEvent, raw: &Value) {
    if cli.json {
        println!("{raw}");
    } else {
        let err = s.last_error.as_deref().filter(|_| s.state != JobState::Completed).unwrap_or("");
        println!(
            "{}  {}  {:<14} {:<10} attempt {}  {}",
            s.updated_at,
            s.id,
            s.job_type,
            s.state.as_str(),
            s.attempt,
            err
        );
    }
    let _ = std::io::stdout().flush();
}

/// The fields of a `state` event, taken from a listed job (what `tail --json` prints for a
/// job it found by listing, so every line has the same shape).
const STATE_FIELDS: [&str; 10] =
    ["id", "type", "state", "attempt", "progress", "metadata", "result", "last_error", "tags", "updated_at"];

/// `tail`: follows `GET /v1/events` (of `--tag`, else every job the key sees) and prints a
/// line per job, state and attempt as they change (`--type` is applied here: the stream
/// has no type filter). Each time the stream opens, jobs changed since a moment before the
/// last thing it received (the first time: 5 s before `tail` started) are listed once, so
/// what happened while it was down (or just before it started) is shown too. A dropped
/// stream is opened again after `every`, doubling up to 30 s; `--for` bounds it all.
pub fn tail(
    cli: &Cli,
    api: &Api,
    job_type: &Option<String>,
    tag: &Option<String>,
    every: Duration,
    run_for: Option<Duration>,
) -> Res<()> {
    let stop_at = run_for.map(|d| Instant::now() + d);
    let path = match tag {
        Some(t) => format!("/v1/events?tag={}", enc(t)),
        None => "/v1/events".to_owned(),
    };
    let mut follow = Follow::new(api, &path, stop_at, every);
    let mut shown = Shown::default();
    let mut heard = std::time::SystemTime::now();
    loop {
        let ev = match follow.next()? {
            Step::Deadline => return Ok(()),
            Step::Opened { again } => {
                eprintln!(
                    "{} {} (Ctrl-C stops)",
                    if again { "following again" } else { "following" },
                    path.split('?').next().unwrap_or(&path)
                );
                catch_up(cli, api, job_type, tag, heard - Duration::from_secs(5), &mut shown)?;
                heard = std::time::SystemTime::now();
                continue;
            }
            Step::Dropped { why, retry_in } => {
                eprintln!("the stream was lost ({why}); again in {}", humantime::format_duration(retry_in));
                continue;
            }
            Step::Event(ev) => ev,
        };
        heard = std::time::SystemTime::now();
        if ev.event != "state" {
            continue;
        }
        let raw: Value = serde_json::from_str(&ev.data)
            .map_err(|e| Failure::new(1, format!("the events stream sent a state that is not JSON: {e}")))?;
        let s: StateEvent = serde_json::from_value(raw.clone())
            .map_err(|e| Failure::new(1, format!("the events stream sent a state that is not one: {e}")))?;
        if job_type.as_ref().is_some_and(|t| *t != s.job_type) {
            continue;
        }
        if shown.fresh(&s.id, s.state, s.attempt, &s.updated_at) {
            tail_line(cli, &s, &raw);
        }
    }
}

/// Lists the jobs changed since `from` (at most 50 pages of 100) and prints those not shown.
fn catch_up(
    cli: &Cli,
    api: &Api,
    job_type: &Option<String>,
    tag: &Option<String>,
    from: std::time::SystemTime,
    shown: &mut Shown,
) -> Res<()> {
    let filters = Filters { job_type: job_type.clone(), tag: tag.clone(), from: None, to: None };
    let from = humantime::format_rfc3339_millis(from).to_string();
    let mut cursor: Option<String> = None;
    let mut fresh: Vec<(edgejobs_api::JobSummary, Value)> = Vec::new();
    for _ in 0..50 {
        let mut extra = vec![("limit", "100".to_owned()), ("from", from.clone())];
        if let Some(c) = &cursor {
            extra.push(("cursor", c.clone()));
        }
        let page = api.get::<JobList>("GET", &format!("/v1/jobs?{}", query(&filters, &extra)))?;
        fresh.extend(jobs_of(&page).map(|(j, raw)| (j.clone(), raw.clone())));
        match page.value.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    fresh.sort_by(|(a, _), (b, _)| a.updated_at.cmp(&b.updated_at));
    for (j, raw) in fresh {
        if !shown.fresh(&j.id, j.state, j.attempt, &j.updated_at) {
            continue;
        }
        let view: serde_json::Map<String, Value> =
            STATE_FIELDS.iter().filter_map(|k| raw.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
        let s = StateEvent {
            id: j.id,
            job_type: j.job_type,
            state: j.state,
            attempt: j.attempt,
            progress: j.progress,
            last_error: j.last_error,
            updated_at: j.updated_at,
        };
        tail_line(cli, &s, &Value::Object(view));
    }
    Ok(())
}
