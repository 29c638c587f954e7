//! What a growth of `SHARD_COUNT` asks of a shard (see `edgejobs_core::topology`): shard 0
//! keeps the deployment's topology, and a key's home under an earlier count answers a claim
//! with its job or records that the key moved.

use edgejobs_core::protocol::{ClaimKeys, TopologyOp};
use edgejobs_core::topology::Topology;
use edgejobs_core::{ApiError, ErrorCode};
use serde_json::value::RawValue;

use crate::sql::{Cols, Sql, StoreError, text};
use crate::store;
use crate::{Failure, Host, Level, Outcome, Shard};

/// The `meta` row shard 0 keeps the topology in.
const TOPOLOGY_KEY: &str = "topology";

impl<S: Sql, H: Host> Shard<S, H> {
    /// Shard 0: the topology after recording `configured` (a growth is recorded once, at
    /// this shard's time; a lower count is answered with the recorded topology unchanged,
    /// the router refuses it).
    pub fn topology(&self, r: TopologyOp) -> Outcome<Topology> {
        if self.number != Some(0) {
            return Err(Failure::Refused(ApiError::new(ErrorCode::InvalidField, "shard 0 keeps the topology")));
        }
        if r.configured == 0 || r.configured > edgejobs_core::id::MAX_SHARDS {
            return Err(Failure::Refused(ApiError::field("configured", "must be from 1 to 256")));
        }
        let now = self.host.now_ms();
        let (topology, grown) = self.commit(|db| {
            let rows = db.rows("SELECT value FROM meta WHERE key = ?", &[text(TOPOLOGY_KEY)])?;
            let stored: Option<Topology> = match rows.into_iter().next() {
                Some(row) => Some(store::parse(&Cols::new(row).text()?)?),
                None => None,
            };
            let (mut topology, fresh) = match stored {
                Some(t) => (t, false),
                None => (Topology::single(r.configured), true),
            };
            let grown = topology.raise(r.configured, now).unwrap_or(false);
            if fresh || grown {
                db.rows(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    &[text(TOPOLOGY_KEY), text(store::to_json(&topology)?)],
                )?;
            }
            Ok((topology, grown))
        })?;
        if grown {
            self.host.log(
                Level::Info,
                "SHARD_COUNT grew",
                serde_json::json!({ "count": topology.count(), "epochs": topology.epochs }),
            );
        }
        Ok(topology)
    }

    /// Claims idempotency keys at this shard, their home under an earlier count: each is
    /// answered with the live job it names here, or `None` once the key is recorded as
    /// moved to its new home (for the idempotency window), so no create of it here follows.
    pub fn claim_keys(&self, r: ClaimKeys) -> Outcome<Vec<Option<Box<RawValue>>>> {
        let now = self.host.now_ms();
        self.commit(|db| {
            let keys: Vec<&str> = r.claims.iter().map(|c| c.key.as_str()).collect();
            let here = store::keys_here(db, &keys, now)?;
            let mut out = Vec::with_capacity(r.claims.len());
            let mut moved: Vec<(&str, u16)> = Vec::new();
            for c in &r.claims {
                if let Some(job) = here.jobs.get(&c.key) {
                    let doc = store::to_json(job)?;
                    out.push(Some(RawValue::from_string(doc).map_err(|e| StoreError(e.to_string()))?));
                    continue;
                }
                let known = here.moved.get(&c.key) == Some(&c.to) || moved.iter().any(|(k, _)| *k == c.key);
                if !known {
                    moved.push((c.key.as_str(), c.to));
                }
                out.push(None);
            }
            store::put_moved(db, &moved, now, r.idempotency_window_ms)?;
            Ok(out)
        })
    }
}
