//! The engine's HTTP/2 server (the `h2` crate) with real h2 clients, over TLS (ALPN h2) and
//! h2c: a channel's subscribers receive every event in order, a producer writes through its
//! stream while the window allows, a stream whose
//! client stops reading is held to its queue's policy, a reset frees its stream, and a
//! graceful shutdown delivers what was accepted before the GOAWAY.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rat_engine::{
    App, Channel, ChannelOptions, Event, QueueLimits, Request, ServerConfig, ServerHandle,
    SseResponse, StreamSender, TlsConfig,
};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{eventually, long_lived, serve_with, within};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

struct Fixture {
    server: ServerHandle,
    channel: Channel,
    /// The queue of each subscriber the route served, in order.
    senders: mpsc::UnboundedReceiver<StreamSender>,
    /// Set when the server speaks TLS: its certificate.
    der: Option<CertificateDer<'static>>,
}

/// A server with a channel at `/ch` whose route hands each subscriber's queue to the test,
/// and `/hello`; over TLS when `tls`.
async fn start(tls: bool, options: ChannelOptions) -> Fixture {
    let channel = Channel::new("ch", options);
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    let (tx, senders) = mpsc::unbounded_channel();
    let ch = channel.clone();
    long_lived(&mut app, "/ch", move |_req: Request| {
        let sse = SseResponse::with_limits(ch.options().queue);
        let stream = sse.sender().stream().clone();
        ch.subscribe(&stream, None);
        tx.send(stream).unwrap();
        async move { sse }
    });
    let mut config = ServerConfig::default();
    let mut der = None;
    if tls {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (pem, key) = (c.cert.pem(), c.signing_key.serialize_pem());
        config = config.tls(TlsConfig::from_pem(pem.as_bytes(), key.as_bytes(), None).unwrap());
        der = Some(c.cert.der().clone());
    }
    Fixture {
        server: serve_with(app, config).await,
        channel,
        senders,
        der,
    }
}

/// An h2 client connection whose streams get a receive window of `window` bytes (8 MiB
/// for the connection).
async fn connect(f: &Fixture, window: u32) -> h2::client::SendRequest<Bytes> {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(window)
        .initial_connection_window_size(8 << 20);
    connect_with(f, builder).await
}

async fn connect_with(f: &Fixture, builder: h2::client::Builder) -> h2::client::SendRequest<Bytes> {
    let addr: SocketAddr = f.server.local_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let send = match &f.der {
        Some(der) => {
            let tls = support::tls_connector(der, &[b"h2"])
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (send, conn) = builder.handshake::<_, Bytes>(tls).await.unwrap();
            tokio::spawn(conn);
            send
        }
        None => {
            let (send, conn) = builder.handshake::<_, Bytes>(tcp).await.unwrap();
            tokio::spawn(conn);
            send
        }
    };
    send.ready().await.unwrap()
}

/// Opens `path` on `send`: the response's status and body.
async fn open(send: &h2::client::SendRequest<Bytes>, path: &str) -> (u16, h2::RecvStream) {
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let mut send = send.clone().ready().await.unwrap();
    let (res, _) = send.send_request(req, true).unwrap();
    let res = within(WAIT, "a response head", res).await.unwrap();
    (res.status().as_u16(), res.into_body())
}

/// Reads DATA frames (releasing their window) until `text` ends with `end`.
async fn read_until(body: &mut h2::RecvStream, text: &mut String, end: &str) {
    while !text.ends_with(end) {
        let data = within(WAIT, "a DATA frame", body.data())
            .await
            .expect("the stream ended early")
            .expect("the stream failed");
        body.flow_control().release_capacity(data.len()).unwrap();
        text.push_str(std::str::from_utf8(&data).unwrap());
    }
}

/// Subscribes `n` streams on each of `conns` connections; returns the bodies and queues.
async fn subscribe(
    f: &mut Fixture,
    conns: &[h2::client::SendRequest<Bytes>],
    n: usize,
) -> (Vec<h2::RecvStream>, Vec<StreamSender>) {
    let mut bodies = Vec::new();
    for c in conns {
        for _ in 0..n {
            let (status, body) = open(c, "/ch").await;
            assert_eq!(status, 200);
            bodies.push(body);
        }
    }
    let mut senders = Vec::new();
    for _ in 0..bodies.len() {
        senders.push(
            within(WAIT, "a subscriber", f.senders.recv())
                .await
                .unwrap(),
        );
    }
    (bodies, senders)
}

/// What a subscriber receives of `data` published with id `id`.
fn frame(id: &str, data: &str) -> String {
    format!("id: {id}\ndata: {data}\n\n")
}

/// Every subscriber of a channel, on two connections of three streams each, receives every
/// event in order, a large one (several DATA frames) among small ones. (That the sweep
/// sends them through each stream rather than queuing them for its task is shown by
/// `server::h2::tests`, where no task reads the queues.)
async fn subscribers_get_every_event_in_order(tls: bool) {
    let mut f = start(tls, ChannelOptions::default()).await;
    let conns = [connect(&f, 1 << 20).await, connect(&f, 1 << 20).await];
    let (mut bodies, _) = subscribe(&mut f, &conns, 3).await;
    assert_eq!(f.channel.subscribers(), 6);
    let big = "x".repeat(40 * 1024);
    let mut expected = String::new();
    for i in 0..50 {
        let id = format!("e{i}");
        let data = if i == 25 {
            big.clone()
        } else {
            format!("n{i}")
        };
        f.channel
            .publish(Event::data_only(data.clone()).id(id.clone()).unwrap())
            .unwrap();
        expected.push_str(&frame(&id, &data));
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for (i, body) in bodies.iter_mut().enumerate() {
        let mut text = String::new();
        read_until(body, &mut text, &frame("e49", "n49")).await;
        assert!(text == expected, "subscriber {i} got other bytes");
    }
    assert_eq!(f.channel.metrics().delivered, 50 * 6);
}

/// Forty subscribers on one connection with HTTP/2's default windows (64 KiB for the
/// whole connection) all get a few events: the send capacity a stream keeps for its next
/// events never starves the others (the client updates the connection's window only once
/// half of it is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_subscribers_share_a_default_connection_window() {
    let mut f = start(true, ChannelOptions::default()).await;
    let conn = connect_with(&f, h2::client::Builder::new()).await;
    let (mut bodies, _) = subscribe(&mut f, std::slice::from_ref(&conn), 40).await;
    let mut expected = String::new();
    for i in 0..3 {
        let id = format!("e{i}");
        let data = format!("{i:0>100}");
        f.channel
            .publish(Event::data_only(data.clone()).id(id.clone()).unwrap())
            .unwrap();
        expected.push_str(&frame(&id, &data));
    }
    let end = frame("e2", &format!("{:0>100}", 2));
    let reads = bodies.iter_mut().map(|body| async {
        let mut text = String::new();
        read_until(body, &mut text, &end).await;
        text
    });
    for (i, text) in futures_util::future::join_all(reads)
        .await
        .iter()
        .enumerate()
    {
        assert!(*text == expected, "subscriber {i} got other bytes");
    }
}

/// On a current-thread runtime no connection or stream task runs while the test writes:
/// a producer's write that leaves its queue empty went out through the h2 stream.
#[tokio::test]
async fn a_producer_writes_through_its_h2_stream_and_queues_only_past_the_window() {
    let mut f = start(true, ChannelOptions::default()).await;
    let conn = connect(&f, 4096).await;
    let (mut bodies, senders) = subscribe(&mut f, std::slice::from_ref(&conn), 1).await;
    let tx = &senders[0];
    assert!(tx.write_slice(b"data: a\n\n").unwrap());
    assert_eq!(tx.buffered(), 0, "the write went to the stream at once");
    // Past the 4 KiB window the rest is queued for the stream's task, in order.
    let chunk = format!("data: {}\n\n", "z".repeat(1000));
    let mut expected = String::from("data: a\n\n");
    for _ in 0..8 {
        tx.write_slice(chunk.as_bytes()).unwrap();
        expected.push_str(&chunk);
    }
    assert!(tx.buffered() >= 4 * chunk.len(), "{} queued", tx.buffered());
    tx.write_slice(b"data: end\n\n").unwrap();
    expected.push_str("data: end\n\n");
    let mut text = String::new();
    read_until(&mut bodies[0], &mut text, "data: end\n\n").await;
    assert!(text == expected, "the stream's bytes were reordered");
}

#[tokio::test]
async fn tls_h2_subscribers_get_every_event_in_order() {
    subscribers_get_every_event_in_order(true).await;
}

#[tokio::test]
async fn h2c_subscribers_get_every_event_in_order() {
    subscribers_get_every_event_in_order(false).await;
}

/// A subscriber whose client gives its stream a 1 KiB window and never reads is held to
/// its queue's high-water mark and closed by the channel's policy (its stream reset), while
/// the subscribers of another connection receive everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stops_reading_is_closed_by_the_policy_and_the_rest_go_on() {
    let options = ChannelOptions {
        queue: QueueLimits {
            high_water_mark: 8 * 1024,
            max_buffered: 64 * 1024,
        },
        ..ChannelOptions::default()
    };
    let mut f = start(true, options).await;
    let fast = connect(&f, 1 << 20).await;
    let slow = connect(&f, 1024).await;
    let (mut fast_bodies, _) = subscribe(&mut f, std::slice::from_ref(&fast), 2).await;
    let (mut slow_bodies, slow_senders) = subscribe(&mut f, std::slice::from_ref(&slow), 1).await;
    let payload = "y".repeat(200);
    let mut expected = String::new();
    for i in 0..400 {
        let id = format!("e{i}");
        f.channel
            .publish(Event::data_only(payload.clone()).id(id.clone()).unwrap())
            .unwrap();
        expected.push_str(&frame(&id, &payload));
        assert!(
            slow_senders[0].buffered() <= 64 * 1024,
            "the slow queue passed its hard limit"
        );
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for body in &mut fast_bodies {
        let mut text = String::new();
        read_until(body, &mut text, &frame("e399", &payload)).await;
        assert!(
            text == expected,
            "a fast subscriber lost or reordered events"
        );
    }
    eventually(WAIT, "the slow subscriber closed", || {
        f.channel.metrics().closed_slow == 1
    })
    .await;
    assert!(slow_senders[0].is_closed());
    assert_eq!(f.channel.subscribers(), 2);
    // What the window let through, then the reset.
    let mut got = 0;
    let err = loop {
        match within(WAIT, "the slow stream's end", slow_bodies[0].data()).await {
            Some(Ok(d)) => got += d.len(),
            Some(Err(e)) => break e,
            None => panic!("the slow stream ended cleanly after {got} bytes"),
        }
    };
    assert!(got <= 1024, "{got} bytes past a 1 KiB window");
    assert_eq!(err.reason(), Some(h2::Reason::INTERNAL_ERROR), "{err}");
    // The slow client's connection still serves requests.
    let (status, _) = open(&slow, "/hello").await;
    assert_eq!(status, 200);
}

/// A subscriber whose client resets its stream leaves the channel at once; the other
/// stream of its connection goes on, and the connection serves new requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_stream_leaves_the_channel_and_its_connection_goes_on() {
    let mut f = start(true, ChannelOptions::default()).await;
    let conn = connect(&f, 1 << 20).await;
    let (mut bodies, senders) = subscribe(&mut f, std::slice::from_ref(&conn), 2).await;
    f.channel
        .publish(Event::data_only("one").id("1").unwrap())
        .unwrap();
    for body in &mut bodies {
        read_until(body, &mut String::new(), &frame("1", "one")).await;
    }
    let before = f.server.metrics().snapshot().active_streams;
    drop(bodies.remove(0)); // RST_STREAM (CANCEL)
    eventually(WAIT, "the reset subscriber gone", || {
        f.channel.subscribers() == 1
    })
    .await;
    assert!(senders[0].is_disconnected());
    assert!(!senders[1].is_closed());
    eventually(WAIT, "its stream counted out", || {
        f.server.metrics().snapshot().active_streams == before - 1
    })
    .await;
    f.channel
        .publish(Event::data_only("two").id("2").unwrap())
        .unwrap();
    read_until(&mut bodies[0], &mut String::new(), &frame("2", "two")).await;
    let (status, _) = open(&conn, "/hello").await;
    assert_eq!(status, 200);
}

/// At shutdown a subscriber gets every event published before it, then the end of its
/// stream, and its connection a GOAWAY that closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_delivers_what_was_published_then_goaway() {
    let mut f = start(true, ChannelOptions::default()).await;
    let addr = f.server.local_addr();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = support::tls_connector(f.der.as_ref().unwrap(), &[b"h2"])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let (status, mut body) = open(&send, "/ch").await;
    assert_eq!(status, 200);
    within(WAIT, "the subscriber", f.senders.recv())
        .await
        .unwrap();
    let mut expected = String::new();
    for i in 0..20 {
        let id = format!("e{i}");
        f.channel
            .publish(Event::data_only(format!("n{i}")).id(id.clone()).unwrap())
            .unwrap();
        expected.push_str(&frame(&id, &format!("n{i}")));
    }
    let server = f.server;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_millis(300)));
    let mut text = String::new();
    loop {
        match within(WAIT, "the rest of the stream", body.data()).await {
            Some(Ok(d)) => {
                let _ = body.flow_control().release_capacity(d.len());
                text.push_str(std::str::from_utf8(&d).unwrap());
            }
            Some(Err(e)) => panic!("the stream failed: {e} after {text:?}"),
            None => break,
        }
    }
    assert!(text == expected, "got {text:?}");
    within(WAIT, "the shutdown", shutdown).await.unwrap();
    let closed = within(WAIT, "the connection's close", conn).await.unwrap();
    assert!(closed.is_ok(), "{closed:?}");
    drop(send);
}
