//! Secrets inside payloads: the values of `payload.headers` (an `Authorization` header, an
//! API key) are sealed at enqueue with AES-256-GCM and stay sealed in the shards, backups
//! and archives. They are opened only where the request is made (the edge's webhook handler,
//! the native consumer) and shown as `[redacted]` in every API response.
//!
//! A sealed value is `ejenc:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`; the job id and
//! header name are its associated data, so a value cannot be moved to another job or header.
//! Keys come from a secret (`PAYLOAD_ENCRYPTION_KEYS`): `id:base64-32-bytes,...`, the first
//! seals, all open, so a key is rotated by putting a new one first and dropping the old one
//! once no stored job uses it. The nonce is an argument (the core draws no randomness).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// What every sealed value starts with.
pub const PREFIX: &str = "ejenc:v1:";
/// What API responses show instead of a header value.
pub const REDACTED: &str = "[redacted]";

/// The payload keys: the first seals, every one opens.
#[derive(Clone)]
pub struct Keys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Keys").field("ids", &ids).finish_non_exhaustive()
    }
}

impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        self.keys.iter().map(|(id, _)| id).eq(other.keys.iter().map(|(id, _)| id))
    }
}

impl Keys {
    /// Parses `id:base64,...` (each key 32 bytes, ids short and unique). The error never
    /// contains key material.
    pub fn parse(s: &str) -> Result<Keys, String> {
        let mut keys: Vec<(String, [u8; 32])> = Vec::new();
        for (i, entry) in s.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
            let Some((id, b64)) = entry.split_once(':') else {
                return Err(format!("key {} must look like id:base64", i + 1));
            };
            let valid_id = !id.is_empty() && id.len() <= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !valid_id || keys.iter().any(|(k, _)| k == id) {
                return Err(format!("key {}: the id must be 1 to 16 letters or digits, unique", i + 1));
            }
            let bytes = STANDARD.decode(b64.trim()).map_err(|_| format!("key {id:?} is not base64"))?;
            let key: [u8; 32] =
                bytes.try_into().map_err(|_| format!("key {id:?} must be 32 bytes (base64 of 32 random bytes)"))?;
            keys.push((id.to_owned(), key));
        }
        if keys.is_empty() {
            return Err("at least one key is required (id:base64 of 32 random bytes)".to_owned());
        }
        Ok(Keys { keys })
    }

    /// The id of the key that seals (the first).
    pub fn newest_id(&self) -> &str {
        &self.keys[0].0
    }

    fn cipher(key: &[u8; 32]) -> Aes256Gcm {
        Aes256Gcm::new(key.into())
    }

    /// Seals `plain` with the first key, bound to `aad`.
    pub fn seal(&self, plain: &str, aad: &str, nonce: [u8; 12]) -> String {
        let (id, key) = &self.keys[0];
        match Self::cipher(key)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
        {
            Ok(ct) => {
                let mut out = nonce.to_vec();
                out.extend(ct);
                format!("{PREFIX}{id}:{}", STANDARD.encode(out))
            }
            // AES-GCM only fails for plaintexts of gigabytes; headers are capped at 8 KiB.
            Err(_) => REDACTED.to_owned(),
        }
    }

    /// Opens a sealed value; the error says why without revealing anything.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, String> {
        let rest = sealed.strip_prefix(PREFIX).ok_or("not a sealed value")?;
        let (id, b64) = rest.split_once(':').ok_or("malformed sealed value")?;
        let (_, key) = self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| format!("no key {id:?} to open it"))?;
        let bytes = STANDARD.decode(b64).map_err(|_| "malformed sealed value")?;
        if bytes.len() < 12 + 16 {
            return Err("malformed sealed value".to_owned());
        }
        let (nonce, ct) = bytes.split_at(12);
        let plain = Self::cipher(key)
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: aad.as_bytes() })
            .map_err(|_| "the sealed value does not open with its key (tampered, or moved)")?;
        String::from_utf8(plain).map_err(|_| "the sealed value is not text".to_owned())
    }
}

fn aad(job_id: &str, header: &str) -> String {
    format!("{job_id}\n{}", header.to_ascii_lowercase())
}

/// Seals every value of `payload.headers` (values already sealed stay as they are).
/// `nonce` draws a fresh random nonce for each; when it cannot (the random source failed)
/// nothing is sealed and its error is returned: a nonce is never made up.
pub fn seal_headers(
    payload: &mut Value,
    job_id: &str,
    keys: &Keys,
    nonce: &mut impl FnMut() -> Result<[u8; 12], String>,
) -> Result<(), String> {
    if let Some(Value::Object(h)) = payload.get_mut("headers") {
        let mut sealed = Vec::new();
        for (name, v) in h.iter() {
            if let Value::String(s) = v
                && !s.starts_with(PREFIX)
            {
                sealed.push((name.clone(), keys.seal(s, &aad(job_id, name), nonce()?)));
            }
        }
        for (name, s) in sealed {
            h.insert(name, Value::String(s));
        }
    }
    Ok(())
}

/// Re-seals, under the newest key, every value of `payload.headers` sealed under another
/// (what lets an old key be retired). Returns how many values changed: 0 when every value
/// is sealed under the newest key already, so a second pass changes nothing. A value that
/// does not open (its key is gone, or it was tampered with) fails the whole payload, which
/// is left as it was: nothing is ever replaced by something that opens to another value.
pub fn reseal_headers(
    payload: &mut Value,
    job_id: &str,
    keys: &Keys,
    nonce: &mut impl FnMut() -> Result<[u8; 12], String>,
) -> Result<u32, String> {
    let Some(Value::Object(h)) = payload.get_mut("headers") else { return Ok(0) };
    let newest = format!("{PREFIX}{}:", keys.newest_id());
    let mut changed = Vec::new();
    for (name, v) in h.iter() {
        if let Value::String(s) = v
            && s.starts_with(PREFIX)
            && !s.starts_with(&newest)
        {
            let aad = aad(job_id, name);
            let plain = keys.open(s, &aad).map_err(|e| format!("header {name:?}: {e}"))?;
            changed.push((name.clone(), keys.seal(&plain, &aad, nonce()?)));
        }
    }
    let n = changed.len() as u32;
    for (name, s) in changed {
        h.insert(name, Value::String(s));
    }
    Ok(n)
}

/// The opened headers of a payload, as (name, value) pairs.
pub fn open_headers(payload: &Value, job_id: &str, keys: Option<&Keys>) -> Result<Vec<(String, String)>, String> {
    let Some(Value::Object(h)) = payload.get("headers") else { return Ok(Vec::new()) };
    h.iter()
        .map(|(name, v)| {
            let s = v.as_str().unwrap_or_default();
            if !s.starts_with(PREFIX) {
                return Ok((name.clone(), s.to_owned()));
            }
            let keys = keys.ok_or_else(|| format!("header {name:?} is sealed and no payload key is configured"))?;
            keys.open(s, &aad(job_id, name))
                .map(|plain| (name.clone(), plain))
                .map_err(|e| format!("header {name:?}: {e}"))
        })
        .collect()
}

/// Replaces every header value of a payload with [`REDACTED`] (what the API shows).
pub fn redact_headers(payload: &mut Value) {
    if let Some(Value::Object(h)) = payload.get_mut("headers") {
        for v in h.values_mut() {
            *v = Value::String(REDACTED.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";

    fn counter() -> impl FnMut() -> Result<[u8; 12], String> {
        let mut n = 0u8;
        move || {
            n += 1;
            Ok([n; 12])
        }
    }

    /// A failed random source seals nothing and says so: a nonce is never made up.
    #[test]
    fn a_failed_random_source_seals_nothing() {
        let keys = Keys::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap_or_else(|e| panic!("{e}"));
        let mut p = serde_json::json!({ "headers": { "authorization": "Bearer x", "x-other": "y" } });
        let before = p.clone();
        let err = seal_headers(&mut p, "j1", &keys, &mut || Err("no randomness".to_owned())).expect_err("refused");
        assert_eq!((err.as_str(), &p), ("no randomness", &before));
    }

    #[test]
    fn headers_seal_open_and_redact() {
        let keys = Keys::parse(K1).expect("valid");
        let mut p = json!({ "url": "https://x", "headers": { "Authorization": "Bearer s3cret", "X-A": "1" } });
        seal_headers(&mut p, "j1", &keys, &mut counter()).unwrap_or_else(|e| panic!("{e}"));
        let sealed = p["headers"]["Authorization"].as_str().expect("string");
        assert!(sealed.starts_with("ejenc:v1:k1:") && !sealed.contains("s3cret"), "{sealed}");
        let opened = open_headers(&p, "j1", Some(&keys)).expect("opens");
        assert!(opened.contains(&("Authorization".to_owned(), "Bearer s3cret".to_owned())));
        // Bound to the job and the header: moved elsewhere, it does not open.
        assert!(open_headers(&p, "j2", Some(&keys)).is_err());
        let mut moved = p.clone();
        moved["headers"]["X-A"] = p["headers"]["Authorization"].clone();
        assert!(open_headers(&moved, "j1", Some(&keys)).is_err());
        assert!(open_headers(&p, "j1", None).expect_err("no key").contains("no payload key"));
        // Sealing twice changes nothing; redaction hides every value.
        let again = {
            let mut q = p.clone();
            seal_headers(&mut q, "j1", &keys, &mut counter()).unwrap_or_else(|e| panic!("{e}"));
            q
        };
        assert_eq!(again, p);
        redact_headers(&mut p);
        assert_eq!(p["headers"], json!({ "Authorization": REDACTED, "X-A": REDACTED }));
    }

    /// Re-sealing moves every value to the newest key, opens to the same text, is a no-op
    /// the second time, and leaves a payload it cannot open as it was.
    #[test]
    fn reseal_moves_values_to_the_newest_key() {
        let old = Keys::parse(K1).expect("valid");
        let mut p = json!({ "headers": { "Authorization": "Bearer s3cret", "X-A": "1" } });
        seal_headers(&mut p, "j1", &old, &mut counter()).unwrap_or_else(|e| panic!("{e}"));
        let rotated = Keys::parse(&format!("{K2},{K1}")).expect("valid");
        assert_eq!(rotated.newest_id(), "k2");
        assert_eq!(reseal_headers(&mut p, "j1", &rotated, &mut counter()), Ok(2));
        assert!(p["headers"]["Authorization"].as_str().is_some_and(|s| s.starts_with("ejenc:v1:k2:")), "{p}");
        let only_new = Keys::parse(K2).expect("valid");
        let opened = open_headers(&p, "j1", Some(&only_new)).expect("opens with the new key alone");
        assert!(opened.contains(&("Authorization".to_owned(), "Bearer s3cret".to_owned())));
        let before = p.clone();
        assert_eq!(reseal_headers(&mut p, "j1", &rotated, &mut counter()), Ok(0), "idempotent");
        assert_eq!(p, before);
        // Sealed under k1 and opened with k2 alone: refused, nothing changed.
        let mut q = json!({ "headers": { "Authorization": "x" } });
        seal_headers(&mut q, "j2", &old, &mut counter()).unwrap_or_else(|e| panic!("{e}"));
        let before = q.clone();
        assert!(reseal_headers(&mut q, "j2", &only_new, &mut counter()).is_err());
        assert_eq!(q, before);
        assert_eq!(reseal_headers(&mut json!({ "url": "x" }), "j3", &rotated, &mut counter()), Ok(0));
    }

    #[test]
    fn keys_rotate_and_tampering_is_caught() {
        let old = Keys::parse(K1).expect("valid");
        let sealed = old.seal("v", "aad", [7; 12]);
        let rotated = Keys::parse(&format!("{K2},{K1}")).expect("valid");
        assert_eq!(rotated.open(&sealed, "aad"), Ok("v".to_owned()), "old values still open");
        assert!(rotated.seal("v", "aad", [7; 12]).starts_with("ejenc:v1:k2:"), "new values use the first key");
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(old.open(&String::from_utf8(bytes).expect("ascii"), "aad").is_err());
        for bad in [
            "",
            "k1",
            "k1:not-base64!",
            "k1:AAEC",
            "bad id:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            &format!("{K1},{K1}"),
        ] {
            let e = Keys::parse(bad).expect_err(bad);
            assert!(!e.contains("AAEC"), "errors never echo key material: {e}");
        }
        assert!(!format!("{old:?}").contains("AAEC"));
    }
}
