//! The edge configuration, in two stages: the Worker reads raw strings from `[vars]` and
//! secrets, then [`EdgeConfig::parse`] turns them into a typed config or a list of every
//! problem found. Secrets are held in [`Secret`], whose Debug output never shows them.

use crate::ratelimit::Limit;
pub use crate::secret::Secret;

/// Names of the settings, in one place.
pub mod names {
    pub const SHARD_COUNT: &str = "SHARD_COUNT";
    pub const IDEMPOTENCY_WINDOW: &str = "IDEMPOTENCY_WINDOW";
    pub const API_KEYS: &str = "EDGEJOBS_API_KEYS";
    pub const ADMIN_KEYS: &str = "EDGEJOBS_ADMIN_KEYS";
    pub const CONSUMER_TOKEN: &str = "EDGEJOBS_CONSUMER_TOKEN";
    pub const CONSUMER_TOKENS: &str = "EDGEJOBS_CONSUMER_TOKENS";
    pub const WEBHOOK_SECRET: &str = "WEBHOOK_SIGNING_SECRET";
    pub const RATE_LIMIT: &str = "RATE_LIMIT";
    pub const RATE_LIMIT_ON_ERROR: &str = "RATE_LIMIT_ON_ERROR";
    pub const UPSTASH_URL: &str = "UPSTASH_REDIS_REST_URL";
    pub const UPSTASH_TOKEN: &str = "UPSTASH_REDIS_REST_TOKEN";
    pub const UPSTASH_TIMEOUT: &str = "UPSTASH_TIMEOUT";
    pub const NATIVE_LEASE: &str = "NATIVE_LEASE";
    pub const OUTBOUND_ALLOW: &str = "OUTBOUND_ALLOW";
    pub const PAYLOAD_KEYS: &str = "PAYLOAD_ENCRYPTION_KEYS";
    pub const JOB_TYPES: &str = "JOB_TYPES";
    pub const TENANT_MAX_PENDING: &str = "TENANT_MAX_PENDING";
    pub const WEBHOOK_CONCURRENCY: &str = "WEBHOOK_CONCURRENCY";
    pub const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";
    pub const BINDING_TENANTS: &str = "BINDING_TENANTS";
}

/// `WEBHOOK_CONCURRENCY` unset: at most this many edge webhooks run at once per receiver
/// origin (a slow receiver is protected without anyone asking).
pub const DEFAULT_WEBHOOK_CONCURRENCY: u32 = 10;

/// An API key, optionally with its own rate limit (`key:100/60s` in the secret) and, for a
/// `jobs` key, its tenant (`acme=key:100/60s`; without `tenant=`, [`Tenant::DEFAULT`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub secret: Secret,
    pub limit: Option<Limit>,
    /// `None` for admin keys, which see every tenant.
    pub tenant: Option<crate::tenant::Tenant>,
}

/// Splits `tenant=rest` off a key entry. A key may itself hold `=` (base64 padding ends
/// one): the part before the first `=` names a tenant only when it is a valid tenant name
/// and something other than padding follows.
fn split_tenant(entry: &str) -> Option<(crate::tenant::Tenant, &str)> {
    let (name, rest) = entry.split_once('=')?;
    if rest.trim_start_matches('=').is_empty() {
        return None;
    }
    crate::tenant::Tenant::parse(name.trim()).ok().map(|t| (t, rest.trim()))
}

/// A native consumer's token and the name reports made with it are logged under.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerToken {
    pub name: String,
    pub secret: Secret,
}

/// The name `EDGEJOBS_CONSUMER_TOKEN`'s token goes by.
pub const DEFAULT_CONSUMER: &str = "default";

/// Whether `name` can name a consumer token: 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`.
fn consumer_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

/// The consumer tokens of `EDGEJOBS_CONSUMER_TOKEN` (named `default`) and
/// `EDGEJOBS_CONSUMER_TOKENS` (`name=token,...`), or every problem found (never a token).
fn consumer_tokens(single: Option<String>, named: Option<String>, errors: &mut Vec<String>) -> Vec<ConsumerToken> {
    let mut out = Vec::new();
    if let Some(t) = single.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        out.push(ConsumerToken { name: DEFAULT_CONSUMER.to_owned(), secret: Secret::new(t) });
    }
    for entry in named.unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((name, token)) if consumer_name_ok(name.trim()) => {
                out.push(ConsumerToken { name: name.trim().to_owned(), secret: Secret::new(token.trim()) })
            }
            _ => errors.push(format!(
                "{}: each entry must be name=token, the name 1 to 64 of a-z, 0-9, -, _ or .",
                names::CONSUMER_TOKENS
            )),
        }
    }
    if out.is_empty() {
        errors.push(format!(
            "{} or {}: required (a secret of at least 16 characters; name=token,... for several)",
            names::CONSUMER_TOKEN,
            names::CONSUMER_TOKENS
        ));
    }
    if out.iter().any(|t| t.secret.expose().len() < 16) {
        errors.push(format!("{}: every consumer token must be at least 16 characters", names::CONSUMER_TOKENS));
    }
    for (i, t) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.name == t.name) {
            errors.push(format!("{}: the name {:?} is given twice", names::CONSUMER_TOKENS, t.name));
        }
        if out[..i].iter().any(|o| o.secret.expose() == t.secret.expose()) {
            errors.push(format!("{}: {:?} repeats another consumer's token", names::CONSUMER_TOKENS, t.name));
        }
    }
    out
}

/// The typed edge configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Number of `JobShard` objects. Default 16; 1 to 256. It may be raised on a live
    /// deployment, never lowered (see [`crate::topology`]). Once the router has read the
    /// recorded topology, this is its newest count.
    pub shard_count: u16,
    /// The counts this deployment has had (`Topology::single(shard_count)` until the
    /// router reads the recorded one from shard 0).
    pub topology: crate::topology::Topology,
    /// How long an idempotency key maps to its job, in ms. Default 24 h.
    pub idempotency_window_ms: u64,
    /// Keys with the `jobs` scope (comma-separated secret; `key:100/60s` gives one key its
    /// own rate limit). Required.
    pub api_keys: Vec<ApiKey>,
    /// Keys with the `admin` scope, which also covers `jobs` (comma-separated secret). Required.
    pub admin_keys: Vec<ApiKey>,
    /// The tokens native consumers report with, each with a name (`EDGEJOBS_CONSUMER_TOKENS`,
    /// a secret: `host-a=token,host-b=token`; `EDGEJOBS_CONSUMER_TOKEN`, one token named
    /// `default`). At least one is required; removing one revokes it alone.
    pub consumer_tokens: Vec<ConsumerToken>,
    /// The secrets webhook signatures derive from (`WEBHOOK_SIGNING_SECRET`, comma-separated,
    /// newest first; never empty). Each delivery carries one `v1,` signature per secret, so a
    /// secret is rotated with an overlap: put the new one first, move receivers to it, drop
    /// the old one. Required.
    pub webhook_secret: Vec<Secret>,
    /// Enqueue rate limit per API key, `"<requests>/<window>"`. Default `600/60s`; `off`
    /// disables it. A key's own limit (`key:100/60s`) wins.
    pub rate_limit: Option<Limit>,
    /// When Upstash cannot be reached, admit requests (`open`, the default) or refuse them
    /// with 503 (`closed`).
    pub rate_limit_fail_open: bool,
    /// The Upstash REST endpoint. Required.
    pub upstash_url: String,
    /// The Upstash REST token (a secret). Required.
    pub upstash_token: Secret,
    /// Timeout of each Upstash call from the edge, in ms. Default 2 s.
    pub upstash_timeout_ms: u64,
    /// Private addresses and names webhooks may reach (`OUTBOUND_ALLOW`: hosts, IPs, CIDRs,
    /// each with an optional `:port`). Default empty: only public addresses.
    pub outbound_allow: crate::outbound::Allow,
    /// The keys that seal `payload.headers` values (`PAYLOAD_ENCRYPTION_KEYS`, a secret:
    /// `id:base64-32-bytes,...`; the first seals, all open). Required.
    pub payload_keys: crate::seal::Keys,
    /// How long a native attempt holds its lease without a heartbeat before another consumer
    /// may take it over (`NATIVE_LEASE`, 3 s to 1 h, default 30 s). The edge decides takeovers
    /// with it and tells consumers, so every consumer uses the same lease.
    pub native_lease_ms: u64,
    /// Sweep, retention, backup and health settings ([`crate::settings::MAINTENANCE`]).
    pub maintenance: crate::settings::Maintenance,
    /// The job types (`JOB_TYPES`, a JSON object of declarations; default: the built-ins
    /// only). See [`crate::types`].
    pub types: crate::types::Types,
    /// Most jobs not yet final (queued, scheduled, active) one tenant may hold
    /// (`TENANT_MAX_PENDING`: `1000` for every tenant, `acme=50` for one, or both,
    /// `1000,acme=50`; unset: no cap). An enqueue over it answers 429.
    pub tenant_max_pending: PendingCaps,
    /// Most edge webhooks running at once per receiver origin (`WEBHOOK_CONCURRENCY`, a
    /// number from 1 to 10000 or `off`; default [`DEFAULT_WEBHOOK_CONCURRENCY`]): the origin
    /// is a concurrency key of every edge-lane webhook that names fewer than two.
    pub webhook_concurrency: Option<u32>,
    /// The browser origins that may read jobs and their streams across origins (#30:
    /// `ALLOWED_ORIGINS`, comma-separated `https://app.example.com` origins, or `*`; default
    /// none: no CORS header is sent). Only the read routes a read token opens answer CORS.
    pub allowed_origins: Origins,
    /// The tenants a Cloudflare service binding may act for (#31: `BINDING_TENANTS`,
    /// comma-separated tenant names; default none). A Worker bound to edgejobs with
    /// `props = { tenant = "acme" }` on its `[[services]]` binding calls the `jobs` routes
    /// as tenant `acme` without a key, when `acme` is listed here (see [`crate::auth`]).
    pub binding_tenants: Vec<crate::tenant::Tenant>,
    /// Trace export and sampling (#32: the standard `OTEL_*` variables; default: no export,
    /// `parentbased_always_on`). See [`crate::tracing_config`].
    pub tracing: crate::tracing_config::Tracing,
}

/// `ALLOWED_ORIGINS`: which `Origin`s get CORS headers on the read routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origins {
    /// No cross-origin reads (the default).
    #[default]
    None,
    /// Any origin (`*`): safe because the routes answer only to a key or a read token.
    Any,
    /// These origins exactly (scheme, host and port; no path).
    List(Vec<String>),
}

impl Origins {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    pub fn allow(&self, origin: Option<&str>) -> Option<String> {
        let origin = origin?;
        match self {
            Origins::None => None,
            Origins::Any => Some(origin.to_owned()),
            Origins::List(l) => l.iter().find(|o| o.as_str() == origin).cloned(),
        }
    }

    fn parse(s: &str) -> Result<Origins, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Origins::None);
        }
        if s == "*" {
            return Ok(Origins::Any);
        }
        let mut out = Vec::new();
        for o in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let u =
                url::Url::parse(o).map_err(|_| format!("{o:?} is not an origin such as https://app.example.com"))?;
            let shown = u.origin().ascii_serialization();
            if !matches!(u.scheme(), "http" | "https") || shown != o.trim_end_matches('/') {
                return Err(format!("{o:?} is not an origin such as https://app.example.com (no path)"));
            }
            out.push(shown);
        }
        Ok(Origins::List(out))
    }
}

/// `TENANT_MAX_PENDING`: a cap for every tenant and caps for some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingCaps {
    pub every: Option<u64>,
    pub per: std::collections::BTreeMap<crate::tenant::Tenant, u64>,
}

impl PendingCaps {
    /// The cap of `tenant`, if any: its own, else the one for every tenant.
    pub fn of(&self, tenant: &crate::tenant::Tenant) -> Option<u64> {
        self.per.get(tenant).copied().or(self.every)
    }

    fn parse(s: &str) -> Result<PendingCaps, String> {
        let mut caps = PendingCaps::default();
        let count = |n: &str| n.trim().parse::<u64>().ok().filter(|n| *n >= 1);
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty() && *e != "off") {
            match entry.split_once('=') {
                Some((t, n)) => {
                    let t = crate::tenant::Tenant::parse(t.trim())?;
                    let n = count(n).ok_or("a cap must be a positive integer")?;
                    if caps.per.insert(t, n).is_some() {
                        return Err("a tenant is named twice".into());
                    }
                }
                None if caps.every.is_none() => {
                    caps.every = Some(count(entry).ok_or("a cap must be a positive integer")?)
                }
                None => return Err("one cap for every tenant at most".into()),
            }
        }
        Ok(caps)
    }
}

impl EdgeConfig {
    /// The tenants of the configured `jobs` keys and service bindings (`BINDING_TENANTS`),
    /// and `default` (whose jobs may predate tenants): every tenant a job may be created
    /// for, so metric labels stay bounded.
    pub fn tenants(&self) -> Vec<crate::tenant::Tenant> {
        let mut all: Vec<crate::tenant::Tenant> = self.api_keys.iter().filter_map(|k| k.tenant.clone()).collect();
        all.extend(self.binding_tenants.iter().cloned());
        all.push(crate::tenant::Tenant::default());
        all.sort();
        all.dedup();
        all
    }

    /// Refuses a tenant no key is configured for (admins create jobs and schedules only for
    /// configured tenants).
    pub fn check_tenant(&self, t: &crate::tenant::Tenant) -> Result<(), crate::error::ApiError> {
        if self.tenants().contains(t) {
            Ok(())
        } else {
            Err(crate::error::ApiError::field("tenant", format!("no key of tenant {t:?} is configured")))
        }
    }
}

/// Most secrets `WEBHOOK_SIGNING_SECRET` may hold at once (each adds a signature to every
/// delivery).
pub const MAX_WEBHOOK_SECRETS: usize = 4;

/// The native lease when `NATIVE_LEASE` is unset.
pub const DEFAULT_NATIVE_LEASE_MS: u64 = 30_000;

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
            Some(s) => match crate::fields::parse_duration(&serde_json::Value::String(s)) {
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
        let mut keys = |name: &str, tenants: bool| -> Vec<ApiKey> {
            let mut list = Vec::new();
            for entry in get(name).unwrap_or_default().split(',').map(str::trim).filter(|k| !k.is_empty()) {
                let (tenant, entry) = match split_tenant(entry) {
                    Some((t, rest)) if tenants => (Some(t), rest),
                    Some((_, rest)) => {
                        errors.push(format!("{name}: admin keys see every tenant; remove tenant= from the entry"));
                        (None, rest)
                    }
                    None => (tenants.then(crate::tenant::Tenant::default), entry),
                };
                let (key, limit) = match entry.split_once(':') {
                    Some((k, l)) => match Limit::parse(l) {
                        Some(limit) => (k, Some(limit)),
                        None => {
                            errors.push(format!("{name}: a key's limit must look like key:100/60s"));
                            (k, None)
                        }
                    },
                    None => (entry, None),
                };
                list.push(ApiKey { secret: Secret::new(key), limit, tenant });
            }
            if list.is_empty() {
                errors.push(format!("{name}: required (a secret; comma-separated keys)"));
            } else if list.iter().any(|k| k.secret.expose().len() < 16) {
                errors.push(format!("{name}: every key must be at least 16 characters"));
            }
            list
        };
        let api_keys = keys(names::API_KEYS, true);
        let admin_keys = keys(names::ADMIN_KEYS, false);
        let consumer_tokens = consumer_tokens(get(names::CONSUMER_TOKEN), get(names::CONSUMER_TOKENS), &mut errors);
        let mut one = |name: &str| -> Secret {
            match get(name) {
                Some(s) if s.trim().len() >= 16 => Secret::new(s.trim()),
                _ => {
                    errors.push(format!("{name}: required (a secret of at least 16 characters)"));
                    Secret::new("")
                }
            }
        };
        let upstash_token = one(names::UPSTASH_TOKEN);
        let webhook_secret: Vec<Secret> = get(names::WEBHOOK_SECRET)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        if webhook_secret.is_empty() || webhook_secret.iter().any(|s| s.expose().len() < 16) {
            errors.push(format!(
                "{}: required (secrets of at least 16 characters, comma-separated, newest first)",
                names::WEBHOOK_SECRET
            ));
        } else if webhook_secret.len() > MAX_WEBHOOK_SECRETS {
            errors.push(format!(
                "{}: at most {MAX_WEBHOOK_SECRETS} secrets (the newest and those still being rotated out)",
                names::WEBHOOK_SECRET
            ));
        }
        let rate_limit = match get(names::RATE_LIMIT).as_deref().map(str::trim) {
            None | Some("") => Some(Limit { requests: 600, window_ms: 60_000 }),
            Some("off") => None,
            Some(s) => match Limit::parse(s) {
                Some(l) => Some(l),
                None => {
                    errors.push(format!("{}: must look like \"600/60s\" or be \"off\"", names::RATE_LIMIT));
                    None
                }
            },
        };
        let rate_limit_fail_open = match get(names::RATE_LIMIT_ON_ERROR).as_deref().map(str::trim) {
            None | Some("") | Some("open") => true,
            Some("closed") => false,
            Some(_) => {
                errors.push(format!("{}: must be \"open\" or \"closed\"", names::RATE_LIMIT_ON_ERROR));
                true
            }
        };
        let upstash_url = match get(names::UPSTASH_URL) {
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => u.trim_end_matches('/').to_owned(),
            _ => {
                errors.push(format!("{}: required (an http(s) URL)", names::UPSTASH_URL));
                String::new()
            }
        };
        let upstash_timeout_ms = match get(names::UPSTASH_TIMEOUT) {
            None => 2000,
            Some(s) => match crate::fields::parse_duration(&serde_json::Value::String(s)) {
                Some(ms) if (10..=60_000).contains(&ms) => ms,
                _ => {
                    errors.push(format!("{}: must be a duration from 10ms to 60s", names::UPSTASH_TIMEOUT));
                    2000
                }
            },
        };
        let native_lease_ms = match get(names::NATIVE_LEASE) {
            None => DEFAULT_NATIVE_LEASE_MS,
            Some(s) => match crate::fields::parse_duration(&serde_json::Value::String(s)) {
                Some(ms) if (3_000..=3_600_000).contains(&ms) => ms,
                _ => {
                    errors.push(format!("{}: must be a duration from 3s to 1h", names::NATIVE_LEASE));
                    DEFAULT_NATIVE_LEASE_MS
                }
            },
        };
        let outbound_allow = match crate::outbound::Allow::parse(&get(names::OUTBOUND_ALLOW).unwrap_or_default()) {
            Ok(a) => a,
            Err(e) => {
                errors.push(format!("{}: {e}", names::OUTBOUND_ALLOW));
                crate::outbound::Allow::default()
            }
        };
        let payload_keys = match crate::seal::Keys::parse(&get(names::PAYLOAD_KEYS).unwrap_or_default()) {
            Ok(k) => Some(k),
            Err(e) => {
                errors.push(format!("{}: {e}", names::PAYLOAD_KEYS));
                None
            }
        };
        let maintenance = crate::settings::Maintenance::parse(&get, &mut errors);
        let types = match crate::types::Types::parse(&get(names::JOB_TYPES).unwrap_or_default(), &outbound_allow) {
            Ok(t) => t,
            Err(mut problems) => {
                errors.append(&mut problems);
                crate::types::Types::builtins()
            }
        };
        let tenant_max_pending = match PendingCaps::parse(&get(names::TENANT_MAX_PENDING).unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!(
                    "{}: {e} (e.g. \"1000\", \"acme=50\" or \"1000,acme=50\")",
                    names::TENANT_MAX_PENDING
                ));
                PendingCaps::default()
            }
        };
        let webhook_concurrency = match get(names::WEBHOOK_CONCURRENCY).as_deref().map(str::trim) {
            None | Some("") => Some(DEFAULT_WEBHOOK_CONCURRENCY),
            Some("off") => None,
            Some(n) => match n.parse::<u32>() {
                Ok(n) if (1..=crate::flow::MAX_LIMIT).contains(&n) => Some(n),
                _ => {
                    errors.push(format!(
                        "{}: must be a number from 1 to {} or \"off\"",
                        names::WEBHOOK_CONCURRENCY,
                        crate::flow::MAX_LIMIT
                    ));
                    None
                }
            },
        };
        let allowed_origins = match Origins::parse(&get(names::ALLOWED_ORIGINS).unwrap_or_default()) {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{}: {e}", names::ALLOWED_ORIGINS));
                Origins::None
            }
        };
        let mut binding_tenants = Vec::new();
        for name in get(names::BINDING_TENANTS).unwrap_or_default().split(',').map(str::trim).filter(|n| !n.is_empty())
        {
            match crate::tenant::Tenant::parse(name) {
                Ok(t) if !binding_tenants.contains(&t) => binding_tenants.push(t),
                Ok(_) => errors.push(format!("{}: {name:?} is listed twice", names::BINDING_TENANTS)),
                Err(e) => errors.push(format!("{}: {e}", names::BINDING_TENANTS)),
            }
        }
        let tracing = crate::tracing_config::Tracing::parse(&get, &mut errors);
        if let (true, Some(payload_keys)) = (errors.is_empty(), payload_keys) {
            Ok(EdgeConfig {
                shard_count,
                topology: crate::topology::Topology::single(shard_count),
                idempotency_window_ms,
                api_keys,
                admin_keys,
                consumer_tokens,
                webhook_secret,
                rate_limit,
                rate_limit_fail_open,
                upstash_url,
                upstash_token,
                upstash_timeout_ms,
                outbound_allow,
                payload_keys,
                native_lease_ms,
                maintenance,
                types,
                tenant_max_pending,
                webhook_concurrency,
                allowed_origins,
                binding_tenants,
                tracing,
            })
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
        (names::UPSTASH_URL, "http://127.0.0.1:1"),
        (names::UPSTASH_TOKEN, "u_0123456789abcdef"),
        (names::PAYLOAD_KEYS, "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    ];

    #[test]
    fn defaults_apply() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.shard_count, 16);
        assert_eq!(c.idempotency_window_ms, 86_400_000);
        assert_eq!(c.api_keys.len(), 2);
        assert_eq!(c.rate_limit, Some(Limit { requests: 600, window_ms: 60_000 }));
        assert!(c.rate_limit_fail_open);
        assert_eq!(c.upstash_timeout_ms, 2000);
    }

    #[test]
    fn binding_tenants_are_listed_names() {
        assert!(parse(GOOD).expect("valid").binding_tenants.is_empty(), "none by default");
        let mut pairs = GOOD.to_vec();
        pairs.push((names::BINDING_TENANTS, " acme, globex ,"));
        let names: Vec<String> =
            parse(&pairs).expect("valid").binding_tenants.iter().map(|t| t.as_str().to_owned()).collect();
        assert_eq!(names, ["acme", "globex"]);
        let known = parse(&pairs).expect("valid").tenants();
        assert!(known.iter().any(|t| t.as_str() == "globex"), "a binding's tenant may own jobs: {known:?}");
        for bad in ["acme,acme", "not a tenant!"] {
            pairs.pop();
            pairs.push((names::BINDING_TENANTS, bad));
            let errors = parse(&pairs).expect_err(bad);
            assert!(errors.iter().any(|e| e.starts_with("BINDING_TENANTS:")), "{bad}: {errors:?}");
        }
    }

    #[test]
    fn per_key_limits_and_rate_limit_settings() {
        let mut pairs = GOOD.to_vec();
        pairs[0] = (names::API_KEYS, "k_jobs_0123456789abcdef:5/1m,k_jobs_second_key_000");
        pairs.push((names::RATE_LIMIT, "off"));
        pairs.push((names::RATE_LIMIT_ON_ERROR, "closed"));
        let c = parse(&pairs).expect("valid");
        assert_eq!(c.api_keys[0].limit, Some(Limit { requests: 5, window_ms: 60_000 }));
        assert_eq!(c.api_keys[0].secret.expose(), "k_jobs_0123456789abcdef");
        assert_eq!((c.rate_limit, c.rate_limit_fail_open), (None, false));
        pairs.push((names::RATE_LIMIT, "lots"));
        let mut bad = GOOD.to_vec();
        bad.push((names::RATE_LIMIT, "lots"));
        bad.push((names::RATE_LIMIT_ON_ERROR, "maybe"));
        bad.push((names::UPSTASH_TIMEOUT, "0ms"));
        assert_eq!(parse(&bad).expect_err("invalid").len(), 3);
    }

    #[test]
    fn keys_name_their_tenant_and_entries_without_one_are_the_defaults() {
        let mut pairs = GOOD.to_vec();
        pairs[0] = (
            names::API_KEYS,
            "acme=k_jobs_0123456789abcdef:5/1m, acme=k_jobs_rotated_00000, k_jobs_legacy_0000000=, globex=k_jobs_globex_000000",
        );
        let c = parse(&pairs).expect("valid");
        let tenants: Vec<Option<&str>> = c.api_keys.iter().map(|k| k.tenant.as_ref().map(|t| t.as_str())).collect();
        assert_eq!(tenants, [Some("acme"), Some("acme"), Some("default"), Some("globex")]);
        assert_eq!(c.api_keys[0].limit, Some(Limit { requests: 5, window_ms: 60_000 }));
        assert_eq!(c.api_keys[0].secret.expose(), "k_jobs_0123456789abcdef");
        // A key ending in base64 padding is a key, not a tenant.
        assert_eq!(c.api_keys[2].secret.expose(), "k_jobs_legacy_0000000=");
        let names: Vec<String> = c.tenants().iter().map(|t| t.to_string()).collect();
        assert_eq!(names, ["acme", "default", "globex"]);
        assert!(c.check_tenant(&crate::tenant::Tenant::parse("initech").expect("valid")).is_err());
        assert_eq!(c.tenant_max_pending, PendingCaps::default());
        let mut bad = GOOD.to_vec();
        bad[1] = (names::ADMIN_KEYS, "acme=k_admin_0123456789abcdef");
        bad.push((names::TENANT_MAX_PENDING, "0"));
        assert_eq!(parse(&bad).expect_err("invalid").len(), 2);
        for wrong in ["1,2", "acme=1,acme=2", "Acme=3", "acme=x"] {
            let mut p = GOOD.to_vec();
            p.push((names::TENANT_MAX_PENDING, wrong));
            assert!(parse(&p).is_err(), "{wrong}");
        }
        let mut capped = GOOD.to_vec();
        capped.push((names::TENANT_MAX_PENDING, "1000, globex=5"));
        let caps = parse(&capped).expect("valid").tenant_max_pending;
        let t = |n: &str| crate::tenant::Tenant::parse(n).expect("valid");
        assert_eq!((caps.of(&t("globex")), caps.of(&t("acme"))), (Some(5), Some(1000)));
    }

    #[test]
    fn every_problem_is_reported_and_no_secret_leaks() {
        let errs = parse(&[(names::SHARD_COUNT, "0"), (names::API_KEYS, "short-secret-x")]).expect_err("invalid");
        assert_eq!(errs.len(), 8, "{errs:?}");
        assert!(errs.iter().all(|e| !e.contains("short-secret-x")));
        let c = parse(GOOD).expect("valid");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn consumer_tokens_are_named_and_the_single_one_is_default() {
        let c = parse(GOOD).expect("valid");
        let names_of = |c: &EdgeConfig| c.consumer_tokens.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names_of(&c), ["default"]);
        let mut pairs: Vec<(&str, &str)> = GOOD.iter().filter(|(k, _)| *k != names::CONSUMER_TOKEN).copied().collect();
        pairs.push((names::CONSUMER_TOKENS, " host-a=c_a_0123456789abcdef , host-b=c_b_0123456789abcdef"));
        let c = parse(&pairs).expect("valid");
        assert_eq!(names_of(&c), ["host-a", "host-b"]);
        assert_eq!(c.consumer_tokens[1].secret.expose(), "c_b_0123456789abcdef");
        let mut both = GOOD.to_vec();
        both.push((names::CONSUMER_TOKENS, "host-a=c_a_0123456789abcdef"));
        assert_eq!(names_of(&parse(&both).expect("valid")), ["default", "host-a"]);
        for bad in [
            "host-a=short",
            "Host A=c_a_0123456789abcdef",
            "c_a_0123456789abcdef",
            "host-a=c_a_0123456789abcdef,host-a=c_b_0123456789abcdef",
            "host-a=c_a_0123456789abcdef,host-b=c_a_0123456789abcdef",
            "default=c_0123456789abcdef_x",
        ] {
            let mut p = GOOD.to_vec();
            p.push((names::CONSUMER_TOKENS, bad));
            let errs = parse(&p).expect_err(bad);
            assert!(errs.iter().all(|e| !e.contains("0123456789abcdef")), "{errs:?}");
        }
        let none: Vec<(&str, &str)> = GOOD.iter().filter(|(k, _)| *k != names::CONSUMER_TOKEN).copied().collect();
        assert!(parse(&none).expect_err("required").iter().any(|e| e.contains(names::CONSUMER_TOKENS)));
    }

    #[test]
    fn job_types_problems_come_with_the_others_and_checked_urls_use_outbound_allow() {
        let mut bad = GOOD.to_vec();
        bad.push((names::RATE_LIMIT, "lots"));
        bad.push((names::JOB_TYPES, r#"{"a": {"lane": "edge"}, "b": {"lane": "nope"}}"#));
        let errs = parse(&bad).expect_err("invalid");
        assert_eq!(errs.len(), 3, "{errs:?}");
        let local = r#"{"hook": {"lane": "edge", "url": "http://10.0.0.5/in"}}"#;
        let mut pairs = GOOD.to_vec();
        pairs.push((names::JOB_TYPES, local));
        assert!(parse(&pairs).is_err(), "a private URL needs OUTBOUND_ALLOW");
        pairs.push((names::OUTBOUND_ALLOW, "10.0.0.5"));
        let c = parse(&pairs).expect("allowed");
        assert_eq!(c.types.get("hook").and_then(|t| t.url.as_deref()), Some("http://10.0.0.5/in"));
    }
}

#[cfg(test)]
mod origin_tests {
    use super::Origins;

    #[test]
    fn allowed_origins_parse_and_match_exactly() {
        assert_eq!(Origins::parse("").expect("empty"), Origins::None);
        assert_eq!(Origins::parse("*").expect("any"), Origins::Any);
        let l = Origins::parse("https://app.example.com, http://localhost:5173").expect("list");
        assert_eq!(l.allow(Some("https://app.example.com")).as_deref(), Some("https://app.example.com"));
        assert_eq!(l.allow(Some("http://localhost:5173")).as_deref(), Some("http://localhost:5173"));
        assert_eq!(l.allow(Some("https://evil.example.com")), None);
        assert_eq!(l.allow(Some("https://app.example.com.evil.io")), None);
        assert_eq!(l.allow(None), None);
        assert_eq!(Origins::Any.allow(Some("https://x.io")).as_deref(), Some("https://x.io"));
        assert_eq!(Origins::None.allow(Some("https://x.io")), None);
        for bad in ["app.example.com", "https://app.example.com/path", "ftp://x.io", "https://"] {
            assert!(Origins::parse(bad).is_err(), "{bad}");
        }
    }
}
