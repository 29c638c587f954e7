//! Child processes for the local stack. Each runs in its own process group so that stopping
//! it also stops what it started (wrangler starts workerd and esbuild). A watchdog shell per
//! child stops the group if this process dies without cleaning up (even by SIGKILL).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A running child and its watchdog.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    watchdog: Option<Child>,
}

impl Proc {
    /// Starts `cmd` in a new process group, with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        let pgid = child.id();
        let me = std::process::id();
        // Stops the group once this process is gone; exits by itself when the group is gone.
        let script = format!(
            "while kill -0 {me} 2>/dev/null && kill -0 -{pgid} 2>/dev/null; do sleep 1; done; \
             kill -TERM -{pgid} 2>/dev/null; sleep 3; kill -KILL -{pgid} 2>/dev/null; exit 0"
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok();
        Ok(Proc { name: name.to_owned(), log: log.to_owned(), child, watchdog })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit code once the process has exited (`None` while it runs or after a signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().and_then(|s| s.code())
    }

    /// SIGTERM to the group, SIGKILL after `grace`; waits for the child.
    pub fn stop(&mut self, grace: Duration) {
        let pg = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever is left of the group (grandchildren included) goes now.
        let _ = killpg(pg, Signal::SIGKILL);
        let _ = self.child.wait();
        if let Some(mut w) = self.watchdog.take() {
            let _ = killpg(Pid::from_raw(w.id() as i32), Signal::SIGKILL);
            let _ = w.wait();
        }
    }

    /// SIGTERM to the child only; waits up to `timeout` for it to exit and returns its exit
    /// code (`None` if it had to be killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stop(Duration::ZERO);
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop(Duration::ZERO);
        None
    }

    /// Sends SIGKILL to the group at once (for crash tests).
    pub fn kill_hard(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The last `n` lines of the log, for failure reports.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() || self.watchdog.is_some() {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; a small race we accept for tests).
///
/// Never the same port twice in one process: the kernel may offer a port it just offered
/// again once its listener is closed — in a fresh network namespace (scripts/schemathesis)
/// it does so every time, and redis-server and wrangler were given one port. A port seen
/// before is held open while the next is asked for, so the kernel offers another.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut held = Vec::new();
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if given.insert(port) {
            return Ok(port);
        }
        held.push(listener);
    }
    anyhow::bail!("no loopback port that was not handed out before")
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
