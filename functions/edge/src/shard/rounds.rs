//! Rounds: work that concurrent requests of one Durable Object hand in is done together.
//! A request submits its part and waits; when no round is in flight, the first waiter
//! leads the next round with every part submitted so far, hands each part's result back
//! and finishes. Each request waits for at most one round before its own, and an idle
//! object runs a round at once, so grouping adds no latency when there is no load.
//!
//! Creates use it for group commit (one transaction and one queue send for every job
//! submitted meanwhile); queue sends of other operations use it to share `sendBatch` calls.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Parts waiting for the next round, results waiting for their requests, and the state of
/// the rounds. `I` is a part handed in, `O` a part's result.
#[derive(Debug)]
pub struct Rounds<I, O> {
    queued: RefCell<Vec<(u64, I)>>,
    results: RefCell<BTreeMap<u64, O>>,
    next_ticket: Cell<u64>,
    leading: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl<I, O> Default for Rounds<I, O> {
    fn default() -> Self {
        Rounds {
            queued: RefCell::new(Vec::new()),
            results: RefCell::new(BTreeMap::new()),
            next_ticket: Cell::new(0),
            leading: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
        }
    }
}

/// What a caller of [`Rounds::submit`] gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn<I, O> {
    /// Lead this round: do these parts (the caller's among them), then [`Rounds::finish`]
    /// with each ticket's result. `mine` is the caller's own ticket.
    Lead { parts: Vec<(u64, I)>, mine: u64 },
    /// Another request did this caller's part; its result.
    Done(O),
}

impl<I, O> Rounds<I, O> {
    /// Hands in a part and waits until the caller leads the round that holds it, or until
    /// another request has done it.
    pub async fn submit(&self, part: I) -> Turn<I, O> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.queued.borrow_mut().push((ticket, part));
        WaitTurn { rounds: self, ticket }.await
    }

    /// Ends a round: stores each part's result for its request, wakes the waiters and
    /// returns the leader's own result (`mine`). Give every part of the round a result.
    pub fn finish(&self, mine: u64, results: impl IntoIterator<Item = (u64, O)>) -> Option<O> {
        let mut own = None;
        {
            let mut stored = self.results.borrow_mut();
            for (ticket, out) in results {
                if ticket == mine {
                    own = Some(out)
                } else {
                    stored.insert(ticket, out);
                }
            }
        }
        self.leading.set(false);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
        own
    }
}

struct WaitTurn<'a, I, O> {
    rounds: &'a Rounds<I, O>,
    ticket: u64,
}

impl<I, O> Future for WaitTurn<'_, I, O> {
    type Output = Turn<I, O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Turn<I, O>> {
        let r = self.rounds;
        if let Some(out) = r.results.borrow_mut().remove(&self.ticket) {
            return Poll::Ready(Turn::Done(out));
        }
        if !r.leading.get() && r.queued.borrow().iter().any(|(t, _)| *t == self.ticket) {
            r.leading.set(true);
            let parts = std::mem::take(&mut *r.queued.borrow_mut());
            return Poll::Ready(Turn::Lead { parts, mine: self.ticket });
        }
        r.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    fn poll<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(Noop));
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_round_carries_every_part_handed_in_while_the_previous_one_ran() {
        let r: Rounds<&str, String> = Rounds::default();
        let mut a = Box::pin(r.submit("a"));
        assert_eq!(poll(a.as_mut()), Poll::Ready(Turn::Lead { parts: vec![(0, "a")], mine: 0 }));
        // While round 1 runs, two more requests hand in parts.
        let mut b = Box::pin(r.submit("b"));
        let mut c = Box::pin(r.submit("c"));
        assert_eq!(poll(b.as_mut()), Poll::Pending);
        assert_eq!(poll(c.as_mut()), Poll::Pending);
        assert_eq!(r.finish(0, [(0, "A".to_owned())]), Some("A".to_owned()));
        // The first waiter to run leads round 2 for both; the other gets its result.
        assert_eq!(poll(c.as_mut()), Poll::Ready(Turn::Lead { parts: vec![(1, "b"), (2, "c")], mine: 2 }));
        assert_eq!(poll(b.as_mut()), Poll::Pending);
        assert_eq!(r.finish(2, [(1, "B".to_owned()), (2, "C".to_owned())]), Some("C".to_owned()));
        assert_eq!(poll(b.as_mut()), Poll::Ready(Turn::Done("B".to_owned())));
        assert!(r.results.borrow().is_empty(), "every result was handed out");
        // An idle object runs the next round at once.
        let mut d = Box::pin(r.submit("d"));
        assert_eq!(poll(d.as_mut()), Poll::Ready(Turn::Lead { parts: vec![(3, "d")], mine: 3 }));
    }
}
