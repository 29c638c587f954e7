//! How many shards a deployment has had, and since when: what lets `SHARD_COUNT` grow on a
//! live deployment.
//!
//! A job id names its shard, so an id keeps resolving whatever the count becomes; what
//! depends on the count is where a *name* lives: an idempotency key (`shard_for_key(key,
//! count)`) and a schedule. The topology is the list of counts a deployment has run with
//! (recorded by shard 0 the first time an isolate starts with a higher `SHARD_COUNT`), and
//! from it the router decides:
//! - **unkeyed jobs** spread over every shard of the newest count at once;
//! - **schedules** stay on the shards of the *first* count, forever (they are few; moving
//!   one would need its state moved without a tick in between);
//! - **keyed jobs** go to their home under the newest count, but for one idempotency window
//!   (plus [`SETTLE_MS`]) after a growth the key is first *claimed* at its homes under the
//!   earlier counts still inside that window: a home that holds the key answers with its
//!   job; one that does not records that the key moved (so a router that has not yet seen
//!   the growth cannot create it there afterwards) and the job is created at the new home.
//!   Keys first seen before the growth keep returning their job; none is created twice.
//!
//! Lowering the count is refused: shards past a lower count would hold jobs no listing,
//! sweep or backup visits any more. The router keeps the recorded count and says so.

use serde::{Deserialize, Serialize};

use crate::id::shard_for_key;

/// How long past an idempotency window a growth still routes keys through the old homes:
/// a margin over how long a router may go on with a topology it read before the growth
/// ([`REFRESH_MS`]), so a key such a router created at its old home is still found.
pub const SETTLE_MS: u64 = 60_000;

/// How often a router reads the topology again (a growth recorded by another isolate is
/// seen within this).
pub const REFRESH_MS: u64 = 10_000;

/// One shard count and the time a deployment started using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub count: u16,
    /// Unix ms; 0 for the count a deployment started with.
    pub since_ms: u64,
}

/// The counts a deployment has had, oldest first (each higher than the one before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub epochs: Vec<Epoch>,
}

/// Where a keyed job goes: its `home` under the newest count, after asking `claim_first`
/// (its homes under earlier counts whose growth is still within the window, oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRoute {
    pub home: u16,
    pub claim_first: Vec<u16>,
}

/// `SHARD_COUNT` is below a count the deployment already had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SHARD_COUNT={configured} is lower than {recorded}, the shards this deployment already has; lowering is refused (jobs on the shards past it would be lost to listings, sweeps and backups), so {recorded} stay in use"
)]
pub struct Lowered {
    pub configured: u16,
    pub recorded: u16,
}

impl Topology {
    /// A deployment that has only ever had `count` shards.
    pub fn single(count: u16) -> Topology {
        Topology { epochs: vec![Epoch { count: count.max(1), since_ms: 0 }] }
    }

    /// The shards that exist now: every listing, sweep, backup and id check covers them.
    pub fn count(&self) -> u16 {
        self.epochs.last().map_or(1, |e| e.count)
    }

    /// The count schedules are placed by (the first one).
    pub fn first(&self) -> u16 {
        self.epochs.first().map_or(1, |e| e.count)
    }

    /// The shard that holds schedule `name`.
    pub fn schedule_home(&self, name: &str) -> u16 {
        shard_for_key(name, self.first())
    }

    /// Records a start with `configured` shards at `now`: a higher count is a growth (true);
    /// the same count changes nothing; a lower one is refused and changes nothing.
    pub fn raise(&mut self, configured: u16, now: u64) -> Result<bool, Lowered> {
        let recorded = self.count();
        if configured < recorded {
            return Err(Lowered { configured, recorded });
        }
        if configured == recorded {
            return Ok(false);
        }
        self.epochs.push(Epoch { count: configured, since_ms: now });
        Ok(true)
    }

    /// Where a job with idempotency key `key` goes at `now`, for a deployment whose keys
    /// last `window_ms`. The homes to claim at are those under every earlier count in use
    /// within the window (a key seen then may live there), minus the new home itself.
    pub fn route_key(&self, key: &str, now: u64, window_ms: u64) -> KeyRoute {
        let home = shard_for_key(key, self.count());
        let mut claim_first = Vec::new();
        // Epoch i was in use until epoch i + 1 began; a key it took lives a window longer.
        for pair in self.epochs.windows(2) {
            let (old, next) = (pair[0], pair[1]);
            if now < next.since_ms.saturating_add(window_ms).saturating_add(SETTLE_MS) {
                let s = shard_for_key(key, old.count);
                if s != home && !claim_first.contains(&s) {
                    claim_first.push(s);
                }
            }
        }
        KeyRoute { home, claim_first }
    }

    /// Whether the newest growth still routes keys through earlier homes at `now`.
    pub fn settling(&self, now: u64, window_ms: u64) -> bool {
        let n = self.epochs.len();
        n > 1 && now < self.epochs[n - 1].since_ms.saturating_add(window_ms).saturating_add(SETTLE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn a_growth_is_recorded_once_and_lowering_is_refused() {
        let mut t = Topology::single(16);
        assert_eq!(t.raise(16, 5), Ok(false));
        assert_eq!(t.raise(64, 10), Ok(true));
        assert_eq!(t.raise(64, 20), Ok(false), "the same count again is no growth");
        assert_eq!(t.epochs, vec![Epoch { count: 16, since_ms: 0 }, Epoch { count: 64, since_ms: 10 }]);
        let e = t.raise(16, 30).expect_err("lower");
        assert_eq!(e, Lowered { configured: 16, recorded: 64 });
        assert!(e.to_string().contains("lowering is refused"), "{e}");
        assert_eq!(t.count(), 64, "nothing changed");
        assert_eq!(t.first(), 16);
    }

    #[test]
    fn keys_claim_at_their_old_home_for_one_window_after_a_growth() {
        let mut t = Topology::single(16);
        let grown = 1_000 * DAY;
        t.raise(64, grown).expect("raise");
        // A key whose homes differ under 16 and 64.
        let key = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| shard_for_key(k, 16) != shard_for_key(k, 64))
            .expect("a moved key");
        let r = t.route_key(&key, grown + 1, DAY);
        assert_eq!(r.home, shard_for_key(&key, 64));
        assert_eq!(r.claim_first, vec![shard_for_key(&key, 16)]);
        assert!(t.settling(grown + 1, DAY));
        // Past the window and the settling margin: straight home.
        let after = grown + DAY + SETTLE_MS;
        assert!(t.route_key(&key, after, DAY).claim_first.is_empty());
        assert!(!t.settling(after, DAY));
        // A key whose home is the same under both counts is never claimed.
        let same = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| shard_for_key(k, 16) == shard_for_key(k, 64))
            .expect("a staying key");
        assert!(t.route_key(&same, grown + 1, DAY).claim_first.is_empty());
    }

    #[test]
    fn before_any_growth_nothing_is_claimed_and_schedules_stay_on_the_first_count() {
        let t = Topology::single(16);
        assert!(t.route_key("k", 5, DAY).claim_first.is_empty());
        let mut grown = t.clone();
        grown.raise(64, 10).expect("raise");
        for name in ["nightly", "hourly", "a", "b", "c"] {
            assert_eq!(grown.schedule_home(name), t.schedule_home(name));
            assert!(grown.schedule_home(name) < 16);
        }
    }

    #[test]
    fn two_growths_within_a_window_claim_at_both_earlier_homes() {
        let mut t = Topology::single(4);
        t.raise(16, 100).expect("16");
        t.raise(64, 200).expect("64");
        let key = (0..5000)
            .map(|i| format!("k{i}"))
            .find(|k| {
                let (a, b, c) = (shard_for_key(k, 4), shard_for_key(k, 16), shard_for_key(k, 64));
                a != b && b != c && a != c
            })
            .expect("a key with three homes");
        let r = t.route_key(&key, 300, DAY);
        assert_eq!(r.claim_first, vec![shard_for_key(&key, 4), shard_for_key(&key, 16)]);
        // Once the first growth's window is over, only the second's old home is asked.
        let later = 100 + DAY + SETTLE_MS;
        assert_eq!(t.route_key(&key, later, DAY).claim_first, vec![shard_for_key(&key, 16)]);
    }
}
