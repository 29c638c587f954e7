//! Request parsing: the three ways Upstash's REST API carries a command (the path form, a
//! JSON array in the body, an array of arrays for `/pipeline` and `/multi-exec`) turned into
//! argument lists. Pure functions of their input, so they are table-tested and fuzzed
//! (`fuzz/fuzz_targets/gateway_request.rs`); none of them panics on any input.

use percent_encoding::percent_decode_str;
use serde_json::Value;

/// One command: its name first, then its arguments. Never empty. Arguments are bytes because
/// Redis values are binary-safe (a POST body appended in the path form may be binary).
pub type Args = Vec<Vec<u8>>;

/// Why a request was answered 400 before reaching Redis. `Display` is the text of Upstash's
/// error shape, `{"error":"<text>"}`; every text starts with a Redis error code (`ERR`), as
/// Upstash's own errors do, so clients treat it as a refused command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a command at all: malformed JSON, an empty array, a path that is not UTF-8, ...
    #[error("ERR {0}")]
    Malformed(String),
    /// The request body is larger than the gateway accepts (Upstash's wording).
    #[error("ERR max request size exceeded")]
    TooLarge,
    /// A command that is not on the allow-list (`allow.rs`).
    #[error("ERR command '{0}' is not supported by upstash-local (see shared/upstash-local/README.md)")]
    Unsupported(String),
    /// A command that would block the shared Redis connection.
    #[error("ERR blocking command '{0}' is not supported over REST")]
    Blocking(String),
    /// An allowed command with an option that would block (XREAD/XREADGROUP ... BLOCK).
    #[error("ERR {0} with BLOCK is not supported over REST")]
    BlockOption(String),
    /// EVAL, EVALSHA or SCRIPT LOAD of a script that is not one of the project's.
    #[error("ERR {0}: upstash-local runs only this project's Lua scripts (shared/core/src/scripts.rs)")]
    UnknownScript(String),
}

/// Parses the path form: `/set/key/a%20b` is `SET key "a b"`. Segments are percent-decoded
/// and must then be UTF-8; empty segments (`//`) are skipped, as Upstash does. A non-empty
/// POST `body` is appended as the last argument, byte for byte.
pub fn parse_path_command(path: &str, body: Option<&[u8]>) -> Result<Args, Refused> {
    let mut args = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| Refused::Malformed("the path is not UTF-8 once percent-decoded".into()))?;
        args.push(decoded.into_owned().into_bytes());
    }
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        args.push(body.to_vec());
    }
    if args.is_empty() {
        return Err(Refused::Malformed("empty command".into()));
    }
    Ok(args)
}

/// Parses `POST /`: one command as a JSON array of strings, numbers or booleans.
pub fn parse_body_command(body: &[u8]) -> Result<Args, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| Refused::Malformed("the body must be a JSON array: [\"COMMAND\", \"arg\", ...]".into()))?;
    command_from_json(&v)
}

/// Parses the body of `POST /pipeline` or `POST /multi-exec`: a JSON array of commands. An
/// empty array is refused (nothing to run; Upstash answers an error too).
pub fn parse_pipeline(body: &[u8]) -> Result<Vec<Args>, Refused> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| Refused::Malformed("the body must be a JSON array of commands".into()))?;
    let Value::Array(items) = v else {
        return Err(Refused::Malformed("the body must be a JSON array of commands".into()));
    };
    if items.is_empty() {
        return Err(Refused::Malformed("empty pipeline".into()));
    }
    items.iter().map(command_from_json).collect()
}

/// One command from its JSON form. Numbers keep their JSON text (`100`, `1.5`), booleans
/// become `true`/`false`; nulls, objects and nested arrays are refused.
fn command_from_json(v: &Value) -> Result<Args, Refused> {
    let Value::Array(items) = v else {
        return Err(Refused::Malformed("a command must be a JSON array: [\"COMMAND\", \"arg\", ...]".into()));
    };
    if items.is_empty() {
        return Err(Refused::Malformed("empty command".into()));
    }
    items
        .iter()
        .map(|a| match a {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Number(n) => Ok(n.to_string().into_bytes()),
            Value::Bool(b) => Ok(b.to_string().into_bytes()),
            _ => Err(Refused::Malformed("command arguments must be strings, numbers or booleans".into())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(args: &[&str]) -> Args {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    /// A path, an optional POST body, and what parsing them gives.
    type Case = (&'static str, Option<&'static [u8]>, Result<Args, Refused>);

    #[test]
    fn path_form() {
        let table: &[Case] = &[
            ("/set/k/v", None, Ok(strs(&["set", "k", "v"]))),
            ("/set/k/a%20b", None, Ok(strs(&["set", "k", "a b"]))),
            ("/get//k/", None, Ok(strs(&["get", "k"]))),
            ("/set/k", Some(b"body"), Ok(strs(&["set", "k", "body"]))),
            ("/set/k", Some(b""), Ok(strs(&["set", "k"]))),
            ("/set/k", Some(&[0xff, 0x00]), Ok(vec![b"set".to_vec(), b"k".to_vec(), vec![0xff, 0x00]])),
            ("/set/k/%E2%9C%93", None, Ok(strs(&["set", "k", "✓"]))),
            // A slash encoded in a segment stays inside the argument.
            ("/get/a%2Fb", None, Ok(strs(&["get", "a/b"]))),
            // Malformed escapes are kept literally, as browsers and Upstash do.
            ("/get/%zz/%4", None, Ok(strs(&["get", "%zz", "%4"]))),
            ("/get/%FF", None, Err(Refused::Malformed("the path is not UTF-8 once percent-decoded".into()))),
            ("/get/%C3", None, Err(Refused::Malformed("the path is not UTF-8 once percent-decoded".into()))),
            ("/", None, Err(Refused::Malformed("empty command".into()))),
            ("", None, Err(Refused::Malformed("empty command".into()))),
            ("//", Some(b""), Err(Refused::Malformed("empty command".into()))),
        ];
        for (path, body, want) in table {
            assert_eq!(&parse_path_command(path, *body), want, "{path:?} {body:?}");
        }
    }

    #[test]
    fn body_form() {
        let ok: &[(&str, &[&str])] = &[
            (r#"["PING"]"#, &["PING"]),
            (r#"["SET","k","v","EX",100]"#, &["SET", "k", "v", "EX", "100"]),
            (r#"["SET","k",1.5]"#, &["SET", "k", "1.5"]),
            (r#"["SET","k",true]"#, &["SET", "k", "true"]),
            (r#"["SET","k","héllo ✓"]"#, &["SET", "k", "héllo ✓"]),
        ];
        for (body, want) in ok {
            assert_eq!(parse_body_command(body.as_bytes()), Ok(strs(want)), "{body}");
        }
        let bad =
            ["", "not json", "[]", "{}", "\"PING\"", "[null]", r#"["SET",{"a":1}]"#, r#"[["PING"]]"#, "[\"PING\""];
        for body in bad {
            assert!(matches!(parse_body_command(body.as_bytes()), Err(Refused::Malformed(_))), "{body}");
        }
        assert!(matches!(parse_body_command(&[0xff, b'[']), Err(Refused::Malformed(_))));
    }

    #[test]
    fn pipelines() {
        assert_eq!(
            parse_pipeline(br#"[["SET","a",1],["INCR","a"]]"#),
            Ok(vec![strs(&["SET", "a", "1"]), strs(&["INCR", "a"])])
        );
        let bad = ["[]", "[[]]", r#"["PING"]"#, r#"[["PING"],[]]"#, r#"[["PING"],null]"#, "{}", "nope"];
        for body in bad {
            assert!(matches!(parse_pipeline(body.as_bytes()), Err(Refused::Malformed(_))), "{body}");
        }
    }

    #[test]
    fn refusals_have_upstash_error_shape() {
        for r in [
            Refused::Malformed("x".into()),
            Refused::TooLarge,
            Refused::Unsupported("FLUSHALL".into()),
            Refused::Blocking("BLPOP".into()),
            Refused::BlockOption("XREAD".into()),
        ] {
            assert!(r.to_string().starts_with("ERR "), "{r}");
        }
    }
}
