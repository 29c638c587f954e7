//! Webhook rules, without the HTTP: signatures in the Standard Webhooks format, and how an
//! answer is classified.
//!
//! Signatures (<https://www.standardwebhooks.com/>): each delivery carries `webhook-id`
//! (the job id and attempt), `webhook-timestamp` (unix seconds) and `webhook-signature:
//! v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, so receivers verify with the
//! Standard Webhooks libraries. The key is per receiver: derived from the deployment's
//! `WEBHOOK_SIGNING_SECRET` and the receiver's origin (scheme, host, port), so a delivery
//! captured at one receiver does not verify at another; a type declared in `JOB_TYPES` with
//! a fixed URL signs with a key bound to its name too ([`type_key`]), so a `webhook` job
//! cannot pass for it. `WEBHOOK_SIGNING_SECRET` may hold several secrets (newest first)
//! while one is rotated: every delivery then carries one `v1,` signature per secret
//! ([`sign_all`]). An admin reads a receiver's secret (`whsec_...`) from
//! `POST /v1/admin/webhook-secret`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::machine::Disposition;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of a Standard Webhooks secret; the base64 after it is the key.
pub const SECRET_PREFIX: &str = "whsec_";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The deployment's master key: the bytes after `whsec_` when the secret has that form,
/// else the secret's own bytes.
pub fn master_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|b| STANDARD.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The signing key for one receiver origin (`https://host:port`, as `url::Url::origin`
/// serializes it).
pub fn receiver_key(master: &[u8], origin: &str) -> [u8; 32] {
    hmac(master, &[b"edgejobs/webhook/v1\n", origin.as_bytes()])
}

/// A receiver's secret, in the Standard Webhooks form its libraries take.
pub fn receiver_secret(master: &[u8], origin: &str) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(receiver_key(master, origin)))
}

/// The job type whose deliveries are signed with the origin's own key: a `webhook` job
/// names its URL itself.
pub const WEBHOOK_TYPE: &str = "webhook";

/// The signing key of one job type's deliveries to one receiver origin. A `webhook` job's
/// key is the origin's ([`receiver_key`]); a type declared in `JOB_TYPES` with a fixed URL
/// has a key of its own, bound to its name, so a delivery of one type never verifies with
/// another type's secret: a `webhook` job sent to a declared type's URL (same origin, same
/// path, same body) is refused by that receiver. This is how the signature covers the type
/// while staying Standard Webhooks (whose signed content is only id, timestamp and body).
pub fn type_key(master: &[u8], origin: &str, job_type: &str) -> [u8; 32] {
    if job_type == WEBHOOK_TYPE {
        return receiver_key(master, origin);
    }
    // An origin holds no newline, so no (origin, type) pair reads as another.
    hmac(master, &[b"edgejobs/webhook/v1\n", origin.as_bytes(), b"\ntype=", job_type.as_bytes()])
}

/// The receiver secret (`whsec_...`) of one job type's deliveries to one origin.
pub fn type_secret(master: &[u8], origin: &str, job_type: &str) -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(type_key(master, origin, job_type)))
}

/// The `webhook-signature` value of one delivery signed with every master key (newest
/// first): one `v1,<sig>` per key, space-separated, as Standard Webhooks allows, so during
/// a rotation a receiver holding the old secret and one holding the new both verify it.
pub fn sign_all(masters: &[Vec<u8>], origin: &str, job_type: &str, msg_id: &str, timestamp: u64, body: &str) -> String {
    masters.iter().map(|m| sign(&type_key(m, origin, job_type), msg_id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// The `webhook-id` of a job's deliveries: the same for every delivery of one attempt
/// series — a queue's duplicate and every retry alike — because the Standard Webhooks
/// specification says the id "will be the same when the same webhook is being resent (e.g.
/// due to a previous failure)", and receivers deduplicate by it. `series_base` is the job's
/// attempt count when its series began: 0 for the first series, so the id is the job id;
/// a replay of a dead job starts a new series (`<job>_r<series_base>`), because a receiver
/// that deduplicated the old deliveries must see the replay as new work.
pub fn message_id(job_id: &str, series_base: u32) -> String {
    if series_base == 0 { job_id.to_owned() } else { format!("{job_id}_r{series_base}") }
}

/// The `webhook-signature` value for one delivery.
pub fn sign(key: &[u8], msg_id: &str, timestamp: u64, body: &str) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// What a receiver does (and our tests): checks a `webhook-signature` header (space
/// separated `v1,<sig>` entries) in constant time.
pub fn verify(key: &[u8], msg_id: &str, timestamp: u64, body: &str, header: &str) -> bool {
    let want = sign(key, msg_id, timestamp, body);
    header.split(' ').any(|sig| crate::auth::constant_time_eq(sig, &want))
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
    fn signatures_are_bound_to_id_time_body_and_receiver() {
        let master = master_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(master.len(), 24, "a whsec_ secret is its base64 key");
        assert_eq!(master_key("plain-secret-0123456789"), b"plain-secret-0123456789");
        let a = receiver_key(&master, "https://a.example");
        let b = receiver_key(&master, "https://b.example");
        assert_ne!(a, b, "each receiver has its own key");
        let h = sign(&a, "j1_1", 1_700_000_000, r#"{"x":1}"#);
        assert!(h.starts_with("v1,"));
        assert!(verify(&a, "j1_1", 1_700_000_000, r#"{"x":1}"#, &h));
        assert!(verify(&a, "j1_1", 1_700_000_000, r#"{"x":1}"#, &format!("v1,bm9wZQ== {h}")));
        assert!(!verify(&b, "j1_1", 1_700_000_000, r#"{"x":1}"#, &h), "a delivery does not verify elsewhere");
        assert!(!verify(&a, "j1_2", 1_700_000_000, r#"{"x":1}"#, &h));
        assert!(!verify(&a, "j1_1", 1_700_000_001, r#"{"x":1}"#, &h));
        assert!(!verify(&a, "j1_1", 1_700_000_000, r#"{"x":2}"#, &h));
        assert!(receiver_secret(&master, "https://a.example").starts_with(SECRET_PREFIX));
    }

    /// The id a receiver deduplicates by: one per attempt series (every retry keeps it, as the
    /// specification asks), a new one for a replay, never a repeat of an earlier series'.
    #[test]
    fn message_id_is_stable_across_retries_and_new_for_a_replay() {
        use crate::id::JobId;
        use crate::machine::{Disposition, Event, apply};
        let spec = crate::spec::parse_spec(&serde_json::json!({ "type": "noop", "max_attempts": 2 }), 1_000)
            .expect("valid spec");
        let mut job = spec.into_job(JobId::new(0, 1_000, 1), 1_000).0;
        let mut ids = Vec::new();
        for attempt in 1..=2 {
            job = apply(&job, Event::Start { attempt }, 2_000, 0.5).expect("start").job;
            ids.push(message_id(job.id.as_str(), job.series_base));
            let fail = Event::Fail { attempt, error: "500".into(), disposition: Disposition::Retryable };
            job = apply(&job, fail, 2_100, 0.5).expect("fail").job;
            if attempt == 1 {
                job = apply(&job, Event::Wake, 60_000, 0.5).expect("the retry is due").job;
            }
        }
        assert_eq!(ids[0], ids[1], "a retried delivery keeps its webhook-id");
        assert_eq!(ids[0], job.id.as_str());
        job = apply(&job, Event::Replay, 69_000, 0.5).expect("replay").job;
        job = apply(&job, Event::Start { attempt: 3 }, 70_000, 0.5).expect("start").job;
        let replayed = message_id(job.id.as_str(), job.series_base);
        assert_ne!(replayed, ids[0], "a replay is a new series with a new webhook-id");
        assert_eq!(replayed, format!("{}_r2", job.id.as_str()));
    }

    /// The example of the Standard Webhooks specification (its reference libraries' test):
    /// our signature must match theirs byte for byte.
    #[test]
    fn matches_the_standard_webhooks_reference_example() {
        let key = master_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// A declared type's deliveries have their own key: a `webhook` job sent to that type's
    /// URL with the same body does not verify with the type's secret (and the reverse).
    #[test]
    fn the_key_is_bound_to_the_type() {
        let master = master_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let origin = "https://recv.example";
        assert_eq!(type_key(&master, origin, WEBHOOK_TYPE), receiver_key(&master, origin), "webhook keeps its key");
        let charge = type_key(&master, origin, "charge");
        assert_ne!(charge, receiver_key(&master, origin));
        assert_ne!(charge, type_key(&master, origin, "refund"));
        let forged = sign_all(std::slice::from_ref(&master), origin, WEBHOOK_TYPE, "j1", 1_700_000_000, "{}");
        assert!(!verify(&charge, "j1", 1_700_000_000, "{}", &forged), "a webhook job cannot pass for charge");
        let real = sign_all(std::slice::from_ref(&master), origin, "charge", "j1", 1_700_000_000, "{}");
        assert!(verify(&charge, "j1", 1_700_000_000, "{}", &real));
        assert!(!verify(&receiver_key(&master, origin), "j1", 1_700_000_000, "{}", &real));
        assert!(type_secret(&master, origin, "charge").starts_with(SECRET_PREFIX));
    }

    /// During a rotation every delivery carries one signature per secret; a receiver that
    /// holds either verifies it, one that holds neither does not.
    #[test]
    fn a_rotated_secret_signs_with_both() {
        let (new, old) = (master_key("new-secret-0123456789"), master_key("old-secret-0123456789"));
        let origin = "https://recv.example";
        let h = sign_all(&[new.clone(), old.clone()], origin, WEBHOOK_TYPE, "j1", 1_700_000_000, "{}");
        assert_eq!(h.split(' ').count(), 2);
        assert!(h.split(' ').all(|s| s.starts_with("v1,")));
        for m in [&new, &old] {
            assert!(verify(&receiver_key(m, origin), "j1", 1_700_000_000, "{}", &h));
        }
        let other = master_key("other-secret-0123456789");
        assert!(!verify(&receiver_key(&other, origin), "j1", 1_700_000_000, "{}", &h));
        assert_eq!(
            sign_all(std::slice::from_ref(&new), origin, WEBHOOK_TYPE, "j1", 1, "{}"),
            sign(&receiver_key(&new, origin), "j1", 1, "{}")
        );
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
