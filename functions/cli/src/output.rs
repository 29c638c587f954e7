//! Output: aligned tables and JSON on standard output, progress bars and questions on
//! standard error.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use edgejobs_api::{JobSummary, Step};
use serde_json::Value;

use crate::client::{Failure, Res};

/// Prints a document as indented JSON.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints a reply as indented JSON: the API's document as the client read it.
pub fn print_json_of(v: &impl serde::Serialize) {
    print_json(&serde_json::to_value(v).unwrap_or(Value::Null));
}

/// A cell of anything serializable (as [`cell`] shows its JSON).
pub fn cell_of(v: &impl serde::Serialize) -> String {
    cell(&serde_json::to_value(v).unwrap_or(Value::Null))
}

/// A value as one table cell: strings bare, null empty, the rest as JSON, on one line and
/// at most 80 characters.
pub fn cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace(['\n', '\r', '\t'], " ");
    if s.chars().count() > 80 { format!("{}…", s.chars().take(79).collect::<String>()) } else { s }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render_table(header, rows));
}

/// Rows under an upper-case header, each column as wide as its widest cell, a line each.
pub fn render_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width.get(i).copied().unwrap_or(0))).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
    out
}

/// A workflow run's steps as a table (#29), in the order its handler reached them: when
/// each started, when it ended (or `until` the time a sleep ends, a wait times out or a
/// retry runs), and its recorded result's size, its error, or the event it waits for.
pub fn steps_table(steps: &[Step]) -> String {
    let cols = ["seq", "name", "kind", "state", "attempts", "started", "ended/until", "result"];
    let rows = steps
        .iter()
        .enumerate()
        .map(|(seq, s)| {
            let ended = match (&s.ended_at, &s.until) {
                (Some(ended), _) => ended.clone(),
                (None, Some(until)) => format!("until {until}"),
                (None, None) => String::new(),
            };
            let result = match (&s.error, s.result_bytes, &s.event) {
                (Some(e), _, _) => cell(&Value::String(format!("error: {e}"))),
                (None, Some(n), _) => format!("{n} bytes"),
                (None, None, Some(event)) => cell(&Value::String(format!("waits for {event}"))),
                (None, None, None) => String::new(),
            };
            vec![
                seq.to_string(),
                cell(&Value::String(s.name.clone())),
                s.kind.clone(),
                s.state.clone(),
                s.attempts.to_string(),
                s.started_at.clone(),
                ended,
                result,
            ]
        })
        .collect();
    render_table(&cols, rows)
}

/// A listing's jobs as a table.
pub fn print_jobs(jobs: &[JobSummary]) {
    let cols = ["id", "type", "state", "attempt", "created_at", "tags", "last_error"];
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                cell_of(&j.id),
                cell_of(&j.job_type),
                j.state.as_str().to_owned(),
                j.attempt.to_string(),
                cell_of(&j.created_at),
                cell_of(&j.tags),
                cell_of(&j.last_error),
            ]
        })
        .collect();
    table(&cols, rows);
}

/// A progress bar on standard error, drawn only when it is a terminal.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"
    )) {
        bar.set_style(style);
    }
    bar
}

/// Asks `question` on the terminal unless `yes`; no terminal and no `--yes` is a usage error.
pub fn confirm(question: &str, yes: bool) -> Res<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(2, format!("{question} Pass --yes to confirm (no terminal to ask on).")));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::new(3, "not confirmed; nothing changed"))
    }
}

#[cfg(test)]
mod tests {
    use super::{cell, steps_table};
    use edgejobs_api::Step;
    use serde_json::json;

    fn step(name: &str, kind: &str, state: &str) -> Step {
        Step {
            name: name.into(),
            kind: kind.into(),
            state: state.into(),
            attempts: 1,
            started_at: "2026-12-06T10:00:00.000Z".into(),
            ended_at: None,
            until: None,
            result_bytes: None,
            error: None,
            event: None,
            children: Vec::new(),
        }
    }

    /// A run's steps print one row each, in order, with the time each ended or waits until
    /// and its result's size, its error or the event it waits for.
    #[test]
    fn steps_print_as_a_table() {
        let plan = Step {
            ended_at: Some("2026-12-06T10:00:01.000Z".into()),
            result_bytes: Some(42),
            ..step("plan", "run", "completed")
        };
        let call = Step {
            attempts: 2,
            until: Some("2026-12-06T10:05:00.000Z".into()),
            error: Some("upstream 503\nretry later".into()),
            ..step("call", "run", "retrying")
        };
        let approval = Step { event: Some("order.approved".into()), ..step("approval", "wait", "waiting") };
        let text = steps_table(&[plan, call, approval]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let cells: Vec<Vec<&str>> =
            lines.iter().map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()).collect();
        assert_eq!(cells[0], ["SEQ", "NAME", "KIND", "STATE", "ATTEMPTS", "STARTED", "ENDED/UNTIL", "RESULT"]);
        assert_eq!(
            cells[1],
            ["0", "plan", "run", "completed", "1", "2026-12-06T10:00:00.000Z", "2026-12-06T10:00:01.000Z", "42 bytes"]
        );
        assert_eq!(
            cells[2],
            [
                "1",
                "call",
                "run",
                "retrying",
                "2",
                "2026-12-06T10:00:00.000Z",
                "until 2026-12-06T10:05:00.000Z",
                "error: upstream 503 retry later"
            ]
        );
        assert_eq!(
            cells[3],
            ["2", "approval", "wait", "waiting", "1", "2026-12-06T10:00:00.000Z", "waits for order.approved"]
        );
        // Columns line up: every row's result starts where the header's does.
        let at = lines[0].find("RESULT").expect("header");
        assert_eq!(lines[1].find("42 bytes"), Some(at), "{text}");
        assert_eq!(lines[2].find("error:"), Some(at), "{text}");
        assert_eq!(lines[3].find("waits for"), Some(at), "{text}");
    }

    #[test]
    fn cells_are_one_short_line() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!("a\nb")), "a b");
        assert_eq!(cell(&json!(["x"])), "[\"x\"]");
        assert_eq!(cell(&json!("é".repeat(100))).chars().count(), 80);
    }
}
