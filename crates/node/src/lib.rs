//! Node.js binding of rat-engine. It only translates: JS values to engine types and back,
//! and calls into JS through one threadsafe function per engine (see `dispatch.rs`).
//! Everything else (routing, framing, queues, fan-out) is in the `rat-engine` crate.

#![deny(clippy::all)]

mod alloc;
mod call;
mod channel;
mod dispatch;
mod engine;
mod options;
mod ws;

// The batch functions JS calls (napi registers them); public so that a test build, which
// does not register them, does not count them as dead code.
pub use call::{
    batch_accept_ws, batch_accept_ws_lazy, batch_body, batch_body_streamed, batch_last_event_id,
    batch_method, batch_path, batch_query_string, batch_raw_headers, batch_raw_params,
    batch_remote_address, batch_remote_port, batch_respond, batch_respond_buffer,
    batch_respond_error, batch_started, take_call,
};

/// The tokio runtime napi-rs runs the engine on: its default (a multi-thread runtime with
/// all drivers), plus the hooks that let a worker hand JS its batch of requests when it is
/// about to park (see `dispatch::Dispatcher::push`). Built once per process: napi-rs keeps
/// one runtime for all the process's environments (worker threads load the addon again).
#[napi_derive::module_init]
fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        alloc::configure();
        build_runtime();
    });
}

fn build_runtime() {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(dispatch::mark_worker)
        .on_thread_park(|| {
            dispatch::on_park();
            alloc::on_park();
        })
        .build()
    {
        Ok(rt) => {
            rt.spawn(alloc::trim_task());
            napi::bindgen_prelude::create_custom_tokio_runtime(rt)
        }
        // napi-rs then builds its default runtime, and dispatch does without the hook.
        Err(e) => eprintln!("rat-engine: cannot build the tokio runtime with hooks: {e}"),
    }
}

/// The `code` of the JS errors the binding throws: the engine's stable code
/// ([`rat_engine::Error::code`], e.g. `ERR_ROUTE`) or the binding's own (`ERR_…`). napi-rs
/// sets it as the thrown error's `code` property; the message is the reason alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(&'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

/// What the binding's functions return: an error becomes a JS `Error` with its `code`.
pub type Result<T> = std::result::Result<T, napi::Error<Code>>;

/// A JS error with `code` set.
pub(crate) fn js_error(code: &'static str, message: impl ToString) -> napi::Error<Code> {
    napi::Error::new(Code(code), message)
}

/// The JS error of an engine error: its code and its message.
pub(crate) fn to_js_error(e: rat_engine::Error) -> napi::Error<Code> {
    js_error(e.code(), e.message())
}

/// A failure of napi-rs itself (a JS value it could not create or read).
pub(crate) fn napi_failure(e: napi::Error) -> napi::Error<Code> {
    js_error("ERR_NAPI", format!("{}: {}", e.status, e.reason))
}

/// Runs `fut` on the engine's runtime as a promise; an error rejects it with a JS error
/// carrying its code (napi-rs's own futures reject with its status as code).
pub(crate) fn spawn<'env, T>(
    env: &'env napi::Env,
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<napi::bindgen_prelude::PromiseRaw<'env, T>>
where
    T: napi::bindgen_prelude::ToNapiValue + Send + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, r: Result<T>| {
        r.map_err(|e| rejection(env, e))
    })
    .map_err(napi_failure)
}

/// The JS error of `e`, created on the JS thread, as the value a promise rejects with.
fn rejection(env: &napi::Env, e: napi::Error<Code>) -> napi::Error {
    // SAFETY: called by a promise's resolver, on the JS thread of `env`.
    let value = unsafe { napi::bindgen_prelude::JsError::from(e).into_value(env.raw()) };
    if value.is_null() {
        // The environment is going away: nothing can receive the error.
        return napi::Error::from_reason("the environment is shutting down");
    }
    // SAFETY: `value` is a live JS value of `env`, made just above.
    napi::Error::from(unsafe {
        napi::bindgen_prelude::Unknown::from_raw_unchecked(env.raw(), value)
    })
}

/// Builds an engine SSE event from the JS fields (shared by streams and channels).
pub(crate) fn build_event(
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u32>,
) -> Result<rat_engine::Event> {
    let mut ev = rat_engine::Event::new();
    if let Some(d) = data {
        ev = ev.data(d);
    }
    if let Some(e) = event {
        ev = ev.try_event(e).map_err(to_js_error)?;
    }
    if let Some(i) = id {
        ev = ev.id(i).map_err(to_js_error)?;
    }
    if let Some(r) = retry {
        ev = ev.retry(std::time::Duration::from_millis(u64::from(r)));
    }
    Ok(ev)
}
