//! The engine's only unsafe code, for two things std has no safe way to say. The crate
//! denies unsafe code (`unsafe_code = "deny"`); this module alone allows it.
//!
//! Both serve a channel's sweep, which writes one event to thousands of sockets in turn.
//! Outside the kernel's send path, its largest costs are two cache misses per subscriber:
//! taking the queue's lock and reading the descriptor out of the socket's own allocation.
//! [`prefetch`] starts the first for the subscribers ahead while the current one's `send`
//! runs; [`Socket`] keeps the descriptor next to the lock.
#![allow(unsafe_code)]

#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

use crate::wire::Conn;

/// Asks the CPU to bring the cache line holding `p` in, without waiting for it. A hint:
/// any address is fine, nothing is read.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults and has no effect other than on caches; SSE, which
    // it needs, is part of every x86_64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A connection's socket shared with a stream's queue (see [`crate::wire::Sink`]). On Unix
/// its descriptor is kept beside the handle, so that writing to it does not read the
/// socket's allocation. `tag` is a small value of the user's, kept in what would otherwise
/// be padding.
pub(crate) struct Socket<T> {
    /// Keeps `fd` open; on Unix read only for a TLS session (see [`conn`](Self::conn)).
    io: Arc<Conn>,
    #[cfg(unix)]
    fd: RawFd,
    pub(crate) tag: T,
}

impl<T> Socket<T> {
    pub(crate) fn new(io: Arc<Conn>, tag: T) -> Self {
        Socket {
            #[cfg(unix)]
            fd: io.as_raw_fd(),
            io,
            tag,
        }
    }

    /// The connection (its TLS session): a read of its allocation.
    pub(crate) fn conn(&self) -> &Conn {
        &self.io
    }

    /// The socket, for plain (non-blocking) `send`s that bypass tokio's readiness.
    pub(crate) fn sock_ref(&self) -> socket2::SockRef<'_> {
        #[cfg(unix)]
        return socket2::SockRef::from(self);
        #[cfg(not(unix))]
        return socket2::SockRef::from(self.io.plain_tcp().expect("a sink over TLS is Unix-only"));
    }
}

#[cfg(unix)]
impl<T> AsFd for Socket<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is `io`'s descriptor, and `io` keeps it open for as long as `self`
        // (and so the returned borrow) lives.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}
