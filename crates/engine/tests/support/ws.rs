//! WebSocket frames by hand: an upgrade on a raw connection, client frames no library
//! would send, and the server's frames read one by one.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{within, READ_DEADLINE};

/// Upgrades a raw connection to `path` with the sample key of RFC 6455 and the header
/// lines in `extra` (each ending in CRLF); the connection and the 101's head.
pub async fn raw_upgrade(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        within(READ_DEADLINE, "the 101 head", s.read_exact(&mut b))
            .await
            .unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    (s, head)
}

/// The value of header `name` in a response head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A client frame: `first` is its first byte (FIN, RSVs, opcode); masked unless `mask` is
/// `None`.
pub fn client_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// The next server frame: its first byte and payload; `None` once the connection ends.
pub async fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    within(READ_DEADLINE, "a frame", async {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.ok()?;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        Some((h[0], payload))
    })
    .await
}

/// Reads frames until a close frame: its code (1005 without one); 1006 when the connection
/// ends first.
pub async fn close_code(s: &mut TcpStream) -> u16 {
    while let Some((first, payload)) = read_frame(s).await {
        if first & 0x0f == 0x8 {
            return match payload[..] {
                [a, b, ..] => u16::from_be_bytes([a, b]),
                _ => 1005,
            };
        }
    }
    1006
}

/// How a flood route's socket ended: sends made, whether one reported the high-water mark,
/// and the socket's close status (see [`flood_route`]).
pub type Flooded = (usize, bool, Option<rat_engine::ws::CloseStatus>);

/// A route at `path` whose handler sends 64 KiB binary messages (at most 16,384: 1 GiB),
/// yielding after each so the writer runs, to sockets with a 16 KiB high-water mark and a
/// 256 KiB hard limit; what became of it once the socket is gone.
pub fn flood_route(
    app: &mut rat_engine::App,
    path: &str,
) -> std::sync::Arc<std::sync::Mutex<Option<Flooded>>> {
    use rat_engine::ws::{WebSocket, WsOptions};
    let outcome = std::sync::Arc::<std::sync::Mutex<Option<Flooded>>>::default();
    let out = outcome.clone();
    let options = WsOptions {
        queue: rat_engine::QueueLimits {
            high_water_mark: 16 << 10,
            max_buffered: 256 << 10,
        },
        ..WsOptions::default()
    };
    app.ws_with(
        path,
        move |_req, ws: WebSocket| {
            let out = out.clone();
            async move {
                let tx = ws.sender().clone();
                let chunk = bytes::Bytes::from(vec![0u8; 64 << 10]);
                let (mut sent, mut full_seen) = (0, false);
                while sent < 16_384 && !tx.is_closed() {
                    full_seen |= !tx.send_binary(chunk.clone());
                    sent += 1;
                    tokio::task::yield_now().await;
                }
                tx.closed().await;
                *out.lock().unwrap() = Some((sent, full_seen, tx.close_status()));
            }
        },
        options,
    )
    .unwrap();
    outcome
}

/// Registers `handler` at `path` as the Node binding registers a WebSocket route: a
/// long-lived GET route that streams (its handler answers with `accept_with_callbacks`).
pub fn binding_route(
    app: &mut rat_engine::App,
    path: &str,
    handler: std::sync::Arc<dyn rat_engine::Handler>,
) {
    let route = rat_engine::RouteOptions {
        long_lived: true,
        stream: true,
        ..rat_engine::RouteOptions::default()
    };
    app.route_with(http::Method::GET, path, handler, route)
        .unwrap();
}
