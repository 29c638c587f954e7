//! `edgejobs-check-env`: checks a production configuration with the code the programs use —
//! the edge's `[vars]` and secrets through `EdgeConfig::parse`, the consumer's environment
//! through its own settings parser — and prints every missing or malformed value with what it
//! should look like. Exit 0 when both are valid, 1 otherwise, 2 on a usage error. Values are
//! never printed (they may be secrets); names are.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use edgejobs_consumer::config::Config;
use edgejobs_core::config::{EdgeConfig, names};

const USAGE: &str = "edgejobs-check-env [--wrangler FILE] [--secrets FILE] [--consumer-env FILE] [--only edge|consumer]

  --wrangler FILE      the Worker's wrangler.toml; its [vars] are read [default: wrangler.toml]
  --secrets FILE       the Worker's secrets as KEY=\"value\" lines (a .dev.vars-style file);
                       without it they come from this process's environment
  --consumer-env FILE  the consumer's environment as KEY=value lines (an EnvironmentFile);
                       without it, this process's environment
  --only edge|consumer check one side only
  --vars-only          the Worker's [vars] only (secrets assumed set; a placeholder is a warning)
  --job-types FILE     check this JSON file as JOB_TYPES (what `scripts/deploy --job-types` sets)
  --deployed-shards N  the SHARD_COUNT the live deployment has recorded: a lower SHARD_COUNT is refused
  --deployment URL     ask the live deployment (its /health, with the admin key in
                       EDGEJOBS_ADMIN_KEY) for the count it has recorded, as --deployed-shards";

/// The bearer token `/metrics` requires (an admin key works too): optional for the Worker,
/// required here, for production.
const METRICS_TOKEN: &str = "METRICS_TOKEN";

/// What is wrong with the production `METRICS_TOKEN`, if anything (the value is never shown).
fn metrics_token_problem(token: Option<&str>) -> Option<String> {
    match token.map(str::trim) {
        None | Some("") => Some(format!(
            "{METRICS_TOKEN}: required in production, else anyone may scrape /metrics \
             (`wrangler secret put {METRICS_TOKEN}`, at least 16 characters; Prometheus sends it as a bearer token)"
        )),
        Some(t) if t.chars().count() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) => {
            Some(format!("{METRICS_TOKEN}: must be at least 16 printable characters without spaces"))
        }
        Some(_) => None,
    }
}

/// The Worker's secrets (set with `wrangler secret put`).
const SECRETS: &[&str] = &[
    names::API_KEYS,
    names::ADMIN_KEYS,
    names::CONSUMER_TOKEN,
    names::CONSUMER_TOKENS,
    names::WEBHOOK_SECRET,
    names::UPSTASH_TOKEN,
    names::PAYLOAD_KEYS,
    METRICS_TOKEN,
];

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(problems) if problems.is_empty() => {
            println!("  ✓ no problems found");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in &problems {
                println!("  ✗ {p}");
            }
            println!("{} problem(s)", problems.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("edgejobs-check-env: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<Vec<String>, String> {
    let mut wrangler = PathBuf::from("wrangler.toml");
    let (mut secrets, mut consumer_env, mut only, mut vars_only) = (None, None, None, false);
    let mut job_types: Option<PathBuf> = None;
    let mut deployed: Option<u16> = None;
    let mut deployment: Option<String> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--wrangler" => wrangler = PathBuf::from(value()?),
            "--secrets" => secrets = Some(PathBuf::from(value()?)),
            "--consumer-env" => consumer_env = Some(PathBuf::from(value()?)),
            "--only" => only = Some(value()?),
            "--vars-only" => vars_only = true,
            "--job-types" => job_types = Some(PathBuf::from(value()?)),
            "--deployed-shards" => {
                let v = value()?;
                deployed = Some(v.parse().map_err(|_| format!("--deployed-shards {v:?}: not a shard count"))?);
            }
            "--deployment" => deployment = Some(value()?),
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(Vec::new());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(url) = deployment {
        deployed = Some(recorded_shards(&url)?);
    }
    let mut problems = Vec::new();
    if only.as_deref() != Some("consumer") {
        problems.extend(
            check_edge(&wrangler, secrets.as_ref(), vars_only, job_types.as_ref(), deployed)?
                .into_iter()
                .map(|p| format!("edge: {p}")),
        );
    }
    if only.as_deref() != Some("edge") {
        problems.extend(check_consumer(consumer_env.as_ref())?.into_iter().map(|p| format!("consumer: {p}")));
    }
    if let (None, false, Some(s), Some(c)) = (only.as_deref(), vars_only, secrets.as_ref(), consumer_env.as_ref()) {
        problems.extend(consumer_token_problem(&env_lines(&read(s)?), &env_lines(&read(c)?)));
    }
    Ok(problems)
}

/// With both sides' files: the consumer's token must be one of the edge's consumer tokens
/// (`EDGEJOBS_CONSUMER_TOKEN`, or an entry of `EDGEJOBS_CONSUMER_TOKENS`), else every report
/// it makes is refused 401. Names the settings, never a value.
fn consumer_token_problem(edge: &BTreeMap<String, String>, consumer: &BTreeMap<String, String>) -> Option<String> {
    let theirs = consumer.get(names::CONSUMER_TOKEN).map(|t| t.trim()).filter(|t| !t.is_empty())?;
    let single = edge.get(names::CONSUMER_TOKEN).map(|t| t.trim().to_owned());
    let named = edge.get(names::CONSUMER_TOKENS).into_iter().flat_map(|list| {
        list.split(',').filter_map(|e| e.split_once('=').map(|(_, t)| t.trim().to_owned())).collect::<Vec<_>>()
    });
    let known: Vec<String> = single.into_iter().chain(named).filter(|t| !t.is_empty()).collect();
    (!known.is_empty() && !known.iter().any(|k| k == theirs)).then(|| {
        format!(
            "consumer: {} is none of the edge's consumer tokens ({} / {}): its reports would be refused 401",
            names::CONSUMER_TOKEN,
            names::CONSUMER_TOKEN,
            names::CONSUMER_TOKENS
        )
    })
}

/// `KEY=value` lines (quotes around the value dropped, `#` comments and blank lines skipped).
fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().trim_start_matches("export ").to_owned(), unquote(v.trim())))
        .collect()
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.split(q).next()) {
            return inner.to_owned();
        }
    }
    v.split(" #").next().unwrap_or(v).trim().to_owned()
}

/// The `[vars]` table of a wrangler.toml (strings as they are, other values as TOML).
fn wrangler_vars(doc: &toml::Table) -> BTreeMap<String, String> {
    let Some(vars) = doc.get("vars").and_then(toml::Value::as_table) else { return BTreeMap::new() };
    vars.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Well-formed stand-ins for the secrets, for `--vars-only`.
const STAND_INS: &[(&str, &str)] = &[
    (names::API_KEYS, "stand-in-jobs-key-0000"),
    (names::ADMIN_KEYS, "stand-in-admin-key-000"),
    (names::CONSUMER_TOKEN, "stand-in-consumer-token"),
    (names::WEBHOOK_SECRET, "stand-in-webhook-secret"),
    (names::UPSTASH_TOKEN, "stand-in-upstash-token"),
    (names::PAYLOAD_KEYS, "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
];

/// The `crons = [...]` of the `[triggers]` table.
fn trigger_crons(doc: &toml::Table) -> Vec<String> {
    let crons = doc.get("triggers").and_then(|t| t.get("crons")).and_then(toml::Value::as_array);
    crons.into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect()
}

/// The shard count a live deployment has recorded: its `/health` (admin) `shard_count` check.
fn recorded_shards(url: &str) -> Result<u16, String> {
    let key = std::env::var("EDGEJOBS_ADMIN_KEY").map_err(|_| "--deployment needs EDGEJOBS_ADMIN_KEY".to_owned())?;
    let health = format!("{}/health", url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let body: serde_json::Value = runtime.block_on(async {
        let r = reqwest::Client::new()
            .get(&health)
            .bearer_auth(key)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("cannot reach {health}: {e}"))?;
        r.json().await.map_err(|e| format!("{health} did not answer JSON: {e}"))
    })?;
    body.pointer("/checks/shard_count/count")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("{health} names no recorded shard count (an admin key? a deployment of this version?)"))
}

/// `SHARD_COUNT` below what the deployment has recorded: refused (the Worker would keep
/// the recorded count and report itself degraded).
fn shard_count_problem(configured: u16, deployed: Option<u16>) -> Option<String> {
    let mut t = edgejobs_core::topology::Topology::single(deployed?);
    t.raise(configured, 0).err().map(|e| e.to_string())
}

fn check_edge(
    wrangler: &PathBuf,
    secrets: Option<&PathBuf>,
    vars_only: bool,
    job_types: Option<&PathBuf>,
    deployed: Option<u16>,
) -> Result<Vec<String>, String> {
    let text = read(wrangler)?;
    let doc: toml::Table = text.parse().map_err(|e| format!("{} is not valid TOML: {e}", wrangler.display()))?;
    let mut vars = wrangler_vars(&doc);
    let crons = trigger_crons(&doc);
    // `--job-types FILE`: the JOB_TYPES a deploy will set from that file.
    if let Some(path) = job_types {
        vars.insert(names::JOB_TYPES.to_owned(), read(path)?);
    }
    let secret_values: BTreeMap<String, String> = match secrets {
        _ if vars_only => STAND_INS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        Some(p) => env_lines(&read(p)?),
        None => SECRETS.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect(),
    };
    let mut problems = Vec::new();
    for k in secret_values.keys() {
        if vars.contains_key(k) && SECRETS.contains(&k.as_str()) {
            problems
                .push(format!("{k}: is a secret but is also in [vars] (remove it there; `wrangler secret put {k}`)"));
        }
    }
    for (k, v) in vars.iter().chain(secret_values.iter()) {
        if v.contains("replace-me") {
            if vars_only {
                println!("  ! edge: {k}: still the placeholder of wrangler.toml (set it before a real deploy)");
            } else {
                problems.push(format!("{k}: still the placeholder of wrangler.toml"));
            }
        }
    }
    // The Worker itself runs without METRICS_TOKEN (local development: /metrics for anyone,
    // cached); a production deployment must not expose its metrics to the world.
    if !vars_only {
        problems.extend(metrics_token_problem(secret_values.get(METRICS_TOKEN).map(String::as_str)));
    }
    let get = |k: &str| secret_values.get(k).or_else(|| vars.get(k)).cloned();
    match EdgeConfig::parse(get) {
        Err(errors) => problems.extend(errors),
        Ok(cfg) => {
            problems.extend(shard_count_problem(cfg.shard_count, deployed));
            // The backup runs on its own cron; every other cron runs the sweep and retention.
            let backup = cfg.maintenance.backup_cron.trim();
            if !crons.iter().any(|c| c.trim() == backup) {
                problems.push(format!("BACKUP_CRON: {backup:?} is not one of the [triggers] crons {crons:?}"));
            }
            if !crons.iter().any(|c| c.trim() != backup) {
                problems.push(
                    "[triggers] crons: needs a second cron for the sweep and retention (e.g. \"*/5 * * * *\")".into(),
                );
            }
        }
    }
    Ok(problems)
}

fn check_consumer(file: Option<&PathBuf>) -> Result<Vec<String>, String> {
    // From a file, every KEY=value becomes the flag clap reads that variable for, so the check
    // runs the consumer's own parser without touching this process's environment.
    let mut argv = vec!["edgejobs-consumer".to_owned()];
    if let Some(p) = file {
        let command = Config::command();
        for (k, v) in env_lines(&read(p)?) {
            let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|e| e == k.as_str()));
            match arg.and_then(|a| a.get_long()) {
                Some(long) => argv.extend([format!("--{long}"), v]),
                None => {
                    return Ok(vec![format!("{k}: not a setting of edgejobs-consumer (see edgejobs-consumer --help)")]);
                }
            }
        }
    }
    let config = match Config::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let text = e.to_string();
            return Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("Usage") && !l.starts_with("For more"))
                .map(|l| l.trim().trim_start_matches("error: ").to_owned())
                .collect());
        }
    };
    Ok(config.settings().err().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::{metrics_token_problem, shard_count_problem};

    #[test]
    fn lowering_the_shard_count_is_refused() {
        assert_eq!(shard_count_problem(16, None), None, "nothing recorded: nothing to compare");
        assert_eq!(shard_count_problem(64, Some(16)), None, "raising is allowed");
        assert_eq!(shard_count_problem(64, Some(64)), None);
        let p = shard_count_problem(16, Some(64)).expect("lowering");
        assert!(p.contains("SHARD_COUNT=16") && p.contains("64") && p.contains("lowering is refused"), "{p}");
    }

    #[test]
    fn production_needs_a_metrics_token() {
        assert!(metrics_token_problem(None).is_some_and(|p| p.contains("required in production")));
        assert!(metrics_token_problem(Some("  ")).is_some());
        assert!(metrics_token_problem(Some("short")).is_some_and(|p| p.contains("16")));
        assert!(metrics_token_problem(Some("has a space in it!!")).is_some());
        assert_eq!(metrics_token_problem(Some("mt_0123456789abcdef")), None);
    }
}
