//! Chunked, NDJSON, text and binary streams that really stream: every chunk is pulled by
//! the connection when the client can take it, never collected first.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use http::{header, HeaderValue, StatusCode};

use super::body::{Body, HeartbeatSetting};
use super::queue::{queue, QueueLimits, StreamSender};
use crate::error::Result;
use crate::response::{IntoResponse, Response};

/// A streaming response of any content type whose body is an async stream of chunks, or a
/// bounded queue fed through a [`StreamSender`].
#[derive(Debug)]
pub struct StreamingResponse {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Body,
}

impl StreamingResponse {
    /// Streams the items of `stream` with the given content type.
    pub fn new<S>(content_type: &str, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        Self::from_body(content_type, Body::from_stream(stream))
    }

    /// A response fed by a bounded queue: returns the response and its sender.
    pub fn channel(content_type: &str, limits: QueueLimits) -> (Self, StreamSender) {
        let (tx, rx) = queue(limits);
        (
            Self::from_body(content_type, Body::from_queue(rx, HeartbeatSetting::None)),
            tx,
        )
    }

    fn from_body(content_type: &str, body: Body) -> Self {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        StreamingResponse {
            status: StatusCode::OK,
            headers,
            body,
        }
    }

    /// Sets the status code.
    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: http::HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }
}

impl IntoResponse for StreamingResponse {
    fn into_response(self) -> Response {
        let mut r = http::Response::new(self.body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

enum Step {
    Chunk(Bytes),
    Delay(Duration),
}

/// A chunked response built from chunks and pauses:
/// `ChunkedResponse::new().add_chunk("a").add_delay(ms).add_chunk("b")`.
/// `with_delay(d)` paces every chunk by `d`. Each chunk is written when its turn comes.
#[derive(Default)]
pub struct ChunkedResponse {
    steps: Vec<Step>,
    pace: Option<Duration>,
    content_type: Option<String>,
}

impl std::fmt::Debug for ChunkedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedResponse")
            .field("steps", &self.steps.len())
            .finish()
    }
}

impl ChunkedResponse {
    /// An empty chunked response (`text/plain; charset=utf-8`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a chunk.
    pub fn add_chunk(mut self, chunk: impl Into<Bytes>) -> Self {
        self.steps.push(Step::Chunk(chunk.into()));
        self
    }

    /// Appends a pause before the next chunk.
    pub fn add_delay(mut self, delay: Duration) -> Self {
        self.steps.push(Step::Delay(delay));
        self
    }

    /// Pauses `delay` before every chunk after the first.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.pace = Some(delay);
        self
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }
}

impl IntoResponse for ChunkedResponse {
    fn into_response(self) -> Response {
        let pace = self.pace;
        let content_type = self
            .content_type
            .unwrap_or_else(|| "text/plain; charset=utf-8".to_string());
        let steps = self.steps.into_iter();
        let s = stream::unfold(
            (steps, false),
            move |(mut steps, mut sent_one)| async move {
                loop {
                    match steps.next()? {
                        Step::Delay(d) => tokio::time::sleep(d).await,
                        Step::Chunk(c) => {
                            if let (Some(p), true) = (pace, sent_one) {
                                tokio::time::sleep(p).await;
                            }
                            sent_one = true;
                            return Some((Ok(c), (steps, sent_one)));
                        }
                    }
                }
            },
        );
        StreamingResponse::new(&content_type, s).into_response()
    }
}

/// Streams JSON values as NDJSON (`application/x-ndjson`), one value per line.
pub fn json_stream<S>(values: S) -> StreamingResponse
where
    S: Stream<Item = serde_json::Value> + Send + 'static,
{
    StreamingResponse::new(
        "application/x-ndjson",
        values.map(|v| {
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.push(b'\n');
            Ok(Bytes::from(line))
        }),
    )
}

/// Streams lines of text (`text/plain; charset=utf-8`), each followed by a newline.
pub fn text_stream<S, T>(lines: S) -> StreamingResponse
where
    S: Stream<Item = T> + Send + 'static,
    T: Into<String>,
{
    StreamingResponse::new(
        "text/plain; charset=utf-8",
        lines.map(|l| {
            let mut s: String = l.into();
            s.push('\n');
            Ok(Bytes::from(s))
        }),
    )
}

/// Streams binary chunks (`application/octet-stream`).
pub fn binary_stream<S, T>(chunks: S) -> StreamingResponse
where
    S: Stream<Item = T> + Send + 'static,
    T: Into<Bytes>,
{
    StreamingResponse::new("application/octet-stream", chunks.map(|c| Ok(c.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn chunked_response_paces_chunks() {
        let r = ChunkedResponse::new()
            .add_chunk("a")
            .add_chunk("b")
            .add_delay(Duration::from_millis(300))
            .add_chunk("c")
            .with_delay(Duration::from_millis(100))
            .into_response();
        let mut body = r.into_body();
        let t0 = Instant::now();
        let mut seen = vec![];
        while let Some(f) = body.frame().await {
            seen.push((f.unwrap().into_data().unwrap(), t0.elapsed().as_millis()));
        }
        assert_eq!(
            seen,
            vec![("a".into(), 0), ("b".into(), 100), ("c".into(), 500)],
            "pace (100) before each later chunk, plus the explicit 300 pause"
        );
    }

    #[tokio::test]
    async fn ndjson_text_and_binary_frame_items() {
        let r = json_stream(stream::iter(vec![
            serde_json::json!({"id": 1}),
            serde_json::json!(2),
        ]))
        .into_response();
        assert_eq!(r.headers()["content-type"], "application/x-ndjson");
        assert_eq!(
            r.into_body().collect().await.unwrap().to_bytes(),
            "{\"id\":1}\n2\n"
        );
        let r = text_stream(stream::iter(["x", "y"])).into_response();
        assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "x\ny\n");
        let r = binary_stream(stream::iter([vec![0u8, 1], vec![2]])).into_response();
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        assert_eq!(
            &r.into_body().collect().await.unwrap().to_bytes()[..],
            &[0, 1, 2]
        );
    }
}
