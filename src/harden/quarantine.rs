//! `quarantine`: a freed block is not handed out again at once. It waits in
//! its freeing thread's quarantine, an array of `SLOTS` entries bounded by
//! count and by bytes (options `FORTALLOC_QUARANTINE` and
//! `FORTALLOC_QUARANTINE_BLOCKS`), and leaves it when a later free needs its
//! place: the one that leaves is drawn at random from all that wait, so
//! neither the last freed block nor the first comes back first. A dangling
//! pointer therefore keeps pointing at a free, wiped block for a while, and
//! an attacker cannot predict when, or as what, it is reused.
//!
//! While a block waits, the `double-free` bitmaps (which this defence turns
//! on) already say it is free: a second free, a `realloc` or a
//! `usable_size` of it is reported as for any freed block. With
//! `zero-on-free` it was wiped on the way in and must still be zero,
//! first word included, on the way out (checked by the caller).
//!
//! Huge blocks are not held: their memory is unmapped at once. A thread's
//! quarantine is emptied at its exit and by `collect`.

use super::random;
use crate::options;

pub const ON: bool = cfg!(feature = "quarantine");

/// Most blocks a thread's quarantine can hold (the array's length; the
/// option can only lower it). None without the feature.
pub const SLOTS: usize = if ON { 1024 } else { 0 };

/// The block bound in effect: the option, at most the array's length.
#[inline]
// Without the feature SLOTS is 0 and the comparison always false.
#[allow(clippy::absurd_extreme_comparisons)]
fn max_blocks() -> usize {
    let n = options::quarantine_blocks();
    if n < SLOTS {
        n
    } else {
        SLOTS
    }
}

/// Whether freed blocks are held at all (both bounds above zero).
#[inline]
pub fn in_effect() -> bool {
    max_blocks() > 0 && options::quarantine_bytes() > 0
}

/// The bounds in effect, read once per free.
#[derive(Clone, Copy)]
pub struct Bounds {
    blocks: usize,
    bytes: usize,
}

impl Bounds {
    #[inline]
    pub fn now() -> Bounds {
        Bounds {
            blocks: max_blocks(),
            bytes: options::quarantine_bytes(),
        }
    }
}

/// A thread's quarantine: the first `len` entries of `held` wait, and
/// `bytes` is their sum of block sizes.
#[repr(C)]
pub struct Quarantine {
    held: [Held; SLOTS],
    len: usize,
    bytes: usize,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Held {
    block: *mut u8,
    size: usize,
}

impl Quarantine {
    pub const fn new() -> Quarantine {
        Quarantine {
            held: [Held {
                block: core::ptr::null_mut(),
                size: 0,
            }; SLOTS],
            len: 0,
            bytes: 0,
        }
    }

    /// Blocks waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes waiting (block sizes).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes in `block` of `size` bytes, just freed. Returns null, or a
    /// block that must leave now: a random one of those waiting when the
    /// quarantine is full (possibly `block` itself), or `block` at once if
    /// the quarantine is off or `block` alone is over its byte bound. Call
    /// [`Quarantine::excess`] after it until that returns null.
    pub fn admit(&mut self, rng: &mut u64, block: *mut u8, size: usize, b: Bounds) -> *mut u8 {
        if b.blocks == 0 || size > b.bytes {
            return block;
        }
        if self.len < b.blocks {
            self.held[self.len] = Held { block, size };
            self.len += 1;
            self.bytes += size;
            return self.excess(rng, b);
        }
        // Full: the newcomer takes the place of a random one.
        let i = random::below(rng, self.len + 1);
        if i == self.len {
            return block;
        }
        let out = self.held[i];
        self.held[i] = Held { block, size };
        self.bytes = self.bytes - out.size + size;
        out.block
    }

    /// A random block that must leave because the quarantine is over a
    /// bound (after an admission, or after the bounds were lowered), or
    /// null when it is within both.
    pub fn excess(&mut self, rng: &mut u64, b: Bounds) -> *mut u8 {
        if self.len == 0 || (self.len <= b.blocks && self.bytes <= b.bytes) {
            return core::ptr::null_mut();
        }
        self.remove(random::below(rng, self.len))
    }

    /// Any one block, for emptying the quarantine; null once it is empty.
    pub fn drain_one(&mut self) -> *mut u8 {
        if self.len == 0 {
            return core::ptr::null_mut();
        }
        self.remove(self.len - 1)
    }

    fn remove(&mut self, i: usize) -> *mut u8 {
        let out = self.held[i];
        self.len -= 1;
        self.held[i] = self.held[self.len];
        self.bytes -= out.size;
        out.block
    }
}

#[cfg(all(test, feature = "quarantine"))]
mod tests {
    use super::*;

    fn block(i: usize) -> *mut u8 {
        (0x10_0000 + i * 64) as *mut u8
    }

    #[test]
    fn nothing_leaves_until_the_count_bound_and_then_a_random_one() {
        let mut q = Quarantine::new();
        let mut rng = 99;
        let n = options::quarantine_blocks().min(SLOTS);
        for i in 0..n {
            assert!(q.admit(&mut rng, block(i), 64, Bounds::now()).is_null(), "{i}");
        }
        assert_eq!((q.len(), q.bytes()), (n, n * 64));
        // Past the bound every admission lets one out, drawn from all the
        // n + 1 candidates: over many rounds, early and late blocks alike.
        let mut out = std::collections::HashSet::new();
        for i in n..n + 4 * n {
            let b = q.admit(&mut rng, block(i), 64, Bounds::now());
            assert!(!b.is_null());
            out.insert(b as usize);
        }
        assert_eq!(q.len(), n);
        let first_quarter = (0..n / 4).filter(|&i| out.contains(&(block(i) as usize))).count();
        assert!(
            first_quarter > n / 8,
            "{first_quarter} of the first {} left",
            n / 4
        );
        let mut left = 0;
        while !q.drain_one().is_null() {
            left += 1;
        }
        assert_eq!((left, q.len(), q.bytes()), (n, 0, 0));
    }

    #[test]
    fn the_byte_bound_lets_random_blocks_out_and_a_block_over_it_passes() {
        let mut q = Quarantine::new();
        let mut rng = 5;
        let max = options::quarantine_bytes();
        let big = max / 4 + 1;
        let mut out = 0;
        for i in 0..8 {
            let mut b = q.admit(&mut rng, block(i), big, Bounds::now());
            while !b.is_null() {
                out += 1;
                b = q.excess(&mut rng, Bounds::now());
            }
            assert!(q.bytes() <= max);
        }
        assert_eq!(q.len() + out, 8);
        assert_eq!(q.len(), 3);
        assert_eq!(q.admit(&mut rng, block(100), max + 1, Bounds::now()), block(100));
    }
}
