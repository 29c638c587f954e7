//! The edge's spans (#32): made where the work happens (enqueue, delivery, attempt, hand-off,
//! outbound call, workflow step), buffered per isolate, and exported over OTLP/HTTP (JSON)
//! after the response, in `waitUntil`, one request per invocation. A span is buffered only
//! when its trace is sampled and an endpoint is set; when the collector cannot be reached
//! the spans are dropped and counted (`edgejobs_spans_dropped_total`), never retried: a
//! request is never slowed by tracing.

use std::cell::RefCell;
use std::time::Duration;

use edgejobs_core::otlp::{self, Resource, SpanKind, SpanRecord};
use edgejobs_core::stats::Metric;
use edgejobs_core::trace::{SpanId, TraceContext, TraceId};
use edgejobs_core::tracing_config::Tracing;

use crate::counters;
use crate::platform::{now_ms, random_u64};

/// Most spans an isolate holds between two exports; more are dropped and counted (an
/// invocation's export takes everything pending, so this bounds one burst, not a rate). A
/// queue batch of 100 full envelopes is 10,000 jobs, two spans each: it fits.
pub const MAX_PENDING: usize = 32_768;

/// Most spans in one export request (about 1.5 MB of JSON): a larger burst goes out as
/// several requests at once, each its own subrequest.
pub const EXPORT_CHUNK: usize = 2_048;

/// How long one export may take before its spans count as dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// `messaging.system` of an enqueue: edgejobs itself (the job goes to a shard, which sends
/// it to the queue or arms an alarm).
pub const SYSTEM: &str = "edgejobs";

/// The instrumentation scope the edge's spans carry.
pub const SCOPE: &str = "edgejobs-edge";

thread_local! {
    static PENDING: RefCell<Vec<SpanRecord>> = const { RefCell::new(Vec::new()) };
}

/// The edge clock in nanoseconds (workerd's clock has ms resolution and advances across I/O).
pub fn now_ns() -> u64 {
    now_ms().saturating_mul(1_000_000)
}

/// A new span id (never the invalid all-zero one).
pub fn span_id() -> SpanId {
    let bytes = random_u64().max(1).to_le_bytes();
    SpanId::new(bytes).unwrap_or(SpanId([1, 0, 0, 0, 0, 0, 0, 0]))
}

/// A new trace id (never the invalid all-zero one).
pub fn trace_id() -> TraceId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&random_u64().to_le_bytes());
    b[8..].copy_from_slice(&random_u64().max(1).to_le_bytes());
    TraceId::new(b).unwrap_or(TraceId([1; 16]))
}

/// Starts a span under `parent` (the caller's context or a job's), or the root of a new
/// trace without one; the sampler of `cfg` decides whether it is recorded (by default a
/// parent's decision is followed and new traces are all sampled).
pub fn start(cfg: &Tracing, parent: Option<&TraceContext>, name: impl Into<String>, kind: SpanKind) -> SpanRecord {
    let now = now_ns();
    match parent {
        Some(p) => {
            let sampled = cfg.sampler.decide(p.trace_id, Some(p));
            SpanRecord::new(p, span_id(), name, kind, now).sampled(sampled)
        }
        None => {
            let t = trace_id();
            let sampled = cfg.sampler.decide(t, None);
            SpanRecord::root(t, span_id(), sampled, name, kind, now)
        }
    }
}

/// Ends `span` now and keeps it for this invocation's export (when it is sampled and there
/// is somewhere to export it to).
pub fn end(cfg: &Tracing, mut span: SpanRecord) {
    span.finish(now_ns());
    keep(cfg, span);
}

/// Keeps an ended span for the export.
pub fn keep(cfg: &Tracing, span: SpanRecord) {
    if !cfg.exports() || !span.is_sampled() {
        return;
    }
    let full = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() >= MAX_PENDING {
            return true;
        }
        p.push(span);
        false
    });
    if full {
        counters::add(Metric::SpansDroppedTotal, &[("reason", "overflow")], 1.0);
    }
}

/// Takes every pending span for an export: `None` when there is nothing to send. Call it
/// at the end of an invocation and pass the future to `waitUntil`.
pub fn flush(cfg: &Tracing) -> Option<impl Future<Output = ()> + use<>> {
    let url = cfg.traces_url.clone()?;
    let spans = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if spans.is_empty() {
        return None;
    }
    let resource = Resource::new(cfg.service_name.clone(), env!("CARGO_PKG_VERSION"));
    let bodies: Vec<(f64, String)> = spans
        .chunks(EXPORT_CHUNK)
        .map(|c| (c.len() as f64, otlp::export_request_json(&resource, SCOPE, env!("CARGO_PKG_VERSION"), c)))
        .collect();
    let headers: Vec<(String, String)> = cfg.headers.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect();
    Some(async move {
        let sends = bodies.into_iter().map(|(n, body)| {
            let (url, headers) = (&url, headers.clone());
            async move { (n, send(url, headers, body).await) }
        });
        for (n, sent) in futures_util::future::join_all(sends).await {
            match sent {
                Ok(()) => counters::add(Metric::SpansExportedTotal, &[], n),
                Err(reason) => counters::add(Metric::SpansDroppedTotal, &[("reason", reason)], n),
            }
        }
    })
}

/// POSTs one export; the error names why it failed (a metric label, never the URL or the
/// headers, which may hold credentials).
#[cfg(target_arch = "wasm32")]
async fn send(url: &str, headers: Vec<(String, String)>, body: String) -> Result<(), &'static str> {
    use futures_util::future::{Either, select};
    use wasm_bindgen::JsValue;
    use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};
    let h = Headers::new();
    h.set("content-type", "application/json").map_err(|_| "refused")?;
    for (k, v) in &headers {
        h.set(k, v).map_err(|_| "refused")?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(h).with_body(Some(JsValue::from_str(&body)));
    let req = Request::new_with_init(url, &init).map_err(|_| "refused")?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(req);
    let work = std::pin::pin!(fetch.send_with_signal(&signal));
    let deadline = std::pin::pin!(Delay::from(EXPORT_TIMEOUT));
    match select(work, deadline).await {
        Either::Left((Ok(resp), _)) if (200..300).contains(&resp.status_code()) => Ok(()),
        Either::Left((Ok(_), _)) => Err("refused"),
        Either::Left((Err(_), _)) => Err("unreachable"),
        Either::Right(_) => {
            controller.abort();
            Err("unreachable")
        }
    }
}

/// Natively (the crate's unit tests) there is no `fetch`.
#[cfg(not(target_arch = "wasm32"))]
async fn send(_url: &str, _headers: Vec<(String, String)>, _body: String) -> Result<(), &'static str> {
    Err("unreachable")
}

/// The context a request's `traceparent` and `tracestate` headers give, if valid (an
/// invalid one is ignored, as W3C Trace Context asks: the work starts a new trace).
pub fn incoming(req: &worker::Request) -> Option<TraceContext> {
    let h = req.headers();
    let tp = h.get("traceparent").ok().flatten()?;
    let ts = h.get("tracestate").ok().flatten();
    TraceContext::parse(&tp, ts.as_deref())
}

/// An outbound HTTP call's span, child of `parent`, with the attributes the semantic
/// conventions ask of an HTTP client (no query string, no header values). Send
/// `span.context()` as the call's `traceparent`.
pub fn outbound(cfg: &Tracing, parent: Option<&TraceContext>, method: &str, url: &url::Url) -> SpanRecord {
    start(cfg, parent, method.to_owned(), SpanKind::Client).attrs(otlp::http_client_attrs(method, url, None))
}

/// Ends an outbound span with the answer's status, or the transport error's kind.
pub fn end_outbound(cfg: &Tracing, mut span: SpanRecord, method: &str, url: &url::Url, status: Option<u16>) {
    for a in otlp::http_client_attrs(method, url, status) {
        span.set_attr(a.key, a.value);
    }
    span.set_status(otlp::http_client_status(status));
    end(cfg, span);
}

/// A span that ends when dropped, for work with many ways out (a workflow step's).
#[derive(Debug)]
pub struct Scoped {
    cfg: Tracing,
    span: Option<SpanRecord>,
}

impl Scoped {
    pub fn new(cfg: &Tracing, span: SpanRecord) -> Scoped {
        Scoped { cfg: cfg.clone(), span: Some(span) }
    }

    /// The span as the parent of what it does.
    pub fn context(&self) -> TraceContext {
        self.span.as_ref().map(SpanRecord::context).unwrap_or_else(|| TraceContext::root(trace_id(), span_id(), false))
    }

    pub fn rename(&mut self, name: String) {
        if let Some(s) = &mut self.span {
            s.name = name;
        }
    }

    pub fn set_attr(&mut self, key: &'static str, value: impl Into<otlp::AttrValue>) {
        if let Some(s) = &mut self.span {
            s.set_attr(key, value);
        }
    }

    pub fn fail(&mut self, error: &str) {
        if let Some(s) = &mut self.span {
            s.set_status(otlp::Status::Error(error.to_owned()));
        }
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            end(&self.cfg, span);
        }
    }
}
