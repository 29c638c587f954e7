//! Human output: aligned tables on standard output.

use serde_json::Value;

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
pub fn print_jobs(jobs: &Value) {
    let cols = ["id", "type", "state", "attempt", "created_at", "tags", "last_error"];
    let rows = jobs.as_array().into_iter().flatten().map(|j| cols.iter().map(|k| cell(&j[*k])).collect()).collect();
    table(&cols, rows);
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
