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

/// How often a runtime worker returns the memory its thread has freed.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// When this worker next returns freed memory (`None`: at its next park).
    static NEXT_TRIM: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// A worker asked the trim task to wake the runtime (see [`on_park`]).
static TRIM_ASKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Wakes the trim task.
static TRIM_WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The runtime's park hook, for memory: a worker that parks returns what its thread has
/// freed to the system (`mi_collect`) when a second has passed since it last did; one
/// that parks sooner has the trim task wake the runtime a second later, when it parks again.
///
/// mimalloc returns a freed page to the system 10 ms after the free (its `purge_delay`),
/// but only when the thread that freed it next allocates or frees: a server that goes
/// idle after a burst of connects (10,000 HTTP/2 streams opened in 0.3 s) kept the burst's
/// freed pages, 2 KiB per subscriber, for as long as it stayed idle. Purging at once instead
/// (`purge_delay` 0) puts syscalls on the request path; here a busy worker collects once a
/// second, and an idle one no more.
pub(crate) fn on_park() {
    let now = std::time::Instant::now();
    let due = NEXT_TRIM.with(|next| match next.get() {
        Some(at) if now < at => false,
        _ => {
            next.set(Some(now + TRIM_EVERY));
            true
        }
    });
    // A busy worker parks often: the shared flag is read before it is swapped.
    if due {
        #[cfg(not(target_env = "musl"))]
        // SAFETY: mimalloc's collection of the calling thread's heap and of the arenas'
        // pending purges; allowed at any time.
        unsafe {
            libmimalloc_sys::mi_collect(true);
        }
    } else if !TRIM_ASKED.load(std::sync::atomic::Ordering::Relaxed)
        && !TRIM_ASKED.swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        TRIM_WAKE.notify_one();
    }
}

/// The trim task: once asked, waits a second and ends its turn, so that the worker that ran
/// it parks again with its collection due (see [`on_park`]).
pub(crate) async fn trim_task() {
    loop {
        TRIM_WAKE.notified().await;
        tokio::time::sleep(TRIM_EVERY).await;
        TRIM_ASKED.store(false, std::sync::atomic::Ordering::Release);
    }
}
