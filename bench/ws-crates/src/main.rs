//! Echo throughput of fastwebsockets 0.10 and tokio-tungstenite 0.28 servers, one client
//! (tokio-tungstenite) for both: C connections, W messages in flight each, D seconds.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

async fn tungstenite_server(l: TcpListener) {
    loop {
        let (s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
            while let Some(Ok(m)) = ws.next().await {
                if m.is_text() || m.is_binary() {
                    if ws.send(m).await.is_err() { break; }
                }
            }
        });
    }
}

async fn fast_server(l: TcpListener) {
    loop {
        let (mut s, _) = l.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).await.unwrap();
                head.extend_from_slice(&b[..n]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let key = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ").or_else(|| l.strip_prefix("sec-websocket-key: "))).unwrap().trim().to_string();
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            s.write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes()).await.unwrap();
            let ws = fastwebsockets::WebSocket::after_handshake(s, fastwebsockets::Role::Server);
            let mut ws = fastwebsockets::FragmentCollector::new(ws);
            loop {
                let f = match ws.read_frame().await { Ok(f) => f, Err(_) => break };
                match f.opcode {
                    fastwebsockets::OpCode::Close => break,
                    fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {
                        if ws.write_frame(f).await.is_err() { break; }
                    }
                    _ => {}
                }
            }
        });
    }
}

async fn client(port: u16, conns: usize, window: usize, size: usize, secs: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/")).await.unwrap();
            let (mut tx, mut rx) = ws.split();
            let payload = "x".repeat(size);
            for _ in 0..window { tx.send(Message::text(payload.clone())).await.unwrap(); }
            while Instant::now() < stop {
                match rx.next().await { Some(Ok(_)) => {}, _ => break }
                count.fetch_add(1, Ordering::Relaxed);
                tx.send(Message::text(payload.clone())).await.unwrap();
            }
            let _ = tx.close().await;
        }));
    }
    let t0 = Instant::now();
    for t in tasks { let _ = t.await; }
    count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let size: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(64);
    // Server on one thread, client on another: as a server process beside a load client.
    let server = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (pf, pt) = server.block_on(async {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ports = (a.local_addr().unwrap().port(), b.local_addr().unwrap().port());
        tokio::spawn(fast_server(a));
        tokio::spawn(tungstenite_server(b));
        ports
    });
    std::thread::spawn(move || server.block_on(std::future::pending::<()>()));
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for r in 0..rounds {
        let f = client_rt.block_on(client(pf, 50, 4, size, secs));
        let t = client_rt.block_on(client(pt, 50, 4, size, secs));
        println!("round {r}: fastwebsockets {f:.0} msg/s, tokio-tungstenite {t:.0} msg/s, tungstenite/fast {:.2}", t / f);
    }
}
