//! WebSocket routes (RFC 6455 over HTTP/1.1, and over HTTP/2 by extended CONNECT, RFC 8441).
//!
//! A route registered with [`App::ws`](crate::App::ws) answers an upgrade request with
//! `101 Switching Protocols` after the engine's checks (auth, stream limits, CORS) and the
//! route's path parameters; its handler then gets the [`Request`] and a [`WebSocket`]:
//!
//! ```no_run
//! use rat_engine::{App, ws::WebSocket};
//! let mut app = App::new();
//! app.ws("/echo/:room", |_req, mut ws: WebSocket| async move {
//!     while let Some(msg) = ws.recv().await {
//!         ws.sender().send(msg); // false past the high-water mark: see WsSender
//!     }
//! })
//! .unwrap();
//! ```
//!
//! Frames are read and written by `tungstenite` (see `io.rs`): pings are answered, fragments
//! joined, control frames between fragments handled, the close handshake completed. A
//! text message that is not UTF-8 closes the socket with 1007, a message over
//! [`WsOptions::max_payload`] with 1009, an unmasked client frame or another protocol
//! error with 1002. When the handler returns, the socket is closed with 1000 after what
//! it queued.
//!
//! A channel's events reach its WebSocket subscribers from the channel's fan-out, as its
//! SSE subscribers' do: one text frame encoded per event, its bytes shared, written
//! straight to each socket with nothing waiting (see `socket.rs`).
//!
//! With [`WsOptions::compression`], permessage-deflate (RFC 7692) is accepted when the
//! client offers it: each message sent is compressed on its own
//! (`server_no_context_takeover`), so a channel's event is compressed once for all its
//! sockets, and clients' compressed messages are inflated before tungstenite checks them
//! (see `deflate.rs`).

mod conn;
mod deflate;
mod io;
pub(crate) mod socket;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::future::Either;
use futures_util::FutureExt;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use tokio::sync::mpsc;
use tungstenite::handshake::derive_accept_key;

pub use deflate::MIN_COMPRESSED;
pub(crate) use deflate::{compress_frame, frame_into};
pub(crate) use socket::Pushed as WsPushed;
pub use socket::{CloseStatus, Unhandled, WsSender};

/// A WebSocket as the server's registry holds it (see `WsSender::shut_down`).
pub(crate) type WeakWs = std::sync::Weak<socket::Socket>;

use crate::request::Request;
use crate::response::{self, Response};
use crate::server::Shared;
use crate::stream::{Body, QueueLimits};

/// A message received or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// A WebSocket route's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOptions {
    /// The largest message (and frame) accepted, in bytes; past it the socket is closed
    /// with 1009. Default: 16 MiB.
    pub max_payload: usize,
    /// A socket that receives nothing (no message, no ping) for this long is closed with
    /// 1001. Default: 120 s; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// The send queue's high-water mark and hard limit (see [`WsSender`]).
    pub queue: QueueLimits,
    /// Accept permessage-deflate (RFC 7692) when the client offers it: messages of
    /// [`MIN_COMPRESSED`] bytes or more are sent compressed when that shrinks them
    /// (a channel's events compressed once for all its sockets), and compressed messages
    /// are read. Default: `None`, off.
    pub compression: Option<WsCompression>,
    /// Subprotocols the route speaks (`Sec-WebSocket-Protocol`): the first the client
    /// offers that is listed here is chosen and answered (see [`WebSocket::protocol`]);
    /// none is answered when none matches. Default: none.
    pub protocols: Vec<String>,
}

/// How a route's sockets use permessage-deflate (see [`WsOptions::compression`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WsCompression {
    /// Let clients compress each message with the context of the ones before (context
    /// takeover): better ratios for similar messages, but each socket then keeps an
    /// inflater and its 32 KiB window. Default `false`: the server asks clients for
    /// `client_no_context_takeover` and inflates on one inflater per thread. A client
    /// that offers `client_no_context_takeover` gets it either way.
    pub client_context_takeover: bool,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            max_payload: 16 << 20,
            idle_timeout: Some(Duration::from_secs(120)),
            queue: QueueLimits::default(),
            compression: None,
            protocols: Vec::new(),
        }
    }
}

/// An open WebSocket, as its handler gets it: messages arrive through
/// [`recv`](Self::recv); [`sender`](Self::sender) sends (and may be cloned and kept).
#[derive(Debug)]
pub struct WebSocket {
    sender: WsSender,
    rx: mpsc::Receiver<(Message, Unhandled)>,
    protocol: Option<String>,
}

impl WebSocket {
    /// The subprotocol chosen from the client's offer ([`WsOptions::protocols`]).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The next message, or `None` once the socket is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        // Taken: the message's hold on the socket's backlog is dropped.
        self.rx.recv().await.map(|(m, _)| m)
    }

    /// The sending side.
    pub fn sender(&self) -> &WsSender {
        &self.sender
    }

    /// How the socket ended, once it has (after `recv` returned `None`).
    pub fn close_status(&self) -> Option<CloseStatus> {
        self.sender.close_status()
    }
}

/// Messages received and not yet taken by the handler; past this, or past 1 MiB of them
/// (see [`Unhandled`]), reading waits.
const INBOX: usize = 16;

/// What runs once the connection is upgraded: a handler with a [`WebSocket`], or a front
/// end's callbacks.
pub(crate) enum Start {
    Handler(Box<dyn FnOnce(WsSender, WebSocket) + Send>),
    Callbacks {
        on_message: Box<dyn Fn(Message, Unhandled) + Send + Sync>,
        on_close: Box<dyn FnOnce(CloseStatus) + Send>,
    },
    /// A channel's subscriber: messages from the client are read and dropped.
    Channel(crate::Channel),
}

/// Where the connection hands received messages.
pub(crate) enum Inbox {
    /// To a handler's [`WebSocket::recv`]; reading waits while it is full, or while the
    /// messages in it reach the socket's backlog.
    Channel(mpsc::Sender<(Message, Unhandled)>),
    /// To a callback, on the connection's task; reading waits while the messages it holds
    /// reach the socket's backlog (see [`Unhandled`]).
    Callback(Box<dyn Fn(Message, Unhandled) + Send + Sync>),
}

struct Pending {
    options: WsOptions,
    /// The subprotocol chosen.
    protocol: Option<String>,
    /// permessage-deflate as negotiated.
    deflate: Option<deflate::Deflate>,
    sender: WsSender,
    start: Start,
    /// Dropped when the socket closes (a stream limit's slot).
    held: Option<Box<dyn Send>>,
}

/// The upgrade a 101 response carries to its connection (a response extension).
#[derive(Clone)]
pub(crate) struct Upgrade(Arc<Mutex<Option<Pending>>>);

impl Upgrade {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `status` is that of an accepted upgrade: 101 over HTTP/1.1, 200 for an HTTP/2
/// extended CONNECT.
fn accepted(status: StatusCode) -> bool {
    status == StatusCode::SWITCHING_PROTOCOLS || status == StatusCode::OK
}

/// Keeps `guard` until the socket `res` upgrades to closes; `Err(guard)` when `res` is no
/// upgrade.
pub(crate) fn hold<T: Send + 'static>(res: &Response, guard: T) -> Result<(), T> {
    match res.extensions().get::<Upgrade>() {
        Some(up) if accepted(res.status()) => match &mut *up.lock() {
            Some(p) => {
                p.held = Some(Box::new(guard));
                Ok(())
            }
            None => Err(guard),
        },
        _ => Err(guard),
    }
}

/// Whether `headers` ask for a WebSocket upgrade (`Upgrade: websocket` and a
/// `Connection` naming `upgrade`) over HTTP/1.1.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::UPGRADE, "websocket") && has_token(header::CONNECTION, "upgrade")
}

/// The 101 answer to a valid upgrade request, whose connection then runs `start`; or the
/// refusal of an invalid one (400, or 426 for another protocol version). Over HTTP/2 an
/// extended CONNECT (RFC 8441) reaches routes as a GET with `Upgrade: websocket` (which
/// HTTP/2 clients cannot send themselves), and its answer is 200: the stream carries the
/// socket.
///
/// This is what [`App::ws`](crate::App::ws) routes answer; a front end that decides later
/// (after its own hooks) answers with it too.
pub fn accept(
    headers: &HeaderMap,
    version: http::Version,
    remote: Option<std::net::SocketAddr>,
    options: WsOptions,
    start: impl FnOnce(WsSender, WebSocket) + Send + 'static,
) -> Response {
    answer(
        headers,
        version,
        remote,
        options,
        Start::Handler(Box::new(start)),
    )
}

/// [`accept`] for a front end that takes messages as they are read, on the connection's
/// task (no task of its own per socket): `on_message` for each, then `on_close` once.
/// Each message comes with an [`Unhandled`] to drop once it is handled: while those held
/// reach 1 MiB, the connection reads no more.
pub fn accept_with_callbacks(
    headers: &HeaderMap,
    version: http::Version,
    remote: Option<std::net::SocketAddr>,
    options: WsOptions,
    on_message: impl Fn(Message, Unhandled) + Send + Sync + 'static,
    on_close: impl FnOnce(CloseStatus) + Send + 'static,
) -> Response {
    let start = Start::Callbacks {
        on_message: Box::new(on_message),
        on_close: Box::new(on_close),
    };
    answer(headers, version, remote, options, start)
}

fn answer(
    headers: &HeaderMap,
    version: http::Version,
    remote: Option<std::net::SocketAddr>,
    options: WsOptions,
    start: Start,
) -> Response {
    let h2 = version == http::Version::HTTP_2
        && headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !h2 && (version != http::Version::HTTP_11 || !is_upgrade(headers)) {
        return response::error(
            StatusCode::BAD_REQUEST,
            "this route takes WebSocket upgrades (an HTTP/1.1 GET with Upgrade: websocket, \
             or an HTTP/2 extended CONNECT with :protocol websocket)",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map_or(true, |v| v.as_bytes() != b"13")
    {
        let mut res = response::error(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version 13 is the version served",
        );
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return res;
    }
    let mut res = Response::new(Body::empty());
    let h = res.headers_mut();
    if !h2 {
        let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
            Some(k) if k.len() == 24 => k,
            _ => {
                return response::error(
                    StatusCode::BAD_REQUEST,
                    "a WebSocket upgrade needs a Sec-WebSocket-Key of 16 bytes in base64",
                )
            }
        };
        let accept_key = derive_accept_key(key.as_bytes());
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(v) = HeaderValue::from_str(&accept_key) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
    }
    let deflate = options
        .compression
        .and_then(|c| deflate::negotiate(headers, c.client_context_takeover));
    let deflate = deflate.map(|(d, answer)| {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, answer);
        d
    });
    let protocol = choose_protocol(headers, &options.protocols);
    if let Some(v) = protocol
        .as_deref()
        .and_then(|p| HeaderValue::from_str(p).ok())
    {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    *res.status_mut() = match h2 {
        true => StatusCode::OK,
        false => StatusCode::SWITCHING_PROTOCOLS,
    };
    let sender = WsSender::new(
        options.queue,
        remote,
        deflate.is_some_and(|d| d.server_window_bits == 15),
    );
    res.extensions_mut()
        .insert(Upgrade(Arc::new(Mutex::new(Some(Pending {
            options,
            protocol,
            deflate,
            sender,
            start,
            held: None,
        })))));
    res
}

/// The first subprotocol the client offers (`Sec-WebSocket-Protocol`, comma-separated,
/// in the client's order of preference) that `supported` lists.
fn choose_protocol(headers: &HeaderMap, supported: &[String]) -> Option<String> {
    if supported.is_empty() {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|offered| supported.iter().any(|s| s == offered))
        .map(str::to_string)
}

/// The subprotocol an upgrade's answer chose, if any.
pub fn chosen_protocol(res: &Response) -> Option<&str> {
    res.headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
}

/// The sender a 101 response will serve, before the upgrade (a front end registers it).
pub fn pending_sender(res: &Response) -> Option<WsSender> {
    let up = res.extensions().get::<Upgrade>()?;
    let pending = up.lock();
    pending.as_ref().map(|p| p.sender.clone())
}

/// The upgrade a 101 response (200 to an HTTP/2 extended CONNECT) carries, taken out of
/// it; `None` for another response.
pub(crate) fn take_upgrade(res: &mut http::Response<Body>) -> Option<Taken> {
    if !accepted(res.status()) {
        return None;
    }
    let pending = res
        .extensions_mut()
        .remove::<Upgrade>()
        .and_then(|u| u.lock().take())?;
    Some(Taken(pending))
}

/// An upgrade taken from its response ([`take_upgrade`]), to run once the 101 is out.
pub(crate) struct Taken(Pending);

impl Taken {
    /// Serves the socket over `tcp` (the direct path's connection, plain or TLS): `head`
    /// (the 101's) is the first thing written, `unread` the first read. The task is the
    /// connection's future alone.
    pub(crate) fn spawn(
        self,
        tcp: Arc<crate::wire::Conn>,
        head: Bytes,
        unread: Bytes,
        shared: &Shared,
    ) {
        let max = self.0.options.max_payload;
        self.0.sender.push_head(head);
        track(&self.0.sender, self.0.options.idle_timeout, shared);
        // Channels write to a plain socket themselves; over TLS the connection seals all.
        if !tcp.is_tls() {
            self.0.sender.attach(tcp.clone());
        }
        let ws = io::Ws::new(io::WsIo::Conn(tcp), unread, max, self.0.deflate);
        tokio::spawn(run(self.0, ws));
    }

    /// Serves the socket over an HTTP/2 stream (RFC 8441), the 200 sent; `busy` is held
    /// until it closes.
    pub(crate) fn spawn_h2(
        mut self,
        recv: h2::RecvStream,
        send: h2::SendStream<Bytes>,
        busy: impl Send + 'static,
        shared: &Shared,
    ) {
        let max = self.0.options.max_payload;
        track(&self.0.sender, self.0.options.idle_timeout, shared);
        let held = self.0.held.take();
        self.0.held = Some(Box::new((held, busy)));
        let io = io::WsIo::H2(Box::new(io::H2Io { recv, send }));
        let ws = io::Ws::new(io, Bytes::new(), max, self.0.deflate);
        tokio::spawn(run(self.0, ws));
    }

    /// The connection could not be switched to the WebSocket: the handler still runs (or
    /// is told), and finds the socket closed.
    pub(crate) fn gone(self) {
        let Pending {
            sender,
            start,
            protocol,
            ..
        } = self.0;
        let gone = CloseStatus {
            code: 1006,
            reason: String::new(),
        };
        sender.finish(gone.clone());
        match start {
            Start::Handler(f) => {
                let (_, rx) = mpsc::channel(1);
                f(
                    sender.clone(),
                    WebSocket {
                        sender,
                        rx,
                        protocol,
                    },
                );
            }
            Start::Callbacks { on_close, .. } => on_close(gone),
            Start::Channel(_) => {}
        }
    }
}

/// Runs the upgrade a response carries, once hyper has switched protocols.
pub(crate) fn spawn_upgrade(
    res: &mut http::Response<Body>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    shared: &Shared,
) {
    let Some(Taken(pending)) = take_upgrade(res) else {
        return;
    };
    track(&pending.sender, pending.options.idle_timeout, shared);
    tokio::spawn(on_upgrade.then(move |up| {
        let max = pending.options.max_payload;
        let deflate = pending.deflate;
        let ws = match up {
            Ok(up) => match crate::server::upgraded_tcp(up) {
                Ok((unread, tcp)) => {
                    let tcp = Arc::new(crate::wire::Conn::plain(tcp));
                    pending.sender.attach(tcp.clone());
                    io::Ws::new(io::WsIo::Conn(tcp), unread, max, deflate)
                }
                Err(up) => io::Ws::new(
                    io::WsIo::Upgraded(Box::new(hyper_util::rt::TokioIo::new(up))),
                    Bytes::new(),
                    max,
                    deflate,
                ),
            },
            Err(_) => {
                Taken(pending).gone();
                return Either::Right(std::future::ready(()));
            }
        };
        Either::Left(run(pending, ws))
    }));
}

/// Tracks a socket for the server's shutdown (see `WsSender::shut_down`) and, with
/// `idle_timeout`, for the idle clock of that timeout (see `WsSender::idle_tick`).
fn track(sender: &WsSender, idle_timeout: Option<Duration>, shared: &Shared) {
    // Tracked before the check, so that a shutdown that begins between them still finds it.
    shared.streams.track_ws(sender, idle_timeout);
    if shared.shutdown.is_begun() {
        sender.shut_down();
    }
}

/// Starts the handler (or subscribes the channel) and returns the connection's future:
/// all that the upgrade needed (the options, the handler's start) is used and dropped
/// before it.
fn run(pending: Pending, ws: io::Ws) -> impl Future<Output = ()> + Send {
    let Pending {
        options,
        protocol,
        deflate: _,
        sender,
        start,
        held,
    } = pending;
    let (inbox, on_close) = match start {
        Start::Handler(f) => {
            let (tx, rx) = mpsc::channel(INBOX);
            let socket = WebSocket {
                sender: sender.clone(),
                rx,
                protocol,
            };
            f(sender.clone(), socket);
            (Inbox::Channel(tx), None)
        }
        Start::Callbacks {
            on_message,
            on_close,
        } => (Inbox::Callback(on_message), Some(on_close)),
        Start::Channel(channel) => {
            sender.subscribe(&channel);
            (Inbox::Callback(Box::new(|_, _| {})), None)
        }
    };
    conn::serve(conn::Serve {
        ws,
        sender,
        inbox,
        on_close,
        idle_timeout: options.idle_timeout.is_some(),
        held,
    })
}

/// The HTTP handler of a route whose sockets receive `channel`'s events (no task of its
/// own per socket; what clients send is dropped).
pub(crate) fn channel_handler(
    channel: crate::Channel,
    options: WsOptions,
) -> impl Fn(Request) -> std::future::Ready<Response> + Send + Sync + 'static {
    move |req: Request| {
        let start = Start::Channel(channel.clone());
        std::future::ready(answer(
            req.headers(),
            req.version(),
            req.remote_addr(),
            options.clone(),
            start,
        ))
    }
}

/// A WebSocket handler: any `async fn(Request, WebSocket)`.
pub trait WsHandler: Send + Sync + 'static {
    /// Serves one socket.
    fn call(&self, req: Request, ws: WebSocket) -> BoxFuture<'static, ()>;
}

impl<F, Fut> WsHandler for F
where
    F: Fn(Request, WebSocket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn call(&self, req: Request, ws: WebSocket) -> BoxFuture<'static, ()> {
        (self)(req, ws).boxed()
    }
}

/// The HTTP handler of a WebSocket route: checks the upgrade, answers 101 and runs
/// `handler` on the socket, closing it (1000) when the handler returns.
pub(crate) fn route_handler(
    handler: Arc<dyn WsHandler>,
    options: WsOptions,
) -> impl Fn(Request) -> std::future::Ready<Response> + Send + Sync + 'static {
    move |req: Request| {
        let handler = handler.clone();
        let headers = req.headers().clone();
        let version = req.version();
        let remote = req.remote_addr();
        std::future::ready(accept(
            &headers,
            version,
            remote,
            options.clone(),
            move |sender, ws| {
                tokio::spawn(async move {
                    handler.call(req, ws).await;
                    sender.end();
                });
            },
        ))
    }
}
