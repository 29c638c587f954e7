//! `llm.chat`: an OpenAI/OpenRouter-compatible `POST <base>/chat/completions`.
//! Payload `{messages, model?, max_tokens?, temperature?}`. The result records the answer,
//! the model and the tokens used. A 429 pauses the `llm` upstream for its Retry-After and the
//! call is tried again within the attempt's time; 5xx are retried twice within the attempt,
//! then the attempt fails as retryable; other 4xx (bad request, bad key) are permanent.
//!
//! The answer is streamed (#30): the request asks for `stream: true` (with the usage in a
//! last chunk), the server-sent events are read as they come, and every piece of text
//! (`choices[0].delta.content`) goes to the job's `tokens` stream (`ctx.stream`), so a
//! subscriber sees the answer while it is written. An upstream that answers one JSON
//! completion instead is read as before (its whole text is one `tokens` chunk). A stream
//! that breaks before its end (`data: [DONE]`) fails the attempt as retryable.

use std::time::Duration;

use edgejobs_core::config::Secret;
use serde_json::{Value, json};

use super::{Handler, HandlerError, JobCtx, retry_after};
use crate::outbound::{Outgoing, SendError};

/// The upstream name llm.chat calls are limited under.
pub const UPSTREAM: &str = "llm";

#[derive(Debug, Clone)]
pub struct LlmChat {
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
}

#[async_trait::async_trait]
impl Handler for LlmChat {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        self.call(ctx, &ctx.job.payload).await
    }
}

impl LlmChat {
    /// Makes one chat call of `llm.chat`'s payload form (`{messages, model?, ...}`), for a workflow step or a handler of your own.
    pub async fn call(&self, ctx: &JobCtx, p: &Value) -> Result<Value, HandlerError> {
        let Some(key) = &self.api_key else {
            return Err(HandlerError::Permanent("no LLM API key is configured (EDGEJOBS_LLM_API_KEY)".into()));
        };
        let Some(messages) = p.get("messages").filter(|m| m.as_array().is_some_and(|a| !a.is_empty())) else {
            return Err(HandlerError::Permanent("payload.messages must be a non-empty array".into()));
        };
        let model = p.get("model").and_then(Value::as_str).unwrap_or(&self.model);
        let mut body = json!({
            "model": model, "messages": messages,
            "stream": true, "stream_options": { "include_usage": true },
        });
        for k in ["max_tokens", "temperature"] {
            if let Some(v) = p.get(k) {
                body[k] = v.clone();
            }
        }
        let url = format!("{}/chat/completions", self.base_url);
        let mut server_errors = 0;
        loop {
            tracing::debug!(job = %ctx.job.id, "llm acquire");
            ctx.upstreams.acquire(UPSTREAM, &ctx.metrics, &ctx.cancel).await;
            tracing::debug!(job = %ctx.job.id, "llm send");
            if ctx.cancel.is_cancelled() {
                return Err(HandlerError::Retryable("interrupted".into()));
            }
            // The API key goes to the base URL's origin only, never to a redirect elsewhere.
            let auth = [("authorization".to_owned(), format!("Bearer {}", key.expose()))];
            let out = Outgoing {
                method: reqwest::Method::POST,
                url: &url,
                secret_headers: &auth,
                headers: &[],
                json: Some(&body),
                deadline: ctx.deadline,
                trace: Some(&ctx.trace),
            };
            let resp = tokio::select! {
                r = ctx.outbound.send(&ctx.http, out) => r,
                _ = ctx.cancel.cancelled() => return Err(HandlerError::Retryable("interrupted".into())),
            };
            let resp = match resp {
                Ok(r) => r,
                Err(SendError::Refused(e)) => return Err(HandlerError::Permanent(format!("LLM API: {e}"))),
                Err(SendError::Network(e)) => {
                    return Err(HandlerError::Retryable(format!("LLM network error: {}", e.without_url())));
                }
            };
            let status = resp.status().as_u16();
            let wait = retry_after(resp.headers());
            tracing::debug!(job = %ctx.job.id, status, ?wait, "llm answered");
            if (200..=299).contains(&status) {
                return read_answer(ctx, resp, model).await;
            }
            let answer: Value =
                serde_json::from_str(&super::read_capped(resp, ctx.max_response_bytes).await).unwrap_or(Value::Null);
            match status {
                429 => {
                    ctx.upstreams.pause(UPSTREAM, wait);
                    // Try again within this attempt while its time allows; otherwise hand the
                    // wait to the edge's retry policy.
                    if ctx.remaining() <= wait + Duration::from_secs(1) {
                        return Err(HandlerError::RetryAfter { after: wait, message: "LLM rate limited (429)".into() });
                    }
                }
                500..=599 if server_errors < 2 => {
                    server_errors += 1;
                    let backoff = Duration::from_millis(500 * (1 << server_errors));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = ctx.cancel.cancelled() => return Err(HandlerError::Retryable("interrupted".into())),
                    }
                }
                500..=599 | 408 => {
                    return Err(HandlerError::Retryable(format!("LLM answered {status}: {}", error_message(&answer))));
                }
                _ => return Err(HandlerError::Permanent(format!("LLM answered {status}: {}", error_message(&answer)))),
            }
        }
    }
}

/// The stream the answer's text goes to.
pub const TOKENS: &str = "tokens";

/// Most characters of the answer kept in the result.
const KEPT_CHARS: usize = 32 * 1024;

/// Reads a 2xx answer up to the response cap: server-sent events (each text piece streamed
/// to [`TOKENS`] as it comes), or, when the body is one JSON object, a whole completion.
async fn read_answer(ctx: &JobCtx, mut resp: reqwest::Response, model: &str) -> Result<Value, HandlerError> {
    let cap = ctx.max_response_bytes;
    let mut read = 0usize;
    // The first byte that is not white space tells the two forms apart: `{` starts one JSON
    // completion, anything else (`data:`, a `:` comment) server-sent events.
    let mut json: Option<Vec<u8>> = None;
    let mut sse: Option<(SseLines, ChatStream)> = None;
    let mut streaming = true;
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = ctx.cancel.cancelled() => return Err(HandlerError::Retryable("interrupted".into())),
        };
        let bytes = match chunk {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                return Err(HandlerError::Retryable(format!("the LLM answer broke off: {}", e.without_url())));
            }
        };
        read += bytes.len();
        if read > cap {
            return Err(HandlerError::Retryable(format!(
                "the LLM answer passed {cap} bytes (EDGEJOBS_MAX_RESPONSE_BYTES)"
            )));
        }
        if json.is_none() && sse.is_none() {
            match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
                None => continue,
                Some(b'{') => json = Some(Vec::new()),
                Some(_) => sse = Some((SseLines::default(), ChatStream::default())),
            }
        }
        if let Some(buf) = &mut json {
            buf.extend_from_slice(&bytes);
            continue;
        }
        if let Some((lines, chat)) = &mut sse {
            for data in lines.feed(&bytes) {
                if let Some(piece) = chat.event(&data)?
                    && streaming
                    && let Err(e) = ctx.stream(TOKENS, piece)
                {
                    // The live sender logged the refusal; the answer is still worth finishing.
                    tracing::debug!(job = %ctx.job.id, error = %e, "no more tokens are streamed");
                    streaming = false;
                }
            }
            if chat.done {
                return Ok(chat.result(model));
            }
        }
    }
    match (json, sse) {
        (Some(buf), _) => {
            let answer: Value = serde_json::from_slice(&buf).unwrap_or(Value::Null);
            let result = parse_answer(&answer, model)?;
            if let Some(text) = result["content"].as_str()
                && let Err(e) = ctx.stream(TOKENS, text)
            {
                tracing::debug!(job = %ctx.job.id, error = %e, "the answer is not streamed");
            }
            Ok(result)
        }
        (None, Some((mut lines, mut chat))) => {
            if let Some(data) = lines.finish()
                && let Some(piece) = chat.event(&data)?
                && streaming
            {
                let _ = ctx.stream(TOKENS, piece);
            }
            // A stream that said how it finished is whole even without `[DONE]`.
            if chat.done || !chat.finish_reason.is_null() {
                Ok(chat.result(model))
            } else {
                Err(HandlerError::Retryable("the LLM answer stream ended before its end ([DONE])".into()))
            }
        }
        (None, None) => Err(HandlerError::Retryable("the LLM answered with an empty body".into())),
    }
}

/// Server-sent events from bytes that arrive in pieces: a line (or a UTF-8 character) cut
/// by a network read is read once it is whole. Answers each event's `data` (its `data:`
/// lines joined by newlines); comments (`:` lines, OpenRouter's keep-alives) and other
/// fields are skipped.
#[derive(Debug, Default)]
pub struct SseLines {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseLines {
    /// Feeds bytes; answers the data of every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                out.extend(self.data.take());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        out
    }

    /// The end of the stream: an event whose blank line never came (its last line may lack
    /// its newline too).
    pub fn finish(&mut self) -> Option<String> {
        let completed = if self.buf.is_empty() { None } else { self.feed(b"\n").pop() };
        completed.or_else(|| self.data.take())
    }
}

/// What the chunks of a streamed chat completion said so far.
#[derive(Debug, Default)]
pub struct ChatStream {
    pub content: String,
    pub model: Option<String>,
    pub finish_reason: Value,
    pub usage: Value,
    /// `data: [DONE]` arrived.
    pub done: bool,
}

impl ChatStream {
    /// One event's data: the piece of text it adds (if any). An error the upstream reports
    /// inside the stream fails the attempt as retryable; a chunk that is not JSON is skipped.
    pub fn event(&mut self, data: &str) -> Result<Option<String>, HandlerError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else { return Ok(None) };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return Err(HandlerError::Retryable(format!("LLM stream failed: {}", error_message(&chunk))));
        }
        if let Some(m) = chunk["model"].as_str() {
            self.model = Some(m.to_owned());
        }
        if chunk["usage"].is_object() {
            self.usage = chunk["usage"].clone();
        }
        let choice = &chunk["choices"][0];
        if !choice["finish_reason"].is_null() {
            self.finish_reason = choice["finish_reason"].clone();
        }
        match choice["delta"]["content"].as_str() {
            Some(piece) if !piece.is_empty() => {
                self.content.push_str(piece);
                Ok(Some(piece.to_owned()))
            }
            _ => Ok(None),
        }
    }

    /// The result, shaped as a whole completion's.
    pub fn result(&self, model: &str) -> Value {
        shape(&self.content, self.model.as_deref().unwrap_or(model), &self.finish_reason, &self.usage)
    }
}

fn shape(content: &str, model: &str, finish_reason: &Value, usage: &Value) -> Value {
    json!({
        "content": content.chars().take(KEPT_CHARS).collect::<String>(),
        "model": model,
        "finish_reason": finish_reason,
        "usage": {
            "prompt_tokens": usage["prompt_tokens"].as_u64().unwrap_or(0),
            "completion_tokens": usage["completion_tokens"].as_u64().unwrap_or(0),
            "total_tokens": usage["total_tokens"].as_u64().unwrap_or(0),
        },
    })
}

fn error_message(answer: &Value) -> String {
    answer["error"]["message"].as_str().unwrap_or("no error message").chars().take(500).collect()
}

fn parse_answer(answer: &Value, model: &str) -> Result<Value, HandlerError> {
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| HandlerError::Retryable("LLM answer without choices[0].message.content".into()))?;
    Ok(shape(
        content,
        answer["model"].as_str().unwrap_or(model),
        &answer["choices"][0]["finish_reason"],
        &answer["usage"],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeEdge;
    use edgejobs_core::machine::Event;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn parses_an_openai_answer_and_its_usage() {
        let a = json!({ "model": "m1", "choices": [{ "message": { "role": "assistant", "content": "hi" }, "finish_reason": "stop" }],
                        "usage": { "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7 } });
        let r = parse_answer(&a, "default").expect("valid");
        assert_eq!(r["content"], "hi");
        assert_eq!(r["usage"]["total_tokens"], 7);
        assert!(parse_answer(&json!({}), "m").is_err());
    }

    fn delta(piece: &str) -> String {
        let chunk = json!({ "object": "chat.completion.chunk", "model": "m2",
                            "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }] });
        format!("data: {chunk}\n\n")
    }

    /// A whole streamed answer: a role chunk, `pieces`, the finish, the usage, `[DONE]`.
    fn stream_of(pieces: &[&str]) -> String {
        let mut out = String::from(": OPENROUTER PROCESSING\n\n");
        out.push_str(&format!(
            "data: {}\n\n",
            json!({ "choices": [{ "delta": { "role": "assistant", "content": "" } }] })
        ));
        for p in pieces {
            out.push_str(&delta(p));
        }
        out.push_str(&format!("data: {}\r\n\r\n", json!({ "choices": [{ "delta": {}, "finish_reason": "stop" }] })));
        let usage = json!({ "prompt_tokens": 3, "completion_tokens": pieces.len(), "total_tokens": 3 + pieces.len() });
        out.push_str(&format!("data: {}\n\n", json!({ "choices": [], "usage": usage })));
        out.push_str("data: [DONE]\n\n");
        out
    }

    /// Feeds `text` cut at every position in `cuts` (byte offsets), as network reads would.
    fn feed_cut(text: &str, cuts: &[usize]) -> (Vec<String>, ChatStream) {
        let (mut lines, mut chat) = (SseLines::default(), ChatStream::default());
        let mut pieces = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([text.len()].iter()) {
            for data in lines.feed(&text.as_bytes()[at..cut]) {
                pieces.extend(chat.event(&data).expect("no error"));
            }
            at = cut;
        }
        (pieces, chat)
    }

    #[test]
    fn sse_chunks_cut_anywhere_across_reads_give_the_same_tokens_and_usage() {
        let text = stream_of(&["Hé", "llo", " wörld"]);
        // Every single cut, a cut inside the two-byte é, and one byte per read.
        let e = text.find('é').expect("é") + 1;
        let mut cases: Vec<Vec<usize>> = (1..text.len()).map(|c| vec![c]).collect();
        cases.push(vec![e]);
        cases.push((1..text.len()).collect());
        for cuts in cases {
            let (pieces, chat) = feed_cut(&text, &cuts);
            assert_eq!(pieces, ["Hé", "llo", " wörld"], "cut at {cuts:?}");
            assert!(chat.done, "[DONE] seen");
            let r = chat.result("default");
            assert_eq!(r["content"], "Héllo wörld");
            assert_eq!((r["model"].clone(), r["finish_reason"].clone()), (json!("m2"), json!("stop")));
            assert_eq!(r["usage"], json!({ "prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6 }));
        }
    }

    #[test]
    fn sse_events_join_data_lines_and_an_unfinished_last_event_is_kept() {
        let mut lines = SseLines::default();
        assert_eq!(lines.feed(b"event: x\nid: 1\ndata: a\ndata:b\n\n: c\n\n"), ["a\nb"]);
        assert!(lines.feed(b"data: [DONE]").is_empty());
        assert_eq!(lines.finish().as_deref(), Some("[DONE]"));
        let mut chat = ChatStream::default();
        let err = chat.event(r#"{"error":{"message":"upstream overloaded","code":502}}"#);
        assert!(matches!(err, Err(HandlerError::Retryable(m)) if m.contains("upstream overloaded")));
        assert_eq!(chat.event("not json").expect("skipped"), None);
    }

    /// A loopback LLM API answering every request with `answer` (a status and body parts,
    /// each written on its own, a moment apart, then the connection closed); records the
    /// request bodies.
    async fn fake_llm(content_type: &'static str, parts: Vec<String>) -> (u16, Arc<Mutex<Vec<Value>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = Arc::clone(&bodies);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let body = loop {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + len {
                        break serde_json::from_slice::<Value>(&buf[end..end + len]).ok();
                    }
                };
                log.lock().expect("log").extend(body);
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(head.as_bytes()).await;
                for part in &parts {
                    let _ = conn.write_all(part.as_bytes()).await;
                    let _ = conn.flush().await;
                    // Apart, so the reads of the client see the cuts (the result does not depend on it).
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                let _ = conn.shutdown().await;
            }
        });
        (port, bodies)
    }

    fn chat(port: u16) -> LlmChat {
        LlmChat {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            api_key: Some(Secret::new("sk-test")),
            model: "default-model".into(),
        }
    }

    /// The chunks of stream `tokens` the edge received, in order.
    fn tokens(edge: &FakeEdge) -> Vec<String> {
        edge.events()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Update { update, .. } => Some(update.chunks),
                _ => None,
            })
            .flatten()
            .filter(|c| c.stream == TOKENS)
            .map(|c| c.data)
            .collect()
    }

    #[tokio::test]
    async fn llm_chat_streams_every_token_and_returns_the_whole_answer() {
        let pieces: Vec<String> = (0..30).map(|i| format!(" tok{i}")).collect();
        let text = stream_of(&pieces.iter().map(String::as_str).collect::<Vec<_>>());
        // Cut every 97 bytes: lines, JSON and blank lines split across reads.
        let parts: Vec<String> = text.as_bytes().chunks(97).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        assert_eq!(parts.concat(), text, "ASCII only, so the cuts keep every byte");
        let (port, bodies) = fake_llm("text/event-stream", parts).await;
        let edge = FakeEdge::start().await;
        let job = crate::testing::job(1);
        let ctx = crate::testing::ctx(&job, &edge, std::time::Duration::from_millis(5), &format!("127.0.0.1:{port}"));
        let p = json!({ "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 50 });
        let r = chat(port).call(&ctx, &p).await.expect("completes");
        ctx.live.close().await;
        assert_eq!(r["content"], pieces.concat());
        assert_eq!(r["model"], "m2");
        assert_eq!(r["usage"]["completion_tokens"], 30);
        assert_eq!(tokens(&edge), pieces, "every token, in order");
        let sent = bodies.lock().expect("log").clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["stream"], true);
        assert_eq!(sent[0]["stream_options"], json!({ "include_usage": true }));
        assert_eq!((sent[0]["model"].clone(), sent[0]["max_tokens"].clone()), (json!("default-model"), json!(50)));
    }

    #[tokio::test]
    async fn a_plain_json_completion_still_works_and_is_one_chunk() {
        let answer = json!({ "model": "m1", "choices": [{ "message": { "role": "assistant", "content": "echo: hi" }, "finish_reason": "stop" }],
                             "usage": { "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7 } });
        let text = format!("  {answer}");
        let parts = vec![text[..10].to_owned(), text[10..].to_owned()];
        let (port, _) = fake_llm("application/json", parts).await;
        let edge = FakeEdge::start().await;
        let job = crate::testing::job(1);
        let ctx = crate::testing::ctx(&job, &edge, std::time::Duration::from_millis(5), &format!("127.0.0.1:{port}"));
        let p = json!({ "messages": [{ "role": "user", "content": "hi" }] });
        let r = chat(port).call(&ctx, &p).await.expect("completes");
        ctx.live.close().await;
        assert_eq!(r, parse_answer(&answer, "x").expect("valid"), "the same result as before streaming");
        assert_eq!(tokens(&edge), ["echo: hi"]);
    }

    #[tokio::test]
    async fn a_stream_that_breaks_off_fails_the_attempt_as_retryable() {
        let text = stream_of(&["a", "b"]);
        let cut = text.find("\"b\"").expect("b");
        let (port, _) = fake_llm("text/event-stream", vec![text[..cut].to_owned()]).await;
        let edge = FakeEdge::start().await;
        let job = crate::testing::job(1);
        let ctx = crate::testing::ctx(&job, &edge, std::time::Duration::from_millis(5), &format!("127.0.0.1:{port}"));
        let p = json!({ "messages": [{ "role": "user", "content": "hi" }] });
        let r = chat(port).call(&ctx, &p).await;
        assert!(matches!(&r, Err(HandlerError::Retryable(m)) if m.contains("[DONE]")), "{r:?}");
        ctx.live.close().await;
        assert_eq!(tokens(&edge), ["a"], "what came before the break was streamed");
    }
}
