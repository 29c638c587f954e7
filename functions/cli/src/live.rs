//! Following the API's Server-Sent Events (#30): a job's stream (`get --wait`) and many
//! jobs' states (`tail`). A connection is read on a thread of its own, so the command waits
//! for its next event with a deadline (`--timeout`, `--for`) however long the server stays
//! silent; a dropped stream is opened again after a backoff, with `Last-Event-ID`.

use std::io::BufRead as _;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use edgejobs_api::JobState;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Api, Failure, Res};

/// The longest wait between two reconnections.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Consecutive failed connections after which following gives up with the last failure:
/// with the backoff doubling from 1 s to 30 s, about two and a half minutes without the API.
const MAX_FAILURES: u32 = 8;

/// One event as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `chunk`, `state`, or `message` when the server named none.
    pub event: String,
    /// The data lines, joined by `\n`.
    pub data: String,
    /// Its `id:` (a chunk's number), if it had one.
    pub id: Option<String>,
}

/// A job's state as a `state` event carries it.
#[derive(Debug, Clone, Deserialize)]
pub struct StateEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub job_type: String,
    pub state: JobState,
    pub attempt: u32,
    #[serde(default)]
    pub progress: Option<Value>,
    #[serde(default)]
    pub last_error: Option<String>,
    pub updated_at: String,
}

/// A piece of a job's stream as a `chunk` event carries it.
#[derive(Debug, Clone, Deserialize)]
pub struct Chunk {
    pub attempt: u32,
    pub stream: String,
    pub data: String,
}

/// Builds events from the lines of an SSE body: `field: value` lines fill an event, a blank
/// line hands it over (if it has data), `:` lines are comments (the server's keepalives).
#[derive(Debug, Default)]
pub struct Parser {
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

impl Parser {
    /// Takes one line (without its line break); returns the event a blank line completes.
    pub fn line(&mut self, line: &str) -> Option<Event> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let ev = std::mem::take(self);
            if ev.data.is_empty() {
                return None;
            }
            let event = if ev.event.is_empty() { "message".to_owned() } else { ev.event };
            return Some(Event { event, data: ev.data.join("\n"), id: ev.id });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` is the browser's reconnection delay; ours is the backoff above.
            _ => {}
        }
        None
    }
}

/// What one connection's thread reports.
enum Msg {
    Open,
    Event(Event),
    /// The connection ended: the server closed it, or reading failed (the reason).
    Ended(Option<String>),
    /// The API refused or could not be reached before any event.
    Failed(Failure),
}

/// Opens `path` on a thread of its own and reads its events there.
fn connect(api: &Api, path: &str, last_id: Option<&str>) -> Receiver<Msg> {
    let (tx, rx) = mpsc::channel();
    let (api, path, last_id) = (api.clone(), path.to_owned(), last_id.map(str::to_owned));
    std::thread::spawn(move || {
        let resp = match api.open_stream(&path, last_id.as_deref()) {
            Ok(r) => r,
            Err(f) => {
                let _ = tx.send(Msg::Failed(f));
                return;
            }
        };
        if tx.send(Msg::Open).is_err() {
            return;
        }
        let mut parser = Parser::default();
        for line in std::io::BufReader::new(resp).lines() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Msg::Ended(Some(e.to_string())));
                    return;
                }
            };
            // A send fails once the command stopped listening: the connection is dropped.
            if let Some(ev) = parser.line(&line)
                && tx.send(Msg::Event(ev)).is_err()
            {
                return;
            }
        }
        let _ = tx.send(Msg::Ended(None));
    });
    rx
}

/// What [`Follow::next`] saw.
#[derive(Debug)]
pub enum Step {
    /// A connection was opened (the first, or again after a drop). The events of the time
    /// the stream was down are lost, but a job's chunks, which the server resumes.
    Opened {
        again: bool,
    },
    Event(Event),
    /// The connection was lost (why), and is opened again after `retry_in`.
    Dropped {
        why: String,
        retry_in: Duration,
    },
    /// The deadline passed.
    Deadline,
}

/// An event stream followed across reconnections until a deadline.
pub struct Follow<'a> {
    api: &'a Api,
    path: String,
    deadline: Option<Instant>,
    rx: Option<Receiver<Msg>>,
    last_id: Option<String>,
    /// Whether a connection was ever opened: a refusal of the first one is final.
    opened: bool,
    failures: u32,
    first_backoff: Duration,
    retry_at: Option<Instant>,
}

impl<'a> Follow<'a> {
    /// Follows `path` (with its query) until `deadline` (`None`: until stopped); a dropped
    /// stream is opened again after `first_backoff`, doubling up to 30 s.
    pub fn new(api: &'a Api, path: &str, deadline: Option<Instant>, first_backoff: Duration) -> Follow<'a> {
        Follow {
            api,
            path: path.to_owned(),
            deadline,
            rx: None,
            last_id: None,
            opened: false,
            failures: 0,
            first_backoff: first_backoff.clamp(Duration::from_millis(100), MAX_BACKOFF),
            retry_at: None,
        }
    }

    /// Forgets the lost connection and sets when to open the next.
    fn dropped(&mut self, why: String) -> Step {
        self.rx = None;
        let retry_in = self.first_backoff.saturating_mul(1 << self.failures.min(8)).min(MAX_BACKOFF);
        self.failures += 1;
        self.retry_at = Some(Instant::now() + retry_in);
        Step::Dropped { why, retry_in }
    }

    /// The time left before the deadline (a day when there is none).
    fn left(&self) -> Option<Duration> {
        match self.deadline {
            Some(d) => d.checked_duration_since(Instant::now()).filter(|l| !l.is_zero()),
            None => Some(Duration::from_secs(86_400)),
        }
    }

    /// The next thing that happens: an opened connection, an event, or the deadline. A
    /// refusal of the first connection (a wrong key, a missing job, an API that cannot be
    /// reached) is returned as its failure; later drops and failures are retried, up to
    /// [`MAX_FAILURES`] in a row.
    pub fn next(&mut self) -> Res<Step> {
        loop {
            let Some(left) = self.left() else { return Ok(Step::Deadline) };
            if let Some(at) = self.retry_at {
                let wait = at.saturating_duration_since(Instant::now());
                if wait > left {
                    std::thread::sleep(left);
                    return Ok(Step::Deadline);
                }
                std::thread::sleep(wait);
                self.retry_at = None;
                continue;
            }
            let rx = match &self.rx {
                Some(rx) => rx,
                None => self.rx.insert(connect(self.api, &self.path, self.last_id.as_deref())),
            };
            match rx.recv_timeout(left) {
                Err(RecvTimeoutError::Timeout) => return Ok(Step::Deadline),
                Ok(Msg::Open) => {
                    let again = self.opened;
                    (self.opened, self.failures) = (true, 0);
                    return Ok(Step::Opened { again });
                }
                Ok(Msg::Event(ev)) => {
                    if ev.id.is_some() {
                        self.last_id.clone_from(&ev.id);
                    }
                    return Ok(Step::Event(ev));
                }
                Ok(Msg::Failed(f)) if !self.opened || !retryable(&f) || self.failures + 1 >= MAX_FAILURES => {
                    return Err(f);
                }
                Ok(Msg::Failed(Failure { message: why, .. }) | Msg::Ended(Some(why))) => return Ok(self.dropped(why)),
                Ok(Msg::Ended(None)) | Err(RecvTimeoutError::Disconnected) => {
                    return Ok(self.dropped("the server ended the stream".to_owned()));
                }
            }
        }
    }
}

/// Whether a failure may pass by itself: the API unreachable or unavailable (exit codes 1
/// and 6), not a refusal of the key or the request.
fn retryable(f: &Failure) -> bool {
    matches!(f.code, 1 | 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Event> {
        let mut p = Parser::default();
        text.split('\n').filter_map(|l| p.line(l)).collect()
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
        Event { event: event.into(), data: data.into(), id: id.map(str::to_owned) }
    }

    /// The server's events as it writes them: a retry line, keepalives, chunks with ids,
    /// states without; data lines joined; `\r\n` line ends and a missing space accepted.
    #[test]
    fn events_are_parsed_as_the_server_writes_them() {
        let cases: Vec<(&str, Vec<Event>)> = vec![
            ("retry: 2000\n\n: keepalive\n\n", vec![]),
            (
                "event: chunk\nid: 7\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\" world\"}\n\n",
                vec![ev("chunk", r#"{"attempt":1,"stream":"tokens","data":" world"}"#, Some("7"))],
            ),
            (
                "event: state\ndata: {\"a\":1}\n\nevent: state\ndata: 2\n\n",
                vec![ev("state", r#"{"a":1}"#, None), ev("state", "2", None)],
            ),
            ("data: one\ndata: two\n\n", vec![ev("message", "one\ntwo", None)]),
            ("event:state\r\ndata:x\r\n\r\n", vec![ev("state", "x", None)]),
            ("event: state\n\n", vec![]),
            ("event: chunk\nid: 3\ndata: a\nbogus\n\n", vec![ev("chunk", "a", Some("3"))]),
            // An event the stream cut off before its blank line is never handed over.
            ("event: chunk\nid: 4\ndata: partial", vec![]),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn state_and_chunk_events_read_as_their_types() {
        let s: StateEvent = serde_json::from_str(
            r#"{"id":"j01","type":"llm.chat","state":"active","attempt":2,"progress":{"percent":40,"message":"thinking"},"metadata":{},"tags":[],"updated_at":"2026-12-06T10:00:00.123Z"}"#,
        )
        .expect("state");
        assert_eq!((s.state, s.attempt, s.job_type.as_str()), (JobState::Active, 2, "llm.chat"));
        assert_eq!(s.progress.as_ref().and_then(|p| p["percent"].as_u64()), Some(40));
        let c: Chunk = serde_json::from_str(r#"{"attempt":1,"stream":"tokens","data":"Hel"}"#).expect("chunk");
        assert_eq!((c.attempt, c.stream.as_str(), c.data.as_str()), (1, "tokens", "Hel"));
    }

    #[test]
    fn only_unavailability_is_retried() {
        for (code, retry) in [(1, true), (6, true), (3, false), (4, false), (5, false)] {
            assert_eq!(retryable(&Failure::new(code, "x")), retry, "exit code {code}");
        }
    }
}
