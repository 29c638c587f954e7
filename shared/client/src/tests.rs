//! The client against the in-memory transport: retries and `Retry-After`, error mapping,
//! pages, and event streams across dropped connections.

use std::sync::Arc;
use std::time::Duration;

use edgejobs_api::{JobSpec, JobState};
use serde_json::{Value, json};

use crate::fake::{FakeTransport, Scripted};
use crate::{Client, Code, Error, ErrorCode, JobQuery, Method, Step};

fn job(id: &str, state: &str) -> Value {
    json!({
        "id": id, "type": "noop", "tenant": "default", "lane": "edge", "state": state, "payload": {},
        "attempt": 1, "series_base": 0, "max_attempts": 3,
        "backoff": { "base_ms": 1000, "factor": 2.0, "cap_ms": 60000 }, "timeout_ms": 30000,
        "tags": [], "metadata": {}, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "run_at": "2026-01-01T00:00:00Z", "cancel_requested": false
    })
}

fn client(script: Vec<Scripted>) -> (Client, Arc<FakeTransport>) {
    let fake = Arc::new(FakeTransport::new(script));
    (Client::with_transport("http://api.test/", "k1", fake.clone()), fake)
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

#[test]
fn a_429_is_retried_after_its_retry_after() {
    let (c, fake) = client(vec![
        Scripted::error(429, "rate_limited", &[("Retry-After", "7")]),
        Scripted::error(429, "rate_limited", &[]),
        Scripted::json(201, &job("j1", "queued"), &[]),
    ]);
    let j = block(c.enqueue(&JobSpec { job_type: "noop".into(), ..JobSpec::default() })).expect("enqueued");
    assert_eq!((j.id.as_str(), j.state), ("j1", JobState::Queued));
    // The named wait first, then the policy's backoff for a 429 without one.
    assert_eq!(fake.sleeps(), vec![Duration::from_secs(7), Duration::from_secs(1)]);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].url, "http://api.test/v1/jobs");
    assert_eq!(reqs[0].header("authorization"), Some("Bearer k1"));
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(reqs[0].body.as_deref().unwrap_or_default()).expect("json body");
    assert_eq!(body, json!({ "type": "noop" }));
}

#[test]
fn retries_stop_after_the_policy_and_return_the_typed_error() {
    let script = (0..6).map(|_| Scripted::error(429, "rate_limited", &[("retry-after", "999")])).collect();
    let (c, fake) = client(script);
    let e = block(c.job("j1")).expect_err("still limited");
    assert_eq!(e.code(), Some(ErrorCode::RateLimited));
    assert!(e.is_retryable());
    // Five retries, each wait capped at 60 s.
    assert_eq!(fake.sleeps(), vec![Duration::from_secs(60); 5]);
}

/// A 503 or a lost connection is repeated only when the request is safe to repeat: a read,
/// or an enqueue with an idempotency key; an enqueue without one is returned at once.
#[test]
fn a_503_is_retried_only_when_repeating_is_safe() {
    let (c, fake) = client(vec![Scripted::error(503, "unavailable", &[])]);
    let e = block(c.enqueue(&JobSpec { job_type: "noop".into(), ..JobSpec::default() })).expect_err("503");
    assert_eq!((e.status(), e.code()), (Some(503), Some(ErrorCode::Unavailable)));
    assert!(fake.sleeps().is_empty());

    let (c, fake) = client(vec![
        Scripted::error(503, "unavailable", &[]),
        Scripted::Fail("connection reset".into()),
        Scripted::json(200, &job("j1", "queued"), &[]),
    ]);
    let spec = JobSpec { job_type: "noop".into(), idempotency_key: Some("order-1".into()), ..JobSpec::default() };
    assert!(block(c.enqueue(&spec)).is_ok());
    assert_eq!(fake.sleeps(), vec![Duration::from_millis(500), Duration::from_secs(1)]);

    let (c, _) = client(vec![Scripted::Fail("refused".into())]);
    let e = block(c.cancel("j1")).expect_err("no retry of a cancel");
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
}

/// A client that generates keys sends one with each enqueue, keeps it across its retries
/// (so a lost answer cannot make a second job), and leaves a key the caller gave alone.
#[test]
fn generated_keys_make_enqueues_safe_to_repeat() {
    let (c, fake) = client(vec![
        Scripted::error(503, "unavailable", &[]),
        Scripted::Fail("connection reset".into()),
        Scripted::json(201, &job("j1", "queued"), &[]),
        Scripted::json(201, &job("j2", "queued"), &[]),
        Scripted::json(201, &job("j3", "queued"), &[]),
    ]);
    let c = c.with_generated_keys(true);
    let keys = |from: usize| -> Vec<String> {
        fake.requests()[from..]
            .iter()
            .map(|r| serde_json::from_slice::<Value>(r.body.as_deref().unwrap_or_default()).expect("json"))
            .map(|b| b["idempotency_key"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(block(c.enqueue(&JobSpec { job_type: "noop".into(), ..JobSpec::default() })).is_ok());
    let first = keys(0);
    assert_eq!(first.len(), 3, "two retries: {first:?}");
    assert!(first[0].starts_with("rs-") && first[0].len() == 35, "{first:?}");
    assert!(first.iter().all(|k| *k == first[0]), "one key across the retries: {first:?}");
    assert!(block(c.enqueue(&JobSpec { job_type: "noop".into(), ..JobSpec::default() })).is_ok());
    let own = JobSpec { job_type: "noop".into(), idempotency_key: Some("order-7".into()), ..JobSpec::default() };
    assert!(block(c.enqueue(&own)).is_ok());
    let later = keys(3);
    assert_ne!(later[0], first[0], "each enqueue its own key");
    assert_eq!(later[1], "order-7");
    assert_ne!(crate::idempotency_key().expect("random"), crate::idempotency_key().expect("random"));
}

#[test]
fn error_answers_map_to_typed_errors() {
    let cases: Vec<(u16, &str, Code)> = vec![
        (404, "job_not_found", Code::Known(ErrorCode::JobNotFound)),
        (401, "unauthorized", Code::Known(ErrorCode::Unauthorized)),
        (403, "forbidden", Code::Known(ErrorCode::Forbidden)),
        (409, "invalid_transition", Code::Known(ErrorCode::InvalidTransition)),
        (400, "some_future_code", Code::Other("some_future_code".into())),
    ];
    for (status, code, want) in cases {
        let (c, _) = client(vec![Scripted::error(status, code, &[])]);
        match block(c.retry("j1")) {
            Err(Error::Api { status: s, code: got, message, .. }) => {
                assert_eq!((s, &got), (status, &want));
                assert_eq!(message, format!("a {code}"));
            }
            other => panic!("{status} {code}: {other:?}"),
        }
    }
    // A 2xx that is not the documented document is a decode error naming the route.
    let (c, _) = client(vec![Scripted::json(200, &json!({ "nope": 1 }), &[])]);
    let e = block(c.job("j1")).expect_err("not a job");
    assert!(matches!(&e, Error::Decode { what, .. } if what == "GET /v1/jobs/j1"), "{e:?}");
}

#[test]
fn pages_follow_the_cursor_to_the_end() {
    let summary = |id: &str| {
        let mut j = job(id, "completed");
        j.as_object_mut().map(|o| o.remove("payload"));
        j
    };
    let (c, fake) = client(vec![
        Scripted::json(200, &json!({ "jobs": [summary("a"), summary("b")], "next_cursor": "c 1" }), &[]),
        Scripted::json(200, &json!({ "jobs": [summary("c")], "next_cursor": null }), &[]),
    ]);
    let q = JobQuery { tag: Some("t".into()), limit: Some(2), ..JobQuery::default() };
    let all = block(c.job_pages(&q).collect(10)).expect("pages");
    assert_eq!(all.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
    let urls: Vec<String> = fake.requests().into_iter().map(|r| r.url).collect();
    assert_eq!(urls, ["http://api.test/v1/jobs?tag=t&limit=2", "http://api.test/v1/jobs?tag=t&limit=2&cursor=c%201"]);
}

/// A job's stream split anywhere, dropped mid-event and resumed with `Last-Event-ID`, ends
/// after the final state.
#[test]
fn a_job_stream_resumes_after_its_last_chunk_and_ends_when_final() {
    let first = "retry: 1000\n\nevent: chunk\nid: 1\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"Hel\"}\n\nevent: chu";
    let second = "event: chunk\nid: 2\ndata: {\"attempt\":1,\"stream\":\"tokens\",\"data\":\"lo\"}\n\nevent: state\ndata: {\"id\":\"j1\",\"type\":\"llm.chat\",\"state\":\"completed\",\"attempt\":1,\"updated_at\":\"x\"}\n\n";
    let split = |s: &str| s.as_bytes().chunks(5).map(<[u8]>::to_vec).collect::<Vec<_>>();
    let (c, fake) = client(vec![
        Scripted::Stream { pieces: split(first), fail_after: true },
        Scripted::error(503, "unavailable", &[]),
        Scripted::Stream { pieces: split(second), fail_after: false },
    ]);
    let mut s = c.job_events("j1").with_backoff(Duration::from_millis(100));
    let mut text = String::new();
    let mut steps = Vec::new();
    block(async {
        for _ in 0..20 {
            match s.next().await.expect("step") {
                Step::Event(e) if e.event == "chunk" => text.push_str(&e.chunk().expect("chunk").data),
                Step::Event(e) => steps.push(format!("state {:?}", e.state().expect("state").state)),
                Step::Opened { again } => steps.push(format!("opened again={again}")),
                Step::Dropped { retry_in, .. } => steps.push(format!("dropped {retry_in:?}")),
                Step::Ended => break,
            }
        }
    });
    assert_eq!(text, "Hello");
    assert_eq!(steps, ["opened again=false", "dropped 100ms", "dropped 200ms", "opened again=true", "state Completed"]);
    let reqs = fake.requests();
    assert_eq!(reqs[0].header("last-event-id"), None);
    assert_eq!(reqs[1].header("last-event-id"), Some("1"));
    assert_eq!(reqs[2].header("last-event-id"), Some("1"));
    assert_eq!(reqs[2].header("accept"), Some("text/event-stream"));
    assert_eq!(reqs[2].method, Method::Get);
    assert_eq!(fake.sleeps(), vec![Duration::from_millis(100), Duration::from_millis(200)]);
}

/// A refusal of the first connection is the caller's error at once (a wrong key, no job).
#[test]
fn a_refused_stream_is_an_error() {
    let (c, _) = client(vec![Scripted::error(404, "job_not_found", &[])]);
    let e = block(c.job_events("nope").next()).expect_err("refused");
    assert_eq!(e.code(), Some(ErrorCode::JobNotFound));
}

#[test]
fn the_long_poll_waits_in_steps_of_at_most_60_s() {
    let (c, fake) =
        client(vec![Scripted::json(200, &job("j1", "active"), &[]), Scripted::json(200, &job("j1", "completed"), &[])]);
    let j = block(c.wait_for("j1", Duration::from_secs(90))).expect("job");
    assert_eq!(j.state, JobState::Completed);
    let urls: Vec<String> = fake.requests().into_iter().map(|r| r.url).collect();
    assert_eq!(urls, ["http://api.test/v1/jobs/j1?wait=60s", "http://api.test/v1/jobs/j1?wait=30s"]);
}

#[test]
fn an_unhealthy_edge_is_read_not_retried() {
    let doc = json!({ "status": "unhealthy", "checked_at": "x", "version": "1" });
    let (c, fake) = client(vec![Scripted::json(503, &doc, &[])]);
    let h = block(c.health()).expect("health");
    assert_eq!(h.status, edgejobs_api::HealthStatus::Unhealthy);
    assert!(fake.sleeps().is_empty());
}
