//! Durable workflows (#29) end to end: `examples/agent-workflow` runs an agent loop on the
//! fault stack (a model call, a tool call, a model call, a wait for an approval event, a
//! webhook), each step exactly once, the wait holding no worker; events resume the matching
//! run once whatever is sent twice or concurrently; a handler that changes its steps and bad
//! step reports or events are refused with a clear error and change nothing.

use std::time::Duration;

use edgejobs_tests::hooks::Reply;
use edgejobs_tests::proc::wait_until;
use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Resp, Test, enqueue_on, ensure, job_on, report_on, unique, wait_on};

pub const TESTS: &[Test] = &[
    ("workflows_agent_loop_runs_each_step_once_and_an_event_resumes_it_once", agent_loop),
    ("workflows_served_by_a_typescript_worker_over_http_run_each_step_once", http_workflow),
    ("workflows_refuse_changed_handlers_and_bad_reports_and_events", refusals),
    ("workflows_the_outbox_check_of_a_wait_leaves_the_shards_alarm_working", outbox_check),
];

fn send_event(ctx: &Ctx, stack: &Stack, body: &Value) -> anyhow::Result<Resp> {
    ctx.send(ctx.http.post(format!("{}/v1/events", stack.edge_url)).bearer_auth(&stack.secrets.api_key).json(body))
}

fn steps(job: &Value) -> Vec<(String, String)> {
    job["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| (s["name"].as_str().unwrap_or("").to_owned(), s["state"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn agent_loop(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let types = json!({ "agent.run": { "lane": "native", "timeout": "60s" },
                             "agent.batch": { "lane": "native", "timeout": "60s" } });
        stack.restart_wrangler(vec![("JOB_TYPES".into(), types.to_string())])?;
        let outcome = run_agent(ctx, stack);
        stack.kill_consumers();
        stack.restart_wrangler(Vec::new())?;
        outcome
    })
}

fn run_agent(ctx: &Ctx, stack: &mut Stack) -> anyhow::Result<()> {
    let tool_path = format!("/{}", unique("tool"));
    let notify_path = format!("/{}", unique("notify"));
    let tool_url = ctx.hooks.script(&tool_path, vec![Reply::status(200)]);
    let notify_url = ctx.hooks.script(&notify_path, vec![Reply::status(200)]);
    let order = 1_000 + u64::from_str_radix(&edgejobs_tests::stack::random_hex(3), 16).unwrap_or(0);
    let llm_before = ctx.llm.requests();
    let id = enqueue_on(
        ctx,
        stack,
        &json!({ "type": "agent.run", "payload": {
            "question": "which plan fits order 7?", "order_id": order,
            "tool_url": tool_url, "notify_url": notify_url, "approval_timeout_ms": 120_000 } }),
    )?;
    stack.start_consumer_binary("agent-workflow", &[])?;
    // The run reaches its wait and is suspended there: scheduled, holding nothing.
    let mut job = Value::Null;
    let waiting = wait_until(Duration::from_secs(60), || {
        job = job_on(ctx, stack, &id).unwrap_or(Value::Null);
        job["state"] == "scheduled" && steps(&job).last().is_some_and(|(n, s)| n == "approved" && s == "waiting")
    });
    ensure(waiting, || format!("the run did not reach its wait: {job}"))?;
    let names: Vec<String> = steps(&job).into_iter().map(|(n, _)| n).collect();
    ensure(names == ["plan", "tool", "answer", "approved"], || format!("the steps so far: {names:?}"))?;
    ensure(job["free_attempts"].as_u64().unwrap_or(0) >= 1, || format!("the wait spent no attempt: {job}"))?;
    ensure(job["steps"][3]["event"] == "order.approved", || format!("the wait names its event: {job}"))?;
    ensure(ctx.hooks.received(&tool_path).len() == 1, || "the tool was called once".into())?;
    ensure(ctx.llm.requests() - llm_before == 2, || format!("{} model calls", ctx.llm.requests() - llm_before))?;

    // Another order's approval resumes nothing.
    let other =
        send_event(ctx, stack, &json!({ "name": "order.approved", "data": { "order_id": order + 1, "by": "bob" } }))?;
    ensure(other.status == 202 && other.body["resumed"] == 0, || {
        format!("another order: {} {}", other.status, other.body)
    })?;
    ensure(job_on(ctx, stack, &id)?["state"] == "scheduled", || "still waiting".into())?;
    // The approval, sent twice at once with one id and once more with another: one resume.
    let approval = json!({ "name": "order.approved", "id": unique("approval"),
        "data": { "order_id": order, "by": "ann" } });
    let answers: Vec<anyhow::Result<Resp>> = std::thread::scope(|s| {
        let sends: Vec<_> = (0..2).map(|_| s.spawn(|| send_event(ctx, stack, &approval))).collect();
        sends.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a send panicked")))).collect()
    });
    let mut resumed = 0;
    let mut duplicates = 0;
    for a in answers {
        let a = a?;
        ensure(a.status == 202, || format!("event: {} {}", a.status, a.body))?;
        resumed += a.body["resumed"].as_u64().unwrap_or(0);
        duplicates += u64::from(a.body["duplicate"] == true);
    }
    let again =
        send_event(ctx, stack, &json!({ "name": "order.approved", "data": { "order_id": order, "by": "eve" } }))?;
    resumed += again.body["resumed"].as_u64().unwrap_or(0);
    ensure(duplicates == 1, || format!("{duplicates} sends of one id were answered as duplicates"))?;
    ensure(resumed == 1, || format!("the wait was resumed {resumed} times"))?;

    let done = wait_on(ctx, stack, &id, "completed")?;
    ensure(done["result"]["approved_by"] == "ann", || format!("the first approval's data: {}", done["result"]))?;
    let names: Vec<(String, String)> = steps(&done);
    ensure(
        names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>() == ["plan", "tool", "answer", "approved", "notify"]
            && names.iter().all(|(_, s)| s == "completed"),
        || format!("every step completed once: {names:?}"),
    )?;
    // Re-executed after the event, the handler got every earlier step from the record.
    ensure(ctx.hooks.received(&tool_path).len() == 1, || "the tool was called again".into())?;
    ensure(ctx.llm.requests() - llm_before == 2, || "the model was called again".into())?;
    let notes = ctx.hooks.received(&notify_path);
    ensure(notes.len() == 1, || format!("{} notifications", notes.len()))?;
    let note: Value = serde_json::from_str(&notes[0].body).unwrap_or(Value::Null);
    ensure(note["approved_by"] == "ann", || format!("the webhook body: {}", notes[0].body))?;

    // Children: a fan-out of three and an invoke, the run resumed by each step's end.
    let batch = enqueue_on(ctx, stack, &json!({ "type": "agent.batch", "payload": { "n": 3 } }))?;
    let done = wait_on(ctx, stack, &batch, "completed")?;
    ensure(done["result"] == json!({ "completed": 3, "one": { "ok": true } }), || {
        format!("the batch: {}", done["result"])
    })?;
    let kids: Vec<String> = done["steps"][0]["children"]
        .as_array()
        .map(|a| a.iter().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ensure(kids.len() == 3, || format!("the fan-out lists its children: {}", done["steps"][0]))?;
    let kid = job_on(ctx, stack, &kids[0])?;
    ensure(kid["parent"] == json!({ "job": batch, "step": "children" }), || format!("a child names its run: {kid}"))?;
    Ok(())
}

/// `examples/workflow-worker` (the TypeScript SDK under `wrangler dev`) serves the edge
/// type `order.flow`: the edge calls it with the run's record, records each step it
/// answers, sleeps and waits without holding anything, and the event finishes the run; the
/// quote step's function ran once for the run, the tool was called once.
fn http_workflow(ctx: &Ctx) -> anyhow::Result<()> {
    let endpoint = format!("http://127.0.0.1:{}/workflow", ctx.workflow_port);
    ctx.with_fault_stack(|stack| {
        let types = json!({
            "order.flow": { "lane": "edge", "url": endpoint, "workflow": true, "timeout": "30s" },
            "order.batch": { "lane": "edge", "url": endpoint, "workflow": true, "timeout": "30s" }
        });
        stack.restart_wrangler(vec![("JOB_TYPES".into(), types.to_string())])?;
        let outcome = served_over_http(ctx, stack, &endpoint);
        stack.restart_wrangler(Vec::new())?;
        outcome
    })
}

fn served_over_http(ctx: &Ctx, stack: &mut Stack, endpoint: &str) -> anyhow::Result<()> {
    // Each workflow type at the endpoint is signed with its own key.
    let secret_of = |ty: &str| -> anyhow::Result<String> {
        let r = ctx.send(
            ctx.http
                .post(format!("{}/v1/admin/webhook-secret", stack.edge_url))
                .bearer_auth(&stack.secrets.admin_key)
                .json(&json!({ "url": endpoint, "type": ty })),
        )?;
        ensure(r.status == 200, || format!("webhook-secret: {} {}", r.status, r.body))?;
        Ok(r.body["secret"].as_str().unwrap_or_default().to_owned())
    };
    let (secret, batch_secret) = (secret_of("order.flow")?, secret_of("order.batch")?);
    // Free the reserved port just before the example binds it.
    drop(ctx.workflow_reservation.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
    let vars = [("WORKFLOW_SECRET", secret.as_str()), ("BATCH_SECRET", batch_secret.as_str())];
    let (mut worker, _, log) = crate::sdk::start_example(ctx, stack, "workflow-worker", ctx.workflow_port, &vars)?;
    let calls = |run: &str| -> Value {
        ctx.http
            .get(format!("http://127.0.0.1:{}/calls?run={run}", ctx.workflow_port))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    };
    let result = (|| -> anyhow::Result<()> {
        ensure(wait_until(Duration::from_secs(60), || calls("none")["quote"] == 0), || {
            format!("the example worker did not start: {}", std::fs::read_to_string(&log).unwrap_or_default())
        })?;
        let tool_path = format!("/{}", unique("wf-tool"));
        let tool_url = ctx.hooks.script(&tool_path, vec![Reply::status(200)]);
        let order = 5_000 + u64::from_str_radix(&edgejobs_tests::stack::random_hex(3), 16).unwrap_or(0);
        let id = enqueue_on(
            ctx,
            stack,
            &json!({ "type": "order.flow", "payload": { "qty": 3, "order_id": order, "tool_url": tool_url,
                "sleep_ms": 1_000, "wait_ms": 120_000 } }),
        )?;
        let mut job = Value::Null;
        let waiting = wait_until(Duration::from_secs(60), || {
            job = job_on(ctx, stack, &id).unwrap_or(Value::Null);
            job["state"] == "scheduled" && steps(&job).last().is_some_and(|(n, s)| n == "approval" && s == "waiting")
        });
        ensure(waiting, || format!("the run did not reach its wait: {job}"))?;
        let names: Vec<String> = steps(&job).into_iter().map(|(n, _)| n).collect();
        ensure(names == ["quote", "tool", "cool-off", "approval"], || format!("the steps: {names:?}"))?;
        ensure(job["free_attempts"].as_u64().unwrap_or(0) >= 2, || format!("sleep and wait spent no attempt: {job}"))?;
        let sent =
            send_event(ctx, stack, &json!({ "name": "order.approved", "data": { "order_id": order, "by": "ann" } }))?;
        ensure(sent.status == 202 && sent.body["resumed"] == 1, || {
            format!("the event: {} {}", sent.status, sent.body)
        })?;
        let done = wait_on(ctx, stack, &id, "completed")?;
        ensure(
            done["result"]["price"] == 9
                && done["result"]["approved_by"] == "ann"
                && done["result"]["tool"]["status"] == 200,
            || format!("the run's result: {}", done["result"]),
        )?;
        ensure(steps(&done).iter().all(|(_, s)| s == "completed"), || format!("{:?}", steps(&done)))?;
        ensure(calls(&id)["quote"] == 1, || format!("the quote step ran {} times", calls(&id)["quote"]))?;
        ensure(ctx.hooks.received(&tool_path).len() == 1, || "the tool was called more than once".into())?;
        // Live output over HTTP (#30): what the steps emitted, once each, in order, although
        // the edge called the endpoint again after every step.
        let url = format!("{}/v1/jobs/{id}/events", stack.edge_url);
        let events = crate::live::subscribe(&url, &[("authorization", format!("Bearer {}", stack.secrets.api_key))])?
            .to_end(Duration::from_secs(30))?;
        let log: Vec<(Option<u64>, String)> = events
            .iter()
            .filter(|e| e.event == "chunk")
            .map(|e| (e.id, e.data["data"].as_str().unwrap_or("").to_owned()))
            .collect();
        ensure(log == [(Some(1), "quoted;".to_owned()), (Some(2), "tool;".to_owned())], || {
            format!("the run's stream: {log:?}")
        })?;
        ensure(done["progress"]["message"] == "quoted" && done["metadata"]["priced"] == true, || {
            format!("progress and metadata: {} {}", done["progress"], done["metadata"])
        })?;
        // Children over HTTP: a fan-out of two and an invoke.
        let batch = enqueue_on(ctx, stack, &json!({ "type": "order.batch", "payload": { "n": 2 } }))?;
        let done = wait_on(ctx, stack, &batch, "completed")?;
        ensure(done["result"] == json!({ "completed": 2, "one": { "ok": true } }), || {
            format!("the batch: {}", done["result"])
        })?;
        Ok(())
    })();
    worker.stop(Duration::from_secs(5));
    result
}

/// A native job no consumer runs on the fault stack, started by hand with the consumer
/// token: its id and lease token.
fn started_by_hand(ctx: &Ctx, stack: &Stack) -> anyhow::Result<(String, String)> {
    let id = enqueue_on(ctx, stack, &json!({ "type": "sleep", "payload": { "ms": 1 } }))?;
    let r = report_on(ctx, stack, &id, &json!({ "event": "start", "attempt": 1 }))?;
    ensure(r.status == 200, || format!("start: {} {}", r.status, r.body))?;
    let lease = r.headers.get("x-edgejobs-lease").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    ensure(!lease.is_empty(), || "the start issued a lease".into())?;
    Ok((id, lease))
}

/// A wait still waiting 30 s after it was recorded is indexed again by its run's shard's
/// alarm (the outbox; the index may be that same shard). The alarm goes on working after it:
/// the wait's own timeout, 10 s later, is kept by the next alarm.
fn outbox_check(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started_by_hand(ctx, stack)?;
        let wait = json!({ "event": "step", "attempt": 1, "lease": lease, "step": { "kind": "wait", "seq": 0,
            "name": "later", "event": unique("outbox"), "timeout_ms": 40_000 } });
        let r = report_on(ctx, stack, &id, &wait)?;
        ensure(r.status == 200 && r.body["state"] == "scheduled", || format!("the wait: {} {}", r.status, r.body))?;
        // Past the outbox check (30 s) and the wait's timeout (40 s): the alarm times it out.
        let mut job = Value::Null;
        let timed_out = wait_until(Duration::from_secs(90), || {
            job = job_on(ctx, stack, &id).unwrap_or(Value::Null);
            job["steps"][0]["state"] == "timed_out"
        });
        ensure(timed_out, || format!("the wait did not time out after the outbox check: {job}"))?;
        ensure(job["state"] == "queued", || format!("the timed-out run is queued again: {job}"))?;
        Ok(())
    })
}

fn refusals(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let (id, lease) = started_by_hand(ctx, stack)?;
        let step = |step: Value| json!({ "event": "step", "attempt": 1, "lease": lease, "step": step });
        let r = report_on(ctx, stack, &id, &step(json!({ "kind": "run", "seq": 0, "name": "a", "result": 1 })))?;
        ensure(r.status == 200, || format!("a step: {} {}", r.status, r.body))?;
        let before = job_on(ctx, stack, &id)?;
        let cases = [
            (json!({ "kind": "run", "seq": 0, "name": "b", "result": 1 }), 409, "nondeterministic_step"),
            (json!({ "kind": "run", "seq": 3, "name": "c", "result": 1 }), 409, "nondeterministic_step"),
            (json!({ "kind": "run", "seq": 1, "name": "a", "result": 1 }), 409, "nondeterministic_step"),
            (json!({ "kind": "run", "seq": 1, "name": "", "result": 1 }), 400, "invalid_field"),
            (json!({ "kind": "sleep", "seq": 1, "name": "n" }), 400, "invalid_field"),
            (json!({ "kind": "wait", "seq": 1, "name": "w", "event": "" }), 400, "invalid_field"),
            (json!({ "kind": "wait", "seq": 1, "name": "w", "event": "e", "lookback_ms": 86_400_001u64 }), 400, "invalid_field"),
            (json!({ "kind": "nope", "seq": 1, "name": "w" }), 400, "invalid_field"),
        ];
        for (body, status, code) in cases {
            let r = report_on(ctx, stack, &id, &step(body.clone()))?;
            ensure(r.status == status && r.code() == code, || format!("{body}: {} {}", r.status, r.body))?;
        }
        let forged = json!({ "event": "step", "attempt": 1, "lease": "x", "step": { "kind": "run", "seq": 1, "name": "z", "result": 1 } });
        let r = report_on(ctx, stack, &id, &forged)?;
        ensure(r.status == 409 && r.code() == "lease_mismatch", || format!("forged: {} {}", r.status, r.body))?;
        let after = job_on(ctx, stack, &id)?;
        ensure(after == before, || format!("a refused report changed the run:\n{before}\n{after}"))?;

        for (body, status, field) in [
            (json!({}), 400, "name"),
            (json!({ "name": "" }), 400, "name"),
            (json!({ "name": "x", "id": "" }), 400, "id"),
            (json!({ "name": "x", "typo": 1 }), 400, "typo"),
            (json!({ "name": "x", "tenant": "someone-else" }), 403, ""),
            (json!({ "name": "x", "data": "y".repeat(70_000) }), 413, ""),
        ] {
            let r = send_event(ctx, stack, &body)?;
            ensure(r.status == status && (field.is_empty() || r.body["error"]["field"] == field), || {
                format!("{}: {} {}", body.to_string().chars().take(80).collect::<String>(), r.status, r.body)
            })?;
        }
        Ok(())
    })
}
