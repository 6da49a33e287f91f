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
//! A position is advanced after the piece with that event was queued, and the id frame is
//! made and queued under the positions' lock, so the last one queued names the newest
//! position in every channel and never an event the stream was not given: no gap, no
//! repeat. A last id without the `@` (a plain id: the client left between an event and its
//! id frame, or the stream read one channel when it left) resumes every channel from that
//! id, as for a stream with one channel.

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

    /// Adds channel `name` at position `at`; returns its slot. When the stream now has
    /// several channels, `queue` is given the id frame naming every position.
    pub(super) fn add(&self, name: &str, at: String, queue: impl FnOnce(Bytes)) -> usize {
        let mut st = self.lock();
        st.channels.push((name.into(), at));
        if let Some(f) = frame(&st.channels) {
            queue(f);
        }
        st.channels.len() - 1
    }

    /// Moves the channel in `slot` to the event whose frame is `event`; when the stream has
    /// several channels, `queue` is given the id frame (under the lock: see the module doc)
    /// and its answer returned.
    pub(super) fn advance(
        &self,
        slot: usize,
        event: &[u8],
        queue: impl FnOnce(Bytes) -> bool,
    ) -> bool {
        let Some(id) = event_id(event) else {
            return true;
        };
        let mut st = self.lock();
        let Some(entry) = st.channels.get_mut(slot) else {
            return true;
        };
        entry.1.clear();
        entry.1.push_str(id);
        frame(&st.channels).map_or(true, queue)
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
        assert_eq!(p.add("news", "7".into(), |f| queued.push(f)), 0);
        assert!(queued.is_empty(), "one channel: its own ids suffice");
        assert_eq!(p.add("a=b&c", String::new(), |f| queued.push(f)), 1);
        let ok = p.advance(1, b"event: x\nid: 12-0\ndata: id: no\n\n", |f| {
            queued.push(f);
            true
        });
        assert!(ok);
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
