//! The addon's allocator: mimalloc.
//!
//! Requests cross two threads (a tokio worker parses and answers, the JS thread runs the
//! handler), so much of what one thread allocates the other frees; mimalloc takes such
//! frees back without a global lock. Node's own allocations (V8, libuv) keep the system
//! allocator: this is the addon's `#[global_allocator]`, used by Rust code only.

#[cfg(not(target_env = "musl"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_arena_eager_commit` (its place in `mi_option_t`, the same in
/// mimalloc 2 and 3; the crate names no constant for it).
#[cfg(not(target_env = "musl"))]
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Process-wide allocator options, set once at load.
///
/// Arenas are committed on demand rather than eagerly (mimalloc's default on Linux), so
/// that many idle connections cost only the memory they touch.
pub(crate) fn configure() {
    #[cfg(not(target_env = "musl"))]
    // SAFETY: sets one of mimalloc's options, which it reads atomically; allowed at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
    }
}
