//! A batch queue for handing work to a single-threaded consumer (a JS event loop).
//!
//! Producers [`push`](Batch::push) from any thread; only the push that finds the batch idle
//! is told to wake the consumer, so under load one wake-up carries many items. The consumer
//! [`take`](Batch::take)s everything queued so far when it runs.

use std::sync::Mutex;

/// Items waiting for the consumer, and whether a wake-up is already on its way.
#[derive(Debug)]
pub struct Batch<T> {
    state: Mutex<(Vec<T>, bool)>,
    /// The consumer's vector, swapped with the producers' at each take: both keep their
    /// capacity, so a steady load pushes without growing a vector batch after batch.
    spare: Mutex<Vec<T>>,
}

/// The most items a vector keeps room for between batches.
const KEPT_CAPACITY: usize = 1024;

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            state: Mutex::new((Vec::new(), false)),
            spare: Mutex::new(Vec::new()),
        }
    }
}

impl<T> Batch<T> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<T>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an item. Returns `true` when the caller must wake the consumer (no wake-up
    /// is pending); `false` when one already is and will take this item too.
    pub fn push(&self, item: T) -> bool {
        let mut st = self.lock();
        st.0.push(item);
        !std::mem::replace(&mut st.1, true)
    }

    /// Takes every queued item and marks the consumer idle, so the next push wakes it.
    pub fn take(&self) -> Vec<T> {
        let mut st = self.lock();
        st.1 = false;
        std::mem::take(&mut st.0)
    }

    /// Hands every queued item to `f` and marks the consumer idle, so the next push wakes
    /// it. Unlike [`take`](Self::take), allocates nothing in a steady state.
    pub fn drain_with<R>(&self, f: impl FnOnce(std::vec::Drain<'_, T>) -> R) -> R {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.capacity() > KEPT_CAPACITY {
            *spare = Vec::new();
        }
        {
            let mut st = self.lock();
            st.1 = false;
            std::mem::swap(&mut st.0, &mut *spare);
        }
        f(spare.drain(..))
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
        assert_eq!(b.drain_with(|d| d.count()), 0);
        for round in 0..3 {
            assert!(b.push(round * 10));
            assert!(!b.push(round * 10 + 1));
            let got = b.drain_with(|d| d.collect::<Vec<_>>());
            assert_eq!(got, vec![round * 10, round * 10 + 1]);
        }
        // From the second batch on, both vectors have room: pushes no longer grow one.
        assert!(b.lock().0.capacity() >= 2);
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
}
