//! The bearer token: a minimum length checked at start, and a comparison whose time does not
//! depend on where (or whether) a guess differs.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// Shortest token the gateway starts with. The stack generates `local_` + 32 hex digits.
pub const MIN_TOKEN_LEN: usize = 16;

/// The configured token, kept as its SHA-256 digest: comparing digests of equal length makes
/// the comparison independent of the guess's length too. `Debug` never shows it.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// Why a configured token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is {0} characters long; upstash-local needs at least {MIN_TOKEN_LEN}")]
    TooShort(usize),
    #[error("the token must be printable ASCII without spaces (it travels in an HTTP header)")]
    NotPrintable,
}

impl Token {
    /// Accepts a token of at least [`MIN_TOKEN_LEN`] visible ASCII characters.
    pub fn new(token: &str) -> Result<Token, TokenError> {
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotPrintable);
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.len()));
        }
        Ok(Token { digest: Sha256::digest(token.as_bytes()).into() })
    }

    /// Whether `presented` is the token. Constant time in the content of both.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&digest).into()
    }

    /// Whether an `Authorization` header value is `Bearer <token>` (the scheme is
    /// case-insensitive, as HTTP says).
    pub fn authorizes(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.split_at_checked(7))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"Bearer "))
            .is_some_and(|(_, t)| self.matches(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_length_and_printable() {
        assert_eq!(Token::new("short").map(|_| ()), Err(TokenError::TooShort(5)));
        assert_eq!(Token::new("").map(|_| ()), Err(TokenError::TooShort(0)));
        assert_eq!(Token::new("0123456789abcde").map(|_| ()), Err(TokenError::TooShort(15)));
        assert!(Token::new("0123456789abcdef").is_ok());
        assert_eq!(Token::new("0123456789 abcdef").map(|_| ()), Err(TokenError::NotPrintable));
        assert_eq!(Token::new("0123456789abcdéf").map(|_| ()), Err(TokenError::NotPrintable));
        // What tests/src/stack.rs generates.
        assert!(Token::new("local_0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn matches_only_the_token() {
        let t = Token::new("local_0123456789abcdef").expect("valid");
        assert!(t.matches(b"local_0123456789abcdef"));
        assert!(!t.matches(b"local_0123456789abcdeF"));
        assert!(!t.matches(b"local_0123456789abcde"));
        assert!(!t.matches(b"local_0123456789abcdef0"));
        assert!(!t.matches(b""));
        assert!(t.authorizes(Some(b"Bearer local_0123456789abcdef")));
        assert!(t.authorizes(Some(b"bearer local_0123456789abcdef")));
        assert!(!t.authorizes(Some(b"Basic local_0123456789abcdef")));
        assert!(!t.authorizes(Some(b"Bearer")));
        assert!(!t.authorizes(Some(b"Bearer  local_0123456789abcdef")));
        assert!(!t.authorizes(Some(b"local_0123456789abcdef")));
        assert!(!t.authorizes(None));
        assert_eq!(format!("{t:?}"), "Token([redacted])");
    }
}
