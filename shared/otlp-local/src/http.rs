//! The HTTP listener's routes: OTLP/HTTP (`POST /v1/traces`, protobuf or JSON, optionally
//! gzip'd) and the JSON query API under `/api`.

use std::io::Read as _;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message as _;

use crate::json;
use crate::model::{Cleared, ErrorBody, Refuse, SpansQuery, SpansResponse, Stats, TraceResponse};
use crate::store::{Ingested, Protocol, Store};

/// The largest OTLP/HTTP body accepted, both as sent and after gzip is undone; larger ones
/// get 413. (A collector's default is in the same range; the SDKs' batches are far smaller.)
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The HTTP listener's router: OTLP/HTTP and the query API, over `store`.
pub fn app(store: Arc<Store>) -> Router {
    Router::new()
        .route("/v1/traces", post(export).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/spans", get(spans).delete(clear))
        .route("/api/stats", get(stats))
        .route("/api/refuse", post(refuse))
        .with_state(store)
}

/// The two encodings OTLP/HTTP has; an answer uses the request's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// Why an OTLP/HTTP request was not stored.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the content type must be application/x-protobuf or application/json")]
    ContentType,
    #[error("unsupported content encoding {0:?} (gzip and identity are)")]
    ContentEncoding(String),
    #[error("the body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body could not be read: {0}")]
    Unreadable(String),
    #[error("the gzip body could not be decompressed: {0}")]
    Gzip(std::io::Error),
    #[error("the body is not an OTLP ExportTraceServiceRequest: {0}")]
    Undecodable(String),
    #[error("refusing exports (POST /api/refuse)")]
    Refusing(StatusCode),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::ContentType | Self::ContentEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unreadable(_) | Self::Gzip(_) | Self::Undecodable(_) => StatusCode::BAD_REQUEST,
            Self::Refusing(status) => *status,
        }
    }

    /// The gRPC code that goes into the `google.rpc.Status` body, as the OTLP specification
    /// asks of an error answer.
    fn grpc_code(&self) -> i32 {
        match self.status() {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
            StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
            _ => 2,                                                            // UNKNOWN
        }
    }

    /// The answer: the status, and a `google.rpc.Status` in the request's encoding (JSON when
    /// the request's content type was not one OTLP has).
    fn into_response(self, encoding: Option<Encoding>) -> Response {
        let status = self.status();
        let body = RpcStatus { code: self.grpc_code(), message: self.to_string() };
        match encoding {
            Some(Encoding::Protobuf) => {
                (status, [(header::CONTENT_TYPE, PROTOBUF)], body.encode_to_vec()).into_response()
            }
            Some(Encoding::Json) | None => {
                let json = serde_json::json!({ "code": body.code, "message": body.message });
                (status, [(header::CONTENT_TYPE, JSON)], json.to_string()).into_response()
            }
        }
    }
}

/// `google.rpc.Status` without its `details`, the body of OTLP/HTTP's error answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `POST /v1/traces`.
async fn export(State(store): State<Arc<Store>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let encoding = match content_type(&headers) {
        Some(encoding) => encoding,
        None => {
            store.count_bad_request();
            tracing::warn!(content_type = ?headers.get(header::CONTENT_TYPE), "export refused: content type");
            return Refusal::ContentType.into_response(None);
        }
    };
    if let Some(status) = store.refusing() {
        store.count_refused();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Refusal::Refusing(status).into_response(Some(encoding));
    }
    match decode(encoding, &headers, body) {
        Ok(request) => {
            let protocol = match encoding {
                Encoding::Protobuf => Protocol::HttpProtobuf,
                Encoding::Json => Protocol::HttpJson,
            };
            let ingested = store.ingest(protocol, request);
            tracing::debug!(?protocol, stored = ingested.stored, rejected = ingested.rejected, "export");
            success(encoding, &ingested)
        }
        Err(refusal) => {
            store.count_bad_request();
            tracing::warn!(error = %refusal, status = refusal.status().as_u16(), "export refused");
            refusal.into_response(Some(encoding))
        }
    }
}

/// The encoding a content type names: the media type before any parameter, in any case.
fn content_type(headers: &HeaderMap) -> Option<Encoding> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case(PROTOBUF) {
        Some(Encoding::Protobuf)
    } else if media_type.eq_ignore_ascii_case(JSON) {
        Some(Encoding::Json)
    } else {
        None
    }
}

fn decode(
    encoding: Encoding,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExportTraceServiceRequest, Refusal> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Refusal::TooLarge,
        _ => Refusal::Unreadable(rejection.body_text()),
    })?;
    let body = decompress(headers, body)?;
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| Refusal::Undecodable(e.to_string())),
        Encoding::Json => json::decode(&body).map_err(|e| Refusal::Undecodable(e.to_string())),
    }
}

/// Undoes `Content-Encoding: gzip`, refusing output over [`MAX_BODY_BYTES`] (a small gzip body
/// can inflate without bound).
fn decompress(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Refusal> {
    let coding = match headers.get(header::CONTENT_ENCODING) {
        None => return Ok(body),
        Some(value) => value.to_str().map_err(|_| Refusal::ContentEncoding("(not ASCII)".to_owned()))?.trim(),
    };
    if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
        return Ok(body);
    }
    if !coding.eq_ignore_ascii_case("gzip") {
        return Err(Refusal::ContentEncoding(coding.to_owned()));
    }
    let mut out = Vec::new();
    let limit = MAX_BODY_BYTES as u64 + 1;
    flate2::read::GzDecoder::new(body.as_ref()).take(limit).read_to_end(&mut out).map_err(Refusal::Gzip)?;
    if out.len() > MAX_BODY_BYTES {
        return Err(Refusal::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// 200 with an `ExportTraceServiceResponse` in the request's encoding.
fn success(encoding: Encoding, ingested: &Ingested) -> Response {
    let response = ExportTraceServiceResponse { partial_success: ingested.partial_success() };
    match encoding {
        Encoding::Protobuf => {
            (StatusCode::OK, [(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response()
        }
        Encoding::Json => {
            // Written by hand rather than with the crate's serde, which writes a full success
            // as `{"partialSuccess":null}` and the int64 count as a number; OTLP/JSON leaves
            // unset fields out and writes 64-bit integers as strings.
            let json = match response.partial_success {
                None => serde_json::json!({}),
                Some(partial) => serde_json::json!({
                    "partialSuccess": {
                        "rejectedSpans": partial.rejected_spans.to_string(),
                        "errorMessage": partial.error_message,
                    }
                }),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, JSON)], json.to_string()).into_response()
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: message.into() })).into_response()
}

/// `GET /api/traces/{trace_id}`.
async fn trace(State(store): State<Arc<Store>>, Path(trace_id): Path<String>) -> Response {
    let trace_id = trace_id.to_ascii_lowercase();
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(StatusCode::BAD_REQUEST, "a trace id is 32 hex digits");
    }
    let spans = store.trace(&trace_id);
    if spans.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no spans of trace {trace_id}"));
    }
    Json(TraceResponse { trace_id, spans }).into_response()
}

/// `GET /api/spans?service=&name=`.
async fn spans(State(store): State<Arc<Store>>, Query(query): Query<SpansQuery>) -> Json<SpansResponse> {
    Json(SpansResponse { spans: store.spans(&query) })
}

/// `DELETE /api/spans`.
async fn clear(State(store): State<Arc<Store>>) -> Json<Cleared> {
    Json(Cleared { cleared: store.clear() })
}

/// `GET /api/stats`.
async fn stats(State(store): State<Arc<Store>>) -> Json<Stats> {
    Json(store.stats())
}

/// `POST /api/refuse` with `{"status": 503}` or `{"status": null}`.
async fn refuse(State(store): State<Arc<Store>>, Json(refuse): Json<Refuse>) -> Response {
    if let Some(status) = refuse.status
        && !(400..=599).contains(&status)
    {
        return error(StatusCode::BAD_REQUEST, "the refusal status must be 400 to 599, or null");
    }
    store.set_refusing(refuse.status);
    tracing::info!(status = ?refuse.status, "refusal switch");
    Json(refuse).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let cases = [
            ("application/x-protobuf", Some(Encoding::Protobuf)),
            ("application/json", Some(Encoding::Json)),
            ("application/json; charset=utf-8", Some(Encoding::Json)),
            ("Application/X-Protobuf", Some(Encoding::Protobuf)),
            ("application/protobuf", None),
            ("text/plain", None),
            ("", None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(content_type(&headers), want, "{value}");
        }
        assert_eq!(content_type(&HeaderMap::new()), None);
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0u8; MAX_BODY_BYTES + 1]).expect("writing to a Vec");
        let bomb = gz.finish().expect("writing to a Vec");
        assert!(bomb.len() < 64 * 1024, "zeros compress well");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(matches!(decompress(&headers, Bytes::from(bomb)), Err(Refusal::TooLarge)));
        assert!(matches!(decompress(&headers, Bytes::from_static(b"not gzip")), Err(Refusal::Gzip(_))));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(matches!(decompress(&headers, Bytes::new()), Err(Refusal::ContentEncoding(_))));
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert!(decompress(&headers, Bytes::from_static(b"x")).is_ok_and(|b| b.as_ref() == b"x"));
    }
}
