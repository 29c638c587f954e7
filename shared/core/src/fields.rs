//! The field values a job spec and a type declaration share: durations, backoff, and the
//! bounds on attempts, timeouts and tags. It sits below [`crate::job`], [`crate::spec`] and
//! [`crate::types`], which all use it, so none of them imports another for a constant.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::retry::Backoff;

pub const MAX_TAGS: usize = 20;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 64;
/// What a tag may be: 1 to [`MAX_TAG_BYTES`] bytes without commas (the tags column joins
/// them with commas).
pub const TAG_RULE: &str = "a tag is a string of 1 to 64 bytes without commas";

/// Whether `s` may be a tag (see [`TAG_RULE`]).
pub fn is_tag(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_TAG_BYTES && !s.contains(',')
}
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Edge-lane attempts run inside a queue consumer invocation, which Cloudflare limits to
/// 15 minutes of wall time.
pub const MAX_EDGE_TIMEOUT_MS: u64 = 15 * 60_000;
pub const MAX_NATIVE_TIMEOUT_MS: u64 = 24 * 3_600_000;

/// Longest duration text accepted; anything longer is refused before it reaches the parser.
const MAX_DURATION_LEN: usize = 64;

/// The units a duration string may use: humantime's, but `µs` (so the text is ASCII and its
/// length in bytes is its length in characters, as the description's `maxLength` counts).
const DURATION_UNITS: &[&str] = &[
    "nanos", "nsec", "ns", "usec", "us", "millis", "msec", "ms", "seconds", "second", "secs", "sec", "s", "minutes",
    "minute", "mins", "min", "m", "hours", "hour", "hrs", "hr", "h", "days", "day", "d", "weeks", "week", "wks", "wk",
    "w", "months", "month", "M", "years", "year", "yrs", "yr", "y",
];

/// The syntax of a duration string, the `pattern` the OpenAPI description gives for it:
/// spaces, then one or more spans of a number (digits, optionally a fraction such as
/// `1.5`) and a unit, with spaces allowed around each, and nothing else. humantime alone is
/// laxer (spaces inside a number, tabs, newlines, `µs`); its extra forms are refused so
/// that what the description forbids is refused.
fn duration_syntax_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let skip_spaces = |i: &mut usize| {
        while b.get(*i) == Some(&b' ') {
            *i += 1;
        }
    };
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let mut spans = 0;
    loop {
        skip_spaces(&mut i);
        if i == b.len() {
            return spans > 0;
        }
        if !digits(&mut i) {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return false;
            }
        }
        skip_spaces(&mut i);
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
        }
        if !DURATION_UNITS.contains(&&s[start..i]) {
            return false;
        }
        spans += 1;
    }
}

/// Parses a duration: a non-negative integer of milliseconds, or a string such as
/// `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`, `"1.5h"` or `"1h 30m"` (the syntax of
/// [`duration_syntax_ok`], read by humantime). `None` for anything else, including durations
/// that do not fit in u64 milliseconds. Total: no input panics.
pub fn parse_duration(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if s.len() <= MAX_DURATION_LEN && duration_syntax_ok(s) => {
            let d = humantime::parse_duration(s.trim()).ok()?;
            u64::try_from(d.as_millis()).ok()
        }
        _ => None,
    }
}

pub(crate) fn duration_field(
    obj: &Map<String, Value>,
    name: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match parse_duration(v) {
            Some(ms) if (min..=max).contains(&ms) => Ok(Some(ms)),
            Some(_) => Err(ApiError::field(name, format!("must be between {min} ms and {max} ms"))),
            None => {
                Err(ApiError::field(name, "must be milliseconds (integer) or a duration like \"30s\", \"5m\", \"2h\""))
            }
        },
    }
}

pub(crate) fn parse_backoff(v: Option<&Value>, default: Backoff) -> Result<Backoff, ApiError> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::field("backoff", "must be an object with base, factor and cap"));
        }
    };
    if let Some(k) = obj.keys().find(|k| !["base", "factor", "cap"].contains(&k.as_str())) {
        return Err(ApiError::field(&format!("backoff.{k}"), "unknown field"));
    }
    let base_ms =
        duration_field(obj, "base", 0, 86_400_000).map_err(|e| prefix("backoff", e))?.unwrap_or(default.base_ms);
    let cap_ms =
        duration_field(obj, "cap", 0, 7 * 86_400_000).map_err(|e| prefix("backoff", e))?.unwrap_or(default.cap_ms);
    let factor = match obj.get("factor") {
        None | Some(Value::Null) => default.factor,
        Some(v) => match v.as_f64() {
            Some(f) if (1.0..=10.0).contains(&f) => f,
            _ => {
                return Err(ApiError::field("backoff.factor", "must be a number from 1 to 10"));
            }
        },
    };
    if cap_ms < base_ms {
        return Err(ApiError::field("backoff.cap", "must not be smaller than backoff.base"));
    }
    Ok(Backoff { base_ms, factor, cap_ms })
}

fn prefix(parent: &str, e: ApiError) -> ApiError {
    match e.field {
        Some(f) => ApiError::field(
            &format!("{parent}.{f}"),
            e.message.split_once(": ").map_or(e.message.as_str(), |(_, m)| m).to_owned(),
        ),
        None => e,
    }
}
