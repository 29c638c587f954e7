//! `dead list` and `dead replay`: the dead-letter set.

use std::collections::BTreeSet;

use edgejobs_api::{ReplayRequest, ReplayResult};
use serde_json::json;

use crate::client::{Api, Res, dead_query};
use crate::output::{confirm, print_jobs, print_json, print_json_of, progress};
use crate::{Cli, Filters};

/// `dead list`
pub fn list(cli: &Cli, api: &Api, filters: &Filters, limit: u32) -> Res<()> {
    let page = api.run(api.client.dead(&dead_query(filters, limit)))?;
    if cli.json {
        print_json_of(&page)
    } else {
        print_jobs(&page.jobs)
    }
    Ok(())
}

/// Counts the dead jobs that match (up to 10,000).
fn count(api: &Api, f: &Filters) -> Res<u64> {
    Ok(api.run(api.client.dead_pages(&dead_query(f, 100)).collect(100))?.len() as u64)
}

/// `dead replay`: every dead job that matches (asks first unless `yes`).
pub fn replay(cli: &Cli, api: &Api, f: &Filters, yes: bool) -> Res<()> {
    let n = count(api, f)?;
    if n == 0 {
        if cli.json {
            print_json(&json!(ReplayResult::default()));
        } else {
            println!("no dead job matches");
        }
        return Ok(());
    }
    confirm(&format!("Replay {n} dead job{}?", if n == 1 { "" } else { "s" }), yes)?;
    let bar = progress(n, "replayed");
    let mut ids: Vec<String> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let body = ReplayRequest {
        job_type: f.job_type.clone(),
        tag: f.tag.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
        limit: Some(1000),
    };
    // Each call replays up to 1,000; a replayed job is no longer dead, so the next call
    // takes the next ones. Bounded by what was counted.
    for _ in 0..=(n / 1000 + 1) {
        let out = api.run(api.client.replay_dead(&body))?;
        let fresh: Vec<String> = out.ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
        bar.inc(fresh.len() as u64);
        let done = fresh.is_empty() || ids.len() + fresh.len() >= n as usize;
        ids.extend(fresh);
        if done {
            break;
        }
    }
    bar.finish_and_clear();
    if cli.json {
        print_json(&json!(ReplayResult { replayed: ids.len(), ids }));
    } else {
        println!("{} dead jobs replayed", ids.len());
    }
    Ok(())
}
