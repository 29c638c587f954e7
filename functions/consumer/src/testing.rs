//! Test support (unit tests only): a loopback edge that records every report the batcher
//! sends and answers it, test jobs, and a handler context around them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgejobs_core::machine::Event;
use edgejobs_core::protocol::Applied;
use edgejobs_core::report::{Answer, Answers, Reports};
use edgejobs_core::{ApiError, ErrorCode, Job, JobId, JobState};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::handlers::JobCtx;

/// The lease token the fake edge hands out with a start.
pub const LEASE: &str = "lease-token-of-the-test";

/// A test job of type `test` (attempt 1, holding [`LEASE`]), which no built-in handles.
pub fn job(seq: u64) -> Job {
    let mut job = edgejobs_core::spec::parse_spec(&serde_json::json!({ "type": "sleep" }), 1)
        .expect("spec")
        .into_job(JobId::new(0, 1, seq), 1)
        .0;
    job.job_type = "test".into();
    job.attempt = 1;
    job.lease = Some(LEASE.to_owned());
    job
}

#[derive(Debug, Default)]
struct Seen {
    /// Every event received, in the order requests arrived.
    events: Vec<(JobId, Event)>,
    requests: usize,
    /// Answered a start with these.
    jobs: HashMap<JobId, Job>,
    /// Refuse every update with this code.
    refuse_updates: Option<ErrorCode>,
}

/// A loopback `POST /v1/internal/events`: records the reports, answers each (a start with
/// its registered job and [`LEASE`], an update as told, the rest accepted).
#[derive(Debug, Clone)]
pub struct FakeEdge {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    /// Counts events received: what [`FakeEdge::wait_for`] waits on.
    count: watch::Sender<usize>,
}

impl FakeEdge {
    pub async fn start() -> FakeEdge {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = FakeEdge { url, seen: Arc::default(), count: watch::Sender::new(0) };
        let me = fake.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move { me.serve(conn).await });
            }
        });
        fake
    }

    /// An [`crate::edge::Edge`] reporting here.
    pub fn edge(&self) -> crate::edge::Edge {
        let token = edgejobs_core::config::Secret::new("ej_consumer_0123456789abcdef");
        crate::edge::Edge::new(&self.url, token, reqwest::Client::new(), Default::default())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("lock")
    }

    pub fn add_job(&self, job: &Job) {
        self.seen().jobs.insert(job.id.clone(), job.clone());
    }

    pub fn refuse_updates(&self, code: ErrorCode) {
        self.seen().refuse_updates = Some(code);
    }

    pub fn events(&self) -> Vec<(JobId, Event)> {
        self.seen().events.clone()
    }

    pub fn requests(&self) -> usize {
        self.seen().requests
    }

    /// Waits (at most 10 s) until the events received satisfy `cond`.
    pub async fn wait_for(&self, cond: impl Fn(&[(JobId, Event)]) -> bool) -> bool {
        let mut rx = self.count.subscribe();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if cond(&self.events()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !matches!(tokio::time::timeout(left, rx.changed()).await, Ok(Ok(()))) {
                return cond(&self.events());
            }
        }
    }

    async fn serve(&self, mut conn: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let reports: Reports = serde_json::from_slice(&buf[head_end..head_end + length]).expect("a report batch");
        let answers: Vec<Answer> = {
            let mut seen = self.seen();
            seen.requests += 1;
            reports
                .events
                .into_iter()
                .map(|r| {
                    let answer = match &r.event {
                        Event::Update { .. } if seen.refuse_updates.is_some() => {
                            let code = seen.refuse_updates.unwrap_or(ErrorCode::Internal);
                            Answer::Error(ApiError::new(code, "refused by the test"))
                        }
                        Event::Start { attempt } | Event::Reclaim { attempt, .. } => {
                            let job = seen.jobs.get(&r.id).cloned();
                            Answer::Ok(Box::new(Applied {
                                id: r.id.clone(),
                                state: JobState::Active,
                                attempt: *attempt,
                                job,
                                lease: Some(LEASE.to_owned()),
                            }))
                        }
                        _ => Answer::Ok(Box::new(Applied {
                            id: r.id.clone(),
                            state: JobState::Active,
                            attempt: 1,
                            job: None,
                            lease: None,
                        })),
                    };
                    seen.events.push((r.id, r.event));
                    answer
                })
                .collect()
        };
        self.count.send_modify(|n| *n += answers.len());
        let body = serde_json::to_string(&Answers { lease_ms: 30_000, answers }).expect("answers");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(resp.as_bytes()).await;
        let _ = conn.shutdown().await;
    }
}

/// A handler context for `job` whose live output goes to `edge` (with `linger`), whose
/// guarded client may call loopback on `allow` (e.g. `127.0.0.1:4000`).
pub fn ctx(job: &Job, edge: &FakeEdge, linger: Duration, allow: &str) -> JobCtx {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let guard = Arc::new(crate::outbound::Guard::new(
        edgejobs_core::outbound::Allow::parse(allow).expect("allow"),
        HashMap::new(),
    ));
    let live = crate::live::Live::start(edge.edge(), job, linger, cancel.clone(), Arc::clone(&metrics));
    JobCtx {
        job: job.clone(),
        cancel,
        progress: crate::handlers::Progress::channel().0,
        deadline: std::time::Instant::now() + Duration::from_secs(30),
        upstreams: Arc::new(crate::upstreams::Upstreams::new(HashMap::new())),
        metrics,
        http: crate::outbound::client(Arc::clone(&guard)).expect("client"),
        outbound: guard,
        payload_keys: None,
        max_response_bytes: 1024 * 1024,
        step: crate::handlers::steps::Steps::new(job, None),
        live,
        trace: Arc::new(crate::telemetry::Traced::off(&job.trace.clone().unwrap_or_else(test_trace))),
    }
}

/// A fixed trace context for jobs made without one.
pub fn test_trace() -> edgejobs_core::trace::TraceContext {
    edgejobs_core::trace::TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None)
        .expect("a valid traceparent")
}
