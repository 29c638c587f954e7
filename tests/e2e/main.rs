//! The end-to-end suite. It starts one real local stack (redis-server, upstash-local,
//! `wrangler dev`, the consumer) with free ports and a private state directory, runs every
//! test against it, and stops it at the end, also when tests fail or panic.
//!
//! Custom harness (libtest-mimic) so that the stack is started once and shared; the output
//! and the closing summary are cargo test's.

mod callbacks;
mod cli;
mod client;
mod consumer;
mod dashboard;
mod examples;
mod flow_api;
mod flow_edge;
mod flow_native;
mod growth;
mod hook;
mod hostile;
mod jobs;
mod lease;
mod limits;
mod live;
mod observability;
mod operations;
mod outbound;
mod races;
mod schedules;
mod sdk;
mod small;
mod tenants;
mod tracing;
mod types;
mod upstash;
mod util;
mod wake;
mod workflows;

use std::sync::Arc;

use edgejobs_tests::stack::{Profile, Stack, StackOptions};
use libtest_mimic::{Arguments, Trial};

use util::Ctx;

fn main() {
    let args = Arguments::from_args();
    let listing = args.list;
    let tests: Vec<util::Test> = [
        jobs::TESTS,
        upstash::TESTS,
        consumer::TESTS,
        observability::TESTS,
        operations::TESTS,
        races::TESTS,
        hostile::TESTS,
        examples::TESTS,
        hook::TESTS,
        limits::TESTS,
        dashboard::TESTS,
        cli::TESTS,
        schedules::TESTS,
        tenants::TESTS,
        types::TESTS,
        small::TESTS,
        outbound::TESTS,
        lease::TESTS,
        wake::TESTS,
        growth::TESTS,
        flow_edge::TESTS,
        flow_native::TESTS,
        flow_api::TESTS,
        workflows::TESTS,
        live::TESTS,
        callbacks::TESTS,
        sdk::TESTS,
        tracing::TESTS,
        client::TESTS,
    ]
    .concat();
    if listing {
        let trials = tests.into_iter().map(|(name, _)| Trial::test(name, || Ok(()))).collect();
        libtest_mimic::run(&args, trials).exit();
    }
    let llm =
        match edgejobs_tests::fake_llm::FakeLlm::start(&format!("sk-fake-{}", edgejobs_tests::stack::random_hex(8))) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("could not start the fake LLM API: {e:#}");
                std::process::exit(1);
            }
        };
    // The webhook target and the LLM fake start first: the stacks open exactly their
    // loopback ports for outbound requests, nothing broader.
    let hooks = match edgejobs_tests::hooks::Hooks::start() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("could not start the webhook target: {e:#}");
            std::process::exit(1);
        }
    };
    // The port examples/webhook-receiver listens on when its test runs (opened outbound).
    // Held bound until its test starts the receiver: a port merely noted as free can be taken
    // meanwhile by any outbound connection's ephemeral port (seen once in a CI-like run).
    let receiver_reservation = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("no free port: {e:#}");
            std::process::exit(1);
        }
    };
    let receiver_port = receiver_reservation.local_addr().map(|a| a.port()).unwrap_or_default();
    // The same for examples/workflow-worker (a workflow endpoint under `wrangler dev`).
    let workflow_reservation = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("no free port: {e:#}");
            std::process::exit(1);
        }
    };
    let workflow_port = workflow_reservation.local_addr().map(|a| a.port()).unwrap_or_default();
    // The origin of the live-results browser test's page (#30), allowed by the stack's CORS.
    let page_reservation = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("no free port: {e:#}");
            std::process::exit(1);
        }
    };
    let page_port = page_reservation.local_addr().map(|a| a.port()).unwrap_or_default();
    // Where the TypeScript and the Python clients' scenarios receive a delivery to verify.
    let sdk_reservations =
        match (std::net::TcpListener::bind("127.0.0.1:0"), std::net::TcpListener::bind("127.0.0.1:0")) {
            (Ok(a), Ok(b)) => [a, b],
            _ => {
                eprintln!("no free port for the SDK scenarios");
                std::process::exit(1);
            }
        };
    let sdk_ports = sdk_reservations.each_ref().map(|l| l.local_addr().map(|a| a.port()).unwrap_or_default());
    let outbound_allow = util::outbound_allow(
        &hooks,
        &llm,
        &[receiver_port, outbound::second_origin_port(), workflow_port, sdk_ports[0], sdk_ports[1]],
    );
    let consumer_env = util::consumer_env(&llm);
    let state_dir = std::env::temp_dir().join(format!("edgejobs-e2e-{}", std::process::id()));
    let opts = StackOptions {
        root: StackOptions::default_root(),
        state_dir: state_dir.clone(),
        dev_vars: None,
        consumer: true,
        persist_redis: false,
        // The suite's tests run in parallel and most enqueue with the default tenant's key,
        // which shares one window (RATE_LIMIT is per tenant): a limit for a whole suite.
        // Limits themselves are tested with keys that carry their own (`limited_key`).
        vars: vec![
            ("RATE_LIMIT".into(), "6000/60s".into()),
            ("ALLOWED_ORIGINS".into(), format!("http://127.0.0.1:{page_port}")),
            // The workflow types the TypeScript and the Python scenarios serve themselves, to
            // see an event resume a wait (#31).
            ("JOB_TYPES".into(), sdk::job_types(sdk_ports)),
        ],
        consumer_env,
        profile: Profile::default(),
        outbound_allow: outbound_allow.clone(),
        native_lease: Some("3s".into()),
        edge_upstash_url: None,
        traces: true,
    };
    let stack = match Stack::start(opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("could not start the local stack: {e:#}");
            std::process::exit(1);
        }
    };
    let ctx = Arc::new(Ctx::new(
        &stack,
        llm,
        hooks,
        receiver_reservation,
        workflow_reservation,
        page_reservation,
        sdk_reservations,
    ));
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let ctx = Arc::clone(&ctx);
            Trial::test(name, move || f(&ctx).map_err(|e| format!("{e:#}").into()))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        for part in ["wrangler", "consumer-0", "upstash-local"] {
            eprintln!("{}", stack.tail(part));
        }
    }
    drop(ctx);
    drop(stack);
    if conclusion.has_failed() {
        eprintln!("logs of the failed run are kept in {}", state_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    conclusion.exit();
}
