//! What the flow tests share: a host with a settable clock and counting randomness, a
//! shard on in-memory SQLite, and reading what a call sent or a job is.
#![allow(dead_code)]

use std::cell::Cell;

use edgejobs_core::protocol::Get;
use edgejobs_core::{Job, JobId};
use edgejobs_shard::native::Sqlite;
use edgejobs_shard::{Effects, Host, Level, Shard};
use serde_json::Value;

pub const NOW: u64 = 1_800_000_000_000;

#[derive(Debug, Default)]
pub struct World {
    pub now: Cell<u64>,
    pub n: Cell<u64>,
}

impl Host for &World {
    fn now_ms(&self) -> u64 {
        NOW + self.now.get()
    }
    fn random_u64(&self) -> u64 {
        self.n.set(self.n.get() + 1);
        self.n.get().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn log(&self, _level: Level, _msg: &str, _fields: Value) {}
}

pub type S<'a> = Shard<Sqlite, &'a World>;

pub fn shard(w: &World) -> S<'_> {
    let s = Shard::new(Sqlite::memory().expect("db"), w, Some(0));
    s.migrate().expect("schema");
    s
}

/// The jobs a call sent to their lane.
pub fn sent(e: &Effects) -> Vec<JobId> {
    e.enqueue.iter().map(|(_, r)| r.id.clone()).collect()
}

pub fn get(s: &S, id: &JobId) -> Job {
    s.get(Get { id: id.clone(), tenant: None }).expect("the job")
}
