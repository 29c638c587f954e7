//! The `JobShard` Durable Object: one SQLite database per shard holding its jobs, the
//! idempotency keys and the alarm that wakes scheduled jobs. Every state change is a
//! synchronous load → [`machine::apply`] → write inside one request, so the input gate makes
//! it atomic; side effects (queue sends, alarms) follow the commit.
//!
//! The router reaches a shard through [`call`], a POST to `https://shard/<op>` with a JSON body.

use edgejobs_core::machine::{self, Effect, Event};
use edgejobs_core::metrics::Histogram;
use edgejobs_core::stats::{self, Delta, ShardStats};
use edgejobs_core::wire::{Cursor, ListQuery, QueueMessage};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId, JobState};
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use worker::{
    DurableObject, Env, Method, Request, RequestInit, Response, Result, SqlStorage, SqlStorageValue, State,
    durable_object,
};

use crate::config::{QUEUE_BINDING, SHARD_BINDING};
use crate::http::{self, log};
use crate::platform::{now_ms, random_unit};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state_run_at ON jobs(state, run_at);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at, id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS histograms (
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS gauges (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
";

// `Env` and `State` are JS handles without Debug.
#[allow(missing_debug_implementations)]
#[durable_object]
pub struct JobShard {
    state: State,
    env: Env,
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct DocRow {
    doc: String,
}

#[derive(Deserialize)]
struct CreateReq {
    job: Job,
    idempotency_window_ms: u64,
}

#[derive(Deserialize)]
struct IdReq {
    id: JobId,
}

#[derive(Deserialize)]
struct EventReq {
    id: JobId,
    event: Event,
}

impl DurableObject for JobShard {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        if let Err(e) = sql.exec(SCHEMA, None) {
            log("error", "shard schema setup failed", json!({ "error": e.to_string() }));
        }
        JobShard { state, env, sql }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let op = req.path().trim_start_matches('/').to_owned();
        let body: Value = req.json().await.unwrap_or(Value::Null);
        let out = match op.as_str() {
            "create" => self.create(body).await,
            "get" => self.get(body),
            "event" => self.event(body).await,
            "list" => self.list(body),
            "replay_dead" => self.replay_dead(body).await,
            "handoff" => self.handoff(body),
            "stats" => self.stats(),
            "export" => self.export(),
            "import" => self.import(body).await,
            "retention_tops" => self.retention_tops(body),
            "retention_plan" => self.retention_plan(body),
            "retention_delete" => self.retention_delete(body),
            "sweep" => self.sweep(body).await,
            "count" => self.count(body),
            "gauge" => self.gauge(body),
            _ => Err(ApiError::new(ErrorCode::NotFound, format!("unknown shard operation {op:?}"))),
        };
        match out {
            Ok((status, v)) => http::json(status, &v),
            Err(e) => http::error(&e),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let now = now_ms();
        let due = self.load_where("state = 'scheduled' AND run_at <= ?", vec![int(now)]).unwrap_or_default();
        for job in due {
            if let Ok(t) = self.transition(&job, Event::Wake, now) {
                self.carry_out(&t.job, t.effect).await;
            }
        }
        self.rearm().await;
        Response::ok("ok")
    }
}

fn int(v: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(v as i64)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidJson, msg)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    log("error", "shard storage error", json!({ "error": e.to_string() }));
    ApiError::new(ErrorCode::Internal, "storage error in the job shard")
}

type OpResult = std::result::Result<(u16, Value), ApiError>;

impl JobShard {
    fn load(&self, id: &JobId) -> std::result::Result<Option<Job>, ApiError> {
        let rows: Vec<DocRow> = self
            .sql
            .exec("SELECT doc FROM jobs WHERE id = ?", vec![id.as_str().to_owned().into()])
            .and_then(|c| c.to_array())
            .map_err(internal)?;
        rows.first().map(|r| serde_json::from_str(&r.doc).map_err(internal)).transpose()
    }

    fn load_where(&self, cond: &str, binds: Vec<SqlStorageValue>) -> std::result::Result<Vec<Job>, ApiError> {
        let rows: Vec<DocRow> = self
            .sql
            .exec(&format!("SELECT doc FROM jobs WHERE {cond}"), binds)
            .and_then(|c| c.to_array())
            .map_err(internal)?;
        rows.iter().map(|r| serde_json::from_str(&r.doc).map_err(internal)).collect()
    }

    fn save(&self, job: &Job) -> std::result::Result<(), ApiError> {
        let doc = serde_json::to_string(job).map_err(internal)?;
        self.sql
            .exec(
                "INSERT INTO jobs (id, type, state, run_at, created_at, updated_at, tags, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, run_at = excluded.run_at,
                 updated_at = excluded.updated_at, doc = excluded.doc",
                vec![
                    job.id.as_str().to_owned().into(),
                    job.job_type.clone().into(),
                    job.state.as_str().to_owned().into(),
                    int(job.run_at),
                    int(job.created_at),
                    int(job.updated_at),
                    tags_column(&job.tags).into(),
                    doc.into(),
                ],
            )
            .map_err(internal)?;
        Ok(())
    }

    /// Applies an event and commits the result, synchronously (no await between load and
    /// write, so concurrent requests to this shard cannot interleave).
    fn transition(&self, job: &Job, event: Event, now: u64) -> std::result::Result<machine::Transition, ApiError> {
        let t = machine::apply(job, event, now, random_unit())?;
        self.save(&t.job)?;
        self.record(&stats::transition(job, &t.job, now))?;
        Ok(t)
    }

    /// Adds metric deltas, in the same synchronous stretch as the state change they count.
    fn record(&self, deltas: &[Delta]) -> std::result::Result<(), ApiError> {
        for d in deltas {
            match d {
                Delta::Count { name, labels, n } => {
                    let labels = serde_json::to_string(labels).map_err(internal)?;
                    self.sql
                        .exec(
                            "INSERT INTO counters (name, labels, value) VALUES (?, ?, ?)
                             ON CONFLICT(name, labels) DO UPDATE SET value = value + excluded.value",
                            vec![name.clone().into(), labels.into(), SqlStorageValue::Float(*n)],
                        )
                        .map_err(internal)?;
                }
                Delta::Observe { name, labels, secs } => {
                    let labels = serde_json::to_string(labels).map_err(internal)?;
                    #[derive(Deserialize)]
                    struct Doc {
                        doc: String,
                    }
                    let rows: Vec<Doc> = self
                        .sql
                        .exec(
                            "SELECT doc FROM histograms WHERE name = ? AND labels = ?",
                            vec![name.clone().into(), labels.clone().into()],
                        )
                        .and_then(|c| c.to_array())
                        .map_err(internal)?;
                    let mut h: Histogram =
                        rows.first().and_then(|r| serde_json::from_str(&r.doc).ok()).unwrap_or_default();
                    h.observe(*secs);
                    let doc = serde_json::to_string(&h).map_err(internal)?;
                    self.sql
                        .exec(
                            "INSERT OR REPLACE INTO histograms (name, labels, doc) VALUES (?, ?, ?)",
                            vec![name.clone().into(), labels.into(), doc.into()],
                        )
                        .map_err(internal)?;
                }
            }
        }
        Ok(())
    }

    /// This shard's numbers for a scrape.
    fn stats(&self) -> OpResult {
        #[derive(Deserialize)]
        struct C {
            name: String,
            labels: String,
            value: f64,
        }
        #[derive(Deserialize)]
        struct H {
            name: String,
            labels: String,
            doc: String,
        }
        #[derive(Deserialize)]
        struct J {
            state: String,
            #[serde(rename = "type")]
            job_type: String,
            n: f64,
        }
        #[derive(Deserialize)]
        struct O {
            oldest: Option<f64>,
        }
        #[derive(Deserialize)]
        struct G {
            name: String,
            value: f64,
        }
        let q = |sql: &str| self.sql.exec(sql, None).map_err(internal);
        let counters: Vec<C> = q("SELECT name, labels, value FROM counters")?.to_array().map_err(internal)?;
        let hists: Vec<H> = q("SELECT name, labels, doc FROM histograms")?.to_array().map_err(internal)?;
        let jobs: Vec<J> =
            q("SELECT state, type, COUNT(*) AS n FROM jobs GROUP BY state, type")?.to_array().map_err(internal)?;
        let oldest: Vec<O> =
            q("SELECT MIN(created_at) AS oldest FROM jobs WHERE state = 'queued'")?.to_array().map_err(internal)?;
        let gauges: Vec<G> = q("SELECT name, value FROM gauges")?.to_array().map_err(internal)?;
        let labels = |s: &str| serde_json::from_str::<Vec<(String, String)>>(s).unwrap_or_default();
        let out = ShardStats {
            counters: counters.into_iter().map(|c| (c.name, labels(&c.labels), c.value)).collect(),
            histograms: hists
                .into_iter()
                .filter_map(|h| serde_json::from_str(&h.doc).ok().map(|hist| (h.name, labels(&h.labels), hist)))
                .collect(),
            jobs: jobs.into_iter().map(|j| (j.state, j.job_type, j.n as u64)).collect(),
            oldest_queued_ms: oldest.first().and_then(|o| o.oldest).map(|v| v as u64),
            gauges: gauges.into_iter().map(|g| (g.name, g.value)).collect(),
        };
        Ok((200, serde_json::to_value(out).map_err(internal)?))
    }

    /// Every job of this shard as NDJSON, read in one synchronous stretch: a consistent
    /// snapshot of the shard.
    fn export(&self) -> OpResult {
        let rows: Vec<DocRow> =
            self.sql.exec("SELECT doc FROM jobs ORDER BY id", None).and_then(|c| c.to_array()).map_err(internal)?;
        let mut ndjson = String::with_capacity(rows.iter().map(|r| r.doc.len() + 1).sum());
        for r in &rows {
            ndjson.push_str(&r.doc);
            ndjson.push('\n');
        }
        Ok((200, json!({ "ndjson": ndjson, "rows": rows.len() })))
    }

    /// Replaces every job of this shard with the backup's (a restore), rebuilds the
    /// idempotency keys, then re-sends queued jobs and re-arms the alarm.
    async fn import(&self, body: Value) -> OpResult {
        #[derive(Deserialize)]
        struct Req {
            shard: u16,
            ndjson: String,
            idempotency_window_ms: u64,
        }
        let req: Req = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let jobs =
            edgejobs_core::backup::from_ndjson(&req.ndjson).map_err(|e| ApiError::new(ErrorCode::InvalidField, e))?;
        if let Some(j) = jobs.iter().find(|j| j.id.shard() != req.shard) {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("job {} does not belong to shard {}", j.id, req.shard),
            ));
        }
        self.sql.exec("DELETE FROM jobs", None).map_err(internal)?;
        self.sql.exec("DELETE FROM idempotency", None).map_err(internal)?;
        for j in &jobs {
            self.save(j)?;
            if let Some(key) = &j.idempotency_key {
                self.sql
                    .exec(
                        "INSERT OR REPLACE INTO idempotency (key, job_id, expires_at) VALUES (?, ?, ?)",
                        vec![
                            key.clone().into(),
                            j.id.as_str().to_owned().into(),
                            int(j.created_at + req.idempotency_window_ms),
                        ],
                    )
                    .map_err(internal)?;
            }
        }
        for j in jobs.iter().filter(|j| j.state == JobState::Queued) {
            self.carry_out(j, Effect::Enqueue).await;
        }
        self.rearm().await;
        Ok((200, json!({ "rows": jobs.len() })))
    }

    /// Per type, the `(updated_at, id)` of this shard's newest `keep` finished jobs of each
    /// class (`done`: completed and cancelled; `dead`). The router merges every shard's to
    /// find the global cut-off of "the newest N per type".
    fn retention_tops(&self, body: Value) -> OpResult {
        #[derive(Deserialize)]
        struct Req {
            done_keep: u32,
            dead_keep: u32,
        }
        #[derive(Deserialize)]
        struct Row {
            #[serde(rename = "type")]
            job_type: String,
            updated_at: f64,
            id: String,
        }
        let r: Req = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let mut out = serde_json::Map::new();
        for (class, states, keep) in
            [("done", "'completed', 'cancelled'", r.done_keep), ("dead", "'dead'", r.dead_keep)]
        {
            let sql = format!(
                "SELECT type, updated_at, id FROM (
                   SELECT type, updated_at, id, ROW_NUMBER() OVER (PARTITION BY type ORDER BY updated_at DESC, id DESC) AS pos
                   FROM jobs WHERE state IN ({states}))
                 WHERE pos <= ?"
            );
            let rows: Vec<Row> = self
                .sql
                .exec(&sql, vec![SqlStorageValue::Integer(keep as i64)])
                .and_then(|c| c.to_array())
                .map_err(internal)?;
            let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for row in rows {
                by_type.entry(row.job_type).or_default().push(json!([row.updated_at as u64, row.id]));
            }
            out.insert(class.to_owned(), json!(by_type));
        }
        Ok((200, Value::Object(out)))
    }

    /// The finished jobs the retention policy removes: older than the class's age, or older
    /// than its type's cut-off `[updated_at, id]` (the newest N across all shards are kept).
    fn retention_plan(&self, body: Value) -> OpResult {
        #[derive(Deserialize)]
        struct Req {
            now: u64,
            done_age_ms: u64,
            dead_age_ms: u64,
            #[serde(default)]
            done_cutoffs: BTreeMap<String, (u64, String)>,
            #[serde(default)]
            dead_cutoffs: BTreeMap<String, (u64, String)>,
        }
        let r: Req = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let mut doomed: Vec<String> = Vec::new();
        for (states, age, cutoffs) in
            [("'completed', 'cancelled'", r.done_age_ms, &r.done_cutoffs), ("'dead'", r.dead_age_ms, &r.dead_cutoffs)]
        {
            let old: Vec<DocRow> = self
                .sql
                .exec(
                    &format!("SELECT doc FROM jobs WHERE state IN ({states}) AND updated_at < ?"),
                    vec![int(r.now.saturating_sub(age))],
                )
                .and_then(|c| c.to_array())
                .map_err(internal)?;
            doomed.extend(old.into_iter().map(|d| d.doc));
            for (job_type, (at, id)) in cutoffs {
                let beyond: Vec<DocRow> = self
                    .sql
                    .exec(
                        &format!(
                            "SELECT doc FROM jobs WHERE state IN ({states}) AND type = ? AND updated_at >= ?
                             AND (updated_at < ? OR (updated_at = ? AND id < ?))"
                        ),
                        vec![
                            job_type.clone().into(),
                            int(r.now.saturating_sub(age)),
                            int(*at),
                            int(*at),
                            id.clone().into(),
                        ],
                    )
                    .and_then(|c| c.to_array())
                    .map_err(internal)?;
                doomed.extend(beyond.into_iter().map(|d| d.doc));
            }
        }
        let mut ndjson = String::new();
        for d in &doomed {
            ndjson.push_str(d);
            ndjson.push('\n');
        }
        Ok((200, json!({ "ndjson": ndjson, "rows": doomed.len() })))
    }

    /// Deletes the planned jobs that are still finished (a replay in between keeps a job).
    fn retention_delete(&self, body: Value) -> OpResult {
        #[derive(Deserialize)]
        struct Req {
            ids: Vec<String>,
        }
        let r: Req = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let mut deleted = 0;
        for id in r.ids {
            let c = self
                .sql
                .exec("DELETE FROM jobs WHERE id = ? AND state IN ('completed', 'cancelled', 'dead')", vec![id.into()])
                .map_err(internal)?;
            deleted += c.rows_written();
        }
        Ok((200, json!({ "deleted": deleted })))
    }

    /// The sweep: re-sends jobs queued for longer than `queued_after_ms` (a lost queue
    /// message), fails edge-lane attempts running past their timeout (retried by policy),
    /// and re-arms the alarm. Idempotent: running it twice changes nothing more.
    async fn sweep(&self, body: Value) -> OpResult {
        #[derive(Deserialize)]
        struct Req {
            queued_after_ms: u64,
            active_grace_ms: u64,
            native_lease_ms: u64,
        }
        let r: Req = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let now = now_ms();
        let stale =
            self.load_where("state = 'queued' AND updated_at < ?", vec![int(now.saturating_sub(r.queued_after_ms))])?;
        let mut resent = 0u64;
        for mut job in stale {
            job.updated_at = now; // the next sweep waits a full threshold again
            self.save(&job)?;
            self.carry_out(&job, Effect::Enqueue).await;
            resent += 1;
        }
        let running = self.load_where("state = 'active'", vec![])?;
        let mut timed_out = 0u64;
        for job in &running {
            // Edge lane: a grace beyond the timeout leaves room for the consumer's own report.
            // Native lane: consumers take over silent attempts themselves after their lease;
            // this catches the case where no consumer is left to do it.
            let expired = match job.lane {
                edgejobs_core::Lane::Edge => {
                    job.started_at.is_some_and(|s| s + job.timeout_ms + r.active_grace_ms < now)
                }
                edgejobs_core::Lane::Native => {
                    job.heartbeat_at.or(job.started_at).is_some_and(|h| h + r.native_lease_ms < now)
                }
            };
            if expired {
                let why = match job.lane {
                    edgejobs_core::Lane::Edge => "timed out",
                    edgejobs_core::Lane::Native => "lost its consumer (no heartbeat)",
                };
                let failed = Event::Fail {
                    attempt: job.attempt,
                    error: format!("attempt {} {why} (found by the sweep)", job.attempt),
                    disposition: edgejobs_core::machine::Disposition::Retryable,
                };
                if let Ok(t) = self.transition(job, failed, now) {
                    self.carry_out(&t.job, t.effect).await;
                    timed_out += 1;
                }
            }
        }
        if resent > 0 {
            self.record(&[Delta::count("edgejobs_sweep_resent_total", &[], resent as f64)])?;
        }
        self.rearm().await;
        Ok((200, json!({ "resent": resent, "timed_out": timed_out })))
    }

    /// Adds request-level counter deltas (kept in the `stats` object).
    fn count(&self, body: Value) -> OpResult {
        let deltas: Vec<Delta> = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        self.record(&deltas)?;
        Ok((200, json!({ "ok": true })))
    }

    /// Sets a stored gauge (kept in the `stats` object).
    fn gauge(&self, body: Value) -> OpResult {
        #[derive(Deserialize)]
        struct G {
            name: String,
            value: f64,
        }
        let g: G = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        self.sql
            .exec(
                "INSERT OR REPLACE INTO gauges (name, value) VALUES (?, ?)",
                vec![g.name.into(), SqlStorageValue::Float(g.value)],
            )
            .map_err(internal)?;
        Ok((200, json!({ "ok": true })))
    }

    /// Runs an effect after its state was committed. A failed queue send is logged, not
    /// returned: the job is safely `queued`, and the sweep re-sends it.
    async fn carry_out(&self, job: &Job, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Enqueue => {
                let msg = QueueMessage { id: job.id.clone(), attempt: job.attempt + 1, lane: job.lane };
                let sent = match self.env.queue(QUEUE_BINDING) {
                    Ok(q) => q.send(&msg).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    log(
                        "warn",
                        "queue send failed; the sweep will re-send",
                        json!({ "job": job.id, "error": e.to_string() }),
                    );
                }
            }
            Effect::Alarm(at) => self.arm(at).await,
        }
    }

    /// Makes sure the alarm fires no later than `at` (absolute ms). `set_alarm` takes an
    /// absolute time only as a Date: an integer would be read as an offset from now.
    async fn arm(&self, at: u64) {
        let storage = self.state.storage();
        let current = storage.get_alarm().await.ok().flatten();
        if current.is_none_or(|c| c as u64 > at) {
            let when = worker::ScheduledTime::new(js_sys::Date::new(&(at as f64).into()));
            if let Err(e) = storage.set_alarm(when).await {
                log("error", "could not set the shard alarm", json!({ "error": e.to_string() }));
            }
        }
    }

    /// Sets the alarm for the earliest scheduled job, if any.
    async fn rearm(&self) {
        #[derive(Deserialize)]
        struct Next {
            run_at: Option<f64>,
        }
        let next: Option<Vec<Next>> = self
            .sql
            .exec("SELECT MIN(run_at) AS run_at FROM jobs WHERE state = 'scheduled'", None)
            .and_then(|c| c.to_array())
            .ok();
        if let Some(at) = next.and_then(|rows| rows.first().and_then(|r| r.run_at)) {
            self.arm(at as u64).await;
        }
    }

    async fn create(&self, body: Value) -> OpResult {
        let req: CreateReq = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let now = req.job.created_at;
        if let Some(key) = &req.job.idempotency_key {
            self.sql.exec("DELETE FROM idempotency WHERE expires_at <= ?", vec![int(now)]).map_err(internal)?;
            #[derive(Deserialize)]
            struct KeyRow {
                job_id: String,
            }
            let rows: Vec<KeyRow> = self
                .sql
                .exec("SELECT job_id FROM idempotency WHERE key = ?", vec![key.clone().into()])
                .and_then(|c| c.to_array())
                .map_err(internal)?;
            if let Some(row) = rows.first() {
                let id: JobId = row.job_id.parse().map_err(internal)?;
                if let Some(existing) = self.load(&id)? {
                    return Ok((200, json!({ "job": existing, "created": false })));
                }
            }
            self.sql
                .exec(
                    "INSERT OR REPLACE INTO idempotency (key, job_id, expires_at) VALUES (?, ?, ?)",
                    vec![
                        key.clone().into(),
                        req.job.id.as_str().to_owned().into(),
                        int(now + req.idempotency_window_ms),
                    ],
                )
                .map_err(internal)?;
        }
        let effect = match req.job.state {
            JobState::Scheduled => Effect::Alarm(req.job.run_at),
            _ => Effect::Enqueue,
        };
        self.save(&req.job)?;
        self.record(&stats::created(&req.job))?;
        self.carry_out(&req.job, effect).await;
        Ok((201, json!({ "job": req.job, "created": true })))
    }

    fn get(&self, body: Value) -> OpResult {
        let req: IdReq = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        match self.load(&req.id)? {
            Some(job) => Ok((200, json!({ "job": job }))),
            None => Err(not_found(&req.id)),
        }
    }

    async fn event(&self, body: Value) -> OpResult {
        let req: EventReq = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let job = self.load(&req.id)?.ok_or_else(|| not_found(&req.id))?;
        let t = self.transition(&job, req.event, now_ms())?;
        self.carry_out(&t.job, t.effect).await;
        match t.refusal {
            Some(e) => Err(e),
            None => Ok((200, json!({ "job": t.job }))),
        }
    }

    fn list(&self, body: Value) -> OpResult {
        let q: ListQuery = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let mut cond = vec!["1 = 1".to_owned()];
        let mut binds: Vec<SqlStorageValue> = Vec::new();
        if let Some(s) = q.state {
            cond.push("state = ?".into());
            binds.push(s.as_str().to_owned().into());
        }
        if let Some(t) = &q.job_type {
            cond.push("type = ?".into());
            binds.push(t.clone().into());
        }
        if let Some(tag) = &q.tag {
            cond.push("tags LIKE ? ESCAPE '\\'".into());
            binds.push(format!("%{}%", like_escape(&tags_column(std::slice::from_ref(tag)))).into());
        }
        if let Some(from) = q.from_ms {
            cond.push("updated_at >= ?".into());
            binds.push(int(from));
        }
        if let Some(to) = q.to_ms {
            cond.push("updated_at < ?".into());
            binds.push(int(to));
        }
        if let Some(Cursor { created_ms, id }) = &q.after {
            cond.push("(created_at < ? OR (created_at = ? AND id < ?))".into());
            binds.extend([int(*created_ms), int(*created_ms), id.clone().into()]);
        }
        binds.push(SqlStorageValue::Integer(q.limit.min(1000) as i64));
        let jobs =
            self.load_where(&format!("{} ORDER BY created_at DESC, id DESC LIMIT ?", cond.join(" AND ")), binds)?;
        Ok((200, json!({ "jobs": jobs })))
    }
}

/// Tags as stored for filtering: `,a,b,` so that `LIKE '%,a,%'` matches whole tags only.
fn tags_column(tags: &[String]) -> String {
    if tags.is_empty() { String::new() } else { format!(",{},", tags.join(",")) }
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[derive(Deserialize)]
struct ReplayReq {
    #[serde(rename = "type")]
    job_type: Option<String>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    limit: u32,
}

#[derive(Deserialize)]
struct HandoffReq {
    id: JobId,
    attempt: u32,
    entry: String,
}

impl JobShard {
    /// Records which stream entry carries a native-lane attempt. Only a queued job waiting
    /// for exactly that attempt is updated; anything else is a stale hand-off, answered 409.
    fn handoff(&self, body: Value) -> OpResult {
        let req: HandoffReq = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let mut job = self.load(&req.id)?.ok_or_else(|| not_found(&req.id))?;
        if job.state != JobState::Queued || job.attempt + 1 != req.attempt {
            return Err(ApiError::new(ErrorCode::StaleAttempt, "the job no longer waits for this attempt"));
        }
        job.stream_entry = Some(edgejobs_core::job::StreamEntry { attempt: req.attempt, entry: req.entry });
        self.save(&job)?;
        Ok((200, json!({ "job": job })))
    }

    /// Replays up to `limit` dead jobs (oldest death first) and returns their ids.
    async fn replay_dead(&self, body: Value) -> OpResult {
        let req: ReplayReq = serde_json::from_value(body).map_err(|e| bad(e.to_string()))?;
        let mut cond = vec!["state = 'dead'".to_owned()];
        let mut binds: Vec<SqlStorageValue> = Vec::new();
        if let Some(t) = req.job_type {
            cond.push("type = ?".into());
            binds.push(t.into());
        }
        if let Some(from) = req.from_ms {
            cond.push("updated_at >= ?".into());
            binds.push(int(from));
        }
        if let Some(to) = req.to_ms {
            cond.push("updated_at < ?".into());
            binds.push(int(to));
        }
        binds.push(SqlStorageValue::Integer(req.limit.min(1000) as i64));
        let dead =
            self.load_where(&format!("{} ORDER BY updated_at ASC, id ASC LIMIT ?", cond.join(" AND ")), binds)?;
        let now = now_ms();
        let mut replayed = Vec::with_capacity(dead.len());
        let mut effects = Vec::with_capacity(dead.len());
        for job in &dead {
            let t = self.transition(job, Event::Replay, now)?;
            replayed.push(t.job.id.clone());
            effects.push((t.job, t.effect));
        }
        for (job, effect) in effects {
            self.carry_out(&job, effect).await;
        }
        Ok((200, json!({ "ids": replayed })))
    }
}

fn not_found(id: &JobId) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("no job with id {id}"))
}

/// The name of the object that keeps request-level counters and stored gauges. It is a
/// `JobShard` holding no jobs.
pub const STATS: &str = "stats";

/// Calls operation `op` of shard number `shard` and returns the status and JSON body.
pub async fn call(env: &Env, shard: u16, op: &str, body: &Value) -> std::result::Result<(u16, Value), ApiError> {
    call_named(env, &format!("shard-{shard}"), op, body).await
}

/// Calls operation `op` of the object named `name`.
pub async fn call_named(env: &Env, name: &str, op: &str, body: &Value) -> std::result::Result<(u16, Value), ApiError> {
    let stub = env
        .durable_object(SHARD_BINDING)
        .and_then(|ns| ns.get_by_name(name))
        .map_err(|e| unavailable("shard binding", e))?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.to_string().into()));
    let req =
        Request::new_with_init(&format!("https://shard/{op}"), &init).map_err(|e| unavailable("shard request", e))?;
    let mut resp = stub.fetch_with_request(req).await.map_err(|e| unavailable("shard call", e))?;
    let status = resp.status_code();
    let value: Value = resp.json().await.map_err(|e| unavailable("shard response", e))?;
    Ok((status, value))
}

/// Like [`call`], but turns an error answer into its [`ApiError`] and returns the job.
pub async fn call_job(env: &Env, shard: u16, op: &str, body: &Value) -> std::result::Result<(u16, Job), ApiError> {
    let (status, value) = call(env, shard, op, body).await?;
    if status >= 400 {
        return Err(
            ApiError::from_body(&value).unwrap_or_else(|| ApiError::new(ErrorCode::Internal, "malformed shard error"))
        );
    }
    let job = value
        .get("job")
        .cloned()
        .and_then(|j| serde_json::from_value(j).ok())
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "malformed shard answer"))?;
    Ok((status, job))
}

fn unavailable(what: &str, e: worker::Error) -> ApiError {
    log("error", "shard unreachable", json!({ "what": what, "error": e.to_string() }));
    ApiError::new(ErrorCode::Unavailable, "the job store is temporarily unavailable; retry")
}
