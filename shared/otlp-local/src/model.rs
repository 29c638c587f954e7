//! The query API's JSON types: what `GET /api/traces/{id}`, `GET /api/spans`, `GET /api/stats`
//! and `POST /api/refuse` answer, shared with the tests of other crates so that both sides
//! (de)serialize with the same definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An attribute map: attribute name → value. Strings, booleans, integers and doubles are JSON
/// scalars, arrays are JSON arrays, key-value lists are JSON objects, bytes are base64
/// strings, an empty value is `null`, and a double that JSON cannot hold (NaN, ±infinity) is
/// its name as a string ("NaN", "Infinity", "-Infinity").
pub type Attributes = BTreeMap<String, serde_json::Value>;

/// One received span, flattened with its resource and instrumentation scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanView {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id (16 lowercase hex digits); `None` for a root span (the OTLP field
    /// was empty or all zeros).
    pub parent_span_id: Option<String>,
    /// The W3C `tracestate` the span carried; empty when it had none.
    #[serde(default)]
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Attributes,
    pub events: Vec<EventView>,
    pub links: Vec<LinkView>,
    pub status: StatusView,
    /// The resource's `service.name`, when it has one as a string.
    pub service: Option<String>,
    /// All the resource's attributes (`service.name` included).
    pub resource: Attributes,
    pub scope: ScopeView,
}

/// OTLP's `SpanKind`. `Unspecified` is what a span without a kind (0) or with a value this
/// receiver does not know arrives as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The kind for OTLP's integer value (an unknown value is `Unspecified`).
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }
}

/// A span event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Attributes,
}

/// A span link: the linked span's context and the link's attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: Attributes,
}

/// A span's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub code: StatusCode,
    /// The description; empty when there is none.
    pub message: String,
}

/// OTLP's `Status.StatusCode`; an unknown value is `Unset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    /// The code for OTLP's integer value (an unknown value is `Unset`).
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }
}

/// The instrumentation scope that produced a span; empty strings where the export had none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScopeView {
    pub name: String,
    pub version: String,
}

/// `GET /api/traces/{trace_id}`: every stored span of one trace, by start time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceResponse {
    pub trace_id: String,
    pub spans: Vec<SpanView>,
}

impl TraceResponse {
    /// The span with this name, if exactly one has it (tests look spans up by name).
    pub fn span_named(&self, name: &str) -> Option<&SpanView> {
        let mut found = self.spans.iter().filter(|span| span.name == name);
        match (found.next(), found.next()) {
            (Some(span), None) => Some(span),
            _ => None,
        }
    }
}

/// `GET /api/spans`: the newest matching spans (at most [`crate::MAX_LISTED_SPANS`]), in the
/// order they arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpansResponse {
    pub spans: Vec<SpanView>,
}

/// `GET /api/spans`'s query: both filters are exact matches, and both are optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpansQuery {
    /// The resource's `service.name`.
    pub service: Option<String>,
    /// The span name.
    pub name: Option<String>,
}

/// `GET /api/stats`: counters since the receiver started (`DELETE /api/spans` clears spans,
/// not counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Export requests that were decoded and stored, by protocol.
    pub export_requests: ExportRequests,
    /// Spans stored from those requests.
    pub spans_received: u64,
    /// Spans refused in a partial success because their trace or span id is invalid (wrong
    /// length, or all zeros).
    pub spans_rejected: u64,
    /// Stored spans evicted, oldest first, to keep the store under its capacity.
    pub spans_dropped: u64,
    /// Spans held now.
    pub spans_stored: u64,
    /// Export requests answered with the refusal status set by `POST /api/refuse`.
    pub refused_requests: u64,
    /// OTLP/HTTP requests answered 400, 413 or 415.
    pub bad_requests: u64,
    /// The refusal status in force, if any.
    pub refusing: Option<u16>,
}

/// Export requests counted by protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequests {
    pub http_protobuf: u64,
    pub http_json: u64,
    pub grpc: u64,
}

/// `POST /api/refuse`'s body and answer: an HTTP status (400–599) that the OTLP endpoints
/// answer until it is set back to `null` (gRPC answers `UNAVAILABLE` meanwhile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refuse {
    pub status: Option<u16>,
}

/// `DELETE /api/spans`'s answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleared {
    /// How many spans were removed.
    pub cleared: u64,
}

/// The body of the query API's error answers (404 for an unknown trace, 400 for a bad
/// argument).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
