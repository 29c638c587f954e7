//! The gateway end to end: a `redis-server` on a free loopback port, the gateway in front of
//! it, and real HTTP requests. Checks what the unit tests cannot: that a refused command
//! never reaches Redis, that the shared connection survives hostile requests, and that the
//! binary refuses a short token.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgejobs_upstash_local::auth::Token;
use edgejobs_upstash_local::gateway::{Gateway, serve};
use serde_json::{Value, json};

const TOKEN: &str = "local_0123456789abcdef0123456789abcdef";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A private redis-server, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop (redis-server writes nothing with `--save ""`, but needs one).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_redis() -> Redis {
    start_redis_with(None)
}

/// A private redis-server that requires `password` when given.
fn start_redis_with(password: Option<&str>) -> Redis {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("upstash-local-test-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut cmd = Command::new("redis-server");
    if let Some(p) = password {
        cmd.args(["--requirepass", p]);
    }
    let child = cmd
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/setup installs it)");
    let redis = Redis { child, port, _dir: TempDir(dir) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis
}

struct Stack {
    _redis: Redis,
    url: String,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(max_body: usize) -> Stack {
    let redis = start_redis();
    let token = Token::new(TOKEN).expect("valid token");
    let gateway =
        Gateway::connect(&format!("redis://127.0.0.1:{}", redis.port), token, max_body).await.expect("connects");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, gateway, async move {
        let _ = stopped.await;
    }));
    Stack { _redis: redis, url, http: reqwest::Client::new(), _stop: stop }
}

impl Stack {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the gateway answers");
        let status = r.status().as_u16();
        (status, r.json().await.expect("a JSON body"))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(TOKEN).send().await.expect("answers");
        let status = r.status().as_u16();
        (status, r.json().await.expect("a JSON body"))
    }

    async fn cmd(&self, args: Value) -> (u16, Value) {
        self.post("/", args.to_string()).await
    }
}

fn error_text(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn refused_commands_never_reach_redis() {
    let s = start(1024 * 1024).await;
    assert_eq!(s.cmd(json!(["SET", "keep", "1"])).await, (200, json!({ "result": "OK" })));
    for (cmd, says) in [
        (json!(["FLUSHALL"]), "command 'FLUSHALL' is not supported"),
        (json!(["flushdb"]), "command 'FLUSHDB' is not supported"),
        (json!(["CONFIG", "SET", "maxmemory", "1"]), "command 'CONFIG' is not supported"),
        (json!(["SHUTDOWN", "NOSAVE"]), "command 'SHUTDOWN' is not supported"),
        (json!(["DEBUG", "SLEEP", "30"]), "command 'DEBUG' is not supported"),
        (json!(["KEYS", "*"]), "command 'KEYS' is not supported"),
        (json!(["SCRIPT", "FLUSH"]), "command 'SCRIPT FLUSH' is not supported"),
        (json!(["NOSUCHCMD"]), "command 'NOSUCHCMD' is not supported"),
        (json!(["BLPOP", "list", 0]), "blocking command 'BLPOP'"),
        (json!(["XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">"]), "XREADGROUP with BLOCK"),
    ] {
        let (status, body) = s.cmd(cmd.clone()).await;
        assert_eq!(status, 400, "{cmd}: {body}");
        assert!(error_text(&body).starts_with("ERR ") && error_text(&body).contains(says), "{cmd}: {body}");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only an error field: {body}");
    }
    // The path form goes through the same list.
    let (status, body) = s.get("/flushall").await;
    assert!(status == 400 && error_text(&body).contains("FLUSHALL"), "{body}");
    let (status, body) = s.post("/flushall", "").await;
    assert!(status == 400 && error_text(&body).contains("FLUSHALL"), "{body}");
    // Nothing was flushed, and redis's config is untouched.
    assert_eq!(s.cmd(json!(["GET", "keep"])).await, (200, json!({ "result": "1" })));
    assert_eq!(s.cmd(json!(["DBSIZE"])).await, (200, json!({ "result": 1 })));
}

#[tokio::test]
async fn connection_state_commands_cannot_poison_the_shared_connection() {
    let s = start(1024 * 1024).await;
    for cmd in [json!(["MULTI"]), json!(["SELECT", 1]), json!(["SUBSCRIBE", "c"]), json!(["HELLO", 3])] {
        let (status, body) = s.cmd(cmd.clone()).await;
        assert_eq!(status, 400, "{cmd}: {body}");
    }
    // Still a plain connection on database 0: commands answer at once.
    assert_eq!(s.cmd(json!(["SET", "k", "v"])).await, (200, json!({ "result": "OK" })));
    assert_eq!(s.cmd(json!(["GET", "k"])).await, (200, json!({ "result": "v" })));
}

#[tokio::test]
async fn pipelines_fail_per_command_and_transactions_whole() {
    let s = start(1024 * 1024).await;
    let (status, body) = s.post("/pipeline", r#"[["SET","p","1"],["FLUSHALL"],["INCR","p"]]"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0], json!({ "result": "OK" }));
    assert!(error_text(&body[1]).contains("FLUSHALL"), "{body}");
    assert_eq!(body[2], json!({ "result": 2 }));
    // A transaction with a refused command is refused whole: INCR did not run.
    let (status, body) = s.post("/multi-exec", r#"[["INCR","p"],["BLPOP","x",0]]"#).await;
    assert!(status == 400 && error_text(&body).contains("BLPOP"), "{status} {body}");
    assert_eq!(s.cmd(json!(["GET", "p"])).await, (200, json!({ "result": "2" })));
    let (status, body) = s.post("/multi-exec", r#"[["INCR","p"],["GET","p"]]"#).await;
    assert_eq!((status, body), (200, json!([{ "result": 3 }, { "result": "3" }])));
}

#[tokio::test]
async fn malformed_requests_are_400s_in_upstash_shape() {
    let s = start(64).await;
    for (path, body) in [
        ("/", "not json"),
        ("/", "[]"),
        ("/", r#"["SET",{"a":1}]"#),
        ("/pipeline", "[]"),
        ("/pipeline", r#"["PING"]"#),
        ("/multi-exec", "{}"),
    ] {
        let (status, v) = s.post(path, body).await;
        assert!(status == 400 && error_text(&v).starts_with("ERR "), "{path} {body}: {status} {v}");
    }
    // Percent-decoding, and bytes that are not UTF-8 once decoded.
    assert_eq!(s.get("/set/pk/a%20b%E2%9C%93").await, (200, json!({ "result": "OK" })));
    assert_eq!(s.get("/get/pk").await, (200, json!({ "result": "a b✓" })));
    let (status, v) = s.get("/get/%FF%FE").await;
    assert!(status == 400 && error_text(&v).contains("UTF-8"), "{v}");
    // A body over the limit is refused with Upstash's words, and the gateway stays up.
    let (status, v) = s.post("/", format!(r#"["SET","big","{}"]"#, "x".repeat(100))).await;
    assert_eq!((status, v), (400, json!({ "error": "ERR max request size exceeded" })));
    assert_eq!(s.cmd(json!(["PING"])).await, (200, json!({ "result": "PONG" })));
}

#[tokio::test]
async fn wrong_or_missing_tokens_are_refused() {
    let s = start(1024 * 1024).await;
    for auth in [None, Some("Bearer wrong"), Some("Bearer local_0123456789abcdef0123456789abcdeX"), Some(TOKEN)] {
        let mut req = s.http.post(format!("{}/", s.url)).body(r#"["PING"]"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("answers");
        assert_eq!(r.status().as_u16(), 401, "{auth:?}");
        assert_eq!(r.json::<Value>().await.expect("json"), json!({ "error": "Unauthorized" }));
    }
}

#[test]
fn the_binary_refuses_a_short_token_with_exit_code_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_upstash-local"))
        .env("UPSTASH_LOCAL_TOKEN", "tooshort")
        .env("UPSTASH_LOCAL_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at least 16") && !stderr.contains("tooshort"), "{stderr}");
}

/// Only the project's own Lua scripts run (by text or by SHA-1), and a redis-server with a
/// password is reached only by a gateway that has it (single commands and transactions).
#[tokio::test]
async fn only_the_project_scripts_run_and_redis_needs_its_password() {
    use edgejobs_upstash_local::gateway::RedisPassword;
    use edgejobs_upstash_local::scripts::{ALL, sha1_hex};
    let password = "pw_0123456789abcdef0123";
    let redis = start_redis_with(Some(password));
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let serve_on = |gateway: Gateway| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, gateway, async move {
            let _ = stopped.await;
        }));
        (base, stop)
    };
    let http = reqwest::Client::new();
    let cmd = |base: String, args: Value| {
        let http = http.clone();
        async move {
            let r =
                http.post(format!("{base}/")).bearer_auth(TOKEN).body(args.to_string()).send().await.expect("answers");
            (r.status().as_u16(), r.json::<Value>().await.expect("JSON"))
        }
    };
    // Without the password, redis answers nothing but NOAUTH.
    let blind = Gateway::connect(&url, Token::new(TOKEN).expect("token"), 1 << 20).await;
    if let Ok(blind) = blind {
        let (base, _stop) = serve_on(blind).await;
        let (status, body) = cmd(base, json!(["SET", "k", "1"])).await;
        assert!(status != 200 || body.get("error").is_some(), "a gateway without the password: {status} {body}");
    }
    let gateway = Gateway::connect_with(
        &url,
        Some(RedisPassword(password.to_owned())),
        Token::new(TOKEN).expect("token"),
        1 << 20,
    )
    .await
    .expect("connects with the password");
    let (base, _stop) = serve_on(gateway).await;
    assert_eq!(cmd(base.clone(), json!(["SET", "k", "1"])).await, (200, json!({ "result": "OK" })));
    // Transactions open a connection of their own: it authenticates too.
    let r = http
        .post(format!("{base}/multi-exec"))
        .bearer_auth(TOKEN)
        .body(json!([["SET", "t", "1"], ["GET", "t"]]).to_string())
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.expect("JSON"), json!([{ "result": "OK" }, { "result": "1" }]));
    // A project script (a lease script with no entries to look at) runs by text, then by SHA-1.
    let script = ALL.iter().find(|s| s.contains("for i = 3, #ARGV")).expect("a per-entry lease script");
    let (status, body) = cmd(base.clone(), json!(["XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"])).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cmd(base.clone(), json!(["EVAL", script, 1, "s", "g", "me"])).await;
    assert_eq!((status, body.clone()), (200, json!({ "result": [] })), "{body}");
    let sha = sha1_hex(script.as_bytes());
    let (status, body) = cmd(base.clone(), json!(["EVALSHA", sha, 1, "s", "g", "me"])).await;
    assert_eq!((status, body.clone()), (200, json!({ "result": [] })), "{body}");
    // Any other script is refused before redis sees it, by text, by SHA-1 or as SCRIPT LOAD.
    for args in [
        json!(["EVAL", "return redis.call('FLUSHALL')", 0]),
        json!(["EVAL_RO", "return 1", 0]),
        json!(["EVALSHA", sha1_hex(b"return 1"), 0]),
        json!(["SCRIPT", "LOAD", "return 1"]),
    ] {
        let (status, body) = cmd(base.clone(), args.clone()).await;
        assert_eq!(status, 400, "{args}: {body}");
        assert!(error_text(&body).contains("only this project's Lua scripts"), "{args}: {body}");
    }
    let (_, body) = cmd(base.clone(), json!(["GET", "k"])).await;
    assert_eq!(body, json!({ "result": "1" }), "nothing was flushed");
    let (_, body) = cmd(base, json!(["SCRIPT", "EXISTS", sha1_hex(b"return 1")])).await;
    assert_eq!(body, json!({ "result": [0] }), "the refused script was never loaded");
}

/// Reads the subscription's stream until it holds `want` (bounded), returning all it read.
async fn read_until(resp: &mut reqwest::Response, want: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want:?} within 10 s; read {seen:?}");
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("the stream ended or failed before {want:?}: {other:?}; read {seen:?}"),
        }
    }
    seen
}

impl Stack {
    async fn subscribe(&self, channel: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/subscribe/{channel}", self.url))
            .bearer_auth(TOKEN)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("the gateway answers")
    }
}

/// SUBSCRIBE over REST, as Upstash serves it: an event stream that says it subscribed, then
/// carries every message published on the channel (here by the project's hand-off script,
/// which announces what it added on `<stream>:wake`). The subscription holds a connection of
/// its own: requests on the shared one go on being answered while it waits.
#[tokio::test]
async fn a_subscription_streams_hand_off_wake_ups_and_stalls_nothing() {
    let s = start(1024 * 1024).await;
    let mut sub = s.subscribe("jobs:wake").await;
    assert_eq!(sub.status().as_u16(), 200);
    assert_eq!(sub.headers()["content-type"], "text/event-stream");
    read_until(&mut sub, "data: subscribe,jobs:wake,1\n").await;
    // While the subscription waits, the shared connection answers at once.
    for i in 0..20 {
        let (status, body) = s.cmd(json!(["SET", format!("k{i}"), "v"])).await;
        assert_eq!((status, body), (200, json!({ "result": "OK" })));
        assert_eq!(s.get(&format!("/get/k{i}")).await, (200, json!({ "result": "v" })));
    }
    // Two attempts handed off in one call: one wake-up carrying how many were added.
    // The first carries its trace context into the entry (#32), the second has none.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let handoff = json!([
        "EVAL",
        *edgejobs_core_scripts::HANDOFF_MANY,
        3,
        "jobs",
        "h:1",
        "h:2",
        "job-1",
        "1",
        tp,
        "job-2",
        "1",
        ""
    ]);
    let (status, body) = s.cmd(handoff.clone()).await;
    assert_eq!(status, 200, "{body}");
    read_until(&mut sub, "data: message,jobs:wake,2\n").await;
    let (_, entries) = s.cmd(json!(["XRANGE", "jobs", "-", "+"])).await;
    assert_eq!(entries["result"][0][1], json!(["id", "job-1", "attempt", "1", "traceparent", tp]), "{entries}");
    assert_eq!(entries["result"][1][1], json!(["id", "job-2", "attempt", "1"]), "{entries}");
    // The same hand-off again adds nothing, and announces nothing; a later one does.
    assert_eq!(s.cmd(handoff).await.0, 200);
    let single = json!(["EVAL", *edgejobs_core_scripts::HANDOFF, 2, "jobs", "h:3", "job-3", "1"]);
    assert_eq!(s.cmd(single).await.0, 200);
    let seen = read_until(&mut sub, "data: message,jobs:wake,1\n").await;
    assert!(!seen.contains(",2\n"), "the repeated hand-off announced nothing: {seen:?}");
    // Subscribing is the endpoint's job: as a command it is refused, as Upstash does.
    let (status, body) = s.cmd(json!(["SUBSCRIBE", "jobs:wake"])).await;
    assert_eq!(status, 400, "{body}");
}

/// Blocking reads are refused at once, as Upstash's REST API does not support them
/// (XREAD/XREADGROUP with BLOCK, BLPOP and the like), and never hold the shared connection:
/// a GET sent with them is answered.
#[tokio::test]
async fn blocking_reads_are_refused_at_once_and_stall_nothing() {
    let s = start(1024 * 1024).await;
    assert_eq!(s.cmd(json!(["XGROUP", "CREATE", "s", "g", "0", "MKSTREAM"])).await.0, 200);
    let (blpop, xread, set) = tokio::join!(
        s.cmd(json!(["BLPOP", "wake", 0])),
        s.cmd(json!(["XREADGROUP", "GROUP", "g", "c", "BLOCK", 0, "STREAMS", "s", ">"])),
        s.cmd(json!(["SET", "k", "v"]))
    );
    assert_eq!(blpop.0, 400, "{blpop:?}");
    assert_eq!(xread.0, 400, "{xread:?}");
    assert_eq!(set, (200, json!({ "result": "OK" })));
    // The refused read took nothing: the consumer was never created.
    let (_, consumers) = s.cmd(json!(["XINFO", "CONSUMERS", "s", "g"])).await;
    assert_eq!(consumers, json!({ "result": [] }));
}

/// Subscriptions are bounded (each holds a Redis connection); one too many is refused with
/// Upstash's words, and a slot is free again once its client goes away.
#[tokio::test]
async fn subscriptions_are_bounded_and_freed_when_their_client_leaves() {
    use edgejobs_upstash_local::subscribe::MAX_SUBSCRIPTIONS;
    let s = start(1024 * 1024).await;
    let mut held = Vec::new();
    for i in 0..MAX_SUBSCRIPTIONS {
        let mut sub = s.subscribe(&format!("c{i}")).await;
        assert_eq!(sub.status().as_u16(), 200, "subscription {i}");
        read_until(&mut sub, "data: subscribe,").await;
        held.push(sub);
    }
    let over = s.subscribe("one-more").await;
    assert_eq!(over.status().as_u16(), 429);
    let body: Value = over.json().await.expect("JSON");
    assert_eq!(error_text(&body), "ERR max concurrent connections exceeded");
    drop(held.pop());
    // The slot frees once the gateway notices the client left (its next write fails).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sub = s.subscribe("again").await;
        if sub.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot of a client that left was never freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The project's hand-off scripts, by their text in `shared/core/src/scripts.rs`.
mod edgejobs_core_scripts {
    use edgejobs_upstash_local::scripts::ALL;

    pub static HANDOFF_MANY: std::sync::LazyLock<&str> =
        std::sync::LazyLock::new(|| ALL.iter().find(|s| s.contains("local added = 0")).expect("the batch hand-off"));
    pub static HANDOFF: std::sync::LazyLock<&str> = std::sync::LazyLock::new(|| {
        ALL.iter().find(|s| s.starts_with("local dup") && s.contains("ARGV[1]")).expect("the single hand-off")
    });
}

/// A stopping gateway ends its subscriptions' streams (its clients see the end and subscribe
/// again), instead of waiting for them forever in its graceful shutdown.
#[tokio::test]
async fn a_stopping_gateway_ends_its_subscriptions() {
    let redis = start_redis();
    let token = Token::new(TOKEN).expect("valid token");
    let gateway =
        Gateway::connect(&format!("redis://127.0.0.1:{}", redis.port), token, 1 << 20).await.expect("connects");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, gateway, async move {
        let _ = stopped.await;
    }));
    let mut sub = reqwest::Client::new()
        .post(format!("{url}/subscribe/c"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the gateway answers");
    read_until(&mut sub, "data: subscribe,c,1\n").await;
    stop.send(()).expect("the gateway is running");
    let ended = tokio::time::timeout(Duration::from_secs(10), served).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "the gateway stopped within 10 s: {ended:?}");
    let rest = tokio::time::timeout(Duration::from_secs(5), sub.chunk()).await.expect("the stream ended");
    assert!(matches!(rest, Ok(None) | Err(_)), "nothing more: {rest:?}");
}
