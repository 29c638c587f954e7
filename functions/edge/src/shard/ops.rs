//! The shard's batch operations: create, read, apply events (starts, outcomes, cancels,
//! retries), list, replay dead jobs, record hand-offs, and the numbers for a scrape. Each
//! write is one [`JobShard::commit`]: load, plan (pure), write; effects after.

use std::collections::BTreeSet;

use edgejobs_core::machine::Event;
use edgejobs_core::plan::{self, JobEvent};
use edgejobs_core::protocol::{
    Applied, ApplyMany, CreateMany, Get, GetMany, HandoffMany, List, Listed, ReplayDead, SetGauge, Stats, Stored,
};
use edgejobs_core::stats::ShardStats;
use edgejobs_core::wire::{Cursor, Include};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId};
use serde::Deserialize;
use serde_json::value::RawValue;
use worker::SqlStorageValue;

use super::rounds::Turn;
use super::store::{int, internal, like_escape, tags_column, text};
use super::{JobShard, Out};
use crate::platform::{now_ms, random_unit};

/// Largest page a listing may ask one shard for.
const MAX_LIST: u32 = 1000;

fn not_found(id: &JobId) -> ApiError {
    ApiError::new(ErrorCode::JobNotFound, format!("no job with id {id}"))
}

impl JobShard {
    /// Creates jobs with group commit: the creates of concurrent requests are committed in
    /// one transaction and their queue messages sent together (see `rounds`). Each request
    /// gets its own answers; a failed commit fails every request of its round.
    pub(super) async fn create_many(&self, r: CreateMany) -> Out<CreateMany> {
        if let Some(j) = r.jobs.iter().find(|j| Some(j.id.shard()) != self.shard) {
            return Err(ApiError::new(ErrorCode::InvalidField, format!("job {} does not belong to this shard", j.id)));
        }
        let (parts, mine) = match self.creates.submit(r).await {
            Turn::Done(answers) => return answers,
            Turn::Lead { parts, mine } => (parts, mine),
        };
        let now = now_ms();
        let counts: Vec<(u64, usize)> = parts.iter().map(|(t, p)| (*t, p.jobs.len())).collect();
        let keys: Vec<String> =
            parts.iter().flat_map(|(_, p)| p.jobs.iter().filter_map(|j| j.idempotency_key.clone())).collect();
        // One window for the round: every request of a deployment sends the configured one.
        let window = parts.iter().map(|(_, p)| p.idempotency_window_ms).max().unwrap_or(0);
        let jobs: Vec<Job> = parts.into_iter().flat_map(|(_, p)| p.jobs).collect();
        let committed = self.commit(|tx| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let known = tx.known_keys(&keys, now)?;
            let (plan, key_writes, answers) = plan::create(jobs, known, now, window);
            let mut docs = tx.apply(&plan)?.into_iter();
            tx.put_keys(&key_writes)?;
            // Answer with the JSON just written (created jobs come in insert order).
            let stored: std::result::Result<Vec<Stored>, ApiError> = answers
                .iter()
                .map(|c| {
                    let written = if c.created { docs.next() } else { None };
                    let text = match written {
                        Some(doc) => doc,
                        None => serde_json::to_string(&c.job).map_err(internal)?,
                    };
                    let job = serde_json::value::RawValue::from_string(text).map_err(internal)?;
                    Ok(Stored { created: c.created, job })
                })
                .collect();
            Ok((stored?, plan.effects))
        });
        let results: Vec<(u64, std::result::Result<Vec<Stored>, ApiError>)> = match committed {
            Ok((stored, effects)) => {
                self.carry_out(effects).await;
                let mut stored = stored.into_iter();
                counts.into_iter().map(|(t, n)| (t, Ok(stored.by_ref().take(n).collect()))).collect()
            }
            Err(e) => counts.into_iter().map(|(t, _)| (t, Err(e.clone()))).collect(),
        };
        self.creates
            .finish(mine, results)
            .unwrap_or_else(|| Err(ApiError::new(ErrorCode::Internal, "the create round lost this request's result")))
    }

    pub(super) fn get(&self, r: Get) -> Out<Get> {
        self.store.load(&r.id)?.ok_or_else(|| not_found(&r.id))
    }

    pub(super) async fn apply_many(&self, r: ApplyMany) -> Out<ApplyMany> {
        let now = now_ms();
        let ids: BTreeSet<JobId> = r.events.iter().map(|e| e.id.clone()).collect();
        let ApplyMany { events, full } = r;
        // A start or a reclaim needs the job (its payload) to run it.
        let wants: Vec<bool> =
            events.iter().map(|e| full || matches!(e.event, Event::Start { .. } | Event::Reclaim { .. })).collect();
        let (answers, effects) = self.commit(|tx| {
            let loaded = tx.load_many(&ids)?;
            let (plan, answers) = plan::apply_events(loaded, events, now, &mut random_unit);
            tx.apply(&plan)?;
            Ok((answers, plan.effects))
        })?;
        self.carry_out(effects).await;
        Ok(answers
            .into_iter()
            .zip(wants)
            .map(|(a, want)| {
                a.map(|job| Applied {
                    id: job.id.clone(),
                    state: job.state,
                    attempt: job.attempt,
                    job: want.then_some(job),
                })
            })
            .collect())
    }

    /// A page of this shard's job summaries, newest first (the primary key is the creation
    /// order). The heavy parts are removed by SQLite, so they never reach this object.
    pub(super) fn list(&self, r: List) -> Out<List> {
        let q = r.query;
        let mut cond = vec!["1 = 1".to_owned()];
        let mut binds: Vec<SqlStorageValue> = Vec::new();
        if let Some(s) = q.state {
            cond.push("state = ?".into());
            binds.push(text(s.as_str()));
        }
        if let Some(t) = &q.job_type {
            cond.push("type = ?".into());
            binds.push(text(t.clone()));
        }
        if let Some(tag) = &q.tag {
            cond.push(TAG_CONDITION.into());
            binds.push(tag_pattern(tag));
        }
        if let Some(from) = q.from_ms {
            cond.push("updated_at >= ?".into());
            binds.push(int(from));
        }
        if let Some(to) = q.to_ms {
            cond.push("updated_at < ?".into());
            binds.push(int(to));
        }
        if let Some(p) = &q.id_prefix {
            cond.push("substr(id, 1, ?) = ?".into());
            binds.push(int(p.len() as u64));
            binds.push(text(p.clone()));
        }
        if let Some(needle) = &q.search {
            // Payload and metadata as stored (sealed header values are ciphertext), ASCII
            // case folded on both sides; instr, so the text needs no escaping.
            cond.push(
                "(instr(lower(json_extract(doc, '$.payload')), ?) > 0 OR instr(lower(json_extract(doc, '$.metadata')), ?) > 0)"
                    .into(),
            );
            let folded = needle.to_ascii_lowercase();
            binds.push(text(folded.clone()));
            binds.push(text(folded));
        }
        if let Some(c) = &q.after {
            cond.push("id < ?".into());
            binds.push(text(Cursor::bound_in_shard(c, self.shard.unwrap_or(0))));
        }
        binds.push(int(q.limit.min(MAX_LIST) as u64));
        let drop: Vec<String> = Include::default().dropped_paths().iter().map(|p| format!("'{p}'")).collect();
        #[derive(Deserialize)]
        struct Row {
            id: String,
            doc: String,
        }
        let rows: Vec<Row> = self.store.rows(
            &format!(
                "SELECT id, json_remove(doc, {}) AS doc FROM jobs WHERE {} ORDER BY id DESC LIMIT ?",
                drop.join(", "),
                cond.join(" AND ")
            ),
            binds,
        )?;
        rows.into_iter()
            .map(|r| {
                Ok(Listed { id: r.id.parse().map_err(internal)?, doc: RawValue::from_string(r.doc).map_err(internal)? })
            })
            .collect()
    }

    /// Whole jobs by id (those that exist), as stored.
    pub(super) fn get_many(&self, r: GetMany) -> Out<GetMany> {
        let mut out = Vec::new();
        for chunk in r.ids.chunks(100) {
            let marks = vec!["?"; chunk.len()].join(", ");
            #[derive(Deserialize)]
            struct Doc {
                doc: String,
            }
            let rows: Vec<Doc> = self.store.rows(
                &format!("SELECT doc FROM jobs WHERE id IN ({marks})"),
                chunk.iter().map(|id| text(id.as_str())).collect(),
            )?;
            for d in rows {
                out.push(RawValue::from_string(d.doc).map_err(internal)?);
            }
        }
        Ok(out)
    }

    /// Replays up to `limit` dead jobs, oldest death first, in one transaction.
    pub(super) async fn replay_dead(&self, r: ReplayDead) -> Out<ReplayDead> {
        let mut cond = vec!["state = 'dead'".to_owned()];
        let mut binds: Vec<SqlStorageValue> = Vec::new();
        if let Some(t) = r.job_type {
            cond.push("type = ?".into());
            binds.push(text(t));
        }
        if let Some(tag) = &r.tag {
            cond.push(TAG_CONDITION.into());
            binds.push(tag_pattern(tag));
        }
        if let Some(from) = r.from_ms {
            cond.push("updated_at >= ?".into());
            binds.push(int(from));
        }
        if let Some(to) = r.to_ms {
            cond.push("updated_at < ?".into());
            binds.push(int(to));
        }
        binds.push(int(r.limit.min(MAX_LIST) as u64));
        let query = format!("{} ORDER BY updated_at ASC, id ASC LIMIT ?", cond.join(" AND "));
        let now = now_ms();
        let (ids, effects) = self.commit(|tx| {
            let dead = tx.load_where(&query, binds)?;
            let events = dead.iter().map(|j| JobEvent { id: j.id.clone(), event: Event::Replay }).collect();
            let (plan, answers) = plan::apply_events(dead, events, now, &mut random_unit);
            tx.apply(&plan)?;
            Ok((answers.into_iter().filter_map(Result::ok).map(|j| j.id).collect::<Vec<_>>(), plan.effects))
        })?;
        self.carry_out(effects).await;
        Ok(ids)
    }

    /// Records which stream entries carry native attempts (see `plan::handoffs`).
    pub(super) fn handoff_many(&self, r: HandoffMany) -> Out<HandoffMany> {
        let ids: BTreeSet<JobId> = r.entries.iter().map(|h| h.id.clone()).collect();
        self.commit(|tx| {
            let loaded = tx.load_many(&ids)?;
            let (plan, answers) = plan::handoffs(loaded, r.entries);
            tx.apply(&plan)?;
            Ok(answers)
        })
    }

    pub(super) fn set_gauge(&self, r: SetGauge) -> Out<SetGauge> {
        self.commit(|tx| {
            tx.exec(
                "INSERT OR REPLACE INTO gauges (name, value) VALUES (?, ?)",
                vec![text(r.name), SqlStorageValue::Float(r.value)],
            )
            .map(|_| ())
        })
    }

    /// This shard's numbers for a scrape: what is written (never what is only in memory, so
    /// counters never go down across restarts).
    pub(super) fn stats(&self) -> Out<Stats> {
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
        let s = &self.store;
        let counters: Vec<C> = s.rows("SELECT name, labels, value FROM counters", vec![])?;
        let hists: Vec<H> = s.rows("SELECT name, labels, doc FROM histograms", vec![])?;
        let jobs: Vec<J> = s.rows("SELECT state, type, COUNT(*) AS n FROM jobs GROUP BY state, type", vec![])?;
        let oldest: Vec<O> = s.rows("SELECT MIN(created_at) AS oldest FROM jobs WHERE state = 'queued'", vec![])?;
        let gauges: Vec<G> = s.rows("SELECT name, value FROM gauges", vec![])?;
        #[derive(Deserialize)]
        struct M {
            minute: f64,
            series: String,
            n: f64,
        }
        let now = now_ms();
        let since = now - now % 60_000 - (edgejobs_core::stats::MINUTES_KEPT - 1) * 60_000;
        let minutes: Vec<M> = s.rows("SELECT minute, series, n FROM minutes WHERE minute >= ?", vec![int(since)])?;
        let labels = |s: &str| serde_json::from_str::<Vec<(String, String)>>(s).unwrap_or_default();
        let (schedules, schedules_overdue) = self.schedule_stats(now)?;
        Ok(ShardStats {
            counters: counters.into_iter().map(|c| (c.name, labels(&c.labels), c.value)).collect(),
            histograms: hists
                .into_iter()
                .filter_map(|h| serde_json::from_str(&h.doc).ok().map(|hist| (h.name, labels(&h.labels), hist)))
                .collect(),
            jobs: jobs.into_iter().map(|j| (j.state, j.job_type, j.n as u64)).collect(),
            oldest_queued_ms: oldest.first().and_then(|o| o.oldest).map(|v| v as u64),
            gauges: gauges.into_iter().map(|g| (g.name, g.value)).collect(),
            shard: self.shard,
            minutes: minutes.into_iter().map(|m| (m.minute as u64, m.series, m.n)).collect(),
            schedules,
            schedules_overdue,
        })
    }
}

/// The condition of a filter by tag, with [`tag_pattern`] as its one bind.
const TAG_CONDITION: &str = "tags LIKE ? ESCAPE '\\'";

/// What [`TAG_CONDITION`] matches for `tag`: its entry in the tags column, escaped.
fn tag_pattern(tag: &str) -> SqlStorageValue {
    text(format!("%{}%", like_escape(&tags_column(&[tag.to_owned()]))))
}
