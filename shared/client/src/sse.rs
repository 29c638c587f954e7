//! Server-Sent Events as the API writes them (#30): the parser (bytes in any pieces, events
//! out), and the reading of the two kinds a job's stream carries (`edgejobs-api`'s
//! `StateEvent` and `Chunk`).

use edgejobs_api::{Chunk, StateEvent};

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

impl Event {
    /// The data of a `state` event.
    pub fn state(&self) -> crate::Result<StateEvent> {
        serde_json::from_str(&self.data)
            .map_err(|e| crate::Error::Decode { what: "a state event".into(), reason: e.to_string() })
    }

    /// The data of a `chunk` event.
    pub fn chunk(&self) -> crate::Result<Chunk> {
        serde_json::from_str(&self.data)
            .map_err(|e| crate::Error::Decode { what: "a chunk event".into(), reason: e.to_string() })
    }
}

/// Builds events from an SSE body given in pieces of any size: a piece may end in the middle
/// of a line or of a UTF-8 character. `field: value` lines fill an event, a blank line hands
/// it over (if it has data), `:` lines are comments (the server's keepalives).
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    event: String,
    data: Vec<String>,
    id: Option<String>,
}

/// The longest line kept while waiting for its end: a stream that never ends a line does
/// not grow the buffer without bound (the API's lines are far shorter).
const MAX_LINE: usize = 4 << 20;

impl Parser {
    /// Takes the next piece of the body; returns the events it completes, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.partial);
            if let Some(ev) = self.line(&String::from_utf8_lossy(&line)) {
                out.push(ev);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        out
    }

    /// Takes one line (without its line break); returns the event a blank line completes.
    fn line(&mut self, line: &str) -> Option<Event> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let id = self.id.take();
            if data.is_empty() {
                return None;
            }
            let event = if event.is_empty() { "message".to_owned() } else { event };
            return Some(Event { event, data: data.join("\n"), id });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => self.data.push(value.to_owned()),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` is a browser's reconnection delay; the client's is its own backoff.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgejobs_api::JobState;

    fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
        Event { event: event.into(), data: data.into(), id: id.map(str::to_owned) }
    }

    fn parse_in_pieces(text: &[u8], size: usize) -> Vec<Event> {
        let mut p = Parser::default();
        text.chunks(size).flat_map(|c| p.push(c)).collect()
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
            assert_eq!(parse_in_pieces(text.as_bytes(), text.len().max(1)), want, "{text:?}");
        }
    }

    /// Every split of a body into pieces gives the same events as the whole: pieces that end
    /// inside a field name, a `\r\n`, or a multi-byte character.
    #[test]
    fn pieces_of_any_size_give_the_same_events() {
        let text = "retry: 1000\n\n: keepalive\r\n\r\nevent: chunk\r\nid: 1\r\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"héllo ✓\"}\r\n\r\nevent: state\ndata: {\"x\":\"ü\"}\n\n";
        let whole = parse_in_pieces(text.as_bytes(), text.len());
        assert_eq!(whole.len(), 2, "{whole:?}");
        assert_eq!(whole[0].chunk().expect("chunk").data, "héllo ✓");
        for size in 1..=text.len() {
            assert_eq!(parse_in_pieces(text.as_bytes(), size), whole, "pieces of {size} bytes");
        }
    }

    #[test]
    fn state_and_chunk_events_read_as_their_types() {
        let e = ev(
            "state",
            r#"{"id":"j01","type":"llm.chat","state":"active","attempt":2,"progress":{"percent":40},"metadata":{},"tags":[],"updated_at":"2026-12-06T10:00:00.123Z"}"#,
            None,
        );
        let s = e.state().expect("state");
        assert_eq!((s.state, s.attempt, s.job_type.as_str()), (JobState::Active, 2, "llm.chat"));
        assert_eq!(s.progress.as_ref().and_then(|p| p["percent"].as_u64()), Some(40));
        let c = ev("chunk", r#"{"attempt":1,"stream":"tokens","data":"Hel"}"#, Some("1")).chunk().expect("chunk");
        assert_eq!((c.attempt, c.stream.as_str(), c.data.as_str()), (1, "tokens", "Hel"));
        assert!(ev("chunk", "not json", None).chunk().is_err());
    }
}
