//! A local stand-in for an OpenAI-compatible `/chat/completions` API (the real one is a
//! paid service outside this machine). It behaves like one: it checks the bearer key
//! (401 with OpenAI's error body), answers after a latency, can be told to answer a storm of
//! 429s with `Retry-After` or a run of 500s, and reports token usage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Script {
    /// Requests still to be answered 429, and the Retry-After to send.
    rate_limited: usize,
    retry_after_secs: u64,
    /// Requests still to be answered 500.
    server_errors: usize,
}

/// What the server and the test share.
#[derive(Debug, Clone)]
struct Shared {
    key: String,
    script: Arc<Mutex<Script>>,
    requests: Arc<AtomicUsize>,
    answered_429: Arc<AtomicUsize>,
    latency_ms: Arc<AtomicU64>,
}

/// The running fake (an axum server on its own runtime thread). Stops when dropped.
pub struct FakeLlm {
    pub base_url: String,
    pub key: String,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

fn error(status: u16, message: &str, kind: &str, code: &str) -> (u16, Value) {
    (status, json!({ "error": { "message": message, "type": kind, "code": code } }))
}

async fn handle(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut retry_after = None;
    let (status, answer) = if uri.path() != "/v1/chat/completions" {
        error(404, "Unknown request URL", "invalid_request_error", "unknown_url")
    } else if auth.as_deref() != Some(&format!("Bearer {}", s.key)) {
        error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    } else {
        let scripted = {
            let mut sc = s.script.lock().unwrap_or_else(|p| p.into_inner());
            if sc.rate_limited > 0 {
                sc.rate_limited -= 1;
                s.answered_429.fetch_add(1, Ordering::SeqCst);
                retry_after = Some(sc.retry_after_secs);
                Some(error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded"))
            } else if sc.server_errors > 0 {
                sc.server_errors -= 1;
                Some(error(
                    500,
                    "The server had an error while processing your request.",
                    "server_error",
                    "internal_error",
                ))
            } else {
                None
            }
        };
        match scripted {
            Some(answer) => answer,
            None => {
                tokio::time::sleep(Duration::from_millis(s.latency_ms.load(Ordering::SeqCst))).await;
                complete(&body)
            }
        }
    };
    let mut resp =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(answer)).into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

impl FakeLlm {
    pub fn start(key: &str) -> anyhow::Result<FakeLlm> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Shared {
            key: key.to_owned(),
            script: Arc::default(),
            requests: Arc::default(),
            answered_429: Arc::default(),
            latency_ms: Arc::new(AtomicU64::new(80)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let app = axum::Router::new().fallback(handle).with_state(state);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(FakeLlm {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            key: key.to_owned(),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The next `n` requests are answered 429 with `Retry-After: secs`.
    pub fn rate_limit_next(&self, n: usize, secs: u64) {
        let mut s = self.shared.script.lock().unwrap_or_else(|p| p.into_inner());
        s.rate_limited = n;
        s.retry_after_secs = secs;
    }

    /// The next `n` requests are answered 500.
    pub fn fail_next(&self, n: usize) {
        self.shared.script.lock().unwrap_or_else(|p| p.into_inner()).server_errors = n;
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn answered_429(&self) -> usize {
        self.shared.answered_429.load(Ordering::SeqCst)
    }
}

fn complete(body: &str) -> (u16, Value) {
    let Ok(req) = serde_json::from_str::<Value>(body) else {
        return error(
            400,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            "invalid_json",
        );
    };
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(400, "'messages' is a required property", "invalid_request_error", "missing_messages");
    };
    // As OpenAI answers for a model it does not have (what the edge cannot check at enqueue).
    if req["model"] == "no-such-model" {
        return error(404, "The model `no-such-model` does not exist", "invalid_request_error", "model_not_found");
    }
    let last = messages.last().and_then(|m| m["content"].as_str()).unwrap_or("");
    let prompt_tokens: usize =
        messages.iter().map(|m| m["content"].as_str().unwrap_or("").split_whitespace().count() + 4).sum();
    let content = format!("echo: {last}");
    let completion_tokens = content.split_whitespace().count();
    (
        200,
        json!({
            "id": format!("chatcmpl-{}", crate::stack::random_hex(8)),
            "object": "chat.completion",
            "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "model": req["model"].as_str().unwrap_or("fake-model"),
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens },
        }),
    )
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
