//! The one batcher of the consumer's batched requests (reports to the edge, acknowledgements
//! in the stream): callers hand in an item and await its own answer; one task gathers items
//! into a batch until it holds `max_items`, or as much `weight` (bytes, say) as a batch may
//! carry, or `linger` has passed since its first item, then hands the batch to `flush` in a
//! task of its own, so a slow answer never holds up the next batch.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// When a batch is complete.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most items a batch holds.
    pub max_items: usize,
    /// Most weight a batch holds; an item heavier than this alone goes in a batch of its own.
    pub max_weight: usize,
    /// How long the first item of a batch waits for company.
    pub linger: Duration,
}

/// An item, its weight, and where its answer goes.
type Pending<T, A> = (T, usize, oneshot::Sender<A>);

/// Why an item got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The batcher's task has ended.
    Stopped,
    /// The batch was flushed, but `flush` returned no answer for this item.
    Dropped,
}

/// The handle that hands items in (cheap to clone).
#[derive(Debug)]
pub struct Sender<T, A>(mpsc::Sender<Pending<T, A>>);

impl<T, A> Clone for Sender<T, A> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

/// The gathering side; [`Receiver::run`] is the batcher's task.
#[derive(Debug)]
pub struct Receiver<T, A>(mpsc::Receiver<Pending<T, A>>);

/// A batcher's two ends; at most `capacity` items wait before callers wait too.
pub fn channel<T, A>(capacity: usize) -> (Sender<T, A>, Receiver<T, A>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Sender(tx), Receiver(rx))
}

impl<T, A> Sender<T, A> {
    /// Hands in one item and waits for its answer; it travels with whatever else is pending.
    pub async fn call(&self, item: T, weight: usize) -> Result<A, Unanswered> {
        let (tx, rx) = oneshot::channel();
        self.0.send((item, weight, tx)).await.map_err(|_| Unanswered::Stopped)?;
        rx.await.map_err(|_| Unanswered::Dropped)
    }
}

impl<T: Send + 'static, A: Send + 'static> Receiver<T, A> {
    /// Gathers and flushes batches until every [`Sender`] is dropped. `flush` answers a
    /// batch's items in order; an item it leaves unanswered gets [`Unanswered::Dropped`].
    pub async fn run<F, Fut>(mut self, limits: Limits, flush: F)
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let mut carry = None;
        while let Some(batch) = self.next_batch(&mut carry, limits).await {
            let (items, replies): (Vec<T>, Vec<oneshot::Sender<A>>) = batch.into_iter().map(|(t, _, r)| (t, r)).unzip();
            let answered = flush(items);
            tokio::spawn(async move {
                for (reply, answer) in replies.into_iter().zip(answered.await) {
                    let _ = reply.send(answer);
                }
            });
        }
    }

    /// The next batch: the carried item (one that did not fit the last batch) or the next to
    /// arrive, and what follows within the limits. `None` once every sender is gone.
    async fn next_batch(&mut self, carry: &mut Option<Pending<T, A>>, limits: Limits) -> Option<Vec<Pending<T, A>>> {
        let first = match carry.take() {
            Some(p) => p,
            None => self.0.recv().await?,
        };
        let mut weight = first.1;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + limits.linger;
        while batch.len() < limits.max_items {
            // An item already waiting is taken even past the deadline.
            let Ok(Some(p)) = tokio::time::timeout_at(deadline, self.0.recv()).await else { break };
            if weight.saturating_add(p.1) > limits.max_weight {
                *carry = Some(p);
                break;
            }
            weight += p.1;
            batch.push(p);
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Runs a batcher over `items` (value, weight), all handed in before it starts; returns
    /// the batches it flushed and every item's answer (its value times 10).
    async fn batches(limits: Limits, items: &[(u32, usize)]) -> (Vec<Vec<u32>>, Vec<Result<u32, Unanswered>>) {
        let (tx, rx) = channel::<u32, u32>(100);
        let calls: Vec<_> = items
            .iter()
            .map(|&(v, w)| {
                let tx = tx.clone();
                tokio::spawn(async move { tx.call(v, w).await })
            })
            .collect();
        drop(tx);
        for _ in 0..10 {
            tokio::task::yield_now().await; // every call is queued before the batcher starts
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        rx.run(limits, move |batch: Vec<u32>| {
            log.lock().expect("lock").push(batch.clone());
            async move { batch.into_iter().map(|v| v * 10).collect::<Vec<u32>>() }
        })
        .await;
        let mut answers = Vec::new();
        for c in calls {
            answers.push(c.await.expect("joins"));
        }
        let flushed = seen.lock().expect("lock").clone();
        (flushed, answers)
    }

    const LIMITS: Limits = Limits { max_items: 3, max_weight: 10, linger: Duration::from_millis(5) };

    #[tokio::test]
    async fn batches_hold_at_most_max_items_and_answers_reach_their_callers() {
        let items: Vec<(u32, usize)> = (1..=7).map(|v| (v, 1)).collect();
        let (flushed, answers) = batches(LIMITS, &items).await;
        assert_eq!(flushed, [vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
        assert_eq!(answers, (1..=7).map(|v| Ok(v * 10)).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_item_that_would_pass_the_weight_waits_for_the_next_batch() {
        let (flushed, _) = batches(LIMITS, &[(1, 4), (2, 4), (3, 4), (4, 20), (5, 1)]).await;
        assert_eq!(flushed, [vec![1, 2], vec![3], vec![4], vec![5]], "a heavy item goes alone");
    }

    #[tokio::test]
    async fn an_item_flush_leaves_unanswered_is_told_so() {
        let (tx, rx) = channel::<u32, u32>(10);
        let call = tokio::spawn(async move { tx.call(1, 1).await });
        rx.run(LIMITS, |_batch: Vec<u32>| async { Vec::new() }).await;
        assert_eq!(call.await.expect("joins"), Err(Unanswered::Dropped));
        let (tx, rx) = channel::<u32, u32>(10);
        drop(rx);
        assert_eq!(tx.call(1, 1).await, Err(Unanswered::Stopped));
    }
}
