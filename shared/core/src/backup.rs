//! The backup format, without the storage: each shard's jobs as NDJSON (one job per line)
//! in one or more objects (parts, written page by page so no shard is ever held in memory
//! whole), then `manifest.json`, written last, with each object's row count and SHA-256.
//! A backup without a manifest is incomplete and never counted as valid.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::job::Job;

/// Bumped when the format changes incompatibly.
pub const SCHEMA_VERSION: u32 = 1;
/// Every backup lives under `backups/<id>/`.
pub const PREFIX: &str = "backups/";

/// One object of a backup: part `part` of a shard's jobs (parts are in id order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub shard: u16,
    /// 0 for the first (or only) part; backups from before parts have only part 0.
    #[serde(default)]
    pub part: u32,
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
    /// The schedules, one per line (`shard` and `part` unused); absent in backups made
    /// before schedules existed, whose restore leaves the schedules as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<ShardEntry>,
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
    // ASCII only, so the fixed offsets below always fall on character boundaries.
    if stamp.len() != 24 || !stamp.is_ascii() {
        return None;
    }
    let fixed = format!("{}:{}:{}.{}", &stamp[..13], &stamp[14..16], &stamp[17..19], &stamp[20..]);
    crate::time::parse_rfc3339(&fixed)
}

/// The object of part `part` of shard `shard` (part 0 keeps the name of single-part backups).
pub fn shard_key(id: &str, shard: u16, part: u32) -> String {
    match part {
        0 => format!("{PREFIX}{id}/shard-{shard:03}.ndjson"),
        p => format!("{PREFIX}{id}/shard-{shard:03}-{p:05}.ndjson"),
    }
}

/// The object holding a backup's schedules.
pub fn schedules_key(id: &str) -> String {
    format!("{PREFIX}{id}/schedules.ndjson")
}

/// Encodes schedules as NDJSON.
pub fn schedules_ndjson(all: &[crate::schedule::Schedule]) -> String {
    all.iter().filter_map(|s| serde_json::to_string(s).ok()).map(|l| l + "\n").collect()
}

/// Decodes a backup's schedules object, checking each name; the first problem on error.
pub fn schedules_for_restore(text: &str) -> Result<Vec<crate::schedule::Schedule>, String> {
    let mut out: Vec<crate::schedule::Schedule> = Vec::new();
    for (i, l) in text.split('\n').enumerate().filter(|(_, l)| !is_blank(l.as_bytes())) {
        let s: crate::schedule::Schedule =
            serde_json::from_str(l).map_err(|e| format!("schedules line {}: {e}", i + 1))?;
        crate::schedule::check_name(&s.name).map_err(|e| format!("schedules line {}: {}", i + 1, e.message))?;
        s.clock().map_err(|e| format!("schedule {}: {}", s.name, e.message))?;
        out.push(s);
    }
    Ok(out)
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

/// A line that holds no row: empty or only ASCII whitespace. The one rule for writing,
/// verifying and reading objects, so their row counts agree.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// The rows of an NDJSON object: its lines that are not blank.
pub fn count_rows(body: &[u8]) -> u64 {
    body.split(|b| *b == b'\n').filter(|l| !is_blank(l)).count() as u64
}

/// Decodes NDJSON written by [`to_ndjson`]; the line number of the first bad line on error.
pub fn from_ndjson(text: &str) -> Result<Vec<Job>, String> {
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !is_blank(l.as_bytes()))
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Reads one backup object of shard `shard` for a restore: every line a job that passes
/// [`Job::validate`] and belongs to that shard. The jobs, or the first problem.
pub fn jobs_for_restore(text: &str, shard: u16) -> Result<Vec<Job>, String> {
    let jobs = from_ndjson(text)?;
    for j in &jobs {
        if j.id.shard() != shard {
            return Err(format!("job {} does not belong to shard {shard}", j.id));
        }
        j.validate()?;
    }
    Ok(jobs)
}

/// The entry of a backup's schedules object.
pub fn schedules_entry(id: &str, body: &str) -> ShardEntry {
    ShardEntry { key: schedules_key(id), ..entry(id, 0, 0, body) }
}

/// An entry describing one object (part `part` of a shard's jobs).
pub fn entry(id: &str, shard: u16, part: u32, body: &str) -> ShardEntry {
    ShardEntry {
        shard,
        part,
        key: shard_key(id, shard, part),
        rows: count_rows(body.as_bytes()),
        bytes: body.len() as u64,
        sha256: sha256_hex(body.as_bytes()),
    }
}

/// Checks a manifest's shape: every shard from 0 to `shard_count - 1` has parts numbered
/// 0, 1, ... without gaps, and the totals add up. The problems found.
pub fn check_manifest(m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for shard in 0..m.shard_count {
        let mut parts: Vec<u32> = m.shards.iter().filter(|e| e.shard == shard).map(|e| e.part).collect();
        parts.sort_unstable();
        if parts.is_empty() {
            problems.push(format!("shard {shard} has no object in the manifest"));
        } else if parts.iter().enumerate().any(|(i, p)| *p as usize != i) {
            problems.push(format!("shard {shard}'s parts are not numbered 0..{}: {parts:?}", parts.len()));
        }
    }
    if let Some(e) = m.shards.iter().find(|e| e.shard >= m.shard_count) {
        problems.push(format!("{} names shard {} of {}", e.key, e.shard, m.shard_count));
    }
    if m.shards.iter().try_fold(0u64, |sum, e| sum.checked_add(e.rows)) != Some(m.total_rows) {
        problems.push("the rows of the objects do not add up to total_rows".to_owned());
    }
    problems
}

/// Checks one object against its manifest entry; `None` when it matches.
pub fn check(entry: &ShardEntry, body: Option<&[u8]>) -> Option<String> {
    let Some(body) = body else { return Some(format!("{} is missing", entry.key)) };
    if sha256_hex(body) != entry.sha256 {
        return Some(format!("{}: SHA-256 differs from the manifest", entry.key));
    }
    let rows = count_rows(body);
    if rows != entry.rows {
        return Some(format!("{}: {rows} rows, the manifest says {}", entry.key, entry.rows));
    }
    None
}

/// What the retention knows of a backup's manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manifested {
    /// A manifest was read: the backup is complete.
    Valid,
    /// No manifest (an interrupted or half-deleted backup).
    Incomplete,
    /// The manifest could not be read (a storage error): nothing is known, so the backup is
    /// kept and the next run decides.
    Unreadable,
}

/// Which backups the retention deletes: those older than `keep_ms`, and incomplete ones
/// older than a day, but never the newest valid backup and never one it could not read.
pub fn to_delete(backups: &[(String, Manifested)], now_ms: u64, keep_ms: u64) -> Vec<String> {
    let newest_valid = backups
        .iter()
        .filter(|(_, m)| *m == Manifested::Valid)
        .filter_map(|(id, _)| id_time_ms(id).map(|t| (t, id)))
        .max();
    backups
        .iter()
        .filter(|(id, m)| {
            let Some(t) = id_time_ms(id) else { return false };
            let age = now_ms.saturating_sub(t);
            let old = match m {
                Manifested::Valid => age > keep_ms,
                Manifested::Incomplete => age > keep_ms.min(86_400_000),
                Manifested::Unreadable => false,
            };
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
        assert_eq!(id_time_ms("2026-11-23T02-00-00-1éZ-abcdef12"), None, "multibyte text is refused, not sliced");
    }

    #[test]
    fn writing_and_verifying_count_rows_alike() {
        // Found by fuzzing: a line of only a vertical tab counted 0 rows when written and 1
        // when verified.
        let body = "\n\x0c\n\t \n\x0c\n\x0b";
        let e = entry("b", 0, 0, body);
        assert_eq!(check(&e, Some(body.as_bytes())), None);
        assert_eq!(e.rows, 1, "\\x0b is not blank ASCII whitespace, so it is a (bad) row");
        assert!(from_ndjson(body).is_err(), "and reading refuses it");
        assert_eq!(count_rows(b"{}\n\n {} \r\n"), 2);
    }

    #[test]
    fn manifest_rows_that_overflow_are_a_problem_not_a_panic() {
        let big = |shard| ShardEntry {
            shard,
            part: 0,
            key: format!("k{shard}"),
            rows: 1 << 63,
            bytes: 0,
            sha256: String::new(),
        };
        let m = Manifest {
            schema_version: 1,
            id: "b".into(),
            started_at: String::new(),
            finished_at: String::new(),
            shard_count: 2,
            shards: vec![big(0), big(1)],
            total_rows: 0,
            total_bytes: 0,
            schedules: None,
        };
        assert!(check_manifest(&m).iter().any(|p| p.contains("do not add up")), "{:?}", check_manifest(&m));
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
        let e = entry("x", 1, 0, &text);
        assert_eq!((e.rows, e.key.as_str()), (3, "backups/x/shard-001.ndjson"));
        assert_eq!(entry("x", 1, 2, "").key, "backups/x/shard-001-00002.ndjson");
        // Manifests written before parts existed still read (their entries are part 0).
        let old: ShardEntry =
            serde_json::from_value(json!({ "shard": 3, "key": "k", "rows": 0, "bytes": 0, "sha256": "x" }))
                .expect("old");
        assert_eq!(old.part, 0);
        assert_eq!(check(&e, Some(text.as_bytes())), None);
        assert!(check(&e, Some(text.replace("noop", "nope").as_bytes())).is_some());
        assert!(check(&e, None).is_some());
        assert!(from_ndjson("{\"not\":\"a job\"}\n").is_err());
    }

    #[test]
    fn manifests_must_cover_every_shard_with_contiguous_parts() {
        let e = |shard, part, rows| ShardEntry { rows, ..entry("x", shard, part, "") };
        let mut m = Manifest {
            schema_version: SCHEMA_VERSION,
            id: "x".into(),
            started_at: String::new(),
            finished_at: String::new(),
            shard_count: 2,
            shards: vec![e(0, 0, 2), e(0, 1, 1), e(1, 0, 0)],
            total_rows: 3,
            total_bytes: 0,
            schedules: None,
        };
        assert_eq!(check_manifest(&m), Vec::<String>::new());
        m.shards.remove(1);
        assert_eq!(check_manifest(&m).len(), 1, "rows no longer add up");
        m.shards.push(e(0, 2, 1));
        assert_eq!(check_manifest(&m).len(), 1, "a gap in shard 0's parts");
        m.shards = vec![e(0, 0, 3)];
        assert_eq!(check_manifest(&m).len(), 1, "shard 1 is missing");
    }

    #[test]
    fn schedules_round_trip_and_bad_lines_are_named() {
        let body =
            json!({ "name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin", "job": { "type": "noop" } });
        let s = crate::schedule::parse_create(&body, 1_800_000_000_000, &crate::types::Types::builtins())
            .expect("valid")
            .schedule;
        let text = schedules_ndjson(&[s.clone(), s.clone()]);
        assert_eq!(count_rows(text.as_bytes()), 2);
        assert_eq!(schedules_for_restore(&text), Ok(vec![s.clone(), s]));
        let e = schedules_entry("b1", &text);
        assert_eq!((e.key.as_str(), e.rows), ("backups/b1/schedules.ndjson", 2));
        let bad = text.replace("Europe/Berlin", "Nowhere/Land");
        assert!(schedules_for_restore(&bad).is_err_and(|p| p.contains("nightly")));
        assert!(schedules_for_restore("{\"name\": 1}\n").is_err_and(|p| p.contains("line 1")));
    }

    #[test]
    fn retention_keeps_the_newest_valid_backup() {
        let day = 86_400_000;
        let now = 1_795_406_400_000;
        let id = |days_ago: u64| backup_id(now - days_ago * day, days_ago);
        use Manifested::{Incomplete, Valid};
        let backups = vec![(id(10), Valid), (id(9), Incomplete), (id(8), Valid), (id(3), Valid), (id(2), Incomplete)];
        let gone = to_delete(&backups, now, 7 * day);
        assert_eq!(gone, vec![id(10), id(9), id(8), id(2)]);
        // All too old: the newest valid one stays anyway.
        let old = vec![(id(20), Valid), (id(15), Valid)];
        assert_eq!(to_delete(&old, now, 7 * day), vec![id(20)]);
    }

    #[test]
    fn retention_never_deletes_a_backup_it_could_not_read() {
        use Manifested::{Unreadable, Valid};
        let day = 86_400_000;
        let now = 1_795_406_400_000;
        let id = |days_ago: u64| backup_id(now - days_ago * day, days_ago);
        // Old and unreadable: kept. And an unreadable newer one does not stand in for the
        // newest valid backup, which stays too.
        let backups = vec![(id(30), Unreadable), (id(20), Valid), (id(12), Unreadable)];
        assert_eq!(to_delete(&backups, now, 7 * day), Vec::<String>::new());
        let backups = vec![(id(30), Valid), (id(20), Valid), (id(12), Unreadable)];
        assert_eq!(to_delete(&backups, now, 7 * day), vec![id(30)]);
    }
}
