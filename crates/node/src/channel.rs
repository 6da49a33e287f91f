//! Broadcast channels for JS: one `publish` call, fan-out in Rust.

use napi_derive::napi;

use crate::options::{NativeChannelMetrics, NativeChannelOptions};
use napi::bindgen_prelude::{Env, PromiseRaw};

use crate::{build_event, spawn, to_js_error, Result};

/// A named broadcast channel (see the engine's `Channel`).
#[napi]
pub struct Channel {
    inner: rat_engine::Channel,
}

impl Channel {
    pub(crate) fn inner(&self) -> &rat_engine::Channel {
        &self.inner
    }

    pub(crate) fn from_inner(inner: rat_engine::Channel) -> Self {
        Channel { inner }
    }
}

#[napi]
impl Channel {
    /// Creates a channel.
    #[napi(constructor)]
    pub fn new(name: String, options: Option<NativeChannelOptions>) -> Result<Self> {
        let opts = rat_engine::ChannelOptions::try_from(&options.unwrap_or_default())?;
        Ok(Channel {
            inner: rat_engine::Channel::new(name, opts),
        })
    }

    /// The channel's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// Publishes an event to every subscriber; returns its id ('' on a channel shared
    /// through Redis: Redis assigns it, see `publishAsync`).
    #[napi]
    pub fn publish(
        &self,
        data: Option<String>,
        event: Option<String>,
        id: Option<String>,
        retry: Option<u32>,
    ) -> Result<String> {
        let ev = build_event(data, event, id, retry)?;
        self.inner.publish(ev).map_err(to_js_error)
    }

    /// Publishes an event; resolves with its id once known (for a shared channel, when
    /// Redis stored it).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn publish_async<'env>(
        &self,
        env: &'env Env,
        data: Option<String>,
        event: Option<String>,
        id: Option<String>,
        retry: Option<u32>,
    ) -> Result<PromiseRaw<'env, String>> {
        let ev = build_event(data, event, id, retry)?;
        let done = self.inner.publish_async(ev);
        spawn(env, async move { done.await.map_err(to_js_error) })
    }

    /// Sends a comment to every subscriber (not kept in history).
    #[napi]
    pub fn comment(&self, text: String) -> Result<()> {
        self.inner
            .broadcast_raw(rat_engine::stream::sse::comment_frame(&text))
            .map_err(to_js_error)
    }

    /// Subscribers now.
    #[napi(getter)]
    pub fn subscribers(&self) -> u32 {
        self.inner.subscribers() as u32
    }

    /// True after `close()`.
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The channel's counters.
    #[napi]
    pub fn metrics(&self) -> NativeChannelMetrics {
        self.inner.metrics().into()
    }

    /// Ends every subscriber's stream and rejects later publishes.
    #[napi]
    pub fn close(&self) {
        self.inner.close();
    }
}
