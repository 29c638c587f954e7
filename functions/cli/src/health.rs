//! `health`: the edge's health; exit code 6 when unhealthy.

use edgejobs_api::HealthStatus;
use serde_json::Value;

use crate::Cli;
use crate::client::{Api, Failure, Res};
use crate::output::{print_json, print_json_of};

pub fn run(cli: &Cli, api: &Api) -> Res<()> {
    // 503 (unhealthy) and other unavailability read as unhealthy without details.
    let h = match api.run(api.client.health()) {
        Ok(h) => Some(h),
        Err(f) if f.code == 6 => None,
        Err(f) => return Err(f),
    };
    let status = h.as_ref().map_or(HealthStatus::Unhealthy, |h| h.status);
    if cli.json {
        match &h {
            Some(h) => print_json_of(h),
            None => print_json(&Value::Null),
        }
    } else {
        println!("{}", status.as_str());
        // Each check is shown to an admin key (or the metrics token) only.
        let checks = h.as_ref().and_then(|h| h.checks.as_ref());
        for (name, check) in checks.map(|c| c.all()).unwrap_or_default() {
            println!("  {name:<18} {}", if check.ok { "ok" } else { "FAILING" });
        }
        if h.is_some() && checks.is_none() {
            println!("  (each check is shown with an admin key)");
        }
    }
    if status == HealthStatus::Unhealthy { Err(Failure::new(6, "the edge is unhealthy")) } else { Ok(()) }
}
