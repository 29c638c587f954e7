//! The gRPC listener's service: OTLP/gRPC `TraceService/Export`, storing into the same
//! [`Store`] as OTLP/HTTP.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::http::MAX_BODY_BYTES;
use crate::store::{Protocol, Store};

/// The `TraceService` implementation.
#[derive(Debug, Clone)]
pub struct Receiver {
    store: Arc<Store>,
}

/// The gRPC service over `store`: accepts gzip'd requests (an exporter's
/// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`) and messages up to [`MAX_BODY_BYTES`].
pub fn service(store: Arc<Store>) -> TraceServiceServer<Receiver> {
    TraceServiceServer::new(Receiver { store })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_BODY_BYTES)
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        if let Some(status) = self.store.refusing() {
            self.store.count_refused();
            // Every refusal is UNAVAILABLE, the code OTLP exporters retry and then drop on:
            // what a collector that is down or restarting looks like.
            return Err(Status::unavailable(format!("refusing exports (POST /api/refuse, HTTP status {status})")));
        }
        let ingested = self.store.ingest(Protocol::Grpc, request.into_inner());
        tracing::debug!(stored = ingested.stored, rejected = ingested.rejected, "grpc export");
        Ok(Response::new(ExportTraceServiceResponse { partial_success: ingested.partial_success() }))
    }
}
