//! `ReqwestTransport`: the native transport, async reqwest on the tokio runtime.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::{Method, Request, Response, Streaming, Transport};

/// How long a whole request (not a stream) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(70);

/// How long a read may wait for the next bytes. The API sends an event stream a keepalive
/// every 15 s, so a longer silence is a connection that died without closing; and a long
/// poll (`wait`) answers within 60 s.
const READ_TIMEOUT: Duration = Duration::from_secs(75);

/// Sends requests with reqwest (rustls); needs a tokio runtime (its timers).
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    http: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new() -> Result<ReqwestTransport> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| Error::Transport(describe(e)))?;
        Ok(ReqwestTransport { http })
    }

    /// Uses an existing reqwest client (its timeouts, proxies and TLS settings).
    pub fn with_client(http: reqwest::Client) -> ReqwestTransport {
        ReqwestTransport { http }
    }

    fn build(&self, req: Request) -> reqwest::RequestBuilder {
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut b = self.http.request(method, &req.url);
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if let Some(body) = req.body {
            b = b.body(body);
        }
        b
    }
}

fn headers_of(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    h.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
}

/// An error with its causes, without the URL (whose query may carry search text or a token).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

#[async_trait::async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, req: Request) -> Result<Response> {
        let resp = self.build(req).timeout(REQUEST_TIMEOUT).send().await.map_err(|e| Error::Transport(describe(e)))?;
        let status = resp.status().as_u16();
        let headers = headers_of(resp.headers());
        let body = resp.bytes().await.map_err(|e| Error::Transport(describe(e)))?.to_vec();
        Ok(Response { status, headers, body })
    }

    async fn stream(&self, req: Request) -> Result<Streaming> {
        let resp = self.build(req).send().await.map_err(|e| Error::Transport(describe(e)))?;
        let status = resp.status().as_u16();
        let headers = headers_of(resp.headers());
        let body = futures_util::stream::unfold(Some(resp), |resp| async move {
            let mut resp = resp?;
            match resp.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes.to_vec()), Some(resp))),
                Ok(None) => None,
                Err(e) => Some((Err(Error::Transport(describe(e))), None)),
            }
        });
        Ok(Streaming { status, headers, body: Box::pin(body) })
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}
