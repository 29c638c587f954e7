//! The child jobs of workflow runs' invoke and fan-out steps (#29), made below the routes
//! (`prepare_children`): the consumer routes and the queue consumer's workflow runner use
//! it. Indexing waits and delivering resumes is `shard::waits`.

use edgejobs_core::auth::Principal;
use edgejobs_core::config::EdgeConfig;
use edgejobs_core::machine::Event;
use edgejobs_core::trace::TraceContext;
use edgejobs_core::{ApiError, Job, JobId};

use crate::platform::{now_ms, random_nonce, random_u64};

/// Prepares the children of an invoke or fan-out step report about run `parent` (whatever
/// the reporter put there is replaced): each spec is checked as `POST /v1/jobs` checks one,
/// with the errors naming `step.jobs[i]`.
/// Children continue `trace` (#32): the step's span, or the reporter's run.
pub fn prepare_children(
    cfg: &EdgeConfig,
    who: &Principal,
    parent: &JobId,
    trace: Option<&TraceContext>,
    event: &mut Event,
) -> Result<(), ApiError> {
    let Event::Step { step, .. } = event else { return Ok(()) };
    let Some((specs, children)) = step.children_mut() else { return Ok(()) };
    let now = now_ms();
    let mut made = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let named = |e: ApiError| match e.field {
            Some(f) => ApiError::field(&format!("step.jobs[{i}].{f}"), e.message),
            None => ApiError { message: format!("step.jobs[{i}]: {}", e.message), ..e },
        };
        let parsed = edgejobs_core::spec::parse_spec_unchecked(spec, now, &cfg.types).map_err(named)?;
        if let Some(t) = who.tenant()
            && !parsed.job_type.open_to(t)
        {
            return Err(named(ApiError::field("type", format!("no job type {:?}", parsed.job_type.name))));
        }
        let mut child = child_job(cfg, parsed, parent, now).map_err(named)?;
        child.trace = trace.cloned();
        made.push(child);
    }
    *children = made;
    Ok(())
}

/// A child job of run `parent`'s invoke or fan-out step, from its spec: its id in the run's
/// shard (a child's end resumes its run in one transaction), its header values sealed. A
/// child has no flow control of its own (its keys would be decided in another shard than
/// its home) and no idempotency key (its step runs once); an edge webhook child does not
/// get its origin's concurrency key either.
fn child_job(cfg: &EdgeConfig, spec: edgejobs_core::spec::JobSpec, parent: &JobId, now: u64) -> Result<Job, ApiError> {
    edgejobs_core::spec::check_schema(&spec)?;
    if spec.idempotency_key.is_some() {
        return Err(ApiError::field("idempotency_key", "a child job has none: its step runs once"));
    }
    if spec.flow != edgejobs_core::flow::FlowSpec::default() {
        return Err(ApiError::field("concurrency", "a child job lives in its run's shard and takes no flow control"));
    }
    let id = JobId::new(parent.shard(), now, random_u64());
    let mut job = spec.into_job(id, now).0;
    edgejobs_core::seal::seal_headers(&mut job.payload, job.id.as_str(), &cfg.payload_keys, &mut random_nonce)
        .map_err(crate::http::unsealable)?;
    Ok(job)
}
