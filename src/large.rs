//! Large blocks (64 KiB to 2 MiB): segments of slots, one size class
//! each, shared by all threads.
//!
//! ```text
//! segment: | header (slot bits, open bytes) | G | slot 0 | slot 1 | ... |
//! ```
//! A slot's bit in its segment header says whether it is free (no free
//! list runs through large blocks), and any thread takes and frees slots
//! under its class's lock: large blocks are rare enough that mimalloc's
//! per-thread pages buy nothing here, a remote free needs no owner to
//! collect it, and one segment per class serves every thread. Per-thread pages of large
//! blocks kept a 4 MiB page per thread and class, each holding freed
//! blocks resident, and emptied and refilled whole segments all the time.
//!
//! Without guards, a freed slot's memory is purged after the purge delay
//! (as mimalloc purges a freed large page), and a block is taken from the
//! lowest free slot whose memory is still resident, else the lowest free
//! one. Each slot's zero bit lets `calloc` skip clearing a block whose
//! memory is fresh or purged, leaving untouched pages untouched.
//!
//! The guard build seals a freed large block whole (`harden::large`) and
//! takes a random free slot of a segment of its class (among those whose
//! pages were kept, if any), so reuse is not predictable.
//!
//! A segment whose slots are all free is released: the arena hands the
//! next segment (of any class, or a huge block) the memory it left, still
//! resident. Keeping one per class held 4 MiB per class that nothing else
//! could use. The guard build keeps its class's last one, whose slots are
//! sealed already: releasing and remaking it would seal them all again.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::constants::MEDIUM_OBJ_MAX;
use crate::error::{self, ErrorKind};
use crate::lock::{Holder, SpinLock};
use crate::page::Page;
use crate::segment::{self, Segment};
use crate::size_class::{bin_of, BLOCK_SIZE, MAX_BIN};
use crate::{harden, options, os, stats};

/// The first bin of large blocks.
const FIRST_BIN: usize = bin_of(MEDIUM_OBJ_MAX + 1);
const CLASSES: usize = MAX_BIN + 1 - FIRST_BIN;

struct Classes(UnsafeCell<[Class; CLASSES]>);
// SAFETY: each class is only touched under its lock in LOCKS.
unsafe impl Sync for Classes {}

#[derive(Clone, Copy)]
struct Class {
    /// Segments of the class with a free slot (linked by `free_next`).
    open: *mut Segment,
    /// Segments of the class.
    count: usize,
}

static CLASSES_OF: Classes = Classes(UnsafeCell::new(
    [Class {
        open: ptr::null_mut(),
        count: 0,
    }; CLASSES],
));
/// One lock per class, guarding the class and its segments' slot state:
/// threads working on blocks of different sizes do not wait for each
/// other.
static LOCKS: [SpinLock; CLASSES] = [const { SpinLock::new() }; CLASSES];
/// When the earliest free slot due for purging is (ms on the coarse
/// clock), 0 if none. Lowered with [`schedule`] from any class.
static PURGE_DUE: AtomicU64 = AtomicU64::new(0);

/// Class `c`.
///
/// # Safety
/// `LOCKS[c]` must be held for as long as the reference lives.
#[allow(clippy::mut_from_ref)]
unsafe fn class(c: usize) -> &'static mut Class {
    // SAFETY: `c < CLASSES`; per the caller only this thread touches the
    // element, and no reference to the whole array is ever made.
    unsafe { &mut *(CLASSES_OF.0.get() as *mut Class).add(c) }
}

/// Makes PURGE_DUE at most `due` (it stays the earliest of all classes').
fn schedule(due: u64) {
    let mut pending = PURGE_DUE.load(Ordering::Relaxed);
    while pending == 0 || due < pending {
        match PURGE_DUE.compare_exchange_weak(pending, due, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => pending = seen,
        }
    }
}

/// The bits of a segment's `count` slots.
fn all_slots(count: usize) -> u64 {
    if count == 64 {
        u64::MAX
    } else {
        (1u64 << count) - 1
    }
}

/// The page descriptor holding a segment of slots' geometry.
fn page(seg: *mut Segment) -> *mut Page {
    // SAFETY: only the address of the field is taken.
    unsafe { ptr::addr_of_mut!((*seg).pages).cast() }
}

/// Allocates a large block of bin `bin` for a request of `size` bytes.
/// Null when out of memory (or when something wrote to the slot taken
/// after it was freed and an error handler took the report).
pub fn alloc(bin: usize, size: usize) -> *mut u8 {
    let c = bin - FIRST_BIN;
    let bsize = BLOCK_SIZE[bin];
    let (seg, slot) = loop {
        let taken = {
            let _g = LOCKS[c].lock();
            // SAFETY: the class and its segments' slot bits are only
            // touched under its lock, held.
            unsafe { take_slot(class(c)) }
        };
        if let Some(t) = taken {
            break t;
        }
        // SAFETY: `bin` is a large bin.
        if !unsafe { new_segment(bin, c) } {
            return ptr::null_mut();
        }
    };
    // SAFETY: the slot was free and is now ours alone.
    unsafe {
        let page = page(seg);
        let p = (*page).page_start.add(slot * bsize);
        // Zero-on-free without guards: a freed block was wiped, so one not
        // fresh or purged since must still read zero, else something wrote
        // to it after its free (the guard build seals it instead).
        if harden::zero::ON && !harden::guard::ON && !was_zero(seg, p) && !harden::zero::words_zero(p, bsize)
        {
            error::report(ErrorKind::WriteAfterFree, p as usize, bsize);
            return ptr::null_mut();
        }
        if !harden::large_taken(page, p, size) {
            // Written after its free: reported; the slot is left taken.
            return ptr::null_mut();
        }
        p
    }
}

/// Takes a free slot of a segment of class `class`.
///
/// # Safety
/// The class's lock must be held.
unsafe fn take_slot(class: &mut Class) -> Option<(*mut Segment, usize)> {
    let seg = class.open;
    if seg.is_null() {
        return None;
    }
    // SAFETY: per the caller; segments on the list are live.
    unsafe {
        let free = (*seg).slots_free;
        // Among the free slots whose pages were kept, if any: a slot
        // sealed with markers, or never used, faults in every page its
        // next block touches.
        let warm = if harden::guard::ON {
            harden::large::warm(page(seg), free)
        } else {
            free & !(*seg).slots_zero.load(Ordering::Relaxed)
        };
        let choice = if warm != 0 { warm } else { free };
        let mut k = harden::guard::pick(choice.count_ones() as usize);
        let mut bits = choice;
        let mut slot = bits.trailing_zeros() as usize;
        while k > 0 {
            bits &= bits - 1;
            slot = bits.trailing_zeros() as usize;
            k -= 1;
        }
        (*seg).slots_free = free & !(1 << slot);
        (*seg).slots_unpurged &= !(1 << slot);
        if (*seg).slots_free == 0 {
            class.open = (*seg).free_next;
            (*seg).free_next = ptr::null_mut();
            (*seg).in_free_list = false;
        }
        Some((seg, slot))
    }
}

/// Makes a segment of slots for bin `bin` (class `c`). False when out of
/// memory.
///
/// # Safety
/// `bin` must be a large bin and `c` its class.
unsafe fn new_segment(bin: usize, c: usize) -> bool {
    let Some(fresh) = segment::os_alloc(crate::constants::SEGMENT_SIZE, true, 0) else {
        return false;
    };
    let seg = fresh.seg;
    // SAFETY: the segment is new and ours until it is on its class's list.
    unsafe {
        (*seg).in_arena = fresh.in_arena;
        let (start, count) = segment::init_slots(seg, bin);
        let page = page(seg);
        let bsize = BLOCK_SIZE[bin];
        if harden::guard::ON {
            let state = harden::large::slots_made(start, count, bsize, !fresh.zero);
            for i in 0..count {
                harden::large::set_state(page, start.add(i * bsize), state);
            }
        }
        let mut zero = if fresh.zero { all_slots(count) } else { 0 };
        if harden::zero::ON && !harden::guard::ON && !fresh.zero {
            // Reused memory may hold an old owner's bytes, and zero-on-free
            // hands out only zero blocks: dropped, it reads as zero.
            os::purge(start, count * bsize);
            zero = all_slots(count);
        }
        (*seg).slots_zero.store(zero, Ordering::Relaxed);
        (*seg).slots_unpurged = 0;
        // Counted a segment at a time, as pages are: a shared gauge
        // touched on every large malloc and free was contended between
        // threads.
        stats::PAGES.increase(1);
        stats::IN_USE.increase(count * bsize);
        let _g = LOCKS[c].lock();
        let class = class(c);
        (*seg).free_next = class.open;
        (*seg).in_free_list = true;
        class.open = seg;
        class.count += 1;
    }
    true
}

/// Frees the large block `p` of the segment of slots `seg` (it passed the
/// free checks and is sealed already), from any thread.
///
/// # Safety
/// `p` must be a live block of `seg`, being freed once.
pub unsafe fn free(seg: *mut Segment, p: *mut u8) {
    // SAFETY: the segment is live while it has a live block; its slot bits
    // and its class's list are only touched under the class's lock.
    unsafe {
        let page = page(seg);
        let bsize = (*page).block_size;
        let slot = (p as usize - (*page).page_start as usize) / bsize;
        let c = (*page).bin as usize - FIRST_BIN;
        let all = all_slots((*page).reserved as usize);
        let release = {
            let _g = LOCKS[c].lock();
            let class = class(c);
            if (*seg).slots_free & (1 << slot) != 0 {
                drop(_g);
                error::report(ErrorKind::DoubleFree, p as usize, bsize);
                return;
            }
            (*seg).slots_free |= 1 << slot;
            if !harden::guard::ON {
                freed_unguarded(seg, slot);
            }
            if !(*seg).in_free_list {
                (*seg).free_next = class.open;
                (*seg).in_free_list = true;
                class.open = seg;
            }
            let empty = (*seg).slots_free == all && (class.count > 1 || !harden::guard::ON);
            if empty {
                unlink(class, seg);
                class.count -= 1;
            }
            empty
        };
        if release {
            stats::PAGES.decrease(1);
            stats::IN_USE.decrease((*page).reserved as usize * bsize);
            crate::page::reset(page);
            segment::os_free(seg);
        }
    }
}

/// Releases every segment of slots that has none in use (each class keeps
/// one otherwise), and drops the pages that sealed free slots kept: what
/// `collect(true)` promises, all memory not in use back to the OS.
pub fn collect() {
    for (c, lock) in LOCKS.iter().enumerate() {
        let seg = {
            let _g = lock.lock();
            // SAFETY: the class and its segments are only touched under
            // its lock, held.
            unsafe { take_empty(class(c)) }
        };
        if seg.is_null() {
            continue;
        }
        // SAFETY: the segment has no block in use and is on no list.
        unsafe {
            let page = page(seg);
            stats::PAGES.decrease(1);
            stats::IN_USE.decrease((*page).reserved as usize * (*page).block_size);
            crate::page::reset(page);
            segment::os_free(seg);
        }
    }
    if !harden::guard::ON {
        purge(0, true);
        return;
    }
    for (c, lock) in LOCKS.iter().enumerate() {
        let _g = lock.lock();
        // SAFETY: as above; the free slots' blocks are sealed and nobody's.
        unsafe {
            let mut seg = class(c).open;
            while !seg.is_null() {
                harden::large::drop_free(page(seg), (*seg).slots_free);
                seg = (*seg).free_next;
            }
        }
    }
}

/// A slot of a segment without guards was just freed: its memory is no
/// longer known to be zero, and goes back to the OS after the purge delay
/// unless the slot is taken again first (at once with a delay of 0).
///
/// # Safety
/// The class's lock must be held; `slot` is a free slot of the live `seg`.
unsafe fn freed_unguarded(seg: *mut Segment, slot: usize) {
    // SAFETY: per the caller.
    unsafe {
        // Writers hold the class's lock, so a load and a store do; most
        // freed slots were not zero, and skip the store.
        let zero = (*seg).slots_zero.load(Ordering::Relaxed);
        if zero & (1 << slot) != 0 {
            (*seg).slots_zero.store(zero & !(1 << slot), Ordering::Relaxed);
        }
        (*seg).slots_unpurged |= 1 << slot;
        let delay = options::purge_delay_ms();
        if delay == 0 {
            purge_slots(seg);
            return;
        }
        let due = os::recent_ms() + delay;
        // Every free pushes the segment's time on, so a segment in active
        // use is not purged a slot at a time while its slots cycle.
        (*seg).purge_at = due;
        schedule(due);
    }
}

/// Purges the free slots of `seg` still resident, one `madvise` per run of
/// adjacent slots; they read as zero after.
///
/// # Safety
/// The class's lock must be held; `seg` is a live segment of slots
/// without guards.
unsafe fn purge_slots(seg: *mut Segment) {
    // SAFETY: per the caller; the slots purged are free, nobody's.
    unsafe {
        let page = page(seg);
        let bsize = (*page).block_size;
        let mut bits = (*seg).slots_unpurged & (*seg).slots_free;
        while bits != 0 {
            let first = bits.trailing_zeros() as usize;
            let run = (bits >> first).trailing_ones() as usize;
            os::purge((*page).page_start.add(first * bsize), run * bsize);
            let mask = if run == 64 {
                u64::MAX
            } else {
                ((1u64 << run) - 1) << first
            };
            bits &= !mask;
            let zero = (*seg).slots_zero.load(Ordering::Relaxed);
            (*seg).slots_zero.store(zero | mask, Ordering::Relaxed);
        }
        (*seg).slots_unpurged = 0;
        (*seg).purge_at = 0;
    }
}

/// Purges the free slots whose delay has passed (all of them with
/// `force`), and records when the next fall due.
fn purge(now: u64, force: bool) {
    let mut next_due = 0u64;
    for (c, lock) in LOCKS.iter().enumerate() {
        let _g = lock.lock();
        // SAFETY: the class and its segments are only touched under its
        // lock, held; a segment with a free slot is on its class's list.
        unsafe {
            let mut seg = class(c).open;
            while !seg.is_null() {
                let due = (*seg).purge_at;
                if (*seg).slots_unpurged != 0 {
                    if force || due <= now {
                        purge_slots(seg);
                    } else if next_due == 0 || due < next_due {
                        next_due = due;
                    }
                }
                seg = (*seg).free_next;
            }
        }
    }
    if next_due != 0 {
        schedule(next_due);
    }
}

/// When the earliest free slot falls due for purging, 0 if none.
pub fn purge_due() -> u64 {
    PURGE_DUE.load(Ordering::Relaxed)
}

/// Purges free slots whose delay has passed, if any is due at `now`; one
/// thread does it while the others carry on.
pub fn maybe_purge(now: u64) {
    if os::claim_due(&PURGE_DUE, now) {
        purge(now, false);
    }
}

/// Whether the live large block `p` of `seg` (without guards) was zero
/// when taken, past its first word: `calloc` need not clear it.
///
/// # Safety
/// `p` must be a live block of the segment of slots `seg`, owned by the
/// caller.
pub unsafe fn was_zero(seg: *mut Segment, p: *const u8) -> bool {
    // SAFETY: per the caller; a live slot's bit changes only when it is
    // freed, which its owner has not done.
    unsafe {
        let page = page(seg);
        let slot = (p as usize - (*page).page_start as usize) / (*page).block_size;
        (*seg).slots_zero.load(Ordering::Relaxed) & (1 << slot) != 0
    }
}

/// Takes a segment with no slot in use off `class`, if there is one.
///
/// # Safety
/// The class's lock must be held.
unsafe fn take_empty(class: &mut Class) -> *mut Segment {
    // SAFETY: per the caller.
    unsafe {
        let mut seg = class.open;
        while !seg.is_null() {
            if (*seg).slots_free == all_slots((*page(seg)).reserved as usize) {
                unlink(class, seg);
                class.count -= 1;
                return seg;
            }
            seg = (*seg).free_next;
        }
    }
    ptr::null_mut()
}

/// Takes `seg` off its class's list of segments with a free slot.
///
/// # Safety
/// The class's lock must be held and `seg` on the list.
unsafe fn unlink(class: &mut Class, seg: *mut Segment) {
    // SAFETY: per the caller, the list's segments are live.
    unsafe {
        let mut at = &mut class.open as *mut *mut Segment;
        while !(*at).is_null() {
            if *at == seg {
                *at = (*seg).free_next;
                break;
            }
            at = ptr::addr_of_mut!((**at).free_next);
        }
        (*seg).free_next = ptr::null_mut();
        (*seg).in_free_list = false;
    }
}

/// In a `fork` child: a class whose lock a thread the child does not have
/// held may be half-updated, so its list is set aside (its segments' live
/// blocks can still be freed; their free slots leak).
pub fn after_fork() {
    for (c, lock) in LOCKS.iter().enumerate() {
        if lock.holder() != Holder::Other {
            continue;
        }
        // SAFETY: the lock's owner does not exist in the child, and this
        // is the child's only thread.
        unsafe {
            *class(c) = Class {
                open: ptr::null_mut(),
                count: 0,
            };
        }
        lock.force_release();
    }
}
