//! Output: aligned tables and JSON on standard output, progress bars and questions on
//! standard error.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use edgejobs_api::JobSummary;
use serde_json::Value;

use crate::client::{Failure, Res};

/// Prints a document as indented JSON.
pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
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
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = width[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
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
    use super::cell;
    use serde_json::json;

    #[test]
    fn cells_are_one_short_line() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!("a\nb")), "a b");
        assert_eq!(cell(&json!(["x"])), "[\"x\"]");
        assert_eq!(cell(&json!("é".repeat(100))).chars().count(), 80);
    }
}
