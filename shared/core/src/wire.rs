//! Messages between the edge's parts: the queue message body and the shard's internal API.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::id::JobId;
use crate::job::{Job, JobState, Lane};

/// The body of a message on the `jobs` queue: "run attempt `attempt` of job `id`".
/// Duplicate deliveries are harmless: the shard accepts the start of an attempt once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub id: JobId,
    pub attempt: u32,
    /// Which consumer runs it; lets the edge consumer route without reading the job first.
    #[serde(default = "edge_lane")]
    pub lane: Lane,
}

fn edge_lane() -> Lane {
    Lane::Edge
}

/// The Redis stream that carries long jobs to native consumers, and its consumer group.
pub const STREAM_KEY: &str = "edgejobs:jobs";
pub const STREAM_GROUP: &str = "edgejobs";

/// The Lua script that hands attempt ARGV[2] of job ARGV[1] to the stream KEYS[1] at most
/// once: KEYS[2] remembers the entry, so a retried hand-off returns the first entry instead
/// of adding another. Returns `{1, entry}` when added, `{0, entry}` when already there.
pub const HANDOFF_SCRIPT: &str = "local dup = redis.call('GET', KEYS[2]) \
if dup then return {0, dup} end \
local e = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'attempt', ARGV[2]) \
redis.call('SET', KEYS[2], e, 'EX', 604800) \
return {1, e}";

/// The key that remembers the stream entry of one attempt's hand-off.
pub fn handoff_key(id: &JobId, attempt: u32) -> String {
    format!("edgejobs:handoff:{id}:{attempt}")
}

/// The position after which a job listing continues: newest first, ordered by
/// `(created_at, id)` descending. Encoded for clients as `"<created_ms>.<id>"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub created_ms: u64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (ms, id) = s.split_once('.')?;
        let id: JobId = id.parse().ok()?;
        Some(Cursor { created_ms: ms.parse().ok()?, id: id.to_string() })
    }
}

/// A query for jobs in one shard (the router fans it out over all shards and merges).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub state: Option<JobState>,
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    pub tag: Option<String>,
    /// Only jobs last changed (for dead jobs: that died) in `[from_ms, to_ms)`.
    #[serde(default)]
    pub from_ms: Option<u64>,
    #[serde(default)]
    pub to_ms: Option<u64>,
    pub after: Option<Cursor>,
    pub limit: u32,
}

/// Default and largest page size of a listing.
pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

/// Parses listing parameters (`state`, `type`, `tag`, `from`, `to`, `limit`, `cursor`) from
/// query pairs. Unknown parameters are refused so a typo never silently lists everything.
pub fn parse_list_params<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    allowed: &[&str],
) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery { limit: DEFAULT_PAGE, ..ListQuery::default() };
    for (k, v) in pairs {
        if !allowed.contains(&k) {
            return Err(ApiError::field(k, format!("unknown query parameter; allowed: {}", allowed.join(", "))));
        }
        match k {
            "state" => {
                q.state = Some(JobState::parse(v).ok_or_else(|| {
                    ApiError::field("state", "must be one of queued, scheduled, active, completed, dead, cancelled")
                })?)
            }
            "type" => q.job_type = Some(v.to_owned()),
            "tag" => q.tag = Some(v.to_owned()),
            "from" | "to" => {
                let t =
                    crate::time::parse_rfc3339(v).ok_or_else(|| ApiError::field(k, "must be an RFC 3339 timestamp"))?;
                if k == "from" { q.from_ms = Some(t) } else { q.to_ms = Some(t) }
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::field("limit", format!("must be an integer from 1 to {MAX_PAGE}")))?
            }
            "cursor" => {
                q.after = Some(
                    Cursor::decode(v).ok_or_else(|| ApiError::field("cursor", "is not a cursor this API returned"))?,
                )
            }
            _ => {}
        }
    }
    Ok(q)
}

/// Merges per-shard pages (each newest first, each holding up to `limit + 1` rows) into
/// one page of at most `limit` jobs and the cursor of the next page, if there is one.
pub fn merge_pages(pages: Vec<Vec<Job>>, limit: u32) -> (Vec<Job>, Option<Cursor>) {
    let mut all: Vec<Job> = pages.into_iter().flatten().collect();
    all.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
    let more = all.len() > limit as usize;
    all.truncate(limit as usize);
    let next = if more { all.last().map(|j| Cursor { created_ms: j.created_at, id: j.id.to_string() }) } else { None };
    (all, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_spec;
    use serde_json::json;

    const ALL: &[&str] = &["state", "type", "tag", "limit", "cursor"];

    #[test]
    fn list_params_table() {
        let q = parse_list_params([("state", "dead"), ("type", "noop"), ("limit", "5")], ALL).expect("valid");
        assert_eq!((q.state, q.job_type.as_deref(), q.limit), (Some(JobState::Dead), Some("noop"), 5));
        for (k, v) in
            [("state", "done"), ("limit", "0"), ("limit", "101"), ("limit", "x"), ("cursor", "abc"), ("colour", "red")]
        {
            let e = parse_list_params([(k, v)], ALL).expect_err(k);
            assert_eq!(e.field.as_deref(), Some(k));
        }
        let c = Cursor { created_ms: 5, id: JobId::new(3, 5, 9).to_string() };
        let q = parse_list_params([("cursor", c.encode().as_str())], ALL).expect("valid");
        assert_eq!(q.after, Some(c));
    }

    fn job(shard: u16, ms: u64) -> Job {
        parse_spec(&json!({ "type": "noop" }), ms).expect("valid").into_job(JobId::new(shard, ms, ms), ms).0
    }

    #[test]
    fn pages_merge_newest_first_and_paginate_without_gaps_or_repeats() {
        // Three shards, jobs at distinct and equal times.
        let shards: Vec<Vec<Job>> =
            (0..3u16).map(|s| (0..7u64).map(|i| job(s, 100 + i * 3 + s as u64 % 2)).collect()).collect();
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        for _ in 0..20 {
            let limit = 4;
            let pages = shards
                .iter()
                .map(|jobs| {
                    let mut v: Vec<Job> = jobs
                        .iter()
                        .filter(|j| {
                            after
                                .as_ref()
                                .is_none_or(|c| (j.created_at, j.id.to_string()) < (c.created_ms, c.id.clone()))
                        })
                        .cloned()
                        .collect();
                    v.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
                    v.truncate(limit as usize + 1);
                    v
                })
                .collect();
            let (page, next) = merge_pages(pages, limit);
            seen.extend(page.iter().map(|j| (j.created_at, j.id.to_string())));
            match next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let mut want: Vec<(u64, String)> = shards.iter().flatten().map(|j| (j.created_at, j.id.to_string())).collect();
        want.sort();
        want.reverse();
        assert_eq!(seen, want);
    }
}
