//! The Upstash REST client: a command is a JSON array POSTed to `/`, a pipeline an array of
//! them POSTed to `/pipeline`, a transaction the same to `/multi-exec`; the token goes in
//! `Authorization: Bearer`. Replies are requested base64-encoded (`Upstash-Encoding:
//! base64`) so binary values survive JSON.

use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use edgejobs_core::config::Secret;
use serde_json::Value;

use crate::reply::Reply;
use crate::transport::{HttpRequest, Transport};

/// Where an Upstash database answers and the token it wants. Debug never shows the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `UPSTASH_REDIS_REST_URL`, e.g. `https://eu1-x.upstash.io`.
    pub url: String,
    /// `UPSTASH_REDIS_REST_TOKEN`.
    pub token: Secret,
}

/// What went wrong, and what the caller should do about it ([`Error::is_retryable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Redis refused the command (wrong type, syntax, ...). Retrying will not help.
    #[error("redis error: {0}")]
    Redis(String),
    /// The token was refused (401). A configuration problem; retrying will not help.
    #[error("Upstash refused the token (401 Unauthorized)")]
    Unauthorized,
    /// Another HTTP status. 429 and 5xx are worth retrying.
    #[error("Upstash answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// No answer: connection refused, timeout, DNS. Worth retrying.
    #[error("cannot reach Upstash: {0}")]
    Transport(String),
    /// An answer that is not Upstash's format. A bug or a wrong URL; not retried.
    #[error("malformed Upstash response: {0}")]
    Malformed(String),
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Http { status, .. } => *status == 429 || *status >= 500,
            Error::Redis(m) => m.starts_with("LOADING") || m.starts_with("BUSY") || m.starts_with("TRYAGAIN"),
            Error::Unauthorized | Error::Malformed(_) => false,
        }
    }
}

/// The client. Cheap to clone when the transport is.
#[derive(Debug, Clone)]
pub struct Client<T> {
    creds: Credentials,
    transport: T,
    /// Timeout of every call. Default 5 s.
    pub timeout: Duration,
    /// Ask for base64-encoded replies (binary-safe). Default true.
    pub base64: bool,
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

impl<T: Transport> Client<T> {
    pub fn new(creds: Credentials, transport: T) -> Self {
        Client { creds, transport, timeout: Duration::from_secs(5), base64: true }
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    async fn send(&self, path: &str, body: String) -> Result<Value, Error> {
        let mut headers = vec![
            ("authorization", format!("Bearer {}", self.creds.token.expose())),
            ("content-type", "application/json".to_owned()),
        ];
        if self.base64 {
            headers.push(("upstash-encoding", "base64".to_owned()));
        }
        let url = format!("{}{path}", self.creds.url.trim_end_matches('/'));
        let req = HttpRequest { url, headers, body, timeout: self.timeout };
        let resp = self.transport.post(req).await.map_err(|e| Error::Transport(e.0))?;
        decode_http(resp.status, &resp.body)
    }

    fn one(&self, v: &Value) -> Result<Reply, Error> {
        decode_one(v, self.base64)
    }

    /// Runs one command, e.g. `client.command(&["SET", "k", "v"])`.
    pub async fn command<S: AsRef<str>>(&self, args: &[S]) -> Result<Reply, Error> {
        COMMANDS.fetch_add(1, Ordering::Relaxed);
        let body = Value::Array(args.iter().map(|a| Value::String(a.as_ref().to_owned())).collect()).to_string();
        let v = self.send("", body).await?;
        self.one(&v)
    }

    async fn batch(&self, path: &str, cmds: &[Vec<String>]) -> Result<Vec<Result<Reply, Error>>, Error> {
        COMMANDS.fetch_add(cmds.len() as u64, Ordering::Relaxed);
        let body = serde_json::to_string(cmds).map_err(|e| Error::Malformed(e.to_string()))?;
        let v = self.send(path, body).await?;
        decode_batch(&v, cmds.len(), self.base64)
    }

    /// Runs commands in one round trip, not atomically; each gets its own result.
    pub async fn pipeline(&self, cmds: &[Vec<String>]) -> Result<Vec<Result<Reply, Error>>, Error> {
        self.batch("/pipeline", cmds).await
    }

    /// Runs commands as one MULTI/EXEC transaction.
    pub async fn multi_exec(&self, cmds: &[Vec<String>]) -> Result<Vec<Result<Reply, Error>>, Error> {
        self.batch("/multi-exec", cmds).await
    }

    /// PING; Ok when Upstash answers PONG.
    pub async fn ping(&self) -> Result<(), Error> {
        match self.command(&["PING"]).await? {
            r if r.as_str() == Some("PONG") => Ok(()),
            r => Err(Error::Malformed(format!("PING answered {:?}", r.to_json()))),
        }
    }
}

/// Decodes Upstash's HTTP answer (status and body) to its JSON value, or the error it
/// means. Pure, like [`decode_one`] and [`decode_batch`]: the client's whole reply parsing,
/// which the fuzz target `upstash_reply` feeds arbitrary bytes.
pub fn decode_http(status: u16, body: &str) -> Result<Value, Error> {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match status {
        200 => parsed.ok_or_else(|| Error::Malformed(clip(body))),
        401 => Err(Error::Unauthorized),
        400 => match parsed.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str) {
            Some(e) => Err(Error::Redis(e.to_owned())),
            None => Err(Error::Http { status: 400, message: clip(body) }),
        },
        status => Err(Error::Http {
            status,
            message: parsed
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| clip(body)),
        }),
    }
}

/// Decodes one command's answer, `{"result": ...}` or `{"error": "..."}`.
pub fn decode_one(v: &Value, base64: bool) -> Result<Reply, Error> {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(Error::Redis(e.to_owned()));
    }
    let result = v.get("result").ok_or_else(|| Error::Malformed(clip(&v.to_string())))?;
    Reply::from_json(result, base64).map_err(Error::Malformed)
}

/// Decodes the answer to a pipeline or transaction of `count` commands: one result each.
pub fn decode_batch(v: &Value, count: usize, base64: bool) -> Result<Vec<Result<Reply, Error>>, Error> {
    let items = v.as_array().ok_or_else(|| Error::Malformed(clip(&v.to_string())))?;
    if items.len() != count {
        return Err(Error::Malformed(format!("{} replies for {} commands", items.len(), count)));
    }
    Ok(items.iter().map(|i| decode_one(i, base64)).collect())
}

/// Commands sent by every client of this process (what Upstash bills: each command of a
/// pipeline or transaction counts). Read with [`commands_sent`], or [`take_commands_sent`].
static COMMANDS: AtomicU64 = AtomicU64::new(0);

/// Commands sent by this process so far (sent, whatever the answer).
pub fn commands_sent() -> u64 {
    COMMANDS.load(Ordering::Relaxed)
}

/// Commands sent since the last call (for a caller that forwards the count elsewhere).
pub fn take_commands_sent() -> u64 {
    COMMANDS.swap(0, Ordering::Relaxed)
}

/// Builds a command from anything string-like: `cmd(["XADD", key, "*"])`.
pub fn cmd<I, S>(parts: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    parts.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Faulty, HttpResponse, ScriptedTransport, TransportError};
    use serde_json::json;

    fn creds() -> Credentials {
        Credentials { url: "http://upstash.test/".into(), token: Secret::new("tok_secret_value") }
    }

    fn client(replies: Vec<Result<HttpResponse, TransportError>>) -> Client<ScriptedTransport> {
        Client::new(creds(), ScriptedTransport::new(replies))
    }

    fn status(status: u16, body: &str) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse { status, body: body.into() })
    }

    #[tokio::test]
    async fn encodes_commands_and_decodes_base64_replies() {
        let c = client(vec![ScriptedTransport::ok(json!({ "result": "dmFsdWU=" }))]);
        let r = c.command(&["GET", "k"]).await.expect("ok");
        assert_eq!(r.as_str(), Some("value"));
        let req = &c.transport().requests()[0];
        assert_eq!(req.url, "http://upstash.test");
        assert_eq!(req.body, r#"["GET","k"]"#);
        assert!(req.headers.contains(&("authorization", "Bearer tok_secret_value".into())));
        assert!(req.headers.contains(&("upstash-encoding", "base64".into())));
        assert!(!format!("{req:?}").contains("tok_secret"), "Debug of a request hides the token");
    }

    #[tokio::test]
    async fn pipelines_answer_per_command() {
        let c = client(vec![ScriptedTransport::ok(
            json!([{ "result": "T0s=" }, { "error": "WRONGTYPE nope" }, { "result": 3 }]),
        )]);
        let r = c.pipeline(&[cmd(["SET", "a", "1"]), cmd(["INCR", "h"]), cmd(["INCR", "a"])]).await.expect("ok");
        assert_eq!(r[0].as_ref().ok().and_then(Reply::as_str), Some("OK"));
        assert_eq!(r[1], Err(Error::Redis("WRONGTYPE nope".into())));
        assert_eq!(r[2], Ok(Reply::Int(3)));
        assert_eq!(c.transport().requests()[0].url, "http://upstash.test/pipeline");
        let c = client(vec![ScriptedTransport::ok(json!([{ "result": 1 }]))]);
        assert!(matches!(c.pipeline(&[cmd(["INCR", "a"]), cmd(["INCR", "a"])]).await, Err(Error::Malformed(_))));
    }

    #[tokio::test]
    async fn errors_are_told_apart_and_say_whether_to_retry() {
        let cases = vec![
            (status(400, r#"{"error":"ERR unknown command"}"#), Error::Redis("ERR unknown command".into()), false),
            (status(401, r#"{"error":"Unauthorized"}"#), Error::Unauthorized, false),
            (status(503, "down"), Error::Http { status: 503, message: "down".into() }, true),
            (status(429, r#"{"error":"too many"}"#), Error::Http { status: 429, message: "too many".into() }, true),
            (status(200, "<html>"), Error::Malformed("<html>".into()), false),
            (Err(TransportError("cannot connect".into())), Error::Transport("cannot connect".into()), true),
        ];
        for (reply, want, retry) in cases {
            let c = client(vec![reply]);
            let e = c.command(&["PING"]).await.expect_err("fails");
            assert_eq!(e, want);
            assert_eq!(e.is_retryable(), retry, "{e}");
            assert!(!e.to_string().contains("tok_secret"));
        }
    }

    #[tokio::test]
    async fn injected_failures_then_success() {
        let inner = ScriptedTransport::new(vec![ScriptedTransport::ok(json!({ "result": "UE9ORw==" }))]);
        let c = Client::new(creds(), Faulty::new(inner, 2, Duration::ZERO));
        for _ in 0..2 {
            let e = c.ping().await.expect_err("injected");
            assert!(e.is_retryable());
        }
        c.ping().await.expect("third call reaches the fake");
        assert_eq!(c.transport().calls(), 3);
    }

    #[tokio::test]
    async fn latency_beyond_the_timeout_is_a_timeout_not_a_hang() {
        let inner = ScriptedTransport::new(vec![ScriptedTransport::ok(json!({ "result": "UE9ORw==" }))]);
        let mut c = Client::new(creds(), Faulty::new(inner, 0, Duration::from_secs(3600)));
        c.timeout = Duration::from_millis(20);
        let e = c.ping().await.expect_err("times out");
        assert_eq!(e, Error::Transport("timed out".into()));
    }

    #[test]
    fn credentials_debug_hides_the_token() {
        assert!(!format!("{:?}", creds()).contains("secret_value"));
    }
}
