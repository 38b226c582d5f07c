//! `quarantine`: a freed block is not handed out again at once. It waits in
//! its freeing thread's quarantine, an array of `SLOTS` entries bounded by
//! count and by bytes (options `FORTALLOC_QUARANTINE` and
//! `FORTALLOC_QUARANTINE_BLOCKS`) and by its share of a process bound (see
//! below). When a free finds it full, blocks drawn at random from all that
//! wait leave it until it is an eighth below the count bound and its
//! share; then the newcomer enters. So neither the last freed block nor
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
//!
//! The threads' quarantines together hold at most a process bound
//! (`FORTALLOC_QUARANTINE_PROCESS`), so that many threads do not multiply
//! the per-thread bound. Each quarantine holds a *claim* on it, the bytes
//! it may fill, and the sum of all claims lives in one shared counter
//! ([`Pool`]) beside the number of quarantines holding one. A free
//! compares the quarantine's bytes with its own claim, as it did with the
//! per-thread bound, and touches nothing shared; only a round (a free that
//! finds the quarantine full) looks at the counter and claims again: the
//! bytes the other quarantines leave, no more than the per-thread bound
//! and no more than the process bound divided among the quarantines
//! holding a claim. A quarantine whose new claim is smaller lets blocks
//! out down to it in the same round, so the threads' claims settle to
//! even shares as they go on freeing, and their sum never passes the
//! bound. Emptying a quarantine gives its claim back.
//!
//! A thread that holds blocks and stops freeing keeps its claim until it
//! exits or calls `collect`: a busy thread beside many such ones gets
//! what they leave, down to nothing.

use core::sync::atomic::{AtomicU64, Ordering};

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

    /// Whether a block of `size` bytes can be held (it is not alone over
    /// the byte bound).
    #[inline(always)]
    pub fn can_hold(self, size: usize) -> bool {
        size <= self.bytes
    }
}

/// Levels at most which a full quarantine is let out to (see
/// [`Quarantine::round`]).
#[derive(Clone, Copy)]
pub struct Room {
    blocks: usize,
    bytes: usize,
}

/// The shared counter of the quarantines' claims on the process bound:
/// claimed bytes in the low [`BYTES_BITS`] bits, the number of quarantines
/// holding a claim above them, so that both change in one atomic step.
pub struct Pool {
    claims: AtomicU64,
}

const BYTES_BITS: u32 = 40;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;

impl Pool {
    pub const fn new() -> Pool {
        Pool {
            claims: AtomicU64::new(0),
        }
    }

    /// Bytes claimed by all quarantines now.
    #[cfg(all(test, feature = "quarantine"))]
    pub fn claimed(&self) -> usize {
        (self.claims.load(Ordering::Relaxed) & BYTES_MASK) as usize
    }

    /// Quarantines holding a claim now.
    #[cfg(all(test, feature = "quarantine"))]
    pub fn holders(&self) -> usize {
        (self.claims.load(Ordering::Relaxed) >> BYTES_BITS) as usize
    }
}

/// The process's pool of claims.
static POOL: Pool = Pool::new();

/// Whether freed blocks are held at all.
#[inline]
pub fn in_effect() -> bool {
    Bounds::now().holding()
}

/// A thread's quarantine: the first `len` entries of `held` wait, and
/// `bytes` is their sum of block sizes, at most `claim`, its claim on the
/// process bound (after a round has let the blocks over it out); `owed`
/// is what a round took off the claim that the pool still counts until
/// then, and `counted` whether the pool counts it among the holders.
#[repr(C)]
pub struct Quarantine {
    held: [Held; SLOTS],
    len: usize,
    bytes: usize,
    claim: usize,
    owed: usize,
    counted: bool,
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
            claim: 0,
            owed: 0,
            counted: false,
        }
    }

    /// Its claim on the process bound: the bytes it may hold.
    #[cfg(all(test, feature = "quarantine"))]
    pub fn claim(&self) -> usize {
        self.claim
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

    /// Whether a block of `size` bytes needs a [round](Quarantine::round)
    /// first before it can [enter](Quarantine::enter) within the count
    /// bound of `b` and the quarantine's claim (which the round renews).
    #[inline(always)]
    pub fn needs_room(&self, size: usize, b: Bounds) -> bool {
        self.len >= b.blocks || self.bytes + size > self.claim
    }

    /// Starts a round for a newcomer of `size` bytes: claims again from
    /// the process's pool (see the module's comment) and returns the
    /// levels to let blocks out down to with [`Quarantine::make_room`], an
    /// eighth below the count bound and the new claim. If the newcomer is
    /// larger than the claim, it still [needs room](Quarantine::needs_room)
    /// afterwards, and the caller frees it at once.
    #[inline]
    pub fn round(&mut self, size: usize, b: Bounds) -> Room {
        self.round_in(&POOL, options::quarantine_process_bytes(), size, b)
    }

    /// [`Quarantine::round`] with the pool and process bound given.
    fn round_in(&mut self, pool: &Pool, process: usize, size: usize, b: Bounds) -> Room {
        self.claim_from(pool, process, b.bytes);
        let claim = self.claim;
        let level = claim - claim / 8;
        Room {
            blocks: b.blocks - (b.blocks / 8).max(1),
            bytes: if size <= claim {
                level.saturating_sub(size)
            } else {
                level
            },
        }
    }

    /// Sets this quarantine's claim on `pool` to its share: the bytes the
    /// other quarantines leave of `process`, at most `per_thread` and at
    /// most `process` divided among the holders (this one included). The
    /// shared counter is written only when the claim changes; a smaller
    /// claim is written once the blocks over it have left (see
    /// [`Quarantine::make_room`]), so that no other quarantine fills the
    /// bytes while this one still holds them.
    fn claim_from(&mut self, pool: &Pool, process: usize, per_thread: usize) {
        let process = process.min(BYTES_MASK as usize);
        let mut now = pool.claims.load(Ordering::Relaxed);
        loop {
            let holders = (now >> BYTES_BITS) + u64::from(!self.counted);
            let mine = self.claim + self.owed;
            let others = ((now & BYTES_MASK) as usize).saturating_sub(mine);
            let share = (process / holders.max(1) as usize).min(per_thread);
            let claim = share.min(process.saturating_sub(others));
            if self.counted && claim <= self.claim {
                self.owed += self.claim - claim;
                self.claim = claim;
                return;
            }
            let next = (holders << BYTES_BITS) | (others + claim) as u64;
            match pool
                .claims
                .compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.claim = claim;
                    self.owed = 0;
                    self.counted = true;
                    return;
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// Gives the claim back to the process's pool, when the quarantine
    /// has been emptied.
    #[inline]
    pub fn release_claim(&mut self) {
        self.release_to(&POOL);
    }

    /// [`Quarantine::release_claim`] to `pool`.
    fn release_to(&mut self, pool: &Pool) {
        debug_assert!(self.len == 0);
        if !self.counted {
            return;
        }
        let mine = (1u64 << BYTES_BITS) | (self.claim + self.owed) as u64;
        pool.claims.fetch_sub(mine, Ordering::Relaxed);
        self.claim = 0;
        self.owed = 0;
        self.counted = false;
    }

    /// Gives `pool` back the bytes this quarantine's claim shrank by, now
    /// that it holds no more than its claim.
    #[cold]
    fn pay_back(&mut self, pool: &Pool) {
        pool.claims.fetch_sub(self.owed as u64, Ordering::Relaxed);
        self.owed = 0;
    }

    /// In a `fork` child: the pool counts only `mine`, the quarantine of
    /// the child's one thread (if it has a heap); the other threads'
    /// quarantines are gone with them, as their heaps are.
    pub fn after_fork(mine: Option<&Quarantine>) {
        let kept = match mine {
            Some(q) if q.counted => (1u64 << BYTES_BITS) | (q.claim + q.owed) as u64,
            _ => 0,
        };
        POOL.claims.store(kept, Ordering::Relaxed);
    }

    /// A random waiting block that must leave to make `room`; none once
    /// the quarantine is within it (and then the bytes a smaller claim
    /// freed go back to the process's pool).
    #[inline(always)]
    pub fn make_room(&mut self, rng: &mut u64, room: Room) -> Held {
        self.make_room_in(&POOL, rng, room)
    }

    /// [`Quarantine::make_room`] for a quarantine claiming from `pool`.
    #[inline(always)]
    fn make_room_in(&mut self, pool: &Pool, rng: &mut u64, room: Room) -> Held {
        let (len, bytes) = (self.len, self.bytes);
        if len == 0 || (len <= room.blocks && bytes <= room.bytes) {
            if self.owed != 0 {
                self.pay_back(pool);
            }
            return Held::NONE;
        }
        self.remove(random::below(rng, len))
    }

    /// Takes in `block` of `page`, `size` bytes, just freed, when `b` is
    /// [holding](Bounds::holding) and [can hold](Bounds::can_hold) it and
    /// it does not [need room](Quarantine::needs_room) (or no longer, after
    /// a round). False if there was no room after all (the caller frees
    /// the block at once).
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

    /// A pool for the tests that do not look at the process bound, with
    /// one too large to matter.
    static UNBOUNDED: Pool = Pool::new();
    const NO_BOUND: usize = 1 << 39;

    /// Frees `block(i)` of `size` bytes as the allocator does, the
    /// process bound aside; returns the blocks let out for it.
    fn free(q: &mut Quarantine, rng: &mut u64, i: usize, size: usize, b: Bounds) -> Vec<*mut u8> {
        free_in(&UNBOUNDED, NO_BOUND, q, rng, i, size, b)
    }

    /// [`free`] with quarantines sharing `pool` and the process bound
    /// `process`; the block itself is among those returned if it could
    /// not enter.
    fn free_in(
        pool: &Pool,
        process: usize,
        q: &mut Quarantine,
        rng: &mut u64,
        i: usize,
        size: usize,
        b: Bounds,
    ) -> Vec<*mut u8> {
        let mut out = Vec::new();
        if !b.can_hold(size) {
            return vec![block(i)];
        }
        if q.needs_room(size, b) {
            let room = q.round_in(pool, process, size, b);
            loop {
                let h = q.make_room_in(pool, rng, room);
                if !h.is_some() {
                    break;
                }
                assert_eq!(h.page, PAGE);
                out.push(h.block);
            }
            if q.needs_room(size, b) {
                out.push(block(i));
                return out;
            }
        }
        assert!(q.enter(block(i), PAGE, size, b));
        out
    }

    /// Empties `q` as a thread's exit does, giving its claim back.
    fn empty(pool: &Pool, q: &mut Quarantine) {
        while q.drain_one().is_some() {}
        q.release_to(pool);
    }

    #[test]
    fn quarantines_share_the_process_bound_and_settle_to_even_shares() {
        const PROCESS: usize = 64 * 1024;
        let pool = Pool::new();
        let b = Bounds {
            blocks: 1024,
            bytes: 32 * 1024,
        };
        let mut qs: Vec<std::boxed::Box<Quarantine>> =
            (0..3).map(|_| std::boxed::Box::new(Quarantine::new())).collect();
        let mut rng = 11;
        let mut next = 0;
        let mut frees = |q: &mut Quarantine, n: usize, rng: &mut u64| {
            for _ in 0..n {
                free_in(&pool, PROCESS, q, rng, next, 64, b);
                next += 1;
                assert!(
                    q.bytes() <= q.claim(),
                    "{} over its claim {}",
                    q.bytes(),
                    q.claim()
                );
                assert!(pool.claimed() <= PROCESS, "{} claimed", pool.claimed());
            }
        };
        // Two quarantines fill the process bound at the per-thread bound.
        frees(&mut qs[0], 2000, &mut rng);
        frees(&mut qs[1], 2000, &mut rng);
        assert_eq!((qs[0].claim(), qs[1].claim()), (32 * 1024, 32 * 1024));
        assert!(qs[0].bytes() > 28 * 1024 - 256 && qs[1].bytes() > 28 * 1024 - 256);
        assert_eq!((pool.claimed(), pool.holders()), (PROCESS, 2));
        // A third finds nothing left: what it frees leaves at once, but it
        // is counted, so the others' next rounds shrink them to a third.
        let out = free_in(&pool, PROCESS, &mut qs[2], &mut rng, 1 << 20, 64, b);
        assert_eq!(out, vec![block(1 << 20)]);
        assert_eq!((qs[2].claim(), qs[2].len(), pool.holders()), (0, 0, 3));
        frees(&mut qs[0], 2000, &mut rng);
        frees(&mut qs[1], 2000, &mut rng);
        frees(&mut qs[2], 2000, &mut rng);
        let third = PROCESS / 3;
        for q in &qs {
            assert_eq!(q.claim(), third);
            assert!(
                q.bytes() > third - third / 8 - 256,
                "{} held of {third}",
                q.bytes()
            );
        }
        // Emptying one gives its claim back, and the others grow into it.
        empty(&pool, &mut qs[2]);
        assert_eq!((pool.claimed(), pool.holders()), (2 * third, 2));
        frees(&mut qs[0], 2000, &mut rng);
        frees(&mut qs[1], 2000, &mut rng);
        assert_eq!((qs[0].claim(), qs[1].claim()), (32 * 1024, 32 * 1024));
        empty(&pool, &mut qs[0]);
        empty(&pool, &mut qs[1]);
        assert_eq!((pool.claimed(), pool.holders()), (0, 0));
    }

    #[test]
    fn a_lowered_process_bound_lets_blocks_out_at_the_next_round() {
        let pool = Pool::new();
        let b = Bounds {
            blocks: 1024,
            bytes: 512 * 1024,
        };
        let mut q = std::boxed::Box::new(Quarantine::new());
        let mut rng = 3;
        for i in 0..4000 {
            free_in(&pool, 1 << 20, &mut q, &mut rng, i, 256, b);
        }
        assert_eq!(q.claim(), 512 * 1024);
        // The next round (within an eighth of the count bound's frees)
        // claims 32 KiB and lets all but that out.
        let mut out = 0;
        for i in 4000..4000 + 256 {
            out += free_in(&pool, 32 * 1024, &mut q, &mut rng, i, 256, b).len();
            if q.claim() == 32 * 1024 {
                break;
            }
        }
        assert_eq!(q.claim(), 32 * 1024);
        assert!(
            q.bytes() <= 32 * 1024 && out >= 768,
            "{} held, {out} out",
            q.bytes()
        );
        assert_eq!(pool.claimed(), 32 * 1024);
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
