//! WebSockets for JS: the upgrade answered from a dispatch batch, a socket object that
//! sends, and the socket's messages, drains and close carried back in later batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Either3};
use napi_derive::napi;
use rat_engine::ws::{self, Message, Unhandled, WsOptions, WsSender};
use rat_engine::QueueLimits;

use crate::call::Call;
use crate::channel::Channel;
use crate::dispatch::{Dispatcher, Item};
use crate::{js_error, to_js_error, Result};

/// A WebSocket route's settings.
#[napi(object)]
#[derive(Default, Clone)]
pub struct WsRouteOptions {
    /// Largest message in bytes (default 16 MiB); past it the socket closes with 1009.
    pub max_payload: Option<f64>,
    /// Close (1001) a socket that received nothing for this long; 0: never (default 120000).
    pub idle_timeout_ms: Option<f64>,
    /// Send queue bytes at which `send` returns false (default 64 KiB).
    pub high_water_mark: Option<f64>,
    /// Send queue bytes past which the socket is cut (default max(64 x mark, 8 MiB)).
    pub max_buffered_bytes: Option<f64>,
    /// Accept permessage-deflate when the client offers it (default false).
    pub compression: Option<bool>,
    /// With compression: let clients keep their compression context between messages
    /// (default false).
    pub client_context_takeover: Option<bool>,
    /// Subprotocols the route speaks: the first the client offers is chosen.
    pub protocols: Option<Vec<String>>,
}

impl WsRouteOptions {
    pub(crate) fn to_engine(&self) -> Result<WsOptions> {
        let bytes = |v: Option<f64>, name: &str| -> Result<Option<usize>> {
            match v {
                None => Ok(None),
                Some(n) if n.is_finite() && n >= 1.0 && n.fract() == 0.0 => Ok(Some(n as usize)),
                Some(n) => Err(js_error(
                    "ERR_INVALID_ARGUMENT",
                    format!("{name} must be a positive whole number of bytes, not {n}"),
                )),
            }
        };
        let mut o = WsOptions::default();
        if let Some(n) = bytes(self.max_payload, "maxPayload")? {
            o.max_payload = n;
        }
        match self.idle_timeout_ms {
            None => {}
            Some(0.0) => o.idle_timeout = None,
            Some(ms) if ms.is_finite() && ms > 0.0 => {
                o.idle_timeout = Some(Duration::from_millis(ms as u64))
            }
            Some(ms) => {
                return Err(js_error(
                    "ERR_INVALID_ARGUMENT",
                    format!("idleTimeoutMs must be 0 (never) or a positive number, not {ms}"),
                ))
            }
        }
        if let Some(mark) = bytes(self.high_water_mark, "highWaterMark")? {
            o.queue = QueueLimits::with_high_water_mark(mark);
        }
        if let Some(max) = bytes(self.max_buffered_bytes, "maxBufferedBytes")? {
            o.queue.max_buffered = max.max(o.queue.high_water_mark);
        }
        o.protocols = self.protocols.clone().unwrap_or_default();
        if self.compression == Some(true) {
            o.compression = Some(rat_engine::ws::WsCompression {
                client_context_takeover: self.client_context_takeover.unwrap_or(false),
            });
        }
        Ok(o)
    }
}

/// What happened to a socket, for JS.
pub(crate) enum WsNotice {
    /// A message, held against its socket's backlog until JS has handled it.
    Message(Message, Unhandled),
    Drain,
    Closed(u16, String),
}

/// One value of the flat socket-event array JS receives: see [`push_event`].
pub(crate) type WsValue = Either3<u32, String, Buffer>;

/// Appends a socket event to `out` as three values: the socket's id; `0` text, `1` binary,
/// `2` drain or else the close code; then the message (a string or a Buffer), `0` for a
/// drain, or the close reason. One array per batch, no object per event. A message's
/// hold goes to `held`, to be dropped once the dispatch call has returned.
pub(crate) fn push_event(out: &mut Vec<WsValue>, held: &mut Vec<Unhandled>, id: u32, n: WsNotice) {
    out.push(Either3::A(id));
    match n {
        WsNotice::Message(m, hold) => {
            held.push(hold);
            match m {
                Message::Text(t) => {
                    out.push(Either3::A(0));
                    out.push(Either3::B(t));
                }
                Message::Binary(b) => {
                    out.push(Either3::A(1));
                    out.push(Either3::C(b.to_vec().into()));
                }
            }
        }
        WsNotice::Drain => {
            out.push(Either3::A(2));
            out.push(Either3::A(0));
        }
        WsNotice::Closed(code, reason) => {
            out.push(Either3::A(u32::from(code)));
            out.push(Either3::B(reason));
        }
    }
}

/// An open (or opening) WebSocket, for JS to send on.
#[napi]
pub struct WsSocket {
    sender: WsSender,
    tag: u32,
    protocol: Option<String>,
}

#[napi]
impl WsSocket {
    /// The tag given to `acceptWsLazy` (0 for a socket from `acceptWs`).
    #[napi(getter)]
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The subprotocol chosen from the client's offer (sockets from `acceptWs`; lazy
    /// sockets are accepted only on routes without subprotocols).
    #[napi(getter)]
    pub fn protocol(&self) -> Option<String> {
        self.protocol.clone()
    }

    /// Queues a text message; false past the high-water mark (or once closed).
    #[napi]
    pub fn send_text(&self, text: String) -> bool {
        self.sender.send_text(text)
    }

    /// Queues a binary message (copied).
    #[napi]
    pub fn send_binary(&self, data: &[u8]) -> bool {
        self.sender.send_binary(Bytes::copy_from_slice(data))
    }

    /// Starts the close handshake with `code` (1000, 1001, 1002, 1003, 1007-1014, or
    /// 3000-4999) and `reason` (at most 123 bytes).
    #[napi]
    pub fn close(&self, code: Option<u32>, reason: Option<String>) -> Result<()> {
        let code = code.unwrap_or(1000);
        let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
        if !valid {
            return Err(js_error(
                "ERR_INVALID_ARGUMENT",
                format!("invalid close code {code}: use 1000-1003, 1007-1014 or 3000-4999"),
            ));
        }
        let reason = reason.unwrap_or_default();
        if reason.len() > 123 {
            return Err(js_error(
                "ERR_INVALID_ARGUMENT",
                format!("a close reason is 123 bytes at most, not {}", reason.len()),
            ));
        }
        self.sender.close(code as u16, &reason);
        Ok(())
    }

    /// Closes normally (1000) after what is queued.
    #[napi]
    pub fn end(&self) {
        self.sender.end();
    }

    /// Delivers the channel's events to this socket as text frames.
    #[napi]
    pub fn subscribe(&self, channel: &Channel) {
        self.sender.subscribe(channel.inner());
    }

    /// Stops delivering the channel's events.
    #[napi]
    pub fn unsubscribe(&self, channel: &Channel) {
        self.sender.unsubscribe(channel.inner());
    }

    /// Bytes queued and not yet written.
    #[napi]
    pub fn buffered(&self) -> f64 {
        self.sender.buffered() as f64
    }

    /// True once closing or closed.
    #[napi]
    pub fn closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// The client's IP address.
    #[napi]
    pub fn remote_address(&self) -> Option<String> {
        self.sender.remote_addr().map(|a| a.ip().to_string())
    }
}

/// Sockets accepted without a JS object ([`accept_lazy`]), by id, with their tags: JS
/// takes one ([`LazySockets::take`]) at the socket's first event, so an idle socket of a
/// route with no `open` handler has no JS object, napi reference or finalizer.
#[derive(Default)]
pub(crate) struct LazySockets(Mutex<HashMap<u32, (WsSender, u32)>>);

impl LazySockets {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (WsSender, u32)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the socket of id `id`, with its route's `tag`, until JS takes it.
    fn insert(&self, id: u32, sender: WsSender, tag: u32) {
        self.map().insert(id, (sender, tag));
    }

    pub(crate) fn take(&self, id: u32) -> Option<WsSocket> {
        let mut map = self.map();
        let socket = map.remove(&id).map(|(sender, tag)| WsSocket {
            sender,
            tag,
            protocol: None,
        });
        if map.is_empty() {
            map.shrink_to_fit();
        }
        socket
    }

    /// Request `id` was abandoned: a socket accepted for it and not taken yet is closed
    /// for JS (1006; JS takes it with this event), as an open one is by `abandoned` in JS.
    pub(crate) fn abandoned(&self, out: &mut Vec<WsValue>, id: u32) {
        if self.map().contains_key(&id) {
            push_event(
                out,
                &mut Vec::new(),
                id,
                WsNotice::Closed(1006, String::new()),
            );
        }
    }

    pub(crate) fn clear(&self) {
        *self.map() = HashMap::new();
    }
}

/// [`accept`] with no JS object for the socket until JS takes it (`Engine.takeWs`), at
/// its first event; false when the engine refused an invalid upgrade.
pub(crate) fn accept_lazy(call: &Call, options: &WsOptions, tag: u32) -> Result<bool> {
    let Some((sender, _)) = accept_sender(call, options)? else {
        return Ok(false);
    };
    call.dispatcher().ws_lazy.insert(call.id(), sender, tag);
    Ok(true)
}

/// Answers `call` with the upgrade (or the engine's refusal of an invalid one: then
/// `None`). Messages, drains and the close reach JS as socket events of id `call.id()`.
pub(crate) fn accept(call: &Call, options: &WsOptions) -> Result<Option<WsSocket>> {
    Ok(
        accept_sender(call, options)?.map(|(sender, protocol)| WsSocket {
            sender,
            tag: 0,
            protocol,
        }),
    )
}

/// The sender and chosen subprotocol of the socket `call` upgrades to.
fn accept_sender(call: &Call, options: &WsOptions) -> Result<Option<(WsSender, Option<String>)>> {
    let (res, sender) = answer(call.dispatcher(), call.id(), call.request(), options);
    let protocol = ws::chosen_protocol(&res).map(str::to_string);
    let prepared = call
        .responder()
        .prepare_response(res)
        .map_err(to_js_error)?;
    crate::dispatch::send_or_defer(prepared);
    Ok(sender.map(|s| (s, protocol)))
}

/// The engine's answer to upgrade request `req`, its socket's events reaching JS as those
/// of id `id`; and the socket's sender (`None` when the engine refused an invalid upgrade).
fn answer(
    d: &Arc<Dispatcher>,
    id: u32,
    req: &rat_engine::Request,
    options: &WsOptions,
) -> (rat_engine::Response, Option<WsSender>) {
    let pump = d.clone();
    let closes = d.clone();
    let res = ws::accept_with_callbacks(
        req.headers(),
        req.version(),
        req.remote_addr(),
        options.clone(),
        move |m, held| pump.push(Item::Ws(id, WsNotice::Message(m, held))),
        move |st| closes.push(Item::Ws(id, WsNotice::Closed(st.code, st.reason))),
    );
    let sender = ws::pending_sender(&res);
    if let Some(s) = &sender {
        let drains = d.clone();
        s.on_drain(move || drains.push(Item::Ws(id, WsNotice::Drain)));
    }
    (res, sender)
}

/// WebSocket routes with no `open` handler and no hook: the binding accepts their upgrades
/// itself ([`accept_unasked`]), by route id, with their options and tags.
#[derive(Default)]
pub(crate) struct UnaskedRoutes(Mutex<HashMap<u32, (WsOptions, u32)>>);

impl UnaskedRoutes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (WsOptions, u32)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Route `route` is accepted here with `options`, its sockets taken by JS with `tag`;
    /// or, with `None`, through JS again.
    pub(crate) fn set(&self, route: u32, accept: Option<(WsOptions, u32)>) {
        match accept {
            Some(a) => self.map().insert(route, a),
            None => self.map().remove(&route),
        };
    }

    /// The options and tag of route `route`, if it is accepted here.
    pub(crate) fn get(&self, route: u32) -> Option<(WsOptions, u32)> {
        self.map().get(&route).cloned()
    }
}

/// Accepts an upgrade of a route in [`UnaskedRoutes`] without calling JS: the socket waits
/// in [`LazySockets`] until JS takes it at its first event, as [`accept_lazy`]'s do.
pub(crate) fn accept_unasked(
    d: &Arc<Dispatcher>,
    req: &rat_engine::Request,
    options: &WsOptions,
    tag: u32,
) -> rat_engine::Response {
    let id = d.next_id();
    let (res, sender) = answer(d, id, req, options);
    if let Some(sender) = sender {
        d.ws_lazy.insert(id, sender, tag);
    }
    res
}
