//! Fuzzes RFC 3339 parsing (`core::time::parse_rfc3339`). Properties: no panic; a parsed
//! instant formats and parses back to itself; and any instant from 1970 to 9999-12-31
//! formats to text that parses back to it (later ones format as the last one).

#![no_main]

use edgejobs_core::time::{MAX_MS, format_rfc3339, parse_rfc3339};
use libfuzzer_sys::fuzz_target;


fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Some(ms) = parse_rfc3339(s)
    {
        let text = format_rfc3339(ms);
        assert_eq!(parse_rfc3339(&text), Some(ms), "{s:?} parsed to {ms}, formatted as {text:?}");
    }
    if let Some(head) = data.first_chunk::<8>() {
        let ms = u64::from_le_bytes(*head);
        let text = format_rfc3339(ms);
        assert_eq!(parse_rfc3339(&text), Some(ms.min(MAX_MS)), "{ms} formatted as {text:?}");
    }
});
