//! A durable agent loop (#29), built on `edgejobs-consumer` as a library: job type
//! `agent.run` asks the model what to do, calls a tool over HTTP, asks the model again with
//! the tool's answer, waits (holding no worker) for a person to approve the order, then
//! notifies a webhook. Every step runs once for the run: a crash, a deploy or a week-long
//! wait between two of them re-executes the handler, which gets the recorded results back
//! instead of calling the model or the tool again.
//!
//! Declare the type in the Worker's `JOB_TYPES` (`{"agent.run": {"lane": "native",
//! "timeout": "2m"}}`), run this binary with the consumer's usual settings, and enqueue
//! `{"type": "agent.run", "payload": {"question": "..", "order_id": 42, "tool_url": "..",
//! "notify_url": ".."}}`. `POST /v1/events {"name": "order.approved", "data": {"order_id":
//! 42, "by": "ann"}}` lets it finish.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser as _;
use edgejobs_consumer::handlers::http::HttpRequest;
use edgejobs_consumer::handlers::llm::LlmChat;
use edgejobs_consumer::handlers::steps::{StepError, Wait};
use edgejobs_consumer::handlers::{Handler, HandlerError, JobCtx};
use serde_json::{Value, json};

/// The agent loop.
struct Agent {
    llm: LlmChat,
}

/// A step's work failed: its message becomes the step's recorded error.
fn step_error(e: HandlerError) -> String {
    e.to_string()
}

#[async_trait::async_trait]
impl Handler for Agent {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let p = &ctx.job.payload;
        let field = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(question), Some(tool_url), Some(notify_url)) =
            (field("question"), field("tool_url"), field("notify_url"))
        else {
            return Err(HandlerError::Permanent("payload needs question, tool_url and notify_url".into()));
        };
        let ask = |content: String| {
            let body = json!({ "messages": [{ "role": "user", "content": content }] });
            async move { self.llm.call(ctx, &body).await.map_err(step_error) }
        };
        // 1. The model plans.
        let plan: Value = ctx.step.run("plan", || ask(question.clone())).await?;
        // 2. The tool, over HTTP (the guarded client: the outbound rules apply).
        let tool_call = json!({ "url": tool_url, "method": "POST", "body": { "plan": plan["content"] } });
        let tool: Value =
            ctx.step.run("tool", || async { HttpRequest.call(ctx, &tool_call).await.map_err(step_error) }).await?;
        // 3. The model again, with what the tool said.
        let answer: Value = ctx.step.run("answer", || ask(format!("{question}\ntool said: {}", tool["body"]))).await?;
        // 4. A person approves this order: the run is suspended until the event comes.
        let timeout = p.get("approval_timeout_ms").and_then(Value::as_u64).unwrap_or(3_600_000);
        let wait = Wait::event("order.approved")
            .matching("/data/order_id", "/payload/order_id")
            .timeout(Duration::from_millis(timeout));
        let approval = ctx.step.wait_for_event("approved", wait).await?;
        let Some(approval) = approval else {
            return Err(HandlerError::Permanent("nobody approved the order in time".into()));
        };
        // 5. Tell the shop.
        let note = json!({ "url": notify_url, "method": "POST",
            "body": { "answer": answer["content"], "approved_by": approval["by"] } });
        let notified: Result<Value, StepError> =
            ctx.step.run("notify", || async { HttpRequest.call(ctx, &note).await.map_err(step_error) }).await;
        notified?;
        Ok(json!({ "answer": answer["content"], "approved_by": approval["by"] }))
    }
}

/// `agent.batch`: fans `payload.n` `noop` jobs out, then invokes one more; the run holds
/// no worker while its children run.
struct Batch;

#[async_trait::async_trait]
impl Handler for Batch {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let n = ctx.job.payload.get("n").and_then(Value::as_u64).unwrap_or(3).min(100);
        let specs = (0..n).map(|i| json!({ "type": "noop", "payload": { "i": i } })).collect();
        let outcomes = ctx.step.fan_out("children", specs).await?;
        let done = outcomes.iter().filter(|o| o["state"] == "completed").count();
        let one = ctx.step.invoke("one-more", json!({ "type": "noop" })).await?;
        Ok(json!({ "completed": done, "one": one }))
    }
}

/// `steps.demo` (the fault battery's workflow): three calls of `payload.urls` as steps, a
/// sleep between the first two and a wait for `chaos.go` (matched on `order_id`) before the
/// last. Each call is made again only if the consumer died before its step was recorded.
struct Demo;

#[async_trait::async_trait]
impl Handler for Demo {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let p = &ctx.job.payload;
        let urls: Vec<String> = p["urls"]
            .as_array()
            .map_or_else(Vec::new, |a| a.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect());
        if urls.len() != 3 {
            return Err(HandlerError::Permanent("payload.urls must hold three URLs".into()));
        }
        let call = |i: usize| {
            let req = json!({ "url": urls[i], "method": "POST", "body": { "step": i } });
            async move { HttpRequest.call(ctx, &req).await.map_err(step_error) }
        };
        let a: Value = ctx.step.run("call-0", || call(0)).await?;
        let nap = p["sleep_ms"].as_u64().unwrap_or(500);
        ctx.step.sleep("nap", Duration::from_millis(nap)).await?;
        let b: Value = ctx.step.run("call-1", || call(1)).await?;
        let wait =
            Wait::event("chaos.go").matching("/data/order_id", "/payload/order_id").timeout(Duration::from_secs(600));
        let go = ctx.step.wait_for_event("go", wait).await?;
        let c: Value = ctx.step.run("call-2", || call(2)).await?;
        Ok(json!({ "statuses": [a["status"], b["status"], c["status"]], "go": go }))
    }
}

/// `bench.steps` (scripts/bench's workflow scenario, `--only workflow`): five trivial steps,
/// so what is measured is a step's cost (one batched report each), not the work.
struct BenchSteps;

#[async_trait::async_trait]
impl Handler for BenchSteps {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let mut sum = 0u64;
        for name in ["s1", "s2", "s3", "s4", "s5"] {
            sum += ctx.step.run(name, || async { Ok::<u64, String>(1) }).await?;
        }
        Ok(json!({ "sum": sum }))
    }
}

/// `bench.stream` (scripts/bench's live scenario, `--only live`): `payload.chunks` chunks
/// (default 200) on the stream `tokens`, `payload.every_ms` apart (default 5), then the
/// result `{"chunks": n}`. Chunk `n` is `"<n> <µs since the epoch>"`, the time it was
/// handed to `ctx.stream`: the bench subtracts it from when a subscriber received the chunk
/// (the same machine's clock), which is the latency from a handler to a subscriber.
struct BenchStream;

/// Most chunks one `bench.stream` job emits: ~30 bytes each stays far below a job's 1 MiB
/// of stream text.
const BENCH_STREAM_MAX_CHUNKS: u64 = 10_000;
/// The longest pause between two chunks.
const BENCH_STREAM_MAX_EVERY_MS: u64 = 10_000;

#[async_trait::async_trait]
impl Handler for BenchStream {
    async fn run(&self, ctx: &JobCtx) -> Result<Value, HandlerError> {
        let p = &ctx.job.payload;
        let chunks = p.get("chunks").and_then(Value::as_u64).unwrap_or(200);
        let every_ms = p.get("every_ms").and_then(Value::as_u64).unwrap_or(5);
        if chunks > BENCH_STREAM_MAX_CHUNKS || every_ms > BENCH_STREAM_MAX_EVERY_MS {
            return Err(HandlerError::Permanent(format!(
                "payload.chunks must be at most {BENCH_STREAM_MAX_CHUNKS} and payload.every_ms at most \
                 {BENCH_STREAM_MAX_EVERY_MS}"
            )));
        }
        // Chunk n is due at a fixed point from the start, so the timer's rounding of each
        // pause does not add up over the stream.
        let began = tokio::time::Instant::now();
        for n in 1..=chunks {
            if n > 1 {
                tokio::select! {
                    _ = tokio::time::sleep_until(began + Duration::from_millis(every_ms * (n - 1))) => {}
                    _ = ctx.cancel.cancelled() => return Err(HandlerError::Retryable("interrupted".into())),
                }
            }
            // A clock before 1970 would give a wrong latency, not a wrong chunk: it is sent as 0.
            let us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
            ctx.stream("tokens", format!("{n} {us}"))?;
        }
        Ok(json!({ "chunks": chunks }))
    }
}

fn main() -> std::process::ExitCode {
    edgejobs_consumer::main_with_handlers(edgejobs_consumer::Config::parse(), |settings, registry| {
        let llm = LlmChat {
            base_url: settings.llm_base_url.clone(),
            api_key: settings.llm_api_key.clone(),
            model: settings.llm_model.clone(),
        };
        registry.register("agent.run", Agent { llm });
        registry.register("agent.batch", Batch);
        registry.register("steps.demo", Demo);
        registry.register("bench.steps", BenchSteps);
        registry.register("bench.stream", BenchStream);
    })
}
