//! Verifying a webhook delivery (Standard Webhooks): the signature rules are
//! `edgejobs_core::webhook`'s, the same code the edge signs with; this adds the header
//! reading and the timestamp tolerance a receiver needs.

use edgejobs_core::webhook::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, master_key, verify};

use crate::error::{Error, Result};

/// How far a delivery's `webhook-timestamp` may be from now: 5 minutes, as the Standard
/// Webhooks libraries allow, so a captured delivery cannot be replayed later.
pub const TOLERANCE_SECS: u64 = 300;

/// Checks a delivery: `secret` is the receiver's `whsec_...` (from
/// `POST /v1/admin/webhook-secret`), `headers` the request's (names in any case), `body`
/// the raw body as received. `now` is unix seconds.
pub fn verify_webhook_at<K, V>(secret: &str, headers: &[(K, V)], body: &[u8], now: u64) -> Result<()>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let get = |name: &str| {
        headers.iter().find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref().trim())
    };
    let missing = |h: &str| Error::Signature(format!("no {h} header"));
    let id = get(HEADER_ID).ok_or_else(|| missing(HEADER_ID))?;
    let ts = get(HEADER_TIMESTAMP).ok_or_else(|| missing(HEADER_TIMESTAMP))?;
    let sig = get(HEADER_SIGNATURE).ok_or_else(|| missing(HEADER_SIGNATURE))?;
    let ts: u64 = ts.parse().map_err(|_| Error::Signature("the timestamp is not unix seconds".into()))?;
    if ts.abs_diff(now) > TOLERANCE_SECS {
        return Err(Error::Signature("the timestamp is more than 5 minutes from now".into()));
    }
    let body = std::str::from_utf8(body).map_err(|_| Error::Signature("the body is not UTF-8".into()))?;
    if verify(&master_key(secret), id, ts, body, sig) {
        Ok(())
    } else {
        Err(Error::Signature("no signature matches the secret".into()))
    }
}

/// [`verify_webhook_at`] at the current time.
#[cfg(not(target_arch = "wasm32"))]
pub fn verify_webhook<K: AsRef<str>, V: AsRef<str>>(secret: &str, headers: &[(K, V)], body: &[u8]) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    verify_webhook_at(secret, headers, body, now)
}

/// [`verify_webhook_at`] at the current time (the Worker's clock).
#[cfg(all(target_arch = "wasm32", feature = "worker"))]
pub fn verify_webhook<K: AsRef<str>, V: AsRef<str>>(secret: &str, headers: &[(K, V)], body: &[u8]) -> Result<()> {
    verify_webhook_at(secret, headers, body, worker::Date::now().as_millis() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference library (`standardwebhooks`, someone else's code) signs; ours verifies.
    #[test]
    fn deliveries_signed_by_the_reference_library_verify() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signer = standardwebhooks::Webhook::new(secret).expect("secret");
        let body = br#"{"order":42,"note":"caf\u00e9"}"#;
        let now = 1_700_000_000u64;
        let sig = signer.sign("msg_1", now as i64, body).expect("sign");
        let headers =
            [("Webhook-Id", "msg_1"), ("webhook-timestamp", "1700000000"), ("webhook-signature", sig.as_str())];
        assert!(verify_webhook_at(secret, &headers, body, now + 10).is_ok());
        // Any change is refused: the body, the id, the time, another secret, a stale delivery.
        assert!(verify_webhook_at(secret, &headers, br#"{"order":43}"#, now).is_err());
        let other_id = [("webhook-id", "msg_2"), headers[1], headers[2]];
        assert!(verify_webhook_at(secret, &other_id, body, now).is_err());
        let other_ts = [headers[0], ("webhook-timestamp", "1700000001"), headers[2]];
        assert!(verify_webhook_at(secret, &other_ts, body, now).is_err());
        assert!(verify_webhook_at("whsec_c2VjcmV0LW9mLWFub3RoZXItcmVjZWl2ZXI=", &headers, body, now).is_err());
        assert!(verify_webhook_at(secret, &headers, body, now + TOLERANCE_SECS + 1).is_err());
        assert!(verify_webhook_at(secret, &headers[..2], body, now).is_err(), "no signature header");
        // A rotation's two signatures: one matching is enough.
        let two = format!("v1,bm9wZQ== {sig}");
        let rotated = [headers[0], headers[1], ("webhook-signature", two.as_str())];
        assert!(verify_webhook_at(secret, &rotated, body, now).is_ok());
    }
}
