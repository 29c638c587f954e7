//! edgejobs-consumer: the native consumer of long jobs. This first cut serves its `/health`
//! and `/metrics` and shuts down gracefully; reading the Upstash stream, leases and handlers
//! arrive with the consumer issue.
//!
//! Layout:
//! - [`Config`]: the typed settings (clap, from flags or env).
//! - [`run`]: runs the consumer until `shutdown` resolves.
//! - [`app`]: the HTTP routes, testable without a server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

/// Settings. Every one can be given as a flag or an environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "Runs edgejobs long jobs from the Upstash stream")]
pub struct Config {
    /// Address of the health and metrics server. Default 127.0.0.1:9090.
    #[arg(long, env = "EDGEJOBS_CONSUMER_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
}

#[derive(Debug)]
struct Shared {
    started: Instant,
}

/// The HTTP routes: `/health` and `/metrics`.
pub fn app() -> Router {
    let shared = Arc::new(Shared { started: Instant::now() });
    Router::new().route("/health", get(health)).route("/metrics", get(metrics)).with_state(shared)
}

async fn health(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    axum::Json(json!({ "status": "healthy", "uptime_seconds": s.started.elapsed().as_secs(), "in_flight": 0 }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let body = format!(
        "# HELP edgejobs_consumer_uptime_seconds Seconds since the consumer started.\n# TYPE edgejobs_consumer_uptime_seconds gauge\nedgejobs_consumer_uptime_seconds {}\n",
        s.started.elapsed().as_secs_f64()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Runs the consumer until `shutdown` resolves, then drains and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "consumer ready");
    axum::serve(listener, app()).with_graceful_shutdown(shutdown).await?;
    tracing::info!("consumer stopped");
    Ok(())
}
