//! An example Rust Worker using edgejobs through a service binding, with `edgejobs-client`
//! on `worker::Fetch` (#31).
//!
//! Routes:
//! - `GET /scenario`: through the binding, enqueue a tagged job (with a generated
//!   idempotency key), read it back, list its tag page by page, and provoke a typed 404;
//!   answers what happened as JSON.
//! - anything else: 404.
//!
//! It is a Worker only: natively (the workspace's `cargo build`) it compiles to nothing.
#![cfg(target_arch = "wasm32")]

use edgejobs_client::api::JobSpec;
use edgejobs_client::{Client, JobQuery};
use serde_json::json;
use worker::{Context, Env, Request, Response, Result, event};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    if req.path() != "/scenario" {
        return Response::error("not found", 404);
    }
    let jobs = Client::binding(env.service("JOBS")?).with_generated_keys(true);
    let answer = match scenario(&jobs).await {
        Ok(v) => v,
        Err(e) => json!({ "error": e.to_string() }),
    };
    Response::from_json(&answer)
}

async fn scenario(jobs: &Client) -> edgejobs_client::Result<serde_json::Value> {
    let tag = format!("rust-{}", edgejobs_client::idempotency_key()?);
    let spec = JobSpec {
        job_type: "noop".into(),
        payload: Some(json!({ "from": "a Rust Worker" })),
        tags: Some(vec![tag.clone()]),
        ..JobSpec::default()
    };
    let created = jobs.enqueue(&spec).await?;
    let read = jobs.job(&created.id).await?;
    let mut listed = Vec::new();
    let mut pages = jobs.job_pages(&JobQuery { tag: Some(tag), limit: Some(1), ..JobQuery::default() });
    for _ in 0..5 {
        match pages.next().await {
            Some(page) => listed.extend(page?.into_iter().map(|j| j.id)),
            None => break,
        }
    }
    let missing = match jobs.job("j_does_not_exist").await {
        Ok(_) => json!(null),
        Err(e) => json!({ "status": e.status(), "code": e.code().map(|c| c.as_str()) }),
    };
    Ok(json!({
        "created": created.id,
        "read": read.id,
        "tenant": read.tenant,
        "key": created.idempotency_key,
        "listed": listed,
        "missing": missing,
    }))
}
