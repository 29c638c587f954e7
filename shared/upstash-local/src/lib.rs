//! upstash-local: serves Upstash's Redis REST API on loopback in front of a real
//! `redis-server`, so the edge and the native consumer speak to Redis locally exactly as they
//! do to Upstash in production. (Upstash's own emulator needs Docker, which we lack.)
//! README.md says what it accepts and refuses.
//!
//! Layout:
//! - [`request`]: parsing the path form, `POST /` bodies and pipelines into argument lists
//!   (pure; table-tested and fuzzed), and [`request::Refused`], why a request gets a 400.
//! - [`allow`]: the command allow-list and [`allow::check_allowed`].
//! - [`auth`]: the bearer token: minimum length, constant-time comparison.
//! - [`scripts`]: the project's Lua scripts, the only ones `EVAL`/`EVALSHA` may run, by SHA-1.
//! - [`gateway`]: the HTTP routes, forwarding to Redis, Upstash's reply encoding; `run`.
//! - [`subscribe`]: `/subscribe/<channel>`, Upstash's SSE form of SUBSCRIBE.
//! - [`config`]: command-line and environment settings, checked into a [`gateway::Config`].
//!
//! `gateway` and `config` need the `server` feature (on by default); without it the crate is
//! the pure parts only, for the fuzz targets.

pub mod allow;
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod gateway;
pub mod request;
pub mod scripts;
#[cfg(feature = "server")]
pub mod subscribe;
