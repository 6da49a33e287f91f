//! permessage-deflate (RFC 7692) on WebSocket routes, against a client made of raw frames
//! compressed with flate2 (no Rust client crate negotiates the extension).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use rat_engine::ws::{WebSocket, WsCompression, WsOptions};
use rat_engine::{App, Channel, ChannelOptions, Event, RouteOptions};
use support::{eventually, serve, READ_DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const KEY: [u8; 4] = [9, 8, 7, 6];

/// Compression that lets clients keep their context between messages.
fn compressed_options() -> WsOptions {
    WsOptions {
        compression: Some(WsCompression {
            client_context_takeover: true,
        }),
        max_payload: 64 << 10,
        ..WsOptions::default()
    }
}

fn app(channel: &Channel) -> App {
    let mut app = App::new();
    let echo = |_req, mut ws: WebSocket| async move {
        while let Some(m) = ws.recv().await {
            ws.sender().send(m);
        }
    };
    app.ws_with("/z/echo", echo, compressed_options()).unwrap();
    let default = WsOptions {
        compression: Some(WsCompression::default()),
        ..WsOptions::default()
    };
    app.ws_with("/z/default", echo, default).unwrap();
    app.ws("/plain/echo", echo).unwrap();
    app.ws_channel_route_with(
        "/z/news",
        channel.clone(),
        compressed_options(),
        RouteOptions::default(),
    )
    .unwrap();
    app
}

/// Upgrades a raw connection offering `extensions`; the connection and the
/// `Sec-WebSocket-Extensions` the server answered.
async fn upgrade(addr: SocketAddr, path: &str, extensions: &str) -> (TcpStream, Option<String>) {
    let offer = match extensions {
        "" => String::new(),
        e => format!("Sec-WebSocket-Extensions: {e}\r\n"),
    };
    let (s, head) = support::ws::raw_upgrade(addr, path, &offer).await;
    let answered = support::ws::header(&head, "sec-websocket-extensions").map(str::to_string);
    (s, answered)
}

/// A masked client frame: `first` is its first byte (FIN, RSV1, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    support::ws::client_frame(first, payload, Some(KEY))
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;

/// A message's payload as a client compresses it: `z` keeps its window between messages
/// (context takeover) unless reset.
fn compress(z: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    z.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A server frame: its first byte and payload.
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    support::ws::read_frame(s)
        .await
        .expect("a frame, not the end")
}

/// A server message's data: inflated on its own when RSV1 is set (the server takes no
/// context over), as it is otherwise.
fn data_of((first, payload): (u8, Vec<u8>)) -> Vec<u8> {
    assert_eq!(first & FIN, FIN, "server messages are one frame");
    if first & RSV1 == 0 {
        return payload;
    }
    let mut z = Decompress::new(false);
    let mut input = payload;
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    z.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(z.total_in() as usize, input.len());
    out
}

use support::ws::close_code;

#[tokio::test]
async fn compressed_messages_are_read_with_the_clients_context_and_echoed_compressed() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let long = "the quick brown fox jumps over the lazy dog; ".repeat(40);
    for (path, offer, takeover) in [
        (
            "/z/echo",
            "permessage-deflate; client_max_window_bits",
            true,
        ),
        (
            "/z/echo",
            "permessage-deflate; client_no_context_takeover",
            false,
        ),
        // By default clients are asked not to keep their context.
        (
            "/z/default",
            "permessage-deflate; client_max_window_bits",
            false,
        ),
    ] {
        let (mut s, answer) = upgrade(addr, path, offer).await;
        let expected = match takeover {
            true => "permessage-deflate; server_no_context_takeover",
            false => "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        };
        assert_eq!(answer.as_deref(), Some(expected));
        let mut z = Compress::new(Compression::default(), false);
        let mut sent = Vec::new();
        for i in 0..3 {
            if !takeover {
                z.reset();
            }
            let text = format!("{i}: {long}");
            let c = compress(&mut z, text.as_bytes());
            if takeover && i > 0 {
                // The window taken over makes a repeat a few bytes.
                assert!(c.len() < 40, "{} bytes", c.len());
            }
            s.write_all(&frame(FIN | RSV1 | 0x1, &c)).await.unwrap();
            sent.push(text.into_bytes());
        }
        // In fragments, with a ping between them and RSV1 on the first only.
        if !takeover {
            z.reset();
        }
        let bin: Vec<u8> = (0..5000u32).map(|i| (i % 7) as u8).collect();
        let c = compress(&mut z, &bin);
        let (a, b) = c.split_at(c.len() / 2);
        s.write_all(&frame(RSV1 | 0x2, a)).await.unwrap();
        s.write_all(&frame(FIN | 0x9, b"p")).await.unwrap();
        s.write_all(&frame(FIN, b)).await.unwrap();
        // Uncompressed messages still pass, short ones come back as they are.
        s.write_all(&frame(FIN | 0x1, b"hi")).await.unwrap();

        // The pong (written by the engine) may come before echoes (written by the handler).
        let mut frames = Vec::new();
        for _ in 0..6 {
            frames.push(read_frame(&mut s).await);
        }
        let pong = frames
            .iter()
            .position(|f| f.0 == FIN | 0xa)
            .expect("a pong");
        assert_eq!(frames.remove(pong).1, b"p");
        let mut frames = frames.into_iter();
        for text in &sent {
            let f = frames.next().unwrap();
            assert_eq!(f.0, FIN | RSV1 | 0x1, "a long text comes back compressed");
            assert!(f.1.len() < text.len() / 4);
            assert_eq!(data_of(f), *text);
        }
        let f = frames.next().unwrap();
        assert_eq!(f.0, FIN | RSV1 | 0x2);
        assert_eq!(data_of(f), bin);
        assert_eq!(frames.next().unwrap(), (FIN | 0x1, b"hi".to_vec()));
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn compression_is_declined_where_not_enabled_or_not_offered_and_rsv1_refused_there() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut z = Compress::new(Compression::default(), false);
    let c = compress(&mut z, b"hello hello hello hello hello hello");

    for (path, offer) in [
        ("/plain/echo", "permessage-deflate"),
        ("/z/echo", ""),
        ("/z/echo", "permessage-deflate; server_max_window_bits=8"),
    ] {
        let (mut s, answer) = upgrade(addr, path, offer).await;
        assert_eq!(answer, None, "{path} {offer:?}");
        s.write_all(&frame(FIN | RSV1 | 0x1, &c)).await.unwrap();
        assert_eq!(close_code(&mut s).await, 1002, "{path} {offer:?}");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bad_compressed_frames_close_with_their_codes_and_the_server_keeps_serving() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let offer = "permessage-deflate";
    let fresh = |data: &[u8]| compress(&mut Compress::new(Compression::best(), false), data);

    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("RSV1 on a ping", frame(FIN | RSV1 | 0x9, b"p"), 1002),
        ("not deflate", frame(FIN | RSV1 | 0x2, &[0xff; 16]), 1007),
        (
            "inflates past max_payload (64 KiB)",
            frame(FIN | RSV1 | 0x2, &fresh(&vec![0; 1 << 20])),
            1009,
        ),
        (
            "invalid UTF-8 once inflated",
            frame(FIN | RSV1 | 0x1, &fresh(&[0x41, 0xff, 0xfe])),
            1007,
        ),
    ];
    // RSV1 on a continuation.
    let c = fresh(&[b'a'; 300]);
    let mut two = frame(RSV1 | 0x1, &c[..c.len() / 2]);
    two.extend(frame(FIN | RSV1, &c[c.len() / 2..]));
    cases.push(("RSV1 on a continuation", two, 1002));
    // Fragments that together inflate past max_payload, each under it.
    let c = fresh(&vec![1; 100 << 10]);
    let mut two = frame(RSV1 | 0x2, &c[..c.len() / 2]);
    two.extend(frame(FIN, &c[c.len() / 2..]));
    cases.push(("fragments past max_payload", two, 1009));

    for (what, bytes, code) in cases {
        let (mut s, answer) = upgrade(addr, "/z/echo", offer).await;
        assert!(answer.is_some());
        s.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut s).await, code, "{what}");
    }

    let (mut s, _) = upgrade(addr, "/z/echo", offer).await;
    let text = "still here, still here, still here, still here, still here";
    s.write_all(&frame(FIN | RSV1 | 0x1, &fresh(text.as_bytes())))
        .await
        .unwrap();
    assert_eq!(data_of(read_frame(&mut s).await), text.as_bytes());
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_channel_sends_its_events_compressed_to_sockets_that_negotiated_it() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let (mut z1, _) = upgrade(addr, "/z/news", "permessage-deflate").await;
    let (mut z2, _) = upgrade(
        addr,
        "/z/news",
        "permessage-deflate; client_no_context_takeover",
    )
    .await;
    let (mut plain, answer) = upgrade(addr, "/z/news", "").await;
    assert_eq!(answer, None);
    eventually(READ_DEADLINE, "3 subscribers", || {
        channel.subscribers() == 3
    })
    .await;

    let long = format!("{{\"rows\":[{}]}}", "{\"a\":1,\"b\":2},".repeat(50));
    for data in [long.as_str(), "short", long.as_str()] {
        channel.publish(Event::new().data(data)).unwrap();
    }
    let mut compressed = Vec::new();
    for s in [&mut z1, &mut z2] {
        for data in [long.as_str(), "short", long.as_str()] {
            let f = read_frame(s).await;
            let rsv1 = f.0 & RSV1 != 0;
            assert_eq!(rsv1, data.len() > 100, "compressed when long: {}", f.0);
            if rsv1 {
                compressed.push(f.1.clone());
            }
            assert_eq!(data_of(f), data.as_bytes());
        }
    }
    // Each long event compressed the same for every socket.
    assert!(compressed.iter().all(|c| *c == compressed[0]));
    assert!(compressed[0].len() < long.len() / 4);
    for data in [long.as_str(), "short", long.as_str()] {
        assert_eq!(
            read_frame(&mut plain).await,
            (FIN | 0x1, data.as_bytes().to_vec())
        );
    }
    server.shutdown(Duration::from_secs(1)).await;
}

/// xorshift64: the same "random" frames on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

#[tokio::test]
async fn random_compressed_frames_end_only_their_socket() {
    let channel = Channel::new("news", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let text = "some words to compress, some words to compress, some words".as_bytes();
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..150 {
        let (mut s, _) = upgrade(addr, "/z/echo", "permessage-deflate").await;
        let mut z = Compress::new(Compression::default(), false);
        let mut bytes = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let mut payload = match rng.below(4) {
                0 => compress(&mut z, text),
                1 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
                2 => {
                    let c = compress(&mut z, text);
                    c[..rng.below(c.len() as u64)].to_vec()
                }
                _ => text.to_vec(),
            };
            if rng.below(8) == 0 {
                payload.extend((0..rng.below(20)).map(|_| rng.next() as u8));
            }
            // Any FIN, RSV1 and data or control opcode.
            let first = (rng.next() as u8 & (FIN | RSV1)) | [0x0, 0x1, 0x2, 0x9, 0xa][rng.below(5)];
            bytes.extend(frame(first, &payload));
        }
        bytes.extend(frame(FIN | 0x8, &1000u16.to_be_bytes()));
        // The server may close before reading it all.
        let _ = s.write_all(&bytes).await;
        // Whatever it made of them, the socket ends: with a close frame, or cut.
        let code = close_code(&mut s).await;
        assert!(
            [1000, 1002, 1006, 1007, 1009].contains(&code),
            "closed with {code}"
        );
        *codes.entry(code).or_insert(0) += 1;
    }
    println!("close codes of 150 sockets of random frames: {codes:?}");
    assert!(
        codes.len() >= 3,
        "the frames reach several outcomes: {codes:?}"
    );

    let (mut s, _) = upgrade(addr, "/z/echo", "permessage-deflate").await;
    s.write_all(&frame(
        FIN | RSV1 | 0x1,
        &compress(&mut Compress::new(Compression::default(), false), text),
    ))
    .await
    .unwrap();
    assert_eq!(data_of(read_frame(&mut s).await), text);
    server.shutdown(Duration::from_secs(1)).await;
}
