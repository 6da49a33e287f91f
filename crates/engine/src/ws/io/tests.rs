use super::*;
use std::future::poll_fn;
use tokio::io::AsyncWriteExt;
use tungstenite::protocol::frame::coding::Control;
use tungstenite::protocol::frame::Frame;

/// A client's frame (masked), as bytes.
fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = match opcode {
        OpCode::Control(Control::Ping) => Frame::ping(payload.to_vec()),
        _ => Frame::message(payload.to_vec(), opcode, fin),
    };
    f.header_mut().mask = Some([0x12, 0x34, 0x56, 0x78]);
    let mut out = Vec::new();
    f.format(&mut out).unwrap();
    out
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);
const CONTINUE: OpCode = OpCode::Data(Data::Continue);
const PING: OpCode = OpCode::Control(Control::Ping);

async fn pair() -> (tokio::net::TcpStream, Ws) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let tcp = Arc::new(Conn::plain(accepted.unwrap().0));
    (
        client.unwrap(),
        Ws::new(WsIo::Conn(tcp), Bytes::new(), 1 << 20, None),
    )
}

async fn next(ws: &mut Ws) -> Wire {
    poll_fn(|cx| ws.poll_next(cx)).await.unwrap().unwrap()
}

/// Flushes, releases what can be released, and says whether state is still held.
async fn settle(ws: &mut Ws) -> bool {
    poll_fn(|cx| ws.poll_flush(cx)).await.unwrap();
    ws.release();
    ws.holds_state()
}

#[tokio::test]
async fn messages_in_any_cut_and_no_state_between_them() {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let mut bytes = frame(TEXT, true, b"hello");
    bytes.extend(frame(BINARY, true, &big));
    // A message in three fragments with a ping between them.
    bytes.extend(frame(TEXT, false, b"fr"));
    bytes.extend(frame(PING, true, b"p"));
    bytes.extend(frame(CONTINUE, false, b"ag"));
    bytes.extend(frame(CONTINUE, true, b"ments"));
    bytes.extend(frame(TEXT, true, b""));
    let expected = [
        Wire::Text("hello".into()),
        Wire::Binary(big.clone().into()),
        Wire::Ping(Bytes::from_static(b"p")),
        Wire::Text("fragments".into()),
        Wire::Text("".into()),
    ];
    // Every cut of the stream: one write per byte, a few odd sizes, all at once.
    for cut in [1usize, 3, 13, 4096, bytes.len()] {
        let (mut client, mut ws) = pair().await;
        assert!(!ws.holds_state(), "nothing held before anything arrives");
        let writer = {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                for chunk in bytes.chunks(cut) {
                    client.write_all(chunk).await.unwrap();
                    if cut < 100 {
                        tokio::task::yield_now().await;
                    }
                }
                client
            })
        };
        for want in &expected {
            let got = next(&mut ws).await;
            assert_eq!(&got, want, "cut {cut}");
            if matches!(got, Wire::Ping(_)) {
                // Between fragments: tungstenite's state must stay.
                assert!(
                    settle(&mut ws).await,
                    "released within a fragmented message"
                );
            }
        }
        let mut client = writer.await.unwrap();
        assert!(
            !settle(&mut ws).await,
            "state held after the last message (cut {cut})"
        );
        // The pong went out, masked by nobody: a server frame.
        let mut pong = [0u8; 3];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut pong)
            .await
            .unwrap();
        assert_eq!(pong, [0x8a, 1, b'p']);
    }
}

#[tokio::test]
async fn a_release_mid_frame_keeps_the_state() {
    let (mut client, mut ws) = pair().await;
    let bytes = frame(TEXT, true, b"split here");
    client.write_all(&bytes[..7]).await.unwrap();
    // Wait until the server has read the first part.
    let read = poll_fn(|cx| match ws.poll_next(cx) {
        Poll::Pending if ws.holds_state() => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
        Poll::Ready(r) => Poll::Ready(Some(r)),
    })
    .await;
    assert!(read.is_none(), "a message from half a frame");
    assert!(settle(&mut ws).await, "released mid-frame");
    client.write_all(&bytes[7..]).await.unwrap();
    assert_eq!(next(&mut ws).await, Wire::Text("split here".into()));
    assert!(!settle(&mut ws).await);
}

#[tokio::test]
async fn faults_still_reach_tungstenite() {
    // An unmasked client frame, a reserved opcode, a frame over the limit.
    let mut unmasked = Vec::new();
    Frame::message(b"x".to_vec(), TEXT, true)
        .format(&mut unmasked)
        .unwrap();
    let reserved = vec![0x83, 0x80, 0, 0, 0, 0];
    let mut over = vec![0x82, 0xff];
    over.extend((2u64 << 20).to_be_bytes());
    over.extend([0, 0, 0, 0]);
    for (bytes, what) in [
        (unmasked, "unmasked"),
        (reserved, "reserved opcode"),
        (over, "too big"),
    ] {
        let (mut client, mut ws) = pair().await;
        client.write_all(&bytes).await.unwrap();
        let r = poll_fn(|cx| ws.poll_next(cx)).await;
        assert!(matches!(r, Some(Err(_))), "{what}: {r:?}");
        assert!(
            poll_fn(|cx| ws.poll_next(cx)).await.is_none(),
            "{what}: read after the end"
        );
    }
}

#[tokio::test]
async fn the_end_of_the_connection_ends_reading() {
    let (client, mut ws) = pair().await;
    drop(client);
    let r = poll_fn(|cx| ws.poll_next(cx)).await;
    assert!(
        !matches!(r, Some(Ok(_))),
        "a message from a closed connection: {r:?}"
    );
}
