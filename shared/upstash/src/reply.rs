//! A decoded Redis reply, as Upstash's REST API returns it in JSON.

use base64::Engine as _;
use serde_json::Value;

/// One reply. Strings are bytes (Redis values are binary-safe); numbers are integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Int(i64),
    Bytes(Vec<u8>),
    Array(Vec<Reply>),
    /// An error inside an array reply (e.g. one command of a transaction).
    Error(String),
}

impl Reply {
    /// Decodes the JSON `result` of a response. In base64 mode every string is base64 except
    /// a top-level `"OK"` (Upstash's convention, which the official client relies on too).
    pub fn from_json(v: &Value, base64: bool) -> Result<Reply, String> {
        Self::decode(v, base64, true)
    }

    fn decode(v: &Value, b64: bool, top: bool) -> Result<Reply, String> {
        Ok(match v {
            Value::Null => Reply::Nil,
            Value::Bool(b) => Reply::Int(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Reply::Int(i),
                None => Reply::Bytes(n.to_string().into_bytes()),
            },
            Value::String(s) if b64 && !(top && s == "OK") => Reply::Bytes(
                base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("bad base64 in reply: {e}"))?,
            ),
            Value::String(s) => Reply::Bytes(s.clone().into_bytes()),
            Value::Array(items) => {
                Reply::Array(items.iter().map(|i| Self::decode(i, b64, false)).collect::<Result<_, _>>()?)
            }
            Value::Object(o) => match o.get("error").and_then(Value::as_str) {
                Some(e) => Reply::Error(e.to_owned()),
                None => return Err(format!("unexpected object in reply: {v}")),
            },
        })
    }

    /// The reply as UTF-8 text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The reply as an integer (also parsing integer strings, which many commands return).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            Reply::Bytes(_) => self.as_str()?.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }

    /// A plain JSON view (strings as UTF-8, lossy), for comparisons and logs.
    pub fn to_json(&self) -> Value {
        match self {
            Reply::Nil => Value::Null,
            Reply::Int(i) => Value::from(*i),
            Reply::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
            Reply::Array(items) => Value::Array(items.iter().map(Reply::to_json).collect()),
            Reply::Error(e) => serde_json::json!({ "error": e }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_plain_and_base64() {
        let plain = Reply::from_json(&json!(["a", 1, null, ["b"]]), false).expect("valid");
        assert_eq!(plain.to_json(), json!(["a", 1, null, ["b"]]));
        // "aGk=" is "hi"; a top-level OK stays OK; nested strings are always base64.
        assert_eq!(Reply::from_json(&json!("aGk="), true).expect("valid").as_str(), Some("hi"));
        assert_eq!(Reply::from_json(&json!("OK"), true).expect("valid").as_str(), Some("OK"));
        assert_eq!(Reply::from_json(&json!(["aGk=", 3]), true).expect("valid").to_json(), json!(["hi", 3]));
        assert!(Reply::from_json(&json!("not base64!"), true).is_err());
        assert_eq!(Reply::from_json(&json!("12"), false).expect("valid").as_int(), Some(12));
    }
}
