//! Counters of this isolate (Worker invocations, Durable Object requests, enqueue requests
//! by status, queue messages received, Upstash commands): merged in memory and written by a
//! shard call that commits anyway, at most about once a second ([`take`]), so counting costs
//! neither a call nor a write per request. When no such call comes, one flush writes them a
//! second later to a random shard (never to a singleton object). A scrape carries them too,
//! so scrapes are current; only written counts are reported, so counters never go down.

use edgejobs_core::stats::Metric;
use std::cell::{Cell, RefCell};
use std::time::Duration;

use edgejobs_core::protocol::Carry;
use edgejobs_core::stats::{Delta, Merged};
use worker::Delay;

use crate::platform::{now_ms, random_u64};

thread_local! {
    static PENDING: RefCell<Merged> = RefCell::new(Merged::default());
    static LAST_CARRIED_MS: Cell<u64> = const { Cell::new(0) };
    static FLUSH_SCHEDULED: Cell<bool> = const { Cell::new(false) };
}

/// How long counts wait for a shard call to carry them.
const CARRY_EVERY: Duration = Duration::from_secs(1);

/// Adds `n` to counter `name` with these labels.
pub fn add(name: Metric, labels: &[(&str, &str)], n: f64) {
    PENDING.with(|p| p.borrow_mut().add(&Delta::count(name, labels, n)));
}

/// Moves the Upstash client's command count into the pending counts.
fn sync_upstash() {
    let n = edgejobs_upstash::client::take_commands_sent();
    if n > 0 {
        add(Metric::UpstashCommandsTotal, &[], n as f64);
    }
}

fn is_empty() -> bool {
    PENDING.with(|p| p.borrow().is_empty())
}

/// The pending counts a call of this kind carries (taken), or nothing.
pub fn take(carry: Carry) -> Vec<Delta> {
    sync_upstash();
    let now = now_ms();
    let due = match carry {
        Carry::Always => true,
        Carry::WhenDue => now.saturating_sub(LAST_CARRIED_MS.with(Cell::get)) >= CARRY_EVERY.as_millis() as u64,
        Carry::Never => false,
    };
    if !due || is_empty() {
        return Vec::new();
    }
    LAST_CARRIED_MS.with(|l| l.set(now));
    PENDING.with(|p| std::mem::take(&mut *p.borrow_mut())).into_deltas()
}

/// Puts counts back after the call that carried them failed.
pub fn restore(deltas: Vec<Delta>) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        for d in &deltas {
            p.add(d);
        }
    });
}

/// Counts one invocation of the Worker.
pub fn invocation(kind: &str, route: &str) {
    add(Metric::WorkerInvocationsTotal, &[("kind", kind), ("route", route)], 1.0);
}

/// The flush to run in `waitUntil` when counts are pending and no flush is scheduled yet:
/// it waits a second (a shard call may carry them meanwhile), then hands what is left to
/// `record` with a random shard. `record` makes the shard call ([`crate::gauges::flush_later`]
/// passes it), so this module does not import the shard client that imports it.
pub fn flush_later<F, Fut>(shard_count: u16, record: F) -> Option<impl std::future::Future<Output = ()> + 'static>
where
    F: FnOnce(u16) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    sync_upstash();
    if is_empty() || FLUSH_SCHEDULED.with(|f| f.replace(true)) {
        return None;
    }
    Some(async move {
        Delay::from(CARRY_EVERY).await;
        FLUSH_SCHEDULED.with(|f| f.set(false));
        sync_upstash();
        if is_empty() {
            return;
        }
        record((random_u64() % shard_count.max(1) as u64) as u16).await;
    })
}
