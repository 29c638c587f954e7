//! The edge configuration, in two stages: the Worker reads raw strings from `[vars]` and
//! secrets, then [`EdgeConfig::parse`] turns them into a typed config or a list of every
//! problem found. Secrets are held in [`Secret`], whose Debug output never shows them.

use std::fmt;

/// A secret string. Debug and Display print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Names of the settings, in one place.
pub mod names {
    pub const SHARD_COUNT: &str = "SHARD_COUNT";
    pub const IDEMPOTENCY_WINDOW: &str = "IDEMPOTENCY_WINDOW";
    pub const API_KEYS: &str = "EDGEJOBS_API_KEYS";
    pub const ADMIN_KEYS: &str = "EDGEJOBS_ADMIN_KEYS";
    pub const CONSUMER_TOKEN: &str = "EDGEJOBS_CONSUMER_TOKEN";
    pub const WEBHOOK_SECRET: &str = "WEBHOOK_SIGNING_SECRET";
}

/// The typed edge configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Number of `JobShard` objects. Default 16; 1 to 256. Never lower it on a live
    /// deployment: ids name their shard.
    pub shard_count: u16,
    /// How long an idempotency key maps to its job, in ms. Default 24 h.
    pub idempotency_window_ms: u64,
    /// Keys with the `jobs` scope (comma-separated secret). Required.
    pub api_keys: Vec<Secret>,
    /// Keys with the `admin` scope, which also covers `jobs` (comma-separated secret). Required.
    pub admin_keys: Vec<Secret>,
    /// The token the native consumer uses for its reports. Required.
    pub consumer_token: Secret,
    /// The HMAC-SHA256 key for `X-Edgejobs-Signature` on webhooks. Required.
    pub webhook_secret: Secret,
}

impl EdgeConfig {
    /// Parses raw settings; `get` returns a setting's value, or `None` when unset.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<EdgeConfig, Vec<String>> {
        let mut errors = Vec::new();
        let shard_count = match get(names::SHARD_COUNT).as_deref().map(str::trim) {
            None | Some("") => 16,
            Some(s) => match s.parse::<u16>() {
                Ok(n) if (1..=crate::id::MAX_SHARDS).contains(&n) => n,
                _ => {
                    errors.push(format!("{}: must be an integer from 1 to 256", names::SHARD_COUNT));
                    16
                }
            },
        };
        let idempotency_window_ms = match get(names::IDEMPOTENCY_WINDOW) {
            None => 86_400_000,
            Some(s) => match crate::spec::parse_duration(&serde_json::Value::String(s)) {
                Some(ms) if ms >= 1000 => ms,
                _ => {
                    errors.push(format!(
                        "{}: must be a duration such as \"24h\" (at least 1s)",
                        names::IDEMPOTENCY_WINDOW
                    ));
                    86_400_000
                }
            },
        };
        let mut keys = |name: &str| -> Vec<Secret> {
            let list: Vec<Secret> = get(name)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(Secret::new)
                .collect();
            if list.is_empty() {
                errors.push(format!("{name}: required (a secret; comma-separated keys)"));
            } else if list.iter().any(|k| k.expose().len() < 16) {
                errors.push(format!("{name}: every key must be at least 16 characters"));
            }
            list
        };
        let api_keys = keys(names::API_KEYS);
        let admin_keys = keys(names::ADMIN_KEYS);
        let mut one = |name: &str| -> Secret {
            match get(name) {
                Some(s) if s.trim().len() >= 16 => Secret::new(s.trim()),
                _ => {
                    errors.push(format!("{name}: required (a secret of at least 16 characters)"));
                    Secret::new("")
                }
            }
        };
        let consumer_token = one(names::CONSUMER_TOKEN);
        let webhook_secret = one(names::WEBHOOK_SECRET);
        if errors.is_empty() {
            Ok(EdgeConfig { shard_count, idempotency_window_ms, api_keys, admin_keys, consumer_token, webhook_secret })
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<EdgeConfig, Vec<String>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EdgeConfig::parse(|k| map.get(k).cloned())
    }

    const GOOD: &[(&str, &str)] = &[
        (names::API_KEYS, "k_jobs_0123456789abcdef, k_jobs_second_key_000"),
        (names::ADMIN_KEYS, "k_admin_0123456789abcdef"),
        (names::CONSUMER_TOKEN, "c_0123456789abcdef"),
        (names::WEBHOOK_SECRET, "w_0123456789abcdef"),
    ];

    #[test]
    fn defaults_apply() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.shard_count, 16);
        assert_eq!(c.idempotency_window_ms, 86_400_000);
        assert_eq!(c.api_keys.len(), 2);
    }

    #[test]
    fn every_problem_is_reported_and_no_secret_leaks() {
        let errs = parse(&[(names::SHARD_COUNT, "0"), (names::API_KEYS, "short-secret-x")]).expect_err("invalid");
        assert_eq!(errs.len(), 5, "{errs:?}");
        assert!(errs.iter().all(|e| !e.contains("short-secret-x")));
        let c = parse(GOOD).expect("valid");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }
}
