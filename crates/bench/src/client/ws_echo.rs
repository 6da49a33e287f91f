//! `ws-echo`: WebSocket echo messages/s over N connections, one text message in flight per
//! connection, each echo checked, with per-message latency.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::conn::{Io, Stamp, Stamps};
use super::decode::{Decode, Format};
use super::{measure_window, round, Args, Common, LoopStats, Phase};
use crate::stats::Histogram;

#[derive(Default)]
struct Shared {
    phase: Cell<Phase>,
    stats: LoopStats,
    messages: Cell<u64>,
    latency: RefCell<Histogram>,
}

/// One connection echoing until the window is over; reconnects if the server closes.
async fn echo_loop(common: Common, url: Rc<String>, payload: Rc<String>, shared: Rc<Shared>) {
    while shared.phase.get() != Phase::Done {
        let mut ws = match connect(url.as_str()).await {
            Ok((ws, _)) => ws,
            Err(_) => {
                LoopStats::bump(&shared.stats.errors);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = common;
        loop {
            if shared.phase.get() == Phase::Done {
                let _ = ws.close(None).await;
                return;
            }
            let sent = crate::sys::monotonic_ns();
            if ws.send(Message::text(payload.as_str())).await.is_err() {
                break;
            }
            let echo = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => break Some(t),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break None,
                }
            };
            let Some(echo) = echo else { break };
            if echo.as_str() != payload.as_str() {
                LoopStats::bump(&shared.stats.errors);
            } else if shared.phase.get() == Phase::Measure {
                shared.messages.set(shared.messages.get() + 1);
                let now = crate::sys::monotonic_ns();
                shared.latency.borrow_mut().record(now.saturating_sub(sent));
            }
        }
        LoopStats::bump(&shared.stats.reconnects);
    }
}

/// A client connection with a small read buffer (tungstenite allocates 128 KiB per
/// connection by default: 1.25 GiB for 10,000 idle sockets).
async fn connect(
    url: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    tokio_tungstenite::connect_async_with_config(url, Some(client_config()), true).await
}

fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Runs the scenario and returns its JSON result.
pub async fn run(mut args: Args) -> Result<Value, String> {
    let common = Common::take(&mut args, 50)?;
    let path: String = args.take("path", "/ws/echo".to_owned())?;
    let size: usize = args.take("size", 64)?;
    args.finish()?;

    let url = Rc::new(format!("ws://{}{}", common.addr, path));
    let payload: Rc<String> = Rc::new((0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect());
    let shared = Rc::new(Shared::default());
    for _ in 0..common.connections {
        let (url, payload, shared) = (url.clone(), payload.clone(), shared.clone());
        tokio::task::spawn_local(echo_loop(common, url, payload, shared));
    }
    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    let messages = shared.messages.get();
    Ok(json!({
        "connections": common.connections,
        "size": size,
        "duration_s": round(elapsed, 3),
        "messages": messages,
        "messages_per_s": round(messages as f64 / elapsed, 1),
        "errors": shared.stats.errors.get(),
        "reconnects": shared.stats.reconnects.get(),
        "latency": shared.latency.borrow().summary_ms(),
    }))
}

/// `ws-idle`: opens N WebSockets (at most `--connect-concurrency` handshakes at once) and
/// holds them without sending through the window, for the server's RSS per socket.
/// `ws-broadcast` (`parse`): the same on a channel route, each text frame being an event's
/// data `{"seq":n,"t":ns}`. As `broadcast` does for SSE, every message is stamped with its
/// read time and its arrival (the kernel's receive timestamp of the read that brought it)
/// and decoded on another thread (`decode.rs`): events, gaps, and latency both ways.
pub async fn run_idle(mut args: Args, parse: bool) -> Result<Value, String> {
    let common = Common::take(&mut args, 10_000)?;
    let default_path = if parse { "/ws/broadcast" } else { "/ws/echo" };
    let path: String = args.take("path", default_path.to_owned())?;
    let connect_timeout = Duration::from_secs_f64(args.take("connect-timeout", 60.0)?);
    let concurrency: usize = args.take("connect-concurrency", 256)?;
    args.finish()?;
    common.http1_only(if parse { "ws-broadcast" } else { "ws-idle" })?;

    let n = common.connections;
    let scheme = if common.tls.is_some() { "wss" } else { "ws" };
    let url = Rc::new(format!("{scheme}://{}{}", common.addr, path));
    let shared = Rc::new(Shared::default());
    let decode = Rc::new(RefCell::new(
        parse.then(|| Decode::start(n, Format::Messages)),
    ));
    let decode_error = Rc::new(RefCell::new(None::<String>));
    let connected = Rc::new(Cell::new(0usize));
    let failed = Rc::new(Cell::new(0usize));
    let gate = Rc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let stamps = if parse { Stamps::On } else { Stamps::Off };
    for id in 0..n {
        let (url, shared, connected, failed, gate) = (
            url.clone(),
            shared.clone(),
            connected.clone(),
            failed.clone(),
            gate.clone(),
        );
        let (decode, decode_error) = (decode.clone(), decode_error.clone());
        tokio::task::spawn_local(async move {
            let permit = gate.acquire().await;
            let ws = tokio::time::timeout_at(deadline, async {
                let io = Io::connect(common.addr, common.tls, stamps).await.ok()?;
                let arrival = io.arrival();
                let (ws, _) = tokio_tungstenite::client_async_with_config(
                    url.as_str(),
                    io,
                    Some(client_config()),
                )
                .await
                .ok()?;
                Some((ws, arrival))
            })
            .await;
            drop(permit);
            let Ok(Some((mut ws, arrival))) = ws else {
                failed.set(failed.get() + 1);
                return;
            };
            connected.set(connected.get() + 1);
            // Held until the window is over; anything the server sends is read and dropped,
            // or (`parse`) handed to the decoding thread with its stamp.
            while shared.phase.get() != Phase::Done {
                match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        // The connection's last read: the one that completed this frame.
                        let at = Stamp::now(arrival.as_deref());
                        let measured = shared.phase.get() == Phase::Measure;
                        if let Some(d) = &*decode.borrow() {
                            if let Err(e) = d.push(id, measured, at, t.as_bytes()) {
                                decode_error.borrow_mut().get_or_insert(e);
                            }
                        }
                    }
                    Ok(Some(Ok(_))) | Err(_) => {}
                    Ok(_) => {
                        LoopStats::bump(&shared.stats.reconnects);
                        return;
                    }
                }
            }
        });
    }
    while connected.get() + failed.get() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_s = start.elapsed().as_secs_f64();
    super::marker("connected");
    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    if let Some(e) = decode_error.take() {
        return Err(e);
    }
    let mut result = json!({
        "subscribers": n,
        "connected": connected.get(),
        "all_connected": connected.get() == n,
        "connect_failed": failed.get(),
        "connect_s": round(connect_s, 3),
        "lost": shared.stats.reconnects.get(),
        "duration_s": round(elapsed, 3),
    });
    // The sockets' tasks stay behind (the process exits after the result); the stats come
    // from the decoding thread once it has decoded everything read in the window.
    let stats = decode.borrow_mut().take().map(|mut d| d.finish());
    if let Some(stats) = stats {
        let map = result.as_object_mut().expect("object");
        map.extend(stats.json(connected.get(), elapsed));
    }
    Ok(result)
}
