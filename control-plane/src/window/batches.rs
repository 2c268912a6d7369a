//! Group commit per key: while one call for a key is in flight, later requests for the same
//! key wait, and all of them go together in the next call.
//!
//! A hot tenant's concurrent decisions then share one round trip and one run of the shared
//! work (trimming the window, counters, expiries) instead of queueing behind each other at
//! Redis one by one. A request that arrives while nothing is in flight for its key goes at
//! once, so a quiet tenant waits for nothing.
//!
//! Every request carries a deadline and a call is bounded by the earliest deadline of its
//! batch. A request queued behind a call in flight is therefore answered by its own deadline
//! too (that call's batch arrived earlier, so its deadline is earlier), with one timer per
//! call rather than one per request.

use std::collections::HashMap;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

/// Decides one batch by the deadline given: the items in arrival order, one result per item,
/// in the same order.
pub type BatchCall<K, T, R> =
    Box<dyn Fn(K, Vec<T>, Instant) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

pub struct Batches<K, T, R> {
    /// A key is present while a call for it is in flight; requests for it wait here.
    queues: Mutex<HashMap<K, Vec<Waiter<T, R>>>>,
    /// Most items in one call, to bound one call's time and reply.
    max: usize,
    call: BatchCall<K, T, R>,
}

struct Waiter<T, R> {
    item: T,
    deadline: Instant,
    reply: oneshot::Sender<R>,
}

impl<K, T, R> Batches<K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + 'static,
    R: Send + 'static,
{
    pub fn new(max: usize, call: BatchCall<K, T, R>) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            max: max.max(1),
            call,
        }
    }

    /// Submits `item` under `key` and waits for its result. `None` when its deadline passed
    /// before its batch could leave, when the batch answered no result for it (a malformed
    /// reply), or when its call was abandoned (a panic, or the runtime shutting down).
    ///
    /// Calls run in a task of their own, so a caller that gives up (its future dropped) neither
    /// cancels the batch it is in nor stalls the requests queued behind it; a caller that gave
    /// up before its batch left is not sent at all.
    pub async fn submit(self: &Arc<Self>, key: K, item: T, deadline: Instant) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            item,
            deadline,
            reply,
        };
        let first = {
            let mut queues = self.lock();
            match queues.get_mut(&key) {
                Some(waiting) => {
                    waiting.push(waiter);
                    None
                }
                None => {
                    queues.insert(key.clone(), Vec::new());
                    Some(waiter)
                }
            }
        };
        if let Some(first) = first {
            // Made before the task, so the key is released however the task ends, even if it
            // never runs.
            let driver = Driver {
                batches: Arc::clone(self),
                key: Some(key),
            };
            tokio::spawn(driver.run(vec![first]));
        }
        answer.await.ok()
    }
}

impl<K: Hash + Eq, T, R> Batches<K, T, R> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Vec<Waiter<T, R>>>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs one key's calls until nobody waits for it. Holds the key until then: if it ends
/// early (a panic in the call, or the runtime dropping the task), dropping it removes the
/// key's queue, so its waiters get `None` instead of waiting forever and the next request for
/// the key starts a new driver.
struct Driver<K: Hash + Eq, T, R> {
    batches: Arc<Batches<K, T, R>>,
    /// `None` once the key was released in the normal way.
    key: Option<K>,
}

impl<K, T, R> Driver<K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Send + 'static,
    R: Send + 'static,
{
    async fn run(mut self, mut batch: Vec<Waiter<T, R>>) {
        while let Some(key) = self.key.clone() {
            // Dropping a waiter whose deadline passed answers it `None` now.
            let now = Instant::now();
            batch.retain(|waiter| !waiter.reply.is_closed() && waiter.deadline > now);
            if let Some(deadline) = batch.iter().map(|waiter| waiter.deadline).min() {
                let (items, replies): (Vec<T>, Vec<_>) = batch
                    .drain(..)
                    .map(|waiter| (waiter.item, waiter.reply))
                    .unzip();
                let results = (self.batches.call)(key, items, deadline).await;
                for (reply, result) in replies.into_iter().zip(results) {
                    // A caller that gave up after its batch left has no use for its result.
                    let _ = reply.send(result);
                }
            }
            batch = self.next();
        }
    }

    /// The key's next batch; when nobody waits, removes the key under the same lock (so a
    /// request never joins a queue no call will serve) and releases it.
    fn next(&mut self) -> Vec<Waiter<T, R>> {
        let Some(key) = &self.key else {
            return Vec::new();
        };
        let mut queues = self.batches.lock();
        match queues.get_mut(key) {
            Some(waiting) if !waiting.is_empty() => {
                let take = waiting.len().min(self.batches.max);
                waiting.drain(..take).collect()
            }
            _ => {
                queues.remove(key);
                self.key = None;
                Vec::new()
            }
        }
    }
}

impl<K: Hash + Eq, T, R> Drop for Driver<K, T, R> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.batches.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    type Seen = Arc<Mutex<Vec<(&'static str, Vec<u32>)>>>;

    /// A call that records each batch as it starts, pauses, and answers each item doubled.
    fn doubling(seen: Seen) -> BatchCall<&'static str, u32, u32> {
        Box::new(move |key, items: Vec<u32>, _deadline| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                seen.lock().unwrap().push((key, items.clone()));
                tokio::time::sleep(Duration::from_millis(20)).await;
                items.into_iter().map(|item| item * 2).collect()
            })
        })
    }

    fn in_a_minute() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn submit_all(
        batches: &Arc<Batches<&'static str, u32, u32>>,
        requests: impl IntoIterator<Item = (&'static str, u32)>,
    ) -> Vec<tokio::task::JoinHandle<Option<u32>>> {
        requests
            .into_iter()
            .map(|(key, item)| {
                let batches = Arc::clone(batches);
                tokio::spawn(async move { batches.submit(key, item, in_a_minute()).await })
            })
            .collect()
    }

    #[tokio::test]
    async fn requests_arriving_during_a_call_share_the_next_one() {
        let seen = Seen::default();
        let batches = Arc::new(Batches::new(100, doubling(Arc::clone(&seen))));
        let tasks = submit_all(&batches, (0..10).map(|i| ("t", i)));
        for (i, task) in (0..).zip(tasks) {
            assert_eq!(task.await.unwrap(), Some(i * 2));
        }
        // The first goes alone; the nine that arrived meanwhile go together, in order.
        assert_eq!(
            *seen.lock().unwrap(),
            [("t", vec![0]), ("t", (1..10).collect())]
        );
        assert!(batches.lock().is_empty(), "no queue outlives its requests");
    }

    #[tokio::test]
    async fn keys_do_not_wait_for_each_other_and_batches_are_capped() {
        let seen = Seen::default();
        let batches = Arc::new(Batches::new(4, doubling(Arc::clone(&seen))));
        let requests = (0..10).map(|i| (if i == 1 { "other" } else { "t" }, i));
        for task in submit_all(&batches, requests) {
            assert!(task.await.unwrap().is_some());
        }
        // "other" starts while "t"'s first call is still in flight; "t"'s other eight follow
        // in batches of at most four.
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ("t", vec![0]),
                ("other", vec![1]),
                ("t", vec![2, 3, 4, 5]),
                ("t", vec![6, 7, 8, 9]),
            ]
        );
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_is_not_sent() {
        let seen = Seen::default();
        let batches = Arc::new(Batches::new(100, doubling(Arc::clone(&seen))));
        let first = submit_all(&batches, [("t", 1)]);
        tokio::task::yield_now().await;
        let mut queued = submit_all(&batches, [("t", 2), ("t", 3)]);
        tokio::task::yield_now().await;
        queued[0].abort();
        assert_eq!(first.into_iter().next().unwrap().await.unwrap(), Some(2));
        assert_eq!(queued.pop().unwrap().await.unwrap(), Some(6));
        assert_eq!(*seen.lock().unwrap(), [("t", vec![1]), ("t", vec![3])]);
    }

    #[tokio::test]
    async fn a_failed_driver_answers_none_and_the_key_recovers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let call: BatchCall<&'static str, u32, u32> = Box::new(move |_key, items: Vec<u32>, _| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(call != 0, "the first call fails");
                items
            })
        });
        let batches = Arc::new(Batches::new(100, call));
        let first = submit_all(&batches, [("t", 1)]);
        tokio::task::yield_now().await;
        let queued = submit_all(&batches, [("t", 2)]);
        for task in first.into_iter().chain(queued) {
            assert_eq!(task.await.unwrap(), None, "in or behind the failed call");
        }
        assert_eq!(batches.submit("t", 3, in_a_minute()).await, Some(3));
    }

    #[tokio::test]
    async fn a_call_is_bounded_by_its_earliest_deadline_and_the_late_are_not_sent() {
        let seen = Seen::default();
        let deadlines = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&deadlines);
        let inner = doubling(Arc::clone(&seen));
        let call: BatchCall<&'static str, u32, u32> = Box::new(move |key, items, deadline| {
            recorded.lock().unwrap().push(deadline);
            inner(key, items, deadline)
        });
        let batches = Arc::new(Batches::new(100, call));
        let first = submit_all(&batches, [("t", 1)]);
        tokio::task::yield_now().await;
        // Queued behind the first call (20 ms): one whose deadline passes meanwhile, and two
        // with time to spare.
        let soon = Instant::now() + Duration::from_millis(5);
        let later = in_a_minute();
        let queued: Vec<_> = [(2, later), (3, soon), (4, later - Duration::from_secs(1))]
            .into_iter()
            .map(|(item, deadline)| {
                let batches = Arc::clone(&batches);
                tokio::spawn(async move { batches.submit("t", item, deadline).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in first.into_iter().chain(queued) {
            answers.push(task.await.unwrap());
        }
        assert_eq!(answers, [Some(2), Some(4), None, Some(8)]);
        assert_eq!(*seen.lock().unwrap(), [("t", vec![1]), ("t", vec![2, 4])]);
        assert_eq!(
            deadlines.lock().unwrap()[1],
            later - Duration::from_secs(1),
            "the earliest deadline of those sent"
        );
    }
}
