//! Settings in two stages: [`RawArgs`] as given (flags or environment), then
//! [`RawArgs::check`], which returns the typed [`Config`] or every problem at once.

use std::net::SocketAddr;

use clap::Parser;

use crate::auth::Token;
use crate::gateway::{Config, DEFAULT_MAX_BODY, RedisPassword};

/// Command-line settings (each also readable from the environment).
#[derive(Debug, Parser)]
#[command(name = "upstash-local", about = "Upstash-compatible REST gateway in front of a local redis-server")]
pub struct RawArgs {
    /// Address to listen on (loopback only). Default 127.0.0.1:8079.
    #[arg(long, env = "UPSTASH_LOCAL_LISTEN", default_value = "127.0.0.1:8079")]
    pub listen: SocketAddr,
    /// Redis to forward to. Default redis://127.0.0.1:6379.
    #[arg(long, env = "UPSTASH_LOCAL_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The password redis-server requires (its `requirepass`); the stack generates one per
    /// run. Default: none.
    #[arg(long, env = "UPSTASH_LOCAL_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// The bearer token clients must present (the local `UPSTASH_REDIS_REST_TOKEN`): at
    /// least 16 printable ASCII characters. Required; no default.
    #[arg(long, env = "UPSTASH_LOCAL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Largest request body accepted, in bytes; larger ones get `ERR max request size
    /// exceeded`. Default 1048576 (1 MiB, Upstash's limit on free and pay-as-you-go plans).
    #[arg(long, env = "UPSTASH_LOCAL_MAX_BODY", default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
}

impl RawArgs {
    /// The checked config, or every problem found. Problems never include the token.
    pub fn check(self) -> Result<Config, Vec<String>> {
        let mut problems = Vec::new();
        if !self.listen.ip().is_loopback() {
            problems.push(format!("--listen {}: upstash-local listens on loopback only", self.listen));
        }
        if self.max_body == 0 {
            problems.push("--max-body must be at least 1 byte".to_owned());
        }
        let token = Token::new(&self.token).map_err(|e| problems.push(format!("UPSTASH_LOCAL_TOKEN: {e}"))).ok();
        match token {
            Some(token) if problems.is_empty() => Ok(Config {
                listen: self.listen,
                redis_url: self.redis_url,
                redis_password: self.redis_password.filter(|p| !p.is_empty()).map(RedisPassword),
                token,
                max_body: self.max_body,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(args: &[&str]) -> RawArgs {
        RawArgs::try_parse_from(std::iter::once("upstash-local").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn checks_every_setting_at_once() {
        assert!(raw(&["--token", "local_0123456789abcdef"]).check().is_ok());
        let problems = raw(&["--token", "secret-ish", "--listen", "0.0.0.0:1", "--max-body", "0"])
            .check()
            .expect_err("three problems");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("secret-ish")), "the token is never printed: {problems:?}");
    }
}
