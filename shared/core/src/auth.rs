//! API key checks: Bearer tokens, two scopes, constant-time comparison.

use crate::config::{ApiKey, EdgeConfig};
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::Limit;
pub use crate::secret::{constant_time_eq, digest, digests_eq};
use crate::tenant::{Sees, Tenant};

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The job API. Admin keys have it too.
    Jobs,
    /// Admin routes.
    Admin,
    /// The native consumer's report routes (the consumer token only).
    Consumer,
}

/// Who made a request: an opaque id of the key (never the key) and its own rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The first 8 bytes of SHA-256 of the key, in hex: safe to log and to use in Redis keys.
    pub key_id: String,
    pub limit: Option<Limit>,
    /// Whose jobs the key sees: its tenant's (a `jobs` key) or all (an admin key, and the
    /// consumer token, whose reports name jobs of every tenant).
    pub sees: Sees,
    /// For the consumer scope: the name of the consumer token (`EDGEJOBS_CONSUMER_TOKENS`)
    /// that made the request, safe to log.
    pub consumer: Option<String>,
}

impl Principal {
    /// The tenant rate limits and caps count against: a `jobs` key's own; admins count as
    /// the default tenant's callers only when they create its jobs, so `None` here.
    pub fn tenant(&self) -> Option<&Tenant> {
        match &self.sees {
            Sees::Tenant(t) => Some(t),
            Sees::All => None,
        }
    }
}

fn matching<'a>(keys: &'a [ApiKey], token: &[u8; 32]) -> Option<&'a ApiKey> {
    // Check every key (no early exit) so timing does not tell which one matched.
    keys.iter().fold(None, |hit, k| if k.secret.matches(token) { Some(k) } else { hit })
}

/// Checks an `Authorization` header value against the scope a route needs.
/// 401 when the token is missing or unknown, 403 when it is valid but lacks the scope.
pub fn authorize(header: Option<&str>, scope: Scope, cfg: &EdgeConfig) -> Result<Principal, ApiError> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "missing bearer token: send 'Authorization: Bearer <key>'")
        })?;
    let presented = digest(token);
    let jobs_key = matching(&cfg.api_keys, &presented);
    let admin_key = matching(&cfg.admin_keys, &presented);
    let (is_jobs, is_admin) = (jobs_key.is_some(), admin_key.is_some());
    // Every consumer token is checked too (no early exit), so timing tells no name.
    let consumer =
        cfg.consumer_tokens.iter().fold(None, |hit, t| if t.secret.matches(&presented) { Some(t) } else { hit });
    let is_consumer = consumer.is_some();
    if !(is_jobs || is_admin || is_consumer) {
        return Err(ApiError::new(ErrorCode::Unauthorized, "invalid API key"));
    }
    let allowed = match scope {
        Scope::Jobs => is_jobs || is_admin,
        Scope::Admin => is_admin,
        Scope::Consumer => is_consumer,
    };
    if allowed {
        // A key listed as admin and as jobs acts as admin (it sees every tenant).
        let sees = match (admin_key, jobs_key.and_then(|k| k.tenant.clone())) {
            (None, Some(t)) if scope != Scope::Consumer => Sees::Tenant(t),
            _ => Sees::All,
        };
        let consumer = consumer.filter(|_| scope == Scope::Consumer).map(|t| t.name.clone());
        Ok(Principal {
            key_id: hex::encode(&presented[..8]),
            limit: jobs_key.or(admin_key).and_then(|k| k.limit),
            sees,
            consumer,
        })
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, format!("this key lacks the {scope:?} scope").to_lowercase()))
    }
}

/// The caller of a request that came through a Cloudflare service binding whose props name
/// `tenant` (#31). Props are set where the binding is declared (the calling Worker's
/// `wrangler.toml`, deployed by someone who may deploy to the account) and the calling code
/// cannot change them; a request from the internet has none. So a binding acts for its
/// tenant like a `jobs` key of it, when `BINDING_TENANTS` lists the tenant; never as admin or
/// consumer (403), and an unlisted tenant is refused (401) as an unknown key is.
pub fn authorize_binding(tenant: &str, scope: Scope, cfg: &EdgeConfig) -> Result<Principal, ApiError> {
    let listed = Tenant::parse(tenant).ok().filter(|t| cfg.binding_tenants.contains(t));
    let Some(tenant) = listed else {
        let shown: String = tenant.chars().take(64).collect();
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!("the service binding's tenant {shown:?} is not in BINDING_TENANTS"),
        ));
    };
    if scope != Scope::Jobs {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("a service binding acts with the jobs scope, not {scope:?}").to_lowercase(),
        ));
    }
    Ok(Principal {
        key_id: format!("binding-{}", tenant.as_str()),
        limit: None,
        sees: Sees::Tenant(tenant),
        consumer: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Secret;

    fn key(k: &str) -> ApiKey {
        ApiKey { secret: Secret::new(k), limit: None, tenant: Tenant::parse("acme").ok() }
    }

    fn cfg() -> EdgeConfig {
        EdgeConfig {
            shard_count: 4,
            topology: crate::topology::Topology::single(4),
            idempotency_window_ms: 1000,
            api_keys: vec![key("jobs-key-0123456789")],
            admin_keys: vec![key("admin-key-0123456789")],
            consumer_tokens: vec![
                crate::config::ConsumerToken { name: "default".into(), secret: Secret::new("consumer-0123456789") },
                crate::config::ConsumerToken { name: "host-b".into(), secret: Secret::new("consumer-b-0123456789") },
            ],
            webhook_secret: vec![Secret::new("webhook-0123456789")],
            rate_limit: None,
            rate_limit_fail_open: true,
            upstash_url: "http://127.0.0.1:1".into(),
            upstash_token: Secret::new("upstash-0123456789"),
            upstash_timeout_ms: 1000,
            outbound_allow: crate::outbound::Allow::default(),
            payload_keys: crate::seal::Keys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("valid"),
            native_lease_ms: crate::config::DEFAULT_NATIVE_LEASE_MS,
            maintenance: crate::settings::Maintenance::default(),
            types: crate::types::Types::builtins(),
            tenant_max_pending: crate::config::PendingCaps::default(),
            webhook_concurrency: None,
            allowed_origins: crate::config::Origins::None,
            binding_tenants: vec![Tenant::parse("acme").expect("valid")],
            tracing: Default::default(),
        }
    }

    #[test]
    fn table_of_keys_and_scopes() {
        let c = cfg();
        let table: &[(Option<&str>, Scope, Option<ErrorCode>)] = &[
            (None, Scope::Jobs, Some(ErrorCode::Unauthorized)),
            (Some("Basic abc"), Scope::Jobs, Some(ErrorCode::Unauthorized)),
            (Some("Bearer "), Scope::Jobs, Some(ErrorCode::Unauthorized)),
            (Some("Bearer wrong-key-0123456789"), Scope::Jobs, Some(ErrorCode::Unauthorized)),
            (Some("Bearer jobs-key-0123456789"), Scope::Jobs, None),
            (Some("Bearer jobs-key-0123456789"), Scope::Admin, Some(ErrorCode::Forbidden)),
            (Some("Bearer admin-key-0123456789"), Scope::Jobs, None),
            (Some("Bearer admin-key-0123456789"), Scope::Admin, None),
            (Some("Bearer consumer-0123456789"), Scope::Consumer, None),
            (Some("Bearer consumer-0123456789"), Scope::Jobs, Some(ErrorCode::Forbidden)),
            (Some("Bearer jobs-key-0123456789"), Scope::Consumer, Some(ErrorCode::Forbidden)),
        ];
        for (header, scope, want) in table {
            let got = authorize(*header, *scope, &c).err().map(|e| e.code);
            assert_eq!(got, *want, "{header:?} {scope:?}");
        }
    }

    #[test]
    fn principals_name_keys_by_digest_and_carry_their_limit() {
        let mut c = cfg();
        c.api_keys[0].limit = Some(Limit { requests: 5, window_ms: 1000 });
        let p = authorize(Some("Bearer jobs-key-0123456789"), Scope::Jobs, &c).expect("ok");
        assert_eq!(p.key_id.len(), 16);
        assert!(!p.key_id.contains("jobs-key"));
        assert_eq!(p.limit, Some(Limit { requests: 5, window_ms: 1000 }));
        let other = authorize(Some("Bearer admin-key-0123456789"), Scope::Jobs, &c).expect("ok");
        assert_ne!(other.key_id, p.key_id);
    }

    #[test]
    fn jobs_keys_see_their_tenant_and_admin_keys_see_all() {
        let c = cfg();
        let p = authorize(Some("Bearer jobs-key-0123456789"), Scope::Jobs, &c).expect("ok");
        assert_eq!(p.sees, Sees::Tenant(Tenant::parse("acme").expect("valid")));
        assert_eq!(p.tenant().map(Tenant::as_str), Some("acme"));
        let a = authorize(Some("Bearer admin-key-0123456789"), Scope::Jobs, &c).expect("ok");
        assert_eq!((&a.sees, a.tenant()), (&Sees::All, None));
    }

    #[test]
    fn each_consumer_token_is_named_and_a_removed_one_is_refused() {
        let mut c = cfg();
        let a = authorize(Some("Bearer consumer-0123456789"), Scope::Consumer, &c).expect("ok");
        let b = authorize(Some("Bearer consumer-b-0123456789"), Scope::Consumer, &c).expect("ok");
        assert_eq!((a.consumer.as_deref(), b.consumer.as_deref()), (Some("default"), Some("host-b")));
        let jobs = authorize(Some("Bearer jobs-key-0123456789"), Scope::Jobs, &c).expect("ok");
        assert_eq!(jobs.consumer, None);
        // Revoking host-b (removing its entry) leaves the other consumer working.
        c.consumer_tokens.retain(|t| t.name != "host-b");
        let gone = authorize(Some("Bearer consumer-b-0123456789"), Scope::Consumer, &c).expect_err("revoked");
        assert_eq!(gone.code, ErrorCode::Unauthorized);
        assert!(authorize(Some("Bearer consumer-0123456789"), Scope::Consumer, &c).is_ok());
    }

    #[test]
    fn errors_never_echo_the_token() {
        let e = authorize(Some("Bearer wrong-key-0123456789"), Scope::Jobs, &cfg()).expect_err("refused");
        assert!(!e.message.contains("wrong-key"));
    }

    #[test]
    fn a_binding_acts_for_a_listed_tenant_with_the_jobs_scope_only() {
        let c = cfg();
        let p = authorize_binding("acme", Scope::Jobs, &c).expect("listed");
        assert_eq!((p.tenant().map(Tenant::as_str), p.limit, p.key_id.as_str()), (Some("acme"), None, "binding-acme"));
        for (tenant, scope, code) in [
            ("globex", Scope::Jobs, ErrorCode::Unauthorized),
            ("not a tenant!", Scope::Jobs, ErrorCode::Unauthorized),
            ("acme", Scope::Admin, ErrorCode::Forbidden),
            ("acme", Scope::Consumer, ErrorCode::Forbidden),
        ] {
            assert_eq!(authorize_binding(tenant, scope, &c).expect_err(tenant).code, code, "{tenant} {scope:?}");
        }
        let mut none = c.clone();
        none.binding_tenants.clear();
        assert_eq!(authorize_binding("acme", Scope::Jobs, &none).expect_err("unlisted").code, ErrorCode::Unauthorized);
    }
}
