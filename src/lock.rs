//! A spin lock for the few global structures (abandoned segments, huge
//! cache, heap pool). It cannot use the allocator it protects, and is held
//! only for a handful of pointer updates.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::os;

pub struct SpinLock {
    locked: AtomicBool,
}

pub struct Guard<'a> {
    lock: &'a SpinLock,
}

impl SpinLock {
    pub const fn new() -> SpinLock {
        SpinLock {
            locked: AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> Guard<'_> {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                os::yield_now();
            }
        }
        Guard { lock: self }
    }

    /// Takes the lock with no guard, for `fork` handlers that take it in one
    /// call and release it in another.
    pub fn acquire(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken with [`SpinLock::acquire`].
    pub fn release(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
