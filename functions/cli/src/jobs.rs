//! `enqueue`, `get`, `list`, `cancel`, `retry` and `tail`: the job commands.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use edgejobs_api::{BatchItem, BatchRequest, BatchResult, Job, JobList};
use serde_json::{Value, json};

use crate::client::{Api, Failure, Res, enc, query};
use crate::input::{Spec, read_ndjson};
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

/// `get ID [--wait]`
pub fn get(cli: &Cli, api: &Api, id: &str, wait: bool, timeout: Duration) -> Res<()> {
    let path = format!("/v1/jobs/{}", enc(id));
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let job = loop {
        let job = api.get::<Job>("GET", &path)?;
        let state = job.value.state;
        if !wait || state.is_final() {
            break job;
        }
        if Instant::now() + pause > deadline {
            if cli.json {
                print_json(&job.raw);
            }
            return Err(Failure::new(
                7,
                format!("job {id} is still {} after {}", state.as_str(), humantime::format_duration(timeout)),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    };
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
    if wait && state != edgejobs_api::JobState::Completed {
        return Err(Failure::new(8, format!("job {id} ended {}", state.as_str())));
    }
    Ok(())
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

/// `tail`: follows jobs that changed since the last look: one line per job and state (and
/// attempt) not shown before. Looks back 5 s each time, so a change that took a moment to
/// land is not missed; what was shown is remembered (the newest 100,000).
pub fn tail(
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
            let key = format!("{} {} {}", j.id, j.state.as_str(), j.attempt);
            if !shown.insert(key) {
                continue;
            }
            if cli.json {
                println!("{raw}");
            } else {
                let completed = j.state == edgejobs_api::JobState::Completed;
                let err = j.last_error.as_deref().filter(|_| !completed).unwrap_or("");
                println!(
                    "{}  {}  {:<14} {:<10} attempt {}  {}",
                    j.updated_at,
                    j.id,
                    j.job_type,
                    j.state.as_str(),
                    j.attempt,
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
