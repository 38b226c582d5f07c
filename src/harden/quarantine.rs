//! `quarantine`: a freed block is not handed out again at once. It waits in
//! its freeing thread's quarantine, an array of `SLOTS` entries bounded by
//! count and by bytes (options `FORTALLOC_QUARANTINE` and
//! `FORTALLOC_QUARANTINE_BLOCKS`) and by its share of a process bound (see
//! below). Once it is full (at the count bound, or its bytes with the
//! newcomer's past its *level*, an eighth below its share), each free
//! *exchanges*: the newcomer takes the place of a waiting block drawn at
//! random, which leaves, as long as the bytes stay a thirty-second below
//! the share. So neither
//! the last freed block nor the first comes back first, and a dangling
//! pointer keeps pointing at a free, wiped block for a while: an attacker
//! cannot predict when, or as what, it is reused. Each free lets about as
//! many blocks out as it puts in, and a bounded number at most: letting
//! an eighth of the quarantine out at once, as the free that found it
//! full did, made the slowest frees of a program several times slower
//! than the rest. A newcomer that would take the bytes past a
//! thirty-second below the share starts a *round* instead, which lets out
//! up to [`ROUND`] random blocks towards the level; one that still does
//! not fit within the bounds makes more leave, up to [`ROUND_MOST`] in
//! all, if it is no larger than the eighth below the share; a larger one,
//! or one still without room, is freed at once.
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
use crate::meta::segment;
use crate::options;

pub const ON: bool = cfg!(feature = "quarantine");

/// Most blocks a thread's quarantine can hold (the array's length; the
/// option can only lower it). None without the feature.
pub const SLOTS: usize = if ON { options::MAX_QUARANTINE_BLOCKS } else { 0 };

/// Most blocks a round lets out to bring the quarantine towards its
/// levels: the most work a free does for the quarantine, but for room for
/// its own block (see [`ROUND_MOST`]). A block leaving is seldom in cache
/// (its link and its page's list are written), so the blocks a round lets
/// out make the slowest frees: with two, a round costs about what an
/// exchange does, and the quarantine comes down to its level over a few
/// frees rather than in one.
pub const ROUND: usize = 2;

/// Most blocks a round lets out in all, those past [`ROUND`] only while
/// the block being freed does not fit within the bounds.
pub const ROUND_MOST: usize = 8;

/// Blocks entering between two renewals of the claim on the process
/// bound (a power of two; a round renews it sooner when the newcomer does
/// not fit the claim): about as many frees as the rounds of a full
/// quarantine let an eighth of it out in before rounds were bounded.
const RENEW_EVERY: u32 = 128;

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

    /// Whether freed blocks are held (both bounds above zero): the byte
    /// bound in effect is zero when the block bound is (see
    /// `options::quarantine_bytes`), so one test says it, the one a free
    /// makes without a quarantine in effect. (Read apart from a change of
    /// the block bound to zero, a free finds no room and frees at once.)
    #[inline(always)]
    pub fn holding(self) -> bool {
        self.bytes > 0
    }

    /// Whether a block of `size` bytes can be held (it is not alone over
    /// the byte bound).
    #[inline(always)]
    pub fn can_hold(self, size: usize) -> bool {
        size <= self.bytes
    }
}

/// Levels at most which a full quarantine is let out to (see
/// [`Quarantine::round`]), and the bounds the newcomer of `size` bytes
/// must fit within, with the most blocks the round lets out for it.
#[derive(Clone, Copy)]
pub struct Room {
    blocks: usize,
    bytes: usize,
    bound: usize,
    size: usize,
    most: usize,
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

/// A thread's quarantine: the blocks at the first `len` entries of `held`
/// wait (their addresses alone: see [`Find`]), and
/// `bytes` is their sum of block sizes, at most `claim`, its claim on the
/// process bound, plus `owed`, what a round took off the claim that the
/// pool still counts until the blocks over it have left; `full` is the
/// byte level past which a free starts a round instead of an exchange (a
/// thirty-second below the claim), `level` the one from which it
/// exchanges and to which a round lets blocks out (an eighth below),
/// `out` how many blocks the current round let out, `entered` the count
/// of blocks that entered (wrapping; every [`RENEW_EVERY`]th needs a
/// round, which renews the claim), and `counted` whether the pool counts
/// it among the holders.
#[repr(C)]
pub struct Quarantine {
    held: [*mut u8; SLOTS],
    len: usize,
    bytes: usize,
    full: usize,
    level: usize,
    claim: usize,
    owed: usize,
    out: usize,
    entered: u32,
    counted: bool,
}

/// A block leaving the quarantine (or freed as if it left one) with its
/// page and size; `block` is null for "none".
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

/// How a waiting block's page and size are found as it leaves. The
/// quarantine keeps only block addresses: an entry of 8 bytes, where the
/// block with its page and size took 24, keeps the array a third the size
/// (8 KiB at 1,024 blocks), so that drawing a random entry finds it in
/// cache more often; the segment header and the page descriptor that
/// finding them reads are read by freeing the block anyway.
pub trait Find {
    /// The page and size of `block`.
    ///
    /// # Safety
    /// `block` must be waiting in a quarantine, having entered it as a
    /// freed block of an in-use page that is not huge.
    unsafe fn held(&self, block: *mut u8) -> Held;
}

/// [`Find`] in the allocator's own memory: the block's segment, its page
/// there and that page's block size.
#[derive(Clone, Copy)]
pub struct InPage;

impl Find for InPage {
    #[inline(always)]
    unsafe fn held(&self, block: *mut u8) -> Held {
        // SAFETY: a waiting block is still taken in its in-use page (this
        // fn's contract), so its segment is live and the header and the
        // page's descriptor are readable.
        unsafe {
            let seg = segment::of_block(block);
            let page = segment::page_of(seg, block);
            Held::new(block, page, (*page).block_size)
        }
    }
}

impl Quarantine {
    pub const fn new() -> Quarantine {
        Quarantine {
            held: [core::ptr::null_mut(); SLOTS],
            len: 0,
            bytes: 0,
            full: 0,
            level: 0,
            claim: 0,
            owed: 0,
            out: 0,
            entered: 0,
            counted: false,
        }
    }

    /// Its claim on the process bound: the bytes it may hold.
    #[cfg(all(test, feature = "quarantine"))]
    pub fn claim(&self) -> usize {
        self.claim
    }

    /// What the pool counts for it: its claim and what it still owes.
    #[cfg(all(test, feature = "quarantine"))]
    pub fn counted_bytes(&self) -> usize {
        self.claim + self.owed
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

    /// Whether a block of `size` bytes needs room first, by an
    /// [exchange](Quarantine::exchange) or else a [round](Quarantine::round):
    /// the quarantine is at the count bound of `b`, or the block would
    /// take it past its level, an eighth below its claim. Without it, the
    /// block [fits](Quarantine::fits).
    #[inline(always)]
    pub fn needs_room(&self, size: usize, b: Bounds) -> bool {
        self.len >= b.blocks || self.bytes + size > self.level
    }

    /// Puts `block`, `size` bytes, just freed and [needing
    /// room](Quarantine::needs_room), in the place of a random waiting
    /// block, and returns that one (to be freed) as `find` finds it; none
    /// if the quarantine cannot exchange now (it is empty, over a lowered
    /// count bound of `b`, the bytes would pass a thirty-second below the
    /// claim, or the claim is due for renewal): then the caller starts a
    /// [round](Quarantine::round).
    ///
    /// # Safety
    /// `block` and every block waiting must be blocks `find` can find
    /// (see [`Find::held`]).
    #[inline(always)]
    pub unsafe fn exchange(
        &mut self,
        rng: &mut u64,
        block: *mut u8,
        size: usize,
        b: Bounds,
        find: &impl Find,
    ) -> Held {
        let (len, bytes, entered) = (self.len, self.bytes, self.entered);
        // `len - 1 >= blocks`: empty, or over a lowered count bound.
        if len.wrapping_sub(1) >= b.blocks || bytes + size > self.full || entered.is_multiple_of(RENEW_EVERY)
        {
            return Held::NONE;
        }
        let i = random::below(rng, len);
        // SAFETY: `i < len <= SLOTS`, the length of `held`; the block
        // there waits, so `find` finds it (this fn's contract).
        let out = unsafe {
            let e = self.held.get_unchecked_mut(i);
            let out = *e;
            *e = block;
            find.held(out)
        };
        self.entered = entered.wrapping_add(1);
        self.bytes = bytes + size - out.size();
        out
    }

    /// Whether a block of `size` bytes can [enter](Quarantine::enter)
    /// within the count bound of `b` and the quarantine's claim (after a
    /// round: else the caller frees it at once).
    #[inline(always)]
    pub fn fits(&self, size: usize, b: Bounds) -> bool {
        self.len < b.blocks && self.bytes + size <= self.claim
    }

    /// Starts a round for a newcomer of `size` bytes: claims again from
    /// the process's pool (see the module's comment) every
    /// [`RENEW_EVERY`] rounds, or when the newcomer does not fit the
    /// claim, and returns the
    /// levels to let blocks out towards with [`Quarantine::make_room`], an
    /// eighth below the count bound and the new claim. If the newcomer
    /// does not [fit](Quarantine::fits) after the round (it is larger
    /// than the claim, or than the room [`ROUND_MOST`] blocks leave), the
    /// caller frees it at once.
    #[inline]
    pub fn round(&mut self, size: usize, b: Bounds) -> Room {
        self.round_in(&POOL, options::quarantine_process_bytes(), size, b)
    }

    /// [`Quarantine::round`] with the pool and process bound given.
    fn round_in(&mut self, pool: &Pool, process: usize, size: usize, b: Bounds) -> Room {
        if self.entered.is_multiple_of(RENEW_EVERY) || self.bytes + size > self.claim {
            self.claim_from(pool, process, b.bytes);
        }
        self.out = 0;
        let level = self.level;
        Room {
            blocks: b.blocks - (b.blocks / 8).max(1),
            bytes: level.saturating_sub(size),
            bound: b.blocks,
            size,
            // A block over the slack between the level and the claim
            // would need many blocks to leave; it enters only if it fits
            // after an ordinary round.
            most: if size <= self.claim - level {
                ROUND_MOST
            } else {
                ROUND
            },
        }
    }

    /// Sets the claim, and the levels that go with it.
    #[inline(always)]
    fn set_claim(&mut self, claim: usize) {
        self.claim = claim;
        self.level = claim - claim / 8;
        self.full = claim - claim / 32;
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
                self.set_claim(claim);
                return;
            }
            let next = (holders << BYTES_BITS) | (others + claim) as u64;
            match pool
                .claims
                .compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.set_claim(claim);
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
        self.set_claim(0);
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

    /// A random waiting block that leaves in this round: while the
    /// quarantine is above the levels of `room`, up to [`ROUND`] of them,
    /// and while the newcomer does not fit within the bounds, up to
    /// [`ROUND_MOST`]. None once the round is over (and then, if the
    /// quarantine is within its claim, the bytes a smaller claim freed go
    /// back to the process's pool).
    ///
    /// # Safety
    /// As for [`Quarantine::exchange`].
    #[inline(always)]
    pub unsafe fn make_room(&mut self, rng: &mut u64, room: Room, find: &impl Find) -> Held {
        // SAFETY: forwarded (this fn's contract).
        unsafe { self.make_room_in(&POOL, rng, room, find) }
    }

    /// [`Quarantine::make_room`] for a quarantine claiming from `pool`.
    ///
    /// # Safety
    /// As for [`Quarantine::exchange`].
    #[inline(always)]
    unsafe fn make_room_in(&mut self, pool: &Pool, rng: &mut u64, room: Room, find: &impl Find) -> Held {
        let (len, bytes, out) = (self.len, self.bytes, self.out);
        let above = out < ROUND && (len > room.blocks || bytes > room.bytes);
        if len != 0 && (above || (out < room.most && (len >= room.bound || bytes + room.size > self.claim))) {
            self.out = out + 1;
            // SAFETY: forwarded (this fn's contract).
            return unsafe { self.remove(random::below(rng, len), find) };
        }
        if self.owed != 0 && bytes <= self.claim {
            self.pay_back(pool);
        }
        Held::NONE
    }

    /// Takes in `block`, `size` bytes, just freed, when `b` is
    /// [holding](Bounds::holding) and [can hold](Bounds::can_hold) it and
    /// it does not [need room](Quarantine::needs_room) (or no longer, after
    /// a round). False if there was no room after all (the caller frees
    /// the block at once).
    #[inline(always)]
    pub fn enter(&mut self, block: *mut u8, size: usize, b: Bounds) -> bool {
        debug_assert!(b.holding() && b.can_hold(size) && self.fits(size, b));
        let len = self.len;
        // Without the feature SLOTS is 0 and this always true (never
        // reached: nothing is held).
        #[allow(clippy::absurd_extreme_comparisons)]
        if len >= SLOTS {
            return false;
        }
        // SAFETY: `len < SLOTS` (checked above), the length of `held`.
        unsafe { *self.held.get_unchecked_mut(len) = block };
        self.entered = self.entered.wrapping_add(1);
        self.set_levels(len + 1, self.bytes + size);
        true
    }

    /// Any one block, for emptying the quarantine; none once it is empty.
    ///
    /// # Safety
    /// As for [`Quarantine::exchange`].
    pub unsafe fn drain_one(&mut self, find: &impl Find) -> Held {
        match self.len {
            0 => Held::NONE,
            // SAFETY: forwarded (this fn's contract).
            len => unsafe { self.remove(len - 1, find) },
        }
    }

    /// Takes out entry `i` (none if it is past the last).
    ///
    /// # Safety
    /// As for [`Quarantine::exchange`].
    unsafe fn remove(&mut self, i: usize, find: &impl Find) -> Held {
        let (len, bytes) = (self.len, self.bytes);
        if i >= len {
            return Held::NONE;
        }
        let last = len - 1;
        // SAFETY: i <= last < len <= SLOTS: entries are only added below
        // SLOTS (see `enter`); the block at `i` waits, so `find` finds it
        // (this fn's contract).
        let out = unsafe {
            let out = *self.held.get_unchecked(i);
            *self.held.get_unchecked_mut(i) = *self.held.get_unchecked(last);
            find.held(out)
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

    std::thread_local! {
        /// The size each test block was freed with, by address.
        static SIZES: core::cell::RefCell<std::collections::HashMap<usize, usize>> =
            core::cell::RefCell::new(std::collections::HashMap::new());
    }

    /// Finds a test block's size where [`free_in`] recorded it; reads no
    /// memory of the block.
    struct Sizes;

    impl Find for Sizes {
        unsafe fn held(&self, block: *mut u8) -> Held {
            let size = SIZES.with(|m| m.borrow()[&(block as usize)]);
            Held::new(block, PAGE, size)
        }
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
    /// not enter. No free lets more than `ROUND_MOST` blocks out.
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
        SIZES.with(|m| m.borrow_mut().insert(block(i) as usize, size));
        if !b.can_hold(size) {
            return vec![block(i)];
        }
        if q.needs_room(size, b) {
            // SAFETY: `Sizes` finds every block `free_in` took in.
            let h = unsafe { q.exchange(rng, block(i), size, b, &Sizes) };
            if h.is_some() {
                assert_eq!(h.page, PAGE);
                return vec![h.block];
            }
            let room = q.round_in(pool, process, size, b);
            loop {
                // SAFETY: as above.
                let h = unsafe { q.make_room_in(pool, rng, room, &Sizes) };
                if !h.is_some() {
                    break;
                }
                assert_eq!(h.page, PAGE);
                out.push(h.block);
            }
            assert!(out.len() <= ROUND_MOST, "{} out in one free", out.len());
            if !q.fits(size, b) {
                out.push(block(i));
                return out;
            }
        }
        assert!(q.enter(block(i), size, b));
        out
    }

    /// Empties `q` as a thread's exit does, giving its claim back.
    fn empty(pool: &Pool, q: &mut Quarantine) {
        // SAFETY: `Sizes` finds every block `free_in` took in.
        while unsafe { q.drain_one(&Sizes) }.is_some() {}
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
                // Over a smaller claim, it still owes the pool the bytes
                // over it until they have left, a round at a time.
                assert!(
                    q.bytes() <= q.counted_bytes(),
                    "{} over what the pool counts for it, {}",
                    q.bytes(),
                    q.counted_bytes()
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
        // A round within RENEW_EVERY rounds (of one in ROUND frees, the
        // count bound holding) claims 32 KiB, and the rounds after it let
        // all but that out, ROUND_MOST blocks a free
        // (which `free_in` checks), while the pool keeps counting the
        // bytes held over the claim: the process bound holds meanwhile.
        let mut out = 0;
        let mut frees = 0;
        for i in 4000.. {
            out += free_in(&pool, 32 * 1024, &mut q, &mut rng, i, 256, b).len();
            frees += 1;
            assert!(
                pool.claimed() >= q.bytes(),
                "{} held, {} counted",
                q.bytes(),
                pool.claimed()
            );
            if q.claim() == 32 * 1024 && q.bytes() <= q.claim() {
                break;
            }
            let most = (RENEW_EVERY as usize + 1) * ROUND + 64;
            assert!(frees < most, "{} held after {frees} frees", q.bytes());
        }
        assert!(out >= 768, "{} held, {out} out", q.bytes());
        assert_eq!(pool.claimed(), 32 * 1024);
    }

    #[test]
    fn nothing_leaves_until_the_count_bound_and_then_random_ones_each_free() {
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
        // The next free finds the claim due for renewal (every
        // RENEW_EVERY entries): a round lets ROUND out, drawn from all
        // that wait (not the newcomer), and the frees after it enter
        // until the count bound; from then on each free exchanges: one
        // random block leaves, and the newcomer takes its place.
        let out = free(&mut q, &mut rng, 1024, 64, b);
        assert_eq!(out.len(), ROUND);
        assert!(!out.contains(&block(1024)));
        assert_eq!(q.len(), 1024 - ROUND + 1);
        for i in 1025..1025 + ROUND - 1 {
            assert!(free(&mut q, &mut rng, i, 64, b).is_empty(), "{i}");
        }
        let one = free(&mut q, &mut rng, 1024 + ROUND, 64, b);
        assert_eq!((one.len(), q.len()), (1, 1024));
        assert_ne!(one[0], block(1024 + ROUND));
        // Over many frees, none lets more than ROUND out, and early and
        // late blocks alike leave.
        let mut left = std::collections::HashSet::new();
        left.extend(out.iter().chain(&one).map(|&p| p as usize));
        for i in 1025 + ROUND..1025 + ROUND + 4096 {
            let out = free(&mut q, &mut rng, i, 64, b);
            assert!(out.len() <= ROUND, "{} out", out.len());
            left.extend(out.iter().map(|&p| p as usize));
        }
        let first_quarter = (0..256).filter(|&i| left.contains(&(block(i) as usize))).count();
        assert!(first_quarter > 128, "{first_quarter} of the first 256 left");
        let late = (1025 + ROUND..1025 + ROUND + 256)
            .filter(|&i| left.contains(&(block(i) as usize)))
            .count();
        assert!(late > 128, "{late} of 256 later ones left");
        let held = q.len();
        assert!((1024 - ROUND + 1..=1024).contains(&held), "{held}");
        let mut drained = 0;
        // SAFETY: `Sizes` finds every block `free_in` took in.
        while unsafe { q.drain_one(&Sizes) }.is_some() {
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
    fn a_lowered_bound_lets_the_excess_out_a_round_at_a_time_and_holds() {
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
        // Each free lets ROUND_MOST out while the quarantine is over the
        // bound (and frees its own block at once, finding no room), until
        // a round gets it below the bound and that free's block enters;
        // from then on it stays at the bound, each free exchanging, but
        // for the free whose block is the RENEW_EVERY-th to enter: that one
        // renews the claim in a round, which lets up to ROUND out towards
        // the level (an eighth below the bound), and the frees after it
        // enter until the bound.
        let mut out = 0;
        let mut frees = 0;
        while q.len() > 16 {
            let o = free(&mut q, &mut rng, 512 + frees, 64, low);
            frees += 1;
            assert!(o.len() <= ROUND_MOST + 1, "{}", o.len());
            out += o.len();
        }
        assert!(frees <= (512 - 16) / ROUND_MOST + 1, "{frees} frees");
        assert_eq!(q.len(), 16);
        assert_eq!(out, 512 + frees - 16);
        let mut renewed = 0;
        for i in 0..2 * RENEW_EVERY as usize {
            let (held, renews) = (q.len(), q.entered.is_multiple_of(RENEW_EVERY));
            let o = free(&mut q, &mut rng, 1024 + i, 64, low);
            if renews {
                renewed += 1;
                assert!((1..=ROUND).contains(&o.len()), "{} out", o.len());
                assert_eq!(q.len(), held + 1 - o.len());
            } else if held == 16 {
                assert_eq!((o.len(), q.len()), (1, 16));
            } else {
                assert_eq!((o.len(), q.len()), (0, held + 1));
            }
            assert!(q.len() > 16 - ROUND, "{}", q.len());
        }
        assert!(renewed >= 1);
    }
}
