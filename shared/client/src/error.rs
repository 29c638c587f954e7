//! The client's one error type: what went wrong, and whether trying again may help.

pub use edgejobs_core::ErrorCode;

/// The stable code of an API error: one this client knows, or a newer one it does not
/// (kept as sent, so a client older than the API still reads every answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Known(ErrorCode),
    Other(String),
}

impl Code {
    /// Reads a code as the API wrote it (`job_not_found`, ...).
    pub fn parse(code: &str) -> Code {
        serde_json::from_value(serde_json::Value::String(code.to_owned()))
            .map(Code::Known)
            .unwrap_or_else(|_| Code::Other(code.to_owned()))
    }

    /// The code as the API wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            Code::Known(c) => c.as_str(),
            Code::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error: its status, its stable code and its message (and the
    /// offending field, for `invalid_field`). A status without an error body (a proxy's
    /// page, say) has the code `http_<status>`.
    #[error("{code}: {message} (HTTP {status})")]
    Api { status: u16, code: Code, message: String, field: Option<String> },
    /// The API could not be reached, or the connection broke.
    #[error("cannot reach the API: {0}")]
    Transport(String),
    /// The API answered 2xx with a body that is not what the route documents.
    #[error("{what}: unexpected reply: {reason}")]
    Decode { what: String, reason: String },
    /// A webhook delivery did not verify ([`crate::verify_webhook`]): why.
    #[error("webhook delivery not verified: {0}")]
    Signature(String),
    /// The client was given something it cannot send (a bad base URL, an unserializable body).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl Error {
    /// Whether the same call may succeed later by itself: the API unreachable, rate limited
    /// (429) or unavailable (502, 503, 504). A refusal of the key or of the request is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api { status, .. } => matches!(status, 429 | 502..=504),
            Error::Decode { .. } | Error::Invalid(_) | Error::Signature(_) => false,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable code of an API error this client knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code: Code::Known(c), .. } => Some(*c),
            _ => None,
        }
    }

    /// Builds the error of a non-2xx answer from its body.
    pub(crate) fn from_reply(status: u16, body: &[u8]) -> Error {
        match serde_json::from_slice::<edgejobs_api::ErrorReply>(body) {
            Ok(r) => {
                Error::Api { status, code: Code::parse(&r.error.code), message: r.error.message, field: r.error.field }
            }
            Err(_) => Error::Api {
                status,
                code: Code::Other(format!("http_{status}")),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                field: None,
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_known_or_kept() {
        assert_eq!(Code::parse("job_not_found"), Code::Known(ErrorCode::JobNotFound));
        assert_eq!(Code::parse("rate_limited"), Code::Known(ErrorCode::RateLimited));
        assert_eq!(Code::parse("brand_new_code"), Code::Other("brand_new_code".into()));
        assert_eq!(Code::parse("brand_new_code").as_str(), "brand_new_code");
    }

    #[test]
    fn retryable_table() {
        let api = |status| Error::Api { status, code: Code::Other("x".into()), message: String::new(), field: None };
        let table = [(400, false), (401, false), (404, false), (409, false), (429, true), (500, false), (503, true)];
        for (status, want) in table {
            assert_eq!(api(status).is_retryable(), want, "{status}");
        }
        assert!(Error::Transport("refused".into()).is_retryable());
        assert!(!Error::Decode { what: "x".into(), reason: "y".into() }.is_retryable());
    }

    #[test]
    fn error_bodies_become_typed_errors() {
        let e = Error::from_reply(400, br#"{"error":{"code":"invalid_field","message":"bad","field":"type"}}"#);
        assert!(matches!(&e, Error::Api { status: 400, field: Some(f), .. } if f == "type"), "{e:?}");
        assert_eq!(e.code(), Some(ErrorCode::InvalidField));
        let e = Error::from_reply(502, b"<html>bad gateway</html>");
        assert!(matches!(&e, Error::Api { code: Code::Other(c), .. } if c == "http_502"), "{e:?}");
        assert!(e.is_retryable());
    }
}
