//! A spin lock for the few shared structures (abandoned segments, heap
//! pool, arenas, the classes of large blocks). It cannot use the allocator it protects, and is held
//! only for a handful of pointer updates and the odd `mmap`.
//!
//! The lock word holds its owner's thread token, not just a flag: in a
//! child process after `fork`, a lock whose owner is another thread can
//! never be released (that thread does not exist there), while one held by
//! the forking thread itself (a `fork` from a signal handler that
//! interrupted the allocator) will be, when the handler returns. See
//! `fork.rs`.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::os;

pub struct SpinLock {
    /// The owner's [`os::thread_token`], 0 when free.
    owner: AtomicUsize,
}

pub struct Guard<'a> {
    lock: &'a SpinLock,
}

/// Who holds a lock, as seen by the thread asking.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Holder {
    Nobody,
    Me,
    Other,
}

impl SpinLock {
    pub const fn new() -> SpinLock {
        SpinLock {
            owner: AtomicUsize::new(0),
        }
    }

    pub fn lock(&self) -> Guard<'_> {
        let me = os::thread_token();
        let mut spins = 0u32;
        while self
            .owner
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Waiters read until the lock looks free, then try again: a
            // failed compare-exchange takes the line for writing, and
            // waiters doing that in a loop slow the holder down.
            while self.owner.load(Ordering::Relaxed) != 0 {
                spins += 1;
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    os::yield_now();
                }
            }
        }
        Guard { lock: self }
    }

    /// Who holds the lock right now.
    pub fn holder(&self) -> Holder {
        match self.owner.load(Ordering::Acquire) {
            0 => Holder::Nobody,
            t if t == os::thread_token() => Holder::Me,
            _ => Holder::Other,
        }
    }

    /// Frees a lock whose owner no longer exists (in a `fork` child, once
    /// the structure it guards has been set aside).
    pub fn force_release(&self) {
        self.owner.store(0, Ordering::Release);
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_known_to_itself_and_to_others() {
        static L: SpinLock = SpinLock::new();
        assert_eq!(L.holder(), Holder::Nobody);
        let g = L.lock();
        assert_eq!(L.holder(), Holder::Me);
        let seen = std::thread::spawn(|| L.holder()).join().expect("thread");
        assert_eq!(seen, Holder::Other);
        drop(g);
        assert_eq!(L.holder(), Holder::Nobody);
    }
}
