//! The broadcast scenarios' decoding, off the reading thread: subscribers' body bytes go,
//! stamped when read, to one thread that inflates (`--decode gzip`), parses SSE (or takes
//! each chunk as one event's data: WebSocket messages, [`Format::Messages`]) and records
//! sequence and latency per subscriber.
//!
//! The reader then only reads and stamps, so its read times stay close to the arrivals
//! even when decoding costs more than a core's spare time (10,000 gzip streams). The
//! decoding thread runs at SCHED_IDLE on any CPU: it takes only time no other thread wants,
//! so it never delays the server or the reader, and its backlog (bounded) waits for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{json, Value};

use super::conn::Stamp;
use super::round;
use crate::sse::{json_u64, SseParser};
use crate::stats::Histogram;

/// Bytes read but not yet decoded past which the run fails rather than grow further.
const MAX_BACKLOG: usize = 1 << 30;

/// What a subscriber's chunks are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An SSE body, plain.
    Sse,
    /// An SSE body, gzip-coded.
    SseGzip,
    /// Whole messages, each one event's data (WebSocket text frames).
    Messages,
}

/// One read's bytes of one subscriber's body.
struct Chunk {
    id: u32,
    /// Read inside the measured window.
    measured: bool,
    at: Stamp,
    bytes: Vec<u8>,
}

/// The reading side: hands chunks to the decoding thread.
pub struct Decode {
    tx: Option<mpsc::Sender<Chunk>>,
    backlog: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Stats>>,
}

impl Decode {
    /// Starts the decoding thread for `n` subscribers whose chunks are `format`.
    pub fn start(n: usize, format: Format) -> Self {
        let (tx, rx) = mpsc::channel::<Chunk>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let left = backlog.clone();
        let thread = std::thread::Builder::new()
            .name("decode".into())
            .spawn(move || {
                // Best effort: without them the thread still decodes, at normal priority.
                let _ = crate::sys::run_when_idle_on_any_cpu();
                let mut subs: Vec<Sub> = (0..n).map(|_| Sub::new(format)).collect();
                let mut stats = Stats::new(n);
                for c in rx {
                    left.fetch_sub(c.bytes.len(), Ordering::Relaxed);
                    subs[c.id as usize].feed(c.id, &c, &mut stats);
                }
                stats
            })
            .expect("spawn the decoding thread");
        Self {
            tx: Some(tx),
            backlog,
            thread: Some(thread),
        }
    }

    /// Hands over subscriber `id`'s body bytes read at `at`. Fails when the decoding thread
    /// is [`MAX_BACKLOG`] behind.
    pub fn push(&self, id: usize, measured: bool, at: Stamp, bytes: &[u8]) -> Result<(), String> {
        let Some(tx) = &self.tx else {
            return Ok(()); // the window is over
        };
        if self.backlog.fetch_add(bytes.len(), Ordering::Relaxed) > MAX_BACKLOG {
            return Err(format!(
                "the decoding thread fell more than {MAX_BACKLOG} bytes behind the reads"
            ));
        }
        let chunk = Chunk {
            id: id as u32,
            measured,
            at,
            bytes: bytes.to_vec(),
        };
        tx.send(chunk)
            .map_err(|_| "the decoding thread stopped".to_string())
    }

    /// Stops taking chunks, waits until all handed over are decoded, and returns the stats.
    pub fn finish(&mut self) -> Stats {
        drop(self.tx.take());
        self.thread
            .take()
            .expect("finish once")
            .join()
            .expect("the decoding thread panicked")
    }
}

/// One subscriber's decoding state.
struct Sub {
    /// None: each chunk is one event's data.
    parser: Option<SseParser>,
    inflate: Option<Gunzip>,
    plain: Vec<u8>,
    last_seq: Option<u64>,
}

impl Sub {
    fn new(format: Format) -> Self {
        Self {
            parser: (format != Format::Messages).then(SseParser::default),
            inflate: (format == Format::SseGzip).then(Gunzip::default),
            plain: Vec::new(),
            last_seq: None,
        }
    }

    fn feed(&mut self, id: u32, c: &Chunk, s: &mut Stats) {
        let Some(parser) = self.parser.as_mut() else {
            return s.event(id, &mut self.last_seq, &c.bytes, c.measured, c.at);
        };
        let b = match self.inflate.as_mut() {
            Some(g) => {
                if g.feed(&c.bytes, &mut self.plain).is_err() && c.measured {
                    s.unparsable += 1;
                }
                &self.plain[..]
            }
            None => &c.bytes[..],
        };
        let last_seq = &mut self.last_seq;
        parser.feed(b, &mut |data| s.event(id, last_seq, data, c.measured, c.at));
    }
}

/// What the decoding thread counted inside the window.
#[derive(Default)]
pub struct Stats {
    events: u64,
    gaps: u64,
    out_of_order: u64,
    unparsable: u64,
    /// Events stamped later than they were read: clocks disagree (should stay 0).
    clock_skew: u64,
    /// Events whose read brought no kernel receive timestamp (their arrival is the read).
    unstamped: u64,
    min_seq: u64,
    max_seq: u64,
    /// Publish to read (the reader's read time).
    latency: Histogram,
    /// Publish to arrival at the client's socket (the kernel's receive timestamp).
    arrival: Histogram,
    /// Per subscriber: events and gaps in the window.
    per_sub: Vec<(u32, u32)>,
}

impl Stats {
    fn new(n: usize) -> Self {
        Self {
            min_seq: u64::MAX,
            per_sub: vec![(0, 0); n],
            ..Default::default()
        }
    }

    fn event(
        &mut self,
        id: u32,
        last_seq: &mut Option<u64>,
        data: &[u8],
        measured: bool,
        at: Stamp,
    ) {
        let (Some(seq), Some(t)) = (json_u64(data, "seq"), json_u64(data, "t")) else {
            if measured {
                self.unparsable += 1;
            }
            return;
        };
        let prev = last_seq.replace(seq);
        if !measured {
            return;
        }
        let (events, gaps) = &mut self.per_sub[id as usize];
        match prev {
            Some(p) if seq > p + 1 => {
                self.gaps += seq - p - 1;
                *gaps += 1;
            }
            Some(p) if seq <= p => self.out_of_order += 1,
            _ => {}
        }
        *events += 1;
        self.events += 1;
        self.min_seq = self.min_seq.min(seq);
        self.max_seq = self.max_seq.max(seq);
        let arrival = at.arrival.unwrap_or_else(|| {
            self.unstamped += 1;
            at.read
        });
        if t > arrival {
            self.clock_skew += 1;
        }
        self.latency.record(at.read.saturating_sub(t));
        self.arrival.record(arrival.saturating_sub(t));
    }

    /// Events each subscriber received in the window, by subscriber id.
    pub fn events_per_sub(&self) -> Vec<u32> {
        self.per_sub.iter().map(|(e, _)| *e).collect()
    }

    /// The event figures of the result, for `connected` subscribers over `elapsed` s.
    pub fn json(&self, connected: usize, elapsed: f64) -> serde_json::Map<String, Value> {
        let events = self.events;
        let publishes = if events == 0 {
            0
        } else {
            self.max_seq - self.min_seq + 1
        };
        let expected = publishes * connected as u64;
        let live: Vec<_> = self.per_sub.iter().filter(|(e, _)| *e > 0).collect();
        let json = json!({
            "events": events,
            "events_per_s": round(events as f64 / elapsed, 1),
            "publishes_seen": publishes,
            "publishes_per_s": round(publishes as f64 / elapsed, 2),
            "delivery_ratio": if expected == 0 { 0.0 } else { round(events as f64 / expected as f64, 4) },
            "gaps": self.gaps,
            "subscribers_with_gaps": self.per_sub.iter().filter(|(_, g)| *g > 0).count(),
            "subscribers_without_events": connected.saturating_sub(live.len()),
            "events_per_subscriber_min": live.iter().map(|(e, _)| *e).min().unwrap_or(0),
            "events_per_subscriber_max": live.iter().map(|(e, _)| *e).max().unwrap_or(0),
            "out_of_order": self.out_of_order,
            "unparsable": self.unparsable,
            "clock_skew": self.clock_skew,
            "unstamped_events": self.unstamped,
            "latency": self.latency.summary_ms(),
            "arrival_latency": self.arrival.summary_ms(),
        });
        match json {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }
}

/// A gzip stream inflated as it arrives (one member, a header without optional fields, as
/// the servers here send).
#[derive(Default)]
struct Gunzip {
    header_left: Option<usize>,
    inflate: Option<flate2::Decompress>,
}

impl Gunzip {
    /// Inflates `input` into `out` (cleared first).
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
        out.clear();
        let left = self.header_left.get_or_insert(10);
        let skip = (*left).min(input.len());
        *left -= skip;
        input = &input[skip..];
        let inflate = self
            .inflate
            .get_or_insert_with(|| flate2::Decompress::new(false));
        // Until all is read and the output did not fill what it was given.
        loop {
            out.reserve(input.len() * 8 + 1024);
            let before = inflate.total_in();
            match inflate.decompress_vec(input, out, flate2::FlushDecompress::Sync) {
                Ok(flate2::Status::StreamEnd) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err(()),
            }
            input = &input[(inflate.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;

    use super::*;

    /// `n` events `{"seq":i,"t":i}` as SSE, gzip-coded with a sync flush after each one (as
    /// a server that keeps a stream live sends them).
    fn gzip_events(n: u64) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..n {
            write!(gz, "data: {{\"seq\":{i},\"t\":{i}}}\n\n").unwrap();
            gz.flush().unwrap();
        }
        gz.finish().unwrap()
    }

    #[test]
    fn decodes_gzip_streams_split_anywhere_and_counts_every_event() {
        let body = gzip_events(50);
        let mut d = Decode::start(3, Format::SseGzip);
        // Three subscribers, each reading the same stream in pieces of a different size.
        for (id, step) in [(0usize, 1usize), (1, 7), (2, body.len())] {
            for (k, piece) in body.chunks(step).enumerate() {
                let at = Stamp {
                    read: 1_000 + k as u64,
                    arrival: Some(900),
                };
                d.push(id, true, at, piece).unwrap();
            }
        }
        let s = d.finish();
        assert_eq!(s.events, 150);
        assert_eq!((s.gaps, s.out_of_order, s.unparsable), (0, 0, 0));
        assert_eq!((s.clock_skew, s.unstamped), (0, 0));
        assert_eq!(s.per_sub, vec![(50, 0); 3]);
        let j = s.json(3, 1.0);
        assert_eq!(j["publishes_seen"], 50);
        assert_eq!(j["delivery_ratio"], 1.0);
        // Arrival (900 - seq) is never later than the read.
        assert!(
            s.arrival.summary_ms()["max_ms"].as_f64() <= s.latency.summary_ms()["max_ms"].as_f64()
        );
    }

    #[test]
    fn counts_gaps_and_what_is_not_measured_stays_out() {
        let mut d = Decode::start(1, Format::Sse);
        let at = Stamp {
            read: 10,
            arrival: None,
        };
        d.push(0, false, at, b"data: {\"seq\":1,\"t\":1}\n\n")
            .unwrap();
        d.push(
            0,
            true,
            at,
            b"data: {\"seq\":2,\"t\":1}\n\ndata: {\"seq\":5,\"t\":1}\n\n",
        )
        .unwrap();
        d.push(0, true, at, b"data: nope\n\n").unwrap();
        let s = d.finish();
        assert_eq!(s.events, 2);
        assert_eq!(s.gaps, 2);
        assert_eq!(s.per_sub, vec![(2, 1)]);
        assert_eq!(s.unstamped, 2);
        assert_eq!(s.unparsable, 1);
    }

    #[test]
    fn takes_each_message_as_one_event() {
        const MS: u64 = 1_000_000;
        let mut d = Decode::start(2, Format::Messages);
        let at = |arrival| Stamp {
            read: 5 * MS,
            arrival,
        };
        // Subscriber 0: seq 1, 2, 4 (one gap), published at 1 ms, arrived at 3 ms.
        for seq in [1, 2, 4] {
            let m = format!("{{\"seq\":{seq},\"t\":{MS}}}");
            d.push(0, true, at(Some(3 * MS)), m.as_bytes()).unwrap();
        }
        // Subscriber 1: no stamp (its arrival is the read), then a message that is no event.
        let m = format!("{{\"seq\":1,\"t\":{MS}}}");
        d.push(1, true, at(None), m.as_bytes()).unwrap();
        d.push(1, true, at(None), b"data: {\"seq\":2}").unwrap();
        let s = d.finish();
        assert_eq!(s.events, 4);
        assert_eq!(s.per_sub, vec![(3, 1), (1, 0)]);
        assert_eq!((s.gaps, s.unparsable, s.unstamped), (1, 1, 1));
        // Arrival: 2 ms three times, 4 ms once; read: 4 ms each.
        assert_eq!(s.arrival.summary_ms()["mean_ms"], 2.5);
        assert_eq!(s.latency.summary_ms()["mean_ms"], 4.0);
    }
}
