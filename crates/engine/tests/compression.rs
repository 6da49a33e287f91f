//! Compression over the wire: negotiation, full bodies, and streams whose every event
//! decodes on arrival, with each coding, on both writers of the wire.

mod support;

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::compress::{Compression, Encoding, RouteCompression};
use rat_engine::{
    App, Body, Channel, ChannelOptions, Event, Request, RouteOptions, ServerConfig, SseResponse,
};
use support::{serve_with, Chunk, RawConn, Wire};
use tokio::time::Instant;

const ALL: [Encoding; 3] = [Encoding::Gzip, Encoding::Br, Encoding::Zstd];

fn big_json() -> String {
    let rows: Vec<String> = (0..200)
        .map(|i| format!("{{\"id\":{i},\"name\":\"row {i}\",\"ok\":true}}"))
        .collect();
    format!("[{}]", rows.join(","))
}

fn app(wire: Wire, channel: &Channel) -> App {
    let mut app = App::new();
    wire.get(&mut app, "/big", |_req| async {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(big_json()))
            .unwrap()
    })
    .unwrap();
    wire.get(&mut app, "/small", |_req| async { "short text" })
        .unwrap();
    wire.get(&mut app, "/png", |_req| async {
        http::Response::builder()
            .header("content-type", "image/png")
            .body(Body::from(vec![7u8; 4096]))
            .unwrap()
    })
    .unwrap();
    wire.get(&mut app, "/ticks", |_req| async {
        let sse = SseResponse::new();
        let tx = sse.sender();
        tokio::spawn(async move {
            for i in 0..4 {
                let ev = Event::new().id(i.to_string()).unwrap().data(format!(
                    "{{\"tick\":{i},\"sent_ms\":{}}}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                ));
                if tx.send(&ev).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            tx.end();
        });
        sse
    })
    .unwrap();
    let plain = RouteOptions {
        compress: RouteCompression::Off,
        ..wire.options()
    };
    app.route_with(
        Method::GET,
        "/uncompressed",
        Arc::new(|_req: Request| async {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(big_json()))
                .unwrap()
        }),
        plain,
    )
    .unwrap();
    app.route_with(
        Method::GET,
        "/ch",
        Arc::new(channel.clone()),
        wire.options(),
    )
    .unwrap();
    app
}

async fn start(wire: Wire) -> (rat_engine::ServerHandle, Channel) {
    let channel = Channel::new(
        "ch",
        ChannelOptions {
            history: 10,
            ..Default::default()
        },
    );
    let config = ServerConfig::default()
        .compression(Compression::new())
        .heartbeat(Some(Duration::from_millis(200)));
    (serve_with(app(wire, &channel), config).await, channel)
}

fn decode_all(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap(),
        "br" => brotli::Decompressor::new(bytes, 4096)
            .read_to_end(&mut out)
            .unwrap(),
        "zstd" => zstd::stream::read::Decoder::new(bytes)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap(),
        other => panic!("unexpected coding {other}"),
    };
    out
}

/// What a client can decode of a stream's bytes so far.
fn decode_so_far(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut reader: Box<dyn std::io::Read + '_> = match encoding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
        "br" => Box::new(brotli::Decompressor::new(bytes, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(bytes).unwrap()),
        other => panic!("unexpected coding {other}"),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

async fn full_bodies_are_compressed_as_negotiated(wire: Wire) {
    let (server, _ch) = start(wire).await;
    let addr = server.local_addr();
    let json = big_json();
    for (accept, want) in [
        ("gzip", Some("gzip")),
        ("br;q=0.9, gzip;q=0.5", Some("br")),
        ("gzip, deflate, br, zstd", Some("zstd")),
        ("identity", None),
        ("br;q=nonsense", None),
        ("*;q=0", None),
    ] {
        let mut conn = RawConn::connect(addr).await;
        let (head, body) = conn
            .roundtrip("GET", "/big", &[("accept-encoding", accept)], b"")
            .await;
        wire.assert_wrote(&head);
        assert_eq!(head.status, 200);
        assert_eq!(head.get("vary"), Some("accept-encoding"), "{accept}");
        assert_eq!(head.get("content-encoding"), want, "{accept}");
        let plain = match want {
            Some(coding) => {
                assert!(
                    body.len() * 3 < json.len(),
                    "{accept}: {} bytes",
                    body.len()
                );
                assert_eq!(head.content_length(), Some(body.len()));
                decode_all(coding, &body)
            }
            None => body,
        };
        assert_eq!(plain, json.as_bytes(), "{accept}");
    }
    // Without the header, too small, already compressed, or turned off: as it is.
    let mut conn = RawConn::connect(addr).await;
    let (head, body) = conn.roundtrip("GET", "/big", &[], b"").await;
    assert_eq!(head.get("content-encoding"), None);
    assert_eq!(head.get("vary"), Some("accept-encoding"));
    assert_eq!(body, json.as_bytes());
    for path in ["/small", "/png", "/uncompressed"] {
        let (head, _) = conn
            .roundtrip("GET", path, &[("accept-encoding", "gzip, br, zstd")], b"")
            .await;
        assert_eq!(head.status, 200, "{path}");
        assert_eq!(head.get("content-encoding"), None, "{path}");
        assert_eq!(head.get("vary"), None, "{path}");
    }
    server.shutdown(Duration::from_millis(200)).await;
}

/// Events sent 300 ms apart: each decodes within 100 ms of its send, for each coding.
async fn each_event_of_a_compressed_stream_decodes_on_arrival(wire: Wire) {
    let (server, _ch) = start(wire).await;
    for coding in ["gzip", "br", "zstd"] {
        let mut conn = RawConn::connect(server.local_addr()).await;
        conn.send_request("GET", "/ticks", &[("accept-encoding", coding)], b"")
            .await;
        let head = conn.read_head().await;
        wire.assert_wrote(&head);
        assert_eq!(head.get("content-encoding"), Some(coding));
        assert_eq!(head.get("content-type"), Some("text/event-stream"));
        let mut wire_bytes = Vec::new();
        let mut seen = 0;
        loop {
            match conn.read_chunk().await {
                Chunk::Data(d) => wire_bytes.extend_from_slice(&d),
                Chunk::End => break,
                Chunk::Eof => panic!("{coding}: cut"),
            }
            let text = String::from_utf8(decode_so_far(coding, &wire_bytes)).unwrap();
            let events: Vec<&str> = text
                .split("\n\n")
                .filter(|e| e.contains("data: "))
                .collect();
            for e in &events[seen..] {
                let sent_ms: u128 = e
                    .split("\"sent_ms\":")
                    .nth(1)
                    .and_then(|r| r.trim_end_matches('}').parse().ok())
                    .unwrap_or_else(|| panic!("{coding}: {e:?}"));
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
                assert!(
                    now_ms.saturating_sub(sent_ms) < 100,
                    "{coding}: an event decoded {} ms after its send",
                    now_ms - sent_ms
                );
            }
            seen = events.len();
        }
        assert_eq!(seen, 4, "{coding}");
        let all = String::from_utf8(decode_all(coding, &wire_bytes)).unwrap();
        assert!(all.contains("id: 3\n"), "{coding}: {all}");
    }
    server.shutdown(Duration::from_millis(200)).await;
}

/// A channel's subscribers get history replay, live events and heartbeats compressed.
async fn channels_replay_and_heartbeat_compressed(wire: Wire) {
    let (server, channel) = start(wire).await;
    for i in 0..3 {
        channel
            .publish(
                Event::new()
                    .id(format!("{i}"))
                    .unwrap()
                    .data(format!("e{i}")),
            )
            .unwrap();
    }
    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_request(
        "GET",
        "/ch",
        &[("accept-encoding", "gzip"), ("last-event-id", "0")],
        b"",
    )
    .await;
    let head = conn.read_head().await;
    wire.assert_wrote(&head);
    assert_eq!(head.get("content-encoding"), Some("gzip"));
    let mut bytes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut published = false;
    loop {
        let text = String::from_utf8(decode_so_far("gzip", &bytes)).unwrap();
        if text.contains("data: e1\n") && text.contains("data: e2\n") && !published {
            assert!(
                !text.contains("data: e0\n"),
                "replayed from after id 0: {text}"
            );
            channel.publish(Event::data_only("live")).unwrap();
            published = true;
        }
        if text.contains("data: live\n") && text.contains("\n:") {
            break;
        }
        assert!(Instant::now() < deadline, "so far: {text:?}");
        match conn.read_chunk().await {
            Chunk::Data(d) => bytes.extend_from_slice(&d),
            other => panic!("ended: {other:?}"),
        }
    }
    server.shutdown(Duration::from_millis(200)).await;
}

/// Subscribers of each coding, some joining late, get every event; the channel's close
/// ends each stream with a valid end of its coding (the gzip trailer's CRC and length
/// checked by the decoder); subscribers of one coding that joined together get the same
/// bytes.
async fn a_channel_compresses_each_event_once_for_all_subscribers_of_a_coding(wire: Wire) {
    let channel = Channel::new("shared", ChannelOptions::default());
    let config = ServerConfig::default()
        .compression(Compression::new())
        .heartbeat(None);
    let server = serve_with(app(wire, &channel), config).await;
    let addr = server.local_addr();
    let mut subscribers = Vec::new();
    let join = |coding: &'static str| async move {
        let mut conn = RawConn::connect(addr).await;
        conn.send_request("GET", "/ch", &[("accept-encoding", coding)], b"")
            .await;
        let head = conn.read_head().await;
        wire.assert_wrote(&head);
        let expected = (coding != "identity").then_some(coding);
        assert_eq!(head.get("content-encoding"), expected, "{coding}");
        assert_eq!(head.get("vary"), Some("accept-encoding"));
        conn
    };
    for coding in ["gzip", "gzip", "zstd", "identity"] {
        subscribers.push((coding, 0, join(coding).await));
    }
    // Events of about 1 KiB, as repetitive as a live table's.
    let rows: Vec<String> = (0..16)
        .map(|r| format!("{{\"id\":{r},\"name\":\"row {r}\",\"price\":{}}}", r * 3))
        .collect();
    let frames: Vec<String> = (0..30)
        .map(|i| format!("data: {{\"n\":{i},\"rows\":[{}]}}\n\n", rows.join(",")))
        .collect();
    support::eventually(Duration::from_secs(5), "subscribed", || {
        channel.subscribers() == 4
    })
    .await;
    for (i, f) in frames.iter().enumerate() {
        if i == 10 {
            // Late: from the 11th event on.
            for coding in ["gzip", "zstd"] {
                subscribers.push((coding, 10, join(coding).await));
            }
            support::eventually(Duration::from_secs(5), "late subscribers", || {
                channel.subscribers() == 6
            })
            .await;
        }
        channel
            .broadcast_raw(bytes::Bytes::from(f.clone()))
            .unwrap();
        if i % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    channel.close();
    let mut bodies = Vec::new();
    for (coding, from, mut conn) in subscribers {
        let wire_bytes = support::within(
            Duration::from_secs(5),
            "the stream's end",
            conn.read_chunked_body(),
        )
        .await;
        let text = match coding {
            "identity" => wire_bytes.clone(),
            c => decode_all(c, &wire_bytes),
        };
        assert_eq!(
            String::from_utf8(text).unwrap(),
            frames[from..].concat(),
            "{coding} from {from}"
        );
        bodies.push((coding, from, wire_bytes));
    }
    let (a, b) = (&bodies[0].2, &bodies[1].2);
    assert_eq!(a, b, "two gzip subscribers that joined together");
    let plain = bodies[3].2.len();
    assert!(a.len() * 3 < plain, "gzip {} vs identity {plain}", a.len());
    server.shutdown(Duration::from_millis(200)).await;
}

support::on_both_wires! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_channel_compresses_each_event_once_for_all_subscribers_of_a_coding,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] full_bodies_are_compressed_as_negotiated,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] each_event_of_a_compressed_stream_decodes_on_arrival,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] channels_replay_and_heartbeat_compressed,
}

#[test]
fn every_coding_is_offered() {
    let c = Compression::new();
    for e in ALL {
        let accept = http::HeaderValue::from_static(e.as_str());
        assert_eq!(c.choose(Some(&accept)), Some(e));
    }
}
