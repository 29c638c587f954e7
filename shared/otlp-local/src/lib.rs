//! otlp-local: a local OTLP trace receiver for development and the end-to-end tests. No
//! OpenTelemetry Collector or Jaeger installs from the registries this project can reach, so
//! this receiver, built on the official protobuf definitions (`opentelemetry-proto`), stands in
//! for one: OTLP/HTTP (protobuf and JSON, optionally gzip'd) on one listener, OTLP/gRPC on a
//! second, spans kept in memory and served back as JSON. README.md describes the API.
//!
//! Layout:
//! - [`model`]: the query API's JSON types, shared with the tests that read it.
//! - [`convert`]: flattening an export request into [`model::SpanView`]s (pure).
//! - [`json`]: OTLP/JSON decoding, tolerant where the specification allows.
//! - [`store`]: the bounded in-memory [`Store`], its counters and the refusal switch.
//! - [`http`]: OTLP/HTTP and the query API: [`app`].
//! - [`grpc`]: OTLP/gRPC's `TraceService`: [`grpc_service`].
//! - [`serve`] and [`serve_with_store`] (here): both listeners until a shutdown signal.

pub mod convert;
pub mod grpc;
pub mod http;
pub mod json;
pub mod model;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use grpc::service as grpc_service;
pub use http::{MAX_BODY_BYTES, app};
/// The protobuf definitions the receiver speaks, for tests that build requests by hand.
pub use opentelemetry_proto;
pub use store::{DEFAULT_CAPACITY, MAX_LISTED_SPANS, Store};

/// How long the listeners may take to finish their open requests after the shutdown signal
/// before [`serve`] returns anyway (an exporter may hold a connection open).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The HTTP listener failed (accepting connections).
    #[error("the OTLP/HTTP listener failed: {0}")]
    Http(#[source] std::io::Error),
    /// The gRPC listener failed.
    #[error("the OTLP/gRPC listener failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
}

/// Serves OTLP/HTTP and the query API on `http` and OTLP/gRPC on `grpc`, over a new store of
/// [`DEFAULT_CAPACITY`] spans, until `shutdown` completes.
pub async fn serve(http: TcpListener, grpc: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    serve_with_store(Arc::new(Store::default()), http, grpc, shutdown).await
}

/// [`serve`] over a given store (to size it, or to read it in-process).
///
/// When `shutdown` completes, both listeners stop accepting and finish their requests, for at
/// most [`SHUTDOWN_GRACE`]. If one listener fails, the other is stopped too and the error is
/// returned.
pub async fn serve_with_store(
    store: Arc<Store>,
    http: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let stop = Arc::new(watch::Sender::new(false));
    let stopped = |stop: &watch::Sender<bool>| {
        let mut stopped = stop.subscribe();
        async move {
            // An error means the sender is gone, which only happens once both servers ended.
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };

    let http_server = {
        let signal = stopped(&stop);
        let stop = Arc::clone(&stop);
        let app = app(Arc::clone(&store));
        async move {
            let result = axum::serve(http, app).with_graceful_shutdown(signal).await;
            stop.send_replace(true);
            result.map_err(ServeError::Http)
        }
    };
    let grpc_server = {
        let signal = stopped(&stop);
        let stop = Arc::clone(&stop);
        let router = tonic::transport::Server::builder().add_service(grpc_service(store));
        async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
            let result = router.serve_with_incoming_shutdown(incoming, signal).await;
            stop.send_replace(true);
            result.map_err(ServeError::Grpc)
        }
    };

    let servers = async { tokio::join!(http_server, grpc_server) };
    tokio::pin!(servers, shutdown);
    let (http_result, grpc_result) = tokio::select! {
        results = &mut servers => results,
        () = &mut shutdown => {
            stop.send_replace(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut servers).await {
                Ok(results) => results,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open at shutdown; closing them");
                    return Ok(());
                }
            }
        }
    };
    http_result.and(grpc_result)
}
