//! A channel's subscribers, each in a slot that is its key.

use std::sync::Arc;

use super::positions::Positions;
use crate::compress::Coding;
use crate::stream::StreamSender;

/// A subscriber: its stream, the sequence number of the last frame it was given (when it
/// subscribed: the last one published), and the coding its stream is compressed with.
pub(super) struct Sub {
    pub(super) stream: StreamSender,
    pub(super) sent: u64,
    pub(super) coding: Option<Coding>,
    /// The stream's positions and this channel's slot in them, when it was subscribed
    /// with [`Channel::subscribe_at`](super::Channel::subscribe_at).
    pub(super) pos: Option<(Arc<Positions>, usize)>,
}

/// The subscribers in slots, a subscriber's key being its slot; freed
/// slots are reused.
#[derive(Default)]
pub(super) struct Subscribers {
    pub(super) slots: Vec<Option<Sub>>,
    pub(super) free: Vec<usize>,
    pub(super) len: usize,
}

impl Subscribers {
    pub(super) fn insert(
        &mut self,
        stream: StreamSender,
        sent: u64,
        coding: Option<Coding>,
        pos: Option<(Arc<Positions>, usize)>,
    ) -> usize {
        self.len += 1;
        let sub = Some(Sub {
            stream,
            sent,
            coding,
            pos,
        });
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = sub;
                slot
            }
            None => {
                self.slots.push(sub);
                self.slots.len() - 1
            }
        }
    }

    /// Frees `slot` (if `queue`, the address of its stream's queue, is still what it
    /// holds: the slot may have been freed and reused since).
    pub(super) fn remove(&mut self, slot: usize, queue: Option<usize>) {
        let Some(entry) = self.slots.get_mut(slot) else {
            return;
        };
        match (&*entry, queue) {
            (Some(s), Some(q)) if s.stream.queue_addr() != q => return,
            (None, _) => return,
            _ => {}
        }
        *entry = None;
        self.free.push(slot);
        self.len -= 1;
    }

    pub(super) fn take_all(&mut self) -> Vec<StreamSender> {
        self.free = Vec::new();
        self.len = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .map(|s| s.stream)
            .collect()
    }
}
