//! Incremental `text/event-stream` parser that counts events the way the HTML spec's
//! EventSource does: lines end in CRLF, LF or CR; `data:` lines accumulate; an empty line
//! dispatches an event only if some `data` field was seen; `event` names the next event,
//! `id` sets the last event id (kept across events, ignored if it holds NUL); comments
//! and other fields are skipped. A server's framing quirks therefore cost it events here
//! exactly as in a browser.

/// Parser state carried between reads.
#[derive(Debug, Default)]
pub struct SseParser {
    /// A line split across reads.
    partial: Vec<u8>,
    /// The event's data so far (lines joined with `\n`).
    data: Vec<u8>,
    has_data: bool,
    /// The event type buffer (empty: `message`).
    event: Vec<u8>,
    /// The last event id buffer.
    id: Vec<u8>,
    /// The last read ended in CR: a leading LF in the next one belongs to that line end.
    after_cr: bool,
}

/// A dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event` field (empty for `message`).
    pub event: &'a [u8],
    /// The last event id at dispatch.
    pub id: &'a [u8],
    /// The data, lines joined with `\n`.
    pub data: &'a [u8],
}

impl SseParser {
    /// Parses `chunk`, calling `on_event` with each complete event's data.
    pub fn feed(&mut self, chunk: &[u8], on_event: &mut impl FnMut(&[u8])) {
        self.feed_events(chunk, &mut |e| on_event(e.data));
    }

    /// Parses `chunk`, calling `on_event` with each complete event.
    pub fn feed_events(&mut self, mut chunk: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
        }
        while let Some(eol) = memchr::memchr2(b'\n', b'\r', chunk) {
            if self.partial.is_empty() {
                self.line(&chunk[..eol], on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..eol]);
                self.line(&line, on_event);
                line.clear();
                self.partial = line; // keep the allocation
            }
            let crlf = chunk[eol] == b'\r';
            chunk = &chunk[eol + 1..];
            if crlf {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
        }
        self.partial.extend_from_slice(chunk);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            if self.has_data {
                on_event(SseEvent {
                    event: &self.event,
                    id: &self.id,
                    data: &self.data,
                });
            }
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]),
            ),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.extend_from_slice(value);
            }
            _ => {}
        }
    }
}

/// Reads the unsigned integer after `"key":` in a flat JSON object such as
/// `{"seq":12,"t":345}` without a JSON parser (this runs once per event, up to ~10^6/s).
pub fn json_u64(data: &[u8], key: &str) -> Option<u64> {
    let pat_len = key.len() + 3;
    let start = data.windows(pat_len).position(|w| {
        w[0] == b'"'
            && &w[1..=key.len()] == key.as_bytes()
            && w[key.len() + 1] == b'"'
            && w[key.len() + 2] == b':'
    })? + pat_len;
    let digits = data[start..].iter().skip_while(|b| b.is_ascii_whitespace());
    let mut value: u64 = 0;
    let mut any = false;
    for &b in digits.take_while(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8], step: usize) -> Vec<String> {
        let (mut p, mut out) = (SseParser::default(), Vec::new());
        for piece in input.chunks(step) {
            p.feed(piece, &mut |d| {
                out.push(String::from_utf8_lossy(d).into_owned())
            });
        }
        out
    }

    #[test]
    fn counts_events_per_spec_at_any_split() {
        let input = b": hi\n\nid: 1\nevent: x\ndata: a\ndata:b\n\nretry: 5\n\ndata\r\n\r\ndata: c\r\rdata: d\n\n";
        for step in 1..=input.len() {
            assert_eq!(events(input, step), ["a\nb", "", "c", "d"], "step {step}");
        }
    }

    #[test]
    fn events_carry_their_type_and_the_last_id() {
        let input = b"id: a-1\ndata: x\n\nevent: missed\ndata: y\n\nid: a\0b\ndata: z\n\n";
        let mut got = Vec::new();
        let mut p = SseParser::default();
        p.feed_events(input, &mut |e| {
            got.push((e.event.to_vec(), e.id.to_vec(), e.data.to_vec()))
        });
        let s = |b: &[u8]| b.to_vec();
        assert_eq!(
            got,
            [
                (s(b""), s(b"a-1"), s(b"x")),
                (s(b"missed"), s(b"a-1"), s(b"y")),
                (s(b""), s(b"a-1"), s(b"z")),
            ]
        );
    }

    #[test]
    fn reads_numbers_from_flat_json() {
        let d = br#"{"seq":42,"t":123456789012345}"#;
        assert_eq!(json_u64(d, "seq"), Some(42));
        assert_eq!(json_u64(d, "t"), Some(123_456_789_012_345));
        assert_eq!(json_u64(br#"{"i": 7}"#, "i"), Some(7));
        assert_eq!(json_u64(br#"{"t":"12"}"#, "t"), None);
        assert_eq!(json_u64(br#"{"x":1}"#, "i"), None);
    }
}
