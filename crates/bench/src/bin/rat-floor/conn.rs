//! One floor connection: request parsing, the routes, and writing with backpressure. The
//! socket is edge-triggered, so every read and write runs until `WouldBlock`.

use std::io::{self, IoSlice, Read, Write};

use mio::net::TcpStream;
use rat_bench::query::positive;

const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
const CHUNKED_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Largest `/chunked` write size accepted (the shared zero buffer's length).
pub const MAX_WRITE: usize = 16 << 20;
/// A subscriber whose unsent backlog passes this is dropped as too slow.
pub const MAX_BACKLOG: usize = 4 << 20;
/// `/sse/count` events are framed into chunks of about this size.
const COUNT_BATCH: usize = 16 << 10;

/// A response still being produced.
#[derive(Debug, Clone, Copy)]
enum Job {
    Idle,
    /// Subscribed to `/sse/broadcast`: publishes are appended by the server loop.
    Subscriber,
    Count {
        next: u64,
        n: u64,
    },
    /// `left` body bytes to go, `size`-byte writes; `sent` bytes of the current chunk's
    /// frame (header, data, CRLF) already written.
    Chunked {
        left: u64,
        size: usize,
        sent: usize,
    },
}

/// What the server loop must do after handling I/O.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    /// The connection just became a broadcast subscriber.
    Subscribed,
    Close,
}

pub struct Conn {
    pub sock: TcpStream,
    /// Index in the server's subscriber list, if subscribed.
    pub sub_index: Option<usize>,
    input: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    job: Job,
}

fn chunk_header(len: usize) -> Vec<u8> {
    format!("{len:x}\r\n").into_bytes()
}

impl Conn {
    pub fn new(sock: TcpStream) -> Self {
        Self {
            sock,
            sub_index: None,
            input: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            job: Job::Idle,
        }
    }

    /// Reads everything available and answers the requests found.
    pub fn on_readable(&mut self, zeros: &[u8]) -> Outcome {
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return Outcome::Close,
                // A subscriber never sends more requests: what it sends is dropped unread.
                Ok(n) if !matches!(self.job, Job::Subscriber) => {
                    self.input.extend_from_slice(&buf[..n])
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Outcome::Close,
            }
            if self.input.len() > 64 << 10 {
                return Outcome::Close;
            }
        }
        self.serve(zeros)
    }

    /// Answers queued requests one at a time (a streaming response holds back the next)
    /// and writes as much as the socket takes.
    pub fn serve(&mut self, zeros: &[u8]) -> Outcome {
        let mut outcome = Outcome::Keep;
        loop {
            match self.pump(zeros) {
                Err(_) => return Outcome::Close,
                Ok(false) => return outcome, // the socket is full: wait for writable
                Ok(true) => {}
            }
            if !matches!(self.job, Job::Idle) {
                return outcome; // a subscriber waits for publishes
            }
            match self.next_request() {
                Err(()) => return Outcome::Close,
                Ok(false) => return outcome,
                Ok(true) if matches!(self.job, Job::Subscriber) => outcome = Outcome::Subscribed,
                Ok(true) => {}
            }
        }
    }

    /// Parses one request from the input and starts its response. Ok(false): incomplete.
    fn next_request(&mut self) -> Result<bool, ()> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(&self.input).map_err(|_| ())? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(false),
        };
        let target = req.path.unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (head, job) = match (req.method, path) {
            (Some("GET"), "/hello") => (HELLO, Job::Idle),
            (Some("GET"), "/sse/broadcast") => (SSE_HEAD, Job::Subscriber),
            (Some("GET"), "/sse/count") => match positive(query, "n", u64::MAX) {
                Some(n) => (SSE_HEAD, Job::Count { next: 0, n }),
                None => (BAD_REQUEST, Job::Idle),
            },
            (Some("GET"), "/chunked") => {
                match (
                    positive(query, "bytes", u64::MAX),
                    positive(query, "size", MAX_WRITE as u64),
                ) {
                    (Some(left), Some(size)) => (
                        CHUNKED_HEAD,
                        Job::Chunked {
                            left,
                            size: size as usize,
                            sent: 0,
                        },
                    ),
                    _ => (BAD_REQUEST, Job::Idle),
                }
            }
            _ => (NOT_FOUND, Job::Idle),
        };
        self.input.drain(..len);
        self.out.extend_from_slice(head);
        self.job = job;
        Ok(true)
    }

    /// Appends an already framed broadcast event. False if the subscriber is too far behind.
    pub fn queue(&mut self, frame: &[u8]) -> bool {
        self.out.extend_from_slice(frame);
        self.out.len() - self.out_pos <= MAX_BACKLOG
    }

    /// Sends one framed event: straight from `frame` when nothing is queued ahead of it
    /// (the common case, no copy), else behind the queue. False: drop this subscriber.
    pub fn send_event(&mut self, frame: &[u8]) -> bool {
        if self.out_pos < self.out.len() {
            return self.queue(frame);
        }
        // Write until done or EAGAIN: edge-triggered EPOLLOUT only fires after a full buffer.
        let mut rest = frame;
        while !rest.is_empty() {
            match self.sock.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return self.queue(rest),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Writes queued output, then generates more of the current job, until the socket
    /// would block (Ok(false)) or the job is done or waits on publishes (Ok(true)).
    fn pump(&mut self, zeros: &[u8]) -> io::Result<bool> {
        loop {
            while self.out_pos < self.out.len() {
                match self.sock.write(&self.out[self.out_pos..]) {
                    Ok(n) => self.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.clear();
            self.out_pos = 0;
            match self.job {
                Job::Idle | Job::Subscriber => return Ok(true),
                Job::Count { next, n } => self.fill_count(next, n),
                Job::Chunked { left, size, sent } => {
                    if left == 0 {
                        self.out.extend_from_slice(LAST_CHUNK);
                        self.job = Job::Idle;
                    } else if !self.write_chunk(zeros, left, size, sent)? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Queues the next batch of `/sse/count` events as one chunk.
    fn fill_count(&mut self, mut next: u64, n: u64) {
        let mut batch = Vec::with_capacity(COUNT_BATCH + 32);
        while next < n && batch.len() < COUNT_BATCH {
            write!(batch, "data: {{\"i\":{next}}}\n\n").expect("write to Vec");
            next += 1;
        }
        self.out.extend_from_slice(&chunk_header(batch.len()));
        self.out.extend_from_slice(&batch);
        self.out.extend_from_slice(b"\r\n");
        if next == n {
            self.out.extend_from_slice(LAST_CHUNK);
            self.job = Job::Idle;
        } else {
            self.job = Job::Count { next, n };
        }
    }

    /// Writes (the rest of) one `/chunked` chunk with writev, straight from the zero
    /// buffer. False if the socket would block.
    fn write_chunk(
        &mut self,
        zeros: &[u8],
        left: u64,
        size: usize,
        mut sent: usize,
    ) -> io::Result<bool> {
        let data = left.min(size as u64) as usize;
        let header = chunk_header(data);
        let frame = header.len() + data + 2;
        while sent < frame {
            let h = &header[sent.min(header.len())..];
            let d = &zeros[(sent.max(header.len()) - header.len()).min(data)..data];
            let t = &b"\r\n"[(sent.max(header.len() + data) - header.len() - data)..];
            match self
                .sock
                .write_vectored(&[IoSlice::new(h), IoSlice::new(d), IoSlice::new(t)])
            {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.job = Job::Chunked { left, size, sent };
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.job = Job::Chunked {
            left: left - data as u64,
            size,
            sent: 0,
        };
        Ok(true)
    }
}
