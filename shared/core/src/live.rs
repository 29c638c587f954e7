//! Live results (#30): what a running attempt shows while it runs. A handler reports
//! `progress` (a percentage and a message), merges keys into the job's `metadata`, and emits
//! stream chunks (`ctx.stream("tokens", "Hel")`), all in one [`Update`] event, fenced by its
//! attempt (and, for a native attempt, its lease) like every other report. Progress and
//! metadata are stored on the job; chunks are rows of the shard's `live` table, numbered per
//! job (`n`, from 1), which is what a subscriber's `Last-Event-ID` resumes from.
//!
//! What a commit wrote is listed as [`Touched`] jobs in the plan's effects, which the
//! shard's object publishes to its subscribers after the commit.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::JobId;
use crate::job::{Job, JobState};
use crate::outcome::Refusal;

/// Longest progress message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 256;
/// Largest metadata object a job may hold (its JSON text), in bytes.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Longest stream name (`[A-Za-z0-9_.:-]`).
pub const MAX_STREAM_NAME: usize = 64;
/// Most bytes of chunk text one update may carry.
pub const MAX_UPDATE_BYTES: usize = 64 * 1024;
/// Most chunk bytes one attempt series of a job keeps (its stored rows); an update that
/// would pass it is refused (`live_limit`) and changes nothing.
pub const MAX_JOB_STREAM_BYTES: u64 = 1024 * 1024;
/// The longest long poll (`GET /v1/jobs/{id}?wait=`), in ms: 60 s.
pub const MAX_WAIT_MS: u64 = 60_000;
/// How long a final job's chunks stay readable after it ended, in ms (1 hour).
pub const RETENTION_MS: u64 = 3_600_000;

/// A running attempt's progress: `percent` from 0 to 100 and an optional message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Eq for Progress {}

/// A piece of a named stream, in the order the handler emitted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    pub stream: String,
    pub data: String,
}

/// What one update of a running attempt carries; any part may be absent. A consumer
/// coalesces a handler's calls between two flushes into one: the newest progress, the
/// metadata keys merged, the chunks in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Keys to merge into the job's metadata: a `null` value removes its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Chunk>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.progress.is_none() && self.metadata.is_none() && self.chunks.is_empty()
    }

    /// Folds a later update into this one (the consumer's coalescing): the later progress
    /// wins, metadata keys merge (later values win), chunks append.
    pub fn absorb(&mut self, later: Update) {
        if later.progress.is_some() {
            self.progress = later.progress;
        }
        if let Some(m) = later.metadata {
            self.metadata.get_or_insert_with(Map::new).extend(m);
        }
        self.chunks.extend(later.chunks);
    }

    /// The bytes of chunk text this update carries.
    pub fn chunk_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.data.len()).sum()
    }

    /// Checks what does not depend on the job: the progress range and message, stream
    /// names, sizes. `Err` names the field and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, m: String| Err((f.to_owned(), m));
        if let Some(p) = &self.progress {
            if !p.percent.is_finite() || !(0.0..=100.0).contains(&p.percent) {
                return bad("progress.percent", "must be a number from 0 to 100".into());
            }
            if p.message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE_BYTES) {
                return bad("progress.message", format!("at most {MAX_MESSAGE_BYTES} bytes"));
            }
        }
        for c in &self.chunks {
            if !is_stream_name(&c.stream) {
                return bad(
                    "chunks.stream",
                    format!("a stream name is 1 to {MAX_STREAM_NAME} characters of A-Z a-z 0-9 _ . : -"),
                );
            }
        }
        if self.chunk_bytes() > MAX_UPDATE_BYTES {
            return bad("chunks", format!("at most {MAX_UPDATE_BYTES} bytes of chunk text per update"));
        }
        Ok(())
    }
}

/// Whether `s` may name a stream.
pub fn is_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_STREAM_NAME
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

pub use crate::tape::{Row, Tape};

/// Applies an accepted update to the running attempt's job (the machine has fenced it):
/// progress replaced, metadata merged and capped, chunks numbered onto the tape.
pub fn apply(job: &mut Job, u: &Update, now: u64) -> Result<(), Refusal> {
    u.check().map_err(|(field, message)| Refusal::BadUpdate { field, message })?;
    let added = u.chunk_bytes() as u64;
    if job.tape.bytes.saturating_add(added) > MAX_JOB_STREAM_BYTES {
        return Err(Refusal::LiveLimit {
            message: format!(
                "the job's streams would hold {} bytes; the limit is {MAX_JOB_STREAM_BYTES}",
                job.tape.bytes.saturating_add(added)
            ),
        });
    }
    if let Some(m) = &u.metadata {
        let mut merged = job.metadata.clone();
        for (k, v) in m {
            if v.is_null() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        let len = serde_json::to_string(&merged).map_or(usize::MAX, |s| s.len());
        if len > MAX_METADATA_BYTES {
            return Err(Refusal::LiveLimit {
                message: format!("the job's metadata would be {len} bytes of JSON; the limit is {MAX_METADATA_BYTES}"),
            });
        }
        job.metadata = merged;
    }
    if let Some(p) = &u.progress {
        job.progress = serde_json::to_value(p).ok();
    }
    for c in &u.chunks {
        job.tape.n += 1;
        job.tape.bytes += c.data.len() as u64;
        job.tape.out.push(Row {
            n: job.tape.n,
            attempt: job.attempt,
            at: now,
            stream: c.stream.clone(),
            data: c.data.clone(),
        });
    }
    Ok(())
}

/// A job a commit wrote, as the shard's object tells its subscribers after the commit: the
/// chunks it added (in order), and whether it ended. The object reads the job itself, and
/// only when someone subscribed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub id: JobId,
    pub finished: bool,
    pub rows: Vec<Row>,
}

/// The body of a stream's `state` event: what changed shows here, the rest is
/// `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateView {
    pub id: JobId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub state: JobState,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub updated_at: u64,
}

impl StateView {
    pub fn of(job: &Job) -> StateView {
        StateView {
            id: job.id.clone(),
            job_type: job.job_type.clone(),
            state: job.state,
            attempt: job.attempt,
            progress: job.progress.clone(),
            metadata: job.metadata.clone(),
            result: job.result.clone(),
            last_error: job.last_error.clone(),
            tags: job.tags.clone(),
            updated_at: job.updated_at,
        }
    }
}

/// The body of a stream's `chunk` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkView {
    pub attempt: u32,
    pub stream: String,
    pub data: String,
}

/// One Server-Sent Event: `id`, `event` and the JSON `data` line, and the blank line.
pub fn sse(id: Option<u64>, event: &str, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    // JSON text has no raw newline, but a stray one would end the event early.
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// A stored chunk row as its SSE event.
pub fn chunk_event(r: &Row) -> String {
    let body = ChunkView { attempt: r.attempt, stream: r.stream.clone(), data: r.data.clone() };
    sse(Some(r.n), "chunk", &serde_json::to_string(&body).unwrap_or_default())
}

/// A job's state as its SSE event. It carries no `id`, so a client's `Last-Event-ID` stays
/// the newest chunk it got: a reconnect resumes the chunks exactly and gets the state anew.
pub fn state_event(view: &StateView) -> String {
    sse(None, "state", &serde_json::to_string(view).unwrap_or_default())
}

/// Parses a `Last-Event-ID` (or `?after=`): a chunk number. Anything else reads as none:
/// the subscriber gets the stream from its start.
pub fn parse_last_id(s: Option<&str>) -> u64 {
    s.and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        crate::spec::parse_spec(&serde_json::json!({ "type": "noop" }), 1000)
            .expect("valid")
            .into_job(JobId::new(0, 1000, 1), 1000)
            .0
    }

    fn chunk(s: &str, d: &str) -> Chunk {
        Chunk { stream: s.into(), data: d.into() }
    }

    #[test]
    fn updates_merge_metadata_number_chunks_and_keep_the_newest_progress() {
        let mut j = job();
        j.metadata.insert("keep".into(), Value::from(1));
        j.metadata.insert("drop".into(), Value::from(2));
        let mut meta = Map::new();
        meta.insert("drop".into(), Value::Null);
        meta.insert("new".into(), Value::from("x"));
        let u = Update {
            progress: Some(Progress { percent: 40.0, message: Some("half".into()) }),
            metadata: Some(meta),
            chunks: vec![chunk("tokens", "Hel"), chunk("tokens", "lo")],
        };
        apply(&mut j, &u, 7).expect("applies");
        assert_eq!(j.metadata.get("keep"), Some(&Value::from(1)));
        assert_eq!(j.metadata.get("drop"), None);
        assert_eq!(j.metadata.get("new"), Some(&Value::from("x")));
        assert_eq!(j.progress, Some(serde_json::json!({"percent": 40.0, "message": "half"})));
        assert_eq!(j.tape.out.iter().map(|r| (r.n, r.data.as_str())).collect::<Vec<_>>(), vec![(1, "Hel"), (2, "lo")]);
        assert_eq!((j.tape.n, j.tape.bytes), (2, 5));
    }

    #[test]
    fn bad_updates_are_refused_and_change_nothing() {
        let cases = [
            Update { progress: Some(Progress { percent: 101.0, message: None }), ..Default::default() },
            Update { progress: Some(Progress { percent: f64::NAN, message: None }), ..Default::default() },
            Update { progress: Some(Progress { percent: 1.0, message: Some("m".repeat(257)) }), ..Default::default() },
            Update { chunks: vec![chunk("", "x")], ..Default::default() },
            Update { chunks: vec![chunk("a b", "x")], ..Default::default() },
            Update { chunks: vec![chunk("t", &"x".repeat(MAX_UPDATE_BYTES + 1))], ..Default::default() },
        ];
        for u in cases {
            let mut j = job();
            let before = j.clone();
            assert!(matches!(apply(&mut j, &u, 1), Err(Refusal::BadUpdate { .. })), "{u:?}");
            assert_eq!(j, before);
        }
    }

    #[test]
    fn a_job_stream_and_its_metadata_are_capped() {
        let mut j = job();
        j.tape.bytes = MAX_JOB_STREAM_BYTES - 2;
        let before = j.clone();
        let over = Update { chunks: vec![chunk("t", "abc")], ..Default::default() };
        assert!(matches!(apply(&mut j, &over, 1), Err(Refusal::LiveLimit { .. })));
        assert_eq!(j, before);
        apply(&mut j, &Update { chunks: vec![chunk("t", "ab")], ..Default::default() }, 1).expect("fits exactly");
        let mut j = job();
        for i in 0..3 {
            let mut m = Map::new();
            m.insert(format!("k{i}"), Value::from("v".repeat(3000)));
            let r = apply(&mut j, &Update { metadata: Some(m), ..Default::default() }, 1);
            assert_eq!(r.is_err(), i == 2, "merge {i}");
        }
        assert_eq!(j.metadata.len(), 2, "the refused merge left the metadata as it was");
    }

    #[test]
    fn coalescing_keeps_order_and_the_newest_values() {
        let mut a = Update { chunks: vec![chunk("t", "1")], ..Default::default() };
        let mut m = Map::new();
        m.insert("k".into(), Value::from(1));
        a.absorb(Update {
            progress: Some(Progress { percent: 5.0, message: None }),
            metadata: Some(m.clone()),
            chunks: vec![chunk("t", "2")],
        });
        m.insert("k".into(), Value::from(2));
        a.absorb(Update { metadata: Some(m), chunks: vec![chunk("u", "3")], ..Default::default() });
        assert_eq!(a.chunks.iter().map(|c| c.data.as_str()).collect::<String>(), "123");
        assert_eq!(a.progress.map(|p| p.percent), Some(5.0));
        assert_eq!(a.metadata.and_then(|m| m.get("k").cloned()), Some(Value::from(2)));
    }

    #[test]
    fn sse_events_are_framed() {
        assert_eq!(sse(Some(3), "chunk", "{\"a\":1}"), "id: 3\nevent: chunk\ndata: {\"a\":1}\n\n");
        assert_eq!(sse(None, "x", "a\nb"), "event: x\ndata: a\ndata: b\n\n");
        assert_eq!(parse_last_id(Some(" 12 ")), 12);
        assert_eq!(parse_last_id(Some("x")), 0);
        assert_eq!(parse_last_id(None), 0);
    }
}

#[cfg(test)]
mod wire_tests {
    use crate::machine::Event;

    /// The update event's wire form, as consumers and SDKs write it.
    #[test]
    fn an_update_event_reads_from_its_wire_form() {
        let e: Event = serde_json::from_str(
            r#"{"event":"update","attempt":2,"progress":{"percent":50,"message":"m"},"metadata":{"a":1},"chunks":[{"stream":"tokens","data":"x"}]}"#,
        )
        .expect("parses");
        let Event::Update { attempt, update } = &e else { panic!("{e:?}") };
        assert_eq!((*attempt, update.chunks.len(), update.progress.as_ref().map(|p| p.percent)), (2, 1, Some(50.0)));
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).expect("encodes")).expect("round trip");
        assert_eq!(back, e);
        let bare: Event = serde_json::from_str(r#"{"event":"update","attempt":1}"#).expect("an empty update parses");
        assert!(matches!(bare, Event::Update { ref update, .. } if update.is_empty()));
        for bad in [
            r#"{"event":"update","attempt":1,"nope":1}"#,
            r#"{"event":"update","attempt":1,"chunks":[{"stream":"t","data":"x","extra":1}]}"#,
            r#"{"event":"update","attempt":1,"progress":{"percent":"x"}}"#,
        ] {
            assert!(serde_json::from_str::<Event>(bad).is_err(), "{bad}");
        }
    }
}
