//! A monotonic clock in milliseconds, for purge delays.

use core::sync::atomic::{AtomicU64, Ordering};

/// The last reading of [`now_ms`] by any thread.
static LAST: AtomicU64 = AtomicU64::new(0);

/// Milliseconds on the coarse monotonic clock: a vDSO read of the last tick,
/// several times cheaper than `CLOCK_MONOTONIC`, which showed up in a
/// slow-path-heavy benchmark (docs/PERFORMANCE.md, "The coarse clock").
/// Its resolution is one kernel tick, ample for purge delays of the
/// default's order.
pub fn now_ms() -> u64 {
    let ts = super::sys::clock_gettime(libc::CLOCK_MONOTONIC_COARSE);
    let now = (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000;
    // Stored only when it moved (once a tick), so threads reading the
    // clock do not keep writing one shared cache line.
    if LAST.load(Ordering::Relaxed) != now {
        LAST.store(now, Ordering::Relaxed);
    }
    now
}

/// Whether `due` (a purge time, 0 for none) has come by `now`, claiming it
/// (setting it to 0) for the calling thread if so: one thread purges, the
/// others carry on instead of queueing behind its madvise calls.
pub fn claim_due(due: &AtomicU64, now: u64) -> bool {
    let d = due.load(Ordering::Relaxed);
    d != 0
        && now >= d
        && due
            .compare_exchange(d, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// The clock as some thread last read it, for stamping when something
/// falls due: a free that schedules a purge need not read the clock
/// itself (a large free did, and with the slow path's reads that showed
/// in a mixed-size C workload: docs/PERFORMANCE.md, "Purge times stamped
/// from the last clock reading"). While purges are pending every slow
/// path reads the clock, so this lags by little in a busy process; in one
/// that has been idle it may lag more, and the purge then comes early.
pub fn recent_ms() -> u64 {
    match LAST.load(Ordering::Relaxed) {
        0 => now_ms(),
        t => t,
    }
}
