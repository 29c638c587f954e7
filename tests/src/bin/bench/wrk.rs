//! wrk's output, read: requests, non-2xx, socket errors and the latency distribution.

use std::collections::BTreeMap;

use anyhow::bail;
use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
pub struct Wrk {
    pub requests: u64,
    pub duration_s: f64,
    pub requests_per_s: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    pub latency_ms: BTreeMap<String, f64>,
}

impl Wrk {
    pub fn ok_requests(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }

    pub fn ok_per_s(&self) -> f64 {
        if self.duration_s > 0.0 { self.ok_requests() as f64 / self.duration_s } else { 0.0 }
    }

    pub fn p(&self, q: &str) -> Option<f64> {
        self.latency_ms.get(q).copied()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "duration_s": self.duration_s,
            "requests_per_s": self.requests_per_s,
            "non_2xx_3xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "p50_ms": self.p("50%"), "p75_ms": self.p("75%"), "p90_ms": self.p("90%"), "p99_ms": self.p("99%"),
        })
    }
}

/// `12.5ms`, `800.00us`, `1.02s`, `2.00m` in milliseconds.
pub fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let n: f64 = s[..split].parse().ok()?;
    Some(match &s[split..] {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

pub fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk::default();
    let mut in_dist = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_dist = true;
            continue;
        }
        if in_dist {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(q), Some(v)) if q.ends_with('%') => {
                    if let Some(ms) = wrk_ms(v) {
                        w.latency_ms.insert(q.to_owned(), ms);
                    }
                    continue;
                }
                _ => in_dist = false,
            }
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            w.requests_per_s = rest.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = rest.trim().parse().unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            w.socket_errors = rest.split(',').filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok()).sum();
        } else if line.contains(" requests in ") {
            // "12345 requests in 10.00s, 1.23MB read"
            let mut it = line.split_whitespace();
            w.requests = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let took = line.split(" requests in ").nth(1).and_then(|r| r.split(',').next()).unwrap_or("");
            w.duration_s = wrk_ms(took).map_or(0.0, |ms| ms / 1000.0);
        }
    }
    if w.requests == 0 || w.duration_s <= 0.0 {
        bail!("could not read wrk's output:\n{out}");
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:1/health/live
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    31.02ms   12.11ms 200.00ms   80.00%
    Req/Sec   500.00     60.00   600.00     70.00%
  Latency Distribution
     50%   29.60ms
     75%   35.00ms
     90%   45.00ms
     99%    1.20s
  10000 requests in 10.01s, 1.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:    999.00
Transfer/sec:    100.00KB
";
        let w = parse_wrk(out).expect("parses");
        assert_eq!(w.requests, 10_000);
        assert!((w.duration_s - 10.01).abs() < 1e-9);
        assert_eq!(w.requests_per_s, 999.0);
        assert_eq!(w.non_2xx, 7);
        assert_eq!(w.socket_errors, 5);
        assert_eq!(w.p("50%"), Some(29.6));
        assert_eq!(w.p("99%"), Some(1200.0));
        assert_eq!(w.ok_requests(), 9_993);
        assert!(parse_wrk("garbage").is_err());
        assert_eq!(wrk_ms("800.00us"), Some(0.8));
        assert_eq!(wrk_ms("2.00m"), Some(120_000.0));
    }
}
