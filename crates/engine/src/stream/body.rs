//! The response body type every handler returns.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::queue::{Heartbeat as Claim, QueueReceiver};
use crate::compress::Encoder;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::wire::{Chunk, Framing};

/// The heartbeat comment an idle SSE stream sends.
pub(crate) const HEARTBEAT: &[u8] = b":\n\n";

/// A response body: empty, a full buffer, a bounded queue fed by a producer, or any async
/// [`Stream`] of byte chunks (pulled only as fast as the client reads).
pub struct Body {
    kind: Kind,
    stream_metrics: Option<Arc<Metrics>>,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Queue(QueueBody),
    Pulled(Box<PulledBody>),
    /// A streaming body compressed chunk by chunk.
    Encoded(Box<Encoded>),
}

/// A body pulled from a stream of chunks: bytes, or encoded SSE events with the heartbeat
/// an idle SSE stream sends.
struct PulledBody {
    stream: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
    /// Each item is one SSE event (counted in `events_sent`).
    events: bool,
    heartbeat: Heartbeat,
    /// An empty queue through which the server ends the body as it ends queue-fed ones
    /// (at shutdown, at `max_stream_age`) and learns when it is gone (see
    /// [`Body::queue_sender`]).
    control: QueueReceiver,
}

struct Encoded {
    inner: Body,
    /// Taken when the inner body ends (its trailer is written then).
    encoder: Option<Encoder>,
}

struct QueueBody {
    rx: QueueReceiver,
    heartbeat: Heartbeat,
}

/// Heartbeat setting of an SSE body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatSetting {
    /// Not an SSE body: never.
    None,
    /// SSE body: use the server's configured interval.
    ServerDefault,
    /// SSE body with its own interval (or `None`: off).
    Fixed(Option<Duration>),
}

/// The heartbeat of a queue body: its setting until the body is attached to a server, then
/// a timer only if heartbeats are on (so an idle stream without them keeps none).
enum Heartbeat {
    Unattached(HeartbeatSetting),
    Off,
    On(Box<Beat>),
}

struct Beat {
    interval: Duration,
    sleep: Pin<Box<Sleep>>,
    last_activity: Instant,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Full(_) => "full",
            Kind::Queue(_) => "queue",
            Kind::Pulled(p) if p.events => "events",
            Kind::Pulled(_) => "stream",
            Kind::Encoded(_) => "encoded",
        };
        f.debug_struct("Body").field("kind", &kind).finish()
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl Body {
    fn from_kind(kind: Kind) -> Self {
        Body {
            kind,
            stream_metrics: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::from_kind(Kind::Empty)
    }

    /// A body of one buffer.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        Self::from_kind(Kind::Full(Some(bytes)))
    }

    /// A body pulled from an async stream of chunks; an `Err` item cuts the connection.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        Self::pulled(Box::pin(stream), false, HeartbeatSetting::None)
    }

    pub(crate) fn from_queue(rx: QueueReceiver, heartbeat: HeartbeatSetting) -> Self {
        Self::from_kind(Kind::Queue(QueueBody {
            rx,
            heartbeat: Heartbeat::Unattached(heartbeat),
        }))
    }

    /// A body of SSE frames pulled from `stream` (one frame per item), with a heartbeat.
    pub(crate) fn from_events<S>(stream: S, heartbeat: HeartbeatSetting) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        Self::pulled(Box::pin(stream), true, heartbeat)
    }

    fn pulled(
        stream: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
        events: bool,
        heartbeat: HeartbeatSetting,
    ) -> Self {
        let (_, control) = super::queue::queue(super::queue::QueueLimits::default());
        Self::from_kind(Kind::Pulled(Box::new(PulledBody {
            stream,
            events,
            heartbeat: Heartbeat::Unattached(heartbeat),
            control,
        })))
    }

    /// Sets the heartbeat of a queue body not yet attached to a server (no effect on
    /// other bodies, or once attached).
    pub(crate) fn set_heartbeat(&mut self, setting: HeartbeatSetting) {
        if let Kind::Queue(QueueBody {
            heartbeat: Heartbeat::Unattached(s),
            ..
        }) = &mut self.kind
        {
            *s = setting;
        }
    }

    /// The producer side of a queue-fed body (for a pulled body, of its control queue:
    /// ending it ends the body after the item in progress).
    pub(crate) fn queue_sender(&self) -> Option<super::queue::StreamSender> {
        match &self.kind {
            Kind::Queue(q) => Some(q.rx.sender()),
            Kind::Pulled(p) => Some(p.control.sender()),
            Kind::Encoded(e) => e.inner.queue_sender(),
            _ => None,
        }
    }

    /// True for bodies that stream (a queue or a stream), as opposed to empty/full ones.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self.kind,
            Kind::Queue(_) | Kind::Pulled(_) | Kind::Encoded(_)
        )
    }

    /// This body compressed by `encoder`: a full one at once, a stream chunk by chunk
    /// (each flushed, so it decodes on arrival). An empty body, or a full one that fails
    /// to compress, comes back as `Err`.
    pub(crate) fn encode(mut self, encoder: Encoder) -> std::result::Result<Body, Body> {
        match &mut self.kind {
            Kind::Empty => Err(self),
            Kind::Full(bytes) => match bytes.as_ref().map(|b| encoder.whole(b)) {
                Some(Ok(compressed)) => Ok(Body::full(compressed)),
                _ => Err(self),
            },
            Kind::Queue(_) | Kind::Pulled(_) | Kind::Encoded(_) => {
                Ok(Self::from_kind(Kind::Encoded(Box::new(Encoded {
                    inner: self,
                    encoder: Some(encoder),
                }))))
            }
        }
    }

    /// Called by the server before handing the body to hyper: counts it as a stream,
    /// connects its byte counter and sets the SSE heartbeat from the server's default.
    pub(crate) fn attach(&mut self, metrics: &Arc<Metrics>, default_heartbeat: Option<Duration>) {
        match &mut self.kind {
            Kind::Queue(q) => {
                q.rx.attach_metrics(metrics);
                q.heartbeat.start(default_heartbeat);
            }
            Kind::Pulled(p) => p.heartbeat.start(default_heartbeat),
            _ => return,
        }
        Metrics::add(&metrics.active_streams, 1);
        Metrics::add(&metrics.total_streams, 1);
        self.stream_metrics = Some(metrics.clone());
    }

    fn count(&self, n: usize) {
        let m = match &self.kind {
            Kind::Queue(q) => q.rx.metrics(),
            _ => self.stream_metrics.as_ref(),
        };
        if let Some(m) = m {
            Metrics::add(&m.bytes_sent, n as u64);
        }
    }
}

impl Body {
    /// The next bytes for the wire ([`Chunk::Framed`]: the rest of a write a producer made
    /// through the sink; see [`attach_sink`](Self::attach_sink)). Polling again means the
    /// bytes returned before were written.
    pub(crate) fn poll_wire(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Chunk>>> {
        let polled = match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Chunk::Data(b)))),
            Kind::Queue(q) => q.poll_next(cx),
            Kind::Pulled(p) => p.poll_next(cx).map(|next| {
                next.map(|r| {
                    r.map(|(bytes, event)| {
                        if let (true, Some(m)) = (event, &self.stream_metrics) {
                            Metrics::add(&m.events_sent, 1);
                        }
                        Chunk::Data(bytes)
                    })
                })
            }),
            // Counted by the inner body, before compression.
            Kind::Encoded(e) => return e.poll_next(cx),
        };
        if let Poll::Ready(Some(Ok(Chunk::Data(bytes)))) = &polled {
            // Bytes written through the sink were counted by their producer.
            self.count(bytes.len());
        }
        polled
    }

    /// The connection will report when its socket refuses bytes (see
    /// [`QueueReceiver::report_stalls`]).
    pub(crate) fn report_stalls(&self) {
        if let Kind::Queue(q) = &self.kind {
            q.rx.report_stalls();
        }
    }

    /// The connection's write would block (see [`QueueReceiver::set_stalled`]).
    pub(crate) fn set_stalled(&self) {
        if let Kind::Queue(q) = &self.kind {
            q.rx.set_stalled();
        }
    }

    /// Lets the producers of a stream body write straight to `io` whenever the connection
    /// has nothing of theirs left to write (see [`QueueReceiver::attach_sink`]).
    /// Heartbeats claim the wire before they are written (see
    /// [`QueueReceiver::claim_heartbeat`]).
    pub(crate) fn attach_sink(&self, io: &Arc<crate::wire::Conn>, framing: Framing) {
        if let Kind::Queue(q) = &self.kind {
            q.rx.attach_sink(io, framing);
        }
    }

    /// For a connection that holds a frame of this body it cannot write yet: true once the
    /// body's producer failed it (see [`QueueReceiver::poll_failed`]); otherwise the task is
    /// woken when that happens.
    pub(crate) fn poll_failed(&self, cx: &mut Context<'_>) -> bool {
        match &self.kind {
            Kind::Queue(q) => q.rx.poll_failed(cx),
            Kind::Pulled(p) => p.control.poll_failed(cx),
            Kind::Encoded(e) => e.inner.poll_failed(cx),
            Kind::Empty | Kind::Full(_) => false,
        }
    }

    /// Lets the producers of a stream body send straight to its HTTP/2 stream whenever the
    /// stream's task has nothing of theirs left to send (see [`QueueReceiver::attach_h2`]).
    pub(crate) fn attach_h2(&self, out: &Arc<crate::wire::h2::H2Out>) {
        if let Kind::Queue(q) = &self.kind {
            q.rx.attach_h2(out);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(m) = &self.stream_metrics {
            Metrics::sub(&m.active_streams, 1);
        }
    }
}

impl Encoded {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Chunk>>> {
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(self.inner.poll_wire(cx)) {
                Some(Ok(chunk)) => {
                    let out = encoder.chunk(&chunk.into_bytes())?;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Chunk::Data(out))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let tail = self.encoder.take().map(Encoder::finish).transpose()?;
                    match tail {
                        Some(t) if !t.is_empty() => return Poll::Ready(Some(Ok(Chunk::Data(t)))),
                        _ => return Poll::Ready(None),
                    }
                }
            }
        }
    }
}

impl QueueBody {
    /// The next bytes (see [`QueueReceiver::poll_chunk`]).
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Chunk>>> {
        match self.rx.poll_chunk(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Heartbeat::On(hb) = &mut self.heartbeat {
                    hb.last_activity = Instant::now();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(reason))) => Poll::Ready(Some(Err(Error::handler(reason)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let Heartbeat::On(hb) = &mut self.heartbeat else {
                    return Poll::Pending;
                };
                loop {
                    if hb.poll_due(cx).is_pending() {
                        return Poll::Pending;
                    }
                    match self.rx.claim_heartbeat() {
                        Claim::Send(beat) => return Poll::Ready(Some(Ok(Chunk::Data(beat)))),
                        // Bytes went out meanwhile: the timer starts over.
                        Claim::Active => continue,
                        // The queue's push woke this task already.
                        Claim::Busy => return Poll::Pending,
                    }
                }
            }
        }
    }
}

impl PulledBody {
    /// The next chunk and whether it is an SSE event (not bytes, not a heartbeat); a
    /// heartbeat when an SSE stream has been idle for the interval.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<(Bytes, bool)>>> {
        match self.control.poll_chunk(cx) {
            Poll::Pending => {}
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(reason))) => {
                return Poll::Ready(Some(Err(Error::handler(reason))))
            }
            Poll::Ready(Some(Ok(chunk))) => {
                return Poll::Ready(Some(Ok((chunk.into_bytes(), false))))
            }
        }
        match self.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                if let Heartbeat::On(hb) = &mut self.heartbeat {
                    hb.last_activity = Instant::now();
                }
                Poll::Ready(Some(item.map(|b| (b, self.events))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match &mut self.heartbeat {
                Heartbeat::On(hb) => hb
                    .poll_due(cx)
                    .map(|()| Some(Ok((Bytes::from_static(HEARTBEAT), false)))),
                _ => Poll::Pending,
            },
        }
    }
}

impl Heartbeat {
    /// Turns the setting into a timer (or none) when the body is attached to a server
    /// whose heartbeat is `default`.
    fn start(&mut self, default: Option<Duration>) {
        if let Heartbeat::Unattached(setting) = *self {
            let interval = match setting {
                HeartbeatSetting::None => None,
                HeartbeatSetting::ServerDefault => default,
                HeartbeatSetting::Fixed(d) => d,
            };
            *self = match interval.filter(|d| !d.is_zero()) {
                Some(d) => Heartbeat::On(Box::new(Beat {
                    interval: d,
                    sleep: Box::pin(tokio::time::sleep(d)),
                    last_activity: Instant::now(),
                })),
                None => Heartbeat::Off,
            };
        }
    }
}

impl Beat {
    /// Ready when a heartbeat is due; the timer then counts again from now. The timer is
    /// polled until it is pending again: an elapsed timer that was overtaken by data is
    /// pushed forward instead of firing.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_activity + self.interval;
            let now = Instant::now();
            if due > now {
                self.sleep.as_mut().reset(due);
                continue;
            }
            self.last_activity = now;
            self.sleep.as_mut().reset(now + self.interval);
            return Poll::Ready(());
        }
    }
}

use std::future::Future as _;

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        // No sink is attached on this path (hyper's), so nothing comes framed.
        self.poll_wire(cx)
            .map(|chunk| chunk.map(|r| r.map(|c| Frame::data(c.into_bytes()))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            _ => SizeHint::default(),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::full(b)
    }
}
impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::full(s)
    }
}
impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(Bytes::from_static(s.as_bytes()))
    }
}
impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::full(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::queue::{queue, QueueLimits};
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn idle_sse_body_sends_heartbeats_and_data_postpones_them() {
        let (tx, rx) = queue(QueueLimits::default());
        let mut body = Body::from_queue(rx, HeartbeatSetting::Fixed(Some(Duration::from_secs(15))));
        body.attach(&Arc::new(Metrics::new()), None);
        let start = Instant::now();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], HEARTBEAT);
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        tokio::time::sleep(Duration::from_secs(10)).await;
        tx.write(Bytes::from_static(b"data: x\n\n")).unwrap();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], b"data: x\n\n");
        let t = Instant::now();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], HEARTBEAT);
        assert_eq!(
            t.elapsed(),
            Duration::from_secs(15),
            "heartbeat counts from the last data"
        );
    }

    /// A body lives in its connection's task for as long as the response streams.
    #[test]
    fn a_queue_body_is_small_and_allocates_nothing_more() {
        let size = std::mem::size_of::<Body>();
        println!("Body: {size} bytes");
        assert!(size <= 48, "a body is {size} bytes");
        assert!(std::mem::size_of::<QueueBody>() <= 32);
    }

    #[tokio::test]
    async fn metrics_count_streams_and_bytes() {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = queue(QueueLimits::default());
        let mut body = Body::from_queue(rx, HeartbeatSetting::None);
        body.attach(&metrics, Some(Duration::from_secs(1)));
        assert_eq!(metrics.snapshot().active_streams, 1);
        tx.write(Bytes::from_static(b"abc")).unwrap();
        tx.end();
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abc");
        let snap = metrics.snapshot();
        assert_eq!(snap.bytes_sent, 3);
        assert_eq!(snap.active_streams, 0);
        assert_eq!(snap.total_streams, 1);
    }
}
