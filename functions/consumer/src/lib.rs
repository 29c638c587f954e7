//! edgejobs-consumer: the native consumer of long jobs. It reads the long-job stream in
//! Upstash with a consumer group, runs each job's handler under a concurrency limit and
//! per-upstream rate limits, keeps the job's lease while it runs, reports to the edge, and
//! acknowledges an entry only after the edge accepted the report.
//!
//! Layout:
//! - [`batch`]: the one batcher (reports to the edge, acknowledgements).
//! - [`config`]: settings from flags or env ([`Config`]) checked into [`config::Settings`].
//! - [`worker`]: the poll loop, leases, reports and graceful drain.
//! - [`wake`]: the wake-up subscription that lets an idle loop read at once.
//! - [`stream`]: the stream commands (XREADGROUP, XAUTOCLAIM, XCLAIM, XACK).
//! - [`edge`]: reports to the edge.
//! - [`handlers`]: the [`handlers::Handler`] trait, the registry and the built-ins.
//! - [`live`]: a running attempt's live output (progress, metadata, stream chunks),
//!   coalesced into `update` reports.
//! - [`upstreams`]: token buckets and 429 pauses per upstream.
//! - [`outbound`]: the guarded HTTP client of the handlers (no private addresses).
//! - [`metrics`]: counters and gauges for `/metrics`.
//! - [`telemetry`]: OpenTelemetry spans of deliveries, attempts and outbound calls, exported
//!   over OTLP (#32).
//! - [`run`] runs it all; [`app`] is the HTTP routes, testable without a server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub mod batch;
pub mod config;
pub mod edge;
pub mod handlers;
pub mod live;
pub mod metrics;
pub mod outbound;
pub mod slots;
pub mod stream;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod upstreams;
pub mod wake;
pub mod worker;

pub use config::Config;
use config::Settings;
use handlers::Registry;
use worker::Worker;

/// Builds the worker from settings and a handler registry.
pub fn worker(settings: Settings, registry: Registry) -> anyhow::Result<Arc<Worker>> {
    // Two clients: the system's own traffic (the edge) and the guarded one handlers use for
    // requests made for a user, which never connects inside a private network unless allowed.
    let system =
        reqwest::Client::builder().user_agent(concat!("edgejobs-consumer/", env!("CARGO_PKG_VERSION"))).build()?;
    let http = outbound::client(std::sync::Arc::clone(&settings.outbound))?;
    let mut upstash = edgejobs_upstash::Client::new(
        edgejobs_upstash::Credentials { url: settings.upstash_url.clone(), token: settings.upstash_token.clone() },
        edgejobs_upstash::transport::ReqwestTransport::new(),
    );
    upstash.timeout = Duration::from_secs(10);
    let stream = stream::Stream {
        client: upstash,
        key: settings.stream.clone(),
        group: settings.group.clone(),
        me: settings.name.clone(),
    };
    let edge = edge::Edge::new(&settings.edge_url, settings.consumer_token.clone(), system, Default::default());
    let upstreams = Arc::new(upstreams::Upstreams::new(settings.upstream_limits.clone()));
    // The exporter's tasks run on the caller's runtime.
    let telemetry = telemetry::Telemetry::start(&settings.trace).map_err(anyhow::Error::msg)?;
    let mut w = Worker::new(settings, stream, edge, registry, upstreams, http);
    w.telemetry = telemetry;
    Ok(Arc::new(w))
}

/// Polls succeed: the last one is recent (within three of the longest poll intervals, and
/// at least 10 s).
fn polling(w: &Worker) -> bool {
    w.metrics.last_poll_age() <= (w.settings.poll_max * 3).max(Duration::from_secs(10))
}

/// Healthy: polls succeed and the edge answers.
async fn healthy(w: &Worker) -> (bool, serde_json::Value) {
    let age = w.metrics.last_poll_age();
    let poll_ok = polling(w);
    let edge_ok = w.edge.reachable().await;
    let ok = poll_ok && edge_ok;
    let body = json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "checks": {
            "upstash": { "ok": poll_ok, "last_poll_age_seconds": age.as_secs_f64() },
            "edge": { "ok": edge_ok },
        },
        "in_flight": w.metrics.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        "consumer": w.settings.name,
        "version": env!("CARGO_PKG_VERSION"),
    });
    (ok, body)
}

/// The HTTP routes: `/health` (200 or 503) and `/metrics` (Prometheus text).
pub fn app(w: Arc<Worker>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|State(w): State<Arc<Worker>>| async move {
                let (ok, body) = healthy(&w).await;
                (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body))
            }),
        )
        .route(
            "/metrics",
            get(|State(w): State<Arc<Worker>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], w.metrics.render(polling(&w))).into_response()
            }),
        )
        .with_state(w)
}

/// Runs the consumer until `shutdown` resolves, then drains. Returns true on a clean
/// drain (every in-flight job finished within the grace period).
pub async fn run(
    settings: Settings,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<bool> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let w = worker(settings, registry)?;
    tracing::info!(listen = %listener.local_addr()?, consumer = w.settings.name, concurrency = w.settings.concurrency, tracing = w.telemetry.summary(), "consumer ready");
    let stop = CancellationToken::new();
    let server_stop = CancellationToken::new();
    let server = {
        let server_stop = server_stop.clone();
        let app = app(Arc::clone(&w));
        tokio::spawn(
            async move { axum::serve(listener, app).with_graceful_shutdown(server_stop.cancelled_owned()).await },
        )
    };
    let loop_task = tokio::spawn(Arc::clone(&w).run(stop.clone()));
    shutdown.await;
    tracing::info!("shutdown requested");
    stop.cancel();
    let drained = loop_task.await.unwrap_or(false);
    server_stop.cancel();
    let _ = server.await;
    // The last spans go out before the process ends (bounded).
    if let Err(e) = w.telemetry.clone().shutdown().await {
        tracing::warn!(error = e, "the last spans could not be exported");
    }
    tracing::info!(drained, "consumer stopped");
    Ok(drained)
}

/// The consumer binary's whole life from a parsed config (what `edgejobs-consumer` and
/// `edgejobs consume` run): logs as JSON lines (errors to Sentry when `SENTRY_DSN` is set),
/// stops on SIGTERM/SIGINT. Exit code 0 after a clean drain, 2 for a configuration error, 3
/// when jobs were abandoned at the end of the grace period.
pub fn main_with(config: Config) -> std::process::ExitCode {
    main_with_handlers(config, |_, _| {})
}

/// [`main_with`] for a consumer of your own: `add` registers your handlers next to the
/// built-ins (it gets the checked settings, e.g. for `EDGEJOBS_UPSTREAM_LIMITS`). The
/// types it registers are announced to the edge, whose `/health` reports a native type no
/// running consumer handles.
pub fn main_with_handlers(config: Config, add: impl FnOnce(&Settings, &mut Registry)) -> std::process::ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _sentry = config.sentry_dsn.as_deref().map(|dsn| {
        sentry::init((dsn, sentry::ClientOptions { release: sentry::release_name!(), ..Default::default() }))
    });
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().json())
        // The exporter's own errors (a collector that is down) are logs, not Sentry events.
        .with(config.sentry_dsn.as_ref().map(|_| {
            use tracing_subscriber::Layer as _;
            sentry::integrations::tracing::layer()
                .with_filter(tracing_subscriber::filter::filter_fn(|m| !m.target().starts_with("opentelemetry")))
        }))
        .init();
    let settings = match config.settings() {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("configuration error: {e}");
            }
            return std::process::ExitCode::from(2);
        }
    };
    let mut registry = crate::handlers::Registry::builtins(&settings);
    add(&settings, &mut registry);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(crate::run(settings, registry, shutdown_signal())) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(3),
        Err(e) => {
            tracing::error!(error = %e, "consumer failed");
            std::process::ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod readme {
    /// The README's handler example is `examples/custom-consumer`, whole (the e2e suite runs
    /// that crate, so the README shows code that works).
    #[test]
    fn the_readme_shows_the_example_consumer_whole() {
        let code = include_str!("../../../examples/custom-consumer/src/main.rs");
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&format!("```rust\n{code}```")),
            "README.md should show examples/custom-consumer/src/main.rs"
        );
    }
}
