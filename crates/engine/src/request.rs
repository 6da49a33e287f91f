//! The request view handed to handlers.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::router::Params;

/// A request. Its body has been read in full (within the size limit), unless the route
/// streams it: then [`Request::body_stream`] hands it over as it arrives.
#[derive(Debug)]
pub struct Request {
    head: http::request::Parts,
    params: Params,
    remote_addr: Option<SocketAddr>,
    body: Bytes,
    body_stream: Option<BodyStream>,
    metrics: Arc<Metrics>,
    /// The coding a broadcast's stream answering this request would use (see
    /// [`crate::compress::Compression::offered`]).
    offered: Option<crate::compress::Coding>,
}

/// A request's body as it arrives: from hyper (handed-over HTTP/1.1), or an HTTP/2 stream the
/// engine serves with the `h2` crate, whose flow-control window is released as data is
/// read.
pub(crate) enum RequestBody {
    Hyper(Incoming),
    H2 {
        recv: h2::RecvStream,
        /// The declared `content-length`, if any.
        length: Option<u64>,
    },
    /// None: an HTTP/2 WebSocket's extended CONNECT, whose stream carries the socket.
    Empty,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::H2 { recv, .. } => match std::task::ready!(recv.poll_data(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                Some(Ok(data)) => {
                    // Read, so the client may send as much again.
                    let _ = recv.flow_control().release_capacity(data.len());
                    Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                }
            },
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::H2 { recv, .. } => recv.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::H2 { length, .. } => match length {
                Some(n) => http_body::SizeHint::with_exact(*n),
                None => http_body::SizeHint::default(),
            },
            RequestBody::Empty => http_body::SizeHint::with_exact(0),
        }
    }
}

/// A request body read chunk by chunk as the client sends it, within a byte limit.
pub struct BodyStream {
    incoming: RequestBody,
    limit: u64,
    read: u64,
    /// Time allowed between two reads.
    timeout: std::time::Duration,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("read", &self.read)
            .field("limit", &self.limit)
            .finish()
    }
}

impl BodyStream {
    pub(crate) fn new(incoming: RequestBody, limit: u64, timeout: std::time::Duration) -> Self {
        BodyStream {
            incoming,
            limit,
            read: 0,
            timeout,
        }
    }

    /// The next chunk, or `None` at the end of the body.
    ///
    /// # Errors
    /// [`Error::is_body_too_large`] past the route's limit; [`Error::is_io`] when the
    /// client breaks off, or sends nothing for the server's body timeout.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        use http_body_util::BodyExt;
        loop {
            let next = tokio::time::timeout(self.timeout, self.incoming.frame()).await;
            let Ok(next) = next else {
                return Err(Error::body_stalled(self.timeout));
            };
            match next {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::body_read(BoxedError(e))),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.read += data.len() as u64;
                    if self.read > self.limit {
                        return Err(Error::body_too_large(self.limit));
                    }
                    return Ok(Some(data));
                }
            }
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The size the client declared (`Content-Length`), if any.
    pub fn size_hint(&self) -> Option<u64> {
        http_body::Body::size_hint(&self.incoming).exact()
    }
}

impl Request {
    pub(crate) fn new(
        head: http::request::Parts,
        params: Params,
        remote_addr: Option<SocketAddr>,
        body: Bytes,
        metrics: Arc<Metrics>,
    ) -> Self {
        Request {
            head,
            params,
            remote_addr,
            body,
            body_stream: None,
            metrics,
            offered: None,
        }
    }

    pub(crate) fn set_offered(&mut self, coding: Option<crate::compress::Coding>) {
        self.offered = coding;
    }

    pub(crate) fn offered(&self) -> Option<crate::compress::Coding> {
        self.offered
    }

    /// A request built by hand (tests, front ends' own dispatch).
    pub fn from_parts(head: http::request::Parts, params: Params, body: Bytes) -> Self {
        Self::new(head, params, None, body, Arc::new(Metrics::new()))
    }

    /// The HTTP version.
    pub fn version(&self) -> http::Version {
        self.head.version
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The full request target.
    pub fn uri(&self) -> &Uri {
        &self.head.uri
    }

    /// The path as sent (percent-encoded), without the query.
    pub fn path(&self) -> &str {
        self.head.uri.path()
    }

    /// The raw query string, if any.
    pub fn query_string(&self) -> Option<&str> {
        self.head.uri.query()
    }

    /// Query parameters in order, decoded; repeated keys appear repeatedly.
    pub fn query(&self) -> Vec<(String, String)> {
        self.query_string()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query_string()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The headers (names are lower-case; a name may have several values).
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The first value of header `name`, if it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The route's path parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The path parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The body (empty on routes that stream it).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the streamed body (routes registered with `stream_body`); `None` otherwise or
    /// once taken.
    pub fn body_stream(&mut self) -> Option<BodyStream> {
        self.body_stream.take()
    }

    /// True when the body is streamed rather than read in full.
    pub fn has_body_stream(&self) -> bool {
        self.body_stream.is_some()
    }

    pub(crate) fn set_body_stream(&mut self, stream: Option<BodyStream>) {
        self.body_stream = stream;
    }

    /// The id of the last SSE event the client saw: the `Last-Event-ID` header, or a
    /// `lastEventId` query parameter for clients that cannot set headers.
    pub fn last_event_id(&self) -> Option<Cow<'_, str>> {
        if let Some(h) = self.header("last-event-id") {
            return Some(Cow::Borrowed(h));
        }
        self.query_param("lastEventId").map(Cow::Owned)
    }

    /// The server's metrics (so that responders can count errors and events).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// A boxed error as an [`std::error::Error`] (for [`Error`]'s source).
#[derive(Debug)]
pub(crate) struct BoxedError(pub(crate) Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for BoxedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BoxedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (head, ()) = b.body(()).unwrap().into_parts();
        Request::from_parts(head, Params::default(), Bytes::new())
    }

    #[test]
    fn query_keeps_repeated_keys_and_decodes() {
        let r = req("/p?a=1&b=x%20y&a=2&c", &[]);
        assert_eq!(
            r.query(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("a".into(), "2".into()),
                ("c".into(), "".into())
            ]
        );
        assert_eq!(r.query_param("a").as_deref(), Some("1"));
        assert_eq!(r.path(), "/p");
    }

    #[test]
    fn last_event_id_from_header_or_query() {
        assert_eq!(
            req("/s", &[("Last-Event-ID", "7")])
                .last_event_id()
                .as_deref(),
            Some("7")
        );
        assert_eq!(
            req("/s?lastEventId=9", &[]).last_event_id().as_deref(),
            Some("9")
        );
        assert_eq!(req("/s", &[]).last_event_id(), None);
    }

    #[test]
    fn headers_are_multi_valued() {
        let r = req("/", &[("x-a", "1"), ("X-A", "2")]);
        let all: Vec<_> = r.headers().get_all("x-a").iter().collect();
        assert_eq!(all.len(), 2);
    }
}
