//! A local webhook target for tests: a loopback HTTP server whose paths answer by script
//! (e.g. "500, 500, then 200") and that records every request it gets. Plain HTTP/1.1 on std
//! sockets, one thread per connection, every answer `Connection: close`: a pooled server
//! (tiny_http, before) left requests unread while its threads sat on idle keep-alive
//! connections, and handlers calling it hung until their timeout.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Duration,
    pub body: String,
    pub location: Option<String>,
    /// Instead of `body`: this many bytes sent at once (chunked, no length), then a stall
    /// of this long before the end — an answer too big to read whole in time.
    pub stream: Option<(usize, Duration)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            body: format!("{{\"status\":{status}}}"),
            location: None,
            stream: None,
        }
    }
    /// `bytes` of body sent at once, then nothing for `stall`, then the end.
    pub fn stream(mut self, bytes: usize, stall: Duration) -> Reply {
        self.stream = Some((bytes, stall));
        self
    }
    /// A redirect target (`Location`).
    pub fn location(mut self, url: &str) -> Reply {
        self.location = Some(url.to_owned());
        self
    }
    pub fn retry_after(mut self, secs: &str) -> Reply {
        self.retry_after = Some(secs.to_owned());
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// A request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
}

#[derive(Debug, Default)]
struct State {
    scripts: HashMap<String, Vec<Reply>>,
    received: HashMap<String, Vec<Received>>,
}

/// The running target. Stops when dropped.
pub struct Hooks {
    pub base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Hooks {
    pub fn start() -> anyhow::Result<Hooks> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| anyhow::anyhow!("webhook target: {e}"))?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stopping) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Ok(Hooks { base, state, stop })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scripts the answers of `path` (the last one repeats) and returns its full URL.
    pub fn script(&self, path: &str, replies: Vec<Reply>) -> String {
        self.state().scripts.insert(path.to_owned(), replies);
        format!("{}{path}", self.base)
    }

    /// What `path` has received so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state().received.get(path).cloned().unwrap_or_default()
    }
}

/// Reads one request (head, then its body by content-length or chunks, at most 1 MiB; every
/// read bounded by 10 s), records it, answers as scripted and closes the connection.
fn serve(mut conn: TcpStream, state: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0).min(1 << 20);
    let mut raw = buf[head_end..].to_vec();
    let complete = |raw: &[u8]| if chunked { raw.windows(5).any(|w| w == b"0\r\n\r\n") } else { raw.len() >= length };
    while !complete(&raw) && raw.len() < 1 << 20 {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let body = if chunked { dechunk(&raw) } else { raw };
    let reply = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let list = s.received.entry(path.clone()).or_default();
        list.push(Received { headers, body: String::from_utf8_lossy(&body).into_owned(), at: Instant::now() });
        let n = list.len();
        let script = s.scripts.get(&path).cloned().unwrap_or_else(|| vec![Reply::status(200)]);
        script.get(n - 1).or(script.last()).cloned().unwrap_or(Reply::status(200))
    };
    std::thread::sleep(reply.delay);
    let mut head = format!("HTTP/1.1 {} {}\r\nconnection: close\r\n", reply.status, reason(reply.status));
    if let Some(ra) = &reply.retry_after {
        head.push_str(&format!("retry-after: {ra}\r\n"));
    }
    if let Some(to) = &reply.location {
        head.push_str(&format!("location: {to}\r\n"));
    }
    if let Some((bytes, stall)) = reply.stream {
        // A body sent in one chunk, then a stall before its end.
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(format!("{bytes:x}\r\n").as_bytes());
        let _ = conn.write_all(&vec![b'x'; bytes]);
        let _ = conn.write_all(b"\r\n");
        let _ = conn.flush();
        std::thread::sleep(stall);
        let _ = conn.write_all(b"0\r\n\r\n");
    } else {
        head.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n", reply.body.len()));
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(reply.body.as_bytes());
    }
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

/// The data of a chunked body (extensions and trailers ignored).
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else { break };
        if size == 0 || rest.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = rest.get(eol + 2 + size + 2..).unwrap_or_default();
    }
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200..=299 => "OK",
        300..=399 => "Redirect",
        429 => "Too Many Requests",
        400..=499 => "Client Error",
        _ => "Server Error",
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        // Wakes the accept loop so it sees the flag and ends.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

/// Verifies deliveries with the reference Python library of Standard Webhooks
/// (`tests/python/verify_webhooks.py` in the virtualenv scripts/setup makes), so our
/// signatures are checked by code we did not write. Returns, per delivery, the `webhook-id`
/// the library accepted, or `None` where it refused the delivery.
pub fn verify_with_python(secret: &str, deliveries: &[Received]) -> anyhow::Result<Vec<Option<String>>> {
    use anyhow::Context;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("PY").map_or_else(|| root.join("target/py/bin/python"), std::path::PathBuf::from);
    let input = serde_json::json!({
        "secret": secret,
        "deliveries": deliveries.iter().map(|d| serde_json::json!({ "headers": d.headers, "body": d.body })).collect::<Vec<_>>(),
    });
    let mut child = std::process::Command::new(&python)
        .arg(root.join("tests/python/verify_webhooks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("{} (run scripts/setup: it makes the virtualenv)", python.display()))?;
    child.stdin.take().context("stdin")?.write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "verify_webhooks.py: {}", String::from_utf8_lossy(&out.stderr));
    #[derive(serde::Deserialize)]
    struct Answer {
        ids: Vec<Option<String>>,
    }
    let answer: Answer = serde_json::from_slice(&out.stdout).context("verify_webhooks.py's answer")?;
    anyhow::ensure!(answer.ids.len() == deliveries.len(), "one answer per delivery");
    Ok(answer.ids)
}
