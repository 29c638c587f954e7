//! `SUBSCRIBE` over REST, as Upstash serves it: `POST` (or `GET`) `/subscribe/<channel>`
//! with `Accept: text/event-stream` answers a Server-Sent Events stream that stays open and
//! carries one `data:` line per event: `data: subscribe,<channel>,1` once subscribed, then
//! `data: message,<channel>,<payload>` for every message published on the channel (Upstash's
//! REST docs, "Subscribe & Publish Commands"; the official `@upstash/redis` client parses
//! exactly these lines and ignores others).
//!
//! Every subscription holds a Redis connection of its own (a subscribed connection can do
//! nothing else, and the shared multiplexed one must never wait), so their number is bounded
//! ([`MAX_SUBSCRIPTIONS`]): one more is refused with Upstash's words for too many
//! connections, `ERR max concurrent connections exceeded`. A quiet stream sends an SSE
//! comment line every [`KEEPALIVE`], so a client that went away is noticed (the write fails)
//! and its connection freed; clients skip comment lines, as SSE says.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most subscriptions (each a Redis connection) open at once.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// How often a quiet subscription sends a comment line.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The channel named by a `/subscribe/<channel>` path (percent-decoded, UTF-8), if the path
/// is one; `Some(Err)` for a subscribe path without a usable channel.
pub fn channel_of(path: &str) -> Option<Result<String, &'static str>> {
    let rest = path.strip_prefix("/subscribe")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None; // another command that merely starts with the word
    }
    let raw = rest.trim_start_matches('/');
    if raw.is_empty() || raw.contains('/') {
        return Some(Err("ERR /subscribe takes exactly one channel: /subscribe/<channel>"));
    }
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8();
    Some(decoded.map(|c| c.into_owned()).map_err(|_| "ERR the channel is not UTF-8 once percent-decoded"))
}

/// One SSE event line (`data: ...`), as Upstash writes it.
pub fn event(kind: &str, channel: &str, payload: &str) -> Bytes {
    // A payload with a line break would end the SSE line early; Upstash's format has no
    // escaping, so such a payload is sent with its line breaks as spaces.
    let payload = payload.replace(['\r', '\n'], " ");
    Bytes::from(format!("data: {kind},{channel},{payload}\n\n"))
}

/// The bounded pool of subscription slots a gateway shares, and the signal that ends them
/// all when the gateway stops (a graceful shutdown waits for open responses, and a
/// subscription's never ends by itself).
#[derive(Debug, Clone)]
pub struct Subscriptions {
    slots: Arc<Semaphore>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions {
            slots: Arc::new(Semaphore::new(MAX_SUBSCRIPTIONS)),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Subscriptions {
    /// Free slots (for tests and logs).
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    /// Ends every open subscription's stream (their clients see the stream end and
    /// subscribe again elsewhere or later); new ones are refused from now on.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.slots.close();
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

/// Answers a subscription: subscribes on a connection of its own, then streams events until
/// the client goes away (or Redis does, which ends the stream).
pub async fn subscribe(client: redis::Client, subs: &Subscriptions, channel: String) -> Response {
    let permit = match Arc::clone(&subs.slots).try_acquire_owned() {
        Ok(p) => p,
        Err(tokio::sync::TryAcquireError::Closed) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "ERR the gateway is stopping");
        }
        Err(tokio::sync::TryAcquireError::NoPermits) => {
            return error(StatusCode::TOO_MANY_REQUESTS, "ERR max concurrent connections exceeded");
        }
    };
    let connect = tokio::time::timeout(Duration::from_secs(5), async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    });
    let pubsub = match connect.await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &format!("ERR redis unreachable: {e}")),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "ERR redis unreachable: no answer within 5 s"),
    };
    let first = event("subscribe", &channel, "1");
    let messages = pubsub.into_on_message();
    let closing = subs.closing.subscribe();
    let state = Flow { messages: Box::pin(messages), channel, first: Some(first), closing, _permit: permit };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, std::io::Error>(first), s));
        }
        if *s.closing.borrow() {
            return None;
        }
        tokio::select! {
            _ = s.closing.changed() => None, // the gateway stops: end the stream
            m = s.messages.next() => {
                let m = m?; // the Redis connection ended: end the stream (the client reconnects)
                let payload: String = m.get_payload().unwrap_or_default();
                let bytes = event("message", &s.channel, &payload);
                Some((Ok(bytes), s))
            }
            _ = tokio::time::sleep(KEEPALIVE) => Some((Ok(Bytes::from_static(b": keepalive\n\n")), s)),
        }
    });
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream))
        .into_response()
}

/// What the event stream carries between events: the Redis messages, the channel's name,
/// the subscribe event still to send, and the slot it holds until dropped.
struct Flow {
    messages: std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>,
    channel: String,
    first: Option<Bytes>,
    closing: tokio::sync::watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_paths() {
        assert_eq!(channel_of("/subscribe/edgejobs:jobs:wake"), Some(Ok("edgejobs:jobs:wake".to_owned())));
        assert_eq!(channel_of("/subscribe/a%20b"), Some(Ok("a b".to_owned())));
        assert!(matches!(channel_of("/subscribe"), Some(Err(_))));
        assert!(matches!(channel_of("/subscribe/"), Some(Err(_))));
        assert!(matches!(channel_of("/subscribe/a/b"), Some(Err(_))));
        assert!(matches!(channel_of("/subscribe/%ff"), Some(Err(_))));
        assert_eq!(channel_of("/subscriber/x"), None);
        assert_eq!(channel_of("/get/k"), None);
        assert_eq!(channel_of("/"), None);
    }

    #[test]
    fn events_are_single_sse_lines() {
        assert_eq!(&event("message", "c", "3")[..], b"data: message,c,3\n\n");
        assert_eq!(&event("message", "c", "a\nb")[..], b"data: message,c,a b\n\n");
    }
}
