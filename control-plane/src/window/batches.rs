//! Group commit per key: while one call for a key is in flight, later requests for the same
//! key wait, and all of them go together in the next call.
//!
//! A hot tenant's concurrent decisions then share one round trip and one run of the shared
//! work (trimming the window, counters, expiries) instead of queueing behind each other at
//! Redis one by one. A request that arrives while nothing is in flight for its key goes at
//! once, so a quiet tenant waits for nothing.

use std::collections::HashMap;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Decides one batch: the items in arrival order, one result per item, in the same order.
pub type BatchCall<K, T, R> =
    Box<dyn Fn(K, Vec<T>) -> Pin<Box<dyn Future<Output = Vec<R>> + Send>> + Send + Sync>;

pub struct Batches<K, T, R> {
    /// A key is present while a call for it is in flight; requests for it wait here.
    queues: Mutex<HashMap<K, Vec<Waiter<T, R>>>>,
    /// Most items in one call, to bound one call's time and reply.
    max: usize,
    call: BatchCall<K, T, R>,
}

struct Waiter<T, R> {
    item: T,
    reply: oneshot::Sender<R>,
}

impl<K, T, R> Batches<K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Copy + Send + 'static,
    R: Send + 'static,
{
    pub fn new(max: usize, call: BatchCall<K, T, R>) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            max: max.max(1),
            call,
        }
    }

    /// Submits `item` under `key` and waits for its result. `None` when the batch it was in
    /// answered no result for it (a malformed reply) or its call was abandoned (a panic, or the
    /// runtime shutting down).
    ///
    /// Calls run in a task of their own, so a caller that gives up (its future dropped) neither
    /// cancels the batch it is in nor stalls the requests queued behind it; a caller that gave
    /// up before its batch left is not sent at all.
    pub async fn submit(self: &Arc<Self>, key: K, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter { item, reply };
        let first = {
            let mut queues = self.lock();
            match queues.get_mut(&key) {
                Some(waiting) => {
                    waiting.push(waiter);
                    None
                }
                None => {
                    queues.insert(key.clone(), Vec::new());
                    Some(vec![waiter])
                }
            }
        };
        if let Some(first) = first {
            tokio::spawn(Arc::clone(self).drive(key, first));
        }
        answer.await.ok()
    }

    /// Runs the key's calls until nobody waits for it.
    async fn drive(self: Arc<Self>, key: K, mut batch: Vec<Waiter<T, R>>) {
        let mut driving = Driving {
            batches: &self,
            key: &key,
            done: false,
        };
        loop {
            batch.retain(|waiter| !waiter.reply.is_closed());
            if !batch.is_empty() {
                let items = batch.iter().map(|waiter| waiter.item).collect();
                let results = (self.call)(key.clone(), items).await;
                for (waiter, result) in batch.drain(..).zip(results) {
                    // The caller may have given up meanwhile; its result is then nobody's.
                    let _ = waiter.reply.send(result);
                }
            }
            match self.next(&key) {
                Some(next) => batch = next,
                None => {
                    driving.done = true;
                    return;
                }
            }
        }
    }

    /// The key's next batch, or `None` after removing the key (under the same lock, so a
    /// request never joins a queue that no call will serve).
    fn next(&self, key: &K) -> Option<Vec<Waiter<T, R>>> {
        let mut queues = self.lock();
        let waiting = queues.get_mut(key)?;
        if waiting.is_empty() {
            queues.remove(key);
            return None;
        }
        let take = waiting.len().min(self.max);
        Some(waiting.drain(..take).collect())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Vec<Waiter<T, R>>>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes the key's queue if its driver ends early (a panic in the call, or the runtime
/// dropping the task): its waiters then get `None` instead of waiting forever, and the next
/// request for the key starts a new driver.
struct Driving<'a, K: Hash + Eq, T, R> {
    batches: &'a Batches<K, T, R>,
    key: &'a K,
    done: bool,
}

impl<K: Hash + Eq, T, R> Drop for Driving<'_, K, T, R> {
    fn drop(&mut self) {
        if !self.done {
            let mut queues = self
                .batches
                .queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            queues.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A call that answers each item doubled, after a pause, and records each batch.
    fn doubling(batches_seen: Arc<Mutex<Vec<Vec<u32>>>>) -> BatchCall<&'static str, u32, u32> {
        Box::new(move |_key, items: Vec<u32>| {
            let seen = Arc::clone(&batches_seen);
            Box::pin(async move {
                seen.lock().unwrap().push(items.clone());
                tokio::time::sleep(Duration::from_millis(20)).await;
                items.into_iter().map(|item| item * 2).collect()
            })
        })
    }

    #[tokio::test]
    async fn requests_arriving_during_a_call_share_the_next_one() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Batches::new(100, doubling(Arc::clone(&seen))));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let batches = Arc::clone(&batches);
                tokio::spawn(async move { batches.submit("t", i).await })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Some(i as u32 * 2));
        }
        // The first goes alone; the nine that arrived meanwhile go together, in order.
        assert_eq!(
            *seen.lock().unwrap(),
            [vec![0], (1..10).collect::<Vec<_>>()]
        );
        assert!(batches.lock().is_empty(), "no queue outlives its requests");
    }

    #[tokio::test]
    async fn keys_do_not_wait_for_each_other_and_batches_are_capped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Batches::new(4, doubling(Arc::clone(&seen))));
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let batches = Arc::clone(&batches);
                let key = if i == 1 { "other" } else { "t" };
                tokio::spawn(async move { batches.submit(key, i).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        let mut sizes: Vec<usize> = seen.lock().unwrap().iter().map(Vec::len).collect();
        sizes.sort_unstable();
        // "other" alone and "t"'s first alone; "t"'s other eight in batches of at most four.
        assert_eq!(sizes, [1, 1, 4, 4]);
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_is_not_sent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Batches::new(100, doubling(Arc::clone(&seen))));
        let first = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.submit("t", 1).await }
        });
        tokio::task::yield_now().await;
        let gave_up = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.submit("t", 2).await }
        });
        let stayed = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.submit("t", 3).await }
        });
        tokio::task::yield_now().await;
        gave_up.abort();
        assert_eq!(first.await.unwrap(), Some(2));
        assert_eq!(stayed.await.unwrap(), Some(6));
        assert_eq!(*seen.lock().unwrap(), [vec![1], vec![3]]);
    }

    #[tokio::test]
    async fn a_failed_driver_answers_none_and_the_key_recovers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let call: BatchCall<&'static str, u32, u32> = Box::new(move |_key, items: Vec<u32>| {
            let call = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(call != 0, "the first call fails");
                items
            })
        });
        let batches = Arc::new(Batches::new(100, call));
        let first = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.submit("t", 1).await }
        });
        tokio::task::yield_now().await;
        let queued = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.submit("t", 2).await }
        });
        assert_eq!(first.await.unwrap(), None);
        assert_eq!(queued.await.unwrap(), None, "queued behind a failed call");
        assert_eq!(batches.submit("t", 3).await, Some(3));
    }
}
