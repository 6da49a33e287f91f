//! WebSockets over HTTP/2 (RFC 8441): an h2 client's extended CONNECT, and tungstenite as
//! the WebSocket client over the stream.

mod support;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use rat_engine::ws::{WsCompression, WsOptions};
use rat_engine::{App, Channel, ChannelOptions, Event, RouteOptions};
use support::{eventually, serve, within, READ_DEADLINE};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message as Wire;
use tokio_tungstenite::WebSocketStream;

/// An HTTP/2 stream as a byte stream, for tungstenite.
struct H2Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    unread: Bytes,
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.unread.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.unread = data;
                }
            }
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let capacity = self.send.capacity();
            if capacity > 0 {
                let n = capacity.min(buf.len());
                let data = Bytes::copy_from_slice(&buf[..n]);
                return Poll::Ready(
                    self.send
                        .send_data(data, false)
                        .map(|()| n)
                        .map_err(io::Error::other),
                );
            }
            self.send.reserve_capacity(buf.len());
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(
            self.send
                .send_data(Bytes::new(), true)
                .map_err(io::Error::other),
        )
    }
}

/// An HTTP/2 connection (h2c with prior knowledge) that announced extended CONNECT.
async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    eventually(READ_DEADLINE, "the server's SETTINGS", || {
        client.is_extended_connect_protocol_enabled()
    })
    .await;
    client = client.ready().await.unwrap();
    client
}

/// An extended CONNECT for `protocol` on `path`, with `Sec-WebSocket-Version: version`.
fn connect_request(
    addr: SocketAddr,
    path: &str,
    protocol: &'static str,
    version: &str,
) -> http::request::Builder {
    http::Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}{path}"))
        .header("sec-websocket-version", version)
        .extension(h2::ext::Protocol::from_static(protocol))
}

/// Opens a WebSocket on `path` over `client`'s connection; the 200's
/// `sec-websocket-extensions`, if any.
async fn open(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    path: &str,
    extensions: Option<&str>,
) -> (WebSocketStream<H2Stream>, Option<String>) {
    let mut req = connect_request(addr, path, "websocket", "13");
    if let Some(e) = extensions {
        req = req.header("sec-websocket-extensions", e);
    }
    let (response, send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    let res = within(READ_DEADLINE, "the CONNECT's answer", response)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let answered = res
        .headers()
        .get("sec-websocket-extensions")
        .map(|v| v.to_str().unwrap().to_string());
    let io = H2Stream {
        send,
        recv: res.into_body(),
        unread: Bytes::new(),
    };
    (
        WebSocketStream::from_raw_socket(io, Role::Client, None).await,
        answered,
    )
}

async fn next(ws: &mut WebSocketStream<H2Stream>) -> Wire {
    within(READ_DEADLINE, "a message", ws.next())
        .await
        .expect("a message, not the end")
        .expect("a message, not an error")
}

fn app(channel: &Channel) -> App {
    let mut app = App::new();
    support::ws_echo(&mut app, "/echo");
    app.get("/hello", |_req| async { "hello" }).unwrap();
    let compressed = WsOptions {
        compression: Some(WsCompression::default()),
        ..WsOptions::default()
    };
    app.ws_channel_route_with(
        "/news",
        channel.clone(),
        compressed,
        RouteOptions::default(),
    )
    .unwrap();
    app
}

#[tokio::test]
async fn sockets_over_one_http2_connection_echo_in_order_and_receive_a_channel() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut client = h2_connect(addr).await;
    let (mut a, answered) = open(&mut client, addr, "/echo", None).await;
    assert_eq!(answered, None);
    let (mut b, _) = open(&mut client, addr, "/echo", None).await;
    // Past the client's 64 KiB stream window: the echo waits for it to be released.
    let sizes = [0usize, 125, 126, 65535, 65536, 1 << 20];
    for &n in &sizes {
        let text: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        a.send(Wire::text(text)).await.unwrap();
        b.send(Wire::binary(vec![7u8; n])).await.unwrap();

        match next(&mut a).await {
            Wire::Text(t) => {
                assert_eq!(t.len(), n);
                assert!(t
                    .bytes()
                    .enumerate()
                    .all(|(i, c)| c == b'a' + (i % 26) as u8));
            }
            other => panic!("expected text, got {other:?}"),
        }
        assert_eq!(next(&mut b).await, Wire::binary(vec![7u8; n]));
    }

    // A channel's socket on the same connection, with permessage-deflate negotiated.
    let (mut news, answered) = open(&mut client, addr, "/news", Some("permessage-deflate")).await;
    assert_eq!(
        answered.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    eventually(READ_DEADLINE, "the subscriber", || {
        channel.subscribers() == 1
    })
    .await;
    // Short: sent uncompressed, which tungstenite (no deflate) reads.
    channel.publish(Event::new().data("over h2")).unwrap();
    assert_eq!(next(&mut news).await, Wire::text("over h2"));

    // A close handshake ends the socket and its stream; the other socket goes on.
    a.close(None).await.unwrap();
    assert!(matches!(next(&mut a).await, Wire::Close(_)));
    assert!(within(READ_DEADLINE, "the end", a.next()).await.is_none());
    b.send(Wire::text("still here")).await.unwrap();
    assert_eq!(next(&mut b).await, Wire::text("still here"));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_plain_http2_get_or_another_protocol_to_a_websocket_route_is_refused() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut client = h2_connect(addr).await;
    let get = http::Request::get(format!("http://{addr}/echo"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(get, true).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::BAD_REQUEST);
    let other = connect_request(addr, "/echo", "webtransport", "13")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(other, false).unwrap();
    assert_ne!(response.await.unwrap().status(), StatusCode::OK);
    // A WebSocket's CONNECT to a route that is not a WebSocket's opens no tunnel.
    let hello = connect_request(addr, "/hello", "websocket", "13")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(hello, false).unwrap();
    assert_eq!(response.await.unwrap().status(), StatusCode::BAD_REQUEST);
    // A CONNECT for a WebSocket without version 13 is told which version is served.
    let old = connect_request(addr, "/echo", "websocket", "8")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(old, false).unwrap();
    let res = response.await.unwrap();
    assert_eq!(res.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(res.headers()["sec-websocket-version"], "13");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn shutdown_closes_http2_sockets_with_1001_and_ends_their_streams() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut client = h2_connect(addr).await;
    let (mut a, _) = open(&mut client, addr, "/echo", None).await;
    let (mut news, _) = open(&mut client, addr, "/news", None).await;
    eventually(READ_DEADLINE, "the subscriber", || {
        channel.subscribers() == 1
    })
    .await;
    let shutdown = tokio::spawn(server.shutdown(Duration::from_secs(5)));
    for ws in [&mut a, &mut news] {
        match next(ws).await {
            Wire::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected a close frame, got {other:?}"),
        }
        // tungstenite answers the close; the server then ends the stream.
        assert!(within(READ_DEADLINE, "the end", ws.next()).await.is_none());
    }
    within(READ_DEADLINE, "the shutdown", shutdown)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_socket_whose_client_never_reads_is_cut_at_the_hard_limit_and_its_connection_goes_on() {
    let mut app = App::new();
    support::ws_echo(&mut app, "/echo");
    let outcome = support::ws::flood_route(&mut app, "/flood");
    let server = serve(app).await;
    let addr = server.local_addr();
    let mut client = h2_connect(addr).await;
    // The flood's stream is never read, so its flow-control window is never released: the
    // server can send it 64 KiB and queues the rest.
    let (response, _send) = client
        .send_request(
            connect_request(addr, "/flood", "websocket", "13")
                .body(())
                .unwrap(),
            false,
        )
        .unwrap();
    let res = within(READ_DEADLINE, "the CONNECT's answer", response)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut unread = res.into_body();
    eventually(
        Duration::from_secs(10),
        "the flooded socket to be cut",
        || outcome.lock().unwrap().is_some(),
    )
    .await;
    let (sent, full_seen, _) = outcome.lock().unwrap().clone().unwrap();
    assert!(full_seen, "send reported the high-water mark");
    assert!(sent < 16_384, "cut before the loop's bound ({sent} sends)");
    // The stream was cut, not ended: after what the window let through, it is reset.
    let mut received = 0;
    let end = loop {
        match within(READ_DEADLINE, "the flood's stream", unread.data()).await {
            Some(Ok(data)) => {
                received += data.len();
                let _ = unread.flow_control().release_capacity(data.len());
            }
            other => break other,
        }
    };
    assert!(
        received <= 65_535,
        "{received} bytes past the stream's window"
    );
    assert!(matches!(end, Some(Err(_))), "the stream ended with {end:?}");
    // The connection still carries a new socket in both directions.
    let mut client = client.ready().await.unwrap();
    let (mut echo, _) = open(&mut client, addr, "/echo", None).await;
    for n in [10usize, 100 << 10] {
        echo.send(Wire::binary(vec![3u8; n])).await.unwrap();
        assert_eq!(next(&mut echo).await, Wire::binary(vec![3u8; n]));
    }
    server.shutdown(Duration::from_secs(1)).await;
}
