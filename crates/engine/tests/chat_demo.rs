//! The chat demo, started on port 0 and driven over real connections: messages reach every
//! member of a room and only that room, and a member that reconnects with Last-Event-ID gets
//! exactly what it missed.

#[allow(dead_code)]
#[path = "../examples/chat_demo.rs"]
mod demo;

use std::time::Duration;

use rat_engine::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn request(addr: std::net::SocketAddr, raw: String) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn post(addr: std::net::SocketAddr, room: &str, body: &str) -> String {
    request(
        addr,
        format!(
            "POST /rooms/{room}/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// Opens an SSE subscription and returns the socket after the response head.
async fn subscribe(addr: std::net::SocketAddr, room: &str, last_id: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let resume = last_id
        .map(|id| format!("last-event-id: {id}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET /rooms/{room}/events HTTP/1.1\r\nhost: x\r\n{resume}\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Reads until `n` SSE `id:` lines have been seen; returns the text.
async fn read_events(s: &mut TcpStream, n: usize) -> String {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while String::from_utf8_lossy(&buf).matches("\nid: ").count() < n {
        let mut chunk = [0u8; 4096];
        let k = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("events in time")
            .unwrap();
        assert!(
            k > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..k]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn messages_reach_the_room_and_resume_after_a_reconnect() {
    let rooms = demo::Rooms::default();
    let server = Server::bind(
        "127.0.0.1:0",
        demo::app(rooms.clone()),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();

    let page = request(
        addr,
        "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("EventSource"));

    let mut alice = subscribe(addr, "lobby", None).await;
    let mut other_room = subscribe(addr, "kitchen", None).await;
    // Wait until both are subscribed before publishing.
    for _ in 0..100 {
        if rooms.room("lobby").subscribers() == 1 && rooms.room("kitchen").subscribers() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let created = post(addr, "lobby", r#"{"name":"bob","text":"hi all"}"#).await;
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let first = read_events(&mut alice, 1).await;
    assert!(
        first.contains("event: message") && first.contains(r#""text":"hi all""#),
        "{first}"
    );

    // Alice leaves after the first message; two are said while she is away.
    let seen = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id")
        .to_string();
    drop(alice);
    post(addr, "lobby", r#"{"name":"bob","text":"two"}"#).await;
    post(addr, "lobby", r#"{"name":"bob","text":"three"}"#).await;
    let mut back = subscribe(addr, "lobby", Some(&seen)).await;
    let replay = read_events(&mut back, 2).await;
    let ids: Vec<&str> = replay
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    let epoch = seen.strip_suffix("-1").expect("the room's first id");
    assert_eq!(
        ids,
        [format!("{epoch}-2"), format!("{epoch}-3")],
        "exactly the missed messages: {replay}"
    );
    assert!(!replay.contains("event: missed"), "{replay}");

    // The other room heard nothing: a message there is its first event.
    post(addr, "kitchen", r#"{"name":"cook","text":"soup"}"#).await;
    let kitchen = read_events(&mut other_room, 1).await;
    assert!(
        kitchen.contains("soup") && !kitchen.contains("hi all"),
        "{kitchen}"
    );

    let bad = post(addr, "lobby", r#"{"name":"","text":""}"#).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    let bad_room = post(addr, "no%20spaces", r#"{"name":"a","text":"b"}"#).await;
    assert!(bad_room.starts_with("HTTP/1.1 400"), "{bad_room}");
    server.shutdown(Duration::from_millis(200)).await;
}
