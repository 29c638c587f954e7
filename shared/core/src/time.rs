//! Timestamps: milliseconds since the Unix epoch internally, RFC 3339 (UTC, ms precision) in
//! the API. Parsing is jiff's (a maintained calendar library; a hand-written parser once
//! sliced a string at a byte offset and panicked on multibyte input). Formatting stays the
//! well-known civil-from-days arithmetic below: it is total and on every job's hot path.

/// Formats `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(ms: u64) -> String {
    let ms = ms.min(MAX_MS);
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem / 60) % 60, rem % 60, ms % 1000)
}

/// The last instant [`parse_rfc3339`] accepts (jiff's `Timestamp::MAX`, 9999-12-30T22:00:00.999Z,
/// which leaves room for any offset). [`format_rfc3339`] clamps to it, so every time the
/// system writes can be read back.
pub const MAX_MS: u64 = 253_402_207_200_999;

/// Longest timestamp text accepted (an RFC 3339 timestamp with nanoseconds and an offset is
/// 35 bytes): anything longer is refused before it reaches the parser.
const MAX_TIMESTAMP_LEN: usize = 64;

/// Parses an RFC 3339 timestamp (`Z` or a `±HH:MM` offset, optional fraction) to ms since
/// the epoch. Returns `None` for anything else, and for times before 1970. Total: no input
/// panics.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    u64::try_from(parse_ms(s)?).ok()
}

/// [`parse_rfc3339`] for a filter's bound (`from`, `to`): a time before 1970 is the epoch,
/// since nothing happened before it — "since 1900" means "since the start", not an error.
pub fn parse_rfc3339_bound(s: &str) -> Option<u64> {
    Some(u64::try_from(parse_ms(s)?).unwrap_or(0))
}

/// Signed ms since the epoch of an RFC 3339 timestamp of at most [`MAX_TIMESTAMP_LEN`] bytes.
fn parse_ms(s: &str) -> Option<i64> {
    if s.len() > MAX_TIMESTAMP_LEN {
        return None;
    }
    let ts: jiff::Timestamp = s.trim().parse().ok()?;
    Some(ts.as_millisecond())
}

// Howard Hinnant's civil_from_days.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Serde adapter: `u64` ms in Rust, RFC 3339 on the wire.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// Serde adapter for `Option<u64>` ms, RFC 3339 or `null` on the wire.
pub mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&super::format_rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_formatted_time_parses_back() {
        // Found by fuzzing: 9999-12-31 formatted, but jiff's range ends a day earlier.
        assert_eq!(parse_rfc3339(&format_rfc3339(MAX_MS)), Some(MAX_MS));
        assert_eq!(u64::try_from(jiff::Timestamp::MAX.as_millisecond()), Ok(MAX_MS));
        assert_eq!(format_rfc3339(253_402_264_003_810), format_rfc3339(MAX_MS), "later instants clamp");
        assert_eq!(parse_rfc3339(&format_rfc3339(u64::MAX)), Some(MAX_MS));
    }

    #[test]
    fn formats_and_parses_known_instants() {
        let table = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_406_400_123, "2026-11-23T04:00:00.123Z"),
        ];
        for (ms, text) in table {
            assert_eq!(format_rfc3339(ms), text);
            assert_eq!(parse_rfc3339(text), Some(ms));
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("2026-11-23T05:00:00+01:00"), parse_rfc3339("2026-11-23T04:00:00Z"));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.123456Z"), Some(1123));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T00:00:00",
            "2026-11-23T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-23T24:00:00Z",
            // Multibyte text where ASCII is expected once panicked (a byte-offset slice).
            "2030-01-01T00:00:00+0é00",
            "2030-01-01T00:00:0é+00:00",
            "２０３０-01-01T00:00:00Z",
            "2030-01-01T00:00:00Z\u{0}",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// No string panics the parser, and every instant we format parses back.
        #[test]
        fn parsing_is_total_and_round_trips(s in "\\PC{0,40}", ms in 0u64..4_102_444_800_000) {
            let _ = parse_rfc3339(&s);
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
    }
}
