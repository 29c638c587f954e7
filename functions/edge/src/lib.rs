//! edgejobs-edge: the Cloudflare Worker. It serves the job API, hosts the `JobShard` Durable
//! Objects (the source of truth for job state), consumes the `jobs` queue and runs the cron
//! tasks.
//!
//! Layout:
//! - [`config`]: binding names and the typed configuration read from `[vars]` and secrets.
//! - [`http`]: request/response helpers shared by the routes (JSON, errors, auth).
//! - [`routes`]: one file per route group; [`routes::handle`] is the router (and serves the
//!   dashboard's static files from `dashboard/`).
//! - [`scatter`]: scatter by shard, gather in order: many items, one call per shard.
//! - [`shard`]: the `JobShard` Durable Object and the client the routes use to reach it.
//! - [`consumer`]: the `jobs` queue consumer: edge-lane jobs in batches, native hand-offs.
//! - [`counters`]: this isolate's counters, carried by the next shard call.
//! - [`gauges`]: the stats object's gauges the cron tasks set, and every shard's numbers.
//! - [`handlers`]: the edge-lane job handlers (`noop`, `webhook`).
//! - [`ratelimit`]: the per-key enqueue rate limit in Upstash.
//! - [`fetch`]: the Upstash client's transport at the edge (workerd's `fetch`, a timeout).
//! - [`tasks`]: the cron tasks: backups, restore, retention, the sweep.
//! - [`view`]: what the public API shows of a job (header values redacted).
//! - [`platform`]: the clock and the random source, the only impure inputs of the core.
//! - [`telemetry`]: the edge's spans, exported over OTLP/HTTP after each invocation (#32).

use worker::{Context, Env, MessageBatch, Request, Response, Result, ScheduleContext, ScheduledEvent, event};

pub mod config;
pub mod consumer;
pub mod counters;
pub mod fetch;
pub mod gauges;
pub mod handlers;
pub mod http;
pub mod platform;
pub mod ratelimit;
pub mod routes;
pub mod runs;
pub mod scatter;
pub mod shard;
pub mod tasks;
pub mod telemetry;
pub mod topology;
pub mod view;
pub mod workflow;

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let answer = routes::handle(req, env.clone(), &ctx).await;
    if let Some(export) = export_spans(&env) {
        ctx.wait_until(export);
    }
    answer
}

/// The export of the spans this invocation recorded, to run after it answered (#32).
fn export_spans(env: &Env) -> Option<impl Future<Output = ()> + 'static> {
    config::load(env).ok().and_then(|c| telemetry::flush(&c.tracing))
}

#[event(queue)]
async fn queue(batch: MessageBatch<serde_json::Value>, env: Env, ctx: Context) -> Result<()> {
    counters::invocation("queue", "jobs");
    consumer::handle_batch(batch, &env).await;
    if let Some(flush) = gauges::flush_later(&env, shard_count(&env)) {
        ctx.wait_until(flush);
    }
    if let Some(export) = export_spans(&env) {
        ctx.wait_until(export);
    }
    Ok(())
}

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, ctx: ScheduleContext) {
    counters::invocation("scheduled", "cron");
    tasks::scheduled(&event.cron(), &env).await;
    if let Some(flush) = gauges::flush_later(&env, shard_count(&env)) {
        ctx.wait_until(flush);
    }
    if let Some(export) = export_spans(&env) {
        ctx.wait_until(export);
    }
}

fn shard_count(env: &Env) -> u16 {
    config::load(env).map_or(16, |c| c.shard_count)
}
