//! A channel's sweep sends through the h2 streams its subscribers' queues lend it: here no
//! task reads those queues, so whatever the clients receive went through the streams.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::channel::{Channel, ChannelOptions};
use crate::stream::queue::{queue, QueueLimits};
use crate::wire::h2::H2Out;
use crate::Event;

#[tokio::test]
async fn a_channel_sweep_sends_through_the_subscribers_h2_streams() {
    let (server_io, client_io) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(h2::server::handshake(server_io));
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Bytes>(client_io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut server = server.await.unwrap().unwrap();
    let channel = Channel::new("ch", ChannelOptions::default());
    let (mut bodies, mut queues) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let req = http::Request::get("http://localhost/ch").body(()).unwrap();
        let mut send = client.clone().ready().await.unwrap();
        let (res, _) = send.send_request(req, true).unwrap();
        let (_, mut respond) = server.accept().await.unwrap().unwrap();
        let stream = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        let (tx, rx) = queue(QueueLimits::default());
        rx.report_stalls();
        rx.attach_h2(&Arc::new(H2Out::new(stream)));
        channel.subscribe(&tx, None);
        queues.push((tx, rx));
        // The connection's task: encodes and writes what the streams sent.
        bodies.push(res);
    }
    tokio::spawn(async move { while server.accept().await.is_some() {} });
    let mut expected = Vec::new();
    for i in 0..30 {
        let ev = Event::data_only(format!("n{i}"))
            .id(format!("e{i}"))
            .unwrap();
        expected.extend_from_slice(&ev.encode());
        channel.publish(ev).unwrap();
        if i % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for res in bodies {
        let res = tokio::time::timeout(Duration::from_secs(5), res)
            .await
            .unwrap()
            .unwrap();
        let mut body = res.into_body();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let data = tokio::time::timeout(Duration::from_secs(5), body.data())
                .await
                .expect("the events went through the stream")
                .unwrap()
                .unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
            got.extend_from_slice(&data);
        }
        assert_eq!(got, expected);
    }
    for (tx, _) in &queues {
        assert_eq!(tx.buffered(), 0);
    }
    assert_eq!(channel.metrics().delivered, 30 * 3);
}

/// A stream's task lives as long as its response streams: an idle subscriber pays for it.
#[tokio::test]
async fn a_stream_task_is_small() {
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(h2::server::handshake(server_io));
    let (client, conn) = h2::client::handshake(client_io).await.unwrap();
    tokio::spawn(conn);
    let mut server = server.await.unwrap().unwrap();
    let req = http::Request::get("http://localhost/").body(()).unwrap();
    let (_res, _) = client
        .ready()
        .await
        .unwrap()
        .send_request(req, true)
        .unwrap();
    let (req, respond) = server.accept().await.unwrap().unwrap();
    let shared = Arc::new(crate::server::Shared::new(
        crate::App::new(),
        crate::ServerConfig::default(),
    ));
    let activity = crate::server::activity::Activity::new();
    let peer = "127.0.0.1:1".parse().unwrap();
    let task = super::respond::stream(shared, peer, activity.begin(), req, respond);
    let size = std::mem::size_of_val(&task);
    // 240 bytes in debug builds with Rust 1.95 (1,144 when the request's part was not
    // boxed apart): the body, the stream's handle, the bytes it waits to send.
    println!("h2 stream task future: {size} bytes");
    assert!(size <= 320, "the stream task's future is {size} bytes");
}
