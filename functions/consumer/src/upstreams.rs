//! Upstream rate limiting: a token bucket per upstream (`llm`, or an http.request host) and
//! a pause when an upstream answers 429, honouring its Retry-After. Separate from the
//! concurrency limit: 25 jobs may run while an upstream admits 5 calls a second.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgejobs_core::ratelimit::Limit;

use crate::metrics::Metrics;

#[derive(Debug)]
struct Bucket {
    /// Tokens added per second, and the most the bucket holds.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<String, Bucket>,
    paused_until: HashMap<String, Instant>,
}

/// The buckets and pauses of every upstream.
#[derive(Debug)]
pub struct Upstreams {
    limits: HashMap<String, Limit>,
    state: Mutex<State>,
}

impl Upstreams {
    pub fn new(limits: HashMap<String, Limit>) -> Upstreams {
        Upstreams { limits, state: Mutex::new(State::default()) }
    }

    /// How long a call to `name` must wait now; takes a token when the answer is zero.
    fn wait_for(&self, name: &str, now: Instant) -> Duration {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = st.paused_until.get(name)
            && *until > now
        {
            return *until - now;
        }
        let Some(limit) = self.limits.get(name) else { return Duration::ZERO };
        let rate = limit.requests as f64 / (limit.window_ms as f64 / 1000.0);
        let b = st.buckets.entry(name.to_owned()).or_insert(Bucket {
            rate,
            burst: limit.requests as f64,
            tokens: limit.requests as f64,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.rate).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - b.tokens) / b.rate)
        }
    }

    /// Waits until `name` admits a call (or `cancel` fires); the wait is counted.
    pub async fn acquire(&self, name: &str, metrics: &Metrics, cancel: &tokio_util::sync::CancellationToken) {
        loop {
            let wait = self.wait_for(name, Instant::now());
            if wait.is_zero() {
                return;
            }
            metrics.upstream_wait(name, wait);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Pauses every call to `name` for `for_` (an upstream's 429 with Retry-After).
    pub fn pause(&self, name: &str, for_: Duration) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = Instant::now() + for_;
        let e = st.paused_until.entry(name.to_owned()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_its_burst_then_paces() {
        let u = Upstreams::new(HashMap::from([("llm".to_owned(), Limit { requests: 2, window_ms: 1000 })]));
        let t0 = Instant::now();
        assert_eq!(u.wait_for("llm", t0), Duration::ZERO);
        assert_eq!(u.wait_for("llm", t0), Duration::ZERO);
        let w = u.wait_for("llm", t0);
        assert!(w > Duration::from_millis(400) && w <= Duration::from_millis(500), "{w:?}");
        assert_eq!(u.wait_for("llm", t0 + Duration::from_millis(500)), Duration::ZERO);
        assert_eq!(u.wait_for("other", t0), Duration::ZERO, "unlimited upstreams never wait");
    }

    #[test]
    fn a_pause_holds_every_call() {
        let u = Upstreams::new(HashMap::new());
        u.pause("llm", Duration::from_secs(2));
        let w = u.wait_for("llm", Instant::now());
        assert!(w > Duration::from_millis(1900), "{w:?}");
    }
}
