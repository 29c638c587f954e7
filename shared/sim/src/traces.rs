//! Trace contexts in the simulation (#32): the context the simulated router gives every job
//! it enqueues (drawn from the seed, as a caller's `traceparent` or a new trace would be),
//! what the simulation knows of each job's context independently of the shards, and the
//! invariants it holds them to (ARCHITECTURE.md, "The simulation"):
//!
//! - **a-job-keeps-its-trace**: every job a shard holds has the context it was created with,
//!   whatever happened to it since (transitions, reports, retries, replays, restores,
//!   sweeps, re-seals, debounces): for a job the simulation enqueued, the one it sent; for a
//!   child or a callback job, the one its origin's rule gave it; for a job the shards made
//!   on their own (a schedule's run), the one it was first seen with.
//! - **children-continue-their-origins-trace**: a workflow run's child (an invoke or fan-out
//!   step's) is created with the context its step's report named, or else its run's; a
//!   job's completion callback job with its job's. The reports name either the step's span
//!   (a child of the run's context) or nothing, so every child carries its run's trace id.
//!
//! The world reads every shard's contexts every [`CHECK_EVERY`] steps and after the drain
//! (`World::check_traces`).

use std::collections::BTreeMap;

use edgejobs_core::trace::{SpanId, TraceContext, TraceId};

use crate::rng::Rng;

/// Steps between two reads of every shard's contexts (a read parses every stored job's
/// `trace`; after every step it would cost a large part of the run).
pub const CHECK_EVERY: u64 = 10;

const KEEPS: &str = "a-job-keeps-its-trace";
const CONTINUES: &str = "children-continue-their-origins-trace";

/// A new context, as the router makes one for a caller's request: a random trace and span,
/// sampled or not, and sometimes a vendor's `tracestate` the caller sent.
pub fn new_context(rng: &mut Rng) -> TraceContext {
    let mut trace = [0u8; 16];
    trace[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    trace[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    // An all-zero id is invalid; the odds are 2^-128, but the id must be valid whatever.
    trace[15] |= 1;
    let mut context = TraceContext::root(TraceId(trace), span(rng), rng.chance(0.5));
    if rng.chance(0.3) {
        context.state = Some(format!("sim={:x}", rng.below(1 << 20)));
    }
    context
}

/// A random span id (never all zero).
pub fn span(rng: &mut Rng) -> SpanId {
    let mut b = rng.next_u64().to_be_bytes();
    b[7] |= 1;
    SpanId(b)
}

/// Where a job the shards create on their own comes from, and what the rule gives it.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A child of run `run`, its step's report naming `named` (or none).
    Child { run: String, named: Option<TraceContext> },
    /// The completion callback job of `job`.
    Callback { job: String },
}

/// What the simulation knows of contexts.
#[derive(Debug, Default)]
pub struct TraceSeen {
    /// Per job: the context it was created with (`None`: created without one).
    pub created: BTreeMap<String, Option<TraceContext>>,
    /// Children and callback jobs announced (a child when its step is reported, a callback
    /// when its job is enqueued), not yet seen stored.
    pub origins: BTreeMap<String, Origin>,
    /// Jobs the simulation enqueued with a context.
    pub enqueued: u64,
    /// Children and callback jobs seen stored and checked against their origin.
    pub children: u64,
    pub callbacks: u64,
}

/// One check of an invariant: its name, and what broke when it did not hold.
pub type Checked = (&'static str, Option<String>);

impl TraceSeen {
    /// The simulation creates `id` with `context` (its router's, or none).
    pub fn created(&mut self, id: &str, context: Option<&TraceContext>) {
        if context.is_some() {
            self.enqueued += 1;
        }
        self.created.insert(id.to_owned(), context.cloned());
    }

    /// A shard will create `id` (a child or a callback job) from `origin`, if anything.
    pub fn origin(&mut self, id: &str, origin: Origin) {
        self.origins.insert(id.to_owned(), origin);
    }

    /// The contexts a shard holds now, per job: each must be the one the job was created
    /// with. A child or callback job seen for the first time is checked against its origin
    /// first (and its creation context is what the rule gives it). Answers every check made.
    pub fn observe(&mut self, stored: Vec<(String, Option<TraceContext>)>) -> Vec<Checked> {
        let mut out = Vec::new();
        for (id, now) in stored {
            if let Some(origin) = self.origins.remove(&id) {
                out.extend(self.continues(&id, origin, now.as_ref()));
            }
            match self.created.get(&id).cloned() {
                Some(was) => {
                    let broke = (was != now).then(|| {
                        format!("job {id} was created with trace {}, it now holds {}", shown(&was), shown(&now))
                    });
                    out.push((KEEPS, broke));
                }
                // A job the shards made on their own (a schedule's run): its first context.
                None => {
                    self.created.insert(id, now);
                }
            }
        }
        out
    }

    /// Child or callback job `id` was created holding `now`; its origin's rule says what it
    /// must hold. An origin the simulation does not know the context of is not checked.
    fn continues(&mut self, id: &str, origin: Origin, now: Option<&TraceContext>) -> Option<Checked> {
        let (from, want) = match &origin {
            Origin::Child { run, named } => {
                let of_run = self.created.get(run)?;
                self.children += 1;
                (format!("child of run {run} (its report named {})", shown(named)), named.clone().or(of_run.clone()))
            }
            Origin::Callback { job } => {
                let of_job = self.created.get(job)?;
                self.callbacks += 1;
                (format!("callback job of {job}"), of_job.clone())
            }
        };
        let broke = (now != want.as_ref()).then(|| {
            format!("{id}, the {from}, holds trace {}; it must continue {}", shown(&now.cloned()), shown(&want))
        });
        self.created.insert(id.to_owned(), want);
        Some((CONTINUES, broke))
    }
}

fn shown(c: &Option<TraceContext>) -> String {
    match c {
        Some(c) => match &c.state {
            Some(s) => format!("{} ({s})", c.traceparent()),
            None => c.traceparent(),
        },
        None => "none".to_owned(),
    }
}
