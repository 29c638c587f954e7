//! The in-memory span store both listeners write to and the query API reads: bounded (the
//! oldest spans are evicted and counted), indexed by trace id, with the receiver's counters
//! and its refusal switch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest};

use crate::convert;
use crate::model::{SpanView, SpansQuery, Stats};

/// How many spans the store holds by default before it evicts the oldest.
pub const DEFAULT_CAPACITY: usize = 200_000;

/// The most spans `GET /api/spans` answers with (the newest matches).
pub const MAX_LISTED_SPANS: usize = 1_000;

/// The protocol an export request came in by (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpProtobuf,
    HttpJson,
    Grpc,
}

/// What storing one export request did, to answer the exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    pub stored: u64,
    pub rejected: u64,
    pub rejection: Option<String>,
}

impl Ingested {
    /// OTLP's partial success, present only when spans were rejected (a full success leaves
    /// the field unset, as the specification asks).
    pub fn partial_success(&self) -> Option<ExportTracePartialSuccess> {
        (self.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(self.rejected).unwrap_or(i64::MAX),
            error_message: self.rejection.clone().unwrap_or_default(),
        })
    }
}

/// The store. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    /// Spans in arrival order; `spans[i]` has sequence number `first_seq + i`.
    spans: VecDeque<SpanView>,
    first_seq: u64,
    /// The sequence numbers of each trace's spans, ascending, so that evicting the oldest span
    /// removes the front of its trace's list.
    by_trace: HashMap<String, VecDeque<u64>>,
    stats: Stats,
}

impl Default for Store {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Store {
    /// A store that holds at most `capacity` spans (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                capacity: capacity.max(1),
                spans: VecDeque::new(),
                first_seq: 0,
                by_trace: HashMap::new(),
                stats: Stats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the store inconsistent in a way that
        // matters to a test receiver (at worst a span is missing), so a poisoned lock is used.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flattens and stores one export request, counting it under `protocol`.
    pub fn ingest(&self, protocol: Protocol, request: ExportTraceServiceRequest) -> Ingested {
        // Flattening happens before the lock is taken: it is the costly part.
        let flat = convert::flatten(request);
        let ingested =
            Ingested { stored: flat.spans.len() as u64, rejected: flat.rejected, rejection: flat.first_rejection };
        let mut inner = self.lock();
        let counter = match protocol {
            Protocol::HttpProtobuf => &mut inner.stats.export_requests.http_protobuf,
            Protocol::HttpJson => &mut inner.stats.export_requests.http_json,
            Protocol::Grpc => &mut inner.stats.export_requests.grpc,
        };
        *counter += 1;
        inner.stats.spans_received += ingested.stored;
        inner.stats.spans_rejected += ingested.rejected;
        for span in flat.spans {
            inner.push(span);
        }
        ingested
    }

    /// The refusal status in force, if any.
    pub fn refusing(&self) -> Option<u16> {
        self.lock().stats.refusing
    }

    /// Sets (or, with `None`, lifts) the refusal status.
    pub fn set_refusing(&self, status: Option<u16>) {
        self.lock().stats.refusing = status;
    }

    /// Counts an export request answered with the refusal status.
    pub fn count_refused(&self) {
        self.lock().stats.refused_requests += 1;
    }

    /// Counts an OTLP/HTTP request answered 400, 413 or 415.
    pub fn count_bad_request(&self) {
        self.lock().stats.bad_requests += 1;
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        let mut stats = inner.stats.clone();
        stats.spans_stored = inner.spans.len() as u64;
        stats
    }

    /// Every stored span of one trace (`trace_id` in lowercase hex), by start time, then by
    /// arrival; empty when the trace is unknown.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanView> {
        let inner = self.lock();
        let mut spans: Vec<SpanView> =
            inner.by_trace.get(trace_id).into_iter().flatten().filter_map(|seq| inner.get(*seq).cloned()).collect();
        // A stable sort keeps arrival order among spans that started at the same nanosecond.
        spans.sort_by_key(|span| span.start_unix_nano);
        spans
    }

    /// The newest [`MAX_LISTED_SPANS`] spans that match `query`, in arrival order.
    pub fn spans(&self, query: &SpansQuery) -> Vec<SpanView> {
        let inner = self.lock();
        let mut found: Vec<SpanView> = inner
            .spans
            .iter()
            .rev()
            .filter(|span| query.service.as_ref().is_none_or(|service| span.service.as_ref() == Some(service)))
            .filter(|span| query.name.as_ref().is_none_or(|name| &span.name == name))
            .take(MAX_LISTED_SPANS)
            .cloned()
            .collect();
        found.reverse();
        found
    }

    /// Removes every span (the counters stay); answers how many there were.
    pub fn clear(&self) -> u64 {
        let mut inner = self.lock();
        let cleared = inner.spans.len() as u64;
        inner.first_seq += cleared;
        inner.spans.clear();
        inner.by_trace.clear();
        cleared
    }
}

impl Inner {
    fn get(&self, seq: u64) -> Option<&SpanView> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.spans.get(index)
    }

    fn push(&mut self, span: SpanView) {
        if self.spans.len() >= self.capacity {
            self.evict_oldest();
        }
        let seq = self.first_seq + self.spans.len() as u64;
        self.by_trace.entry(span.trace_id.clone()).or_default().push_back(seq);
        self.spans.push_back(span);
    }

    fn evict_oldest(&mut self) {
        let Some(oldest) = self.spans.pop_front() else {
            return;
        };
        let seq = self.first_seq;
        self.first_seq += 1;
        self.stats.spans_dropped += 1;
        // The oldest span is the first of its trace's list, since both are in arrival order.
        if let Some(seqs) = self.by_trace.get_mut(&oldest.trace_id) {
            if seqs.front() == Some(&seq) {
                seqs.pop_front();
            }
            if seqs.is_empty() {
                self.by_trace.remove(&oldest.trace_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    /// A request of spans `(trace byte, span byte, start, name)` from service `service`.
    fn request(service: &str, spans: &[(u8, u8, u64, &str)]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                        key_strindex: 0,
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: spans
                        .iter()
                        .map(|(t, s, start, name)| Span {
                            trace_id: vec![*t; 16],
                            span_id: vec![*s; 8],
                            start_time_unix_nano: *start,
                            name: (*name).into(),
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn trace_hex(t: u8) -> String {
        hex::encode([t; 16])
    }

    #[test]
    fn trace_is_ordered_by_start_time() {
        let store = Store::default();
        store.ingest(Protocol::Grpc, request("a", &[(1, 1, 30, "c"), (1, 2, 10, "a"), (2, 3, 5, "other")]));
        store.ingest(Protocol::HttpJson, request("a", &[(1, 4, 20, "b")]));
        let names: Vec<_> = store.trace(&trace_hex(1)).into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(store.trace(&trace_hex(9)).is_empty());
        let stats = store.stats();
        assert_eq!(stats.export_requests.grpc, 1);
        assert_eq!(stats.export_requests.http_json, 1);
        assert_eq!(stats.spans_received, 4);
        assert_eq!(stats.spans_stored, 4);
    }

    #[test]
    fn oldest_spans_are_evicted_and_counted() {
        let store = Store::with_capacity(3);
        store.ingest(Protocol::HttpProtobuf, request("a", &[(1, 1, 1, "x"), (2, 2, 2, "y"), (1, 3, 3, "z")]));
        store.ingest(Protocol::HttpProtobuf, request("a", &[(3, 4, 4, "w"), (3, 5, 5, "v")]));
        let stats = store.stats();
        assert_eq!((stats.spans_dropped, stats.spans_stored, stats.spans_received), (2, 3, 5));
        // Trace 1 lost its first span, trace 2 its only one.
        let trace1: Vec<_> = store.trace(&trace_hex(1)).into_iter().map(|s| s.name).collect();
        assert_eq!(trace1, ["z"]);
        assert!(store.trace(&trace_hex(2)).is_empty());
        assert_eq!(store.trace(&trace_hex(3)).len(), 2);
        // The index holds no trace without spans.
        assert_eq!(store.lock().by_trace.len(), 2);
    }

    #[test]
    fn spans_filter_and_clear() {
        let store = Store::default();
        store.ingest(Protocol::Grpc, request("a", &[(1, 1, 1, "x"), (1, 2, 2, "y")]));
        store.ingest(Protocol::Grpc, request("b", &[(2, 3, 3, "x")]));
        let names = |q: SpansQuery| store.spans(&q).into_iter().map(|s| s.span_id).collect::<Vec<_>>();
        assert_eq!(names(SpansQuery::default()).len(), 3);
        assert_eq!(names(SpansQuery { service: Some("a".into()), name: None }).len(), 2);
        assert_eq!(
            names(SpansQuery { service: None, name: Some("x".into()) }),
            [hex::encode([1; 8]), hex::encode([3; 8])]
        );
        assert_eq!(names(SpansQuery { service: Some("b".into()), name: Some("y".into()) }).len(), 0);
        assert_eq!(store.clear(), 3);
        assert!(store.spans(&SpansQuery::default()).is_empty());
        assert!(store.trace(&trace_hex(1)).is_empty());
        // Storing after a clear still indexes correctly.
        store.ingest(Protocol::Grpc, request("a", &[(1, 9, 1, "again")]));
        assert_eq!(store.trace(&trace_hex(1)).len(), 1);
        assert_eq!(store.stats().spans_received, 4);
    }

    #[test]
    fn listing_is_bounded_to_the_newest() {
        let store = Store::default();
        let spans: Vec<(u8, u8, u64, &str)> = (0..=255u8).map(|i| (1, i.max(1), u64::from(i), "n")).collect();
        for _ in 0..5 {
            store.ingest(Protocol::Grpc, request("a", &spans));
        }
        let listed = store.spans(&SpansQuery::default());
        assert_eq!(listed.len(), MAX_LISTED_SPANS);
        // The last listed is the last stored.
        assert_eq!(listed.last().map(|s| s.start_unix_nano), Some(255));
    }

    #[test]
    fn partial_success_only_when_rejected() {
        let store = Store::default();
        let ok = store.ingest(Protocol::Grpc, request("a", &[(1, 1, 1, "x")]));
        assert_eq!(ok.partial_success(), None);
        let bad = store.ingest(Protocol::Grpc, request("a", &[(0, 1, 1, "x"), (1, 2, 1, "y")]));
        let partial = bad.partial_success().expect("one span was rejected");
        assert_eq!(partial.rejected_spans, 1);
        assert!(!partial.error_message.is_empty());
        assert_eq!(store.stats().spans_rejected, 1);
    }
}
