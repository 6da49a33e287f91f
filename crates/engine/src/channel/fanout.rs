//! Handing published frames out to a channel's subscribers: the log of frames not yet
//! given to everyone, the sweep that writes them (straight to sockets, or into queues
//! under the slow-client policy), and the fan-out task that runs sweeps on the runtime.

use std::sync::Arc;

use bytes::Bytes;

use super::subscribers::{Subscribers, WsSubs};
use super::Channel;
use crate::compress::{Coding, CrcPart};
use crate::metrics::Metrics;
use crate::stream::Pushed;
use crate::ws::WsPushed;

/// Subscribers served by the fan-out task while it holds the channel's lock: a publish
/// waits for at most that many `send`s.
pub(super) const SWEEP_STEP: usize = 128;

/// How many subscribers ahead of the one it writes to a sweep prefetches.
const PREFETCH_AHEAD: usize = 2;

/// The fan-out task's side of the state.
#[derive(Default)]
pub(super) struct Fan {
    /// Where the task runs: the runtime of the first subscriber that came from one.
    pub(super) runtime: Option<tokio::runtime::Handle>,
    /// The frames some subscriber may not have been given yet, in order.
    pub(super) log: Vec<Frame>,
    pub(super) log_bytes: usize,
    /// The log's frames in one buffer (rebuilt when the log changes).
    pub(super) joined: Option<Joined>,
    /// The next subscriber slot the sweep serves.
    pub(super) cursor: usize,
    /// Every subscriber was given every frame up to this one (once the sweep in progress
    /// ends: it started after that frame was published).
    pub(super) swept: u64,
    /// A task is scheduled or running; it clears this when nothing is left.
    pub(super) running: bool,
}

pub(super) struct Frame {
    pub(super) seq: u64,
    pub(super) bytes: Bytes,
    pub(super) is_event: bool,
    /// An event's data as one WebSocket text frame (when it had WebSocket subscribers).
    pub(super) ws: Option<Bytes>,
    /// That WebSocket frame compressed for permessage-deflate (made when the first such
    /// subscriber is served, once however often the log is joined again).
    pub(super) ws_deflate: Option<Bytes>,
    /// The frame compressed for each coding asked so far: made once however often the
    /// log is joined again.
    pub(super) coded: Vec<Piece>,
}

/// A frame compressed on its own for one coding, and its plaintext's part of a gzip
/// trailer.
pub(super) struct Piece {
    coding: Coding,
    bytes: Bytes,
    part: CrcPart,
}

/// Frames in one buffer, so that a subscriber owed several gets them in one write.
pub(super) struct Joined {
    bytes: Bytes,
    marks: Vec<Mark>,
    /// The same frames compressed, for the codings subscribers asked for (made when the
    /// first of them is served).
    coded: Vec<Coded>,
    /// The frames' WebSocket frames (made when the first WebSocket subscriber is served),
    /// and the same compressed for sockets with permessage-deflate.
    ws: Option<WsJoined>,
    ws_deflate: Option<WsJoined>,
}

/// The log's WebSocket frames in one buffer.
struct WsJoined {
    bytes: Bytes,
    /// Per frame of the log: where its WebSocket frame starts (or would), and how many
    /// WebSocket frames there are from it to the end.
    at: Vec<(usize, u32)>,
}

impl WsJoined {
    /// The frames' WebSocket frames, compressed when `deflate` (see `ws/deflate.rs`).
    fn new(frames: &mut [Frame], deflate: bool) -> WsJoined {
        let mut all = bytes::BytesMut::new();
        let mut at = Vec::with_capacity(frames.len());
        for f in frames.iter_mut() {
            at.push((all.len(), 0));
            match &f.ws {
                Some(b) if deflate => {
                    let z = f
                        .ws_deflate
                        .get_or_insert_with(|| crate::ws::compress_frame(b));
                    all.extend_from_slice(z);
                }
                Some(b) => all.extend_from_slice(b),
                None => {}
            }
        }
        let mut n = 0;
        for (a, f) in at.iter_mut().zip(frames).rev() {
            n += u32::from(f.ws.is_some());
            a.1 = n;
        }
        WsJoined {
            bytes: all.freeze(),
            at,
        }
    }
}

/// The log's frames compressed for one coding, each on its own, in one buffer.
struct Coded {
    coding: Coding,
    bytes: Bytes,
    /// Per frame: where it is in `bytes`.
    spans: Vec<(usize, usize)>,
    /// gzip: per frame, its plaintext's part of the trailer and that of it and all the
    /// frames after it.
    parts: Vec<(CrcPart, CrcPart)>,
}

impl Coded {
    fn new(coding: Coding, frames: &mut [Frame]) -> crate::error::Result<Coded> {
        let gzip = coding.encoding == crate::compress::Encoding::Gzip;
        let mut bytes = bytes::BytesMut::new();
        let mut spans = Vec::with_capacity(frames.len());
        let mut parts = Vec::with_capacity(if gzip { frames.len() } else { 0 });
        for f in frames.iter_mut() {
            let piece = match f.coded.iter().position(|p| p.coding == coding) {
                Some(i) => &f.coded[i],
                None => {
                    f.coded.push(Piece {
                        coding,
                        bytes: coding.compress(&f.bytes)?,
                        part: if gzip {
                            CrcPart::of(&f.bytes)
                        } else {
                            CrcPart::EMPTY
                        },
                    });
                    &f.coded[f.coded.len() - 1]
                }
            };
            let start = bytes.len();
            bytes.extend_from_slice(&piece.bytes);
            spans.push((start, bytes.len()));
            if gzip {
                parts.push((piece.part, CrcPart::EMPTY));
            }
        }
        let mut after = CrcPart::EMPTY;
        for (own, from_here) in parts.iter_mut().rev() {
            after = own.then(after);
            *from_here = after;
        }
        Ok(Coded {
            coding,
            bytes: bytes.freeze(),
            spans,
            parts,
        })
    }
}

struct Mark {
    seq: u64,
    start: usize,
    end: usize,
    is_event: bool,
    /// Events from this frame to the end.
    events_from: u64,
}

impl Joined {
    fn new(frames: &[Frame]) -> Joined {
        let bytes = match frames {
            [one] => one.bytes.clone(),
            _ => {
                let mut all =
                    bytes::BytesMut::with_capacity(frames.iter().map(|f| f.bytes.len()).sum());
                for f in frames {
                    all.extend_from_slice(&f.bytes);
                }
                all.freeze()
            }
        };
        let mut marks = Vec::with_capacity(frames.len());
        let mut at = 0;
        for f in frames {
            marks.push(Mark {
                seq: f.seq,
                start: at,
                end: at + f.bytes.len(),
                is_event: f.is_event,
                events_from: 0,
            });
            at += f.bytes.len();
        }
        let mut events = 0;
        for m in marks.iter_mut().rev() {
            events += u64::from(m.is_event);
            m.events_from = events;
        }
        Joined {
            bytes,
            marks,
            coded: Vec::new(),
            ws: None,
            ws_deflate: None,
        }
    }
}

impl Fan {
    /// The log in one buffer, rebuilt if frames were logged since.
    pub(super) fn joined(&mut self) -> &mut Joined {
        if self
            .joined
            .as_ref()
            .is_some_and(|j| j.marks.len() != self.log.len())
        {
            self.joined = None;
        }
        self.joined.get_or_insert_with(|| Joined::new(&self.log))
    }

    /// The index in the joined log's `coded` of its frames compressed for `coding`, made
    /// if needed.
    fn coded(&mut self, coding: Coding) -> crate::error::Result<usize> {
        self.joined();
        let Some(joined) = self.joined.as_mut() else {
            unreachable!("joined just now")
        };
        if let Some(i) = joined.coded.iter().position(|c| c.coding == coding) {
            return Ok(i);
        }
        joined.coded.push(Coded::new(coding, &mut self.log)?);
        Ok(joined.coded.len() - 1)
    }

    pub(super) fn clear_log(&mut self, seq: u64) {
        self.log.clear();
        self.log_bytes = 0;
        self.joined = None;
        self.swept = seq;
    }
}

/// What handing out frames did, for the counters.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) delivered: u64,
    /// Bytes written straight to subscribers' sockets (queued bytes are counted by each
    /// connection when it writes them).
    pub(super) bytes_through: u64,
    pub(super) dropped: u64,
    pub(super) closed_slow: u64,
    pub(super) metrics: Option<Arc<Metrics>>,
}

impl Tally {
    /// Counts a chunk of `events` events queued under the policy; whether the subscriber
    /// is gone.
    fn pushed(&mut self, pushed: Pushed, events: u64) -> bool {
        match pushed {
            Pushed::Queued => self.delivered += events,
            Pushed::DroppedOldest(n) => {
                self.delivered += events;
                self.dropped += n;
            }
            Pushed::ClosedFull => {
                self.closed_slow += 1;
                return true;
            }
            Pushed::Closed => return true,
        }
        false
    }
}

/// `owed` (in the subscriber's coding, with its trailer part) followed by `id_frame`
/// coded the same way, as one piece.
fn with_id_frame(
    owed: &[u8],
    owed_part: Option<&CrcPart>,
    id_frame: Option<Bytes>,
    coding: Option<Coding>,
) -> crate::error::Result<(Bytes, Option<CrcPart>)> {
    let Some(id_frame) = id_frame else {
        return Ok((Bytes::copy_from_slice(owed), owed_part.copied()));
    };
    let (coded, part) = match coding {
        None => (id_frame, None),
        Some(c) => (c.compress(&id_frame)?, Some(CrcPart::of(&id_frame))),
    };
    let mut piece = bytes::BytesMut::with_capacity(owed.len() + coded.len());
    piece.extend_from_slice(owed);
    piece.extend_from_slice(&coded);
    let part = match (owed_part, part) {
        (Some(a), Some(b)) => Some(a.then(b)),
        (a, b) => a.copied().or(b),
    };
    Ok((piece.freeze(), part))
}

/// Gives the subscribers in `slots` what they were not given yet of `joined` (compressed,
/// for a subscriber with a coding): straight to the socket when `through` and nothing waits
/// in the subscriber's queue, else queued frame by frame under the slow-client policy.
/// Removes subscribers found closed.
pub(super) fn serve(
    subs: &mut Subscribers,
    fan: &mut Fan,
    slots: std::ops::Range<usize>,
    through: bool,
    drop_oldest: bool,
    tally: &mut Tally,
) {
    let Some(last) = fan.joined().marks.last().map(|m| m.seq) else {
        return;
    };
    let end = subs.slots.len().min(slots.end);
    for key in slots.start..end {
        // Each `send` below takes microseconds in the kernel: enough for the lock and state
        // of the subscriber after next to arrive in the cache meanwhile.
        if let Some(Some(ahead)) = subs.slots.get(key + PREFETCH_AHEAD) {
            ahead.stream.prefetch();
        }
        let Some(sub) = &mut subs.slots[key] else {
            continue;
        };
        if sub.sent >= last {
            continue;
        }
        let coded = match sub.coding.map(|c| fan.coded(c)) {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => {
                sub.stream.abort(e.to_string());
                subs.remove(key, None);
                continue;
            }
        };
        let Some(joined) = fan.joined.as_ref() else {
            return;
        };
        let coded = coded.map(|i| &joined.coded[i]);
        let first = joined.marks.partition_point(|m| m.seq <= sub.sent);
        sub.sent = last;
        if tally.metrics.is_none() {
            tally.metrics = sub.stream.metrics().cloned();
        }
        // What the subscriber is owed from the first frame it lacks: the bytes, and a
        // frame's bytes and trailer part by index.
        let (owed, owed_part) = match coded {
            None => (&joined.bytes[joined.marks[first].start..], None),
            Some(c) => (
                &c.bytes[c.spans[first].0..],
                c.parts.get(first).map(|p| &p.1),
            ),
        };
        let frame = |i: usize| -> (Bytes, Option<&CrcPart>) {
            match coded {
                None => {
                    let m = &joined.marks[i];
                    (joined.bytes.slice(m.start..m.end), None)
                }
                Some(c) => {
                    let (start, end) = c.spans[i];
                    (c.bytes.slice(start..end), c.parts.get(i).map(|p| &p.0))
                }
            }
        };
        let gone = match &sub.pos {
            None => {
                let direct = if through {
                    sub.stream.push_through(owed, owed_part)
                } else {
                    None
                };
                match direct {
                    Some(Pushed::Closed | Pushed::ClosedFull) => true,
                    Some(_) => {
                        tally.delivered += joined.marks[first].events_from;
                        tally.bytes_through += owed.len() as u64;
                        false
                    }
                    None => {
                        let mut gone = false;
                        for (i, m) in joined.marks.iter().enumerate().skip(first) {
                            let (bytes, part) = frame(i);
                            let pushed = sub.stream.push_with_policy(bytes, drop_oldest, part);
                            if tally.pushed(pushed, u64::from(m.is_event)) {
                                gone = true;
                                break;
                            }
                        }
                        gone
                    }
                }
            }
            Some((positions, slot)) => {
                // The owed frames and the id frame naming the stream's position in every
                // channel go as one chunk (see `positions`), under the policy as a whole.
                let last = joined.marks[first..].iter().rev().find(|m| m.is_event);
                let event = last.map(|m| &joined.bytes[m.start..m.end]);
                let (stream, coding) = (&sub.stream, sub.coding);
                positions.advance(*slot, event, |id_frame| {
                    let (bytes, part) = match with_id_frame(owed, owed_part, id_frame, coding) {
                        Ok(piece) => piece,
                        Err(e) => {
                            stream.abort(e.to_string());
                            return true;
                        }
                    };
                    let events = joined.marks[first].events_from;
                    if through {
                        match stream.push_through(&bytes, part.as_ref()) {
                            Some(Pushed::Closed | Pushed::ClosedFull) => return true,
                            Some(_) => {
                                tally.delivered += events;
                                tally.bytes_through += bytes.len() as u64;
                                return false;
                            }
                            None => {}
                        }
                    }
                    let pushed = stream.push_with_policy(bytes, drop_oldest, part.as_ref());
                    tally.pushed(pushed, events)
                })
            }
        };
        if gone {
            subs.remove(key, None);
        }
    }
}

/// Gives the WebSocket subscribers in `slots` the WebSocket frames of what they were not
/// given yet of the log: straight to the socket when `through` and nothing waits (see
/// `ws/socket.rs`), else queued frame by frame under the slow-client policy. Removes
/// subscribers found closed or cut.
pub(super) fn serve_ws(
    subs: &mut WsSubs,
    fan: &mut Fan,
    slots: std::ops::Range<usize>,
    through: bool,
    drop_oldest: bool,
    tally: &mut Tally,
) {
    let end = subs.slots.len().min(slots.end);
    if slots.start >= end {
        return;
    }
    let Some(last) = fan.joined().marks.last().map(|m| m.seq) else {
        return;
    };
    // The frames each kind of subscriber owed some needs: plain, compressed.
    let (mut plain, mut deflated) = (false, false);
    for sub in subs.slots[slots.start..end].iter().flatten() {
        if sub.sent < last {
            plain |= !sub.deflate;
            deflated |= sub.deflate;
        }
    }
    let log = &mut fan.log;
    let Some(joined) = fan.joined.as_mut() else {
        return;
    };
    if plain && joined.ws.is_none() {
        joined.ws = Some(WsJoined::new(log, false));
    }
    if deflated && joined.ws_deflate.is_none() {
        joined.ws_deflate = Some(WsJoined::new(log, true));
    }
    let joined = &*joined;
    for key in slots.start..end {
        // As in `serve`: the `send` below gives the prefetch time to land.
        if let Some(Some(ahead)) = subs.slots.get(key + PREFETCH_AHEAD) {
            ahead.sender.prefetch();
        }
        let Some(sub) = &mut subs.slots[key] else {
            continue;
        };
        if sub.sent >= last {
            continue;
        }
        let ws = match (sub.deflate, &joined.ws, &joined.ws_deflate) {
            (false, Some(ws), _) | (true, _, Some(ws)) => ws,
            _ => continue,
        };
        let first = joined.marks.partition_point(|m| m.seq <= sub.sent);
        sub.sent = last;
        let (start, events) = ws.at[first];
        if events == 0 {
            continue;
        }
        let direct = if through {
            sub.sender.push_through(&ws.bytes, start)
        } else {
            None
        };
        let gone = match direct {
            Some(WsPushed::Closed) => true,
            Some(_) => {
                tally.delivered += u64::from(events);
                false
            }
            None => {
                // Frame by frame, each under the slow-client policy.
                let mut gone = false;
                for i in first..ws.at.len() {
                    let (from, n) = ws.at[i];
                    let to = ws.at.get(i + 1).map_or(ws.bytes.len(), |a| a.0);
                    if from == to || n == 0 {
                        continue;
                    }
                    let frame = ws.bytes.slice(from..to);
                    match sub.sender.push_frame(&frame, 1, drop_oldest) {
                        WsPushed::Through | WsPushed::Queued => tally.delivered += 1,
                        WsPushed::DroppedOldest(d) => {
                            tally.delivered += 1;
                            tally.dropped += d;
                        }
                        WsPushed::Dropped(d) => tally.dropped += d,
                        WsPushed::ClosedFull => {
                            tally.closed_slow += 1;
                            gone = true;
                            break;
                        }
                        WsPushed::Closed => {
                            gone = true;
                            break;
                        }
                    }
                }
                gone
            }
        };
        if gone {
            subs.remove(key);
        }
    }
}

/// The fan-out task of a channel: sweeps the subscribers until a sweep finds nothing new
/// was published while it ran. If it is dropped unfinished (its runtime shut down), its
/// drop hands out what is left, so nothing published is lost.
pub(super) struct FanOut {
    pub(super) ch: Channel,
    pub(super) done: bool,
}

impl FanOut {
    pub(super) async fn run(mut self) {
        let ch = &self.ch;
        let drop_oldest = ch.drop_oldest();
        loop {
            let mut tally = Tally::default();
            {
                let mut st = ch.lock();
                let st = &mut *st;
                let fan = &mut st.fan;
                let sse = st.subs.slots.len();
                if fan.cursor >= sse + st.ws.slots.len() {
                    // A sweep ended (or none ran): everyone has everything up to `swept`.
                    let swept = fan.swept;
                    let kept = fan.log.partition_point(|f| f.seq <= swept);
                    if kept > 0 {
                        fan.log_bytes -=
                            fan.log[..kept].iter().map(|f| f.bytes.len()).sum::<usize>();
                        fan.log.drain(..kept);
                        fan.joined = None;
                    }
                    if fan.log.is_empty() {
                        fan.running = false;
                        self.done = true;
                        return;
                    }
                    fan.swept = st.seq;
                    fan.cursor = 0;
                }
                let from = fan.cursor;
                fan.cursor = from.saturating_add(SWEEP_STEP);
                // Slots past the SSE subscribers' are the WebSocket subscribers'.
                let step = from..from + SWEEP_STEP;
                serve(
                    &mut st.subs,
                    fan,
                    step.clone(),
                    true,
                    drop_oldest,
                    &mut tally,
                );
                let ws = step.start.saturating_sub(sse)..step.end.saturating_sub(sse);
                serve_ws(&mut st.ws, fan, ws, true, drop_oldest, &mut tally);
            }
            ch.count(tally);
            // Lets the runtime's other tasks (and its I/O) in between steps.
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let ch = &self.ch;
        let tally = {
            let mut st = ch.lock();
            st.fan.running = false;
            ch.drain(&mut st)
        };
        ch.count(tally);
    }
}
