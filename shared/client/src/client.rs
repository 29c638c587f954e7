//! `Client`: the API at one base URL with one key. Each route is a method taking and
//! returning `edgejobs-api` types; they all go through one request path that adds the key,
//! retries what may be retried (429 always, 503 and lost connections when the request is
//! safe to repeat) after `Retry-After` or a doubling backoff, and turns error answers into
//! [`Error::Api`] with the API's stable code.

use std::sync::Arc;
use std::time::Duration;

use edgejobs_api::{
    BackupList, BackupSummary, BatchRequest, BatchResult, BusyKeys, EventRequest, EventSent, FlowChanged, FlowKey,
    FlowPauseRequest, Health, Job, JobList, JobSpec, JobSummary, Manifest, ReadToken, ReplayRequest, ReplayResult,
    ResealPage, ResealRequest, RestoreRequest, Restored, ScheduleDeleted, ScheduleList, ScheduleSpec, ScheduleView,
    Stats, Triggered, VerifyResult, WebhookSecret, Whoami,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::query::{DeadQuery, JobQuery, enc};
use crate::transport::{Method, Request, Response, Streaming, Transport, header};

/// When and how often a call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first. Default 5.
    pub max_retries: u32,
    /// The first wait when the answer names none (`Retry-After`); it doubles each time.
    /// Default 500 ms.
    pub base: Duration,
    /// The longest doubling wait. Default 30 s.
    pub cap: Duration,
    /// The longest `Retry-After` honoured: a longer one is waited this long. Default 60 s.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries: every answer is returned as it came.
    pub fn none() -> RetryPolicy {
        RetryPolicy { max_retries: 0, ..RetryPolicy::default() }
    }

    /// The wait before retry number `n` (0 for the first retry), given the answer's
    /// `Retry-After` (delta-seconds; an HTTP date counts as absent).
    pub fn wait(&self, n: u32, retry_after: Option<&str>) -> Duration {
        match edgejobs_core::webhook::retry_after_ms(retry_after) {
            Some(ms) => Duration::from_millis(ms).min(self.max_retry_after),
            None => self.base.saturating_mul(1 << n.min(16)).min(self.cap),
        }
    }
}

/// Whether a request may be sent twice with the same effect: reads, and writes the API
/// deduplicates (an enqueue with an idempotency key, an event with an id). Only those are
/// repeated after a 503 or a lost connection, where the first may have been done; a 429 is
/// always repeated, because the API refused it before doing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Safe {
    Yes,
    No,
}

/// The API at one base URL with one key (or read token). Cheap to clone: clones share the
/// transport.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    key: String,
    transport: Arc<dyn Transport>,
    retry: RetryPolicy,
    /// Whether an enqueue without an idempotency key gets a generated one
    /// ([`Client::with_generated_keys`]).
    generate_keys: bool,
}

/// A fresh idempotency key: `rs-` and 16 random bytes in hex, from the system's (or the
/// Worker's) random source.
pub fn idempotency_key() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Invalid(format!("no random source for an idempotency key: {e}")))?;
    Ok(format!("rs-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// A page type of a listing: its items and the cursor of the next page.
pub trait Page: DeserializeOwned {
    type Item;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

impl Page for JobList {
    type Item = JobSummary;
    fn into_parts(self) -> (Vec<JobSummary>, Option<String>) {
        (self.jobs, self.next_cursor)
    }
}

impl Page for ScheduleList {
    type Item = ScheduleView;
    fn into_parts(self) -> (Vec<ScheduleView>, Option<String>) {
        (self.schedules, self.next_cursor)
    }
}

/// A listing followed page by page: `next()` fetches the next page (`None` after the last).
#[derive(Debug)]
pub struct Pages<P> {
    client: Client,
    /// The route with its query, without `cursor`.
    path: String,
    cursor: Option<String>,
    done: bool,
    _page: std::marker::PhantomData<fn() -> P>,
}

impl<P: Page> Pages<P> {
    /// The next page's items; `None` once the last page was read.
    pub async fn next(&mut self) -> Option<Result<Vec<P::Item>>> {
        if self.done {
            return None;
        }
        let sep = if self.path.contains('?') { '&' } else { '?' };
        let path = match &self.cursor {
            Some(c) => format!("{}{sep}cursor={}", self.path, enc(c)),
            None => self.path.clone(),
        };
        match self.client.get::<P>(&path).await {
            Ok(page) => {
                let (items, next) = page.into_parts();
                self.done = next.is_none();
                self.cursor = next;
                Some(Ok(items))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// Every item of at most `max_pages` pages.
    pub async fn collect(mut self, max_pages: usize) -> Result<Vec<P::Item>> {
        let mut all = Vec::new();
        for _ in 0..max_pages {
            match self.next().await {
                Some(page) => all.extend(page?),
                None => break,
            }
        }
        Ok(all)
    }
}

impl Client {
    /// A client of the API at `base_url` (e.g. `https://jobs.example.com`) with `key`, over
    /// reqwest (native) or the Worker's fetch (wasm32 with the `worker` feature).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(base_url: &str, key: &str) -> Result<Client> {
        Ok(Client::with_transport(base_url, key, Arc::new(crate::ReqwestTransport::new()?)))
    }

    /// A client of the API at `base_url` with `key`, over the Worker's fetch.
    #[cfg(all(target_arch = "wasm32", feature = "worker"))]
    pub fn new(base_url: &str, key: &str) -> Result<Client> {
        Ok(Client::with_transport(base_url, key, Arc::new(crate::FetchTransport::default())))
    }

    /// A client inside a Worker bound to edgejobs (`[[services]] binding = "JOBS"`, with
    /// `props = { tenant = "..." }`): requests go through the binding and carry no key; edgejobs
    /// takes the caller for the binding's tenant (README: Clients).
    #[cfg(all(target_arch = "wasm32", feature = "worker"))]
    pub fn binding(fetcher: worker::Fetcher) -> Client {
        Client::with_transport("https://edgejobs", "", Arc::new(crate::FetchTransport::binding(fetcher)))
    }

    /// A client over any transport (a test's fake, a fault-injecting wrapper).
    pub fn with_transport(base_url: &str, key: &str, transport: Arc<dyn Transport>) -> Client {
        Client {
            base: base_url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            transport,
            retry: RetryPolicy::default(),
            generate_keys: false,
        }
    }

    /// The same client generating an idempotency key ([`idempotency_key`]) for each enqueue
    /// (and batch item) that has none: every enqueue is then safe to retry, and is retried
    /// on a 503 or a lost connection with the same key, so it creates one job at most.
    pub fn with_generated_keys(mut self, on: bool) -> Client {
        self.generate_keys = on;
        self
    }

    /// `spec`, with a generated key when this client generates keys and it has none.
    fn keyed(&self, spec: &JobSpec) -> Result<JobSpec> {
        let mut spec = spec.clone();
        if self.generate_keys && spec.idempotency_key.is_none() {
            spec.idempotency_key = Some(idempotency_key()?);
        }
        Ok(spec)
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>, extra: &[(&str, &str)]) -> Request {
        // No key (a service binding's client): no Authorization, so the binding decides.
        let mut headers = Vec::new();
        if !self.key.is_empty() {
            headers.push(("authorization".to_owned(), format!("Bearer {}", self.key)));
        }
        if body.is_some() {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        headers.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Request { method, url: format!("{}{path}", self.base), headers, body }
    }

    /// Sends a request until it is answered with something other than a retried status, and
    /// returns the 2xx answer (or the error of the last).
    async fn exchange(&self, method: Method, path: &str, body: Option<Vec<u8>>, safe: Safe) -> Result<Response> {
        let mut n = 0;
        loop {
            let left = n < self.retry.max_retries;
            let answer = self.transport.send(self.request(method, path, body.clone(), &[])).await;
            let resp = match answer {
                Ok(r) => r,
                Err(e) if left && safe == Safe::Yes && e.is_retryable() => {
                    self.transport.sleep(self.retry.wait(n, None)).await;
                    n += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if (200..300).contains(&resp.status) {
                return Ok(resp);
            }
            if left && (resp.status == 429 || (resp.status == 503 && safe == Safe::Yes)) {
                self.transport.sleep(self.retry.wait(n, header(&resp.headers, "retry-after"))).await;
                n += 1;
                continue;
            }
            return Err(Error::from_reply(resp.status, &resp.body));
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        safe: Safe,
    ) -> Result<T> {
        let resp = self.exchange(method, path, body, safe).await?;
        decode(method, path, &resp.body)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::Get, path, None, Safe::Yes).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Option<&impl Serialize>, safe: Safe) -> Result<T> {
        let body = body.map(to_bytes).transpose()?;
        self.call(Method::Post, path, body, safe).await
    }

    /// Sends any request (for a route this client has no method for yet) and reads its
    /// answer as `T`; `safe`: whether it may be repeated after a 503 or a lost connection.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        safe: bool,
    ) -> Result<T> {
        let body = body.map(to_bytes).transpose()?;
        self.call(method, path, body, if safe { Safe::Yes } else { Safe::No }).await
    }

    /// Opens an event stream once (no retries: `EventStream` does its own).
    pub(crate) async fn open_stream(&self, path: &str, last_id: Option<&str>) -> Result<Streaming> {
        let mut extra = vec![("accept", "text/event-stream")];
        if let Some(id) = last_id {
            extra.push(("last-event-id", id));
        }
        let mut s = self.transport.stream(self.request(Method::Get, path, None, &extra)).await?;
        if s.status == 200 {
            return Ok(s);
        }
        // The refusal's body is short: read it whole for its error.
        let mut body = Vec::new();
        while let Some(piece) = futures_util::StreamExt::next(&mut s.body).await {
            match piece {
                Ok(p) if body.len() < 64 << 10 => body.extend(p),
                _ => break,
            }
        }
        Err(Error::from_reply(s.status, &body))
    }

    // ---- Jobs ----

    /// `POST /v1/jobs`. With `spec.idempotency_key` the enqueue is safe to repeat (the API
    /// answers the existing job, 200), so it is also retried after a 503 or a lost connection.
    pub async fn enqueue(&self, spec: &JobSpec) -> Result<Job> {
        let spec = self.keyed(spec)?;
        let safe = if spec.idempotency_key.is_some() { Safe::Yes } else { Safe::No };
        self.post("/v1/jobs", Some(&spec), safe).await
    }

    /// `POST /v1/jobs/batch`: 1 to 100 specs, one result per item (a refused item is a
    /// [`edgejobs_api::BatchItem::Failed`] with its status and error, not an `Err`).
    pub async fn enqueue_batch(&self, specs: &[JobSpec]) -> Result<BatchResult> {
        let specs = specs.iter().map(|s| self.keyed(s)).collect::<Result<Vec<_>>>()?;
        let jobs = specs.iter().map(serde_json::to_value).collect::<Result<Vec<_>, _>>();
        let jobs = jobs.map_err(|e| Error::Invalid(e.to_string()))?;
        let safe = if specs.iter().all(|s| s.idempotency_key.is_some()) { Safe::Yes } else { Safe::No };
        self.post("/v1/jobs/batch", Some(&BatchRequest { jobs }), safe).await
    }

    /// `POST /v1/jobs/batch` with items as JSON documents (say, lines of an NDJSON file,
    /// passed through as written).
    pub async fn enqueue_batch_json(&self, jobs: Vec<Value>) -> Result<BatchResult> {
        let safe = if jobs.iter().all(|j| j.get("idempotency_key").is_some_and(Value::is_string)) {
            Safe::Yes
        } else {
            Safe::No
        };
        self.post("/v1/jobs/batch", Some(&BatchRequest { jobs }), safe).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Job> {
        self.get(&format!("/v1/jobs/{}", enc(id))).await
    }

    /// `GET /v1/jobs/{id}?wait=`: one long poll, answered once the job is final or when
    /// `wait` (at most 60 s) ends, with the job as it is then.
    pub async fn job_wait(&self, id: &str, wait: Duration) -> Result<Job> {
        let secs = wait.as_secs().min(60);
        self.get(&format!("/v1/jobs/{}?wait={secs}s", enc(id))).await
    }

    /// Long-polls until the job is final or about `timeout` has been waited (no clock is
    /// read: the waits asked for are counted, so it works the same in a Worker). Returns
    /// the job as last seen; check `job.state.is_final()`.
    pub async fn wait_for(&self, id: &str, timeout: Duration) -> Result<Job> {
        let mut left = timeout.as_secs();
        loop {
            let step = left.min(60);
            let job = self.job_wait(id, Duration::from_secs(step)).await?;
            left -= step;
            if job.state.is_final() || left == 0 {
                return Ok(job);
            }
        }
    }

    /// `GET /v1/jobs`: one page.
    pub async fn jobs(&self, q: &JobQuery) -> Result<JobList> {
        self.get(&format!("/v1/jobs{}", q.to_query(None))).await
    }

    /// `GET /v1/jobs`, page after page.
    pub fn job_pages(&self, q: &JobQuery) -> Pages<JobList> {
        self.pages(format!("/v1/jobs{}", q.to_query(None)))
    }

    fn pages<P: Page>(&self, path: String) -> Pages<P> {
        Pages { client: self.clone(), path, cursor: None, done: false, _page: std::marker::PhantomData }
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> Result<Job> {
        self.post(&format!("/v1/jobs/{}/cancel", enc(id)), None::<&Value>, Safe::No).await
    }

    /// `POST /v1/jobs/{id}/retry`: replays a dead job as a new series of attempts.
    pub async fn retry(&self, id: &str) -> Result<Job> {
        self.post(&format!("/v1/jobs/{}/retry", enc(id)), None::<&Value>, Safe::No).await
    }

    // ---- Dead letters ----

    /// `GET /v1/dead`: one page.
    pub async fn dead(&self, q: &DeadQuery) -> Result<JobList> {
        self.get(&format!("/v1/dead{}", q.to_query())).await
    }

    /// `GET /v1/dead`, page after page.
    pub fn dead_pages(&self, q: &DeadQuery) -> Pages<JobList> {
        self.pages(format!("/v1/dead{}", q.to_query()))
    }

    /// `POST /v1/dead/replay` (admin): requeues up to `limit` matching dead jobs.
    pub async fn replay_dead(&self, r: &ReplayRequest) -> Result<ReplayResult> {
        self.post("/v1/dead/replay", Some(r), Safe::No).await
    }

    // ---- Schedules ----

    /// `GET /v1/schedules`, page after page (`limit` per page).
    pub fn schedule_pages(&self, limit: u32) -> Pages<ScheduleList> {
        self.pages(format!("/v1/schedules?limit={limit}"))
    }

    /// `GET /v1/schedules/{name}`.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView> {
        self.get(&format!("/v1/schedules/{}", enc(name))).await
    }

    /// `POST /v1/schedules` (admin).
    pub async fn create_schedule(&self, spec: &ScheduleSpec) -> Result<ScheduleView> {
        self.post("/v1/schedules", Some(spec), Safe::No).await
    }

    /// `PATCH /v1/schedules/{name}` (admin): the fields of `changes` replace the schedule's.
    pub async fn update_schedule(&self, name: &str, changes: &Value) -> Result<ScheduleView> {
        self.call(Method::Patch, &format!("/v1/schedules/{}", enc(name)), Some(to_bytes(changes)?), Safe::No).await
    }

    /// `POST /v1/schedules/{name}/pause` (admin).
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.post(&format!("/v1/schedules/{}/pause", enc(name)), None::<&Value>, Safe::Yes).await
    }

    /// `POST /v1/schedules/{name}/resume` (admin).
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.post(&format!("/v1/schedules/{}/resume", enc(name)), None::<&Value>, Safe::Yes).await
    }

    /// `POST /v1/schedules/{name}/trigger` (admin): a run now, whatever its overlap policy.
    pub async fn trigger_schedule(&self, name: &str) -> Result<Triggered> {
        self.post(&format!("/v1/schedules/{}/trigger", enc(name)), None::<&Value>, Safe::No).await
    }

    /// `DELETE /v1/schedules/{name}` (admin); its jobs stay.
    pub async fn delete_schedule(&self, name: &str) -> Result<ScheduleDeleted> {
        self.call(Method::Delete, &format!("/v1/schedules/{}", enc(name)), None, Safe::Yes).await
    }

    // ---- Events, flow control, tokens ----

    /// `POST /v1/events`: resumes the workflow runs waiting for the event. With `id` the
    /// send is idempotent, so it is also retried after a 503 or a lost connection.
    pub async fn send_event(&self, e: &EventRequest) -> Result<EventSent> {
        let safe = if e.id.is_some() { Safe::Yes } else { Safe::No };
        self.post("/v1/events", Some(e), safe).await
    }

    /// `GET /v1/flow`: one key's state (`tenant`: an admin key names it).
    pub async fn flow_key(&self, key: &str, tenant: Option<&str>) -> Result<FlowKey> {
        let t = tenant.map_or(String::new(), |t| format!("&tenant={}", enc(t)));
        self.get(&format!("/v1/flow?key={}{t}", enc(key))).await
    }

    /// `GET /v1/flow/busiest`: the `n` keys with the most waiting jobs.
    pub async fn flow_busiest(&self, n: u32) -> Result<BusyKeys> {
        self.get(&format!("/v1/flow/busiest?n={n}")).await
    }

    /// `POST /v1/admin/flow/pause` (admin): a key of a tenant, or a type.
    pub async fn flow_pause(&self, target: &FlowPauseRequest) -> Result<FlowChanged> {
        self.post("/v1/admin/flow/pause", Some(target), Safe::Yes).await
    }

    /// `POST /v1/admin/flow/resume` (admin).
    pub async fn flow_resume(&self, target: &FlowPauseRequest) -> Result<FlowChanged> {
        self.post("/v1/admin/flow/resume", Some(target), Safe::Yes).await
    }

    /// `POST /v1/jobs/{id}/token`: a short-lived read token for one job (`ttl` like `15m`).
    pub async fn job_token(&self, id: &str, ttl: Option<&str>) -> Result<ReadToken> {
        let body = serde_json::json!({ "ttl": ttl });
        self.post(&format!("/v1/jobs/{}/token", enc(id)), Some(&body), Safe::No).await
    }

    /// `POST /v1/tokens`: a read token for the jobs of one tag.
    pub async fn tag_token(&self, tag: &str, tenant: Option<&str>, ttl: Option<&str>) -> Result<ReadToken> {
        let body = serde_json::json!({ "tag": tag, "tenant": tenant, "ttl": ttl });
        self.post("/v1/tokens", Some(&body), Safe::No).await
    }

    // ---- Live streams: `job_events` and `events` are in `stream.rs`, beside `EventStream` ----

    // ---- Health, identity, statistics ----

    /// `GET /health`: healthy, degraded or unhealthy (an unhealthy edge's 503 is read as
    /// its document, not as an error, and is not retried).
    pub async fn health(&self) -> Result<Health> {
        let resp = self.transport.send(self.request(Method::Get, "/health", None, &[])).await?;
        match resp.status {
            200..=299 => decode(Method::Get, "/health", &resp.body),
            503 => serde_json::from_slice(&resp.body).map_err(|_| Error::from_reply(503, &resp.body)),
            s => Err(Error::from_reply(s, &resp.body)),
        }
    }

    /// `GET /v1/whoami`: the key's id, scopes and tenant.
    pub async fn whoami(&self) -> Result<Whoami> {
        self.get("/v1/whoami").await
    }

    /// `GET /v1/stats` (`tenant`: an admin key may name one).
    pub async fn stats(&self, tenant: Option<&str>) -> Result<Stats> {
        match tenant {
            Some(t) => self.get(&format!("/v1/stats?tenant={}", enc(t))).await,
            None => self.get("/v1/stats").await,
        }
    }

    // ---- Admin ----

    /// `GET /v1/admin/backups`: newest first.
    pub async fn backups(&self) -> Result<BackupList> {
        self.get("/v1/admin/backups").await
    }

    /// `GET /v1/admin/backups/latest`.
    pub async fn latest_backup(&self) -> Result<BackupSummary> {
        self.get("/v1/admin/backups/latest").await
    }

    /// `POST /v1/admin/backups`: a backup now; its manifest.
    pub async fn start_backup(&self) -> Result<Manifest> {
        self.post("/v1/admin/backups", None::<&Value>, Safe::No).await
    }

    /// `POST /v1/admin/backups/{id}/verify`.
    pub async fn verify_backup(&self, id: &str) -> Result<VerifyResult> {
        self.post(&format!("/v1/admin/backups/{}/verify", enc(id)), None::<&Value>, Safe::Yes).await
    }

    /// `POST /v1/admin/restore`: replaces every job with the backup's.
    pub async fn restore(&self, backup: &str) -> Result<Restored> {
        self.post("/v1/admin/restore", Some(&RestoreRequest { backup: backup.to_owned() }), Safe::No).await
    }

    /// `POST /v1/admin/reseal`: one page of one shard (idempotent).
    pub async fn reseal(&self, r: &ResealRequest) -> Result<ResealPage> {
        self.post("/v1/admin/reseal", Some(r), Safe::Yes).await
    }

    /// `POST /v1/admin/webhook-secret`: the secret a receiver at `url` verifies the
    /// deliveries of `job_type` (default `webhook`) with.
    pub async fn webhook_secret(&self, url: &str, job_type: Option<&str>) -> Result<WebhookSecret> {
        let body = match job_type {
            Some(t) => serde_json::json!({ "url": url, "type": t }),
            None => serde_json::json!({ "url": url }),
        };
        self.post("/v1/admin/webhook-secret", Some(&body), Safe::Yes).await
    }
}

fn to_bytes(v: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Invalid(e.to_string()))
}

/// Reads a 2xx body as `T`; the error names the route without its query (which may carry
/// search text or a token).
fn decode<T: DeserializeOwned>(method: Method, path: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        what: format!("{} {}", method.as_str(), path.split('?').next().unwrap_or(path)),
        reason: e.to_string(),
    })
}
