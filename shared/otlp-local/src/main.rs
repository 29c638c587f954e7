//! The `otlp-local` binary: binds the OTLP/HTTP and OTLP/gRPC listeners, prints their
//! addresses as one JSON line on stdout (scripts read it), logs JSON lines to stderr, and
//! serves until SIGTERM or ctrl-c.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use edgejobs_otlp_local::{DEFAULT_CAPACITY, Store, serve_with_store};
use tokio::net::TcpListener;

/// A local OTLP trace receiver with a JSON query API.
#[derive(Debug, Parser)]
#[command(name = "otlp-local", version)]
struct Args {
    /// Where OTLP/HTTP (`POST /v1/traces`) and the query API (`/api/...`) listen. Port 0
    /// picks a free port. Default: 127.0.0.1:4318, OTLP/HTTP's usual port, on loopback.
    #[arg(long, env = "OTLP_LOCAL_HTTP", default_value = "127.0.0.1:4318")]
    http: SocketAddr,
    /// Where OTLP/gRPC listens. Port 0 picks a free port. Default: 127.0.0.1:4317, OTLP/gRPC's
    /// usual port, on loopback.
    #[arg(long, env = "OTLP_LOCAL_GRPC", default_value = "127.0.0.1:4317")]
    grpc: SocketAddr,
    /// How many spans are kept; past it the oldest are dropped (and counted). Default: 200000.
    #[arg(long, env = "OTLP_LOCAL_MAX_SPANS", default_value_t = DEFAULT_CAPACITY)]
    max_spans: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let http = TcpListener::bind(args.http).await.with_context(|| format!("binding OTLP/HTTP to {}", args.http))?;
    let grpc = TcpListener::bind(args.grpc).await.with_context(|| format!("binding OTLP/gRPC to {}", args.grpc))?;
    let http_addr = http.local_addr().context("the OTLP/HTTP listener's address")?;
    let grpc_addr = grpc.local_addr().context("the OTLP/gRPC listener's address")?;

    let shutdown = shutdown_signal()?;

    // The one line on stdout, flushed at once: scripts wait for it to learn the ports.
    let ready = format!(r#"{{"http":"{http_addr}","grpc":"{grpc_addr}"}}"#);
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}").context("writing the ready line")?;
    stdout.flush().context("flushing the ready line")?;
    drop(stdout);
    tracing::info!(http = %http_addr, grpc = %grpc_addr, max_spans = args.max_spans, "otlp-local listening");

    serve_with_store(Arc::new(Store::with_capacity(args.max_spans)), http, grpc, shutdown).await?;
    tracing::info!("otlp-local stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT (ctrl-c) handlers now, so that a signal sent as soon as
/// the ready line is read stops the receiver cleanly instead of killing it; the future
/// completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("ctrl-c: stopping"),
        }
    })
}

/// Completes on ctrl-c (elsewhere than Unix there is no SIGTERM).
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("ctrl-c: stopping"),
            Err(error) => {
                tracing::error!(%error, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        }
    })
}
