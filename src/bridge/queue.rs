//! Ordered work queues: one FIFO worker per portal (and per command room), spawned on demand
//! and retired when idle.
//!
//! Everything for one portal, from either side, runs strictly one item at a time in arrival
//! order, so the homeserver never sees two concurrent sends into one room; different portals run
//! in parallel. A bounded channel gives back-pressure to whoever enqueues (the transaction handler
//! or a network session). Retirement is race-free: an item is counted as pending under the
//! registry lock before it is sent, and a worker only retires, under the same lock, when nothing
//! is pending.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

struct Slot<T> {
    tx: mpsc::Sender<T>,
    pending: Arc<AtomicUsize>,
}

/// Runs `handler(key, item)` for each item, in order per key.
pub struct Queues<K, T> {
    slots: Arc<Mutex<HashMap<K, Slot<T>>>>,
    capacity: usize,
    idle: Duration,
    depth: prometheus::IntGauge,
    loaded: prometheus::IntGauge,
}

/// What a worker does with its items. `state` lives as long as the worker.
pub trait Worker<K, T>: Send + Sync + 'static {
    type State: Send + 'static;
    fn init(&self, key: &K) -> Self::State;
    fn handle<'a>(
        &'a self,
        key: &'a K,
        state: &'a mut Self::State,
        item: T,
    ) -> impl Future<Output = ()> + Send + 'a;
}

impl<K, T> Queues<K, T>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    T: Send + 'static,
{
    pub fn new(
        capacity: usize,
        idle: Duration,
        depth: prometheus::IntGauge,
        loaded: prometheus::IntGauge,
    ) -> Self {
        Self {
            slots: Arc::default(),
            capacity,
            idle,
            depth,
            loaded,
        }
    }

    /// Queues `item` for `key`, starting its worker if needed. Waits while the queue is full.
    pub async fn push<W: Worker<K, T>>(&self, worker: &Arc<W>, key: K, item: T) {
        let (tx, pending) = {
            let mut slots = self.slots.lock().expect("queue registry lock");
            let slot = slots
                .entry(key.clone())
                .or_insert_with(|| self.spawn(worker.clone(), key.clone()));
            slot.pending.fetch_add(1, Ordering::SeqCst);
            (slot.tx.clone(), slot.pending.clone())
        };
        self.depth.inc();
        if tx.send(item).await.is_err() {
            // Only possible if the worker task died (a panic in a handler): undo and report.
            pending.fetch_sub(1, Ordering::SeqCst);
            self.depth.dec();
            tracing::error!("portal worker is gone; item dropped");
        }
    }

    fn spawn<W: Worker<K, T>>(&self, worker: Arc<W>, key: K) -> Slot<T> {
        let (tx, mut rx) = mpsc::channel::<T>(self.capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let slots = self.slots.clone();
        let idle = self.idle;
        let depth = self.depth.clone();
        let loaded = self.loaded.clone();
        let task_pending = pending.clone();
        loaded.inc();
        tokio::spawn(async move {
            let mut state = worker.init(&key);
            loop {
                match tokio::time::timeout(idle, rx.recv()).await {
                    Ok(Some(item)) => {
                        worker.handle(&key, &mut state, item).await;
                        task_pending.fetch_sub(1, Ordering::SeqCst);
                        depth.dec();
                    }
                    Ok(None) => break,
                    Err(_) => {
                        let mut slots = slots.lock().expect("queue registry lock");
                        if task_pending.load(Ordering::SeqCst) == 0 {
                            slots.remove(&key);
                            break;
                        }
                    }
                }
            }
            loaded.dec();
        });
        Slot { tx, pending }
    }

    /// Items queued or running, all keys.
    pub fn depth(&self) -> i64 {
        self.depth.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        log: Mutex<Vec<(u32, u32)>>,
        running: Mutex<HashMap<u32, bool>>,
    }

    impl Worker<u32, u32> for Recorder {
        type State = u32;
        fn init(&self, _key: &u32) -> u32 {
            0
        }
        async fn handle(&self, key: &u32, state: &mut u32, item: u32) {
            {
                let mut running = self.running.lock().unwrap();
                assert!(
                    !running.get(key).copied().unwrap_or(false),
                    "two items of one key at once"
                );
                running.insert(*key, true);
            }
            *state += 1;
            tokio::time::sleep(Duration::from_millis(u64::from(item % 3))).await;
            self.running.lock().unwrap().insert(*key, false);
            self.log.lock().unwrap().push((*key, item));
        }
    }

    fn gauges() -> (prometheus::IntGauge, prometheus::IntGauge) {
        (
            prometheus::IntGauge::new("d", "d").unwrap(),
            prometheus::IntGauge::new("l", "l").unwrap(),
        )
    }

    #[tokio::test]
    async fn items_of_one_key_run_in_order_one_at_a_time_and_workers_retire() {
        let (depth, loaded) = gauges();
        let queues = Arc::new(Queues::new(
            4,
            Duration::from_millis(50),
            depth.clone(),
            loaded.clone(),
        ));
        let worker = Arc::new(Recorder {
            log: Mutex::default(),
            running: Mutex::default(),
        });
        let mut tasks = Vec::new();
        for key in 0..5u32 {
            let (queues, worker) = (queues.clone(), worker.clone());
            tasks.push(tokio::spawn(async move {
                for item in 0..40 {
                    queues.push(&worker, key, item).await;
                    if item % 13 == 0 {
                        // Let workers go idle and retire mid-stream.
                        tokio::time::sleep(Duration::from_millis(80)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        while depth.get() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let log = worker.log.lock().unwrap().clone();
        assert_eq!(log.len(), 200);
        for key in 0..5 {
            let items: Vec<u32> = log
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(items, (0..40).collect::<Vec<_>>(), "order of key {key}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(loaded.get(), 0, "idle workers retire");
    }
}
