//! Flow control's routes (#28): one key's state (`GET /v1/flow`), the busiest keys
//! (`GET /v1/flow/busiest`), and pausing or resuming a key or a type
//! (`POST /v1/admin/flow/pause`, `POST /v1/admin/flow/resume`, admin scope).
//!
//! A job lives on the shard of its flow key (its last concurrency key, else its rate key...;
//! see `jobs::prepare`), and the shard keeps the lists of every key the job names. A key is
//! therefore mostly on its own home shard, but not always: a narrower key listed before a
//! broader one (`[user, tenant]`, or any key of an edge webhook, which gets its origin's key
//! last) has its lists on the broader key's shard. So a key's read and a key's pause go to
//! every shard (a read sums what they hold; a pause holds everywhere, so it catches the
//! key's jobs wherever they are), as a type's pause does. The busiest keys are each shard's
//! top lists, merged.

use edgejobs_api::{BusyKey, BusyKeys, FlowChanged, FlowKey};
use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::flow::{Busiest, BusyList, FlowOp, FlowReply, KeyState, MAX_KEY_BYTES, Target};
use edgejobs_core::metrics::{Family, Kind};
use edgejobs_core::stats::Metric;
use edgejobs_core::tenant::Tenant;
use edgejobs_core::time::format_rfc3339;
use edgejobs_core::types::Types;
use edgejobs_core::{ApiError, ErrorCode};
use futures_util::future::join_all;
use serde_json::Value;
use worker::{Env, Request};

use super::jobs::{Out, query_pairs, respond};
use crate::http;
use crate::platform::now_ms;
use crate::shard;

/// The busiest keys a request answers when it names no `n`.
pub const DEFAULT_BUSIEST: u32 = 10;
/// The most busiest keys one request may ask for (a shard answers at most as many).
pub const MAX_BUSIEST: u32 = 100;

/// A key as a request names it: what a job's key may be (1 to [`MAX_KEY_BYTES`] bytes
/// without the unit separator 0x1f, which scopes keys by tenant).
pub fn parse_key(field: &str, raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > MAX_KEY_BYTES || raw.contains('\u{1f}') {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {MAX_KEY_BYTES} bytes (without control character 0x1f)"),
        ));
    }
    Ok(raw.to_owned())
}

/// `n` of the busiest keys: an integer from 1 to [`MAX_BUSIEST`].
pub fn parse_n(raw: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_BUSIEST).contains(n))
        .ok_or_else(|| ApiError::field("n", format!("must be an integer from 1 to {MAX_BUSIEST}")))
}

/// Every shard (a key's lists may be on any; see the module's notes).
fn every_shard(cfg: &EdgeConfig) -> std::ops::Range<u16> {
    0..cfg.topology.count()
}

/// What the shards hold of one key, as one: counts summed, the highest limit, the earliest
/// next rate start, paused when any shard has it paused.
pub fn merge_key_states(states: impl IntoIterator<Item = KeyState>) -> KeyState {
    states.into_iter().fold(KeyState::default(), |a, s| KeyState {
        running: a.running + s.running,
        limit: a.limit.max(s.limit),
        waiting: a.waiting + s.waiting,
        rate_waiting: a.rate_waiting + s.rate_waiting,
        rate_next_at: match (a.rate_next_at, s.rate_next_at) {
            (0, b) | (b, 0) => b,
            (x, y) => x.min(y),
        },
        parked: a.parked + s.parked,
        paused: a.paused || s.paused,
    })
}

/// A shard's key state as the API shows it at `now`: the rate's next start only while it
/// is ahead.
pub fn key_view(tenant: &Tenant, key: String, s: KeyState, now: u64) -> FlowKey {
    let KeyState { running, limit, waiting, rate_waiting, rate_next_at, parked, paused } = s;
    FlowKey {
        tenant: tenant.to_string(),
        key,
        running,
        limit,
        waiting,
        rate_waiting,
        rate_next_at: (rate_next_at != 0 && rate_next_at > now).then(|| format_rfc3339(rate_next_at)),
        parked,
        paused,
    }
}

/// `GET /v1/flow?key=K[&tenant=T]`: a `jobs` key reads its own tenant's keys (naming another
/// tenant is 403 `forbidden`); an admin names the tenant (default `default`).
pub async fn key(req: &Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let (mut key, mut asked) = (None, None);
    for (k, v) in query_pairs(req)? {
        match k.as_str() {
            "key" => key = Some(parse_key("key", &v)?),
            "tenant" => asked = Some(Tenant::from_field("tenant", &v)?),
            other => return Err(ApiError::field(other, "unknown parameter; known: key, tenant")),
        }
    }
    let key = key.ok_or_else(|| ApiError::field("key", "is required (the flow key)"))?;
    let tenant = who.sees.owner_of_new(asked)?;
    let op = FlowOp::Key { tenant: tenant.clone(), key: key.clone() };
    let calls = every_shard(cfg).map(|s| shard::call(env, s, op.clone()));
    let mut states = Vec::new();
    for r in join_all(calls).await {
        match r? {
            FlowReply::Key(s) => states.push(s),
            _ => return Err(malformed()),
        }
    }
    respond(200, &key_view(&tenant, key, merge_key_states(states), now_ms()))
}

/// What a pause or resume names, read from its body: `{"key", "tenant"?}` or `{"type"}`.
pub fn parse_target(body: &Value, types: &Types) -> Result<Target, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::new(ErrorCode::InvalidJson, "the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "key" | "tenant" | "type")) {
        return Err(ApiError::field(k, "unknown field; known: key, tenant, type"));
    }
    let string = |k: &str| match obj.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::field(k, "must be a string")),
    };
    match (string("key")?, string("tenant")?, string("type")?) {
        (Some(key), tenant, None) => {
            let tenant = tenant.map(|t| Tenant::from_field("tenant", t)).transpose()?.unwrap_or_default();
            Ok(Target::Key { tenant, key: parse_key("key", key)? })
        }
        (None, None, Some(name)) => match types.get(name) {
            Some(_) => Ok(Target::Type { name: name.to_owned() }),
            None => {
                let shown: String = name.chars().take(64).collect();
                Err(ApiError::new(ErrorCode::UnknownType, format!("unknown job type {shown:?}")))
            }
        },
        (None, Some(_), Some(_)) => Err(ApiError::field("tenant", "names a key's tenant; a type is paused for all")),
        (Some(_), _, Some(_)) => Err(ApiError::field("type", "name a key or a type, not both")),
        (None, _, None) => Err(ApiError::field("key", "is required (or type)")),
    }
}

/// `POST /v1/admin/flow/pause` (`paused`) and `.../resume`: a key or a type, on every shard
/// (changed when any shard changed; a shard that fails fails the call, which is idempotent:
/// call again). Nothing new starts while paused; queued jobs stay, parked, and start on
/// resume.
pub async fn pause(req: &mut Request, env: &Env, cfg: &EdgeConfig, paused: bool) -> Out {
    let body = http::read_json(req).await?;
    let target = parse_target(&body, &cfg.types)?;
    let calls = every_shard(cfg).map(|s| shard::call(env, s, FlowOp::Pause { target: target.clone(), paused }));
    let mut changed = false;
    for r in join_all(calls).await {
        match r? {
            FlowReply::Changed(c) => changed |= c,
            _ => return Err(malformed()),
        }
    }
    respond(200, &FlowChanged { changed })
}

/// `GET /v1/flow/busiest[?n=10]`: the `n` lists with the most waiting jobs across the shards.
/// An admin sees every tenant's; a `jobs` key its own tenant's keys only (a paused type is
/// the platform's, not shown to it).
pub async fn busiest(req: &Request, env: &Env, cfg: &EdgeConfig, who: &Principal) -> Out {
    let mut n = DEFAULT_BUSIEST;
    for (k, v) in query_pairs(req)? {
        match k.as_str() {
            "n" => n = parse_n(&v)?,
            other => return Err(ApiError::field(other, "unknown parameter; known: n")),
        }
    }
    let only = who.tenant().cloned();
    let shards = busiest_lists(env, cfg, if only.is_some() { MAX_BUSIEST } else { n }).await?;
    let lists = shards.into_iter().map(|b| b.lists).collect();
    respond(200, &BusyKeys { keys: merge_busiest(lists, n, only.as_ref()) })
}

/// Every shard's `n` busiest lists and its total of waiting jobs (a shard that fails fails
/// the read).
pub async fn busiest_lists(env: &Env, cfg: &EdgeConfig, n: u32) -> Result<Vec<Busiest>, ApiError> {
    let calls = every_shard(cfg).map(|s| shard::call(env, s, FlowOp::Busiest { n }));
    let mut out = Vec::new();
    for r in join_all(calls).await {
        match r? {
            FlowReply::Busiest(b) => out.push(b),
            _ => return Err(malformed()),
        }
    }
    Ok(out)
}

/// The shards' lists merged: `only`'s tenant's (when given), most waiting first, then most
/// running, then by kind, tenant and key (a stable order), at most `n`.
pub fn merge_busiest(lists: Vec<Vec<BusyList>>, n: u32, only: Option<&Tenant>) -> Vec<BusyKey> {
    let mut all: Vec<BusyKey> = lists
        .into_iter()
        .flatten()
        .filter(|l| only.is_none_or(|t| l.kind != "paused_type" && l.tenant == t.as_str()))
        .map(|l| BusyKey {
            kind: l.kind,
            tenant: l.tenant,
            key: l.key,
            running: l.running,
            limit: l.limit,
            waiting: l.waiting,
        })
        .filter(|k| k.waiting > 0 || k.running > 0)
        .collect();
    all.sort_by(|a, b| {
        (b.waiting, b.running)
            .cmp(&(a.waiting, a.running))
            .then_with(|| (&a.kind, &a.tenant, &a.key).cmp(&(&b.kind, &b.tenant, &b.key)))
    });
    all.truncate(n as usize);
    all
}

/// How many of the busiest lists `/metrics` labels (a key is a label value: few, so the
/// series stay bounded whatever the keys).
pub const METRIC_TOP: u32 = 10;

/// Flow control's gauges from every shard's busiest lists (`None`: the shards could not be
/// read; the families are then shown without samples, rather than as zeros):
/// `edgejobs_flow_waiting` for the [`METRIC_TOP`] lists with the most waiting jobs,
/// `edgejobs_flow_running` for the [`METRIC_TOP`] concurrency keys with the most running,
/// and `edgejobs_flow_waiting_jobs`, every shard's waiting jobs summed.
pub fn metric_families(shards: Option<&[Busiest]>) -> Vec<Family> {
    let family = |m: Metric| Family::new(m.name(), m.help(), Kind::Gauge);
    let (mut waiting, mut running, mut total) =
        (family(Metric::FlowWaiting), family(Metric::FlowRunning), family(Metric::FlowWaitingJobs));
    if let Some(shards) = shards {
        let lists: Vec<Vec<BusyList>> = shards.iter().map(|b| b.lists.clone()).collect();
        let merged = merge_busiest(lists.clone(), METRIC_TOP, None);
        for k in merged.iter().filter(|k| k.waiting > 0) {
            waiting.sample(&[("kind", &k.kind), ("tenant", &k.tenant), ("key", &k.key)], k.waiting as f64);
        }
        let mut busy: Vec<&BusyList> =
            lists.iter().flatten().filter(|l| l.kind == "concurrency" && l.running > 0).collect();
        busy.sort_by(|a, b| b.running.cmp(&a.running).then_with(|| (&a.tenant, &a.key).cmp(&(&b.tenant, &b.key))));
        for l in busy.into_iter().take(METRIC_TOP as usize) {
            running.sample(&[("tenant", &l.tenant), ("key", &l.key)], l.running as f64);
        }
        total.sample(&[], shards.iter().map(|b| b.waiting).sum::<u64>() as f64);
    }
    vec![waiting, running, total]
}

fn malformed() -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "malformed shard answer")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list(kind: &str, tenant: &str, key: &str, running: u64, waiting: u64) -> BusyList {
        BusyList { kind: kind.into(), tenant: tenant.into(), key: key.into(), running, limit: 2, waiting }
    }

    #[test]
    fn busiest_merges_shards_most_waiting_first_and_filters_a_tenant() {
        let shards = vec![
            vec![list("concurrency", "acme", "a", 1, 3), list("concurrency", "beta", "b", 2, 0)],
            vec![list("rate", "acme", "c", 0, 7), list("paused_type", "", "noop", 0, 4)],
            vec![list("concurrency", "acme", "idle", 0, 0)],
        ];
        let keys = |v: Vec<BusyKey>| v.into_iter().map(|k| k.key).collect::<Vec<_>>();
        assert_eq!(keys(merge_busiest(shards.clone(), 10, None)), ["c", "noop", "a", "b"]);
        assert_eq!(keys(merge_busiest(shards.clone(), 2, None)), ["c", "noop"]);
        let acme = Tenant::parse("acme").expect("tenant");
        assert_eq!(keys(merge_busiest(shards, 10, Some(&acme))), ["c", "a"]);
    }

    #[test]
    fn metrics_show_the_busiest_lists_only() {
        let mut shard: Vec<BusyList> =
            (0..30).map(|i| list("concurrency", "acme", &format!("k{i:02}"), i, i)).collect();
        shard.push(list("paused_type", "", "noop", 0, 100));
        // The first shard has more lists than it answered with: its total counts them too.
        let fams = metric_families(Some(&[
            Busiest { lists: shard, waiting: 600 },
            Busiest { lists: vec![list("rate", "beta", "r", 0, 1)], waiting: 1 },
        ]));
        let page = edgejobs_core::metrics::render(&fams);
        let series = |name: &str| page.lines().filter(|l| l.starts_with(&format!("{name}{{"))).count();
        assert_eq!((series("edgejobs_flow_waiting"), series("edgejobs_flow_running")), (10, 10), "{page}");
        assert!(page.contains("edgejobs_flow_waiting{kind=\"paused_type\",tenant=\"\",key=\"noop\"} 100"), "{page}");
        assert!(page.contains("edgejobs_flow_running{tenant=\"acme\",key=\"k29\"} 29"), "{page}");
        assert!(!page.contains("key=\"r\""), "a list outside the top 10: {page}");
        // Every shard's waiting jobs, not only those of the lists it answered with.
        assert!(page.contains("edgejobs_flow_waiting_jobs 601"), "{page}");
        let unread = edgejobs_core::metrics::render(&metric_families(None));
        assert!(!unread.contains("edgejobs_flow_waiting_jobs 0"), "{unread}");
    }

    #[test]
    fn a_key_view_shows_the_rate_time_only_ahead() {
        let t = Tenant::default();
        let s = |at| KeyState { rate_next_at: at, ..KeyState::default() };
        assert_eq!(key_view(&t, "k".into(), s(0), 1000).rate_next_at, None);
        assert_eq!(key_view(&t, "k".into(), s(500), 1000).rate_next_at, None);
        assert_eq!(key_view(&t, "k".into(), s(2000), 1000).rate_next_at.as_deref(), Some("1970-01-01T00:00:02.000Z"));
        assert_eq!(key_view(&t, "k".into(), s(2000), 1000).tenant, "default");
    }

    #[test]
    fn a_key_held_on_several_shards_reads_as_one() {
        let s = |running, waiting, limit, next, paused| KeyState {
            running,
            limit,
            waiting,
            rate_waiting: waiting,
            rate_next_at: next,
            parked: 1,
            paused,
        };
        let merged = merge_key_states([
            s(1, 2, 2, 0, false),
            KeyState::default(),
            s(1, 3, 3, 500, true),
            s(0, 0, 1, 300, false),
        ]);
        assert_eq!(
            merged,
            KeyState { running: 2, limit: 3, waiting: 5, rate_waiting: 5, rate_next_at: 300, parked: 3, paused: true }
        );
        assert_eq!(merge_key_states([]), KeyState::default());
    }

    #[test]
    fn inputs_are_checked() {
        assert!(parse_key("key", "user:1").is_ok());
        assert!(parse_key("key", "a\nb").is_ok(), "a job's key may hold a newline");
        for bad in ["", "a\u{1f}b", &"x".repeat(MAX_KEY_BYTES + 1)] {
            assert_eq!(parse_key("key", bad).map_err(|e| e.field), Err(Some("key".into())), "{bad:?}");
        }
        assert_eq!(parse_n("10").ok(), Some(10));
        for bad in ["0", "101", "-1", "x", ""] {
            assert!(parse_n(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_target_is_a_key_or_a_known_type() {
        let cfg = Types::builtins();
        let field = |b: Value| parse_target(&b, &cfg).map_err(|e| (e.code, e.field));
        assert_eq!(
            parse_target(&json!({"key": "k", "tenant": "acme"}), &cfg).ok(),
            Some(Target::Key { tenant: Tenant::parse("acme").expect("t"), key: "k".into() })
        );
        assert_eq!(
            parse_target(&json!({"key": "k"}), &cfg).ok(),
            Some(Target::Key { tenant: Tenant::default(), key: "k".into() })
        );
        assert_eq!(parse_target(&json!({"type": "noop"}), &cfg).ok(), Some(Target::Type { name: "noop".into() }));
        assert_eq!(field(json!({"type": "nope"})).err().map(|e| e.0), Some(ErrorCode::UnknownType));
        assert_eq!(field(json!({"key": "k", "x": 1})).err(), Some((ErrorCode::InvalidField, Some("x".into()))));
        assert_eq!(field(json!({})).err(), Some((ErrorCode::InvalidField, Some("key".into()))));
        assert_eq!(field(json!({"key": 5})).err(), Some((ErrorCode::InvalidField, Some("key".into()))));
        assert_eq!(
            field(json!({"key": "k", "type": "noop"})).err(),
            Some((ErrorCode::InvalidField, Some("type".into())))
        );
        assert_eq!(
            field(json!({"key": "k", "tenant": "Bad"})).err(),
            Some((ErrorCode::InvalidField, Some("tenant".into())))
        );
        assert_eq!(field(json!([1])).err().map(|e| e.0), Some(ErrorCode::InvalidJson));
    }
}
