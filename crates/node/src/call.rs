//! One request in flight, as JS sees it: lazy request getters and synchronous response
//! methods that go straight into the engine's responder.

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Env, PromiseRaw};
use napi_derive::napi;
use std::sync::Arc;

use http::StatusCode;
use rat_engine::frontend::{ReadyState, Responder, ResponseKind};
use rat_engine::response::error_body;
use rat_engine::{BodyStream, ParamKind, Request};

use crate::channel::Channel;
use crate::dispatch::{self, Dispatcher, Item};
use crate::ws::{WsRouteOptions, WsSocket};
use crate::{build_event, js_error, spawn, to_js_error, Result};

/// A request and its response, on their way to JS in a dispatch batch.
pub(crate) struct Call {
    id: u32,
    route_id: u32,
    req: Request,
    responder: Responder,
    body_stream: Option<Arc<tokio::sync::Mutex<BodyStream>>>,
    dispatcher: Arc<Dispatcher>,
    /// The stream's position in each channel it subscribed to (made at the first).
    positions: std::sync::OnceLock<Arc<rat_engine::channel::Positions>>,
}

impl Call {
    pub(crate) fn new(
        id: u32,
        route_id: u32,
        mut req: Request,
        responder: Responder,
        dispatcher: Arc<Dispatcher>,
    ) -> Self {
        let body_stream = req
            .body_stream()
            .map(|b| Arc::new(tokio::sync::Mutex::new(b)));
        Call {
            id,
            route_id,
            req,
            responder,
            body_stream,
            dispatcher,
            positions: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn route(&self) -> u32 {
        self.route_id
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn request(&self) -> &Request {
        &self.req
    }

    pub(crate) fn responder(&self) -> &Responder {
        &self.responder
    }

    pub(crate) fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    fn method(&self) -> String {
        self.req.method().as_str().to_string()
    }

    fn path(&self) -> String {
        self.req.path().to_string()
    }

    fn query_string(&self) -> Option<String> {
        self.req.query_string().map(str::to_string)
    }

    fn raw_headers(&self) -> Vec<String> {
        let headers = self.req.headers();
        let mut out = Vec::with_capacity(headers.len() * 2);
        for (k, v) in headers {
            out.push(k.as_str().to_string());
            out.push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        out
    }

    fn raw_params(&self) -> Vec<String> {
        let params = self.req.params();
        let mut out = Vec::with_capacity(params.len() * 3);
        for p in params.iter() {
            out.push(p.name.clone());
            out.push(p.value.clone());
            out.push(kind_name(p.kind).to_string());
        }
        out
    }

    fn body(&self) -> Buffer {
        Buffer::from(self.req.body().to_vec())
    }

    fn respond(
        &self,
        status: u32,
        headers: Option<Vec<String>>,
        body: Option<String>,
    ) -> Result<()> {
        let body = body.map(|s| Bytes::from(s.into_bytes()));
        self.respond_bytes(status, headers, body.unwrap_or_default())
    }

    /// Sends a complete response (`headers`: a flat `[name, value, ...]` list), now or with
    /// the others at the end of the dispatch call in progress.
    fn respond_bytes(&self, status: u32, headers: Option<Vec<String>>, body: Bytes) -> Result<()> {
        let flat = headers.unwrap_or_default();
        let pairs: Vec<(&str, &str)> = flat
            .chunks_exact(2)
            .map(|kv| (kv[0].as_str(), kv[1].as_str()))
            .collect();
        let status = u16::try_from(status).unwrap_or(0);
        let prepared = self
            .responder
            .prepare(status, &pairs, body)
            .map_err(to_js_error)?;
        crate::dispatch::send_or_defer(prepared);
        Ok(())
    }

    /// Sends the error response `{"error": message, "status": status}` (the engine's
    /// [`error_body`]) with `headers` besides its content type.
    fn respond_error(
        &self,
        status: u32,
        message: &str,
        headers: Option<Vec<String>>,
    ) -> Result<()> {
        let code = u16::try_from(status)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| js_error("ERR_INVALID_ARGUMENT", format!("invalid status {status}")))?;
        let mut flat = vec!["content-type".to_string(), "application/json".to_string()];
        flat.extend(headers.unwrap_or_default());
        self.respond_bytes(status, Some(flat), error_body(code, message))
    }

    /// Answered by the engine when JS cannot be reached (shutting down).
    pub(crate) fn reject_unavailable(&self) {
        let body = error_body(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
        let _ = self
            .responder
            .respond(503, &[("content-type", "application/json")], body);
    }
}

/// A stream write's answer for JS: "below the mark", or false once the stream is closed or
/// was cut at its hard limit (JS learns which from `closed`); other errors throw.
fn written(r: rat_engine::Result<bool>) -> Result<bool> {
    match r {
        Ok(below) => Ok(below),
        Err(e) if e.is_closed() || e.is_full() => Ok(false),
        Err(e) => Err(to_js_error(e)),
    }
}

fn kind_name(k: ParamKind) -> &'static str {
    match k {
        ParamKind::Int => "int",
        ParamKind::Float => "float",
        ParamKind::Uuid => "uuid",
        ParamKind::Str => "str",
        ParamKind::Path => "path",
    }
}

/// A request kept past the dispatch call that brought it (a handler that answers later, a
/// stream): a native object of its own, so it holds only its own state, never the other
/// requests of its batch (their bodies), and is released when JS drops it. While the
/// dispatch call runs, a request is read and answered through the `batch*` functions
/// instead, with no native object (a wrapped object with a finalizer costs ~1.5 µs of
/// the JS thread per request).
#[napi]
pub struct KeptCall {
    /// Boxed as it came from the workers: a request is a few hundred bytes, and moving it
    /// out of its box would be a copy per request on the JS thread.
    call: Box<Call>,
}

impl KeptCall {
    pub(crate) fn new(call: Box<Call>) -> Self {
        KeptCall { call }
    }

    fn at(&self) -> &Call {
        &self.call
    }
}

#[napi]
impl KeptCall {
    /// Answers a WebSocket route's upgrade; `null` when the request is no valid upgrade
    /// (the engine answered it with 400 or 426).
    #[napi]
    pub fn accept_ws(&self, options: Option<WsRouteOptions>) -> Result<Option<WsSocket>> {
        let o = options.unwrap_or_default().to_engine()?;
        crate::ws::accept(self.at(), &o)
    }

    /// `acceptWs` with no socket object until its first event (`Engine.takeWs`); false
    /// when the request is no valid upgrade.
    #[napi]
    pub fn accept_ws_lazy(&self, options: Option<WsRouteOptions>, tag: u32) -> Result<bool> {
        let o = options.unwrap_or_default().to_engine()?;
        crate::ws::accept_lazy(self.at(), &o, tag)
    }

    /// The method, upper-case.
    #[napi]
    pub fn method(&self) -> Result<String> {
        Ok(self.at().method())
    }

    /// The path as sent (percent-encoded), without the query.
    #[napi]
    pub fn path(&self) -> Result<String> {
        Ok(self.at().path())
    }

    /// The raw query string, or null.
    #[napi]
    pub fn query_string(&self) -> Result<Option<String>> {
        Ok(self.at().query_string())
    }

    /// Headers as a flat list `[name, value, name, value, ...]`, names lower-case.
    #[napi]
    pub fn raw_headers(&self) -> Result<Vec<String>> {
        Ok(self.at().raw_headers())
    }

    /// Path parameters as a flat list `[name, value, kind, ...]` (kind: int, float, uuid,
    /// str, path); values are percent-decoded.
    #[napi]
    pub fn raw_params(&self) -> Result<Vec<String>> {
        Ok(self.at().raw_params())
    }

    /// The request body (a copy).
    #[napi]
    pub fn body(&self) -> Result<Buffer> {
        Ok(self.at().body())
    }

    /// True when the route streams the request body (read it with `readChunk`).
    #[napi]
    pub fn body_streamed(&self) -> Result<bool> {
        Ok(self.at().body_stream.is_some())
    }

    /// The next chunk of a streamed request body, or null at its end. Rejects with
    /// `ERR_BODY_TOO_LARGE` past the route's limit.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn read_chunk<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Option<Buffer>>> {
        let Some(stream) = self.at().body_stream.clone() else {
            return Err(js_error(
                "ERR_INVALID_ARGUMENT",
                "this route reads the body in full; register it with streamBody: true to stream it",
            ));
        };
        spawn(env, async move {
            let chunk = stream.lock().await.chunk().await.map_err(to_js_error)?;
            Ok(chunk.map(|b| Buffer::from(b.to_vec())))
        })
    }

    /// The peer's IP address.
    #[napi]
    pub fn remote_address(&self) -> Result<Option<String>> {
        Ok(self.at().req.remote_addr().map(|a| a.ip().to_string()))
    }

    /// The peer's port.
    #[napi]
    pub fn remote_port(&self) -> Result<Option<u32>> {
        Ok(self.at().req.remote_addr().map(|a| u32::from(a.port())))
    }

    /// `Last-Event-ID` header, or the `lastEventId` query parameter.
    #[napi]
    pub fn last_event_id(&self) -> Result<Option<String>> {
        Ok(self.at().req.last_event_id().map(|c| c.into_owned()))
    }

    /// Sends a complete response. `headers` is a flat `[name, value, ...]` list.
    #[napi]
    pub fn respond(
        &self,
        status: u32,
        headers: Option<Vec<String>>,
        body: Option<String>,
    ) -> Result<()> {
        self.at().respond(status, headers, body)
    }

    /// Sends a complete response with a binary body.
    #[napi]
    pub fn respond_buffer(
        &self,
        status: u32,
        headers: Option<Vec<String>>,
        body: &[u8],
    ) -> Result<()> {
        self.at()
            .respond_bytes(status, headers, Bytes::copy_from_slice(body))
    }

    /// Sends the error response `{"error": message, "status": status}`; `headers` is a flat
    /// `[name, value, ...]` list added to it.
    #[napi]
    pub fn respond_error(
        &self,
        status: u32,
        message: String,
        headers: Option<Vec<String>>,
    ) -> Result<()> {
        self.at().respond_error(status, &message, headers)
    }

    /// Sets the status before the stream starts.
    #[napi]
    pub fn set_status(&self, status: u32) -> Result<()> {
        self.at()
            .responder
            .set_status(u16::try_from(status).unwrap_or(0))
            .map_err(to_js_error)
    }

    /// Appends a header before the stream starts.
    #[napi]
    pub fn append_header(&self, name: String, value: String) -> Result<()> {
        self.at()
            .responder
            .append_header(&name, &value)
            .map_err(to_js_error)
    }

    /// Sends the head now (status and headers so far).
    #[napi]
    pub fn start(&self) -> Result<()> {
        self.at().responder.start();
        Ok(())
    }

    /// Writes text to the stream. Returns false when the queue is at its high-water mark
    /// (wait for `ready()`), or when the stream is closed (see `closed`).
    #[napi]
    pub fn write_string(&self, chunk: String) -> Result<bool> {
        written(self.at().responder.write(Bytes::from(chunk.into_bytes())))
    }

    /// Writes bytes to the stream: straight to the socket when it takes them at once, else
    /// copied. Same result as `writeString`.
    #[napi]
    pub fn write_buffer(&self, chunk: &[u8]) -> Result<bool> {
        written(self.at().responder.write_slice(chunk))
    }

    /// Writes several buffers as one: straight to the socket in one vectored send when it
    /// has room, else copied. The TS stream collects the byte writes of a turn and crosses
    /// over once. Same result as `writeString`.
    #[napi]
    pub fn write_buffers(&self, chunks: Vec<&[u8]>) -> Result<bool> {
        written(self.at().responder.write_slices(&chunks))
    }

    /// Sends one SSE event. Returns like `writeString`; throws for an invalid id or name.
    #[napi]
    pub fn send_event(
        &self,
        data: Option<String>,
        event: Option<String>,
        id: Option<String>,
        retry: Option<u32>,
    ) -> Result<bool> {
        let c = self.at();
        let ev = build_event(data, event, id, retry)?;
        written(c.responder.send_event(&ev))
    }

    /// Sends one data-only SSE event per item, as one write: the TS stream collects the
    /// sends of a tick and crosses over once. Returns like `writeString`.
    #[napi]
    pub fn send_data_batch(&self, items: Vec<String>) -> Result<bool> {
        written(
            self.at()
                .responder
                .send_data_batch(items.iter().map(String::as_str)),
        )
    }

    /// Same as `sendDataBatch(joined.split('\0'))`, with one string to convert instead of
    /// one per event (most data never holds NUL; the TS stream checks).
    #[napi]
    pub fn send_data_joined(&self, joined: String) -> Result<bool> {
        written(self.at().responder.send_data_batch(joined.split('\0')))
    }

    /// Sends an SSE comment line.
    #[napi]
    pub fn comment(&self, text: String) -> Result<bool> {
        written(self.at().responder.comment(&text))
    }

    /// Ends the response after what is queued.
    #[napi]
    pub fn end(&self) -> Result<()> {
        self.at().responder.end();
        Ok(())
    }

    /// Reports a handler failure: 500 JSON before the head; after it an `error` event and
    /// a clean end (SSE), or a cut connection (chunked).
    #[napi]
    pub fn fail(&self, message: String) -> Result<()> {
        self.at().responder.fail(&message);
        Ok(())
    }

    /// True once the head was sent.
    #[napi]
    pub fn started(&self) -> Result<bool> {
        Ok(self.at().responder.is_started())
    }

    /// True once the client has gone or the stream ended.
    #[napi]
    pub fn closed(&self) -> Result<bool> {
        Ok(self.at().responder.is_closed())
    }

    /// Bytes queued and not yet sent.
    #[napi]
    pub fn buffered(&self) -> Result<u32> {
        let stream = self.at().responder.stream();
        Ok(stream.map_or(0, |s| s.buffered() as u32))
    }

    /// Asks for a notice when the queue has room again: 1 = it has room now, 0 = the
    /// stream is closed, 2 = armed: this call's id arrives in a later dispatch's `ready`
    /// list (or in `closed`, if the stream closes first). One promise-free crossing per
    /// wait, batched with the rest of the engine's traffic.
    #[napi]
    pub fn arm_ready(&self) -> Result<u32> {
        let c = self.at();
        let d = c.dispatcher.clone();
        let id = c.id;
        Ok(
            match c.responder.on_ready(move || d.push(Item::Ready(id))) {
                ReadyState::Closed => 0,
                ReadyState::Ready => 1,
                ReadyState::Armed => 2,
            },
        )
    }

    /// Subscribes this SSE stream to a channel, replaying history after `lastEventId` (the
    /// first subscribe's; with several channels, an id naming a position in each).
    /// Returns the number of events replayed (-1 if some were missed: a `missed` event
    /// was sent first).
    #[napi]
    pub fn subscribe(&self, channel: &Channel, last_event_id: Option<String>) -> Result<i32> {
        let c = self.at();
        let stream = match (c.responder.kind(), c.responder.stream()) {
            (ResponseKind::Sse, Some(s)) => s,
            _ => {
                return Err(js_error(
                    "ERR_INVALID_ARGUMENT",
                    "only SSE routes can subscribe to a channel",
                ))
            }
        };
        c.responder.start();
        // Inside the engine's runtime, so that the channel runs its fan-out task there, as
        // it does for subscribers of a channel-served route.
        let positions = c
            .positions
            .get_or_init(|| rat_engine::channel::Positions::new(last_event_id.as_deref()));
        let s = napi::bindgen_prelude::within_runtime_if_available(|| {
            channel.inner().subscribe_at(stream, positions)
        });
        Ok(if s.missed { -1 } else { s.replayed as i32 })
    }
}

// The requests of the dispatch call in progress, addressed as `(seq, i)` (see
// `dispatch::BATCH`): what a handler answering at once needs, without a native object.

/// Moves request `i` of batch `seq` into a `KeptCall` of its own.
#[napi]
pub fn take_call(seq: u32, i: u32) -> Result<KeptCall> {
    dispatch::take_batched(seq, i)
}

/// `KeptCall.method` for request `i` of batch `seq`.
#[napi]
pub fn batch_method(seq: u32, i: u32) -> Result<String> {
    dispatch::with_batched(seq, i, |c| Ok(c.method()))
}

/// `KeptCall.path` for request `i` of batch `seq`.
#[napi]
pub fn batch_path(seq: u32, i: u32) -> Result<String> {
    dispatch::with_batched(seq, i, |c| Ok(c.path()))
}

/// `KeptCall.queryString` for request `i` of batch `seq`.
#[napi]
pub fn batch_query_string(seq: u32, i: u32) -> Result<Option<String>> {
    dispatch::with_batched(seq, i, |c| Ok(c.query_string()))
}

/// `KeptCall.rawHeaders` for request `i` of batch `seq`.
#[napi]
pub fn batch_raw_headers(seq: u32, i: u32) -> Result<Vec<String>> {
    dispatch::with_batched(seq, i, |c| Ok(c.raw_headers()))
}

/// `KeptCall.rawParams` for request `i` of batch `seq`.
#[napi]
pub fn batch_raw_params(seq: u32, i: u32) -> Result<Vec<String>> {
    dispatch::with_batched(seq, i, |c| Ok(c.raw_params()))
}

/// `KeptCall.remoteAddress` for request `i` of batch `seq`.
#[napi]
pub fn batch_remote_address(seq: u32, i: u32) -> Result<Option<String>> {
    dispatch::with_batched(seq, i, |c| {
        Ok(c.req.remote_addr().map(|a| a.ip().to_string()))
    })
}

/// `KeptCall.remotePort` for request `i` of batch `seq`.
#[napi]
pub fn batch_remote_port(seq: u32, i: u32) -> Result<Option<u32>> {
    dispatch::with_batched(seq, i, |c| {
        Ok(c.req.remote_addr().map(|a| u32::from(a.port())))
    })
}

/// `KeptCall.lastEventId` for request `i` of batch `seq`.
#[napi]
pub fn batch_last_event_id(seq: u32, i: u32) -> Result<Option<String>> {
    dispatch::with_batched(seq, i, |c| {
        Ok(c.req.last_event_id().map(|c| c.into_owned()))
    })
}

/// `KeptCall.started` for request `i` of batch `seq`.
#[napi]
pub fn batch_started(seq: u32, i: u32) -> Result<bool> {
    dispatch::with_batched(seq, i, |c| Ok(c.responder.is_started()))
}

/// `KeptCall.body` for request `i` of batch `seq`.
#[napi]
pub fn batch_body(seq: u32, i: u32) -> Result<Buffer> {
    dispatch::with_batched(seq, i, |c| Ok(c.body()))
}

/// `KeptCall.bodyStreamed` for request `i` of batch `seq`.
#[napi]
pub fn batch_body_streamed(seq: u32, i: u32) -> Result<bool> {
    dispatch::with_batched(seq, i, |c| Ok(c.body_stream.is_some()))
}

/// `KeptCall.respond` for request `i` of batch `seq`.
#[napi]
pub fn batch_respond(
    seq: u32,
    i: u32,
    status: u32,
    headers: Option<Vec<String>>,
    body: Option<String>,
) -> Result<()> {
    dispatch::with_batched(seq, i, |c| c.respond(status, headers, body))
}

/// `KeptCall.respondBuffer` for request `i` of batch `seq`.
#[napi]
pub fn batch_respond_buffer(
    seq: u32,
    i: u32,
    status: u32,
    headers: Option<Vec<String>>,
    body: &[u8],
) -> Result<()> {
    dispatch::with_batched(seq, i, |c| {
        c.respond_bytes(status, headers, Bytes::copy_from_slice(body))
    })
}

/// `KeptCall.respondError` for request `i` of batch `seq`.
#[napi]
pub fn batch_respond_error(
    seq: u32,
    i: u32,
    status: u32,
    message: String,
    headers: Option<Vec<String>>,
) -> Result<()> {
    dispatch::with_batched(seq, i, |c| c.respond_error(status, &message, headers))
}

/// `KeptCall.acceptWs` for request `i` of batch `seq`.
#[napi]
pub fn batch_accept_ws(
    seq: u32,
    i: u32,
    options: Option<WsRouteOptions>,
) -> Result<Option<WsSocket>> {
    let o = options.unwrap_or_default().to_engine()?;
    dispatch::with_batched(seq, i, |c| crate::ws::accept(c, &o))
}

/// `KeptCall.acceptWsLazy` for request `i` of batch `seq`.
#[napi]
pub fn batch_accept_ws_lazy(
    seq: u32,
    i: u32,
    options: Option<WsRouteOptions>,
    tag: u32,
) -> Result<bool> {
    let o = options.unwrap_or_default().to_engine()?;
    dispatch::with_batched(seq, i, |c| crate::ws::accept_lazy(c, &o, tag))
}
