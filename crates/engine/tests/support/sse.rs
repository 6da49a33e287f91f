//! An SSE parser written from the WHATWG HTML specification, section "Interpreting an
//! event stream", independent of the engine's encoder:
//!
//! * the stream is UTF-8 (decoded with replacement), a leading U+FEFF is ignored;
//! * lines end with CRLF, LF or CR (a CR at the end of one chunk and an LF at the start
//!   of the next are one line ending);
//! * a blank line dispatches the event; a line starting with `:` is a comment;
//! * otherwise `field:value`, with one leading space of the value removed, or a whole
//!   line as a field name with an empty value;
//! * `event` sets the event type buffer, `data` appends value + LF to the data buffer,
//!   `id` sets the last event ID buffer unless the value contains NUL, `retry` sets the
//!   reconnection time if the value is all ASCII digits; other fields are ignored;
//! * dispatch: if the data buffer is empty, reset and dispatch nothing; else remove one
//!   trailing LF, the type is the event type buffer or `message` if empty, the event's
//!   `lastEventId` is the last event ID buffer (which persists between events);
//! * at the end of the stream an incomplete event is discarded.

/// An event as a browser's `EventSource` would dispatch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The event type (`message` when no name was given).
    pub event_type: String,
    /// The data, lines joined with LF.
    pub data: String,
    /// The last event ID at dispatch time.
    pub last_event_id: String,
}

/// An incremental parser: feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct Parser {
    pending: Vec<u8>,
    started: bool,
    /// The previous chunk ended with CR: an LF starting the next one belongs to it.
    after_cr: bool,
    data: String,
    event_type: String,
    last_event_id: String,
    /// The reconnection time from the last valid `retry` field.
    pub reconnection_time: Option<u64>,
    /// Comment lines seen (the text after the colon), for tests of heartbeats.
    pub comments: Vec<String>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Parses a whole stream at once.
    pub fn parse_all(bytes: &[u8]) -> (Vec<Dispatched>, Parser) {
        let mut p = Parser::new();
        let events = p.feed(bytes);
        (events, p)
    }

    /// Feeds the next bytes of the stream; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Dispatched> {
        self.pending.extend_from_slice(bytes);
        if !self.started {
            // The BOM check needs the first three bytes (or proof that they differ).
            let bom = [0xEF, 0xBB, 0xBF];
            let n = self.pending.len().min(3);
            if self.pending[..n] == bom[..n] && n < 3 {
                return Vec::new();
            }
            if self.pending.starts_with(&bom) {
                self.pending.drain(..3);
            }
            self.started = true;
        }
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        let buf = std::mem::take(&mut self.pending);
        while i < buf.len() {
            match buf[i] {
                b'\n' if self.after_cr && i == start => {
                    // The LF of a CRLF split across two feeds.
                    self.after_cr = false;
                    i += 1;
                    start = i;
                }
                b'\n' => {
                    self.after_cr = false;
                    self.line(&buf[start..i], &mut out);
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    self.after_cr = false;
                    self.line(&buf[start..i], &mut out);
                    i += 1;
                    if i < buf.len() {
                        if buf[i] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.after_cr = true;
                    }
                    start = i;
                }
                _ => {
                    self.after_cr = false;
                    i += 1;
                }
            }
        }
        self.pending = buf[start..].to_vec();
        out
    }

    fn line(&mut self, raw: &[u8], out: &mut Vec<Dispatched>) {
        let line = String::from_utf8_lossy(raw);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.to_string());
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id with NUL is ignored.
            "id" if !value.contains('\0') => self.last_event_id = value.to_string(),
            // Only ASCII digits set the reconnection time.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // (A number too large for u64 keeps the previous time.)
                if let Ok(ms) = value.parse() {
                    self.reconnection_time = Some(ms);
                }
            }
            // Unknown fields, ignored ids and invalid retries.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Dispatched>) {
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event_type = match std::mem::take(&mut self.event_type) {
            t if t.is_empty() => "message".to_string(),
            t => t,
        };
        out.push(Dispatched {
            event_type,
            data,
            last_event_id: self.last_event_id.clone(),
        });
    }
}
