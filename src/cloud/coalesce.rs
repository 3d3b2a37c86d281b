//! Request coalescing: concurrent lookups of single keys (volume ids,
//! instance ids, names) share one batched Describe call.
//!
//! The first caller's key goes out at once. Callers that arrive while a call
//! is in flight are queued and go out together in the next call, as soon as
//! the current one returns. So a burst of N lookups costs two calls, not N,
//! and a lone lookup pays no extra latency. Pollers that wake on shared ticks
//! (see [`crate::cloud::wait`]) are coalesced the same way.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::oneshot;

/// How long a poll-started call waits for the rest of its tick's pollers.
pub const GATHER: Duration = Duration::from_millis(5);

use super::error::{CloudError, CloudResult};

/// The batched call: the keys to look up, in, the values found, out (keys
/// that do not exist are simply absent).
pub type FetchFn<V> = Arc<
    dyn Fn(Vec<String>) -> Pin<Box<dyn Future<Output = CloudResult<HashMap<String, V>>> + Send>>
        + Send
        + Sync,
>;

type Waiter<V> = oneshot::Sender<CloudResult<Option<V>>>;

struct Queue<V> {
    waiters: HashMap<String, Vec<Waiter<V>>>,
    /// Order keys arrived in, so large queues are served first come first.
    order: Vec<String>,
    running: bool,
}

/// Coalesces lookups of one kind of object.
pub struct Coalescer<V> {
    queue: Arc<Mutex<Queue<V>>>,
    fetch: FetchFn<V>,
    max_batch: usize,
}

impl<V> Clone for Coalescer<V> {
    fn clone(&self) -> Self {
        Coalescer {
            queue: self.queue.clone(),
            fetch: self.fetch.clone(),
            max_batch: self.max_batch,
        }
    }
}

impl<V: Clone + Send + 'static> Coalescer<V> {
    /// A coalescer calling `fetch` with at most `max_batch` keys at a time.
    pub fn new(max_batch: usize, fetch: FetchFn<V>) -> Self {
        Coalescer {
            queue: Arc::new(Mutex::new(Queue {
                waiters: HashMap::new(),
                order: Vec::new(),
                running: false,
            })),
            fetch,
            max_batch: max_batch.max(1),
        }
    }

    /// Looks `key` up, sharing the call with concurrent callers.
    pub async fn get(&self, key: &str) -> CloudResult<Option<V>> {
        self.lookup(key, Duration::ZERO).await
    }

    /// Like [`get`](Self::get) for pollers woken by a shared tick: if this
    /// lookup starts a call, the call first waits `GATHER` so that the other
    /// pollers of the same tick (woken together, but scheduled one after
    /// another on a busy machine) make it into the same call.
    pub async fn get_polled(&self, key: &str) -> CloudResult<Option<V>> {
        self.lookup(key, GATHER).await
    }

    async fn lookup(&self, key: &str, gather: Duration) -> CloudResult<Option<V>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = crate::sync::lock(&self.queue);
            let entry = queue.waiters.entry(key.to_string()).or_default();
            if entry.is_empty() {
                queue.order.push(key.to_string());
            }
            queue.waiters.get_mut(key).expect("just inserted").push(tx);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            // A task, not this caller, drives the batches: if this caller is
            // cancelled (the CO hung up) the others must still be served.
            let drain = self.clone().drain(gather);
            if gather.is_zero() {
                tokio::spawn(drain);
            } else {
                tokio::spawn(super::wait::as_tick(drain));
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(CloudError::Other(
                "internal: coalesced lookup was dropped".into(),
            ))
        })
    }

    /// Serves queued keys batch by batch until the queue is empty.
    async fn drain(self, gather: Duration) {
        if !gather.is_zero() {
            tokio::time::sleep(gather).await;
        }
        // Let tasks that are already runnable queue their keys first: pollers
        // woken by the same tick become runnable together, and without this
        // the first of them would go out alone. This costs no time, only a
        // turn in the scheduler's queue.
        for _ in 0..2 {
            tokio::task::yield_now().await;
        }
        loop {
            let batch: Vec<(String, Vec<Waiter<V>>)> = {
                let mut queue = crate::sync::lock(&self.queue);
                if queue.order.is_empty() {
                    queue.running = false;
                    return;
                }
                let take = queue.order.len().min(self.max_batch);
                let keys: Vec<String> = queue.order.drain(..take).collect();
                keys.into_iter()
                    .map(|k| {
                        let waiters = queue.waiters.remove(&k).unwrap_or_default();
                        (k, waiters)
                    })
                    .collect()
            };
            let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
            tracing::debug!(keys = keys.len(), "coalesced lookup");
            let result = (self.fetch)(keys).await;
            for (key, waiters) in batch {
                let answer = match &result {
                    Ok(found) => Ok(found.get(&key).cloned()),
                    Err(e) => Err(e.clone()),
                };
                for waiter in waiters {
                    let _ = waiter.send(answer.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(calls: Arc<AtomicUsize>, delay_ms: u64) -> FetchFn<String> {
        Arc::new(move |keys: Vec<String>| {
            let calls = calls.clone();
            Box::pin(async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(keys
                    .into_iter()
                    .filter(|k| !k.starts_with("missing"))
                    .map(|k| (k.clone(), format!("value of {k}")))
                    .collect())
            })
        })
    }

    #[tokio::test]
    async fn burst_of_lookups_costs_two_calls() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Coalescer::new(500, counting(calls.clone(), 20));
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.get(&format!("vol-{i}")).await })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.await.unwrap().unwrap(), Some(format!("value of vol-{i}")));
        }
        // The first key goes at once; everything queued meanwhile shares
        // the next call (on a single-threaded runtime all 100 may even be
        // queued before the first call starts).
        let n = calls.load(Ordering::SeqCst);
        assert!((1..=2).contains(&n), "{n} calls for 100 lookups");
    }

    #[tokio::test]
    async fn missing_keys_are_none_and_batches_are_capped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Coalescer::new(3, counting(calls.clone(), 5));
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.get(&format!("missing-{i}")).await })
            })
            .collect();
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap(), None);
        }
        // 1 (first alone) + ceil(9 / 3) = 4 calls at least, never one per key.
        let n = calls.load(Ordering::SeqCst);
        assert!((4..10).contains(&n), "{n} calls");
    }

    #[tokio::test]
    async fn errors_reach_every_waiter_of_the_batch() {
        let fetch: FetchFn<String> =
            Arc::new(|_keys| Box::pin(async { Err(CloudError::Unavailable("EC2 down".into())) }));
        let c = Coalescer::new(10, fetch);
        let (a, b) = tokio::join!(c.get("a"), c.get("b"));
        assert_eq!(a, Err(CloudError::Unavailable("EC2 down".into())));
        assert_eq!(b, Err(CloudError::Unavailable("EC2 down".into())));
    }
}
