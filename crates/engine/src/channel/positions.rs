//! One `Last-Event-ID` for a stream subscribed to several channels: a position per channel.
//!
//! Each channel's events carry that channel's ids. A stream subscribed (with
//! [`Channel::subscribe_at`](super::Channel::subscribe_at)) to two channels or more also
//! gets, after each piece a channel hands it, an event named `position` with empty data
//! whose id names the position of the stream in every channel (a browser takes the id and
//! dispatches nothing, as the data is empty; clients that dispatch it, such as the
//! `eventsource` package, give it to `position` listeners only, never to `onmessage`): `@` and the pairs `channel=id` in `application/x-www-form-urlencoded` form, e.g.
//! `@news=1765000000000-0&chat=1765000000001-3`. A reconnecting client sends it back, and
//! each channel resumes after its own position. An empty position means the channel had no
//! event when the stream subscribed: it resumes with all of its history.
//!
//! A channel's piece and the id frame after it are queued as one chunk, made and queued
//! under the positions' lock: the stream cannot end between them, and the last id frame
//! queued names the newest position in every channel and never an event the stream was
//! not given: no gap, no repeat. A last id without the `@` (a plain id: the connection was
//! cut inside such a chunk, or the stream read one channel when it left) resumes every
//! channel from that id, as for a stream with one channel.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// The positions of one stream (see the module doc).
#[derive(Debug)]
pub struct Positions {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    from: From,
    /// The stream's channels and its position in each.
    channels: Vec<(Arc<str>, String)>,
}

#[derive(Debug)]
enum From {
    Nothing,
    Plain(String),
    Each(Vec<(String, String)>),
}

impl Positions {
    /// Positions for a stream whose client sent `last_event_id`.
    pub fn new(last_event_id: Option<&str>) -> Arc<Positions> {
        let from = match last_event_id {
            None => From::Nothing,
            Some(id) => match id.strip_prefix('@') {
                Some(pairs) => From::Each(
                    form_urlencoded::parse(pairs.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect(),
                ),
                None => From::Plain(id.to_string()),
            },
        };
        Arc::new(Positions {
            state: Mutex::new(State {
                from,
                channels: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where channel `name` resumes: after this id (`Some("")`: from the start of its
    /// history), or live only (`None`).
    pub(super) fn resume(&self, name: &str) -> Option<String> {
        match &self.lock().from {
            From::Nothing => None,
            From::Plain(id) => Some(id.clone()),
            From::Each(pairs) => pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone()),
        }
    }

    /// Adds channel `name` at position `at`; returns its slot and what `queue` returned.
    /// `queue` is called under the lock with the id frame naming every position when the
    /// stream now has several channels, to queue it after the replay in one chunk.
    pub(super) fn add<R>(
        &self,
        name: &str,
        at: String,
        queue: impl FnOnce(Option<Bytes>) -> R,
    ) -> (usize, R) {
        let mut st = self.lock();
        st.channels.push((name.into(), at));
        let r = queue(frame(&st.channels));
        (st.channels.len() - 1, r)
    }

    /// Moves the channel in `slot` to `event`, the last event of a piece (none: the piece
    /// has no event), and calls `queue` under the lock with the id frame to queue in one
    /// chunk after that piece when the stream has several channels (see the module doc).
    /// The position moves whatever `queue` does: a stream that could not take the piece
    /// is gone.
    pub(super) fn advance<R>(
        &self,
        slot: usize,
        event: Option<&[u8]>,
        queue: impl FnOnce(Option<Bytes>) -> R,
    ) -> R {
        let mut st = self.lock();
        let moved = match (event.and_then(event_id), st.channels.get_mut(slot)) {
            (Some(id), Some(entry)) => {
                entry.1.clear();
                entry.1.push_str(id);
                true
            }
            _ => false,
        };
        queue(if moved { frame(&st.channels) } else { None })
    }

    /// The last id frame's value (for tests and diagnostics).
    pub fn last_event_id(&self) -> String {
        encode(&self.lock().channels)
    }
}

fn encode(channels: &[(Arc<str>, String)]) -> String {
    let mut s = form_urlencoded::Serializer::for_suffix(String::from("@"), 1);
    for (name, id) in channels {
        s.append_pair(name, id);
    }
    s.finish()
}

fn frame(channels: &[(Arc<str>, String)]) -> Option<Bytes> {
    (channels.len() > 1).then(|| {
        Bytes::from(format!(
            "event: position\nid: {}\ndata:\n\n",
            encode(channels)
        ))
    })
}

/// The id of an encoded event (its `id: ` line).
fn event_id(frame: &[u8]) -> Option<&str> {
    frame
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"id: "))
        .and_then(|id| std::str::from_utf8(id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_per_channel_round_trips_through_the_last_event_id() {
        let p = Positions::new(None);
        let mut queued = Vec::new();
        assert_eq!(p.add("news", "7".into(), |f| queued.extend(f)).0, 0);
        assert!(queued.is_empty(), "one channel: its own ids suffice");
        assert_eq!(p.add("a=b&c", String::new(), |f| queued.extend(f)).0, 1);
        p.advance(1, Some(b"event: x\nid: 12-0\ndata: id: no\n\n"), |f| {
            queued.extend(f)
        });
        p.advance(1, Some(b"data: no id\n\n"), |f| assert_eq!(f, None));
        p.advance(0, None, |f| assert_eq!(f, None));
        assert_eq!(
            queued,
            [
                "event: position\nid: @news=7&a%3Db%26c=\ndata:\n\n",
                "event: position\nid: @news=7&a%3Db%26c=12-0\ndata:\n\n"
            ]
        );
        let back = Positions::new(Some(&p.last_event_id()));
        assert_eq!(back.resume("news").as_deref(), Some("7"));
        assert_eq!(back.resume("a=b&c").as_deref(), Some("12-0"));
        assert_eq!(back.resume("other"), None);
        let plain = Positions::new(Some("5"));
        assert_eq!(plain.resume("news").as_deref(), Some("5"));
        assert_eq!(Positions::new(None).resume("news"), None);
    }
}
