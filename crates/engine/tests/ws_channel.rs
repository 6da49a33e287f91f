//! A channel's WebSocket subscribers, served by the channel's fan-out: every event in
//! order whether it went straight to the socket or through the queue, interleaved with a
//! handler's own messages and pongs without breaking a frame; and slow subscribers under
//! the channel's policy (cut, or their oldest events dropped while pings and the close
//! handshake are still answered).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rat_engine::channel::SlowClient;
use rat_engine::ws::{WebSocket, WsOptions};
use rat_engine::{App, Channel, ChannelOptions, Event, QueueLimits, RouteOptions};
use support::{eventually, serve, within, READ_DEADLINE};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Wire;

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr, path: &str) -> Client {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = within(
        READ_DEADLINE,
        "the upgrade",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("upgrade");
    ws
}

/// The `n` of a text message `{"n":<n>,...}`.
fn seq(text: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(text).expect("an event's JSON");
    v["n"].as_u64().expect("n")
}

fn event(n: u64, pad: usize) -> Event {
    Event::new().data(format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(pad)))
}

/// Routes on `channel`: `/fast` (queue large enough for any test burst), `/slow` (a 16 KiB
/// mark, 64 KiB hard limit), and `/mix`, a handler's socket subscribed to the channel that
/// answers each message with `echo:<message>`.
fn app(channel: &Channel) -> App {
    let mut app = App::new();
    let big = WsOptions {
        queue: QueueLimits {
            high_water_mark: 32 << 20,
            max_buffered: 64 << 20,
        },
        ..WsOptions::default()
    };
    let small = WsOptions {
        queue: QueueLimits {
            high_water_mark: 16 << 10,
            max_buffered: 64 << 10,
        },
        ..WsOptions::default()
    };
    let route = RouteOptions::default;
    app.ws_channel_route_with("/fast", channel.clone(), big.clone(), route())
        .unwrap();
    app.ws_channel_route_with("/slow", channel.clone(), small, route())
        .unwrap();
    let ch = channel.clone();
    app.ws_with(
        "/mix",
        move |_req, mut ws: WebSocket| {
            let ch = ch.clone();
            async move {
                ws.sender().subscribe(&ch);
                while let Some(m) = ws.recv().await {
                    if let rat_engine::ws::Message::Text(t) = m {
                        ws.sender().send_text(format!("echo:{t}"));
                    }
                }
            }
        },
        big,
    )
    .unwrap();
    app
}

/// Publishes events 0..n with `pad` bytes each, pausing 1 ms every `burst` events so that
/// readers run, or until `stop` holds.
async fn publish(ch: &Channel, n: u64, pad: usize, burst: u64, stop: impl Fn() -> bool) -> u64 {
    for i in 0..n {
        if stop() {
            return i;
        }
        ch.publish(event(i, pad)).unwrap();
        if i % burst == burst - 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_between_a_handlers_messages_and_pongs() {
    let channel = Channel::new("mix", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut fast = Vec::new();
    for _ in 0..10 {
        fast.push(connect(addr, "/fast").await);
    }
    let mut mix = connect(addr, "/mix").await;
    eventually(READ_DEADLINE, "11 subscribers", || {
        channel.subscribers() == 11
    })
    .await;

    const N: u64 = 3000;
    let ch = channel.clone();
    // Bursts of 50 small events (many go straight to idle sockets, some queue behind
    // others), and now and then a large one (written in part, the rest queued).
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            let pad = if i % 500 == 7 { 300_000 } else { 10 };
            ch.publish(event(i, pad)).unwrap();
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // The handler's socket: 200 messages and 20 pings sent while events arrive.
    let (mut events, mut echoes, mut pongs) = (0u64, 0u32, 0u32);
    let mut sent = 0u32;
    while events < N || echoes < 200 || pongs < 20 {
        if sent < 200 {
            mix.send(Wire::text(format!("m{sent}"))).await.unwrap();
            if sent % 10 == 0 {
                mix.send(Wire::Ping(vec![sent as u8].into())).await.unwrap();
            }
            sent += 1;
        }
        match within(READ_DEADLINE, "a message on /mix", mix.next()).await {
            Some(Ok(Wire::Text(t))) if t.starts_with("echo:") => {
                assert_eq!(t.as_str(), format!("echo:m{echoes}"));
                echoes += 1;
            }
            Some(Ok(Wire::Text(t))) => {
                assert_eq!(seq(&t), events, "events in order on /mix");
                events += 1;
            }
            Some(Ok(Wire::Pong(p))) => {
                assert_eq!(p[..], [(pongs * 10) as u8]);
                pongs += 1;
            }
            other => panic!("unexpected on /mix: {other:?}"),
        }
    }
    publisher.await.unwrap();
    for c in &mut fast {
        for i in 0..N {
            match within(READ_DEADLINE, "an event on /fast", c.next()).await {
                Some(Ok(Wire::Text(t))) => assert_eq!(seq(&t), i, "events in order"),
                other => panic!("expected event {i}, got {other:?}"),
            }
        }
    }
    let m = channel.metrics();
    assert_eq!((m.closed_slow, m.dropped), (0, 0));
    assert_eq!(m.delivered, N * 11);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_cut_and_the_others_get_everything() {
    let channel = Channel::new("cut", ChannelOptions::default());
    let server = serve(app(&channel)).await;
    let addr = server.local_addr();
    let mut reader = connect(addr, "/fast").await;
    let slow = connect(addr, "/slow").await; // never read
    eventually(READ_DEADLINE, "2 subscribers", || {
        channel.subscribers() == 2
    })
    .await;
    let read = tokio::spawn(async move {
        let mut got = 0u64;
        while let Some(Ok(Wire::Text(t))) = reader.next().await {
            assert_eq!(seq(&t), got, "events in order");
            got += 1;
        }
        got
    });
    // 4 KiB events, up to 64 MiB: the kernel's buffers fill, then the slow queue's mark.
    let ch = channel.clone();
    let published = publish(&channel, 16_384, 4096, 16, || ch.metrics().closed_slow > 0).await;
    assert!(published < 16_384, "the slow subscriber was cut");
    eventually(READ_DEADLINE, "1 subscriber", || channel.subscribers() == 1).await;
    // The reader got every event: closing the channel ends its socket after them.
    channel.close();
    let got = within(Duration::from_secs(10), "the reader's events", read)
        .await
        .unwrap();
    assert_eq!(got, published);
    assert_eq!(channel.metrics().closed_slow, 1);
    drop(slow);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_keeps_a_slow_subscriber_which_still_answers_ping_and_close() {
    let options = ChannelOptions {
        slow_client: SlowClient::DropOldest,
        ..ChannelOptions::default()
    };
    let channel = Channel::new("drop", options);
    let server = serve(app(&channel)).await;
    let mut slow = connect(server.local_addr(), "/slow").await; // not read for now
    eventually(READ_DEADLINE, "1 subscriber", || channel.subscribers() == 1).await;
    let ch = channel.clone();
    let published = publish(&channel, 16_384, 4096, 64, || ch.metrics().dropped > 0).await;
    assert!(
        published < 16_384,
        "events were dropped: {:?}",
        channel.metrics()
    );
    assert_eq!(channel.subscribers(), 1, "still subscribed");
    assert_eq!(channel.metrics().closed_slow, 0);
    // Its ping is answered after what is queued, which is in order with gaps.
    slow.send(Wire::Ping(b"p".to_vec().into())).await.unwrap();
    let mut last = None;
    let mut events = 0u64;
    loop {
        match within(READ_DEADLINE, "the pong", slow.next()).await {
            Some(Ok(Wire::Text(t))) => {
                let n = seq(&t);
                assert!(last.map_or(true, |l| n > l), "{n} after {last:?}");
                last = Some(n);
                events += 1;
            }
            Some(Ok(Wire::Pong(p))) => {
                assert_eq!(&p[..], b"p");
                break;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert!(events < published, "some were dropped");
    // And its close is answered.
    slow.close(None).await.unwrap();
    loop {
        match within(READ_DEADLINE, "the close reply", slow.next()).await {
            Some(Ok(Wire::Text(_))) => {}
            Some(Ok(Wire::Close(_))) | None => break,
            other => panic!("unexpected: {other:?}"),
        }
    }
    eventually(READ_DEADLINE, "0 subscribers", || {
        channel.subscribers() == 0
    })
    .await;
    server.shutdown(Duration::from_secs(1)).await;
}
