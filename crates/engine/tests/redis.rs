//! Channels shared through a real `redis-server` (started here on a free port): two
//! engines, publishes on one reaching subscribers of both with Redis's ids, resuming on the
//! other, Redis killed and restarted mid-stream, and a reader that Redis trimmed past
//! sending `missed`. Without `redis-server` on PATH they
//! say so in one line and return (libtest counts them as passed; CI has redis-server).

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::{
    App, Channel, ChannelOptions, Event, RedisConfig, RedisHub, RouteOptions, Server, ServerConfig,
    ServerHandle,
};
use support::{eventually, within, RawConn, SseReader};

fn redis_server_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
}

/// A `redis-server` child on a free port, killed when dropped.
struct Redis {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one, or says why not (the caller returns: skipped).
    async fn start() -> Option<Redis> {
        let Some(bin) = redis_server_path() else {
            // Once, and past libtest's capture (which takes only the print macros).
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let line = "redis-server is not on PATH: the Redis tests return at once\n";
                let _ = std::io::stderr().write_all(line.as_bytes());
            });
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            bin,
            port,
            child: None,
        };
        r.up().await;
        Some(r)
    }

    async fn up(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An engine serving the shared channel `news` at `/events` (SSE) and `/ws` (WebSocket).
struct Node {
    server: ServerHandle,
    channel: Channel,
    hub: RedisHub,
}

async fn node(url: &str, prefix: &str) -> Node {
    node_with(url, prefix, ChannelOptions::default().history, 10_000).await
}

/// `node` with the channel's `history` and the hub's `stream_len`.
async fn node_with(url: &str, prefix: &str, history: usize, stream_len: usize) -> Node {
    let config = RedisConfig::new(url)
        .key_prefix(prefix)
        .stream_len(stream_len);
    let hub = RedisHub::new(config).unwrap();
    let options = ChannelOptions {
        history,
        ..Default::default()
    };
    let channel = Channel::shared("news", options, &hub);
    let mut app = App::new();
    let long = RouteOptions {
        long_lived: true,
        ..Default::default()
    };
    app.route_with(Method::GET, "/events", Arc::new(channel.clone()), long)
        .unwrap();
    app.ws_channel("/ws", channel.clone()).unwrap();
    let config = ServerConfig::default().redis(hub.clone());
    let server = Server::bind("127.0.0.1:0", app, config).await.unwrap();
    Node {
        server,
        channel,
        hub,
    }
}

/// Subscribes to `/events` on `n`, resuming after `last` if given, and waits until the
/// channel counts the subscriber.
async fn subscribe(n: &Node, last: Option<&str>, before: usize) -> SseReader {
    let mut conn = RawConn::connect(n.server.local_addr()).await;
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(id) = last {
        headers.push(("Last-Event-ID", id));
    }
    conn.send_request("GET", "/events", &headers, b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    let ch = n.channel.clone();
    eventually(Duration::from_secs(5), "the subscriber to register", || {
        ch.subscribers() > before
    })
    .await;
    SseReader::new(conn)
}

/// The next `n` events (id, data) from `r`.
async fn read(r: &mut SseReader, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let a = within(Duration::from_secs(10), "an event", r.next_event())
            .await
            .expect("the stream ended");
        out.push((a.event.last_event_id, a.event.data));
    }
    out
}

fn prefix(test: &str) -> String {
    format!("t:{test}:")
}

#[tokio::test]
async fn a_publish_on_one_engine_reaches_both_in_order_with_equal_ids() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("order");
    let (a, b) = (node(&redis.url(), &p).await, node(&redis.url(), &p).await);
    let mut on_a = subscribe(&a, None, 0).await;
    let mut on_b = subscribe(&b, None, 0).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let ev = Event::new().data(format!("m{i}"));
        // Half awaited for their id, half queued without it: one order either way.
        if i % 2 == 0 {
            ids.push(Some(a.channel.publish_async(ev).await.unwrap()));
        } else {
            assert_eq!(a.channel.publish(ev).unwrap(), "");
            ids.push(None);
        }
    }
    let got_a = read(&mut on_a, 50).await;
    let got_b = read(&mut on_b, 50).await;
    assert_eq!(got_a, got_b, "same events, ids and order on both engines");
    for (i, (id, data)) in got_a.iter().enumerate() {
        assert_eq!(data, &format!("m{i}"));
        if let Some(known) = &ids[i] {
            assert_eq!(id, known, "the id publish_async resolved with");
        }
    }
    let m = a.hub.metrics();
    assert!(m.connected && m.sent == 50 && m.queued == 0, "{m:?}");
    assert_eq!(b.hub.metrics().received, 50);
}

#[tokio::test]
async fn websocket_subscribers_of_a_shared_channel_get_its_events_in_order() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("ws");
    let (a, b) = (node(&redis.url(), &p).await, node(&redis.url(), &p).await);
    // An SSE subscriber is served once B has read the stream's history from Redis: from
    // then on B's reader hands out every new entry.
    let mut sse = subscribe(&b, None, 0).await;
    let url = format!("ws://{}/ws", b.server.local_addr());
    let (mut ws, _) = within(
        Duration::from_secs(10),
        "the upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("upgrade");
    let ch = b.channel.clone();
    eventually(Duration::from_secs(5), "the socket to subscribe", || {
        ch.subscribers() > 1
    })
    .await;
    for i in 0..20 {
        a.channel
            .publish(Event::new().event("e").data(format!("m{i}\nline")))
            .unwrap();
    }
    for i in 0..20 {
        let m = within(Duration::from_secs(10), "a message", ws.next())
            .await
            .expect("a message, not the end")
            .expect("a message, not an error");
        assert_eq!(m, Message::text(format!("m{i}\nline")));
    }
    let over_sse: Vec<String> = read(&mut sse, 20)
        .await
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        over_sse,
        (0..20).map(|i| format!("m{i}\nline")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_client_resumes_on_the_other_engine_from_its_last_event_id() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("resume");
    let a = node(&redis.url(), &p).await;
    let mut on_a = subscribe(&a, None, 0).await;
    for i in 0..10 {
        a.channel
            .publish(Event::new().data(format!("m{i}")))
            .unwrap();
    }
    let first = read(&mut on_a, 4).await;
    drop(on_a);
    // B starts after the events: its history comes from the Redis stream.
    let b = node(&redis.url(), &p).await;
    let last = first[3].0.clone();
    let mut on_b = subscribe(&b, Some(&last), 0).await;
    let rest = read(&mut on_b, 6).await;
    let data: Vec<_> = rest.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(data, ["m4", "m5", "m6", "m7", "m8", "m9"]);
    assert!(
        rest.iter().all(|(id, _)| id > &last),
        "{rest:?} after {last}"
    );
    // Live events follow, published on B this time.
    b.channel.publish(Event::new().data("live")).unwrap();
    assert_eq!(read(&mut on_b, 1).await[0].1, "live");
    // An id older than anything kept: `missed` first, then history.
    let mut stale = subscribe(&b, Some("1-0"), 1).await;
    let missed = within(Duration::from_secs(5), "missed", stale.next_event())
        .await
        .unwrap();
    assert_eq!(missed.event.event_type, "missed");
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_stream_loses_nothing_published_after() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let p = prefix("restart");
    let (a, b) = (node(&redis.url(), &p).await, node(&redis.url(), &p).await);
    let mut on_b = subscribe(&b, None, 0).await;
    for i in 0..5 {
        a.channel
            .publish(Event::new().data(format!("before{i}")))
            .unwrap();
    }
    assert_eq!(read(&mut on_b, 5).await[4].1, "before4");
    redis.kill();
    let hub = a.hub.clone();
    eventually(Duration::from_secs(10), "the hub to see Redis gone", || {
        !hub.metrics().connected
    })
    .await;
    // Published while Redis is down: held in the buffer.
    for i in 0..5 {
        a.channel
            .publish(Event::new().data(format!("down{i}")))
            .unwrap();
    }
    let waiting = a.channel.publish_async(Event::new().data("down5"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.hub.metrics().queued >= 6, "{:?}", a.hub.metrics());
    redis.up().await;
    let id = within(Duration::from_secs(10), "the queued publish", waiting)
        .await
        .unwrap();
    for i in 0..5 {
        a.channel
            .publish(Event::new().data(format!("after{i}")))
            .unwrap();
    }
    let got = read(&mut on_b, 11).await;
    let data: Vec<_> = got.iter().map(|(_, d)| d.clone()).collect();
    let want: Vec<String> = (0..6)
        .map(|i| format!("down{i}"))
        .chain((0..5).map(|i| format!("after{i}")))
        .collect();
    assert_eq!(data, want);
    assert_eq!(got[5].0, id);
    let m = b.hub.metrics();
    assert!(m.connected && m.disconnects >= 1, "{m:?}");
}

/// Adds events `<name>0..<name>n` to stream `key` in one transaction (so that a reader
/// gets them in one read), trimmed to exactly `maxlen` entries if given.
async fn xadd_all(
    c: &mut redis::aio::MultiplexedConnection,
    key: &str,
    name: &str,
    n: usize,
    maxlen: Option<usize>,
) {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..n {
        let frame = format!("data: {name}{i}\n\n");
        match maxlen {
            Some(len) => pipe.xadd_maxlen(
                key,
                redis::streams::StreamMaxlen::Equals(len),
                "*",
                &[("f", frame)],
            ),
            None => pipe.xadd(key, "*", &[("f", frame)]),
        };
    }
    let _: redis::Value = pipe.query_async(c).await.unwrap();
}

#[tokio::test]
async fn a_reader_that_redis_trimmed_past_sends_missed_and_forgets_history() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let p = prefix("trimmed");
    // History 200 (so the stream keeps 200 through this engine's publishes).
    let a = node_with(&redis.url(), &p, 200, 20).await;
    let mut on_a = subscribe(&a, None, 0).await;
    for i in 0..3 {
        a.channel
            .publish(Event::new().data(format!("m{i}")))
            .unwrap();
    }
    assert_eq!(read(&mut on_a, 3).await[2].1, "m2");
    let key = a.hub.key("news");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    // 100 at once with nothing trimmed: the reader checks, and nothing is missed.
    xadd_all(&mut c, &key, "kept", 100, None).await;
    let mut kept = Vec::new();
    for i in 0..100 {
        let e = within(Duration::from_secs(10), "an event", on_a.next_event())
            .await
            .unwrap()
            .event;
        assert_eq!(
            (e.event_type.as_str(), e.data.as_str()),
            ("message", &*format!("kept{i}"))
        );
        kept.push(e.last_event_id);
    }
    // 300 at once, the stream trimmed to its last 100: the reader never sees over0..over199.
    xadd_all(&mut c, &key, "over", 300, Some(100)).await;
    let missed = within(Duration::from_secs(10), "missed", on_a.next_event())
        .await
        .unwrap()
        .event;
    assert_eq!(missed.event_type, "missed", "{missed:?}");
    let notice: serde_json::Value = serde_json::from_str(&missed.data).unwrap();
    assert_eq!(notice["lastEventId"], kept[99].as_str());
    let rest = read(&mut on_a, 100).await;
    assert_eq!(notice["firstAvailableId"], rest[0].0.as_str());
    let data: Vec<_> = rest.iter().map(|(_, d)| d.clone()).collect();
    let want: Vec<_> = (200..300).map(|i| format!("over{i}")).collect();
    assert_eq!(data, want);
    // History starts after the gap: a resume from before it gets `missed` too, then the
    // events after the gap.
    let mut late = subscribe(&a, Some(&kept[99]), 1).await;
    let first = within(Duration::from_secs(5), "missed", late.next_event())
        .await
        .unwrap()
        .event;
    assert_eq!(first.event_type, "missed", "{first:?}");
    let replayed = read(&mut late, 100).await;
    assert_eq!(replayed, rest);
}

#[tokio::test]
async fn an_unreachable_or_invalid_redis_is_a_clear_error() {
    let err = RedisHub::new(RedisConfig::new("http://127.0.0.1/")).unwrap_err();
    assert!(
        err.is_redis() && err.message().contains("invalid Redis URL"),
        "{err}"
    );
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let hub = RedisHub::new(RedisConfig::new(&url)).unwrap();
    let config = ServerConfig::default().redis(hub);
    let err = Server::bind("127.0.0.1:0", App::new(), config)
        .await
        .unwrap_err();
    assert!(err.is_redis(), "{err}");
    assert!(
        err.message()
            .contains(&format!("cannot connect to Redis at 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_full_publish_buffer_refuses_the_publish_and_queues_nothing() {
    let hub = RedisHub::new(RedisConfig::new("redis://127.0.0.1:1/0").buffer(3)).unwrap();
    let ch = Channel::shared("full", ChannelOptions::default(), &hub);
    for _ in 0..3 {
        assert_eq!(ch.publish(Event::new().data("x")).unwrap(), "");
    }
    let err = ch.publish(Event::new().data("x")).unwrap_err();
    assert!(
        err.is_redis() && err.message().contains("buffer is full"),
        "{err}"
    );
    let err = ch.publish_async(Event::new().data("x")).await.unwrap_err();
    assert!(err.is_redis(), "{err}");
    let m = hub.metrics();
    assert_eq!((m.queued, m.rejected), (3, 2));
    // Ids come from Redis.
    let err = ch
        .publish(Event::new().id("7").unwrap().data("x"))
        .unwrap_err();
    assert!(err.is_invalid_argument(), "{err}");
}
