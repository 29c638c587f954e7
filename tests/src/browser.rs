//! A real browser for the dashboard's tests: Debian's headless chromium, driven over the
//! Chrome DevTools Protocol (a WebSocket; one page, commands answered in order). Enough of
//! the protocol to load a page, run script in it, wait for a condition, click, collect what
//! the page logged (console errors, uncaught exceptions, CSP violations, failed loads) and
//! take a screenshot.
//!
//! Chromium runs in its own process group (stopped with it, also if the test panics), with
//! a private profile, loopback only: every host name but 127.0.0.1 resolves to nothing and
//! its background services (updates, sync, safe browsing) are off.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::proc::Proc;

/// How long one protocol command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Debian installs chromium (`scripts/setup` installs the package).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// One headless chromium with one page.
#[derive(Debug)]
pub struct Browser {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Problems the page reported so far (console errors, exceptions, failed requests).
    problems: Vec<String>,
    proc: Proc,
    dir: PathBuf,
    /// This launch's own profile, deleted when the browser goes.
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.proc.kill_hard();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Starts chromium with a fresh profile under `dir` (its log goes there too) and
    /// connects to its first page. Each launch has a profile of its own: tests that run at
    /// once share `dir`, and a shared profile is deleted under a running browser.
    pub fn launch(dir: &Path) -> anyhow::Result<Browser> {
        let profile = dir.join(format!("profile-{}", crate::stack::random_hex(6)));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)?;
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--metrics-recording-only",
            "--password-store=basic",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1360,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank");
        let proc = Proc::spawn("chromium", cmd, &profile.join("chromium.log"))?;
        // Chromium writes its port to the profile once it listens.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|t| t.lines().next()?.parse().ok()) {
                break p;
            }
            if Instant::now() > deadline {
                bail!("chromium did not start in 30 s: {}", proc.log_tail(20));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let targets: Value = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()?
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .and_then(|r| r.json())
            .context("cannot list chromium's pages")?;
        let ws_url = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .context("chromium has no page")?
            .to_owned();
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).context("DevTools handshake")?;
        let mut b = Browser { ws, next_id: 0, problems: Vec::new(), proc, dir: dir.to_owned(), profile };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.call(domain, json!({}))?;
        }
        Ok(b)
    }

    /// Sends one command and returns its result; events that arrive meanwhile are read for
    /// problems.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(Message::text(json!({ "id": id, "method": method, "params": params }).to_string()))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        while Instant::now() < deadline {
            let msg = self.ws.read().with_context(|| format!("no answer to {method}"))?;
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str())?;
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    bail!("{method} failed: {e}");
                }
                return Ok(v["result"].clone());
            }
            self.note_event(&v);
        }
        bail!("{method}: no answer in {CALL_TIMEOUT:?}")
    }

    fn note_event(&mut self, v: &Value) {
        let p = &v["params"];
        let problem = match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                Some(format!("uncaught: {} {}", d["text"], d["exception"]["description"]))
            }
            Some("Runtime.consoleAPICalled") if matches!(p["type"].as_str(), Some("error" | "assert")) => {
                Some(format!("console.{}: {}", p["type"], p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                Some(format!("{}: {} {}", p["entry"]["source"], p["entry"]["text"], p["entry"]["url"]))
            }
            _ => None,
        };
        self.problems.extend(problem);
    }

    /// Everything the page reported as an error so far.
    pub fn problems(&mut self) -> anyhow::Result<Vec<String>> {
        // A round trip reads the events sent before it.
        self.eval("1")?;
        Ok(self.problems.clone())
    }

    /// Loads `url` and waits until its document has loaded.
    pub fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(e) = r.get("errorText") {
            bail!("cannot load {url}: {e}");
        }
        self.wait_for("document.readyState === 'complete'", Duration::from_secs(20))
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, expr: &str) -> anyhow::Result<Value> {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true, "userGesture": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("script failed: {}: {}", e["text"], e["exception"]["description"]);
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expr` is truthy in the page, for at most `timeout`.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(&format!("Boolean({expr})"))?;
            if v == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let problems = self.problems.join("\n");
                bail!("still not true after {timeout:?}: {expr}\npage problems: {problems}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element `selector` names (the first one), failing if there is none.
    pub fn click(&mut self, selector: &str) -> anyhow::Result<()> {
        let sel = serde_json::to_string(selector)?;
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.click(); return true; }})()"
        ))?;
        if found != Value::Bool(true) {
            bail!("nothing to click at {selector}");
        }
        Ok(())
    }

    /// Sets the value of the input `selector` names, as typing would (an `input` event).
    pub fn fill(&mut self, selector: &str, value: &str) -> anyhow::Result<()> {
        let (sel, val) = (serde_json::to_string(selector)?, serde_json::to_string(value)?);
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.value = {val}; \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()"
        ))?;
        if found != Value::Bool(true) {
            bail!("no input at {selector}");
        }
        Ok(())
    }

    /// The text of the element `selector` names ("" when there is none).
    pub fn text(&mut self, selector: &str) -> anyhow::Result<String> {
        let sel = serde_json::to_string(selector)?;
        let v = self.eval(&format!("(document.querySelector({sel}) || {{}}).textContent || ''"))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the whole page under the browser's directory; returns its path.
    pub fn screenshot(&mut self, name: &str) -> anyhow::Result<PathBuf> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true }))?;
        let data = r["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}
