//! The Lua scripts the gateway runs: this project's own, and no other. They are compiled in
//! from the very file the edge and the consumer use (`shared/core/src/scripts.rs`), so the allowed
//! SHA-1s cannot drift from the scripts that ship. `EVAL`, `EVAL_RO` and `SCRIPT LOAD` of any
//! other text, and `EVALSHA`/`EVALSHA_RO` of any other SHA-1, are refused before Redis sees
//! them: `EVAL` would otherwise let any holder of the token run any command Redis permits
//! inside scripts, around the allow-list.

use std::sync::OnceLock;

use sha1::{Digest, Sha1};

#[path = "../../core/src/scripts.rs"]
mod project;

/// The project's scripts, as the consumer sends them.
pub const ALL: &[&str] = project::ALL;

/// The lower-case hex SHA-1 of a script, as Redis names it (`SCRIPT LOAD`'s answer).
pub fn sha1_hex(script: &[u8]) -> String {
    Sha1::digest(script).iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-1 of every project script.
pub fn allowed_shas() -> &'static [String] {
    static SHAS: OnceLock<Vec<String>> = OnceLock::new();
    SHAS.get_or_init(|| ALL.iter().map(|s| sha1_hex(s.as_bytes())).collect())
}

/// Whether `text` is one of the project's scripts (compared by SHA-1, as Redis caches them).
pub fn is_known_script(text: &[u8]) -> bool {
    let sha = sha1_hex(text);
    allowed_shas().contains(&sha)
}

/// Whether `sha` names one of the project's scripts (hex, any case).
pub fn is_known_sha(sha: &[u8]) -> bool {
    sha.len() == 40 && allowed_shas().iter().any(|s| s.as_bytes().eq_ignore_ascii_case(sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_scripts_and_only_they_are_known() {
        assert_eq!(allowed_shas().len(), ALL.len());
        assert!(ALL.len() >= 6, "the edge's two hand-off scripts and the consumer's four lease scripts");
        for s in ALL {
            assert!(is_known_script(s.as_bytes()));
            assert!(is_known_sha(sha1_hex(s.as_bytes()).to_ascii_uppercase().as_bytes()));
        }
        assert!(!is_known_script(b"return redis.call('FLUSHALL')"));
        assert!(!is_known_sha(sha1_hex(b"return 1").as_bytes()));
        assert!(!is_known_sha(b"abc"));
        // Redis's own SHA-1 of "return 1" (SCRIPT LOAD answers this): the digest is Redis's.
        assert_eq!(sha1_hex(b"return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
