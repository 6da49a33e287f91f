//! Server-Sent Events framing, per the WHATWG HTML specification ("event stream"
//! interpretation), and the [`SseResponse`] a Rust handler returns.
//!
//! ```
//! use rat_engine::Event;
//! let frame = Event::new().event("update").id("7").unwrap().data("line 1\nline 2").encode();
//! assert_eq!(&frame[..], b"event: update\nid: 7\ndata: line 1\ndata: line 2\n\n");
//! ```

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{header, HeaderValue, StatusCode};

use super::body::{Body, HeartbeatSetting};
use super::queue::{queue, QueueLimits, StreamSender};
use crate::error::{Error, Result};
use crate::response::{IntoResponse, Response};

/// One SSE event (or comment). Build it, then [`encode`](Event::encode) it once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    comment: Option<String>,
}

impl Event {
    /// An empty event; add fields with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// An event with only data.
    pub fn data_only(data: impl Into<String>) -> Self {
        Event {
            data: Some(data.into()),
            ..Self::default()
        }
    }

    /// Sets the data. Any line ending (LF, CR, CRLF) splits it into several `data:` lines,
    /// which the client joins back with LF.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the event name.
    ///
    /// Names with CR or LF would break the frame; [`Event::try_event`] reports them, this
    /// method replaces them with spaces.
    pub fn event(mut self, event: impl Into<String>) -> Self {
        let mut e: String = event.into();
        if e.contains(['\r', '\n']) {
            e = e.replace(['\r', '\n'], " ");
        }
        self.event = Some(e);
        self
    }

    /// Sets the event name, rejecting CR and LF.
    ///
    /// # Errors
    /// [`Error::is_invalid_field`] if the name holds CR or LF.
    pub fn try_event(mut self, event: impl Into<String>) -> Result<Self> {
        let e: String = event.into();
        if e.contains(['\r', '\n']) {
            return Err(Error::invalid_field(format!(
                "invalid SSE event name {e:?}: it must not contain CR or LF"
            )));
        }
        self.event = Some(e);
        Ok(self)
    }

    /// Sets the id (the client's `Last-Event-ID` on reconnect).
    ///
    /// # Errors
    /// [`Error::is_invalid_field`] if the id holds CR, LF or NUL (the spec ignores ids with
    /// NUL, and line breaks would split the frame).
    pub fn id(mut self, id: impl Into<String>) -> Result<Self> {
        let id: String = id.into();
        if id.contains(['\r', '\n', '\0']) {
            return Err(Error::invalid_field(format!(
                "invalid SSE id {id:?}: it must not contain CR, LF or NUL"
            )));
        }
        self.id = Some(id);
        Ok(self)
    }

    /// Sets the reconnection time the client should use.
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry.as_millis() as u64);
        self
    }

    /// Sets a comment, sent before the fields (lines starting with `:`; clients ignore them).
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }

    /// The id, if set.
    pub fn get_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The data, if set.
    pub fn get_data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    /// Encodes the event as one frame ending with a blank line.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(
            16 + self.data.as_ref().map_or(0, |d| d.len() + 8)
                + self.event.as_ref().map_or(0, |e| e.len() + 8)
                + self.id.as_ref().map_or(0, |i| i.len() + 5)
                + self.comment.as_ref().map_or(0, |c| c.len() + 4),
        );
        self.encode_into(&mut buf);
        buf.freeze()
    }

    /// Appends the event's frame to `buf` (to send several events as one chunk).
    pub fn encode_into(&self, buf: &mut BytesMut) {
        if let Some(c) = &self.comment {
            for line in split_lines(c) {
                put_field(buf, "", line);
            }
        }
        if let Some(e) = &self.event {
            put_field(buf, "event", e);
        }
        if let Some(id) = &self.id {
            put_field(buf, "id", id);
        }
        if let Some(r) = self.retry {
            put_field(buf, "retry", itoa(r).as_str());
        }
        match &self.data {
            Some(d) => encode_data_lines(buf, d),
            // EventSource dispatches no event without a data line: a named event gets one.
            None if self.event.is_some() => put_field(buf, "data", ""),
            None => {}
        }
        buf.put_u8(b'\n');
    }
}

fn encode_data_lines(buf: &mut BytesMut, data: &str) {
    for line in split_lines(data) {
        put_field(buf, "data", line);
    }
}

/// Appends a data-only event to `buf`: the same bytes as
/// `Event::data_only(data).encode()`, without building the event.
pub(crate) fn encode_data_into(buf: &mut BytesMut, data: &str) {
    encode_data_lines(buf, data);
    buf.put_u8(b'\n');
}

/// The data of an encoded event frame, as an EventSource dispatches it: its `data` lines
/// joined with LF (empty when it has none).
pub(crate) fn data_of(frame: &[u8]) -> String {
    let mut out = Vec::new();
    let mut first = true;
    for line in frame.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"data:") {
            if !first {
                out.push(b'\n');
            }
            first = false;
            out.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    // The frame was encoded from a `String`, and lines split on ASCII bytes.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn itoa(n: u64) -> String {
    n.to_string()
}

fn put_field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_u8(b':');
    // One space after the colon; the parser removes exactly one, so values that start
    // with a space keep it.
    if !value.is_empty() || name.is_empty() {
        buf.put_u8(b' ');
    }
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

/// Splits on LF, CR and CRLF, keeping empty lines (so "a\n" is "a" then "").
pub(crate) fn split_lines(s: &str) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => {
                    let line = &s[start..i];
                    i += 1;
                    start = i;
                    return Some(line);
                }
                b'\r' => {
                    let line = &s[start..i];
                    i += 1;
                    if i < bytes.len() && bytes[i] == b'\n' {
                        i += 1;
                    }
                    start = i;
                    return Some(line);
                }
                _ => i += 1,
            }
        }
        done = true;
        Some(&s[start..])
    })
}

/// Encodes a comment frame (`: text`), e.g. a heartbeat or padding.
pub fn comment_frame(text: &str) -> Bytes {
    Event::new().comment(text).encode()
}

/// The headers every SSE response carries.
pub(crate) fn apply_sse_headers(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// The sending half of an SSE response: typed events into the stream's bounded queue.
#[derive(Debug, Clone)]
pub struct SseSender {
    inner: StreamSender,
}

impl SseSender {
    pub(crate) fn new(inner: StreamSender) -> Self {
        SseSender { inner }
    }

    /// The underlying byte stream sender.
    pub fn stream(&self) -> &StreamSender {
        &self.inner
    }

    fn counted(&self, n: u64) {
        self.inner.count_events(n);
    }

    /// Writes an event whatever the queue holds and returns whether it is still below the
    /// high-water mark.
    ///
    /// # Errors
    /// Closed stream, or the hard buffer limit (see [`StreamSender::write`]).
    pub fn write(&self, event: &Event) -> Result<bool> {
        let r = self.inner.write(event.encode());
        if r.is_ok() {
            self.counted(1);
        }
        r
    }

    /// Sends `event: name` with `data`.
    ///
    /// # Errors
    /// Invalid name, closed stream, or the hard buffer limit.
    pub fn send_event(&self, name: &str, data: &str) -> Result<bool> {
        self.write(&Event::new().try_event(name)?.data(data))
    }

    /// Sends a data-only event.
    ///
    /// # Errors
    /// Closed stream, or the hard buffer limit.
    pub fn send_data(&self, data: &str) -> Result<bool> {
        self.write(&Event::data_only(data))
    }

    /// Sends a comment line.
    ///
    /// # Errors
    /// Closed stream, or the hard buffer limit.
    pub fn comment(&self, text: &str) -> Result<bool> {
        self.inner.write(comment_frame(text))
    }

    /// Waits for room below the high-water mark, then queues the event.
    ///
    /// # Errors
    /// [`Error::is_closed`] once the client has gone.
    pub async fn send(&self, event: &Event) -> Result<()> {
        self.inner.send(event.encode()).await?;
        self.counted(1);
        Ok(())
    }

    /// Queues the event only if there is room.
    ///
    /// # Errors
    /// [`Error::is_full`] or [`Error::is_closed`].
    pub fn try_send(&self, event: &Event) -> Result<()> {
        self.inner.try_send(event.encode())?;
        self.counted(1);
        Ok(())
    }

    /// Resolves when the client disconnects (or the stream ends).
    pub async fn closed(&self) {
        self.inner.closed().await
    }

    /// True once the client has gone or the stream ended.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Ends the stream after what is queued.
    pub fn end(&self) {
        self.inner.end()
    }
}

/// An SSE response: create it, keep a [`SseSender`] (from [`SseResponse::sender`]) for
/// producer tasks, and return the response from the handler.
///
/// ```
/// use rat_engine::{SseResponse, Event};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let sse = SseResponse::new();
/// sse.send_event("connected", "hello").unwrap();
/// let tx = sse.sender();
/// tokio::spawn(async move {
///     let _ = tx.send(&Event::data_only("later")).await;
/// });
/// # }
/// ```
#[derive(Debug)]
pub struct SseResponse {
    sender: SseSender,
    body: Body,
    status: StatusCode,
    headers: http::HeaderMap,
}

impl Default for SseResponse {
    fn default() -> Self {
        Self::new()
    }
}

impl SseResponse {
    /// A new SSE response with default limits and the server's heartbeat.
    pub fn new() -> Self {
        Self::with_limits(QueueLimits::default())
    }

    /// A new SSE response with the given queue limits.
    pub fn with_limits(limits: QueueLimits) -> Self {
        let (tx, rx) = queue(limits);
        SseResponse {
            sender: SseSender::new(tx),
            body: Body::from_queue(rx, HeartbeatSetting::ServerDefault),
            status: StatusCode::OK,
            headers: http::HeaderMap::new(),
        }
    }

    /// Sets this stream's heartbeat interval (`None` turns heartbeats off), overriding the
    /// server's.
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.body.set_heartbeat(HeartbeatSetting::Fixed(interval));
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// A sender for producer tasks (cheap clone).
    pub fn sender(&self) -> SseSender {
        self.sender.clone()
    }

    /// Sends `event: name` + `data` now (queued until the response starts).
    ///
    /// # Errors
    /// See [`SseSender::send_event`].
    pub fn send_event(&self, name: &str, data: &str) -> Result<bool> {
        self.sender.send_event(name, data)
    }

    /// Queues an event now.
    ///
    /// # Errors
    /// See [`SseSender::write`].
    pub fn write(&self, event: &Event) -> Result<bool> {
        self.sender.write(event)
    }
}

impl IntoResponse for SseResponse {
    fn into_response(self) -> Response {
        let mut res = http::Response::new(self.body);
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers;
        apply_sse_headers(res.headers_mut());
        res
    }
}

/// An SSE response whose events come from a [`Stream`], in the shape of axum's
/// `Sse::new(stream)`.
///
/// The items are [`Event`]s or `Result<Event, E>`s (see [`SseItem`]). The stream is polled
/// only as fast as the client reads; the response ends when the stream ends, and the
/// stream is dropped when the client disconnects. An `Err` item cuts the connection
/// (events not yet written go with it), so the client sees the stream fail and an
/// `EventSource` reconnects. Idle streams send the
/// server's heartbeat comment unless [`heartbeat`](Sse::heartbeat) says otherwise.
///
/// ```
/// use std::time::Duration;
/// use rat_engine::{App, Event, Sse};
/// use tokio_stream::StreamExt as _;
///
/// let mut app = App::new();
/// app.get("/ticks", |_req| async {
///     let ticks = tokio_stream::iter(0..3)
///         .map(|i| Event::new().event("tick").data(i.to_string()))
///         .throttle(Duration::from_secs(1));
///     Sse::new(ticks).heartbeat(Some(Duration::from_secs(10)))
/// })
/// .unwrap();
/// ```
#[derive(Debug)]
pub struct Sse<S> {
    stream: S,
    heartbeat: HeartbeatSetting,
    headers: http::HeaderMap,
}

impl<S> Sse<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
{
    /// An SSE response that sends the events of `stream`.
    pub fn new(stream: S) -> Self {
        Sse {
            stream,
            heartbeat: HeartbeatSetting::ServerDefault,
            headers: http::HeaderMap::new(),
        }
    }

    /// Sets this stream's heartbeat interval (`None` turns heartbeats off), overriding the
    /// server's [`heartbeat`](crate::ServerConfig::heartbeat).
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = HeartbeatSetting::Fixed(interval);
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

impl<S> IntoResponse for Sse<S>
where
    S: Stream + Send + 'static,
    S::Item: SseItem,
{
    fn into_response(self) -> Response {
        let frames = self.stream.map(|item| {
            item.into_event()
                .map(|event| event.encode())
                .map_err(Error::handler)
        });
        let mut res = http::Response::new(Body::from_events(frames, self.heartbeat));
        *res.headers_mut() = self.headers;
        apply_sse_headers(res.headers_mut());
        res
    }
}

/// An item of an [`Sse`] stream: an [`Event`], or a `Result` whose error ends the stream.
pub trait SseItem {
    /// The event, or the message of the error that ends the stream.
    fn into_event(self) -> std::result::Result<Event, String>;
}

impl SseItem for Event {
    fn into_event(self) -> std::result::Result<Event, String> {
        Ok(self)
    }
}

impl<E: std::fmt::Display> SseItem for std::result::Result<Event, E> {
    fn into_event(self) -> std::result::Result<Event, String> {
        self.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_of_a_frame_is_what_an_eventsource_dispatches() {
        for (event, data) in [
            (Event::new().data("plain"), "plain"),
            (
                Event::new().event("e").id("7").unwrap().data("a\r\nb\rc\n"),
                "a\nb\nc\n",
            ),
            (
                Event::new().comment("data: not this").data(" lead"),
                " lead",
            ),
            (Event::new().event("ping"), ""),
            (Event::new().data("é€😀"), "é€😀"),
        ] {
            assert_eq!(data_of(&event.encode()), data, "{event:?}");
        }
    }

    fn enc(e: Event) -> String {
        String::from_utf8(e.encode().to_vec()).unwrap()
    }

    #[test]
    fn a_named_event_without_data_gets_an_empty_data_line_so_it_is_dispatched() {
        assert_eq!(
            &Event::new().event("ping").encode()[..],
            b"event: ping\ndata:\n\n"
        );
        assert_eq!(&Event::new().id("7").unwrap().encode()[..], b"id: 7\n\n");
    }

    #[test]
    fn data_only() {
        assert_eq!(enc(Event::data_only("hi")), "data: hi\n\n");
    }

    #[test]
    fn every_line_ending_splits_data() {
        assert_eq!(enc(Event::data_only("a\nb")), "data: a\ndata: b\n\n");
        assert_eq!(enc(Event::data_only("a\rb")), "data: a\ndata: b\n\n");
        assert_eq!(enc(Event::data_only("a\r\nb")), "data: a\ndata: b\n\n");
        assert_eq!(
            enc(Event::data_only("a\n\nb")),
            "data: a\ndata:\ndata: b\n\n"
        );
        assert_eq!(enc(Event::data_only("a\n")), "data: a\ndata:\n\n");
        assert_eq!(enc(Event::data_only("\r\n")), "data:\ndata:\n\n");
    }

    #[test]
    fn empty_data_is_one_empty_line() {
        assert_eq!(enc(Event::data_only("")), "data:\n\n");
    }

    #[test]
    fn leading_space_in_data_survives() {
        assert_eq!(enc(Event::data_only(" x")), "data:  x\n\n");
    }

    #[test]
    fn all_fields_in_order() {
        let e = Event::new()
            .comment("note")
            .event("update")
            .id("42")
            .unwrap()
            .retry(Duration::from_millis(1500))
            .data("{}");
        assert_eq!(
            enc(e),
            ": note\nevent: update\nid: 42\nretry: 1500\ndata: {}\n\n"
        );
    }

    #[test]
    fn multi_line_comment() {
        assert_eq!(enc(Event::new().comment("a\nb")), ": a\n: b\n\n");
        assert_eq!(&comment_frame("")[..], b": \n\n");
    }

    #[test]
    fn id_rejects_line_breaks_and_nul() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let err = Event::new().id(bad).unwrap_err();
            assert!(err.is_invalid_field(), "{bad:?}");
            assert!(err.message().contains("must not contain"));
        }
        assert!(Event::new().id("").is_ok());
    }

    #[test]
    fn event_name_rejected_or_sanitized() {
        assert!(Event::new()
            .try_event("a\nb")
            .unwrap_err()
            .is_invalid_field());
        assert_eq!(
            enc(Event::new().event("a\nb").data("x")),
            "event: a b\ndata: x\n\n"
        );
    }

    #[test]
    fn unicode_data() {
        assert_eq!(
            enc(Event::data_only("héllo ✓\n世界")),
            "data: héllo ✓\ndata: 世界\n\n"
        );
    }

    #[test]
    fn events_written_before_the_server_attaches_are_counted() {
        use crate::metrics::Metrics;
        use std::sync::Arc;
        let sse = SseResponse::new();
        sse.send_event("connected", "1").unwrap();
        let tx = sse.sender();
        let mut body = sse.into_response().into_body();
        let metrics = Arc::new(Metrics::new());
        body.attach(&metrics, None);
        assert_eq!(metrics.snapshot().events_sent, 1);
        tx.write(&Event::data_only("2")).unwrap();
        assert_eq!(metrics.snapshot().events_sent, 2);
    }

    #[tokio::test]
    async fn heartbeat_keeps_the_senders_handed_out_before() {
        use http_body_util::BodyExt;
        let sse = SseResponse::new();
        let tx = sse.sender();
        let sse = sse.heartbeat(Some(Duration::from_secs(3600)));
        tx.write(&Event::data_only("kept")).unwrap();
        assert!(!tx.is_closed());
        tx.end();
        let body = sse.into_response().into_body().collect().await.unwrap();
        assert_eq!(&body.to_bytes()[..], b"data: kept\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_applies_after_events_were_queued() {
        use crate::metrics::Metrics;
        use http_body_util::BodyExt;
        use std::sync::Arc;
        let sse = SseResponse::new();
        sse.send_event("connected", "1").unwrap();
        let sse = sse.heartbeat(Some(Duration::from_secs(7)));
        let mut body = sse.into_response().into_body();
        // The server's default (none here) does not override the stream's own setting.
        body.attach(&Arc::new(Metrics::new()), None);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"event: connected\ndata: 1\n\n");
        let start = tokio::time::Instant::now();
        let beat = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("a heartbeat within 60 s")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(&beat[..], super::super::body::HEARTBEAT);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[test]
    fn sse_response_has_the_headers() {
        let r = SseResponse::new().into_response();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        assert_eq!(r.headers()["cache-control"], "no-cache");
        assert_eq!(r.headers()["x-accel-buffering"], "no");
    }
}
