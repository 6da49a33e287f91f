//! A response decided later, by a front end: the handler runs elsewhere (in JS) and answers
//! through a [`Responder`] while the connection task waits on a [`PendingResponse`].
//!
//! For stream routes the head goes out when the stream *starts*: at the first write, or
//! when the front end says the handler returned. A failure before that is a 500 with a JSON
//! body; after it, an SSE stream gets an `event: error` frame and a clean end, and a
//! chunked stream is cut so that the client sees it incomplete.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::oneshot;

use super::body::{Body, HeartbeatSetting};
use super::queue::{queue, QueueLimits, ReadyState, StreamSender};
use super::sse::{apply_sse_headers, comment_frame, encode_data_into, Event};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::response::{self, Response};

/// What kind of response a route produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseKind {
    /// One complete response.
    Plain,
    /// Server-Sent Events.
    Sse,
    /// A chunked stream with this default content type.
    Chunked(String),
}

enum Head {
    /// Start streaming with these status and headers; the body is the pending queue.
    Stream(StatusCode, HeaderMap),
    /// A complete response.
    Full(Response),
}

struct State {
    tx: Option<oneshot::Sender<Head>>,
    status: StatusCode,
    headers: HeaderMap,
}

/// The answering side. Cheap to share (`Arc` inside); all methods are synchronous.
#[derive(Clone)]
pub struct Responder {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    kind: ResponseKind,
    stream: Option<StreamSender>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("kind", &self.inner.kind)
            .field("started", &self.is_started())
            .finish()
    }
}

/// A complete response made by [`Responder::prepare`], not yet handed to its connection.
#[must_use = "a prepared response does nothing until it is sent"]
pub struct Prepared {
    tx: oneshot::Sender<Head>,
    res: Response,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("status", &self.res.status())
            .finish()
    }
}

impl Prepared {
    /// Hands the response to its connection (which the client may have left meanwhile).
    pub fn send(self) {
        let _ = self.tx.send(Head::Full(self.res));
    }
}

/// The waiting side: a future of the response, held by the connection task. Dropping it
/// (the client left before the response started) closes the stream, which producers see,
/// and runs the [`on_abandon`](Self::on_abandon) callback.
pub struct PendingResponse {
    rx: oneshot::Receiver<Head>,
    body: Option<Body>,
    on_abandon: Option<Box<dyn FnOnce() + Send>>,
}

impl PendingResponse {
    /// Runs `f` if this is dropped before it yields the response: the client left (or the
    /// server shut down) while the handler had not answered. A front end aborts the
    /// handler's work with it (a stream route learns the same from its queue's
    /// [`on_close`](StreamSender::on_close)).
    pub fn on_abandon(&mut self, f: impl FnOnce() + Send + 'static) {
        self.on_abandon = Some(Box::new(f));
    }
}

impl Drop for PendingResponse {
    fn drop(&mut self) {
        if let Some(f) = self.on_abandon.take() {
            f();
        }
    }
}

impl Responder {
    /// Creates a responder for a route of `kind`.
    pub fn new(
        kind: ResponseKind,
        limits: QueueLimits,
        metrics: Arc<Metrics>,
    ) -> (Self, PendingResponse) {
        let (tx, rx) = oneshot::channel();
        let (stream, body) = match &kind {
            ResponseKind::Plain => (None, None),
            ResponseKind::Sse => {
                let (s, r) = queue(limits);
                (
                    Some(s),
                    Some(Body::from_queue(r, HeartbeatSetting::ServerDefault)),
                )
            }
            ResponseKind::Chunked(_) => {
                let (s, r) = queue(limits);
                (Some(s), Some(Body::from_queue(r, HeartbeatSetting::None)))
            }
        };
        let inner = Inner {
            state: Mutex::new(State {
                tx: Some(tx),
                status: StatusCode::OK,
                headers: HeaderMap::new(),
            }),
            kind,
            stream,
            metrics,
        };
        (
            Responder {
                inner: Arc::new(inner),
            },
            PendingResponse {
                rx,
                body,
                on_abandon: None,
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The route kind.
    pub fn kind(&self) -> &ResponseKind {
        &self.inner.kind
    }

    /// The stream's sender (stream routes only).
    pub fn stream(&self) -> Option<&StreamSender> {
        self.inner.stream.as_ref()
    }

    /// True once the head was sent (or a complete response given).
    pub fn is_started(&self) -> bool {
        self.lock().tx.is_none()
    }

    /// True when the client has gone, or the stream was ended (a plain route: once it was
    /// answered, or its client left first).
    pub fn is_closed(&self) -> bool {
        match &self.inner.stream {
            Some(s) => s.is_closed(),
            None => match &self.lock().tx {
                Some(tx) => tx.is_closed(),
                None => true,
            },
        }
    }

    /// Sets the status of a response that has not started.
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for a code outside 100..=999 or once started.
    pub fn set_status(&self, status: u16) -> Result<()> {
        let code = StatusCode::from_u16(status).map_err(|_| {
            Error::invalid_argument(format!("invalid status code {status}: use 100..=999"))
        })?;
        let mut st = self.lock();
        if st.tx.is_none() {
            return Err(Error::invalid_argument(
                "cannot set the status: the response has already started",
            ));
        }
        st.status = code;
        Ok(())
    }

    /// Appends a header to a response that has not started.
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for an invalid name or value, or once started.
    pub fn append_header(&self, name: &str, value: &str) -> Result<()> {
        let (n, v) = parse_header(name, value)?;
        let mut st = self.lock();
        if st.tx.is_none() {
            return Err(Error::invalid_argument(format!(
                "cannot set header {name:?}: the response has already started"
            )));
        }
        st.headers.append(n, v);
        Ok(())
    }

    /// Sends a complete response: status, headers (`name, value` pairs appended to any set
    /// before) and body. The content type defaults to `text/plain; charset=utf-8` when the
    /// body is non-empty and none was given.
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] if the response already started or a header is invalid.
    pub fn respond(&self, status: u16, headers: &[(&str, &str)], body: Bytes) -> Result<()> {
        self.prepare(status, headers, body)?.send();
        Ok(())
    }

    /// Like [`respond`](Self::respond), but the response is handed to the connection only
    /// when [`Prepared::send`] is called. A front end that answers many requests in one go
    /// collects them and sends them together, from the runtime, so the connection tasks are
    /// woken without one cross-thread wake-up per response. The response counts as started
    /// from now on.
    ///
    /// # Errors
    /// As [`respond`](Self::respond).
    pub fn prepare(&self, status: u16, headers: &[(&str, &str)], body: Bytes) -> Result<Prepared> {
        let code = StatusCode::from_u16(status).map_err(|_| {
            Error::invalid_argument(format!("invalid status code {status}: use 100..=999"))
        })?;
        let mut parsed = Vec::with_capacity(headers.len());
        for (k, v) in headers {
            parsed.push(parse_header(k, v)?);
        }
        let mut st = self.lock();
        let Some(tx) = st.tx.take() else {
            return Err(Error::invalid_argument(
                "cannot respond: the response has already started",
            ));
        };
        let mut map = std::mem::take(&mut st.headers);
        drop(st);
        for (k, v) in parsed {
            map.append(k, v);
        }
        if !body.is_empty() && !map.contains_key(http::header::CONTENT_TYPE) {
            map.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        let mut res = Response::new(Body::full(body));
        *res.status_mut() = code;
        *res.headers_mut() = map;
        Ok(Prepared { tx, res })
    }

    /// Like [`prepare`](Self::prepare) for a response made elsewhere (a WebSocket's 101
    /// from [`ws::accept`](crate::ws::accept)); headers set before are added to it.
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] if the response already started.
    pub fn prepare_response(&self, mut res: Response) -> Result<Prepared> {
        let mut st = self.lock();
        let Some(tx) = st.tx.take() else {
            return Err(Error::invalid_argument(
                "cannot respond: the response has already started",
            ));
        };
        let set = std::mem::take(&mut st.headers);
        drop(st);
        let mut name = None;
        for (k, v) in set {
            if let Some(k) = k {
                name = Some(k);
            }
            if let Some(k) = &name {
                res.headers_mut().append(k.clone(), v);
            }
        }
        Ok(Prepared { tx, res })
    }

    /// Starts a stream: sends the head with the status and headers set so far. Does
    /// nothing if already started. On a plain route it sends an empty 204... unless a
    /// status was set, which it keeps.
    pub fn start(&self) {
        let mut st = self.lock();
        let Some(tx) = st.tx.take() else { return };
        let mut headers = std::mem::take(&mut st.headers);
        let status = st.status;
        drop(st);
        match &self.inner.kind {
            ResponseKind::Plain => {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = if status == StatusCode::OK {
                    StatusCode::NO_CONTENT
                } else {
                    status
                };
                *res.headers_mut() = headers;
                let _ = tx.send(Head::Full(res));
            }
            ResponseKind::Sse => {
                apply_sse_headers(&mut headers);
                let _ = tx.send(Head::Stream(status, headers));
            }
            ResponseKind::Chunked(ct) => {
                if !headers.contains_key(http::header::CONTENT_TYPE) {
                    if let Ok(v) = HeaderValue::from_str(ct) {
                        headers.insert(http::header::CONTENT_TYPE, v);
                    }
                }
                headers
                    .entry(http::header::CACHE_CONTROL)
                    .or_insert(HeaderValue::from_static("no-cache"));
                headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
                let _ = tx.send(Head::Stream(status, headers));
            }
        }
    }

    fn stream_or_err(&self) -> Result<&StreamSender> {
        self.inner.stream.as_ref().ok_or_else(|| {
            Error::invalid_argument("this route sends one complete response; stream methods need an sse or chunked route")
        })
    }

    /// Starts the stream if needed and writes raw bytes; returns whether the queue is still
    /// below its high-water mark.
    ///
    /// # Errors
    /// Closed stream, hard limit passed, or not a stream route.
    pub fn write(&self, chunk: Bytes) -> Result<bool> {
        let s = self.stream_or_err()?;
        self.start();
        s.write(chunk)
    }

    /// [`write`](Self::write) for borrowed bytes, copied only if they cannot go straight
    /// to the socket.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_slice(&self, chunk: &[u8]) -> Result<bool> {
        let s = self.stream_or_err()?;
        self.start();
        s.write_slice(chunk)
    }

    /// Several buffers written as one, straight to the socket in one vectored `send` when
    /// it has room, else copied (see [`StreamSender::write_slices`]).
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_slices(&self, chunks: &[&[u8]]) -> Result<bool> {
        let s = self.stream_or_err()?;
        self.start();
        s.write_slices(chunks)
    }

    /// Starts the stream if needed and writes one SSE event.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn send_event(&self, event: &Event) -> Result<bool> {
        let r = self.write(event.encode());
        if r.is_ok() {
            Metrics::add(&self.inner.metrics.events_sent, 1);
        }
        r
    }

    /// Starts the stream if needed and writes one data-only SSE event per item, all as one
    /// chunk (one lock and at most one wake-up for the lot): a front end that batches its
    /// sends pays the crossing once.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn send_data_batch<'a, I>(&self, items: I) -> Result<bool>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut buf = BytesMut::new();
        let mut n = 0u64;
        for data in items {
            encode_data_into(&mut buf, data);
            n += 1;
        }
        if n == 0 {
            return Ok(!self.is_closed());
        }
        let r = self.write(buf.freeze());
        if r.is_ok() {
            Metrics::add(&self.inner.metrics.events_sent, n);
        }
        r
    }

    /// Writes an SSE comment.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn comment(&self, text: &str) -> Result<bool> {
        self.write(comment_frame(text))
    }

    /// Ends the response: a stream ends after what is queued; a plain route that never
    /// responded gets an empty response.
    pub fn end(&self) {
        self.start();
        if let Some(s) = &self.inner.stream {
            s.end();
        }
    }

    /// The handler failed with `message`. Before the head: a 500 with
    /// `{"error": message, "status": 500}`. After it: an `event: error` frame and a clean
    /// end (SSE), or a cut connection (chunked).
    pub fn fail(&self, message: &str) {
        self.inner.metrics.record_handler_error();
        let not_started = {
            let mut st = self.lock();
            st.tx.take()
        };
        if let Some(tx) = not_started {
            let _ = tx.send(Head::Full(response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                message,
            )));
            if let Some(s) = &self.inner.stream {
                s.end();
            }
            return;
        }
        let Some(s) = &self.inner.stream else { return };
        if self.inner.kind == ResponseKind::Sse {
            let data = serde_json::json!({ "error": message }).to_string();
            let _ = s.write(Event::new().event("error").data(data).encode());
            s.end();
        } else {
            s.abort(message.to_string());
        }
    }

    /// Asks to be told when the queue has room again, without a future: see
    /// [`StreamSender::on_ready`].
    pub fn on_ready(&self, f: impl FnOnce() + Send + 'static) -> ReadyState {
        match &self.inner.stream {
            Some(s) => s.on_ready(f),
            None => ReadyState::Closed,
        }
    }

    /// Resolves `true` when the stream has room again, `false` once it is closed.
    pub async fn ready(&self) -> bool {
        match &self.inner.stream {
            Some(s) => s.ready().await,
            None => false,
        }
    }
}

fn parse_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue)> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::invalid_argument(format!("invalid header name {name:?}")))?;
    let v = HeaderValue::from_str(value).map_err(|_| {
        Error::invalid_argument(format!(
            "invalid value for header {name:?}: it must be visible ASCII without CR/LF"
        ))
    })?;
    Ok((n, v))
}

impl Future for PendingResponse {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let polled = Pin::new(&mut self.rx).poll(cx);
        if polled.is_ready() {
            self.on_abandon = None;
        }
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Head::Full(r))) => Poll::Ready(r),
            Poll::Ready(Ok(Head::Stream(status, headers))) => {
                let body = self.body.take().unwrap_or_default();
                let mut r = Response::new(body);
                *r.status_mut() = status;
                *r.headers_mut() = headers;
                Poll::Ready(r)
            }
            Poll::Ready(Err(_)) => Poll::Ready(response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the handler finished without sending a response",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn new(kind: ResponseKind) -> (Responder, PendingResponse) {
        Responder::new(kind, QueueLimits::default(), Arc::new(Metrics::new()))
    }

    async fn text(r: Response) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn plain_respond_sets_default_content_type() {
        let (r, p) = new(ResponseKind::Plain);
        r.respond(
            201,
            &[("set-cookie", "a=1"), ("set-cookie", "b=2")],
            Bytes::from("ok"),
        )
        .unwrap();
        let res = p.await;
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers().get_all("set-cookie").iter().count(), 2);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(r.respond(200, &[], Bytes::new()).is_err());
    }

    #[tokio::test]
    async fn a_prepared_response_goes_out_when_sent() {
        let (r, mut p) = new(ResponseKind::Plain);
        let prepared = r.prepare(200, &[], Bytes::from("later")).unwrap();
        assert!(r.is_started());
        assert!(
            r.prepare(200, &[], Bytes::new()).is_err(),
            "only one answer"
        );
        assert!(futures_util::poll!(&mut p).is_pending());
        prepared.send();
        assert_eq!(text(p.await).await, "later");
    }

    #[tokio::test]
    async fn a_data_batch_is_the_same_bytes_as_one_event_each_and_counts_them() {
        let metrics = Arc::new(Metrics::new());
        let (r, p) = Responder::new(ResponseKind::Sse, QueueLimits::default(), metrics.clone());
        let items = ["one", "two\nlines", "", "x\r\ny"];
        assert!(r.send_data_batch(items).unwrap());
        assert!(
            r.send_data_batch([]).unwrap(),
            "an empty batch writes nothing"
        );
        r.end();
        let expected: Vec<u8> = items
            .iter()
            .flat_map(|d| Event::data_only(*d).encode().to_vec())
            .collect();
        assert_eq!(text(p.await).await.into_bytes(), expected);
        assert_eq!(metrics.snapshot().events_sent, 4);
        assert!(
            r.send_data_batch(["late"]).unwrap_err().is_closed(),
            "a closed stream reports it"
        );
    }

    #[tokio::test]
    async fn fail_before_start_is_a_json_500() {
        let (r, p) = new(ResponseKind::Sse);
        r.fail("boom");
        let res = p.await;
        assert_eq!(res.status(), 500);
        assert_eq!(text(res).await, r#"{"error":"boom","status":500}"#);
    }

    #[tokio::test]
    async fn fail_after_sse_start_sends_an_error_event_and_ends() {
        let (r, p) = new(ResponseKind::Sse);
        r.send_event(&Event::data_only("one")).unwrap();
        r.fail("late");
        let res = p.await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(
            text(res).await,
            "data: one\n\nevent: error\ndata: {\"error\":\"late\"}\n\n"
        );
    }

    #[tokio::test]
    async fn fail_after_chunked_start_cuts_the_body() {
        let (r, p) = new(ResponseKind::Chunked("text/plain".into()));
        r.write(Bytes::from("part")).unwrap();
        r.fail("broken");
        let res = p.await;
        assert!(res.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn headers_before_start_and_not_after() {
        let (r, p) = new(ResponseKind::Chunked("application/x-ndjson".into()));
        r.set_status(202).unwrap();
        r.append_header("x-trace", "1").unwrap();
        r.start();
        assert!(r.append_header("x-late", "1").is_err());
        r.end();
        let res = p.await;
        assert_eq!(res.status(), 202);
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        assert_eq!(res.headers()["x-trace"], "1");
        assert!(r
            .append_header("bad name", "1")
            .unwrap_err()
            .is_invalid_argument());
    }

    #[tokio::test]
    async fn a_pending_response_dropped_unanswered_runs_on_abandon_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = |runs: &Arc<AtomicUsize>| {
            let runs = runs.clone();
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
            }
        };
        let (r, mut p) = new(ResponseKind::Plain);
        p.on_abandon(counter(&runs));
        assert!(!r.is_closed());
        drop(p);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(r.is_closed(), "its client has gone");
        // Answered first: the callback does not run.
        let (r, mut p) = new(ResponseKind::Plain);
        p.on_abandon(counter(&runs));
        r.respond(200, &[], Bytes::from("ok")).unwrap();
        assert_eq!(text(p.await).await, "ok");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dropped_responder_gives_500_and_dropped_pending_closes_stream() {
        let (r, p) = new(ResponseKind::Plain);
        drop(r);
        assert_eq!(p.await.status(), 500);
        let (r, p) = new(ResponseKind::Sse);
        drop(p);
        assert!(r.is_closed());
        assert!(r.write(Bytes::from("x")).unwrap_err().is_closed());
    }
}
