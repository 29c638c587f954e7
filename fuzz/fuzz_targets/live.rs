//! Fuzzes what live results (#30) read from outside: read tokens (`core::token::verify`,
//! with any secret and clock), a subscriber's `Last-Event-ID` (`core::live::parse_last_id`)
//! and a consumer's update (`core::live::Update` from JSON, its checks and its merge into a
//! job). Property: no panic, and an update that is refused leaves the job as it was.

#![no_main]

use edgejobs_core::config::Secret;
use edgejobs_core::live::{Update, apply, parse_last_id};
use edgejobs_core::token::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let secrets = [Secret::new("fuzz-secret-0123456789abcdef")];
    let _ = verify(&text, &secrets, u64::from(data.first().copied().unwrap_or(0)) << 40);
    let _ = parse_last_id(Some(&text));
    if let Ok(u) = serde_json::from_slice::<Update>(data) {
        let _ = u.check();
        let spec = edgejobs_core::spec::parse_spec(&serde_json::json!({ "type": "noop" }), 1000);
        if let Ok(spec) = spec {
            let mut job = spec.into_job(edgejobs_core::JobId::new(0, 1000, 1), 1000).0;
            let before = job.clone();
            if apply(&mut job, &u, 2000).is_err() {
                assert_eq!(job, before, "a refused update changed the job");
            }
        }
    }
});
