//! A WebSocket connection after the upgrade: reads frames (tungstenite answers pings and
//! checks the protocol), hands messages to the handler, writes the socket's queue, and
//! ends with a close handshake or a cut.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as Wire;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::socket::{CloseStatus, Take, WsSender};
use super::{Inbox, Message};

/// How long a closing side waits for the peer's close frame (or for its own to be
/// written) before dropping the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

enum End {
    /// The peer sent a close frame (tungstenite queued the reply).
    PeerClosed(Option<CloseFrame>),
    /// The peer broke the protocol: answer with this code.
    Violation(u16, &'static str),
    /// The connection is gone without a close frame.
    Gone,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// Our close frame is written: wait for the peer's.
    SentClose(u16, String),
    /// The send queue passed its hard limit.
    Cut,
    /// The server shuts down.
    Shutdown,
}

fn violation(e: &WsError) -> Option<(u16, &'static str)> {
    match e {
        WsError::Utf8(_) => Some((1007, "invalid UTF-8 in a text message")),
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some((1009, "message too big")),
        WsError::Capacity(_) => Some((1009, "frame too big")),
        WsError::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => None,
        WsError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

/// Serves an upgraded connection until it ends, handing messages to `inbox` (a handler's
/// channel: reading waits while it is full, which is TCP backpressure).
pub(crate) async fn serve<S>(
    io: S,
    config: WebSocketConfig,
    sender: WsSender,
    inbox: Inbox,
    idle: Option<Duration>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (mut sink, mut stream) = ws.split();
    let end = {
        let reader = async {
            loop {
                let next = match idle {
                    Some(t) => match tokio::time::timeout(t, stream.next()).await {
                        Ok(n) => n,
                        Err(_) => return End::Idle,
                    },
                    None => stream.next().await,
                };
                let msg = match next {
                    None => return End::Gone,
                    Some(Err(e)) => match violation(&e) {
                        Some((code, why)) => return End::Violation(code, why),
                        None => return End::Gone,
                    },
                    Some(Ok(m)) => m,
                };
                let msg = match msg {
                    Wire::Text(t) => Message::Text(t.as_str().to_owned()),
                    Wire::Binary(b) => Message::Binary(b),
                    Wire::Close(frame) => return End::PeerClosed(frame),
                    Wire::Ping(_) | Wire::Pong(_) | Wire::Frame(_) => continue,
                };
                match &inbox {
                    // A handler that stopped receiving does not stop the connection.
                    Inbox::Channel(tx) => {
                        let _ = tx.send(msg).await;
                    }
                    Inbox::Callback(f) => f(msg),
                }
            }
        };
        let writer = async {
            loop {
                let (batch, bytes) = match sender.take().await {
                    Take::Cut => return End::Cut,
                    Take::Write(batch, bytes) => (batch, bytes),
                };
                let mut close = None;
                for m in batch {
                    if let Wire::Close(Some(f)) = &m {
                        close = Some((u16::from(f.code), f.reason.to_string()));
                    }
                    if sink.feed(m).await.is_err() {
                        return End::Gone;
                    }
                }
                if sink.flush().await.is_err() {
                    return End::Gone;
                }
                sender.written(bytes);
                if let Some((code, reason)) = close {
                    return End::SentClose(code, reason);
                }
            }
        };
        tokio::select! {
            e = reader => e,
            e = writer => e,
            _ = sender.cut() => End::Cut,
            _ = shutdown.cancelled() => End::Shutdown,
        }
    };
    let status = |code: u16, reason: &str| CloseStatus {
        code,
        reason: reason.to_string(),
    };
    let ended = match end {
        End::PeerClosed(frame) => {
            // tungstenite queued the echo of the peer's close frame: write it.
            let _ = tokio::time::timeout(CLOSE_WAIT, sink.flush()).await;
            match frame {
                Some(f) => status(u16::from(f.code), &f.reason),
                None => status(1005, ""),
            }
        }
        End::Violation(code, why) => {
            close_with(&mut sink, code, why).await;
            status(code, why)
        }
        End::Idle => {
            close_with(&mut sink, 1001, "idle timeout").await;
            await_close(&mut stream).await;
            status(1001, "idle timeout")
        }
        End::Shutdown => {
            close_with(&mut sink, 1001, "server shutting down").await;
            await_close(&mut stream).await;
            status(1001, "server shutting down")
        }
        End::SentClose(code, reason) => {
            await_close(&mut stream).await;
            status(code, &reason)
        }
        End::Cut => status(1006, "send queue over its limit"),
        End::Gone => status(1006, ""),
    };
    sender.finish(ended);
}

async fn close_with<S>(
    sink: &mut futures_util::stream::SplitSink<WebSocketStream<S>, Wire>,
    code: u16,
    reason: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Wire::Close(Some(frame)))).await;
}

/// Reads (and drops) what the peer still sends until its close frame, the end of the
/// connection or `CLOSE_WAIT`.
async fn await_close<S>(stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Wire::Close(_)) {
                // tungstenite writes nothing more after the peer's reply.
                break;
            }
        }
    })
    .await;
}
