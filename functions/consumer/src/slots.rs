//! Running slots handed out by priority (#28): a job started at the edge waits here for one
//! of the consumer's `concurrency` slots; when one frees, the waiting job with the highest
//! priority (its `flow.priority`, 5 by default) runs next, the oldest first among equals.
//! What the shard already does for jobs that wait for a key, this does for the jobs a
//! consumer has taken ahead (`prefetch`): a low-priority job taken first does not run before
//! a high-priority one taken after it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The slots of one consumer.
#[derive(Debug)]
pub struct Slots {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    free: usize,
    waiting: BinaryHeap<Waiter>,
    seq: u64,
}

#[derive(Debug)]
struct Waiter {
    priority: u8,
    seq: u64,
    tx: oneshot::Sender<Slot>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Waiter) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Waiter) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// The heap's greatest: the highest priority, then the earliest arrival.
    fn cmp(&self, other: &Waiter) -> Ordering {
        self.priority.cmp(&other.priority).then(other.seq.cmp(&self.seq))
    }
}

/// One running slot; dropping it hands it to the best waiting job, or frees it.
#[derive(Debug)]
pub struct Slot {
    slots: Option<Arc<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            slots.release();
        }
    }
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots { state: Mutex::new(State { free: n, waiting: BinaryHeap::new(), seq: 0 }) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot: at once when one is free and nobody waits, else in priority order.
    pub async fn acquire(self: &Arc<Slots>, priority: u8) -> Slot {
        let rx = {
            let mut s = self.lock();
            if s.free > 0 && s.waiting.is_empty() {
                s.free -= 1;
                return Slot { slots: Some(Arc::clone(self)) };
            }
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let seq = s.seq;
            s.waiting.push(Waiter { priority, seq, tx });
            rx
        };
        match rx.await {
            Ok(slot) => slot,
            // Never: a waiter's sender is only dropped by handing it a slot.
            Err(_) => Slot { slots: None },
        }
    }

    /// Hands a freed slot to the best waiting job whose task still waits (a slot sent to a
    /// task that went away comes back here when its message is dropped), else frees it.
    fn release(self: Arc<Slots>) {
        let mut s = self.lock();
        while let Some(w) = s.waiting.pop() {
            let slot = Slot { slots: Some(Arc::clone(&self)) };
            match w.tx.send(slot) {
                Ok(()) => return,
                Err(mut returned) => {
                    // The task is gone: keep the slot for the next waiter (no recursion).
                    returned.slots = None;
                }
            }
        }
        s.free += 1;
    }

    /// Slots free and jobs waiting (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.free, s.waiting.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_priority_then_the_oldest() {
        let slots = Slots::new(1);
        let held = slots.acquire(5).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 1u8), ("high-1", 9), ("mid", 5), ("high-2", 9)] {
            let (mine, order) = (Arc::clone(&slots), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let slot = mine.acquire(priority).await;
                order.lock().unwrap_or_else(|p| p.into_inner()).push(name);
                drop(slot);
            }));
            // Each waits before the next arrives (arrival order is part of the rule).
            for _ in 0..100 {
                if slots.counts().1 == tasks.len() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(slots.counts(), (0, 4), "all four wait behind the held slot");
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(*order.lock().unwrap_or_else(|p| p.into_inner()), ["high-1", "high-2", "mid", "low"]);
        assert_eq!(slots.counts(), (1, 0));
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_task_that_went_away_is_not_lost() {
        let slots = Slots::new(1);
        let held = slots.acquire(5).await;
        let gone = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.acquire(9).await }
        });
        for _ in 0..100 {
            if slots.counts().1 == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert_eq!(slots.counts(), (1, 0));
        let again = slots.acquire(1).await;
        drop(again);
        assert_eq!(slots.counts(), (1, 0));
    }
}
