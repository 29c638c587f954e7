//! `schedules list|show|create|pause|resume|trigger|delete`.

use edgejobs_api::{ScheduleDeleted, ScheduleList, ScheduleView, Triggered};
use serde_json::{Value, json};

use crate::client::{Api, Failure, Res, enc};
use crate::input::Spec;
use crate::output::{cell_of, confirm, print_json, table};
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

pub fn run(cli: &Cli, api: &Api, s: &Schedules) -> Res<()> {
    let path = |name: &str, action: &str| format!("/v1/schedules/{}{action}", enc(name));
    // One schedule in, shown as JSON or as its table.
    let one = |reply: crate::client::Reply<ScheduleView>| {
        if cli.json { print_json(&reply.raw) } else { show(&reply.value) }
    };
    match s {
        Schedules::List => {
            // Every page (at most 50 of 200).
            let mut all: Vec<ScheduleView> = Vec::new();
            let mut raw: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..50 {
                let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={}", enc(c)));
                let page = api.get::<ScheduleList>("GET", &format!("/v1/schedules?limit=200{q}"))?;
                raw.extend(page.raw["schedules"].as_array().cloned().unwrap_or_default());
                all.extend(page.value.schedules);
                match page.value.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if cli.json {
                print_json(&Value::Array(raw));
            } else {
                table(&HEADER, all.iter().map(row).collect());
            }
        }
        Schedules::Show { name } => one(api.get("GET", &path(name, ""))?),
        Schedules::Create { name, cron, job_type, payload, timezone, overlap, catch_up, tags, paused } => {
            let spec =
                Spec { job_type: job_type.clone(), payload: payload.clone(), tags: tags.clone(), ..Spec::default() };
            let job = spec.to_spec().map_err(|e| Failure::new(2, e))?;
            let mut body = json!({ "name": name, "cron": cron, "job": job, "paused": paused });
            for (k, v) in [("timezone", timezone), ("overlap", overlap), ("catch_up", catch_up)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            one(api.call("POST", "/v1/schedules", Some(&body))?)
        }
        Schedules::Pause { name } => one(api.get("POST", &path(name, "/pause"))?),
        Schedules::Resume { name } => one(api.get("POST", &path(name, "/resume"))?),
        Schedules::Trigger { name } => {
            let out = api.get::<Triggered>("POST", &path(name, "/trigger"))?;
            if cli.json {
                print_json(&out.raw);
            } else {
                println!("{} {}", out.value.job.id, out.value.job.state.as_str());
            }
        }
        Schedules::Delete { name, yes } => {
            confirm(&format!("Delete schedule {name}?"), *yes)?;
            let out = api.get::<ScheduleDeleted>("DELETE", &path(name, ""))?;
            if cli.json {
                print_json(&out.raw);
            } else {
                println!("{name} deleted");
            }
        }
    }
    Ok(())
}
