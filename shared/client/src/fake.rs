//! Test doubles of the transport (style.md #3): `FakeTransport` answers from a script and
//! records every request and every wait, so retries, pages and streams are tested without
//! a network or a clock; `Unreliable` fails the first calls of a real transport.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::{Request, Response, Streaming, Transport};

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// An answer read whole.
    Reply(Response),
    /// A streamed answer: status 200 and these pieces of body, then its end (or, with
    /// `fail_after`, a broken connection).
    Stream { pieces: Vec<Vec<u8>>, fail_after: bool },
    /// No answer: the connection failed.
    Fail(String),
}

impl Scripted {
    /// A JSON answer with `status` and extra headers.
    pub fn json(status: u16, body: &serde_json::Value, headers: &[(&str, &str)]) -> Scripted {
        let mut h: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
        h.extend(headers.iter().map(|(k, v)| ((*k).to_ascii_lowercase(), (*v).to_owned())));
        Scripted::Reply(Response { status, headers: h, body: body.to_string().into_bytes() })
    }

    /// An error answer as the API writes it.
    pub fn error(status: u16, code: &str, headers: &[(&str, &str)]) -> Scripted {
        Scripted::json(
            status,
            &serde_json::json!({ "error": { "code": code, "message": format!("a {code}") } }),
            headers,
        )
    }
}

/// Answers requests from a script, in order, and records them and the waits asked for.
#[derive(Debug, Default)]
pub struct FakeTransport {
    script: Mutex<VecDeque<Scripted>>,
    requests: Mutex<Vec<Request>>,
    sleeps: Mutex<Vec<Duration>>,
}

impl FakeTransport {
    pub fn new(script: Vec<Scripted>) -> FakeTransport {
        FakeTransport { script: Mutex::new(script.into()), ..FakeTransport::default() }
    }

    /// Every request sent so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every wait the client asked for (none was waited).
    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn take(&self, req: Request) -> Result<Scripted> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .ok_or_else(|| Error::Transport("the fake's script is used up".into()))
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Transport for FakeTransport {
    async fn send(&self, req: Request) -> Result<Response> {
        match self.take(req)? {
            Scripted::Reply(r) => Ok(r),
            Scripted::Fail(why) => Err(Error::Transport(why)),
            Scripted::Stream { .. } => Err(Error::Transport("a stream was scripted for a plain request".into())),
        }
    }

    async fn stream(&self, req: Request) -> Result<Streaming> {
        match self.take(req)? {
            Scripted::Reply(r) => {
                let body = futures_util::stream::iter([Ok(r.body)]);
                Ok(Streaming { status: r.status, headers: r.headers, body: Box::pin(body) })
            }
            Scripted::Fail(why) => Err(Error::Transport(why)),
            Scripted::Stream { pieces, fail_after } => {
                let mut items: Vec<Result<Vec<u8>>> = pieces.into_iter().map(Ok).collect();
                if fail_after {
                    items.push(Err(Error::Transport("connection reset".into())));
                }
                let headers = vec![("content-type".to_owned(), "text/event-stream".to_owned())];
                Ok(Streaming { status: 200, headers, body: Box::pin(futures_util::stream::iter(items)) })
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        self.sleeps.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }
}

/// A transport whose first `failures` sends fail as a lost connection would, then pass to
/// `inner`: how a test sees what the client does when the network breaks.
#[derive(Debug)]
pub struct Unreliable<T> {
    inner: T,
    failures: AtomicU32,
}

impl<T: Transport> Unreliable<T> {
    pub fn new(inner: T, failures: u32) -> Unreliable<T> {
        Unreliable { inner, failures: AtomicU32::new(failures) }
    }

    fn fail_now(&self) -> bool {
        self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl<T: Transport> Transport for Unreliable<T> {
    async fn send(&self, req: Request) -> Result<Response> {
        if self.fail_now() {
            return Err(Error::Transport("injected: connection refused".into()));
        }
        self.inner.send(req).await
    }

    async fn stream(&self, req: Request) -> Result<Streaming> {
        if self.fail_now() {
            return Err(Error::Transport("injected: connection refused".into()));
        }
        self.inner.stream(req).await
    }

    async fn sleep(&self, d: Duration) {
        self.inner.sleep(d).await;
    }
}

/// The API the README's examples run against (`cargo test --doc`): answers each route the
/// examples call with a plausible document, by route rather than by script.
#[derive(Debug, Default)]
struct DocApi;

fn doc_job(id: &str, state: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "type": "email.send", "tenant": "default", "lane": "edge", "state": state,
        "payload": {}, "attempt": 1, "series_base": 0, "max_attempts": 3,
        "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 60000 }, "timeout_ms": 30000,
        "tags": [], "metadata": {}, "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z", "run_at": "2026-01-01T00:00:00Z",
        "cancel_requested": false, "result": { "ok": true }
    })
}

fn doc_answer(req: &Request) -> Scripted {
    let path = req.url.split_once("//doc.test").map_or("", |(_, p)| p);
    match (req.method, path) {
        (_, p) if p.contains("missing") => Scripted::error(404, "job_not_found", &[]),
        (crate::Method::Post, "/v1/jobs") => Scripted::json(201, &doc_job("j01example", "queued"), &[]),
        (crate::Method::Post, "/v1/schedules") => Scripted::json(
            201,
            &serde_json::json!({ "name": "daily-report", "cron": "0 7 * * MON-FRI", "timezone": "Europe/Paris",
                "job": { "type": "report.build" }, "overlap": "skip", "catch_up": "none", "paused": false,
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "next_at": "2026-01-05T06:00:00Z", "runs": [], "runs_total": 0, "skips_total": 0, "overdue": false }),
            &[],
        ),
        (_, p) if p.ends_with("/events") => Scripted::Stream {
            pieces: vec![
                b"event: chunk\nid: 1\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"Hello\"}\n\n".to_vec(),
                b"event: state\ndata: {\"id\":\"j01example\",\"type\":\"llm.chat\",\"state\":\"completed\",\"attempt\":1,\"updated_at\":\"x\"}\n\n".to_vec(),
            ],
            fail_after: false,
        },
        (_, p) if p.starts_with("/v1/jobs/") => Scripted::json(200, &doc_job("j01example", "completed"), &[]),
        _ => Scripted::error(404, "not_found", &[]),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Transport for DocApi {
    async fn send(&self, req: Request) -> Result<Response> {
        FakeTransport::new(vec![doc_answer(&req)]).send(req).await
    }

    async fn stream(&self, req: Request) -> Result<Streaming> {
        FakeTransport::new(vec![doc_answer(&req)]).stream(req).await
    }

    async fn sleep(&self, _: Duration) {}
}

/// A client of the README's pretend API (for its doc tests only).
#[doc(hidden)]
pub fn doc_client() -> crate::Client {
    crate::Client::with_transport("http://doc.test", "ej_doc", std::sync::Arc::new(DocApi))
}
