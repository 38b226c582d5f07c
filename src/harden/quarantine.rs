//! `quarantine`: a freed block is not handed out again at once. It waits in
//! its freeing thread's quarantine, an array of `SLOTS` entries bounded by
//! count and by bytes (options `FORTALLOC_QUARANTINE` and
//! `FORTALLOC_QUARANTINE_BLOCKS`). When a free finds it full, blocks drawn
//! at random from all that wait leave it until it is an eighth below both
//! bounds; then the newcomer enters. So neither the last freed block nor
//! the first comes back first, a block waits at least until the next such
//! round, and a dangling pointer keeps pointing at a free, wiped block for
//! a while: an attacker cannot predict when, or as what, it is reused.
//! Letting blocks out in rounds keeps the common free to a store into the
//! array, and lets the processor overlap the cache misses of the blocks
//! leaving (each was freed long ago).
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
use crate::meta::page::Page;
use crate::options;

pub const ON: bool = cfg!(feature = "quarantine");

/// Most blocks a thread's quarantine can hold (the array's length; the
/// option can only lower it). None without the feature.
pub const SLOTS: usize = if ON { options::MAX_QUARANTINE_BLOCKS } else { 0 };

/// The bounds in effect, read once per free.
#[derive(Clone, Copy)]
pub struct Bounds {
    blocks: usize,
    bytes: usize,
}

impl Bounds {
    #[inline(always)]
    pub fn now() -> Bounds {
        Bounds {
            // The option is kept at most MAX_QUARANTINE_BLOCKS.
            blocks: if ON { options::quarantine_blocks() } else { 0 },
            bytes: options::quarantine_bytes(),
        }
    }

    /// Whether freed blocks are held (both bounds above zero).
    #[inline(always)]
    pub fn holding(self) -> bool {
        self.blocks.min(self.bytes) > 0
    }

    /// The levels to let blocks out down to, to make room for a block of
    /// `size` bytes: an eighth below both bounds (at least one block below
    /// the count bound).
    #[inline(always)]
    pub fn room_for(self, size: usize) -> Room {
        Room {
            blocks: self.blocks - (self.blocks / 8).max(1),
            bytes: (self.bytes - self.bytes / 8).saturating_sub(size),
        }
    }

    /// Whether a block of `size` bytes can be held (it is not alone over
    /// the byte bound).
    #[inline(always)]
    pub fn can_hold(self, size: usize) -> bool {
        size <= self.bytes
    }
}

/// Levels at most which a full quarantine is let out to (see
/// [`Bounds::room_for`]).
#[derive(Clone, Copy)]
pub struct Room {
    blocks: usize,
    bytes: usize,
}

/// Whether freed blocks are held at all.
#[inline]
pub fn in_effect() -> bool {
    Bounds::now().holding()
}

/// A thread's quarantine: the first `len` entries of `held` wait, and
/// `bytes` is their sum of block sizes.
#[repr(C)]
pub struct Quarantine {
    held: [Held; SLOTS],
    len: usize,
    bytes: usize,
}

/// A waiting block with its page, kept so that leaving costs no second
/// lookup of the page (whose segment header is likely out of cache by
/// then); `block` is null for "none".
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Held {
    pub block: *mut u8,
    pub page: *mut Page,
    size: usize,
}

impl Held {
    /// A block not (or no longer) in any quarantine, for the paths that
    /// free it as if it left one.
    #[inline(always)]
    pub fn new(block: *mut u8, page: *mut Page, size: usize) -> Held {
        Held { block, page, size }
    }

    const NONE: Held = Held {
        block: core::ptr::null_mut(),
        page: core::ptr::null_mut(),
        size: 0,
    };

    /// Whether this names a block.
    #[inline]
    pub fn is_some(&self) -> bool {
        !self.block.is_null()
    }

    /// The block's size (its page's block size).
    #[inline(always)]
    pub fn size(&self) -> usize {
        self.size
    }
}

impl Quarantine {
    pub const fn new() -> Quarantine {
        Quarantine {
            held: [Held::NONE; SLOTS],
            len: 0,
            bytes: 0,
        }
    }

    /// Blocks waiting.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes waiting (block sizes).
    #[inline(always)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    #[inline(always)]
    fn set_levels(&mut self, len: usize, bytes: usize) {
        self.len = len;
        self.bytes = bytes;
    }

    /// Whether a block of `size` bytes needs room made first (with
    /// [`Quarantine::make_room`] and [`Bounds::room_for`]) before it can
    /// [enter](Quarantine::enter) within the bounds `b`.
    #[inline(always)]
    pub fn needs_room(&self, size: usize, b: Bounds) -> bool {
        self.len >= b.blocks || self.bytes + size > b.bytes
    }

    /// A random waiting block that must leave to make `room`; none once
    /// the quarantine is within it.
    #[inline(always)]
    pub fn make_room(&mut self, rng: &mut u64, room: Room) -> Held {
        let (len, bytes) = (self.len, self.bytes);
        if len == 0 || (len <= room.blocks && bytes <= room.bytes) {
            return Held::NONE;
        }
        self.remove(random::below(rng, len))
    }

    /// Takes in `block` of `page`, `size` bytes, just freed, when `b` is
    /// [holding](Bounds::holding) and [can hold](Bounds::can_hold) it and
    /// room was made for it. False if there was no room after all (the
    /// caller frees the block at once).
    #[inline(always)]
    pub fn enter(&mut self, block: *mut u8, page: *mut Page, size: usize, b: Bounds) -> bool {
        debug_assert!(b.holding() && b.can_hold(size) && !self.needs_room(size, b));
        let len = self.len;
        // Without the feature SLOTS is 0 and this always true (never
        // reached: nothing is held).
        #[allow(clippy::absurd_extreme_comparisons)]
        if len >= SLOTS {
            return false;
        }
        // SAFETY: `len < SLOTS` (checked above), the length of `held`.
        unsafe { *self.held.get_unchecked_mut(len) = Held::new(block, page, size) };
        self.set_levels(len + 1, self.bytes + size);
        true
    }

    /// Any one block, for emptying the quarantine; none once it is empty.
    pub fn drain_one(&mut self) -> Held {
        match self.len {
            0 => Held::NONE,
            len => self.remove(len - 1),
        }
    }

    /// Takes out entry `i` (none if it is past the last).
    fn remove(&mut self, i: usize) -> Held {
        let (len, bytes) = (self.len, self.bytes);
        if i >= len {
            return Held::NONE;
        }
        let last = len - 1;
        // SAFETY: i <= last < len <= SLOTS: entries are only added below
        // SLOTS (see `enter`).
        let out = unsafe {
            let out = *self.held.get_unchecked(i);
            *self.held.get_unchecked_mut(i) = *self.held.get_unchecked(last);
            out
        };
        self.set_levels(last, bytes - out.size);
        out
    }
}

#[cfg(all(test, feature = "quarantine"))]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Never read: the quarantine only carries it along.
    const PAGE: *mut Page = 0x1000 as *mut Page;

    fn block(i: usize) -> *mut u8 {
        (0x10_0000 + i * 64) as *mut u8
    }

    /// Frees `block(i)` of `size` bytes as the allocator does; returns the
    /// blocks let out for it.
    fn free(q: &mut Quarantine, rng: &mut u64, i: usize, size: usize, b: Bounds) -> Vec<*mut u8> {
        let mut out = Vec::new();
        if !b.can_hold(size) {
            return vec![block(i)];
        }
        if q.needs_room(size, b) {
            loop {
                let h = q.make_room(rng, b.room_for(size));
                if !h.is_some() {
                    break;
                }
                assert_eq!(h.page, PAGE);
                out.push(h.block);
            }
        }
        assert!(q.enter(block(i), PAGE, size, b));
        out
    }

    #[test]
    fn nothing_leaves_until_the_count_bound_and_then_random_ones_in_rounds() {
        let mut q = Quarantine::new();
        let mut rng = 99;
        let b = Bounds {
            blocks: 1024,
            bytes: 1 << 30,
        };
        for i in 0..1024 {
            assert!(free(&mut q, &mut rng, i, 64, b).is_empty(), "{i}");
        }
        assert_eq!((q.len(), q.bytes()), (1024, 1024 * 64));
        // The next free lets an eighth out, drawn from all that wait (not
        // the newcomer); then 127 frees let nothing out.
        let out = free(&mut q, &mut rng, 1024, 64, b);
        assert_eq!(out.len(), 128);
        assert!(!out.contains(&block(1024)));
        assert_eq!(q.len(), 1024 - 128 + 1);
        for i in 1025..1025 + 127 {
            assert!(free(&mut q, &mut rng, i, 64, b).is_empty(), "{i}");
        }
        // Over many rounds, early and late blocks alike leave.
        let mut left = std::collections::HashSet::new();
        left.extend(out.iter().map(|&p| p as usize));
        for i in 1152..1152 + 4096 {
            left.extend(free(&mut q, &mut rng, i, 64, b).iter().map(|&p| p as usize));
        }
        let first_quarter = (0..256).filter(|&i| left.contains(&(block(i) as usize))).count();
        assert!(first_quarter > 128, "{first_quarter} of the first 256 left");
        let late = (1152..1152 + 256)
            .filter(|&i| left.contains(&(block(i) as usize)))
            .count();
        assert!(late > 128, "{late} of 256 later ones left");
        let held = q.len();
        assert!((1024 - 128 + 1..=1024).contains(&held), "{held}");
        let mut drained = 0;
        while q.drain_one().is_some() {
            drained += 1;
        }
        assert_eq!((drained, q.len(), q.bytes()), (held, 0, 0));
    }

    #[test]
    fn the_byte_bound_lets_random_blocks_out_and_a_block_over_it_passes() {
        let mut q = Quarantine::new();
        let mut rng = 5;
        let b = Bounds {
            blocks: 1024,
            bytes: 4096,
        };
        let mut out = 0;
        for i in 0..8 {
            out += free(&mut q, &mut rng, i, 1025, b).len();
            assert!(q.bytes() <= 4096);
        }
        assert_eq!(q.len() + out, 8);
        // 3 fit under the bound; room for a fourth leaves at most 2.
        assert!((2..=3).contains(&q.len()), "{}", q.len());
        assert!(!b.can_hold(4097));
    }

    #[test]
    fn a_lowered_bound_lets_the_excess_out_at_the_next_free() {
        let mut q = Quarantine::new();
        let mut rng = 7;
        let b = Bounds {
            blocks: 512,
            bytes: 1 << 30,
        };
        for i in 0..512 {
            free(&mut q, &mut rng, i, 64, b);
        }
        assert_eq!(q.len(), 512);
        let low = Bounds {
            blocks: 16,
            bytes: 1 << 30,
        };
        let out = free(&mut q, &mut rng, 512, 64, low);
        assert_eq!((out.len(), q.len()), (512 - 14, 15));
    }
}
