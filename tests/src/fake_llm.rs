//! A local stand-in for an OpenAI-compatible `/chat/completions` API (the real one is a
//! paid service outside this machine). It behaves like one: it checks the bearer key
//! (401 with OpenAI's error body), answers after a latency, can be told to answer a storm of
//! 429s with `Retry-After`, a run of 500s, or streams that break off, and reports token usage.
//!
//! A request with `"stream": true` is answered as OpenAI streams (`text/event-stream`): one
//! `chat.completion.chunk` per token (`choices[0].delta.content`), a small delay apart, a
//! chunk with the finish reason, one with `usage` when `stream_options.include_usage` is
//! true, then `data: [DONE]`. The answer is deterministic: [`answer_tokens`] says exactly
//! which tokens a request gets, streamed or not.
//!
//! It is a small HTTP/1.1 server of its own on tokio (one request per connection), not an
//! axum app: a body that is written token by token needs a `Stream` type, and this crate has
//! no dependency that provides one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[derive(Debug, Default)]
struct Script {
    /// Requests still to be answered 429, and the Retry-After to send.
    rate_limited: usize,
    retry_after_secs: u64,
    /// Requests still to be answered 500.
    server_errors: usize,
    /// Streamed answers still to be cut off after half their tokens.
    broken_streams: usize,
    /// Tokens of an answer when the request sets no `max_tokens` (`None`: the echo).
    tokens: Option<usize>,
}

/// What the server and the test share.
#[derive(Debug, Clone)]
struct Shared {
    key: String,
    script: Arc<Mutex<Script>>,
    requests: Arc<AtomicUsize>,
    answered_429: Arc<AtomicUsize>,
    streamed_tokens: Arc<AtomicUsize>,
    latency_ms: Arc<AtomicU64>,
    token_delay_ms: Arc<AtomicU64>,
}

impl Shared {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running fake (a server on its own runtime thread). Stops when dropped.
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

/// The tokens of the answer to a request whose last message is `last`: `echo: {last}` cut
/// before each space (`["echo:", " hello", " there"]`; joined, exactly that text). With
/// `count`, exactly `count` tokens: the echo's, cut short or followed by `" {k}"` for the
/// k-th token (`["echo:", " hi", " 3", " 4"]`).
pub fn answer_tokens(last: &str, count: Option<usize>) -> Vec<String> {
    let text = format!("echo: {last}");
    let mut tokens: Vec<String> = Vec::new();
    for c in text.chars() {
        match tokens.last_mut() {
            Some(t) if c != ' ' => t.push(c),
            _ => tokens.push(c.to_string()),
        }
    }
    if let Some(n) = count {
        tokens.truncate(n);
        for k in tokens.len() + 1..=n {
            tokens.push(format!(" {k}"));
        }
    }
    tokens
}

fn error(status: u16, message: &str, kind: &str, code: &str) -> (u16, Value) {
    (status, json!({ "error": { "message": message, "type": kind, "code": code } }))
}

/// One parsed request.
#[derive(Debug)]
struct Request {
    path: String,
    authorization: Option<String>,
    body: String,
}

/// Reads one request (head and a `content-length` body); `None` when the peer went away or
/// sent something too large.
async fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let mut length = 0usize;
    let mut authorization = None;
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    if length > 4 * 1024 * 1024 {
        return None;
    }
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some(Request { path, authorization, body })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    }
}

/// Writes a whole JSON answer and closes.
async fn write_json(conn: &mut TcpStream, status: u16, body: &Value, retry_after: Option<u64>) {
    let body = body.to_string();
    let retry = retry_after.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// One chunk of a chunked body.
async fn write_chunk(conn: &mut TcpStream, data: &str) -> bool {
    let framed = format!("{:x}\r\n{data}\r\n", data.len());
    conn.write_all(framed.as_bytes()).await.is_ok() && conn.flush().await.is_ok()
}

async fn handle(s: Shared, mut conn: TcpStream) {
    let Some(req) = read_request(&mut conn).await else { return };
    s.requests.fetch_add(1, Ordering::SeqCst);
    if req.path != "/v1/chat/completions" {
        let (status, body) = error(404, "Unknown request URL", "invalid_request_error", "unknown_url");
        return write_json(&mut conn, status, &body, None).await;
    }
    if req.authorization.as_deref() != Some(&format!("Bearer {}", s.key)) {
        let (status, body) = error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key");
        return write_json(&mut conn, status, &body, None).await;
    }
    // (status, body, Retry-After) of a scripted failure; the token setting.
    let (scripted, tokens) = {
        let mut sc = s.script();
        let scripted = if sc.rate_limited > 0 {
            sc.rate_limited -= 1;
            s.answered_429.fetch_add(1, Ordering::SeqCst);
            let (status, body) = error(429, "Rate limit reached for requests.", "requests", "rate_limit_exceeded");
            Some((status, body, Some(sc.retry_after_secs)))
        } else if sc.server_errors > 0 {
            sc.server_errors -= 1;
            let (status, body) =
                error(500, "The server had an error while processing your request.", "server_error", "internal_error");
            Some((status, body, None))
        } else {
            None
        };
        (scripted, sc.tokens)
    };
    if let Some((status, body, retry_after)) = scripted {
        return write_json(&mut conn, status, &body, retry_after).await;
    }
    tokio::time::sleep(Duration::from_millis(s.latency_ms.load(Ordering::SeqCst))).await;
    let answer = match Answer::of(&req.body, tokens) {
        Ok(a) => a,
        Err((status, body)) => return write_json(&mut conn, status, &body, None).await,
    };
    if !answer.stream {
        return write_json(&mut conn, 200, &answer.completion(), None).await;
    }
    let broken = {
        let mut sc = s.script();
        let broken = sc.broken_streams > 0;
        sc.broken_streams = sc.broken_streams.saturating_sub(1);
        broken
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if conn.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let delay = Duration::from_millis(s.token_delay_ms.load(Ordering::SeqCst));
    let first = answer.chunk(json!({ "role": "assistant", "content": "" }), Value::Null);
    if !write_chunk(&mut conn, &format!("data: {first}\n\n")).await {
        return;
    }
    let cut = if broken { answer.tokens.len() / 2 } else { usize::MAX };
    for (i, token) in answer.tokens.iter().enumerate() {
        if i == cut {
            // A connection lost mid-answer: no last chunk of the body, no `[DONE]`.
            return;
        }
        tokio::time::sleep(delay).await;
        let chunk = answer.chunk(json!({ "content": token }), Value::Null);
        if !write_chunk(&mut conn, &format!("data: {chunk}\n\n")).await {
            return;
        }
        s.streamed_tokens.fetch_add(1, Ordering::SeqCst);
    }
    let mut tail = format!("data: {}\n\n", answer.chunk(json!({}), json!(answer.finish_reason)));
    if answer.include_usage {
        let mut usage = answer.chunk(json!({}), Value::Null);
        usage["choices"] = json!([]);
        usage["usage"] = answer.usage();
        tail.push_str(&format!("data: {usage}\n\n"));
    }
    tail.push_str("data: [DONE]\n\n");
    if write_chunk(&mut conn, &tail).await {
        let _ = conn.write_all(b"0\r\n\r\n").await;
    }
    let _ = conn.shutdown().await;
}

/// The answer to one valid request.
#[derive(Debug)]
struct Answer {
    id: String,
    created: u64,
    model: String,
    tokens: Vec<String>,
    finish_reason: &'static str,
    prompt_tokens: usize,
    stream: bool,
    include_usage: bool,
}

impl Answer {
    /// Checks the request as OpenAI does and makes its answer (`tokens`: the test's setting).
    fn of(body: &str, tokens: Option<usize>) -> Result<Answer, (u16, Value)> {
        let Ok(req) = serde_json::from_str::<Value>(body) else {
            return Err(error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                "invalid_json",
            ));
        };
        let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
            return Err(error(400, "'messages' is a required property", "invalid_request_error", "missing_messages"));
        };
        // As OpenAI answers for a model it does not have (what the edge cannot check at enqueue).
        if req["model"] == "no-such-model" {
            return Err(error(
                404,
                "The model `no-such-model` does not exist",
                "invalid_request_error",
                "model_not_found",
            ));
        }
        let last = messages.last().and_then(|m| m["content"].as_str()).unwrap_or("");
        let prompt_tokens: usize =
            messages.iter().map(|m| m["content"].as_str().unwrap_or("").split_whitespace().count() + 4).sum();
        // A request's `max_tokens` is how many it gets: this model always uses its budget.
        let max_tokens = req["max_tokens"].as_u64().and_then(|n| usize::try_from(n).ok());
        let tokens = answer_tokens(last, max_tokens.or(tokens));
        Ok(Answer {
            id: format!("chatcmpl-{}", crate::stack::random_hex(8)),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: req["model"].as_str().unwrap_or("fake-model").to_owned(),
            finish_reason: if max_tokens.is_some() { "length" } else { "stop" },
            tokens,
            prompt_tokens,
            stream: req["stream"] == true,
            include_usage: req["stream_options"]["include_usage"] == true,
        })
    }

    fn usage(&self) -> Value {
        let completion_tokens = self.tokens.len();
        json!({ "prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens })
    }

    /// The whole completion (a request without `stream`).
    fn completion(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": self.tokens.concat() },
                          "finish_reason": self.finish_reason }],
            "usage": self.usage(),
        })
    }

    /// One `chat.completion.chunk` of the stream.
    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
        })
    }
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
            streamed_tokens: Arc::default(),
            latency_ms: Arc::new(AtomicU64::new(80)),
            token_delay_ms: Arc::new(AtomicU64::new(5)),
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((conn, _)) = accepted {
                                tokio::spawn(handle(state.clone(), conn));
                            }
                        }
                        _ = &mut stopped => break,
                    }
                }
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
        let mut s = self.shared.script();
        s.rate_limited = n;
        s.retry_after_secs = secs;
    }

    /// The next `n` requests are answered 500.
    pub fn fail_next(&self, n: usize) {
        self.shared.script().server_errors = n;
    }

    /// The next `n` streamed answers break off after half their tokens (the connection is
    /// dropped: no end of the body, no `[DONE]`).
    pub fn break_next(&self, n: usize) {
        self.shared.script().broken_streams = n;
    }

    /// How many tokens an answer has when its request sets no `max_tokens` (`None`, the
    /// default: the echo of the last message, `echo: {last}`); see [`answer_tokens`].
    pub fn set_tokens(&self, n: Option<usize>) {
        self.shared.script().tokens = n;
    }

    /// The pause before each streamed token (default 5 ms).
    pub fn set_token_delay_ms(&self, ms: u64) {
        self.shared.token_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The pause before an answer starts (default 80 ms).
    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn answered_429(&self) -> usize {
        self.shared.answered_429.load(Ordering::SeqCst)
    }

    /// Tokens written in streamed answers so far.
    pub fn streamed_tokens(&self) -> usize {
        self.shared.streamed_tokens.load(Ordering::SeqCst)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_the_echo_or_exactly_the_tokens_asked_for() {
        assert_eq!(answer_tokens("hello there", None), ["echo:", " hello", " there"]);
        assert_eq!(answer_tokens("hello there", None).concat(), "echo: hello there");
        assert_eq!(answer_tokens("a  b", None).concat(), "echo: a  b", "the echo keeps every space");
        assert_eq!(answer_tokens("hi", Some(4)), ["echo:", " hi", " 3", " 4"]);
        assert_eq!(answer_tokens("hello there", Some(2)), ["echo:", " hello"]);
        assert_eq!(answer_tokens("x", Some(20)).len(), 20);
    }

    fn post(llm: &FakeLlm, body: &Value) -> reqwest::blocking::Response {
        reqwest::blocking::Client::new()
            .post(format!("{}/chat/completions", llm.base_url))
            .bearer_auth(&llm.key)
            .json(body)
            .send()
            .expect("answers")
    }

    /// The `data:` payloads of a streamed answer.
    fn events(text: &str) -> Vec<String> {
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_owned).collect()
    }

    #[test]
    fn streams_one_chunk_per_token_then_the_usage_and_done() {
        let llm = FakeLlm::start("sk-test").expect("starts");
        llm.set_latency_ms(0);
        llm.set_token_delay_ms(1);
        let msg = json!([{ "role": "user", "content": "hi" }]);
        let resp = post(
            &llm,
            &json!({ "messages": msg, "stream": true, "stream_options": { "include_usage": true }, "max_tokens": 6 }),
        );
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let events = events(&resp.text().expect("body"));
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> =
            events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).expect("json")).collect();
        let tokens: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(tokens.into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>(), answer_tokens("hi", Some(6)));
        assert_eq!(chunks.iter().filter(|c| c["object"] == "chat.completion.chunk").count(), chunks.len());
        let usage = &chunks.last().expect("usage")["usage"];
        assert_eq!(usage["completion_tokens"], 6);
        assert_eq!(llm.streamed_tokens(), 6);
        // Without `stream`, one completion with the same text.
        let whole: Value = post(&llm, &json!({ "messages": msg })).json().expect("json");
        assert_eq!(whole["choices"][0]["message"]["content"], "echo: hi");
        // Scripted failures come before any stream starts.
        llm.fail_next(1);
        assert_eq!(post(&llm, &json!({ "messages": msg, "stream": true })).status().as_u16(), 500);
        llm.rate_limit_next(1, 2);
        let limited = post(&llm, &json!({ "messages": msg, "stream": true }));
        assert_eq!((limited.status().as_u16(), limited.headers()["retry-after"].to_str().ok()), (429, Some("2")));
        // A broken stream ends without its last chunk: the client sees an error.
        llm.break_next(1);
        assert!(post(&llm, &json!({ "messages": msg, "stream": true, "max_tokens": 10 })).text().is_err());
    }
}
