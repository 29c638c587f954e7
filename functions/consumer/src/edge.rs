//! The consumer's reports to the edge, in batches: every report (start, reclaim, heartbeat,
//! complete, fail) is queued, and one task sends whatever is pending as one
//! `POST <edge>/v1/internal/events` with the consumer token, when `max_events` are pending or
//! `linger` after the first one, so a consumer running hundreds of jobs makes a few requests
//! per interval, not several per job. The edge answers every event on its own; a refusal
//! (409, 404) means "not yours any more". Every report but a start or a takeover carries the
//! attempt's lease token, which the start's answer gave (`job.lease`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use edgejobs_core::config::Secret;
use edgejobs_core::machine::Event;
use edgejobs_core::report::{self, Answers, Report, Reports};
use edgejobs_core::{ApiError, Job, JobId};

use crate::batch;

/// What the edge said about a report.
#[derive(Debug)]
pub enum Answer {
    /// Accepted: the job's state after it, and the job for a start, a reclaim or a wait.
    Accepted(Option<Box<Job>>, edgejobs_core::JobState),
    /// The shard refused it (stale attempt, lease lost or held, cancelled, finished, unknown).
    Refused(ApiError),
    /// The edge could not be reached or failed (5xx): try again later.
    Unavailable(String),
}

/// Largest request body the batcher builds (the edge takes 1 MiB).
const MAX_BATCH_BYTES: usize = 768 * 1024;

#[derive(Debug, Clone)]
pub struct Edge {
    url: String,
    /// What sends the batches (and remembers the edge's lease).
    sender: Sender,
    tx: batch::Sender<Report, Answer>,
}

/// Batching of reports: most events per request, and how long the first waits for company.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_events: usize,
    pub linger: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { max_events: 200, linger: Duration::from_millis(5) }
    }
}

impl Edge {
    /// A reporter; spawns its sending task (it ends when every clone is dropped).
    pub fn new(url: &str, token: Secret, http: reqwest::Client, batching: Batching) -> Edge {
        let (tx, rx) = batch::channel(10_000);
        let sender =
            Sender { url: format!("{url}/v1/internal/events"), token, http, lease_ms: Arc::new(AtomicU64::new(0)) };
        let limits = batch::Limits {
            max_items: batching.max_events.min(report::MAX_EVENTS),
            max_weight: MAX_BATCH_BYTES,
            linger: batching.linger,
        };
        let flusher = sender.clone();
        tokio::spawn(rx.run(limits, move |events| {
            let sender = flusher.clone();
            async move { sender.deliver(events).await }
        }));
        Edge { url: url.to_owned(), sender, tx }
    }

    /// The edge's lease, once an answer told it.
    pub fn lease(&self) -> Option<Duration> {
        match self.sender.lease_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Asks the edge for its lease (an empty report batch); `None` when it cannot be reached.
    pub async fn fetch_lease(&self) -> Option<Duration> {
        self.sender.send(Vec::new()).await.ok()?;
        self.lease()
    }

    /// Reports one event with the attempt's lease token (`None` for a start or a takeover);
    /// it travels with whatever else is pending.
    pub async fn report(&self, id: &JobId, event: &Event, lease: Option<&str>) -> Answer {
        let size = serde_json::to_string(event).map_or(0, |s| s.len()) + 160;
        match self.tx.call(Report::new(id.clone(), event.clone(), lease.map(str::to_owned)), size).await {
            Ok(answer) => answer,
            Err(batch::Unanswered::Stopped) => Answer::Unavailable("the reporter has stopped".into()),
            Err(batch::Unanswered::Dropped) => Answer::Unavailable("the reporter dropped the report".into()),
        }
    }

    /// Reports with bounded retries (0.5 s, 1 s, 2 s, 4 s) while the edge is unavailable.
    pub async fn report_persistently(&self, id: &JobId, event: &Event, lease: Option<&str>) -> Answer {
        let mut wait = Duration::from_millis(500);
        for _ in 0..4 {
            match self.report(id, event, lease).await {
                Answer::Unavailable(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
        self.report(id, event, lease).await
    }

    /// True when the edge answers its liveness probe within 2 s.
    pub async fn reachable(&self) -> bool {
        let url = format!("{}/health/live", self.url);
        matches!(self.sender.http.get(url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }
}

/// The sending side of the reporter. The edge's lease in ms is 0 until the first answer.
#[derive(Debug, Clone)]
struct Sender {
    url: String,
    token: Secret,
    http: reqwest::Client,
    lease_ms: Arc<AtomicU64>,
}

impl Sender {
    /// Sends one batch; every event's answer, in order.
    async fn deliver(&self, events: Vec<Report>) -> Vec<Answer> {
        let n = events.len();
        match self.send(events).await {
            Ok(answers) => answers,
            Err(why) => (0..n).map(|_| Answer::Unavailable(why.clone())).collect(),
        }
    }

    /// One request; the answers in order, or why there are none.
    async fn send(&self, events: Vec<Report>) -> Result<Vec<Answer>, String> {
        let n = events.len();
        let sent = self
            .http
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .json(&Reports { events })
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let resp = sent.map_err(|e| e.without_url().to_string())?;
        let status = resp.status().as_u16();
        let body: serde_json::Value =
            resp.json().await.map_err(|e| format!("edge answered {status} with a malformed body: {e}"))?;
        if status != 200 {
            // The whole request was refused: a 4xx says something is wrong with it (each
            // event gets that refusal), anything else is worth another try.
            return match ApiError::from_body(&body) {
                Some(e) if (400..500).contains(&status) && status != 429 => {
                    Ok((0..n).map(|_| Answer::Refused(e.clone())).collect())
                }
                _ => Err(format!("edge answered {status}")),
            };
        }
        let answers: Answers = serde_json::from_value(body).map_err(|e| format!("malformed answers: {e}"))?;
        if answers.answers.len() != n {
            return Err(format!("{} answers for {n} events", answers.answers.len()));
        }
        self.lease_ms.store(answers.lease_ms, Ordering::Relaxed);
        Ok(answers
            .answers
            .into_iter()
            .map(|a| match a {
                // A start's lease token travels beside its job; the worker keeps it there.
                report::Answer::Ok(applied) => {
                    let edgejobs_core::protocol::Applied { job, lease, state, .. } = *applied;
                    let job = job.map(|mut job| {
                        job.lease = lease;
                        Box::new(job)
                    });
                    Answer::Accepted(job, state)
                }
                report::Answer::Error(e) if e.code.status() >= 500 => Answer::Unavailable(e.message),
                report::Answer::Error(e) => Answer::Refused(e),
            })
            .collect())
    }
}
