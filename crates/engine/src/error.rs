//! The engine's one error type.
//!
//! [`Error`] is opaque: it carries a private kind and a message, and callers ask what
//! happened with the `is_*` methods. Front ends (the Node binding) convert it in one place.

use std::fmt;

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the engine: bad input (a route pattern, an SSE field), an I/O failure,
/// a stream whose client has gone, or a queue that is full.
pub struct Error {
    kind: Kind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A route pattern that cannot be parsed, or conflicts with another.
    Route,
    /// An SSE field (id, event) holding a character the protocol cannot carry.
    InvalidField,
    /// A stream whose client disconnected, or that was already ended.
    Closed,
    /// A queue at its high-water mark (try_send) or past its hard limit.
    Full,
    /// Binding or accepting on a socket.
    Io,
    /// A request body larger than the configured limit.
    BodyTooLarge,
    /// An invalid argument passed to an engine API (status code, header).
    InvalidArgument,
    /// A handler (Rust or a front end's) failed.
    Handler,
    /// HTTP protocol error while serving a connection.
    Http,
    /// A TLS certificate or key that cannot be used.
    Tls,
    /// Redis: a URL that cannot be used, a server that cannot be reached at start, or a
    /// full publish buffer.
    Redis,
}

impl Error {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub(crate) fn route(message: impl Into<String>) -> Self {
        Self::new(Kind::Route, message)
    }
    pub(crate) fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidField, message)
    }
    pub(crate) fn closed() -> Self {
        Self::new(
            Kind::Closed,
            "stream closed: the client disconnected or the stream ended",
        )
    }
    pub(crate) fn full(message: impl Into<String>) -> Self {
        Self::new(Kind::Full, message)
    }
    /// An I/O failure whose `message` says it all (`err` stays the source).
    pub(crate) fn io_as(message: impl Into<String>, err: std::io::Error) -> Self {
        Self::new(Kind::Io, message).with_source(err)
    }
    pub(crate) fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let context = context.into();
        Self::new(Kind::Io, format!("{context} ({err})")).with_source(err)
    }
    pub(crate) fn body_too_large(limit: u64) -> Self {
        Self::new(
            Kind::BodyTooLarge,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    pub(crate) fn body_stalled(wait: std::time::Duration) -> Self {
        Self::new(
            Kind::Io,
            format!(
                "the request body stalled: nothing arrived for {} ms",
                wait.as_millis()
            ),
        )
    }

    pub(crate) fn body_read(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::new(Kind::Io, format!("could not read the request body: {err}")).with_source(err)
    }

    pub(crate) fn tls(message: impl Into<String>) -> Self {
        Self::new(Kind::Tls, message)
    }

    pub(crate) fn redis(message: impl Into<String>) -> Self {
        Self::new(Kind::Redis, message)
    }

    /// An invalid argument given to an engine API, with a message saying what is valid.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }

    /// A handler failure with a message; front ends use it for a thrown JS error.
    pub fn handler(message: impl Into<String>) -> Self {
        Self::new(Kind::Handler, message)
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// A route pattern was invalid or conflicted with another route.
    pub fn is_route(&self) -> bool {
        self.kind == Kind::Route
    }
    /// An SSE field contained a forbidden character.
    pub fn is_invalid_field(&self) -> bool {
        self.kind == Kind::InvalidField
    }
    /// The stream is closed (client gone or stream ended).
    pub fn is_closed(&self) -> bool {
        self.kind == Kind::Closed
    }
    /// A queue was full.
    pub fn is_full(&self) -> bool {
        self.kind == Kind::Full
    }
    /// A socket operation failed (bind, accept).
    pub fn is_io(&self) -> bool {
        self.kind == Kind::Io
    }
    /// A request body exceeded the size limit.
    pub fn is_body_too_large(&self) -> bool {
        self.kind == Kind::BodyTooLarge
    }
    /// An argument was invalid.
    pub fn is_invalid_argument(&self) -> bool {
        self.kind == Kind::InvalidArgument
    }
    /// A handler failed.
    pub fn is_handler(&self) -> bool {
        self.kind == Kind::Handler
    }
    /// The HTTP layer failed while serving a connection.
    pub fn is_http(&self) -> bool {
        self.kind == Kind::Http
    }
    /// A Redis URL or server could not be used, or a publish buffer was full (see
    /// [`crate::channel::RedisHub`]).
    pub fn is_redis(&self) -> bool {
        self.kind == Kind::Redis
    }
    /// A TLS certificate or key could not be read or used.
    pub fn is_tls(&self) -> bool {
        self.kind == Kind::Tls
    }

    /// A short stable name of the kind, for front ends that expose it as an error code.
    pub fn code(&self) -> &'static str {
        match self.kind {
            Kind::Route => "ERR_ROUTE",
            Kind::InvalidField => "ERR_INVALID_FIELD",
            Kind::Closed => "ERR_CLOSED",
            Kind::Full => "ERR_FULL",
            Kind::Io => "ERR_IO",
            Kind::BodyTooLarge => "ERR_BODY_TOO_LARGE",
            Kind::InvalidArgument => "ERR_INVALID_ARGUMENT",
            Kind::Handler => "ERR_HANDLER",
            Kind::Http => "ERR_HTTP",
            Kind::Tls => "ERR_TLS",
            Kind::Redis => "ERR_REDIS",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinguishable_and_have_codes() {
        let e = Error::route("bad pattern");
        assert!(e.is_route() && !e.is_closed());
        assert_eq!(e.code(), "ERR_ROUTE");
        assert_eq!(e.to_string(), "bad pattern");
        assert!(Error::closed().is_closed());
        assert!(Error::body_too_large(10).to_string().contains("10 bytes"));
    }
}
