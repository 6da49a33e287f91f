//! Request handling shared by hyper and the direct path: routing, body limits, engine-made
//! error responses, the handler call.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::activity::{Activity, TrackedBody};
use super::Shared;
use crate::app::Route;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::request::{BodyStream, Request, RequestBody};
use crate::response::{self, Response};
use crate::router::{Params, RouteMatch};
use crate::stream::Body;

#[derive(Clone)]
pub(crate) struct EngineService {
    shared: Arc<Shared>,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl EngineService {
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr, activity: Arc<Activity>) -> Self {
        EngineService {
            shared,
            peer,
            activity,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for EngineService {
    type Response = http::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        let upgrade = if req.headers().contains_key(header::UPGRADE) {
            Some(hyper::upgrade::on(&mut req))
        } else {
            None
        };
        let peer = self.peer;
        let busy = self.activity.begin();
        let log = shared.config.access_log.as_ref();
        let pending =
            crate::access::Pending::new(log, req.method(), req.uri(), req.headers(), Some(peer));
        Box::pin(async move {
            let mut res = handle(shared.clone(), peer, req.map(RequestBody::Hyper)).await;
            if let Some(on_upgrade) = upgrade {
                crate::ws::spawn_upgrade(&mut res, on_upgrade, &shared);
            }
            shared.metrics.count_response(res.status());
            if let Some(p) = pending {
                p.finish(shared.config.access_log.as_ref(), &res);
            }
            Ok(res.map(|body| TrackedBody::new(body, busy)))
        })
    }
}

pub(crate) fn rejected(metrics: &Metrics, status: StatusCode, message: &str) -> Response {
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
/// streaming body counted, given its heartbeat and tracked for shutdown. A stream route
/// past its stream limits gets a 429 without its handler running; a handler of another
/// route that does not answer within the handler timeout gets a 504 (its future is
/// dropped, which a front end sees).
///
/// Not an `async fn`: that would keep the request's parts in the future next to the
/// request made of them (~1 KiB, a large allocation per request where it is boxed); the
/// future returned holds only the handler's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn respond<'a>(
    shared: &'a Shared,
    peer: Option<SocketAddr>,
    route: &Route,
    params: Params,
    head_as_get: bool,
    head: http::request::Parts,
    body: Bytes,
    stream: Option<BodyStream>,
) -> impl Future<Output = Response> + Send + 'a {
    let is_head = head_as_get || head.method == Method::HEAD;
    let timeout = if route.options.stream {
        None
    } else {
        shared.config.handler_timeout
    };
    let compression = match (&shared.config.compression, route.options.compress) {
        (Some(c), crate::compress::RouteCompression::Inherit) if !is_head => Some((
            c.clone(),
            head.headers.get(header::ACCEPT_ENCODING).cloned(),
        )),
        _ => None,
    };
    let cors = route
        .options
        .cors
        .resolve(shared.config.cors.as_ref())
        .map(|c| (c.clone(), head.headers.get(header::ORIGIN).cloned()));
    let admitted = crate::auth::admitted(&shared.config.auth, head.uri.path(), &head.headers);
    // Kept for a handler timeout's warning only when someone reads warnings.
    let warned = timeout.is_some()
        && (shared.metrics.warnings.get().is_some()
            || tracing::enabled!(target: "rat_engine", tracing::Level::WARN));
    let path = if warned {
        head.uri.path().to_string()
    } else {
        String::new()
    };
    let slot = if admitted {
        StreamSlot::take(shared, route, peer, &head.headers)
    } else {
        Err(unauthorized(shared))
    };
    let call = match slot {
        Ok(slot) => {
            let mut request = Request::new(head, params, peer, body, shared.metrics.clone());
            request.set_body_stream(stream);
            if let Some((policy, accept)) = &compression {
                request.set_offered(policy.offered(accept.as_ref()));
            }
            Ok((route.handler.call(request), slot))
        }
        Err(refused) => Err(refused),
    };
    let answer = async move {
        let (call, slot) = match call {
            Ok(c) => c,
            Err(refused) => return refused,
        };
        let mut res = match timeout {
            None => call.await,
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(res) => res,
                Err(_) => {
                    Metrics::add(&shared.metrics.handler_timeouts, 1);
                    let msg = format!("the handler did not answer within {} ms", limit.as_millis());
                    let path = Some(path.as_str()).filter(|p| !p.is_empty());
                    shared
                        .metrics
                        .warn("handler_timeout", msg.clone(), peer, path);
                    return rejected(&shared.metrics, StatusCode::GATEWAY_TIMEOUT, &msg);
                }
            },
        };
        // A WebSocket holds its stream slot until it closes.
        let slot = match slot.map(|s| crate::ws::hold(&res, s)) {
            Some(Ok(())) => return res,
            Some(Err(s)) => Some(s),
            None => None,
        };
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
                if let Some(age) = shared.config.max_stream_age {
                    let weak = stream.downgrade();
                    tokio::spawn(async move {
                        tokio::time::sleep(age).await;
                        if let Some(s) = weak.upgrade() {
                            s.end();
                        }
                    });
                }
                if let Some(slot) = slot {
                    // Held until the body is dropped (the stream is over).
                    stream.on_close(move || drop(slot));
                }
            }
        }
        res
    };
    async move {
        let mut res = answer.await;
        if let Some((policy, accept)) = compression {
            crate::compress::apply(&policy, accept.as_ref(), &mut res);
        }
        if let Some((cors, origin)) = cors {
            let admitted = cors.admits(origin.as_ref()).await;
            cors.decorate(origin.as_ref(), admitted, res.headers_mut());
        }
        res
    }
}

/// The answer to a CORS preflight (`OPTIONS` with an `Origin` and
/// `Access-Control-Request-Method`) for a path with a route whose policy has CORS; `None`
/// for any other request.
async fn preflight(shared: &Shared, req: &http::Request<RequestBody>) -> Option<Response> {
    if req.method() != Method::OPTIONS {
        return None;
    }
    let headers = req.headers();
    let origin = headers.get(header::ORIGIN)?;
    let asked = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let asked = Method::from_bytes(asked.as_bytes()).ok()?;
    let router = &shared.app.router;
    let path = req.uri().path();
    let policy = match router.at(&asked, path) {
        RouteMatch::Found(m) => m.value.options.cors.resolve(shared.config.cors.as_ref()),
        RouteMatch::MethodNotAllowed(_) => shared.config.cors.as_ref(),
        RouteMatch::NotFound => None,
    }?;
    let methods = match router.at(&Method::OPTIONS, path) {
        RouteMatch::MethodNotAllowed(allow) => allow,
        _ => vec![asked],
    };
    let request_headers = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
    Metrics::add(&shared.metrics.total_requests, 1);
    let admitted = policy.admits(Some(origin)).await;
    Some(policy.preflight(origin, admitted, request_headers, &methods))
}

/// Reads a whole request body of at most `limit` bytes, each read within the body timeout.
#[allow(clippy::result_large_err)] // the error is the answer, returned at once
async fn read_body(shared: &Shared, mut body: RequestBody, limit: u64) -> Result<Bytes, Response> {
    let metrics = &shared.metrics;
    let wait = shared.config.body_timeout;
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                Metrics::add(&metrics.body_timeouts, 1);
                let msg = format!(
                    "the request body stalled: nothing arrived for {} ms",
                    wait.as_millis()
                );
                return Err(closing(rejected(
                    metrics,
                    StatusCode::REQUEST_TIMEOUT,
                    &msg,
                )));
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => {
                let msg = format!("could not read the request body: {e}");
                return Err(rejected(metrics, StatusCode::BAD_REQUEST, &msg));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if (buf.len() + data.len()) as u64 > limit {
                let msg = Error::body_too_large(limit);
                return Err(rejected(
                    metrics,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    msg.message(),
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// `res` with `connection: close`: the connection ends after it.
pub(crate) fn closing(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// Streams open per client IP (see [`ServerConfig::max_streams_per_ip`]).
///
/// [`ServerConfig::max_streams_per_ip`]: crate::ServerConfig::max_streams_per_ip
pub(crate) type StreamsPerIp = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// A stream counted against the per-IP and per-route limits until dropped.
pub(crate) struct StreamSlot {
    ip: Option<(StreamsPerIp, IpAddr)>,
    route: Option<Arc<AtomicUsize>>,
}

impl StreamSlot {
    /// Counts a stream of `route` from this client, or answers 429 when a limit is
    /// reached. `None` when no limit applies (nothing is counted).
    #[allow(clippy::result_large_err)] // the error is the answer, returned at once
    fn take(
        shared: &Shared,
        route: &Route,
        peer: Option<SocketAddr>,
        headers: &http::HeaderMap,
    ) -> Result<Option<StreamSlot>, Response> {
        if !route.options.stream {
            return Ok(None);
        }
        let per_ip = shared.config.max_streams_per_ip;
        let per_route = route.options.max_streams;
        if per_ip.is_none() && per_route.is_none() {
            return Ok(None);
        }
        let mut slot = StreamSlot {
            ip: None,
            route: None,
        };
        if let Some(max) = per_route {
            let open = &route.open_streams;
            if open.fetch_add(1, Ordering::AcqRel) >= max {
                open.fetch_sub(1, Ordering::AcqRel);
                return Err(too_many(
                    shared,
                    &format!("this route serves {max} streams at most"),
                ));
            }
            slot.route = Some(open.clone());
        }
        if let (Some(max), Some(ip)) = (per_ip, client_ip(peer, headers, shared.config.trust_proxy))
        {
            let mut map = shared
                .streams_per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = map.entry(ip).or_insert(0);
            if *n >= max {
                drop(map);
                return Err(too_many(
                    shared,
                    &format!("{max} streams per client at most"),
                ));
            }
            *n += 1;
            slot.ip = Some((shared.streams_per_ip.clone(), ip));
        }
        Ok(Some(slot))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(open) = &self.route {
            open.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some((map, ip)) = &self.ip {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(ip);
                }
            }
        }
    }
}

fn unauthorized(shared: &Shared) -> Response {
    Metrics::add(&shared.metrics.unauthorized, 1);
    let mut res = rejected(
        &shared.metrics,
        StatusCode::UNAUTHORIZED,
        "missing or unknown credentials",
    );
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

fn too_many(shared: &Shared, msg: &str) -> Response {
    Metrics::add(&shared.metrics.refused_streams, 1);
    let mut res = rejected(&shared.metrics, StatusCode::TOO_MANY_REQUESTS, msg);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
    res
}

/// The client's address: the socket's, or with `trust_proxy` the last address of
/// `X-Forwarded-For` (the one the nearest proxy added).
fn client_ip(
    peer: Option<SocketAddr>,
    headers: &http::HeaderMap,
    trust_proxy: bool,
) -> Option<IpAddr> {
    if trust_proxy {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|a| a.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|p| p.ip())
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

/// Answers a request: the edge's checks, its body read or streamed, then its handler.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: http::Request<RequestBody>,
) -> Response {
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
        return closing(rejected(metrics, StatusCode::BAD_REQUEST, msg));
    }
    if let Some(res) = preflight(&shared, &req).await {
        return res;
    }
    let target = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > shared.config.max_url_bytes {
        Metrics::add(&metrics.total_requests, 1);
        let msg = format!(
            "the request target is {target} bytes; {} at most",
            shared.config.max_url_bytes
        );
        return closing(rejected(metrics, StatusCode::URI_TOO_LONG, &msg));
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
        let stream = BodyStream::new(body, limit, shared.config.body_timeout);
        (Bytes::new(), Some(stream))
    } else {
        match read_body(&shared, body, limit).await {
            Ok(bytes) => (bytes, None),
            Err(res) => return res,
        }
    };
    respond(
        &shared,
        Some(peer),
        route,
        params,
        head_as_get,
        head,
        body,
        stream,
    )
    .await
}
