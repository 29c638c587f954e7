//! Settings, from flags or the environment (clap), checked into a typed [`Settings`] with a
//! clear error for every missing or malformed value. `edgejobs-consumer --help` lists every
//! setting with its default.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use edgejobs_core::config::Secret;
use edgejobs_core::ratelimit::Limit;

fn duration(s: &str) -> Result<Duration, String> {
    edgejobs_core::spec::parse_duration(&serde_json::Value::String(s.to_owned()))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is not a duration such as 250ms, 15s, 2m"))
}

fn http_url(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err(format!("{s:?} is not an http(s) URL"))
    }
}

/// The raw settings as clap reads them.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "edgejobs-consumer",
    about = "Runs edgejobs long jobs from the Upstash stream",
    version,
    args_override_self = true
)]
pub struct Config {
    /// Address of the /health and /metrics server.
    #[arg(long, env = "EDGEJOBS_CONSUMER_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Base URL of the edge Worker (reports go to <url>/v1/internal/events).
    #[arg(long, env = "EDGEJOBS_EDGE_URL", value_parser = http_url)]
    pub edge_url: String,
    /// The consumer token the edge expects (secret).
    #[arg(long, env = "EDGEJOBS_CONSUMER_TOKEN", hide_env_values = true)]
    pub consumer_token: String,
    /// Upstash REST URL.
    #[arg(long, env = "UPSTASH_REDIS_REST_URL", value_parser = http_url)]
    pub upstash_url: String,
    /// Upstash REST token (secret).
    #[arg(long, env = "UPSTASH_REDIS_REST_TOKEN", hide_env_values = true)]
    pub upstash_token: String,
    /// The long-job stream.
    #[arg(long, env = "EDGEJOBS_STREAM", default_value = edgejobs_core::wire::STREAM_KEY)]
    pub stream: String,
    /// The consumer group.
    #[arg(long, env = "EDGEJOBS_GROUP", default_value = edgejobs_core::wire::STREAM_GROUP)]
    pub group: String,
    /// This consumer's name in the group [default: <hostname>-<pid>].
    #[arg(long, env = "EDGEJOBS_CONSUMER_NAME")]
    pub name: Option<String>,
    /// Jobs run at once by this process.
    #[arg(long, env = "EDGEJOBS_CONCURRENCY", default_value_t = 25)]
    pub concurrency: usize,
    /// Most entries read per poll.
    #[arg(long, env = "EDGEJOBS_BATCH", default_value_t = 10)]
    pub batch: usize,
    /// Jobs taken and started at the edge ahead of a free slot, so a slot that frees never
    /// waits for the edge's answer (they show `running` while they wait; 0 turns it off)
    /// [default: the concurrency, at most 100].
    #[arg(long, env = "EDGEJOBS_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Poll interval right after finding work; it doubles while the stream is empty...
    #[arg(long, env = "EDGEJOBS_POLL_MIN", default_value = "100ms", value_parser = duration)]
    pub poll_min: Duration,
    /// ...up to this, while no wake-up subscription is open (no blocking reads exist over
    /// REST). An idle poll is one command (taking over idle entries is tried at most once a
    /// second).
    #[arg(long, env = "EDGEJOBS_POLL_MAX", default_value = "1s", value_parser = duration)]
    pub poll_max: Duration,
    /// Hold a subscription to the stream's wake channel (`<stream>:wake`, Upstash's
    /// SUBSCRIBE over REST), on which every hand-off announces new entries, so an idle
    /// consumer reads them within milliseconds instead of at its next poll (false: poll only).
    #[arg(long, env = "EDGEJOBS_WAKE", default_value_t = true, action = clap::ArgAction::Set)]
    pub wake: bool,
    /// While subscribed, how often an idle consumer still reads the stream, in case a wake-up
    /// was missed (taking over idle entries keeps its once-a-second cadence).
    #[arg(long, env = "EDGEJOBS_WAKE_POLL", default_value = "30s", value_parser = duration)]
    pub wake_poll: Duration,
    /// How often running jobs' leases are renewed and their heartbeats sent. Default: a
    /// third of the edge's lease (`NATIVE_LEASE`, which the edge tells consumers); at most that.
    #[arg(long, env = "EDGEJOBS_LEASE_RENEW", value_parser = duration)]
    pub lease_renew: Option<Duration>,
    /// On SIGTERM/SIGINT, how long in-flight jobs may run before the process exits anyway.
    #[arg(long, env = "EDGEJOBS_GRACE", default_value = "30s", value_parser = duration)]
    pub grace: Duration,
    /// Token buckets per upstream, comma-separated `name=requests/window`, e.g.
    /// `llm=5/1s,api.example.com=20/1s` (names: `llm`, or an http.request host) [default: none].
    #[arg(long, env = "EDGEJOBS_UPSTREAM_LIMITS", default_value = "")]
    pub upstream_limits: String,
    /// OpenAI-compatible base URL for llm.chat.
    #[arg(long, env = "EDGEJOBS_LLM_BASE_URL", default_value = "https://openrouter.ai/api/v1", value_parser = http_url)]
    pub llm_base_url: String,
    /// API key for llm.chat (secret) [default: none; llm.chat jobs then fail permanently].
    #[arg(long, env = "EDGEJOBS_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// Model used when a job names none.
    #[arg(long, env = "EDGEJOBS_LLM_MODEL", default_value = "openai/gpt-4o-mini")]
    pub llm_model: String,
    /// Sentry DSN; errors are sent to Sentry when set [default: none].
    #[arg(long, env = "SENTRY_DSN", hide_env_values = true)]
    pub sentry_dsn: Option<String>,
    /// Private addresses handlers may call (http.request, the LLM API): hosts, IPs and CIDR
    /// networks, each with an optional :port, comma-separated [default: none, only public
    /// addresses].
    #[arg(long, env = "EDGEJOBS_OUTBOUND_ALLOW", default_value = "")]
    pub outbound_allow: String,
    /// Fixed answers for names, `name=ip[+ip],...`, like curl's --resolve (still checked
    /// against the outbound rules) [default: none, the system resolver].
    #[arg(long, env = "EDGEJOBS_RESOLVE", default_value = "")]
    pub resolve: String,
    /// The keys that open sealed `payload.headers` values: the edge's PAYLOAD_ENCRYPTION_KEYS
    /// (secret) [default: none; jobs with headers then fail].
    #[arg(long, env = "EDGEJOBS_PAYLOAD_KEYS", hide_env_values = true)]
    pub payload_keys: Option<String>,
    /// Most bytes of an answer a handler reads; the rest is never read.
    #[arg(long, env = "EDGEJOBS_MAX_RESPONSE_BYTES", default_value_t = 1024 * 1024)]
    pub max_response_bytes: usize,
    /// How long a running job's live output (progress, metadata, stream chunks such as LLM
    /// tokens) gathers before it goes to the edge as one update: at most one update per job
    /// per linger (0ms: as soon as the previous one is answered). Everything is sent before
    /// the job's outcome.
    #[arg(long, env = "EDGEJOBS_LIVE_LINGER", default_value = "25ms", value_parser = duration)]
    pub live_linger: Duration,
}

/// The checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub edge_url: String,
    pub consumer_token: Secret,
    pub upstash_url: String,
    pub upstash_token: Secret,
    pub stream: String,
    pub group: String,
    pub name: String,
    pub concurrency: usize,
    pub batch: usize,
    pub prefetch: usize,
    pub poll_min: Duration,
    pub poll_max: Duration,
    pub wake: bool,
    pub wake_poll: Duration,
    pub lease_renew: Option<Duration>,
    pub grace: Duration,
    pub upstream_limits: HashMap<String, Limit>,
    pub llm_base_url: String,
    pub llm_api_key: Option<Secret>,
    pub llm_model: String,
    pub outbound: std::sync::Arc<crate::outbound::Guard>,
    pub payload_keys: Option<edgejobs_core::seal::Keys>,
    pub max_response_bytes: usize,
    pub live_linger: Duration,
    /// Trace export (#32): the standard `OTEL_*` variables, read from the environment.
    pub trace: crate::telemetry::TraceConfig,
}

impl Config {
    /// Checks cross-field rules and parses the compound settings; every problem is listed.
    pub fn settings(&self) -> Result<Settings, Vec<String>> {
        let mut errors = Vec::new();
        if self.consumer_token.trim().len() < 16 {
            errors.push("EDGEJOBS_CONSUMER_TOKEN: must be at least 16 characters".to_owned());
        }
        if self.upstash_token.trim().is_empty() {
            errors.push("UPSTASH_REDIS_REST_TOKEN: must not be empty".to_owned());
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            errors.push("EDGEJOBS_CONCURRENCY: must be from 1 to 10000".to_owned());
        }
        if self.batch == 0 || self.batch > 1000 {
            errors.push("EDGEJOBS_BATCH: must be from 1 to 1000".to_owned());
        }
        if self.prefetch.is_some_and(|p| p > 10_000) {
            errors.push("EDGEJOBS_PREFETCH: must be from 0 to 10000".to_owned());
        }
        if self.poll_min.is_zero() || self.poll_min > self.poll_max {
            errors.push("EDGEJOBS_POLL_MIN: must be above zero and at most EDGEJOBS_POLL_MAX".to_owned());
        }
        if self.wake_poll < self.poll_max || self.wake_poll > Duration::from_secs(3600) {
            errors.push("EDGEJOBS_WAKE_POLL: must be at least EDGEJOBS_POLL_MAX and at most 1h".to_owned());
        }
        if self.lease_renew.is_some_and(|r| r < Duration::from_millis(100)) {
            errors
                .push("EDGEJOBS_LEASE_RENEW: must be at least 100ms (and at most a third of NATIVE_LEASE)".to_owned());
        }
        let mut upstream_limits = HashMap::new();
        for part in self.upstream_limits.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=').and_then(|(n, l)| Limit::parse(l).map(|l| (n.trim().to_owned(), l))) {
                Some((name, limit)) if !name.is_empty() => {
                    upstream_limits.insert(name, limit);
                }
                _ => errors.push(format!("EDGEJOBS_UPSTREAM_LIMITS: {part:?} must look like name=10/1s")),
            }
        }
        let allow = edgejobs_core::outbound::Allow::parse(&self.outbound_allow).unwrap_or_else(|e| {
            errors.push(format!("EDGEJOBS_OUTBOUND_ALLOW: {e}"));
            Default::default()
        });
        let fixed = crate::outbound::Guard::parse_fixed(&self.resolve).unwrap_or_else(|e| {
            errors.push(format!("EDGEJOBS_RESOLVE: {e}"));
            Default::default()
        });
        if let Err(e) = edgejobs_core::outbound::check_url(&self.llm_base_url, &allow) {
            errors.push(format!("EDGEJOBS_LLM_BASE_URL: {e} (add it to EDGEJOBS_OUTBOUND_ALLOW)"));
        }
        let payload_keys = match self.payload_keys.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            None => None,
            Some(k) => edgejobs_core::seal::Keys::parse(k).map(Some).unwrap_or_else(|e| {
                errors.push(format!("EDGEJOBS_PAYLOAD_KEYS: {e}"));
                None
            }),
        };
        if self.max_response_bytes == 0 || self.max_response_bytes > 64 * 1024 * 1024 {
            errors.push("EDGEJOBS_MAX_RESPONSE_BYTES: must be from 1 to 67108864".to_owned());
        }
        if self.live_linger > Duration::from_secs(10) {
            errors.push("EDGEJOBS_LIVE_LINGER: must be at most 10s".to_owned());
        }
        let name = self.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "consumer".into());
            format!("{host}-{}", std::process::id())
        });
        let trace = match crate::telemetry::TraceConfig::from_env(|k| std::env::var(k).ok()) {
            Ok(t) => Some(t),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        };
        let (true, Some(trace)) = (errors.is_empty(), trace) else {
            return Err(errors);
        };
        Ok(Settings {
            listen: self.listen,
            edge_url: self.edge_url.clone(),
            consumer_token: Secret::new(self.consumer_token.trim()),
            upstash_url: self.upstash_url.clone(),
            upstash_token: Secret::new(self.upstash_token.trim()),
            stream: self.stream.clone(),
            group: self.group.clone(),
            name,
            concurrency: self.concurrency,
            batch: self.batch,
            prefetch: self.prefetch.unwrap_or(self.concurrency.min(100)),
            poll_min: self.poll_min,
            poll_max: self.poll_max,
            wake: self.wake,
            wake_poll: self.wake_poll,
            lease_renew: self.lease_renew,
            grace: self.grace,
            upstream_limits,
            llm_base_url: self.llm_base_url.clone(),
            llm_api_key: self.llm_api_key.clone().filter(|k| !k.trim().is_empty()).map(Secret::new),
            llm_model: self.llm_model.clone(),
            outbound: std::sync::Arc::new(crate::outbound::Guard::new(allow, fixed)),
            payload_keys,
            max_response_bytes: self.max_response_bytes,
            live_linger: self.live_linger,
            trace,
        })
    }
}

/// The README's table of the consumer's settings, made from their definitions above.
pub fn reference() -> String {
    use clap::CommandFactory;
    let mut out = String::from("| Consumer setting | default | meaning |\n|---|---|---|\n");
    for a in Config::command().get_arguments() {
        let Some(env) = a.get_env() else { continue };
        let default: Vec<String> = a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let default = match default.join(",") {
            d if d.is_empty() => "—".to_owned(),
            d => format!("`{d}`"),
        };
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
        out.push_str(&format!("| `{}` | {default} | {help} |\n", env.to_string_lossy()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const BASE: &[&str] = &[
        "edgejobs-consumer",
        "--edge-url",
        "http://127.0.0.1:8787/",
        "--consumer-token",
        "ej_consumer_0123456789abcdef",
        "--upstash-url",
        "http://127.0.0.1:8079",
        "--upstash-token",
        "tok",
    ];

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(BASE.iter().chain(extra))
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = parse(&[]).expect("parses").settings().expect("valid");
        assert_eq!(
            (s.concurrency, s.prefetch, s.lease_renew, s.grace),
            (25, 25, None, Duration::from_secs(30)),
            "the renewal follows the edge's lease unless set"
        );
        assert_eq!(s.edge_url, "http://127.0.0.1:8787");
        assert_eq!(s.live_linger, Duration::from_millis(25));
        assert!(!format!("{s:?}").contains("0123456789abcdef"), "secrets are redacted");
    }

    #[test]
    fn malformed_values_are_clear_errors() {
        assert!(parse(&["--lease-renew", "soon"]).is_err());
        assert!(parse(&["--edge-url", "ftp://x"]).is_err());
        let errs = parse(&[
            "--concurrency",
            "0",
            "--lease-renew",
            "10ms",
            "--upstream-limits",
            "llm=5/1s,bad",
            "--consumer-token",
            "short",
        ])
        .expect("parses")
        .settings()
        .expect_err("invalid");
        assert_eq!(errs.len(), 4, "{errs:?}");
        let errs = parse(&["--llm-base-url", "http://169.254.169.254/v1", "--outbound-allow", "nonsense:x"])
            .expect("parses")
            .settings()
            .expect_err("invalid");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            parse(&["--llm-base-url", "http://127.0.0.1:4000/v1", "--outbound-allow", "127.0.0.1:4000"])
                .expect("parses")
                .settings()
                .is_ok(),
            "the allow-list opens the LLM fake of the tests"
        );
        let s = parse(&["--upstream-limits", "llm=5/1s, api.example.com=20/10s"])
            .expect("parses")
            .settings()
            .expect("valid");
        assert_eq!(s.upstream_limits.get("llm"), Some(&Limit { requests: 5, window_ms: 1000 }));
    }

    #[test]
    fn the_readme_reference_is_the_one_the_code_makes() {
        let readme = include_str!("../../../README.md");
        let table = reference();
        assert!(readme.contains(&table), "README.md's consumer settings table differs; it should be:\n{table}");
    }

    #[test]
    fn missing_required_settings_are_named() {
        let e = Config::try_parse_from(["edgejobs-consumer"]).expect_err("missing");
        let text = e.to_string();
        assert!(text.contains("--edge-url") && text.contains("--consumer-token"), "{text}");
    }
}
