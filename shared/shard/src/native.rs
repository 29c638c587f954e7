//! The native storage: rusqlite with bundled SQLite, the same SQL the Durable Object runs.
//! The simulation and the shard's tests use it in memory; nothing native depends on a
//! system SQLite.

use std::cell::Cell;

use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::sql::{Row, Sql, StoreError, Value};

/// A SQLite database (in memory or a file).
#[derive(Debug)]
pub struct Sqlite {
    conn: rusqlite::Connection,
    read: Cell<u64>,
    written: Cell<u64>,
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Sqlite {
    /// A fresh in-memory database.
    pub fn memory() -> Result<Sqlite, StoreError> {
        Self::wrap(rusqlite::Connection::open_in_memory().map_err(err)?)
    }

    /// A database in a file (created when missing).
    pub fn open(path: &std::path::Path) -> Result<Sqlite, StoreError> {
        Self::wrap(rusqlite::Connection::open(path).map_err(err)?)
    }

    fn wrap(conn: rusqlite::Connection) -> Result<Sqlite, StoreError> {
        conn.set_prepared_statement_cache_capacity(128);
        // Workerd's limits, so a statement the Durable Object would refuse fails here too:
        // at most five terms in a compound SELECT (a sixth `UNION ALL` in `next_wake` passed
        // every native test and broke every alarm in workerd) and 100 bound parameters.
        use rusqlite::limits::Limit;
        conn.set_limit(Limit::SQLITE_LIMIT_COMPOUND_SELECT, 5).map_err(err)?;
        conn.set_limit(Limit::SQLITE_LIMIT_VARIABLE_NUMBER, crate::store::MAX_PARAMS as i32).map_err(err)?;
        Ok(Sqlite { conn, read: Cell::new(0), written: Cell::new(0) })
    }
}

impl Sql for Sqlite {
    fn scan(&self, sql: &str, binds: &[Value], row: &mut dyn FnMut(Row) -> bool) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(err)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(binds.iter())).map_err(err)?;
        let mut n = 0u64;
        while let Some(r) = rows.next().map_err(err)? {
            n += 1;
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match r.get_ref(i).map_err(err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(_) => return Err(StoreError("a shard stores no blobs".into())),
                });
            }
            if !row(values) {
                break;
            }
        }
        drop(rows);
        self.read.set(self.read.get() + n);
        self.written.set(self.written.get() + self.conn.changes());
        Ok(())
    }

    fn script(&self, sql: &str) -> Result<(), StoreError> {
        self.conn.execute_batch(sql).map_err(err)
    }

    fn transaction<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        match f() {
            Ok(v) => {
                self.conn.execute_batch("COMMIT").map_err(err)?;
                Ok(v)
            }
            Err(e) => {
                self.conn.execute_batch("ROLLBACK").map_err(err)?;
                Err(e)
            }
        }
    }

    fn take_row_counts(&self) -> (u64, u64) {
        (self.read.replace(0), self.written.replace(0))
    }
}

#[cfg(test)]
mod limit_tests {
    use super::Sqlite;
    use crate::sql::Sql;

    /// The native database refuses what workerd's does: a sixth term of a compound SELECT,
    /// a 101st bound parameter.
    #[test]
    fn workerds_limits_hold_here_too() {
        let db = Sqlite::memory().expect("db");
        let five = ["SELECT 1"; 5].join(" UNION ALL ");
        assert!(db.rows(&five, &[]).is_ok());
        let six = ["SELECT 1"; 6].join(" UNION ALL ");
        assert!(db.rows(&six, &[]).is_err(), "six terms pass");
        let binds = vec![crate::sql::Value::Int(1); 101];
        let q = format!("SELECT {}", ["?"; 101].join(", "));
        assert!(db.rows(&q, &binds).is_err(), "101 parameters pass");
    }
}
