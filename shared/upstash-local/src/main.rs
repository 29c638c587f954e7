//! upstash-local: serves Upstash's Redis REST API on loopback in front of a real
//! `redis-server`, so the edge and the native consumer speak to Redis locally exactly as they
//! do to Upstash in production. (Upstash's own emulator needs Docker, which we lack.)
//!
//! Endpoints: `POST /` (one command as a JSON array), `GET|POST /<cmd>/<arg>/...` (the path
//! form), `POST /pipeline` (an array of commands, answered per command), `POST /multi-exec`
//! (a transaction), all with `Authorization: Bearer <token>` and optional
//! `Upstash-Encoding: base64`.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use clap::Parser;
use redis::aio::MultiplexedConnection;
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
    conn: MultiplexedConnection,
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let args = Args::parse();
    anyhow::ensure!(args.listen.ip().is_loopback(), "upstash-local listens on loopback only");
    let client = redis::Client::open(args.redis_url.as_str()).context("invalid redis url")?;
    let conn = client.get_multiplexed_async_connection().await.context("cannot connect to redis")?;
    let app = router(AppState { conn, token: args.token });
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
                multi_exec(&mut conn, parsed, b64).await
            } else {
                let mut out = Vec::with_capacity(parsed.len());
                for args in parsed {
                    out.push(match run(&mut conn, &args).await {
                        Ok(v) => json!({ "result": encode(v, b64) }),
                        Err(e) => json!({ "error": e }),
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

async fn single(conn: &mut MultiplexedConnection, args: &[Vec<u8>], b64: bool) -> Response {
    match run(conn, args).await {
        Ok(v) => axum::Json(json!({ "result": encode(v, b64) })).into_response(),
        Err(e) => err(StatusCode::BAD_REQUEST, &e),
    }
}

async fn multi_exec(conn: &mut MultiplexedConnection, cmds: Vec<Vec<Vec<u8>>>, b64: bool) -> Response {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for args in &cmds {
        pipe.add_command(build(args));
    }
    match pipe.query_async::<Vec<redis::Value>>(conn).await {
        Ok(values) => {
            axum::Json(Value::Array(values.into_iter().map(|v| json!({ "result": encode(v, b64) })).collect()))
                .into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, &error_text(&e)),
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

async fn run(conn: &mut MultiplexedConnection, args: &[Vec<u8>]) -> Result<redis::Value, String> {
    build(args).query_async::<redis::Value>(conn).await.map_err(|e| error_text(&e))
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
        R::Okay => text(b"OK", b64),
        R::Array(items) | R::Set(items) => Value::Array(items.into_iter().map(|i| encode(i, b64)).collect()),
        R::Map(pairs) => Value::Array(pairs.into_iter().flat_map(|(k, v)| [encode(k, b64), encode(v, b64)]).collect()),
        R::Double(d) => text(d.to_string().as_bytes(), b64),
        R::Boolean(b) => json!(if b { 1 } else { 0 }),
        R::VerbatimString { text: t, .. } => text(t.as_bytes(), b64),
        R::BigNumber(n) => text(n.to_string().as_bytes(), b64),
        R::ServerError(e) => json!({ "error": e.details().unwrap_or("ERR").to_owned() }),
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
