//! A TCP fault proxy on 127.0.0.1 between the edge and the Upstash gateway. Modes: pass,
//! added latency, resets (the request is read, then the socket is closed with it unread,
//! which sends RST), HTTP 500s, and a black hole (accepted, never answered). A mode change
//! closes every open connection, so keep-alive connections meet the new mode too.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Latency(u64),
    Reset,
    Error500,
    BlackHole,
}

#[derive(Debug, Default)]
struct State {
    mode: Option<Mode>,
    target: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Proxy {
    pub url: String,
    state: Arc<Mutex<State>>,
    generation: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
}

/// Longest a connection is held in any mode (every loop here is bounded).
const MAX_HOLD: Duration = Duration::from_secs(120);

impl Proxy {
    pub fn start() -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let p = Proxy {
            url: format!("http://127.0.0.1:{port}"),
            state: Arc::new(Mutex::new(State { mode: Some(Mode::Pass), target: None })),
            generation: Arc::new(AtomicU64::new(0)),
            connections: Arc::new(AtomicU64::new(0)),
        };
        let me = p.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let me = me.clone();
                me.connections.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || me.serve(conn));
            }
        });
        Ok(p)
    }

    /// Where passing traffic goes (`http://127.0.0.1:port`).
    pub fn target(&self, url: &str) {
        let addr = url.trim_start_matches("http://").parse().ok();
        self.state.lock().expect("proxy").target = addr;
    }

    pub fn set(&self, mode: Mode) {
        self.state.lock().expect("proxy").mode = Some(mode);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn serve(&self, mut client: TcpStream) {
        let generation = self.generation.load(Ordering::SeqCst);
        let (mode, target) = {
            let s = self.state.lock().expect("proxy");
            (s.mode.unwrap_or(Mode::Pass), s.target)
        };
        let changed = || self.generation.load(Ordering::SeqCst) != generation;
        let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
        let started = Instant::now();
        match mode {
            Mode::Reset => {
                // Wait for the request so the close finds unread data (the kernel sends RST).
                let mut b = [0u8; 1];
                while !changed() && started.elapsed() < Duration::from_secs(2) {
                    if matches!(client.peek(&mut b), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
            Mode::Error500 => {
                read_head(&mut client, &changed);
                let _ = client.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfault",
                );
                let _ = client.shutdown(Shutdown::Both);
            }
            Mode::BlackHole => {
                while !changed() && started.elapsed() < MAX_HOLD {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Mode::Pass | Mode::Latency(_) => {
                let delay = if let Mode::Latency(ms) = mode { Duration::from_millis(ms) } else { Duration::ZERO };
                let Some(target) = target else { return };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else { return };
                let _ = server.set_read_timeout(Some(Duration::from_millis(100)));
                let done = Arc::new(AtomicBool::new(false));
                let (c2, s2) = (client.try_clone(), server.try_clone());
                let (Ok(c2), Ok(s2)) = (c2, s2) else { return };
                let d2 = Arc::clone(&done);
                let me = self.clone();
                let back = std::thread::spawn(move || pump(s2, c2, Duration::ZERO, &d2, &|| me.moved(generation)));
                pump(client, server, delay, &done, &changed);
                done.store(true, Ordering::SeqCst);
                let _ = back.join();
            }
        }
    }

    fn moved(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) != generation
    }
}

/// Reads until the end of an HTTP request head (or 2 s).
fn read_head(c: &mut TcpStream, changed: &dyn Fn() -> bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while !changed() && t.elapsed() < Duration::from_secs(2) && got.len() < 1 << 20 {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    return;
                }
            }
            Err(_) => {}
        }
    }
}

/// Copies `from` to `to` (each chunk after `delay`) until either side closes, the other
/// direction ends, the mode changes, or [`MAX_HOLD`] passes.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, done: &AtomicBool, changed: &dyn Fn() -> bool) {
    let mut buf = [0u8; 16 * 1024];
    let t = Instant::now();
    while !done.load(Ordering::SeqCst) && !changed() && t.elapsed() < MAX_HOLD {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    done.store(true, Ordering::SeqCst);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
