//! Cron expressions and their run times in a time zone: the parser (five fields, or six with
//! seconds first; ranges, steps, lists, month and weekday names, `L`, `?`, and the `@`
//! aliases) and the next-run computation with our daylight-saving rules:
//!
//! - a local time that does not exist (the spring-forward gap) runs once, at the first
//!   instant after the gap (every tick that falls in the gap folds into that one run);
//! - a local time that occurs twice (the fall-back fold) runs once, at its first occurrence.
//!
//! Day of month and day of week combine as in Vixie cron and cronie: a field whose text starts
//! with `*` or `?` is unrestricted, even with a step (`*/2`); when both are restricted a day
//! matches when either does, otherwise both must (so `0 9 */2 * MON` runs on Mondays that fall
//! on odd days of the month, and `0 9 */10 * *` on the 1st, 11th, 21st and 31st).
//!
//! Time zones and calendar arithmetic are jiff's, with its bundled IANA database (the same
//! rules on wasm32 and native, independent of the host). The parser is ours: its errors
//! name the field and the position, and the rules above are exactly what we document.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// The longest expression accepted.
pub const MAX_LEN: usize = 256;
/// How far ahead the next run is searched; an expression with no run in this span (such as
/// `0 0 30 2 *`) never runs.
pub const HORIZON_YEARS: i16 = 10;

/// A cron problem: the field, the 1-based character position in the expression, and what
/// is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub field: &'static str,
    pub position: usize,
    pub message: String,
}

impl std::fmt::Display for CronError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} field at position {}: {}", self.field, self.position, self.message)
    }
}

/// One field's spec: its name, range and symbolic names.
struct FieldSpec {
    name: &'static str,
    min: u8,
    max: u8,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, names: &[] };
const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[] };
const DOM: FieldSpec = FieldSpec { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
};
/// 0 and 7 are both Sunday.
const DOW: FieldSpec =
    FieldSpec { name: "day of week", min: 0, max: 7, names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] };

/// A parsed expression. Each set is a bit mask of the values allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    /// `L` in the day of month: the month's last day.
    last_day: bool,
    months: u16,
    weekdays: u8,
    /// `5L` in the day of week: the month's last Friday (bit per weekday).
    last_weekdays: u8,
    /// Whether the day-of-month text starts with neither `*` nor `?` (Vixie's `DOM_STAR`,
    /// inverted): it decides between OR and AND, never which days match.
    day_restricted: bool,
    /// The same for the day of week.
    weekday_restricted: bool,
    has_seconds: bool,
}

fn alias(s: &str) -> Option<&'static str> {
    Some(match s.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// A field's text and where it starts in the expression (0-based).
fn fields(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(b)) => {
                out.push((b, &s[b..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(b) = start {
        out.push((b, &s[b..]));
    }
    out
}

impl Cron {
    /// Parses an expression.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let err = |field, position, message: String| Err(CronError { field, position, message });
        if expr.len() > MAX_LEN {
            return err("expression", 1, format!("longer than {MAX_LEN} characters"));
        }
        if !expr.is_ascii() {
            let at = expr.chars().position(|c| !c.is_ascii()).unwrap_or(0) + 1;
            return err("expression", at, "only ASCII characters are allowed".into());
        }
        let trimmed = expr.trim();
        if trimmed.starts_with('@') {
            return match alias(trimmed) {
                Some(e) => Cron::parse(e),
                None => err(
                    "expression",
                    expr.find('@').unwrap_or(0) + 1,
                    format!(
                        "unknown alias {trimmed:?}; known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
                    ),
                ),
            };
        }
        let parts = fields(expr);
        let specs: &[&FieldSpec] = match parts.len() {
            5 => &[&MINUTE, &HOUR, &DOM, &MONTH, &DOW],
            6 => &[&SECOND, &MINUTE, &HOUR, &DOM, &MONTH, &DOW],
            n => {
                return err(
                    "expression",
                    1,
                    format!(
                        "has {n} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (with seconds first)"
                    ),
                );
            }
        };
        let has_seconds = parts.len() == 6;
        let mut masks = Vec::with_capacity(6);
        let mut last_day = false;
        let mut last_weekdays = 0u8;
        for (spec, (at, text)) in specs.iter().zip(&parts) {
            let parsed = parse_field(spec, text, *at)?;
            last_day |= parsed.last;
            last_weekdays |= parsed.last_weekdays;
            masks.push((parsed.mask, text.starts_with('*') || text.starts_with('?')));
        }
        let mut it = masks.into_iter();
        let mut next = || it.next().unwrap_or((u64::MAX, true));
        let seconds = if has_seconds { next().0 } else { 1 };
        let minutes = next().0;
        let hours = next().0 as u32;
        let (days, day_star) = next();
        let months = next().0 as u16;
        let (weekdays, weekday_star) = next();
        // 7 is Sunday too.
        let weekdays = ((weekdays & 0x7f) | ((weekdays >> 7) & 1)) as u8;
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days: days as u32,
            last_day,
            months,
            weekdays,
            last_weekdays,
            day_restricted: !day_star,
            weekday_restricted: !weekday_star,
            has_seconds,
        })
    }

    /// Whether the expression has a seconds field.
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let last = d.days_in_month();
        let by_day = self.days & (1 << d.day()) != 0 || (self.last_day && d.day() == last);
        let wd = d.weekday().to_sunday_zero_offset() as u8;
        let by_weekday = self.weekdays & (1 << wd) != 0 || (self.last_weekdays & (1 << wd) != 0 && d.day() + 7 > last);
        // Vixie cron: OR when both fields are restricted, AND otherwise. An unrestricted
        // field still has its own days: `*` matches every day, but `*/10` only the 1st, 11th,
        // 21st and 31st, so it cannot be skipped.
        if self.day_restricted && self.weekday_restricted { by_day || by_weekday } else { by_day && by_weekday }
    }

    /// The first time of day at or after `from` that matches, if any.
    fn time_in_day(&self, from: Time) -> Option<Time> {
        let first = |mask: u64, from: u8, max: u8| (from..=max).find(|v| mask & (1 << v) != 0);
        for h in from.hour() as u8..24 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let m0 = if h == from.hour() as u8 { from.minute() as u8 } else { 0 };
            for m in m0..60 {
                if self.minutes & (1 << m) == 0 {
                    continue;
                }
                let s0 = if h == from.hour() as u8 && m == from.minute() as u8 { from.second() as u8 } else { 0 };
                if let Some(s) = first(self.seconds, s0, 59) {
                    return Time::new(h as i8, m as i8, s as i8, 0).ok();
                }
            }
        }
        None
    }

    /// The first local date-time at or after `from` (whole seconds) that matches, within
    /// [`HORIZON_YEARS`].
    pub fn next_local(&self, from: DateTime) -> Option<DateTime> {
        let end = from.date().year().saturating_add(HORIZON_YEARS);
        let mut day = from.date();
        let mut start = Some(from.time());
        while day.year() <= end {
            if self.months & (1 << day.month()) == 0 {
                // Jump to the first day of the next month.
                day = day.first_of_month().checked_add(1.month()).ok()?;
                start = None;
                continue;
            }
            if self.day_matches(day)
                && let Some(t) = self.time_in_day(start.unwrap_or(Time::midnight()))
            {
                return Some(day.to_datetime(t));
            }
            day = day.tomorrow().ok()?;
            start = None;
        }
        None
    }

    /// The first run strictly after `after_ms` (Unix ms) in `tz`, as Unix ms (a whole
    /// second), following the daylight-saving rules of this module.
    pub fn next_after(&self, tz: &TimeZone, after_ms: i64) -> Option<i64> {
        let after = Timestamp::from_millisecond(after_ms).ok()?;
        let mut from = after.to_zoned(tz.clone()).datetime().with().subsec_nanosecond(0).build().ok()?;
        // Each turn either returns or moves `from` forward past a gap or fold; a few turns
        // at most, bounded anyway.
        for _ in 0..64 {
            let local = self.next_local(from)?;
            let (at, shared) = instant(tz, local)?;
            if at > after {
                return Some(at.as_millisecond());
            }
            from = match shared {
                // Past the transition: every local time up to `end` runs at or before it.
                Some((transition, end)) if after >= transition && end > local => end,
                _ => local.checked_add(1.second()).ok()?,
            };
        }
        None
    }
}

/// The instant a local time runs at; for a local time in a gap or a fold, also the
/// transition and the first local time after the gap or fold.
fn instant(tz: &TimeZone, local: DateTime) -> Option<(Timestamp, Option<(Timestamp, DateTime)>)> {
    match tz.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => Some((offset.to_timestamp(local).ok()?, None)),
        AmbiguousOffset::Gap { after, .. } => {
            // The first instant after the gap is the transition itself: read with the
            // offset after it, `local` lies before the transition, so the next transition
            // from there is the one that made the gap.
            let transition = tz.following(after.to_timestamp(local).ok()?).next()?.timestamp();
            let end = after.to_datetime(transition);
            Some((transition, Some((transition, end))))
        }
        AmbiguousOffset::Fold { before, .. } => {
            // The first occurrence uses the offset before the transition; the fold's local
            // times end where the transition is read with that same offset.
            let first = before.to_timestamp(local).ok()?;
            let transition = tz.following(first).next()?.timestamp();
            Some((first, Some((transition, before.to_datetime(transition)))))
        }
    }
}

/// Looks up an IANA time zone name in the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"".into());
    }
    jiff::tz::db()
        .get(name)
        .map_err(|_| format!("{name:?} is not an IANA time zone name (such as \"Europe/Berlin\" or \"UTC\")"))
}

struct Field {
    mask: u64,
    last: bool,
    last_weekdays: u8,
}

fn parse_field(spec: &FieldSpec, text: &str, at: usize) -> Result<Field, CronError> {
    let mut out = Field { mask: 0, last: false, last_weekdays: 0 };
    let mut offset = 0;
    for item in text.split(',') {
        let pos = at + offset + 1;
        offset += item.len() + 1;
        let fail = |message: String| Err(CronError { field: spec.name, position: pos, message });
        if item.is_empty() {
            return fail("empty list item".into());
        }
        let upper = item.to_ascii_uppercase();
        if spec.name == DOM.name && upper == "L" {
            out.last = true;
            continue;
        }
        if spec.name == DOW.name && upper.len() > 1 && upper.ends_with('L') {
            let v = value(spec, &upper[..upper.len() - 1]).map_err(|m| CronError {
                field: spec.name,
                position: pos,
                message: m,
            })?;
            out.last_weekdays |= 1 << (v % 7);
            continue;
        }
        let (range, step) = match upper.split_once('/') {
            Some((r, s)) => match number(s) {
                Some(n) if n >= 1 && n <= spec.max => (r, Some(n)),
                _ => return fail(format!("step {s:?} must be a number from 1 to {}", spec.max)),
            },
            None => (upper.as_str(), None),
        };
        let bad = |m: String| CronError { field: spec.name, position: pos, message: m };
        let (lo, hi) = if range == "*" || range == "?" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(spec, a).map_err(bad)?, value(spec, b).map_err(bad)?);
            if a > b {
                return fail(format!("range {a}-{b} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(spec, range).map_err(bad)?;
            // `5/15`: from 5 to the end in steps of 15.
            (a, if step.is_some() { spec.max } else { a })
        };
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            out.mask |= 1 << v;
        }
    }
    Ok(out)
}

/// Digits only: `str::parse` would also take a sign (`+5`), which no cron accepts.
fn number(s: &str) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn value(spec: &FieldSpec, s: &str) -> Result<u8, String> {
    if let Some(i) = spec.names.iter().position(|n| *n == s) {
        return Ok(i as u8 + if spec.min == 1 { 1 } else { 0 });
    }
    match number(s) {
        Some(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
        _ if s.is_empty() => Err("a value is missing".into()),
        _ => {
            let names = if spec.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({}..{})", spec.names[0], spec.names[spec.names.len() - 1])
            };
            Err(format!("{s:?} is not a value from {} to {}{names}", spec.min, spec.max))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().map(|t| t.as_millisecond()).unwrap_or(i64::MIN)
    }

    fn iso(ms: i64) -> String {
        Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
    }

    /// The runs of `expr` in `tz` after `after`, as UTC instants.
    fn runs(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let tz = time_zone(tz).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        let mut t = ms(after);
        while out.len() < n {
            match cron.next_after(&tz, t) {
                Some(next) => {
                    out.push(iso(next));
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn utc_basics_and_aliases() {
        assert_eq!(
            runs("*/15 * * * *", "UTC", "2026-03-01T10:07:00Z", 3),
            ["2026-03-01T10:15:00Z", "2026-03-01T10:30:00Z", "2026-03-01T10:45:00Z"]
        );
        assert_eq!(runs("@hourly", "UTC", "2026-03-01T10:00:00Z", 1), ["2026-03-01T11:00:00Z"]);
        assert_eq!(runs("@daily", "UTC", "2026-03-01T10:00:00Z", 1), ["2026-03-02T00:00:00Z"]);
        // 2026-03-01 is a Sunday: @weekly is the next Sunday.
        assert_eq!(runs("@weekly", "UTC", "2026-03-01T00:00:00Z", 1), ["2026-03-08T00:00:00Z"]);
        assert_eq!(runs("@monthly", "UTC", "2026-03-01T00:00:00Z", 1), ["2026-04-01T00:00:00Z"]);
        assert_eq!(runs("@yearly", "UTC", "2026-03-01T00:00:00Z", 1), ["2027-01-01T00:00:00Z"]);
        assert_eq!(runs("@annually", "UTC", "2026-03-01T00:00:00Z", 1), ["2027-01-01T00:00:00Z"]);
        // Names, lists and ranges with steps.
        // JAN-MAR/2 is January and March: February's Fridays are left out.
        assert_eq!(
            runs("0 9 * JAN-MAR/2 MON,fri", "UTC", "2026-02-27T00:00:00Z", 3),
            ["2026-03-02T09:00:00Z", "2026-03-06T09:00:00Z", "2026-03-09T09:00:00Z"]
        );
        // Sunday as 7.
        assert_eq!(runs("0 0 * * 7", "UTC", "2026-03-02T00:00:00Z", 1), ["2026-03-08T00:00:00Z"]);
        // `5/20` is 5, 25, 45.
        assert_eq!(
            runs("5/20 0 1 1 *", "UTC", "2026-12-31T00:00:00Z", 3),
            ["2027-01-01T00:05:00Z", "2027-01-01T00:25:00Z", "2027-01-01T00:45:00Z"]
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        assert_eq!(
            runs("*/20 * * * * *", "UTC", "2026-03-01T10:00:05.500Z", 3),
            ["2026-03-01T10:00:20Z", "2026-03-01T10:00:40Z", "2026-03-01T10:01:00Z"]
        );
        assert_eq!(runs("30 15 10 * * *", "UTC", "2026-03-01T10:15:30Z", 1), ["2026-03-02T10:15:30Z"]);
        assert_eq!(
            runs("* * * * * *", "UTC", "2026-03-01T10:00:00.999Z", 2),
            ["2026-03-01T10:00:01Z", "2026-03-01T10:00:02Z"]
        );
        assert!(Cron::parse("* * * * * *").is_ok_and(|c| c.has_seconds()));
        assert!(Cron::parse("* * * * *").is_ok_and(|c| !c.has_seconds()));
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // The 13th, or any Friday (Vixie cron): 2026-03-06 is a Friday, 13 is a Friday too.
        assert_eq!(
            runs("0 0 13 * 5", "UTC", "2026-03-01T00:00:00Z", 3),
            ["2026-03-06T00:00:00Z", "2026-03-13T00:00:00Z", "2026-03-20T00:00:00Z"]
        );
        // With one of them `*`, the other decides alone.
        assert_eq!(runs("0 0 13 * *", "UTC", "2026-03-01T00:00:00Z", 1), ["2026-03-13T00:00:00Z"]);
    }

    /// A step in a day field restricts the days even when the field starts with `*`; what
    /// starts with `*` or `?` only decides AND (either field unrestricted) versus OR (both
    /// restricted), as in Vixie cron, cronie and cronsim (issue 24).
    #[test]
    fn steps_in_day_fields_and_the_vixie_star_rule() {
        let table: &[(&str, &str, &[&str])] = &[
            // Days 1, 11, 21, 31 (was: every day).
            (
                "0 9 */10 * *",
                "2026-01-01T10:00:00Z",
                &["2026-01-11T09:00:00Z", "2026-01-21T09:00:00Z", "2026-01-31T09:00:00Z", "2026-02-01T09:00:00Z"],
            ),
            ("0 9 1-31/10 * *", "2026-01-01T10:00:00Z", &["2026-01-11T09:00:00Z", "2026-01-21T09:00:00Z"]),
            ("0 9 ?/10 * *", "2026-01-01T10:00:00Z", &["2026-01-11T09:00:00Z", "2026-01-21T09:00:00Z"]),
            // Sunday, Wednesday, Saturday (was: every day). 2026-03-01 is a Sunday.
            (
                "0 9 * * */3",
                "2026-03-01T10:00:00Z",
                &["2026-03-04T09:00:00Z", "2026-03-07T09:00:00Z", "2026-03-08T09:00:00Z"],
            ),
            ("0 9 * * 0-6/3", "2026-03-01T10:00:00Z", &["2026-03-04T09:00:00Z", "2026-03-07T09:00:00Z"]),
            ("0 9 ? * */3", "2026-03-01T10:00:00Z", &["2026-03-04T09:00:00Z", "2026-03-07T09:00:00Z"]),
            // `*/2` is unrestricted for the OR rule: Mondays on odd days (AND). 2026-03-02 and
            // 2026-03-16 are even Mondays, the 9th and 23rd odd ones.
            (
                "0 9 */2 * 1",
                "2026-03-01T00:00:00Z",
                &["2026-03-09T09:00:00Z", "2026-03-23T09:00:00Z", "2026-04-13T09:00:00Z"],
            ),
            // The 1st when it is a Sunday, Tuesday, Thursday or Saturday.
            ("0 9 1 * */2", "2026-03-01T00:00:00Z", &["2026-03-01T09:00:00Z", "2026-08-01T09:00:00Z"]),
            // Both restricted (`1-31/2` does not start with `*`): odd days OR Mondays.
            (
                "0 9 1-31/2 * 1",
                "2026-03-01T10:00:00Z",
                &["2026-03-02T09:00:00Z", "2026-03-03T09:00:00Z", "2026-03-05T09:00:00Z"],
            ),
            // Both unrestricted with steps: both must match.
            // The 1st, 16th or 31st when it is a Sunday or Saturday.
            ("0 9 */15 * */6", "2026-03-01T00:00:00Z", &["2026-03-01T09:00:00Z", "2026-05-16T09:00:00Z"]),
        ];
        for (expr, after, want) in table {
            assert_eq!(runs(expr, "UTC", after, want.len()), *want, "{expr}");
        }
    }

    #[test]
    fn last_day_of_month_and_last_weekday() {
        assert_eq!(
            runs("0 23 L * *", "UTC", "2026-01-15T00:00:00Z", 4),
            ["2026-01-31T23:00:00Z", "2026-02-28T23:00:00Z", "2026-03-31T23:00:00Z", "2026-04-30T23:00:00Z"]
        );
        // 2028 is a leap year.
        assert_eq!(
            runs("0 0 L 2 *", "UTC", "2028-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"]
        );
        // The last Friday of each month.
        assert_eq!(
            runs("0 12 * * 5L", "UTC", "2026-01-01T00:00:00Z", 3),
            ["2026-01-30T12:00:00Z", "2026-02-27T12:00:00Z", "2026-03-27T12:00:00Z"]
        );
        assert_eq!(runs("0 12 * * FRIL", "UTC", "2026-01-01T00:00:00Z", 1), ["2026-01-30T12:00:00Z"]);
    }

    #[test]
    fn leap_days() {
        assert_eq!(
            runs("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z", 3),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"]
        );
        // 2100 is not a leap year.
        assert_eq!(runs("0 0 29 2 *", "UTC", "2097-01-01T00:00:00Z", 1), ["2104-02-29T00:00:00Z"]);
        // The 30th of February never comes.
        assert_eq!(runs("0 0 30 2 *", "UTC", "2026-01-01T00:00:00Z", 1), Vec::<String>::new());
    }

    #[test]
    fn berlin_spring_forward_runs_once_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z). 02:30 does not exist.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00Z", 3),
            ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        // Every 15 minutes: 02:00..02:45 fold into one run at 03:00 CEST, then 03:15.
        assert_eq!(
            runs("*/15 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", 4),
            ["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z", "2026-03-29T01:30:00Z"]
        );
    }

    #[test]
    fn berlin_fall_back_runs_once_at_the_first_occurrence() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET (01:00Z); 02:30 happens twice.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Hourly at :30 goes 01:30 CEST, 02:30 CEST, then 03:30 CET: the second 02:30 is left out.
        assert_eq!(
            runs("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 3),
            ["2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T02:30:00Z"]
        );
        // Asked from inside the second 02:xx hour, the next run is 03:00 CET.
        assert_eq!(runs("0,30 * * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1), ["2026-10-25T02:00:00Z"]);
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00Z).
        assert_eq!(
            runs("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"]
        );
        // 2026-11-01: 02:00 EDT goes back to 01:00 EST (06:00Z); 01:30 happens twice.
        assert_eq!(
            runs("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        // Every second across the fall-back: 01:59:59 EDT, then 02:00:00 EST (an hour later).
        assert_eq!(
            runs("* * * * * *", "America/New_York", "2026-11-01T05:59:58Z", 2),
            ["2026-11-01T05:59:59Z", "2026-11-01T07:00:00Z"]
        );
        // Every second across the spring-forward: 01:59:59 EST, then 03:00:00 EDT.
        assert_eq!(
            runs("* * * * * *", "America/New_York", "2026-03-08T06:59:58Z", 2),
            ["2026-03-08T06:59:59Z", "2026-03-08T07:00:00Z"]
        );
    }

    #[test]
    fn errors_name_the_field_and_position() {
        let table: &[(&str, &str, usize)] = &[
            ("61 * * * *", "minute", 1),
            ("* 24 * * *", "hour", 3),
            ("* * 0 * *", "day of month", 5),
            ("* * * 13 *", "month", 7),
            ("* * * * 8", "day of week", 9),
            ("* * * FOO *", "month", 7),
            ("*/0 * * * *", "minute", 1),
            ("5-1 * * * *", "minute", 1),
            ("1,,2 * * * *", "minute", 3),
            ("* * * *", "expression", 1),
            ("* * * * * * *", "expression", 1),
            ("@sometimes", "expression", 1),
            ("60 * * * * *", "second", 1),
            ("0 0 1,L,40 * *", "day of month", 9),
            ("0 0 * * 9L", "day of week", 9),
            ("0 0 * * Lx", "day of week", 9),
            ("é * * * *", "expression", 1),
            // A sign is not a digit (Rust's integer parsing took `+5`; found by cron-diff).
            ("+5 * * * *", "minute", 1),
            ("*/+5 * * * *", "minute", 1),
            ("0 1,+2 * * *", "hour", 5),
            ("0 0 * * +1L", "day of week", 9),
        ];
        for (expr, field, position) in table {
            match Cron::parse(expr) {
                Err(e) => {
                    assert_eq!((e.field, e.position), (*field, *position), "{expr}: {e}");
                    assert!(e.to_string().contains(field), "{e}");
                }
                Ok(c) => panic!("{expr} parsed: {c:?}"),
            }
        }
    }

    #[test]
    fn time_zone_names() {
        assert!(time_zone("Europe/Berlin").is_ok());
        assert!(time_zone("UTC").is_ok());
        assert!(time_zone("Asia/Kolkata").is_ok());
        assert!(time_zone("Mars/Olympus").is_err_and(|e| e.contains("Mars/Olympus")));
        assert!(time_zone("").is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn field(max: u8, min: u8) -> impl Strategy<Value = String> {
            prop_oneof![
                Just("*".to_owned()),
                (min..=max).prop_map(|v| v.to_string()),
                (1..=max.max(1)).prop_map(|s| format!("*/{s}")),
                (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
            ]
        }

        fn expr() -> impl Strategy<Value = String> {
            (field(59, 0), field(59, 0), field(23, 0), field(31, 1), field(12, 1), field(6, 0))
                .prop_map(|(s, mi, h, d, mo, w)| format!("{s} {mi} {h} {d} {mo} {w}"))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// The next run is after the time asked from, no run lies between (asking from
            /// just before it gives it again), and in UTC its fields match the expression.
            #[test]
            fn next_runs_are_consistent(e in expr(), zone in 0usize..4, after in 0i64..4_102_444_800_000) {
                let zones = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"];
                let cron = Cron::parse(&e).map_err(|x| TestCaseError::fail(x.to_string()))?;
                let tz = time_zone(zones[zone]).map_err(TestCaseError::fail)?;
                if let Some(next) = cron.next_after(&tz, after) {
                    prop_assert!(next > after);
                    prop_assert_eq!(next % 1000, 0);
                    prop_assert_eq!(cron.next_after(&tz, next - 1), Some(next));
                    if zone == 0 {
                        let dt = Timestamp::from_millisecond(next).map_err(|x| TestCaseError::fail(x.to_string()))?
                            .to_zoned(TimeZone::UTC).datetime();
                        prop_assert!(cron.day_matches(dt.date()));
                        prop_assert_eq!(cron.time_in_day(dt.time()), Some(dt.time()));
                    }
                }
            }
        }
    }

    #[test]
    fn kolkata_has_a_half_hour_offset() {
        assert_eq!(runs("0 9 * * *", "Asia/Kolkata", "2026-03-01T00:00:00Z", 1), ["2026-03-01T03:30:00Z"]);
    }
}
