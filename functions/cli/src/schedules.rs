//! `schedules list|show|create|pause|resume|trigger|delete`.

use edgejobs_api::{ScheduleSpec, ScheduleView};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::client::{Api, Failure, Res};
use crate::input::Spec;
use crate::output::{cell_of, confirm, print_json_of, table};
use crate::{Cli, Schedules};

const HEADER: [&str; 6] = ["name", "cron", "timezone", "state", "next", "last run"];

/// A schedule as one table row.
fn row(s: &ScheduleView) -> Vec<String> {
    let state = if s.paused {
        "paused"
    } else if s.overdue {
        "OVERDUE"
    } else {
        "active"
    };
    let last = match s.runs.first() {
        None => "-".to_owned(),
        Some(r) => format!("{} {}", cell_of(&r.tick), cell_of(&r.state)),
    };
    vec![
        cell_of(&s.name),
        cell_of(&s.cron),
        cell_of(&s.timezone),
        state.to_owned(),
        if s.paused { "-".to_owned() } else { cell_of(&s.next_at) },
        last,
    ]
}

/// One schedule: its row, its next ticks and its last runs.
fn show(s: &ScheduleView) {
    table(&HEADER, vec![row(s)]);
    if let Some(next) = s.upcoming.as_ref().filter(|u| !u.is_empty()) {
        let times: Vec<String> = next.iter().map(cell_of).collect();
        println!("\nnext runs: {}", times.join(", "));
    }
    if !s.runs.is_empty() {
        println!();
        table(
            &["tick", "kind", "job", "state"],
            s.runs
                .iter()
                .map(|r| vec![cell_of(&r.tick), cell_of(&r.kind), cell_of(&r.job_id), cell_of(&r.state)])
                .collect(),
        );
    }
}

/// A flag's value as the enum the API takes (`--overlap`, `--catch-up`).
fn choice<T: DeserializeOwned>(flag: &str, v: &Option<String>, allowed: &str) -> Res<Option<T>> {
    v.as_ref()
        .map(|v| serde_json::from_value(json!(v)).map_err(|_| Failure::new(2, format!("{flag}: one of {allowed}"))))
        .transpose()
}

pub fn run(cli: &Cli, api: &Api, s: &Schedules) -> Res<()> {
    // One schedule in, shown as JSON or as its table.
    let one = |reply: ScheduleView| {
        if cli.json { print_json_of(&reply) } else { show(&reply) }
    };
    match s {
        Schedules::List => {
            // Every page (at most 50 of 200).
            let all = api.run(api.client.schedule_pages(200).collect(50))?;
            if cli.json {
                print_json_of(&all);
            } else {
                table(&HEADER, all.iter().map(row).collect());
            }
        }
        Schedules::Show { name } => one(api.run(api.client.schedule(name))?),
        Schedules::Create { name, cron, job_type, payload, timezone, overlap, catch_up, tags, paused } => {
            let spec =
                Spec { job_type: job_type.clone(), payload: payload.clone(), tags: tags.clone(), ..Spec::default() };
            let job = spec.to_spec().map_err(|e| Failure::new(2, e))?;
            let body = ScheduleSpec {
                name: name.clone(),
                cron: cron.clone(),
                timezone: timezone.clone(),
                job,
                overlap: choice("--overlap", overlap, "allow, skip, queue_one")?,
                catch_up: choice("--catch-up", catch_up, "none, last")?,
                paused: Some(*paused),
                starts_at: None,
                ends_at: None,
            };
            one(api.run(api.client.create_schedule(&body))?)
        }
        Schedules::Pause { name } => one(api.run(api.client.pause_schedule(name))?),
        Schedules::Resume { name } => one(api.run(api.client.resume_schedule(name))?),
        Schedules::Trigger { name } => {
            let out = api.run(api.client.trigger_schedule(name))?;
            if cli.json {
                print_json_of(&out);
            } else {
                println!("{} {}", out.job.id, out.job.state.as_str());
            }
        }
        Schedules::Delete { name, yes } => {
            confirm(&format!("Delete schedule {name}?"), *yes)?;
            let out = api.run(api.client.delete_schedule(name))?;
            if cli.json {
                print_json_of(&out);
            } else {
                println!("{name} deleted");
            }
        }
    }
    Ok(())
}
