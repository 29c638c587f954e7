//! The battery's view of the system: enqueue (each answer sorted as created, refused or
//! indeterminate), read jobs and counters, fire cron tasks, count executions at the hooks.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value, json};

#[path = "../bench/prom.rs"]
#[allow(dead_code)]
pub mod prom;
use prom::Prom;

/// What an enqueue request got.
#[derive(Debug, Clone)]
pub enum Sent {
    /// 2xx: the job exists (the guarantee is about these).
    Created(String),
    /// 4xx with the error code: nothing was written.
    Refused(u16, String),
    /// A timeout, a reset or a 5xx: the job may or may not exist.
    Indeterminate(String),
}

#[derive(Debug, Clone)]
pub struct Api {
    pub http: Client,
    pub edge: String,
    pub key: String,
    pub admin: String,
}

impl Api {
    pub fn new(edge: &str, key: &str, admin: &str) -> anyhow::Result<Api> {
        let http = Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(16).build()?;
        Ok(Api { http, edge: edge.to_owned(), key: key.to_owned(), admin: admin.to_owned() })
    }

    pub fn enqueue(&self, spec: &Value) -> Sent {
        let r = self.http.post(format!("{}/v1/jobs", self.edge)).bearer_auth(&self.key).json(spec).send();
        match r {
            Err(e) => Sent::Indeterminate(e.without_url().to_string()),
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().unwrap_or(Value::Null);
                match status {
                    200 | 201 => match body["id"].as_str() {
                        Some(id) => Sent::Created(id.to_owned()),
                        None => Sent::Indeterminate(format!("{status} without an id: {body}")),
                    },
                    400..=499 => Sent::Refused(status, body["error"]["code"].as_str().unwrap_or("?").to_owned()),
                    // A clear refusal: the limiter failed closed, nothing was written.
                    503 if body["error"]["code"] == "unavailable" => Sent::Refused(status, "unavailable".into()),
                    _ => Sent::Indeterminate(format!("{status} {}", body["error"]["code"].as_str().unwrap_or(""))),
                }
            }
        }
    }

    /// The job, or `None` when it does not exist (404); an error when the edge is unreachable.
    pub fn job(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let r = self.http.get(format!("{}/v1/jobs/{id}", self.edge)).bearer_auth(&self.key).send()?;
        match r.status().as_u16() {
            200 => Ok(Some(r.json()?)),
            404 => Ok(None),
            s => anyhow::bail!("GET job answered {s}"),
        }
    }

    /// Every job with `tag` (summaries: id and state), following the cursor.
    pub fn list_tag(&self, tag: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut url = format!("{}/v1/jobs?tag={tag}&limit=100", self.edge);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let r = self.http.get(url).bearer_auth(&self.key).send()?;
            anyhow::ensure!(r.status().is_success(), "listing answered {}", r.status());
            let body: Value = r.json()?;
            out.extend(body["jobs"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    pub fn post(&self, path: &str, body: &Value, admin: bool) -> anyhow::Result<(u16, Value)> {
        self.post_timed(path, body, admin, Duration::from_secs(10))
    }

    /// A POST allowed up to `timeout` (a backup takes longer than a request).
    pub fn post_timed(&self, path: &str, body: &Value, admin: bool, timeout: Duration) -> anyhow::Result<(u16, Value)> {
        let key = if admin { &self.admin } else { &self.key };
        let r = self.http.post(format!("{}{path}", self.edge)).bearer_auth(key).json(body).timeout(timeout).send()?;
        let status = r.status().as_u16();
        Ok((status, r.json().unwrap_or(Value::Null)))
    }

    pub fn http_get_admin(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.http.get(format!("{}{path}", self.edge)).bearer_auth(&self.admin).send()?;
        let status = r.status().as_u16();
        Ok((status, r.json().unwrap_or(Value::Null)))
    }

    pub fn metrics(&self) -> anyhow::Result<Prom> {
        let r = self.http.get(format!("{}/metrics", self.edge)).bearer_auth(&self.admin).send()?;
        anyhow::ensure!(r.status().is_success(), "GET /metrics answered {}", r.status());
        Ok(Prom::parse(&r.text()?))
    }

    /// Fires a cron trigger (`wrangler dev --test-scheduled`).
    pub fn cron(&self, cron: &str) -> bool {
        let url = format!("{}/__scheduled?cron={}", self.edge, cron.replace(' ', "+"));
        self.http.get(url).timeout(Duration::from_secs(60)).send().is_ok_and(|r| r.status().is_success())
    }

    /// The sweep: re-sends stuck queued jobs and fails attempts whose consumer is gone.
    pub fn sweep(&self) -> bool {
        self.cron("*/5 * * * *")
    }

    pub fn healthy(&self) -> bool {
        self.http
            .get(format!("{}/health/live", self.edge))
            .timeout(Duration::from_secs(2))
            .send()
            .is_ok_and(|r| r.status().is_success())
    }
}

/// A consumer's `/metrics` value of one series (0 when absent).
pub fn consumer_metric(http: &Client, url: &str, family: &str, label: Option<(&str, &str)>) -> f64 {
    let Ok(page) = http.get(format!("{url}/metrics")).timeout(Duration::from_secs(2)).send().and_then(|r| r.text())
    else {
        return 0.0;
    };
    let p = Prom::parse(&page);
    match label {
        Some((k, v)) => p.sum_where(family, k, v),
        None => p.sum(family),
    }
    .unwrap_or(0.0)
}

/// Counts of the final-state counters for one job type.
pub fn finals(p: &Prom, job_type: &str) -> (f64, f64) {
    let c = p.sum_where("edgejobs_jobs_completed_total", "type", job_type).unwrap_or(0.0);
    let d = p.sum_where("edgejobs_jobs_dead_total", "type", job_type).unwrap_or(0.0);
    (c, d)
}

/// A native job whose upstream call is counted at `url`.
pub fn native(url: &str, max_attempts: u32) -> Value {
    json!({ "type": "http.request", "payload": { "url": url, "method": "POST" },
            "max_attempts": max_attempts, "backoff": { "base": "200ms" } })
}

/// An edge-lane webhook counted at `url`.
pub fn edge(url: &str, max_attempts: u32) -> Value {
    json!({ "type": "webhook", "payload": { "url": url }, "max_attempts": max_attempts, "backoff": { "base": "200ms" } })
}
