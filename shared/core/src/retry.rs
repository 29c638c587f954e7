//! The retry policy: exponential backoff with full jitter and a cap. The random sample is an
//! argument, so the policy is a pure function.

use serde::{Deserialize, Serialize};

/// Backoff between attempts: the n-th retry waits a uniform random time in
/// `[0, min(cap_ms, base_ms * factor^(n-1)))` ("full jitter").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay scale of the first retry, in ms. Default 1000.
    pub base_ms: u64,
    /// Growth per attempt. Default 2.0.
    pub factor: f64,
    /// Upper bound of any delay, in ms. Default 3_600_000 (1 h).
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_ms: 1000, factor: 2.0, cap_ms: 3_600_000 }
    }
}

impl Backoff {
    /// The ceiling of the delay after failed attempt number `attempt` (1-based, in series).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let raw = self.base_ms as f64 * self.factor.powi(exp);
        if !raw.is_finite() || raw >= self.cap_ms as f64 { self.cap_ms } else { raw as u64 }
    }

    /// The delay after failed attempt `attempt`, given a uniform sample `unit` in `[0, 1)`.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        (self.ceiling_ms(attempt) as f64 * unit) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_grows_exponentially_then_caps() {
        let b = Backoff { base_ms: 100, factor: 2.0, cap_ms: 1000 };
        let got: Vec<u64> = (1..=6).map(|n| b.ceiling_ms(n)).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_inside_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay_ms(3, 0.0), 0);
        assert_eq!(b.delay_ms(3, 0.5), 2000);
        assert!(b.delay_ms(3, 0.999_999) < 4000);
        assert_eq!(b.delay_ms(200, 1.0), b.cap_ms);
        assert_eq!(b.delay_ms(1, f64::NAN), 0);
    }
}
