//! Arenas: big reservations of address space carved into 4 MiB slices, from
//! which segments (one slice) and huge segments (a run of slices) are taken.
//!
//! ```text
//! arena (1 GiB reserved, NORESERVE, 4 MiB aligned)
//! +-------+-------+-------+-------+-----+-------+
//! | slice | slice | slice | slice | ... | slice |   256 slices of 4 MiB
//! +-------+-------+-------+-------+-----+-------+
//!   used bitmap: which slices belong to a live segment
//!   dirty bitmap: free slices whose pages may still be resident
//!   sealed bitmap: free slices the hardened build made inaccessible
//!   layout, guards: free slices left open with a segment's guards in
//!                   place: a small or medium one's page guards, a
//!                   segment of large slots' slot guards, or the guard
//!                   ranges of a huge one (hardened build, `Guards`)
//!   committed: bytes of each free slice counted as committed
//! ```
//!
//! Freed slices stay mapped and are reused first-fit from the lowest
//! address, so memory just freed is what is handed out next — still in the
//! cache, no page faults — whatever the size asked (mimalloc v2 does the
//! same). Dirty free slices are purged after the purge delay, so RSS falls
//! after a burst. All of it is behind one spin lock: it is taken once per
//! 4 MiB, not per allocation.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::meta::constants::{SEGMENT_SHIFT, SEGMENT_SIZE};
use crate::meta::guards::{Guards, Held, Prior, RANGES};
use crate::os::lock::{Holder, SpinLock};
use crate::{options, os, stats};

const SLICES: usize = 256;
const ARENA_SIZE: usize = SLICES << SEGMENT_SHIFT;
const MAX_ARENAS: usize = 128;
const WORDS: usize = SLICES / 64;

#[derive(Clone, Copy)]
struct Arena {
    base: usize,
    used: [u64; WORDS],
    dirty: [u64; WORDS],
    /// Free slices released inaccessible (`guard-pages`) past their first
    /// `segment::info_size` bytes: the next user opens only what it needs.
    sealed: [u64; WORDS],
    /// Slices freed without a seal (the plain build, or the kernel refused
    /// it): their protection is not known.
    unsealed: [u64; WORDS],
    /// Free slices released open with the guards of a segment (see
    /// [`Guards`]): the layout, 0 for none.
    layout: [u8; SLICES],
    /// Which guards of that layout the slice holds; for [`RANGES`], the
    /// slice's own ranges (`Guards::huge_slice`).
    guards: [u64; SLICES],
    /// Monotonic ms after which a dirty free slice is purged.
    purge_at: [u64; SLICES],
    /// Bytes of each free slice counted in `stats::COMMITTED`, as its last
    /// user left them (see [`hold`]); 0 once purged, and for used slices,
    /// whose segments count their own.
    committed: [u32; SLICES],
}

struct Arenas {
    list: [Arena; MAX_ARENAS],
    count: usize,
    /// Arenas below this index are retired: a `fork` child found them
    /// mid-change by a thread it does not have (see `fork.rs`). Spans in
    /// them stay valid until freed; freed ones are purged but never
    /// handed out again, since their bitmaps cannot be trusted.
    retired: usize,
}

struct ArenasCell(UnsafeCell<Arenas>);
// SAFETY: only touched under LOCK.
unsafe impl Sync for ArenasCell {}

const EMPTY_ARENA: Arena = Arena {
    base: 0,
    used: [0; WORDS],
    dirty: [0; WORDS],
    sealed: [0; WORDS],
    unsealed: [0; WORDS],
    layout: [0; SLICES],
    guards: [0; SLICES],
    purge_at: [0; SLICES],
    committed: [0; SLICES],
};
static ARENAS: ArenasCell = ArenasCell(UnsafeCell::new(Arenas {
    list: [EMPTY_ARENA; MAX_ARENAS],
    count: 0,
    retired: 0,
}));
pub(crate) static LOCK: SpinLock = SpinLock::new();
/// Earliest pending purge (monotonic ms), 0 if none.
static PURGE_DUE: AtomicU64 = AtomicU64::new(0);
/// Free slices left with page guards (see [`Guards`]). Each holds up to
/// 127 kernel mappings (a small one: 63 guards), so at most
/// [`GUARDED_FREE_MAX`] are kept when guards are `mprotect` ones: about
/// 8,100 of the default limit of 65,530.
static GUARDED_FREE: AtomicUsize = AtomicUsize::new(0);
const GUARDED_FREE_MAX: usize = 64;

/// Whether a segment being released may leave its page guards (else it is
/// sealed): always with guard markers, which cost no mappings; with
/// `mprotect` guards, until [`GUARDED_FREE_MAX`] free slices have theirs.
pub fn keep_guards() -> bool {
    crate::harden::GUARDED_SPANS
        && (!os::guards_split_mappings() || GUARDED_FREE.load(Ordering::Relaxed) < GUARDED_FREE_MAX)
}

fn bit(map: &[u64; WORDS], i: usize) -> bool {
    map[i / 64] & (1 << (i % 64)) != 0
}

fn set_bit(map: &mut [u64; WORDS], i: usize, on: bool) {
    if on {
        map[i / 64] |= 1 << (i % 64);
    } else {
        map[i / 64] &= !(1 << (i % 64));
    }
}

/// First run of `n` free slices, lowest address first; a single slice is
/// taken from the dirty free ones first, since its memory is still resident
/// and reusing it saves a purge now and page faults after.
fn find_run(a: &Arena, n: usize, want: u8) -> Option<usize> {
    if n == 1 && crate::harden::RANDOM_SPANS {
        // The hardened build takes a random free slice, so segment
        // addresses do not repeat from run to run. Among them it prefers
        // one left with the page guards the caller's segment needs (no
        // `mprotect` at all), then a resident (dirty) one, as the plain
        // build does (fresh ones cost a page fault per page touched).
        // Then one whose guards are known, or none at all, over one
        // another layout or an unknown user left: taking that one
        // removes guards over the whole slice, a walk of its page
        // tables. Then one next to a used slice: filling holes keeps the
        // runs that huge blocks need whole (picking anywhere broke them
        // up, and huge blocks then took cold memory that faults in again).
        let edge = |i: usize| {
            let used = |j: usize| j < SLICES && bit(&a.used, j);
            u32::from((i > 0 && used(i - 1)) || used(i + 1))
        };
        let score = |i: usize| {
            if bit(&a.used, i) {
                0
            } else {
                let known = !bit(&a.unsealed, i) && matches!(a.layout[i], 0 | RANGES);
                1 + 8 * u32::from(want != 0 && a.layout[i] == want)
                    + 4 * u32::from(bit(&a.dirty, i))
                    + 2 * u32::from(known)
                    + edge(i)
            }
        };
        // Scored once: three passes of the bitmaps took microseconds
        // under the arena's lock, in every new segment's malloc.
        let mut scores = [0u8; SLICES];
        let mut best = 0;
        let mut count = 0;
        for (i, s) in scores.iter_mut().enumerate() {
            *s = score(i) as u8;
            if *s > best {
                (best, count) = (*s, 0);
            }
            count += usize::from(*s == best);
        }
        if best == 0 {
            return None;
        }
        let k = crate::harden::pick_slot(count);
        return scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s == best)
            .nth(k)
            .map(|(i, _)| i);
    }
    if n == 1 {
        for (w, (&used, &dirty)) in a.used.iter().zip(a.dirty.iter()).enumerate() {
            let warm = !used & dirty;
            if warm != 0 {
                return Some(w * 64 + warm.trailing_zeros() as usize);
            }
        }
    }
    // A run of several: the one with the most resident (dirty) slices,
    // lowest address first, so a huge block freed a moment ago is reused
    // before the purge drops its pages rather than memory that faults in
    // again (single slices of other segments, placed at random in the
    // hardened build, would otherwise leave the lowest run cold).
    let mut best: Option<(usize, usize)> = None;
    let (mut run, mut warm) = (0, 0);
    for i in 0..SLICES {
        if bit(&a.used, i) {
            (run, warm) = (0, 0);
            continue;
        }
        run += 1;
        warm += usize::from(bit(&a.dirty, i));
        if run > n {
            warm -= usize::from(bit(&a.dirty, i - n));
        }
        if run >= n && best.is_none_or(|(_, w)| warm > w) {
            best = Some((i + 1 - n, warm));
            if warm == n {
                break;
            }
        }
    }
    best.map(|(start, _)| start)
}

/// A block of memory from an arena.
pub struct Span {
    pub ptr: *mut u8,
    /// All of it reads as zero (fresh or purged).
    pub zero: bool,
    /// Bytes of it counted as committed already (by its last user, not
    /// purged since): the new user's count starts from these.
    pub committed: usize,
    /// How its slices were left by their last user.
    pub prior: Prior,
    /// With [`Prior::Guarded`]: which guards of the layout asked for are
    /// in place (see [`Guards`]).
    pub guards: u64,
}

/// Takes `size` bytes (rounded up to whole slices), 4 MiB aligned. None
/// when the request does not fit an arena or memory ran out; the caller
/// then maps directly. `want`: the guard layout the caller would rather
/// find (see [`Guards`]), 0 for none.
pub fn alloc(size: usize, want: u8) -> Option<Span> {
    let n = size.div_ceil(SEGMENT_SIZE);
    if n == 0 || n > SLICES {
        return None;
    }
    let _g = LOCK.lock();
    // SAFETY: ARENAS is only touched under LOCK.
    let arenas = unsafe { &mut *ARENAS.0.get() };
    let mut found = None;
    for ai in arenas.retired..arenas.count {
        if let Some(start) = find_run(&arenas.list[ai], n, want) {
            found = Some((ai, start));
            break;
        }
    }
    let (ai, start) = match found {
        Some(f) => f,
        None => {
            if arenas.count == MAX_ARENAS {
                return None;
            }
            let hint = crate::harden::arena_hint(ARENA_SIZE);
            let base = os::map_aligned_at_hint(ARENA_SIZE, SEGMENT_SIZE, hint);
            if base.is_null() {
                return None;
            }
            crate::stats::RESERVED.increase(ARENA_SIZE);
            // SAFETY: the reservation was just made.
            unsafe { os::advise_huge_pages(base, ARENA_SIZE) };
            let ai = arenas.count;
            arenas.list[ai] = EMPTY_ARENA;
            arenas.list[ai].base = base as usize;
            arenas.count += 1;
            (ai, 0)
        }
    };
    let a = &mut arenas.list[ai];
    let (zero, prior, guards) = take(a, start, n, want);
    Some(Span {
        ptr: (a.base + (start << SEGMENT_SHIFT)) as *mut u8,
        zero,
        committed: release(a, start, n),
        prior,
        guards,
    })
}

/// Marks slices `[start, start + n)` of `a` used, and says how they come:
/// all zero (none dirty), their protection, and with [`Prior::Guarded`]
/// the guards of the layout asked for that are in place.
fn take(a: &mut Arena, start: usize, n: usize, want: u8) -> (bool, Prior, u64) {
    let mut zero = true;
    let mut sealed = 0;
    let mut unknown = false;
    let mut guarded = 0;
    let mut guards = 0;
    // Guard ranges of slices a huge segment left, if they fit.
    let mut held = Held::default();
    let mut ranged = false;
    for i in start..start + n {
        set_bit(&mut a.used, i, true);
        if bit(&a.dirty, i) {
            zero = false;
        }
        if bit(&a.sealed, i) {
            sealed += 1;
            set_bit(&mut a.sealed, i, false);
        }
        if bit(&a.unsealed, i) {
            unknown = true;
            set_bit(&mut a.unsealed, i, false);
        }
        if a.layout[i] != 0 {
            let left = Guards {
                layout: a.layout[i],
                mask: a.guards[i],
            };
            if left.layout == RANGES {
                ranged = true;
                unknown |= !held.add_slice(i - start, left.mask);
            } else if left.layout == want {
                guarded += 1;
                guards = left.mask;
            } else {
                unknown = true;
            }
            a.layout[i] = 0;
            a.guards[i] = 0;
            if left.instead_of_seal() {
                GUARDED_FREE.fetch_sub(1, Ordering::Relaxed);
            }
        }
        // Assume it will be written: dirty until purged after its next free.
        set_bit(&mut a.dirty, i, true);
        a.purge_at[i] = 0;
    }
    let prior = match sealed {
        _ if unknown => Prior::Mixed,
        0 if guarded == n && n == 1 => Prior::Guarded,
        _ if guarded > 0 => Prior::Mixed,
        0 if ranged => Prior::Ranges(held),
        0 => Prior::Open,
        s if s == n => Prior::Sealed,
        _ => Prior::Mixed,
    };
    (zero, prior, guards)
}

/// Records that the free slices `[start, start + n)` of `a` hold `bytes`
/// counted as committed, filling the first slices first: what a segment
/// still counts when it is released is mostly its header, which lies in
/// its first slice. (How the bytes are spread matters only to which purge
/// takes them off: every count is given back in full.)
fn hold(a: &mut Arena, start: usize, n: usize, bytes: usize) {
    let mut left = bytes;
    let end = (start + n).min(SLICES);
    for i in start..end {
        // The last slice takes the rest, so every byte counted is given
        // back (`segment::os_free` passes at most the span's size).
        let here = if i + 1 == end {
            left
        } else {
            left.min(SEGMENT_SIZE)
        };
        let here = here.min(u32::MAX as usize);
        a.committed[i] = a.committed[i].saturating_add(here as u32);
        left -= here;
    }
}

/// Takes the committed bytes of slices `[start, start + n)` off `a`'s
/// books: for their new user to count, or because they were just purged.
fn release(a: &mut Arena, start: usize, n: usize) -> usize {
    let mut bytes = 0;
    for i in start..(start + n).min(SLICES) {
        bytes += a.committed[i] as usize;
        a.committed[i] = 0;
    }
    bytes
}

/// Marks slices `[start, start + n)` of `a` free, left as `sealed` and
/// `guards` say (see [`free`]), to be purged at `due`.
fn give_back(a: &mut Arena, start: usize, n: usize, sealed: bool, guards: Guards, due: u64) {
    let ranges = guards.layout == RANGES;
    let known = sealed || (guards.layout != 0 && (n == 1 || ranges));
    for i in start..(start + n).min(SLICES) {
        set_bit(&mut a.used, i, false);
        set_bit(&mut a.sealed, i, sealed);
        set_bit(&mut a.unsealed, i, !known);
        // Purging keeps protections, so the layout outlives it.
        (a.layout[i], a.guards[i]) = if known && !sealed {
            if guards.instead_of_seal() {
                GUARDED_FREE.fetch_add(1, Ordering::Relaxed);
            }
            let mask = if ranges {
                guards.huge_slice(i - start)
            } else {
                guards.mask
            };
            (guards.layout, mask)
        } else {
            (0, 0)
        };
        a.purge_at[i] = due;
    }
}

/// Returns `size` bytes at `p` (from [`alloc`]) to the arena; their pages go
/// back to the OS after the purge delay. `sealed`: the caller made all of
/// it past `segment::info_size` inaccessible (see [`Prior::Sealed`]); else
/// `guards` says what it left guarded, if anything (one slice only).
/// `committed`: the bytes of it the caller counted as committed, which the
/// arena counts from now on, until it purges them or hands them out.
///
/// # Safety
/// `[p, p+size)` must be a span from [`alloc`] that nothing uses any more.
pub unsafe fn free(p: *mut u8, size: usize, sealed: bool, guards: Guards, committed: usize) {
    let n = size.div_ceil(SEGMENT_SIZE);
    let delay = options::arena_purge_delay_ms();
    let due = if delay == 0 { 0 } else { os::recent_ms() + delay };
    let _g = LOCK.lock();
    // SAFETY: ARENAS is only touched under LOCK.
    let arenas = unsafe { &mut *ARENAS.0.get() };
    let Some(ai) = arenas.list[..arenas.count]
        .iter()
        .position(|a| (p as usize).wrapping_sub(a.base) < ARENA_SIZE)
    else {
        // Not ours (never so for a span from `alloc`): its state unknown,
        // it stays counted.
        return;
    };
    if ai < arenas.retired {
        // Its memory goes back to the OS; its slices stay marked used.
        crate::meta::segment_map::remove_range(p as usize, n << SEGMENT_SHIFT);
        // SAFETY: the span is free and its contents dead.
        unsafe { os::purge(p, n << SEGMENT_SHIFT) };
        stats::COMMITTED.decrease(committed);
        return;
    }
    let a = &mut arenas.list[ai];
    let start = (p as usize - a.base) >> SEGMENT_SHIFT;
    give_back(a, start, n, sealed, guards, due);
    if delay == 0 {
        crate::meta::segment_map::remove_range(p as usize, n << SEGMENT_SHIFT);
        // SAFETY: the span is free and its contents dead.
        unsafe { os::purge(p, n << SEGMENT_SHIFT) };
        stats::COMMITTED.decrease(committed);
        for i in start..(start + n).min(SLICES) {
            set_bit(&mut a.dirty, i, false);
        }
        return;
    }
    hold(a, start, n, committed);
    let cur = PURGE_DUE.load(Ordering::Relaxed);
    if cur == 0 || due < cur {
        PURGE_DUE.store(due, Ordering::Relaxed);
    }
}

/// When the earliest dirty free slice falls due for purging, 0 if none.
pub fn purge_due() -> u64 {
    PURGE_DUE.load(Ordering::Relaxed)
}

/// Purges dirty free slices whose delay passed (all of them with `force`).
pub fn purge(force: bool) {
    let now = os::now_ms();
    let _g = LOCK.lock();
    // SAFETY: ARENAS is only touched under LOCK.
    let arenas = unsafe { &mut *ARENAS.0.get() };
    let mut next_due = 0u64;
    for a in arenas.list[arenas.retired..arenas.count].iter_mut() {
        let mut i = 0;
        while i < SLICES {
            let ready =
                |a: &Arena, i: usize| !bit(&a.used, i) && bit(&a.dirty, i) && (force || a.purge_at[i] <= now);
            if !ready(a, i) {
                if !bit(&a.used, i) && bit(&a.dirty, i) && (next_due == 0 || a.purge_at[i] < next_due) {
                    next_due = a.purge_at[i];
                }
                i += 1;
                continue;
            }
            // Purge the whole run of ready slices with one call.
            let start = i;
            while i < SLICES && ready(a, i) {
                set_bit(&mut a.dirty, i, false);
                i += 1;
            }
            let (p, len) = (a.base + (start << SEGMENT_SHIFT), (i - start) << SEGMENT_SHIFT);
            // Stale segment-map entries (hardened build) go before their
            // headers read as zero.
            crate::meta::segment_map::remove_range(p, len);
            // SAFETY: these slices are free, in our reservation, and dead.
            unsafe { os::purge(p as *mut u8, len) };
            stats::COMMITTED.decrease(release(a, start, i - start));
        }
    }
    PURGE_DUE.store(next_due, Ordering::Relaxed);
}

/// In a `fork` child: if a thread that the child does not have held the
/// lock, every arena may be half-updated, so all are retired (see
/// [`Arenas::retired`]) and the lock freed.
pub fn after_fork() {
    if LOCK.holder() != Holder::Other {
        return;
    }
    // SAFETY: the lock's owner does not exist in the child, and this is the
    // child's only thread.
    let arenas = unsafe { &mut *ARENAS.0.get() };
    arenas.retired = arenas.count;
    PURGE_DUE.store(0, Ordering::Relaxed);
    LOCK.force_release();
}

/// How many arenas a `fork` child retired (for tests).
#[cfg(test)]
pub fn retired_count() -> usize {
    // SAFETY: a plain read; the tests that ask hold the lock or are a
    // `fork` child's only thread.
    unsafe { (*ARENAS.0.get()).retired }
}

/// Cheap check from slow paths: purge if something fell due.
#[inline]
pub fn maybe_purge(now: u64) {
    if os::claim_due(&PURGE_DUE, now) {
        purge(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The arenas are global: these tests only assert what holds whatever
    // other tests allocate concurrently.

    #[test]
    fn spans_are_segment_aligned_and_freed_memory_is_reused() {
        let a = alloc(3 * SEGMENT_SIZE, 0).expect("arena span");
        assert_eq!(a.ptr as usize % SEGMENT_SIZE, 0);
        // SAFETY: the span is ours and 12 MiB long.
        unsafe {
            a.ptr.write(7);
            a.ptr.add(3 * SEGMENT_SIZE - 1).write(9);
        }
        // SAFETY: the span came from `alloc` and is no longer used.
        unsafe { free(a.ptr, 3 * SEGMENT_SIZE, false, Guards::default(), a.committed) };
        let b = alloc(SEGMENT_SIZE, 0).expect("arena span");
        assert_eq!(b.ptr as usize % SEGMENT_SIZE, 0);
        // SAFETY: the span came from `alloc` and is no longer used.
        unsafe { free(b.ptr, SEGMENT_SIZE, false, Guards::default(), b.committed) };

        // Where the next span comes from is asked of an arena of our own:
        // concurrent tests take and free global slices at will. Slice 0 is
        // fresh, 1..10 used, and 5..8 freed just now (dirty): a request of
        // any size fits in that hole, not in the fresh memory below it or
        // past it.
        let mut a = local_arena();
        for i in 1..10 {
            take(&mut a, i, 1, 0);
        }
        give_back(&mut a, 5, 3, false, Guards::default(), 0);
        for n in 1..=3 {
            let start = find_run(&a, n, 0).expect("a free run");
            assert!(
                (5..=8 - n).contains(&start),
                "{n} slices taken at {start}, not in the hole at 5..8"
            );
        }
    }

    /// An arena of slices that are all free and fresh, as a value: the
    /// bookkeeping tests below do not touch the global arenas' memory.
    fn local_arena() -> Arena {
        EMPTY_ARENA
    }

    #[test]
    fn a_slice_left_guarded_comes_back_guarded_only_to_its_layout() {
        let g = Guards {
            layout: 1,
            mask: 0b1010_0100,
        };
        let mut a = local_arena();
        assert_eq!(take(&mut a, 5, 1, 1), (true, Prior::Open, 0));
        give_back(&mut a, 5, 1, false, g, 0);
        // The same layout finds its guards as they were left.
        assert_eq!(take(&mut a, 5, 1, 1), (false, Prior::Guarded, g.mask));
        give_back(&mut a, 5, 1, false, g, 0);
        // Another layout (or a huge segment, 0) must open it all first.
        assert_eq!(take(&mut a, 5, 1, 2).1, Prior::Mixed);
        give_back(&mut a, 5, 1, false, g, 0);
        assert_eq!(take(&mut a, 5, 1, 0).1, Prior::Mixed);
        // Nor does a run of slices come guarded, even of that layout.
        give_back(&mut a, 5, 1, false, g, 0);
        assert_eq!(take(&mut a, 5, 2, 1).1, Prior::Mixed);
        // Released without guards and unsealed: protection unknown.
        give_back(&mut a, 5, 2, false, Guards::default(), 0);
        assert_eq!(take(&mut a, 5, 1, 1).1, Prior::Mixed);
        // Sealed whole: the next user knows it.
        give_back(&mut a, 5, 1, true, Guards::default(), 0);
        assert_eq!(take(&mut a, 5, 1, 1).1, Prior::Sealed);
    }

    #[cfg(feature = "guard-pages")]
    #[test]
    fn a_slice_of_the_layout_asked_for_is_taken_first() {
        let g = Guards { layout: 2, mask: 1 };
        let mut a = local_arena();
        // Slices 0..40 used then freed (dirty), 17 and 33 left guarded for
        // layout 2, 25 for layout 1; 40.. never used.
        for i in 0..40 {
            take(&mut a, i, 1, 0);
        }
        for i in 0..40 {
            let left = match i {
                17 | 33 => g,
                25 => Guards { layout: 1, mask: 1 },
                _ => Guards::default(),
            };
            give_back(&mut a, i, 1, false, left, 0);
        }
        let mut seen = [0; 2];
        for _ in 0..64 {
            let i = find_run(&a, 1, 2).expect("a free slice");
            assert!(i == 17 || i == 33, "took slice {i}");
            seen[(i == 33) as usize] += 1;
        }
        // Still a random pick among them.
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        // With none of its layout left, a dirty one rather than a fresh one.
        for i in [17, 33] {
            take(&mut a, i, 1, 2);
        }
        for _ in 0..64 {
            assert!(find_run(&a, 1, 2).expect("a free slice") < 40);
        }
    }

    #[test]
    fn a_free_span_holds_the_committed_bytes_its_user_left_until_taken() {
        let mut a = local_arena();
        // A huge segment's count, mostly its first slices.
        hold(&mut a, 3, 3, 2 * SEGMENT_SIZE + 5);
        assert_eq!(
            a.committed[2..7],
            [0, SEGMENT_SIZE as u32, SEGMENT_SIZE as u32, 5, 0]
        );
        // A slice taken (or purged) alone takes its own bytes along.
        assert_eq!(release(&mut a, 4, 1), SEGMENT_SIZE);
        assert_eq!(release(&mut a, 3, 3), SEGMENT_SIZE + 5);
        assert_eq!(release(&mut a, 3, 3), 0, "given back once");
        // A count past the span's size (an over-count) stays whole.
        hold(&mut a, 0, 1, SEGMENT_SIZE + 7);
        assert_eq!(release(&mut a, 0, 1), SEGMENT_SIZE + 7);
    }

    #[test]
    fn requests_beyond_an_arena_are_refused() {
        assert!(alloc(ARENA_SIZE + 1, 0).is_none());
        assert!(alloc(0, 0).is_none());
    }

    #[test]
    fn purged_spans_read_as_zero_and_say_so() {
        // A guard layout no segment has: in the hardened build, which picks
        // among free slices at random, a slice freed with it is the one
        // asked for with it; the plain build takes back the lowest dirty
        // slice, then the lowest free one, which this span becomes within
        // a round or two. A concurrent test may take it in between: the
        // round is then tried again.
        const MARK: u8 = 0xee;
        let mark = Guards {
            layout: MARK,
            mask: 0,
        };
        let (mut seen_dirty, mut seen_purged) = (false, false);
        for _ in 0..100 {
            let a = alloc(SEGMENT_SIZE, MARK).expect("arena span");
            // SAFETY: the span is ours.
            unsafe { a.ptr.add(4096).write(0xab) };
            // SAFETY: the span came from `alloc` and is no longer used.
            unsafe { free(a.ptr, SEGMENT_SIZE, false, mark, a.committed) };
            let b = alloc(SEGMENT_SIZE, MARK).expect("arena span");
            if b.ptr == a.ptr {
                // SAFETY: the span is ours.
                let byte = unsafe { b.ptr.add(4096).read() };
                // Zero only if it reads zero: a concurrent purge may have
                // come first, or a concurrent test used the slice meanwhile.
                assert!(!b.zero || byte == 0, "zero but the byte reads {byte:#x}");
                seen_dirty |= !b.zero && byte == 0xab;
            }
            // SAFETY: the span came from `alloc` and is no longer used.
            unsafe { free(b.ptr, SEGMENT_SIZE, false, mark, b.committed) };
            purge(true);
            let c = alloc(SEGMENT_SIZE, MARK).expect("arena span");
            if c.zero {
                // SAFETY: the span is ours and 4 MiB long.
                let bytes = unsafe { core::slice::from_raw_parts(c.ptr, SEGMENT_SIZE) };
                assert!(bytes.iter().all(|&x| x == 0), "a span said zero but is not");
            }
            seen_purged |= c.ptr == b.ptr && b.ptr == a.ptr && c.zero;
            // Unmarked: no slice keeps the made-up layout after the test.
            // SAFETY: the span came from `alloc` and is no longer used.
            unsafe { free(c.ptr, SEGMENT_SIZE, false, Guards::default(), c.committed) };
            if seen_dirty && seen_purged {
                return;
            }
        }
        panic!("in 100 rounds: a freed span taken back dirty: {seen_dirty}, purged: {seen_purged}");
    }
}
