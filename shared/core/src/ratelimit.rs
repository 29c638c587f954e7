//! Rate-limit rules, without the storage: a limit and the sliding-window decision. The
//! Redis side lives in `edgejobs-upstash::ratelimit`.

/// A limit: `requests` per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub requests: u32,
    pub window_ms: u64,
}

impl Limit {
    /// Parses `"<requests>/<duration>"`, e.g. `"600/60s"`, `"5/1m"`.
    pub fn parse(s: &str) -> Option<Limit> {
        let (n, w) = s.trim().split_once('/')?;
        let requests: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
        let window_ms =
            crate::spec::parse_duration(&serde_json::Value::String(w.trim().to_owned())).filter(|w| *w >= 1000)?;
        Some(Limit { requests, window_ms })
    }
}

/// The outcome, with what the `RateLimit-*` and `Retry-After` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Ms until the oldest counted request leaves the window.
    pub reset_ms: u64,
    /// For a refusal: ms until enough requests have left the window for this one.
    pub retry_after_ms: u64,
}

/// The pure part: given the count after adding `cost` entries and the scores of the oldest
/// entries (ascending), decide.
pub fn decide(count: u64, oldest: &[u64], limit: Limit, cost: u32, now: u64) -> Decision {
    let reset_ms = oldest.first().map_or(limit.window_ms, |t| (t + limit.window_ms).saturating_sub(now));
    if count <= limit.requests as u64 {
        return Decision {
            allowed: true,
            limit: limit.requests,
            remaining: (limit.requests as u64 - count) as u32,
            reset_ms,
            retry_after_ms: 0,
        };
    }
    // Entries that must leave before this request fits; never more than `cost`.
    let before = count - cost as u64;
    let must_leave = (before + cost as u64).saturating_sub(limit.requests as u64).max(1) as usize;
    let retry_after_ms = if cost > limit.requests {
        limit.window_ms
    } else {
        oldest.get(must_leave - 1).map_or(limit.window_ms, |t| (t + limit.window_ms).saturating_sub(now).max(1))
    };
    Decision {
        allowed: false,
        limit: limit.requests,
        remaining: limit.requests.saturating_sub(before.min(u32::MAX as u64) as u32),
        reset_ms,
        retry_after_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limit = Limit { requests: 3, window_ms: 10_000 };

    #[test]
    fn parses_limits() {
        assert_eq!(Limit::parse("600/60s"), Some(Limit { requests: 600, window_ms: 60_000 }));
        assert_eq!(Limit::parse("5/1m"), Some(Limit { requests: 5, window_ms: 60_000 }));
        for bad in ["", "5", "0/1s", "5/10ms", "x/1s", "5/soon"] {
            assert_eq!(Limit::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn allows_up_to_the_limit_with_remaining_and_reset() {
        let d = decide(2, &[1_000], L, 1, 5_000);
        assert_eq!(d, Decision { allowed: true, limit: 3, remaining: 1, reset_ms: 6_000, retry_after_ms: 0 });
        assert!(decide(3, &[1_000], L, 1, 5_000).allowed);
    }

    #[test]
    fn refusals_say_when_enough_room_frees_up() {
        // 3 in the window at 1000, 2000, 3000; a 4th at 5000 waits for the oldest to leave.
        let d = decide(4, &[1_000], L, 1, 5_000);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 6_000);
        // A batch of 2 with 2 already in: the first 1 of them must leave.
        let d = decide(4, &[2_000, 3_000], L, 2, 5_000);
        assert_eq!(d.retry_after_ms, 7_000);
        // Bigger than the whole limit: never fits; wait a window (and try smaller).
        assert_eq!(decide(5, &[5_000], L, 5, 5_000).retry_after_ms, 10_000);
    }
}
