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
    s.get(Get { id: id.clone(), tenant: None, wait_ms: 0 }).expect("the job")
}

/// A deployment's edge config with test secrets and `SHARD_COUNT` = `shards`.
pub fn edge_config(shards: u16) -> edgejobs_core::config::EdgeConfig {
    edge_config_keyed(shards, "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
}

/// [`edge_config`] with `PAYLOAD_ENCRYPTION_KEYS` = `keys`.
pub fn edge_config_keyed(shards: u16, keys: &str) -> edgejobs_core::config::EdgeConfig {
    let vars: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::from([
        ("SHARD_COUNT", shards.to_string()),
        ("EDGEJOBS_API_KEYS", "ej_test_jobs_key_0123456789".to_owned()),
        ("EDGEJOBS_ADMIN_KEYS", "ej_test_admin_key_0123456789".to_owned()),
        ("EDGEJOBS_CONSUMER_TOKEN", "ej_test_consumer_token_0123456789".to_owned()),
        ("WEBHOOK_SIGNING_SECRET", "ej_test_webhook_secret_0123456789".to_owned()),
        ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:1".to_owned()),
        ("UPSTASH_REDIS_REST_TOKEN", "ej_test_upstash_token_0123456789".to_owned()),
        ("PAYLOAD_ENCRYPTION_KEYS", keys.to_owned()),
    ]);
    edgejobs_core::config::EdgeConfig::parse(|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("config: {e:?}"))
}
