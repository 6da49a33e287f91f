//! A channel's subscribers, each in a slot that is its key.

use std::sync::Arc;

use bytes::Bytes;

use super::positions::Positions;
use crate::compress::Coding;
use crate::stream::StreamSender;
use crate::ws::WsSender;

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

/// A WebSocket subscriber: its sender and the sequence number of the last frame it was
/// given.
pub(super) struct WsSub {
    pub(super) sender: WsSender,
    pub(super) sent: u64,
    /// The socket takes compressed frames (permessage-deflate).
    pub(super) deflate: bool,
}

/// The WebSocket subscribers in slots, as [`Subscribers`].
#[derive(Default)]
pub(super) struct WsSubs {
    pub(super) slots: Vec<Option<WsSub>>,
    free: Vec<usize>,
    pub(super) len: usize,
}

impl WsSubs {
    pub(super) fn insert(&mut self, sender: WsSender, sent: u64, deflate: bool) {
        self.len += 1;
        let sub = Some(WsSub {
            sender,
            sent,
            deflate,
        });
        match self.free.pop() {
            Some(slot) => self.slots[slot] = sub,
            None => self.slots.push(sub),
        }
    }

    pub(super) fn remove(&mut self, slot: usize) {
        if let Some(entry @ Some(_)) = self.slots.get_mut(slot) {
            *entry = None;
            self.free.push(slot);
            self.len -= 1;
        }
    }

    /// Removes the subscriber whose sender is `sender`'s socket.
    pub(super) fn remove_sender(&mut self, sender: &WsSender) {
        let found = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.sender.same(sender)));
        if let Some(slot) = found {
            self.remove(slot);
        }
    }

    pub(super) fn take_all(&mut self) -> Vec<WsSender> {
        self.free = Vec::new();
        self.len = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .map(|s| s.sender)
            .collect()
    }
}

/// `data` as one unmasked WebSocket text frame (what a server sends), the same bytes for
/// every subscriber.
pub(super) fn ws_text_frame(data: &str) -> Bytes {
    use tungstenite::protocol::frame::coding::Data;
    let mut out = Vec::new();
    crate::ws::frame_into(
        Bytes::copy_from_slice(data.as_bytes()),
        Data::Text,
        None,
        &mut out,
    );
    Bytes::from(out)
}

impl super::Channel {
    /// Adds a WebSocket subscriber (see [`WsSender::subscribe`](crate::ws::WsSender::subscribe)):
    /// it receives the events published from now on, from the fan-out as SSE subscribers
    /// do. A closed channel closes the socket normally.
    pub(crate) fn subscribe_ws(&self, socket: &crate::ws::WsSender) {
        let deflate = socket.deflates();
        let mut st = self.lock();
        if st.closed {
            drop(st);
            socket.end();
            return;
        }
        if st.fan.runtime.is_none() {
            st.fan.runtime = tokio::runtime::Handle::try_current().ok();
        }
        let sent = st.seq;
        st.ws.insert(socket.clone(), sent, deflate);
    }

    /// Removes the WebSocket subscriber with this id.
    pub(crate) fn unsubscribe_ws(&self, sender: &WsSender) {
        self.lock().ws.remove_sender(sender);
    }
}
