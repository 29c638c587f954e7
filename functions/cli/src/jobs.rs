//! `enqueue`, `get`, `list`, `cancel`, `retry` and `tail`: the job commands. `get --wait`
//! and `tail` follow the API's event streams (`live.rs`) instead of polling.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use edgejobs_api::{BatchItem, JobState};
use edgejobs_client::{Chunk, JobQuery, StateEvent, Step};
use serde_json::{Value, json};

use crate::client::{Api, Failure, Res, job_query};
use crate::input::{Spec, read_ndjson};
use crate::output::{cell, cell_of, print_jobs, print_json, print_json_of, progress, steps_table, table};
use crate::{Cli, Enqueue, ListArgs};

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
    let job = api.run(api.client.enqueue(&body))?;
    if cli.json {
        print_json_of(&job);
    } else {
        println!("{} {}", job.id, job.state.as_str());
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
        let answer = api.run(api.client.enqueue_batch_json(jobs))?;
        for (i, r) in answer.results.iter().enumerate() {
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
    if wait && let Waited::TimedOut(seen) = follow_job(cli, api, id, Instant::now() + timeout, stream)? {
        // The job as it is now, for the message and for `--json` (as before the stream).
        let job = api.run(api.client.job(id)).ok();
        if cli.json
            && let Some(j) = &job
        {
            print_json_of(j);
        }
        let state = job.map(|j| j.state).or(seen).map_or("unfinished", JobState::as_str);
        return Err(Failure::new(
            7,
            format!("job {id} is still {state} after {}", humantime::format_duration(timeout)),
        ));
    }
    let job = api.run(api.client.job(id))?;
    if cli.json {
        print_json_of(&job);
    } else {
        let j = &job;
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
    let state = job.state;
    if wait && state != JobState::Completed {
        return Err(Failure::new(8, format!("job {id} ended {}", state.as_str())));
    }
    Ok(())
}

/// The next step of a followed stream, or `None` once `deadline` passed (`None`: never).
fn next_step(api: &Api, s: &mut edgejobs_client::EventStream, deadline: Option<Instant>) -> Res<Option<Step>> {
    let left = match deadline {
        Some(d) => match d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()) {
            Some(left) => left,
            None => return Ok(None),
        },
        None => Duration::from_secs(86_400),
    };
    // The timer is made inside the runtime (it registers with the runtime's clock).
    match api.block_on(async { tokio::time::timeout(left, s.next()).await }) {
        Err(_) => Ok(None),
        Ok(step) => step.map(Some).map_err(|e| api.failure(e)),
    }
}

/// Follows the job `id` until its final state or `deadline`.
fn follow_job(cli: &Cli, api: &Api, id: &str, deadline: Instant, stream: bool) -> Res<Waited> {
    let mut follow = api.client.job_events(id).with_backoff(Duration::from_secs(1));
    let mut text = StreamText { json: cli.json, terminal: std::io::stdout().is_terminal(), ..StreamText::default() };
    let mut last_line = String::new();
    let mut seen = None;
    let out = loop {
        let ev = match next_step(api, &mut follow, Some(deadline))? {
            None => break Waited::TimedOut(seen),
            // The stream ends only after the final state, which ended the loop already.
            Some(Step::Ended) => break Waited::Final,
            Some(Step::Opened { .. }) => continue,
            Some(Step::Dropped { why, retry_in }) => {
                text.break_line();
                eprintln!("the job's stream was lost ({why}); again in {}", humantime::format_duration(retry_in));
                continue;
            }
            Some(Step::Event(ev)) => ev,
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
    let job = if verb == "cancel" { api.run(api.client.cancel(id))? } else { api.run(api.client.retry(id))? };
    if cli.json {
        print_json_of(&job);
    } else {
        println!("{} {}", job.id, job.state.as_str());
    }
    Ok(())
}

/// `list`
pub fn list(cli: &Cli, api: &Api, a: &ListArgs) -> Res<()> {
    let q = JobQuery {
        state: a.state.clone(),
        id_prefix: a.id_prefix.clone(),
        q: a.search.clone(),
        limit: Some(a.limit),
        ..job_query(&a.filters)
    };
    if !a.all {
        let page = api.run(api.client.jobs(&q))?;
        if cli.json {
            print_json_of(&page)
        } else {
            print_jobs(&page.jobs)
        }
        return Ok(());
    }
    let mut all = Vec::new();
    let mut pages = api.client.job_pages(&q);
    for _ in 0..1000 {
        let Some(page) = api.block_on(pages.next()) else { break };
        for j in page.map_err(|e| api.failure(e))? {
            if cli.json {
                println!("{}", serde_json::to_value(&j).unwrap_or(Value::Null));
            } else {
                all.push(j);
            }
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
        Some(_) => "/v1/events?tag=...",
        None => "/v1/events",
    };
    let mut follow = api.client.events(tag.as_deref()).with_backoff(every);
    let mut shown = Shown::default();
    let mut heard = std::time::SystemTime::now();
    loop {
        let ev = match next_step(api, &mut follow, stop_at)? {
            None | Some(Step::Ended) => return Ok(()),
            Some(Step::Opened { again }) => {
                eprintln!(
                    "{} {} (Ctrl-C stops)",
                    if again { "following again" } else { "following" },
                    path.split('?').next().unwrap_or(path)
                );
                catch_up(cli, api, job_type, tag, heard - Duration::from_secs(5), &mut shown)?;
                heard = std::time::SystemTime::now();
                continue;
            }
            Some(Step::Dropped { why, retry_in }) => {
                eprintln!("the stream was lost ({why}); again in {}", humantime::format_duration(retry_in));
                continue;
            }
            Some(Step::Event(ev)) => ev,
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
    let from = humantime::format_rfc3339_millis(from).to_string();
    let q = JobQuery {
        job_type: job_type.clone(),
        tag: tag.clone(),
        from: Some(from),
        limit: Some(100),
        ..JobQuery::default()
    };
    let jobs = api.run(api.client.job_pages(&q).collect(50))?;
    let mut fresh: Vec<(edgejobs_api::JobSummary, Value)> = jobs
        .into_iter()
        .map(|j| {
            let raw = serde_json::to_value(&j).unwrap_or(Value::Null);
            (j, raw)
        })
        .collect();
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
            metadata: j.metadata,
            result: j.result,
            last_error: j.last_error,
            tags: Some(j.tags),
            updated_at: j.updated_at,
        };
        tail_line(cli, &s, &Value::Object(view));
    }
    Ok(())
}
