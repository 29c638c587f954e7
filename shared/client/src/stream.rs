//! `EventStream`: an event stream of the API followed across dropped connections. A job's
//! stream resumes after its last chunk (`Last-Event-ID`) and ends after the job's final
//! state; the stream of many jobs is opened again until the caller drops it.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::client::Client;
use crate::error::Result;
use crate::sse::{Event, Parser};
use crate::transport::ByteStream;

/// The longest wait between two reconnections.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What [`EventStream::next`] saw.
#[derive(Debug)]
pub enum Step {
    /// A connection was opened (the first, or again after a drop). Events of the time the
    /// stream was down are lost, but a job's chunks, which the server resumes.
    Opened {
        again: bool,
    },
    Event(Event),
    /// The connection was lost (why); the next call waits `retry_in`, then opens it again.
    Dropped {
        why: String,
        retry_in: Duration,
    },
    /// A job's stream ended after its final state: nothing more will come.
    Ended,
}

/// An event stream followed across reconnections. Deadlines are the caller's: wrap
/// `next()` in the runtime's timeout (dropping the future loses nothing already read).
pub struct EventStream {
    client: Client,
    path: String,
    /// A job's stream, which ends once the job is final.
    one_job: bool,
    body: Option<ByteStream>,
    parser: Parser,
    pending: VecDeque<Event>,
    last_id: Option<String>,
    opened: bool,
    final_seen: bool,
    ended: bool,
    failures: u32,
    first_backoff: Duration,
    max_failures: u32,
    retry_in: Option<Duration>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("path", &self.path).field("last_id", &self.last_id).finish()
    }
}

impl EventStream {
    pub(crate) fn new(client: Client, path: String, one_job: bool) -> EventStream {
        EventStream {
            client,
            path,
            one_job,
            body: None,
            parser: Parser::default(),
            pending: VecDeque::new(),
            last_id: None,
            opened: false,
            final_seen: false,
            ended: false,
            failures: 0,
            first_backoff: Duration::from_secs(1),
            max_failures: 8,
            retry_in: None,
        }
    }

    /// The first wait before opening a dropped stream again (it doubles up to 30 s).
    /// Default 1 s.
    pub fn with_backoff(mut self, first: Duration) -> EventStream {
        self.first_backoff = first.clamp(Duration::from_millis(1), MAX_BACKOFF);
        self
    }

    /// Failed connections in a row after which `next` returns the last failure. Default 8
    /// (with the backoff doubling from 1 s to 30 s, about two and a half minutes).
    pub fn with_max_failures(mut self, n: u32) -> EventStream {
        self.max_failures = n.max(1);
        self
    }

    fn dropped(&mut self, why: String) -> Step {
        self.body = None;
        self.parser = Parser::default();
        let retry_in = self.first_backoff.saturating_mul(1 << self.failures.min(8)).min(MAX_BACKOFF);
        self.failures += 1;
        self.retry_in = Some(retry_in);
        Step::Dropped { why, retry_in }
    }

    /// The next thing that happens. A refusal of the first connection (a wrong key, a
    /// missing job) is returned as its error; later drops are retried, up to
    /// `max_failures` in a row, each reported as [`Step::Dropped`].
    pub async fn next(&mut self) -> Result<Step> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if ev.id.is_some() {
                    self.last_id.clone_from(&ev.id);
                }
                if self.one_job && ev.event == "state" && ev.state().is_ok_and(|s| s.state.is_final()) {
                    self.final_seen = true;
                }
                return Ok(Step::Event(ev));
            }
            if self.ended {
                return Ok(Step::Ended);
            }
            if let Some(wait) = self.retry_in {
                self.client.transport().sleep(wait).await;
                self.retry_in = None;
            }
            let Some(body) = &mut self.body else {
                match self.client.open_stream(&self.path, self.last_id.as_deref()).await {
                    Ok(s) => {
                        self.body = Some(s.body);
                        let again = self.opened;
                        (self.opened, self.failures) = (true, 0);
                        return Ok(Step::Opened { again });
                    }
                    Err(e) if !self.opened || !e.is_retryable() || self.failures + 1 >= self.max_failures => {
                        return Err(e);
                    }
                    Err(e) => return Ok(self.dropped(e.to_string())),
                }
            };
            match body.next().await {
                Some(Ok(bytes)) => {
                    let events = self.parser.push(&bytes);
                    self.pending.extend(events);
                }
                Some(Err(e)) => return Ok(self.dropped(e.to_string())),
                None if self.final_seen => {
                    self.body = None;
                    self.ended = true;
                }
                None => return Ok(self.dropped("the server ended the stream".to_owned())),
            }
        }
    }

    /// The next event, skipping the connection's ups and downs; `None` once a job's stream
    /// ended.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        loop {
            match self.next().await? {
                Step::Event(e) => return Ok(Some(e)),
                Step::Ended => return Ok(None),
                Step::Opened { .. } | Step::Dropped { .. } => {}
            }
        }
    }
}

impl Client {
    /// `GET /v1/jobs/{id}/events`: the job's `state` and `chunk` events, followed across
    /// dropped connections (resuming after the last chunk) until the job is final.
    pub fn job_events(&self, id: &str) -> EventStream {
        EventStream::new(self.clone(), format!("/v1/jobs/{}/events", crate::query::enc(id)), true)
    }

    /// `GET /v1/events`: the `state` events of every job the key sees (of `tag`), followed
    /// across dropped connections until dropped.
    pub fn events(&self, tag: Option<&str>) -> EventStream {
        let path = match tag {
            Some(t) => format!("/v1/events?tag={}", crate::query::enc(t)),
            None => "/v1/events".to_owned(),
        };
        EventStream::new(self.clone(), path, false)
    }
}
