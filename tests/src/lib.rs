//! edgejobs-tests: starts and stops the real local stack. Used by the end-to-end harness
//! (`e2e/`, one stack shared by every test) and by `scripts/dev` (the `edgejobs-stack` binary).
//!
//! Layout:
//! - [`stack`]: [`stack::Stack`]: redis-server, upstash-local, `wrangler dev`, the consumer.
//! - [`proc`]: child processes in their own process groups, stopped even if we die.
//! - [`openapi`]: checks real responses against `functions/edge/openapi.json`.
//! - [`fake_llm`]: a local OpenAI-compatible API with latency, 429 storms and 500s.
//! - [`hooks`]: a scripted local webhook target that records what it receives.

pub mod browser;
pub mod fake_llm;
pub mod hooks;
pub mod openapi;
pub mod proc;
pub mod stack;
