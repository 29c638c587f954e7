//! The Rust client of the edgejobs HTTP API: every route as a typed method (requests and
//! replies are the `edgejobs-api` types), typed errors carrying the API's stable codes,
//! retries that honour `Retry-After`, pages, live streams (Server-Sent Events) and long
//! polls, and webhook verification. Natively it sends with reqwest; in a Rust Worker (wasm32,
//! feature `worker`) with `worker::Fetch`.
//!
//! Layout:
//! - `client.rs`: [`Client`], one method per route, the retry loop, [`Pages`].
//! - `error.rs`: [`Error`] (with `is_retryable`) and [`Code`], the API's stable codes.
//! - `transport.rs`: the [`Transport`] trait all I/O goes through.
//! - `native.rs`: [`ReqwestTransport`]; `fetch.rs`: [`FetchTransport`] (wasm32 + `worker`).
//! - `fake.rs`: [`FakeTransport`] and [`Unreliable`], for tests.
//! - `sse.rs`: the SSE parser and the `state`/`chunk` events; `stream.rs`: [`EventStream`],
//!   a stream followed across dropped connections.
//! - `query.rs`: listing filters; `webhook.rs`: [`verify_webhook`].
#![doc = include_str!("../README.md")]

mod client;
mod error;
pub mod fake;
#[cfg(all(target_arch = "wasm32", feature = "worker"))]
mod fetch;
#[cfg(not(target_arch = "wasm32"))]
mod native;
mod query;
mod sse;
mod stream;
#[cfg(test)]
mod tests;
mod transport;
mod webhook;

pub use client::{Client, Page, Pages, RetryPolicy, idempotency_key};
// The wire types the client's methods take and return beyond `api::*`, at the crate's root.
pub use edgejobs_api as api;
pub use edgejobs_api::{Chunk, EventRequest, ResealPage, ResealRequest, StateEvent};
pub use error::{Code, Error, ErrorCode, Result};
pub use fake::{FakeTransport, Scripted, Unreliable};
#[cfg(all(target_arch = "wasm32", feature = "worker"))]
pub use fetch::FetchTransport;
#[cfg(not(target_arch = "wasm32"))]
pub use native::ReqwestTransport;
pub use query::{DeadQuery, JobQuery, enc};
pub use sse::{Event, Parser};
pub use stream::{EventStream, Step};
pub use transport::{ByteStream, MaybeSend, Method, Request, Response, Streaming, Transport};
#[cfg(any(not(target_arch = "wasm32"), feature = "worker"))]
pub use webhook::verify_webhook;
pub use webhook::{TOLERANCE_SECS, verify_webhook_at};
