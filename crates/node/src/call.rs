//! One request in flight, as JS sees it: lazy request getters and synchronous response
//! methods that go straight into the engine's responder.

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Env, PromiseRaw};
use napi_derive::napi;
use std::sync::Arc;

use rat_engine::frontend::{ReadyState, Responder, ResponseKind};
use rat_engine::{BodyStream, ParamKind, Request};

use crate::channel::Channel;
use crate::dispatch::{self, Dispatcher, Item};
use crate::{build_event, to_js_error};

/// A request and its response, on their way to JS in a [`Calls`] batch.
pub(crate) struct Call {
    id: u32,
    route_id: u32,
    req: Request,
    responder: Responder,
    body_stream: Option<Arc<tokio::sync::Mutex<BodyStream>>>,
    dispatcher: Arc<Dispatcher>,
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
        }
    }

    pub(crate) fn route(&self) -> u32 {
        self.route_id
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
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
    ) -> napi::Result<()> {
        let body = body.map(|s| Bytes::from(s.into_bytes()));
        self.respond_bytes(status, headers, body.unwrap_or_default())
    }

    /// Sends a complete response (`headers`: a flat `[name, value, ...]` list), now or with
    /// the others at the end of the dispatch call in progress.
    fn respond_bytes(
        &self,
        status: u32,
        headers: Option<Vec<String>>,
        body: Bytes,
    ) -> napi::Result<()> {
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

    /// Answered by the engine when JS cannot be reached (shutting down).
    pub(crate) fn reject_unavailable(&self) {
        let body = Bytes::from_static(br#"{"error":"server is shutting down","status":503}"#);
        let _ = self
            .responder
            .respond(503, &[("content-type", "application/json")], body);
    }
}

/// A stream write's answer for JS: "below the mark", or false once the stream is closed or
/// was cut at its hard limit (JS learns which from `closed`); other errors throw.
fn written(r: rat_engine::Result<bool>) -> napi::Result<bool> {
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

/// The requests of one dispatch, as JS sees them: one native object per batch instead of
/// one per request (a wrapped object with a finalizer costs ~1.5 µs of the JS thread per
/// request). JS addresses a request by its index in the batch (`ts/call.ts` wraps the
/// pair). A request's state lives as long as the batch object does, except a stream's:
/// [`detach`](Calls::detach) moves it into a batch of its own, so a long-lived stream
/// does not keep the other requests of its batch (their bodies) alive.
#[napi]
pub struct Calls {
    /// Boxed as they came from the workers: a request is a few hundred bytes, and moving it
    /// out of its box would be a copy per request on the JS thread.
    list: Vec<Option<Box<Call>>>,
}

impl Calls {
    pub(crate) fn new(list: Vec<Option<Box<Call>>>) -> Self {
        Calls { list }
    }

    fn at(&self, i: u32) -> napi::Result<&Call> {
        match self.list.get(i as usize) {
            Some(Some(c)) => Ok(c),
            Some(None) => Err(napi::Error::from_reason(format!(
                "ERR_INVALID_ARGUMENT: call {i} of this batch was detached"
            ))),
            None => Err(napi::Error::from_reason(format!(
                "ERR_INVALID_ARGUMENT: no call {i} in this batch"
            ))),
        }
    }
}

#[napi]
impl Calls {
    /// Number of requests in the batch.
    #[napi(getter)]
    pub fn length(&self) -> u32 {
        self.list.len() as u32
    }

    /// Moves request `i` into a batch of its own (index 0), for a stream that may outlive
    /// the rest of this batch.
    #[napi]
    pub fn detach(&mut self, i: u32) -> napi::Result<Calls> {
        self.at(i)?;
        let call = self.list[i as usize].take();
        Ok(Calls { list: vec![call] })
    }

    /// The method, upper-case.
    #[napi]
    pub fn method(&self, i: u32) -> napi::Result<String> {
        Ok(self.at(i)?.method())
    }

    /// The path as sent (percent-encoded), without the query.
    #[napi]
    pub fn path(&self, i: u32) -> napi::Result<String> {
        Ok(self.at(i)?.path())
    }

    /// The raw query string, or null.
    #[napi]
    pub fn query_string(&self, i: u32) -> napi::Result<Option<String>> {
        Ok(self.at(i)?.query_string())
    }

    /// Headers as a flat list `[name, value, name, value, ...]`, names lower-case.
    #[napi]
    pub fn raw_headers(&self, i: u32) -> napi::Result<Vec<String>> {
        Ok(self.at(i)?.raw_headers())
    }

    /// Path parameters as a flat list `[name, value, kind, ...]` (kind: int, float, uuid,
    /// str, path); values are percent-decoded.
    #[napi]
    pub fn raw_params(&self, i: u32) -> napi::Result<Vec<String>> {
        Ok(self.at(i)?.raw_params())
    }

    /// The request body (a copy).
    #[napi]
    pub fn body(&self, i: u32) -> napi::Result<Buffer> {
        Ok(self.at(i)?.body())
    }

    /// True when the route streams the request body (read it with `readChunk`).
    #[napi]
    pub fn body_streamed(&self, i: u32) -> napi::Result<bool> {
        Ok(self.at(i)?.body_stream.is_some())
    }

    /// The next chunk of a streamed request body, or null at its end. Rejects with
    /// `ERR_BODY_TOO_LARGE` past the route's limit.
    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn read_chunk<'env>(
        &self,
        env: &'env Env,
        i: u32,
    ) -> napi::Result<PromiseRaw<'env, Option<Buffer>>> {
        let Some(stream) = self.at(i)?.body_stream.clone() else {
            return Err(napi::Error::from_reason(
                "ERR_INVALID_ARGUMENT: this route reads the body in full; register it with streamBody: true to stream it",
            ));
        };
        env.spawn_future(async move {
            let chunk = stream.lock().await.chunk().await.map_err(to_js_error)?;
            Ok(chunk.map(|b| Buffer::from(b.to_vec())))
        })
    }

    /// The peer's IP address.
    #[napi]
    pub fn remote_address(&self, i: u32) -> napi::Result<Option<String>> {
        Ok(self.at(i)?.req.remote_addr().map(|a| a.ip().to_string()))
    }

    /// The peer's port.
    #[napi]
    pub fn remote_port(&self, i: u32) -> napi::Result<Option<u32>> {
        Ok(self.at(i)?.req.remote_addr().map(|a| u32::from(a.port())))
    }

    /// `Last-Event-ID` header, or the `lastEventId` query parameter.
    #[napi]
    pub fn last_event_id(&self, i: u32) -> napi::Result<Option<String>> {
        Ok(self.at(i)?.req.last_event_id().map(|c| c.into_owned()))
    }

    /// Sends a complete response. `headers` is a flat `[name, value, ...]` list.
    #[napi]
    pub fn respond(
        &self,
        i: u32,
        status: u32,
        headers: Option<Vec<String>>,
        body: Option<String>,
    ) -> napi::Result<()> {
        self.at(i)?.respond(status, headers, body)
    }

    /// Sends a complete response with a binary body.
    #[napi]
    pub fn respond_buffer(
        &self,
        i: u32,
        status: u32,
        headers: Option<Vec<String>>,
        body: &[u8],
    ) -> napi::Result<()> {
        self.at(i)?
            .respond_bytes(status, headers, Bytes::copy_from_slice(body))
    }

    /// Sets the status before the stream starts.
    #[napi]
    pub fn set_status(&self, i: u32, status: u32) -> napi::Result<()> {
        self.at(i)?
            .responder
            .set_status(u16::try_from(status).unwrap_or(0))
            .map_err(to_js_error)
    }

    /// Appends a header before the stream starts.
    #[napi]
    pub fn append_header(&self, i: u32, name: String, value: String) -> napi::Result<()> {
        self.at(i)?
            .responder
            .append_header(&name, &value)
            .map_err(to_js_error)
    }

    /// Sends the head now (status and headers so far).
    #[napi]
    pub fn start(&self, i: u32) -> napi::Result<()> {
        self.at(i)?.responder.start();
        Ok(())
    }

    /// Writes text to the stream. Returns false when the queue is at its high-water mark
    /// (wait for `ready()`), or when the stream is closed (see `closed`).
    #[napi]
    pub fn write_string(&self, i: u32, chunk: String) -> napi::Result<bool> {
        written(self.at(i)?.responder.write(Bytes::from(chunk.into_bytes())))
    }

    /// Writes bytes to the stream: straight to the socket when it takes them at once, else
    /// copied. Same result as `writeString`.
    #[napi]
    pub fn write_buffer(&self, i: u32, chunk: &[u8]) -> napi::Result<bool> {
        written(self.at(i)?.responder.write_slice(chunk))
    }

    /// Writes several buffers as one: straight to the socket in one vectored send when it
    /// has room, else copied. The TS stream collects the byte writes of a turn and crosses
    /// over once. Same result as `writeString`.
    #[napi]
    pub fn write_buffers(&self, i: u32, chunks: Vec<&[u8]>) -> napi::Result<bool> {
        written(self.at(i)?.responder.write_slices(&chunks))
    }

    /// Sends one SSE event. Returns like `writeString`; throws for an invalid id or name.
    #[napi]
    pub fn send_event(
        &self,
        i: u32,
        data: Option<String>,
        event: Option<String>,
        id: Option<String>,
        retry: Option<u32>,
    ) -> napi::Result<bool> {
        let c = self.at(i)?;
        let ev = build_event(data, event, id, retry)?;
        written(c.responder.send_event(&ev))
    }

    /// Sends one data-only SSE event per item, as one write: the TS stream collects the
    /// sends of a tick and crosses over once. Returns like `writeString`.
    #[napi]
    pub fn send_data_batch(&self, i: u32, items: Vec<String>) -> napi::Result<bool> {
        written(
            self.at(i)?
                .responder
                .send_data_batch(items.iter().map(String::as_str)),
        )
    }

    /// Same as `sendDataBatch(joined.split('\0'))`, with one string to convert instead of
    /// one per event (most data never holds NUL; the TS stream checks).
    #[napi]
    pub fn send_data_joined(&self, i: u32, joined: String) -> napi::Result<bool> {
        written(self.at(i)?.responder.send_data_batch(joined.split('\0')))
    }

    /// Sends an SSE comment line.
    #[napi]
    pub fn comment(&self, i: u32, text: String) -> napi::Result<bool> {
        written(self.at(i)?.responder.comment(&text))
    }

    /// Ends the response after what is queued.
    #[napi]
    pub fn end(&self, i: u32) -> napi::Result<()> {
        self.at(i)?.responder.end();
        Ok(())
    }

    /// Reports a handler failure: 500 JSON before the head; after it an `error` event and
    /// a clean end (SSE), or a cut connection (chunked).
    #[napi]
    pub fn fail(&self, i: u32, message: String) -> napi::Result<()> {
        self.at(i)?.responder.fail(&message);
        Ok(())
    }

    /// True once the head was sent.
    #[napi]
    pub fn started(&self, i: u32) -> napi::Result<bool> {
        Ok(self.at(i)?.responder.is_started())
    }

    /// True once the client has gone or the stream ended.
    #[napi]
    pub fn closed(&self, i: u32) -> napi::Result<bool> {
        Ok(self.at(i)?.responder.is_closed())
    }

    /// Bytes queued and not yet sent.
    #[napi]
    pub fn buffered(&self, i: u32) -> napi::Result<u32> {
        let stream = self.at(i)?.responder.stream();
        Ok(stream.map_or(0, |s| s.buffered() as u32))
    }

    /// Asks for a notice when the queue has room again: 1 = it has room now, 0 = the
    /// stream is closed, 2 = armed: this call's id arrives in a later dispatch's `ready`
    /// list (or in `closed`, if the stream closes first). One promise-free crossing per
    /// wait, batched with the rest of the engine's traffic.
    #[napi]
    pub fn arm_ready(&self, i: u32) -> napi::Result<u32> {
        let c = self.at(i)?;
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

    /// Subscribes this SSE stream to a channel, replaying history after `lastEventId`.
    /// Returns the number of events replayed (-1 if some were missed: a `missed` event
    /// was sent first).
    #[napi]
    pub fn subscribe(
        &self,
        i: u32,
        channel: &Channel,
        last_event_id: Option<String>,
    ) -> napi::Result<i32> {
        let c = self.at(i)?;
        let stream = match (c.responder.kind(), c.responder.stream()) {
            (ResponseKind::Sse, Some(s)) => s,
            _ => {
                return Err(napi::Error::from_reason(
                    "ERR_INVALID_ARGUMENT: only SSE routes can subscribe to a channel",
                ))
            }
        };
        c.responder.start();
        // Inside the engine's runtime, so that the channel runs its fan-out task there, as
        // it does for subscribers of a channel-served route.
        let s = napi::bindgen_prelude::within_runtime_if_available(|| {
            channel.inner().subscribe(stream, last_event_id.as_deref())
        });
        Ok(if s.missed { -1 } else { s.replayed as i32 })
    }
}

// The requests of the dispatch call in progress, addressed as `(seq, i)` (see
// `dispatch::BATCH`): what a handler answering at once needs, without a native object.

/// Keeps what is left of batch `seq` past its dispatch call, as one `Calls` (same indices).
#[napi]
pub fn keep_batch(seq: u32) -> napi::Result<Calls> {
    dispatch::keep_batch(seq)
}

/// Moves request `i` of batch `seq` into a `Calls` of its own (index 0).
#[napi]
pub fn take_call(seq: u32, i: u32) -> napi::Result<Calls> {
    dispatch::take_batched(seq, i)
}

/// `Calls.method` for request `i` of batch `seq`.
#[napi]
pub fn batch_method(seq: u32, i: u32) -> napi::Result<String> {
    dispatch::with_batched(seq, i, |c| Ok(c.method()))
}

/// `Calls.path` for request `i` of batch `seq`.
#[napi]
pub fn batch_path(seq: u32, i: u32) -> napi::Result<String> {
    dispatch::with_batched(seq, i, |c| Ok(c.path()))
}

/// `Calls.queryString` for request `i` of batch `seq`.
#[napi]
pub fn batch_query_string(seq: u32, i: u32) -> napi::Result<Option<String>> {
    dispatch::with_batched(seq, i, |c| Ok(c.query_string()))
}

/// `Calls.rawHeaders` for request `i` of batch `seq`.
#[napi]
pub fn batch_raw_headers(seq: u32, i: u32) -> napi::Result<Vec<String>> {
    dispatch::with_batched(seq, i, |c| Ok(c.raw_headers()))
}

/// `Calls.rawParams` for request `i` of batch `seq`.
#[napi]
pub fn batch_raw_params(seq: u32, i: u32) -> napi::Result<Vec<String>> {
    dispatch::with_batched(seq, i, |c| Ok(c.raw_params()))
}

/// `Calls.body` for request `i` of batch `seq`.
#[napi]
pub fn batch_body(seq: u32, i: u32) -> napi::Result<Buffer> {
    dispatch::with_batched(seq, i, |c| Ok(c.body()))
}

/// `Calls.bodyStreamed` for request `i` of batch `seq`.
#[napi]
pub fn batch_body_streamed(seq: u32, i: u32) -> napi::Result<bool> {
    dispatch::with_batched(seq, i, |c| Ok(c.body_stream.is_some()))
}

/// `Calls.respond` for request `i` of batch `seq`.
#[napi]
pub fn batch_respond(
    seq: u32,
    i: u32,
    status: u32,
    headers: Option<Vec<String>>,
    body: Option<String>,
) -> napi::Result<()> {
    dispatch::with_batched(seq, i, |c| c.respond(status, headers, body))
}

/// `Calls.respondBuffer` for request `i` of batch `seq`.
#[napi]
pub fn batch_respond_buffer(
    seq: u32,
    i: u32,
    status: u32,
    headers: Option<Vec<String>>,
    body: &[u8],
) -> napi::Result<()> {
    dispatch::with_batched(seq, i, |c| {
        c.respond_bytes(status, headers, Bytes::copy_from_slice(body))
    })
}
