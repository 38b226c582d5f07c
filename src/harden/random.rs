//! Randomness for the hardened build: wyrand, a 64-bit generator of one add
//! and one 128-bit multiply per draw, seeded from `getrandom`. It is not a
//! cryptographic generator; its outputs choose free-list orders and page
//! keys, and an attacker who can read heap metadata has already won more
//! than these hide.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::error;
use crate::os;

const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

#[inline(always)]
fn mix(state: u64) -> u64 {
    let t = (state as u128).wrapping_mul((state ^ MIX) as u128);
    ((t >> 64) as u64) ^ (t as u64)
}

/// Next draw of a generator whose state the caller owns (a heap's).
#[inline(always)]
pub fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(INCREMENT);
    mix(*state)
}

/// A uniform draw below `n` (n >= 1), by multiply-shift: bias at most n/2^64.
#[inline(always)]
pub fn below(state: &mut u64, n: usize) -> usize {
    ((next(state) as u128 * n as u128) >> 64) as usize
}

/// A fresh seed from the kernel. Without one the hardened build stops with
/// a message rather than run with secrets an attacker could guess (why:
/// SECURITY.md, "Randomness").
pub fn seed() -> u64 {
    match os::random_u64() {
        Some(v) => v,
        None => error::fatal_message(
            "no randomness from the kernel (getrandom(2) and /dev/urandom both failed): \
             the hardened build does not run with guessable secrets",
        ),
    }
}

/// Process-wide generator for callers without a heap at hand (page keys).
/// wyrand's state only ever adds a constant, so an atomic add makes it
/// safe to share.
static SHARED: AtomicU64 = AtomicU64::new(0);

/// A draw from the shared generator, seeding it on first use.
pub fn shared_next() -> u64 {
    if SHARED.load(Ordering::Relaxed) == 0 {
        // Racing seeders: one wins, the others' seeds are dropped.
        let _ = SHARED.compare_exchange(0, seed() | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    mix(SHARED
        .fetch_add(INCREMENT, Ordering::Relaxed)
        .wrapping_add(INCREMENT))
}

/// In a `fork` child: a new seed for the shared generator (if it was
/// seeded), so sibling children do not draw their parent's next keys.
pub fn reseed_after_fork() {
    if SHARED.load(Ordering::Relaxed) != 0 {
        SHARED.store(seed() | 1, Ordering::Relaxed);
    }
}

/// The shared generator's state (for tests).
#[cfg(test)]
pub fn shared_state() -> u64 {
    SHARED.load(Ordering::Relaxed)
}

/// How far `later` is from `earlier` in draws of the shared generator, if
/// it is within `max` (for tests).
#[cfg(test)]
pub fn draws_between(earlier: u64, later: u64, max: u64) -> Option<u64> {
    (0..=max).find(|&k| earlier.wrapping_add(k.wrapping_mul(INCREMENT)) == later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_below_n_cover_the_range_evenly() {
        let mut s = 12345;
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[below(&mut s, 10)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(seed(), seed());
        assert_ne!(shared_next(), shared_next());
    }
}
