//! The replay history of a channel: a ring of encoded frames bounded by count, bytes and
//! (optionally) age.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

pub(super) struct Entry {
    pub(super) id: String,
    pub(super) frame: Bytes,
    at: Instant,
}

pub(super) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    max_age: Option<Duration>,
}

/// Where a subscriber's last event id falls in the history.
pub(super) enum Resume<'a> {
    /// Found: these entries follow it (possibly none).
    After(std::collections::vec_deque::Iter<'a, Entry>),
    /// Not in history (too old, or unknown): everything history holds follows.
    Missed(std::collections::vec_deque::Iter<'a, Entry>),
}

impl History {
    pub(super) fn new(max_count: usize, max_bytes: usize, max_age: Option<Duration>) -> Self {
        History {
            entries: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
            max_age,
        }
    }

    pub(super) fn push(&mut self, id: String, frame: Bytes) {
        if self.max_count == 0 || frame.len() > self.max_bytes {
            return;
        }
        self.bytes += frame.len();
        self.entries.push_back(Entry {
            id,
            frame,
            at: Instant::now(),
        });
        while self.entries.len() > self.max_count || self.bytes > self.max_bytes {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.frame.len();
        }
    }

    pub(super) fn expire(&mut self) {
        let Some(age) = self.max_age else { return };
        let now = Instant::now();
        while self
            .entries
            .front()
            .is_some_and(|e| now.duration_since(e.at) > age)
        {
            self.pop_front();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn oldest_id(&self) -> Option<&str> {
        self.entries.front().map(|e| e.id.as_str())
    }

    pub(super) fn newest_id(&self) -> Option<&str> {
        self.entries.back().map(|e| e.id.as_str())
    }

    /// Everything history holds, as events that follow.
    pub(super) fn all(&self) -> Resume<'_> {
        Resume::After(self.entries.iter())
    }

    pub(super) fn resume(&self, last_id: &str) -> Resume<'_> {
        // Newest first: a reconnecting client is usually only a few events behind.
        match self.entries.iter().rposition(|e| e.id == last_id) {
            Some(pos) => Resume::After(self.entries.range(pos + 1..)),
            None => Resume::Missed(self.entries.iter()),
        }
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// A new channel's epoch: its creation time in milliseconds and three random digits, in
/// base 36 (11 characters until the year 5188).
pub(super) fn epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // std's per-process random hasher keys: a fresh pair for every `RandomState`.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 36u64.pow(3);
    format!("{}{:0>3}", base36(ms), base36(random))
}

fn base36(mut n: u64) -> String {
    let mut digits = Vec::new();
    loop {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(it: impl Iterator<Item = &'static Entry>) -> Vec<String> {
        it.map(|e| e.id.clone()).collect()
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let mut h = History::new(3, 1000, None);
        for i in 0..5 {
            h.push(i.to_string(), Bytes::from(vec![b'x'; 10]));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.oldest_id(), Some("2"));
        let mut h = History::new(100, 25, None);
        for i in 0..5 {
            h.push(i.to_string(), Bytes::from(vec![b'x'; 10]));
        }
        assert_eq!(h.len(), 2);
        h.push("big".into(), Bytes::from(vec![b'x'; 26]));
        assert_eq!(h.len(), 2, "a frame larger than the byte bound is not kept");
    }

    #[test]
    fn resume_after_known_id_or_report_missed() {
        let h: &'static mut History = Box::leak(Box::new(History::new(10, 1000, None)));
        for i in 0..4 {
            h.push(i.to_string(), Bytes::from_static(b"f"));
        }
        match h.resume("1") {
            Resume::After(it) => assert_eq!(ids(it), vec!["2", "3"]),
            Resume::Missed(_) => panic!("1 is in history"),
        }
        match h.resume("3") {
            Resume::After(it) => assert_eq!(ids(it).len(), 0),
            Resume::Missed(_) => panic!(),
        }
        match h.resume("nope") {
            Resume::Missed(it) => assert_eq!(ids(it), vec!["0", "1", "2", "3"]),
            Resume::After(_) => panic!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_by_age() {
        let mut h = History::new(10, 1000, Some(Duration::from_secs(5)));
        h.push("a".into(), Bytes::from_static(b"f"));
        tokio::time::advance(Duration::from_secs(3)).await;
        h.push("b".into(), Bytes::from_static(b"f"));
        tokio::time::advance(Duration::from_secs(3)).await;
        h.expire();
        assert_eq!(h.oldest_id(), Some("b"));
    }
}
