//! The HTTP transport the client is generic over: one POST with headers, a body and a
//! timeout. Implementations: reqwest (native and wasm32), an in-memory scripted fake, and a
//! wrapper that injects failures and latency.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One request. `headers` may hold the token: never log this struct's headers.
#[derive(Clone)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest").field("url", &self.url).field("body", &self.body).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// The request did not produce a response (connection refused, timeout, DNS, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Sends one POST. On wasm32 futures are not `Send`, so the trait drops that bound there.
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Transport {
    async fn post(&self, req: HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// The reqwest transport. Natively it uses rustls for https; on wasm32 reqwest uses the
/// runtime's `fetch` (it works inside workerd) and applies the timeout with an AbortSignal.
#[cfg(feature = "reqwest")]
#[derive(Debug, Clone, Default)]
pub struct ReqwestTransport {
    client: reqwest::Client,
}

#[cfg(feature = "reqwest")]
impl ReqwestTransport {
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Transport for ReqwestTransport {
    async fn post(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let mut b = self.client.post(&req.url).body(req.body).timeout(req.timeout);
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        // reqwest's error Display names the URL, never headers, so no token can leak here.
        let resp = b.send().await.map_err(|e| TransportError(describe(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| TransportError(describe(&e)))?;
        Ok(HttpResponse { status, body })
    }
}

#[cfg(feature = "reqwest")]
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    #[cfg(not(target_arch = "wasm32"))]
    if e.is_connect() {
        return format!("cannot connect: {e}");
    }
    e.to_string()
}

/// An in-memory fake: answers from a script, in order, and records every request.
#[derive(Debug, Default)]
pub struct ScriptedTransport {
    replies: Mutex<VecDeque<Result<HttpResponse, TransportError>>>,
    seen: Mutex<Vec<HttpRequest>>,
}

impl ScriptedTransport {
    pub fn new(replies: impl IntoIterator<Item = Result<HttpResponse, TransportError>>) -> Self {
        ScriptedTransport { replies: Mutex::new(replies.into_iter().collect()), seen: Mutex::default() }
    }

    /// A 200 answer with this JSON body.
    pub fn ok(body: serde_json::Value) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse { status: 200, body: body.to_string() })
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Transport for ScriptedTransport {
    async fn post(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        if let Ok(mut s) = self.seen.lock() {
            s.push(req);
        }
        self.replies
            .lock()
            .ok()
            .and_then(|mut r| r.pop_front())
            .unwrap_or_else(|| Err(TransportError("script exhausted".into())))
    }
}

/// Wraps a transport: the first `fail_first` calls fail with a transport error, and every
/// call is delayed by `latency` (natively; latency is not injected on wasm32).
#[derive(Debug)]
pub struct Faulty<T> {
    pub inner: T,
    pub fail_first: usize,
    pub latency: Duration,
    calls: AtomicUsize,
}

impl<T> Faulty<T> {
    pub fn new(inner: T, fail_first: usize, latency: Duration) -> Self {
        Faulty { inner, fail_first, latency, calls: AtomicUsize::new(0) }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl<T: Transport + Send + Sync> Transport for Faulty<T> {
    async fn post(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        #[cfg(not(target_arch = "wasm32"))]
        if !self.latency.is_zero() {
            if self.latency > req.timeout {
                tokio::time::sleep(req.timeout).await;
                return Err(TransportError("timed out".into()));
            }
            tokio::time::sleep(self.latency).await;
        }
        if n < self.fail_first {
            return Err(TransportError(format!("injected failure {} of {}", n + 1, self.fail_first)));
        }
        self.inner.post(req).await
    }
}
