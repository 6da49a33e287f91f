//! `ws-echo`: WebSocket echo messages/s over N connections, one text message in flight per
//! connection, each echo checked, with per-message latency.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

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
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    tokio_tungstenite::connect_async_with_config(url, Some(config), true).await
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
/// data `{"seq":n,"t":ns}`; counts events and their publish-to-receive latency.
pub async fn run_idle(mut args: Args, parse: bool) -> Result<Value, String> {
    let common = Common::take(&mut args, 10_000)?;
    let default_path = if parse { "/ws/broadcast" } else { "/ws/echo" };
    let path: String = args.take("path", default_path.to_owned())?;
    let connect_timeout = Duration::from_secs_f64(args.take("connect-timeout", 60.0)?);
    let concurrency: usize = args.take("connect-concurrency", 256)?;
    args.finish()?;

    let url = Rc::new(format!("ws://{}{}", common.addr, path));
    let shared = Rc::new(Shared::default());
    let connected = Rc::new(Cell::new(0usize));
    let failed = Rc::new(Cell::new(0usize));
    let gate = Rc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let start = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + connect_timeout;
    for _ in 0..common.connections {
        let (url, shared, connected, failed, gate) = (
            url.clone(),
            shared.clone(),
            connected.clone(),
            failed.clone(),
            gate.clone(),
        );
        tokio::task::spawn_local(async move {
            let permit = gate.acquire().await;
            let ws = tokio::time::timeout_at(deadline, connect(url.as_str())).await;
            drop(permit);
            let Ok(Ok((mut ws, _))) = ws else {
                failed.set(failed.get() + 1);
                return;
            };
            connected.set(connected.get() + 1);
            // Held until the window is over; anything the server sends is read and dropped.
            while shared.phase.get() != Phase::Done {
                match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) if parse => {
                        let now = crate::sys::monotonic_ns();
                        if shared.phase.get() != Phase::Measure {
                            continue;
                        }
                        match crate::sse::json_u64(t.as_bytes(), "t") {
                            Some(sent) => {
                                shared.messages.set(shared.messages.get() + 1);
                                shared.latency.borrow_mut().record(now.saturating_sub(sent));
                            }
                            None => LoopStats::bump(&shared.stats.errors),
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
    while connected.get() + failed.get() < common.connections
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_s = start.elapsed().as_secs_f64();
    super::marker("connected");
    let elapsed = measure_window(&shared.phase, &common).await.as_secs_f64();
    let events = shared.messages.get();
    Ok(json!({
        "events": events,
        "events_per_s": round(events as f64 / elapsed, 1),
        "errors": shared.stats.errors.get(),
        "latency": shared.latency.borrow().summary_ms(),
        "subscribers": common.connections,
        "connected": connected.get(),
        "all_connected": connected.get() == common.connections,
        "connect_failed": failed.get(),
        "connect_s": round(connect_s, 3),
        "lost": shared.stats.reconnects.get(),
        "duration_s": round(elapsed, 3),
    }))
}
