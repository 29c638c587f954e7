//! The edge's spans and their OTLP/JSON encoding (an `ExportTraceServiceRequest`), built
//! without the opentelemetry crates so the Worker's wasm stays small (#32).
//!
//! A [`SpanRecord`] is plain data: the instrumentation makes one with [`SpanRecord::new`]
//! (times and span ids are arguments; the core reads no clock or random source), adds
//! attributes built by [`messaging_attrs`] and [`http_client_attrs`], ends it, and hands a
//! batch to [`export_request_json`], whose output an OTLP/HTTP receiver takes as
//! `application/json` at `/v1/traces`. Attribute keys live in [`keys`], in one place: the
//! semantic conventions' from `opentelemetry-semantic-conventions` (version
//! [`SEMCONV_VERSION`]), and our own `edgejobs.*` ones.

use crate::trace::{SpanId, TraceContext, TraceId};

/// The version of the OpenTelemetry semantic conventions the attributes follow: the one
/// `opentelemetry-semantic-conventions` 0.33 generates (its `SCHEMA_URL`, which every
/// export names as its `schemaUrl`).
pub const SEMCONV_VERSION: &str = "1.42.0";

/// The schema URL of [`SEMCONV_VERSION`], sent with every export.
pub const SCHEMA_URL: &str = opentelemetry_semantic_conventions::SCHEMA_URL;

/// Attribute keys and event names, in one place.
pub mod keys {
    // The semantic conventions' keys (messaging ones are still "development" there, hence
    // the crate's `semconv_experimental` feature; they are constants, nothing is linked).
    pub use opentelemetry_semantic_conventions::attribute::{
        ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_REQUEST_METHOD_ORIGINAL, HTTP_RESPONSE_STATUS_CODE,
        MESSAGING_BATCH_MESSAGE_COUNT, MESSAGING_DESTINATION_NAME, MESSAGING_MESSAGE_ID, MESSAGING_OPERATION_NAME,
        MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM, SERVER_ADDRESS, SERVER_PORT, SERVICE_NAME, SERVICE_VERSION,
        TELEMETRY_SDK_LANGUAGE, TELEMETRY_SDK_NAME, TELEMETRY_SDK_VERSION, URL_FULL,
    };

    /// The job a span is about (its id, which names its shard).
    pub const JOB_ID: &str = "edgejobs.job.id";
    /// The job's type (`webhook`, `http.request`, a declared type, ...).
    pub const JOB_TYPE: &str = "edgejobs.job.type";
    /// The lane an attempt runs in (`edge` or `native`).
    pub const JOB_LANE: &str = "edgejobs.job.lane";
    /// The attempt number, from 1.
    pub const JOB_ATTEMPT: &str = "edgejobs.job.attempt";
    /// How an attempt ended (`completed`, `retry`, `dead`, ...).
    pub const JOB_OUTCOME: &str = "edgejobs.job.outcome";
    /// The delay before the next attempt, in milliseconds, when the outcome is a retry.
    pub const JOB_RETRY_DELAY_MS: &str = "edgejobs.job.retry_delay_ms";
    /// The shard (Durable Object) that holds the job.
    pub const SHARD: &str = "edgejobs.shard";
    /// The tenant that owns the job.
    pub const TENANT: &str = "edgejobs.tenant";
    /// The schedule a run belongs to.
    pub const SCHEDULE_ID: &str = "edgejobs.schedule.id";
    /// A workflow step's name and its position in the run, from 0.
    pub const WORKFLOW_STEP: &str = "edgejobs.workflow.step";
    pub const WORKFLOW_STEP_INDEX: &str = "edgejobs.workflow.step.index";
    /// The native consumer that holds or held a lease.
    pub const CONSUMER: &str = "edgejobs.consumer";
    /// A workflow step's kind (`run`, `sleep`, `wait`, `invoke`, `fan_out`).
    pub const WORKFLOW_STEP_KIND: &str = "edgejobs.workflow.step.kind";
    /// The service binding a delivery went through (#31).
    pub const SERVICE_BINDING: &str = "edgejobs.service_binding";
    /// Whether a lease was taken over from another consumer.
    pub const LEASE_TAKEOVER: &str = "edgejobs.lease.takeover";

    /// `messaging.system` of the edge's Cloudflare Queue (the conventions name no value
    /// for it; custom values are allowed).
    pub const SYSTEM_CLOUDFLARE_QUEUES: &str = "cloudflare_queues";
    /// `messaging.system` of the Upstash Redis stream the native lane reads.
    pub const SYSTEM_REDIS_STREAMS: &str = "redis_streams";

    /// Span event names.
    pub mod events {
        /// A job was handed to the native lane's stream.
        pub const HANDOFF: &str = "edgejobs.handoff";
        /// A native consumer took, renewed (heartbeat), lost or gave back a job's lease.
        pub const LEASE_TAKEN: &str = "edgejobs.lease.taken";
        pub const LEASE_RENEWED: &str = "edgejobs.lease.renewed";
        pub const LEASE_LOST: &str = "edgejobs.lease.lost";
        pub const LEASE_RELEASED: &str = "edgejobs.lease.released";
    }
}

/// The longest string attribute value (and array element, and status message) kept, in
/// bytes: longer ones are cut at a character boundary. Values come from users too (an
/// error's text, a method), and a batch is sent from the Worker on every invocation. The
/// SDK's `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` has no default; this one is ours.
pub const ATTR_VALUE_MAX: usize = 1024;

/// What a span describes, numbered as OTLP's `Span.SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// How a span's operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Unset,
    Ok,
    Error(String),
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Bool(bool),
    Double(f64),
    StrArray(Vec<String>),
}

/// One attribute; keys are the constants of [`keys`].
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub key: &'static str,
    pub value: AttrValue,
}

impl Attr {
    pub fn new(key: &'static str, value: impl Into<AttrValue>) -> Attr {
        Attr { key, value: value.into().capped() }
    }
}

impl AttrValue {
    fn capped(self) -> AttrValue {
        match self {
            AttrValue::Str(s) => AttrValue::Str(cap(s)),
            AttrValue::StrArray(v) => AttrValue::StrArray(v.into_iter().map(cap).collect()),
            other => other,
        }
    }
}

/// `s` cut to [`ATTR_VALUE_MAX`] bytes at a character boundary.
fn cap(mut s: String) -> String {
    if s.len() > ATTR_VALUE_MAX {
        let end = (0..=ATTR_VALUE_MAX).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.truncate(end);
    }
    s
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> AttrValue {
        AttrValue::Str(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> AttrValue {
        AttrValue::Str(v)
    }
}
impl From<&String> for AttrValue {
    fn from(v: &String) -> AttrValue {
        AttrValue::Str(v.clone())
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> AttrValue {
        AttrValue::Int(v)
    }
}
impl From<i32> for AttrValue {
    fn from(v: i32) -> AttrValue {
        AttrValue::Int(v.into())
    }
}
impl From<u32> for AttrValue {
    fn from(v: u32) -> AttrValue {
        AttrValue::Int(v.into())
    }
}
impl From<u16> for AttrValue {
    fn from(v: u16) -> AttrValue {
        AttrValue::Int(v.into())
    }
}
/// OTLP integers are signed 64-bit: larger values saturate.
impl From<u64> for AttrValue {
    fn from(v: u64) -> AttrValue {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for AttrValue {
    fn from(v: usize) -> AttrValue {
        AttrValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> AttrValue {
        AttrValue::Bool(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> AttrValue {
        AttrValue::Double(v)
    }
}
impl From<Vec<String>> for AttrValue {
    fn from(v: Vec<String>) -> AttrValue {
        AttrValue::StrArray(v)
    }
}
impl From<&[&str]> for AttrValue {
    fn from(v: &[&str]) -> AttrValue {
        AttrValue::StrArray(v.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// Something that happened at one moment of a span (a hand-off, a lease event).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub name: String,
    pub time_ns: u64,
    pub attrs: Vec<Attr>,
}

/// A span of another trace (or of this one) that this span relates to, such as the
/// schedule a run's new trace came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub attrs: Vec<Attr>,
}

/// One span as the edge records it. Times are nanoseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The parent span; `None` for a trace's root.
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    /// Equal to `start_ns` until [`SpanRecord::end`].
    pub end_ns: u64,
    pub attrs: Vec<Attr>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<Link>,
    pub status: Status,
    /// W3C `trace-flags` (bit 0: sampled).
    pub flags: u8,
    /// The trace's W3C `tracestate`, carried on so what this span calls receives it.
    pub state: Option<String>,
}

impl SpanRecord {
    /// A span that continues `parent` (its `span_id` becomes this span's parent), with the
    /// parent's trace, flags and `tracestate`.
    pub fn new(parent: &TraceContext, span_id: SpanId, name: impl Into<String>, kind: SpanKind, start_ns: u64) -> Self {
        SpanRecord {
            parent: Some(parent.span_id),
            flags: parent.flags,
            state: parent.state.clone(),
            ..SpanRecord::root(parent.trace_id, span_id, parent.sampled(), name, kind, start_ns)
        }
    }

    /// The first span of a new trace (a job that came without a `traceparent`), sampled or
    /// not as the [`crate::sampler::Sampler`] decided.
    pub fn root(
        trace_id: TraceId,
        span_id: SpanId,
        sampled: bool,
        name: impl Into<String>,
        kind: SpanKind,
        start_ns: u64,
    ) -> Self {
        SpanRecord {
            trace_id,
            span_id,
            parent: None,
            name: name.into(),
            kind,
            start_ns,
            end_ns: start_ns,
            attrs: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
            flags: if sampled { crate::trace::FLAG_SAMPLED } else { 0 },
            state: None,
        }
    }

    /// Sets an attribute, replacing one of the same key (so a helper's default, such as
    /// `error.type`, can be made more precise).
    pub fn attr(mut self, key: &'static str, value: impl Into<AttrValue>) -> Self {
        self.set_attr(key, value);
        self
    }

    /// Sets each attribute as [`SpanRecord::attr`] does.
    pub fn attrs(mut self, attrs: impl IntoIterator<Item = Attr>) -> Self {
        for a in attrs {
            self.set_attr(a.key, a.value);
        }
        self
    }

    pub fn set_attr(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        let a = Attr::new(key, value);
        match self.attrs.iter_mut().find(|old| old.key == key) {
            Some(old) => *old = a,
            None => self.attrs.push(a),
        }
    }

    pub fn event(mut self, name: impl Into<String>, time_ns: u64, attrs: Vec<Attr>) -> Self {
        self.add_event(name, time_ns, attrs);
        self
    }

    pub fn add_event(&mut self, name: impl Into<String>, time_ns: u64, attrs: Vec<Attr>) {
        let attrs = attrs.into_iter().map(|a| Attr::new(a.key, a.value)).collect();
        self.events.push(SpanEvent { name: name.into(), time_ns, attrs });
    }

    /// Links this span to the span `to` names.
    pub fn link(mut self, to: &TraceContext, attrs: Vec<Attr>) -> Self {
        let attrs = attrs.into_iter().map(|a| Attr::new(a.key, a.value)).collect();
        self.links.push(Link { trace_id: to.trace_id, span_id: to.span_id, attrs });
        self
    }

    pub fn status(mut self, status: Status) -> Self {
        self.set_status(status);
        self
    }

    pub fn set_status(&mut self, status: Status) {
        self.status = match status {
            Status::Error(m) => Status::Error(cap(m)),
            other => other,
        };
    }

    /// Sets the `sampled` flag (when this span's sampler decided otherwise than the parent).
    pub fn sampled(mut self, sampled: bool) -> Self {
        self.flags =
            if sampled { self.flags | crate::trace::FLAG_SAMPLED } else { self.flags & !crate::trace::FLAG_SAMPLED };
        self
    }

    pub fn is_sampled(&self) -> bool {
        self.flags & crate::trace::FLAG_SAMPLED != 0
    }

    /// Ends the span at `end_ns` (not before its start: a clock that went back gives a
    /// zero-length span, never a negative one).
    pub fn end(mut self, end_ns: u64) -> Self {
        self.finish(end_ns);
        self
    }

    pub fn finish(&mut self, end_ns: u64) {
        self.end_ns = end_ns.max(self.start_ns);
    }

    /// This span as the parent of what follows: the `traceparent` (and `tracestate`) to
    /// send on a call it makes, or to store with a job it creates.
    pub fn context(&self) -> TraceContext {
        TraceContext { trace_id: self.trace_id, span_id: self.span_id, flags: self.flags, state: self.state.clone() }
    }
}

/// The service that exports, as OTLP's `Resource`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub service_name: String,
    pub service_version: String,
    /// More resource attributes (`cloud.provider`, `deployment.environment.name`, ...). A
    /// key the encoder writes itself (`service.*`, `telemetry.sdk.*`) is skipped here.
    pub attrs: Vec<Attr>,
}

impl Resource {
    pub fn new(service_name: impl Into<String>, service_version: impl Into<String>) -> Resource {
        Resource { service_name: service_name.into(), service_version: service_version.into(), attrs: Vec::new() }
    }
}

/// `telemetry.sdk.name` of this encoder (it is not the OpenTelemetry SDK).
pub const SDK_NAME: &str = "edgejobs-core";

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans`, one resource and one scope, to
/// POST to a receiver's `/v1/traces` with `Content-Type: application/json`.
///
/// The encoding follows the OTLP specification's JSON mapping: camelCase field names,
/// trace and span ids as lowercase hex, 64-bit integers (times, `intValue`) as decimal
/// strings, `kind` and `status.code` as integers, default values left out. Two choices also
/// satisfy the reference decoder (`opentelemetry-proto`'s serde, stricter than the spec on
/// these): an `arrayValue` always has its `values` member, even empty, and a non-finite
/// double (which proto3 JSON writes as the string `"NaN"`, which that decoder refuses) is
/// sent as a `stringValue` (`NaN`, `Infinity`, `-Infinity`).
pub fn export_request_json(resource: &Resource, scope_name: &str, scope_version: &str, spans: &[SpanRecord]) -> String {
    let fixed = [
        (keys::SERVICE_NAME, json::AnyValue::String(&resource.service_name)),
        (keys::SERVICE_VERSION, json::AnyValue::String(&resource.service_version)),
        (keys::TELEMETRY_SDK_NAME, json::AnyValue::String(SDK_NAME)),
        (keys::TELEMETRY_SDK_LANGUAGE, json::AnyValue::String("rust")),
        (keys::TELEMETRY_SDK_VERSION, json::AnyValue::String(env!("CARGO_PKG_VERSION"))),
    ];
    let fixed_keys = fixed.each_ref().map(|(k, _)| *k);
    let extra = resource.attrs.iter().filter(|a| !fixed_keys.contains(&a.key)).map(json::kv);
    let resource_attrs = fixed.into_iter().map(|(key, value)| json::KeyValue { key, value }).chain(extra).collect();
    let request = json::Request {
        resource_spans: [json::ResourceSpans {
            resource: json::Resource { attributes: resource_attrs },
            scope_spans: [json::ScopeSpans {
                scope: json::Scope { name: scope_name, version: scope_version },
                spans: spans.iter().map(json::span).collect(),
                schema_url: SCHEMA_URL,
            }],
            schema_url: SCHEMA_URL,
        }],
    };
    serde_json::to_string(&request).expect("the OTLP structs serialize: no maps, no fallible Serialize impls")
}

/// The OTLP/JSON shapes, borrowed from the records.
mod json {
    use super::{Attr, AttrValue, SpanRecord, Status};
    use serde::Serialize;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Request<'a> {
        pub resource_spans: [ResourceSpans<'a>; 1],
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ResourceSpans<'a> {
        pub resource: Resource<'a>,
        pub scope_spans: [ScopeSpans<'a>; 1],
        pub schema_url: &'static str,
    }

    #[derive(Serialize)]
    pub(super) struct Resource<'a> {
        pub attributes: Vec<KeyValue<'a>>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct ScopeSpans<'a> {
        pub scope: Scope<'a>,
        pub spans: Vec<Span<'a>>,
        pub schema_url: &'static str,
    }

    #[derive(Serialize)]
    pub(super) struct Scope<'a> {
        pub name: &'a str,
        pub version: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Span<'a> {
        trace_id: String,
        span_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        trace_state: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parent_span_id: Option<String>,
        flags: u32,
        name: &'a str,
        kind: i32,
        start_time_unix_nano: String,
        end_time_unix_nano: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attributes: Vec<KeyValue<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        events: Vec<Event<'a>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        links: Vec<Link<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<SpanStatus<'a>>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Event<'a> {
        time_unix_nano: String,
        name: &'a str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attributes: Vec<KeyValue<'a>>,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Link<'a> {
        trace_id: String,
        span_id: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        attributes: Vec<KeyValue<'a>>,
    }

    #[derive(Serialize)]
    struct SpanStatus<'a> {
        #[serde(skip_serializing_if = "str::is_empty")]
        message: &'a str,
        code: i32,
    }

    #[derive(Serialize)]
    pub(super) struct KeyValue<'a> {
        pub key: &'a str,
        pub value: AnyValue<'a>,
    }

    /// Serialized externally tagged: `{"stringValue": "..."}`, as OTLP's `AnyValue`.
    #[derive(Serialize)]
    pub(super) enum AnyValue<'a> {
        #[serde(rename = "stringValue")]
        String(&'a str),
        /// int64 as a decimal string, as the JSON mapping writes 64-bit integers.
        #[serde(rename = "intValue")]
        Int(String),
        #[serde(rename = "boolValue")]
        Bool(bool),
        #[serde(rename = "doubleValue")]
        Double(f64),
        #[serde(rename = "arrayValue")]
        Array(ArrayValue<'a>),
    }

    #[derive(Serialize)]
    pub(super) struct ArrayValue<'a> {
        values: Vec<AnyValue<'a>>,
    }

    pub(super) fn kv(a: &Attr) -> KeyValue<'_> {
        let value = match &a.value {
            AttrValue::Str(s) => AnyValue::String(s),
            AttrValue::Int(i) => AnyValue::Int(i.to_string()),
            AttrValue::Bool(b) => AnyValue::Bool(*b),
            AttrValue::Double(d) if d.is_nan() => AnyValue::String("NaN"),
            AttrValue::Double(d) if d.is_infinite() => {
                AnyValue::String(if *d > 0.0 { "Infinity" } else { "-Infinity" })
            }
            AttrValue::Double(d) => AnyValue::Double(*d),
            AttrValue::StrArray(v) => {
                AnyValue::Array(ArrayValue { values: v.iter().map(|s| AnyValue::String(s)).collect() })
            }
        };
        KeyValue { key: a.key, value }
    }

    pub(super) fn span(s: &SpanRecord) -> Span<'_> {
        let status = match &s.status {
            Status::Unset => None,
            Status::Ok => Some(SpanStatus { message: "", code: 1 }),
            Status::Error(m) => Some(SpanStatus { message: m, code: 2 }),
        };
        Span {
            trace_id: s.trace_id.to_hex(),
            span_id: s.span_id.to_hex(),
            trace_state: s.state.as_deref(),
            parent_span_id: s.parent.map(|p| p.to_hex()),
            flags: u32::from(s.flags),
            name: &s.name,
            kind: s.kind as i32,
            start_time_unix_nano: s.start_ns.to_string(),
            end_time_unix_nano: s.end_ns.to_string(),
            attributes: s.attrs.iter().map(kv).collect(),
            events: s
                .events
                .iter()
                .map(|e| Event {
                    time_unix_nano: e.time_ns.to_string(),
                    name: &e.name,
                    attributes: e.attrs.iter().map(kv).collect(),
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| Link {
                    trace_id: l.trace_id.to_hex(),
                    span_id: l.span_id.to_hex(),
                    attributes: l.attrs.iter().map(kv).collect(),
                })
                .collect(),
            status,
        }
    }
}

/// The attributes of a messaging span (semantic conventions [`SEMCONV_VERSION`],
/// "Messaging spans"): `messaging.system`, `messaging.operation.type`,
/// `messaging.operation.name` (ours are the generic operation names, so the same value),
/// `messaging.destination.name`, and when given `messaging.message.id` (for a span about one
/// message) and `messaging.batch.message_count` (for a span about a batch).
///
/// `system` is one of [`keys::SYSTEM_CLOUDFLARE_QUEUES`] and [`keys::SYSTEM_REDIS_STREAMS`];
/// `operation_type` one of `create`, `send`, `receive`, `process`, `settle`.
pub fn messaging_attrs(
    system: &str,
    operation_type: &str,
    destination: &str,
    message_id: Option<&str>,
    batch_count: Option<usize>,
) -> Vec<Attr> {
    let mut out = vec![
        Attr::new(keys::MESSAGING_SYSTEM, system),
        Attr::new(keys::MESSAGING_OPERATION_TYPE, operation_type),
        Attr::new(keys::MESSAGING_OPERATION_NAME, operation_type),
        Attr::new(keys::MESSAGING_DESTINATION_NAME, destination),
    ];
    if let Some(id) = message_id {
        out.push(Attr::new(keys::MESSAGING_MESSAGE_ID, id));
    }
    if let Some(n) = batch_count {
        out.push(Attr::new(keys::MESSAGING_BATCH_MESSAGE_COUNT, n));
    }
    out
}

/// A messaging span's name: `{operation} {destination}`.
pub fn messaging_span_name(operation_type: &str, destination: &str) -> String {
    format!("{operation_type} {destination}")
}

/// A messaging span's kind by its operation: `create` and `send` are `PRODUCER`, `process`
/// is `CONSUMER`, `receive` and `settle` (and anything else) are `CLIENT`.
pub fn messaging_kind(operation_type: &str) -> SpanKind {
    match operation_type {
        "create" | "send" => SpanKind::Producer,
        "process" => SpanKind::Consumer,
        _ => SpanKind::Client,
    }
}

/// The HTTP methods the conventions call known (RFC 9110's, PATCH and QUERY); any other
/// is recorded as `_OTHER`, so a user's method cannot make the attribute's values unbounded.
const KNOWN_METHODS: [&str; 10] =
    ["CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"];

/// `http.request.method` for `method`, and the original spelling when that differs (a
/// known method in another case is recorded in its canonical form).
fn method_attrs(method: &str) -> (&'static str, Option<&str>) {
    match KNOWN_METHODS.iter().find(|m| m.eq_ignore_ascii_case(method)) {
        Some(m) if *m == method => (m, None),
        Some(m) => (m, Some(method)),
        None => ("_OTHER", Some(method)),
    }
}

/// The attributes of an HTTP client span (semantic conventions [`SEMCONV_VERSION`], "HTTP
/// client spans"): `http.request.method` (and `http.request.method_original` when it is not
/// a known method in canonical form), `server.address`, `server.port`, `url.full` without
/// its query string, fragment and user information (a query often holds a token), and, when
/// a response came, `http.response.status_code`. Never a header value.
///
/// `status` is `None` when no response came (a transport failure): `error.type` is then
/// `_OTHER`; set a more precise one (`timeout`, ...) with [`SpanRecord::attr`], which
/// replaces it. A response of 400 or more sets `error.type` to the status code, as the
/// conventions ask of a client span (4xx is an error on the client side).
pub fn http_client_attrs(method: &str, url: &url::Url, status: Option<u16>) -> Vec<Attr> {
    let (canonical, original) = method_attrs(method);
    let mut out = vec![Attr::new(keys::HTTP_REQUEST_METHOD, canonical)];
    if let Some(o) = original {
        out.push(Attr::new(keys::HTTP_REQUEST_METHOD_ORIGINAL, o));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => Some(d.to_owned()),
        Some(url::Host::Ipv4(a)) => Some(a.to_string()),
        // Without the brackets of the URL form, as the conventions' examples write it.
        Some(url::Host::Ipv6(a)) => Some(a.to_string()),
        None => None,
    };
    if let Some(h) = host {
        out.push(Attr::new(keys::SERVER_ADDRESS, h));
    }
    if let Some(p) = url.port_or_known_default() {
        out.push(Attr::new(keys::SERVER_PORT, p));
    }
    out.push(Attr::new(keys::URL_FULL, crate::outbound::redact_url(url.as_str())));
    match status {
        Some(code) => {
            out.push(Attr::new(keys::HTTP_RESPONSE_STATUS_CODE, code));
            if code >= 400 {
                out.push(Attr::new(keys::ERROR_TYPE, code.to_string()));
            }
        }
        None => out.push(Attr::new(keys::ERROR_TYPE, "_OTHER")),
    }
    out
}

/// An HTTP client span's name: its method (`HTTP` for a method not known).
pub fn http_client_span_name(method: &str) -> &'static str {
    match method_attrs(method).0 {
        "_OTHER" => "HTTP",
        m => m,
    }
}

/// An HTTP client span's status: an error for a response of 400 or more or no response,
/// unset otherwise (the conventions leave a success unset, and the description empty when
/// the status code says it all).
pub fn http_client_status(status: Option<u16>) -> Status {
    match status {
        Some(code) if code < 400 => Status::Unset,
        _ => Status::Error(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1 as proto;
    use proptest::prelude::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn sid(n: u8) -> SpanId {
        SpanId::new([n, 1, 2, 3, 4, 5, 6, 7]).expect("non-zero")
    }

    fn decode(json: &str) -> ExportTraceServiceRequest {
        serde_json::from_str::<ExportTraceServiceRequest>(json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    fn spans(req: &ExportTraceServiceRequest) -> &[proto::Span] {
        assert_eq!(req.resource_spans.len(), 1);
        assert_eq!(req.resource_spans[0].scope_spans.len(), 1);
        &req.resource_spans[0].scope_spans[0].spans
    }

    /// Our value as the reference decodes it.
    fn expected(v: &AttrValue) -> Value {
        let s = |s: &str| AnyValue { value: Some(Value::StringValue(s.to_owned())) };
        match v {
            AttrValue::Str(x) => Value::StringValue(x.clone()),
            AttrValue::Int(i) => Value::IntValue(*i),
            AttrValue::Bool(b) => Value::BoolValue(*b),
            AttrValue::Double(d) if d.is_nan() => Value::StringValue("NaN".into()),
            AttrValue::Double(d) if d.is_infinite() => {
                Value::StringValue(if *d > 0.0 { "Infinity" } else { "-Infinity" }.into())
            }
            AttrValue::Double(d) => Value::DoubleValue(*d),
            AttrValue::StrArray(v) => Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values: v.iter().map(|x| s(x)).collect(),
            }),
        }
    }

    fn assert_attrs(got: &[KeyValue], want: &[Attr]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.key, w.key);
            assert_eq!(g.value.as_ref().and_then(|v| v.value.clone()), Some(expected(&w.value)), "{}", w.key);
        }
    }

    fn value_of<'a>(attrs: &'a [Attr], key: &str) -> Option<&'a AttrValue> {
        attrs.iter().find(|a| a.key == key).map(|a| &a.value)
    }

    /// A trace as the edge makes one: an enqueue span under the client's context, a
    /// delivery with an event and a link, and an outbound call that failed.
    fn sample() -> (TraceContext, Vec<SpanRecord>) {
        let client = TraceContext::parse(TP, Some("vendor=x1")).expect("valid");
        let enqueue = SpanRecord::new(&client, sid(1), "send jobs", SpanKind::Producer, 1_700_000_000_000_000_000)
            .attrs(messaging_attrs(keys::SYSTEM_CLOUDFLARE_QUEUES, "send", "jobs", Some("j_1"), None))
            .attr(keys::JOB_ID, "j_1")
            .attr(keys::JOB_ATTEMPT, 1u32)
            .attr(keys::JOB_RETRY_DELAY_MS, u64::MAX)
            .attr("edgejobs.test.ratio", 0.25)
            .attr("edgejobs.test.nan", f64::NAN)
            .attr("edgejobs.test.inf", f64::NEG_INFINITY)
            .attr("edgejobs.test.flag", true)
            .attr("edgejobs.test.tags", vec!["a".to_owned(), "ü\"\\\n".to_owned()])
            .attr("edgejobs.test.empty", Vec::<String>::new())
            .status(Status::Ok)
            .end(1_700_000_000_000_000_500);
        let delivery = SpanRecord::new(&enqueue.context(), sid(2), "process jobs", SpanKind::Consumer, u64::MAX - 10)
            .event(keys::events::HANDOFF, u64::MAX - 5, vec![Attr::new(keys::SHARD, 3u32)])
            .event(keys::events::LEASE_TAKEN, u64::MAX - 4, vec![])
            .link(&client, vec![Attr::new(keys::SCHEDULE_ID, "s_1")])
            .end(u64::MAX);
        let url = url::Url::parse("https://user:pw@api.example.com:8443/v1/chat?key=s3cret#frag").expect("a URL");
        let call = SpanRecord::new(&delivery.context(), sid(3), http_client_span_name("post"), SpanKind::Client, 5)
            .attrs(http_client_attrs("post", &url, None))
            .attr(keys::ERROR_TYPE, "timeout")
            .status(Status::Error("timed out after 30s".into()))
            .end(4);
        (client, vec![enqueue, delivery, call])
    }

    #[test]
    fn the_reference_decoder_reads_back_every_field() {
        let (client, records) = sample();
        let mut resource = Resource::new("edgejobs-edge", "0.1.0");
        resource.attrs.push(Attr::new("cloud.provider", "cloudflare"));
        resource.attrs.push(Attr::new(keys::SERVICE_NAME, "ignored: written once"));
        let json = export_request_json(&resource, "edgejobs", "0.1.0", &records);
        let req = decode(&json);

        let rs = &req.resource_spans[0];
        assert_eq!(rs.schema_url, SCHEMA_URL);
        let res = rs.resource.as_ref().expect("a resource");
        let names: Vec<&str> = res.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            names,
            [
                "service.name",
                "service.version",
                "telemetry.sdk.name",
                "telemetry.sdk.language",
                "telemetry.sdk.version",
                "cloud.provider"
            ]
        );
        assert_eq!(
            res.attributes[0].value.as_ref().and_then(|v| v.value.clone()),
            Some(Value::StringValue("edgejobs-edge".into()))
        );
        let scope = rs.scope_spans[0].scope.as_ref().expect("a scope");
        assert_eq!((scope.name.as_str(), scope.version.as_str()), ("edgejobs", "0.1.0"));

        let got = spans(&req);
        assert_eq!(got.len(), records.len());
        for (g, r) in got.iter().zip(&records) {
            assert_eq!(g.trace_id, r.trace_id.0.to_vec(), "{}", r.name);
            assert_eq!(g.span_id, r.span_id.0.to_vec());
            assert_eq!(g.parent_span_id, r.parent.map(|p| p.0.to_vec()).unwrap_or_default());
            assert_eq!(g.name, r.name);
            assert_eq!(g.kind, r.kind as i32);
            assert_eq!((g.start_time_unix_nano, g.end_time_unix_nano), (r.start_ns, r.end_ns));
            assert_eq!(g.flags, u32::from(r.flags));
            assert_eq!(g.trace_state, r.state.clone().unwrap_or_default());
            assert_attrs(&g.attributes, &r.attrs);
            assert_eq!(g.events.len(), r.events.len());
            for (ge, re) in g.events.iter().zip(&r.events) {
                assert_eq!((ge.name.as_str(), ge.time_unix_nano), (re.name.as_str(), re.time_ns));
                assert_attrs(&ge.attributes, &re.attrs);
            }
            assert_eq!(g.links.len(), r.links.len());
            for (gl, rl) in g.links.iter().zip(&r.links) {
                assert_eq!((gl.trace_id.clone(), gl.span_id.clone()), (rl.trace_id.0.to_vec(), rl.span_id.0.to_vec()));
                assert_attrs(&gl.attributes, &rl.attrs);
            }
            let (code, message) = match &r.status {
                Status::Unset => (0, ""),
                Status::Ok => (1, ""),
                Status::Error(m) => (2, m.as_str()),
            };
            let st = g.status.clone().unwrap_or_default();
            assert_eq!((st.code, st.message.as_str()), (code, message));
        }

        // The chain: client → enqueue → delivery → call, one trace.
        assert_eq!(got[0].parent_span_id, client.span_id.0.to_vec());
        assert_eq!(got[1].parent_span_id, got[0].span_id);
        assert_eq!(got[2].parent_span_id, got[1].span_id);
        assert!(got.iter().all(|s| s.trace_id == client.trace_id.0.to_vec()));
        assert_eq!(got[0].kind, proto::span::SpanKind::Producer as i32);
        assert_eq!(got[2].kind, proto::span::SpanKind::Client as i32);
        assert_eq!(got[2].status.as_ref().map(|s| s.code), Some(proto::status::StatusCode::Error as i32));
        // A clock that went back ends the span at its start.
        assert_eq!(got[2].end_time_unix_nano, got[2].start_time_unix_nano);
        assert!(json.contains(r#""startTimeUnixNano":"1700000000000000000""#), "times are decimal strings");
        assert!(json.contains(r#""intValue":"9223372036854775807""#), "u64::MAX saturates, as a string");
        assert!(json.contains(r#""kind":4"#), "kind is an integer");
        assert!(json.contains(r#""traceId":"4bf92f3577b34da6a3ce929d0e0e4736""#), "ids are lowercase hex");
        assert!(!json.contains("parentSpanId\":\"\""), "a root leaves the parent out");
    }

    #[test]
    fn a_root_span_has_no_parent_and_an_empty_batch_is_a_valid_request() {
        let trace = TraceId::new([3; 16]).expect("non-zero");
        let root = SpanRecord::root(trace, sid(9), false, "enqueue", SpanKind::Server, 10).end(20);
        assert!(!root.is_sampled());
        let req = decode(&export_request_json(&Resource::new("s", "v"), "n", "v", &[root]));
        let s = &spans(&req)[0];
        assert!(s.parent_span_id.is_empty());
        assert_eq!((s.flags, s.status.clone()), (0, None));
        let empty = decode(&export_request_json(&Resource::new("s", "v"), "n", "v", &[]));
        assert!(spans(&empty).is_empty());
    }

    #[test]
    fn the_context_is_what_a_call_sends_on() {
        let client = TraceContext::parse(TP, Some("vendor=x1")).expect("valid");
        let span = SpanRecord::new(&client, sid(4), "POST", SpanKind::Client, 0);
        let cx = span.context();
        assert_eq!(cx.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0401020304050607-01");
        assert_eq!(cx.state.as_deref(), Some("vendor=x1"));
        assert!(!span.sampled(false).context().sampled());
        assert!(
            SpanRecord::root(client.trace_id, sid(5), false, "x", SpanKind::Internal, 0).sampled(true).is_sampled()
        );
    }

    #[test]
    fn attributes_replace_their_key_and_long_values_are_cut() {
        let client = TraceContext::parse(TP, None).expect("valid");
        let long = "é".repeat(ATTR_VALUE_MAX);
        let span = SpanRecord::new(&client, sid(6), "x", SpanKind::Internal, 0)
            .attr(keys::JOB_OUTCOME, "retry")
            .attr(keys::JOB_OUTCOME, "dead")
            .attr(keys::JOB_TYPE, long.clone())
            .status(Status::Error(long));
        assert_eq!(span.attrs.len(), 2);
        assert_eq!(value_of(&span.attrs, keys::JOB_OUTCOME), Some(&AttrValue::Str("dead".into())));
        let Some(AttrValue::Str(cut)) = value_of(&span.attrs, keys::JOB_TYPE) else { panic!("a string") };
        assert_eq!(cut.len(), ATTR_VALUE_MAX, "é is two bytes: cut on a boundary");
        let Status::Error(m) = &span.status else { panic!("an error") };
        assert_eq!(m.len(), ATTR_VALUE_MAX);
    }

    #[test]
    fn messaging_attributes_follow_the_conventions() {
        let a = messaging_attrs(keys::SYSTEM_REDIS_STREAMS, "receive", "edgejobs:native", None, Some(12));
        let got: Vec<(&str, &AttrValue)> = a.iter().map(|a| (a.key, &a.value)).collect();
        assert_eq!(
            got,
            [
                ("messaging.system", &AttrValue::Str("redis_streams".into())),
                ("messaging.operation.type", &AttrValue::Str("receive".into())),
                ("messaging.operation.name", &AttrValue::Str("receive".into())),
                ("messaging.destination.name", &AttrValue::Str("edgejobs:native".into())),
                ("messaging.batch.message_count", &AttrValue::Int(12)),
            ]
        );
        assert_eq!(messaging_span_name("process", "jobs"), "process jobs");
        assert_eq!(messaging_kind("send"), SpanKind::Producer);
        assert_eq!(messaging_kind("create"), SpanKind::Producer);
        assert_eq!(messaging_kind("process"), SpanKind::Consumer);
        assert_eq!(messaging_kind("receive"), SpanKind::Client);
        assert_eq!(messaging_kind("settle"), SpanKind::Client);
    }

    #[test]
    fn http_attributes_follow_the_conventions() {
        let url = url::Url::parse("http://[::1]:8080/hook").expect("a URL");
        let a = http_client_attrs("GET", &url, Some(503));
        assert_eq!(value_of(&a, keys::HTTP_REQUEST_METHOD), Some(&AttrValue::Str("GET".into())));
        assert_eq!(value_of(&a, keys::HTTP_REQUEST_METHOD_ORIGINAL), None);
        assert_eq!(value_of(&a, keys::SERVER_ADDRESS), Some(&AttrValue::Str("::1".into())));
        assert_eq!(value_of(&a, keys::SERVER_PORT), Some(&AttrValue::Int(8080)));
        assert_eq!(value_of(&a, keys::URL_FULL), Some(&AttrValue::Str("http://[::1]:8080/hook".into())));
        assert_eq!(value_of(&a, keys::HTTP_RESPONSE_STATUS_CODE), Some(&AttrValue::Int(503)));
        assert_eq!(value_of(&a, keys::ERROR_TYPE), Some(&AttrValue::Str("503".into())));
        assert_eq!(http_client_status(Some(503)), Status::Error(String::new()));

        let https = url::Url::parse("https://hooks.example.com/x").expect("a URL");
        let ok = http_client_attrs("POST", &https, Some(204));
        assert_eq!(value_of(&ok, keys::SERVER_PORT), Some(&AttrValue::Int(443)), "the scheme's default port");
        assert_eq!(value_of(&ok, keys::ERROR_TYPE), None);
        assert_eq!(http_client_status(Some(204)), Status::Unset);
        let not_found = http_client_attrs("POST", &https, Some(404));
        assert_eq!(value_of(&not_found, keys::ERROR_TYPE), Some(&AttrValue::Str("404".into())));

        let failed = http_client_attrs("patch", &https, None);
        assert_eq!(value_of(&failed, keys::HTTP_REQUEST_METHOD), Some(&AttrValue::Str("PATCH".into())));
        assert_eq!(value_of(&failed, keys::HTTP_REQUEST_METHOD_ORIGINAL), Some(&AttrValue::Str("patch".into())));
        assert_eq!(value_of(&failed, keys::HTTP_RESPONSE_STATUS_CODE), None);
        assert_eq!(value_of(&failed, keys::ERROR_TYPE), Some(&AttrValue::Str("_OTHER".into())));
        assert_eq!(http_client_status(None), Status::Error(String::new()));

        let odd = http_client_attrs("PURGE", &https, Some(200));
        assert_eq!(value_of(&odd, keys::HTTP_REQUEST_METHOD), Some(&AttrValue::Str("_OTHER".into())));
        assert_eq!(value_of(&odd, keys::HTTP_REQUEST_METHOD_ORIGINAL), Some(&AttrValue::Str("PURGE".into())));
        assert_eq!(http_client_span_name("PURGE"), "HTTP");
        assert_eq!(http_client_span_name("get"), "GET");
    }

    #[test]
    fn url_full_never_holds_the_query_the_fragment_or_credentials() {
        let secret = "S3CRET";
        for raw in [
            "https://alice:S3CRET@api.example.com/v1?token=S3CRET#S3CRET",
            "https://S3CRET@api.example.com/?S3CRET",
            "https://:S3CRET@api.example.com/a/b?x=1&y=S3CRET",
            "http://api.example.com/#S3CRET",
            "http://api.example.com?q=S3CRET",
            "https://api.example.com/path?",
            "https://api.example.com/path#",
            "https://user%40x:S3CRET%3A@api.example.com/p?%53%33CRET",
            "http://10.0.0.1:81/%3Fnot-a-query?S3CRET",
        ] {
            let url = url::Url::parse(raw).expect("a URL");
            let attrs = http_client_attrs("GET", &url, Some(200));
            let Some(AttrValue::Str(full)) = value_of(&attrs, keys::URL_FULL) else { panic!("url.full for {raw}") };
            assert!(!full.contains(secret) && !full.contains("%53%33"), "{raw} → {full}");
            let back = url::Url::parse(full).expect("url.full is a URL");
            assert_eq!(
                (back.username(), back.password(), back.query(), back.fragment()),
                ("", None, None, None),
                "{full}"
            );
            assert_eq!((back.host_str(), back.path()), (url.host_str(), url.path()), "{full}");
            // No attribute at all carries the secret.
            let json = export_request_json(
                &Resource::new("s", "v"),
                "n",
                "v",
                &[SpanRecord::root(TraceId([1; 16]), sid(1), true, "GET", SpanKind::Client, 0).attrs(attrs)],
            );
            assert!(!json.contains(secret), "{json}");
        }
    }

    #[test]
    fn the_schema_url_names_the_semconv_version() {
        assert!(SCHEMA_URL.ends_with(&format!("/{SEMCONV_VERSION}")), "{SCHEMA_URL}");
    }

    fn attr_value() -> impl Strategy<Value = AttrValue> {
        prop_oneof![
            any::<String>().prop_map(AttrValue::Str),
            any::<i64>().prop_map(AttrValue::Int),
            any::<bool>().prop_map(AttrValue::Bool),
            any::<f64>().prop_map(AttrValue::Double),
            prop::collection::vec(any::<String>(), 0..4).prop_map(AttrValue::StrArray),
        ]
    }

    const KEYS: [&str; 4] = [keys::JOB_ID, keys::JOB_TYPE, keys::URL_FULL, keys::TENANT];

    proptest! {
        #[test]
        fn any_span_round_trips_through_the_reference_decoder(
            trace in any::<[u8; 16]>(),
            span in any::<[u8; 8]>(),
            parent in prop::option::of(any::<[u8; 8]>()),
            name in any::<String>(),
            kind in prop::sample::select(vec![SpanKind::Internal, SpanKind::Server, SpanKind::Client, SpanKind::Producer, SpanKind::Consumer]),
            times in any::<(u64, u64)>(),
            flags in any::<u8>(),
            values in prop::collection::vec(attr_value(), 0..4),
            event in any::<(String, u64)>(),
            error in prop::option::of(any::<String>()),
        ) {
            let (Some(trace_id), Some(span_id)) = (TraceId::new(trace), SpanId::new(span)) else { return Ok(()) };
            let mut r = SpanRecord::root(trace_id, span_id, false, name, kind, times.0).end(times.1);
            r.parent = parent.and_then(SpanId::new);
            r.flags = flags;
            for (k, v) in KEYS.into_iter().zip(values) {
                r.set_attr(k, v);
            }
            r.add_event(event.0, event.1, r.attrs.clone());
            r.set_status(error.map_or(Status::Ok, Status::Error));
            let json = export_request_json(&Resource::new("s", "v"), "n", "v", std::slice::from_ref(&r));
            let req = serde_json::from_str::<ExportTraceServiceRequest>(&json);
            prop_assert!(req.is_ok(), "{:?}: {}", req.err(), json);
            let req = req.expect("checked");
            let g = &spans(&req)[0];
            prop_assert_eq!(&g.name, &r.name);
            prop_assert_eq!(g.kind, r.kind as i32);
            prop_assert_eq!((g.start_time_unix_nano, g.end_time_unix_nano), (r.start_ns, r.end_ns));
            prop_assert_eq!(g.parent_span_id.clone(), r.parent.map(|p| p.0.to_vec()).unwrap_or_default());
            prop_assert_eq!(g.flags, u32::from(flags));
            assert_attrs(&g.attributes, &r.attrs);
            assert_attrs(&g.events[0].attributes, &r.events[0].attrs);
            prop_assert_eq!(&g.events[0].name, &r.events[0].name);
        }
    }
}
