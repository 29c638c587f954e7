//! The HTTP side: authenticates, parses (`request`), checks the allow-list (`allow`),
//! forwards to Redis and answers in Upstash's JSON shape.
//!
//! Answers: 200 `{"result": ...}` (or an array of them for `/pipeline` and `/multi-exec`),
//! 400 `{"error":"ERR ..."}` for a refused request or a Redis error, 401
//! `{"error":"Unauthorized"}`, 405 for other methods, 500 when Redis is unreachable.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};

use crate::allow::check_allowed;
use crate::auth::Token;
use crate::request::{Args, Refused, parse_body_command, parse_path_command, parse_pipeline};

/// Largest request body accepted by default: 1 MiB, Upstash's limit for free and
/// pay-as-you-go databases (`ERR max request size exceeded`).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// How long one command (or one transaction) may take before the gateway answers 500.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(8);

/// What the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Loopback address to listen on.
    pub listen: SocketAddr,
    /// `redis://host:port` of the redis-server behind the gateway.
    pub redis_url: String,
    /// The password redis-server requires (`requirepass`), if any.
    pub redis_password: Option<RedisPassword>,
    /// The bearer token clients must present.
    pub token: Token,
    /// Largest request body accepted, in bytes (default [`DEFAULT_MAX_BODY`]).
    pub max_body: usize,
}

/// The password of the redis-server behind the gateway; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(pub String);

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPassword(..)")
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("upstash-local listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
    #[error("invalid redis url {url:?}: {reason}")]
    RedisUrl { url: String, reason: String },
    #[error("cannot connect to redis: {0}")]
    Redis(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// A connected gateway: the state every request shares. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    /// `host:port` of redis, for transactions (which need a connection of their own).
    redis_addr: String,
    /// The password that connection sends first (`AUTH`), if redis requires one.
    redis_password: Option<Arc<RedisPassword>>,
    conn: ConnectionManager,
    /// For subscriptions, which each need a connection of their own (`subscribe`).
    client: redis::Client,
    subs: crate::subscribe::Subscriptions,
    token: Arc<Token>,
    max_body: usize,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("redis_addr", &self.redis_addr).field("max_body", &self.max_body).finish()
    }
}

impl Gateway {
    /// Connects to Redis. The connection reconnects by itself when redis restarts.
    pub async fn connect(redis_url: &str, token: Token, max_body: usize) -> Result<Gateway, StartError> {
        Gateway::connect_with(redis_url, None, token, max_body).await
    }

    /// Connects to a Redis that requires `password` (`requirepass`), when given.
    pub async fn connect_with(
        redis_url: &str,
        password: Option<RedisPassword>,
        token: Token,
        max_body: usize,
    ) -> Result<Gateway, StartError> {
        use redis::IntoConnectionInfo as _;
        let bad_url = |reason: String| StartError::RedisUrl { url: redis_url.to_owned(), reason };
        let mut info = redis_url.into_connection_info().map_err(|e| bad_url(e.to_string()))?;
        if let Some(p) = &password {
            info.redis.password = Some(p.0.clone());
        }
        let client = redis::Client::open(info).map_err(|e| bad_url(e.to_string()))?;
        let redis_addr = match &client.get_connection_info().addr {
            redis::ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => return Err(bad_url(format!("only redis:// over TCP is supported, not {other}"))),
        };
        // Bounded waits everywhere, so a stopped redis gives quick 500s rather than hung
        // requests, and the manager reconnects once it is back.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| StartError::Redis(e.to_string()))?;
        Ok(Gateway {
            redis_addr,
            redis_password: password.map(Arc::new),
            conn,
            client,
            subs: Default::default(),
            token: Arc::new(token),
            max_body,
        })
    }
}

/// Starts the gateway as configured and serves until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    if !config.listen.ip().is_loopback() {
        return Err(StartError::NotLoopback(config.listen));
    }
    let gateway =
        Gateway::connect_with(&config.redis_url, config.redis_password, config.token, config.max_body).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen { addr: config.listen, source })?;
    tracing::info!(listen = %config.listen, "upstash-local ready");
    serve(listener, gateway, shutdown).await.map_err(|source| StartError::Listen { addr: config.listen, source })
}

/// Serves `gateway` on an already bound listener (tests bind port 0).
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A graceful shutdown waits for open responses: subscriptions are ended first.
    let subs = gateway.subs.clone();
    let shutdown = async move {
        shutdown.await;
        subs.close();
    };
    axum::serve(listener, router(gateway)).with_graceful_shutdown(shutdown).await
}

/// The routes, testable without a listener.
pub fn router(gateway: Gateway) -> Router {
    Router::new().fallback(dispatch).with_state(gateway)
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

fn refuse(r: &Refused) -> Response {
    tracing::debug!(reason = %r, "refused a request");
    error(StatusCode::BAD_REQUEST, &r.to_string())
}

async fn dispatch(State(gw): State<Gateway>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    // Authenticate before reading the body, so an unauthenticated client cannot make the
    // gateway buffer anything.
    if !gw.token.authorizes(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if method != Method::GET && method != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let b64 =
        headers.get("upstash-encoding").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("base64"));
    // Reading stops at the limit: a larger body is never held in memory.
    let Ok(body) = axum::body::to_bytes(body, gw.max_body).await else {
        return refuse(&Refused::TooLarge);
    };
    // SUBSCRIBE is served as Upstash serves it over REST: a Server-Sent Events stream, on a
    // Redis connection of its own (see `subscribe`).
    if let Some(channel) = crate::subscribe::channel_of(uri.path()) {
        return match channel {
            Ok(channel) => crate::subscribe::subscribe(gw.client.clone(), &gw.subs, channel).await,
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        };
    }
    let mut conn = gw.conn.clone();
    match (method == Method::POST, uri.path()) {
        (true, "/pipeline") => match parse_pipeline(&body) {
            Err(r) => refuse(&r),
            Ok(cmds) => {
                // Like Redis with an unknown command in a pipeline: the refused command
                // fails alone, in its place, and the others run.
                let mut out = Vec::with_capacity(cmds.len());
                for args in cmds {
                    out.push(match check_allowed(&args) {
                        Err(r) => json!({ "error": r.to_string() }),
                        Ok(()) => match forward(&mut conn, &args).await {
                            Ok(v) => json!({ "result": encode(v, b64) }),
                            Err(Failed::Refused(e)) => json!({ "error": e }),
                            Err(Failed::Unreachable(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
                        },
                    });
                }
                axum::Json(Value::Array(out)).into_response()
            }
        },
        // Upstash discards a transaction as a whole when one of its commands is
        // unsupported; nothing of it runs.
        (true, "/multi-exec") => {
            match parse_pipeline(&body).and_then(|c| c.iter().try_for_each(|a| check_allowed(a)).map(|()| c)) {
                Err(r) => refuse(&r),
                Ok(cmds) => multi_exec(&gw.redis_addr, gw.redis_password.clone(), cmds, b64).await,
            }
        }
        (true, "/") => match parse_body_command(&body).and_then(|a| check_allowed(&a).map(|()| a)) {
            Err(r) => refuse(&r),
            Ok(args) => single(&mut conn, &args, b64).await,
        },
        (post, path) => {
            let appended = if post { Some(&body[..]) } else { None };
            match parse_path_command(path, appended).and_then(|a| check_allowed(&a).map(|()| a)) {
                Err(r) => refuse(&r),
                Ok(args) => single(&mut conn, &args, b64).await,
            }
        }
    }
}

async fn single(conn: &mut ConnectionManager, args: &[Vec<u8>], b64: bool) -> Response {
    match forward(conn, args).await {
        Ok(v) => axum::Json(json!({ "result": encode(v, b64) })).into_response(),
        Err(Failed::Refused(e)) => error(StatusCode::BAD_REQUEST, &e),
        Err(Failed::Unreachable(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
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
async fn multi_exec(addr: &str, password: Option<Arc<RedisPassword>>, cmds: Vec<Args>, b64: bool) -> Response {
    let addr = addr.to_owned();
    let run = tokio::task::spawn_blocking(move || transaction(&addr, password.as_deref(), &cmds)).await;
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
        Ok(Err(TxError::Refused(e))) => error(StatusCode::BAD_REQUEST, &e),
        Ok(Err(TxError::Io(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("ERR redis unreachable: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("ERR {e}")),
    }
}

enum TxError {
    Refused(String),
    Io(String),
}

fn transaction(addr: &str, password: Option<&RedisPassword>, cmds: &[Args]) -> Result<Vec<redis::Value>, TxError> {
    use std::io::Write as _;
    let io = |e: std::io::Error| TxError::Io(e.to_string());
    let stream = std::net::TcpStream::connect(addr).map_err(io)?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT)).map_err(io)?;
    let mut packed = Vec::new();
    if let Some(p) = password {
        packed.extend(redis::cmd("AUTH").arg(p.0.as_str()).get_packed_command());
    }
    packed.extend(redis::cmd("MULTI").get_packed_command());
    for args in cmds {
        packed.extend(build(args).get_packed_command());
    }
    packed.extend(redis::cmd("EXEC").get_packed_command());
    (&stream).write_all(&packed).map_err(io)?;
    let mut reader = std::io::BufReader::new(&stream);
    let mut parser = redis::Parser::new();
    let mut next = || parser.parse_value(&mut reader).map_err(|e| TxError::Io(e.to_string()));
    if password.is_some() && server_error_text(&next()?).is_some() {
        return Err(TxError::Io("redis refused the gateway's password".into()));
    }
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

/// The redis-rs command for `args` (never empty: the parsers refuse empty commands).
fn build(args: &[Vec<u8>]) -> redis::Cmd {
    let (name, rest) = args.split_first().map_or((&[][..], &[][..]), |(n, r)| (&n[..], r));
    let mut cmd = redis::cmd(&String::from_utf8_lossy(name));
    for a in rest {
        cmd.arg(a.as_slice());
    }
    cmd
}

async fn forward(conn: &mut ConnectionManager, args: &[Vec<u8>]) -> Result<redis::Value, Failed> {
    let reply = tokio::time::timeout(COMMAND_TIMEOUT, build(args).query_async::<redis::Value>(conn))
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
