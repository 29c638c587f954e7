//! Tenants: the owner of a job. Every `jobs` key belongs to one tenant (`acme=key` in
//! `EDGEJOBS_API_KEYS`; an entry without `tenant=` belongs to [`Tenant::DEFAULT`]); everything
//! such a key does is scoped to it. Admin keys see every tenant.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Longest tenant name.
pub const MAX_TENANT: usize = 32;

/// A tenant's name: 1 to 32 of `a-z 0-9 _ -`, starting with a letter or digit. The
/// character set keeps it safe in metric labels, Redis keys and the scoped idempotency key
/// (see [`Tenant::scope_key`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Tenant(String);

impl Tenant {
    /// The tenant of keys configured without `tenant=` and of every job stored before tenants.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(s: &str) -> Result<Tenant, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_TENANT
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && s.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(Tenant(s.to_owned()))
        } else {
            Err(format!("a tenant name is 1 to {MAX_TENANT} of a-z, 0-9, _ and -, starting with a letter or digit"))
        }
    }

    /// Parses a tenant named in a request (a `tenant` field or query parameter).
    pub fn from_field(field: &str, s: &str) -> Result<Tenant, ApiError> {
        Tenant::parse(s).map_err(|e| ApiError::field(field, e))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    /// The idempotency key as a shard stores it: the tenant, a unit separator (which no
    /// tenant name holds) and the user's key, so two tenants' equal keys never meet.
    pub fn scope_key(&self, key: &str) -> String {
        format!("{}\u{1f}{key}", self.0)
    }
}

impl Default for Tenant {
    fn default() -> Tenant {
        Tenant(Tenant::DEFAULT.to_owned())
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Tenant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tenant, D::Error> {
        let s = String::deserialize(d)?;
        Tenant::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which jobs a caller may see: one tenant's (a `jobs` key) or every tenant's (an admin key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sees {
    Tenant(Tenant),
    All,
}

impl Sees {
    /// Whether a job of `owner` is visible. An invisible job answers exactly as a missing
    /// one does.
    pub fn may_see(&self, owner: &Tenant) -> bool {
        match self {
            Sees::All => true,
            Sees::Tenant(t) => t == owner,
        }
    }

    /// The tenant a listing is restricted to: a `jobs` key's own; for an admin, the
    /// `tenant=` filter it asked for, if any. A `jobs` key that asks for another tenant
    /// sees nothing of it: the filter is its own tenant and the asked one must match.
    pub fn filter(&self, asked: Option<Tenant>) -> Result<Option<Tenant>, ApiError> {
        match (self, asked) {
            (Sees::All, asked) => Ok(asked),
            (Sees::Tenant(t), None) => Ok(Some(t.clone())),
            (Sees::Tenant(t), Some(a)) if &a == t => Ok(Some(a)),
            (Sees::Tenant(_), Some(_)) => Err(ApiError::new(
                crate::error::ErrorCode::Forbidden,
                "a jobs key sees its own tenant only; tenant= is for admin keys",
            )),
        }
    }

    /// The tenant of a job this caller creates: a `jobs` key's own (naming another is
    /// refused); an admin's choice, or the default tenant.
    pub fn owner_of_new(&self, asked: Option<Tenant>) -> Result<Tenant, ApiError> {
        Ok(self.filter(asked)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["default", "acme", "a", "team-1_x", "0abc"] {
            assert!(Tenant::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_TENANT + 1);
        for bad in ["", "Acme", "-a", "_a", "a b", "a=b", "a\u{1f}b", "é", long.as_str()] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?}");
        }
        let t: Result<Tenant, _> = serde_json::from_str("\"Bad Name\"");
        assert!(t.is_err());
    }

    #[test]
    fn scoped_keys_of_two_tenants_differ_and_keep_the_key() {
        let (a, b) = (Tenant::parse("a").expect("valid"), Tenant::parse("ab").expect("valid"));
        assert_ne!(a.scope_key("bc"), b.scope_key("c"));
        assert_ne!(a.scope_key("k"), b.scope_key("k"));
        assert!(a.scope_key("order-1").ends_with("order-1"));
    }

    #[test]
    fn jobs_keys_see_their_tenant_admins_see_all() {
        let (acme, globex) = (Tenant::parse("acme").expect("valid"), Tenant::parse("globex").expect("valid"));
        let key = Sees::Tenant(acme.clone());
        assert!(key.may_see(&acme) && !key.may_see(&globex));
        assert!(Sees::All.may_see(&globex));
        assert_eq!(key.filter(None).expect("ok"), Some(acme.clone()));
        assert!(key.filter(Some(globex.clone())).is_err());
        assert_eq!(Sees::All.filter(None).expect("ok"), None);
        assert_eq!(Sees::All.filter(Some(globex.clone())).expect("ok"), Some(globex.clone()));
        assert_eq!(key.owner_of_new(None).expect("ok"), acme);
        assert!(key.owner_of_new(Some(globex.clone())).is_err());
        assert_eq!(Sees::All.owner_of_new(None).expect("ok"), Tenant::default());
        assert_eq!(Sees::All.owner_of_new(Some(globex.clone())).expect("ok"), globex);
    }
}
