//! Flow control in the simulation (#28): the flow-controlled share of the workload (its
//! keys, limits, rates, priorities, debounce and throttle windows, pauses) and what the
//! simulation knows of it independently of the shards, with the invariants it is held to.
//!
//! The key pools are small so keys contend: four broad concurrency keys (limits 1–3), six
//! narrow ones (limit 1) each always listed before the same broad key (the shape the design
//! keeps exact: a narrow key lives on its broad key's shard), three rate keys, two debounce
//! and two throttle keys. Every key's limit and period are fixed by its name, so a key's
//! limit is one number.

use std::collections::{BTreeMap, BTreeSet};

use edgejobs_core::flow::Target;
use edgejobs_core::protocol::FlowOutcome;
use edgejobs_core::tenant::Tenant;
use serde_json::{Value, json};

use crate::oracle::{FlowJob, Oracle};
use crate::rng::Rng;

/// Broad concurrency keys and their limits (each job's last key: its flow key).
pub const BROAD: &[(&str, u32)] = &[("c0", 1), ("c1", 2), ("c2", 3), ("c3", 1)];
/// Narrow keys `n0..`: limit 1, listed first, always with broad key `c{i % 4}`.
pub const NARROW: u64 = 6;
/// Rate keys: limit per period (ms). A concurrency job's rate is named by its broad key
/// (`c{i}`: 2 per 3 s), so it lives on the same shard.
pub const RATES: &[(&str, u32, u64)] = &[("r0", 1, 2_000), ("r1", 2, 3_000), ("r2", 3, 1_000)];
/// Debounce keys: period and max wait (ms).
pub const DEBOUNCES: &[(&str, u64, u64)] = &[("d0", 2_000, 10_000), ("d1", 5_000, 12_000)];
/// Throttle keys: limit per period (ms), what happens over it.
pub const THROTTLES: &[(&str, u32, u64, &str)] = &[("t0", 1, 10_000, "drop"), ("t1", 2, 10_000, "reject")];
/// The types the workload uses (a type pause names one).
pub const TYPES: &[&str] = &["noop", "sleep"];

/// The window an enqueue is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    /// Debounce: scoped key, period, max wait, the payload sent.
    Debounce(String, u64, u64, Value),
    /// Throttle: scoped key, limit, period.
    Throttle(String, u32, u64),
}

/// Gives `body` flow fields (it has none): concurrency (one or two keys, sometimes a rate
/// on its broad key), a rate alone, a debounce or a throttle; a priority half the time.
/// Answers the window to check the answer against, if any. `serial` makes payloads unique.
pub fn spec(rng: &mut Rng, body: &mut Value, tenant: &str, serial: u64) -> Option<Window> {
    let scoped = |k: &str| Tenant::parse(tenant).map(|t| t.scope_key(k)).unwrap_or_else(|e| panic!("{e:?}"));
    if rng.chance(0.5) {
        body["priority"] = json!(rng.below(10));
    }
    let kind = rng.below(100);
    if kind < 60 {
        let b = rng.below(BROAD.len() as u64) as usize;
        let (broad, limit) = BROAD[b];
        let mut keys = vec![json!({ "key": broad, "limit": limit })];
        if rng.chance(0.4) {
            // A narrow key of this broad key: n{b}, or n{b + 4} where there is one.
            let n = if (b as u64 + 4) < NARROW && rng.chance(0.5) { b + 4 } else { b };
            keys.insert(0, json!({ "key": format!("n{n}"), "limit": 1 }));
        }
        body["concurrency"] = json!(keys);
        if rng.chance(0.2) {
            body["rate"] = json!({ "key": broad, "limit": 2, "period": 3_000 });
        }
        None
    } else if kind < 75 {
        let (key, limit, period) = RATES[rng.below(RATES.len() as u64) as usize];
        body["rate"] = json!({ "key": key, "limit": limit, "period": period });
        None
    } else if kind < 88 {
        let (key, period, max_wait) = DEBOUNCES[rng.below(DEBOUNCES.len() as u64) as usize];
        body["debounce"] = json!({ "key": key, "period": period, "max_wait": max_wait });
        body["payload"] = json!({ "n": serial });
        // A debounced job runs when its key is quiet: it names no delay of its own.
        if let Some(o) = body.as_object_mut() {
            o.remove("delay");
        }
        Some(Window::Debounce(scoped(key), period, max_wait, body["payload"].clone()))
    } else {
        let (key, limit, period, on_limit) = THROTTLES[rng.below(THROTTLES.len() as u64) as usize];
        body["throttle"] = json!({ "key": key, "limit": limit, "period": period, "on_limit": on_limit });
        Some(Window::Throttle(scoped(key), limit, period))
    }
}

/// A pause target: a flow key of a job (a broad or rate key, which is its jobs' flow key:
/// the edge pauses a key on its home shard) of either tenant, or a type.
pub fn target(rng: &mut Rng, tenants: &[&str]) -> Target {
    if rng.chance(0.1) {
        return Target::Type { name: TYPES[rng.below(TYPES.len() as u64) as usize].to_owned() };
    }
    let tenant = tenants[rng.below(tenants.len() as u64) as usize];
    let keys: Vec<&str> = BROAD.iter().map(|b| b.0).chain(RATES.iter().map(|r| r.0)).collect();
    let key = keys[rng.below(keys.len() as u64) as usize];
    Target::Key { tenant: Tenant::parse(tenant).unwrap_or_else(|e| panic!("{e:?}")), key: key.to_owned() }
}

impl FlowJob {
    pub fn of(job: &edgejobs_core::Job) -> Option<FlowJob> {
        let f = job.flow.as_ref()?;
        let lists = f
            .concurrency
            .iter()
            .map(|c| (edgejobs_shard::flow::concurrency_list(&job.tenant.scope_key(&c.key)), c.limit))
            .collect();
        let mut stops = vec![format!("t:{}", job.job_type)];
        stops.extend(f.route_key().map(|k| format!("k:{}", job.tenant.scope_key(k))));
        Some(FlowJob { lists, stops })
    }
}

impl Oracle {
    /// The shard sent attempt `attempt` of `id`: a new admission of a flow job must not
    /// happen while its type or its flow key is paused.
    pub fn flow_sent(&mut self, id: &str, attempt: u32) {
        let Some(job) = self.flow.jobs.get(id) else { return };
        let stop = job.stops.iter().find(|s| self.flow.paused.contains_key(*s)).cloned();
        let before = self.flow.sent.get(id).copied().unwrap_or(0);
        if attempt > before {
            self.check("paused-starts-nothing");
            if let Some(p) = stop {
                let msg = format!("{id} was sent (attempt {attempt}) while {} is paused", p.replace('\u{1f}', "/"));
                self.fail("paused-starts-nothing", msg);
            }
            self.flow.sent.insert(id.to_owned(), attempt);
            self.flow.live.insert(id.to_owned());
        }
    }

    /// "Limit never exceeded", by the simulation's own view: a flow job holds its keys'
    /// slots while it runs (`active`, as last observed) or once the shard sent its next
    /// attempt until it is observed in another state than `queued` ([`FlowSeen::live`]);
    /// per key, over every shard's jobs (a key's jobs, schedules' runs too, must all be
    /// counted by one shard), at most its limit hold one.
    pub fn flow_limits(&mut self) {
        self.check("flow-limit-never-exceeded");
        let mut held: BTreeMap<&str, (u32, u32, Vec<&str>)> = BTreeMap::new();
        for (id, seen) in self.rows.iter().flatten() {
            let holds = seen.state == "active" || (seen.state == "queued" && self.flow.live.contains(id));
            if !holds {
                continue;
            }
            let Some(job) = self.flow.jobs.get(id) else { continue };
            for (l, limit) in &job.lists {
                let e = held.entry(l.as_str()).or_insert((0, *limit, Vec::new()));
                e.0 += 1;
                e.2.push(id.as_str());
            }
        }
        if let Some((l, (n, limit, ids))) = held.iter().find(|(_, (n, limit, _))| n > limit) {
            let msg = format!("{n} jobs hold {} (limit {limit}): {ids:?}", l.replace('\u{1f}', "/"));
            self.fail("flow-limit-never-exceeded", msg);
        }
    }

    /// `edgejobs_shard::flow::check`: the shard's counts agree with its jobs.
    pub fn flow_counts(&mut self, shard: usize, problems: Result<Vec<String>, String>) {
        self.check("flow-counts-match");
        match problems {
            Ok(p) if p.is_empty() => {}
            Ok(p) => self.fail("flow-counts-match", format!("shard {shard}: {}", p.join("; ").replace('\u{1f}', "/"))),
            Err(e) => self.fail("flow-counts-match", format!("shard {shard}: the check failed: {e}")),
        }
    }

    /// "Every waiting job eventually starts", as a rule of every step: no job waits where
    /// it could start (a concurrency key with room and jobs waiting, not paused; a rate
    /// with jobs waiting and no wake-up armed; jobs parked for a pause that is over).
    /// `stuck`: such lists found on `shard`.
    pub fn flow_idle(&mut self, shard: usize, stuck: Vec<String>) {
        self.check("waiting-jobs-start");
        if let Some(l) = stuck.first() {
            let msg = format!("shard {shard}: jobs wait in {} though it could start one", l.replace('\u{1f}', "/"));
            self.fail("waiting-jobs-start", msg);
        }
    }

    /// After the drain (pauses resumed, clock past every rate and window): nothing waits.
    pub fn flow_drained(&mut self, waiting: Vec<(String, String)>) {
        self.check("waiting-jobs-start");
        if let Some((id, why)) = waiting.first() {
            let msg = format!("{} jobs still wait after the drain, e.g. {id} ({why})", waiting.len());
            self.fail("waiting-jobs-start", msg.replace('\u{1f}', "/"));
        }
    }

    /// A debounced enqueue's answer. `open`: the key's window job before this enqueue, if
    /// it is still scheduled and never ran (its quiet window is open). Within an open
    /// window every enqueue must answer that job (`debounced`), with this payload (the
    /// last wins) and its run at the quiet time, at most `max_wait` after the window
    /// opened; with none open, a new job is created for the quiet time.
    #[allow(clippy::too_many_arguments)]
    pub fn debounced(
        &mut self,
        key: &str,
        open: Option<&str>,
        answer: (&str, bool, Option<FlowOutcome>),
        doc: &Value,
        payload: &Value,
        (now, period, max_wait): (u64, u64, u64),
    ) {
        self.check("debounce-one-run-per-quiet-window");
        let (id, created, outcome) = answer;
        let shown = key.replace('\u{1f}', "/");
        let first = match open {
            Some(j) => {
                if id != j || created || outcome != Some(FlowOutcome::Debounced) {
                    let msg = format!(
                        "key {shown}: an enqueue within {j}'s quiet window was answered {id} (created {created}, {outcome:?})"
                    );
                    return self.fail("debounce-one-run-per-quiet-window", msg);
                }
                self.flow.collapsed += 1;
                self.flow.debounce.get(key).map_or(now, |(_, at)| *at)
            }
            None => {
                if !created || outcome.is_some() {
                    let msg =
                        format!("key {shown}: no window was open, yet the enqueue was answered {id} ({outcome:?})");
                    return self.fail("debounce-one-run-per-quiet-window", msg);
                }
                self.flow.debounce.insert(key.to_owned(), (id.to_owned(), now));
                now
            }
        };
        let due = (now + period).min(first + max_wait);
        let run_at = doc
            .get("run_at")
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(edgejobs_core::time::parse_rfc3339)));
        let state = doc.get("state").and_then(Value::as_str).unwrap_or("");
        if doc.get("payload") != Some(payload) || run_at != Some(due) || state != "scheduled" {
            let msg = format!(
                "key {shown}: {id} is {state}, runs at {run_at:?} with {:?}; the window says at {due} with {payload}",
                doc.get("payload")
            );
            self.fail("debounce-one-run-per-quiet-window", msg);
        }
    }

    /// After a create with debounced enqueues: the key's window job holds the call's last
    /// payload.
    pub fn debounce_payload(&mut self, key: &str, id: &str, stored: Option<&Value>, last: &Value) {
        self.check("debounce-one-run-per-quiet-window");
        if stored != Some(last) {
            let shown = key.replace('\u{1f}', "/");
            let msg = format!("key {shown}: {id} holds the payload {stored:?}, not the last one sent, {last}");
            self.fail("debounce-one-run-per-quiet-window", msg);
        }
    }

    /// A throttled enqueue's answer, against the window as the simulation keeps it (fixed
    /// windows opened by the first create after the last one ended): a create only while
    /// fewer than `limit` were created in the window; over it, `throttled` with the
    /// window's last job (`drop`) or `rejected`.
    pub fn throttled(
        &mut self,
        key: &str,
        answer: (&str, bool, Option<FlowOutcome>),
        (now, limit, period): (u64, u32, u64),
    ) {
        self.check("throttle-at-most-limit-per-window");
        let (id, created, outcome) = answer;
        let shown = key.replace('\u{1f}', "/");
        let (start, n, last) = match self.flow.throttle.get(key) {
            Some((start, n, last)) if now < start + period => (*start, *n, Some(last.clone())),
            _ => (now, 0, None),
        };
        if created {
            if n >= limit {
                let msg = format!("key {shown}: {id} is the {}th job created in a window of limit {limit}", n + 1);
                return self.fail("throttle-at-most-limit-per-window", msg);
            }
            self.flow.throttle.insert(key.to_owned(), (start, n + 1, id.to_owned()));
            return;
        }
        self.flow.collapsed += 1;
        let fine = n >= limit
            && match outcome {
                Some(FlowOutcome::Throttled) => last.as_deref() == Some(id),
                Some(FlowOutcome::Rejected { retry_after_ms }) => retry_after_ms == start + period - now,
                _ => false,
            };
        if !fine {
            let msg = format!("key {shown}: answered {id} ({outcome:?}) with {n} of {limit} created in the window");
            self.fail("throttle-at-most-limit-per-window", msg);
        }
    }
}

/// The lists of a shard where jobs wait though one could start (see [`Oracle::flow_idle`]),
/// and how many lists hold waiting jobs.
pub fn idle_lists(db: &impl edgejobs_shard::sql::Sql) -> (Vec<String>, u64) {
    let paused: BTreeSet<String> = db
        .rows("SELECT what FROM flow_paused", &[])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| edgejobs_shard::sql::Cols::new(r).text().ok())
        .collect();
    let wakes: BTreeSet<String> = db
        .rows("SELECT list FROM flow_wakes", &[])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| edgejobs_shard::sql::Cols::new(r).text().ok())
        .collect();
    let q = "SELECT list, running, lim FROM flow_lists WHERE waiting > 0";
    let mut out = Vec::new();
    let rows = db.rows(q, &[]).unwrap_or_default();
    let waiting = rows.len() as u64;
    for r in rows {
        let mut c = edgejobs_shard::sql::Cols::new(r);
        let (Ok(list), Ok(running), Ok(lim)) = (c.text(), c.u64(), c.u64()) else { continue };
        let (kind, key) = list.split_at(2.min(list.len()));
        let key_paused = paused.contains(&format!("k:{key}"));
        let stuck = match kind {
            "c:" => !key_paused && (running < lim || lim == 0),
            "r:" => !key_paused && !wakes.contains(&list),
            "p:" => !key_paused,
            "t:" => !paused.contains(&list),
            _ => false,
        };
        if stuck {
            out.push(list);
        }
    }
    (out, waiting)
}

/// Jobs of a shard that still wait (`waiting_for`), and rows of its waiting lists.
pub fn still_waiting(db: &impl edgejobs_shard::sql::Sql) -> Vec<(String, String)> {
    let q =
        "SELECT id, json_extract(doc, '$.waiting_for') FROM jobs WHERE json_extract(doc, '$.waiting_for') IS NOT NULL
             UNION ALL SELECT job_id, 'a row of list ' || list FROM flow_wait";
    db.rows(q, &[])
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            let mut c = edgejobs_shard::sql::Cols::new(r);
            Some((c.text().ok()?, c.text().ok()?))
        })
        .collect()
}
