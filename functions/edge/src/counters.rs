//! Counters of this isolate (Worker invocations, enqueue requests by status, queue messages
//! received, Upstash commands): accumulated in memory and written by the shard call that
//! already happens ([`take`] attaches them to it), so counting costs no call of its own on
//! the request path. When no shard call comes soon, one flush writes them a second later
//! to a random shard (never to a singleton object). Scrapes see written counts only, so a
//! count appears within about a second and counters never go down.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use edgejobs_core::protocol::Record;
use edgejobs_core::stats::Delta;
use worker::{Delay, Env};

use crate::platform::random_u64;

thread_local! {
    static PENDING: RefCell<Vec<Delta>> = const { RefCell::new(Vec::new()) };
    static FLUSH_SCHEDULED: Cell<bool> = const { Cell::new(false) };
}

/// How long counts wait for a shard call to carry them before a flush of their own.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// Adds `n` to counter `name` with these labels.
pub fn add(name: &str, labels: &[(&str, &str)], n: f64) {
    PENDING.with(|p| p.borrow_mut().push(Delta::count(name, labels, n)));
}

/// Moves the Upstash client's command count into the pending counts.
fn sync_upstash() {
    let n = edgejobs_upstash::client::take_commands_sent();
    if n > 0 {
        add("edgejobs_upstash_commands_total", &[], n as f64);
    }
}

/// Takes every pending count (a shard call carries them).
pub fn take() -> Vec<Delta> {
    sync_upstash();
    PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// Puts counts back after the call that carried them failed.
pub fn restore(deltas: Vec<Delta>) {
    if !deltas.is_empty() {
        PENDING.with(|p| p.borrow_mut().extend(deltas));
    }
}

/// Counts one invocation of the Worker.
pub fn invocation(kind: &str, route: &str) {
    add("edgejobs_worker_invocations_total", &[("kind", kind), ("route", route)], 1.0);
}

/// The flush to run in `waitUntil` when counts are pending and no flush is scheduled yet:
/// it waits [`FLUSH_AFTER`] (a shard call may carry them meanwhile), then records what is
/// left in a random shard.
pub fn flush_later(env: &Env, shard_count: u16) -> Option<impl std::future::Future<Output = ()> + 'static> {
    sync_upstash();
    let pending = PENDING.with(|p| !p.borrow().is_empty());
    if !pending || FLUSH_SCHEDULED.with(|f| f.replace(true)) {
        return None;
    }
    let env = env.clone();
    Some(async move {
        Delay::from(FLUSH_AFTER).await;
        FLUSH_SCHEDULED.with(|f| f.set(false));
        sync_upstash();
        if PENDING.with(|p| p.borrow().is_empty()) {
            return;
        }
        let shard = (random_u64() % shard_count.max(1) as u64) as u16;
        // `call` attaches the pending counts and restores them if the call fails.
        let _ = crate::shard::call(&env, shard, Record {}).await;
    })
}
