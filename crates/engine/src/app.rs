//! Handlers and the route table a server serves.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::Method;

use crate::error::Result;
use crate::request::Request;
use crate::response::{IntoResponse, Response};
use crate::router::{parse_method, Router};

/// Something that answers requests: any `async fn(Request) -> impl IntoResponse`, or a
/// front end's dispatcher.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, req: Request) -> BoxFuture<'static, Response>;
}

impl<F, Fut, R> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<'static, Response> {
        (self)(req).map(IntoResponse::into_response).boxed()
    }
}

/// Per-route options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteOptions {
    /// Hand the request body to the handler as it arrives ([`Request::body_stream`])
    /// instead of reading it in full first. Default: false.
    pub stream_body: bool,
    /// This route's request body limit in bytes, instead of the server's
    /// `max_body_bytes`. Past it: 413 (or an error from the body stream).
    pub body_limit: Option<u64>,
    /// The route answers with long-lived streams (SSE, long polls of chunks...): the
    /// server serves its plain HTTP/1.1 GET requests (WebSocket upgrades on plain
    /// connections included) on a lean direct path that keeps no per-connection read or
    /// write buffers while the response streams, instead of hyper's (about 16 KiB per
    /// connection). Other HTTP/1.1 requests to it (HEAD, ones with a body...) are served by
    /// hyper as usual, HTTP/2 ones by the HTTP/2 server. Also worth it for short answers
    /// whose handler replies later (from another thread): the Node binding sets it on
    /// every route, and WebSocket routes have it. Default: false.
    pub long_lived: bool,
    /// The route answers with streams: exempt from the server's
    /// [`handler_timeout`](crate::ServerConfig::handler_timeout), and counted against
    /// [`max_streams_per_ip`](crate::ServerConfig::max_streams_per_ip) and
    /// [`max_streams`](Self::max_streams). Default: false.
    pub stream: bool,
    /// Streams of this (stream) route open at once; past it a 429. Default: no limit.
    pub max_streams: Option<usize>,
    /// CORS of this route: the server's (default), none, or its own.
    pub cors: crate::cors::RouteCors,
    /// Compress this route's responses per the server's
    /// [`compression`](crate::ServerConfig::compression) (default), or never.
    pub compress: crate::compress::RouteCompression,
}

pub(crate) struct Route {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) options: RouteOptions,
    /// This route's streams open now (counted only with a limit to apply).
    pub(crate) open_streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// The routes of a server.
///
/// ```
/// use rat_engine::{App, SseResponse};
/// let mut app = App::new();
/// app.get("/hello", |_req| async { "hello" }).unwrap()
///    .get("/events", |_req| async { SseResponse::new() }).unwrap();
/// ```
#[derive(Default)]
pub struct App {
    pub(crate) router: Router<Route>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("router", &self.router).finish()
    }
}

impl App {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for `method` (GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS).
    ///
    /// # Errors
    /// An invalid method or pattern, or a duplicate route (see [`Router::insert`]).
    pub fn route(&mut self, method: &str, path: &str, handler: impl Handler) -> Result<&mut Self> {
        self.route_arc(parse_method(method)?, path, Arc::new(handler))
    }

    /// Adds a route with a shared handler.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn route_arc(
        &mut self,
        method: Method,
        path: &str,
        handler: Arc<dyn Handler>,
    ) -> Result<&mut Self> {
        self.route_with(method, path, handler, RouteOptions::default())
    }

    /// Adds a route with options (e.g. a streamed request body).
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn route_with(
        &mut self,
        method: Method,
        path: &str,
        handler: Arc<dyn Handler>,
        options: RouteOptions,
    ) -> Result<&mut Self> {
        self.router.insert(
            method,
            path,
            Route {
                handler,
                options,
                open_streams: Arc::default(),
            },
        )?;
        Ok(self)
    }

    /// Adds a WebSocket route: a GET that upgrades (see [`crate::ws`]). The server's
    /// checks (auth, stream limits per IP, CORS) and the path parameters apply before the
    /// upgrade; `handler` then serves the socket.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn ws(&mut self, path: &str, handler: impl crate::ws::WsHandler) -> Result<&mut Self> {
        self.ws_with(path, handler, crate::ws::WsOptions::default())
    }

    /// [`ws`](Self::ws) with options (payload limit, idle timeout, send queue).
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn ws_with(
        &mut self,
        path: &str,
        handler: impl crate::ws::WsHandler,
        options: crate::ws::WsOptions,
    ) -> Result<&mut Self> {
        self.ws_route_with(path, handler, options, RouteOptions::default())
    }

    /// [`ws_with`](Self::ws_with) with route options too (CORS, a stream limit...). The
    /// route is always a stream route, never compressed.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn ws_route_with(
        &mut self,
        path: &str,
        handler: impl crate::ws::WsHandler,
        options: crate::ws::WsOptions,
        route: RouteOptions,
    ) -> Result<&mut Self> {
        let handler = crate::ws::route_handler(Arc::new(handler), options);
        let route = RouteOptions {
            stream: true,
            long_lived: true,
            compress: crate::compress::RouteCompression::Off,
            ..route
        };
        self.route_with(Method::GET, path, Arc::new(handler), route)
    }

    /// A WebSocket route whose sockets receive `channel`'s events as text frames (each
    /// event's data). Messages from clients are read and dropped; no task runs per socket
    /// beyond its connection.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn ws_channel(&mut self, path: &str, channel: crate::Channel) -> Result<&mut Self> {
        let options = crate::ws::WsOptions::default();
        self.ws_channel_route_with(path, channel, options, RouteOptions::default())
    }

    /// [`ws_channel`](Self::ws_channel) with WebSocket and route options.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn ws_channel_route_with(
        &mut self,
        path: &str,
        channel: crate::Channel,
        options: crate::ws::WsOptions,
        route: RouteOptions,
    ) -> Result<&mut Self> {
        let handler = crate::ws::channel_handler(channel, options);
        let route = RouteOptions {
            stream: true,
            long_lived: true,
            compress: crate::compress::RouteCompression::Off,
            ..route
        };
        self.route_with(Method::GET, path, Arc::new(handler), route)
    }

    /// Adds a GET route (HEAD is answered by it too, without a body).
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn get(&mut self, path: &str, handler: impl Handler) -> Result<&mut Self> {
        self.route_arc(Method::GET, path, Arc::new(handler))
    }

    /// Adds a POST route.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn post(&mut self, path: &str, handler: impl Handler) -> Result<&mut Self> {
        self.route_arc(Method::POST, path, Arc::new(handler))
    }

    /// Adds a PUT route.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn put(&mut self, path: &str, handler: impl Handler) -> Result<&mut Self> {
        self.route_arc(Method::PUT, path, Arc::new(handler))
    }

    /// Adds a DELETE route.
    ///
    /// # Errors
    /// See [`Router::insert`].
    pub fn delete(&mut self, path: &str, handler: impl Handler) -> Result<&mut Self> {
        self.route_arc(Method::DELETE, path, Arc::new(handler))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.router.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.router.is_empty()
    }
}
