//! Flow control (#28): what a job or its type asks (`concurrency`, `rate`, `priority`,
//! `debounce`, `throttle`), parsed and resolved into the concrete keys a job carries
//! ([`Flow`]), and the pure rules of the shard's gate (effective priority with aging, the
//! order in which a job takes its keys).
//!
//! A key is a string. In a job spec it is taken as written; in a type (`JOB_TYPES`) it may
//! also be a JSON pointer into the job (`"/payload/user_id"`) or `"tenant"`. Keys belong to
//! the job's tenant: two tenants' equal keys never share a limit (the shard scopes them with
//! [`crate::tenant::Tenant::scope_key`]).
//!
//! Every key a job names is decided by one shard: the job lives on the shard of its *flow
//! key* ([`Flow::route_key`]): the last concurrency key (list the broadest last), else the
//! rate key, else the throttle key, else the debounce key. Counts of that key are exact; a
//! narrower key listed first is exact as long as every job naming it names the same last
//! key (a conversation belongs to one tenant). See ARCHITECTURE.md, "Flow control".

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::fields::parse_duration;

/// At most this many concurrency keys per job (all must allow a start).
pub const MAX_CONCURRENCY_KEYS: usize = 2;
/// Longest key, in bytes, after resolution.
pub const MAX_KEY_BYTES: usize = 256;
/// Highest concurrency or rate limit.
pub const MAX_LIMIT: u32 = 10_000;
/// Longest period of a rate, debounce or throttle: a day.
pub const MAX_PERIOD_MS: u64 = 86_400_000;
/// A job's priority when it names none: the middle of 0–9.
pub const DEFAULT_PRIORITY: u8 = 5;
pub const MAX_PRIORITY: u8 = 9;
/// The starvation guard: a waiting job's effective priority rises by one for each
/// `AGING_MS` it has waited (up to 9), so a low-priority job waits at most
/// `(9 - priority) × AGING_MS` behind a stream of higher ones before it ranks with them.
pub const AGING_MS: u64 = 30_000;

/// The request fields of flow control, in a job spec or a type.
pub const FIELDS: &[&str] = &["concurrency", "rate", "priority", "debounce", "throttle"];

/// Where a key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// The string itself.
    Literal(String),
    /// A JSON pointer into the job (`/payload/user_id`, `/type`, `/tags/0`); types only.
    Pointer(String),
    /// The job's tenant; types only.
    Tenant,
}

/// What happens to a job over its throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLimit {
    /// The enqueue answers 200 with the job the key created last in the window.
    Drop,
    /// The enqueue answers 429 `throttled`.
    Reject,
}

/// A spec's or type's flow control, keys not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowSpec {
    pub concurrency: Vec<(KeyRef, u32)>,
    pub rate: Option<(KeyRef, u32, u64)>,
    pub priority: Option<u8>,
    /// Key, period, max wait.
    pub debounce: Option<(KeyRef, u64, Option<u64>)>,
    /// Key, limit, period, what to do over it.
    pub throttle: Option<(KeyRef, u32, u64, OnLimit)>,
}

impl FlowSpec {
    /// The job's own fields over its type's: each field the job names replaces the type's.
    pub fn over(self, base: &FlowSpec) -> FlowSpec {
        FlowSpec {
            concurrency: if self.concurrency.is_empty() { base.concurrency.clone() } else { self.concurrency },
            rate: self.rate.or_else(|| base.rate.clone()),
            priority: self.priority.or(base.priority),
            debounce: self.debounce.or_else(|| base.debounce.clone()),
            throttle: self.throttle.or_else(|| base.throttle.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == FlowSpec::default()
    }
}

/// One concurrency key and its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    pub key: String,
    pub limit: u32,
}

/// At most `limit` starts per `period_ms` for `key`, spread evenly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub key: String,
    pub limit: u32,
    pub period_ms: u64,
}

impl Rate {
    /// The spacing of starts: `period / limit`, at least 1 ms.
    pub fn spacing_ms(&self) -> u64 {
        (self.period_ms / u64::from(self.limit.max(1))).max(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debounce {
    pub key: String,
    pub period_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub key: String,
    pub limit: u32,
    pub period_ms: u64,
    pub on_limit: OnLimit,
}

/// Where a waiting job stands in its shard's waiting lists (kept in its record so a cancel
/// or a release finds its row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spot {
    /// The list: `c:<scoped key>` (a concurrency key), `r:<scoped key>` (a rate),
    /// `p:<scoped key>` or `t:<type>` (paused).
    pub list: String,
    /// `9 - priority`, so the list's primary key sorts the highest priority first.
    pub rank: u8,
    /// The shard's order of arrival in lists (ties and the oldest job).
    pub seq: u64,
    /// When the job began to wait here (for aging).
    pub since: u64,
}

/// A job's resolved flow control, and where it stands in the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<Debounce>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// How many concurrency keys the job holds a slot of: all of them (sent or running) or
    /// none (waiting, or its attempt ended).
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub held: u8,
    /// The attempt the gate let through last (sent to the queue or the stream); a re-send
    /// of that attempt (the sweep) passes without a new admission.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub admitted: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<Spot>,
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl Flow {
    /// The key that picks the job's shard (see the module's notes), unscoped.
    pub fn route_key(&self) -> Option<&str> {
        self.concurrency
            .last()
            .map(|c| c.key.as_str())
            .or(self.rate.as_ref().map(|r| r.key.as_str()))
            .or(self.throttle.as_ref().map(|t| t.key.as_str()))
            .or(self.debounce.as_ref().map(|d| d.key.as_str()))
    }

    /// The concurrency keys, as the job lists them (the gate takes all or none).
    pub fn order(&self) -> Vec<&Concurrency> {
        self.concurrency.iter().collect()
    }

    /// Whether the gate has anything to decide for this job (keys or a priority to order by).
    pub fn gates(&self) -> bool {
        !self.concurrency.is_empty() || self.rate.is_some()
    }
}

/// The rank a job of `priority` has after waiting since `since`: `9 - effective priority`,
/// where the effective priority rises by one per [`AGING_MS`] of waiting (capped at 9).
pub fn effective_rank(rank: u8, since: u64, now: u64) -> u8 {
    let aged = now.saturating_sub(since) / AGING_MS;
    rank.saturating_sub(u8::try_from(aged).unwrap_or(u8::MAX))
}

/// What to pause or resume: a key of a tenant, or a job type (everywhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    Key { tenant: crate::tenant::Tenant, key: String },
    Type { name: String },
}

impl Target {
    /// As the shard's `flow_paused` table names it: `k:<scoped key>` or `t:<type>`.
    pub fn stored(&self) -> String {
        match self {
            Target::Key { tenant, key } => format!("k:{}", tenant.scope_key(key)),
            Target::Type { name } => format!("t:{name}"),
        }
    }
}

/// The flow operations of a shard (one protocol operation, `flow`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FlowOp {
    /// Pauses (`paused: true`) or resumes a key or a type; answers whether it changed.
    Pause { target: Target, paused: bool },
    /// What the shard knows of one key of a tenant.
    Key { tenant: crate::tenant::Tenant, key: String },
    /// The `n` lists with the most waiting jobs.
    Busiest { n: u32 },
}

/// The answers of [`FlowOp`], one variant each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FlowReply {
    Changed(bool),
    Key(KeyState),
    Busiest(Busiest),
}

/// A shard's busiest lists, and the jobs waiting in all its lists (a job waits in one list
/// at a time, so the sum is exact however many lists there are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Busiest {
    pub lists: Vec<BusyList>,
    pub waiting: u64,
}

/// What a shard knows of one key: slots held and the limit its newest job named, jobs
/// waiting for a slot, for the rate and parked while paused, the rate's next start (ms),
/// whether it is paused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    pub running: u64,
    pub limit: u64,
    pub waiting: u64,
    pub rate_waiting: u64,
    pub rate_next_at: u64,
    pub parked: u64,
    pub paused: bool,
}

/// One of a shard's busiest lists: `kind` is `concurrency`, `rate`, `paused` or
/// `paused_type`; `tenant` and `key` (the type's name for `paused_type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyList {
    pub kind: String,
    pub tenant: String,
    pub key: String,
    pub running: u64,
    pub limit: u64,
    pub waiting: u64,
}

/// Reads the flow fields of `obj` (a job spec, or a type's declaration when `in_type`: keys
/// may then be JSON pointers or `"tenant"`). Errors name the field (`concurrency[1].limit`).
pub fn parse(obj: &Map<String, Value>, in_type: bool) -> Result<FlowSpec, ApiError> {
    let key = |v: Option<&Value>, field: &str| parse_key(v, field, in_type);
    let mut spec = FlowSpec::default();
    match obj.get("concurrency") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if (1..=MAX_CONCURRENCY_KEYS).contains(&items.len()) => {
            for (i, item) in items.iter().enumerate() {
                spec.concurrency.push(parse_concurrency(item, &format!("concurrency[{i}]"), in_type)?);
            }
        }
        Some(v @ Value::Object(_)) => spec.concurrency.push(parse_concurrency(v, "concurrency", in_type)?),
        Some(_) => {
            return Err(ApiError::field(
                "concurrency",
                format!("must be {{\"key\", \"limit\"}} or a list of 1 to {MAX_CONCURRENCY_KEYS} of them"),
            ));
        }
    }
    if let Some(v) = present(obj, "rate") {
        let o = object(v, "rate", &["key", "limit", "period"])?;
        spec.rate = Some((key(o.get("key"), "rate.key")?, limit(o.get("limit"), "rate.limit")?, period(o, "rate")?));
    }
    if let Some(v) = present(obj, "priority") {
        spec.priority = match v.as_u64() {
            Some(p) if p <= u64::from(MAX_PRIORITY) => Some(p as u8),
            _ => return Err(ApiError::field("priority", "must be an integer from 0 (lowest) to 9 (highest)")),
        };
    }
    if let Some(v) = present(obj, "debounce") {
        let o = object(v, "debounce", &["key", "period", "max_wait"])?;
        let p = period(o, "debounce")?;
        let max_wait = match o.get("max_wait") {
            None | Some(Value::Null) => None,
            Some(m) => match parse_duration(m) {
                Some(ms) if (p..=MAX_PERIOD_MS).contains(&ms) => Some(ms),
                _ => {
                    return Err(ApiError::field(
                        "debounce.max_wait",
                        "must be a duration from the period up to 1 day (\"30s\", \"5m\")",
                    ));
                }
            },
        };
        spec.debounce = Some((key(o.get("key"), "debounce.key")?, p, max_wait));
    }
    if let Some(v) = present(obj, "throttle") {
        let o = object(v, "throttle", &["key", "limit", "period", "on_limit"])?;
        let on_limit = match o.get("on_limit") {
            None | Some(Value::Null) => OnLimit::Reject,
            Some(Value::String(s)) if s == "drop" => OnLimit::Drop,
            Some(Value::String(s)) if s == "reject" => OnLimit::Reject,
            Some(_) => return Err(ApiError::field("throttle.on_limit", "must be \"drop\" or \"reject\"")),
        };
        spec.throttle = Some((
            key(o.get("key"), "throttle.key")?,
            limit(o.get("limit"), "throttle.limit")?,
            period(o, "throttle")?,
            on_limit,
        ));
    }
    Ok(spec)
}

fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn object<'a>(v: &'a Value, field: &str, fields: &[&str]) -> Result<&'a Map<String, Value>, ApiError> {
    let Some(o) = v.as_object() else {
        return Err(ApiError::field(field, format!("must be an object with {}", fields.join(", "))));
    };
    if let Some(k) = o.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(ApiError::field(&format!("{field}.{k}"), "unknown field"));
    }
    Ok(o)
}

fn parse_concurrency(v: &Value, field: &str, in_type: bool) -> Result<(KeyRef, u32), ApiError> {
    let o = object(v, field, &["key", "limit"])?;
    Ok((parse_key(o.get("key"), &format!("{field}.key"), in_type)?, limit(o.get("limit"), &format!("{field}.limit"))?))
}

fn parse_key(v: Option<&Value>, field: &str, in_type: bool) -> Result<KeyRef, ApiError> {
    let s = match v {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_KEY_BYTES && !s.contains('\u{1f}') => s,
        _ => {
            return Err(ApiError::field(
                field,
                format!("must be a string of 1 to {MAX_KEY_BYTES} bytes (without control character 0x1f)"),
            ));
        }
    };
    if in_type && s == "tenant" {
        return Ok(KeyRef::Tenant);
    }
    if in_type && s.starts_with('/') {
        return Ok(KeyRef::Pointer(s.clone()));
    }
    Ok(KeyRef::Literal(s.clone()))
}

fn limit(v: Option<&Value>, field: &str) -> Result<u32, ApiError> {
    match v.and_then(Value::as_u64) {
        Some(n) if (1..=u64::from(MAX_LIMIT)).contains(&n) => Ok(n as u32),
        _ => Err(ApiError::field(field, format!("must be an integer from 1 to {MAX_LIMIT}"))),
    }
}

fn period(o: &Map<String, Value>, field: &str) -> Result<u64, ApiError> {
    match o.get("period").and_then(parse_duration) {
        Some(ms) if (1..=MAX_PERIOD_MS).contains(&ms) => Ok(ms),
        _ => Err(ApiError::field(
            &format!("{field}.period"),
            "must be a duration from 1 ms to 1 day (milliseconds, or \"1s\", \"5m\")",
        )),
    }
}

/// What a key resolves against: the job as its API shows it (for pointers) and its tenant.
#[derive(Debug)]
pub struct Subject<'a> {
    pub job: &'a Value,
    pub tenant: &'a str,
}

/// The default concurrency of an edge webhook's receiver: its origin is a key of the job,
/// `origin:<scheme>://<host>[:port]`, with this limit (`WEBHOOK_CONCURRENCY`).
pub fn origin_key(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let origin = u.origin();
    origin.is_tuple().then(|| format!("origin:{}", origin.ascii_serialization()))
}

/// Resolves `spec` for one job. `webhook`: the receiver's origin key and its default
/// limit, added as the last concurrency key when the job names fewer than two and none of
/// them is that origin. `None` when the job has no flow control at all. A pointer that
/// names nothing, or a value that is not a string or a number, is refused (400 `invalid_field`).
pub fn resolve(spec: &FlowSpec, subject: &Subject, webhook: Option<(String, u32)>) -> Result<Option<Flow>, ApiError> {
    let key = |k: &KeyRef, field: &str| resolve_key(k, subject, field);
    let mut concurrency = Vec::with_capacity(spec.concurrency.len() + 1);
    for (i, (k, limit)) in spec.concurrency.iter().enumerate() {
        let key = key(k, &format!("concurrency[{i}].key"))?;
        if concurrency.iter().any(|c: &Concurrency| c.key == key) {
            return Err(ApiError::field("concurrency", format!("names the key {key:?} twice")));
        }
        concurrency.push(Concurrency { key, limit: *limit });
    }
    if let Some((origin, limit)) = webhook
        && concurrency.len() < MAX_CONCURRENCY_KEYS
        && !concurrency.iter().any(|c| c.key == origin)
    {
        concurrency.push(Concurrency { key: origin, limit });
    }
    let rate = match &spec.rate {
        Some((k, limit, period_ms)) => Some(Rate { key: key(k, "rate.key")?, limit: *limit, period_ms: *period_ms }),
        None => None,
    };
    let debounce = match &spec.debounce {
        Some((k, period_ms, max_wait_ms)) => {
            Some(Debounce { key: key(k, "debounce.key")?, period_ms: *period_ms, max_wait_ms: *max_wait_ms })
        }
        None => None,
    };
    let throttle = match &spec.throttle {
        Some((k, limit, period_ms, on_limit)) => {
            Some(Throttle { key: key(k, "throttle.key")?, limit: *limit, period_ms: *period_ms, on_limit: *on_limit })
        }
        None => None,
    };
    let flow = Flow {
        concurrency,
        rate,
        priority: spec.priority.unwrap_or(DEFAULT_PRIORITY),
        debounce,
        throttle,
        held: 0,
        admitted: 0,
        spot: None,
    };
    let plain = flow.concurrency.is_empty()
        && flow.rate.is_none()
        && flow.debounce.is_none()
        && flow.throttle.is_none()
        && flow.priority == DEFAULT_PRIORITY;
    Ok((!plain).then_some(flow))
}

/// The shard a job with this flow control lives on, for `tenant`: its flow key's home
/// under the deployment's first count (it never moves when `SHARD_COUNT` grows); `None`
/// when the job has no key (it is placed as any job is).
pub fn home(flow: Option<&Flow>, tenant: &crate::tenant::Tenant, topology: &crate::topology::Topology) -> Option<u16> {
    flow.and_then(Flow::route_key).map(|k| topology.schedule_home(&tenant.scope_key(k)))
}

fn resolve_key(k: &KeyRef, subject: &Subject, field: &str) -> Result<String, ApiError> {
    let key = match k {
        KeyRef::Literal(s) => return Ok(s.clone()),
        KeyRef::Tenant => return Ok(subject.tenant.to_owned()),
        KeyRef::Pointer(p) => match subject.job.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => {
                return Err(ApiError::field(field, format!("{p} names a value that is not a string or a number")));
            }
            None => return Err(ApiError::field(field, format!("{p} names nothing in this job (the type's key)"))),
        },
    };
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.contains('\u{1f}') {
        return Err(ApiError::field(field, format!("the key at this pointer must be 1 to {MAX_KEY_BYTES} bytes")));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn a_spec_parses_every_field_and_resolves_literals() {
        let s = parse(
            &obj(json!({
                "concurrency": [{"key": "conv-1", "limit": 1}, {"key": "acme", "limit": 10}],
                "rate": {"key": "rx", "limit": 10, "period": "1s"},
                "priority": 7,
                "debounce": {"key": "d", "period": "2s", "max_wait": "10s"},
                "throttle": {"key": "t", "limit": 3, "period": 60000, "on_limit": "drop"}
            })),
            false,
        )
        .expect("ok");
        let job = json!({});
        let f = resolve(&s, &Subject { job: &job, tenant: "acme" }, None).expect("resolves").expect("has flow");
        assert_eq!(f.concurrency.len(), 2);
        assert_eq!(f.route_key(), Some("acme"));
        assert_eq!(f.rate.as_ref().map(Rate::spacing_ms), Some(100));
        assert_eq!(f.priority, 7);
        assert_eq!(f.debounce.as_ref().and_then(|d| d.max_wait_ms), Some(10_000));
        assert_eq!(f.throttle.as_ref().map(|t| t.on_limit), Some(OnLimit::Drop));
    }

    #[test]
    fn in_a_spec_a_slash_is_a_literal_key_and_in_a_type_a_pointer() {
        let v = obj(json!({"concurrency": {"key": "/payload/user", "limit": 1}}));
        let job = json!({"payload": {"user": 42}});
        let subject = Subject { job: &job, tenant: "acme" };
        let as_spec = resolve(&parse(&v, false).expect("ok"), &subject, None).expect("resolves").expect("has flow");
        assert_eq!(as_spec.concurrency[0].key, "/payload/user");
        let as_type = resolve(&parse(&v, true).expect("ok"), &subject, None).expect("resolves").expect("has flow");
        assert_eq!(as_type.concurrency[0].key, "42");
        let t = parse(&obj(json!({"concurrency": {"key": "tenant", "limit": 1}})), true).expect("ok");
        assert_eq!(resolve(&t, &subject, None).expect("resolves").expect("has flow").concurrency[0].key, "acme");
    }

    #[test]
    fn a_pointer_that_names_nothing_is_refused_with_its_field() {
        let t =
            parse(&obj(json!({"concurrency": [{"key": "a", "limit": 1}, {"key": "/payload/x", "limit": 1}]})), true)
                .expect("ok");
        let job = json!({"payload": {}});
        let e = resolve(&t, &Subject { job: &job, tenant: "t" }, None).expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("concurrency[1].key"), "{e:?}");
    }

    #[test]
    fn bad_fields_are_refused_with_their_names() {
        let table = [
            (json!({"concurrency": []}), "concurrency"),
            (
                json!({"concurrency": [{"key": "a", "limit": 1}, {"key": "b", "limit": 1}, {"key": "c", "limit": 1}]}),
                "concurrency",
            ),
            (json!({"concurrency": {"key": "a", "limit": 0}}), "concurrency.limit"),
            (json!({"concurrency": {"key": "", "limit": 1}}), "concurrency.key"),
            (json!({"concurrency": {"key": "a", "limit": 1, "x": 1}}), "concurrency.x"),
            (json!({"rate": {"key": "a", "limit": 1}}), "rate.period"),
            (json!({"rate": {"key": "a", "limit": 1, "period": "2d"}}), "rate.period"),
            (json!({"priority": 10}), "priority"),
            (json!({"priority": "high"}), "priority"),
            (json!({"debounce": {"key": "a", "period": "10s", "max_wait": "1s"}}), "debounce.max_wait"),
            (json!({"throttle": {"key": "a", "limit": 1, "period": "1s", "on_limit": "queue"}}), "throttle.on_limit"),
        ];
        for (v, field) in table {
            let e = parse(&obj(v.clone()), false).expect_err("refused");
            assert_eq!(e.field.as_deref(), Some(field), "{v}: {e:?}");
        }
        let twice = parse(&obj(json!({"concurrency": [{"key": "a", "limit": 1}, {"key": "a", "limit": 2}]})), false)
            .expect("ok");
        let job = json!({});
        assert!(resolve(&twice, &Subject { job: &job, tenant: "t" }, None).is_err());
    }

    #[test]
    fn a_webhook_gets_its_origin_as_the_last_key_unless_two_are_named() {
        let job = json!({});
        let subject = Subject { job: &job, tenant: "t" };
        let origin = origin_key("https://rx.example:8443/hook?x=1").expect("ok");
        assert_eq!(origin, "origin:https://rx.example:8443");
        let none =
            resolve(&FlowSpec::default(), &subject, Some((origin.clone(), 10))).expect("resolves").expect("has flow");
        assert_eq!(none.route_key(), Some(origin.as_str()));
        let one = parse(&obj(json!({"concurrency": {"key": "a", "limit": 1}})), false).expect("ok");
        let f = resolve(&one, &subject, Some((origin.clone(), 10))).expect("resolves").expect("has flow");
        assert_eq!(f.concurrency.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["a", origin.as_str()]);
        let two = parse(&obj(json!({"concurrency": [{"key": "a", "limit": 1}, {"key": "b", "limit": 1}]})), false)
            .expect("ok");
        assert_eq!(
            resolve(&two, &subject, Some((origin, 10))).expect("resolves").expect("has flow").concurrency.len(),
            2
        );
        assert_eq!(resolve(&FlowSpec::default(), &subject, None).expect("ok"), None);
    }

    #[test]
    fn the_job_overrides_its_type_field_by_field() {
        let ty = parse(&obj(json!({"priority": 2, "concurrency": {"key": "tenant", "limit": 3}})), true).expect("ok");
        let own = parse(&obj(json!({"priority": 8})), false).expect("ok");
        let merged = own.over(&ty);
        assert_eq!(merged.priority, Some(8));
        assert_eq!(merged.concurrency, vec![(KeyRef::Tenant, 3)]);
    }

    #[test]
    fn aging_raises_the_rank_one_step_per_period_and_stops_at_the_top() {
        let rank = MAX_PRIORITY - 2;
        assert_eq!(effective_rank(rank, 0, AGING_MS - 1), rank);
        assert_eq!(effective_rank(rank, 0, AGING_MS), rank - 1);
        assert_eq!(effective_rank(rank, 0, 100 * AGING_MS), 0);
    }
}
