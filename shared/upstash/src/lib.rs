//! edgejobs-upstash: a client for Upstash Redis's REST API, used by the edge Worker (wasm32)
//! and the native consumer alike.
//!
//! Layout:
//! - [`transport`]: the HTTP transport trait the client is generic over, and its
//!   implementations: [`transport::ReqwestTransport`] (native, and wasm32 where reqwest uses
//!   the runtime's fetch), [`transport::ScriptedTransport`] (an in-memory fake for unit
//!   tests) and [`transport::Faulty`] (injects failures and latency).
//! - [`client`]: [`Client`]: single commands, pipelines, transactions, base64 replies.
//! - [`reply`]: [`Reply`], a decoded Redis reply.
//! - [`ratelimit`]: a sliding-window rate limiter kept in Redis, one pipeline per request.
//!
//! Tokens never appear in `Debug` output, errors or logs.

pub mod client;
pub mod ratelimit;
pub mod reply;
pub mod transport;

pub use client::{Client, Credentials, Error};
pub use reply::Reply;
