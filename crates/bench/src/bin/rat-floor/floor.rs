//! `rat-floor`: the smallest single-threaded epoll HTTP server implementing
//! ../shared/BENCH-CONTRACT.md, to show what this machine allows on one core. Each
//! broadcast event is formatted once and `send()`-ed to every subscriber in one loop; a
//! subscriber whose socket is full gets it queued (bounded) and flushed on EPOLLOUT.
//! Deliberately minimal HTTP: GET only, no request bodies, keep-alive always.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use rat_bench::sys::{monotonic_ns, raise_nofile_limit};

use crate::conn::{Conn, Outcome, MAX_WRITE};

const LISTENER: Token = Token(usize::MAX);

struct Floor {
    poll: Poll,
    listener: TcpListener,
    /// Connections by token; `free` lists the empty slots for reuse.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    subscribers: Vec<usize>,
    /// The one buffer every `/chunked` write is taken from.
    zeros: Vec<u8>,
    seq: u64,
}

/// `len` zero bytes in memory of the process's own. A fresh `vec![0; len]` is never written,
/// so every page of it is the kernel's one shared zero page: a `/chunked` write copied from
/// it reads one 4 KiB page that never leaves the L1 cache, where every other server sends
/// from a buffer of real memory (its JS `Buffer`). Writing the zeros gives the floor the
/// same source.
fn resident_zeros(len: usize) -> Vec<u8> {
    let mut zeros = vec![0; len];
    // Without the black box the compiler knows the memory is zero already and drops the fill.
    std::hint::black_box(&mut zeros).fill(0);
    zeros
}

fn env_num(name: &str, default: f64) -> io::Result<f64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v.parse::<f64>().ok().filter(|x| *x >= 0.0).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad {name}={v:?}"))
        }),
    }
}

pub(crate) fn main() -> io::Result<()> {
    raise_nofile_limit()?;
    let port = env_num("PORT", 3000.0)? as u16;
    let interval = Duration::from_secs_f64(env_num("PUB_INTERVAL_MS", 100.0)?.max(1.0) / 1000.0);
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening {}", listener.local_addr()?.port());
    io::stdout().flush()?;

    let mut floor = Floor {
        poll,
        listener,
        conns: Vec::new(),
        free: Vec::new(),
        subscribers: Vec::new(),
        zeros: resident_zeros(MAX_WRITE),
        seq: 0,
    };
    let mut events = Events::with_capacity(1024);
    let mut next_publish = Instant::now() + interval;
    loop {
        let timeout = next_publish.saturating_duration_since(Instant::now());
        if let Err(e) = floor.poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                floor.accept()?;
            } else {
                floor.on_event(
                    ev.token().0,
                    ev.is_readable() || ev.is_read_closed(),
                    ev.is_error(),
                );
            }
        }
        let now = Instant::now();
        if now >= next_publish {
            floor.publish();
            // Like setInterval: a publish that overruns the interval delays the next one
            // rather than queueing a burst.
            next_publish = (next_publish + interval).max(now);
        }
    }
}

impl Floor {
    fn accept(&mut self) -> io::Result<()> {
        loop {
            let (mut sock, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // Out of descriptors or a connection reset before accept: skip it.
                Err(_) => return Ok(()),
            };
            sock.set_nodelay(true)?;
            let token = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            self.poll.registry().register(
                &mut sock,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            self.conns[token] = Some(Conn::new(sock));
            // The request is usually in already: answering it now saves a whole loop turn,
            // which matters when a publish to thousands of subscribers fills each turn.
            self.on_event(token, true, false);
        }
    }

    fn on_event(&mut self, token: usize, readable: bool, error: bool) {
        let Some(conn) = self.conns.get_mut(token).and_then(Option::as_mut) else {
            return;
        };
        let outcome = match (error, readable) {
            (true, _) => Outcome::Close,
            (false, true) => conn.on_readable(&self.zeros),
            (false, false) => conn.serve(&self.zeros),
        };
        match outcome {
            Outcome::Keep => {}
            Outcome::Subscribed => {
                conn.sub_index = Some(self.subscribers.len());
                self.subscribers.push(token);
            }
            Outcome::Close => self.close(token),
        }
    }

    fn close(&mut self, token: usize) {
        let Some(conn) = self.conns[token].take() else {
            return;
        };
        if let Some(i) = conn.sub_index {
            self.subscribers.swap_remove(i);
            if let Some(&moved) = self.subscribers.get(i) {
                if let Some(c) = self.conns[moved].as_mut() {
                    c.sub_index = Some(i);
                }
            }
        }
        self.free.push(token); // dropping the socket closes it and leaves epoll
    }

    /// Formats the event once, as one chunk, and sends it to every subscriber.
    fn publish(&mut self) {
        let data = format!(
            "data: {{\"seq\":{},\"t\":{}}}\n\n",
            self.seq,
            monotonic_ns()
        );
        let frame = format!("{:x}\r\n{data}\r\n", data.len()).into_bytes();
        self.seq += 1;
        let mut dead = Vec::new();
        for &token in &self.subscribers {
            if let Some(c) = self.conns[token].as_mut() {
                if !c.send_event(&frame) {
                    dead.push(token);
                }
            }
        }
        for token in dead {
            self.close(token);
        }
    }
}
