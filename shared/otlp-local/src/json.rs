//! OTLP/JSON decoding: opentelemetry-proto's serde definitions, after a pass that accepts what
//! the OTLP specification and the proto3 JSON mapping it builds on allow but that serde
//! refuses.
//!
//! opentelemetry-proto 0.33 already takes hex ids in either case and 64-bit integers as
//! strings or numbers. It refuses, and [`normalize`] therefore rewrites:
//! - `null` for any field (proto3 JSON: the field's default), by dropping the field;
//! - an `arrayValue` or `kvlistValue` without `values` (proto3 JSON omits empty repeated
//!   fields), by adding an empty list, and a `KeyValue` without `key`, by adding `""`;
//! - 32-bit integers (`kind`, `flags`, `code`, the dropped counts) as decimal strings, and
//!   integral numbers in exponent form for the `*UnixNano` times (proto3 JSON accepts both);
//! - enum names (`"SPAN_KIND_SERVER"`, `"STATUS_CODE_ERROR"`): OTLP says senders must use
//!   integers, but a receiver loses nothing by understanding the names;
//! - a `doubleValue` as a string: a decimal is parsed, and "NaN", "Infinity" and "-Infinity"
//!   become a `stringValue` of that name, since JSON (and so the query API) cannot hold them as
//!   numbers anyway.
//!
//! Field names stay lowerCamelCase only: the specification says the original (snake_case)
//! names are not valid, so they are unknown fields, which are ignored.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span, status};
use serde_json::{Map, Value};

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode(body: &[u8]) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    // serde_json's recursion limit (128) bounds the depth of `value`, and so of `normalize`.
    let mut value: Value = serde_json::from_slice(body)?;
    // serde's derived structs also take a JSON array (the fields by position); a message in
    // proto3 JSON is an object.
    if !value.is_object() {
        return Err(serde::de::Error::custom("an ExportTraceServiceRequest is a JSON object"));
    }
    normalize(&mut value);
    serde_json::from_value(value)
}

/// Rewrites `value` in place into the form opentelemetry-proto's serde accepts (see the module
/// documentation for what and why).
pub fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, field| !field.is_null());
            for (key, field) in map.iter_mut() {
                normalize(field);
                fix_field(key, field);
            }
            fix_double_value(map);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// The fixes that depend on a field's name.
fn fix_field(key: &str, field: &mut Value) {
    match key {
        "attributes" => ensure_keys(field),
        "arrayValue" | "kvlistValue" => {
            if let Value::Object(inner) = field {
                let values = inner.entry("values").or_insert_with(|| Value::Array(Vec::new()));
                if key == "kvlistValue" {
                    ensure_keys(values);
                }
            }
        }
        "kind" => enum_or_int(field, |name| span::SpanKind::from_str_name(name).map(|kind| kind as i64)),
        "code" => enum_or_int(field, |name| status::StatusCode::from_str_name(name).map(|code| code as i64)),
        "flags"
        | "droppedAttributesCount"
        | "droppedEventsCount"
        | "droppedLinksCount"
        | "keyStrindex"
        | "stringValueStrindex" => enum_or_int(field, |_| None),
        _ if key.ends_with("UnixNano") => integral_float_to_int(field),
        _ => {}
    }
}

/// Gives every `KeyValue` object in a list a `key`, which serde requires.
fn ensure_keys(list: &mut Value) {
    if let Value::Array(items) = list {
        for item in items {
            if let Value::Object(kv) = item {
                kv.entry("key").or_insert_with(|| Value::String(String::new()));
            }
        }
    }
}

/// A string holding a decimal integer, or an enum name that `name` knows, becomes a number;
/// anything else is left for serde to judge.
fn enum_or_int(field: &mut Value, name: impl Fn(&str) -> Option<i64>) {
    if let Value::String(s) = field
        && let Some(n) = s.trim().parse::<i64>().ok().or_else(|| name(s))
    {
        *field = Value::from(n);
    }
}

/// A time in nanoseconds written as a float (`1.5e18`) becomes the integer it denotes, when
/// it is one and fits in a u64.
fn integral_float_to_int(field: &mut Value) {
    if let Value::Number(n) = field
        && n.as_u64().is_none()
        && let Some(f) = n.as_f64()
        && f.fract() == 0.0
        && (0.0..18_446_744_073_709_551_616.0).contains(&f)
    {
        // The checks above make the cast exact: an integral value within u64's range.
        *field = Value::from(f as u64);
    }
}

/// An `AnyValue`'s `doubleValue` given as a string (see the module documentation).
fn fix_double_value(any: &mut Map<String, Value>) {
    let Some(Value::String(s)) = any.get("doubleValue") else {
        return;
    };
    let replacement = match s.as_str() {
        "NaN" | "Infinity" | "-Infinity" => None,
        decimal => decimal.trim().parse::<f64>().ok().and_then(serde_json::Number::from_f64),
    };
    match replacement {
        Some(number) => {
            any.insert("doubleValue".to_owned(), Value::Number(number));
        }
        None => {
            if let Some(name) = any.remove("doubleValue") {
                any.insert("stringValue".to_owned(), name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// The one span of a one-span request written as `{"resourceSpans":[{"scopeSpans":[{"spans":[SPAN]}]}]}`.
    fn one_span(span_json: &str) -> Result<Span, String> {
        let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span_json}]}}]}}]}}"#);
        let request = decode(body.as_bytes()).map_err(|e| e.to_string())?;
        request
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .next()
            .ok_or_else(|| "no span".to_owned())
    }

    fn first_attr(span: &Span) -> Option<V> {
        span.attributes.first().and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    }

    #[test]
    fn accepted_forms() {
        type Check = fn(&Span) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            ("string nanos", r#"{"startTimeUnixNano":"1544712660000000000"}"#, |s| {
                s.start_time_unix_nano == 1_544_712_660_000_000_000
            }),
            ("number nanos", r#"{"endTimeUnixNano":1544712661000000000}"#, |s| {
                s.end_time_unix_nano == 1_544_712_661_000_000_000
            }),
            ("exponent nanos", r#"{"startTimeUnixNano":1.5e18}"#, |s| {
                s.start_time_unix_nano == 1_500_000_000_000_000_000
            }),
            ("event nanos", r#"{"events":[{"timeUnixNano":"5","name":"e"}]}"#, |s| s.events[0].time_unix_nano == 5),
            ("upper-case hex", r#"{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174"}"#, |s| {
                s.trace_id[0] == 0x5b && s.span_id[7] == 0x74
            }),
            ("null fields", r#"{"parentSpanId":null,"startTimeUnixNano":null,"status":null,"name":"n"}"#, |s| {
                s.parent_span_id.is_empty() && s.start_time_unix_nano == 0 && s.name == "n"
            }),
            ("integer kind", r#"{"kind":2}"#, |s| s.kind == 2),
            ("kind as string", r#"{"kind":"3"}"#, |s| s.kind == 3),
            ("kind by name", r#"{"kind":"SPAN_KIND_CONSUMER"}"#, |s| s.kind == 5),
            ("status code by name", r#"{"status":{"code":"STATUS_CODE_ERROR","message":"m"}}"#, |s| {
                s.status.as_ref().is_some_and(|st| st.code == 2 && st.message == "m")
            }),
            ("flags as string", r#"{"flags":"257"}"#, |s| s.flags == 257),
            ("dropped count as string", r#"{"droppedAttributesCount":"3"}"#, |s| s.dropped_attributes_count == 3),
            ("unknown field ignored", r#"{"someFutureField":{"x":1},"name":"n"}"#, |s| s.name == "n"),
            ("int attribute as string", r#"{"attributes":[{"key":"a","value":{"intValue":"12"}}]}"#, |s| {
                first_attr(s) == Some(V::IntValue(12))
            }),
            ("int attribute as number", r#"{"attributes":[{"key":"a","value":{"intValue":13}}]}"#, |s| {
                first_attr(s) == Some(V::IntValue(13))
            }),
            ("double as string", r#"{"attributes":[{"key":"a","value":{"doubleValue":"2.5"}}]}"#, |s| {
                first_attr(s) == Some(V::DoubleValue(2.5))
            }),
            ("NaN double", r#"{"attributes":[{"key":"a","value":{"doubleValue":"NaN"}}]}"#, |s| {
                first_attr(s) == Some(V::StringValue("NaN".into()))
            }),
            (
                "empty array",
                r#"{"attributes":[{"key":"a","value":{"arrayValue":{}}}]}"#,
                |s| matches!(first_attr(s), Some(V::ArrayValue(a)) if a.values.is_empty()),
            ),
            (
                "empty kvlist",
                r#"{"attributes":[{"key":"a","value":{"kvlistValue":{}}}]}"#,
                |s| matches!(first_attr(s), Some(V::KvlistValue(l)) if l.values.is_empty()),
            ),
            (
                "kvlist entry without key",
                r#"{"attributes":[{"key":"a","value":{"kvlistValue":{"values":[{"value":{"boolValue":true}}]}}}]}"#,
                |s| matches!(first_attr(s), Some(V::KvlistValue(l)) if l.values[0].key.is_empty()),
            ),
            ("attribute without key", r#"{"attributes":[{"value":{"boolValue":true}}]}"#, |s| {
                s.attributes[0].key.is_empty()
            }),
            ("attribute without value", r#"{"attributes":[{"key":"a"}]}"#, |s| s.attributes[0].value.is_none()),
            ("attribute with null value", r#"{"attributes":[{"key":"a","value":null}]}"#, |s| {
                s.attributes[0].value.is_none()
            }),
        ];
        for (what, json, check) in cases {
            match one_span(json) {
                Ok(span) => assert!(check(&span), "{what}: {json} decoded to {span:?}"),
                Err(e) => panic!("{what}: {json} refused: {e}"),
            }
        }
    }

    #[test]
    fn refused_forms() {
        let cases = [
            ("not JSON", "{"),
            ("bad hex", r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#),
            ("negative nanos", r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":-1}]}]}]}"#),
            ("fractional nanos", r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":1.5}]}]}]}"#),
            ("unknown kind name", r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SERVER"}]}]}]}"#),
            ("spans not a list", r#"{"resourceSpans":[{"scopeSpans":[{"spans":{}}]}]}"#),
            ("a list at the top", "[]"),
        ];
        for (what, json) in cases {
            assert!(decode(json.as_bytes()).is_err(), "{what}: {json} was accepted");
        }
    }

    #[test]
    fn empty_object_is_an_empty_request() {
        let request = decode(b"{}").expect("{} is a valid, empty request");
        assert!(request.resource_spans.is_empty());
        let request = decode(br#"{"resourceSpans":null}"#).expect("null is the default");
        assert!(request.resource_spans.is_empty());
    }
}
