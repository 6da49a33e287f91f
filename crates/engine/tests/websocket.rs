//! WebSocket routes against a real client (tokio-tungstenite) and raw frames on a socket.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rat_engine::ws::{CloseStatus, WsOptions};
use rat_engine::{App, Channel, ChannelOptions, Event, QueueLimits};
use support::{eventually, serve, within, READ_DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Wire;

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr, path: &str) -> Client {
    let url = format!("ws://{addr}{path}");
    let (ws, res) = within(
        READ_DEADLINE,
        "the upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("upgrade");
    assert_eq!(res.status(), 101);
    ws
}

async fn next(ws: &mut Client) -> Wire {
    within(READ_DEADLINE, "a message", ws.next())
        .await
        .expect("a message, not the end")
        .expect("a message, not an error")
}

fn echo_app() -> App {
    let mut app = App::new();
    support::ws_echo(&mut app, "/echo");
    app
}

#[tokio::test]
async fn echoes_text_and_binary_at_the_length_boundaries_in_order() {
    let server = serve(echo_app()).await;
    let mut ws = connect(server.local_addr(), "/echo").await;
    let sizes = [0usize, 125, 126, 65535, 65536, 1 << 20];
    for &n in &sizes {
        let text: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        ws.send(Wire::text(text.clone())).await.unwrap();
        let bin: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        ws.send(Wire::binary(bin.clone())).await.unwrap();
    }
    for &n in &sizes {
        match next(&mut ws).await {
            Wire::Text(t) => {
                assert_eq!(t.len(), n);
                assert!(t
                    .bytes()
                    .enumerate()
                    .all(|(i, b)| b == b'a' + (i % 26) as u8));
            }
            other => panic!("expected text of {n} bytes, got {other:?}"),
        }
        match next(&mut ws).await {
            Wire::Binary(b) => {
                assert_eq!(b.len(), n);
                assert!(b.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
            }
            other => panic!("expected binary of {n} bytes, got {other:?}"),
        }
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_ping_is_answered_with_its_payload_and_path_params_reach_the_handler() {
    let mut app = App::new();
    app.ws(
        "/rooms/:room",
        |req: rat_engine::Request, ws: rat_engine::ws::WebSocket| async move {
            let room = req.param("room").unwrap_or("").to_string();
            ws.sender().send_text(format!("joined {room}"));
            let mut ws = ws;
            while ws.recv().await.is_some() {}
        },
    )
    .unwrap();
    let server = serve(app).await;
    let mut ws = connect(server.local_addr(), "/rooms/kitchen").await;
    assert_eq!(next(&mut ws).await, Wire::text("joined kitchen"));
    ws.send(Wire::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        next(&mut ws).await,
        Wire::Pong(b"are you there".to_vec().into())
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn close_codes_travel_both_ways() {
    let seen: Arc<Mutex<Option<CloseStatus>>> = Arc::default();
    let mut app = App::new();
    let seen2 = seen.clone();
    app.ws(
        "/close-me",
        move |_req, mut ws: rat_engine::ws::WebSocket| {
            let seen = seen2.clone();
            async move {
                while ws.recv().await.is_some() {}
                ws.sender().closed().await;
                *seen.lock().unwrap() = ws.close_status();
            }
        },
    )
    .unwrap();
    app.ws(
        "/closes",
        |_req, ws: rat_engine::ws::WebSocket| async move {
            ws.sender().send_text("last words");
            ws.sender().close(4001, "done here");
            ws.sender().closed().await;
        },
    )
    .unwrap();
    let server = serve(app).await;
    let addr = server.local_addr();

    // The client closes: the server echoes the code and the handler learns it.
    let mut ws = connect(addr, "/close-me").await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    match next(&mut ws).await {
        Wire::Close(Some(f)) => assert_eq!(u16::from(f.code), 4000),
        other => panic!("expected the close echo, got {other:?}"),
    }
    eventually(READ_DEADLINE, "the handler to see the close", || {
        seen.lock().unwrap().is_some()
    })
    .await;
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some(CloseStatus {
            code: 4000,
            reason: "bye".into()
        })
    );

    // The server closes after what it queued.
    let mut ws = connect(addr, "/closes").await;
    assert_eq!(next(&mut ws).await, Wire::text("last words"));
    match next(&mut ws).await {
        Wire::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 4001);
            assert_eq!(f.reason.as_str(), "done here");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    server.shutdown(Duration::from_secs(1)).await;
}

/// A raw connection upgraded by hand, to send frames no client library would.
async fn raw_upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    support::ws::raw_upgrade(addr, path, "").await.0
}

/// A final client frame with `opcode`, masked unless `mask` is None.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    support::ws::client_frame(0x80 | opcode, payload, mask)
}

use support::ws::close_code;

#[tokio::test]
async fn invalid_frames_close_with_their_codes_and_the_server_keeps_serving() {
    let mut app = echo_app();
    let small = WsOptions {
        max_payload: 1024,
        ..WsOptions::default()
    };
    app.ws_with(
        "/small",
        |_req, mut ws: rat_engine::ws::WebSocket| async move { while ws.recv().await.is_some() {} },
        small,
    )
    .unwrap();
    let server = serve(app).await;
    let addr = server.local_addr();
    let key = Some([1, 2, 3, 4]);

    let mut s = raw_upgrade(addr, "/echo").await;
    s.write_all(&frame(0x1, &[0xff, 0xfe, 0x41], key))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut s).await,
        1007,
        "bad UTF-8 in a text message"
    );

    // Bad UTF-8 split across fragments is caught too.
    let mut s = raw_upgrade(addr, "/echo").await;
    let mut first = frame(0x1, &[0x41, 0xe2], key);
    first[0] &= 0x7f; // not final
    s.write_all(&first).await.unwrap();
    s.write_all(&frame(0x0, &[0x28, 0xa1], key)).await.unwrap();
    assert_eq!(close_code(&mut s).await, 1007, "bad UTF-8 across fragments");

    let mut s = raw_upgrade(addr, "/echo").await;
    s.write_all(&frame(0x2, b"hello", None)).await.unwrap();
    assert_eq!(close_code(&mut s).await, 1002, "an unmasked client frame");

    let mut s = raw_upgrade(addr, "/echo").await;
    s.write_all(&frame(0x9, &[0u8; 126], key)).await.unwrap();
    assert_eq!(close_code(&mut s).await, 1002, "a ping over 125 bytes");

    let mut s = raw_upgrade(addr, "/small").await;
    s.write_all(&frame(0x2, &[7u8; 2000], key)).await.unwrap();
    assert_eq!(close_code(&mut s).await, 1009, "a message over max_payload");

    // Fragments with a ping between them: the ping is answered, the message joined.
    let mut s = raw_upgrade(addr, "/echo").await;
    let mut first = frame(0x1, b"frag", key);
    first[0] &= 0x7f;
    s.write_all(&first).await.unwrap();
    s.write_all(&frame(0x9, b"p", key)).await.unwrap();
    s.write_all(&frame(0x0, b"mented", key)).await.unwrap();
    let mut got = vec![0u8; 3 + 2 + 10];
    within(READ_DEADLINE, "pong and echo", s.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got[..3], &[0x8a, 1, b'p'], "the pong comes first");
    assert_eq!(&got[3..5], &[0x81, 10]);
    assert_eq!(&got[5..], b"fragmented");

    // None of that harmed the server.
    let mut ws = connect(addr, "/echo").await;
    ws.send(Wire::text("still here")).await.unwrap();
    assert_eq!(next(&mut ws).await, Wire::text("still here"));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_plain_get_to_a_websocket_route_is_refused() {
    let server = serve(echo_app()).await;
    let mut conn = support::RawConn::connect(server.local_addr()).await;
    let (head, _) = conn.roundtrip("GET", "/echo", &[], b"").await;
    assert_eq!(head.status, 400);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_at_the_hard_limit() {
    let mut app = App::new();
    let outcome = support::ws::flood_route(&mut app, "/flood");
    let server = serve(app).await;
    let _s = raw_upgrade(server.local_addr(), "/flood").await; // never read
    eventually(
        Duration::from_secs(10),
        "the flooded socket to be cut",
        || outcome.lock().unwrap().is_some(),
    )
    .await;
    let (sent, full_seen, status) = outcome.lock().unwrap().clone().unwrap();
    assert!(full_seen, "send reported the high-water mark");
    assert!(sent < 16_384, "cut before the loop's bound ({sent} sends)");
    assert_eq!(status.map(|s| s.code), Some(1006));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn drained_resolves_once_a_slow_reader_catches_up() {
    let drains = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d2 = drains.clone();
    let mut app = App::new();
    let options = WsOptions {
        queue: QueueLimits::with_high_water_mark(1024),
        ..WsOptions::default()
    };
    app.ws_with(
        "/burst",
        move |_req, ws: rat_engine::ws::WebSocket| {
            let d = d2.clone();
            async move {
                let tx = ws.sender().clone();
                tx.on_drain(move || {
                    d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
                let mut below = true;
                for i in 0..100 {
                    below &= tx.send_text(format!("{i:0>64}"));
                }
                assert!(!below, "100 x 64 bytes pass a 1 KiB mark");
                tx.drained().await;
                tx.send_text("after drain");
                let mut ws = ws;
                while ws.recv().await.is_some() {}
            }
        },
        options,
    )
    .unwrap();
    let server = serve(app).await;
    let mut ws = connect(server.local_addr(), "/burst").await;
    for i in 0..100 {
        assert_eq!(next(&mut ws).await, Wire::text(format!("{i:0>64}")));
    }
    assert_eq!(next(&mut ws).await, Wire::text("after drain"));
    eventually(READ_DEADLINE, "the drain hook", || {
        drains.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_channel_reaches_many_sockets_as_text_frames_in_order() {
    let channel = Channel::new("news", ChannelOptions::default());
    let mut app = App::new();
    app.ws_channel("/news", channel.clone()).unwrap();
    let server = serve(app).await;
    let addr = server.local_addr();
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(connect(addr, "/news").await);
    }
    eventually(READ_DEADLINE, "50 subscribers", || {
        channel.subscribers() == 50
    })
    .await;
    for i in 0..3 {
        channel
            .publish(Event::new().event("n").data(format!("{{\"n\":{i}}}")))
            .unwrap();
    }
    for c in &mut clients {
        for i in 0..3 {
            assert_eq!(next(c).await, Wire::text(format!("{{\"n\":{i}}}")));
        }
    }
    // A socket that leaves is unsubscribed.
    let mut gone = clients.pop().unwrap();
    gone.close(None).await.unwrap();
    eventually(READ_DEADLINE, "49 subscribers", || {
        channel.subscribers() == 49
    })
    .await;
    // Closing the channel closes its sockets normally.
    channel.close();
    match next(&mut clients[0]).await {
        Wire::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let server = serve(echo_app()).await;
    let mut ws = connect(server.local_addr(), "/echo").await;
    let stop = tokio::spawn(server.shutdown(Duration::from_secs(2)));
    match next(&mut ws).await {
        Wire::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let _ = ws.close(None).await;
    within(Duration::from_secs(5), "shutdown", stop)
        .await
        .unwrap();
}

#[tokio::test]
async fn credentials_and_stream_limits_apply_before_the_upgrade() {
    use rat_engine::auth::TokenRule;
    let mut app = echo_app();
    app.ws(
        "/admin/ws",
        |_req, mut ws: rat_engine::ws::WebSocket| async move { while ws.recv().await.is_some() {} },
    )
    .unwrap();
    let config = rat_engine::ServerConfig {
        max_streams_per_ip: Some(1),
        ..rat_engine::ServerConfig::default()
    }
    .auth(TokenRule::new("/admin").bearer(["s3cret"]));
    let server = support::serve_with(app, config).await;
    let addr = server.local_addr();

    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/admin/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }

    // One stream per IP: a socket holds its slot while open, and frees it when closed.
    let mut first = connect(addr, "/echo").await;
    let second = tokio_tungstenite::connect_async(format!("ws://{addr}/echo")).await;
    match second {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 429),
        other => panic!("expected a 429, got {other:?}"),
    }
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = within(READ_DEADLINE, "the close", first.next()).await {}
    let mut again = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo")).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = again.expect("the slot is freed once the first socket closed");
    again.send(Wire::text("hi")).await.unwrap();
    assert_eq!(next(&mut again).await, Wire::text("hi"));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_keep_alive_connection_served_on_the_direct_path_then_upgrades() {
    let mut app = echo_app();
    let long = rat_engine::RouteOptions {
        long_lived: true,
        ..Default::default()
    };
    app.route_with(
        http::Method::GET,
        "/hello",
        Arc::new(|_req| async { "hello" }),
        long,
    )
    .unwrap();
    let server = serve(app).await;
    let mut conn = support::RawConn::connect(server.local_addr()).await;
    let (head, body) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!((head.status, body.as_slice()), (200, &b"hello"[..]));
    assert!(
        support::wrote_directly(&head),
        "the first answer came from the direct path"
    );
    conn.send_request(
        "GET",
        "/echo",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        b"",
    )
    .await;
    // Read by hand: the helper's head reader skips 1xx responses.
    let (mut stream, mut pending) = conn.into_parts();
    while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1024];
        let n = within(READ_DEADLINE, "the 101", stream.read(&mut b))
            .await
            .unwrap();
        assert!(n > 0, "EOF before the 101");
        pending.extend_from_slice(&b[..n]);
    }
    let end = pending.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8(pending.drain(..end).collect()).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mut ws = tokio_tungstenite::WebSocketStream::from_partially_read(
        stream,
        pending,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    ws.send(Wire::text("over the same connection"))
        .await
        .unwrap();
    let got = within(READ_DEADLINE, "the echo", ws.next()).await;
    assert_eq!(
        got.unwrap().unwrap(),
        Wire::text("over the same connection")
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sockets_of_two_idle_timeouts_close_each_after_its_own() {
    let mut app = App::new();
    for (path, ms) in [("/short", 200), ("/long", 800)] {
        let options = WsOptions {
            idle_timeout: Some(Duration::from_millis(ms)),
            ..WsOptions::default()
        };
        // The handler holds the socket until it ends.
        let handler = |_req, mut ws: rat_engine::ws::WebSocket| async move {
            while ws.recv().await.is_some() {}
        };
        app.ws_with(path, handler, options).unwrap();
    }
    let server = serve(app).await;
    let start = tokio::time::Instant::now();
    let (mut short, mut long) = (
        connect(server.local_addr(), "/short").await,
        connect(server.local_addr(), "/long").await,
    );
    let closed_after = |m: Wire| match m {
        Wire::Close(Some(f)) if u16::from(f.code) == 1001 => start.elapsed(),
        other => panic!("expected a 1001 close frame, got {other:?}"),
    };
    let short_at = closed_after(next(&mut short).await);
    let long_at = closed_after(next(&mut long).await);
    // Each closes between its timeout and a quarter more (the idle clock's tick), plus
    // scheduling.
    assert!(
        short_at >= Duration::from_millis(150) && short_at < Duration::from_millis(600),
        "/short closed after {short_at:?}"
    );
    assert!(
        long_at >= Duration::from_millis(750) && long_at < Duration::from_millis(1600),
        "/long closed after {long_at:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_socket_that_receives_nothing_for_the_idle_timeout_is_closed_with_1001() {
    let mut app = App::new();
    let options = WsOptions {
        idle_timeout: Some(Duration::from_millis(300)),
        ..WsOptions::default()
    };
    app.ws_with(
        "/echo",
        |_req, mut ws: rat_engine::ws::WebSocket| async move {
            while let Some(m) = ws.recv().await {
                ws.sender().send(m);
            }
        },
        options,
    )
    .unwrap();
    let server = serve(app).await;
    let mut ws = connect(server.local_addr(), "/echo").await;
    // Messages 200 ms apart keep it open past the timeout.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ws.send(Wire::text(format!("m{i}"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Wire::text(format!("m{i}")));
    }
    let quiet = tokio::time::Instant::now();
    match next(&mut ws).await {
        Wire::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1001);
            assert_eq!(f.reason.as_str(), "idle timeout");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let waited = quiet.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed {waited:?} after the last message"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_first_subprotocol_the_client_offers_that_the_route_speaks_is_chosen() {
    let mut app = App::new();
    let options = WsOptions {
        protocols: vec!["chat.v2".into(), "chat.v1".into()],
        ..WsOptions::default()
    };
    app.ws_with(
        "/chat",
        |_req, ws: rat_engine::ws::WebSocket| async move {
            let chosen = ws.protocol().unwrap_or("none").to_string();
            ws.sender().send_text(chosen);
        },
        options,
    )
    .unwrap();
    let server = serve(app).await;
    let addr = server.local_addr();
    for (offer, chosen) in [
        (Some("chat.v1, chat.v2"), Some("chat.v1")),
        (Some("mqtt, chat.v2"), Some("chat.v2")),
        (Some("mqtt"), None),
        (None, None),
    ] {
        let offer_line = offer.map_or(String::new(), |o| {
            format!("Sec-WebSocket-Protocol: {o}\r\n")
        });
        let (mut s, head) = support::ws::raw_upgrade(addr, "/chat", &offer_line).await;
        let answered = support::ws::header(&head, "sec-websocket-protocol");
        assert_eq!(answered, chosen, "offered {offer:?}");
        // The handler reads the same choice.
        let expected = chosen.unwrap_or("none");
        let mut frame = vec![0u8; 2 + expected.len()];
        within(
            READ_DEADLINE,
            "the handler's message",
            s.read_exact(&mut frame),
        )
        .await
        .unwrap();
        assert_eq!(&frame[2..], expected.as_bytes());
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_front_end_that_holds_its_messages_stops_the_reading_until_it_handles_them() {
    use rat_engine::ws::{Message, Unhandled};
    use rat_engine::Request;
    type Held = Arc<Mutex<Vec<(Message, Unhandled)>>>;
    let held: Held = Arc::default();
    let h2 = held.clone();
    let mut app = App::new();
    // As the Node binding registers a WebSocket route, its callback keeping each message
    // (and its hold) until "JS" handles it.
    let cb = move |req: Request| {
        let h = h2.clone();
        async move {
            rat_engine::ws::accept_with_callbacks(
                req.headers(),
                req.version(),
                req.remote_addr(),
                WsOptions::default(),
                move |m, u| h.lock().unwrap().push((m, u)),
                |_| {},
            )
        }
    };
    support::ws::binding_route(&mut app, "/cb", Arc::new(cb));
    let server = serve(app).await;
    let client = connect(server.local_addr(), "/cb").await;
    let (mut tx, _rx) = client.split();
    // 400 messages of 64 KiB (25 MiB), each starting with its number.
    const N: u32 = 400;
    let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let s2 = sent.clone();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let mut m = vec![0u8; 64 << 10];
            m[..4].copy_from_slice(&i.to_be_bytes());
            tx.send(Wire::binary(m)).await.unwrap();
            s2.store(i + 1, std::sync::atomic::Ordering::SeqCst);
        }
        tx
    });
    // Nothing handled: the server reads up to 1 MiB of messages (each counted 64 bytes
    // more than its length), then leaves the rest to TCP.
    eventually(READ_DEADLINE, "the first messages", || {
        held.lock().unwrap().len() >= 15
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = held.lock().unwrap().len();
    assert!(
        first <= 16,
        "{first} messages of 64 KiB held past the 1 MiB backlog"
    );
    let sent_then = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        sent_then < N,
        "the client sent all {N} messages while the server held them"
    );
    // Handling them lets the reading go on, in order, to the last message.
    let mut next = 0u32;
    within(Duration::from_secs(20), "every message", async {
        while next < N {
            let batch = std::mem::take(&mut *held.lock().unwrap());
            for (m, _hold) in batch {
                let Message::Binary(b) = m else {
                    panic!("a text message")
                };
                assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), next);
                next += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let _tx = within(READ_DEADLINE, "the sender", sender).await.unwrap();
    server.shutdown(Duration::from_secs(1)).await;
}
