//! The storage seam: what a shard needs from a SQL database, and nothing more. Statements
//! run synchronously inside one transaction at a time; rows come back as positional
//! values. Two implementations: workerd's SQLite storage (in the edge crate) and
//! [`crate::native::Sqlite`] (rusqlite with bundled SQLite), running the same SQL text.

use std::fmt;

/// A value bound to a statement or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One row, its columns in the order of the `SELECT`.
pub type Row = Vec<Value>;

/// A storage failure. The text is for the log only: callers answer a generic 500.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// A SQL database a shard can run on. Every method is synchronous, so nothing else of
/// the shard runs between a read and the write that follows it.
pub trait Sql {
    /// Runs one statement with `binds`, calling `row` for each row until it returns
    /// `false` (the rest is not read).
    fn scan(&self, sql: &str, binds: &[Value], row: &mut dyn FnMut(Row) -> bool) -> Result<(), StoreError>;

    /// Runs a script of statements without binds (the schema).
    fn script(&self, sql: &str) -> Result<(), StoreError>;

    /// Runs `f` as one transaction: what it writes commits together when it returns `Ok`,
    /// and nothing does when it returns `Err`.
    fn transaction<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E>;

    /// Rows read and written since the last call (what Cloudflare bills; `(0, 0)` where
    /// the database does not count them).
    fn take_row_counts(&self) -> (u64, u64) {
        (0, 0)
    }

    /// Runs one statement and returns every row.
    fn rows(&self, sql: &str, binds: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut out = Vec::new();
        self.scan(sql, binds, &mut |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }
}

/// An integer parameter (saturated at `i64::MAX`).
pub fn int(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

pub fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

impl Value {
    /// The value as a number (workerd hands back whole reals as integers and large
    /// integers as reals, so both read as either).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Real(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::Real(f) if *f >= 0.0 => Some(*f as u64),
            _ => None,
        }
    }

    pub fn into_text(self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Reads the columns of a row by position, failing loudly on a missing or mistyped one.
#[derive(Debug)]
pub struct Cols(std::vec::IntoIter<Value>);

impl Cols {
    pub fn new(row: Row) -> Cols {
        Cols(row.into_iter())
    }

    fn next(&mut self, what: &str) -> Result<Value, StoreError> {
        self.0.next().ok_or_else(|| StoreError(format!("a row lacks its {what} column")))
    }

    pub fn text(&mut self) -> Result<String, StoreError> {
        let v = self.next("text")?;
        match v {
            Value::Text(s) => Ok(s),
            other => Err(StoreError(format!("expected text, read {other:?}"))),
        }
    }

    pub fn f64(&mut self) -> Result<f64, StoreError> {
        let v = self.next("number")?;
        v.as_f64().ok_or_else(|| StoreError(format!("expected a number, read {v:?}")))
    }

    pub fn u64(&mut self) -> Result<u64, StoreError> {
        let v = self.next("integer")?;
        v.as_u64().ok_or_else(|| StoreError(format!("expected an integer, read {v:?}")))
    }

    /// Text or NULL.
    pub fn opt_text(&mut self) -> Result<Option<String>, StoreError> {
        match self.next("text")? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            other => Err(StoreError(format!("expected text, read {other:?}"))),
        }
    }

    /// A number or NULL.
    pub fn opt_f64(&mut self) -> Result<Option<f64>, StoreError> {
        match self.next("number")? {
            Value::Null => Ok(None),
            v => v.as_f64().map(Some).ok_or_else(|| StoreError(format!("expected a number, read {v:?}"))),
        }
    }
}
