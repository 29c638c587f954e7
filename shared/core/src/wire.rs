//! Messages between the edge's parts: queue message bodies (envelopes of job references),
//! the hand-off to the long-job stream, and listing queries and cursors.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::id::JobId;
use crate::job::{Job, JobState, Lane};
use crate::trace::TraceContext;

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

/// "Run attempt `attempt` of job `id`", one entry of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub id: JobId,
    pub attempt: u32,
    /// The job's restore epoch ([`crate::job::Job::epoch`]); part of the hand-off key.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// The job's trace context without its `tracestate` (#32), so the delivery's span joins
    /// the job's trace before the shard is read. About 70 bytes: 100 references stay near
    /// 13 KB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceContext>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Most job references one queue message carries. 100 references are about 6 KB, well
/// under the 64 KB that Cloudflare bills as one operation.
pub const ENVELOPE_MAX: usize = 100;

/// One queue message carrying many jobs of one shard and one lane, so a batch enqueue of
/// 100 jobs costs one message (three billed queue operations) instead of 100. Duplicate
/// deliveries stay harmless: the shard starts each attempt once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub shard: u16,
    pub lane: Lane,
    pub jobs: Vec<JobRef>,
}

/// What a message on the `jobs` queue holds: an envelope, or (from deployments before
/// envelopes) a single reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueueBody {
    Envelope(Envelope),
    Single(QueueMessage),
}

impl QueueBody {
    /// The references this message carries, with their lane.
    pub fn refs(&self) -> Vec<(Lane, JobRef)> {
        match self {
            QueueBody::Envelope(e) => e.jobs.iter().map(|r| (e.lane, r.clone())).collect(),
            QueueBody::Single(m) => {
                vec![(m.lane, JobRef { id: m.id.clone(), attempt: m.attempt, epoch: 0, trace: None })]
            }
        }
    }
}

/// Packs references of one shard into envelopes of at most [`ENVELOPE_MAX`] jobs, one lane
/// per envelope, preserving order within a lane.
pub fn envelopes(shard: u16, refs: Vec<(Lane, JobRef)>) -> Vec<Envelope> {
    let mut out: Vec<Envelope> = Vec::new();
    for lane in [Lane::Edge, Lane::Native] {
        let mine: Vec<JobRef> = refs.iter().filter(|(l, _)| *l == lane).map(|(_, r)| r.clone()).collect();
        for chunk in mine.chunks(ENVELOPE_MAX) {
            out.push(Envelope { shard, lane, jobs: chunk.to_vec() });
        }
    }
    out
}

/// Largest number of messages one `sendBatch` may carry, and the largest total size
/// (Cloudflare's limits: 100 messages, 256 KB).
pub const SEND_BATCH_MAX_MESSAGES: usize = 100;
pub const SEND_BATCH_MAX_BYTES: usize = 256 * 1024;

/// Splits messages into `sendBatch` calls within Cloudflare's limits, given each message's
/// encoded size. Returns index ranges into the input.
pub fn send_batches(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        // A little headroom per message for the envelope the runtime adds.
        let size = size + 128;
        if i > start && (i - start == SEND_BATCH_MAX_MESSAGES || bytes + size > SEND_BATCH_MAX_BYTES) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// The Redis stream that carries long jobs to native consumers, and its consumer group.
pub const STREAM_KEY: &str = "edgejobs:jobs";
pub const STREAM_GROUP: &str = "edgejobs";

/// The hash where native consumers announce themselves: one field per consumer (its name),
/// holding its [`Presence`] as JSON, rewritten every [`PRESENCE_EVERY_MS`] in the round trip
/// that reads the stream's depth.
pub const CONSUMERS_KEY: &str = "edgejobs:consumers";

/// How often a consumer announces itself.
pub const PRESENCE_EVERY_MS: u64 = 5_000;

/// A consumer not heard from for this long is shown as stopped.
pub const PRESENCE_STALE_MS: u64 = 30_000;

/// A consumer that has not announced itself for this long is removed from the hash.
pub const PRESENCE_FORGET_MS: u64 = 24 * 3_600_000;

/// What a native consumer says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// When it said so (ms since the epoch, its own clock).
    pub seen_at: u64,
    pub concurrency: u64,
    pub in_flight: u64,
    /// The job types it has handlers for, sorted.
    pub types: Vec<String>,
    pub version: String,
}

// The hand-off scripts live with the project's other Lua scripts, which the local gateway
// compiles in to know what it may run.
pub use crate::scripts::{HANDOFF_MANY_SCRIPT, HANDOFF_SCRIPT};

/// Most attempts one hand-off call carries (about 100 bytes each: well under Upstash's 1 MiB
/// request limit).
pub const HANDOFF_CHUNK: usize = 2000;

/// The command that hands `refs` to the stream in one call ([`HANDOFF_MANY_SCRIPT`]).
pub fn handoff_command(refs: &[JobRef]) -> Vec<String> {
    let mut c = vec!["EVAL".to_owned(), HANDOFF_MANY_SCRIPT.to_owned(), (refs.len() + 1).to_string()];
    c.push(STREAM_KEY.to_owned());
    c.extend(refs.iter().map(handoff_key));
    for r in refs {
        c.push(r.id.to_string());
        c.push(r.attempt.to_string());
        c.push(r.trace.as_ref().map(TraceContext::traceparent).unwrap_or_default());
    }
    c
}

/// The key that remembers the stream entry of one attempt's hand-off (per restore epoch: a
/// restored job's attempt numbers repeat, and must be handed off again).
pub fn handoff_key(r: &JobRef) -> String {
    match r.epoch {
        0 => format!("edgejobs:handoff:{}:{}", r.id, r.attempt),
        e => format!("edgejobs:handoff:{}:{}:{e}", r.id, r.attempt),
    }
}

/// Whether a `Content-Type` names JSON the way the API accepts it: `application/json`,
/// optionally with `charset=utf-8` (any case, quoted or not), and nothing else.
pub fn is_json_content_type(ct: &str) -> bool {
    let mut parts = ct.split(';').map(str::trim);
    if !parts.next().is_some_and(|essence| essence.eq_ignore_ascii_case("application/json")) {
        return false;
    }
    parts.filter(|p| !p.is_empty()).all(|p| match p.split_once('=') {
        Some((k, v)) => {
            k.trim().eq_ignore_ascii_case("charset") && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        None => false,
    })
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

    /// The exclusive upper bound on ids of shard `shard` that come after this cursor in a
    /// listing ordered by `(created_at, id)` descending. Within one shard ids sort by
    /// creation time (`j` + shard + creation ms + random), so `id < bound` selects exactly
    /// the jobs after the cursor and lets the shard walk its primary key.
    pub fn bound_in_shard(&self, shard: u16) -> String {
        let prefix = |ms: u64| format!("j{shard:02x}{ms:011x}");
        let own = prefix(self.created_ms);
        match self.id.as_str().cmp(own.as_str()) {
            // The cursor is in this shard (or sorts inside its prefix): compare whole ids.
            _ if self.id.starts_with(&own) => self.id.clone(),
            // Ties on the creation ms sort by id: a cursor from a later shard comes after
            // every job of this shard created in that ms, an earlier shard's before them.
            std::cmp::Ordering::Greater => prefix(self.created_ms.saturating_add(1)),
            _ => own,
        }
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (ms, id) = s.split_once('.')?;
        let id: JobId = id.parse().ok()?;
        // Ids hold the creation ms in 11 hex digits; a cursor beyond that names no job.
        let created_ms: u64 = ms.parse().ok().filter(|ms| *ms <= 0xfff_ffff_ffff)?;
        Some(Cursor { created_ms, id: id.to_string() })
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
    /// Only jobs whose id starts with this (lower-case hex after the `j`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_prefix: Option<String>,
    /// Only jobs whose payload or metadata holds this text, ignoring ASCII case. Sealed
    /// header values are stored encrypted, so a search never matches a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
    /// What a listing includes beyond summaries.
    #[serde(default)]
    pub include: Include,
    /// Only this tenant's jobs: always a `jobs` key's own; an admin's `tenant=` filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<crate::tenant::Tenant>,
}

/// Default and largest page size of a listing.
pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

/// Longest search text (`q`) of a listing, in characters.
pub const MAX_SEARCH: usize = 200;

/// Parses listing parameters (`state`, `type`, `tag`, `from`, `to`, `limit`, `cursor`) from
/// query pairs. Unknown parameters are refused so a typo never silently lists everything.
pub fn parse_list_params<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    allowed: &[&str],
) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery { limit: DEFAULT_PAGE, ..ListQuery::default() };
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        if seen.contains(&k) {
            return Err(ApiError::field(k, "is given more than once"));
        }
        seen.push(k);
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
            "tag" if crate::fields::is_tag(v) => q.tag = Some(v.to_owned()),
            // No job can carry it; its filter could not be answered (a pattern this long
            // is refused by the store).
            "tag" => return Err(ApiError::field("tag", crate::fields::TAG_RULE)),
            "tenant" => q.tenant = Some(crate::tenant::Tenant::from_field("tenant", v)?),
            "from" | "to" => {
                let t = crate::time::parse_rfc3339_bound(v)
                    .ok_or_else(|| ApiError::field(k, "must be an RFC 3339 timestamp"))?;
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
            "id_prefix" => {
                let ok = v.len() <= 30
                    && v.starts_with('j')
                    && v[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !ok {
                    return Err(ApiError::field(
                        "id_prefix",
                        "must be the start of a job id: `j` and up to 29 lower-case hex digits",
                    ));
                }
                q.id_prefix = Some(v.to_owned());
            }
            "q" => {
                let n = v.chars().count();
                if n == 0 || n > MAX_SEARCH || v.chars().any(char::is_control) {
                    return Err(ApiError::field(
                        "q",
                        format!("must be 1 to {MAX_SEARCH} characters of text, without control characters"),
                    ));
                }
                q.search = Some(v.to_owned());
            }
            "include" => {
                q.include = Include::parse(v)
                    .ok_or_else(|| ApiError::field("include", "must list some of payload, result, metadata"))?
            }
            _ => {}
        }
    }
    if let (Some(from), Some(to)) = (q.from_ms, q.to_ms)
        && from > to
    {
        return Err(ApiError::field("from", "must not be later than to"));
    }
    if q.include.any() && q.limit > MAX_PAGE_WITH_CONTENT {
        if seen.contains(&"limit") {
            return Err(ApiError::field(
                "limit",
                format!("must be at most {MAX_PAGE_WITH_CONTENT} when payloads, results or metadata are included"),
            ));
        }
        q.limit = MAX_PAGE_WITH_CONTENT;
    }
    Ok(q)
}

/// Merges per-shard pages (each newest first, each holding up to `limit + 1` rows) into
/// one page of at most `limit` jobs and the cursor of the next page, if there is one.
pub fn merge_pages(pages: Vec<Vec<Job>>, limit: u32) -> (Vec<Job>, Option<Cursor>) {
    merge_by(pages, limit, |j| (j.created_at, j.id.as_str()))
}

/// [`merge_pages`] for any item, given its `(created_ms, id)`.
pub fn merge_by<T>(pages: Vec<Vec<T>>, limit: u32, key: impl Fn(&T) -> (u64, &str)) -> (Vec<T>, Option<Cursor>) {
    let mut all: Vec<T> = pages.into_iter().flatten().collect();
    all.sort_by(|a, b| key(b).cmp(&key(a)));
    let more = all.len() > limit as usize;
    all.truncate(limit as usize);
    let next = if more {
        all.last().map(|j| {
            let (created_ms, id) = key(j);
            Cursor { created_ms, id: id.to_owned() }
        })
    } else {
        None
    };
    (all, next)
}

/// The parts of a job a listing leaves out unless asked for (`include=payload,result,metadata`):
/// a page of summaries stays small whatever the jobs hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Include {
    #[serde(default)]
    pub payload: bool,
    #[serde(default)]
    pub result: bool,
    #[serde(default)]
    pub metadata: bool,
}

impl Include {
    pub fn any(&self) -> bool {
        self.payload || self.result || self.metadata
    }

    /// Parses `payload,result,metadata` (any subset).
    pub fn parse(v: &str) -> Option<Include> {
        let mut inc = Include::default();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "payload" => inc.payload = true,
                "result" => inc.result = true,
                "metadata" => inc.metadata = true,
                _ => return None,
            }
        }
        Some(inc)
    }

    /// The JSON paths of a stored job a summary drops (`progress` always: it is the running
    /// attempt's, and can be as large as a result).
    pub fn dropped_paths(&self) -> Vec<&'static str> {
        // `$.lease`: a running native attempt's token, which only its holder may see.
        let mut out = vec!["$.progress", "$.attempts", "$.lease", "$.steps", "$.on_complete", "$.on_fail"];
        if !self.payload {
            out.push("$.payload");
        }
        if !self.result {
            out.push("$.result");
        }
        if !self.metadata {
            out.push("$.metadata");
        }
        out
    }
}

/// Largest page when payloads or results are included (each may be 128 or 64 KiB).
pub const MAX_PAGE_WITH_CONTENT: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_spec;
    use serde_json::json;

    const ALL: &[&str] = &["state", "type", "tag", "limit", "cursor"];

    #[test]
    fn a_cursor_beyond_what_ids_hold_is_refused() {
        // Found by fuzzing: u64::MAX ms overflowed the shard bound.
        assert!(Cursor::decode("18446744073709551615.j0d19aaed843fb00000000deadbeef").is_none());
        let last = Cursor::decode("17592186044415.j0d19aaed843fb00000000deadbeef").expect("11 hex digits of ms");
        assert!(last.bound_in_shard(15).starts_with("j0f"));
    }

    #[test]
    fn only_json_in_utf_8_is_accepted() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for bad in [
            "",
            "text/plain",
            "application/json-patch+json",
            "application/jsonx",
            "application/json; charset=latin1",
            "application/json; charset=utf-16",
            "application/json; boundary=x",
            "application/json; charset",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json_content_type(bad), "{bad}");
        }
    }

    #[test]
    fn list_params_table() {
        let q = parse_list_params([("state", "dead"), ("type", "noop"), ("limit", "5")], ALL).expect("valid");
        assert_eq!((q.state, q.job_type.as_deref(), q.limit), (Some(JobState::Dead), Some("noop"), 5));
        let long = "😍".repeat(16);
        let q = parse_list_params([("tag", long.as_str())], ALL).expect("a 64-byte tag");
        assert_eq!(q.tag.as_deref(), Some(long.as_str()));
        let too_long = format!("{long}x");
        for (k, v) in [
            ("state", "done"),
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "x"),
            ("cursor", "abc"),
            ("colour", "red"),
            ("tag", ""),
            ("tag", "a,b"),
            ("tag", too_long.as_str()),
        ] {
            let e = parse_list_params([(k, v)], ALL).expect_err(k);
            assert_eq!(e.field.as_deref(), Some(k));
        }
        let e = parse_list_params([("from", "2030-01-02T00:00:00Z"), ("to", "2030-01-01T00:00:00Z")], &["from", "to"])
            .expect_err("from > to");
        assert_eq!(e.field.as_deref(), Some("from"));
        let e = parse_list_params([("state", "dead"), ("state", "queued")], ALL).expect_err("twice");
        assert_eq!(e.field.as_deref(), Some("state"));
        let e = parse_list_params([("from", "2030-01-01T00:00:00+0é00")], &["from"]).expect_err("multibyte");
        assert_eq!(e.field.as_deref(), Some("from"));
        // A bound before 1970 is the epoch, not an error (the description allows any date-time).
        let q = parse_list_params(
            [("from", "1826-12-29T01:55:51.074177-09:45"), ("to", "1969-12-31T23:59:59Z")],
            &["from", "to"],
        )
        .expect("a bound before 1970");
        assert_eq!((q.from_ms, q.to_ms), (Some(0), Some(0)));
        let c = Cursor { created_ms: 5, id: JobId::new(3, 5, 9).to_string() };
        let q = parse_list_params([("cursor", c.encode().as_str())], ALL).expect("valid");
        assert_eq!(q.after, Some(c));
    }

    #[test]
    fn id_prefix_and_search_are_checked() {
        let all = &["id_prefix", "q"];
        let q = parse_list_params([("id_prefix", "j0a19"), ("q", "Invoice 42")], all).expect("valid");
        assert_eq!((q.id_prefix.as_deref(), q.search.as_deref()), (Some("j0a19"), Some("Invoice 42")));
        let long = "x".repeat(MAX_SEARCH + 1);
        let long_prefix = format!("j{}", "0".repeat(30));
        for (k, v) in [
            ("id_prefix", "0a19"),
            ("id_prefix", "jZZ"),
            ("id_prefix", "j0A"),
            ("id_prefix", "j%"),
            ("id_prefix", long_prefix.as_str()),
            ("q", ""),
            ("q", long.as_str()),
            ("q", "a\nb"),
        ] {
            let e = parse_list_params([(k, v)], all).expect_err(v);
            assert_eq!(e.field.as_deref(), Some(k), "{v:?}");
        }
        // Not allowed where the route does not list them.
        assert!(parse_list_params([("q", "a")], ALL).is_err());
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

    #[test]
    fn cursor_bounds_select_exactly_the_jobs_after_the_cursor_in_each_shard() {
        // Jobs in three shards, several sharing a creation ms; for every job taken as the
        // cursor, `id < bound` in each shard must equal the (created_at, id) order.
        let mut all: Vec<JobId> = Vec::new();
        for shard in 0..3u16 {
            for ms in [100u64, 101, 101, 102] {
                for r in [1u64, 0xffff_ffff_ffff_ffff] {
                    all.push(JobId::new(shard, ms, r ^ shard as u64));
                }
            }
        }
        for c in &all {
            let cursor = Cursor { created_ms: c.created_ms(), id: c.to_string() };
            for shard in 0..3u16 {
                let bound = cursor.bound_in_shard(shard);
                for j in all.iter().filter(|j| j.shard() == shard) {
                    let after = (j.created_ms(), j.as_str()) < (cursor.created_ms, cursor.id.as_str());
                    assert_eq!(j.as_str() < bound.as_str(), after, "cursor {c}, job {j}, bound {bound}");
                }
            }
        }
    }

    #[test]
    fn envelopes_split_by_lane_and_size_and_old_messages_still_parse() {
        let r = |n: u64| JobRef { id: JobId::new(2, n, n), attempt: 1, epoch: 0, trace: None };
        let mut refs: Vec<(Lane, JobRef)> = (0..250).map(|n| (Lane::Edge, r(n))).collect();
        refs.push((Lane::Native, r(999)));
        let e = envelopes(2, refs);
        assert_eq!(
            e.iter().map(|e| (e.lane, e.jobs.len())).collect::<Vec<_>>(),
            [(Lane::Edge, 100), (Lane::Edge, 100), (Lane::Edge, 50), (Lane::Native, 1)]
        );
        let size = serde_json::to_string(&e[0]).expect("encodes").len();
        assert!(size < 64 * 1024, "an envelope of 100 is {size} bytes");
        let old: QueueBody =
            serde_json::from_value(json!({ "id": r(5).id, "attempt": 3, "lane": "native" })).expect("old format");
        assert_eq!(old.refs(), vec![(Lane::Native, JobRef { id: r(5).id, attempt: 3, epoch: 0, trace: None })]);
        let new: QueueBody = serde_json::from_str(&serde_json::to_string(&e[3]).expect("encodes")).expect("parses");
        assert_eq!(new, QueueBody::Envelope(e[3].clone()));
    }

    #[test]
    fn send_batches_respect_the_message_and_byte_limits() {
        assert_eq!(send_batches(&[]), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(send_batches(&[10; 250]), vec![0..100, 100..200, 200..250]);
        let big = send_batches(&[60_000; 10]);
        assert!(big.iter().all(|r| r.len() <= 4), "{big:?}");
        assert_eq!(big.iter().map(|r| r.len()).sum::<usize>(), 10);
        // One message larger than the byte limit still goes alone (the runtime refuses it).
        assert_eq!(send_batches(&[300_000, 1]), vec![0..1, 1..2]);
    }
}
