//! Fuzzes the Upstash client's reply parsing (`upstash::client::decode_http`, `decode_one`,
//! `decode_batch`, `Reply::from_json`): the first byte picks the HTTP status and the base64
//! mode, the rest is the response body. Properties: no panic; without base64, a decoded
//! reply turned back into JSON decodes to the same reply.

#![no_main]

use edgejobs_upstash::Reply;
use edgejobs_upstash::client::{decode_batch, decode_http, decode_one};
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 6] = [200, 200, 400, 401, 429, 500];

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first() else { return };
    let status = STATUSES[usize::from(head & 0x0f) % STATUSES.len()];
    let b64 = head & 0x80 != 0;
    let Ok(body) = std::str::from_utf8(body) else { return };
    let Ok(v) = decode_http(status, body) else { return };
    let _ = decode_one(&v, b64);
    let count = v.as_array().map_or(0, Vec::len);
    let _ = decode_batch(&v, count, b64);
    let _ = decode_batch(&v, count + 1, b64);
    if let Ok(reply) = Reply::from_json(&v, b64) {
        let _ = (reply.as_int(), reply.as_str(), reply.as_array(), reply.is_nil());
        if !b64 {
            let again = Reply::from_json(&reply.to_json(), false);
            assert_eq!(again.as_ref(), Ok(&reply), "{body:?}");
        }
    }
});
