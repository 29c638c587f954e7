//! Fuzzes backup manifests: `serde_json::from_slice::<Manifest>`, `core::backup::check_manifest`,
//! `core::backup::check` of each entry, and the backup id's time (`id_time_ms`). Property: no
//! panic, whatever a manifest in R2 says.

#![no_main]

use edgejobs_core::backup::{Manifest, check, check_manifest, id_time_ms};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<Manifest>(data) else { return };
    let _ = check_manifest(&m);
    let _ = id_time_ms(&m.id);
    for e in &m.shards {
        let _ = check(e, Some(data));
        let _ = check(e, Some(b"{}\n"));
        let _ = check(e, None);
    }
});
