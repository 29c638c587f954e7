//! A local webhook target for tests: a loopback HTTP server whose paths answer by script
//! (e.g. "500, 500, then 200") and that records every request it gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tiny_http::{Header, Response, Server};

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

/// A body of `left` bytes, then one stall, then its end.
struct Stalling {
    left: usize,
    stall: Option<Duration>,
}

impl std::io::Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left > 0 {
            let n = buf.len().min(self.left);
            buf[..n].fill(b'x');
            self.left -= n;
            return Ok(n);
        }
        if let Some(stall) = self.stall.take() {
            std::thread::sleep(stall);
        }
        Ok(0)
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
    server: Arc<Server>,
}

impl Hooks {
    pub fn start() -> anyhow::Result<Hooks> {
        let server = Arc::new(Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("webhook target: {e}"))?);
        let port = server.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
        let state = Arc::new(Mutex::new(State::default()));
        let (srv, st) = (Arc::clone(&server), Arc::clone(&state));
        std::thread::spawn(move || {
            for mut req in srv.incoming_requests() {
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    let mut body = String::new();
                    let _ = req.as_reader().read_to_string(&mut body);
                    let path = req.url().split('?').next().unwrap_or_default().to_owned();
                    let headers = req
                        .headers()
                        .iter()
                        .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_owned()))
                        .collect();
                    let reply = {
                        let mut s = st.lock().expect("hooks state");
                        let list = s.received.entry(path.clone()).or_default();
                        list.push(Received { headers, body, at: Instant::now() });
                        let n = list.len();
                        let script = s.scripts.get(&path).cloned().unwrap_or_else(|| vec![Reply::status(200)]);
                        script.get(n - 1).or(script.last()).cloned().unwrap_or(Reply::status(200))
                    };
                    std::thread::sleep(reply.delay);
                    if let Some((bytes, stall)) = reply.stream {
                        let body = Stalling { left: bytes, stall: Some(stall) };
                        let _ = req.respond(Response::new(reply.status.into(), Vec::new(), body, None, None));
                        return;
                    }
                    let mut resp = Response::from_string(reply.body).with_status_code(reply.status);
                    if let Some(ra) = reply.retry_after
                        && let Ok(h) = Header::from_bytes("Retry-After", ra)
                    {
                        resp.add_header(h);
                    }
                    if let Some(to) = reply.location
                        && let Ok(h) = Header::from_bytes("Location", to)
                    {
                        resp.add_header(h);
                    }
                    let _ = req.respond(resp);
                });
            }
        });
        Ok(Hooks { base: format!("http://127.0.0.1:{port}"), state, server })
    }

    /// Scripts the answers of `path` (the last one repeats) and returns its full URL.
    pub fn script(&self, path: &str, replies: Vec<Reply>) -> String {
        self.state.lock().expect("hooks state").scripts.insert(path.to_owned(), replies);
        format!("{}{path}", self.base)
    }

    /// What `path` has received so far.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.state.lock().expect("hooks state").received.get(path).cloned().unwrap_or_default()
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.server.unblock();
    }
}
