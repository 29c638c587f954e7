//! Fuzzes schedules: `core::cron::Cron::parse` of arbitrary text, then the next runs of what
//! parses in a few time zones from a time the input picks, and `core::schedule::parse_create`
//! of arbitrary JSON. Properties: no panic; each next run is strictly after the time asked
//! from, and runs only move forward.

#![no_main]

use edgejobs_core::cron::{Cron, time_zone};
use edgejobs_core::schedule::parse_create;
use libfuzzer_sys::fuzz_target;

const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"];

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = parse_create(&v, 1_800_000_000_000, &edgejobs_core::types::Types::builtins());
        return;
    }
    let (seed, text) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => return,
    };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let Ok(cron) = Cron::parse(text) else { return };
    let Ok(tz) = time_zone(ZONES[seed as usize % ZONES.len()]) else { return };
    // A time between 1970 and about 2100, chosen by the input.
    let mut after = (u64::from(seed) * 16_777_259 * 1_000_003 % 4_102_444_800_000) as i64;
    for _ in 0..5 {
        match cron.next_after(&tz, after) {
            Some(next) => {
                assert!(next > after, "{text:?} in {tz:?}: {next} is not after {after}");
                after = next;
            }
            None => break,
        }
    }
});
