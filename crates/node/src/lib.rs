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

// The batch functions JS calls (napi registers them); public so that a test build, which
// does not register them, does not count them as dead code.
pub use call::{
    batch_body, batch_body_streamed, batch_method, batch_path, batch_query_string,
    batch_raw_headers, batch_raw_params, batch_respond, batch_respond_buffer, keep_batch,
    take_call,
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
        .on_thread_park(dispatch::on_park)
        .build()
    {
        Ok(rt) => napi::bindgen_prelude::create_custom_tokio_runtime(rt),
        // napi-rs then builds its default runtime, and dispatch does without the hook.
        Err(e) => eprintln!("rat-engine: cannot build the tokio runtime with hooks: {e}"),
    }
}

/// Converts an engine error into a JS error whose message starts with its stable code
/// (`ERR_ROUTE: ...`); the TypeScript layer turns that into a `RatError` with `.code`.
pub(crate) fn to_js_error(e: rat_engine::Error) -> napi::Error {
    napi::Error::from_reason(format!("{}: {}", e.code(), e.message()))
}

/// Builds an engine SSE event from the JS fields (shared by streams and channels).
pub(crate) fn build_event(
    data: Option<String>,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u32>,
) -> napi::Result<rat_engine::Event> {
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
