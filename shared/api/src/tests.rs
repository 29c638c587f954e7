//! Holds `functions/edge/openapi.json` to the types: for every response the document
//! describes and this crate types, the type's JSON Schema (derived by `schemars`) and the
//! document's are diffed by `json-schema-diff` — a property or a `required` entry on one
//! side only, or a different type, fails — and a full sample of the type is validated
//! against the document's schema by `jsonschema`.

use std::fmt::Write as _;

use json_schema_diff::{ChangeKind, JsonSchemaType};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::*;

const OPENAPI: &str = include_str!("../../../functions/edge/openapi.json");

fn openapi() -> Value {
    serde_json::from_str(OPENAPI).unwrap_or_else(|e| panic!("openapi.json is not JSON: {e}"))
}

/// The document's schemas, with their `$ref`s pointing into `$defs` (where
/// `json-schema-diff` and `jsonschema` look) and `oneOf` read as `anyOf` (what schemars
/// derives for an untagged enum; the diff walks `anyOf` only).
fn doc_root(doc: &Value, pointer: &str) -> Value {
    let mut schema = doc.pointer(pointer).cloned().unwrap_or_else(|| panic!("openapi.json has no {pointer}"));
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("$defs".into(), doc["components"]["schemas"].clone());
    }
    typed_enums(&mut schema);
    let text = serde_json::to_string(&schema)
        .unwrap_or_default()
        .replace("#/components/schemas/", "#/$defs/")
        .replace("\"oneOf\":", "\"anyOf\":");
    serde_json::from_str(&text).unwrap_or_default()
}

/// `{"enum": ["a", "b"]}` as `{"type": ["string"], "enum": [...]}` (`null` among the values
/// adds `"null"`; `const` likewise):
/// the diff reads a schema without `type` as any type, while schemars states it.
fn typed_enums(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if !o.contains_key("type") {
                let values: Vec<&Value> = match (o.get("enum"), o.get("const")) {
                    (Some(Value::Array(e)), _) => e.iter().collect(),
                    (_, Some(c)) => vec![c],
                    _ => Vec::new(),
                };
                let kind = |x: &Value| match x {
                    Value::String(_) => "string",
                    Value::Bool(_) => "boolean",
                    Value::Number(n) if n.is_f64() => "number",
                    Value::Number(_) => "integer",
                    Value::Null => "null",
                    Value::Array(_) => "array",
                    Value::Object(_) => "object",
                };
                let kinds: std::collections::BTreeSet<&str> = values.iter().map(|x| kind(x)).collect();
                let nullable = kinds.contains("null");
                let mut kinds: Vec<&str> = kinds.into_iter().filter(|k| *k != "null").collect();
                if kinds.len() == 1 {
                    if nullable {
                        kinds.push("null");
                    }
                    o.insert("type".into(), json!(kinds));
                }
            }
            o.values_mut().for_each(typed_enums);
        }
        Value::Array(a) => a.iter_mut().for_each(typed_enums),
        _ => {}
    }
}

/// Keywords of constraints and prose: the document states more of them than the types
/// can, and left in they would sway how the diff pairs the alternatives of a `oneOf`.
const IGNORED: &[&str] = &[
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "description",
    "title",
    "examples",
    "default",
    "$schema",
];

/// The schema with every `$ref` replaced by what it names (none of the types is
/// recursive) and `anyOf: [X, {"type": "null"}]` (schemars' `Option<X>`) read as X: the
/// diff pairs alternatives and properties better when it sees them whole.
fn inline(mut root: Value) -> Value {
    let defs = root.as_object_mut().and_then(|o| o.remove("$defs")).unwrap_or_default();
    fn walk(v: &mut Value, defs: &Value, depth: u32) {
        assert!(depth < 64, "recursive schema");
        loop {
            let nullable_of = v.get("anyOf").and_then(Value::as_array).and_then(|alts| match alts.as_slice() {
                [x, n] | [n, x] if *n == json!({ "type": "null" }) => Some(x.clone()),
                _ => None,
            });
            if let Some(x) = nullable_of {
                *v = x;
                continue;
            }
            if let Some(r) = v.get("$ref").and_then(Value::as_str) {
                let name = r.trim_start_matches("#/$defs/");
                let mut target = defs.get(name).cloned().unwrap_or_else(|| panic!("unresolved {r}"));
                if let (Some(t), Some(o)) = (target.as_object_mut(), v.as_object()) {
                    for (k, x) in o {
                        if k != "$ref" {
                            t.entry(k.clone()).or_insert_with(|| x.clone());
                        }
                    }
                }
                *v = target;
                continue;
            }
            break;
        }
        if let Value::Object(o) = v {
            for k in IGNORED {
                o.remove(*k);
            }
        }
        match v {
            Value::Object(o) => o.values_mut().for_each(|x| walk(x, defs, depth + 1)),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, defs, depth + 1)),
            _ => {}
        }
    }
    walk(&mut root, &defs, 0);
    root
}

/// The differences between a type's schema and the document's that matter to a client:
/// properties, requiredness and types. Constraints only the document states (patterns,
/// ranges, formats, enums of strings the types keep open) are not compared, nor `null`
/// (the types say `Option` for absent and null alike; the samples check null).
fn differences(rust: Value, doc: Value) -> Vec<String> {
    let changes = json_schema_diff::diff(inline(rust), inline(doc)).unwrap_or_else(|e| panic!("cannot diff: {e}"));
    changes
        .into_iter()
        .filter(|c| match &c.change {
            ChangeKind::TypeAdd { added: t } | ChangeKind::TypeRemove { removed: t } => *t != JsonSchemaType::Null,
            ChangeKind::PropertyAdd { .. }
            | ChangeKind::PropertyRemove { .. }
            | ChangeKind::RequiredAdd { .. }
            | ChangeKind::RequiredRemove { .. } => true,
            _ => false,
        })
        .map(|c| format!("{}: {:?}", if c.path.is_empty() { "(root)" } else { &c.path }, c.change))
        .collect()
}

/// Checks one type against the document's schema at `pointer`, and `sample` (a full
/// instance of the type, as JSON) against both: it must read as the type and write back
/// unchanged, and the document must accept it.
fn check<T: JsonSchema + Serialize + DeserializeOwned>(doc: &Value, pointer: &str, sample: Value) -> Vec<String> {
    check_but::<T>(doc, pointer, sample, &[])
}

/// [`check`], leaving out the differences at the diff paths in `skip` (each use says why).
fn check_but<T: JsonSchema + Serialize + DeserializeOwned>(
    doc: &Value,
    pointer: &str,
    sample: Value,
    skip: &[&str],
) -> Vec<String> {
    let name = std::any::type_name::<T>().rsplit("::").next().unwrap_or_default().to_owned();
    let rust = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    let doc_schema = doc_root(doc, pointer);
    let mut out: Vec<String> = differences(rust, doc_schema.clone())
        .into_iter()
        .filter(|d| !skip.iter().any(|s| d.starts_with(s)))
        .map(|d| format!("{name} vs {pointer}: {d}"))
        .collect();
    match serde_json::from_value::<T>(sample.clone()) {
        Ok(t) => {
            let back = serde_json::to_value(&t).unwrap_or_default();
            if back != sample {
                out.push(format!("{name}: the sample does not survive a round trip: {back}"));
            }
        }
        Err(e) => out.push(format!("{name}: the sample does not read: {e}")),
    }
    let mut root = doc_schema;
    if let Some(obj) = root.as_object_mut() {
        obj.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
    }
    match jsonschema::validator_for(&root) {
        Ok(v) => {
            for e in v.iter_errors(&sample) {
                out.push(format!("{name}: the document refuses the sample: {e} at {}", e.instance_path));
            }
        }
        Err(e) => out.push(format!("{pointer}: not a schema: {e}")),
    }
    out
}

fn response(path: &str, method: &str, status: u16) -> String {
    format!("/paths/{}/{method}/responses/{status}/content/application~1json/schema", path.replace('/', "~1"))
}

fn sample_job() -> Value {
    json!({
        "id": "j0000000000000000000000000000a", "tenant": "acme", "type": "webhook", "lane": "edge", "state": "completed",
        "payload": { "url": "https://example.com/", "headers": { "authorization": "[redacted]" } },
        "attempt": 2, "series_base": 0, "max_attempts": 5,
        "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 }, "timeout_ms": 30000,
        "idempotency_key": "k1", "schedule": "nightly", "rate_group": "g", "tags": ["a"], "metadata": { "m": 1 },
        "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:02Z", "run_at": "2026-12-01T00:00:00Z",
        "started_at": "2026-12-01T00:00:01Z", "finished_at": "2026-12-01T00:00:02Z",
        "heartbeat_at": "2026-12-01T00:00:01.500Z", "result": { "ok": true }, "progress": 0.5,
        "last_error": "timeout", "lease_lost_attempt": 1, "cancel_requested": false,
        "stream_entry": { "attempt": 2, "entry": "1-0" }, "epoch": 1800000000000u64,
        "attempts": [
            { "attempt": 1, "started_at": "2026-12-01T00:00:00Z", "ended_at": "2026-12-01T00:00:01Z",
              "duration_ms": 1000, "outcome": "failed", "error": "timeout" }
        ]
    })
}

fn sample_summary() -> Value {
    let mut j = sample_job();
    if let Some(o) = j.as_object_mut() {
        o.remove("attempts");
    }
    j
}

fn sample_schedule() -> Value {
    json!({
        "name": "nightly", "cron": "0 3 * * *", "timezone": "UTC", "job": { "type": "noop" },
        "overlap": "queue_one", "catch_up": "last", "paused": true,
        "starts_at": "2026-12-01T00:00:00Z", "ends_at": "2027-12-01T00:00:00Z",
        "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z", "next_at": null,
        "last_tick": "2026-12-02T03:00:00Z", "waiting_tick": "2026-12-03T03:00:00Z",
        "paused_at": "2026-12-03T04:00:00Z",
        "runs": [{ "tick": "2026-12-02T03:00:00Z", "at": "2026-12-02T03:00:00Z", "job_id": "j00000000000000000000000000001", "kind": "tick", "state": "completed" }],
        "runs_total": 1, "skips_total": 0, "overdue": false, "upcoming": ["2026-12-04T03:00:00Z"],
        "trace": { "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=1" }
    })
}

/// A job spec's callbacks (#30) are a `oneOf` of two objects; json-schema-diff does not read
/// the properties of a nullable object (`BackoffInput`, `["object", "null"]`) inside such an
/// alternative (found by trying: the same field at the spec's top level compares), so the
/// callback job's `backoff` is left out of the diff; the samples still check it.
const NULLABLE_IN_ALTERNATIVES: &[&str] = &[".on_complete.<anyOf:1>.job.backoff", ".on_fail.<anyOf:1>.job.backoff"];

/// Every typed response, its place in the document and a full sample.
fn table(doc: &Value) -> Vec<String> {
    let s = |name: &str| format!("/components/schemas/{name}");
    let error = json!({ "code": "invalid_field", "message": "payload.url: must be a URL", "field": "payload.url" });
    let backup = json!({ "id": "20261201T000000Z-ab", "valid": true, "created_at": "2026-12-01T00:00:00Z",
                         "rows": 10, "bytes": 2048, "shards": 4, "age_seconds": 12.5 });
    let mut out = Vec::new();
    out.extend(check::<Job>(doc, &s("Job"), sample_job()));
    out.extend(check::<JobSummary>(doc, &s("JobSummary"), sample_summary()));
    out.extend(check::<JobList>(doc, &s("JobList"), json!({ "jobs": [sample_summary()], "next_cursor": null })));
    // The items' alternatives are held to BatchItemCreated and BatchItemFailed one by one:
    // json-schema-diff pairs the alternatives of a oneOf by fewest differences, which pairs
    // these two crosswise (found by trying), so here the result's sample stands for them.
    let created = json!({ "status": 201, "job": sample_job() });
    let failed = json!({ "status": 400, "error": error });
    out.extend(check::<BatchItemCreated>(doc, &s("BatchItemCreated"), created));
    out.extend(check::<BatchItemFailed>(doc, &s("BatchItemFailed"), failed));
    out.extend(check_but::<BatchResult>(
        doc,
        &s("BatchResult"),
        json!({ "results": [{ "status": 201, "job": sample_job() }, { "status": 400, "error": error }] }),
        &[".results.?.<anyOf:"],
    ));
    out.extend(check::<ReplayResult>(
        doc,
        &s("ReplayResult"),
        json!({ "replayed": 1, "ids": ["j00000000000000000000000000001"] }),
    ));
    out.extend(check::<ErrorReply>(doc, &s("Error"), json!({ "error": error })));
    out.extend(check::<ErrorBody>(doc, &s("ErrorBody"), error.clone()));
    out.extend(check::<Stats>(
        doc,
        &s("Stats"),
        json!({
            "jobs": [{ "state": "queued", "type": "noop", "count": 3 }],
            "oldest_queued_at": null,
            "minutes": (0..60).map(|_| json!({ "at": "2026-12-01T00:00:00Z", "enqueued": 1, "completed": 1, "failed": 0, "dead": 0 })).collect::<Vec<_>>(),
            "consumers": { "ok": true, "list": [{ "name": "h", "seen_seconds_ago": 1.5, "running": true,
                "in_flight": 1, "concurrency": 25, "types": ["sleep"], "version": "0.1.0" }] },
            "shards": { "answered": 4, "of": 4 },
            "at": "2026-12-01T00:00:00Z"
        }),
    ));
    out.extend(check::<ScheduleView>(doc, &s("Schedule"), sample_schedule()));
    out.extend(check::<ScheduleRunView>(doc, &s("ScheduleRun"), sample_schedule()["runs"][0].clone()));
    out.extend(check::<ScheduleList>(
        doc,
        &response("/v1/schedules", "get", 200),
        json!({ "schedules": [sample_schedule()], "next_cursor": "nightly" }),
    ));
    out.extend(check::<ScheduleDeleted>(
        doc,
        &response("/v1/schedules/{name}", "delete", 200),
        json!({ "deleted": true, "name": "nightly" }),
    ));
    out.extend(check::<Triggered>(
        doc,
        &response("/v1/schedules/{name}/trigger", "post", 201),
        json!({ "created": true, "job": sample_job(), "schedule": sample_schedule() }),
    ));
    let check_detail = json!({ "ok": true, "latency_ms": 3 });
    // The document names the checks always present in `required` and describes them all by
    // `additionalProperties`, without `properties`; the type names the same ones as fields
    // (the samples hold their shape).
    out.extend(check_but::<Health>(
        doc,
        &s("Health"),
        json!({
            "status": "degraded",
            "checks": { "config": { "ok": true }, "shards": check_detail, "queue": { "ok": true },
                        "upstash": check_detail, "backup": { "ok": true, "state": "pending", "age_seconds": null },
                        "oldest_queued_job": { "ok": true, "age_seconds": 0.0 }, "sweep": { "ok": false } },
            "checked_at": "2026-12-01T00:00:00Z",
            "version": "0.1.0"
        }),
        &[".checks: PropertyRemove"],
    ));
    // Without an admin key or the metrics token: the status alone.
    out.extend(check_but::<Health>(
        doc,
        &s("Health"),
        json!({ "status": "healthy", "checked_at": "2026-12-01T00:00:00Z", "version": "0.1.0" }),
        &[".checks: PropertyRemove"],
    ));
    out.extend(check::<Live>(doc, &response("/health/live", "get", 200), json!({ "status": "live" })));
    out.extend(check::<Whoami>(
        doc,
        &response("/v1/whoami", "get", 200),
        json!({ "key_id": "0011223344556677", "scopes": ["jobs", "admin"], "tenant": null }),
    ));
    out.extend(check::<ReadToken>(
        doc,
        &s("ReadToken"),
        json!({ "token": "ejr_a.b", "expires_at": "2026-12-06T10:00:00Z", "job": "j0000000000000000000000000000", "tenant": "default" }),
    ));
    out.extend(check::<BackupSummary>(doc, &s("BackupSummary"), backup.clone()));
    out.extend(check::<BackupList>(doc, &response("/v1/admin/backups", "get", 200), json!({ "backups": [backup] })));
    out.extend(check::<VerifyResult>(
        doc,
        &response("/v1/admin/backups/{id}/verify", "post", 200),
        json!({ "id": "20261201T000000Z-ab", "valid": false, "problems": ["shard 1: missing"], "rows": 10 }),
    ));
    let entry = json!({ "shard": 0, "part": 0, "key": "backups/x/shard-0000-0000.ndjson.gz", "rows": 10,
                        "bytes": 2048, "sha256": "0".repeat(64) });
    out.extend(check::<Manifest>(
        doc,
        &s("Manifest"),
        json!({ "schema_version": 1, "id": "2026-12-01T00-00-00-000Z-0000abcd", "started_at": "2026-12-01T00:00:00Z",
                "finished_at": "2026-12-01T00:00:01Z", "shard_count": 1, "shards": [entry.clone()],
                "total_rows": 10, "total_bytes": 2048, "schedules": entry }),
    ));
    out.extend(check::<Restored>(
        doc,
        &response("/v1/admin/restore", "post", 200),
        json!({ "backup": "2026-12-01T00-00-00-000Z-0000abcd", "restored_rows": 10, "restored_schedules": null,
                "shards": 1, "per_shard": [{ "shard": 0, "rows": 10 }] }),
    ));
    // Requests: the document's spec of a declared type (the built-ins differ only in
    // `type` and `payload`) and of a schedule, whose `job` is the same spec's fields
    // without idempotency_key, delay and run_at (a oneOf of the built-ins in the document).
    let spec = json!({ "type": "resize", "payload": { "w": 1 }, "max_attempts": 3, "timeout": "30s",
                       "backoff": { "base": 1000, "factor": 2.0, "cap": "1h" }, "tags": ["a"], "metadata": { "m": 1 },
                       "idempotency_key": "k", "delay": 5000 });
    out.extend(check_but::<JobSpec>(doc, &s("DeclaredJobSpec"), spec, NULLABLE_IN_ALTERNATIVES));
    out.extend(check_but::<ScheduleSpec>(
        doc,
        &s("ScheduleSpec"),
        json!({ "name": "nightly", "cron": "0 3 * * *", "timezone": "UTC", "job": { "type": "noop", "tags": ["a"] },
                "overlap": "skip", "catch_up": "last", "paused": false, "starts_at": "2026-12-01T00:00:00Z",
                "ends_at": "2027-12-01T00:00:00Z" }),
        &[".job"],
    ));
    // Flow control (#28): a key's state, the busiest keys, a pause's body and answer, and
    // a job spec's flow fields.
    out.extend(check::<FlowKey>(
        doc,
        &s("FlowKey"),
        json!({ "tenant": "acme", "key": "user:1", "running": 1, "limit": 2, "waiting": 3, "rate_waiting": 0,
                "rate_next_at": null, "parked": 0, "paused": false }),
    ));
    out.extend(check::<BusyKeys>(
        doc,
        &response("/v1/flow/busiest", "get", 200),
        json!({ "keys": [{ "kind": "concurrency", "tenant": "acme", "key": "user:1", "running": 1, "limit": 2,
                           "waiting": 3 }] }),
    ));
    out.extend(check::<EventRequest>(
        doc,
        &s("EventRequest"),
        json!({ "name": "order.approved", "data": { "order": 7 }, "id": "evt-1", "tenant": "acme" }),
    ));
    let reseal = "/paths/~1v1~1admin~1reseal/post/requestBody/content/application~1json/schema";
    out.extend(check::<ResealRequest>(doc, reseal, json!({ "shard": 3, "cursor": "j0abc", "limit": 50 })));
    out.extend(check::<ResealPage>(
        doc,
        &response("/v1/admin/reseal", "post", 200),
        json!({ "shard": 3, "key": "k2", "scanned": 50, "jobs_resealed": 4, "schedules_resealed": 0,
                "unopenable": 0, "cursor": "j0abd", "done": false }),
    ));
    out.extend(check::<FlowPauseRequest>(doc, &s("FlowPauseRequest"), json!({ "key": "user:1", "tenant": "acme" })));
    out.extend(check::<FlowChanged>(doc, &response("/v1/admin/flow/pause", "post", 200), json!({ "changed": true })));
    out.extend(check::<EventSent>(
        doc,
        &response("/v1/events", "post", 202),
        json!({ "name": "approved", "id": "e1", "duplicate": false, "resumed": 1 }),
    ));
    let flowed = json!({ "type": "resize", "payload": { "w": 1 }, "priority": 7,
                         "concurrency": [{ "key": "user:1", "limit": 1 }, { "key": "acme", "limit": 10 }],
                         "rate": { "key": "r", "limit": 10, "period": "1s" },
                         "debounce": { "key": "d", "period": 2000, "max_wait": "10s" },
                         "throttle": { "key": "t", "limit": 5, "period": "1m", "on_limit": "drop" } });
    out.extend(check_but::<JobSpec>(doc, &s("DeclaredJobSpec"), flowed, NULLABLE_IN_ALTERNATIVES));
    let mut job = sample_job();
    if let Some(o) = job.as_object_mut() {
        o.insert("flow".into(), json!({ "concurrency": [{ "key": "user:1", "limit": 1 }], "priority": 5,
            "rate": { "key": "r", "limit": 10, "period_ms": 1000 }, "debounce": { "key": "d", "period_ms": 2000, "max_wait_ms": 10000 },
            "throttle": { "key": "t", "limit": 5, "period_ms": 60000, "on_limit": "drop" } }));
        o.insert("waiting_for".into(), json!("concurrency:user:1"));
        o.insert("debounced".into(), json!(true));
    }
    out.extend(check::<Job>(doc, &s("Job"), job));
    // Completion callbacks (#30): a spec with both forms, a job carrying them (and its
    // batch), a listing's summary of a batch's job, a batch's reply naming its batch.
    let callbacks = json!({ "type": "resize", "payload": { "w": 1 },
        "on_complete": { "url": "https://example.com/done", "headers": { "authorization": "Bearer x" } },
        "on_fail": { "job": { "type": "noop", "payload": { "k": 1 }, "max_attempts": 2, "timeout": "10s",
                              "backoff": { "base": "1s" }, "tags": ["cb"], "metadata": { "m": 1 }, "delay": 5000 } } });
    out.extend(check_but::<JobSpec>(doc, &s("DeclaredJobSpec"), callbacks, NULLABLE_IN_ALTERNATIVES));
    let url_callback = json!({ "kind": "url", "id": "j0000000000000000000000000000b", "type": "webhook", "lane": "edge",
        "payload": { "url": "https://example.com/done", "headers": { "authorization": "[redacted]" } },
        "max_attempts": 5, "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 }, "timeout_ms": 30000,
        "fired_at": "2026-12-01T00:00:02Z" });
    let job_callback = json!({ "kind": "job", "id": "j0000000000000000000000000000c", "type": "sleep", "lane": "native",
        "payload": { "k": 1 }, "max_attempts": 2, "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 3600000 },
        "timeout_ms": 10000, "tags": ["cb"], "metadata": { "m": 1 }, "rate_group": "g", "delay_ms": 5000 });
    out.extend(check::<JobCallback>(doc, &s("JobCallback"), job_callback.clone()));
    let mut job = sample_job();
    if let Some(o) = job.as_object_mut() {
        o.insert("on_complete".into(), url_callback);
        o.insert("on_fail".into(), job_callback);
        o.insert("batch".into(), json!("b0000000000000000000000000000a"));
    }
    out.extend(check::<Job>(doc, &s("Job"), job));
    let mut summary = sample_summary();
    if let Some(o) = summary.as_object_mut() {
        o.insert("batch".into(), json!("b0000000000000000000000000000a"));
    }
    out.extend(check::<JobSummary>(doc, &s("JobSummary"), summary));
    out.extend(check_but::<BatchResult>(
        doc,
        &s("BatchResult"),
        json!({ "results": [{ "status": 201, "job": sample_job() }], "batch": "b0000000000000000000000000000a" }),
        &[".results.?.<anyOf:"],
    ));
    out.extend(check::<WebhookSecret>(
        doc,
        &response("/v1/admin/webhook-secret", "post", 200),
        json!({ "origin": "https://example.com", "type": "webhook", "secret": "whsec_x", "secrets": ["whsec_x"] }),
    ));
    out
}

#[test]
fn openapi_json_describes_the_types() {
    let problems = table(&openapi());
    let mut msg = String::new();
    for p in &problems {
        let _ = writeln!(msg, "  {p}");
    }
    assert!(problems.is_empty(), "functions/edge/openapi.json and shared/api disagree:\n{msg}");
}

/// The check can fail: a property only the document has, one only the type has, and a
/// property required on one side only are each reported.
#[test]
fn the_check_sees_a_field_on_one_side_only() {
    let mut doc = openapi();
    let job = &mut doc["components"]["schemas"]["Job"];
    job["properties"]["extra"] = json!({ "type": "string" });
    let problems = check::<Job>(&doc, "/components/schemas/Job", sample_job());
    assert!(problems.iter().any(|p| p.contains("extra")), "{problems:?}");

    let mut doc = openapi();
    if let Some(props) = doc["components"]["schemas"]["Job"]["properties"].as_object_mut() {
        props.remove("rate_group");
    }
    let problems = check::<Job>(&doc, "/components/schemas/Job", sample_job());
    assert!(problems.iter().any(|p| p.contains("rate_group")), "{problems:?}");

    let mut doc = openapi();
    if let Some(props) = doc["components"]["schemas"]["DeclaredJobSpec"]["properties"].as_object_mut() {
        props.remove("idempotency_key");
    }
    let problems = check::<JobSpec>(&doc, "/components/schemas/DeclaredJobSpec", json!({ "type": "t" }));
    assert!(problems.iter().any(|p| p.contains("idempotency_key")), "{problems:?}");

    let mut doc = openapi();
    doc["components"]["schemas"]["ReplayResult"]["required"] = json!(["replayed"]);
    let problems = check::<ReplayResult>(&doc, "/components/schemas/ReplayResult", json!({ "replayed": 0, "ids": [] }));
    assert!(problems.iter().any(|p| p.contains("Required")), "{problems:?}");

    let mut doc = openapi();
    doc["components"]["schemas"]["ReplayResult"]["properties"]["replayed"] = json!({ "type": "string" });
    let problems = check::<ReplayResult>(&doc, "/components/schemas/ReplayResult", json!({ "replayed": 0, "ids": [] }));
    assert!(problems.iter().any(|p| p.contains("Type")), "{problems:?}");
}
