//! A local stand-in for an OpenAI-compatible `/chat/completions` API (the real one is a
//! paid service outside this machine). It behaves like one: it checks the bearer key
//! (401 with OpenAI's error body), answers after a latency, can be told to answer a storm of
//! 429s with `Retry-After` or a run of 500s, and reports token usage.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tiny_http::{Header, Response, Server};

#[derive(Debug, Default)]
struct Script {
    /// Requests still to be answered 429, and the Retry-After to send.
    rate_limited: usize,
    retry_after_secs: u64,
    /// Requests still to be answered 500.
    server_errors: usize,
}

/// The running fake. Stops when dropped.
pub struct FakeLlm {
    pub base_url: String,
    pub key: String,
    script: Arc<Mutex<Script>>,
    requests: Arc<AtomicUsize>,
    answered_429: Arc<AtomicUsize>,
    latency_ms: Arc<AtomicU64>,
    server: Arc<Server>,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

fn error(status: u16, message: &str, kind: &str, code: &str) -> (u16, Value) {
    (status, json!({ "error": { "message": message, "type": kind, "code": code } }))
}

impl FakeLlm {
    pub fn start(key: &str) -> anyhow::Result<FakeLlm> {
        let server = Arc::new(Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("fake llm: {e}"))?);
        let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
        let fake = FakeLlm {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            key: key.to_owned(),
            script: Arc::default(),
            requests: Arc::default(),
            answered_429: Arc::default(),
            latency_ms: Arc::new(AtomicU64::new(80)),
            server: Arc::clone(&server),
        };
        let (script, requests, n429, latency, key) = (
            Arc::clone(&fake.script),
            Arc::clone(&fake.requests),
            Arc::clone(&fake.answered_429),
            Arc::clone(&fake.latency_ms),
            key.to_owned(),
        );
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let (script, requests, n429, latency, key) =
                    (Arc::clone(&script), Arc::clone(&requests), Arc::clone(&n429), Arc::clone(&latency), key.clone());
                std::thread::spawn(move || {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let mut body = String::new();
                    let _ = req.as_reader().read_to_string(&mut body);
                    let auth =
                        req.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.to_string());
                    let mut retry_after = None;
                    let (status, answer) = if req.url() != "/v1/chat/completions" {
                        error(404, "Unknown request URL", "invalid_request_error", "unknown_url")
                    } else if auth.as_deref() != Some(&format!("Bearer {key}")) {
                        error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                    } else {
                        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
                        if s.rate_limited > 0 {
                            s.rate_limited -= 1;
                            n429.fetch_add(1, Ordering::SeqCst);
                            retry_after = Some(s.retry_after_secs);
                            error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded")
                        } else if s.server_errors > 0 {
                            s.server_errors -= 1;
                            error(
                                500,
                                "The server had an error while processing your request.",
                                "server_error",
                                "internal_error",
                            )
                        } else {
                            drop(s);
                            std::thread::sleep(Duration::from_millis(latency.load(Ordering::SeqCst)));
                            complete(&body)
                        }
                    };
                    let mut resp = Response::from_string(answer.to_string()).with_status_code(status);
                    if let Ok(h) = Header::from_bytes("Content-Type", "application/json") {
                        resp.add_header(h);
                    }
                    if let Some(secs) = retry_after
                        && let Ok(h) = Header::from_bytes("Retry-After", secs.to_string())
                    {
                        resp.add_header(h);
                    }
                    let _ = req.respond(resp);
                });
            }
        });
        Ok(fake)
    }

    /// The next `n` requests are answered 429 with `Retry-After: secs`.
    pub fn rate_limit_next(&self, n: usize, secs: u64) {
        let mut s = self.script.lock().unwrap_or_else(|p| p.into_inner());
        s.rate_limited = n;
        s.retry_after_secs = secs;
    }

    /// The next `n` requests are answered 500.
    pub fn fail_next(&self, n: usize) {
        self.script.lock().unwrap_or_else(|p| p.into_inner()).server_errors = n;
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn answered_429(&self) -> usize {
        self.answered_429.load(Ordering::SeqCst)
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
        self.server.unblock();
    }
}
