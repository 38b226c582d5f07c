//! A monotonic clock in milliseconds, for purge delays.

/// Milliseconds on the coarse monotonic clock: a vDSO read of the last tick,
/// several times cheaper than `CLOCK_MONOTONIC`, which showed up in a
/// slow-path-heavy benchmark (docs/PERFORMANCE.md). Its resolution is one
/// kernel tick (4 ms at HZ=250), ample for purge delays of 10 ms.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
