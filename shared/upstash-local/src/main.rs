//! upstash-local: serves Upstash's Redis REST API on loopback in front of a real
//! `redis-server`, so the edge and the native consumer speak to Redis locally exactly as they
//! do to Upstash in production. (Upstash's own emulator needs Docker, which we lack.)
//!
//! Endpoints: `POST /` (one command as a JSON array), `GET|POST /<cmd>/<arg>/...` (the path
//! form), `POST /pipeline` (an array of commands, answered per command), `POST /multi-exec`
//! (a transaction), all with `Authorization: Bearer <token>` and optional
//! `Upstash-Encoding: base64`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use clap::Parser;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};

/// Command-line settings (each also readable from the environment).
#[derive(Debug, Parser)]
#[command(about = "Upstash-compatible REST gateway in front of a local redis-server")]
struct Args {
    /// Address to listen on (loopback only). Default 127.0.0.1:8079.
    #[arg(long, env = "UPSTASH_LOCAL_LISTEN", default_value = "127.0.0.1:8079")]
    listen: SocketAddr,
    /// Redis to forward to. Default redis://127.0.0.1:6379.
    #[arg(long, env = "UPSTASH_LOCAL_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The bearer token clients must present (the local `UPSTASH_REDIS_REST_TOKEN`). Required.
    #[arg(long, env = "UPSTASH_LOCAL_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Clone)]
struct AppState {
    /// `host:port` of redis, for transactions (which need a connection of their own).
    redis_addr: String,
    conn: ConnectionManager,
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    anyhow::ensure!(args.listen.ip().is_loopback(), "upstash-local listens on loopback only");
    let client = redis::Client::open(args.redis_url.as_str()).context("invalid redis url")?;
    // The manager reconnects by itself when redis restarts.
    // Bounded waits everywhere, so a stopped redis gives quick 500s rather than hung
    // requests, and the manager reconnects once it is back.
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_number_of_retries(2)
        .set_max_delay(1000);
    let conn = ConnectionManager::new_with_config(client, config).await.context("cannot connect to redis")?;
    let redis_addr = args.redis_url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let app = router(AppState { redis_addr, conn, token: args.token });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "upstash-local ready");
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

fn router(state: AppState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

fn err(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

async fn dispatch(State(st): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == st.token);
    if !authorized {
        return err(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let b64 =
        headers.get("upstash-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("base64"));
    let path = uri.path();
    let mut conn = st.conn.clone();
    match (method.clone(), path) {
        (Method::POST, "/pipeline") | (Method::POST, "/multi-exec") => {
            let Ok(Value::Array(cmds)) = serde_json::from_slice::<Value>(&body) else {
                return err(StatusCode::BAD_REQUEST, "ERR body must be a JSON array of commands");
            };
            let mut parsed = Vec::with_capacity(cmds.len());
            for c in &cmds {
                match to_args(c) {
                    Some(a) => parsed.push(a),
                    None => {
                        return err(StatusCode::BAD_REQUEST, "ERR each command must be a non-empty JSON array");
                    }
                }
            }
            if path == "/multi-exec" {
                multi_exec(&st.redis_addr, parsed, b64).await
            } else {
                let mut out = Vec::with_capacity(parsed.len());
                for args in parsed {
                    out.push(match run(&mut conn, &args).await {
                        Ok(v) => json!({ "result": encode(v, b64) }),
                        Err(Failed::Refused(e)) => json!({ "error": e }),
                        Err(Failed::Unreachable(e)) => return err(StatusCode::INTERNAL_SERVER_ERROR, &e),
                    });
                }
                axum::Json(Value::Array(out)).into_response()
            }
        }
        (Method::POST, "/") => {
            let Some(args) = serde_json::from_slice::<Value>(&body).ok().as_ref().and_then(to_args) else {
                return err(StatusCode::BAD_REQUEST, "ERR body must be a non-empty JSON array");
            };
            single(&mut conn, &args, b64).await
        }
        (Method::GET | Method::POST, _) => {
            // Path form: /set/key/value; a POST body is appended as the last argument.
            let mut args: Vec<Vec<u8>> = path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
            if method == Method::POST && !body.is_empty() {
                args.push(body.to_vec());
            }
            if args.is_empty() {
                return err(StatusCode::BAD_REQUEST, "ERR empty command");
            }
            single(&mut conn, &args, b64).await
        }
        _ => err(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

async fn single(conn: &mut ConnectionManager, args: &[Vec<u8>], b64: bool) -> Response {
    match run(conn, args).await {
        Ok(v) => axum::Json(json!({ "result": encode(v, b64) })).into_response(),
        Err(Failed::Refused(e)) => err(StatusCode::BAD_REQUEST, &e),
        Err(Failed::Unreachable(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

/// Why a command has no result: Redis refused it (Upstash answers 400), or Redis could not
/// be reached (Upstash answers 5xx).
enum Failed {
    Refused(String),
    Unreachable(String),
}

/// A transaction runs on a connection of its own: MULTI/EXEC state belongs to a
/// connection, and the shared multiplexed one interleaves other requests' commands. Each
/// command's failure is reported on its own, as Upstash does; a command refused while
/// queueing aborts the whole transaction (Redis's EXECABORT), answered as a 400.
///
/// It speaks RESP through redis-rs's parser directly because redis-rs turns any error
/// nested in a reply into an error for the whole reply.
async fn multi_exec(addr: &str, cmds: Vec<Vec<Vec<u8>>>, b64: bool) -> Response {
    let addr = addr.to_owned();
    let run = tokio::task::spawn_blocking(move || transaction(&addr, &cmds)).await;
    match run {
        Ok(Ok(values)) => axum::Json(Value::Array(
            values
                .into_iter()
                .map(|v| match server_error_text(&v) {
                    Some(e) => json!({ "error": e }),
                    None => json!({ "result": encode(v, b64) }),
                })
                .collect(),
        ))
        .into_response(),
        Ok(Err(TxError::Refused(e))) => err(StatusCode::BAD_REQUEST, &e),
        Ok(Err(TxError::Io(e))) => err(StatusCode::INTERNAL_SERVER_ERROR, &format!("ERR redis unreachable: {e}")),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, &format!("ERR {e}")),
    }
}

enum TxError {
    Refused(String),
    Io(String),
}

fn transaction(addr: &str, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<redis::Value>, TxError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| TxError::Io(e.to_string());
    let stream = std::net::TcpStream::connect(addr).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(8))).map_err(io)?;
    stream.set_write_timeout(Some(Duration::from_secs(8))).map_err(io)?;
    let mut packed = redis::cmd("MULTI").get_packed_command();
    for args in cmds {
        packed.extend(build(args).get_packed_command());
    }
    packed.extend(redis::cmd("EXEC").get_packed_command());
    (&stream).write_all(&packed).map_err(io)?;
    let mut reader = std::io::BufReader::new(&stream);
    let mut parser = redis::Parser::new();
    let mut next = || parser.parse_value(&mut reader).map_err(|e| TxError::Io(e.to_string()));
    next()?; // +OK for MULTI
    let mut queue_error = None;
    for _ in cmds {
        if let Some(e) = server_error_text(&next()?) {
            queue_error.get_or_insert(e);
        }
    }
    match next()? {
        redis::Value::Array(values) => Ok(values),
        other => Err(TxError::Refused(
            queue_error
                .or_else(|| server_error_text(&other))
                .unwrap_or_else(|| "EXECABORT Transaction discarded".into()),
        )),
    }
}

/// The text of an error reply nested in an array (`CODE detail`), if `v` is one.
fn server_error_text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::ServerError(e) => Some(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_owned(),
        }),
        _ => None,
    }
}

fn to_args(v: &Value) -> Option<Vec<Vec<u8>>> {
    let items = v.as_array()?;
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|a| match a {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Number(n) => Some(n.to_string().into_bytes()),
            Value::Bool(b) => Some(b.to_string().into_bytes()),
            _ => None,
        })
        .collect()
}

fn build(args: &[Vec<u8>]) -> redis::Cmd {
    let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
    for a in &args[1..] {
        cmd.arg(a.as_slice());
    }
    cmd
}

async fn run(conn: &mut ConnectionManager, args: &[Vec<u8>]) -> Result<redis::Value, Failed> {
    let reply = tokio::time::timeout(Duration::from_secs(8), build(args).query_async::<redis::Value>(conn))
        .await
        .map_err(|_| Failed::Unreachable("ERR redis unreachable: no answer within 8 s".into()))?;
    reply.map_err(|e| {
        // Every reply Redis itself sends has a code (ERR, WRONGTYPE, ...); anything else is
        // the connection failing.
        if e.code().is_none() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Failed::Unreachable(format!("ERR redis unreachable: {e}"))
        } else {
            Failed::Refused(error_text(&e))
        }
    })
}

fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => format!("ERR {e}"),
    }
}

fn text(bytes: &[u8], b64: bool) -> Value {
    if b64 {
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        Value::String(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Converts a Redis reply to Upstash's JSON form.
fn encode(v: redis::Value, b64: bool) -> Value {
    use redis::Value as R;
    match v {
        R::Nil => Value::Null,
        R::Int(i) => json!(i),
        R::BulkString(b) => text(&b, b64),
        R::SimpleString(s) => text(s.as_bytes(), b64),
        // Upstash sends OK as plain text even in base64 mode; the official client relies on it.
        R::Okay => Value::String("OK".to_owned()),
        R::Array(items) | R::Set(items) => Value::Array(items.into_iter().map(|i| encode(i, b64)).collect()),
        R::Map(pairs) => Value::Array(pairs.into_iter().flat_map(|(k, v)| [encode(k, b64), encode(v, b64)]).collect()),
        R::Double(d) => text(d.to_string().as_bytes(), b64),
        R::Boolean(b) => json!(if b { 1 } else { 0 }),
        R::VerbatimString { text: t, .. } => text(t.as_bytes(), b64),
        R::BigNumber(n) => text(n.to_string().as_bytes(), b64),
        e @ R::ServerError(_) => json!({ "error": server_error_text(&e) }),
        other => text(format!("{other:?}").as_bytes(), b64),
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}
