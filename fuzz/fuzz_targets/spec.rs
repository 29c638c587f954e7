//! Fuzzes enqueue validation (`core::spec::parse_spec`): any JSON body, at any `now`, and
//! any text in the fields that hold a time, a duration or a URL. Property: no panic.

#![no_main]

use edgejobs_core::spec::parse_spec;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// 2026-11-23T00:00:00Z, a plausible "now" for the text-in-a-field cases.
const NOW: u64 = 1_795_392_000_000;

fuzz_target!(|data: &[u8]| {
    // The whole input as a request body.
    if let Ok(body) = serde_json::from_slice::<Value>(data) {
        let _ = parse_spec(&body, NOW);
    }
    // The first 8 bytes as `now` (any u64, so additions must saturate), the rest as a body.
    if let Some((head, rest)) = data.split_first_chunk::<8>()
        && let Ok(body) = serde_json::from_slice::<Value>(rest)
    {
        let _ = parse_spec(&body, u64::from_le_bytes(*head));
    }
    // The input as text in each field that is parsed further.
    if let Ok(s) = std::str::from_utf8(data) {
        for body in [
            json!({ "type": "noop", "run_at": s }),
            json!({ "type": "noop", "delay": s }),
            json!({ "type": "sleep", "timeout": s }),
            json!({ "type": "noop", "backoff": { "base": s, "cap": s } }),
            json!({ "type": "webhook", "payload": { "url": s } }),
            json!({ "type": "http.request", "payload": { "url": "https://example.com/", "headers": { s: s } } }),
            json!({ "type": s }),
        ] {
            let _ = parse_spec(&body, NOW);
        }
    }
});
