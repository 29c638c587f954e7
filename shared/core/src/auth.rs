//! API key checks: Bearer tokens, two scopes, constant-time comparison.

use sha2::{Digest, Sha256};

use crate::config::{EdgeConfig, Secret};
use crate::error::{ApiError, ErrorCode};

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

/// Compares two secrets in time that depends on neither's content nor length: both sides
/// are hashed, then the digests are compared without an early exit.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn any_matches(keys: &[Secret], token: &str) -> bool {
    // Check every key (no early exit) so timing does not tell which list matched.
    keys.iter().fold(false, |hit, k| constant_time_eq(k.expose(), token) | hit)
}

/// Checks an `Authorization` header value against the scope a route needs.
/// 401 when the token is missing or unknown, 403 when it is valid but lacks the scope.
pub fn authorize(header: Option<&str>, scope: Scope, cfg: &EdgeConfig) -> Result<(), ApiError> {
    let token = header
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "missing bearer token: send 'Authorization: Bearer <key>'")
        })?;
    let is_jobs = any_matches(&cfg.api_keys, token);
    let is_admin = any_matches(&cfg.admin_keys, token);
    let is_consumer = constant_time_eq(cfg.consumer_token.expose(), token);
    if !(is_jobs || is_admin || is_consumer) {
        return Err(ApiError::new(ErrorCode::Unauthorized, "invalid API key"));
    }
    let allowed = match scope {
        Scope::Jobs => is_jobs || is_admin,
        Scope::Admin => is_admin,
        Scope::Consumer => is_consumer,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::Forbidden, format!("this key lacks the {scope:?} scope").to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EdgeConfig {
        EdgeConfig {
            shard_count: 4,
            idempotency_window_ms: 1000,
            api_keys: vec![Secret::new("jobs-key-0123456789")],
            admin_keys: vec![Secret::new("admin-key-0123456789")],
            consumer_token: Secret::new("consumer-0123456789"),
            webhook_secret: Secret::new("webhook-0123456789"),
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
    fn errors_never_echo_the_token() {
        let e = authorize(Some("Bearer wrong-key-0123456789"), Scope::Jobs, &cfg()).expect_err("refused");
        assert!(!e.message.contains("wrong-key"));
    }
}
