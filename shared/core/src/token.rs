//! Read tokens for browsers (#30): short-lived, signed, read-only grants to one job (or to
//! the jobs of one tag) of one tenant, so a front end can subscribe to a job's stream
//! without ever holding an API key (Trigger.dev's public access tokens).
//!
//! Form: `ejr_` + base64url(claims JSON) + `.` + base64url(HMAC-SHA256). The signing key is
//! derived from `WEBHOOK_SIGNING_SECRET` (HMAC of a fixed label under each secret), so no
//! new secret is needed and rotating that secret (newest first, the old one kept a while)
//! rotates tokens with the same overlap: a token is issued under the first and accepted
//! under any.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{ApiError, ErrorCode};
use crate::id::JobId;
use crate::secret::Secret;
use crate::tenant::Tenant;

/// Every read token starts with this.
pub const PREFIX: &str = "ejr_";
/// The longest a token may live: 24 hours.
pub const MAX_TTL_MS: u64 = 86_400_000;
/// A token's life when the request names none: 15 minutes.
pub const DEFAULT_TTL_MS: u64 = 900_000;
/// Longest token text read (anything longer is refused before it is decoded).
const MAX_TOKEN_BYTES: usize = 1024;

/// What a token lets its bearer read: one job, or the jobs of one tag, of one tenant,
/// until `exp` (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(rename = "t")]
    pub tenant: Tenant,
    #[serde(rename = "j", default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub exp: u64,
}

impl Grant {
    /// Whether the grant covers job `id` of `tenant` carrying `tags`.
    pub fn covers(&self, id: &JobId, tenant: &Tenant, tags: &[String]) -> bool {
        self.tenant == *tenant
            && match (&self.job, &self.tag) {
                (Some(j), _) => j == id,
                (None, Some(t)) => tags.contains(t),
                (None, None) => false,
            }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn key_of(secret: &Secret) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(b"edgejobs read token v1");
    mac.finalize().into_bytes().to_vec()
}

fn sign(key: &[u8], body: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Issues a token for `grant` under the newest secret.
pub fn issue(grant: &Grant, secrets: &[Secret]) -> Result<String, ApiError> {
    let secret =
        secrets.first().ok_or_else(|| ApiError::new(ErrorCode::Internal, "no signing secret is configured"))?;
    let claims = serde_json::to_string(grant)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("could not encode a token: {e}")))?;
    let body = URL_SAFE_NO_PAD.encode(claims.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(sign(&key_of(secret), &body));
    Ok(format!("{PREFIX}{body}.{sig}"))
}

/// Whether `s` looks like a read token (so an `Authorization` header holding one is not
/// taken for an API key).
pub fn is_token(s: &str) -> bool {
    s.starts_with(PREFIX)
}

/// Checks a token: its signature under any of `secrets`, its form, its expiry. Every
/// failure is 401 `unauthorized` with a message that says which (never the token).
pub fn verify(token: &str, secrets: &[Secret], now: u64) -> Result<Grant, ApiError> {
    let bad = |m: &str| ApiError::new(ErrorCode::Unauthorized, format!("invalid read token: {m}"));
    if token.len() > MAX_TOKEN_BYTES {
        return Err(bad("too long"));
    }
    let rest = token.strip_prefix(PREFIX).ok_or_else(|| bad("it does not start with ejr_"))?;
    let (body, sig) = rest.split_once('.').ok_or_else(|| bad("malformed"))?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| bad("malformed"))?;
    // Every secret is tried (no early exit), so timing tells nothing of which matched.
    let signed = secrets.iter().fold(false, |hit, s| {
        let mut mac = HmacSha256::new_from_slice(&key_of(s)).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sig).is_ok() || hit
    });
    if !signed {
        return Err(bad("bad signature"));
    }
    let claims = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad("malformed"))?;
    let grant: Grant = serde_json::from_slice(&claims).map_err(|_| bad("malformed"))?;
    if grant.exp <= now {
        return Err(bad("expired"));
    }
    Ok(grant)
}

/// The expiry of a token asked for with `ttl_ms` (none: the default), or why it is refused.
pub fn expiry(now: u64, ttl_ms: Option<u64>) -> Result<u64, ApiError> {
    let ttl = ttl_ms.unwrap_or(DEFAULT_TTL_MS);
    if ttl == 0 || ttl > MAX_TTL_MS {
        return Err(ApiError::field("ttl", "must be a duration from 1s to 24h"));
    }
    Ok(now.saturating_add(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> Vec<Secret> {
        vec![Secret::new("whsec-new-0123456789abcdef"), Secret::new("whsec-old-0123456789abcdef")]
    }

    fn grant() -> Grant {
        Grant {
            tenant: Tenant::parse("acme").expect("tenant"),
            job: Some(JobId::new(1, 1000, 7)),
            tag: None,
            exp: 10_000,
        }
    }

    #[test]
    fn a_token_verifies_until_it_expires_under_any_configured_secret() {
        let t = issue(&grant(), &secrets()).expect("issued");
        assert!(t.starts_with(PREFIX) && is_token(&t));
        assert_eq!(verify(&t, &secrets(), 9_999).expect("valid"), grant());
        assert!(verify(&t, &secrets(), 10_000).expect_err("expired").message.contains("expired"));
        // Rotation: issued under the old secret, accepted while it is still listed.
        let old = issue(&grant(), &secrets()[1..]).expect("issued");
        assert!(verify(&old, &secrets(), 1).is_ok());
        assert!(verify(&old, &secrets()[..1], 1).is_err(), "dropped secret");
    }

    #[test]
    fn forged_and_malformed_tokens_are_refused() {
        let t = issue(&grant(), &secrets()).expect("issued");
        let (body, sig) = t.split_once('.').expect("dot");
        // Another job in the claims, the signature kept.
        let mut other = grant();
        other.job = Some(JobId::new(1, 1000, 8));
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_string(&other).expect("json"));
        let forged = format!("{PREFIX}{forged_body}.{sig}");
        for bad in [forged.as_str(), &format!("{body}.AAAA"), "ejr_", "ejr_x.y", "nope", &"ejr_a".repeat(300)] {
            let e = verify(bad, &secrets(), 1).expect_err(bad);
            assert_eq!(e.code, ErrorCode::Unauthorized, "{bad}");
            assert!(!e.message.contains(bad) || bad.len() < 8, "the token is not echoed");
        }
    }

    #[test]
    fn a_grant_covers_its_job_or_its_tag_in_its_tenant_only() {
        let acme = Tenant::parse("acme").expect("tenant");
        let globex = Tenant::parse("globex").expect("tenant");
        let g = grant();
        let id = g.job.clone().expect("job");
        assert!(g.covers(&id, &acme, &[]));
        assert!(!g.covers(&JobId::new(1, 1000, 8), &acme, &[]));
        assert!(!g.covers(&id, &globex, &[]));
        let tagged = Grant { job: None, tag: Some("batch-7".into()), ..grant() };
        assert!(tagged.covers(&JobId::new(2, 1, 1), &acme, &["batch-7".into()]));
        assert!(!tagged.covers(&JobId::new(2, 1, 1), &acme, &["batch-8".into()]));
        assert!(!tagged.covers(&JobId::new(2, 1, 1), &globex, &["batch-7".into()]));
    }

    #[test]
    fn ttls_are_bounded() {
        assert_eq!(expiry(1000, None).expect("default"), 1000 + DEFAULT_TTL_MS);
        assert!(expiry(0, Some(0)).is_err());
        assert!(expiry(0, Some(MAX_TTL_MS + 1)).is_err());
        assert_eq!(expiry(5, Some(MAX_TTL_MS)).expect("max"), 5 + MAX_TTL_MS);
    }
}
