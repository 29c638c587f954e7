//! The shard's storage seam on workerd: `ctx.storage.sql` for statements and
//! `transactionSync` for transactions, counting the rows each statement read and wrote
//! (what Cloudflare bills). The shard's operations themselves live in `edgejobs_shard`.

use std::cell::Cell;

use edgejobs_shard::sql::{Row, Sql, StoreError, Value};
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen::closure::ScopedClosure;
use worker::{SqlStorage, SqlStorageValue, State};

/// A Durable Object's SQLite storage.
pub struct DoSql {
    sql: SqlStorage,
    storage: JsValue,
    rows_read: Cell<u64>,
    rows_written: Cell<u64>,
}

impl std::fmt::Debug for DoSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoSql").finish_non_exhaustive()
    }
}

/// A bind as the JavaScript value `exec` takes, made directly: going through
/// `SqlStorageValue` copied every text (a job's whole JSON on each write) and asked
/// JavaScript whether each integer was safe, one more crossing per integer bind. The values
/// are the same (an integer becomes a number, as before).
fn bind(v: &Value) -> JsValue {
    match v {
        Value::Null => JsValue::NULL,
        Value::Int(i) => JsValue::from_f64(*i as f64),
        Value::Real(f) => JsValue::from_f64(*f),
        Value::Text(s) => JsValue::from_str(s),
    }
}

fn read(v: SqlStorageValue) -> Result<Value, StoreError> {
    Ok(match v {
        SqlStorageValue::Null => Value::Null,
        SqlStorageValue::Boolean(b) => Value::Int(b.into()),
        SqlStorageValue::Integer(i) => Value::Int(i),
        SqlStorageValue::Float(f) => Value::Real(f),
        SqlStorageValue::String(s) => Value::Text(s),
        SqlStorageValue::Blob(_) => return Err(StoreError("a shard stores no blobs".into())),
    })
}

impl DoSql {
    pub fn new(state: &State) -> DoSql {
        let storage = state.storage();
        DoSql {
            sql: storage.sql(),
            storage: AsRef::<JsValue>::as_ref(storage.as_raw()).clone(),
            rows_read: Cell::new(0),
            rows_written: Cell::new(0),
        }
    }

    fn tally(&self, cursor: &worker::SqlCursor) {
        self.rows_read.set(self.rows_read.get() + cursor.rows_read() as u64);
        self.rows_written.set(self.rows_written.get() + cursor.rows_written() as u64);
    }
}

impl Sql for DoSql {
    fn scan(&self, sql: &str, binds: &[Value], row: &mut dyn FnMut(Row) -> bool) -> Result<(), StoreError> {
        let cursor = self
            .sql
            .exec_raw(sql, binds.iter().map(bind).collect::<Vec<_>>())
            .map_err(|e| StoreError(e.to_string()))?;
        for r in cursor.raw() {
            let values = r.map_err(|e| StoreError(e.to_string()))?;
            let values = values.into_iter().map(read).collect::<Result<Row, StoreError>>()?;
            if !row(values) {
                break;
            }
        }
        self.tally(&cursor);
        Ok(())
    }

    fn script(&self, sql: &str) -> Result<(), StoreError> {
        let cursor = self.sql.exec(sql, vec![]).map_err(|e| StoreError(e.to_string()))?;
        // Statements run as the cursor is read.
        for r in cursor.raw() {
            r.map_err(|e| StoreError(e.to_string()))?;
        }
        self.tally(&cursor);
        Ok(())
    }

    /// `transactionSync`: everything `f` writes commits together, or nothing does when it
    /// returns an error. `f` cannot await, so no other event of this object runs between
    /// its reads and its writes.
    fn transaction<T, E: From<StoreError>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        const ROLLBACK: &str = "edgejobs: roll back";
        let mut f = Some(f);
        let mut out: Option<Result<T, E>> = None;
        let called = {
            let mut body = || -> Result<JsValue, JsValue> {
                let Some(f) = f.take() else { return Err(JsValue::from_str("transaction body ran twice")) };
                let r = f();
                let failed = r.is_err();
                out = Some(r);
                if failed { Err(JsValue::from_str(ROLLBACK)) } else { Ok(JsValue::UNDEFINED) }
            };
            let closure: ScopedClosure<dyn FnMut() -> Result<JsValue, JsValue>> =
                ScopedClosure::borrow_mut_aborting(&mut body);
            js_sys::Reflect::get(&self.storage, &JsValue::from_str("transactionSync"))
                .and_then(|f| f.dyn_into::<js_sys::Function>())
                .and_then(|func| func.call1(&self.storage, closure.as_ref()))
        };
        match (out, called) {
            (Some(r), _) => r,
            (None, Err(e)) => Err(StoreError(format!("transactionSync failed: {e:?}")).into()),
            (None, Ok(_)) => Err(StoreError("transactionSync did not run its body".into()).into()),
        }
    }

    fn take_row_counts(&self) -> (u64, u64) {
        (self.rows_read.replace(0), self.rows_written.replace(0))
    }
}
