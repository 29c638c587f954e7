//! The consumer's reports to the edge: `POST <edge>/v1/internal/jobs/<id>/events` with the
//! consumer token. The shard decides; a refusal (409, 404) means "not yours any more".

use std::time::Duration;

use edgejobs_core::config::Secret;
use edgejobs_core::machine::Event;
use edgejobs_core::{ApiError, Job, JobId};

/// What the edge said about a report.
#[derive(Debug)]
pub enum Answer {
    Accepted(Box<Job>),
    /// The shard refused it (stale attempt, cancelled, finished, unknown job).
    Refused(ApiError),
    /// The edge could not be reached or failed (5xx): try again later.
    Unavailable(String),
}

#[derive(Debug, Clone)]
pub struct Edge {
    url: String,
    token: Secret,
    http: reqwest::Client,
}

impl Edge {
    pub fn new(url: &str, token: Secret, http: reqwest::Client) -> Edge {
        Edge { url: url.to_owned(), token, http }
    }

    pub async fn report(&self, id: &JobId, event: &Event) -> Answer {
        let url = format!("{}/v1/internal/jobs/{id}/events", self.url);
        let sent = self
            .http
            .post(&url)
            .bearer_auth(self.token.expose())
            .json(event)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Answer::Unavailable(e.without_url().to_string()),
        };
        let status = resp.status().as_u16();
        let body: serde_json::Value = match resp.json().await {
            Ok(b) => b,
            Err(e) => return Answer::Unavailable(format!("edge answered {status} with a malformed body: {e}")),
        };
        if status == 200 {
            return match serde_json::from_value(body) {
                Ok(job) => Answer::Accepted(Box::new(job)),
                Err(e) => Answer::Unavailable(format!("malformed job from the edge: {e}")),
            };
        }
        match ApiError::from_body(&body) {
            Some(e) if (400..500).contains(&status) && status != 429 => Answer::Refused(e),
            _ => Answer::Unavailable(format!("edge answered {status}")),
        }
    }

    /// Reports with bounded retries (0.5 s, 1 s, 2 s, 4 s) while the edge is unavailable.
    pub async fn report_persistently(&self, id: &JobId, event: &Event) -> Answer {
        let mut wait = Duration::from_millis(500);
        for _ in 0..4 {
            match self.report(id, event).await {
                Answer::Unavailable(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return other,
            }
        }
        self.report(id, event).await
    }

    /// True when the edge answers its liveness probe within 2 s.
    pub async fn reachable(&self) -> bool {
        let url = format!("{}/health/live", self.url);
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await, Ok(r) if r.status().is_success())
    }
}
