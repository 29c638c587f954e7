//! Test helpers: an HTTP client bound to the shared stack, and polling with bounds.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use edgejobs_tests::fake_llm::FakeLlm;
use edgejobs_tests::hooks::Hooks;
use edgejobs_tests::openapi::OpenApi;
use edgejobs_tests::stack::{Profile, Stack, StackOptions};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

/// A named test of the suite.
pub type Test = (&'static str, fn(&Ctx) -> anyhow::Result<()>);

/// What every test gets: the stack's addresses and keys, and a client.
#[derive(Debug)]
pub struct Ctx {
    pub edge: String,
    pub api_key: String,
    pub admin_key: String,
    pub consumer_token: String,
    /// The stack's second named consumer token (`host-b`); the consumer reports as `host-a`.
    pub consumer_token_b: String,
    pub limited_key: String,
    /// Two keys of tenant `globex` and one of `initech` (capped at 3 jobs not yet final);
    /// `api_key` is the `default` tenant's.
    pub tenant_keys: [String; 3],
    pub upstash_url: String,
    pub upstash_token: String,
    pub http: Client,
    pub hooks: Hooks,
    pub openapi: OpenApi,
    /// A second stack for tests that break things (stop Redis, restart wrangler, kill a
    /// consumer), started on first use; the lock serializes those tests.
    fault: Mutex<Option<Stack>>,
    pub consumer_url: String,
    pub consumer_env: Vec<(String, String)>,
    pub llm: FakeLlm,
    fault_dir: PathBuf,
    /// What the stacks may reach outbound: the webhook target and the LLM fake.
    pub outbound_allow: String,
    /// A free loopback port inside the allow-list, for `examples/webhook-receiver`.
    pub receiver_port: u16,
    /// A listener holding `receiver_port` until the receiver's test takes and closes it.
    pub receiver_reservation: Mutex<Option<std::net::TcpListener>>,
    /// The shared stack's state directory (logs of what tests start go under `logs/`).
    pub state_dir: PathBuf,
    /// A free loopback port inside the allow-list, for `examples/workflow-worker`, held like
    /// `receiver_port`.
    pub workflow_port: u16,
    pub workflow_reservation: Mutex<Option<std::net::TcpListener>>,
    /// The loopback port the live-results browser test serves its page from: its origin is
    /// the shared stack's `ALLOWED_ORIGINS` (#30). Held like `receiver_port`.
    pub page_port: u16,
    pub page_reservation: Mutex<Option<std::net::TcpListener>>,
    /// The `default` tenant's keys limited to 3 requests per 10 s, one per client SDK
    /// (TypeScript, Python, Rust), so that each client's 429 test has its own window.
    pub sdk_keys: [String; 3],
    /// Loopback ports inside the allow-list where the TypeScript and the Python scenarios
    /// receive a webhook delivery to verify, held like `receiver_port` until taken.
    pub sdk_ports: [u16; 2],
    pub sdk_reservations: [Mutex<Option<std::net::TcpListener>>; 2],
    /// The shared stack's OTLP receiver (#32): its HTTP base, with the query API.
    pub otlp_url: String,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// The stable error code of an error response.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Ctx {
    pub fn new(
        stack: &Stack,
        llm: FakeLlm,
        hooks: Hooks,
        receiver: std::net::TcpListener,
        workflow: std::net::TcpListener,
        page: std::net::TcpListener,
        sdk: [std::net::TcpListener; 2],
    ) -> Ctx {
        let port = |l: &std::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or_default();
        Ctx {
            sdk_keys: stack.secrets.sdk_keys.clone().unwrap_or_default(),
            sdk_ports: [port(&sdk[0]), port(&sdk[1])],
            sdk_reservations: sdk.map(|l| Mutex::new(Some(l))),
            workflow_port: workflow.local_addr().map(|a| a.port()).unwrap_or_default(),
            workflow_reservation: Mutex::new(Some(workflow)),
            page_port: page.local_addr().map(|a| a.port()).unwrap_or_default(),
            page_reservation: Mutex::new(Some(page)),
            receiver_port: receiver.local_addr().map(|a| a.port()).unwrap_or_default(),
            receiver_reservation: Mutex::new(Some(receiver)),
            edge: stack.edge_url.clone(),
            api_key: stack.secrets.api_key.clone(),
            admin_key: stack.secrets.admin_key.clone(),
            consumer_token: stack.secrets.consumer_token.clone(),
            consumer_token_b: stack.secrets.consumer_token_b.clone().unwrap_or_default(),
            limited_key: stack.secrets.limited_key.clone().unwrap_or_default(),
            tenant_keys: stack.secrets.tenant_keys.clone().unwrap_or_default(),
            upstash_url: stack.upstash_url.clone(),
            upstash_token: stack.secrets.upstash_token.clone(),
            http: Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            hooks,
            openapi: OpenApi::load(&StackOptions::default_root().join("functions/edge/openapi.json"))
                .expect("openapi.json"),
            consumer_url: stack.consumer_url.clone(),
            consumer_env: stack.opts.consumer_env.clone(),
            llm,
            fault: Mutex::new(None),
            fault_dir: stack.opts.state_dir.join("fault"),
            outbound_allow: stack.opts.outbound_allow.clone(),
            state_dir: stack.opts.state_dir.clone(),
            otlp_url: stack.otlp_url.clone(),
        }
    }

    /// Takes (closes) the reservation of SDK port `i` so that a scenario process can bind it.
    pub fn take_sdk_port(&self, i: usize) -> u16 {
        drop(self.sdk_reservations[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        self.sdk_ports[i]
    }

    /// Runs `f` with the fault stack (started on first use), holding it exclusively.
    pub fn with_fault_stack<R>(&self, f: impl FnOnce(&mut Stack) -> anyhow::Result<R>) -> anyhow::Result<R> {
        let mut guard = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let opts = StackOptions {
                root: StackOptions::default_root(),
                state_dir: self.fault_dir.clone(),
                dev_vars: None,
                consumer: false,
                persist_redis: false,
                vars: Vec::new(),
                consumer_env: self.consumer_env.clone(),
                profile: Profile::default(),
                outbound_allow: self.outbound_allow.clone(),
                native_lease: Some("3s".into()),
                edge_upstash_url: None,
                traces: true,
            };
            *guard = Some(Stack::start(opts).context("starting the fault stack")?);
        }
        let stack = guard.as_mut().context("fault stack")?;
        let outcome = f(stack);
        // A test's consumers never outlive it: one left running (by an early return, or
        // started under an index its test did not stop) would take the next test's jobs
        // without that test's settings.
        stack.kill_consumers();
        outcome
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.edge)
    }

    /// Sends a request to something other than the edge API (no OpenAPI check).
    pub fn send_unchecked(&self, req: RequestBuilder) -> anyhow::Result<Resp> {
        let req = req.build().context("malformed request")?;
        self.execute(req)
    }

    fn execute(&self, req: reqwest::blocking::Request) -> anyhow::Result<Resp> {
        let r = self.http.execute(req).context("request failed")?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text()?;
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok(Resp { status, headers, body })
    }

    /// Sends a request and checks the answer against the OpenAPI description: every
    /// response any test sees must be documented (a text page is checked by promtool instead).
    pub fn send(&self, req: RequestBuilder) -> anyhow::Result<Resp> {
        let req = req.build().context("malformed request")?;
        let (method, path) = (req.method().to_string(), req.url().path().to_owned());
        let r = self.execute(req)?;
        if !(r.body.is_string() && r.status == 200) {
            self.openapi
                .check(&method, &path, r.status, &r.body)
                .map_err(|e| anyhow::anyhow!("OpenAPI mismatch: {e}"))?;
        }
        Ok(r)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.api_key))
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Resp> {
        self.send(self.http.post(self.url(path)).bearer_auth(&self.api_key).json(body))
    }

    /// Enqueues a job and returns its id, failing unless the answer is 201.
    pub fn enqueue(&self, body: &Value) -> anyhow::Result<String> {
        let r = self.post("/v1/jobs", body)?;
        if r.status != 201 {
            bail!("enqueue answered {}: {}", r.status, r.body);
        }
        r.body["id"].as_str().map(str::to_owned).context("no id in the answer")
    }

    /// Polls a job until `done` holds for it, for at most `timeout`.
    pub fn wait_job(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(&format!("/v1/jobs/{id}"))?;
            if r.status == 200 && done(&r.body) {
                return Ok(r.body);
            }
            if Instant::now() >= deadline {
                bail!("job {id} did not reach the expected state within {timeout:?}; last: {} {}", r.status, r.body);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls until the job is in `state`.
    pub fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.wait_job(id, timeout, |j| j["state"] == state)
    }
}

/// Fails with `msg` unless `cond` holds.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> anyhow::Result<()> {
    if cond { Ok(()) } else { bail!(msg()) }
}

impl Ctx {
    /// Sends with a specific bearer key (or none).
    pub fn with_key(&self, req: RequestBuilder, key: Option<&str>) -> anyhow::Result<Resp> {
        self.send(match key {
            Some(k) => req.bearer_auth(k),
            None => req,
        })
    }

    /// A consumer's report about attempt `attempt` of job `id`.
    pub fn report(&self, id: &str, event: &Value) -> anyhow::Result<Resp> {
        self.send(
            self.http
                .post(self.url(&format!("/v1/internal/jobs/{id}/events")))
                .bearer_auth(&self.consumer_token)
                .json(event),
        )
    }

    /// Ids of the jobs listed under `path` (following every cursor), newest first.
    pub fn list_all(&self, path: &str) -> anyhow::Result<Vec<String>> {
        self.list_all_as(&self.api_key, path)
    }

    /// [`Ctx::list_all`] with `key`.
    pub fn list_all_as(&self, key: &str, path: &str) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_owned(),
            };
            let r = self.with_key(self.http.get(self.url(&url)), Some(key))?;
            if r.status != 200 {
                bail!("list {url}: {} {}", r.status, r.body);
            }
            for j in r.body["jobs"].as_array().cloned().unwrap_or_default() {
                ids.push(j["id"].as_str().unwrap_or_default().to_owned());
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(ids),
            }
        }
        bail!("more than 100 pages under {path}")
    }
}

/// A tag unique to one test run, so tests sharing the stack can find their own jobs.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", edgejobs_tests::stack::random_hex(6))
}

/// The outbound allow-list of the test stacks: exactly the loopback ports of the webhook
/// target and the LLM fake.
pub fn outbound_allow(hooks: &Hooks, llm: &FakeLlm, more: &[u16]) -> String {
    let port = |base: &str| base.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap_or("").to_owned();
    let mut allow = vec![port(&hooks.base), port(&llm.base_url)];
    allow.extend(more.iter().map(u16::to_string));
    allow.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
}

/// The consumer settings every test stack uses: the fake LLM, quick polls, short leases.
pub fn consumer_env(llm: &FakeLlm) -> Vec<(String, String)> {
    [
        ("EDGEJOBS_LLM_BASE_URL", llm.base_url.as_str()),
        ("EDGEJOBS_LLM_API_KEY", llm.key.as_str()),
        ("EDGEJOBS_LLM_MODEL", "fake-model"),
        ("EDGEJOBS_POLL_MAX", "300ms"),
        ("EDGEJOBS_LEASE_RENEW", "1s"),
        ("RUST_LOG", "info,edgejobs_consumer::handlers=debug"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Reads one sample from a Prometheus text page: the first line starting with `series`.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

/// Runs `promtool check metrics` on an exposition page; fails on any problem it reports.
pub fn promtool_check_metrics(page: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run promtool")?;
    child.stdin.take().context("stdin")?.write_all(page.as_bytes())?;
    let out = child.wait_with_output()?;
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure(out.status.success() && report.trim().is_empty(), || format!("promtool check metrics: {report}"))
}

/// One sample of another stack's edge `/metrics` (0 when the series is absent).
pub fn metric_on(ctx: &Ctx, stack: &Stack, series: &str) -> anyhow::Result<f64> {
    // With the admin key: a fresh scrape (an anonymous one may be up to 5 s old).
    let page =
        ctx.http.get(format!("{}/metrics", stack.edge_url)).bearer_auth(&stack.secrets.admin_key).send()?.text()?;
    Ok(metric(&page, &format!("{series} ")).unwrap_or(0.0))
}

/// Enqueues a job on another stack (the fault stack); fails unless 201.
pub fn enqueue_on(ctx: &Ctx, stack: &Stack, body: &Value) -> anyhow::Result<String> {
    let r =
        ctx.send(ctx.http.post(format!("{}/v1/jobs", stack.edge_url)).bearer_auth(&stack.secrets.api_key).json(body))?;
    ensure(r.status == 201, || format!("enqueue: {} {}", r.status, r.body))?;
    Ok(r.body["id"].as_str().unwrap_or_default().to_owned())
}

/// Reads a job (or its error body) from another stack.
pub fn job_on(ctx: &Ctx, stack: &Stack, id: &str) -> anyhow::Result<Value> {
    Ok(ctx.send(ctx.http.get(format!("{}/v1/jobs/{id}", stack.edge_url)).bearer_auth(&stack.secrets.api_key))?.body)
}

/// Asks another stack to cancel a job.
pub fn cancel_on(ctx: &Ctx, stack: &Stack, id: &str) -> anyhow::Result<Resp> {
    ctx.send(
        ctx.http
            .post(format!("{}/v1/jobs/{id}/cancel", stack.edge_url))
            .bearer_auth(&stack.secrets.api_key)
            .json(&serde_json::json!({})),
    )
}

/// Polls a job on another stack until it is in `state`, for at most a minute.
pub fn wait_on(ctx: &Ctx, stack: &Stack, id: &str, state: &str) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    let ok = edgejobs_tests::proc::wait_until(Duration::from_secs(60), || {
        last = job_on(ctx, stack, id).unwrap_or(Value::Null);
        last["state"] == state
    });
    ensure(ok, || format!("job {id} did not become {state}: {last}"))?;
    Ok(last)
}

/// A consumer's report to another stack's edge (with that stack's consumer token).
pub fn report_on(ctx: &Ctx, stack: &Stack, id: &str, event: &Value) -> anyhow::Result<Resp> {
    ctx.send(
        ctx.http
            .post(format!("{}/v1/internal/jobs/{id}/events", stack.edge_url))
            .bearer_auth(&stack.secrets.consumer_token)
            .json(event),
    )
}
