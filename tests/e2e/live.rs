//! Live results (#30): progress, metadata and stream chunks of a running attempt, served to
//! subscribers over Server-Sent Events and WebSockets by the job's shard; `Last-Event-ID`
//! resumes; long polls; read tokens for browsers and CORS; and `llm.chat` streaming the fake
//! LLM's tokens to an `EventSource` in a real headless chromium.
//!
//! The stream tests run on the fault stack, which has no consumer: the test is the consumer
//! (it starts the attempt and reports its updates with the lease the start answered), so
//! every chunk and its order are the test's own.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, job_on, report_on, unique};

pub const TESTS: &[Test] = &[
    ("live_updates_stream_over_sse_in_order_and_end_with_the_final_state", updates_stream_over_sse),
    ("live_last_event_id_resumes_after_a_disconnect", last_event_id_resumes),
    ("live_bad_or_stale_updates_are_refused_and_change_nothing", bad_updates_change_nothing),
    ("live_a_long_poll_answers_when_the_job_ends", long_poll_answers_when_the_job_ends),
    ("live_read_tokens_read_their_job_or_tag_only", tokens_read_their_job_or_tag_only),
    ("live_a_websocket_gets_the_same_events", websocket_gets_the_same_events),
    ("live_tag_subscribers_see_the_states_of_their_tag", tag_subscribers_see_states),
    ("live_cors_answers_allowed_origins_only", cors_answers_allowed_origins_only),
    ("live_llm_chat_streams_tokens_to_a_browser", llm_chat_streams_to_a_browser),
];

const WAIT: Duration = Duration::from_secs(30);

/// One Server-Sent Event as a subscriber reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// An open SSE subscription: events arrive on `rx`; `None` when the server ended it.
pub struct Sub {
    pub status: u16,
    pub body: String,
    rx: mpsc::Receiver<Option<Ev>>,
}

impl Sub {
    /// Events until `done` holds for what arrived (or the stream ends), for at most `limit`.
    pub fn until(&self, limit: Duration, done: impl Fn(&[Ev]) -> bool) -> anyhow::Result<(Vec<Ev>, bool)> {
        let end = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            if done(&got) {
                return Ok((got, false));
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Some(e)) => got.push(e),
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return Ok((got, true)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    anyhow::bail!("the stream did not get there within {limit:?}; got {got:?}")
                }
            }
        }
    }

    /// Every event until the server ends the stream.
    pub fn to_end(&self, limit: Duration) -> anyhow::Result<Vec<Ev>> {
        let (got, ended) = self.until(limit, |_| false)?;
        ensure(ended, || "the stream did not end".into())?;
        Ok(got)
    }
}

/// Opens `url` as an event stream with these headers; the events are read on a thread.
pub fn subscribe(url: &str, headers: &[(&str, String)]) -> anyhow::Result<Sub> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let mut req = client.get(url).header("accept", "text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send()?;
    let status = resp.status().as_u16();
    let (tx, rx) = mpsc::channel();
    if status != 200 {
        let body = resp.text().unwrap_or_default();
        drop(tx);
        return Ok(Sub { status, body, rx });
    }
    std::thread::spawn(move || read_events(resp, &tx));
    Ok(Sub { status, body: String::new(), rx })
}

fn read_events(resp: impl Read, tx: &mpsc::Sender<Option<Ev>>) {
    let (mut id, mut event, mut data) = (None, String::new(), String::new());
    for line in BufReader::new(resp).lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            if !event.is_empty() || !data.is_empty() {
                let parsed = serde_json::from_str(&data).unwrap_or(Value::String(data.clone()));
                let ev = Ev { id, event: std::mem::take(&mut event), data: parsed };
                if tx.send(Some(ev)).is_err() {
                    return;
                }
            }
            (id, data) = (None, String::new());
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_owned();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    let _ = tx.send(None);
}

/// A native job started by the test as its consumer on the fault stack: its id and lease.
fn started(ctx: &Ctx, stack: &Stack, tag: &str) -> anyhow::Result<(String, String)> {
    let id = crate::util::enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 }, "tags": [tag] }))?;
    let start = report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
    let lease = start.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    ensure(start.status == 200 && !lease.is_empty(), || format!("start: {} {}", start.status, start.body))?;
    Ok((id, lease))
}

fn update(lease: &str, body: Value) -> Value {
    let mut e = json!({ "event": "update", "attempt": 1, "lease": lease });
    if let (Some(e), Some(b)) = (e.as_object_mut(), body.as_object()) {
        e.extend(b.clone());
    }
    e
}

fn tokens(words: &[&str]) -> Value {
    Value::Array(words.iter().map(|w| json!({ "stream": "tokens", "data": w })).collect())
}

fn key(stack: &Stack) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {}", stack.secrets.api_key))]
}

fn chunks(evs: &[Ev]) -> Vec<(u64, String)> {
    evs.iter()
        .filter(|e| e.event == "chunk")
        .map(|e| (e.id.unwrap_or(0), e.data["data"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn complete(ctx: &Ctx, stack: &Stack, id: &str, lease: &str) -> anyhow::Result<()> {
    crate::cli::complete_native(ctx, stack, id, lease)
}

/// A subscriber who came first sees the job's state, then each update's chunks in order
/// with their numbers, the progress and metadata in the states, the final state, and the end
/// of the stream; the job shows the progress and the merged metadata.
fn updates_stream_over_sse(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started(ctx, stack, &unique("live"))?;
        let sub = subscribe(&format!("{}/v1/jobs/{id}/events", stack.edge_url), &key(stack))?;
        ensure(sub.status == 200, || format!("subscribe: {} {}", sub.status, sub.body))?;
        let (first, _) = sub.until(WAIT, |e| !e.is_empty())?;
        ensure(first[0].event == "state" && first[0].data["state"] == "active", || format!("first: {first:?}"))?;
        let u1 = update(&lease, json!({ "progress": { "percent": 25, "message": "reading" }, "metadata": { "pages": 1, "gone": true }, "chunks": tokens(&["Hel", "lo"]) }));
        let r = report_on(ctx, stack, &id, &u1)?;
        ensure(r.status == 200, || format!("update: {} {}", r.status, r.body))?;
        let u2 = update(&lease, json!({ "metadata": { "pages": 2, "gone": null }, "chunks": tokens(&[",", " world"]) }));
        ensure(report_on(ctx, stack, &id, &u2)?.status == 200, || "second update".into())?;
        complete(ctx, stack, &id, &lease)?;
        let rest = sub.to_end(WAIT)?;
        let got = chunks(&rest);
        let want: Vec<(u64, String)> =
            [(1, "Hel"), (2, "lo"), (3, ","), (4, " world")].iter().map(|(n, s)| (*n, s.to_string())).collect();
        ensure(got == want, || format!("chunks: {got:?}"))?;
        let states: Vec<&Ev> = rest.iter().filter(|e| e.event == "state").collect();
        ensure(states.iter().any(|s| s.data["progress"]["percent"].as_f64() == Some(25.0)), || format!("progress: {states:?}"))?;
        let last = states.last().ok_or_else(|| anyhow::anyhow!("no state"))?;
        ensure(last.data["state"] == "completed" && last.data["result"]["ok"] == 1, || format!("final: {last:?}"))?;
        ensure(rest.last().is_some_and(|e| e.event == "state"), || "the final state is the last event".into())?;
        let job = job_on(ctx, stack, &id)?;
        ensure(job["metadata"] == json!({ "pages": 2 }), || format!("merged metadata: {}", job["metadata"]))?;
        ensure(job["progress"]["message"] == "reading", || format!("progress: {}", job["progress"]))
    })
}

/// A subscriber that reconnects with the last id it got receives the chunks after it, and
/// nothing twice; a finished job's stream ends after its backlog and state.
fn last_event_id_resumes(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started(ctx, stack, &unique("resume"))?;
        let url = format!("{}/v1/jobs/{id}/events", stack.edge_url);
        let sub = subscribe(&url, &key(stack))?;
        let words = ["a", "b", "c", "d", "e", "f"];
        let r = report_on(ctx, stack, &id, &update(&lease, json!({ "chunks": tokens(&words[..3]) })))?;
        ensure(r.status == 200, || format!("update: {}", r.body))?;
        let (seen, _) = sub.until(WAIT, |e| chunks(e).len() == 3)?;
        let last = chunks(&seen).last().map(|c| c.0).unwrap_or(0);
        ensure(last == 3, || format!("first part: {seen:?}"))?;
        drop(sub); // the disconnect
        report_on(ctx, stack, &id, &update(&lease, json!({ "chunks": tokens(&words[3..]) })))?;
        let mut h = key(stack);
        h.push(("last-event-id", last.to_string()));
        let again = subscribe(&url, &h)?;
        let (more, _) = again.until(WAIT, |e| chunks(e).len() == 3)?;
        ensure(chunks(&more) == [(4, "d".into()), (5, "e".into()), (6, "f".into())], || format!("resumed: {more:?}"))?;
        complete(ctx, stack, &id, &lease)?;
        again.to_end(WAIT)?;
        // After the end: `?after=` reads the same way, and the stream ends by itself.
        let after = subscribe(&format!("{url}?after=5"), &key(stack))?;
        let tail = after.to_end(WAIT)?;
        ensure(chunks(&tail) == [(6, "f".into())], || format!("after 5: {tail:?}"))?;
        ensure(tail.last().is_some_and(|e| e.data["state"] == "completed"), || format!("{tail:?}"))
    })
}

/// Updates are fenced: a stale attempt, a missing lease, bad values and a stream over its cap
/// are refused with their codes and leave the job and its stream as they were.
fn bad_updates_change_nothing(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started(ctx, stack, &unique("fence"))?;
        let ok = report_on(ctx, stack, &id, &update(&lease, json!({ "chunks": tokens(&["kept"]) })))?;
        ensure(ok.status == 200, || format!("update: {}", ok.body))?;
        let before = job_on(ctx, stack, &id)?;
        let mut stale = update(&lease, json!({ "chunks": tokens(&["x"]) }));
        stale["attempt"] = json!(2);
        let mut unleased = update(&lease, json!({ "progress": { "percent": 1 } }));
        unleased["lease"] = json!("0".repeat(48));
        let big = "x".repeat(60_000);
        let cases: Vec<(Value, u16, &str)> = vec![
            (stale, 409, "stale_attempt"),
            (unleased, 409, "lease_mismatch"),
            (update(&lease, json!({ "progress": { "percent": 101 } })), 400, "invalid_field"),
            (update(&lease, json!({ "chunks": [{ "stream": "no spaces", "data": "x" }] })), 400, "invalid_field"),
            (update(&lease, json!({ "metadata": { "big": "m".repeat(9000) } })), 413, "live_limit"),
        ];
        for (event, status, code) in cases {
            let r = report_on(ctx, stack, &id, &event)?;
            ensure(r.status == status && r.code() == code, || {
                format!("{event}: want {status} {code}, got {} {}", r.status, r.body)
            })?;
        }
        // The cap: 1 MiB of chunks per job; the update that would pass it is refused whole.
        let mut refused = None;
        for i in 0..20 {
            let r =
                report_on(ctx, stack, &id, &update(&lease, json!({ "chunks": [{ "stream": "big", "data": big }] })))?;
            if r.status != 200 {
                refused = Some((i, r));
                break;
            }
        }
        let (i, r) = refused.ok_or_else(|| anyhow::anyhow!("20 × 60 kB were all taken"))?;
        ensure(r.status == 413 && r.code() == "live_limit" && i == 17, || {
            format!("cap at {i}: {} {}", r.status, r.body)
        })?;
        let after = job_on(ctx, stack, &id)?;
        ensure(after["progress"] == before["progress"] && after["metadata"] == before["metadata"], || {
            format!("unchanged: {before} -> {after}")
        })?;
        complete(ctx, stack, &id, &lease)?;
        let all = subscribe(&format!("{}/v1/jobs/{id}/events", stack.edge_url), &key(stack))?.to_end(WAIT)?;
        let got = chunks(&all);
        ensure(got.len() == 18 && got[0] == (1, "kept".into()) && got.iter().all(|c| c.1 != "x"), || {
            format!("{} chunks, first {:?}", got.len(), got.first())
        })
    })
}

/// `?wait=` answers with the final job once it ends, not at once with the running one.
fn long_poll_answers_when_the_job_ends(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started(ctx, stack, &unique("poll"))?;
        let url = format!("{}/v1/jobs/{id}?wait=20s", stack.edge_url);
        let api_key = stack.secrets.api_key.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(40)).build();
            let r = c.and_then(|c| c.get(&url).bearer_auth(api_key).send()).and_then(|r| r.json::<Value>());
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        // The poll is waiting: nothing arrives while the job runs.
        ensure(rx.recv_timeout(Duration::from_millis(1500)).is_err(), || "the poll answered while the job ran".into())?;
        complete(ctx, stack, &id, &lease)?;
        let job = rx.recv_timeout(WAIT)?.map_err(|e| anyhow::anyhow!(e))?;
        ensure(job["state"] == "completed", || format!("the long poll's job: {job}"))?;
        // A finished job answers at once; a bad wait is refused.
        let r = ctx.send(
            ctx.http.get(format!("{}/v1/jobs/{id}?wait=10s", stack.edge_url)).bearer_auth(&stack.secrets.api_key),
        )?;
        ensure(r.status == 200 && r.body["state"] == "completed", || format!("{}", r.body))?;
        let r = ctx.send(
            ctx.http.get(format!("{}/v1/jobs/{id}?wait=5m", stack.edge_url)).bearer_auth(&stack.secrets.api_key),
        )?;
        ensure(r.status == 400 && r.code() == "invalid_field", || format!("wait=5m: {} {}", r.status, r.body))
    })
}

/// A job's token reads that job (JSON and stream) and nothing else; a tag's token reads the
/// jobs of its tag; a forged or expired token is 401; a token never writes.
fn tokens_read_their_job_or_tag_only(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("tok");
    let a = ctx.enqueue(&json!({ "type": "noop", "tags": [tag] }))?;
    let b = ctx.enqueue(&json!({ "type": "noop" }))?;
    let r = ctx.send(
        ctx.http.post(ctx.url(&format!("/v1/jobs/{a}/token"))).bearer_auth(&ctx.api_key).json(&json!({ "ttl": "10m" })),
    )?;
    ensure(r.status == 201 && r.body["job"] == a.as_str(), || format!("token: {} {}", r.status, r.body))?;
    let token = r.body["token"].as_str().unwrap_or_default().to_owned();
    ensure(token.starts_with("ejr_"), || format!("{}", r.body))?;
    let read = |id: &str, t: &str| ctx.send_unchecked(ctx.http.get(ctx.url(&format!("/v1/jobs/{id}?token={t}"))));
    ensure(read(&a, &token)?.status == 200, || "the token reads its job".into())?;
    let other = read(&b, &token)?;
    ensure(other.status == 404 && other.code() == "job_not_found", || {
        format!("job B: {} {}", other.status, other.body)
    })?;
    let bearer = ctx.send_unchecked(ctx.http.get(ctx.url(&format!("/v1/jobs/{a}"))).bearer_auth(&token))?;
    ensure(bearer.status == 200, || format!("as a bearer: {}", bearer.status))?;
    // Tampered: one character of the signature changed.
    let mut forged = token.clone();
    let last = forged.pop().unwrap_or('A');
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = read(&a, &forged)?;
    ensure(r.status == 401 && r.code() == "unauthorized", || format!("forged: {} {}", r.status, r.body))?;
    ensure(!r.body.to_string().contains(&forged), || "the token is not echoed".into())?;
    // Expired: a 1 s token reads, then is refused once its second is over.
    let r = ctx.send(
        ctx.http.post(ctx.url(&format!("/v1/jobs/{a}/token"))).bearer_auth(&ctx.api_key).json(&json!({ "ttl": "1s" })),
    )?;
    let short = r.body["token"].as_str().unwrap_or_default().to_owned();
    let first = read(&a, &short)?.status;
    let expired = edgejobs_tests::proc::wait_until(Duration::from_secs(10), || {
        read(&a, &short).is_ok_and(|r| {
            r.status == 401 && r.body["error"]["message"].as_str().is_some_and(|m| m.contains("expired"))
        })
    });
    ensure(first == 200 && expired, || format!("a 1 s token: first {first}, expired {expired}"))?;
    // A token reads only: writes want a key.
    let w = ctx
        .send_unchecked(ctx.http.post(ctx.url(&format!("/v1/jobs/{a}/cancel"))).bearer_auth(&token).json(&json!({})))?;
    ensure(w.status == 401, || format!("a token cancels: {} {}", w.status, w.body))?;
    let w = ctx.send_unchecked(ctx.http.get(ctx.url("/v1/jobs")).bearer_auth(&token))?;
    ensure(w.status == 401, || format!("a token lists: {} {}", w.status, w.body))?;
    // Another tenant's key cannot mint a token for this job.
    let r = ctx.send(
        ctx.http.post(ctx.url(&format!("/v1/jobs/{a}/token"))).bearer_auth(&ctx.tenant_keys[0]).json(&json!({})),
    )?;
    ensure(r.status == 404, || format!("globex mints for default's job: {} {}", r.status, r.body))?;
    // A body that is not an object is refused (serde alone would read `[null, null]`).
    for bad in [json!([null, null]), json!("x"), json!({ "ttl": 5 }), json!({ "nope": 1 })] {
        let r =
            ctx.send(ctx.http.post(ctx.url(&format!("/v1/jobs/{a}/token"))).bearer_auth(&ctx.api_key).json(&bad))?;
        ensure(r.status == 400, || format!("token body {bad}: {} {}", r.status, r.body))?;
    }
    // A tag's token: the tagged job, not the other.
    let r = ctx.send(ctx.http.post(ctx.url("/v1/tokens")).bearer_auth(&ctx.api_key).json(&json!({ "tag": tag })))?;
    ensure(r.status == 201 && r.body["tag"] == tag.as_str(), || format!("tag token: {} {}", r.status, r.body))?;
    let tag_token = r.body["token"].as_str().unwrap_or_default().to_owned();
    ensure(read(&a, &tag_token)?.status == 200 && read(&b, &tag_token)?.status == 404, || "tag token".into())?;
    let wrong = ctx.send_unchecked(ctx.http.get(ctx.url(&format!("/v1/events?tag=other&token={tag_token}"))))?;
    ensure(wrong.status == 403, || format!("tag token on another tag: {} {}", wrong.status, wrong.body))?;
    let r = ctx.send(
        ctx.http.post(ctx.url("/v1/tokens")).bearer_auth(&ctx.api_key).json(&json!({ "tag": tag, "ttl": "2d" })),
    )?;
    ensure(r.status == 400 && r.code() == "invalid_field", || format!("ttl 2d: {} {}", r.status, r.body))
}

/// The WebSocket variant: the backlog, the chunks as they come, the final state, then a close.
fn websocket_gets_the_same_events(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started(ctx, stack, &unique("ws"))?;
        report_on(ctx, stack, &id, &update(&lease, json!({ "chunks": tokens(&["one"]) })))?;
        let ws_url = format!("{}/v1/jobs/{id}/events", stack.edge_url.replacen("http://", "ws://", 1));
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str())?;
        req.headers_mut().insert("authorization", format!("Bearer {}", stack.secrets.api_key).parse()?);
        let addr = stack.edge_url.trim_start_matches("http://").to_owned();
        let stream = std::net::TcpStream::connect(&addr)?;
        stream.set_read_timeout(Some(WAIT))?;
        let (mut socket, resp) = tungstenite::client(req, stream).map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
        ensure(resp.status().as_u16() == 101, || format!("upgrade: {}", resp.status()))?;
        let mut got: Vec<Value> = Vec::new();
        let next = |socket: &mut tungstenite::WebSocket<std::net::TcpStream>| -> anyhow::Result<Option<Value>> {
            match socket.read() {
                Ok(tungstenite::Message::Text(t)) => Ok(Some(serde_json::from_str(t.as_str())?)),
                Ok(tungstenite::Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => Ok(None),
                Ok(_) => Ok(Some(Value::Null)),
                Err(e) => Err(anyhow::anyhow!("read: {e}")),
            }
        };
        // The backlog: chunk 1, then the state.
        for _ in 0..2 {
            got.extend(next(&mut socket)?);
        }
        ensure(got[0]["event"] == "chunk" && got[0]["id"] == 1 && got[0]["data"]["data"] == "one", || {
            format!("{got:?}")
        })?;
        ensure(got[1]["event"] == "state" && got[1]["data"]["state"] == "active", || format!("{got:?}"))?;
        report_on(ctx, stack, &id, &update(&lease, json!({ "chunks": tokens(&["two"]) })))?;
        complete(ctx, stack, &id, &lease)?;
        for _ in 0..10 {
            match next(&mut socket)? {
                Some(v) => got.push(v),
                None => break,
            }
        }
        let chunks: Vec<&Value> = got.iter().filter(|m| m["event"] == "chunk").map(|m| &m["data"]["data"]).collect();
        ensure(chunks == [&json!("one"), &json!("two")], || format!("ws chunks: {got:?}"))?;
        ensure(got.last().is_some_and(|m| m["data"]["state"] == "completed"), || format!("ws end: {got:?}"))
    })
}

/// A subscriber of a tag sees the states of that tag's jobs (across shards), not others'.
fn tag_subscribers_see_states(ctx: &Ctx) -> anyhow::Result<()> {
    let tag = unique("many");
    let sub =
        subscribe(&ctx.url(&format!("/v1/events?tag={tag}")), &[("authorization", format!("Bearer {}", ctx.api_key))])?;
    ensure(sub.status == 200, || format!("subscribe: {} {}", sub.status, sub.body))?;
    // Another tenant's key, on the same tag: it sees none of the default tenant's jobs.
    let globex = subscribe(
        &ctx.url(&format!("/v1/events?tag={tag}")),
        &[("authorization", format!("Bearer {}", ctx.tenant_keys[0]))],
    )?;
    ensure(globex.status == 200, || format!("globex subscribes: {} {}", globex.status, globex.body))?;
    let ids: Vec<String> =
        (0..3).map(|_| ctx.enqueue(&json!({ "type": "noop", "tags": [tag] }))).collect::<anyhow::Result<_>>()?;
    let other = ctx.enqueue(&json!({ "type": "noop", "tags": [unique("other")] }))?;
    let (got, _) = sub.until(WAIT, |evs| {
        ids.iter().all(|id| evs.iter().any(|e| e.data["id"] == id.as_str() && e.data["state"] == "completed"))
    })?;
    ensure(got.iter().all(|e| e.event == "state" && e.data["id"] != other.as_str()), || format!("{got:?}"))?;
    // By the time the default tenant saw all three complete, globex had heard of none (its
    // stream would have got them first: the same commits publish to both).
    let (seen, _) = globex.until(std::time::Duration::from_millis(500), |e| !e.is_empty()).unwrap_or_default();
    ensure(seen.is_empty(), || format!("another tenant saw {seen:?}"))?;
    ensure(got.iter().all(|e| e.data["tags"].as_array().is_some_and(|t| t.contains(&json!(tag)))), || {
        format!("{got:?}")
    })
}

/// CORS on the read routes: an allowed origin's preflight and answers carry its name, an
/// unknown origin gets no CORS header; write routes answer no preflight.
fn cors_answers_allowed_origins_only(ctx: &Ctx) -> anyhow::Result<()> {
    let id = ctx.enqueue(&json!({ "type": "noop" }))?;
    let allowed = page_origin(ctx);
    let url = ctx.url(&format!("/v1/jobs/{id}/events"));
    let pre = |origin: &str| {
        ctx.send_unchecked(
            ctx.http
                .request(reqwest::Method::OPTIONS, &url)
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization, last-event-id"),
        )
    };
    let ok = pre(&allowed)?;
    let acao = |r: &crate::util::Resp| {
        r.headers.get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    ensure(ok.status == 204 && acao(&ok).as_deref() == Some(allowed.as_str()), || {
        format!("preflight: {} {:?}", ok.status, ok.headers)
    })?;
    let allow_headers = ok.headers.get("access-control-allow-headers").and_then(|v| v.to_str().ok()).unwrap_or("");
    ensure(allow_headers.contains("last-event-id") && allow_headers.contains("authorization"), || {
        allow_headers.into()
    })?;
    let evil = pre("https://evil.example")?;
    ensure(acao(&evil).is_none(), || format!("evil origin: {:?}", evil.headers))?;
    let get = ctx.send_unchecked(
        ctx.http.get(ctx.url(&format!("/v1/jobs/{id}"))).bearer_auth(&ctx.api_key).header("origin", &allowed),
    )?;
    ensure(get.status == 200 && acao(&get).as_deref() == Some(allowed.as_str()), || format!("GET: {:?}", get.headers))?;
    let denied = ctx.send_unchecked(ctx.http.get(ctx.url(&format!("/v1/jobs/{id}"))).header("origin", &allowed))?;
    ensure(denied.status == 401 && acao(&denied).is_some(), || "a refusal is readable by the page".into())?;
    let write =
        ctx.send_unchecked(ctx.http.request(reqwest::Method::OPTIONS, ctx.url("/v1/jobs")).header("origin", &allowed))?;
    ensure(acao(&write).is_none(), || format!("a write route's preflight: {} {:?}", write.status, write.headers))
}

/// The origin the test page is served from (`ALLOWED_ORIGINS` of the shared stack).
pub fn page_origin(ctx: &Ctx) -> String {
    format!("http://127.0.0.1:{}", ctx.page_port)
}

/// The page a front end would write: it subscribes with `EventSource` and a read token,
/// appends the `tokens` chunks, and closes once the state is final.
const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>live</title><pre id="out"></pre>
<script>
window.live = { chunks: [], ids: [], states: [], errors: 0, done: false };
window.watch = (url) => {
  const es = new EventSource(url);
  es.addEventListener("chunk", (e) => {
    const c = JSON.parse(e.data);
    if (c.stream === "tokens") { live.chunks.push(c.data); live.ids.push(Number(e.lastEventId)); }
    document.getElementById("out").textContent = live.chunks.join("");
  });
  es.addEventListener("state", (e) => {
    const s = JSON.parse(e.data);
    live.states.push(s.state);
    if (["completed", "dead", "cancelled"].includes(s.state)) { es.close(); live.done = true; }
  });
  es.onerror = () => { live.errors++; };
};
window.fetchStatus = async (url, headers) => (await fetch(url, { headers: headers || {} })).status;
window.fetchText = async (url, headers) => { const r = await fetch(url, { headers }); return [r.status, await r.text()]; };
</script>"#;

/// Serves [`PAGE`] on the reserved port until `stop` (at most 200 requests, 3 minutes).
fn serve_page(listener: std::net::TcpListener, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let _ = listener.set_nonblocking(true);
    let end = Instant::now() + Duration::from_secs(180);
    let mut served = 0;
    while served < 200 && Instant::now() < end && !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                served += 1;
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                // The whole head is read before answering: closing a socket with unread bytes
                // resets it, and a reset can cut a long answer (the SDK's bundle) short.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while head.len() < 64 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let first = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_owned();
                // The page, and the TypeScript SDK's browser bundle it imports (#31).
                let bundle = || std::fs::read_to_string(sdk_bundle()).unwrap_or_default();
                let (status, kind, body) = if first.starts_with("GET / ") {
                    ("200 OK", "text/html", PAGE.to_owned())
                } else if first.starts_with("GET /edgejobs.js ") {
                    ("200 OK", "text/javascript", bundle())
                } else {
                    ("404 Not Found", "text/plain", String::new())
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.read(&mut buf);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The TypeScript SDK as one ES module for browsers (built by `scripts/sdk-typescript`).
fn sdk_bundle() -> std::path::PathBuf {
    edgejobs_tests::stack::StackOptions::default_root().join("sdk/typescript/dist/edgejobs.browser.js")
}

/// The browser: a page on another origin, with a job's read token only, watches `llm.chat`
/// stream the fake LLM's tokens and sees `completed`; a wrong token and another job's id
/// are refused; a resume with `Last-Event-ID` gets only the later chunks; the WebSocket
/// variant works from the page too.
fn llm_chat_streams_to_a_browser(ctx: &Ctx) -> anyhow::Result<()> {
    let listener = ctx.page_reservation.lock().unwrap_or_else(|p| p.into_inner()).take();
    let listener = listener.ok_or_else(|| anyhow::anyhow!("the page's port was taken already"))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || serve_page(listener, stop))
    };
    let out = browser_run(ctx);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = server.join();
    out
}

fn browser_run(ctx: &Ctx) -> anyhow::Result<()> {
    // The fake LLM answers `echo: <the last message>`, one token per word.
    let message = format!("stream these words one by one to the page {}", unique("w"));
    let words = edgejobs_tests::fake_llm::answer_tokens(&message, None);
    let id = ctx
        .enqueue(&json!({ "type": "llm.chat", "payload": { "messages": [{ "role": "user", "content": message }] } }))?;
    let other = ctx.enqueue(&json!({ "type": "noop" }))?;
    let r =
        ctx.send(ctx.http.post(ctx.url(&format!("/v1/jobs/{id}/token"))).bearer_auth(&ctx.api_key).json(&json!({})))?;
    ensure(r.status == 201, || format!("token: {} {}", r.status, r.body))?;
    let token = r.body["token"].as_str().unwrap_or_default().to_owned();
    let dir = edgejobs_tests::stack::StackOptions::default_root().join("target/dashboard");
    std::fs::create_dir_all(&dir)?;
    let mut b = edgejobs_tests::browser::Browser::launch(&dir)?;
    b.goto(&format!("{}/", page_origin(ctx)))?;
    let events = ctx.url(&format!("/v1/jobs/{id}/events?token={token}"));
    b.eval(&format!("watch({})", serde_json::to_string(&events)?))?;
    b.wait_for("window.live.done === true", Duration::from_secs(60))?;
    let live = b.eval("window.live")?;
    let text: String = live["chunks"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    ensure(text == words.concat(), || format!("the page got {text:?}, the LLM sent {:?}", words.concat()))?;
    let ids: Vec<u64> = live["ids"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    ensure(ids == (1..=words.len() as u64).collect::<Vec<_>>(), || format!("chunk ids: {ids:?}"))?;
    ensure(live["states"].as_array().and_then(|s| s.last()) == Some(&json!("completed")), || format!("{live}"))?;
    let job = ctx.get(&format!("/v1/jobs/{id}"))?.body;
    ensure(
        job["result"]["content"].as_str() == Some(text.as_str()) || job["result"].to_string().contains(&text),
        || format!("the result holds the answer: {}", job["result"]),
    )?;
    // Refusals, read by the page across origins.
    let status = |b: &mut edgejobs_tests::browser::Browser, url: String| -> anyhow::Result<u64> {
        let v = b.eval(&format!("fetchStatus({})", serde_json::to_string(&url)?))?;
        Ok(v.as_u64().unwrap_or(0))
    };
    let wrong = format!("{}x", &token[..token.len() - 1]);
    ensure(status(&mut b, ctx.url(&format!("/v1/jobs/{id}?token={token}")))? == 200, || "own job".into())?;
    ensure(status(&mut b, ctx.url(&format!("/v1/jobs/{id}?token={wrong}")))? == 401, || "wrong token".into())?;
    ensure(status(&mut b, ctx.url(&format!("/v1/jobs/{other}?token={token}")))? == 404, || "another job".into())?;
    // Resume after chunk 3: only the later chunks, then the final state.
    let resume = b.eval(&format!(
        "fetchText({}, {{ 'Last-Event-ID': '3' }})",
        serde_json::to_string(&ctx.url(&format!("/v1/jobs/{id}/events?token={token}")))?
    ))?;
    let body = resume[1].as_str().unwrap_or("");
    let resumed: Vec<u64> =
        body.lines().filter_map(|l| l.strip_prefix("id: ")).filter_map(|n| n.trim().parse().ok()).collect();
    ensure(resume[0] == 200 && resumed == (4..=words.len() as u64).collect::<Vec<_>>(), || {
        format!("resumed ids {resumed:?}")
    })?;
    // The WebSocket variant, from the page.
    let ws = ctx.url(&format!("/v1/jobs/{id}/events?token={token}")).replacen("http://", "ws://", 1);
    b.eval(&format!(
        "window.wsgot = []; (() => {{ const w = new WebSocket({}); w.onmessage = (m) => wsgot.push(JSON.parse(m.data)); w.onclose = () => {{ window.wsdone = true; }}; }})()",
        serde_json::to_string(&ws)?
    ))?;
    b.wait_for("window.wsdone === true", Duration::from_secs(30))?;
    let got = b.eval("window.wsgot.filter(m => m.event === 'chunk').map(m => m.data.data).join('')")?;
    ensure(got == json!(words.concat()), || format!("the page's WebSocket got {got}"))?;
    // The TypeScript SDK in the page (#31), with the read token as its key: the job, its
    // stream to the end, and a typed refusal of another job.
    ensure(sdk_bundle().exists(), || {
        format!("{} is missing: scripts/sdk-typescript builds it", sdk_bundle().display())
    })?;
    b.eval(&format!(
        "window.sdk = null; import('/edgejobs.js').then(async (m) => {{ \
           const c = new m.Client({{ url: {edge}, apiKey: {token} }}); \
           const job = await c.jobs.get({id}); const text = []; const states = []; \
           for await (const e of c.jobs.stream({id})) {{ if (e.event === 'chunk') text.push(e.data.data); else states.push(e.data.state); }} \
           let other = null; try {{ await c.jobs.get({other}); }} catch (e) {{ other = [e.constructor.name, e.status, e.code]; }} \
           window.sdk = {{ state: job.state, text: text.join(''), last: states[states.length - 1], other }}; \
         }}).catch((e) => {{ window.sdk = {{ error: String(e) }}; }})",
        edge = serde_json::to_string(&ctx.edge)?,
        token = serde_json::to_string(&token)?,
        id = serde_json::to_string(&id)?,
        other = serde_json::to_string(&other)?,
    ))?;
    b.wait_for("window.sdk !== null", Duration::from_secs(60))?;
    let sdk = b.eval("window.sdk")?;
    ensure(
        sdk["state"] == "completed"
            && sdk["text"] == json!(words.concat())
            && sdk["last"] == "completed"
            && sdk["other"] == json!(["NotFoundError", 404, "job_not_found"]),
        || format!("the SDK in the page: {sdk}"),
    )?;
    b.screenshot("live")?;
    let problems = b.problems()?;
    // The wrong token's and the other job's refusals are logged by the browser as failed
    // loads; anything else is a problem.
    let real: Vec<&String> = problems.iter().filter(|p| !p.contains("401") && !p.contains("404")).collect();
    ensure(real.is_empty(), || format!("the page reported errors: {real:?}"))
}
