//! The addon's allocator: mimalloc instead of the system's (glibc's malloc on Linux).
//!
//! Requests cross two threads (a tokio worker parses and answers, the JS thread runs the
//! handler), so much of what one thread allocates the other frees, and a batch of requests
//! is a vector of ~400-byte entries. glibc spent ~8% of the server's CPU on `/hello` in
//! malloc, free and the consolidation of its fast bins before each allocation of 1 KiB or
//! more; with mimalloc the same load takes ~9% less CPU per request (docs/benchmarks.md).
//! Node's own allocations (V8, libuv) keep the system allocator: this is the addon's
//! `#[global_allocator]`, used by Rust code only.

#[cfg(not(target_env = "musl"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (its place in `mi_option_t`, the same in
/// mimalloc 2 and 3; the crate names no constant for it).
#[cfg(not(target_env = "musl"))]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Process-wide allocator options, set once at load.
///
/// Arenas are committed on demand: committed eagerly (mimalloc's default on Linux), an idle
/// SSE connection cost ~1,890 bytes of RSS instead of ~1,370 (10,000 connections, the
/// `idle-10k` benchmark). With this, ~1,400.
pub(crate) fn configure() {
    #[cfg(not(target_env = "musl"))]
    // SAFETY: sets one of mimalloc's options, which it reads atomically; allowed at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
    }
}
