//! The event index of workflow waits (#29), kept by the shard an event name hashes to
//! (`edgejobs_core::protocol::event_home`). A wait is a row keyed by its run and step, found
//! by `(tenant, event, ptrs, vals)`: the sorted JSON pointers its conditions read in the
//! event and the values they must equal (`workflow::index_key`). An event send reads the
//! distinct pointer sets registered for its name (`wait_shapes`, a handful per name),
//! computes its own values at each, and looks the waits up by index: no run is scanned.
//!
//! A matched wait keeps its row, marked with the event's data, until the router reports it
//! delivered to its run; a send repeated with the same id answers the undelivered matches
//! again, so a retried send completes a delivery that failed half-way. Runs accept a resume
//! once, so a repeated delivery changes nothing.

use edgejobs_core::protocol::{EventsOp, EventsReply, Signaled, WaitEntry, WaitKey};
use edgejobs_core::stats;
use edgejobs_core::workflow::{self, MAX_LOOKBACK_MS};
use serde_json::Value;

use crate::sql::{Cols, Sql, StoreError, int, text};
use crate::store;
use crate::{Host, Outcome, Shard};

/// Most waits one event send resumes (the rest wait for a later send).
pub const MAX_RESUMES: u64 = 1_000;
/// Most events a look-back reads.
const LOOKBACK_ROWS: u64 = 100;
/// Expired rows removed per call, so cleaning never makes one call long.
const PRUNE_ROWS: u64 = 100;

/// How long after a wait is recorded its run's shard makes sure the wait was indexed (the
/// edge indexes it at once; this catches an edge that died in between), and how long it
/// waits before trying again when the index could not be reached.
pub const INDEX_CHECK_MS: u64 = 30_000;

pub use crate::store::REDELIVER_MS;

impl<S: Sql, H: Host> Shard<S, H> {
    /// The event index's operations, each one transaction.
    pub fn events(&self, op: EventsOp) -> Outcome<EventsReply> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let reply = match op {
                EventsOp::Register { waits } => {
                    prune(db, now)?;
                    let matched = waits.iter().map(|w| register(db, w, now)).collect::<Result<Vec<_>, _>>()?;
                    EventsReply::Registered { matched }
                }
                EventsOp::Signal { tenant, name, data, id } => {
                    prune(db, now)?;
                    let signaled = signal(db, &tenant.to_string(), &name, data, id, now)?;
                    store::record(db, &[stats::event_sent(signaled.duplicate)], now)?;
                    EventsReply::Signaled(signaled)
                }
                EventsOp::Delivered { keys } => {
                    for k in keys {
                        db.rows(
                            "DELETE FROM waits WHERE job = ? AND step = ? AND matched IS NOT NULL",
                            &[text(k.job.to_string()), text(k.step)],
                        )?;
                    }
                    EventsReply::Delivered
                }
            };
            Ok(reply)
        })
    }
}

/// The outbox of wait indexing, on the run's shard: every wait a plan records gets a row in
/// the same transaction; the alarm at [`INDEX_CHECK_MS`] indexes the waits still waiting
/// ([`Shard::waits_to_index`]) and the caller deletes their rows once the index answered
/// ([`Shard::indexed`]). So a wait is indexed even when the edge that recorded it died
/// before it could index it.
pub fn note_new_waits(db: &impl Sql, plan: &edgejobs_core::plan::Plan, now: u64) -> Result<(), StoreError> {
    for job in plan.updates.iter().filter(|j| j.state == edgejobs_core::JobState::Scheduled) {
        for step in job.steps.iter().filter(|s| s.started_at == now && s.wait_entry(job).is_some()) {
            db.rows(
                "INSERT OR IGNORE INTO waits_to_index (job, step, at) VALUES (?, ?, ?)",
                &[text(job.id.to_string()), text(step.name.clone()), int(now.saturating_add(INDEX_CHECK_MS))],
            )?;
        }
    }
    Ok(())
}

impl<S: Sql, H: Host> Shard<S, H> {
    /// The waits of this shard's runs due for an indexing check: those still waiting, to
    /// index (their rows are moved on by [`INDEX_CHECK_MS`], in case the index cannot be
    /// reached); the rows of waits that ended are deleted.
    pub fn waits_to_index(&self) -> Outcome<Vec<WaitEntry>> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let rows = db.rows(
                "SELECT job, step FROM waits_to_index WHERE at <= ? ORDER BY at LIMIT ?",
                &[int(now), int(PRUNE_ROWS)],
            )?;
            let keys = keys_of(rows)?;
            let ids: std::collections::BTreeSet<edgejobs_core::JobId> = keys.iter().map(|k| k.job.clone()).collect();
            let jobs = store::load_many(db, &ids)?;
            let mut due = Vec::new();
            for k in keys {
                let entry = jobs
                    .iter()
                    .find(|j| j.id == k.job && j.state == edgejobs_core::JobState::Scheduled)
                    .and_then(|j| j.steps.iter().find(|s| s.name == k.step).and_then(|s| s.wait_entry(j)));
                let (job, step) = (text(k.job.to_string()), text(k.step.clone()));
                match entry {
                    Some(e) => {
                        db.rows(
                            "UPDATE waits_to_index SET at = ? WHERE job = ? AND step = ?",
                            &[int(now.saturating_add(INDEX_CHECK_MS)), job, step],
                        )?;
                        due.push(e);
                    }
                    None => {
                        db.rows("DELETE FROM waits_to_index WHERE job = ? AND step = ?", &[job, step])?;
                    }
                }
            }
            Ok(due)
        })
    }

    /// The index's matched waits still undelivered [`REDELIVER_MS`] after their event (a
    /// send that failed half-way, with or without an id): each with its tenant and the
    /// event's data, moved on by [`REDELIVER_MS`] until `Delivered` forgets them. The alarm
    /// delivers them.
    pub fn undelivered(&self) -> Outcome<Vec<(edgejobs_core::tenant::Tenant, WaitKey, Value)>> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let rows = db.rows(
                "SELECT job, step, tenant, matched FROM waits WHERE matched_at IS NOT NULL AND matched_at <= ? \
                 ORDER BY matched_at LIMIT ?",
                &[int(now.saturating_sub(REDELIVER_MS)), int(PRUNE_ROWS)],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let mut c = Cols::new(row);
                let (job, step, tenant, data) = (c.text()?, c.text()?, c.text()?, c.text()?);
                db.rows(
                    "UPDATE waits SET matched_at = ? WHERE job = ? AND step = ?",
                    &[int(now), text(job.clone()), text(step.clone())],
                )?;
                let job =
                    job.parse().map_err(|_| StoreError(format!("a stored wait's job id {job:?} does not parse")))?;
                let tenant = edgejobs_core::tenant::Tenant::parse(&tenant)
                    .map_err(|_| StoreError(format!("a stored wait's tenant {tenant:?} does not parse")))?;
                out.push((tenant, WaitKey { job, step }, store::parse(&data)?));
            }
            Ok(out)
        })
    }

    /// These waits were indexed: their outbox rows go.
    pub fn indexed(&self, keys: &[WaitKey]) -> Outcome<()> {
        self.commit(|db| {
            for k in keys {
                db.rows(
                    "DELETE FROM waits_to_index WHERE job = ? AND step = ?",
                    &[text(k.job.to_string()), text(k.step.clone())],
                )?;
            }
            Ok(())
        })
    }
}

/// Forgets events past the longest look-back and waits past their timeout, a page at a time.
fn prune(db: &impl Sql, now: u64) -> Result<(), StoreError> {
    db.rows(
        "DELETE FROM events WHERE n IN (SELECT n FROM events WHERE at < ? ORDER BY n LIMIT ?)",
        &[int(now.saturating_sub(MAX_LOOKBACK_MS)), int(PRUNE_ROWS)],
    )?;
    db.rows(
        "DELETE FROM waits WHERE (job, step) IN (SELECT job, step FROM waits WHERE expires_at < ? LIMIT ?)",
        &[int(now), int(PRUNE_ROWS)],
    )?;
    Ok(())
}

fn register(db: &impl Sql, w: &WaitEntry, now: u64) -> Result<Option<Value>, StoreError> {
    let (job, step) = (text(w.key.job.to_string()), text(w.key.step.clone()));
    let tenant = w.tenant.to_string();
    // Registered before, and an event matched it since: the run takes that event.
    let rows = db.rows("SELECT matched FROM waits WHERE job = ? AND step = ?", &[job.clone(), step.clone()])?;
    if let Some(row) = rows.into_iter().next()
        && let Some(data) = Cols::new(row).opt_text()?
    {
        return Ok(Some(store::parse(&data)?));
    }
    {
        let since = w.since.max(now.saturating_sub(MAX_LOOKBACK_MS));
        let rows = db.rows(
            "SELECT data, eid FROM events WHERE tenant = ? AND name = ? AND at >= ? ORDER BY at DESC, n DESC LIMIT ?",
            &[text(tenant.clone()), text(w.wait.event.clone()), int(since), int(LOOKBACK_ROWS)],
        )?;
        for row in rows {
            let mut c = Cols::new(row);
            let data: Value = store::parse(&c.text()?)?;
            let eid = c.opt_text()?;
            let subject = workflow::event_subject(&w.wait.event, &data, eid.as_deref());
            if workflow::matches_event(&w.wait.matches, &subject) {
                db.rows("DELETE FROM waits WHERE job = ? AND step = ?", &[job, step])?;
                return Ok(Some(data));
            }
        }
    }
    let (ptrs, vals) = workflow::index_key(&w.wait.matches);
    db.rows(
        "INSERT OR IGNORE INTO wait_shapes (tenant, event, ptrs) VALUES (?, ?, ?)",
        &[text(tenant.clone()), text(w.wait.event.clone()), text(ptrs.clone())],
    )?;
    db.rows(
        "INSERT OR REPLACE INTO waits (job, step, tenant, event, ptrs, vals, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        &[job, step, text(tenant), text(w.wait.event.clone()), text(ptrs), text(vals), int(w.expires_at)],
    )?;
    Ok(None)
}

fn keys_of(rows: Vec<crate::sql::Row>) -> Result<Vec<WaitKey>, StoreError> {
    rows.into_iter()
        .map(|row| {
            let mut c = Cols::new(row);
            let job = c.text()?;
            let step = c.text()?;
            let job = job.parse().map_err(|_| StoreError(format!("a stored wait's job id {job:?} does not parse")))?;
            Ok(WaitKey { job, step })
        })
        .collect()
}

fn signal(
    db: &impl Sql,
    tenant: &str,
    name: &str,
    data: Value,
    id: Option<String>,
    now: u64,
) -> Result<Signaled, StoreError> {
    if let Some(eid) = &id {
        let rows = db.rows(
            "SELECT n, data FROM events WHERE tenant = ? AND name = ? AND eid = ?",
            &[text(tenant), text(name), text(eid.clone())],
        )?;
        if let Some(row) = rows.into_iter().next() {
            let mut c = Cols::new(row);
            let n = c.u64()?;
            let data: Value = store::parse(&c.text()?)?;
            let resumes = keys_of(db.rows("SELECT job, step FROM waits WHERE matched_by = ?", &[int(n)])?)?;
            return Ok(Signaled { duplicate: true, resumes, data });
        }
    }
    let body = store::to_json(&data)?;
    let eid = id.clone().map_or(crate::sql::Value::Null, text);
    let inserted = db.rows(
        "INSERT INTO events (tenant, name, eid, at, data) VALUES (?, ?, ?, ?, ?) RETURNING n",
        &[text(tenant), text(name), eid, int(now), text(body.clone())],
    )?;
    let n = match inserted.into_iter().next() {
        Some(r) => Cols::new(r).u64()?,
        None => return Err(StoreError("the event's row number was not returned".into())),
    };
    let subject = workflow::event_subject(name, &data, id.as_deref());
    let shapes = db.rows("SELECT ptrs FROM wait_shapes WHERE tenant = ? AND event = ?", &[text(tenant), text(name)])?;
    let mut resumes = Vec::new();
    for row in shapes {
        let ptrs = Cols::new(row).text()?;
        let Some(vals) = workflow::event_values(&ptrs, &subject) else { continue };
        let left = MAX_RESUMES.saturating_sub(resumes.len() as u64);
        if left == 0 {
            break;
        }
        let found = keys_of(db.rows(
            "SELECT job, step FROM waits WHERE tenant = ? AND event = ? AND ptrs = ? AND vals = ? AND matched IS NULL LIMIT ?",
            &[text(tenant), text(name), text(ptrs.clone()), text(vals.clone()), int(left)],
        )?)?;
        for k in &found {
            db.rows(
                "UPDATE waits SET matched = ?, matched_by = ?, matched_at = ? WHERE job = ? AND step = ?",
                &[text(body.clone()), int(n), int(now), text(k.job.to_string()), text(k.step.clone())],
            )?;
        }
        resumes.extend(found);
    }
    Ok(Signaled { duplicate: false, resumes, data })
}
