//! The API at one URL with one key: finding them (flags, environment, `.edgejobs/dev.env`),
//! sending a request, reading the reply as its `edgejobs-api` type, and the failures with
//! the exit codes they mean.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Cli, Filters};

/// A failure, with the exit code it means.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

pub type Res<T> = Result<T, Failure>;

/// The exit code an HTTP error status means.
pub fn exit_code(status: u16) -> u8 {
    match status {
        401 | 403 => 4,
        404 => 5,
        429 | 500..=599 => 6,
        400..=499 => 3,
        _ => 1,
    }
}

/// A reply: read as its type, and as it came (what `--json` prints, unchanged).
#[derive(Debug)]
pub struct Reply<T> {
    pub value: T,
    pub raw: Value,
}

/// The API at one URL with one key.
#[derive(Debug)]
pub struct Api {
    url: String,
    key: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// Sends a request and reads the reply as `T`; 429 is retried after its Retry-After (at
    /// most 5 times). Any other non-2xx answer is a failure carrying the API's error code
    /// and message; a 2xx answer that is not a `T` is a failure with exit code 1.
    pub fn call<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&impl Serialize>) -> Res<Reply<T>> {
        let url = format!("{}{path}", self.url);
        for _ in 0..6 {
            let mut req = match method {
                "POST" => self.http.post(&url),
                "DELETE" => self.http.delete(&url),
                _ => self.http.get(&url),
            }
            .bearer_auth(&self.key);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().map_err(|e| Failure::new(1, format!("cannot reach {}: {}", self.url, short(e))))?;
            let status = resp.status().as_u16();
            let wait = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let text = resp.text().unwrap_or_default();
            if (200..300).contains(&status) {
                let raw: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let value = serde_json::from_value(raw.clone()).map_err(|e| {
                    Failure::new(1, format!("{method} {} answered {status} with an unexpected body: {e}", strip(path)))
                })?;
                return Ok(Reply { value, raw });
            }
            if status == 429 {
                std::thread::sleep(Duration::from_secs(wait.unwrap_or(1).clamp(1, 60)));
                continue;
            }
            let error: Option<edgejobs_api::ErrorReply> = serde_json::from_str(&text).ok();
            return Err(Failure::new(
                exit_code(status),
                match error {
                    Some(e) => format!("{}: {}", e.error.code, e.error.message),
                    None => format!("HTTP {status}"),
                },
            ));
        }
        Err(Failure::new(6, "rate_limited: still limited after 5 retries"))
    }

    /// [`Api::call`] without a body.
    pub fn get<T: DeserializeOwned>(&self, method: &str, path: &str) -> Res<Reply<T>> {
        self.call(method, path, None::<&Value>)
    }
}

/// A path without its query (which may carry search text).
fn strip(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// An error's message without the URL's query (reqwest prints the URL).
fn short(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out = format!("{out}: {c}");
        cause = c.source();
    }
    out
}

/// `NAME=value` lines (blank lines and `#` comments skipped; quotes around a value dropped).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// `.edgejobs/dev.env` in `dir` or the nearest directory above it.
pub fn find_dev_env(dir: &Path) -> Option<Vec<(String, String)>> {
    dir.ancestors()
        .take(64)
        .find_map(|d| std::fs::read_to_string(d.join(".edgejobs/dev.env")).ok())
        .map(|t| parse_env_file(&t))
}

/// The URL and key from flags, the environment, or `.edgejobs/dev.env`.
pub fn connect(cli: &Cli) -> Res<Api> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let file = std::env::current_dir().ok().and_then(|d| find_dev_env(&d)).unwrap_or_default();
    let from_file = |k: &str| file.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let url = cli.url.clone().or_else(|| env("EDGEJOBS_URL")).or_else(|| from_file("EDGEJOBS_URL"));
    let key = cli
        .key
        .clone()
        .or_else(|| env("EDGEJOBS_KEY"))
        .or_else(|| env("EDGEJOBS_ADMIN_KEY"))
        .or_else(|| env("EDGEJOBS_API_KEY"))
        .or_else(|| from_file("EDGEJOBS_ADMIN_KEY"))
        .or_else(|| from_file("EDGEJOBS_API_KEY"));
    let (Some(url), Some(key)) = (url, key) else {
        return Err(Failure::new(
            2,
            "no API URL or key: pass --url and --key, set EDGEJOBS_URL and EDGEJOBS_KEY, or run scripts/dev (it writes .edgejobs/dev.env)",
        ));
    };
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Failure::new(1, format!("cannot build the HTTP client: {e}")))?;
    Ok(Api { url: url.trim_end_matches('/').to_owned(), key, http })
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query string of filters and extra pairs, encoded.
pub fn query(f: &Filters, extra: &[(&str, String)]) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (k, v) in [("type", &f.job_type), ("tag", &f.tag), ("from", &f.from), ("to", &f.to)] {
        if let Some(v) = v {
            pairs.push((k, v.clone()));
        }
    }
    pairs.extend(extra.iter().cloned());
    pairs.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        let table =
            [(400, 3), (409, 3), (413, 3), (401, 4), (403, 4), (404, 5), (429, 6), (500, 6), (503, 6), (302, 1)];
        for (status, code) in table {
            assert_eq!(exit_code(status), code, "{status}");
        }
        for code in 0..=8 {
            assert!(crate::EXIT_CODES.contains(&format!("  {code}  ")), "exit code {code} is documented");
        }
    }

    #[test]
    fn dev_env_lines_are_read_and_found_above() {
        let v = parse_env_file("# c\n\nEDGEJOBS_URL=http://127.0.0.1:1\nEDGEJOBS_API_KEY=\"k=1\"\nbroken\n");
        assert_eq!(
            v,
            vec![("EDGEJOBS_URL".into(), "http://127.0.0.1:1".into()), ("EDGEJOBS_API_KEY".into(), "k=1".into())]
        );
        let dir = std::env::temp_dir().join(format!("edgejobs-cli-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".edgejobs")).expect("dir");
        std::fs::create_dir_all(dir.join("a/b")).expect("dir");
        std::fs::write(dir.join(".edgejobs/dev.env"), "EDGEJOBS_URL=u\n").expect("write");
        assert_eq!(find_dev_env(&dir.join("a/b")), Some(vec![("EDGEJOBS_URL".into(), "u".into())]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(enc("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        let f = Filters { job_type: Some("noop".into()), tag: Some("x y".into()), from: None, to: None };
        assert_eq!(query(&f, &[("limit", "5".into())]), "type=noop&tag=x%20y&limit=5");
    }
}
