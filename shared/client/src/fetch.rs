//! `FetchTransport`: the transport inside a Rust Worker, through `worker::Fetch` or a service
//! binding to edgejobs (wasm32, cargo feature `worker`). No tokio and no reqwest here: the
//! Worker's runtime does the I/O.

use std::time::Duration;

use futures_util::StreamExt as _;
use worker::wasm_bindgen::JsValue;

use crate::error::{Error, Result};
use crate::transport::{Request, Response, Streaming, Transport};

/// Sends requests with the Worker's `fetch`, or through a service binding.
#[derive(Debug, Clone, Default)]
pub struct FetchTransport {
    binding: Option<worker::Fetcher>,
}

impl FetchTransport {
    /// Requests through a service binding to edgejobs (`env.service("JOBS")`): no public hop.
    pub fn binding(fetcher: worker::Fetcher) -> FetchTransport {
        FetchTransport { binding: Some(fetcher) }
    }

    async fn fetch(&self, req: Request) -> Result<worker::Response> {
        let req = open(req)?;
        let sent = match &self.binding {
            Some(f) => f.fetch_request(req).await,
            None => worker::Fetch::Request(req).send().await,
        };
        sent.map_err(|e| Error::Transport(e.to_string()))
    }
}

fn open(req: Request) -> Result<worker::Request> {
    let headers = worker::Headers::new();
    for (k, v) in &req.headers {
        headers.set(k, v).map_err(|e| Error::Invalid(e.to_string()))?;
    }
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::from(req.method.as_str().to_owned())).with_headers(headers);
    if let Some(body) = &req.body {
        init.with_body(Some(JsValue::from(worker::js_sys::Uint8Array::from(body.as_slice()))));
    }
    worker::Request::new_with_init(&req.url, &init).map_err(|e| Error::Invalid(e.to_string()))
}

fn headers_of(resp: &worker::Response) -> Vec<(String, String)> {
    resp.headers().entries().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

#[async_trait::async_trait(?Send)]
impl Transport for FetchTransport {
    async fn send(&self, req: Request) -> Result<Response> {
        let mut resp = self.fetch(req).await?;
        let status = resp.status_code();
        let headers = headers_of(&resp);
        let body = resp.bytes().await.map_err(|e| Error::Transport(e.to_string()))?;
        Ok(Response { status, headers, body })
    }

    async fn stream(&self, req: Request) -> Result<Streaming> {
        let mut resp = self.fetch(req).await?;
        let status = resp.status_code();
        let headers = headers_of(&resp);
        let body = resp.stream().map_err(|e| Error::Transport(e.to_string()))?;
        let body = body.map(|piece| piece.map_err(|e| Error::Transport(e.to_string())));
        Ok(Streaming { status, headers, body: Box::pin(body) })
    }

    async fn sleep(&self, d: Duration) {
        worker::Delay::from(d).await;
    }
}
