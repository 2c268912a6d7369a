//! Giving freed memory back to the operating system after a burst.
//!
//! The binary's allocator (mimalloc, `main.rs`) returns the pages a thread freed lazily: when
//! that thread allocates or frees again after the purge delay. The public listener's thread
//! may then sit idle: after a thousand stalled uploads were cut off, their buffers stayed
//! resident, 4 to 16 MiB above rest (bench/README.md, attack f3). A collection every second on
//! that thread hands them back; it costs microseconds when there is nothing to return. The
//! decision threads need none: they allocate on every callout.

use std::time::Duration;

/// How often the public thread collects.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Collects the calling runtime thread's freed memory every [`COLLECT_EVERY`]; spawn it on
/// the public runtime. Harmless under another global allocator (tests): mimalloc's heap of
/// the thread is then empty.
pub async fn return_freed_memory() {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: `mi_collect` takes no pointers and may be called on any thread at any
        // time; `false` asks for the normal (not the forced, costlier) collection.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}
