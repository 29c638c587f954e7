//! Job types: the built-ins and those a deployment declares in `JOB_TYPES`, each with its
//! lane and defaults (timeout, attempts, backoff, tags, an upstream rate-limit group,
//! retention overrides), an optional JSON Schema for its payload, and, for a user type of
//! the edge lane, the fixed URL its jobs are delivered to as signed webhooks.
//!
//! `JOB_TYPES` is a JSON object of type name → declaration; a built-in named there gets the
//! declared defaults (its lane stays). Every problem is reported at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::fields::{MAX_ATTEMPTS_LIMIT, MAX_EDGE_TIMEOUT_MS, MAX_NATIVE_TIMEOUT_MS, MAX_TAGS, parse_duration};
use crate::job::Lane;
use crate::retry::Backoff;

/// Most types a deployment may declare.
pub const MAX_TYPES: usize = 200;
/// Longest type name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest schema, serialized.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

#[cfg(feature = "schema")]
#[path = "schema.rs"]
pub mod schema;

/// A compiled payload schema (its source kept for display and comparison).
#[derive(Clone)]
pub struct Schema {
    pub source: Value,
    #[cfg(feature = "schema")]
    compiled: Arc<schema::Validator>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").field("source", &self.source).finish_non_exhaustive()
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Schema) -> bool {
        self.source == other.source
    }
}

/// Without the `schema` feature (the native consumer and the CLI, which never check a
/// payload) no schema compiles, so none is ever validated against.
#[cfg(not(feature = "schema"))]
impl Schema {
    pub fn compile(_source: Value) -> Result<Schema, String> {
        Err("cannot be checked: this program is built without JSON Schema support (edgejobs-core's `schema` feature)"
            .to_owned())
    }

    /// Never called: no `Schema` exists without the feature.
    pub fn first_violation(&self, _payload: &Value) -> Option<(String, String)> {
        None
    }
}

#[cfg(feature = "schema")]
impl Schema {
    /// Compiles a schema: draft 2020-12, the subset `schema.rs` states. Anything else in it
    /// (an unsupported keyword, a `$ref` to another document, a `pattern` regex-lite cannot
    /// run in linear time) is refused, naming the keyword and where it is.
    pub fn compile(source: Value) -> Result<Schema, String> {
        if serde_json::to_string(&source).map(|s| s.len()).unwrap_or(usize::MAX) > MAX_SCHEMA_BYTES {
            return Err(format!("is larger than {MAX_SCHEMA_BYTES} bytes"));
        }
        let compiled = schema::Validator::compile(&source)?;
        Ok(Schema { source, compiled: Arc::new(compiled) })
    }

    /// The first violation: the JSON pointer into the payload and what is wrong.
    pub fn first_violation(&self, payload: &Value) -> Option<(String, String)> {
        self.compiled.first_violation(payload)
    }
}

/// Per-type retention overrides (unset: the deployment's `RETENTION_*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    pub completed_age_ms: Option<u64>,
    pub completed_keep: Option<u32>,
    pub dead_age_ms: Option<u64>,
    pub dead_keep: Option<u32>,
}

impl Retention {
    pub fn is_empty(&self) -> bool {
        *self == Retention::default()
    }
}

/// One job type and its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeDef {
    pub name: String,
    pub lane: Lane,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub backoff: Backoff,
    /// Tags every job of the type carries (before its own).
    pub tags: Vec<String>,
    /// The consumer's upstream token bucket its attempts take from (native lane).
    pub rate_group: Option<String>,
    pub retention: Retention,
    pub schema: Option<Schema>,
    /// A user type of the edge lane: its jobs are POSTed, payload as the body, here.
    pub url: Option<String>,
    /// A user type of the edge lane delivered to a Worker through a service binding of this
    /// name (#31: `"service": "EMAILER"` with `[[services]] binding = "EMAILER"` in
    /// edgejobs' `wrangler.toml`): POSTed, payload as the body, without a signature (the
    /// binding reaches that Worker only). Exactly one of `url` and `service`.
    pub service: Option<String>,
    /// One of ours (`noop`, `webhook`, `sleep`, `http.request`, `llm.chat`).
    pub builtin: bool,
    /// The tenants whose keys may enqueue it (`"tenants": ["acme"]`); empty: every tenant.
    /// To a key of another tenant the type does not exist.
    pub tenants: Vec<crate::tenant::Tenant>,
    /// Flow control every job of the type has (#28): keys may be JSON pointers or
    /// `"tenant"`; a job's own fields replace these one by one.
    pub flow: crate::flow::FlowSpec,
    /// An edge type whose `url` serves a durable workflow (#29): the edge calls it with the
    /// run's recorded steps and records the step it answers (`workflow::Answer`).
    pub workflow: bool,
    /// `POST /v1/events` with this event name starts a job of the type, the event's data as
    /// its payload (Inngest's event triggers).
    pub on_event: Option<String>,
}

impl TypeDef {
    /// Whether jobs of `tenant` may be of this type.
    pub fn open_to(&self, tenant: &crate::tenant::Tenant) -> bool {
        self.tenants.is_empty() || self.tenants.contains(tenant)
    }
}

fn builtin(name: &str, lane: Lane, max_attempts: u32, timeout_ms: u64, base_ms: u64) -> TypeDef {
    TypeDef {
        name: name.to_owned(),
        lane,
        max_attempts,
        timeout_ms,
        backoff: Backoff { base_ms, factor: 2.0, cap_ms: 3_600_000 },
        tags: Vec::new(),
        rate_group: None,
        retention: Retention::default(),
        schema: None,
        url: None,
        service: None,
        builtin: true,
        tenants: Vec::new(),
        flow: crate::flow::FlowSpec::default(),
        workflow: false,
        on_event: None,
    }
}

/// The job types of a deployment. Cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct Types(Arc<BTreeMap<String, TypeDef>>);

impl Default for Types {
    fn default() -> Types {
        Types::builtins()
    }
}

/// Whether `name` can be a binding's name in `wrangler.toml` (a JavaScript identifier of
/// ASCII letters, digits and `_`, not starting with a digit).
fn is_binding_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The fields a declaration may have.
const FIELDS: &[&str] = &[
    "lane",
    "timeout",
    "max_attempts",
    "backoff",
    "tags",
    "rate_group",
    "retention",
    "schema",
    "url",
    "service",
    "description",
    "tenants",
    "concurrency",
    "rate",
    "priority",
    "debounce",
    "throttle",
    "workflow",
    "on_event",
];
const RETENTION_FIELDS: &[&str] = &["completed_age", "completed_keep", "dead_age", "dead_keep"];

impl Types {
    /// Only the built-in types.
    pub fn builtins() -> Types {
        let all = [
            builtin("noop", Lane::Edge, 3, 10_000, 1000),
            builtin("webhook", Lane::Edge, 5, 30_000, 1000),
            builtin("sleep", Lane::Native, 3, 600_000, 1000),
            builtin("http.request", Lane::Native, 5, 300_000, 2000),
            builtin("llm.chat", Lane::Native, 5, 600_000, 2000),
        ];
        Types(Arc::new(all.into_iter().map(|t| (t.name.clone(), t)).collect()))
    }

    pub fn get(&self, name: &str) -> Option<&TypeDef> {
        self.0.get(name)
    }

    /// Every type, by name.
    pub fn all(&self) -> impl Iterator<Item = &TypeDef> {
        self.0.values()
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// The built-ins plus the declarations of `JOB_TYPES` (a JSON object; empty or unset:
    /// the built-ins only). Fixed webhook URLs must pass the outbound rules `allow`. Every
    /// problem, each naming the type and field.
    pub fn parse(text: &str, allow: &crate::outbound::Allow) -> Result<Types, Vec<String>> {
        let mut types = Types::builtins().0.as_ref().clone();
        if text.trim().is_empty() {
            return Ok(Types(Arc::new(types)));
        }
        let doc: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Err(vec![format!("JOB_TYPES: is not JSON ({e})")]),
        };
        let Some(decls) = doc.as_object() else {
            return Err(vec!["JOB_TYPES: must be a JSON object of type name to declaration".into()]);
        };
        let mut errors = Vec::new();
        if decls.len() > MAX_TYPES {
            errors.push(format!("JOB_TYPES: declares {} types; at most {MAX_TYPES}", decls.len()));
        }
        for (name, decl) in decls {
            let mut problems = Vec::new();
            let base = types.get(name).cloned();
            match declare(name, decl, base, allow, &mut problems) {
                Some(t) if problems.is_empty() => {
                    types.insert(name.clone(), t);
                }
                _ => {}
            }
            errors.extend(problems.into_iter().map(|p| format!("JOB_TYPES: type {name:?}: {p}")));
        }
        if errors.is_empty() { Ok(Types(Arc::new(types))) } else { Err(errors) }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

fn duration(obj: &Map<String, Value>, field: &str, min: u64, max: u64, problems: &mut Vec<String>) -> Option<u64> {
    let v = obj.get(field)?;
    match parse_duration(v) {
        Some(ms) if (min..=max).contains(&ms) => Some(ms),
        _ => {
            problems.push(format!("{field}: must be a duration from {min} ms to {max} ms, e.g. \"30s\""));
            None
        }
    }
}

fn count(obj: &Map<String, Value>, field: &str, min: u64, max: u64, problems: &mut Vec<String>) -> Option<u64> {
    let v = obj.get(field)?;
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            problems.push(format!("{field}: must be an integer from {min} to {max}"));
            None
        }
    }
}

/// One declaration on top of `base` (the built-in of that name, if any).
fn declare(
    name: &str,
    decl: &Value,
    base: Option<TypeDef>,
    allow: &crate::outbound::Allow,
    problems: &mut Vec<String>,
) -> Option<TypeDef> {
    if !valid_name(name) {
        problems.push(format!("the name must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ - :"));
    }
    let Some(obj) = decl.as_object() else {
        problems.push("must be an object such as {\"lane\": \"native\"}".into());
        return None;
    };
    for k in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(format!("{k}: unknown field (known: {})", FIELDS.join(", ")));
    }
    let lane = match (obj.get("lane").map(|v| v.as_str()), &base) {
        (Some(Some("edge")), _) => Lane::Edge,
        (Some(Some("native")), _) => Lane::Native,
        (None, Some(b)) => b.lane,
        (None, None) => {
            problems.push("lane: is required (\"edge\" or \"native\")".into());
            Lane::Native
        }
        _ => {
            problems.push("lane: must be \"edge\" or \"native\"".into());
            Lane::Native
        }
    };
    let builtin = base.is_some();
    let mut t = base.unwrap_or_else(|| {
        let mut t = builtin_def(name, lane);
        t.builtin = false;
        t
    });
    if builtin && lane != t.lane {
        problems.push(format!("lane: the built-in type runs on the {} lane", t.lane.as_str()));
    }
    let max_timeout = if lane == Lane::Edge { MAX_EDGE_TIMEOUT_MS } else { MAX_NATIVE_TIMEOUT_MS };
    match crate::flow::parse(obj, true) {
        Ok(f) => t.flow = f,
        Err(e) => problems.push(match e.field {
            Some(f) => format!("{f}: {}", e.message),
            None => e.message,
        }),
    }
    if let Some(ms) = duration(obj, "timeout", 1000, max_timeout, problems) {
        t.timeout_ms = ms;
    }
    if let Some(n) = count(obj, "max_attempts", 1, MAX_ATTEMPTS_LIMIT as u64, problems) {
        t.max_attempts = n as u32;
    }
    if let Some(b) = obj.get("backoff") {
        match crate::fields::parse_backoff(Some(b), t.backoff) {
            Ok(b) => t.backoff = b,
            Err(e) => problems.push(e.message),
        }
    }
    if let Some(tags) = obj.get("tags") {
        match tags.as_array() {
            Some(list)
                if list.len() <= MAX_TAGS / 2
                    && list
                        .iter()
                        .all(|t| t.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 64 && !s.contains(','))) =>
            {
                t.tags = list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            }
            _ => {
                problems.push(format!("tags: must be at most {} strings of 1 to 64 bytes without commas", MAX_TAGS / 2))
            }
        }
    }
    if let Some(g) = obj.get("rate_group") {
        match g.as_str() {
            Some(s) if lane == Lane::Native && valid_name(s) => t.rate_group = Some(s.to_owned()),
            Some(_) if lane == Lane::Edge => {
                problems.push("rate_group: applies to native types (the consumer's upstream buckets)".into())
            }
            _ => problems.push("rate_group: must be a name such as \"imgproxy\"".into()),
        }
    }
    if let Some(r) = obj.get("retention") {
        match r.as_object() {
            Some(r) => {
                for k in r.keys().filter(|k| !RETENTION_FIELDS.contains(&k.as_str())) {
                    problems.push(format!("retention.{k}: unknown field (known: {})", RETENTION_FIELDS.join(", ")));
                }
                let day = 86_400_000;
                t.retention = Retention {
                    completed_age_ms: duration(r, "completed_age", 1000, 3650 * day, problems),
                    completed_keep: count(r, "completed_keep", 0, 1_000_000, problems).map(|n| n as u32),
                    dead_age_ms: duration(r, "dead_age", 1000, 3650 * day, problems),
                    dead_keep: count(r, "dead_keep", 0, 1_000_000, problems).map(|n| n as u32),
                };
            }
            None => problems.push("retention: must be an object".into()),
        }
    }
    if let Some(s) = obj.get("schema") {
        match Schema::compile(s.clone()) {
            Ok(s) => t.schema = Some(s),
            Err(e) => problems.push(format!("schema: {e}")),
        }
    }
    if let Some(v) = obj.get("service") {
        match (v.as_str(), lane, builtin) {
            (_, _, true) => problems.push("service: a built-in type is not delivered to a binding".into()),
            (_, Lane::Native, _) => problems.push("service: only an edge type is delivered to a binding".into()),
            (_, _, _) if obj.contains_key("url") => {
                problems.push("service: give either url or service, not both".into())
            }
            (Some(name), Lane::Edge, false) if is_binding_name(name) => t.service = Some(name.to_owned()),
            _ => problems.push(
                "service: must be the name of a service binding in wrangler.toml (letters, digits and _, at most 64)"
                    .into(),
            ),
        }
    }
    match (obj.get("url"), lane, builtin) {
        (Some(_), _, true) => problems.push("url: a built-in type takes its URL from each job's payload".into()),
        (Some(_), Lane::Native, _) => problems.push("url: only an edge type has a fixed URL".into()),
        (Some(u), Lane::Edge, false) => match u.as_str().map(|s| crate::outbound::check_url(s, allow)) {
            Some(Ok(_)) => t.url = u.as_str().map(str::to_owned),
            Some(Err(e)) => problems.push(format!("url: {e}")),
            None => problems.push("url: must be a string".into()),
        },
        (None, Lane::Edge, false) if !obj.contains_key("service") => problems.push(
            "url: is required for an edge type (its jobs are POSTed there as signed webhooks), \
             or service: a service binding to deliver them to"
                .into(),
        ),
        (None, _, _) => {}
    }
    match (obj.get("workflow"), lane) {
        (None, _) | (Some(Value::Bool(false)), _) => {}
        (Some(Value::Bool(true)), Lane::Edge) if obj.contains_key("service") => {
            problems.push("workflow: a workflow endpoint is a url, not a service binding".into())
        }
        (Some(Value::Bool(true)), Lane::Edge) if !builtin => t.workflow = true,
        (Some(Value::Bool(true)), Lane::Native) => problems.push(
            "workflow: a native type's handler uses steps (ctx.step) without declaring it; \
             workflow: true makes an edge type's url a workflow endpoint"
                .into(),
        ),
        (Some(Value::Bool(true)), _) => problems.push("workflow: a built-in type is not a workflow".into()),
        (Some(_), _) => problems.push("workflow: must be true or false".into()),
    }
    if let Some(e) = obj.get("on_event") {
        match e.as_str() {
            Some(n) if !n.is_empty() && n.len() <= crate::workflow::MAX_EVENT_NAME_BYTES && !builtin => {
                t.on_event = Some(n.to_owned())
            }
            Some(_) if builtin => problems.push("on_event: a built-in type is not started by events".into()),
            _ => problems.push(format!(
                "on_event: must be an event name of 1 to {} bytes",
                crate::workflow::MAX_EVENT_NAME_BYTES
            )),
        }
    }
    if let Some(d) = obj.get("description")
        && d.as_str().is_none_or(|s| s.len() > 500)
    {
        problems.push("description: must be a string of at most 500 bytes".into());
    }
    if let Some(v) = obj.get("tenants") {
        let names: Option<Vec<crate::tenant::Tenant>> = v
            .as_array()
            .filter(|a| !a.is_empty())
            .and_then(|a| a.iter().map(|n| n.as_str().and_then(|n| crate::tenant::Tenant::parse(n).ok())).collect());
        match names {
            Some(names) if !builtin => t.tenants = names,
            Some(_) => problems.push("tenants: a built-in type is open to every tenant".into()),
            None => problems.push("tenants: must be a non-empty array of tenant names".into()),
        }
    }
    Some(t)
}

/// The defaults a new type starts from: 3 attempts, 30 s (edge) or 5 min (native), 1 s
/// backoff doubling up to an hour.
fn builtin_def(name: &str, lane: Lane) -> TypeDef {
    let timeout = if lane == Lane::Edge { 30_000 } else { 300_000 };
    builtin(name, lane, 3, timeout, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::outbound::Allow;
    use crate::spec::parse_spec_in;
    use serde_json::json;

    fn parse(v: Value) -> Result<Types, Vec<String>> {
        Types::parse(&v.to_string(), &Allow::default())
    }

    fn types() -> Types {
        parse(json!({
            "image.resize": {
                "lane": "native", "timeout": "5m", "max_attempts": 7, "tags": ["images"], "rate_group": "imgproxy",
                "backoff": { "base": "2s", "factor": 3, "cap": "10m" },
                "retention": { "completed_age": "1h", "dead_keep": 10 },
                "schema": { "type": "object", "required": ["src", "width"],
                            "properties": { "src": { "type": "string" }, "width": { "type": "integer", "maximum": 4096 } } }
            },
            "welcome": { "lane": "edge", "url": "https://hooks.example.com/welcome", "max_attempts": 4 },
            "noop": { "timeout": "20s" }
        }))
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn declared_types_join_the_builtins() {
        let t = types();
        assert_eq!(t.names(), ["http.request", "image.resize", "llm.chat", "noop", "sleep", "webhook", "welcome"]);
        let img = t.get("image.resize").cloned().unwrap_or_else(|| builtin_def("x", Lane::Edge));
        assert_eq!((img.lane, img.timeout_ms, img.max_attempts), (Lane::Native, 300_000, 7));
        assert_eq!(img.backoff, Backoff { base_ms: 2000, factor: 3.0, cap_ms: 600_000 });
        assert_eq!(img.rate_group.as_deref(), Some("imgproxy"));
        assert_eq!(
            img.retention,
            Retention { completed_age_ms: Some(3_600_000), dead_keep: Some(10), ..Retention::default() }
        );
        assert_eq!(t.get("noop").map(|n| (n.timeout_ms, n.builtin)), Some((20_000, true)));
        assert_eq!(t.get("welcome").and_then(|w| w.url.as_deref()), Some("https://hooks.example.com/welcome"));
        assert_eq!(Types::parse("", &Allow::default()), Ok(Types::builtins()));
    }

    #[test]
    fn workflow_types_and_event_triggers_are_declared_with_their_rules() {
        let t = parse(json!({
            "order.flow": { "lane": "edge", "url": "https://flows.example.com/workflow", "workflow": true },
            "on.signup": { "lane": "native", "on_event": "user.signup" }
        }))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(t.get("order.flow").map(|d| d.workflow), Some(true));
        assert_eq!(t.get("on.signup").and_then(|d| d.on_event.as_deref()), Some("user.signup"));
        let errors = parse(json!({
            "native-flow": { "lane": "native", "workflow": true },
            "not-bool": { "lane": "edge", "url": "https://x.example/", "workflow": "yes" },
            "builtin": { "workflow": true, "lane": "edge" },
            "empty-event": { "lane": "native", "on_event": "" }
        }))
        .err()
        .unwrap_or_default();
        let has = |ty: &str, what: &str| errors.iter().any(|e| e.contains(&format!("{ty:?}")) && e.contains(what));
        assert!(has("native-flow", "workflow: a native type"), "{errors:#?}");
        assert!(has("not-bool", "workflow: must be true or false"), "{errors:#?}");
        assert!(has("empty-event", "on_event: must be"), "{errors:#?}");
    }

    #[test]
    fn service_types_name_a_binding_instead_of_a_url() {
        let t = parse(json!({ "welcome.email": { "lane": "edge", "service": "EMAILER" } }))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let d = t.get("welcome.email").expect("declared");
        assert_eq!((d.service.as_deref(), d.url.as_deref()), (Some("EMAILER"), None));
        let errors = parse(json!({
            "both": { "lane": "edge", "service": "EMAILER", "url": "https://x.example/" },
            "native": { "lane": "native", "service": "EMAILER" },
            "bad-name": { "lane": "edge", "service": "emailer-worker" },
            "digit": { "lane": "edge", "service": "1EMAILER" },
            "not-string": { "lane": "edge", "service": 7 },
            "flow": { "lane": "edge", "service": "EMAILER", "workflow": true },
            "webhook": { "service": "EMAILER" }
        }))
        .err()
        .unwrap_or_default();
        let has = |ty: &str, what: &str| errors.iter().any(|e| e.contains(&format!("{ty:?}")) && e.contains(what));
        assert!(has("both", "either url or service"), "{errors:#?}");
        assert!(has("native", "only an edge type"), "{errors:#?}");
        for ty in ["bad-name", "digit", "not-string"] {
            assert!(has(ty, "service: must be the name of a service binding"), "{ty}: {errors:#?}");
        }
        assert!(has("flow", "workflow: a workflow endpoint is a url"), "{errors:#?}");
        assert!(has("webhook", "service: a built-in type"), "{errors:#?}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = parse(json!({
            "a b": { "lane": "native" },
            "nolane": {},
            "edge-without-url": { "lane": "edge" },
            "native-with-url": { "lane": "native", "url": "https://x.example/" },
            "private": { "lane": "edge", "url": "http://10.0.0.1/hook" },
            "credentials": { "lane": "edge", "url": "https://user:pass@x.example/hook" },
            "nat64": { "lane": "edge", "url": "http://[64:ff9b:1::a9fe:a9fe]/hook" },
            "badschema": { "lane": "native", "schema": { "type": "nonsense" } },
            "remote": { "lane": "native", "schema": { "$ref": "https://example.com/s.json" } },
            "typo": { "lane": "native", "timeuot": "5s", "max_attempts": 0, "retention": { "keep": 1 } },
            "noop": { "lane": "native" },
            "webhook": { "url": "https://x.example/" },
            "grouped-edge": { "lane": "edge", "url": "https://x.example/", "rate_group": "g" }
        }))
        .err()
        .unwrap_or_default();
        let has = |ty: &str, what: &str| errors.iter().any(|e| e.contains(&format!("{ty:?}")) && e.contains(what));
        assert!(has("a b", "name"), "{errors:#?}");
        assert!(has("nolane", "lane: is required"), "{errors:#?}");
        assert!(has("edge-without-url", "url: is required"), "{errors:#?}");
        assert!(has("native-with-url", "only an edge type"), "{errors:#?}");
        assert!(has("private", "url:"), "{errors:#?}");
        assert!(has("credentials", "url: must not carry credentials"), "{errors:#?}");
        assert!(has("nat64", "url: points to link-local"), "{errors:#?}");
        assert!(has("badschema", "schema: is not a valid JSON Schema at /type"), "{errors:#?}");
        assert!(has("remote", "schema:"), "{errors:#?}");
        assert!(
            has("typo", "timeuot: unknown field") && has("typo", "max_attempts") && has("typo", "retention.keep"),
            "{errors:#?}"
        );
        assert!(has("noop", "runs on the edge lane"), "{errors:#?}");
        assert!(has("webhook", "url: a built-in type"), "{errors:#?}");
        assert!(has("grouped-edge", "rate_group: applies to native types"), "{errors:#?}");
        assert!(errors.iter().all(|e| e.starts_with("JOB_TYPES: ")));
        assert!(Types::parse("[1]", &Allow::default()).is_err_and(|e| e[0].contains("JSON object")));
        assert!(Types::parse("{", &Allow::default()).is_err_and(|e| e[0].contains("not JSON")));
    }

    #[test]
    fn enqueue_applies_the_type_defaults_and_its_schema() {
        let t = types();
        let ok = json!({ "type": "image.resize", "payload": { "src": "s3://a.png", "width": 640 }, "tags": ["mine", "images"] });
        let spec = parse_spec_in(&ok, 0, &t).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((spec.max_attempts, spec.timeout_ms), (7, 300_000));
        assert_eq!(spec.tags, ["images", "mine"]);
        let job = spec.into_job(crate::JobId::new(0, 1, 1), 1).0;
        assert_eq!(job.rate_group.as_deref(), Some("imgproxy"));
        // A job's own field wins over the type's default.
        let own = json!({ "type": "image.resize", "payload": { "src": "a", "width": 1 }, "max_attempts": 2, "timeout": "10s" });
        let spec = parse_spec_in(&own, 0, &t).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((spec.max_attempts, spec.timeout_ms), (2, 10_000));
        // The first violation, as a JSON pointer into the body.
        let too_wide = json!({ "type": "image.resize", "payload": { "src": "a", "width": 5000 } });
        let e = parse_spec_in(&too_wide, 0, &t).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!((e.code, e.field.as_deref()), (ErrorCode::InvalidField, Some("/payload/width")));
        assert!(e.message.contains("4096"), "{}", e.message);
        let missing = json!({ "type": "image.resize", "payload": { "width": 1 } });
        let e = parse_spec_in(&missing, 0, &t).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.field.as_deref(), Some("/payload"));
        assert!(e.message.contains("src"), "{}", e.message);
        // Unknown types name the deployment's.
        let e = parse_spec_in(&json!({ "type": "resize" }), 0, &t).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert!(e.message.contains("image.resize") && e.message.contains("welcome"), "{}", e.message);
    }
}

#[cfg(test)]
mod tenant_tests {
    use super::*;
    use crate::outbound::Allow;
    use crate::tenant::Tenant;

    #[test]
    fn a_type_may_be_declared_for_some_tenants() {
        let text = r#"{"acme.report": {"lane": "native", "tenants": ["acme"]}, "open": {"lane": "native"}}"#;
        let types = Types::parse(text, &Allow::default()).unwrap_or_else(|e| panic!("{e:?}"));
        let (acme, globex) = (Tenant::parse("acme").expect("valid"), Tenant::parse("globex").expect("valid"));
        let t = types.get("acme.report").expect("declared");
        assert!(t.open_to(&acme) && !t.open_to(&globex));
        assert!(types.get("open").expect("declared").open_to(&globex));
        for bad in [
            r#"{"x": {"lane": "native", "tenants": []}}"#,
            r#"{"x": {"lane": "native", "tenants": ["Bad"]}}"#,
            r#"{"noop": {"tenants": ["acme"]}}"#,
        ] {
            assert!(Types::parse(bad, &Allow::default()).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod readme {
    use super::*;
    use crate::outbound::Allow;
    use serde_json::json;

    /// The README's `JOB_TYPES` is `examples/job-types.json`, and the error it shows is the
    /// one enqueue answers.
    #[test]
    fn the_readme_example_is_valid_and_its_error_is_real() {
        let text = include_str!("../../../examples/job-types.json");
        let types = Types::parse(text, &Allow::default()).unwrap_or_else(|e| panic!("{e:?}"));
        let body = json!({ "type": "welcome-email", "payload": { "user_id": "7" } });
        let e = crate::spec::parse_spec_in(&body, 0, &types).err().unwrap_or_else(|| panic!("accepted"));
        let shown = serde_json::to_string(&e.message).unwrap_or_default();
        let readme = include_str!("../../../README.md");
        assert!(readme.contains(&format!("\"message\":{shown}")), "README should show {shown}");
        assert!(readme.contains("\"field\":\"/payload/user_id\""));
    }
}
