//! The clock and the random source. Everything else takes `now` and samples as arguments.

/// Milliseconds since the Unix epoch. Inside workerd the clock only advances across I/O,
/// which is fine for job timestamps.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A random u64 from the runtime's CSPRNG.
pub fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // getrandom on wasm32 uses crypto.getRandomValues, which does not fail in workerd; fall
    // back to Math.random rather than panicking if it ever does.
    if getrandom::fill(&mut buf).is_err() {
        return (js_sys::Math::random() * u64::MAX as f64) as u64;
    }
    u64::from_le_bytes(buf)
}

/// A uniform sample in `[0, 1)`.
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random 96-bit nonce (for sealing payload headers), from the runtime's CSPRNG only: a
/// nonce must never repeat under one key, so there is no fallback; the caller refuses.
pub fn random_nonce() -> Result<[u8; 12], String> {
    let mut buf = [0u8; 12];
    getrandom::fill(&mut buf).map_err(|e| format!("the runtime's random source failed: {e}"))?;
    Ok(buf)
}
