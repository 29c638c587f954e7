//! The native side of the cron differential test (`scripts/cron-diff`,
//! `tests/python/cron_diff.py`): reads lines `expr<TAB>zone<TAB>start_rfc3339` on stdin and
//! prints, for each, `ok` and our next 5 run times after the start (fewer when the 10-year
//! horizon ends them), or `err` and our parse error, tab-separated, one line per input line.
//!
//! Each run is asked for from the previous one, as a schedule's alarm does
//! (`Cron::next_after`). It is an example of `edgejobs-core`, not part of the library, so the
//! crate stays free of I/O; it builds in seconds with nothing but the core.

use std::io::{BufRead, BufWriter, Write};

use edgejobs_core::cron::{Cron, time_zone};
use jiff::Timestamp;

const RUNS: usize = 5;

fn answer(line: &str) -> String {
    let mut parts = line.splitn(3, '\t');
    let (Some(expr), Some(zone), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return "bad\texpected expr<TAB>zone<TAB>start".to_owned();
    };
    let cron = match Cron::parse(expr) {
        Ok(c) => c,
        Err(e) => return format!("err\t{e}"),
    };
    let tz = match time_zone(zone) {
        Ok(tz) => tz,
        Err(e) => return format!("bad\t{e}"),
    };
    let Ok(start) = start.trim().parse::<Timestamp>() else {
        return format!("bad\tstart {start:?} is not RFC 3339");
    };
    let mut out = String::from("ok");
    let mut after = start.as_millisecond();
    for _ in 0..RUNS {
        let Some(next) = cron.next_after(&tz, after) else { break };
        match Timestamp::from_millisecond(next) {
            Ok(t) => out.push_str(&format!("\t{t}")),
            Err(e) => return format!("bad\t{e}"),
        }
        after = next;
    }
    out
}

fn main() -> std::io::Result<()> {
    let stdin = std::io::stdin().lock();
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    for line in stdin.lines() {
        writeln!(stdout, "{}", answer(&line?))?;
    }
    stdout.flush()
}
