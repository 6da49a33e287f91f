//! Channels shared between processes through Redis Streams (see `docs/redis.md`).
//!
//! A [`RedisHub`] holds two Redis connections for a process, whatever its number of
//! channels and subscribers:
//!
//! - **Publishes** go into a bounded buffer ([`RedisConfig::buffer`]); one task sends what
//!   it holds as one pipeline of `XADD <prefix><name> MAXLEN ~ <len> * f <frame>` on a
//!   multiplexed connection. Redis assigns each event's id, so ids are the same in every
//!   process. While Redis is unreachable the buffer keeps them and they go out, in order,
//!   once it is back; a publish that finds the buffer full fails with
//!   [`Error::is_redis`](crate::Error::is_redis) and nothing is queued.
//! - **Reads**: one task runs one blocking `XREAD` over every shared channel of the process
//!   and hands each event to its channel, which fans it out to local subscribers and keeps
//!   it in history as a local publish does. Events reach subscribers only this way, so every
//!   process delivers the same events in the same order with the same ids. A channel's
//!   history is loaded from its stream (`XREVRANGE`) before its first subscriber is served;
//!   a subscriber that comes earlier waits (no Redis work per subscriber). When the set of
//!   channels changes, the blocked read is ended with `CLIENT UNBLOCK` from the publish
//!   connection. After a lost connection the reader reconnects and reads each stream from
//!   the last id it handed out, so nothing published meanwhile is missed.
//!
//! A stream keeps at least [`RedisConfig::stream_len`] entries (more when a channel's
//! history is larger), so a reader behind a burst still finds what it has not read; a
//! reader further behind than that loses the entries Redis trimmed, and its channel's
//! subscribers get the `missed` event (see [`TRIM_CHECK`]).
//! When a connection fails while a pipeline is in flight the pipeline is sent again: an
//! `XADD` Redis applied before the failure is then stored twice (at least once, never lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamId, StreamMaxlen, StreamRangeReply, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncConnectionConfig, RedisError, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use super::shared::id_after;
use super::{Channel, Inner};
use crate::error::{Error, Result};

/// Publishes sent in one pipeline at most.
const MAX_BATCH: usize = 1024;
/// How long one `XREAD` blocks.
const BLOCK: Duration = Duration::from_secs(2);
/// Events one `XREAD` returns per stream at most.
const READ_COUNT: usize = 10_000;
/// Entries one read of a stream returns from which the reader checks that its last id is
/// still in the stream (else Redis trimmed entries it had not read). A stream trimmed past
/// a reader holds at least its `MAXLEN` entries after it (Redis trims whole nodes of 100).
const TRIM_CHECK: usize = 100;
/// Time allowed to connect, and (publish connection) to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where and how channels are shared.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` (or `rediss://`, `unix://`).
    pub url: String,
    /// Prepended to a channel's name to make its stream's key. Default: `rat:`.
    pub key_prefix: String,
    /// Publishes held while Redis is unreachable (or slower than publishers); past it a
    /// publish fails. Default: 100,000.
    pub buffer: usize,
    /// Entries a channel's stream keeps at least (`XADD ... MAXLEN ~`; more when the
    /// channel's history is larger): how far a process's reader may fall behind the
    /// publishers of a burst without losing events. Default: 10,000.
    pub stream_len: usize,
}

impl RedisConfig {
    /// A config for `url` with the default prefix and buffer.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: "rat:".into(),
            buffer: 100_000,
            stream_len: 10_000,
        }
    }
    /// Sets [`key_prefix`](Self::key_prefix).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }
    /// Sets [`stream_len`](Self::stream_len).
    pub fn stream_len(mut self, entries: usize) -> Self {
        self.stream_len = entries;
        self
    }
    /// Sets [`buffer`](Self::buffer) (at least 1).
    pub fn buffer(mut self, publishes: usize) -> Self {
        self.buffer = publishes.max(1);
        self
    }
}

/// The state of a hub's connections and counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisMetrics {
    /// Both connections up.
    pub connected: bool,
    /// Publishes waiting in the buffer (or in a pipeline not yet answered).
    pub queued: u64,
    /// Publishes Redis stored.
    pub sent: u64,
    /// Publishes refused because the buffer was full.
    pub rejected: u64,
    /// Events read from Redis and handed to local channels.
    pub received: u64,
    /// Connections lost (either connection).
    pub disconnects: u64,
    /// Shared channels this process reads.
    pub channels: u64,
}

/// A process's link to Redis for its shared channels. Cheap to clone.
#[derive(Clone)]
pub struct RedisHub {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for RedisHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHub")
            .field("prefix", &self.hub.prefix)
            .finish()
    }
}

struct Outgoing {
    key: String,
    maxlen: usize,
    frame: Bytes,
    reply: Option<oneshot::Sender<Result<String>>>,
}

struct Watch {
    ch: Weak<Inner>,
    /// The last id handed out; `None` until history is loaded.
    last: Option<String>,
}

struct Hub {
    client: redis::Client,
    /// The server's address for messages (never the password).
    addr: String,
    prefix: String,
    stream_len: usize,
    tx: mpsc::Sender<Outgoing>,
    rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    channels: Mutex<HashMap<String, Watch>>,
    /// The set of channels changed: the reader looks again.
    changed: Notify,
    /// Bumped on every change; the reader records the one its `XREAD` was built from.
    generation: AtomicU64,
    read_generation: AtomicU64,
    /// `CLIENT ID` of the reader's connection (0 when it has none).
    reader_id: AtomicI64,
    publisher: Mutex<Option<MultiplexedConnection>>,
    up_publish: AtomicBool,
    up_read: AtomicBool,
    in_flight: AtomicU64,
    sent: AtomicU64,
    rejected: AtomicU64,
    received: AtomicU64,
    disconnects: AtomicU64,
    started: AtomicBool,
    /// The runtime the tasks run on (a change may come from a thread outside it).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    stop: CancellationToken,
}

impl RedisHub {
    /// A hub for `config`. Nothing connects until [`start`](Self::start) (which
    /// [`Server::bind`](crate::Server::bind) calls for [`ServerConfig::redis`](crate::ServerConfig::redis)
    /// (crate::ServerConfig::redis)); publishes made before are buffered.
    ///
    /// # Errors
    /// [`Error::is_redis`] for a URL that cannot be parsed.
    pub fn new(config: RedisConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| {
            Error::redis(format!(
                "invalid Redis URL {:?}: {e} (expected redis://host:port/db)",
                redact(&config.url)
            ))
        })?;
        let addr = client.get_connection_info().addr.to_string();
        let (tx, rx) = mpsc::channel(config.buffer.max(1));
        Ok(RedisHub {
            hub: Arc::new(Hub {
                client,
                addr,
                prefix: config.key_prefix,
                stream_len: config.stream_len,
                tx,
                rx: Mutex::new(Some(rx)),
                channels: Mutex::default(),
                changed: Notify::new(),
                generation: AtomicU64::new(0),
                read_generation: AtomicU64::new(0),
                reader_id: AtomicI64::new(0),
                publisher: Mutex::new(None),
                up_publish: AtomicBool::new(false),
                up_read: AtomicBool::new(false),
                in_flight: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                received: AtomicU64::new(0),
                disconnects: AtomicU64::new(0),
                started: AtomicBool::new(false),
                runtime: std::sync::OnceLock::new(),
                stop: CancellationToken::new(),
            }),
        })
    }

    /// Connects (once; later calls return at once) and starts the publish and read tasks
    /// on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::is_redis`] when Redis cannot be reached or refuses the connection (wrong
    /// password, database...).
    pub async fn start(&self) -> Result<()> {
        let hub = &self.hub;
        if hub.started.load(Relaxed) {
            return Ok(());
        }
        let mut conn = hub
            .connect(Some(CONNECT_TIMEOUT))
            .await
            .map_err(|e| Error::redis(format!("cannot connect to Redis at {}: {e}", hub.addr)))?;
        let pong: std::result::Result<String, RedisError> =
            redis::cmd("PING").query_async(&mut conn).await;
        if let Err(e) = pong {
            return Err(Error::redis(format!(
                "Redis at {} refused PING: {e}",
                hub.addr
            )));
        }
        if hub.started.swap(true, Relaxed) {
            return Ok(());
        }
        let rx = hub.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rx) = rx {
            let _ = hub.runtime.set(tokio::runtime::Handle::current());
            *hub.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
            hub.up_publish.store(true, Relaxed);
            tokio::spawn(publish_loop(hub.clone(), rx, conn));
            tokio::spawn(read_loop(hub.clone()));
        }
        Ok(())
    }

    /// Stops both tasks (publishes still buffered are sent if Redis answers within a
    /// second).
    pub fn stop(&self) {
        self.hub.stop.cancel();
    }

    /// The hub's state and counters.
    pub fn metrics(&self) -> RedisMetrics {
        let h = &self.hub;
        let buffered = (h.tx.max_capacity() - h.tx.capacity()) as u64;
        RedisMetrics {
            connected: h.up_publish.load(Relaxed) && h.up_read.load(Relaxed),
            queued: buffered + h.in_flight.load(Relaxed),
            sent: h.sent.load(Relaxed),
            rejected: h.rejected.load(Relaxed),
            received: h.received.load(Relaxed),
            disconnects: h.disconnects.load(Relaxed),
            channels: h.lock_channels().len() as u64,
        }
    }

    /// The stream key of channel `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.hub.prefix)
    }

    /// Starts reading `ch`'s stream (its history is loaded first).
    pub(super) fn watch(&self, key: String, ch: &Channel) {
        let w = Watch {
            ch: Arc::downgrade(&ch.inner),
            last: None,
        };
        self.hub.lock_channels().insert(key, w);
        self.hub.changed_set();
    }

    /// Stops reading the stream `key`.
    pub(super) fn unwatch(&self, key: &str) {
        if self.hub.lock_channels().remove(key).is_some() {
            self.hub.changed_set();
        }
    }

    /// Queues an `XADD`; `reply` gets the id Redis assigned.
    pub(super) fn enqueue(
        &self,
        key: String,
        maxlen: usize,
        frame: Bytes,
        reply: Option<oneshot::Sender<Result<String>>>,
    ) -> Result<()> {
        let out = Outgoing {
            key,
            maxlen: maxlen.max(self.hub.stream_len),
            frame,
            reply,
        };
        self.hub.tx.try_send(out).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.hub.rejected.fetch_add(1, Relaxed);
                Error::redis(format!(
                    "the Redis publish buffer is full ({} events wait for Redis at {})",
                    self.hub.tx.max_capacity(),
                    self.hub.addr
                ))
            }
            mpsc::error::TrySendError::Closed(_) => Error::redis("the Redis hub is stopped"),
        })
    }
}

impl Hub {
    fn lock_channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watch>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(
        &self,
        response: Option<Duration>,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let mut config = AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
        if let Some(t) = response {
            config = config.set_response_timeout(t);
        }
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Records a change of the channel set and ends the reader's blocked `XREAD`.
    fn changed_set(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        self.changed.notify_one();
        let conn = self
            .publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (Some(mut conn), Some(rt)) = (conn, self.runtime.get()) else {
            // Not started, or no publish connection now: the reader sees the change within
            // BLOCK (or when it connects).
            return;
        };
        let hub = self.clone();
        rt.spawn(async move {
            // Until the reader's XREAD includes the change: it may not be blocked yet.
            for _ in 0..50 {
                if hub.read_generation.load(Relaxed) >= generation {
                    return;
                }
                let id = hub.reader_id.load(Relaxed);
                if id != 0 {
                    let unblocked: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query_async(&mut conn)
                        .await;
                    if matches!(unblocked, Ok(1)) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    fn lost(&self, up: &AtomicBool, what: &str, e: &RedisError) {
        if up.swap(false, Relaxed) {
            self.disconnects.fetch_add(1, Relaxed);
            tracing::warn!(target: "rat_engine::redis", "Redis {what} connection to {} lost: {e}; reconnecting", self.addr);
        }
    }

    /// Sleeps for `backoff` (doubled for next time) unless the hub stops; false if it did.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let d = *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// A failure after which the same commands are worth sending again.
fn retryable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            redis::ErrorKind::BusyLoadingError | redis::ErrorKind::TryAgain
        )
}

async fn publish_loop(
    hub: Arc<Hub>,
    mut rx: mpsc::Receiver<Outgoing>,
    conn: MultiplexedConnection,
) {
    let mut conn = Some(conn);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => n == 0,
            _ = hub.stop.cancelled() => true,
        };
        if stopping {
            rx.close();
            while let Ok(o) = rx.try_recv() {
                batch.push(o);
            }
            if let Some(c) = conn.as_mut() {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), send(&hub, c, &mut batch)).await;
            }
            return;
        }
        hub.in_flight.store(batch.len() as u64, Relaxed);
        let mut backoff = Duration::from_millis(20);
        while !batch.is_empty() {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match hub.connect(Some(CONNECT_TIMEOUT)).await {
                    Ok(c) => {
                        *hub.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                        hub.up_publish.store(true, Relaxed);
                        tracing::info!(target: "rat_engine::redis", "Redis publish connection to {} is back", hub.addr);
                        conn.insert(c)
                    }
                    Err(_) => {
                        if !hub.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            if let Err(e) = send(&hub, c, &mut batch).await {
                if retryable(&e) {
                    conn = None;
                    *hub.publisher.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    hub.lost(&hub.up_publish, "publish", &e);
                    if !hub.pause(&mut backoff).await {
                        return;
                    }
                } else {
                    let msg = format!("Redis refused a publish: {e}");
                    tracing::warn!(target: "rat_engine::redis", "{msg}");
                    for o in batch.drain(..) {
                        if let Some(r) = o.reply {
                            let _ = r.send(Err(Error::redis(msg.clone())));
                        }
                    }
                }
            }
        }
        hub.in_flight.store(0, Relaxed);
    }
}

/// Sends `batch` as one pipeline; on success empties it and answers each publish's reply.
async fn send(
    hub: &Hub,
    conn: &mut MultiplexedConnection,
    batch: &mut Vec<Outgoing>,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for o in batch.iter() {
        pipe.xadd_maxlen(
            &o.key,
            StreamMaxlen::Approx(o.maxlen),
            "*",
            &[("f", &o.frame[..])],
        );
    }
    let ids: Vec<String> = pipe.query_async(conn).await?;
    hub.sent.fetch_add(batch.len() as u64, Relaxed);
    for (o, id) in batch.drain(..).zip(ids) {
        if let Some(r) = o.reply {
            let _ = r.send(Ok(id));
        }
    }
    Ok(())
}

async fn read_loop(hub: Arc<Hub>) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(20);
    while !hub.stop.is_cancelled() {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect_reader(&hub).await {
                Ok(c) => {
                    backoff = Duration::from_millis(20);
                    conn.insert(c)
                }
                Err(_) => {
                    if !hub.pause(&mut backoff).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let result = tokio::select! {
            r = read_once(&hub, c) => r,
            _ = hub.stop.cancelled() => return,
        };
        if let Err(e) = result {
            conn = None;
            hub.reader_id.store(0, Relaxed);
            hub.lost(&hub.up_read, "read", &e);
            if !hub.pause(&mut backoff).await {
                return;
            }
        }
    }
}

async fn connect_reader(hub: &Hub) -> redis::RedisResult<MultiplexedConnection> {
    let mut c = hub.connect(Some(BLOCK + CONNECT_TIMEOUT)).await?;
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut c).await?;
    hub.reader_id.store(id, Relaxed);
    if !hub.up_read.swap(true, Relaxed) && hub.disconnects.load(Relaxed) > 0 {
        tracing::info!(target: "rat_engine::redis", "Redis read connection to {} is back", hub.addr);
    }
    Ok(c)
}

/// Loads the history of channels new to the reader, then reads once (blocking) and hands
/// out what came.
async fn read_once(hub: &Hub, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let generation = hub.generation.load(Relaxed);
    let fresh: Vec<(String, Weak<Inner>)> = hub
        .lock_channels()
        .iter()
        .filter(|(_, w)| w.last.is_none())
        .map(|(k, w)| (k.clone(), w.ch.clone()))
        .collect();
    for (key, weak) in fresh {
        let Some(inner) = weak.upgrade() else {
            hub.lock_channels().remove(&key);
            continue;
        };
        let ch = Channel { inner };
        let keep = ch.inner.options.history.max(1);
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(keep)
            .query_async(conn)
            .await?;
        let last = reply
            .ids
            .first()
            .map_or_else(|| "0-0".to_string(), |e| e.id.clone());
        let history: Vec<(String, Bytes)> = reply
            .ids
            .iter()
            .rev()
            .filter_map(|e| Some((e.id.clone(), frame_of(e)?)))
            .collect();
        if let Some(w) = hub.lock_channels().get_mut(&key) {
            w.last = Some(last);
        }
        ch.loaded(history);
    }
    let (keys, ids): (Vec<String>, Vec<String>) = hub
        .lock_channels()
        .iter()
        .filter_map(|(k, w)| Some((k.clone(), w.last.clone()?)))
        .unzip();
    hub.read_generation.store(generation, Relaxed);
    if keys.is_empty() {
        tokio::select! {
            _ = hub.changed.notified() => {}
            _ = tokio::time::sleep(BLOCK) => {}
        }
        return Ok(());
    }
    let opts = StreamReadOptions::default()
        .block(BLOCK.as_millis() as usize)
        .count(READ_COUNT);
    let reply: Option<StreamReadReply> =
        redis::AsyncCommands::xread_options(conn, &keys, &ids, &opts).await?;
    let Some(reply) = reply else {
        return Ok(());
    };
    for stream in reply.keys {
        let (Some(first), Some(last)) = (stream.ids.first(), stream.ids.last()) else {
            continue;
        };
        let Some((weak, before)) = hub
            .lock_channels()
            .get(&stream.key)
            .map(|w| (w.ch.clone(), w.last.clone()))
        else {
            continue;
        };
        let Some(inner) = weak.upgrade() else {
            continue;
        };
        let ch = Channel { inner };
        let maxlen = hub.stream_len.max(ch.inner.options.history);
        if let Some(before) = before.filter(|b| b != "0-0") {
            if stream.ids.len() >= TRIM_CHECK.min(maxlen) {
                let oldest: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&stream.key)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(conn)
                    .await?;
                if oldest.ids.first().is_some_and(|o| id_after(&o.id, &before)) {
                    tracing::warn!(target: "rat_engine::redis", "the reader of {} fell behind the stream's length: entries after {before} were trimmed before it read them", stream.key);
                    ch.gap(&before, &first.id);
                }
            }
        }
        // Once nothing can fail before the entries are handed out.
        if let Some(w) = hub.lock_channels().get_mut(&stream.key) {
            w.last = Some(last.id.clone());
        }
        hub.received.fetch_add(stream.ids.len() as u64, Relaxed);
        for e in &stream.ids {
            if let Some(frame) = frame_of(e) {
                ch.deliver(&e.id, frame);
            }
        }
    }
    Ok(())
}

/// An entry's SSE frame: its id line, then the event as published (without an id).
fn frame_of(e: &StreamId) -> Option<Bytes> {
    let Some(Value::BulkString(body)) = e.map.get("f") else {
        return None;
    };
    let mut frame = BytesMut::with_capacity(e.id.len() + 5 + body.len());
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(e.id.as_bytes());
    frame.extend_from_slice(b"\n");
    frame.extend_from_slice(body);
    Some(frame.freeze())
}

/// `url` without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
