//! Fuzzes duration parsing (`core::spec::parse_duration`) with any text and any JSON value.
//! Properties: no panic; an integer is taken as milliseconds; `"<n>ms"` means n ms.

#![no_main]

use edgejobs_core::spec::parse_duration;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_duration(&Value::String(s.to_owned()));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = parse_duration(&v);
    }
    if let Some(head) = data.first_chunk::<8>() {
        let n = u64::from_le_bytes(*head);
        assert_eq!(parse_duration(&json!(n)), Some(n));
        // Up to ten years, well inside what any field accepts.
        let n = n % (10 * 365 * 86_400_000);
        assert_eq!(parse_duration(&json!(format!("{n}ms"))), Some(n), "{n}ms");
    }
});
