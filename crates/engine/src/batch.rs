//! A batch queue for handing work to a single-threaded consumer (a JS event loop).
//!
//! Producers [`push`](Batch::push) from any thread; only the push that finds the batch idle
//! is told to wake the consumer, so under load one wake-up carries many items. The consumer
//! [`take`](Batch::take)s everything queued so far when it runs. Items the consumer can
//! do without (log entries) are pushed with [`push_lossy`](Batch::push_lossy): past a
//! limit of them queued they are counted instead, so a consumer that falls behind does not
//! make the queue grow without bound.

use std::sync::Mutex;

/// Items waiting for the consumer, and whether a wake-up is already on its way.
#[derive(Debug)]
pub struct Batch<T> {
    state: Mutex<State<T>>,
    /// The consumer's vector, swapped with the producers' at each take: both keep their
    /// capacity, so a steady load pushes without growing a vector batch after batch.
    spare: Mutex<Vec<T>>,
}

#[derive(Debug)]
struct State<T> {
    items: Vec<T>,
    /// A wake-up is on its way.
    waking: bool,
    /// Items of `items` pushed with `push_lossy`.
    lossy: u32,
    /// Lossy items dropped since the last drain.
    dropped: u64,
}

/// The most items a vector keeps room for between batches.
const KEPT_CAPACITY: usize = 1024;

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            state: Mutex::new(State {
                items: Vec::new(),
                waking: false,
                lossy: 0,
                dropped: 0,
            }),
            spare: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Batch<T> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item. Returns `true` when the caller must wake the consumer (no wake-up
    /// is pending); `false` when one already is and will take this item too.
    pub fn push(&self, item: T) -> bool {
        let mut st = self.lock();
        st.items.push(item);
        !std::mem::replace(&mut st.waking, true)
    }

    /// Queues an item unless `limit` items pushed this way are already waiting; then it is
    /// dropped and counted ([`drain_with`](Self::drain_with) reports the count). Returns
    /// `Some` as [`push`](Self::push) does, `None` when the item was dropped (a wake-up is
    /// then already pending).
    pub fn push_lossy(&self, item: T, limit: u32) -> Option<bool> {
        let mut st = self.lock();
        if st.lossy >= limit {
            st.dropped += 1;
            return None;
        }
        st.lossy += 1;
        st.items.push(item);
        Some(!std::mem::replace(&mut st.waking, true))
    }

    /// Takes every queued item and marks the consumer idle, so the next push wakes it.
    pub fn take(&self) -> Vec<T> {
        let mut st = self.lock();
        st.waking = false;
        st.lossy = 0;
        std::mem::take(&mut st.items)
    }

    /// Hands every queued item to `f`, with the number of lossy items dropped since the
    /// last drain, and marks the consumer idle, so the next push wakes it. Unlike
    /// [`take`](Self::take), allocates nothing in a steady state.
    pub fn drain_with<R>(&self, f: impl FnOnce(std::vec::Drain<'_, T>, u64) -> R) -> R {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.capacity() > KEPT_CAPACITY {
            *spare = Vec::new();
        }
        let dropped = {
            let mut st = self.lock();
            st.waking = false;
            st.lossy = 0;
            std::mem::swap(&mut st.items, &mut *spare);
            std::mem::take(&mut st.dropped)
        };
        f(spare.drain(..), dropped)
    }

    /// Marks the pending wake-up as failed (the consumer is gone) and returns the items,
    /// so the caller can answer them.
    pub fn cancel(&self) -> Vec<T> {
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_push_after_a_take_wakes() {
        let b = Batch::new();
        assert!(b.push(1));
        assert!(!b.push(2));
        assert!(!b.push(3));
        assert_eq!(b.take(), vec![1, 2, 3]);
        assert!(b.push(4));
        assert_eq!(b.cancel(), vec![4]);
        assert!(b.take().is_empty());
    }

    #[test]
    fn drain_with_hands_out_in_order_and_keeps_the_vectors() {
        let b = Batch::new();
        assert_eq!(b.drain_with(|d, _| d.count()), 0);
        for round in 0..3 {
            assert!(b.push(round * 10));
            assert!(!b.push(round * 10 + 1));
            let got = b.drain_with(|d, _| d.collect::<Vec<_>>());
            assert_eq!(got, vec![round * 10, round * 10 + 1]);
        }
        // From the second batch on, both vectors have room: pushes no longer grow one.
        assert!(b.lock().items.capacity() >= 2);
        assert!(b.spare.lock().unwrap().capacity() >= 2);
    }

    #[test]
    fn concurrent_pushes_lose_nothing_and_wake_once_per_take() {
        let b = std::sync::Arc::new(Batch::new());
        let wakes = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let b = b.clone();
                let wakes = &wakes;
                s.spawn(move || {
                    for i in 0..1000 {
                        if b.push(t * 1000 + i) {
                            wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        let mut all = b.take();
        all.sort_unstable();
        assert_eq!(all, (0..4000).collect::<Vec<_>>());
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn lossy_items_stop_at_the_limit_and_are_counted() {
        let b = Batch::new();
        assert_eq!(b.push_lossy(0, 3), Some(true));
        assert_eq!(b.push_lossy(1, 3), Some(false));
        // Other items are not limited, nor counted against the limit.
        assert!(!b.push(100));
        assert_eq!(b.push_lossy(2, 3), Some(false));
        assert_eq!(b.push_lossy(3, 3), None);
        assert_eq!(b.push_lossy(4, 3), None);
        assert!(!b.push(101));
        let (got, dropped) = b.drain_with(|d, dropped| (d.collect::<Vec<_>>(), dropped));
        assert_eq!(got, vec![0, 1, 100, 2, 101]);
        assert_eq!(dropped, 2);
        // A drain makes room again and resets the count.
        assert_eq!(b.push_lossy(5, 3), Some(true));
        assert_eq!(b.drain_with(|d, dropped| (d.count(), dropped)), (1, 0));
        // So does a take.
        for i in 0..3 {
            b.push_lossy(i, 3);
        }
        assert_eq!(b.take().len(), 3);
        assert_eq!(b.push_lossy(9, 3), Some(true));
    }
}
