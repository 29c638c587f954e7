//! Waking an idle consumer the moment a job is handed off, instead of at its next poll.
//!
//! Upstash's REST API has no blocking reads (XREADGROUP's `BLOCK` and BLPOP/BRPOP are not
//! supported over REST), but it serves `SUBSCRIBE` as a Server-Sent Events stream:
//! `POST /subscribe/<channel>` answers `text/event-stream` and stays open, one `data:` line
//! per event (`data: subscribe,<channel>,1`, then `data: message,<channel>,<payload>`). The
//! edge's hand-off scripts (`shared/core/src/scripts.rs`) `PUBLISH` on `<stream>:wake` the
//! number of entries each call added, in the same script as the `XADD`s. This module holds
//! that subscription ([`subscribe`]) and turns each message into a wake-up of the poll loop
//! ([`Wake`]); the loop then reads at once.
//!
//! Pub/Sub delivers to whoever is subscribed at that instant and keeps nothing, so a wake-up
//! can be missed (while the subscription is being opened again, or on a silently dead
//! connection). Two things cover it: every time the subscription is (re)established the loop
//! reads once, and while subscribed it still reads every `EDGEJOBS_WAKE_POLL` (the fallback
//! poll). While the subscription is down, the loop polls as it always did (backing off from
//! `EDGEJOBS_POLL_MIN` to `EDGEJOBS_POLL_MAX`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use edgejobs_core::config::Secret;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The wake channel of a stream: the key the hand-off scripts publish on.
pub fn channel(stream: &str) -> String {
    format!("{stream}:wake")
}

/// What the poll loop shares with the subscription task.
#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    subscribed: AtomicBool,
}

impl Wake {
    /// Whether the subscription is open now (if not, the loop polls as before).
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Resolves at the next wake-up, or at once if one came since the last call (a wake-up
    /// that arrives while the loop is busy is kept, never lost; several coalesce into one).
    pub async fn woken(&self) {
        self.notify.notified().await
    }

    fn wake(&self) {
        self.notify.notify_one();
    }

    fn set_subscribed(&self, on: bool) {
        self.subscribed.store(on, Ordering::Relaxed);
        // Either way the loop should look now: a new subscription may have missed messages,
        // and a lost one means polling again.
        self.wake();
    }
}

/// One event of the stream, from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `data: subscribe,<channel>,<n>`: the subscription is open.
    Subscribed,
    /// `data: message,<channel>,<payload>`: a hand-off added entries.
    Message,
}

/// Reads one line of the event stream: `None` for anything else (SSE comments such as
/// keep-alives, blank separators, other channels, other kinds).
pub fn parse_line(line: &str, channel: &str) -> Option<Event> {
    let data = line.strip_prefix("data:")?.trim_start();
    let (kind, rest) = data.split_once(',')?;
    let (on, _payload) = rest.split_once(',')?;
    if on != channel {
        return None;
    }
    match kind {
        "subscribe" => Some(Event::Subscribed),
        "message" => Some(Event::Message),
        _ => None,
    }
}

/// Largest line kept while waiting for its end: a stream that sends more without a line
/// break is not Upstash's, and is dropped (and subscribed to again).
const MAX_LINE: usize = 64 * 1024;

/// Splits the stream's bytes into lines, across chunk boundaries.
#[derive(Debug, Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// The complete lines in `chunk` (with what came before it); `Err` when a line grows
    /// past [`MAX_LINE`].
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        self.partial.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            out.push(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        if self.partial.len() > MAX_LINE {
            return Err(format!("a line of more than {MAX_LINE} bytes"));
        }
        Ok(out)
    }
}

/// `channel` as one URL path segment (the stream keys we use need no escaping; anything
/// unusual is percent-encoded).
fn path_segment(channel: &str) -> String {
    channel
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b':' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where and how to subscribe.
#[derive(Debug, Clone)]
pub struct Target {
    pub upstash_url: String,
    pub token: Secret,
    pub channel: String,
}

/// Why a subscription ended.
#[derive(Debug)]
enum Ended {
    /// Stopped on purpose.
    Stopped,
    /// The server refused (an HTTP status): it may not serve subscriptions at all.
    Refused(u16),
    /// The connection failed or the stream ended.
    Lost(String),
}

/// Holds the subscription until `stop` fires: opens it, wakes the loop on each message, and
/// opens it again after a failure (backing off from 1 s to 30 s; 5 minutes after a refusal,
/// when the server may not serve subscriptions at all, so the consumer just polls).
pub async fn subscribe(wake: Arc<Wake>, target: Target, metrics: Arc<Metrics>, stop: CancellationToken) {
    // TCP keep-alive notices a connection that died silently (a NAT that forgot it), which
    // would otherwise look subscribed and deliver nothing.
    let http = match reqwest::Client::builder()
        .user_agent(concat!("edgejobs-consumer/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the wake-up client; polling only");
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let ended = once(&http, &wake, &target, &metrics, &stop).await;
        if wake.subscribed() {
            backoff = Duration::from_secs(1); // it was open: a fresh failure starts over
        }
        wake.set_subscribed(false);
        metrics.wake_subscribed.store(0, Ordering::Relaxed);
        let pause = match ended {
            Ended::Stopped => return,
            Ended::Refused(status) => {
                tracing::warn!(status, "Upstash refused the wake-up subscription; polling, trying again in 5 minutes");
                Duration::from_secs(300)
            }
            Ended::Lost(why) => {
                tracing::info!(
                    error = why,
                    retry_in_ms = backoff.as_millis() as u64,
                    "wake-up subscription lost; polling meanwhile"
                );
                let b = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                b
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One subscription, from the request to its end.
async fn once(
    http: &reqwest::Client,
    wake: &Wake,
    target: &Target,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Ended {
    let url = format!("{}/subscribe/{}", target.upstash_url.trim_end_matches('/'), path_segment(&target.channel));
    // Opening a subscription is one Upstash command.
    metrics.wake_subscribes.fetch_add(1, Ordering::Relaxed);
    let send = http
        .post(&url)
        .bearer_auth(target.token.expose())
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache")
        .send();
    let mut resp = tokio::select! {
        r = send => match r {
            Ok(r) => r,
            Err(e) => return Ended::Lost(e.without_url().to_string()),
        },
        _ = stop.cancelled() => return Ended::Stopped,
    };
    let status = resp.status().as_u16();
    if status != 200 {
        return if (400..500).contains(&status) && status != 429 {
            Ended::Refused(status)
        } else {
            Ended::Lost(format!("HTTP {status}"))
        };
    }
    let mut lines = Lines::default();
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.cancelled() => return Ended::Stopped,
        };
        let bytes = match chunk {
            Ok(Some(b)) => b,
            Ok(None) => return Ended::Lost("the event stream ended".into()),
            Err(e) => return Ended::Lost(e.without_url().to_string()),
        };
        let got = match lines.push(&bytes) {
            Ok(l) => l,
            Err(e) => return Ended::Lost(e),
        };
        for line in got {
            match parse_line(&line, &target.channel) {
                Some(Event::Subscribed) => {
                    tracing::info!(channel = target.channel, "subscribed to wake-ups");
                    metrics.wake_subscribed.store(1, Ordering::Relaxed);
                    wake.set_subscribed(true);
                }
                Some(Event::Message) => {
                    metrics.wakes.fetch_add(1, Ordering::Relaxed);
                    wake.wake();
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_upstash_event_lines() {
        let c = "edgejobs:jobs:wake";
        assert_eq!(parse_line("data: subscribe,edgejobs:jobs:wake,1", c), Some(Event::Subscribed));
        assert_eq!(parse_line("data: message,edgejobs:jobs:wake,3", c), Some(Event::Message));
        assert_eq!(parse_line("data:message,edgejobs:jobs:wake,3", c), Some(Event::Message));
        assert_eq!(parse_line("data: message,other,3", c), None, "another channel");
        assert_eq!(parse_line(": keepalive", c), None, "an SSE comment");
        assert_eq!(parse_line("", c), None);
        assert_eq!(parse_line("data: unsubscribe,edgejobs:jobs:wake,0", c), None);
        assert_eq!(parse_line("data: message", c), None);
    }

    #[test]
    fn lines_span_chunks_and_are_bounded() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"data: subscribe,c,1\n\nda").expect("ok"), vec!["data: subscribe,c,1", ""]);
        assert_eq!(l.push(b"ta: message,c,2\r\n").expect("ok"), vec!["data: message,c,2"]);
        assert!(l.push(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn channels_are_path_segments() {
        assert_eq!(channel("edgejobs:jobs"), "edgejobs:jobs:wake");
        assert_eq!(path_segment("edgejobs:jobs:wake"), "edgejobs:jobs:wake");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }

    #[tokio::test]
    async fn a_wake_up_that_comes_while_the_loop_is_busy_is_kept() {
        let w = Wake::default();
        w.wake();
        w.wake();
        // Kept (and coalesced): the next wait returns at once...
        tokio::time::timeout(Duration::from_secs(5), w.woken()).await.expect("kept");
        // ...and only once.
        assert!(tokio::time::timeout(Duration::from_millis(50), w.woken()).await.is_err());
    }
}
