//! edgejobs-tests: starts and stops the real local stack. Used by the end-to-end harness
//! (`e2e/`, one stack shared by every test) and by `scripts/dev` (the `edgejobs-stack` binary).
//!
//! Layout:
//! - [`stack`]: [`stack::Stack`]: redis-server, upstash-local, `wrangler dev`, the consumer.
//! - [`proc`]: child processes in their own process groups, stopped even if we die.

pub mod proc;
pub mod stack;
