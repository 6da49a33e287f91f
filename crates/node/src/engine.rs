//! The native engine object: routes, listen, close, metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::{Env, Function, FunctionRef, PromiseRaw};
use napi_derive::napi;
use rat_engine::frontend::{Responder, ResponseKind};
use rat_engine::router::parse_method;
use rat_engine::{
    App, BoxFuture, Handler, Metrics, Request, Response, Server, ServerConfig, ServerHandle,
};

use crate::call::Call;
use crate::channel::Channel;
use crate::dispatch::{DispatchArgs, Dispatcher, Item};
use crate::options::{
    Address, EngineMetrics, EngineOptions, NativeChannelOptions, RouteOptions, TlsOptions,
};
use crate::ws::WsRouteOptions;
use crate::{js_error, napi_failure, spawn, to_js_error, Code, Result};

/// A route whose handler is in JS: each request becomes a call in the next batch.
struct JsRoute {
    route_id: u32,
    kind: ResponseKind,
    /// A WebSocket route (its upgrades may be accepted without JS: `acceptWsUnasked`).
    ws: bool,
    config: ServerConfig,
    dispatcher: Arc<Dispatcher>,
}

impl Handler for JsRoute {
    fn call(&self, req: Request) -> BoxFuture<'static, Response> {
        if self.ws {
            if let Some((options, tag)) = self.dispatcher.ws_routes.get(self.route_id) {
                let res = crate::ws::accept_unasked(&self.dispatcher, &req, &options, tag);
                return Box::pin(std::future::ready(res));
            }
        }
        let limits = match self.kind {
            ResponseKind::Chunked(_) => self.config.byte_queue,
            _ => self.config.queue,
        };
        let (responder, mut pending) =
            Responder::new(self.kind.clone(), limits, req.metrics().clone());
        let id = self.dispatcher.next_id();
        // The client leaving reaches JS as a notice in a later batch (req.signal).
        let d = self.dispatcher.clone();
        match responder.stream() {
            Some(stream) => stream.on_close(move || d.push(Item::Closed(id))),
            None => pending.on_abandon(move || d.push(Item::Closed(id))),
        }
        self.dispatcher.push(Item::Call(Box::new(Call::new(
            id,
            self.route_id,
            req,
            responder,
            self.dispatcher.clone(),
        ))));
        Box::pin(pending)
    }
}

struct Running {
    handle: ServerHandle,
}

/// The native engine: register routes, listen, close. The TypeScript `createApp()` wraps it.
#[napi]
pub struct Engine {
    config: ServerConfig,
    app: Mutex<Option<App>>,
    dispatch: FunctionRef<DispatchArgs, ()>,
    dispatcher: Arc<Dispatcher>,
    running: Arc<Mutex<Option<Running>>>,
    metrics: Arc<Mutex<Option<Arc<Metrics>>>>,
    /// The TLS settings of a server listening with TLS (their certificate can be swapped).
    tls: Mutex<Option<rat_engine::TlsConfig>>,
    /// Shares channels through Redis.
    redis: Option<rat_engine::RedisHub>,
}

fn not_twice() -> napi::Error<Code> {
    js_error(
        "ERR_INVALID_ARGUMENT",
        "routes must be added before listen(), and listen() called once",
    )
}

#[napi]
impl Engine {
    /// Creates an engine. `dispatch(seq, routeIds, ids, closed, ready)` is called on the JS
    /// thread with the number of a batch of new requests (read and answered through the
    /// `batch*` functions while the call runs, kept with `takeCall`), the route
    /// id and the id of each, the ids of streams whose client has gone, and the ids of
    /// streams whose queue has room again (see `KeptCall.armReady`).
    #[napi(
        constructor,
        ts_args_type = "options: EngineOptions | undefined | null, dispatch: (seq: number, routeIds: number[], ids: number[], closed: number[], ready: number[], logs: AccessLogEntry[], notes: EngineNote[], ws: Array<number | string | Buffer>) => void"
    )]
    pub fn new(
        options: Option<EngineOptions>,
        dispatch: Function<'_, DispatchArgs, ()>,
    ) -> Result<Self> {
        let options = options.unwrap_or_default();
        let mut config = ServerConfig::from(&options);
        let dispatcher = Arc::new(Dispatcher::default());
        if let Some(cors) = &options.cors {
            config = config.cors(cors.to_cors(&dispatcher).map_err(to_js_error)?);
        }
        if let Some(c) = &options.compression {
            config = config.compression(c.to_compression().map_err(to_js_error)?);
        }
        for rule in options.auth.iter().flatten() {
            config = config.auth(rule.to_rule().map_err(to_js_error)?);
        }
        if options.warnings == Some(true) {
            let d = dispatcher.clone();
            config.warnings = Some(rat_engine::access::WarningLog::new(move |w| {
                d.push_log(Item::Note(Box::new(w.into())));
            }));
        }
        let redis = match &options.redis {
            Some(r) => Some(r.to_hub().map_err(to_js_error)?),
            None => None,
        };
        if let Some(hub) = &redis {
            config = config.redis(hub.clone());
        }
        if options.access_log == Some(true) {
            let d = dispatcher.clone();
            config.access_log = Some(rat_engine::access::AccessLog::new(move |e| {
                d.push_log(Item::Log(Box::new(e)));
            }));
        }
        Ok(Engine {
            config,
            app: Mutex::new(Some(App::new())),
            dispatch: dispatch.create_ref().map_err(napi_failure)?,
            dispatcher,
            running: Arc::new(Mutex::new(None)),
            metrics: Arc::new(Mutex::new(None)),
            tls: Mutex::new(None),
            redis,
        })
    }

    /// A channel of this engine: shared through its Redis unless it has none or
    /// `options.redis` is false.
    #[napi]
    pub fn channel(&self, name: String, options: Option<NativeChannelOptions>) -> Result<Channel> {
        let options = options.unwrap_or_default();
        let opts = rat_engine::ChannelOptions::try_from(&options)?;
        let ch = match (&self.redis, options.redis) {
            (Some(hub), None | Some(true)) => rat_engine::Channel::shared(name, opts, hub),
            _ => rat_engine::Channel::new(name, opts),
        };
        Ok(Channel::from_inner(ch))
    }

    /// Adds a route served by JS. `kind` is `plain`, `sse`, `chunked` or `ws` (a GET that
    /// JS answers with `acceptWs`); `contentType` is the chunked default.
    #[napi]
    pub fn add_route(
        &self,
        kind: String,
        method: String,
        path: String,
        route_id: u32,
        content_type: Option<String>,
        options: Option<RouteOptions>,
    ) -> Result<()> {
        let ws = kind == "ws";
        let kind = match kind.as_str() {
            "plain" | "ws" => ResponseKind::Plain,
            "sse" => ResponseKind::Sse,
            "chunked" => ResponseKind::Chunked(
                content_type.unwrap_or_else(|| "application/octet-stream".to_string()),
            ),
            other => {
                return Err(js_error(
                    "ERR_INVALID_ARGUMENT",
                    format!("invalid route kind {other:?}: use plain, sse, chunked or ws"),
                ))
            }
        };
        let route = JsRoute {
            route_id,
            kind,
            ws,
            config: self.config.clone(),
            dispatcher: self.dispatcher.clone(),
        };
        let mut options = match options {
            Some(o) => o.to_engine(&self.dispatcher).map_err(to_js_error)?,
            None => rat_engine::RouteOptions::default(),
        };
        // Every JS route is served on the engine's lean HTTP/1.1 path (plain GETs without a
        // body, WebSocket upgrades on plain connections; hyper serves the rest): stream
        // routes keep small per-connection state and write frames straight to the socket,
        // and a plain GET answered from JS costs less CPU there than through hyper.
        options.long_lived = true;
        if ws {
            options.compress = rat_engine::compress::RouteCompression::Off;
        }
        options.stream = ws || route.kind != ResponseKind::Plain;
        self.with_app(|app| {
            app.route_with(parse_method(&method)?, &path, Arc::new(route), options)
                .map(|_| ())
        })
    }

    /// Has the engine accept the upgrades of WebSocket route `routeId` (one with no `open`
    /// handler and no hook) without calling JS, with `options`; JS takes each socket, with
    /// `tag`, at its first event (`takeWs`). `null` options: through JS again.
    #[napi]
    pub fn accept_ws_unasked(
        &self,
        route_id: u32,
        options: Option<WsRouteOptions>,
        tag: u32,
    ) -> Result<()> {
        let accept = match options {
            Some(o) => Some((o.to_engine()?, tag)),
            None => None,
        };
        self.dispatcher.ws_routes.set(route_id, accept);
        Ok(())
    }

    /// Adds an SSE route served entirely by a channel: no JS runs per request or event.
    #[napi]
    pub fn add_channel_route(
        &self,
        method: String,
        path: String,
        channel: &Channel,
        options: Option<RouteOptions>,
    ) -> Result<()> {
        let ch = channel.inner().clone();
        let mut options = match options {
            Some(o) => o.to_engine(&self.dispatcher).map_err(to_js_error)?,
            None => rat_engine::RouteOptions::default(),
        };
        options.long_lived = true;
        options.stream = true;
        self.with_app(|app| {
            app.route_with(parse_method(&method)?, &path, Arc::new(ch), options)
                .map(|_| ())
        })
    }

    /// Adds a WebSocket route whose sockets receive the channel's events: no JS runs per
    /// socket or event.
    #[napi]
    pub fn add_ws_channel_route(
        &self,
        path: String,
        channel: &Channel,
        ws: Option<WsRouteOptions>,
        options: Option<RouteOptions>,
    ) -> Result<()> {
        let ch = channel.inner().clone();
        let ws = ws.unwrap_or_default().to_engine()?;
        let options = match options {
            Some(o) => o.to_engine(&self.dispatcher).map_err(to_js_error)?,
            None => rat_engine::RouteOptions::default(),
        };
        self.with_app(|app| {
            app.ws_channel_route_with(&path, ch, ws, options)
                .map(|_| ())
        })
    }

    fn with_app(&self, f: impl FnOnce(&mut App) -> rat_engine::Result<()>) -> Result<()> {
        let mut guard = self.app.lock().unwrap_or_else(|p| p.into_inner());
        let app = guard.as_mut().ok_or_else(not_twice)?;
        f(app).map_err(to_js_error)
    }

    /// Binds `host:port` (port 0 picks a free one) and serves, over TLS (HTTP/2 and
    /// HTTP/1.1 by ALPN) when `tls` is given, sharing the port with other processes
    /// (`SO_REUSEPORT`) when `reusePort`. Resolves to the address.
    #[napi(ts_return_type = "Promise<Address>")]
    pub fn listen<'env>(
        &self,
        env: &'env Env,
        host: String,
        port: u32,
        tls: Option<TlsOptions>,
        reuse_port: Option<bool>,
    ) -> Result<PromiseRaw<'env, Address>> {
        let tls = tls
            .map(|t| t.to_config())
            .transpose()
            .map_err(to_js_error)?;
        let app = self
            .app
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(not_twice)?;
        let dispatch = self.dispatch.borrow_back(env).map_err(napi_failure)?;
        self.dispatcher.connect(&dispatch).map_err(napi_failure)?;
        let mut config = self.config.clone();
        config.tls.clone_from(&tls);
        config.reuse_port = reuse_port.unwrap_or(false);
        *self.tls.lock().unwrap_or_else(|p| p.into_inner()) = tls;
        let running = self.running.clone();
        let metrics = self.metrics.clone();
        let dispatcher = self.dispatcher.clone();
        spawn(env, async move {
            let port = u16::try_from(port).map_err(|_| {
                js_error(
                    "ERR_INVALID_ARGUMENT",
                    format!("invalid port {port}: use 0..=65535"),
                )
            })?;
            match Server::bind((host.as_str(), port), app, config).await {
                Ok(handle) => {
                    let addr = handle.local_addr();
                    *metrics.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(handle.metrics().clone());
                    *running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { handle });
                    Ok(Address {
                        host: addr.ip().to_string(),
                        port: u32::from(addr.port()),
                    })
                }
                Err(e) => {
                    dispatcher.disconnect();
                    Err(js_error(
                        e.code(),
                        format!("cannot listen on {host}:{port}: {}", e.message()),
                    ))
                }
            }
        })
    }

    /// Stops accepting, lets streams finish for up to `graceMs` (default 5000), closes the
    /// rest, and releases the event loop so that Node can exit.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(
        &self,
        env: &'env Env,
        grace_ms: Option<u32>,
    ) -> Result<PromiseRaw<'env, ()>> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let dispatcher = self.dispatcher.clone();
        let grace = Duration::from_millis(u64::from(grace_ms.unwrap_or(5000)));
        spawn(env, async move {
            if let Some(r) = running {
                r.handle.shutdown(grace).await;
            }
            dispatcher.disconnect();
            Ok(())
        })
    }

    /// Replaces the TLS certificate and key for connections made from now on.
    #[napi]
    pub fn set_certificate(&self, tls: TlsOptions) -> Result<()> {
        let guard = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = guard.as_ref() else {
            return Err(js_error(
                "ERR_TLS",
                "this app is not listening with TLS: pass `tls` to listen() first",
            ));
        };
        current
            .set_certificate(&tls.cert, &tls.key, tls.passphrase.as_deref())
            .map_err(to_js_error)
    }

    /// Server counters (zeros before listen).
    /// The answer of the TS layer's origin function to the note with `token`.
    #[napi]
    pub fn origin_decided(&self, token: u32, allowed: bool) {
        self.dispatcher.origin_decided(token, allowed);
    }

    /// The socket accepted with `acceptWsLazy` for request `id`, once (null after, or for
    /// an id with none).
    #[napi]
    pub fn take_ws(&self, id: u32) -> Option<crate::ws::WsSocket> {
        self.dispatcher.ws_lazy.take(id)
    }

    #[napi]
    pub fn metrics(&self) -> EngineMetrics {
        let m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: EngineMetrics = m.as_ref().map(|m| m.snapshot()).unwrap_or_default().into();
        let (sum, count, max) = self.dispatcher.lag();
        out.dispatch_lag_ms = sum;
        out.dispatch_count = count as i64;
        out.dispatch_lag_max_ms = max;
        out.redis = self.redis.as_ref().map(|h| h.metrics().into());
        out
    }

    /// Records a handler error that JS handled itself (counted in metrics).
    #[napi]
    pub fn record_handler_error(&self) {
        if let Some(m) = self
            .metrics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            m.record_handler_error();
        }
    }
}
