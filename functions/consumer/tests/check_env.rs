//! `edgejobs-check-env` against good and bad production configurations: a good one passes,
//! a bad one lists every problem (edge and consumer), exits 1, and never prints a value.

use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET_MARK: &str = "s3cr3tvalue";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgejobs-check-env-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn wrangler_toml(dir: &Path, extra_vars: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wrangler.toml");
    let mut text = std::fs::read_to_string(root)
        .expect("the project's wrangler.toml")
        .replace("https://replace-me.upstash.io", "https://eu1-ok.upstash.io");
    for (k, v) in extra_vars {
        // Replaces the setting's line (wrangler.toml lists every one).
        text = text
            .lines()
            .map(|l| if l.starts_with(&format!("{k} ")) { format!("{k} = \"{v}\"") } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
    }
    let p = dir.join("wrangler.toml");
    std::fs::write(&p, text).expect("write wrangler.toml");
    p
}

fn good_secrets() -> String {
    format!(
        "EDGEJOBS_API_KEYS=\"ej_jobs_{SECRET_MARK}0001\"\nEDGEJOBS_ADMIN_KEYS=\"ej_admin_{SECRET_MARK}001\"\n\
         EDGEJOBS_CONSUMER_TOKEN=\"ej_consumer_{SECRET_MARK}1\"\nWEBHOOK_SIGNING_SECRET=\"whsec_{SECRET_MARK}0001\"\n\
         UPSTASH_REDIS_REST_TOKEN=\"upstash_tok_{SECRET_MARK}\"\n\
         PAYLOAD_ENCRYPTION_KEYS=\"k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
         METRICS_TOKEN=\"mt_{SECRET_MARK}0001\"\n"
    )
}

fn good_consumer_env() -> String {
    format!(
        "EDGEJOBS_EDGE_URL=https://edgejobs.example.workers.dev\nEDGEJOBS_CONSUMER_TOKEN=ej_consumer_{SECRET_MARK}1\n\
         UPSTASH_REDIS_REST_URL=https://eu1-ok.upstash.io\nUPSTASH_REDIS_REST_TOKEN=upstash_tok_{SECRET_MARK}\n\
         # a comment\nEDGEJOBS_CONCURRENCY=50\n"
    )
}

fn check(dir: &Path, wrangler: &Path, secrets: &str, consumer: &str) -> (i32, String) {
    let (s, c) = (dir.join("secrets"), dir.join("consumer.env"));
    std::fs::write(&s, secrets).expect("secrets");
    std::fs::write(&c, consumer).expect("consumer env");
    let out = Command::new(env!("CARGO_BIN_EXE_edgejobs-check-env"))
        .arg("--wrangler")
        .arg(wrangler)
        .arg("--secrets")
        .arg(&s)
        .arg("--consumer-env")
        .arg(&c)
        .output()
        .expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_good_configuration_passes() {
    let dir = scratch("good");
    let w = wrangler_toml(&dir, &[]);
    let (code, out) = check(&dir, &w, &good_secrets(), &good_consumer_env());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn named_consumer_tokens_pass_and_a_consumer_holding_none_of_them_is_a_problem() {
    let dir = scratch("named");
    let w = wrangler_toml(&dir, &[]);
    let named = good_secrets().replace(
        &format!("EDGEJOBS_CONSUMER_TOKEN=\"ej_consumer_{SECRET_MARK}1\""),
        &format!("EDGEJOBS_CONSUMER_TOKENS=\"host-a=ej_consumer_{SECRET_MARK}0,host-b=ej_consumer_{SECRET_MARK}1\""),
    );
    let (code, out) = check(&dir, &w, &named, &good_consumer_env());
    assert_eq!(code, 0, "host-b's token is the consumer's: {out}");
    let revoked = named.replace(&format!(",host-b=ej_consumer_{SECRET_MARK}1"), "");
    let (code, out) = check(&dir, &w, &revoked, &good_consumer_env());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("none of the edge's consumer tokens") && !out.contains(SECRET_MARK), "{out}");
}

#[test]
fn a_bad_configuration_lists_every_problem_without_values() {
    let dir = scratch("bad");
    let w = wrangler_toml(&dir, &[("SWEEP_QUEUED_AFTER", "soon"), ("RETENTION_ARCHIVE", "yes")]);
    let secrets = good_secrets().replace("EDGEJOBS_ADMIN_KEYS", "# EDGEJOBS_ADMIN_KEYS");
    let consumer = good_consumer_env().replace("EDGEJOBS_CONCURRENCY=50", "EDGEJOBS_CONCURRENCY=0");
    let (code, out) = check(&dir, &w, &secrets, &consumer);
    assert_eq!(code, 1, "{out}");
    for want in [
        "edge: SWEEP_QUEUED_AFTER",
        "edge: RETENTION_ARCHIVE",
        "edge: EDGEJOBS_ADMIN_KEYS",
        "consumer: EDGEJOBS_CONCURRENCY",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    assert!(!out.contains(SECRET_MARK), "a value leaked:\n{out}");
    // The placeholder URL of the repository's wrangler.toml is a problem, not a URL.
    let plain = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wrangler.toml");
    let (code, out) = check(&dir, &plain, &good_secrets(), &good_consumer_env());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UPSTASH_REDIS_REST_URL: still the placeholder"), "{out}");
    // The backup's cron must be one of the triggers.
    let w3 = wrangler_toml(&dir, &[("BACKUP_CRON", "0 3 * * *")]);
    let (code, out) = check(&dir, &w3, &good_secrets(), &good_consumer_env());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BACKUP_CRON: \"0 3 * * *\" is not one of the [triggers] crons"), "{out}");
    // Production needs METRICS_TOKEN: without it /metrics would be open to anyone.
    let no_token = good_secrets().replace("METRICS_TOKEN", "# METRICS_TOKEN");
    let (code, out) = check(&dir, &w, &no_token, &good_consumer_env());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("edge: METRICS_TOKEN: required in production"), "{out}");
    // An unknown consumer setting is named.
    let (code, out) = check(&dir, &w, &good_secrets(), &format!("{}EDGEJOBS_CONCURENCY=5\n", good_consumer_env()));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("EDGEJOBS_CONCURENCY: not a setting"), "{out}");
}

#[test]
fn a_shard_count_below_the_deployed_one_is_refused() {
    let dir = scratch("lowered");
    let w = wrangler_toml(&dir, &[("SHARD_COUNT", "16")]);
    let run = |deployed: &str| {
        let s = dir.join("secrets");
        std::fs::write(&s, good_secrets()).expect("secrets");
        let out = Command::new(env!("CARGO_BIN_EXE_edgejobs-check-env"))
            .args(["--only", "edge", "--wrangler"])
            .arg(&w)
            .arg("--secrets")
            .arg(&s)
            .args(["--deployed-shards", deployed])
            .output()
            .expect("runs");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = run("16");
    assert_eq!(code, 0, "the same count passes: {out}");
    let (code, out) = run("8");
    assert_eq!(code, 0, "a raise passes: {out}");
    let (code, out) = run("64");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SHARD_COUNT=16 is lower than 64") && out.contains("lowering is refused"), "{out}");
}
