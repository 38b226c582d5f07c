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
//! In front of the slots each thread keeps a small cache of the large
//! blocks up to 256 KiB it freed (a few per class, 2 MiB in all), and its
//! next malloc of a class takes the last one it freed there, without the
//! class's lock: threads churning large buffers took that lock on every
//! malloc and free, and waited for each other on it. A block is cached by
//! whichever thread frees it, since no thread owns a slot and any may take
//! it, but only by a thread that allocates large blocks itself (one that
//! only frees what others allocate would strand them) and shares a class
//! with another thread (took its lock after another thread did): a cached
//! block keeps its segment from being released, which costs a program that
//! spreads a few blocks over many classes memory and page faults, and buys
//! a thread alone in its classes nothing, as nobody contends for their
//! locks. A cached block stays live in its slot and holds its [`tag`] in
//! its first word (cleared when it leaves the cache): a second free finds
//! the tag, or the slot's free bit once the cache gave it back, and is
//! reported. The tag lives in the block, not in a bitmap of its segment,
//! because two threads churning blocks of one class share its segments: a
//! bit per slot set and cleared on every cached free and malloc kept one
//! line of the header moving between their cores, which cost as much as the
//! lock had. Cached blocks stay resident, which the cache's bound in bytes
//! keeps in check; a cache no block came into for a purge delay gives its
//! blocks back to their slots on its thread's next slow path, where they
//! are purged after the delay as any freed slot is. (Purged at once, they
//! faulted in again where a freed slot's memory, whose purge every free in
//! its segment puts off, would have been reused resident.) The cache goes
//! back to the slots at thread exit and on `collect`; a `fork` child keeps
//! the forking thread's cache (only that thread touches it) and leaks the
//! others', as it leaks their threads' live blocks. The hardened build has
//! no cache: its defences each want something of a freed large block that a
//! cache would undo or have to repeat (see [`CACHE_ON`]), and `secure`
//! seals freed blocks anyway.
//!
//! A segment whose slots are all free is released: the arena hands the
//! next segment (of any class, or a huge block) the memory it left, still
//! resident. Keeping one per class held 4 MiB per class that nothing else
//! could use. The guard build keeps its class's last one, whose slots are
//! sealed already: releasing and remaking it would seal them all again.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::core::heap::{Heap, EMPTY_HEAP_PTR};
use crate::core::segment;
use crate::error::{self, ErrorKind};
use crate::meta::constants::MEDIUM_OBJ_MAX;
use crate::meta::page::Page;
use crate::meta::segment::{of_block, page_at, Segment};
use crate::meta::size_class::{bin_of, BLOCK_SIZE, MAX_BIN};
use crate::os::lock::{Guard, Holder, SpinLock};
use crate::{harden, options, os, stats};

/// The first bin of large blocks.
const FIRST_BIN: usize = bin_of(MEDIUM_OBJ_MAX + 1);
const CLASSES: usize = MAX_BIN + 1 - FIRST_BIN;

/// Whether threads cache the large blocks they free (see the module
/// doc): only in the plain build. Guard pages seal a freed block at once
/// and draw the next one at random, which reuse of the last block freed
/// would undo; with zero-on-free or encoded links freed memory shows no
/// plain address, and the tag is one; random order promises reuse that
/// is not last-in first-out.
const CACHE_ON: bool = !harden::HARDENED;
/// Blocks a thread's cache holds per class: enough for a thread that
/// keeps a few buffers of a class cycling to find one there.
const CACHE_DEPTH: usize = 8;
/// Bytes a thread's cache holds in all: they stay resident (a block freed
/// to its slot would be purged after the delay), once per thread.
const CACHE_BYTES: usize = 2 << 20;
/// The largest blocks cached (as tcmalloc's thread caches). A larger
/// block pays for the lock many times over in the bytes its owner uses,
/// and a cached one holds more memory, dirty, away from the other
/// threads: a program taking sparsely used zeroed buffers then got them
/// from fresh or purged slots, and faulted their pages in.
const CACHE_MAX_BLOCK: usize = 256 << 10;
/// Classes whose blocks are cached: the first ones.
const CACHED_CLASSES: usize = bin_of(CACHE_MAX_BLOCK) + 1 - FIRST_BIN;

/// Mixed into a cached block's tag.
const TAG_MIX: usize = 0x9e37_79b9_7f4a_7c15_u64 as usize;

/// What the first word of block `p` holds while `p` sits in a cache: a
/// value no program writes to the start of a block in use by chance, so
/// a free that finds it there is a second one.
fn tag(p: *const u8) -> usize {
    (p as usize).rotate_left(32) ^ TAG_MIX
}

/// A thread's cache of large blocks it freed (see the module doc), in its
/// heap; only that thread touches it.
pub struct Cache {
    /// Per class, the blocks cached, the last freed on top.
    blocks: [[*mut u8; CACHE_DEPTH]; CACHED_CLASSES],
    counts: [u8; CACHED_CLASSES],
    /// Bytes cached, at most [`CACHE_BYTES`].
    bytes: usize,
    /// When the cached blocks go back to their slots (ms on the coarse
    /// clock): a purge delay after the last one came in. 0 if empty.
    due: u64,
    /// The thread has allocated a large block since the cache was last
    /// flushed or expired,
    active: bool,
    /// and has met another thread in a class (taken its lock after
    /// another thread did) since the cache was last flushed: only then
    /// does it cache the blocks it frees. A thread alone in its classes
    /// takes their locks uncontended, and a cached block keeps its segment
    /// from being released, which a program spreading a few blocks over
    /// many classes paid for in memory and page faults. (Contention itself
    /// was a worse sign: once one thread's cache absorbed its churn, the
    /// other thread never met the lock held again, and never cached.)
    shared: bool,
}

impl Cache {
    pub const fn new() -> Cache {
        Cache {
            blocks: [[ptr::null_mut(); CACHE_DEPTH]; CACHED_CLASSES],
            counts: [0; CACHED_CLASSES],
            bytes: 0,
            due: 0,
            active: false,
            shared: false,
        }
    }
}

struct Classes(UnsafeCell<[Class; CLASSES]>);
// SAFETY: each class is only touched under its lock in LOCKS.
unsafe impl Sync for Classes {}

#[derive(Clone, Copy)]
struct Class {
    /// Segments of the class with a free slot (linked by `free_next`).
    open: *mut Segment,
    /// Segments of the class.
    count: usize,
    /// The cache (so the thread) that took the lock last with one, 0 if
    /// none did.
    user: usize,
}

static CLASSES_OF: Classes = Classes(UnsafeCell::new(
    [Class {
        open: ptr::null_mut(),
        count: 0,
        user: 0,
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
    // SAFETY: index 0 is in the page table; only the address is computed.
    unsafe { page_at(seg, 0) }
}

/// Takes class `c`'s lock, noting in the calling thread's `cache` (if it
/// has one) when another thread took it last.
fn lock_class(c: usize, cache: Option<&mut Cache>) -> Guard<'static> {
    let g = LOCKS[c].lock();
    if let Some(cache) = cache {
        let me = cache as *mut Cache as usize;
        // SAFETY: the class is only touched under its lock, held; the
        // reference ends here.
        let class = unsafe { class(c) };
        if class.user != me {
            cache.shared |= class.user != 0;
            class.user = me;
        }
    }
    g
}

/// The slot of block `p` of the segment of slots `seg`.
///
/// # Safety
/// `seg` must be a live segment of slots and `p` one of its blocks.
unsafe fn slot_of(seg: *mut Segment, p: *const u8) -> usize {
    // SAFETY: per the caller, the descriptor is live and `p` a block
    // start, so the multiply by the inverse is the division.
    unsafe {
        let page = page(seg);
        crate::meta::page::block_index(page, p as usize - (*page).page_start as usize) as usize
    }
}

/// Allocates a large block of bin `bin` for a request of `size` bytes
/// from the calling thread's cache: None if it holds none of the class,
/// else the block, or null if something wrote to it after it was freed
/// (and an error handler took the report).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
#[inline(always)]
pub unsafe fn alloc_cached(heap: *mut Heap, bin: usize, size: usize) -> Option<*mut u8> {
    let c = bin - FIRST_BIN;
    if !CACHE_ON || c >= CACHED_CLASSES {
        return None;
    }
    // SAFETY: the cache is the calling thread's, per the caller; a cached
    // block is live in its slot, so its segment is too.
    unsafe {
        let cache = &mut (*heap).large;
        cache.active = true;
        let n = cache.counts[c] as usize;
        if n == 0 {
            return None;
        }
        let p = cache.blocks[c][n - 1];
        cache.counts[c] = (n - 1) as u8;
        cache.bytes -= BLOCK_SIZE[bin];
        if cache.bytes == 0 {
            cache.due = 0;
        }
        // The tag would read as a second free of a block in use (and the
        // zero-on-free build checks the block is zero).
        (p as *mut usize).write(0);
        Some(hand_out(of_block(p), p, size))
    }
}

/// Allocates a large block of bin `bin` for a request of `size` bytes
/// from a free slot of its class. Null when out of memory (or when
/// something wrote to the slot taken after it was freed and an error
/// handler took the report).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn alloc(heap: *mut Heap, bin: usize, size: usize) -> *mut u8 {
    let c = bin - FIRST_BIN;
    let bsize = BLOCK_SIZE[bin];
    let (seg, slot) = loop {
        let taken = {
            // SAFETY: the cache is the calling thread's, per the caller.
            let _g = lock_class(c, CACHE_ON.then(|| unsafe { &mut (*heap).large }));
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
    unsafe { hand_out(seg, (*page(seg)).page_start.add(slot * bsize), size) }
}

/// Vets the block `p` of `seg`, just taken from its slot or a cache, and
/// hands it out for a request of `size` bytes. Null if it was written
/// after its free (reported; the slot is left taken).
///
/// # Safety
/// `p` must be a block of the segment of slots `seg` that was free (in
/// its slot or a cache) and is now the caller's alone.
unsafe fn hand_out(seg: *mut Segment, p: *mut u8, size: usize) -> *mut u8 {
    // SAFETY: per the caller.
    unsafe {
        let page = page(seg);
        let bsize = (*page).block_size;
        // Zero-on-free without guards: a freed block was wiped, so one not
        // fresh or purged since must still read zero, else something wrote
        // to it after its free (the guard build seals it instead).
        if harden::ZERO_ON_FREE && !harden::GUARD_PAGES && !was_zero(seg, p) && !harden::words_zero(p, bsize)
        {
            error::report(ErrorKind::WriteAfterFree, p as usize, bsize);
            return ptr::null_mut();
        }
        if !harden::large_taken(page, p, size) {
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
        let free = (*seg).slots_free.load(Ordering::Relaxed);
        // Among the free slots whose pages were kept, if any: a slot
        // sealed with markers, or never used, faults in every page its
        // next block touches.
        let warm = if harden::GUARD_PAGES {
            harden::large_warm(page(seg), free)
        } else {
            free & !(*seg).slots_zero.load(Ordering::Relaxed)
        };
        let choice = if warm != 0 { warm } else { free };
        let mut k = harden::pick_slot(choice.count_ones() as usize);
        let mut bits = choice;
        let mut slot = bits.trailing_zeros() as usize;
        while k > 0 {
            bits &= bits - 1;
            slot = bits.trailing_zeros() as usize;
            k -= 1;
        }
        (*seg).slots_free.store(free & !(1 << slot), Ordering::Relaxed);
        (*seg).slots_unpurged &= !(1 << slot);
        if !harden::GUARD_PAGES && (*seg).slots_zero.load(Ordering::Relaxed) & (1 << slot) != 0 {
            // Fresh or purged, so not counted as committed until now (the
            // guard build counts what it opens instead).
            stats::commit_more(seg, (*page(seg)).block_size);
        }
        if free & !(1 << slot) == 0 {
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
    let Some(fresh) = segment::os_alloc(crate::meta::constants::SEGMENT_SIZE, true, 0) else {
        return false;
    };
    let seg = fresh.seg;
    // SAFETY: the segment is new and ours until it is on its class's list.
    unsafe {
        (*seg).in_arena = fresh.in_arena;
        let (start, count) = segment::init_slots(seg, bin);
        let page = page(seg);
        let bsize = BLOCK_SIZE[bin];
        if harden::GUARD_PAGES {
            let state = harden::large_slots_made(start, count, bsize, !fresh.zero);
            for i in 0..count {
                harden::large_set_state(page, start.add(i * bsize), state);
            }
        }
        let mut zero = if fresh.zero { all_slots(count) } else { 0 };
        if harden::ZERO_ON_FREE && !harden::GUARD_PAGES && !fresh.zero {
            // Reused memory may hold an old owner's bytes, and zero-on-free
            // hands out only zero blocks: dropped, it reads as zero.
            os::purge(start, count * bsize);
            zero = all_slots(count);
        }
        (*seg).slots_zero.store(zero, Ordering::Relaxed);
        (*seg).slots_unpurged = 0;
        // The header, the rest of the segment if the memory is not zero
        // (it may hold an old owner's pages), and of the slots those not
        // zero or, in the guard build, those left open.
        let mut committed = (*seg).info_size;
        if !fresh.zero {
            committed += crate::meta::constants::SEGMENT_SIZE - (*seg).info_size - count * bsize;
        }
        for i in 0..count {
            committed += if harden::GUARD_PAGES {
                // A slot is left open only when no seal could be made, and
                // then its guard page may be missing too: counted whole,
                // on the safe side (what it opens and seals later moves
                // the count by as much, so the excess stays until the
                // segment is released).
                if harden::block_usable(page, start.add(i * bsize)) == 0 {
                    0
                } else {
                    bsize
                }
            } else if zero & (1 << i) == 0 {
                bsize
            } else {
                0
            };
        }
        stats::commit_start(seg, fresh.committed, committed);
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
/// free checks and is sealed already), from any thread: into the thread's
/// cache if it has room, else back to its slot.
///
/// # Safety
/// `p` must be a block of `seg` that was live (a second free is reported);
/// `heap` the calling thread's heap, or the empty one.
pub unsafe fn free(heap: *mut Heap, seg: *mut Segment, p: *mut u8) {
    // SAFETY: the segment is live while it has a live (or cached) block; a
    // heap other than the empty one is the calling thread's.
    unsafe {
        let slot = slot_of(seg, p);
        let mut cache = if CACHE_ON && heap != EMPTY_HEAP_PTR {
            Some(&mut (*heap).large)
        } else {
            None
        };
        if let Some(cache) = cache.as_deref_mut() {
            if cache_push(cache, seg, p, slot) {
                return;
            }
        }
        free_slot(seg, p, slot, false, cache);
    }
}

/// Puts the freed block `p`, slot `slot` of `seg`, in the thread's
/// `cache` if it has room. True if it did, or if it reported `p` as
/// freed already.
///
/// # Safety
/// `cache` must be the calling thread's; `p` a block of the live `seg`.
unsafe fn cache_push(cache: &mut Cache, seg: *mut Segment, p: *mut u8, slot: usize) -> bool {
    // SAFETY: per the caller.
    unsafe {
        let page = page(seg);
        let bsize = (*page).block_size;
        let c = (*page).bin as usize - FIRST_BIN;
        if c >= CACHED_CLASSES {
            return false;
        }
        let n = cache.counts[c] as usize;
        if !(cache.active && cache.shared) || n == CACHE_DEPTH || cache.bytes + bsize > CACHE_BYTES {
            return false;
        }
        // With no delay a freed block's memory goes back at once.
        let delay = options::purge_delay_ms();
        if delay == 0 {
            return false;
        }
        let bit = 1u64 << slot;
        // A live slot's free bit is clear and stays so (nobody takes a
        // live slot), so a set one means `p` went back to its slot already.
        if freed_already(seg, p, bit) {
            error::report(ErrorKind::DoubleFree, p as usize, bsize);
            return true;
        }
        // The segment's last block in use goes back, so that the segment
        // is released: cached, it would keep the segment's memory from
        // every other class and from huge blocks. (Other cached blocks
        // count as in use here, so a segment may still be held by cached
        // blocks alone, by a few at most.)
        let others = (*seg).slots_free.load(Ordering::Relaxed) | bit;
        if others == all_slots((*page).reserved as usize) {
            return false;
        }
        // Written by its owner, most likely: `calloc` must clear it when it
        // comes back. Nobody sets a live slot's bit meanwhile.
        if (*seg).slots_zero.load(Ordering::Relaxed) & bit != 0 {
            (*seg).slots_zero.fetch_and(!bit, Ordering::Relaxed);
        }
        (p as *mut usize).write(tag(p));
        cache.blocks[c][n] = p;
        cache.counts[c] = (n + 1) as u8;
        cache.bytes += bsize;
        cache.due = os::recent_ms().saturating_add(delay);
        true
    }
}

/// Whether the block `p` of `seg`, whose slot's bit is `bit`, is free
/// already: in its slot, or in a cache.
///
/// # Safety
/// `p` must be a block of the live `seg`.
unsafe fn freed_already(seg: *mut Segment, p: *mut u8, bit: u64) -> bool {
    // A sealed block of the guard build is not read (it has no cache).
    // SAFETY: per the caller; a block of a live segment without guards
    // is mapped and readable, free or not.
    unsafe {
        (*seg).slots_free.load(Ordering::Relaxed) & bit != 0
            || (CACHE_ON && (p as *const usize).read() == tag(p))
    }
}

/// Gives the freed block `p`, slot `slot` of `seg`, back to its slot
/// under its class's lock, and releases the segment if that emptied it.
/// A block from the caller's cache (`cached`) is trusted; any other is
/// reported if it is free already.
///
/// `cache` is the calling thread's, if it has one.
///
/// # Safety
/// `p` must be a block of the live `seg`; if `cached`, one the calling
/// thread just took out of its cache.
unsafe fn free_slot(seg: *mut Segment, p: *mut u8, slot: usize, cached: bool, cache: Option<&mut Cache>) {
    // SAFETY: the segment is live while it has a live block; its slot bits
    // and its class's list are only written under the class's lock.
    unsafe {
        let page = page(seg);
        let bsize = (*page).block_size;
        let c = (*page).bin as usize - FIRST_BIN;
        let all = all_slots((*page).reserved as usize);
        let bit = 1u64 << slot;
        let release = {
            let _g = lock_class(c, cache);
            let class = class(c);
            if !cached && freed_already(seg, p, bit) {
                drop(_g);
                error::report(ErrorKind::DoubleFree, p as usize, bsize);
                return;
            }
            let free = (*seg).slots_free.load(Ordering::Relaxed);
            (*seg).slots_free.store(free | bit, Ordering::Relaxed);
            if !harden::GUARD_PAGES {
                freed_unguarded(seg, slot);
            }
            if !(*seg).in_free_list {
                (*seg).free_next = class.open;
                (*seg).in_free_list = true;
                class.open = seg;
            }
            let empty = free | bit == all && (class.count > 1 || !harden::GUARD_PAGES);
            if empty {
                unlink(class, seg);
                // Saturating: in a fork child a set-aside class (see
                // `after_fork`) counts none of its old segments, which
                // still come back here as their blocks are freed.
                class.count = class.count.saturating_sub(1);
            }
            empty
        };
        if release {
            stats::PAGES.decrease(1);
            stats::IN_USE.decrease((*page).reserved as usize * bsize);
            crate::core::page::reset(page);
            segment::os_free(seg);
        }
    }
}

/// Gives the blocks in the calling thread's cache back to their slots
/// (at thread exit, and on `collect`, so its memory can be purged and its
/// segments released), and stops caching until the thread allocates a
/// large block again.
///
/// # Safety
/// `heap` must be the calling thread's heap, or the empty one.
pub unsafe fn flush(heap: *mut Heap) {
    if !CACHE_ON || heap == EMPTY_HEAP_PTR {
        return;
    }
    // SAFETY: the cache is the calling thread's, per the caller.
    unsafe {
        let cache = &mut (*heap).large;
        cache.active = false;
        cache.shared = false;
        empty_cache(cache);
    }
}

/// Gives every block in `cache` back to its slot, where it is purged
/// after the delay as any freed slot is.
///
/// # Safety
/// `cache` must be the calling thread's.
unsafe fn empty_cache(cache: &mut Cache) {
    // SAFETY: cached blocks are the thread's, live in their slots, so
    // their segments are live too.
    unsafe {
        for c in 0..CACHED_CLASSES {
            while cache.counts[c] > 0 {
                let n = cache.counts[c] as usize - 1;
                let p = cache.blocks[c][n];
                cache.counts[c] = n as u8;
                let seg = of_block(p);
                cache.bytes -= (*page(seg)).block_size;
                // Left there, the tag would make the block's next owner's
                // free look like a second one.
                (p as *mut usize).write(0);
                free_slot(seg, p, slot_of(seg, p), true, None);
            }
        }
        cache.due = 0;
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
            crate::core::page::reset(page);
            segment::os_free(seg);
        }
    }
    if !harden::GUARD_PAGES {
        purge(0, true);
        return;
    }
    for (c, lock) in LOCKS.iter().enumerate() {
        let _g = lock.lock();
        // SAFETY: as above; the free slots' blocks are sealed and nobody's.
        unsafe {
            let mut seg = class(c).open;
            while !seg.is_null() {
                harden::large_drop_free(page(seg), (*seg).slots_free.load(Ordering::Relaxed));
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
        // Most freed slots were not zero, and skip the write. Atomic: a
        // free into a cache clears another slot's bit without the lock.
        if (*seg).slots_zero.load(Ordering::Relaxed) & (1 << slot) != 0 {
            (*seg).slots_zero.fetch_and(!(1 << slot), Ordering::Relaxed);
        }
        (*seg).slots_unpurged |= 1 << slot;
        let delay = options::purge_delay_ms();
        if delay == 0 {
            purge_slots(seg);
            return;
        }
        let due = os::recent_ms().saturating_add(delay);
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
        let mut bits = (*seg).slots_unpurged & (*seg).slots_free.load(Ordering::Relaxed);
        let mut purged = 0;
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
            // Atomic: a free into a cache clears another slot's bit
            // without the lock.
            let was = (*seg).slots_zero.fetch_or(mask, Ordering::Relaxed);
            // A free slot is counted as committed while its zero bit is
            // clear.
            purged += (mask & !was).count_ones() as usize * bsize;
        }
        stats::commit_less(seg, purged);
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

/// When the earliest free slot, or the calling thread's cache, falls due
/// for purging; 0 if none (else only its being 0 or not means anything).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn purge_due(heap: *mut Heap) -> u64 {
    // SAFETY: the cache is the calling thread's, per the caller.
    PURGE_DUE.load(Ordering::Relaxed) | unsafe { (*heap).large.due }
}

/// Purges free slots whose delay has passed, if any is due at `now` (one
/// thread does it while the others carry on), and the calling thread's
/// cache if it is due.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn maybe_purge(heap: *mut Heap, now: u64) {
    if os::claim_due(&PURGE_DUE, now) {
        purge(now, false);
    }
    // SAFETY: the cache is the calling thread's, per the caller.
    unsafe {
        let cache = &mut (*heap).large;
        if cache.due != 0 && now >= cache.due {
            empty_cache(cache);
            cache.active = false;
        }
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
    unsafe { (*seg).slots_zero.load(Ordering::Relaxed) & (1 << slot_of(seg, p)) != 0 }
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
            if (*seg).slots_free.load(Ordering::Relaxed) == all_slots((*page(seg)).reserved as usize) {
                unlink(class, seg);
                class.count = class.count.saturating_sub(1);
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
                user: 0,
            };
        }
        lock.force_release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alloc::{free, malloc};

    /// The calling thread's heap, made if need be, marked as if it had met
    /// another thread in a class (so its frees are cached), with its
    /// cache empty; None when this build or the purge delay has no cache.
    fn shared_heap() -> Option<*mut Heap> {
        // SAFETY: a block just allocated, freed once.
        unsafe { free(malloc(16)) };
        let heap = crate::core::thread::heap();
        if !CACHE_ON || options::purge_delay_ms() == 0 {
            return None;
        }
        // SAFETY: the calling thread's initialised heap.
        unsafe {
            flush(heap);
            (*heap).large.shared = true;
        }
        Some(heap)
    }

    /// Slot bit, free bit and zero bit of the block `p` of a segment of
    /// slots kept live by the caller.
    fn bits(p: *mut u8) -> (u64, bool, bool) {
        // SAFETY: per the caller, the segment is live.
        unsafe {
            let seg = of_block(p);
            let bit = 1u64 << slot_of(seg, p);
            (
                bit,
                (*seg).slots_free.load(Ordering::Relaxed) & bit != 0,
                (*seg).slots_zero.load(Ordering::Relaxed) & bit != 0,
            )
        }
    }

    // Each test takes blocks of a class of its own, so tests running on
    // other threads do not take its slots.

    #[test]
    fn a_freed_block_waits_tagged_in_the_cache_and_comes_back_untagged() {
        let Some(heap) = shared_heap() else { return };
        let size = 140_000;
        let keep = malloc(size);
        let p = malloc(size);
        // The cache and the slot bits are read on this thread, which owns
        // both blocks, cached or live.
        // SAFETY: `p` is live with `size` bytes, then freed once.
        unsafe {
            p.write_bytes(0xab, size);
            free(p);
            let c = bin_of(size) - FIRST_BIN;
            assert_eq!((*heap).large.counts[c], 1);
            assert_eq!((*heap).large.blocks[c][0], p);
            let (bit, is_free, zero) = bits(p);
            assert!(!is_free && !zero, "a cached block stays live, not known zero");
            assert!(freed_already(of_block(p), p, bit), "the tag marks it freed");
            let q = malloc(size);
            assert_eq!(q, p, "the thread's next malloc of the class takes it");
            assert_eq!((*heap).large.counts[c], 0);
            assert!(!freed_already(of_block(q), q, bit), "a block in use has no tag");
            assert!(
                !crate::core::large::was_zero(of_block(q), q),
                "calloc must clear it"
            );
            free(q);
            free(keep);
            flush(heap);
        }
    }

    #[test]
    fn a_flushed_block_is_free_in_its_slot_without_its_tag() {
        let Some(heap) = shared_heap() else { return };
        let size = 180_000;
        let keep = malloc(size);
        let p = malloc(size);
        // SAFETY: freed once; `keep` keeps the segment, so the freed
        // block's memory stays mapped for the reads.
        unsafe {
            free(p);
            flush(heap);
            let (bit, is_free, _) = bits(p);
            assert!(is_free, "the flush gave the block back to its slot");
            assert_ne!((p as *const usize).read(), tag(p), "the tag went with it");
            assert!(freed_already(of_block(p), p, bit), "its free bit marks it freed");
            free(keep);
        }
    }

    #[test]
    fn an_idle_cache_goes_back_to_the_slots_until_the_thread_allocates_again() {
        let Some(heap) = shared_heap() else { return };
        let size = 240_000;
        let keep = malloc(size);
        let p = malloc(size);
        // SAFETY: freed once; `keep` keeps the segment mapped.
        unsafe {
            p.write_bytes(0xcd, size);
            free(p);
            let due = (*heap).large.due;
            assert_ne!(due, 0);
            maybe_purge(heap, due - 1);
            assert_eq!((*heap).large.bytes, bin_size(size), "not due yet");
            maybe_purge(heap, due);
            assert_eq!((*heap).large.bytes, 0);
            let (bit, is_free, zero) = bits(p);
            assert!(is_free && !zero, "back in its slot, not purged yet");
            assert_ne!((*of_block(p)).slots_unpurged & bit, 0, "due for purging");
            assert!(!(*heap).large.active && (*heap).large.shared);
            free(keep);
        }
    }

    #[test]
    fn a_slot_counts_as_committed_while_it_may_be_resident() {
        // A class of its own, three slots a segment, all taken: once `p`
        // is freed, its slot is the only free one.
        let size = 1_200_000;
        let keep = [malloc(size), malloc(size)];
        let p = malloc(size);
        let seg = crate::meta::segment::of_block(p);
        assert!(keep.iter().all(|&k| crate::meta::segment::of_block(k) == seg));
        let count = || {
            // SAFETY: the segment lives while `keep` does.
            unsafe { (*seg).committed.load(Ordering::Relaxed) }
        };
        let held = count();
        // SAFETY: `p` is live, freed once; the collect empties the
        // quarantine (if any) into the slot.
        unsafe { free(p) };
        crate::core::alloc::collect(false);
        // The plain build counts the freed slot until it is purged; the
        // guard build seals it at once.
        purge(0, true);
        let bsize = BLOCK_SIZE[bin_of(harden::padded(size))];
        let opened = if harden::GUARD_PAGES {
            (size + harden::canary_extra()).next_multiple_of(os::page_size())
        } else {
            bsize
        };
        assert_eq!(count(), held - opened, "the freed slot purged or sealed");
        let q = malloc(size);
        assert_eq!(
            crate::meta::segment::of_block(q),
            seg,
            "the free slot taken again"
        );
        assert_eq!(count(), held, "counted again when handed out");
        // SAFETY: live blocks, freed once.
        unsafe {
            free(q);
            for k in keep {
                free(k);
            }
        }
    }

    fn bin_size(size: usize) -> usize {
        BLOCK_SIZE[bin_of(size)]
    }

    #[test]
    fn a_class_another_thread_took_marks_the_cache_shared() {
        let c = CLASSES - 1;
        let mut mine = Cache::new();
        let mut other = Cache::new();
        // Whoever took the class before (another test's thread, if any).
        drop(lock_class(c, Some(&mut other)));
        drop(lock_class(c, Some(&mut mine)));
        assert!(mine.shared, "another cache took the class last");
        mine.shared = false;
        drop(lock_class(c, Some(&mut mine)));
        assert!(!mine.shared, "it took the class last itself");
    }
}
