//! Webhook rules, without the HTTP: the signature header and how an answer is classified.
//!
//! Signature: `X-Edgejobs-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! The timestamp is inside the MAC so a receiver can refuse replays of old deliveries.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::machine::Disposition;

pub const SIGNATURE_HEADER: &str = "X-Edgejobs-Signature";

/// The value of the signature header for `body` sent at `unix_secs`.
pub fn signature(secret: &str, unix_secs: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{unix_secs}.{body}").as_bytes());
    format!("t={unix_secs},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header (what a receiver does), in constant time.
pub fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&v1).is_ok()
}

/// Parses `Retry-After` as delta-seconds (the HTTP-date form is rare from the APIs we call,
/// and is treated as absent: the backoff policy applies). Capped at one day.
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    value?.trim().parse::<u64>().ok().map(|s| s.min(86_400) * 1000)
}

/// How an HTTP answer ends an attempt: `None` is success (2xx); 408, 429 and 5xx are
/// retried (after `Retry-After` when given); any other status is permanent.
pub fn classify(status: u16, retry_after: Option<&str>) -> Option<Disposition> {
    match status {
        200..=299 => None,
        408 | 429 | 500..=599 => Some(match retry_after_ms(retry_after) {
            Some(ms) => Disposition::RetryAfter(ms),
            None => Disposition::Retryable,
        }),
        _ => Some(Disposition::Permanent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_verifiable_and_bound_to_body_time_and_secret() {
        let h = signature("s3cret", 1_700_000_000, r#"{"a":1}"#);
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify("s3cret", &h, r#"{"a":1}"#));
        assert!(!verify("s3cret", &h, r#"{"a":2}"#));
        assert!(!verify("other", &h, r#"{"a":1}"#));
        assert!(!verify("s3cret", &h.replace("t=1700000000", "t=1700000001"), r#"{"a":1}"#));
        assert!(!verify("s3cret", "garbage", r#"{"a":1}"#));
    }

    #[test]
    fn classification_table() {
        let table = [
            (200, None, None),
            (204, None, None),
            (301, None, Some(Disposition::Permanent)),
            (400, None, Some(Disposition::Permanent)),
            (404, Some("5"), Some(Disposition::Permanent)),
            (408, None, Some(Disposition::Retryable)),
            (429, Some("3"), Some(Disposition::RetryAfter(3000))),
            (429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Disposition::Retryable)),
            (500, None, Some(Disposition::Retryable)),
            (503, Some("999999"), Some(Disposition::RetryAfter(86_400_000))),
        ];
        for (status, ra, want) in table {
            assert_eq!(classify(status, ra), want, "{status} {ra:?}");
        }
    }
}
