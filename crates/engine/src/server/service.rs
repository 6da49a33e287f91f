//! Request handling shared by hyper and the direct path: routing, body limits, engine-made
//! error responses, the handler call.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::Shared;
use crate::app::{Handler, Route};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::request::{BodyStream, Request};
use crate::response::{self, Response};
use crate::router::{Params, RouteMatch};
use crate::stream::Body;

#[derive(Clone)]
pub(crate) struct EngineService {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl EngineService {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr) -> Self {
        EngineService { shared, peer }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for EngineService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let peer = self.peer;
        Box::pin(async move { Ok(handle(shared, peer, req).await) })
    }
}

fn rejected(metrics: &Metrics, status: StatusCode, message: &str) -> Response {
    Metrics::add(&metrics.rejected_requests, 1);
    response::error(status, message)
}

fn allow_value(allow: &[Method]) -> HeaderValue {
    let joined = allow
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&joined).unwrap_or(HeaderValue::from_static(""))
}

/// Counts a request and finds its route; the 404/405/OPTIONS answers are made here.
#[allow(clippy::result_large_err)] // the error is the answer, returned at once
pub(crate) fn route<'a>(
    shared: &'a Shared,
    method: &Method,
    path: &str,
) -> Result<(&'a Route, Params, bool), Response> {
    let metrics = &shared.metrics;
    Metrics::add(&metrics.total_requests, 1);
    match shared.app.router.at(method, path) {
        RouteMatch::Found(m) => Ok((m.value, m.params, m.head_as_get)),
        RouteMatch::NotFound => {
            let msg = format!("no route for {method} {path}");
            Err(rejected(metrics, StatusCode::NOT_FOUND, &msg))
        }
        RouteMatch::MethodNotAllowed(allow) => {
            let mut res = if method == Method::OPTIONS {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            } else {
                let msg = format!(
                    "method {} is not allowed for {}; allowed: {}",
                    method,
                    path,
                    allow_value(&allow).to_str().unwrap_or("")
                );
                rejected(metrics, StatusCode::METHOD_NOT_ALLOWED, &msg)
            };
            res.headers_mut().insert(header::ALLOW, allow_value(&allow));
            Err(res)
        }
    }
}

/// Calls the route's handler (now) and readies its response: no body for HEAD, and a
/// streaming body counted, given its heartbeat and tracked for shutdown.
///
/// Not an `async fn`: that would keep the request's parts in the future next to the
/// request made of them (~1 KiB, a large allocation per request where it is boxed); the
/// future returned holds only the handler's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn respond(
    shared: &Shared,
    peer: Option<SocketAddr>,
    handler: Arc<dyn Handler>,
    params: Params,
    head_as_get: bool,
    head: http::request::Parts,
    body: Bytes,
    stream: Option<BodyStream>,
) -> impl Future<Output = Response> + Send + '_ {
    let is_head = head_as_get || head.method == Method::HEAD;
    let mut request = Request::new(head, params, peer, body, shared.metrics.clone());
    request.set_body_stream(stream);
    let call = handler.call(request);
    async move {
        let mut res = call.await;
        if is_head {
            // Same headers as GET, no body; dropping a stream body tells its producer.
            *res.body_mut() = Body::empty();
            return res;
        }
        if res.body().is_streaming() {
            let heartbeat = shared.config.heartbeat;
            res.body_mut().attach(&shared.metrics, heartbeat);
            if let Some(stream) = res.body().queue_sender() {
                let sse = res
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
                shared.streams.track(&stream, sse);
            }
        }
        res
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one `Host`, an HTTP/1.0 one at most
/// one. (HTTP/2 names the authority in `:authority`.)
pub(crate) fn host_ok(version: Version, hosts: usize) -> bool {
    match version {
        Version::HTTP_11 => hosts == 1,
        Version::HTTP_10 | Version::HTTP_09 => hosts <= 1,
        _ => true,
    }
}

async fn handle(shared: Arc<Shared>, peer: SocketAddr, req: hyper::Request<Incoming>) -> Response {
    let metrics = &shared.metrics;
    if !host_ok(
        req.version(),
        req.headers().get_all(header::HOST).iter().count(),
    ) {
        Metrics::add(&metrics.total_requests, 1);
        let msg = if req.version() == Version::HTTP_11 {
            "an HTTP/1.1 request needs exactly one Host header"
        } else {
            "a request may carry one Host header at most"
        };
        let mut res = rejected(metrics, StatusCode::BAD_REQUEST, msg);
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    let (route, params, head_as_get) = match route(&shared, req.method(), req.uri().path()) {
        Ok(found) => found,
        Err(res) => return res,
    };
    let limit = route
        .options
        .body_limit
        .unwrap_or(shared.config.max_body_bytes as u64);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return rejected(
            metrics,
            StatusCode::PAYLOAD_TOO_LARGE,
            Error::body_too_large(limit).message(),
        );
    }
    let (head, body) = req.into_parts();
    let (body, stream) = if http_body::Body::is_end_stream(&body) {
        // No body at all (most GETs): nothing to wait for.
        (Bytes::new(), None)
    } else if route.options.stream_body {
        (Bytes::new(), Some(BodyStream::new(body, limit)))
    } else {
        let max = usize::try_from(limit).unwrap_or(usize::MAX);
        match Limited::new(body, max).collect().await {
            Ok(collected) => (collected.to_bytes(), None),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return rejected(
                    metrics,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Error::body_too_large(limit).message(),
                );
            }
            Err(e) => {
                return rejected(
                    metrics,
                    StatusCode::BAD_REQUEST,
                    &format!("could not read the request body: {e}"),
                );
            }
        }
    };
    let handler = route.handler.clone();
    respond(
        &shared,
        Some(peer),
        handler,
        params,
        head_as_get,
        head,
        body,
        stream,
    )
    .await
}
