//! A receiver of edgejobs webhooks, as a user writes one: it checks every delivery's
//! Standard Webhooks signature with the `standardwebhooks` crate before trusting the body.
//!
//! ```text
//! WEBHOOK_SECRET=whsec_... LISTEN=127.0.0.1:8787 webhook-receiver
//! ```
//!
//! `WEBHOOK_SECRET` is this receiver's secret, from `POST /v1/admin/webhook-secret` with the
//! URL edgejobs calls (and, for a type declared in `JOB_TYPES` with a fixed URL, its
//! `type`). While edgejobs' `WEBHOOK_SIGNING_SECRET` is rotated, every delivery carries one
//! signature per secret: this receiver may hold the old secret, the new one, or both
//! (comma-separated) and verifies either way. `WEBHOOK_TYPE` (default `webhook`) is the job
//! type this receiver takes: the secret of a declared type verifies only that type's
//! deliveries (a `webhook` job sent here does not pass for it), and the `x-edgejobs-type`
//! header must name the type too. A verified delivery is printed as one line
//! (`verified <webhook-id> <body>`) and answered 204; anything else is answered 401 (and the
//! job retries, then goes dead). The `webhook-id` stays the same when a delivery is repeated
//! or retried (a replay of a dead job gets a new one): use it to drop duplicates.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use standardwebhooks::Webhook;

struct Receiver {
    /// One per secret held (a receiver mid-rotation holds two).
    hooks: Vec<Webhook>,
    job_type: String,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Checks the signature over id, timestamp and body, and that the timestamp is within
    // five minutes of now (a replay of an old delivery is refused).
    let mut refusal = None;
    let verified = r.hooks.iter().any(|h| match h.verify(&body, &headers) {
        Ok(_) => true,
        Err(e) => {
            refusal = Some(e);
            false
        }
    });
    if !verified {
        println!("rejected: {refusal:?}");
        return StatusCode::UNAUTHORIZED;
    }
    let named = headers.get("x-edgejobs-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if named != r.job_type {
        println!("rejected: the delivery names type {named:?}, this receiver takes {:?}", r.job_type);
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    println!("verified {id} {}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secrets = std::env::var("WEBHOOK_SECRET").map_err(|_| "set WEBHOOK_SECRET (a whsec_ secret)")?;
    let hooks = secrets
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Webhook::new(s).map_err(|e| format!("WEBHOOK_SECRET: {e:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if hooks.is_empty() {
        return Err("set WEBHOOK_SECRET (a whsec_ secret)".into());
    }
    let job_type = std::env::var("WEBHOOK_TYPE").unwrap_or_else(|_| "webhook".to_owned());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8787".to_owned());
    let app = Router::new().fallback(post(receive)).with_state(Arc::new(Receiver { hooks, job_type }));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
