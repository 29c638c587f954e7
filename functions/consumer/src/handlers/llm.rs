//! `llm.chat`: an OpenAI/OpenRouter-compatible `POST <base>/chat/completions`.
//! Payload `{messages, model?, max_tokens?, temperature?}`. The result records the answer,
//! the model and the tokens used. A 429 pauses the `llm` upstream for its Retry-After and the
//! call is tried again within the attempt's time; 5xx are retried twice within the attempt,
//! then the attempt fails as retryable; other 4xx (bad request, bad key) are permanent.

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
        let mut body = json!({ "model": model, "messages": messages });
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
            let answer: Value =
                serde_json::from_str(&super::read_capped(resp, ctx.max_response_bytes).await).unwrap_or(Value::Null);
            match status {
                200..=299 => return parse_answer(&answer, model),
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

fn error_message(answer: &Value) -> String {
    answer["error"]["message"].as_str().unwrap_or("no error message").chars().take(500).collect()
}

fn parse_answer(answer: &Value, model: &str) -> Result<Value, HandlerError> {
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| HandlerError::Retryable("LLM answer without choices[0].message.content".into()))?;
    let usage = &answer["usage"];
    Ok(json!({
        "content": content.chars().take(32 * 1024).collect::<String>(),
        "model": answer["model"].as_str().unwrap_or(model),
        "finish_reason": answer["choices"][0]["finish_reason"],
        "usage": {
            "prompt_tokens": usage["prompt_tokens"].as_u64().unwrap_or(0),
            "completion_tokens": usage["completion_tokens"].as_u64().unwrap_or(0),
            "total_tokens": usage["total_tokens"].as_u64().unwrap_or(0),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_openai_answer_and_its_usage() {
        let a = json!({ "model": "m1", "choices": [{ "message": { "role": "assistant", "content": "hi" }, "finish_reason": "stop" }],
                        "usage": { "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7 } });
        let r = parse_answer(&a, "default").expect("valid");
        assert_eq!(r["content"], "hi");
        assert_eq!(r["usage"]["total_tokens"], 7);
        assert!(parse_answer(&json!({}), "m").is_err());
    }
}
