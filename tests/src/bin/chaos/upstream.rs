//! The battery's counting upstream: a plain HTTP/1.1 server on 127.0.0.1, one thread per
//! connection, every answer `Connection: close`. It records each call (when, headers) by path
//! and answers as scripted (status, after a delay). The shared test target (tiny_http) left
//! requests unread once many keep-alive connections piled up under consumer kills, which hung
//! the handlers calling it; this one holds a connection only for its own request.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgejobs_tests::hooks::{Received, Reply};

#[derive(Default)]
struct State {
    scripts: HashMap<String, Vec<Reply>>,
    received: HashMap<String, Vec<Received>>,
}

pub struct Upstream {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Upstream {
    pub fn start() -> anyhow::Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        Ok(Upstream { base, state })
    }

    /// Scripts the answers of `path` (the last one repeats) and returns its full URL.
    pub fn script(&self, path: &str, replies: Vec<Reply>) -> String {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).scripts.insert(path.to_owned(), replies);
        format!("{}{path}", self.base)
    }

    /// What `path` has received so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).received.get(path).cloned().unwrap_or_default()
    }
}

/// Reads one request (head, then a body of its content-length, at most 1 MiB), records it,
/// answers after the scripted delay and closes. Every read is bounded by a 10 s timeout.
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
    let path =
        lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").split('?').next().unwrap_or("/").to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0).min(1 << 20);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let list = s.received.entry(path.clone()).or_default();
        list.push(Received { headers, body: String::from_utf8_lossy(&body).into_owned(), at: Instant::now() });
        let n = list.len();
        let script = s.scripts.get(&path).cloned().unwrap_or_else(|| vec![Reply::status(200)]);
        script.get(n - 1).or(script.last()).cloned().unwrap_or(Reply::status(200))
    };
    std::thread::sleep(reply.delay);
    let text = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    let _ = conn.write_all(text.as_bytes());
    let _ = conn.shutdown(Shutdown::Both);
}
