//! Fuzzes reading a backup object (`core::backup::from_ndjson`) and checking it against its
//! manifest entry (`core::backup::entry`, `check`). Properties: no panic; jobs read from
//! NDJSON write back to NDJSON that reads as the same jobs; an entry computed from a body
//! accepts that body.

#![no_main]

use edgejobs_core::backup::{check, entry, from_ndjson, to_ndjson};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        // Not UTF-8: only the byte-level check applies.
        let e = entry("b", 0, 0, "");
        let _ = check(&e, Some(data));
        return;
    };
    if let Ok(jobs) = from_ndjson(text) {
        let written = to_ndjson(&jobs);
        let again = from_ndjson(&written);
        assert_eq!(again.as_ref(), Ok(&jobs), "NDJSON round trip of {text:?}");
    }
    let e = entry("b", 3, 1, text);
    assert_eq!(check(&e, Some(data)), None, "the entry computed from {text:?} refuses it: {e:?}");
});
