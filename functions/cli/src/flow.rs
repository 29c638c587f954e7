//! `flow show KEY|pause KEY|pause --type T|resume ...|busiest`: flow control's keys (#28). `show` and `busiest` read
//! with any key (a jobs key sees its own tenant's keys); `pause` and `resume` need an admin
//! key.

use edgejobs_api::{FlowKey, FlowPauseRequest};

use crate::client::{Api, Failure, Res};
use crate::output::{cell_of, print_json_of, table};
use crate::{Cli, Flow, Target};

/// What a pause or resume sends: a key (of `tenant`, default `default`) or a type.
pub fn target_body(t: &Target) -> Res<FlowPauseRequest> {
    match (&t.flow_key, &t.job_type) {
        (Some(key), None) => Ok(FlowPauseRequest { key: Some(key.clone()), tenant: t.tenant.clone(), job_type: None }),
        (None, Some(name)) if t.tenant.is_none() => {
            Ok(FlowPauseRequest { key: None, tenant: None, job_type: Some(name.clone()) })
        }
        (None, Some(_)) => Err(Failure::new(2, "--tenant names a key's tenant; a type is paused for every tenant")),
        _ => Err(Failure::new(2, "name a key (KEY [--tenant T]) or a type (--type NAME)")),
    }
}

/// A key's state as `label: value` lines.
fn show(k: &FlowKey) {
    let state = if k.paused { "paused" } else { "running" };
    let limit = if k.limit == 0 { "-".to_owned() } else { k.limit.to_string() };
    let rows = [
        ("key", k.key.clone()),
        ("tenant", k.tenant.clone()),
        ("state", state.to_owned()),
        ("running", format!("{} of {limit}", k.running)),
        ("waiting", k.waiting.to_string()),
        ("rate waiting", k.rate_waiting.to_string()),
        ("rate next at", k.rate_next_at.clone().unwrap_or_else(|| "-".to_owned())),
        ("parked", k.parked.to_string()),
    ];
    for (label, value) in rows {
        println!("{label:<13} {value}");
    }
}

pub fn run(cli: &Cli, api: &Api, f: &Flow) -> Res<()> {
    match f {
        Flow::Show { flow_key: key, tenant } => {
            let out = api.run(api.client.flow_key(key, tenant.as_deref()))?;
            if cli.json { print_json_of(&out) } else { show(&out) }
        }
        Flow::Pause(t) | Flow::Resume(t) => {
            let paused = matches!(f, Flow::Pause(_));
            let body = target_body(t)?;
            let out =
                if paused { api.run(api.client.flow_pause(&body))? } else { api.run(api.client.flow_resume(&body))? };
            if cli.json {
                print_json_of(&out);
            } else {
                let what = match (&body.key, &body.job_type) {
                    (Some(k), _) => format!("key {k} of tenant {}", body.tenant.as_deref().unwrap_or("default")),
                    (_, Some(t)) => format!("type {t}"),
                    _ => String::new(),
                };
                let verb = if paused { "paused" } else { "resumed" };
                let note = if out.changed { "" } else { " (it already was)" };
                println!("{what} {verb}{note}");
            }
        }
        Flow::Busiest { n } => {
            let out = api.run(api.client.flow_busiest(*n))?;
            if cli.json {
                print_json_of(&out);
            } else {
                let rows = out
                    .keys
                    .iter()
                    .map(|k| {
                        let limit = if k.limit == 0 { "-".to_owned() } else { k.limit.to_string() };
                        vec![
                            cell_of(&k.kind),
                            cell_of(&k.tenant),
                            cell_of(&k.key),
                            k.running.to_string(),
                            limit,
                            k.waiting.to_string(),
                        ]
                    })
                    .collect();
                table(&["kind", "tenant", "key", "running", "limit", "waiting"], rows);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(key: Option<&str>, tenant: Option<&str>, job_type: Option<&str>) -> Target {
        Target { flow_key: key.map(Into::into), tenant: tenant.map(Into::into), job_type: job_type.map(Into::into) }
    }

    #[test]
    fn a_target_is_a_key_or_a_type() {
        let body = target_body(&t(Some("k"), Some("acme"), None)).ok();
        assert_eq!(body.and_then(|b| b.tenant), Some("acme".to_owned()));
        assert_eq!(target_body(&t(None, None, Some("noop"))).ok().and_then(|b| b.job_type), Some("noop".into()));
        for bad in [t(None, None, None), t(None, Some("acme"), Some("noop"))] {
            assert_eq!(target_body(&bad).err().map(|f| f.code), Some(2));
        }
    }
}
