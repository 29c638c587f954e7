//! edgejobs-upstash: the Upstash Redis REST client. This first cut holds the credentials type;
//! the client itself, its transport trait and its fakes arrive with the Upstash issue.

use edgejobs_core::config::Secret;

/// Where an Upstash database answers and the token it wants. Debug never shows the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `UPSTASH_REDIS_REST_URL`, e.g. `https://eu1-x.upstash.io`.
    pub url: String,
    /// `UPSTASH_REDIS_REST_TOKEN`.
    pub token: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_token() {
        let c = Credentials { url: "http://127.0.0.1:1".into(), token: Secret::new("tok_very_secret") };
        assert!(!format!("{c:?}").contains("very_secret"));
    }
}
