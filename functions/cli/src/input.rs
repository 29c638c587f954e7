//! What the CLI reads: a job spec from flags, and NDJSON files of job specs.

use edgejobs_api::{DurationInput, JobSpec};
use serde_json::Value;

/// A job spec given with flags.
#[derive(Debug, Default)]
pub struct Spec {
    pub job_type: String,
    /// JSON, or `@FILE`.
    pub payload: Option<String>,
    pub delay: Option<String>,
    pub run_at: Option<String>,
    pub idempotency_key: Option<String>,
    pub tags: Vec<String>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<String>,
}

impl Spec {
    /// The body of `POST /v1/jobs`; the API checks the rest.
    pub fn to_spec(&self) -> Result<JobSpec, String> {
        let payload = match &self.payload {
            Some(p) => {
                let text = match p.strip_prefix('@') {
                    Some(file) => std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?,
                    None => p.clone(),
                };
                Some(serde_json::from_str::<Value>(&text).map_err(|e| format!("--payload is not JSON: {e}"))?)
            }
            None => None,
        };
        let text = |v: &Option<String>| v.clone().map(DurationInput::Text);
        Ok(JobSpec {
            job_type: self.job_type.clone(),
            payload,
            max_attempts: self.max_attempts,
            timeout: text(&self.timeout),
            tags: Some(self.tags.clone()).filter(|t| !t.is_empty()),
            idempotency_key: self.idempotency_key.clone(),
            delay: text(&self.delay),
            run_at: self.run_at.clone(),
            ..JobSpec::default()
        })
    }
}

/// Most lines one file may hold.
pub const MAX_LINES: usize = 1_000_000;

/// Reads NDJSON job specs: (line number, object) for each non-blank line. The first line
/// that is not a JSON object fails the whole file, so nothing is sent from a broken file.
pub fn read_ndjson(r: impl std::io::BufRead) -> Result<Vec<(usize, Value)>, String> {
    let mut out = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("line {n}: cannot read: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_LINES {
            return Err(format!("more than {MAX_LINES} lines"));
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(v @ Value::Object(_)) => out.push((n, v)),
            Ok(_) => return Err(format!("line {n}: not a JSON object")),
            Err(e) => return Err(format!("line {n}: malformed JSON: {e}")),
        }
    }
    if out.is_empty() {
        return Err("no job in the file".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_names_the_line_that_breaks_it() {
        let ok =
            read_ndjson("{\"type\":\"noop\"}\n\n{\"type\":\"noop\",\"tags\":[\"a\"]}\n".as_bytes()).expect("valid");
        assert_eq!(ok.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 3]);
        let e = read_ndjson("{\"type\":\"noop\"}\n{}\n{\"type\":\n".as_bytes()).expect_err("broken");
        assert!(e.starts_with("line 3: malformed JSON"), "{e}");
        let e = read_ndjson("[1]\n".as_bytes()).expect_err("array");
        assert_eq!(e, "line 1: not a JSON object");
        assert!(read_ndjson("\n \n".as_bytes()).is_err());
    }

    #[test]
    fn flags_become_a_spec() {
        let s = Spec {
            job_type: "noop".into(),
            payload: Some("{\"a\":1}".into()),
            delay: Some("5s".into()),
            tags: vec!["x".into(), "y".into()],
            max_attempts: Some(2),
            ..Spec::default()
        };
        assert_eq!(
            serde_json::to_value(s.to_spec().expect("valid")).expect("json"),
            serde_json::json!({ "type": "noop", "payload": { "a": 1 }, "delay": "5s", "tags": ["x", "y"], "max_attempts": 2 })
        );
        let bad = Spec { payload: Some("{nope".into()), ..Spec::default() };
        assert!(bad.to_spec().expect_err("bad").contains("--payload is not JSON"));
    }
}
