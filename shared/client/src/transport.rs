//! The client's I/O behind one small trait: send a request, get a status, headers and a
//! body (whole, or as a stream of bytes for Server-Sent Events), and sleep. The real
//! transports are `ReqwestTransport` (native) and `FetchTransport` (a Worker); `fake.rs`
//! has the in-memory one the tests use.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::error::Result;

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One request: `url` is absolute (the client joins its base URL and the route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// The value of a header (names compared in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One answer, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A header's value among lower-case `(name, value)` pairs.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The body of a streamed answer, piece by piece as the network delivers it. Natively it
/// is `Send`, so it can move between a runtime's threads; a Worker's is not.
#[cfg(not(target_arch = "wasm32"))]
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>>> + Send>>;
#[cfg(target_arch = "wasm32")]
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>>>>>;

/// One answer whose body is read as it comes.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ByteStream,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming").field("status", &self.status).field("headers", &self.headers).finish()
    }
}

/// `Send + Sync` natively; nothing in wasm, where a transport may hold JavaScript values
/// (a service binding's `Fetcher`) and there is one thread.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send + Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + Sync> MaybeSend for T {}
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T> MaybeSend for T {}

/// How the client reaches the API. Natively the futures are `Send` (so the client works on
/// a multi-threaded runtime); in wasm they are not (a Worker's JavaScript values never are).
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Transport: std::fmt::Debug + MaybeSend {
    /// Sends a request and reads the whole answer. `Err` only when no answer came (the
    /// connection failed or timed out); any status is an `Ok`.
    async fn send(&self, req: Request) -> Result<Response>;

    /// Sends a request and returns as soon as the status and headers are in; the body is
    /// read from `Streaming::body`. A read that waits longer than the transport's read
    /// timeout ends the stream with an error.
    async fn stream(&self, req: Request) -> Result<Streaming>;

    /// Waits `d`: the client's backoff between retries. The runtime's own timer (tokio's,
    /// the Worker's); a test's fake returns at once and records the wait.
    async fn sleep(&self, d: Duration);
}
