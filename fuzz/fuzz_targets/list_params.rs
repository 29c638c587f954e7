//! Fuzzes listing parameters (`core::wire::parse_list_params`) and cursors
//! (`core::wire::Cursor`): the input is read as a query string `k=v&k=v`. Properties: no
//! panic; a decoded cursor re-encodes to text that decodes to the same cursor; computing a
//! decoded cursor's bound in any shard does not panic (the router does it for every shard).

#![no_main]

use edgejobs_core::wire::{Cursor, parse_list_params};
use libfuzzer_sys::fuzz_target;

const ALLOWED: &[&str] = &["state", "type", "tag", "from", "to", "limit", "cursor", "include", "id_prefix", "q"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(&str, &str)> = text.split('&').map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    let _ = parse_list_params(pairs.iter().copied(), ALLOWED);
    let _ = parse_list_params(pairs.iter().copied(), &ALLOWED[..3]);
    for part in text.split('&') {
        let candidate = part.strip_prefix("cursor=").unwrap_or(part);
        if let Some(c) = Cursor::decode(candidate) {
            let encoded = c.encode();
            assert_eq!(Cursor::decode(&encoded).as_ref(), Some(&c), "{candidate:?} re-encoded as {encoded:?}");
            for shard in [0, 1, 15, 255] {
                let _ = c.bound_in_shard(shard);
            }
        }
    }
});
