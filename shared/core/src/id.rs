//! Job ids: `j` + shard (2 hex digits) + creation time in ms (11 hex digits) + 64 random bits
//! (16 hex digits). The shard prefix lets the router find a job's Durable Object without an
//! index; the time part makes ids of one shard sort by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest number of shards an id can address (two hex digits).
pub const MAX_SHARDS: u16 = 256;

const LEN: usize = 1 + 2 + 11 + 16;

/// A job id. Construct with [`JobId::new`] or parse with [`str::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

/// Why a string is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a job id: expected 'j' followed by 29 lowercase hex digits")]
pub struct InvalidJobId;

impl JobId {
    /// Builds the id of a job created at `now_ms` in `shard`, with a random sample `rand`.
    pub fn new(shard: u16, now_ms: u64, rand: u64) -> Self {
        debug_assert!(shard < MAX_SHARDS);
        // 11 hex digits hold milliseconds until the year 2527.
        let ms = now_ms & 0xfff_ffff_ffff;
        JobId(format!("j{:02x}{ms:011x}{rand:016x}", shard % MAX_SHARDS))
    }

    /// The shard that owns this job.
    pub fn shard(&self) -> u16 {
        u16::from_str_radix(&self.0[1..3], 16).unwrap_or(0)
    }

    /// The creation time encoded in the id, in ms since the epoch.
    pub fn created_ms(&self) -> u64 {
        u64::from_str_radix(&self.0[3..14], 16).unwrap_or(0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The shard of a job with an idempotency key: every request with that key meets in one
/// shard, which serializes them. SHA-256 of the key, first two bytes, modulo the count.
pub fn shard_for_key(key: &str, shard_count: u16) -> u16 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(key.as_bytes());
    u16::from_be_bytes([d[0], d[1]]) % shard_count.max(1)
}

impl FromStr for JobId {
    type Err = InvalidJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s.len() == LEN
            && s.starts_with('j')
            && s[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok { Ok(JobId(s.to_owned())) } else { Err(InvalidJobId) }
    }
}

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_shard_and_time() {
        let id = JobId::new(13, 1_763_870_000_123, 0xdead_beef);
        assert_eq!(id.shard(), 13);
        assert_eq!(id.created_ms(), 1_763_870_000_123);
        assert_eq!(id.as_str().parse::<JobId>().as_ref(), Ok(&id));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "j",
            "x0d0000000000000000000000000000",
            "j0D19a9b7c3f7b00000000deadbeef",
            "j0d19a9b7c3f7b00000000deadbee",
        ] {
            assert_eq!(bad.parse::<JobId>(), Err(InvalidJobId), "{bad}");
        }
    }

    #[test]
    fn ids_of_one_shard_sort_by_time() {
        let a = JobId::new(1, 1000, u64::MAX);
        let b = JobId::new(1, 1001, 0);
        assert!(a < b);
    }
}
