//! The backup format, without the storage: one NDJSON object per shard (one job per line),
//! then `manifest.json`, written last, with per-shard row counts and SHA-256. A backup
//! without a manifest is incomplete and never counted as valid.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::job::Job;

/// Bumped when the format changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;
/// Every backup lives under `backups/<id>/`.
pub const PREFIX: &str = "backups/";

/// One shard's object in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u16,
    pub key: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The manifest of a complete backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub id: String,
    pub started_at: String,
    pub finished_at: String,
    pub shard_count: u16,
    pub shards: Vec<ShardEntry>,
    pub total_rows: u64,
    pub total_bytes: u64,
}

/// A backup id: sortable by time, unique per run (two runs in the same millisecond differ
/// by the random part).
pub fn backup_id(now_ms: u64, rand: u64) -> String {
    let t = crate::time::format_rfc3339(now_ms).replace([':', '.'], "-");
    format!("{t}-{:08x}", rand as u32)
}

/// The creation time encoded in a backup id.
pub fn id_time_ms(id: &str) -> Option<u64> {
    // "2026-11-23T02-00-00-123Z-abcdef12" → "2026-11-23T02:00:00.123Z"
    let (stamp, _) = id.rsplit_once('-')?;
    let b = stamp.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let fixed = format!("{}:{}:{}.{}", &stamp[..13], &stamp[14..16], &stamp[17..19], &stamp[20..]);
    crate::time::parse_rfc3339(&fixed)
}

pub fn shard_key(id: &str, shard: u16) -> String {
    format!("{PREFIX}{id}/shard-{shard:03}.ndjson")
}

pub fn manifest_key(id: &str) -> String {
    format!("{PREFIX}{id}/manifest.json")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Encodes jobs as NDJSON (one compact JSON document per line).
pub fn to_ndjson(jobs: &[Job]) -> String {
    let mut out = String::new();
    for j in jobs {
        if let Ok(line) = serde_json::to_string(j) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Decodes NDJSON written by [`to_ndjson`]; the line number of the first bad line on error.
pub fn from_ndjson(text: &str) -> Result<Vec<Job>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// An entry describing a shard's object.
pub fn entry(id: &str, shard: u16, body: &str) -> ShardEntry {
    ShardEntry {
        shard,
        key: shard_key(id, shard),
        rows: body.lines().filter(|l| !l.trim().is_empty()).count() as u64,
        bytes: body.len() as u64,
        sha256: sha256_hex(body.as_bytes()),
    }
}

/// Checks one object against its manifest entry; `None` when it matches.
pub fn check(entry: &ShardEntry, body: Option<&[u8]>) -> Option<String> {
    let Some(body) = body else { return Some(format!("{} is missing", entry.key)) };
    if sha256_hex(body) != entry.sha256 {
        return Some(format!("{}: SHA-256 differs from the manifest", entry.key));
    }
    let rows = body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count() as u64;
    if rows != entry.rows {
        return Some(format!("{}: {rows} rows, the manifest says {}", entry.key, entry.rows));
    }
    None
}

/// Which backups the retention deletes: those older than `keep_ms`, and incomplete ones
/// older than a day, but never the newest valid backup. `backups` holds (id, valid).
pub fn to_delete(backups: &[(String, bool)], now_ms: u64, keep_ms: u64) -> Vec<String> {
    let newest_valid = backups.iter().filter(|(_, v)| *v).filter_map(|(id, _)| id_time_ms(id).map(|t| (t, id))).max();
    backups
        .iter()
        .filter(|(id, valid)| {
            let Some(t) = id_time_ms(id) else { return false };
            let age = now_ms.saturating_sub(t);
            let old = if *valid { age > keep_ms } else { age > keep_ms.min(86_400_000) };
            old && newest_valid.is_none_or(|(_, n)| n != id)
        })
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::JobId;
    use crate::spec::parse_spec;
    use serde_json::json;

    #[test]
    fn ids_sort_by_time_and_encode_it() {
        let a = backup_id(1_795_406_400_123, 7);
        let b = backup_id(1_795_406_400_124, 1);
        assert!(a < b, "{a} {b}");
        assert_eq!(id_time_ms(&a), Some(1_795_406_400_123));
        assert_ne!(backup_id(5, 1), backup_id(5, 2));
        assert_eq!(id_time_ms("nonsense"), None);
    }

    #[test]
    fn ndjson_round_trips_and_checks_detect_damage() {
        let jobs: Vec<Job> = (0..3)
            .map(|i| {
                parse_spec(&json!({ "type": "noop", "payload": { "i": i } }), 1000)
                    .expect("valid")
                    .into_job(JobId::new(1, 1000 + i, i), 1000)
                    .0
            })
            .collect();
        let text = to_ndjson(&jobs);
        assert_eq!(from_ndjson(&text).expect("decodes"), jobs);
        let e = entry("x", 1, &text);
        assert_eq!((e.rows, e.key.as_str()), (3, "backups/x/shard-001.ndjson"));
        assert_eq!(check(&e, Some(text.as_bytes())), None);
        assert!(check(&e, Some(text.replace("noop", "nope").as_bytes())).is_some());
        assert!(check(&e, None).is_some());
        assert!(from_ndjson("{\"not\":\"a job\"}\n").is_err());
    }

    #[test]
    fn retention_keeps_the_newest_valid_backup() {
        let day = 86_400_000;
        let now = 1_795_406_400_000;
        let id = |days_ago: u64| backup_id(now - days_ago * day, days_ago);
        let backups = vec![(id(10), true), (id(9), false), (id(8), true), (id(3), true), (id(2), false)];
        let gone = to_delete(&backups, now, 7 * day);
        assert_eq!(gone, vec![id(10), id(9), id(8), id(2)]);
        // All too old: the newest valid one stays anyway.
        let old = vec![(id(20), true), (id(15), true)];
        assert_eq!(to_delete(&old, now, 7 * day), vec![id(20)]);
    }
}
