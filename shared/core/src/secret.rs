//! Secrets and their constant-time comparison: [`Secret`] (whose Debug output never shows
//! it) and the SHA-256 digests keys are compared by. It sits below [`crate::config`], which
//! holds secrets, and [`crate::auth`], which checks presented keys against them.

use std::fmt;

use sha2::{Digest, Sha256};

/// Compares two secrets in time that depends on neither's content nor length: both sides
/// are hashed, then the digests are compared without an early exit.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    digests_eq(&digest(a), &digest(b))
}

/// SHA-256 of a secret or a presented token.
pub fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compares two digests without an early exit.
pub fn digests_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A secret string. Debug and Display print `[redacted]`. Its SHA-256 is computed once, so
/// constant-time comparisons against it hash only the other side.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    digest: [u8; 32],
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        let value = s.into();
        let digest = digest(&value);
        Secret { value, digest }
    }
    pub fn expose(&self) -> &str {
        &self.value
    }
    /// Whether `digest` (a [`digest`] of a candidate) is this secret's, in
    /// time that depends on neither.
    pub fn matches(&self, digest: &[u8; 32]) -> bool {
        digests_eq(&self.digest, digest)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
