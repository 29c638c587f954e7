//! A receiver of edgejobs webhooks, as a user writes one: it checks every delivery's
//! Standard Webhooks signature with the `standardwebhooks` crate before trusting the body.
//!
//! ```text
//! WEBHOOK_SECRET=whsec_... LISTEN=127.0.0.1:8787 webhook-receiver
//! ```
//!
//! `WEBHOOK_SECRET` is this receiver's secret, from `POST /v1/admin/webhook-secret` with the
//! URL edgejobs calls. A verified delivery is printed as one line
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

async fn receive(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    // Checks the signature over id, timestamp and body, and that the timestamp is within
    // five minutes of now (a replay of an old delivery is refused).
    if let Err(e) = hook.verify(&body, &headers) {
        println!("rejected: {e:?}");
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    println!("verified {id} {}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| "set WEBHOOK_SECRET (a whsec_ secret)")?;
    let hook = Webhook::new(&secret).map_err(|e| format!("WEBHOOK_SECRET: {e:?}"))?;
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8787".to_owned());
    let app = Router::new().fallback(post(receive)).with_state(Arc::new(hook));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
