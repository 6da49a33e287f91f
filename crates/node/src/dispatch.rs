//! The one door into JS: a batch of new requests and closed-stream notices, carried by a
//! single threadsafe function per engine. Under load one JS call carries many requests.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use napi::bindgen_prelude::{FnArgs, Function};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use rat_engine::frontend::{Batch, Prepared};

use crate::call::{Call, KeptCall};
use crate::{js_error, Code, Result};

thread_local! {
    /// Responses made while a dispatch call runs on this (the JS) thread. Handing each to
    /// its connection at once would wake a parked tokio worker per response, which on a
    /// busy core preempts JS between two responses; they go out together at the end of the
    /// call instead.
    static OUTBOX: RefCell<Option<Vec<Prepared>>> = const { RefCell::new(None) };
    /// The requests of the dispatch call in progress on this thread, and its number. JS
    /// addresses them as `(seq, index)` through plain functions, so a batch answered while
    /// the call runs costs no JS object, no finalizer and no per-call unwrap of one; a
    /// request that must outlive the call is kept in a [`KeptCall`] of its own
    /// (`takeCall`). What is left when the call returns is released.
    static BATCH: RefCell<(u32, Vec<Option<Box<Call>>>)> = const { RefCell::new((0, Vec::new())) };
    /// The WebSocket messages of the dispatch call in progress, held against their sockets'
    /// backlogs (see `Unhandled`) until it returns: JS handles them within the call.
    static HELD: RefCell<Vec<rat_engine::ws::Unhandled>> = const { RefCell::new(Vec::new()) };
}

/// Makes `calls` the batch of the dispatch call about to run; returns its number.
fn begin_batch(calls: Vec<Option<Box<Call>>>) -> u32 {
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        b.0 = b.0.wrapping_add(1);
        b.1 = calls;
        b.0
    })
}

/// Runs `f` on request `i` of batch `seq`, which must be the dispatch call in progress.
pub(crate) fn with_batched<T>(seq: u32, i: u32, f: impl FnOnce(&Call) -> Result<T>) -> Result<T> {
    BATCH.with(|b| {
        let b = b.borrow();
        match b.1.get(i as usize) {
            Some(Some(c)) if b.0 == seq => f(c),
            _ => Err(released(seq)),
        }
    })
}

/// Moves request `i` of batch `seq` into a `KeptCall` of its own.
pub(crate) fn take_batched(seq: u32, i: u32) -> Result<KeptCall> {
    BATCH.with(|b| {
        let (current, calls) = &mut *b.borrow_mut();
        let taken = match calls.get_mut(i as usize) {
            Some(slot) if *current == seq => slot.take(),
            _ => None,
        };
        taken.map(KeptCall::new).ok_or_else(|| released(seq))
    })
}

fn released(seq: u32) -> napi::Error<Code> {
    js_error(
        "ERR_REQUEST_RELEASED",
        format!(
            "this request (batch {seq}) was released when its handler returned; \
         read what later code needs before returning, or return a promise"
        ),
    )
}

/// Sends `response` now, or with the others at the end of the dispatch call in progress.
pub(crate) fn send_or_defer(response: Prepared) {
    OUTBOX.with(|o| match o.borrow_mut().as_mut() {
        Some(pending) => pending.push(response),
        None => response.send(),
    })
}

/// Opens the outbox for a dispatch call of `requests` new requests (most answer at once).
fn open_outbox(requests: usize) {
    OUTBOX.with(|o| *o.borrow_mut() = Some(Vec::with_capacity(requests)));
}

/// Sends the responses of the dispatch call that returned, and releases its batch.
fn flush_outbox() {
    // The messages are handled: their sockets may read on.
    drop(HELD.with(|h| std::mem::take(&mut *h.borrow_mut())));
    let pending = OUTBOX.with(|o| o.borrow_mut().take()).unwrap_or_default();
    let done = BATCH.with(|b| std::mem::take(&mut b.borrow_mut().1));
    match pending.len() {
        0 => {}
        1 => pending.into_iter().for_each(Prepared::send),
        // One wake-up for all of them; the runtime then wakes each connection locally, and
        // frees the requests on the thread that allocated them.
        _ => {
            napi::bindgen_prelude::spawn(async move {
                pending.into_iter().for_each(Prepared::send);
                drop(done);
            });
            return;
        }
    }
    drop(done);
}

thread_local! {
    /// Set on the workers of the runtime built in `init`, whose park hook runs `on_park`.
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// Dispatchers with requests waiting for a worker to park.
static AT_PARK: Mutex<Vec<Arc<Dispatcher>>> = Mutex::new(Vec::new());
/// `AT_PARK` is not empty (checked at every park without the lock).
static ANY_AT_PARK: AtomicBool = AtomicBool::new(false);

/// The most access log entries and warnings that wait for JS at once: a JS thread blocked,
/// or slower than the requests the engine answers alone, must not make them grow without
/// bound. At a few hundred bytes each, a few MB.
pub(crate) const LOG_BACKLOG: u32 = 8192;

/// The tick of the watch that calls JS for requests still waiting for a park (a worker busy
/// for long, e.g. with a channel's sweep over thousands of sockets, does not park: without
/// the watch its requests would wait for the sweep). It runs while requests come, and stops
/// two ticks after.
const PARK_WATCH: Duration = Duration::from_millis(1);

/// The runtime's `on_thread_start` hook.
pub(crate) fn mark_worker() {
    HOOKED.with(|h| h.set(true));
}

/// The runtime's `on_thread_park` hook: a worker has nothing left to do, so JS gets the
/// requests it gathered.
pub(crate) fn on_park() {
    if !ANY_AT_PARK.load(Ordering::Acquire) {
        return;
    }
    let waiting = {
        let mut list = AT_PARK.lock().unwrap_or_else(|p| p.into_inner());
        ANY_AT_PARK.store(false, Ordering::Release);
        std::mem::take(&mut *list)
    };
    for d in waiting {
        d.listed.store(false, Ordering::Release);
        d.notify_if_waiting();
    }
}

/// What JS receives: new calls, ids of streams whose client has gone, and ids of streams
/// whose queue has room again after a write reported it full.
pub(crate) enum Item {
    Call(Box<Call>),
    Closed(u32),
    Ready(u32),
    /// An access log entry (only with `accessLog`).
    Log(Box<rat_engine::access::AccessEntry>),
    /// An engine warning, or a CORS origin for a JS function to decide.
    Note(Box<EngineNote>),
    /// A WebSocket's message, drain or close, by the id of the request it upgraded.
    Ws(u32, crate::ws::WsNotice),
}

/// The JS dispatch function's signature: `(seq: number, routeIds: number[], ids: number[],
/// closed: number[], ready: number[], logs: AccessLogEntry[], notes: EngineNote[],
/// ws: (number | string | Buffer)[]) => void` (`ws`: see [`crate::ws::push_event`]);
/// `routeIds[i]` and
/// `ids[i]` are the route and the id of request `i` of batch `seq` (plain arrays, so JS does
/// not make a native call per request to learn them).
pub(crate) type DispatchArgs = FnArgs<(
    u32,
    Vec<u32>,
    Vec<u32>,
    Vec<u32>,
    Vec<u32>,
    Vec<AccessLogEntry>,
    Vec<EngineNote>,
    Vec<crate::ws::WsValue>,
)>;

/// Something other than a request for JS: an engine warning for the logger, or a CORS
/// origin that a JS function decides (answered with `Engine.originDecided`).
#[napi_derive::napi(object)]
pub struct EngineNote {
    /// `'warning'` or `'origin'`.
    pub kind: String,
    /// A warning's kind: `handler_timeout`, `tls_handshake`, `accept`, `slow_subscribers`,
    /// `logs_dropped`.
    pub warning: Option<String>,
    pub message: Option<String>,
    pub remote_address: Option<String>,
    pub path: Option<String>,
    /// The origin function asked (its index in the TS layer's list).
    pub check: Option<u32>,
    pub origin: Option<String>,
    /// Passed back with the answer.
    pub token: Option<u32>,
    /// How many access log entries and warnings were dropped (`logs_dropped`).
    pub dropped: Option<f64>,
}

impl EngineNote {
    fn logs_dropped(n: u64) -> EngineNote {
        EngineNote {
            kind: "warning".into(),
            warning: Some("logs_dropped".into()),
            message: Some(format!(
                "{n} access log entries or warnings dropped: more than {LOG_BACKLOG} waited for JS"
            )),
            remote_address: None,
            path: None,
            check: None,
            origin: None,
            token: None,
            dropped: Some(n as f64),
        }
    }
}

impl From<rat_engine::access::Warning> for EngineNote {
    fn from(w: rat_engine::access::Warning) -> Self {
        EngineNote {
            kind: "warning".into(),
            warning: Some(w.kind.into()),
            message: Some(w.message),
            remote_address: w.remote.map(|r| r.ip().to_string()),
            path: w.path,
            check: None,
            origin: None,
            token: None,
            dropped: None,
        }
    }
}

/// A request in the access log, as JS receives it.
#[napi_derive::napi(object)]
pub struct AccessLogEntry {
    pub method: String,
    pub path: String,
    pub status: u32,
    /// From the request head to the end of the response, in ms.
    pub ms: f64,
    /// Response body bytes.
    pub bytes: f64,
    pub remote_address: Option<String>,
    pub user_agent: Option<String>,
}

impl From<rat_engine::access::AccessEntry> for AccessLogEntry {
    fn from(e: rat_engine::access::AccessEntry) -> Self {
        AccessLogEntry {
            method: e.method,
            path: e.path,
            status: u32::from(e.status),
            ms: e.duration.as_secs_f64() * 1000.0,
            bytes: e.bytes as f64,
            remote_address: e.remote.map(|r| r.ip().to_string()),
            user_agent: e.user_agent,
        }
    }
}

type Tsfn = ThreadsafeFunction<(), (), DispatchArgs, Status, false, false, 0>;

#[derive(Default)]
pub(crate) struct Dispatcher {
    batch: Arc<Batch<Item>>,
    /// Present while listening. A strong (ref'ed) TSFN keeps Node alive like a listening
    /// `net.Server`; dropping it at close lets Node exit.
    tsfn: RwLock<Option<Arc<Tsfn>>>,
    next_id: std::sync::atomic::AtomicU32,
    /// Requests wait for a worker to park before JS is called.
    waiting: AtomicBool,
    /// In `AT_PARK` (listed once: a worker that stays busy never empties the list, while
    /// the watch calls JS for batch after batch).
    listed: AtomicBool,
    /// The watch task runs.
    watching: AtomicBool,
    /// CORS origins asked of JS, by token, waiting for `Engine.originDecided`.
    origins: Mutex<OriginsAsked>,
    /// When the batch last went from idle to waiting for JS (ns since `EPOCH`, + 1; 0: not
    /// waiting), and what those waits came to: total ms, calls, longest ms.
    waiting_since: AtomicU64,
    lag: Mutex<(f64, u64, f64)>,
    /// Sockets accepted with no JS object yet, by id (see [`crate::ws::accept_lazy`]).
    pub(crate) ws_lazy: crate::ws::LazySockets,
    /// WebSocket routes whose upgrades the binding accepts itself, by route id (see
    /// [`crate::ws::accept_unasked`]).
    pub(crate) ws_routes: crate::ws::UnaskedRoutes,
}

/// The clock of `Dispatcher::waiting_since`.
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn now_ns() -> u64 {
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
        + 1
}

#[derive(Default)]
struct OriginsAsked {
    next: u32,
    waiting: std::collections::HashMap<u32, tokio::sync::oneshot::Sender<bool>>,
}

impl Dispatcher {
    pub(crate) fn next_id(&self) -> u32 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects the JS dispatch function (at listen).
    pub(crate) fn connect(
        self: &Arc<Self>,
        f: &Function<'_, DispatchArgs, ()>,
    ) -> napi::Result<()> {
        let batch = self.batch.clone();
        let me = Arc::downgrade(self);
        let tsfn = f
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<false>()
            .build_callback(move |_ctx| {
                let d = me.upgrade();
                if let Some(d) = &d {
                    d.record_lag();
                }
                let mut calls = Vec::new();
                let mut routes = Vec::new();
                let mut ids = Vec::new();
                let mut closed = Vec::new();
                let mut ready = Vec::new();
                let mut logs = Vec::new();
                let mut notes = Vec::new();
                let mut ws = Vec::new();
                let mut held = Vec::new();
                batch.drain_with(|items, dropped| {
                    if dropped > 0 {
                        notes.push(EngineNote::logs_dropped(dropped));
                    }
                    // Sized once, as growing a vector by doubling copies what it holds.
                    calls.reserve_exact(items.len());
                    for item in items {
                        match item {
                            Item::Call(c) => {
                                routes.push(c.route());
                                ids.push(c.id());
                                calls.push(Some(c));
                            }
                            Item::Closed(id) => {
                                closed.push(id);
                                if let Some(d) = &d {
                                    d.ws_lazy.abandoned(&mut ws, id);
                                }
                            }
                            Item::Ready(id) => ready.push(id),
                            Item::Log(e) => logs.push(AccessLogEntry::from(*e)),
                            Item::Note(n) => notes.push(*n),
                            Item::Ws(id, n) => crate::ws::push_event(&mut ws, &mut held, id, n),
                        }
                    }
                });
                open_outbox(calls.len());
                HELD.with(|h| h.borrow_mut().append(&mut held));
                let seq = begin_batch(calls);
                Ok(FnArgs::from((
                    seq, routes, ids, closed, ready, logs, notes, ws,
                )))
            })?;
        *self.tsfn.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(tsfn));
        Ok(())
    }

    /// Drops the TSFN so that Node may exit; later items are answered in Rust.
    pub(crate) fn disconnect(&self) {
        self.tsfn.write().unwrap_or_else(|p| p.into_inner()).take();
        self.ws_lazy.clear();
        self.fail_pending();
    }

    /// Hands an item to JS. Only the push that finds the batch idle schedules a JS call.
    ///
    /// On a runtime thread that call waits: waking the JS thread at the first request would
    /// let it preempt the worker on a shared core and take a batch of one, with two context
    /// switches per request. On the engine's own workers it waits until the worker is about
    /// to park, having read every request that was there (`on_park`), or for the next tick
    /// of the watch (`PARK_WATCH`), which takes more requests per wake-up than waiting for
    /// the end of the worker's round, as it does on other runtime threads (a task that
    /// yields once runs after the worker's other ready tasks and its next I/O poll). The
    /// watch also dispatches for a worker that never parks (one whose channel sweeps
    /// thousands of subscribers without pause).
    pub(crate) fn push(self: &Arc<Self>, item: Item) {
        if self.batch.push(item) {
            self.schedule();
        }
    }

    /// Hands JS an access log entry or a warning: one that finds `LOG_BACKLOG` of them
    /// waiting is dropped, and the next batch tells the logger how many were.
    pub(crate) fn push_log(self: &Arc<Self>, item: Item) {
        if self.batch.push_lossy(item, LOG_BACKLOG) == Some(true) {
            self.schedule();
        }
    }

    /// Schedules the JS call for the batch that a push found idle.
    fn schedule(self: &Arc<Self>) {
        self.waiting_since.store(now_ns(), Ordering::Relaxed);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.notify();
            return;
        };
        let me = self.clone();
        if HOOKED.with(Cell::get) {
            self.waiting.store(true, Ordering::Release);
            if !self.listed.swap(true, Ordering::AcqRel) {
                AT_PARK
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(self.clone());
                ANY_AT_PARK.store(true, Ordering::Release);
            }
            if !self.watching.swap(true, Ordering::AcqRel) {
                rt.spawn(me.watch());
            }
        } else {
            rt.spawn(async move {
                tokio::task::yield_now().await;
                me.notify();
            });
        }
    }

    /// Calls JS at each tick for requests still waiting for a park; ends after two ticks
    /// without requests.
    async fn watch(self: Arc<Self>) {
        let mut quiet = 0;
        loop {
            tokio::time::sleep(PARK_WATCH).await;
            if self.waiting.load(Ordering::Acquire) {
                quiet = 0;
                self.notify_if_waiting();
                continue;
            }
            quiet += 1;
            if quiet >= 2 {
                self.watching.store(false, Ordering::Release);
                // Requests that began to wait meanwhile found the watch still running.
                if !self.waiting.load(Ordering::Acquire)
                    || self.watching.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        }
    }

    /// Calls JS unless that was done since the requests began to wait.
    fn notify_if_waiting(&self) {
        if self.waiting.swap(false, Ordering::AcqRel) {
            self.notify();
        }
    }

    /// Schedules the JS call that takes the batch.
    fn notify(&self) {
        let tsfn = self.tsfn.read().unwrap_or_else(|p| p.into_inner()).clone();
        let status = match tsfn {
            Some(t) => t.call_with_return_value(
                (),
                ThreadsafeFunctionCallMode::NonBlocking,
                |ret, _env| {
                    flush_outbox();
                    if let Err(e) = ret {
                        // The TS dispatcher catches handler errors itself; reaching this
                        // means the dispatcher threw. Report it; never crash the process.
                        eprintln!("rat-engine: the dispatch function threw: {e}");
                    }
                    Ok(())
                },
            ),
            None => Status::Closing,
        };
        if status != Status::Ok {
            self.fail_pending();
        }
    }

    fn fail_pending(&self) {
        for item in self.batch.cancel() {
            if let Item::Call(c) = item {
                c.reject_unavailable();
            }
        }
        // Origins nobody will answer are refused.
        self.origins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .clear();
    }

    /// Notes how long the batch JS is about to take waited for it.
    fn record_lag(&self) {
        let since = self.waiting_since.swap(0, Ordering::Relaxed);
        if since == 0 {
            return;
        }
        let ms = now_ns().saturating_sub(since) as f64 / 1e6;
        let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        lag.0 += ms;
        lag.1 += 1;
        lag.2 = lag.2.max(ms);
    }

    /// Total ms batches waited for JS, dispatch calls, and the longest wait in ms.
    pub(crate) fn lag(&self) -> (f64, u64, f64) {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the TS layer's origin function `check` about `origin`.
    pub(crate) fn ask_origin(
        self: &Arc<Self>,
        check: u32,
        origin: &str,
    ) -> rat_engine::BoxFuture<'static, bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = {
            let mut asked = self.origins.lock().unwrap_or_else(|p| p.into_inner());
            asked.next = asked.next.wrapping_add(1);
            let token = asked.next;
            asked.waiting.insert(token, tx);
            token
        };
        self.push(Item::Note(Box::new(EngineNote {
            kind: "origin".into(),
            warning: None,
            message: None,
            remote_address: None,
            path: None,
            check: Some(check),
            origin: Some(origin.to_string()),
            token: Some(token),
            dropped: None,
        })));
        Box::pin(async move { rx.await.unwrap_or(false) })
    }

    /// The TS layer's answer about an origin asked with `token`.
    pub(crate) fn origin_decided(&self, token: u32, allowed: bool) {
        let tx = self
            .origins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .remove(&token);
        if let Some(tx) = tx {
            let _ = tx.send(allowed);
        }
    }
}
