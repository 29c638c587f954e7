//! The receiver against clients someone else wrote: the OpenTelemetry SDK with the real
//! `opentelemetry-otlp` exporter over OTLP/HTTP (protobuf) and OTLP/gRPC, hand-written OTLP/JSON
//! and gzip'd protobuf bodies, the error answers, the refusal switch, and the binary itself.
//! Each test runs its own receiver in-process on free loopback ports.

use std::net::SocketAddr;
use std::time::Duration;

use edgejobs_otlp_local::http::RpcStatus;
use edgejobs_otlp_local::model::{
    Cleared, ErrorBody, Refuse, SpanKind, SpanView, SpansResponse, Stats, StatusCode, TraceResponse,
};
use edgejobs_otlp_local::opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use edgejobs_otlp_local::opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value,
};
use edgejobs_otlp_local::opentelemetry_proto::tonic::resource::v1::Resource;
use edgejobs_otlp_local::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use edgejobs_otlp_local::{MAX_BODY_BYTES, ServeError};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Array, Context, Value};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prost::Message as _;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any one wait in these tests may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

const SERVICE: &str = "otlp-local-test";
const LINKED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const LINKED_SPAN: &str = "b7ad6b7169203331";

/// A receiver running in this process.
struct Receiver {
    http: SocketAddr,
    grpc: SocketAddr,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

async fn start() -> Receiver {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port for HTTP");
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("a free loopback port for gRPC");
    let (http_addr, grpc_addr) = (http.local_addr().expect("bound"), grpc.local_addr().expect("bound"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(edgejobs_otlp_local::serve(http, grpc, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().timeout(DEADLINE).build().expect("a plain-HTTP client");
    Receiver { http: http_addr, grpc: grpc_addr, client, stop: Some(stop), task }
}

impl Receiver {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> (reqwest::StatusCode, T) {
        let response = self.client.get(self.url(path)).send().await.expect("the query API answers");
        let status = response.status();
        (status, response.json().await.expect("a JSON answer of the expected shape"))
    }

    async fn stats(&self) -> Stats {
        let (status, stats) = self.get("/api/stats").await;
        assert_eq!(status, 200);
        stats
    }

    async fn trace(&self, trace_id: &str) -> TraceResponse {
        let (status, trace) = self.get(&format!("/api/traces/{trace_id}")).await;
        assert_eq!(status, 200, "trace {trace_id}");
        trace
    }

    async fn refuse(&self, status: Option<u16>) {
        let response = self
            .client
            .post(self.url("/api/refuse"))
            .json(&Refuse { status })
            .send()
            .await
            .expect("the query API answers");
        assert_eq!(response.status(), 200);
        assert_eq!(response.json::<Refuse>().await.expect("the switch's state"), Refuse { status });
    }

    /// POSTs an OTLP/HTTP body to `/v1/traces`.
    async fn post(&self, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/v1/traces")).header("content-type", content_type).body(body);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        request.send().await.expect("the receiver answers")
    }

    /// Stops the receiver and checks that it stops cleanly, in time.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let ended = tokio::time::timeout(DEADLINE, &mut self.task).await.expect("the receiver stops in time");
        ended.expect("the receiver's task did not panic").expect("the receiver stopped without error");
    }
}

/// A tracer provider that exports each span as it ends, synchronously, so that a span is
/// stored (or its export has failed) by the time `end` returns.
fn provider(exporter: opentelemetry_otlp::SpanExporter) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(SERVICE)
        .with_attribute(opentelemetry::KeyValue::new("deployment.environment.name", "test"))
        .build();
    SdkTracerProvider::builder().with_simple_exporter(exporter).with_resource(resource).build()
}

/// The ids of the trace [`make_trace`] made.
#[derive(Debug)]
struct Made {
    trace_id: String,
    parent: String,
    child: String,
}

/// A parent (server) span "enqueue" and its child (client) span "GET", with attributes of
/// every scalar type and an array, an event, a link and an error status.
///
/// The simple processor exports with a blocking `block_on`, so this must run off the async
/// worker threads (in `spawn_blocking`), where the runtime is still reachable for the
/// exporters' own I/O.
fn make_trace(provider: &SdkTracerProvider) -> Made {
    use opentelemetry::KeyValue as Kv;
    let scope = opentelemetry::InstrumentationScope::builder("otlp-local-test-scope").with_version("1.2.3").build();
    let tracer = provider.tracer_with_scope(scope);
    let linked = SpanContext::new(
        TraceId::from_hex(LINKED_TRACE).expect("a valid trace id"),
        SpanId::from_hex(LINKED_SPAN).expect("a valid span id"),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let parent = tracer
        .span_builder("enqueue")
        .with_kind(opentelemetry::trace::SpanKind::Server)
        .with_attributes(vec![
            Kv::new("messaging.system", "edgejobs"),
            Kv::new("edgejobs.batch", true),
            Kv::new("edgejobs.jobs", 3_i64),
            Kv::new("edgejobs.ratio", 0.5),
            Kv::new("edgejobs.tags", Value::Array(Array::String(vec!["a".into(), "b".into()]))),
        ])
        .start(&tracer);
    let cx = Context::current_with_span(parent);
    let mut child = tracer
        .span_builder("GET")
        .with_kind(opentelemetry::trace::SpanKind::Client)
        .with_attributes(vec![Kv::new("http.request.method", "GET"), Kv::new("http.response.status_code", 503_i64)])
        .with_links(vec![Link::new(linked, vec![Kv::new("link.reason", "schedule")], 0)])
        .start_with_context(&tracer, &cx);
    child.add_event("retry", vec![Kv::new("attempt", 2_i64)]);
    child.set_status(Status::error("upstream answered 503"));
    let made = Made {
        trace_id: child.span_context().trace_id().to_string(),
        parent: cx.span().span_context().span_id().to_string(),
        child: child.span_context().span_id().to_string(),
    };
    child.end();
    cx.span().end();
    made
}

/// Runs [`make_trace`] on a blocking thread, then shuts the provider down there.
async fn export_trace(provider: SdkTracerProvider) -> Made {
    tokio::task::spawn_blocking(move || {
        let made = make_trace(&provider);
        provider.shutdown().expect("the provider shuts down");
        made
    })
    .await
    .expect("the span-making thread did not panic")
}

fn span<'a>(trace: &'a TraceResponse, name: &str) -> &'a SpanView {
    trace.span_named(name).unwrap_or_else(|| panic!("one span named {name:?} in {trace:#?}"))
}

/// What the receiver must have made of [`make_trace`]'s spans.
fn assert_made_trace(trace: &TraceResponse, made: &Made) {
    assert_eq!(trace.trace_id, made.trace_id);
    assert_eq!(trace.spans.len(), 2, "{trace:#?}");
    let parent = span(trace, "enqueue");
    let child = span(trace, "GET");
    // Ordered by start time: the parent started first.
    assert_eq!(trace.spans[0].name, "enqueue");

    assert_eq!(parent.span_id, made.parent);
    assert_eq!(parent.parent_span_id, None);
    assert_eq!(child.span_id, made.child);
    assert_eq!(child.parent_span_id.as_deref(), Some(made.parent.as_str()));
    assert!(trace.spans.iter().all(|s| s.trace_id == made.trace_id));

    assert_eq!(parent.kind, SpanKind::Server);
    assert_eq!(child.kind, SpanKind::Client);
    assert!(parent.start_unix_nano > 0 && parent.start_unix_nano <= child.start_unix_nano);
    assert!(child.end_unix_nano <= parent.end_unix_nano);

    assert_eq!(parent.attributes.get("messaging.system"), Some(&json!("edgejobs")));
    assert_eq!(parent.attributes.get("edgejobs.batch"), Some(&json!(true)));
    assert_eq!(parent.attributes.get("edgejobs.jobs"), Some(&json!(3)));
    assert_eq!(parent.attributes.get("edgejobs.ratio"), Some(&json!(0.5)));
    assert_eq!(parent.attributes.get("edgejobs.tags"), Some(&json!(["a", "b"])));
    assert_eq!(child.attributes.get("http.response.status_code"), Some(&json!(503)));

    assert_eq!(child.events.len(), 1);
    assert_eq!(child.events[0].name, "retry");
    assert_eq!(child.events[0].attributes.get("attempt"), Some(&json!(2)));
    assert!(child.events[0].time_unix_nano >= child.start_unix_nano);

    assert_eq!(child.links.len(), 1);
    assert_eq!(child.links[0].trace_id, LINKED_TRACE);
    assert_eq!(child.links[0].span_id, LINKED_SPAN);
    assert_eq!(child.links[0].attributes.get("link.reason"), Some(&json!("schedule")));

    assert_eq!(child.status.code, StatusCode::Error);
    assert_eq!(child.status.message, "upstream answered 503");
    assert_eq!(parent.status.code, StatusCode::Unset);

    for s in &trace.spans {
        assert_eq!(s.service.as_deref(), Some(SERVICE));
        assert_eq!(s.resource.get("service.name"), Some(&json!(SERVICE)));
        assert_eq!(s.resource.get("deployment.environment.name"), Some(&json!("test")));
        assert_eq!(s.scope.name, "otlp-local-test-scope");
        assert_eq!(s.scope.version, "1.2.3");
    }
}

fn http_exporter(
    receiver: &Receiver,
) -> opentelemetry_otlp::SpanExporterBuilder<opentelemetry_otlp::HttpExporterBuilderSet> {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(receiver.url("/v1/traces"))
        .with_timeout(Duration::from_secs(5))
}

fn grpc_exporter(
    receiver: &Receiver,
) -> opentelemetry_otlp::SpanExporterBuilder<opentelemetry_otlp::TonicExporterBuilderSet> {
    opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", receiver.grpc))
        .with_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_protobuf() {
    let receiver = start().await;
    let exporter = http_exporter(&receiver).build().expect("the HTTP exporter builds");
    let made = export_trace(provider(exporter)).await;
    assert_made_trace(&receiver.trace(&made.trace_id).await, &made);
    let stats = receiver.stats().await;
    assert_eq!(stats.export_requests.http_protobuf, 2, "one export per ended span: {stats:?}");
    assert_eq!((stats.export_requests.http_json, stats.export_requests.grpc), (0, 0));
    assert_eq!(stats.spans_received, 2);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_grpc() {
    let receiver = start().await;
    let exporter = grpc_exporter(&receiver).build().expect("the gRPC exporter builds");
    let made = export_trace(provider(exporter)).await;
    assert_made_trace(&receiver.trace(&made.trace_id).await, &made);
    let stats = receiver.stats().await;
    assert_eq!(stats.export_requests.grpc, 2, "one export per ended span: {stats:?}");
    assert_eq!(stats.export_requests.http_protobuf, 0);
    assert_eq!(stats.spans_received, 2);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_with_gzip_over_both_protocols() {
    let receiver = start().await;
    let http = http_exporter(&receiver)
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .expect("the gzip HTTP exporter builds");
    let grpc = grpc_exporter(&receiver)
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .expect("the gzip gRPC exporter builds");
    let via_http = export_trace(provider(http)).await;
    let via_grpc = export_trace(provider(grpc)).await;
    assert_made_trace(&receiver.trace(&via_http.trace_id).await, &via_http);
    assert_made_trace(&receiver.trace(&via_grpc.trace_id).await, &via_grpc);
    let stats = receiver.stats().await;
    assert_eq!((stats.export_requests.http_protobuf, stats.export_requests.grpc), (2, 2), "{stats:?}");
    receiver.stop().await;
}

/// A span the way the SDK hands it to an exporter, for calling `export` directly (whose
/// result the tracer provider's processors do not return).
fn span_data(name: &'static str, trace: u8) -> SpanData {
    let now = std::time::SystemTime::now();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes([trace; 16]),
            SpanId::from_bytes([7; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: opentelemetry::trace::SpanKind::Internal,
        name: name.into(),
        start_time: now,
        end_time: now,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: opentelemetry::InstrumentationScope::builder("refuse-test").build(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_switch_fails_exports() {
    let receiver = start().await;
    // No retries: the refusal is the answer under test, and retrying would only slow it down.
    let http = http_exporter(&receiver).with_retry_policy(RetryPolicy::disabled()).build().expect("HTTP exporter");
    let grpc = grpc_exporter(&receiver).with_retry_policy(RetryPolicy::disabled()).build().expect("gRPC exporter");

    receiver.refuse(Some(503)).await;
    assert_eq!(receiver.stats().await.refusing, Some(503));
    let refused_http = http.export(vec![span_data("refused-http", 1)]).await;
    assert!(refused_http.is_err(), "the HTTP export must fail while refusing: {refused_http:?}");
    let refused_grpc = grpc.export(vec![span_data("refused-grpc", 2)]).await;
    assert!(refused_grpc.is_err(), "the gRPC export must fail while refusing: {refused_grpc:?}");
    // A hand-made JSON export is refused with the same status, and a google.rpc.Status body.
    let response = receiver.post("application/json", None, br#"{"resourceSpans":[]}"#.to_vec()).await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.expect("a JSON Status");
    assert_eq!(body["code"], json!(14));

    let stats = receiver.stats().await;
    assert_eq!(stats.refused_requests, 3, "{stats:?}");
    assert_eq!(stats.spans_received, 0);
    assert_eq!(stats.export_requests.http_protobuf + stats.export_requests.grpc + stats.export_requests.http_json, 0);
    let (_, listed): (_, SpansResponse) = receiver.get("/api/spans").await;
    assert!(listed.spans.is_empty(), "refused spans must not be stored: {listed:?}");

    receiver.refuse(None).await;
    http.export(vec![span_data("accepted-http", 1)]).await.expect("the HTTP export succeeds once lifted");
    grpc.export(vec![span_data("accepted-grpc", 2)]).await.expect("the gRPC export succeeds once lifted");
    let (_, listed): (_, SpansResponse) = receiver.get("/api/spans").await;
    let names: Vec<_> = listed.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["accepted-http", "accepted-grpc"]);
    let stats = receiver.stats().await;
    assert_eq!((stats.refusing, stats.refused_requests, stats.spans_received), (None, 3, 2));
    receiver.stop().await;
}

/// An OTLP/JSON request as the specification's example writes it: upper-case hex ids,
/// 64-bit integers as strings (and one time as a plain number), integer enums.
const SPEC_JSON: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
    "scopeSpans": [{
      "scope": {"name": "my.library", "version": "1.0.0",
                "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}]},
      "spans": [
        {
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "EEE19B7EC3C1B174",
          "parentSpanId": "EEE19B7EC3C1B173",
          "name": "I'm a server span",
          "startTimeUnixNano": "1544712660000000000",
          "endTimeUnixNano": "1544712661000000000",
          "kind": 2,
          "attributes": [
            {"key": "my.span.attr", "value": {"stringValue": "some value"}},
            {"key": "count", "value": {"intValue": "42"}},
            {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}, {"boolValue": false}]}}}
          ],
          "events": [{"timeUnixNano": "1544712660500000000", "name": "cache miss",
                      "attributes": [{"key": "ratio", "value": {"doubleValue": 0.25}}]}],
          "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}],
          "status": {"code": 1}
        },
        {
          "traceId": "5b8efff798038103d269b633813fc60c",
          "spanId": "eee19b7ec3c1b173",
          "name": "root",
          "startTimeUnixNano": 1544712659000000000,
          "endTimeUnixNano": 1544712662000000000,
          "kind": 1
        }
      ]
    }]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_json_as_the_spec_documents() {
    let receiver = start().await;
    let response = receiver.post("application/json", None, SPEC_JSON.as_bytes().to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let body: serde_json::Value = response.json().await.expect("a JSON ExportTraceServiceResponse");
    assert_eq!(body, json!({}), "a full success leaves partialSuccess unset");

    // The id is looked up in any case.
    let trace = receiver.trace("5B8EFFF798038103D269B633813FC60C").await;
    assert_eq!(trace.trace_id, "5b8efff798038103d269b633813fc60c");
    let names: Vec<_> = trace.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["root", "I'm a server span"], "by start time");
    let root = span(&trace, "root");
    let server = span(&trace, "I'm a server span");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.kind, SpanKind::Internal);
    assert_eq!((root.start_unix_nano, root.end_unix_nano), (1_544_712_659_000_000_000, 1_544_712_662_000_000_000));
    assert_eq!(server.span_id, "eee19b7ec3c1b174");
    assert_eq!(server.parent_span_id.as_deref(), Some("eee19b7ec3c1b173"));
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!((server.start_unix_nano, server.end_unix_nano), (1_544_712_660_000_000_000, 1_544_712_661_000_000_000));
    assert_eq!(server.attributes.get("my.span.attr"), Some(&json!("some value")));
    assert_eq!(server.attributes.get("count"), Some(&json!(42)));
    assert_eq!(server.attributes.get("list"), Some(&json!(["a", 1, false])));
    assert_eq!(server.events[0].name, "cache miss");
    assert_eq!(server.events[0].time_unix_nano, 1_544_712_660_500_000_000);
    assert_eq!(server.events[0].attributes.get("ratio"), Some(&json!(0.25)));
    assert_eq!(server.links[0].trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(server.status.code, StatusCode::Ok);
    assert_eq!(server.service.as_deref(), Some("my.service"));
    assert_eq!(server.scope.name, "my.library");
    assert_eq!(server.scope.version, "1.0.0");
    assert_eq!(receiver.stats().await.export_requests.http_json, 1);
    receiver.stop().await;
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        key_strindex: 0,
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_protobuf_body_with_a_partial_success() {
    let receiver = start().await;
    let good = Span {
        trace_id: vec![0x11; 16],
        span_id: vec![0x22; 8],
        name: "gzipped".into(),
        kind: 5,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![kv("messaging.operation.type", "process")],
        ..Default::default()
    };
    // An all-zero trace id is invalid: the receiver refuses that span alone.
    let bad = Span { trace_id: vec![0; 16], span_id: vec![0x33; 8], name: "invalid".into(), ..Default::default() };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "gzip-client")], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "hand".into(), ..Default::default() }),
                spans: vec![good, bad],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let response = receiver.post("application/x-protobuf", Some("gzip"), gzip(&request.encode_to_vec())).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
    let body = response.bytes().await.expect("a body");
    let answer = ExportTraceServiceResponse::decode(body).expect("a protobuf ExportTraceServiceResponse");
    let partial = answer.partial_success.expect("the invalid span is reported");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("trace id"), "{partial:?}");

    let trace = receiver.trace(&"11".repeat(16)).await;
    assert_eq!(trace.spans.len(), 1);
    let s = &trace.spans[0];
    assert_eq!((s.name.as_str(), s.kind, s.service.as_deref()), ("gzipped", SpanKind::Consumer, Some("gzip-client")));
    assert_eq!(s.attributes.get("messaging.operation.type"), Some(&json!("process")));
    let stats = receiver.stats().await;
    assert_eq!((stats.spans_received, stats.spans_rejected, stats.export_requests.http_protobuf), (1, 1, 1));

    // The same request as gzip'd JSON, with a `; charset` parameter on the content type.
    let json = serde_json::to_vec(&request).expect("the crate's serde writes OTLP/JSON");
    let response = receiver.post("application/json; charset=utf-8", Some("gzip"), gzip(&json)).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("a JSON answer");
    assert_eq!(body["partialSuccess"]["rejectedSpans"], json!("1"));
    assert_eq!(receiver.trace(&"11".repeat(16)).await.spans.len(), 2, "the span again, stored twice");
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers() {
    let receiver = start().await;
    let mut expected_bad = 0;

    for content_type in ["text/plain", "application/protobuf"] {
        let response = receiver.post(content_type, None, b"x".to_vec()).await;
        assert_eq!(response.status(), 415, "{content_type}");
        expected_bad += 1;
    }
    let response = receiver.client.post(receiver.url("/v1/traces")).body("x").send().await.expect("an answer");
    assert_eq!(response.status(), 415, "no content type");
    expected_bad += 1;
    let response = receiver.post("application/x-protobuf", Some("br"), b"x".to_vec()).await;
    assert_eq!(response.status(), 415, "an unknown content encoding");
    expected_bad += 1;

    // Undecodable bodies: 400 with a google.rpc.Status in the request's encoding.
    let response = receiver.post("application/x-protobuf", None, vec![0xff, 0xff, 0xff]).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-protobuf"));
    let status = RpcStatus::decode(response.bytes().await.expect("a body")).expect("a protobuf Status");
    assert_eq!(status.code, 3, "INVALID_ARGUMENT: {status:?}");
    assert!(!status.message.is_empty());
    expected_bad += 1;
    for body in ["{", "[]", r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not hex"}]}]}]}"#] {
        let response = receiver.post("application/json", None, body.as_bytes().to_vec()).await;
        assert_eq!(response.status(), 400, "{body}");
        let status: serde_json::Value = response.json().await.expect("a JSON Status");
        assert_eq!(status["code"], json!(3), "{body}");
        expected_bad += 1;
    }
    let response = receiver.post("application/x-protobuf", Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!(response.status(), 400, "a broken gzip body");
    expected_bad += 1;

    // Over the limit: 413, whether sent so or inflated so.
    let response = receiver.post("application/x-protobuf", None, vec![0; MAX_BODY_BYTES + 1]).await;
    assert_eq!(response.status(), 413);
    expected_bad += 1;
    let response = receiver.post("application/x-protobuf", Some("gzip"), gzip(&vec![0; MAX_BODY_BYTES + 1])).await;
    assert_eq!(response.status(), 413, "a gzip body that inflates past the limit");
    expected_bad += 1;

    let stats = receiver.stats().await;
    assert_eq!(stats.bad_requests, expected_bad, "{stats:?}");
    assert_eq!(stats.spans_received, 0);

    // The query API's own errors.
    let (status, body): (_, ErrorBody) = receiver.get(&format!("/api/traces/{}", "ab".repeat(16))).await;
    assert_eq!(status, 404, "{body:?}");
    let (status, _): (_, ErrorBody) = receiver.get("/api/traces/not-a-trace-id").await;
    assert_eq!(status, 400);
    let response = receiver
        .client
        .post(receiver.url("/api/refuse"))
        .json(&json!({"status": 200}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 400, "a refusal status must be an error status");
    assert_eq!(receiver.stats().await.refusing, None);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_listing_filters_and_clears() {
    let receiver = start().await;
    let body = |service: &str, trace: &str, names: &[(&str, &str)]| {
        let spans: Vec<_> =
            names.iter().map(|(id, name)| json!({"traceId": trace, "spanId": id, "name": name, "kind": 1})).collect();
        json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": spans}]
        }]})
        .to_string()
        .into_bytes()
    };
    let trace_a = "a".repeat(32);
    let trace_b = "b".repeat(32);
    for (service, trace, spans) in [
        ("edge", &trace_a, &[("0000000000000001", "enqueue"), ("0000000000000002", "deliver")][..]),
        ("consumer", &trace_b, &[("0000000000000003", "deliver")][..]),
    ] {
        let response = receiver.post("application/json", None, body(service, trace, spans)).await;
        assert_eq!(response.status(), 200);
    }
    let listed = |query: &'static str| {
        let receiver = &receiver;
        async move {
            let (status, spans): (_, SpansResponse) = receiver.get(&format!("/api/spans{query}")).await;
            assert_eq!(status, 200);
            spans.spans.into_iter().map(|s| s.span_id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("").await.len(), 3);
    assert_eq!(listed("?service=edge").await, ["0000000000000001", "0000000000000002"]);
    assert_eq!(listed("?name=deliver").await, ["0000000000000002", "0000000000000003"]);
    assert_eq!(listed("?service=consumer&name=deliver").await, ["0000000000000003"]);
    assert!(listed("?service=nobody").await.is_empty());

    let response = receiver.client.delete(receiver.url("/api/spans")).send().await.expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Cleared>().await.expect("the count"), Cleared { cleared: 3 });
    assert!(listed("").await.is_empty());
    let (status, _): (_, ErrorBody) = receiver.get(&format!("/api/traces/{trace_a}")).await;
    assert_eq!(status, 404, "a cleared trace is gone");
    let stats = receiver.stats().await;
    assert_eq!((stats.spans_stored, stats.spans_received), (0, 3), "clearing keeps the counters");
    receiver.stop().await;
}

/// The binary: one ready line on stdout with both addresses, then a clean exit on SIGTERM.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_its_addresses_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt as _;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_otlp-local"))
        .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the ready line comes in time")
        .expect("stdout is readable")
        .expect("a ready line before stdout closes");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("the ready line is JSON");
    let http: SocketAddr = ready["http"].as_str().and_then(|a| a.parse().ok()).expect("an http address");
    let grpc: SocketAddr = ready["grpc"].as_str().and_then(|a| a.parse().ok()).expect("a grpc address");
    assert!(http.ip().is_loopback() && grpc.ip().is_loopback() && http.port() != 0 && grpc.port() != 0);
    assert_eq!(ready.as_object().map(|o| o.len()), Some(2), "only the two addresses: {line}");

    let stats: Stats = reqwest::get(format!("http://{http}/api/stats"))
        .await
        .expect("the binary's query API answers")
        .json()
        .await
        .expect("stats");
    assert_eq!(stats, Stats::default());
    tokio::net::TcpStream::connect(grpc).await.expect("the gRPC listener accepts");

    let pid = child.id().expect("the child is running");
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, child.wait()).await.expect("it exits in time").expect("waited");
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
    assert_eq!(lines.next_line().await.expect("stdout is readable"), None, "nothing more on stdout");
}
