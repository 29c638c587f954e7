//! Tests of the consumer's tracing (`edgejobs_consumer::telemetry`, #32): the `OTEL_*`
//! settings as tables, the spans of a job through the SDK's in-memory exporter, real OTLP
//! exports to receivers on 127.0.0.1, and core's `traceparent` reader checked against the
//! SDK's W3C propagator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgejobs_consumer::telemetry::{DEFAULT_SERVICE_NAME, Protocol, Telemetry, TraceConfig, names};
use edgejobs_core::lane::Lane;
use edgejobs_core::otlp::{Attr, keys};
use edgejobs_core::sampler::{Rule, Sampler};
use edgejobs_core::trace::TraceContext;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const STATE: &str = "congo=t61rcWkgMzE";
const JOB: &str = "j0123456789abcdef0123456789abc";

/// Variables as `name=value` pairs.
type Pairs<'a> = &'a [(&'a str, &'a str)];

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |k: &str| map.get(k).cloned()
}

fn config(pairs: &[(&str, &str)]) -> TraceConfig {
    TraceConfig::from_env(env(pairs)).unwrap_or_else(|e| panic!("{pairs:?} should be valid: {e:?}"))
}

fn parent() -> TraceContext {
    TraceContext::parse(TP, Some(STATE)).expect("the W3C example is valid")
}

// ---------------------------------------------------------------------------------------
// (a) Settings.

#[test]
fn tracing_is_off_without_an_endpoint_with_the_specs_defaults() {
    let c = config(&[]);
    assert_eq!(c.export, None);
    assert_eq!(c.service_name, DEFAULT_SERVICE_NAME);
    assert_eq!(c.sampler, Sampler::default());
    assert!(c.resource.is_empty());
    assert!(c.summary.contains("off"), "{}", c.summary);
    // Off needs no runtime: this test has none.
    let t = Telemetry::from_env(env(&[])).expect("off starts anywhere");
    assert!(!t.is_on());
}

#[test]
fn endpoints_and_protocols() {
    let grpc = Protocol::Grpc;
    let http = Protocol::HttpProtobuf;
    let cases: &[(Pairs, Protocol, &str)] = &[
        // http/protobuf is the default; the generic endpoint gets the signal's path.
        (&[(names::ENDPOINT, "http://collector:4318")], http, "http://collector:4318/v1/traces"),
        (&[(names::ENDPOINT, "http://collector:4318/")], http, "http://collector:4318/v1/traces"),
        (&[(names::ENDPOINT, "https://otel.example.com/base")], http, "https://otel.example.com/base/v1/traces"),
        // The signal's own endpoint is used as it is, and wins.
        (
            &[(names::ENDPOINT, "http://other:1"), (names::TRACES_ENDPOINT, "http://collector:4318/custom")],
            http,
            "http://collector:4318/custom",
        ),
        (&[(names::PROTOCOL, "http/protobuf"), (names::ENDPOINT, "http://c:4318")], http, "http://c:4318/v1/traces"),
        // gRPC appends no path.
        (&[(names::PROTOCOL, "grpc"), (names::ENDPOINT, "http://collector:4317")], grpc, "http://collector:4317/"),
        (&[(names::PROTOCOL, "GRPC"), (names::ENDPOINT, "https://c.example.com")], grpc, "https://c.example.com/"),
        (
            &[(names::PROTOCOL, "http/protobuf"), (names::TRACES_PROTOCOL, "grpc"), (names::ENDPOINT, "http://c:4317")],
            grpc,
            "http://c:4317/",
        ),
        (
            &[(names::PROTOCOL, "grpc"), (names::TRACES_PROTOCOL, "http/protobuf"), (names::ENDPOINT, "http://c:4318")],
            http,
            "http://c:4318/v1/traces",
        ),
        // A gRPC endpoint without a scheme: TLS unless insecure.
        (&[(names::PROTOCOL, "grpc"), (names::ENDPOINT, "collector:4317")], grpc, "https://collector:4317/"),
        (
            &[(names::PROTOCOL, "grpc"), (names::ENDPOINT, "collector:4317"), (names::INSECURE, "true")],
            grpc,
            "http://collector:4317/",
        ),
        (
            &[(names::PROTOCOL, "grpc"), (names::ENDPOINT, "collector:4317"), (names::TRACES_INSECURE, "TRUE")],
            grpc,
            "http://collector:4317/",
        ),
        // Values are trimmed.
        (&[(names::ENDPOINT, "  http://collector:4318 ")], http, "http://collector:4318/v1/traces"),
    ];
    for (pairs, protocol, endpoint) in cases {
        let c = config(pairs);
        let e = c.export.as_ref().unwrap_or_else(|| panic!("{pairs:?} should export"));
        assert_eq!((e.protocol, e.endpoint.as_str()), (*protocol, *endpoint), "{pairs:?}");
        assert!(c.summary.contains(protocol.as_str()), "{}", c.summary);
    }
}

#[test]
fn timeouts() {
    let on = (names::ENDPOINT, "http://c:4318");
    for (pairs, ms) in [
        (vec![on], 10_000),
        (vec![on, (names::TIMEOUT, "2500")], 2_500),
        (vec![on, (names::TIMEOUT, "2500"), (names::TRACES_TIMEOUT, "700")], 700),
    ] {
        let c = config(&pairs);
        assert_eq!(c.export.expect("on").timeout, Duration::from_millis(ms), "{pairs:?}");
    }
}

#[test]
fn headers_are_decoded_and_never_shown() {
    let c = config(&[(names::ENDPOINT, "http://c:4318"), (names::HEADERS, "api-key=s%3Dcr3t, X-Team = core ")]);
    let e = c.export.as_ref().expect("on");
    let shown: Vec<(&str, &str)> = e.headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
    assert_eq!(shown, vec![("api-key", "s=cr3t"), ("x-team", "core")]);
    assert!(!format!("{c:?}").contains("cr3t"));
    assert!(!c.summary.contains("cr3t"));
    // The signal's variable replaces the generic one whole, as the SDK reads them.
    let c = config(&[(names::ENDPOINT, "http://c:4318"), (names::HEADERS, "a=1"), (names::TRACES_HEADERS, "b=2")]);
    let names_only: Vec<&str> = c.export.as_ref().expect("on").headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names_only, ["b"]);
}

#[test]
fn the_summary_hides_credentials_in_the_endpoint() {
    let c = config(&[(names::TRACES_ENDPOINT, "https://user:pa55@otel.example.com/v1/traces?key=k3y")]);
    assert!(c.summary.contains("https://otel.example.com/v1/traces"), "{}", c.summary);
    assert!(!c.summary.contains("pa55") && !c.summary.contains("k3y"), "{}", c.summary);
}

#[test]
fn switches_that_turn_tracing_off() {
    let on = (names::ENDPOINT, "http://c:4318");
    for (pairs, exports) in [
        (vec![on, (names::SDK_DISABLED, "true")], false),
        (vec![on, (names::SDK_DISABLED, "TRUE")], false),
        (vec![on, (names::SDK_DISABLED, "false")], true),
        (vec![on, (names::TRACES_EXPORTER, "none")], false),
        (vec![on, (names::TRACES_EXPORTER, "otlp")], true),
        (vec![on, (names::TRACES_EXPORTER, "OTLP")], true),
        (vec![on, (names::TRACES_EXPORTER, "otlp,none")], true),
        (vec![(names::TRACES_EXPORTER, "otlp")], false),
    ] {
        let c = config(&pairs);
        assert_eq!(c.export.is_some(), exports, "{pairs:?}");
        assert_eq!(c.summary.contains("off"), !exports, "{pairs:?}: {}", c.summary);
    }
}

#[test]
fn service_name_and_resource() {
    let c = config(&[(names::RESOURCE_ATTRIBUTES, "service.name=from-attrs, deployment.environment.name=prod%20eu")]);
    assert_eq!(c.service_name, "from-attrs");
    assert_eq!(c.resource, vec![("deployment.environment.name".to_owned(), "prod eu".to_owned())]);
    let c = config(&[(names::RESOURCE_ATTRIBUTES, "service.name=from-attrs"), (names::SERVICE_NAME, "svc")]);
    assert_eq!(c.service_name, "svc");
    assert!(c.resource.is_empty());
}

#[test]
fn samplers() {
    for (pairs, sampler) in [
        (vec![], Sampler { parent_based: true, rule: Rule::AlwaysOn }),
        (vec![(names::SAMPLER, "always_off")], Sampler { parent_based: false, rule: Rule::AlwaysOff }),
        (
            vec![(names::SAMPLER, "parentbased_traceidratio"), (names::SAMPLER_ARG, "0.25")],
            Sampler { parent_based: true, rule: Rule::TraceIdRatio(0.25) },
        ),
        (vec![(names::SAMPLER, "traceidratio")], Sampler { parent_based: false, rule: Rule::TraceIdRatio(1.0) }),
    ] {
        assert_eq!(config(&pairs).sampler, sampler, "{pairs:?}");
    }
}

#[test]
fn bad_values_are_named_without_their_secrets() {
    let cases: &[(Pairs, &str)] = &[
        (&[(names::SDK_DISABLED, "yes")], names::SDK_DISABLED),
        (&[(names::TRACES_EXPORTER, "zipkin")], names::TRACES_EXPORTER),
        (&[(names::PROTOCOL, "http/json")], names::PROTOCOL),
        (&[(names::TRACES_PROTOCOL, "carrier-pigeon")], names::TRACES_PROTOCOL),
        (&[(names::INSECURE, "maybe")], names::INSECURE),
        (&[(names::ENDPOINT, "ftp://secret@collector")], names::ENDPOINT),
        (&[(names::ENDPOINT, "not a url secret")], names::ENDPOINT),
        (&[(names::TRACES_ENDPOINT, "http://")], names::TRACES_ENDPOINT),
        (&[(names::ENDPOINT, "collector:4318")], names::ENDPOINT),
        (&[(names::HEADERS, "secretnovalue")], names::HEADERS),
        (&[(names::HEADERS, "k=s%zzecret")], names::HEADERS),
        (&[(names::TRACES_HEADERS, "k=secr%01t")], names::TRACES_HEADERS),
        (&[(names::TIMEOUT, "0")], names::TIMEOUT),
        (&[(names::TRACES_TIMEOUT, "10s")], names::TRACES_TIMEOUT),
        (&[(names::COMPRESSION, "gzip")], names::COMPRESSION),
        (&[(names::SAMPLER, "sometimes")], names::SAMPLER),
        (&[(names::SAMPLER, "traceidratio"), (names::SAMPLER_ARG, "2")], names::SAMPLER_ARG),
        (&[(names::RESOURCE_ATTRIBUTES, "novalue")], names::RESOURCE_ATTRIBUTES),
        (&[(names::RESOURCE_ATTRIBUTES, "k=%FF")], names::RESOURCE_ATTRIBUTES),
        (&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")], "OTEL_BSP_MAX_QUEUE_SIZE"),
        (&[("OTEL_BSP_SCHEDULE_DELAY", "5s")], "OTEL_BSP_SCHEDULE_DELAY"),
    ];
    for (pairs, name) in cases {
        // Checked whether tracing is on or off, so a typo shows before it matters.
        let errors = TraceConfig::from_env(env(pairs)).expect_err(&format!("{pairs:?} should be refused"));
        assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
        assert!(errors[0].starts_with(&format!("{name}:")), "{pairs:?}: {errors:?}");
        assert!(!errors[0].contains("secret") && !errors[0].contains("secr%"), "{errors:?}");
    }
    // Every problem at once, joined for the one error `Telemetry::from_env` returns.
    let e =
        Telemetry::from_env(env(&[(names::SDK_DISABLED, "yes"), (names::TIMEOUT, "-1")])).expect_err("two problems");
    assert!(e.contains(names::SDK_DISABLED) && e.contains(names::TIMEOUT) && e.contains("; "), "{e}");
}

#[test]
fn exporting_needs_the_runtime_it_runs_on() {
    let e = Telemetry::from_env(env(&[(names::ENDPOINT, "http://127.0.0.1:9")])).expect_err("no runtime here");
    assert!(e.contains("tokio runtime"), "{e}");
}

// ---------------------------------------------------------------------------------------
// (b) The spans of a job, through the SDK's in-memory exporter.

fn recording(pairs: &[(&str, &str)]) -> (Telemetry, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = config(pairs).provider_builder().with_simple_exporter(exporter.clone()).build();
    (Telemetry::with_provider(provider), exporter)
}

fn finished(exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    exporter.get_finished_spans().expect("the in-memory exporter answers")
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn str_attr(span: &SpanData, key: &str) -> String {
    match attr(span, key) {
        Some(Value::String(s)) => s.as_str().to_owned(),
        other => panic!("{}: {key} is {other:?}, not a string", span.name),
    }
}

fn int_attr(span: &SpanData, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::I64(i)) => *i,
        other => panic!("{}: {key} is {other:?}, not an integer", span.name),
    }
}

fn by_name<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}: {spans:#?}"))
}

#[test]
fn a_jobs_spans_chain_from_the_context_it_came_with() {
    let (t, exporter) = recording(&[]);
    let job = parent();
    let delivery = t.delivery(&job, "edgejobs:native", "1700000000000-0");
    let attempt = t.attempt(&delivery, "http.request", JOB, 2, Lane::Native);
    attempt.event(keys::events::LEASE_RENEWED, [Attr::new(keys::CONSUMER, "consumer-1")]);
    let url = url::Url::parse("https://user:pw@api.example.com:8443/v1/chat?token=secret#frag").expect("a URL");
    let call = t.outbound(&attempt, "POST", &url);
    let sent = call.traceparent();
    call.finish(Some(503), None);
    attempt.outcome("failed", Some(5_000), Some("upstream answered 503"));
    let (attempt_ids, delivery_ids) = (attempt.context(), delivery.context());
    assert!(attempt.is_recording());
    assert_eq!(attempt.trace_id_hex(), TRACE);
    assert_ne!(attempt.span_id_hex(), PARENT_SPAN);
    attempt.end();
    drop(delivery);

    let spans = finished(&exporter);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    for s in &spans {
        assert_eq!(s.span_context.trace_id().to_string(), TRACE, "{}", s.name);
        assert!(s.span_context.is_sampled(), "{}", s.name);
        assert_eq!(s.span_context.trace_state().header(), STATE, "{}", s.name);
        assert_eq!(s.instrumentation_scope.name(), "edgejobs-consumer");
        // No attribute holds the query string or the credentials.
        for kv in &s.attributes {
            let v = kv.value.to_string();
            assert!(!v.contains("secret") && !v.contains("pw"), "{}: {} = {v}", s.name, kv.key);
        }
    }

    let d = by_name(&spans, "receive edgejobs:native");
    assert_eq!(d.parent_span_id.to_string(), PARENT_SPAN);
    assert!(d.parent_span_is_remote);
    assert_eq!(d.span_kind, SpanKind::Client, "semantic conventions 1.42: a receive span is CLIENT");
    assert_eq!(d.span_context.span_id().to_bytes(), delivery_ids.span_id.0);
    assert_eq!(str_attr(d, keys::MESSAGING_SYSTEM), "redis_streams");
    assert_eq!(str_attr(d, keys::MESSAGING_OPERATION_TYPE), "receive");
    assert_eq!(str_attr(d, keys::MESSAGING_OPERATION_NAME), "receive");
    assert_eq!(str_attr(d, keys::MESSAGING_DESTINATION_NAME), "edgejobs:native");
    assert_eq!(str_attr(d, keys::MESSAGING_MESSAGE_ID), "1700000000000-0");
    assert_eq!(d.links.links.len(), 1, "linked to the message's creation context");
    assert_eq!(d.links.links[0].span_context.span_id().to_string(), PARENT_SPAN);

    let a = by_name(&spans, "process http.request");
    assert_eq!(a.parent_span_id, d.span_context.span_id());
    assert!(!a.parent_span_is_remote);
    assert_eq!(a.span_kind, SpanKind::Consumer);
    assert_eq!(a.span_context.span_id().to_bytes(), attempt_ids.span_id.0);
    assert_eq!(str_attr(a, keys::MESSAGING_OPERATION_TYPE), "process");
    assert_eq!(str_attr(a, keys::MESSAGING_MESSAGE_ID), JOB);
    assert_eq!(str_attr(a, keys::JOB_ID), JOB);
    assert_eq!(str_attr(a, keys::JOB_TYPE), "http.request");
    assert_eq!(int_attr(a, keys::JOB_ATTEMPT), 2);
    assert_eq!(str_attr(a, keys::JOB_LANE), "native");
    assert_eq!(str_attr(a, keys::JOB_OUTCOME), "failed");
    assert_eq!(int_attr(a, keys::JOB_RETRY_DELAY_MS), 5_000);
    assert_eq!(str_attr(a, keys::ERROR_TYPE), "failed");
    assert_eq!(a.status, Status::error("upstream answered 503"));
    let event = a.events.events.iter().find(|e| e.name == keys::events::LEASE_RENEWED).expect("the lease event");
    assert_eq!(event.attributes, vec![KeyValue::new(keys::CONSUMER, "consumer-1")]);

    let o = by_name(&spans, "POST");
    assert_eq!(o.parent_span_id, a.span_context.span_id());
    assert_eq!(o.span_kind, SpanKind::Client);
    assert_eq!(str_attr(o, keys::HTTP_REQUEST_METHOD), "POST");
    assert_eq!(str_attr(o, keys::SERVER_ADDRESS), "api.example.com");
    assert_eq!(int_attr(o, keys::SERVER_PORT), 8443);
    assert_eq!(str_attr(o, keys::URL_FULL), "https://api.example.com:8443/v1/chat");
    assert_eq!(int_attr(o, keys::HTTP_RESPONSE_STATUS_CODE), 503);
    assert_eq!(str_attr(o, keys::ERROR_TYPE), "503");
    assert!(matches!(o.status, Status::Error { .. }), "{:?}", o.status);

    // What the callee receives names the outbound span, in the job's trace.
    assert_eq!(sent.trace_id.to_hex(), TRACE);
    assert_eq!(sent.span_id.0, o.span_context.span_id().to_bytes());
    assert!(sent.sampled());
    assert_eq!(sent.state.as_deref(), Some(STATE));
    assert_eq!(sent.traceparent(), format!("00-{TRACE}-{}-01", o.span_context.span_id()));
}

#[test]
fn outbound_outcomes() {
    let (t, exporter) = recording(&[]);
    let attempt = t.attempt(&parent(), "webhook", JOB, 1, Lane::Native);
    let url = url::Url::parse("http://[::1]:8080/hook").expect("a URL");
    t.outbound(&attempt, "post", &url).finish(None, Some("timeout"));
    t.outbound(&attempt, "GET", &url).finish(Some(200), None);
    t.outbound(&attempt, "BREW", &url).finish(None, None);
    let spans = finished(&exporter);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (timeout, ok, other) = (&spans[0], &spans[1], &spans[2]);
    // A known method in another case is recorded canonically, with its original spelling.
    assert_eq!(timeout.name, "POST");
    assert_eq!(str_attr(timeout, keys::HTTP_REQUEST_METHOD_ORIGINAL), "post");
    assert_eq!(str_attr(timeout, keys::SERVER_ADDRESS), "::1");
    assert_eq!(str_attr(timeout, keys::ERROR_TYPE), "timeout");
    assert!(attr(timeout, keys::HTTP_RESPONSE_STATUS_CODE).is_none());
    assert_eq!(timeout.status, Status::error("timeout"));
    assert_eq!(ok.status, Status::Unset);
    assert!(attr(ok, keys::ERROR_TYPE).is_none());
    assert_eq!(int_attr(ok, keys::HTTP_RESPONSE_STATUS_CODE), 200);
    assert_eq!(other.name, "HTTP");
    assert_eq!(str_attr(other, keys::HTTP_REQUEST_METHOD), "_OTHER");
    assert_eq!(str_attr(other, keys::ERROR_TYPE), "_OTHER");
    // The attempt (still open) is the parent of each, straight from the job's context.
    drop(attempt);
    let spans = finished(&exporter);
    let a = by_name(&spans, "process webhook");
    assert_eq!(a.parent_span_id.to_string(), PARENT_SPAN);
    assert!(a.parent_span_is_remote);
    assert!(spans.iter().filter(|s| s.name != "process webhook").all(|s| s.parent_span_id == a.span_context.span_id()));
}

#[test]
fn completed_and_cancelled_are_not_errors() {
    let (t, exporter) = recording(&[]);
    for outcome in ["completed", "cancelled", "dead", "lease_lost"] {
        t.attempt(&parent(), outcome, JOB, 1, Lane::Native).outcome(outcome, None, None);
    }
    let spans = finished(&exporter);
    for s in &spans {
        let outcome = str_attr(s, keys::JOB_OUTCOME);
        let error = matches!(outcome.as_str(), "dead" | "lease_lost");
        assert_eq!(matches!(s.status, Status::Error { .. }), error, "{outcome}: {:?}", s.status);
        assert_eq!(attr(s, keys::ERROR_TYPE).is_some(), error, "{outcome}");
        assert!(attr(s, keys::JOB_RETRY_DELAY_MS).is_none());
    }
    assert_eq!(spans.len(), 4);
}

#[test]
fn a_parent_not_sampled_is_followed_and_nothing_exported() {
    let (t, exporter) = recording(&[]);
    let job = TraceContext::parse(&TP.replace("-01", "-00"), None).expect("valid");
    let d = t.delivery(&job, "s", "1-0");
    let a = t.attempt(&d, "x", JOB, 1, Lane::Native);
    assert!(!a.is_recording());
    let call = t.outbound(&a, "GET", &url::Url::parse("https://example.com/").expect("a URL"));
    let sent = call.traceparent();
    assert_eq!(sent.trace_id.to_hex(), TRACE);
    assert!(!sent.sampled(), "the decision travels on");
    call.finish(Some(200), None);
    drop((a, d));
    assert!(finished(&exporter).is_empty());
}

#[test]
fn the_configured_sampler_decides() {
    let (t, exporter) = recording(&[(names::SAMPLER, "always_off")]);
    drop(t.attempt(&parent(), "x", JOB, 1, Lane::Native));
    assert!(finished(&exporter).is_empty(), "always_off ignores even a sampled parent");
}

#[test]
fn with_tracing_off_a_span_is_its_parent_carried_on() {
    let t = Telemetry::off();
    let job = parent();
    let d = t.delivery(&job, "s", "1-0");
    let a = t.attempt(&d, "x", JOB, 1, Lane::Native);
    for s in [&d, &a] {
        assert_eq!(s.context(), job);
        assert_eq!((s.trace_id_hex().as_str(), s.span_id_hex().as_str()), (TRACE, PARENT_SPAN));
        assert!(!s.is_recording());
    }
    a.event(keys::events::LEASE_LOST, []);
    a.set_attribute(keys::CONSUMER, "c");
    a.outcome("failed", Some(1), Some("x"));
    let call = t.outbound(&a, "GET", &url::Url::parse("https://example.com/").expect("a URL"));
    assert_eq!(call.traceparent(), job, "the callee continues the job's context");
    call.finish(Some(200), None);
    let sentry = a.sentry_context();
    assert_eq!(sentry.trace_id.to_string(), TRACE);
    assert_eq!(sentry.span_id.to_string(), PARENT_SPAN);
    assert_eq!(sentry.parent_span_id, None);
}

#[test]
fn the_sentry_context_names_the_span() {
    let (t, _exporter) = recording(&[]);
    let a = t.attempt(&parent(), "x", JOB, 1, Lane::Native);
    let s = a.sentry_context();
    assert_eq!(s.trace_id.to_string(), a.trace_id_hex());
    assert_eq!(s.span_id.to_string(), a.span_id_hex());
    assert_eq!(s.parent_span_id.map(|p| p.to_string()).as_deref(), Some(PARENT_SPAN));
    assert_eq!(s.op.as_deref(), Some("queue.process"));
}

// ---------------------------------------------------------------------------------------
// (b) Real exports, to receivers on 127.0.0.1.

/// What the OTLP/HTTP receiver saw of one request.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_type: String,
    test_header: String,
    body: Vec<u8>,
}

/// Waits (at most `within`) for `cond` to hold of what was received.
async fn wait_for(
    seen: &Arc<Mutex<Vec<Received>>>,
    within: Duration,
    cond: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + within;
    loop {
        let now = seen.lock().expect("not poisoned").clone();
        if cond(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_http_protobuf_to_the_traces_path() {
    use axum::http::HeaderMap;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let app = {
        let seen = Arc::clone(&seen);
        axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let seen = Arc::clone(&seen);
            async move {
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                seen.lock().expect("not poisoned").push(Received {
                    path: uri.path().to_owned(),
                    content_type: h("content-type"),
                    test_header: h("x-test"),
                    body: body.to_vec(),
                });
                // An empty ExportTraceServiceResponse: full success.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let endpoint = format!("http://{addr}");
    let t = Telemetry::from_env(env(&[
        (names::ENDPOINT, endpoint.as_str()),
        // `a,b%c`, encoded: decoded once, not twice.
        (names::HEADERS, "x-test=a%2Cb%25c"),
        (names::SERVICE_NAME, "svc-under-test"),
    ]))
    .expect("starts inside the runtime");
    assert!(t.is_on());
    assert!(seen.lock().expect("not poisoned").is_empty(), "nothing sent before a span ends");
    let d = t.delivery(&parent(), "stream-1", "1-0");
    d.end();
    // The shutdown sends what the batch holds, without waiting for the schedule (5 s).
    t.shutdown_within(Duration::from_secs(10)).await.expect("flushed");
    let got = wait_for(&seen, Duration::from_secs(5), |r| !r.is_empty()).await;
    server.abort();

    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(r.path, "/v1/traces");
    assert_eq!(r.content_type, "application/x-protobuf");
    assert_eq!(r.test_header, "a,b%c");
    let req = ExportTraceServiceRequest::decode(r.body.as_slice()).expect("an OTLP request");
    let rs = &req.resource_spans[0];
    let resource = rs.resource.as_ref().expect("a resource");
    let service = resource.attributes.iter().find(|kv| kv.key == keys::SERVICE_NAME).expect("service.name");
    assert_eq!(format!("{:?}", service.value), format!("{:?}", Some(string_value("svc-under-test"))));
    let spans: Vec<_> = rs.scope_spans.iter().flat_map(|s| s.spans.iter()).collect();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "receive stream-1");
    assert_eq!(hex(&spans[0].trace_id), TRACE);
    assert_eq!(hex(&spans[0].parent_span_id), PARENT_SPAN);
    assert_eq!(rs.scope_spans[0].scope.as_ref().map(|s| s.name.as_str()), Some("edgejobs-consumer"));
}

fn string_value(s: &str) -> opentelemetry_proto::tonic::common::v1::AnyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    AnyValue { value: Some(any_value::Value::StringValue(s.to_owned())) }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_speaks_http2_and_a_stuck_collector_cannot_hold_the_shutdown() {
    use tokio::io::AsyncReadExt as _;

    // A collector that accepts and reads, and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let preface = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("the exporter connects");
        let mut buf = [0u8; 24];
        conn.read_exact(&mut buf).await.expect("the client preface");
        // Hold the connection open, silent, until the test ends.
        let keep = tokio::spawn(async move {
            let mut sink = [0u8; 1024];
            while conn.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        (buf, keep)
    });

    let endpoint = format!("http://{addr}");
    let t = Telemetry::from_env(env(&[
        (names::PROTOCOL, "grpc"),
        (names::ENDPOINT, endpoint.as_str()),
        // Far longer than the shutdown may take: only its own bound can end it in time.
        (names::TIMEOUT, "30000"),
        (names::HEADERS, "authorization=Bearer%20x"),
    ]))
    .expect("starts");
    drop(t.attempt(&parent(), "x", JOB, 1, Lane::Native));
    let started = Instant::now();
    let result = t.shutdown_within(Duration::from_millis(800)).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the shutdown took {took:?} ({result:?})");
    let e = result.expect_err("a collector that never answers cannot be flushed to");
    assert!(e.contains("not sent within"), "{e}");

    let (buf, keep) = tokio::time::timeout(Duration::from_secs(5), preface)
        .await
        .expect("the exporter connected in time")
        .expect("the receiver task ran");
    keep.abort();
    assert_eq!(&buf, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "gRPC's HTTP/2 client preface");
}

// ---------------------------------------------------------------------------------------
// (c) Core's W3C reader against the SDK's propagator.

/// How core's `TraceContext::parse` compares with `TraceContextPropagator`'s extraction.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Agree,
    /// They differ, for the reason given (a known disagreement, reported to the lead).
    Differ(&'static str),
}

/// What a reader kept: trace id, span id, flags, tracestate (`None` for none or empty).
type Read = Option<(String, String, u8, Option<String>)>;

fn ours(tp: &str, ts: Option<&str>) -> Read {
    TraceContext::parse(tp, ts).map(|c| (c.trace_id.to_hex(), c.span_id.to_hex(), c.flags, c.state))
}

fn sdks(tp: &str, ts: Option<&str>) -> Read {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    let mut headers = HashMap::new();
    headers.insert("traceparent".to_owned(), tp.to_owned());
    if let Some(ts) = ts {
        headers.insert("tracestate".to_owned(), ts.to_owned());
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&headers);
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        let state = sc.trace_state().header();
        (
            sc.trace_id().to_string(),
            sc.span_id().to_string(),
            sc.trace_flags().to_u8(),
            (!state.is_empty()).then_some(state),
        )
    })
}

#[test]
fn cores_traceparent_reader_against_the_sdks_propagator() {
    use Expect::{Agree, Differ};
    let ids = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    let tp = |v: &str, f: &str| format!("{v}-{ids}-{f}");
    let many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    let long = format!("a={0},b={0},c={0}", "v".repeat(200));
    let rows: Vec<(String, Option<String>, Expect)> = vec![
        // Valid traceparents.
        (TP.to_owned(), Some(STATE.to_owned()), Agree),
        (tp("00", "00"), None, Agree),
        (format!(" \t{TP}\t "), None, Agree),
        (tp("cc", "01-what-ever"), None, Agree),
        (tp("01", "09-"), None, Agree),
        (tp("02", "08"), None, Agree),
        (tp("fe", "01"), None, Agree),
        (
            tp("00", "03"),
            None,
            Differ("version 00: core keeps unknown flag bits (03), the SDK keeps only `sampled` (01)"),
        ),
        // Invalid traceparents.
        (String::new(), None, Agree),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".to_owned(), None, Agree),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(), None, Agree),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_owned(), None, Agree),
        (tp("ff", "01"), None, Agree),
        (tp("00", "01-extra"), None, Agree),
        (tp("0x", "01"), None, Agree),
        (tp("00", "g1"), None, Agree),
        (tp("01", "01x"), None, Agree),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736".to_owned(), None, Agree),
        (
            tp("00", "01-"),
            None,
            Differ("version 00 with a trailing '-': 56 characters, invalid by the spec; the SDK accepts"),
        ),
        (tp("0", "01"), None, Differ("a one-digit version: the SDK accepts")),
        (tp("A0", "01"), None, Differ("an upper-case version: the SDK accepts")),
        (tp("00", "1"), None, Differ("one-digit flags: the SDK accepts")),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01".to_owned(),
            None,
            Differ("a 31-digit trace id: the SDK accepts (it parses the hex without checking its length)"),
        ),
        (
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            None,
            Differ("a '+' in the trace id: the SDK accepts (Rust's integer parser takes a sign)"),
        ),
        // Tracestates, with a valid parent.
        (TP.to_owned(), Some("a=1,b=2".to_owned()), Agree),
        (TP.to_owned(), Some("a=1, ,b@sys=2".to_owned()), Agree),
        (TP.to_owned(), Some("a=b ".to_owned()), Agree),
        (TP.to_owned(), Some("UPPER=1".to_owned()), Agree),
        (TP.to_owned(), Some("a=x,y".to_owned()), Agree),
        (TP.to_owned(), Some(String::new()), Agree),
        (
            TP.to_owned(),
            Some("a=1,a=2".to_owned()),
            Differ("a duplicate key: core drops the tracestate, the SDK keeps both"),
        ),
        (TP.to_owned(), Some("a==b".to_owned()), Differ("`a==b`: core drops it, the SDK reads it as a=b")),
        (TP.to_owned(), Some("a=".to_owned()), Differ("an empty value: core drops it, the SDK keeps it")),
        (TP.to_owned(), Some("a@=1".to_owned()), Differ("an empty system id: core drops it, the SDK keeps it")),
        (
            TP.to_owned(),
            Some("t@abcdefghijklmn=1".to_owned()),
            Differ("a 14-character system id (the spec's maximum): core keeps it, the SDK drops it (it allows 13)"),
        ),
        (
            TP.to_owned(),
            Some("a=x\u{1}y".to_owned()),
            Differ("a control character in a value: core drops it, the SDK keeps it"),
        ),
        (TP.to_owned(), Some(many), Differ("33 members: core drops the tracestate, the SDK keeps the first 32")),
        (TP.to_owned(), Some(long), Differ("over 512 characters: core drops it (TRACESTATE_MAX), the SDK keeps it")),
    ];
    assert!(rows.len() >= 30);
    let mut report = Vec::new();
    for (traceparent, tracestate, expect) in &rows {
        let (o, s) = (ours(traceparent, tracestate.as_deref()), sdks(traceparent, tracestate.as_deref()));
        match expect {
            Agree => assert_eq!(o, s, "{traceparent:?} / {tracestate:?}: core and the SDK should agree"),
            Differ(why) => {
                assert_ne!(o, s, "{traceparent:?} / {tracestate:?}: expected to differ ({why}), but they agree");
                report.push(format!("{traceparent:?} / {tracestate:?}: core {o:?}, SDK {s:?} — {why}"));
            }
        }
    }
    // The known disagreements, for the record (`cargo test -- --nocapture`).
    for line in &report {
        println!("{line}");
    }
}
