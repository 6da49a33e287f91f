//! TLS HTTP/1.1 (ALPN `http/1.1`, or none) on the engine's direct path: long-lived routes
//! are written by the engine itself, sealed for the connection, as on a plain socket;
//! everything else on the same connection is handed to hyper, pipelined requests
//! included; a channel reaches its TLS subscribers and notices them leave; graceful
//! shutdown ends a TLS stream cleanly; a producer's writes are sealed and sent from its
//! own thread through the stream's sink, in order once the socket fills. The clients are
//! rustls, speaking raw bytes.

mod support;

use std::time::Duration;

use rat_engine::{
    App, Channel, ChannelOptions, Event, QueueLimits, Request, ServerConfig, SseResponse,
    StreamSender, StreamingResponse, TlsConfig,
};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{eventually, long_lived, serve_with, within, Head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

struct Fixture {
    server: rat_engine::ServerHandle,
    channel: Channel,
    der: CertificateDer<'static>,
    senders: mpsc::UnboundedReceiver<StreamSender>,
}

const CHUNK: usize = support::SEQ_CHUNK;

/// `/count` (long-lived): three events and the end. `/forever` (long-lived): one event,
/// then open. `/ch` (long-lived): a channel. `/firehose` (long-lived): a byte stream whose
/// sender goes to the test (high-water mark 4 chunks). `/hello`: plain text.
async fn start() -> Fixture {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (pem, key) = (c.cert.pem(), c.signing_key.serialize_pem());
    let tls = TlsConfig::from_pem(pem.as_bytes(), key.as_bytes(), None).unwrap();
    let mut app = App::new();
    app.get("/hello", |_req| async { "hello" }).unwrap();
    long_lived(&mut app, "/count", |_req: Request| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if tx.send(&Event::data_only(format!("n{i}"))).await.is_err() {
                    return;
                }
            }
            tx.end();
        });
        sse
    });
    long_lived(&mut app, "/forever", |_req: Request| async {
        let sse = SseResponse::new();
        sse.send_event("open", "1").unwrap();
        // Kept open until the client leaves or the server shuts down.
        std::mem::forget(sse.sender());
        sse
    });
    let channel = Channel::new("ch", ChannelOptions::default());
    long_lived(&mut app, "/ch", channel.clone());
    let (tx, senders) = mpsc::unbounded_channel();
    long_lived(&mut app, "/firehose", move |_req: Request| {
        let tx = tx.clone();
        async move {
            let limits = QueueLimits {
                high_water_mark: 4 * CHUNK,
                max_buffered: 4096 * CHUNK,
            };
            let (res, sender) = StreamingResponse::channel("application/octet-stream", limits);
            tx.send(sender).unwrap();
            res
        }
    });
    Fixture {
        server: serve_with(app, ServerConfig::default().tls(tls)).await,
        channel,
        der: c.cert.der().clone(),
        senders,
    }
}

/// A client that trusts the fixture's certificate and offers `alpn`.
fn connector(f: &Fixture, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    support::tls_connector(&f.der, alpn)
}

/// A raw HTTP/1.1 connection over TLS, offering `alpn`.
struct Raw {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(f: &Fixture, alpn: &[&[u8]]) -> Raw {
        let tcp = TcpStream::connect(f.server.local_addr()).await.unwrap();
        Raw::connect_over(f, tcp, alpn).await
    }

    async fn connect_over(f: &Fixture, tcp: TcpStream, alpn: &[&[u8]]) -> Raw {
        let name = ServerName::try_from("localhost").unwrap();
        let connect = connector(f, alpn).connect(name, tcp);
        let tls = within(Duration::from_secs(5), "the TLS handshake", connect)
            .await
            .unwrap();
        Raw {
            tls,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    async fn get(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.send(req.as_bytes()).await;
    }

    /// Reads until `buf` holds `needle`; false at EOF.
    async fn fill_until(&mut self, needle: &[u8]) -> bool {
        let read = async {
            while !self.buf.windows(needle.len()).any(|w| w == needle) {
                let mut tmp = [0u8; 4096];
                match self.tls.read(&mut tmp).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                }
            }
            true
        };
        within(Duration::from_secs(5), "bytes from the server", read).await
    }

    /// Takes `buf` up to and including the first `needle`.
    async fn take_through(&mut self, needle: &[u8]) -> String {
        assert!(
            self.fill_until(needle).await,
            "EOF before {:?}",
            String::from_utf8_lossy(needle)
        );
        let at = self
            .buf
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let taken: Vec<u8> = self.buf.drain(..at + needle.len()).collect();
        String::from_utf8(taken).unwrap()
    }

    async fn head(&mut self) -> Head {
        let text = self.take_through(b"\r\n\r\n").await;
        let mut lines = text.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        Head {
            status: status.parse().unwrap(),
            headers: lines
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap();
                    (k.to_ascii_lowercase(), v.trim().to_string())
                })
                .collect(),
        }
    }

    /// Reads a chunked body to its last chunk.
    async fn chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.take_through(b"\r\n").await;
            let size = usize::from_str_radix(line.trim_end(), 16).expect("a chunk size");
            while self.buf.len() < size + 2 {
                assert!(self.fill_more().await, "EOF in a chunk");
            }
            assert_eq!(&self.buf[size..size + 2], b"\r\n", "a chunk's CRLF");
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
            if size == 0 {
                return body;
            }
        }
    }

    /// Reads once more into `buf`; false at EOF.
    async fn fill_more(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        let read = within(Duration::from_secs(10), "bytes", self.tls.read(&mut tmp)).await;
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// True once the server has closed the connection (within 5 s).
    async fn closed(&mut self) -> bool {
        let mut tmp = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.tls.read(&mut tmp)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_routes_are_served_directly_over_tls_and_the_rest_by_hyper() {
    let f = start().await;
    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let mut c = Raw::connect(&f, alpn).await;
        c.get("/count").await;
        let head = c.head().await;
        assert_eq!(head.status, 200);
        assert!(support::wrote_directly(&head), "served directly: {head:?}");
        assert!(head.is_chunked());
        let body = c.take_through(b"0\r\n\r\n").await;
        assert_eq!(
            body, "a\r\ndata: n0\n\n\r\na\r\ndata: n1\n\n\r\na\r\ndata: n2\n\n\r\n0\r\n\r\n",
            "ALPN {alpn:?}"
        );
        // The same connection: a plain route goes to hyper, after the bytes read here.
        c.get("/hello").await;
        let head = c.head().await;
        assert_eq!(head.status, 200);
        assert!(!support::wrote_directly(&head), "hyper: {head:?}");
        assert_eq!(c.take_through(b"hello").await, "hello");
    }
    // Pipelined: a direct response, then hyper's, both from one write.
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    c.send(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(support::wrote_directly(&c.head().await));
    c.take_through(b"0\r\n\r\n").await;
    assert!(!support::wrote_directly(&c.head().await));
    assert_eq!(c.take_through(b"hello").await, "hello");
    drop(c);
    eventually(Duration::from_secs(3), "connections counted out", || {
        f.server.metrics().snapshot().active_connections == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_reaches_tls_subscribers_directly_and_sees_them_leave() {
    let f = start().await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
        c.get("/ch").await;
        let head = c.head().await;
        assert!(support::wrote_directly(&head), "{head:?}");
        subs.push(c);
    }
    eventually(Duration::from_secs(2), "subscribed", || {
        f.channel.subscribers() == 3
    })
    .await;
    for i in 0..20 {
        f.channel
            .publish(Event::data_only(format!("e{i}")))
            .unwrap();
    }
    for c in &mut subs {
        let got = c.take_through(b"data: e19\n\n").await;
        let events: Vec<&str> = got.matches("data: e").collect();
        assert_eq!(events.len(), 20, "every event, in order: {got}");
        assert!(got.find("e0\n").unwrap() < got.find("e19\n").unwrap());
    }
    subs.pop();
    eventually(Duration::from_secs(3), "the leaver unsubscribed", || {
        f.channel.subscribers() == 2
    })
    .await;
    f.channel.publish(Event::data_only("after")).unwrap();
    for c in &mut subs {
        c.take_through(b"data: after\n\n").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_a_direct_tls_stream_cleanly() {
    let f = start().await;
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    c.get("/forever").await;
    assert!(support::wrote_directly(&c.head().await));
    c.take_through(b"data: 1\n\n").await;
    let shutdown = tokio::spawn(f.server.shutdown(Duration::from_millis(500)));
    assert!(c.closed().await, "the connection closes");
    assert!(
        c.buf.ends_with(b"0\r\n\r\n"),
        "a clean chunked end: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    within(Duration::from_secs(5), "shutdown", shutdown)
        .await
        .unwrap();
}

/// On a current-thread runtime the connection task cannot run while the test writes, so
/// `buffered()` shows whether a write was sent from the producer's call (0) or queued.
#[tokio::test]
async fn a_tls_stream_writes_through_its_sink_and_keeps_its_order_once_the_socket_fills() {
    let mut f = start().await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(f.server.local_addr()).await.unwrap();
    let mut c = Raw::connect_over(&f, tcp, &[b"http/1.1"]).await;
    c.get("/firehose").await;
    assert!(support::wrote_directly(&c.head().await));
    let tx = within(Duration::from_secs(2), "the sender", f.senders.recv())
        .await
        .unwrap();
    // Nothing queued or unwritten: the producer's write is sealed and sent at once.
    assert!(tx.write_slice(&support::seq_chunk(0)).unwrap());
    assert_eq!(tx.buffered(), 0, "the write went straight to the socket");
    // The client does not read: the socket fills, and what it did not take waits (sealed
    // in the session, or framed in the queue); the producer is told to wait.
    let mut seq = 1u64;
    while tx.write_slice(&support::seq_chunk(seq)).unwrap() {
        seq += 1;
        assert!(seq < 100_000, "the socket never filled");
    }
    seq += 1;
    assert!(tx.buffered() < 4 * CHUNK, "the rest of one write at most");
    // Writes that ignore it are queued behind, in order.
    while tx.buffered() < 8 * CHUNK {
        assert!(!tx.write(support::seq_chunk(seq)).unwrap());
        seq += 1;
    }
    let producer = support::spawn_seq_producer(tx.clone(), seq..seq + 64);
    let body = c.chunked_body().await;
    producer.await.unwrap();
    let n = seq as usize + 64;
    assert_eq!(body.len(), n * CHUNK);
    for (i, chunk) in body.chunks(CHUNK).enumerate() {
        assert_eq!(chunk, &support::seq_chunk(i as u64)[..], "chunk {i}");
    }
}

/// A request whose TLS record reaches the server in pieces (a partial header, then part of
/// the body) is served once the record is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_arrives_in_pieces_is_read_once_whole() {
    let f = start().await;
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    let (tcp, session) = c.tls.get_mut();
    std::io::Write::write_all(
        &mut session.writer(),
        b"GET /count HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let mut record = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut record).unwrap();
    }
    assert!(record.len() > 30, "one record: {} bytes", record.len());
    for piece in [&record[..3], &record[3..20], &record[20..]] {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(support::wrote_directly(&c.head().await));
    let body = c.take_through(b"0\r\n\r\n").await;
    assert!(body.contains("data: n2\n\n"), "{body}");
}

/// A client's TLS 1.3 key update mid-stream: the session answers it, and events sealed
/// afterwards (by the channel's sink) still reach the client, as does the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_update_mid_stream_is_answered_and_the_stream_goes_on() {
    let f = start().await;
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    assert_eq!(
        c.tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    c.get("/ch").await;
    assert!(support::wrote_directly(&c.head().await));
    eventually(Duration::from_secs(2), "subscribed", || {
        f.channel.subscribers() == 1
    })
    .await;
    f.channel.publish(Event::data_only("before")).unwrap();
    c.take_through(b"data: before\n\n").await;
    c.tls.get_mut().1.refresh_traffic_keys().unwrap();
    c.tls.flush().await.unwrap();
    // The server has read the key update once it has answered it (the answer comes
    // before any record sealed with its new key).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..5 {
        f.channel
            .publish(Event::data_only(format!("after{i}")))
            .unwrap();
    }
    let got = c.take_through(b"data: after4\n\n").await;
    assert_eq!(got.matches("data: after").count(), 5, "{got}");
}

/// A handshake the server refuses ends with rustls's alert saying why, not a bare close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handshake_gets_the_alert_that_says_why() {
    let f = start().await;
    let tcp = TcpStream::connect(f.server.local_addr()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let connect = connector(&f, &[b"spdy/1"]).connect(name, tcp);
    let err = within(Duration::from_secs(5), "the refused handshake", connect)
        .await
        .expect_err("no common ALPN protocol");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        inner,
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::NoApplicationProtocol
        )),
        "{err:?}"
    );
    // The server goes on.
    let mut c = Raw::connect(&f, &[b"http/1.1"]).await;
    c.get("/count").await;
    assert_eq!(c.head().await.status, 200);
}
