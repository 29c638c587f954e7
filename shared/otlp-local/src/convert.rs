//! Flattening an OTLP export request into [`SpanView`]s: each span with its resource and
//! scope, ids as lowercase hex, attribute values as JSON. Pure; unit-tested below.

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::model::{Attributes, EventView, LinkView, ScopeView, SpanKind, SpanView, StatusCode, StatusView};

/// The resource attribute that names the service.
const SERVICE_NAME: &str = "service.name";

/// What flattening a request gives: the spans to store and the ones refused.
#[derive(Debug, Default)]
pub struct Flattened {
    pub spans: Vec<SpanView>,
    /// Spans refused because an id is invalid; OTLP's partial success reports them.
    pub rejected: u64,
    /// Why the first refused span was refused (the partial success's `error_message`).
    pub first_rejection: Option<String>,
}

/// Flattens every span of `request`. A span whose trace id is not 16 bytes or whose span id
/// is not 8 bytes, or either of them all zeros, is invalid by the OTLP specification and is
/// rejected rather than stored under an id no query could match.
pub fn flatten(request: ExportTraceServiceRequest) -> Flattened {
    let mut out = Flattened::default();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|resource| attributes(&resource.attributes)).unwrap_or_default();
        let service = match resource.get(SERVICE_NAME) {
            Some(serde_json::Value::String(name)) => Some(name.clone()),
            _ => None,
        };
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .map(|scope| ScopeView { name: scope.name, version: scope.version })
                .unwrap_or_default();
            for span in scope_spans.spans {
                match check_ids(&span) {
                    Ok(()) => out.spans.push(view(span, &service, &resource, &scope)),
                    Err(why) => {
                        out.rejected += 1;
                        out.first_rejection.get_or_insert(why);
                    }
                }
            }
        }
    }
    out
}

fn check_ids(span: &Span) -> Result<(), String> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(format!("span {:?}: the trace id must be 16 bytes, not all zero", span.name));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(format!("span {:?}: the span id must be 8 bytes, not all zero", span.name));
    }
    Ok(())
}

fn view(span: Span, service: &Option<String>, resource: &Attributes, scope: &ScopeView) -> SpanView {
    // An all-zero parent id is the "invalid" span id, which W3C and OTel read as no parent.
    let parent_span_id = if span.parent_span_id.is_empty() || span.parent_span_id.iter().all(|b| *b == 0) {
        None
    } else {
        Some(hex::encode(&span.parent_span_id))
    };
    let status = span
        .status
        .map(|status| StatusView { code: StatusCode::from_otlp(status.code), message: status.message })
        .unwrap_or(StatusView { code: StatusCode::Unset, message: String::new() });
    SpanView {
        trace_id: hex::encode(&span.trace_id),
        span_id: hex::encode(&span.span_id),
        parent_span_id,
        trace_state: span.trace_state,
        name: span.name,
        kind: SpanKind::from_otlp(span.kind),
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        attributes: attributes(&span.attributes),
        events: span
            .events
            .into_iter()
            .map(|event| EventView {
                name: event.name,
                time_unix_nano: event.time_unix_nano,
                attributes: attributes(&event.attributes),
            })
            .collect(),
        links: span
            .links
            .into_iter()
            .map(|link| LinkView {
                trace_id: hex::encode(&link.trace_id),
                span_id: hex::encode(&link.span_id),
                attributes: attributes(&link.attributes),
            })
            .collect(),
        status,
        service: service.clone(),
        resource: resource.clone(),
        scope: scope.clone(),
    }
}

/// An attribute list as a map; a repeated key keeps its last value, as OTel's own SDKs do.
pub fn attributes(list: &[KeyValue]) -> Attributes {
    list.iter().map(|kv| (kv.key.clone(), any_value(kv.value.as_ref()))).collect()
}

/// One OTLP `AnyValue` as JSON (see [`Attributes`] for the mapping).
pub fn any_value(value: Option<&AnyValue>) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return J::Null;
    };
    match value {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => J::Number(n),
            None if d.is_nan() => J::String("NaN".to_owned()),
            None if *d > 0.0 => J::String("Infinity".to_owned()),
            None => J::String("-Infinity".to_owned()),
        },
        any_value::Value::ArrayValue(array) => J::Array(array.values.iter().map(|v| any_value(Some(v))).collect()),
        any_value::Value::KvlistValue(list) => {
            J::Object(list.values.iter().map(|kv| (kv.key.clone(), any_value(kv.value.as_ref()))).collect())
        }
        any_value::Value::BytesValue(bytes) => J::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        // A string-table index only means something inside a profiles message, which this
        // receiver does not take; it is shown as the number it is.
        any_value::Value::StringValueStrindex(index) => J::from(*index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span};
    use serde_json::json;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
    }

    #[test]
    fn any_values_map_to_json() {
        use any_value::Value as V;
        let cases: Vec<(Option<V>, serde_json::Value)> = vec![
            (None, json!(null)),
            (Some(V::StringValue("a".into())), json!("a")),
            (Some(V::BoolValue(true)), json!(true)),
            (Some(V::IntValue(-7)), json!(-7)),
            (Some(V::IntValue(i64::MAX)), json!(i64::MAX)),
            (Some(V::DoubleValue(1.5)), json!(1.5)),
            (Some(V::DoubleValue(f64::NAN)), json!("NaN")),
            (Some(V::DoubleValue(f64::INFINITY)), json!("Infinity")),
            (Some(V::DoubleValue(f64::NEG_INFINITY)), json!("-Infinity")),
            (Some(V::BytesValue(vec![1, 2, 3])), json!("AQID")),
            (
                Some(V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: Some(V::IntValue(1)) },
                        AnyValue { value: Some(V::StringValue("x".into())) },
                    ],
                })),
                json!([1, "x"]),
            ),
            (Some(V::KvlistValue(KeyValueList { values: vec![kv("k", V::BoolValue(false))] })), json!({"k": false})),
        ];
        for (value, want) in cases {
            let any = AnyValue { value: value.clone() };
            assert_eq!(any_value(Some(&any)), want, "{value:?}");
        }
        assert_eq!(any_value(None), json!(null));
    }

    fn span(trace_id: Vec<u8>, span_id: Vec<u8>, parent: Vec<u8>) -> Span {
        Span {
            trace_id,
            span_id,
            parent_span_id: parent,
            name: "s".into(),
            kind: 3,
            start_time_unix_nano: 10,
            end_time_unix_nano: 20,
            status: Some(Status { message: "boom".into(), code: 2 }),
            events: vec![span::Event {
                time_unix_nano: 15,
                name: "e".into(),
                attributes: vec![kv("n", any_value::Value::IntValue(1))],
                dropped_attributes_count: 0,
            }],
            links: vec![span::Link {
                trace_id: vec![0xab; 16],
                span_id: vec![0xcd; 8],
                attributes: vec![kv("l", any_value::Value::StringValue("v".into()))],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue("svc".into())),
                        kv("host.name", any_value::Value::StringValue("h".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn spans_are_flattened_with_resource_and_scope() {
        let flat = flatten(request(vec![span(vec![1; 16], vec![2; 8], vec![3; 8])]));
        assert_eq!(flat.rejected, 0);
        let [view] = flat.spans.as_slice() else { panic!("one span expected, got {:?}", flat.spans) };
        assert_eq!(view.trace_id, "01".repeat(16));
        assert_eq!(view.span_id, "02".repeat(8));
        assert_eq!(view.parent_span_id.as_deref(), Some("0303030303030303"));
        assert_eq!(view.kind, SpanKind::Client);
        assert_eq!(view.status, StatusView { code: StatusCode::Error, message: "boom".into() });
        assert_eq!(view.service.as_deref(), Some("svc"));
        assert_eq!(view.resource.get("host.name"), Some(&json!("h")));
        assert_eq!(view.scope, ScopeView { name: "lib".into(), version: "1.0".into() });
        assert_eq!(view.events[0].name, "e");
        assert_eq!(view.events[0].attributes.get("n"), Some(&json!(1)));
        assert_eq!(view.links[0].trace_id, "ab".repeat(16));
        assert_eq!(view.links[0].attributes.get("l"), Some(&json!("v")));
    }

    #[test]
    fn empty_or_zero_parent_is_root() {
        let flat =
            flatten(request(vec![span(vec![1; 16], vec![2; 8], vec![]), span(vec![1; 16], vec![4; 8], vec![0; 8])]));
        assert_eq!(flat.spans.len(), 2);
        assert!(flat.spans.iter().all(|s| s.parent_span_id.is_none()));
    }

    #[test]
    fn invalid_ids_are_rejected() {
        let flat = flatten(request(vec![
            span(vec![1; 15], vec![2; 8], vec![]),
            span(vec![0; 16], vec![2; 8], vec![]),
            span(vec![1; 16], vec![], vec![]),
            span(vec![1; 16], vec![0; 8], vec![]),
            span(vec![1; 16], vec![2; 8], vec![]),
        ]));
        assert_eq!(flat.rejected, 4);
        assert_eq!(flat.spans.len(), 1);
        assert!(flat.first_rejection.is_some_and(|why| why.contains("trace id")));
    }
}
