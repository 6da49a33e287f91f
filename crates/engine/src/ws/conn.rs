//! A WebSocket connection after the upgrade: reads frames (tungstenite answers pings and
//! checks the protocol), hands messages to the handler, writes the socket's queue, and
//! ends with a close handshake or a cut.
//!
//! The connection is one small state machine polled by its task (see [`serve`]): the
//! socket with tungstenite's state (made only while needed, see `io.rs`) and the batch
//! being written, so an idle socket's task holds little. The idle timeout needs no timer
//! here: reads are marked on the sender, and the server's idle clock (`registry.rs`)
//! stops a socket that read nothing for it.
//!
//! Frames already encoded (a channel's events; a handler's data messages, framed here) are
//! written to the socket as they are, once tungstenite's buffer is out; nothing is read
//! while such a write is unfinished, since a read may make tungstenite write a pong. Between polls, with nothing left to write, the
//! connection drops tungstenite's state if it holds nothing and tells its sender it is
//! idle; channels may then write to the socket themselves (see `socket.rs`); each poll
//! first takes that back.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::{CloseCode, Data};
use tungstenite::protocol::CloseFrame;
use tungstenite::Message as Wire;

use super::io::Ws;
use super::socket::{CloseStatus, Out, Take, Unhandled, WsSender};
use super::{Inbox, Message};

/// How long a closing side waits for the peer's close frame (or for its own to be
/// written) before dropping the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Messages read (or batches written) per poll before the task yields to others.
const BUDGET: usize = 64;

/// Bytes of data messages framed into one write.
const FRAMED_WRITE: usize = 64 << 10;

/// The data messages at the front of `batch`, framed by tungstenite's encoder into one
/// buffer (up to [`FRAMED_WRITE`] bytes, at least one message); with permessage-deflate's
/// window, compressed (see `deflate.rs`).
fn frame_messages(batch: &mut VecDeque<Out>, deflate: Option<u8>) -> Out {
    let mut out = Vec::new();
    while out.len() < FRAMED_WRITE {
        let (data, kind): (Bytes, Data) = match batch.front() {
            Some(Out::Msg(Wire::Text(_) | Wire::Binary(_))) => match batch.pop_front() {
                Some(Out::Msg(Wire::Text(t))) => (t.into(), Data::Text),
                Some(Out::Msg(Wire::Binary(b))) => (b, Data::Binary),
                _ => break,
            },
            _ => break,
        };
        super::deflate::frame_into(data, kind, deflate, &mut out);
    }
    Out::Framed {
        bytes: out.into(),
        events: 0,
        rest: false,
    }
}

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
        WsError::Io(e) => super::deflate::refused(e),
        _ => None,
    }
}

type Reserve =
    Pin<Box<dyn Future<Output = Option<mpsc::OwnedPermit<(Message, Unhandled)>>> + Send>>;

/// The connection's state between polls.
struct Conn<'a> {
    ws: &'a mut Ws,
    sender: &'a WsSender,
    inbox: &'a Inbox,
    /// Messages taken from the queue and not yet given to tungstenite (or written).
    batch: VecDeque<Out>,
    /// Bytes written of the encoded frames at the batch's front: while some are and not
    /// all, nothing else is written (or read).
    written: usize,
    /// Bytes of the messages taken and not yet flushed.
    bytes: usize,
    /// Messages were given to tungstenite since the last flush.
    fed: bool,
    /// A close frame was given to tungstenite: its code and reason (boxed: rare, and
    /// this is in every idle socket's task).
    close: Option<Box<(u16, String)>>,
    /// A message waiting for room in a full handler channel (allocated only then).
    waiting: Option<Box<((Message, Unhandled), Reserve)>>,
}

impl Conn<'_> {
    /// Writes what is queued; `Ready` when the connection ends.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..BUDGET {
            if self.batch.is_empty() && !self.fed {
                match self.sender.poll_take(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Take::Cut) => return Poll::Ready(End::Cut),
                    Poll::Ready(Take::ShutDown) => return Poll::Ready(End::Shutdown),
                    Poll::Ready(Take::Idle) => return Poll::Ready(End::Idle),
                    Poll::Ready(Take::Write(batch, bytes)) => {
                        self.batch = batch;
                        self.bytes = bytes;
                    }
                }
            } else {
                match self.sender.poll_stop(cx) {
                    Poll::Pending => {}
                    // A client that does not read, with a write blocked.
                    Poll::Ready(Take::Cut) => return Poll::Ready(End::Cut),
                    Poll::Ready(Take::Idle) => return Poll::Ready(End::Idle),
                    // `Take::ShutDown` (`poll_stop` takes nothing to write).
                    Poll::Ready(_) => return Poll::Ready(End::Shutdown),
                }
            }
            loop {
                match self.batch.front() {
                    None => break,
                    Some(Out::Framed { bytes, .. }) => {
                        if self.written == 0 {
                            // Whatever tungstenite holds (ours, or a pong) goes out first.
                            match self.ws.poll_flush(cx) {
                                Poll::Pending => return Poll::Pending,
                                Poll::Ready(Err(_)) => return Poll::Ready(End::Gone),
                                Poll::Ready(Ok(())) => {}
                            }
                        }
                        while self.written < bytes.len() {
                            match self.ws.poll_write_raw(cx, &bytes[self.written..]) {
                                Poll::Pending => return Poll::Pending,
                                Poll::Ready(Err(_) | Ok(0)) => return Poll::Ready(End::Gone),
                                Poll::Ready(Ok(n)) => self.written += n,
                            }
                        }
                        self.written = 0;
                        self.batch.pop_front();
                    }
                    Some(Out::Msg(Wire::Text(_) | Wire::Binary(_))) => {
                        // Framed here, written as a channel's frames are: tungstenite's
                        // state is not needed for data.
                        let bits = self.ws.deflate().map(|d| d.server_window_bits);
                        let framed = frame_messages(&mut self.batch, bits);
                        self.batch.push_front(framed);
                    }
                    Some(Out::Msg(_)) => {
                        // Pongs that reads left in tungstenite's buffer go out first, so
                        // that this frame finds room in it.
                        match self.ws.poll_flush(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Err(_)) => return Poll::Ready(End::Gone),
                            Poll::Ready(Ok(())) => {}
                        }
                        let Some(Out::Msg(m)) = self.batch.pop_front() else {
                            break;
                        };
                        if let Wire::Close(Some(f)) = &m {
                            self.close = Some(Box::new((u16::from(f.code), f.reason.to_string())));
                        }
                        if self.ws.start_send(cx, m).is_err() {
                            return Poll::Ready(End::Gone);
                        }
                        self.fed = true;
                    }
                }
            }
            // Nothing kept while idle.
            self.batch = VecDeque::new();
            if self.fed {
                match self.ws.poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(End::Gone),
                    Poll::Ready(Ok(())) => {}
                }
            }
            self.fed = false;
            self.sender.written(std::mem::take(&mut self.bytes));
            if let Some(close) = self.close.take() {
                let (code, reason) = *close;
                return Poll::Ready(End::SentClose(code, reason));
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Nothing taken is left to write and tungstenite's buffer is out: tells the sender,
    /// which lets channels write to the socket until the next poll. Wakes the task when
    /// something was queued meanwhile.
    fn poll_idle(&mut self, cx: &mut Context<'_>) {
        if !self.batch.is_empty() || self.fed {
            return;
        }
        if let Poll::Ready(Ok(())) = self.ws.poll_flush(cx) {
            self.ws.release();
            if !self.sender.idle() {
                cx.waker().wake_by_ref();
            }
        }
    }

    /// Reads messages and hands them on; `Ready` when the connection ends; and whether
    /// anything arrived.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> (Poll<End>, bool) {
        let mut read = false;
        let end = self.read_some(cx, &mut read);
        (end, read)
    }

    fn read_some(&mut self, cx: &mut Context<'_>, read: &mut bool) -> Poll<End> {
        for _ in 0..BUDGET {
            if let Some(waiting) = &mut self.waiting {
                let permit = match waiting.1.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(p) => p,
                };
                if let Some(waiting) = self.waiting.take() {
                    let (msg, _) = *waiting;
                    // A handler that stopped receiving does not stop the connection.
                    if let Some(p) = permit {
                        p.send(msg);
                    }
                }
            }
            if self.sender.backlogged(cx) {
                return Poll::Pending;
            }
            let msg = match self.ws.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(End::Gone),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(match violation(&e) {
                        Some((code, why)) => End::Violation(code, why),
                        None => End::Gone,
                    })
                }
                Poll::Ready(Some(Ok(m))) => m,
            };
            *read = true;
            let msg = match msg {
                Wire::Text(t) => Message::Text(t.as_str().to_owned()),
                Wire::Binary(b) => Message::Binary(b),
                Wire::Close(frame) => return Poll::Ready(End::PeerClosed(frame)),
                Wire::Ping(_) | Wire::Pong(_) | Wire::Frame(_) => continue,
            };
            let len = match &msg {
                Message::Text(t) => t.len(),
                Message::Binary(b) => b.len(),
            };
            let msg = (msg, self.sender.hold(len));
            match self.inbox {
                Inbox::Callback(f) => f(msg.0, msg.1),
                Inbox::Channel(tx) => match tx.try_send(msg) {
                    Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                    Err(mpsc::error::TrySendError::Full(msg)) => {
                        let tx = tx.clone();
                        let reserve: Reserve =
                            Box::pin(async move { tx.reserve_owned().await.ok() });
                        self.waiting = Some(Box::new((msg, reserve)));
                    }
                },
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// What [`serve`] serves, kept in its future as it is (each part used in place).
pub(crate) struct Serve {
    pub(crate) ws: Ws,
    pub(crate) sender: WsSender,
    /// Where messages go (a handler's channel: reading waits while it is full, which is
    /// TCP backpressure).
    pub(crate) inbox: Inbox,
    /// Told how the socket ended, once it has.
    pub(crate) on_close: Option<Box<dyn FnOnce(CloseStatus) + Send>>,
    /// The route has an idle timeout: reads are told to the sender, whose idle clock
    /// (the server's, see `registry.rs`) ends a socket that read nothing for it.
    pub(crate) idle_timeout: bool,
    /// Dropped when the socket ends (a stream limit's slot).
    pub(crate) held: Option<Box<dyn Send>>,
}

/// Serves an upgraded connection until it ends.
// Not an `async fn`: one stores its argument twice (as passed, and moved into the body's
// local), which an idle socket's task would hold (see the test below).
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve(mut this: Serve) -> impl Future<Output = ()> + Send {
    // `this` is used in place, not moved into locals: its parts are stored once in this
    // future, which an idle socket's task holds.
    async move {
        let end_and_mid = {
            // Takes the socket back from channels however this ends (also if dropped).
            let _detach = Detach(&this.sender);
            let sender = &this.sender;
            let timed = this.idle_timeout;
            let mut conn = Conn {
                ws: &mut this.ws,
                sender,
                inbox: &this.inbox,
                batch: VecDeque::new(),
                written: 0,
                bytes: 0,
                fed: false,
                close: None,
                waiting: None,
            };
            let end = std::future::poll_fn(|cx| {
                // No write straight to the socket from here until `poll_idle`.
                sender.busy();
                if let Poll::Ready(end) = conn.poll_write(cx) {
                    return Poll::Ready(end);
                }
                if conn.written == 0 {
                    let (end, read) = conn.poll_read(cx);
                    if read && timed {
                        sender.heard();
                    }
                    if let Poll::Ready(end) = end {
                        return Poll::Ready(end);
                    }
                }
                conn.poll_idle(cx);
                Poll::Pending
            })
            .await;
            sender.detach();
            // A frame written in part: nothing else may follow it, not even a close frame.
            (end, conn.written > 0 || sender.has_rest())
        };
        let (end, mid_frame) = end_and_mid;
        // The close handshake's futures (timers among them) live in their own allocation,
        // made only when the socket ends, not in every idle socket's task.
        let ended = Box::pin(close(&mut this.ws, end, mid_frame)).await;
        this.sender.finish(ended);
        if let Some(on_close) = this.on_close.take() {
            on_close(this.sender.close_status().unwrap_or(CloseStatus {
                code: 1006,
                reason: String::new(),
            }));
        }
        drop(this.held.take());
    }
}

/// Ends the connection as `end` says, a TLS one that ended cleanly with its
/// `close_notify`; returns how it ended.
async fn close(ws: &mut Ws, end: End, mid_frame: bool) -> CloseStatus {
    let clean = !mid_frame && !matches!(end, End::Cut | End::Gone);
    let status = handshake(ws, end, mid_frame).await;
    if clean {
        let _ = tokio::time::timeout(CLOSE_WAIT, ws.close_notify()).await;
    }
    status
}

/// The close handshake `end` calls for; how the connection ended.
async fn handshake(ws: &mut Ws, end: End, mid_frame: bool) -> CloseStatus {
    let status = |code: u16, reason: &str| CloseStatus {
        code,
        reason: reason.to_string(),
    };
    match end {
        End::PeerClosed(frame) => {
            // tungstenite queued the echo of the peer's close frame: write it.
            let flush = std::future::poll_fn(|cx| ws.poll_flush(cx));
            let _ = tokio::time::timeout(CLOSE_WAIT, flush).await;
            match frame {
                Some(f) => status(u16::from(f.code), &f.reason),
                None => status(1005, ""),
            }
        }
        End::Violation(code, why) => {
            if !mid_frame {
                close_with(ws, code, why).await;
            }
            status(code, why)
        }
        End::Idle | End::Shutdown if mid_frame => status(1006, ""),
        End::Idle => {
            close_with(ws, 1001, "idle timeout").await;
            await_close(ws).await;
            status(1001, "idle timeout")
        }
        End::Shutdown => {
            close_with(ws, 1001, "server shutting down").await;
            await_close(ws).await;
            status(1001, "server shutting down")
        }
        End::SentClose(code, reason) => {
            await_close(ws).await;
            status(code, &reason)
        }
        End::Cut => status(1006, "send queue over its limit"),
        End::Gone => status(1006, ""),
    }
}

struct Detach<'a>(&'a WsSender);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.0.detach();
    }
}

async fn close_with(ws: &mut Ws, code: u16, reason: &str) {
    let mut frame = Some(Wire::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    })));
    let send = std::future::poll_fn(|cx| {
        if let Some(m) = frame.take() {
            std::task::ready!(ws.poll_ready(cx))?;
            ws.start_send(cx, m)?;
        }
        ws.poll_flush(cx)
    });
    let _ = tokio::time::timeout(CLOSE_WAIT, send).await;
}

/// Reads (and drops) what the peer still sends until its close frame, the end of the
/// connection or `CLOSE_WAIT`.
async fn await_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| ws.poll_next(cx)).await {
            if matches!(m, Wire::Close(_)) {
                // tungstenite writes nothing more after the peer's reply.
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::QueueLimits;
    use crate::ws::io::WsIo;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_handler_that_does_not_receive_has_one_big_message_held_not_sixteen() {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message as Client;
        type Taken = (WsSender, crate::ws::WebSocket);
        let (tx, rx) = tokio::sync::oneshot::channel::<Taken>();
        let tx = std::sync::Mutex::new(Some(tx));
        let mut app = crate::App::new();
        app.ws("/hold", move |_req, ws: crate::ws::WebSocket| {
            let tx = tx.lock().unwrap().take();
            async move {
                if let Some(tx) = tx {
                    let _ = tx.send((ws.sender().clone(), ws));
                }
                std::future::pending::<()>().await
            }
        })
        .unwrap();
        let server = crate::Server::bind("127.0.0.1:0", app, crate::ServerConfig::default())
            .await
            .unwrap();
        let url = format!("ws://{}/hold", server.local_addr());
        let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (sender, mut ws) = rx.await.unwrap();
        // Six messages of 1 MiB, each starting with its number: the first fills the
        // backlog, so the connection reads no further until the handler receives.
        let sending = tokio::spawn(async move {
            for i in 0..6u32 {
                let mut m = vec![0u8; 1 << 20];
                m[..4].copy_from_slice(&i.to_be_bytes());
                client.send(Client::binary(m)).await.unwrap();
            }
            client
        });
        let held = || sender.held_bytes();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while held() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(held(), (1 << 20) + 64, "one message held, not more");
        for i in 0..6u32 {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.recv())
                .await
                .unwrap();
            let Some(crate::ws::Message::Binary(b)) = m else {
                panic!("{m:?}")
            };
            assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), i);
        }
        let _client = sending.await.unwrap();
        server.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn an_idle_socket_task_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let tcp = Arc::new(crate::wire::Conn::plain(accepted.unwrap().0));
        let ws = Ws::new(WsIo::Conn(tcp), bytes::Bytes::new(), 16 << 20, None);
        let task = serve(Serve {
            ws,
            sender: WsSender::new(QueueLimits::default(), None, false),
            inbox: Inbox::Callback(Box::new(|_, _| {})),
            on_close: None,
            idle_timeout: true,
            held: None,
        });
        let size = std::mem::size_of_val(&task);
        // 248 bytes in a debug build. tokio's task cell adds 112 bytes and is aligned to
        // 128 (see the connection task's test in server/direct): up to 272, the task is 384.
        println!("WebSocket connection future: {size} bytes");
        assert!(
            size <= 272,
            "the WebSocket connection future is {size} bytes"
        );
        drop(client);
    }
}
