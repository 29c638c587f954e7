//! The edge's maintenance settings (sweep, retention, backups, health thresholds): parsed with
//! the rest of the configuration by [`crate::config::EdgeConfig::parse`], every problem
//! reported, nothing silently replaced by a default. [`MAINTENANCE`] is the table the parser,
//! `wrangler.toml` and the README's configuration reference are checked against.

use serde_json::Value;

/// How a setting's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A duration such as `30s`, `5m`, `24h`, `7d`, within `[min, max]` ms.
    Duration { min_ms: u64, max_ms: u64 },
    /// A whole number within `[min, max]`.
    Count { min: u64, max: u64 },
    /// `true` or `false`.
    Flag,
    /// A cron expression of five fields.
    Cron,
}

/// One `[vars]` setting: name, default, kind, meaning.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: Kind,
    pub meaning: &'static str,
}

const MIN: u64 = 60_000;
const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

const fn d(name: &'static str, default: &'static str, min_ms: u64, max_ms: u64, meaning: &'static str) -> Setting {
    Setting { name, default, kind: Kind::Duration { min_ms, max_ms }, meaning }
}

/// Every maintenance and health setting of the edge.
pub const MAINTENANCE: &[Setting] = &[
    Setting {
        name: "BACKUP_CRON",
        default: "0 2 * * *",
        kind: Kind::Cron,
        meaning: "the cron trigger that runs the nightly backup (must be one of [triggers] crons)",
    },
    d("BACKUP_RETENTION", "7d", 1000, 3650 * DAY, "backups older than this are deleted (the newest valid one is kept)"),
    d("RETENTION_COMPLETED_AGE", "24h", 1000, 3650 * DAY, "completed and cancelled jobs older than this are deleted"),
    Setting {
        name: "RETENTION_COMPLETED_KEEP",
        default: "1000",
        kind: Kind::Count { min: 0, max: 100_000_000 },
        meaning: "newest completed or cancelled jobs kept per type whatever their age",
    },
    d("RETENTION_DEAD_AGE", "7d", 1000, 3650 * DAY, "dead jobs older than this are deleted"),
    Setting {
        name: "RETENTION_DEAD_KEEP",
        default: "5000",
        kind: Kind::Count { min: 0, max: 100_000_000 },
        meaning: "newest dead jobs kept per type whatever their age",
    },
    Setting {
        name: "RETENTION_ARCHIVE",
        default: "true",
        kind: Kind::Flag,
        meaning: "write deleted jobs to R2 (archive/, NDJSON) before deleting them",
    },
    d("SWEEP_QUEUED_AFTER", "2m", 1000, DAY, "the sweep re-sends jobs queued longer than this"),
    d("SWEEP_ACTIVE_GRACE", "30s", 1000, DAY, "the sweep fails edge attempts running this long past their timeout"),
    d("SWEEP_NATIVE_LEASE", "5m", 1000, 7 * DAY, "the sweep fails native attempts without a heartbeat this long"),
    d("HEALTH_BACKUP_MAX_AGE", "26h", 1000, 365 * DAY, "/health: a backup older than this makes it degraded"),
    d("HEALTH_QUEUED_MAX_AGE", "5m", 1000, 365 * DAY, "/health: a job queued longer than this makes it degraded"),
    d("HEALTH_SWEEP_MAX_AGE", "15m", 1000, 365 * DAY, "/health: a sweep older than this makes it degraded"),
];

/// The parsed maintenance settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Maintenance {
    pub backup_cron: String,
    pub backup_retention_ms: u64,
    pub retention_completed_age_ms: u64,
    pub retention_completed_keep: u32,
    pub retention_dead_age_ms: u64,
    pub retention_dead_keep: u32,
    pub retention_archive: bool,
    pub sweep_queued_after_ms: u64,
    pub sweep_active_grace_ms: u64,
    pub sweep_native_lease_ms: u64,
    pub health_backup_max_age_ms: u64,
    pub health_queued_max_age_ms: u64,
    pub health_sweep_max_age_ms: u64,
}

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
enum Parsed {
    Ms(u64),
    Count(u64),
    Flag(bool),
    Text(String),
}

fn parse_one(s: &Setting, raw: &str) -> Result<Parsed, String> {
    let raw = raw.trim();
    match s.kind {
        Kind::Duration { min_ms, max_ms } => match crate::spec::parse_duration(&Value::String(raw.to_owned())) {
            Some(ms) if (min_ms..=max_ms).contains(&ms) => Ok(Parsed::Ms(ms)),
            _ => Err(format!(
                "{}: must be a duration from {} to {} (like \"{}\"), got {raw:?}",
                s.name,
                human(min_ms),
                human(max_ms),
                s.default
            )),
        },
        Kind::Count { min, max } => match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Parsed::Count(n)),
            _ => Err(format!("{}: must be a whole number from {min} to {max}, got {raw:?}", s.name)),
        },
        Kind::Flag => match raw {
            "true" => Ok(Parsed::Flag(true)),
            "false" => Ok(Parsed::Flag(false)),
            _ => Err(format!("{}: must be \"true\" or \"false\", got {raw:?}", s.name)),
        },
        Kind::Cron => {
            if raw.split_whitespace().count() == 5 && raw.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                Ok(Parsed::Text(raw.to_owned()))
            } else {
                Err(format!(
                    "{}: must be a cron expression of five fields (like \"{}\"), got {raw:?}",
                    s.name, s.default
                ))
            }
        }
    }
}

fn human(ms: u64) -> String {
    match ms {
        m if m % DAY == 0 => format!("{}d", m / DAY),
        m if m % HOUR == 0 => format!("{}h", m / HOUR),
        m if m % MIN == 0 => format!("{}m", m / MIN),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}

impl Maintenance {
    /// Parses every maintenance setting (unset: its default); problems go to `errors`.
    pub fn parse(get: &impl Fn(&str) -> Option<String>, errors: &mut Vec<String>) -> Maintenance {
        let mut parsed: std::collections::BTreeMap<&str, Parsed> = std::collections::BTreeMap::new();
        for s in MAINTENANCE {
            let default = parse_one(s, s.default).expect("defaults parse");
            let v = match get(s.name).filter(|v| !v.trim().is_empty()) {
                None => default,
                Some(raw) => parse_one(s, &raw).unwrap_or_else(|e| {
                    errors.push(e);
                    default
                }),
            };
            parsed.insert(s.name, v);
        }
        let value = |name: &str| parsed.get(name).cloned().unwrap_or(Parsed::Count(0));
        let ms = |name| match value(name) {
            Parsed::Ms(ms) => ms,
            _ => 0,
        };
        let count = |name| match value(name) {
            Parsed::Count(n) => n.min(u32::MAX as u64) as u32,
            _ => 0,
        };
        Maintenance {
            backup_cron: match value("BACKUP_CRON") {
                Parsed::Text(t) => t,
                _ => String::new(),
            },
            backup_retention_ms: ms("BACKUP_RETENTION"),
            retention_completed_age_ms: ms("RETENTION_COMPLETED_AGE"),
            retention_completed_keep: count("RETENTION_COMPLETED_KEEP"),
            retention_dead_age_ms: ms("RETENTION_DEAD_AGE"),
            retention_dead_keep: count("RETENTION_DEAD_KEEP"),
            retention_archive: value("RETENTION_ARCHIVE") == Parsed::Flag(true),
            sweep_queued_after_ms: ms("SWEEP_QUEUED_AFTER"),
            sweep_active_grace_ms: ms("SWEEP_ACTIVE_GRACE"),
            sweep_native_lease_ms: ms("SWEEP_NATIVE_LEASE"),
            health_backup_max_age_ms: ms("HEALTH_BACKUP_MAX_AGE"),
            health_queued_max_age_ms: ms("HEALTH_QUEUED_MAX_AGE"),
            health_sweep_max_age_ms: ms("HEALTH_SWEEP_MAX_AGE"),
        }
    }
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance::parse(&|_| None, &mut Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Maintenance, Vec<String>) {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut errors = Vec::new();
        let m = Maintenance::parse(&|k| map.get(k).map(|v| (*v).to_owned()), &mut errors);
        (m, errors)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let m = Maintenance::default();
        assert_eq!(m.backup_cron, "0 2 * * *");
        assert_eq!((m.sweep_queued_after_ms, m.sweep_native_lease_ms), (120_000, 300_000));
        assert_eq!((m.retention_completed_keep, m.retention_dead_keep, m.retention_archive), (1000, 5000, true));
        assert_eq!(m.health_backup_max_age_ms, 26 * HOUR);
    }

    #[test]
    fn every_malformed_value_is_reported_never_replaced_silently() {
        let (m, errors) = parse(&[
            ("SWEEP_QUEUED_AFTER", "soon"),
            ("RETENTION_COMPLETED_KEEP", "-1"),
            ("RETENTION_ARCHIVE", "yes"),
            ("BACKUP_CRON", "daily"),
            ("HEALTH_SWEEP_MAX_AGE", "500ms"),
            ("SWEEP_ACTIVE_GRACE", "45s"),
        ]);
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("SWEEP_QUEUED_AFTER: must be a duration")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("\"true\" or \"false\"")), "{errors:?}");
        assert_eq!(m.sweep_active_grace_ms, 45_000, "a good value is used");
    }

    #[test]
    fn wrangler_toml_lists_every_setting_with_its_default() {
        let toml = include_str!("../../../wrangler.toml");
        for s in MAINTENANCE {
            let line = toml.lines().find(|l| l.trim_start().starts_with(&format!("{} ", s.name)));
            let line = line.unwrap_or_else(|| panic!("wrangler.toml has no {}", s.name));
            assert!(line.contains(&format!("\"{}\"", s.default)), "{} in wrangler.toml: {line}", s.name);
        }
    }
}

/// The edge's other `[vars]` (parsed by [`crate::config::EdgeConfig::parse`]): name, default,
/// meaning. With [`MAINTENANCE`] and [`EDGE_SECRETS`] they make the README's reference.
pub const EDGE_VARS: &[(&str, &str, &str)] = &[
    (
        "SHARD_COUNT",
        "16",
        "job shards (Durable Objects), 1–256; may be raised on a live deployment (see Growing `SHARD_COUNT`), never lowered",
    ),
    ("IDEMPOTENCY_WINDOW", "24h", "how long an idempotency key returns the same job"),
    ("UPSTASH_REDIS_REST_URL", "(required)", "the Upstash Redis REST URL"),
    ("UPSTASH_TIMEOUT", "2s", "timeout of each Upstash call from the edge (10ms to 60s)"),
    ("RATE_LIMIT", "600/60s", "enqueues per tenant and window (reads: ten times as many, counted apart), or off"),
    ("RATE_LIMIT_ON_ERROR", "open", "when Upstash cannot be reached: open (allow) or closed (503)"),
    ("NATIVE_LEASE", "30s", "a native attempt silent this long may be taken over (3s to 1h)"),
    ("OUTBOUND_ALLOW", "(none)", "private hosts, IPs or CIDRs (optional :port) webhooks may call"),
    (
        "TENANT_MAX_PENDING",
        "off",
        "most jobs not yet final a tenant may hold: 1000 (each), acme=50 (one), or 1000,acme=50; over it an enqueue answers 429",
    ),
    (
        "WEBHOOK_CONCURRENCY",
        "10",
        "most edge webhooks running at once per receiver origin (a concurrency key every webhook gets); off disables",
    ),
    (
        "JOB_TYPES",
        "(built-ins only)",
        "your job types as a JSON object: name → lane, url or service (edge), timeout, max_attempts, backoff, tags, rate_group, retention, schema",
    ),
    (
        "BINDING_TENANTS",
        "(none)",
        "tenants a Worker bound to edgejobs may act for without a key, named by its binding's props = { tenant = \"acme\" }; comma-separated",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "(none: no export)",
        "the OTLP/HTTP collector the edge exports its spans to (JSON encoding; `/v1/traces` is appended); see README \"Tracing\"",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "(none)",
        "the OTLP/HTTP traces URL, used as given (wins over the one above)",
    ),
    ("OTEL_SERVICE_NAME", "edgejobs-edge", "the `service.name` of the edge's spans"),
    (
        "OTEL_TRACES_SAMPLER",
        "parentbased_always_on",
        "which traces are recorded: always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
    ),
    ("OTEL_TRACES_SAMPLER_ARG", "1.0", "the ratio of the traceidratio samplers, 0 to 1"),
    ("OTEL_SDK_DISABLED", "false", "true turns trace export off whatever the endpoint"),
];

/// The edge's secrets (`wrangler secret put NAME`): name, meaning.
pub const EDGE_SECRETS: &[(&str, &str)] = &[
    (
        "EDGEJOBS_API_KEYS",
        "jobs API keys, comma-separated, each tenant=key[:100/60s] (≥ 16 characters; without tenant=, the default tenant)",
    ),
    ("EDGEJOBS_ADMIN_KEYS", "admin API keys, comma-separated (≥ 16 characters); they see every tenant"),
    ("EDGEJOBS_CONSUMER_TOKEN", "the token native consumers report with (≥ 16 characters), named `default`"),
    (
        "EDGEJOBS_CONSUMER_TOKENS",
        "named consumer tokens, name=token,... (≥ 16 characters each); remove one to revoke it alone",
    ),
    (
        "WEBHOOK_SIGNING_SECRET",
        "the secrets webhook signatures derive from (≥ 16 characters each; comma-separated, newest first while one is rotated: every delivery then carries one signature per secret)",
    ),
    ("UPSTASH_REDIS_REST_TOKEN", "the Upstash Redis REST token"),
    ("PAYLOAD_ENCRYPTION_KEYS", "keys that seal payload header values, k1:<base64 of 32 bytes>[,k0:...]"),
    (
        "METRICS_TOKEN",
        "the bearer token /metrics requires and /health's checks accept (an admin key works too); optional locally, required by scripts/deploy and check-env",
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "headers sent with each trace export, key=value,... (percent-encoded values), such as a tracing vendor's API key; optional",
    ),
];

/// The README's table of the edge's settings, made from the code.
pub fn edge_reference() -> String {
    let mut out = String::from("| Worker setting | kind | default | meaning |\n|---|---|---|---|\n");
    for (name, default, meaning) in EDGE_VARS {
        out.push_str(&format!("| `{name}` | var | {default} | {meaning} |\n"));
    }
    for s in MAINTENANCE {
        out.push_str(&format!("| `{}` | var | {} | {} |\n", s.name, s.default, s.meaning));
    }
    for (name, meaning) in EDGE_SECRETS {
        out.push_str(&format!("| `{name}` | secret | — | {meaning} |\n"));
    }
    out
}

#[cfg(test)]
mod reference_tests {
    use super::*;
    use crate::config::names;

    #[test]
    fn every_parsed_name_is_in_the_reference() {
        let listed: Vec<&str> = EDGE_VARS
            .iter()
            .map(|v| v.0)
            .chain(EDGE_SECRETS.iter().map(|s| s.0))
            .chain(MAINTENANCE.iter().map(|s| s.name))
            .collect();
        for n in [
            names::SHARD_COUNT,
            names::IDEMPOTENCY_WINDOW,
            names::API_KEYS,
            names::ADMIN_KEYS,
            names::CONSUMER_TOKEN,
            names::CONSUMER_TOKENS,
            names::WEBHOOK_SECRET,
            names::RATE_LIMIT,
            names::RATE_LIMIT_ON_ERROR,
            names::UPSTASH_URL,
            names::UPSTASH_TOKEN,
            names::UPSTASH_TIMEOUT,
            names::NATIVE_LEASE,
            names::OUTBOUND_ALLOW,
            names::PAYLOAD_KEYS,
            names::JOB_TYPES,
            names::TENANT_MAX_PENDING,
            names::WEBHOOK_CONCURRENCY,
            crate::tracing_config::names::ENDPOINT,
            crate::tracing_config::names::TRACES_ENDPOINT,
            crate::tracing_config::names::HEADERS,
            crate::tracing_config::names::SERVICE_NAME,
            crate::tracing_config::names::SDK_DISABLED,
            crate::sampler::ENV_SAMPLER,
            crate::sampler::ENV_SAMPLER_ARG,
        ] {
            assert!(listed.contains(&n), "{n} is parsed but not in the reference");
        }
    }

    #[test]
    fn the_readme_reference_is_the_one_the_code_makes() {
        let readme = include_str!("../../../README.md");
        let table = edge_reference();
        assert!(readme.contains(&table), "README.md's edge settings table differs; it should be:\n{table}");
    }
}
