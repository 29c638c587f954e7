//! Rate limiting per API key, kept in Upstash (a sliding window, one pipeline per request):
//! enqueues against the key's limit, reads (every keyed `GET`) against a window of their
//! own that allows [`READS_PER_ENQUEUE`] times as many, so a read costs a tenth of an
//! enqueue and reading never uses up the enqueue budget. When Upstash cannot be reached the
//! configured behaviour applies: admit (the default; counted, and logged at most once a
//! minute per isolate) or refuse with 503.

use std::cell::Cell;

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::ratelimit::{Decision, Limit};
use edgejobs_core::{ApiError, ErrorCode};
use edgejobs_upstash::{Client, Credentials, ratelimit};
use serde_json::json;
use worker::Response;

use crate::fetch::FetchTransport;
use crate::http::log;
use crate::platform::{now_ms, random_u64};

thread_local! {
    /// When this isolate last logged an Upstash failure of the limiter, and how many it
    /// has seen since it started (wasm isolates are single-threaded).
    static LAST_LOG_MS: Cell<u64> = const { Cell::new(0) };
    static FAILURES: Cell<u64> = const { Cell::new(0) };
}

/// The Upstash client for the edge, with the configured timeout.
pub fn upstash(cfg: &EdgeConfig) -> Client<FetchTransport> {
    let mut c =
        Client::new(Credentials { url: cfg.upstash_url.clone(), token: cfg.upstash_token.clone() }, FetchTransport);
    c.timeout = std::time::Duration::from_millis(cfg.upstash_timeout_ms);
    c
}

/// How many reads a key may make for each enqueue its limit allows, in the same window.
pub const READS_PER_ENQUEUE: u32 = 10;

/// Counts `cost` enqueues for `who`. `Ok(None)`: no limit applies (or Upstash failed and
/// the limiter fails open); `Ok(Some(d))`: the decision, allowed or not.
pub async fn admit(cfg: &EdgeConfig, who: &Principal, cost: u32) -> Result<Option<Decision>, ApiError> {
    let Some(limit) = who.limit.or(cfg.rate_limit) else { return Ok(None) };
    let key = format!("edgejobs:ratelimit:{}", window_of(who));
    count(cfg, &key, limit, cost, cfg.rate_limit_fail_open).await
}

/// Counts one read for `who`, in its read window: [`READS_PER_ENQUEUE`] times the key's
/// enqueue limit (the key's own or `RATE_LIMIT`), counted apart from its enqueues. When
/// Upstash cannot be reached a read is admitted whatever `RATE_LIMIT_ON_ERROR` says: a read
/// writes nothing that a closed limiter would protect, and an outage should not blind the
/// dashboard.
pub async fn admit_read(cfg: &EdgeConfig, who: &Principal) -> Result<Option<Decision>, ApiError> {
    let Some(limit) = read_limit(who.limit.or(cfg.rate_limit)) else { return Ok(None) };
    let key = format!("edgejobs:ratelimit:reads:{}", window_of(who));
    count(cfg, &key, limit, 1, true).await
}

/// Whose window a request counts in: a tenant's keys share one (`RATE_LIMIT` is per
/// tenant, so a tenant rotating a key, or holding several, gets no more); a key with its
/// own limit (`key:100/60s`) and an admin key count in their own.
pub fn window_of(who: &Principal) -> String {
    match (who.limit, who.tenant()) {
        (None, Some(t)) => format!("tenant:{t}"),
        _ => who.key_id.clone(),
    }
}

/// The read limit that goes with an enqueue limit.
pub fn read_limit(enqueues: Option<Limit>) -> Option<Limit> {
    enqueues.map(|l| Limit { requests: l.requests.saturating_mul(READS_PER_ENQUEUE), window_ms: l.window_ms })
}

async fn count(
    cfg: &EdgeConfig,
    key: &str,
    limit: Limit,
    cost: u32,
    fail_open: bool,
) -> Result<Option<Decision>, ApiError> {
    let nonce = format!("{:016x}", random_u64());
    match ratelimit::check(&upstash(cfg), key, limit, cost, now_ms(), &nonce).await {
        Ok(d) => Ok(Some(d)),
        Err(e) => {
            let failures = FAILURES.with(|f| {
                f.set(f.get() + 1);
                f.get()
            });
            let now = now_ms();
            if LAST_LOG_MS.with(|l| now.saturating_sub(l.get()) >= 60_000) {
                LAST_LOG_MS.with(|l| l.set(now));
                log(
                    "error",
                    "rate limiter cannot reach Upstash",
                    json!({ "error": e.to_string(), "fail_open": fail_open, "unreported_failures": failures }),
                );
            }
            if fail_open {
                Ok(None)
            } else {
                Err(ApiError::new(ErrorCode::Unavailable, "the rate limiter cannot reach Upstash; retry later"))
            }
        }
    }
}

/// Failures of the limiter since the last call (the router adds them to the metrics).
pub fn take_failures() -> u64 {
    FAILURES.with(|f| f.replace(0))
}

fn secs(ms: u64) -> String {
    ms.div_ceil(1000).max(1).to_string()
}

/// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds).
pub fn headers(resp: &mut Response, d: &Decision) {
    let h = resp.headers_mut();
    let _ = h.set("ratelimit-limit", &d.limit.to_string());
    let _ = h.set("ratelimit-remaining", &d.remaining.to_string());
    let _ = h.set("ratelimit-reset", &secs(d.reset_ms));
}

/// The 429 answer for a refused enqueue.
pub fn refusal(d: &Decision) -> worker::Result<Response> {
    refusal_of(d, "enqueues")
}

/// The 429 answer for a refused decision about `what` (`enqueues`, `reads`).
pub fn refusal_of(d: &Decision, what: &str) -> worker::Result<Response> {
    let e = ApiError::new(
        ErrorCode::RateLimited,
        format!("rate limit of {} {what} exceeded; retry in {} s", d.limit, secs(d.retry_after_ms)),
    );
    let mut resp = crate::http::error(&e)?;
    headers(&mut resp, d);
    resp.headers_mut().set("retry-after", &secs(d.retry_after_ms))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_costs_a_tenth_of_an_enqueue_in_the_same_window() {
        let five = Limit { requests: 5, window_ms: 60_000 };
        assert_eq!(read_limit(Some(five)), Some(Limit { requests: 50, window_ms: 60_000 }));
        assert_eq!(read_limit(None), None, "no enqueue limit, no read limit");
        let huge = Limit { requests: u32::MAX, window_ms: 1000 };
        assert_eq!(read_limit(Some(huge)).map(|l| l.requests), Some(u32::MAX));
    }

    #[test]
    fn a_tenants_keys_share_one_window_unless_a_key_has_its_own_limit() {
        use edgejobs_core::tenant::{Sees, Tenant};
        let acme = Sees::Tenant(Tenant::parse("acme").expect("valid"));
        let key =
            |id: &str, limit: Option<Limit>, sees: Sees| Principal { key_id: id.into(), limit, sees, consumer: None };
        let (old, new) = (key("aaaa", None, acme.clone()), key("bbbb", None, acme.clone()));
        assert_eq!(window_of(&old), window_of(&new));
        assert_eq!(window_of(&old), "tenant:acme");
        let own = key("cccc", Some(Limit { requests: 5, window_ms: 1000 }), acme);
        assert_eq!(window_of(&own), "cccc");
        assert_eq!(window_of(&key("dddd", None, Sees::All)), "dddd", "an admin key counts alone");
    }
}
