//! Timestamps: milliseconds since the Unix epoch internally, RFC 3339 (UTC, ms precision) in
//! the API. Parsing is jiff's (a maintained calendar library; a hand-written parser once
//! sliced a string at a byte offset and panicked on multibyte input). Formatting stays the
//! well-known civil-from-days arithmetic below: it is total and on every job's hot path.

/// Formats `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339(ms: u64) -> String {
    let buf = format_rfc3339_bytes(ms);
    // Only ASCII digits and separators were written.
    String::from_utf8_lossy(&buf).into_owned()
}

/// [`format_rfc3339`] into a buffer: the digits are written directly (a job's JSON holds
/// several times, written and read on every state change; `format!` cost more than the rest
/// of a time's encoding).
fn format_rfc3339_bytes(ms: u64) -> [u8; 24] {
    let ms = ms.min(MAX_MS);
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    // Years stay within 1970..=9999 (`MAX_MS`), so four digits hold them.
    put(0, 4, y as u64);
    put(5, 2, m as u64);
    put(8, 2, d as u64);
    put(11, 2, rem / 3600);
    put(14, 2, (rem / 60) % 60);
    put(17, 2, rem % 60);
    put(20, 3, ms % 1000);
    buf
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
    if let Some(ms) = parse_canonical(s) {
        return Some(ms);
    }
    let ts: jiff::Timestamp = s.trim().parse().ok()?;
    Some(ts.as_millisecond())
}

/// The form this system writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`, from 1970 to [`MAX_MS`]) read
/// without jiff's general parser: every stored job's times are read on each state change.
/// Anything else, including a field out of range, is `None` and left to jiff, so what is
/// accepted and what it means do not change (a test compares both on many inputs).
fn parse_canonical(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss, frac) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if y < 1970 || d < 1 || d > month_days || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let ms = ((days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + frac;
    (ms <= MAX_MS as i64).then_some(ms)
}

// Howard Hinnant's days_from_civil, the inverse of `civil_from_days`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

/// The text of a formatted time (ASCII by construction).
fn as_text(buf: &[u8; 24]) -> &str {
    std::str::from_utf8(buf).unwrap_or("1970-01-01T00:00:00.000Z")
}

/// A time's text as read: borrowed from the input when it has no escapes (serde_json's
/// common case), so reading a time allocates nothing.
struct Text<'de>(std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Serde adapter: `u64` ms in Rust, RFC 3339 on the wire.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::as_text(&super::format_rfc3339_bytes(*ms)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = super::Text::deserialize(d)?;
        super::parse_rfc3339(&s.0).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// Serde adapter for `Option<u64>` ms, RFC 3339 or `null` on the wire.
pub mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(super::as_text(&super::format_rfc3339_bytes(*ms))),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<super::Text>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::parse_rfc3339(&s.0)
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

    fn by_jiff(s: &str) -> Option<i64> {
        s.trim().parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
    }

    #[test]
    fn the_canonical_fast_path_agrees_with_jiff_at_the_edges() {
        for s in [
            "1970-01-01T00:00:00.000Z",
            "2000-02-29T23:59:59.999Z",
            "1900-02-29T00:00:00.000Z",
            "2100-02-29T00:00:00.000Z",
            "2024-02-29T12:00:00.000Z",
            "2023-02-29T12:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-12-31T23:59:60.000Z",
            "9999-12-30T22:00:00.999Z",
            "9999-12-30T22:00:01.000Z",
            "9999-12-31T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00.000Z",
            "2026-00-10T00:00:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-11-23t04:00:00.123Z",
            "2026-11-23T04:00:00.123z",
            "+026-11-23T04:00:00.123Z",
        ] {
            if let Some(ms) = parse_canonical(s) {
                assert_eq!(Some(ms), by_jiff(s), "{s}");
            }
            let want = by_jiff(s).and_then(|ms| u64::try_from(ms).ok());
            assert_eq!(parse_rfc3339(s), want, "{s}");
        }
    }

    proptest::proptest! {
        /// The fast path reads what jiff reads: every formatted instant (clamped ones too), and
        /// canonical-looking text with any digits in any field.
        #[test]
        fn the_canonical_fast_path_agrees_with_jiff(
            ms in 0u64..=260_000_000_000_000,
            digits in proptest::collection::vec(0u8..10, 17),
        ) {
            let text = format_rfc3339(ms);
            proptest::prop_assert_eq!(parse_canonical(&text), by_jiff(&text));
            if let Ok(t) = jiff::Timestamp::from_millisecond(ms as i64) {
                proptest::prop_assert_eq!(text.clone(), t.strftime("%Y-%m-%dT%H:%M:%S.%3fZ").to_string());
            }
            let mut b = text.into_bytes();
            for (at, d) in [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22].into_iter().zip(digits) {
                b[at] = b'0' + d;
            }
            let s = String::from_utf8(b).expect("ascii");
            if let Some(fast) = parse_canonical(&s) {
                proptest::prop_assert_eq!(Some(fast), by_jiff(&s), "{}", s);
            }
            proptest::prop_assert_eq!(parse_ms(&s), by_jiff(&s), "{}", s);
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
