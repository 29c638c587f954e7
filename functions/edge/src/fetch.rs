//! The Upstash transport at the edge: workerd's own `fetch` (`worker::Fetch`), the timeout an
//! AbortSignal raced against a `Delay` over the whole exchange (headers and body). It
//! replaces reqwest in the Worker, which brought ~160 KB of wasm for the same one POST.

use edgejobs_upstash::transport::{HttpRequest, HttpResponse, Transport, TransportError};
#[cfg(target_arch = "wasm32")]
use futures_util::future::{Either, select};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen::JsValue;
#[cfg(target_arch = "wasm32")]
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};

/// Sends each request with `fetch`, bounded by its timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct FetchTransport;

#[cfg(target_arch = "wasm32")]
/// What the caller learns of a failed exchange: workerd's error text names the URL at most,
/// never the headers (where the token is).
fn failed(what: &str, e: worker::Error) -> TransportError {
    TransportError(format!("{what}: {e}"))
}

#[cfg(target_arch = "wasm32")]
async fn exchange(req: HttpRequest, signal: &worker::AbortSignal) -> Result<HttpResponse, TransportError> {
    let headers = Headers::new();
    for (k, v) in &req.headers {
        headers.set(k, v).map_err(|e| failed("a header the runtime refused", e))?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(JsValue::from_str(&req.body)));
    let request = Request::new_with_init(&req.url, &init).map_err(|e| failed("an invalid request", e))?;
    let mut resp = Fetch::Request(request).send_with_signal(signal).await.map_err(|e| failed("fetch failed", e))?;
    let status = resp.status_code();
    let body = resp.text().await.map_err(|e| failed("reading the answer failed", e))?;
    Ok(HttpResponse { status, body })
}

#[cfg(target_arch = "wasm32")]
#[async_trait::async_trait(?Send)]
impl Transport for FetchTransport {
    async fn post(&self, req: HttpRequest) -> Result<HttpResponse, TransportError> {
        let timeout = req.timeout;
        let controller = AbortController::default();
        let signal = controller.signal();
        let work = std::pin::pin!(exchange(req, &signal));
        let deadline = std::pin::pin!(Delay::from(timeout));
        match select(work, deadline).await {
            Either::Left((answer, _)) => answer,
            Either::Right(_) => {
                controller.abort();
                Err(TransportError("timed out".to_owned()))
            }
        }
    }
}

/// Natively (the edge crate's unit tests) there is no workerd `fetch`: every call fails.
#[cfg(not(target_arch = "wasm32"))]
#[async_trait::async_trait]
impl Transport for FetchTransport {
    async fn post(&self, _req: HttpRequest) -> Result<HttpResponse, TransportError> {
        Err(TransportError("workerd's fetch exists only inside the Worker".to_owned()))
    }
}
