//! The API at one URL with one key: finding them (flags, environment, `.edgejobs/dev.env`),
//! the `edgejobs-client` that sends the requests, and the failures with the exit codes they
//! mean.

use std::path::Path;

use edgejobs_client::{Client, DeadQuery, Error, JobQuery};

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

/// The API at one URL with one key: the async `edgejobs-client` driven on a
/// current-thread runtime, so each command stays a plain sequence of calls.
#[derive(Debug)]
pub struct Api {
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    /// Runs one client call to its end; an error becomes the failure with its exit code.
    pub fn run<T>(&self, call: impl Future<Output = edgejobs_client::Result<T>>) -> Res<T> {
        self.rt.block_on(call).map_err(|e| failure(&self.client, e))
    }

    /// Runs `f` on the runtime (for a stream's reads bounded by a deadline).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The failure an error means, with its exit code.
    pub fn failure(&self, e: Error) -> Failure {
        failure(&self.client, e)
    }
}

/// A client error as a failure: an API refusal keeps its stable code and message (exit
/// code by status; 429 after the client's retries is 6), anything else is exit code 1.
fn failure(client: &Client, e: Error) -> Failure {
    match e {
        Error::Api { status, code, message, .. } => Failure::new(exit_code(status), format!("{code}: {message}")),
        Error::Transport(why) => Failure::new(1, format!("cannot reach {}: {why}", client.base_url())),
        other => Failure::new(1, other.to_string()),
    }
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

/// Where the URL and the key came from: always one and the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flags,
    Environment,
    DevEnv,
}

/// A URL and a key, each maybe given.
pub type Pair = (Option<String>, Option<String>);

/// Picks the URL and the key from one source: the flags if either flag is given, else the
/// environment if it names either, else `.edgejobs/dev.env`. A source that gives only half
/// is an error, never completed from another: a key meant for one deployment is never sent
/// to a URL from elsewhere (say, a production key in the environment and the URL of a
/// `dev.env` found above the working directory). Messages name settings, never values.
pub fn pick(flags: Pair, env: Pair, file: Pair) -> Result<(String, String, Source), String> {
    let sources = [
        (flags, Source::Flags, "--url", "--key"),
        (env, Source::Environment, "EDGEJOBS_URL", "EDGEJOBS_KEY (or EDGEJOBS_ADMIN_KEY, EDGEJOBS_API_KEY)"),
        (file, Source::DevEnv, "EDGEJOBS_URL of .edgejobs/dev.env", "a key of .edgejobs/dev.env"),
    ];
    for ((url, key), source, url_name, key_name) in sources {
        let (given, missing) = match (url, key) {
            (Some(url), Some(key)) => return Ok((url, key, source)),
            (None, None) => continue,
            (Some(_), None) => (url_name, key_name),
            (None, Some(_)) => (key_name, url_name),
        };
        return Err(format!(
            "{given} is given but {missing} is not: the URL and the key must come from the same place \
             (both flags, both environment variables, or both from .edgejobs/dev.env), so a key is never sent to a URL meant for another"
        ));
    }
    Err("no API URL or key: pass --url and --key, set EDGEJOBS_URL and EDGEJOBS_KEY, or run scripts/dev (it writes .edgejobs/dev.env)"
        .to_owned())
}

/// The URL and key from flags, the environment, or `.edgejobs/dev.env` (one of them: see
/// [`pick`]).
pub fn connect(cli: &Cli) -> Res<Api> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let file = std::env::current_dir().ok().and_then(|d| find_dev_env(&d)).unwrap_or_default();
    let from_file = |k: &str| file.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let flags = (cli.url.clone(), cli.key.clone());
    let from_env = (
        env("EDGEJOBS_URL"),
        env("EDGEJOBS_KEY").or_else(|| env("EDGEJOBS_ADMIN_KEY")).or_else(|| env("EDGEJOBS_API_KEY")),
    );
    let from_dev_env =
        (from_file("EDGEJOBS_URL"), from_file("EDGEJOBS_ADMIN_KEY").or_else(|| from_file("EDGEJOBS_API_KEY")));
    let (url, key, _) = pick(flags, from_env, from_dev_env).map_err(|e| Failure::new(2, e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(1, format!("cannot start the runtime: {e}")))?;
    // The transport's timers and connections belong to the runtime: built inside it.
    let client = rt
        .block_on(async { Client::new(&url, &key) })
        .map_err(|e| Failure::new(1, format!("cannot build the HTTP client: {e}")))?;
    Ok(Api { client, rt })
}

/// The filters as a jobs query.
pub fn job_query(f: &Filters) -> JobQuery {
    JobQuery {
        job_type: f.job_type.clone(),
        tag: f.tag.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
        ..JobQuery::default()
    }
}

/// The filters as a dead-letter query.
pub fn dead_query(f: &Filters, limit: u32) -> DeadQuery {
    DeadQuery {
        job_type: f.job_type.clone(),
        tag: f.tag.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
        limit: Some(limit),
        ..DeadQuery::default()
    }
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
    fn url_and_key_come_from_one_source() {
        let both = |u: &str, k: &str| (Some(u.to_owned()), Some(k.to_owned()));
        let none: Pair = (None, None);
        let url_only: Pair = (Some("u".into()), None);
        let key_only: Pair = (None, Some("k".into()));
        let file = both("http://dev", "dev-key");
        // Each source alone, and the first given one wins whole.
        assert_eq!(pick(both("f", "fk"), both("e", "ek"), file.clone()), Ok(("f".into(), "fk".into(), Source::Flags)));
        assert_eq!(
            pick(none.clone(), both("e", "ek"), file.clone()),
            Ok(("e".into(), "ek".into(), Source::Environment))
        );
        assert_eq!(
            pick(none.clone(), none.clone(), file.clone()),
            Ok(("http://dev".into(), "dev-key".into(), Source::DevEnv))
        );
        // Half of a source is never completed from another: not the file's URL with a
        // key from a flag or the environment, nor the file's key with their URL.
        for (flags, env) in [
            (key_only.clone(), none.clone()),
            (none.clone(), key_only.clone()),
            (url_only.clone(), none.clone()),
            (none.clone(), url_only.clone()),
            (key_only.clone(), both("e", "ek")),
            (url_only.clone(), both("e", "ek")),
        ] {
            let e = pick(flags.clone(), env.clone(), file.clone()).expect_err("half a source");
            assert!(e.contains("must come from the same place"), "{flags:?} {env:?}: {e}");
            assert!(!e.contains("dev-key") && !e.contains("ek"), "no value is shown: {e}");
        }
        // A dev.env with only half is an error too; nothing at all says what to do.
        let e = pick(none.clone(), none.clone(), (Some("u".into()), None)).expect_err("half a file");
        assert!(e.contains("a key of .edgejobs/dev.env"), "{e}");
        assert!(pick(none.clone(), none.clone(), none).expect_err("nothing").contains("scripts/dev"));
    }
}
