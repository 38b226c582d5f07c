//! Run-time options. Plain atomics, so reading one never allocates.

use core::sync::atomic::{AtomicU64, Ordering};

/// Default delay before empty pages go back to the OS (mimalloc v2: 10 ms).
pub const DEFAULT_PURGE_DELAY_MS: u64 = 10;

static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(DEFAULT_PURGE_DELAY_MS);

#[inline]
pub fn purge_delay_ms() -> u64 {
    PURGE_DELAY_MS.load(Ordering::Relaxed)
}

/// Sets the delay before empty pages are returned to the OS; 0 returns
/// them at once.
pub fn set_purge_delay_ms(ms: u64) {
    PURGE_DELAY_MS.store(ms, Ordering::Relaxed);
}
