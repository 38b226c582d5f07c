//! Large blocks (64 KiB to 2 MiB): segments of slots, one size class
//! each, shared by all threads.
//!
//! ```text
//! segment: | header (slot bits, open bytes) | G | slack | slot 0 | slot 1 | ... | slack |
//! ```
//! Slots start where their size's alignment allows past the header, which
//! may leave slack below the first one. The guard build ends each slot in
//! a guard page and guards the slack (`harden::large`), so every block
//! has a guard below it and one after it, whichever slot it takes.
//!
//! **Slots, not pages.** A slot's bit in its segment header says whether it
//! is free (no free list runs through large blocks), and any thread takes
//! and frees slots under its class's lock. Large blocks are rare enough
//! that per-thread pages would buy nothing and hold a 4 MiB page per thread
//! and class; a remote free needs no owner to collect it, and one segment
//! per class serves every thread.
//!
//! **Purging and placement.** A freed slot's memory is purged after the
//! purge delay, and a block is taken from the lowest free slot whose memory
//! is still resident, else the lowest free one (with `guard-pages` or
//! `random-order`, a random one of those). A segment left with no slot
//! in use keeps at most [`IDLE_KEPT`] bytes of other free slots resident
//! besides the one just freed: a class's free slots serve no other class,
//! and a program using many classes now and then held a few of each.
//! Each slot's zero bit lets
//! `calloc` skip clearing a block whose memory is fresh or purged. With
//! `seal-freed-large` a freed block is sealed whole at once instead
//! (`harden::large`), and the next one comes from a random free slot of
//! its class.
//!
//! **The per-thread cache.** In front of the slots each thread keeps a few
//! blocks up to 256 KiB it freed (2 MiB in all), and its next malloc of a
//! class takes the last one it freed there without the class's lock, on
//! which threads churning large buffers would otherwise wait. A thread
//! caches only if it allocates large blocks itself (one that only frees
//! what others allocate would strand them) and shares the class with
//! another thread (it took the lock after another did): a cached block
//! keeps its segment alive, which buys nothing to a thread alone in its
//! classes. A cached block stays live in its slot and holds its [`tag`] in
//! its first word, so a second free finds the tag (or the slot's free bit
//! once the cache gave it back) and is reported; the tag lives in the
//! block because a bit in the shared header would move one cache line
//! between the cores of every thread using the class. A cache no block
//! came into for a purge delay gives its blocks back to their slots on its
//! thread's next slow path, at thread exit and on `collect`. A `fork` child
//! keeps the forking thread's cache and leaks the others', as it leaks
//! their threads' live blocks. The hardened build has no cache (see
//! [`CACHE_ON`]).
//!
//! **Segments.** A segment whose slots are all free is released, and the
//! arena hands its memory, still resident, to the next segment of any
//! class or a huge block. The guard build keeps one such segment per
//! class, whose guards and header are made already: a class of a few
//! slots a segment empties one at almost every free and needs one at
//! almost every malloc, and remaking it took a kernel call per slot, the
//! slack's guard and faults on its header's bitmaps, a call slower than
//! the 99.9th percentile of a mixed-size workload each time. Once all its
//! slots are free they are purged after the arena's delay, as a released
//! segment's memory would be (but for the others past [`IDLE_KEPT`], at
//! once). Without seals a
//! released segment leaves its guards in place and on record (the class's
//! guard layout), and the next segment of the class takes that memory
//! first and makes none of them.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::core::heap::{Heap, EMPTY_HEAP_PTR};
use crate::core::segment;
use crate::error::{self, ErrorKind};
use crate::meta::constants::{MEDIUM_OBJ_MAX, SEGMENT_SIZE};
use crate::meta::guards::Prior;
use crate::meta::page::{block_index, Page};
use crate::meta::segment::{of_block, page_at, Segment};
use crate::meta::size_class::{bin_of, BLOCK_SIZE, MAX_BIN};
use crate::os::lock::{Guard, Holder, SpinLock};
use crate::{harden, options, os, stats};

/// The first bin of large blocks.
const FIRST_BIN: usize = bin_of(MEDIUM_OBJ_MAX + 1);
const CLASSES: usize = MAX_BIN + 1 - FIRST_BIN;

/// Whether threads cache the large blocks they free (see the module
/// doc): only in the plain build. The guard build draws the next block at
/// random (and may seal a freed one at once), which reuse of the last
/// block freed would undo; with encoded links freed memory shows no plain
/// address, and the tag is one; random order promises reuse that is not
/// last-in first-out; the double-free bitmaps want every free checked.
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
/// heap; only that thread touches it. Each block in it (the first
/// `counts[c]` of `blocks[c]`) stays live in its slot, so its segment
/// stays live too, and holds its [`tag`] in its first word.
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

/// A size class of large blocks. Reached only through [`class`], under
/// its lock, so a `&mut Class` stands for that lock held: every segment
/// on its `open` list is a live segment of slots of the class, whose
/// lock-guarded state ([`Locked`]) the holder may read and write. Not
/// `Copy`, so no copy of a list outlives the lock.
struct Class {
    /// Segments of the class with a free slot (linked by `free_next`).
    open: *mut Segment,
    /// Segments of the class.
    count: usize,
    /// Segments of the class with no slot in use (on its list).
    idle: usize,
    /// No segment of the class has a slot due for purging before this (ms
    /// on the coarse clock); 0 if none has one. [`purge`] passes over a
    /// class not due without reading its segments' headers.
    due: u64,
    /// The cache (so the thread) that took the lock last with one, 0 if
    /// none did.
    user: usize,
}

impl Class {
    const EMPTY: Class = Class {
        open: ptr::null_mut(),
        count: 0,
        idle: 0,
        due: 0,
        user: 0,
    };

    /// The first segment on the class's list, if any.
    #[inline(always)]
    fn first(&self) -> Option<Locked> {
        if self.open.is_null() {
            return None;
        }
        // SAFETY: a segment on the list of a class reached through a
        // reference is live, and its lock is held (`Class`'s invariant).
        Some(unsafe { Locked::new(self.open) })
    }

    /// Puts `seg` first on the class's list.
    ///
    /// # Safety
    /// `seg` must be a segment of this class, not on its list.
    #[inline(always)]
    unsafe fn push(&mut self, seg: Locked) {
        // SAFETY: `open` is null or heads this class's list (`Class`'s
        // invariant); `seg` is of the class (this fn's contract).
        unsafe { seg.set_listed(self.open) };
        self.open = seg.slots().seg();
    }

    /// Takes `seg` off the class's list, wherever it is on it.
    fn unlink(&mut self, seg: Locked) {
        let mut at = &mut self.open as *mut *mut Segment;
        // SAFETY: `at` points at `open` or at the link of a segment on the
        // list, live and ours under the lock held (`Class`'s invariant).
        unsafe {
            while !(*at).is_null() {
                if *at == seg.slots().seg() {
                    *at = seg.link();
                    break;
                }
                at = ptr::addr_of_mut!((**at).free_next);
            }
        }
        seg.set_unlisted();
    }
}

static CLASSES_OF: Classes = Classes(UnsafeCell::new([const { Class::EMPTY }; CLASSES]));
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
    // SAFETY: `c < CLASSES`; the lock held (this fn's contract) makes us the
    // element's only user; no reference to the whole array is ever made.
    unsafe { &mut *(CLASSES_OF.0.get() as *mut Class).add(c) }
}

/// A live segment of slots, for what any thread keeping it live may
/// touch: its geometry (in page descriptor 0, written only at setup), the
/// address of each slot's block, and the slot bits read without the
/// class's lock. The obligation is met once, where the handle is made;
/// inside is a raw pointer, never a reference, as other threads write the
/// slot bits meanwhile.
#[derive(Clone, Copy)]
struct Slots(*mut Segment);

impl Slots {
    /// # Safety
    /// `seg` must be a live segment of slots (set up by `init_slots`) that
    /// stays live for as long as the handle is used: the caller holds its
    /// class's lock, or one of its blocks (live or cached), or it alone.
    #[inline(always)]
    unsafe fn new(seg: *mut Segment) -> Slots {
        Slots(seg)
    }

    #[inline(always)]
    fn seg(self) -> *mut Segment {
        self.0
    }

    /// The page descriptor holding the segment's geometry.
    #[inline(always)]
    fn page(self) -> *mut Page {
        // SAFETY: index 0 is in the page table of a live header (the
        // handle's invariant); only the address is computed.
        unsafe { page_at(self.0, 0) }
    }

    /// The size of its blocks.
    #[inline(always)]
    fn block_size(self) -> usize {
        // SAFETY: geometry in the descriptor of a live segment (the
        // handle's invariant), unchanged while it lives.
        unsafe { (*self.page()).block_size }
    }

    /// Where its first slot's block starts.
    #[inline(always)]
    fn start(self) -> *mut u8 {
        // SAFETY: geometry in the descriptor of a live segment (the
        // handle's invariant), unchanged while it lives.
        unsafe { (*self.page()).page_start }
    }

    /// How many slots it has.
    #[inline(always)]
    fn count(self) -> usize {
        // SAFETY: geometry in the descriptor of a live segment (the
        // handle's invariant), unchanged while it lives.
        unsafe { (*self.page()).reserved as usize }
    }

    /// Its class (an index into `LOCKS`).
    #[inline(always)]
    fn class(self) -> usize {
        // SAFETY: geometry in the descriptor of a live segment (the
        // handle's invariant), unchanged while it lives.
        unsafe { (*self.page()).bin as usize - FIRST_BIN }
    }

    /// The bits of all its slots.
    #[inline(always)]
    fn all(self) -> u64 {
        all_slots(self.count())
    }

    /// Its free slots. Read without the lock only where the slot that
    /// matters is live, whose bit nobody changes meanwhile.
    #[inline(always)]
    fn free_bits(self) -> u64 {
        // SAFETY: an atomic of a live header (the handle's invariant).
        unsafe { (*self.0).slots_free.load(Ordering::Relaxed) }
    }

    /// Its slots whose memory reads zero (without guards).
    #[inline(always)]
    fn zero_bits(self) -> u64 {
        // SAFETY: an atomic of a live header (the handle's invariant).
        unsafe { (*self.0).slots_zero.load(Ordering::Relaxed) }
    }

    /// The slot of its block `p`.
    ///
    /// # Safety
    /// `p` must be one of its blocks.
    #[inline(always)]
    unsafe fn slot_of(self, p: *const u8) -> Slot {
        let page = self.page();
        // SAFETY: `p` is a block start of the segment (this fn's contract):
        // the multiply by the inverse is the division, the index a slot.
        let index = unsafe { block_index(page, p as usize - self.start() as usize) } as usize;
        Slot { seg: self, index }
    }

    /// The same segment, for the state its class's lock guards.
    ///
    /// # Safety
    /// As for [`Locked::new`]: the caller holds the class's lock for as
    /// long as the handle is used.
    #[inline(always)]
    unsafe fn locked(self) -> Locked {
        Locked(self)
    }
}

/// Slot `index` of a live segment of slots (below its count): the handle
/// owns the slot's bit and its block's address.
#[derive(Clone, Copy)]
struct Slot {
    seg: Slots,
    index: usize,
}

impl Slot {
    #[inline(always)]
    fn segment(self) -> Slots {
        self.seg
    }

    /// Its bit in the segment's slot bitmaps.
    #[inline(always)]
    fn bit(self) -> u64 {
        1 << self.index
    }

    /// The slot's block.
    #[inline(always)]
    fn block(self) -> *mut u8 {
        // SAFETY: the index is below the slot count (the handle's
        // invariant), so the block lies in the segment's area.
        unsafe { self.seg.start().add(self.index * self.seg.block_size()) }
    }

    #[inline(always)]
    fn is_free(self) -> bool {
        self.seg.free_bits() & self.bit() != 0
    }

    /// Its memory read zero: fresh or purged when it was last taken.
    #[inline(always)]
    fn is_zero(self) -> bool {
        self.seg.zero_bits() & self.bit() != 0
    }

    /// The slot's block was (or may have been) written: its memory is no
    /// longer known to be zero. Atomic: a free into a cache clears a bit
    /// without the lock. Most freed slots were not zero, and skip the
    /// write.
    #[inline(always)]
    fn forget_zero(self) {
        if self.is_zero() {
            // SAFETY: an atomic of a live header (the handle's invariant).
            let zero = unsafe { &(*self.seg.seg()).slots_zero };
            zero.fetch_and(!self.bit(), Ordering::Relaxed);
        }
    }
}

/// A live segment of slots whose class's lock the caller holds, for the
/// state that lock guards: writes of the free bits, the unpurged bits, the
/// purge time and the link on the class's list.
#[derive(Clone, Copy)]
struct Locked(Slots);

impl Locked {
    /// # Safety
    /// `seg` must be a live segment of slots whose class's lock the caller
    /// holds for as long as the handle is used, or a new one that nobody
    /// else can reach (on no list yet).
    #[inline(always)]
    unsafe fn new(seg: *mut Segment) -> Locked {
        Locked(Slots(seg))
    }

    #[inline(always)]
    fn slots(self) -> Slots {
        self.0
    }

    /// # Safety
    /// Every slot `bits` names free must be free: its block nobody's.
    #[inline(always)]
    unsafe fn set_free_bits(self, bits: u64) {
        // SAFETY: an atomic of a live header, written only under the lock
        // held (the handle's invariant).
        unsafe { (*self.0.seg()).slots_free.store(bits, Ordering::Relaxed) };
    }

    /// The free slots whose memory is still resident, to be purged.
    #[inline(always)]
    fn unpurged(self) -> u64 {
        // SAFETY: a field of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe { (*self.0.seg()).slots_unpurged }
    }

    #[inline(always)]
    fn set_unpurged(self, bits: u64) {
        // SAFETY: a field of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe { (*self.0.seg()).slots_unpurged = bits };
    }

    /// When the unpurged slots are due (ms on the coarse clock).
    #[inline(always)]
    fn purge_at(self) -> u64 {
        // SAFETY: a field of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe { (*self.0.seg()).purge_at }
    }

    #[inline(always)]
    fn set_purge_at(self, due: u64) {
        // SAFETY: a field of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe { (*self.0.seg()).purge_at = due };
    }

    /// Whether it is on its class's list.
    #[inline(always)]
    fn listed(self) -> bool {
        // SAFETY: a field of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe { (*self.0.seg()).in_free_list }
    }

    /// Its link on its class's list: null, or the next segment on it
    /// (`init_header` nulls it; only `set_listed` and `set_unlisted` write
    /// it).
    #[inline(always)]
    fn link(self) -> *mut Segment {
        // SAFETY: a field of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe { (*self.0.seg()).free_next }
    }

    /// The segment after it on its class's list, if any.
    #[inline(always)]
    fn next(self) -> Option<Locked> {
        let next = self.link();
        if next.is_null() {
            return None;
        }
        // SAFETY: a non-null link is the next segment on the same class's
        // list (see `link`), live and under the same lock.
        Some(unsafe { Locked::new(next) })
    }

    /// It joins its class's list, in front of `next`.
    ///
    /// # Safety
    /// `next` must be null or the first segment on its class's list.
    #[inline(always)]
    unsafe fn set_listed(self, next: *mut Segment) {
        // SAFETY: fields of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe {
            (*self.0.seg()).free_next = next;
            (*self.0.seg()).in_free_list = true;
        }
    }

    /// It has left its class's list.
    #[inline(always)]
    fn set_unlisted(self) {
        // SAFETY: fields of a live header guarded by the lock held (the
        // handle's invariant).
        unsafe {
            (*self.0.seg()).free_next = ptr::null_mut();
            (*self.0.seg()).in_free_list = false;
        }
    }
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

/// Takes class `c`'s lock, noting in the calling thread's `cache` (if it
/// has one) when another thread took it last.
fn lock_class(c: usize, cache: Option<&mut Cache>) -> Guard<'static> {
    let g = LOCKS[c].lock();
    if let Some(cache) = cache {
        let me = cache as *mut Cache as usize;
        // SAFETY: class `c`'s lock is held, just taken; the reference ends
        // here.
        let class = unsafe { class(c) };
        if class.user != me {
            cache.shared |= class.user != 0;
            class.user = me;
        }
    }
    g
}

/// Allocates a large block of bin `bin` for a request of `size` bytes
/// from the calling thread's cache: None if it holds none of the class,
/// else the block, or null if something wrote to it after it was freed
/// (and an error handler took the report).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, and `bin` the
/// large bin of `size` as padded by the hardened build.
#[inline(always)]
pub unsafe fn alloc_cached(heap: *mut Heap, bin: usize, size: usize) -> Option<*mut u8> {
    let c = bin - FIRST_BIN;
    if !CACHE_ON || c >= CACHED_CLASSES {
        return None;
    }
    // SAFETY: `heap` is the calling thread's initialised heap (this fn's
    // contract), so its cache is ours alone.
    let cache = unsafe { &mut (*heap).large };
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
    // SAFETY: a cached block stays live in its slot (`Cache`'s
    // invariant), and is ours now, so its segment lives while we hold it.
    let seg = unsafe { Slots::new(of_block(p)) };
    // The tag would read as a second free of a block in use (and the
    // zero-on-free build checks the block is zero).
    // SAFETY: the block left the cache and is ours alone, a word at least.
    unsafe { (p as *mut usize).write(0) };
    // SAFETY: `p` was free in the cache and is ours alone; `bin`, its
    // class, is that of `size` (this fn's contract).
    Some(unsafe { hand_out(seg, p, size, false) })
}

/// Allocates a large block of bin `bin` for a request of `size` bytes
/// from a free slot of its class. Null when out of memory (or when
/// something wrote to the slot taken after it was freed and an error
/// handler took the report).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, and `bin` the
/// large bin of `size` as padded by the hardened build.
pub unsafe fn alloc(heap: *mut Heap, bin: usize, size: usize) -> *mut u8 {
    let c = bin - FIRST_BIN;
    let slot = loop {
        let taken = {
            // SAFETY: `heap` is the calling thread's initialised heap (this
            // fn's contract), so its cache is ours alone.
            let _g = lock_class(c, CACHE_ON.then(|| unsafe { &mut (*heap).large }));
            // SAFETY: class `c`'s lock is held, just taken.
            take_slot(unsafe { class(c) })
        };
        if let Some(t) = taken {
            break t;
        }
        // SAFETY: `bin` is a large bin and `c` its class (this fn's
        // contract).
        if !unsafe { new_segment(bin, c) } {
            return ptr::null_mut();
        }
    };
    // Its zero bit stays as `take_slot` found it while the block is live.
    let fresh = !harden::freed_large_sealed() && slot.is_zero();
    // SAFETY: the slot was free and `take_slot` made it ours alone; its
    // class is `bin`, that of `size` (this fn's contract); with `fresh`
    // its memory, fresh or purged, reads zero.
    unsafe { hand_out(slot.segment(), slot.block(), size, fresh) }
}

/// Vets the block `p` of `seg`, just taken from its slot or a cache, and
/// hands it out for a request of `size` bytes. Null if it was written
/// after its free (reported; the slot is left taken). `fresh`: its memory
/// reads zero throughout, and is left untouched but for the canary.
///
/// # Safety
/// `p` must be a block of `seg` that was free (in its slot or a cache)
/// and is now the caller's alone, and `size`, padded by the hardened
/// build, must fit it; with `fresh`, it reads zero throughout.
unsafe fn hand_out(seg: Slots, p: *mut u8, size: usize, fresh: bool) -> *mut u8 {
    // SAFETY: `p` is a free block of the large page, just taken by the
    // caller, which `size`, padded, fits (this fn's contract), zero
    // throughout with `fresh`.
    if !unsafe { harden::large_taken(seg.page(), p, size, fresh) } {
        return ptr::null_mut();
    }
    p
}

/// Takes a free slot of a segment of `class`, held under its lock.
fn take_slot(class: &mut Class) -> Option<Slot> {
    let seg = class.first()?;
    let slots = seg.slots();
    let free = slots.free_bits();
    // Among the free slots whose pages were kept, if any: a slot
    // sealed with markers, purged, or never used, faults in every page
    // its next block touches.
    let warm = if harden::freed_large_sealed() {
        // SAFETY: the page describes the live segment of slots whose free
        // slots `free` names.
        unsafe { harden::large_warm(slots.page(), free) }
    } else {
        free & !slots.zero_bits()
    };
    let choice = if warm != 0 { warm } else { free };
    let mut k = harden::pick_large_slot(choice.count_ones() as usize);
    let mut bits = choice;
    let mut index = bits.trailing_zeros() as usize;
    while k > 0 {
        bits &= bits - 1;
        index = bits.trailing_zeros() as usize;
        k -= 1;
    }
    // `index` is a set bit of `free`, so below the slot count.
    let slot = Slot { seg: slots, index };
    // SAFETY: the page describes the live segment of slots, whose guard
    // mask this is; `index` is below its slot count; the class's lock is
    // held (`&mut Class` stands for it).
    unsafe { harden::large_slot_taken(slots.page(), &(*slots.seg()).kept_guards, index) };
    // SAFETY: only the slot taken leaves the free bits, whose others stay
    // as they were.
    unsafe { seg.set_free_bits(free & !slot.bit()) };
    seg.set_unpurged(seg.unpurged() & !slot.bit());
    if !harden::freed_large_sealed() && slot.is_zero() {
        // Fresh or purged, so not counted as committed until now (with
        // the seals, what is opened is counted instead).
        // SAFETY: the segment is live under its class's lock, held.
        unsafe { stats::commit_more(slots.seg(), slots.block_size()) };
    }
    if free == slots.all() {
        class.idle = class.idle.saturating_sub(1);
    }
    if free & !slot.bit() == 0 {
        class.open = seg.link();
        seg.set_unlisted();
    }
    Some(slot)
}

/// Makes a segment of slots for bin `bin` (class `c`). False when out of
/// memory.
///
/// # Safety
/// `bin` must be a large bin and `c` its class.
unsafe fn new_segment(bin: usize, c: usize) -> bool {
    // Taken whole: whatever a released segment left sealed (with
    // `mprotect` or markers) is opened, and guarded or sealed again below
    // as this segment's layout needs; memory the last segment of the
    // class left (its layout, asked for first) comes with its guards.
    let sealed = harden::freed_large_sealed();
    let want = harden::large_layout(c);
    let Some(fresh) = segment::os_alloc(SEGMENT_SIZE, true, want) else {
        return false;
    };
    let have = if fresh.prior == Prior::Guarded {
        fresh.guards
    } else {
        0
    };
    let seg = fresh.seg;
    // SAFETY: the segment is fresh from `os_alloc` and ours alone until it
    // is on its class's list; `bin` is a large bin (this fn's contract).
    let (start, count) = unsafe {
        (*seg).in_arena = fresh.in_arena;
        segment::init_slots(seg, bin, fresh.zero)
    };
    // SAFETY: set up as a segment of slots just now, and on no list yet:
    // nobody else can reach it.
    let slots = unsafe { Locked::new(seg) };
    let page = slots.slots().page();
    let bsize = BLOCK_SIZE[bin];
    // SAFETY: a header nobody else can reach yet.
    let info = unsafe { (*seg).info_size };
    let (area_start, area_end) = (seg as usize + info, seg as usize + SEGMENT_SIZE);
    // Taken whole (above), the area past the header is accessible but
    // for the guards `have` names.
    // SAFETY: the page describes the new segment of slots, nobody else's;
    // its area is fresh, page-aligned and accessible but for those guards.
    let kept = unsafe { harden::large_slots_made(page, area_start, area_end, !fresh.zero, have) };
    // SAFETY: a header nobody else can reach yet.
    unsafe {
        (*seg).guard_layout = want;
        (*seg).kept_guards.store(kept, Ordering::Relaxed);
    }
    let zero = if fresh.zero { all_slots(count) } else { 0 };
    // SAFETY: a header nobody else can reach yet.
    unsafe { (*seg).slots_zero.store(zero, Ordering::Relaxed) };
    slots.set_unpurged(0);
    // The header, the rest of the segment if the memory is not zero
    // (it may hold an old owner's pages), and of the slots those not
    // zero or, with the seals, those left open.
    let mut committed = info;
    if !fresh.zero {
        committed += SEGMENT_SIZE - info - count * bsize;
    }
    for i in 0..count {
        committed += if sealed {
            // A slot is left open only when no seal could be made, and
            // then its guard page may be missing too: counted whole,
            // on the safe side (what it opens and seals later moves
            // the count by as much, so the excess stays until the
            // segment is released).
            // SAFETY: `i` is below the slot count: a block of the large
            // page, just set up.
            if unsafe { harden::block_usable(page, start.add(i * bsize)) } == 0 {
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
    // SAFETY: a segment just set up that nobody else uses yet.
    unsafe { stats::commit_start(seg, fresh.committed, committed) };
    // Counted a segment at a time, as pages are: a shared gauge
    // touched on every large malloc and free was contended between
    // threads.
    stats::PAGES.increase(1);
    stats::IN_USE.increase(count * bsize);
    let _g = LOCKS[c].lock();
    // SAFETY: class `c`'s lock is held, just taken.
    let class = unsafe { class(c) };
    // SAFETY: the segment is of class `c` (this fn's contract), and on no
    // list yet.
    unsafe { class.push(slots) };
    class.count += 1;
    class.idle += 1;
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
    // SAFETY: a segment of slots is live while it has a live block, `p`
    // (this fn's contract).
    let slots = unsafe { Slots::new(seg) };
    // SAFETY: `p` is a block of `seg` (this fn's contract).
    let slot = unsafe { slots.slot_of(p) };
    let mut cache = if CACHE_ON && heap != EMPTY_HEAP_PTR {
        // SAFETY: a heap other than the empty one is the calling thread's
        // (this fn's contract), so its cache is ours alone.
        Some(unsafe { &mut (*heap).large })
    } else {
        None
    };
    if let Some(cache) = cache.as_deref_mut() {
        // SAFETY: the calling thread's cache; `p` is the block of `slot`,
        // and was live (this fn's contract).
        if unsafe { cache_push(cache, slot, p) } {
            return;
        }
    }
    // SAFETY: `p` is the block of `slot`, and was live (this fn's
    // contract); it comes from no cache.
    unsafe { free_slot(slot, p, false, cache) };
}

/// Puts the freed block `p` of `slot` in the thread's `cache` if it has
/// room. True if it did, or if it reported `p` as freed already.
///
/// # Safety
/// `cache` must be the calling thread's; `p` the block of `slot`, which
/// was live (a second free is reported).
unsafe fn cache_push(cache: &mut Cache, slot: Slot, p: *mut u8) -> bool {
    let seg = slot.segment();
    let bsize = seg.block_size();
    let c = seg.class();
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
    // A live slot's free bit is clear and stays so (nobody takes a
    // live slot), so a set one means `p` went back to its slot already.
    // SAFETY: `p` is the block of `slot` (this fn's contract).
    if unsafe { freed_already(slot, p) } {
        error::report(ErrorKind::DoubleFree, p as usize, bsize);
        return true;
    }
    // The segment's last block in use goes back, so that the segment
    // is released: cached, it would keep the segment's memory from
    // every other class and from huge blocks. (Other cached blocks
    // count as in use here, so a segment may still be held by cached
    // blocks alone, by a few at most.)
    let others = seg.free_bits() | slot.bit();
    if others == seg.all() {
        return false;
    }
    // Written by its owner, most likely: `calloc` must clear it when it
    // comes back. Nobody sets a live slot's bit meanwhile.
    slot.forget_zero();
    // SAFETY: `p` was live and is neither in its slot nor in a cache (just
    // checked): the caller's to free, its first word ours to write.
    unsafe { (p as *mut usize).write(tag(p)) };
    cache.blocks[c][n] = p;
    cache.counts[c] = (n + 1) as u8;
    cache.bytes += bsize;
    cache.due = os::recent_ms().saturating_add(delay);
    true
}

/// Whether the block `p` of `slot` is free already: in its slot, or in a
/// cache.
///
/// # Safety
/// `p` must be the block of `slot`.
unsafe fn freed_already(slot: Slot, p: *mut u8) -> bool {
    // A sealed block of the guard build is not read (it has no cache).
    // SAFETY: `p` is a block of a live segment (this fn's contract), which
    // without guards is mapped and readable, free or not.
    slot.is_free() || (CACHE_ON && unsafe { (p as *const usize).read() } == tag(p))
}

/// Gives the freed block `p` of `slot` back to its slot under its class's
/// lock, and releases the segment if that emptied it. A block from the
/// caller's cache (`cached`) is trusted; any other is reported if it is
/// free already.
///
/// `cache` is the calling thread's, if it has one.
///
/// # Safety
/// `p` must be the block of `slot`, which was live; if `cached`, one the
/// calling thread just took out of its cache.
unsafe fn free_slot(slot: Slot, p: *mut u8, cached: bool, cache: Option<&mut Cache>) {
    let slots = slot.segment();
    let bsize = slots.block_size();
    let c = slots.class();
    let all = slots.all();
    let bit = slot.bit();
    let release = {
        let _g = lock_class(c, cache);
        // SAFETY: class `c`'s lock is held, just taken.
        let class = unsafe { class(c) };
        // SAFETY: `p` is the block of `slot` (this fn's contract).
        if !cached && unsafe { freed_already(slot, p) } {
            drop(_g);
            error::report(ErrorKind::DoubleFree, p as usize, bsize);
            return;
        }
        // SAFETY: the segment lives while `p` does, and its class's lock
        // is held, just taken.
        let seg = unsafe { slots.locked() };
        let free = slots.free_bits();
        // SAFETY: the slot's block is nobody's now: it was live, and is
        // freed once (checked above, or out of the caller's cache).
        unsafe { seg.set_free_bits(free | bit) };
        if !harden::freed_large_sealed() {
            let due = freed_open(seg, slot, free | bit == all);
            if due != 0 && (class.due == 0 || due < class.due) {
                class.due = due;
            }
        }
        if !seg.listed() {
            // SAFETY: the segment is of class `c`, and not on its list.
            unsafe { class.push(seg) };
        }
        let idle = free | bit == all;
        // The guard build keeps one segment with no slot in use per class
        // (see the module doc).
        let empty = idle && (class.idle > 0 || !harden::large_slots_guarded());
        if idle && !empty {
            class.idle += 1;
        }
        if empty {
            class.unlink(seg);
            // Saturating: in a fork child a set-aside class (see
            // `after_fork`) counts none of its old segments, which
            // still come back here as their blocks are freed.
            class.count = class.count.saturating_sub(1);
        }
        empty
    };
    if release {
        // SAFETY: every slot was free and the segment is off its list, so
        // nobody else can reach it.
        unsafe { release_segment(slots, bsize) };
    }
}

/// Gives back the segment of slots `seg`, whose blocks are `bsize` bytes.
///
/// # Safety
/// No block of `seg` may be in use or cached, and `seg` must be on no
/// list: nobody else can reach it.
unsafe fn release_segment(seg: Slots, bsize: usize) {
    stats::PAGES.decrease(1);
    stats::IN_USE.decrease(seg.count() * bsize);
    // SAFETY: nobody else can reach the segment (this fn's contract): its
    // descriptor and its memory are ours to reset and give back.
    unsafe {
        crate::core::page::reset(seg.page());
        segment::os_free(seg.seg());
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
    // SAFETY: a heap other than the empty one is the calling thread's
    // (this fn's contract), so its cache is ours alone.
    let cache = unsafe { &mut (*heap).large };
    cache.active = false;
    cache.shared = false;
    // SAFETY: the calling thread's cache.
    unsafe { empty_cache(cache) };
}

/// Gives every block in `cache` back to its slot, where it is purged
/// after the delay as any freed slot is.
///
/// # Safety
/// `cache` must be the calling thread's.
unsafe fn empty_cache(cache: &mut Cache) {
    for c in 0..CACHED_CLASSES {
        while cache.counts[c] > 0 {
            let n = cache.counts[c] as usize - 1;
            let p = cache.blocks[c][n];
            cache.counts[c] = n as u8;
            // SAFETY: a cached block stays live in its slot (`Cache`'s
            // invariant), so its segment lives until it goes back.
            let seg = unsafe { Slots::new(of_block(p)) };
            cache.bytes -= seg.block_size();
            // Left there, the tag would make the block's next owner's
            // free look like a second one.
            // SAFETY: out of the cache, the block is ours alone.
            unsafe { (p as *mut usize).write(0) };
            // SAFETY: `p` is a block of `seg`, just taken out of this
            // thread's cache (this fn's contract).
            unsafe { free_slot(seg.slot_of(p), p, true, None) };
        }
    }
    cache.due = 0;
}

/// Releases every segment of slots that has none in use (each class keeps
/// one otherwise), and drops the pages that sealed free slots kept: what
/// `collect(true)` promises, all memory not in use back to the OS.
pub fn collect() {
    for (c, lock) in LOCKS.iter().enumerate() {
        let seg = {
            let _g = lock.lock();
            // SAFETY: class `c`'s lock is held, just taken.
            take_empty(unsafe { class(c) })
        };
        if let Some(seg) = seg {
            // SAFETY: `take_empty` took it off its list with no block in
            // use or cached: nobody else can reach it.
            unsafe { release_segment(seg, seg.block_size()) };
        }
    }
    if !harden::freed_large_sealed() {
        purge(0, true, usize::MAX);
        return;
    }
    for (c, lock) in LOCKS.iter().enumerate() {
        let _g = lock.lock();
        // SAFETY: class `c`'s lock is held, just taken.
        let mut at = unsafe { class(c) }.first();
        while let Some(seg) = at {
            let slots = seg.slots();
            // SAFETY: the live segment's page and its free slots, under its
            // lock held: their blocks are sealed and nobody's.
            unsafe { harden::large_drop_free(slots.page(), slots.free_bits()) };
            at = seg.next();
        }
    }
}

/// Bytes of free slots besides the one just freed that a segment left
/// with no slot in use keeps resident until the purge delay: enough for a
/// class of small large blocks churning through several (their slots are
/// cheap to keep and, touched sparsely, faulted in again on each use), a
/// slot or none of the largest classes.
const IDLE_KEPT: usize = 1 << 20;

/// A slot was just freed (and not sealed): its memory is no longer known
/// to be zero, and goes back to the OS after the purge delay unless the
/// slot is taken again first (at once with a delay of 0). When that left
/// the segment with no slot in use (`idle`), it waits the arena's delay
/// instead, as a released segment's memory does: a class keeps its last
/// segment (with `guard-pages`) where the plain build hands it to the
/// arena, and a class used now and then found its slots purged every
/// time (with the purge delay, a program using many classes now and then
/// spent its time faulting their slots in again). The other free slots
/// still resident then go back at once if they hold more than
/// [`IDLE_KEPT`] bytes: these segments, one per class a program used
/// lately, each held the blocks it last freed for that delay, memory no
/// other class could use. Returns when the slot falls due.
fn freed_open(seg: Locked, slot: Slot, idle: bool) -> u64 {
    slot.forget_zero();
    let slots = seg.slots();
    let others = seg.unpurged() & slots.free_bits() & !slot.bit();
    seg.set_unpurged(seg.unpurged() | slot.bit());
    let delay = options::purge_delay_ms();
    if delay == 0 {
        purge_slots(seg, usize::MAX);
        return 0;
    }
    if idle && others.count_ones() as usize * slots.block_size() > IDLE_KEPT {
        // `purge_slots` purges the free slots marked unpurged: only the
        // others are, for that call.
        let unpurged = seg.unpurged();
        seg.set_unpurged(others);
        purge_slots(seg, usize::MAX);
        seg.set_unpurged(unpurged & !others);
    }
    let delay = if idle {
        options::arena_purge_delay_ms()
    } else {
        delay
    };
    let due = os::recent_ms().saturating_add(delay);
    // Every free pushes the segment's time on, so a segment in active
    // use is not purged a slot at a time while its slots cycle.
    seg.set_purge_at(due);
    schedule(due);
    due
}

/// Purges the free slots of `seg` (whose freed slots are not sealed)
/// still resident, one `madvise` per run of adjacent slots, until `budget`
/// bytes are purged (at least one slot); they read as zero after. Those
/// left stay due. A slot's guard page is purged with it, and stays a
/// guard. Returns the bytes purged.
fn purge_slots(seg: Locked, budget: usize) -> usize {
    let slots = seg.slots();
    let bsize = slots.block_size();
    let mut bits = seg.unpurged() & slots.free_bits();
    let mut purged = 0;
    let mut newly = 0;
    while bits != 0 && purged < budget {
        let first = bits.trailing_zeros() as usize;
        let whole = (bits >> first).trailing_ones() as usize;
        // The run cut to the budget left, one slot at least.
        let run = whole.min((budget - purged).div_ceil(bsize)).max(1);
        // SAFETY: the run's slots are free under the lock held, so their
        // blocks, which lie in the segment, are nobody's.
        unsafe { os::purge(slots.start().add(first * bsize), run * bsize) };
        let mask = if run == 64 {
            u64::MAX
        } else {
            ((1u64 << run) - 1) << first
        };
        bits &= !mask;
        purged += run * bsize;
        // Atomic: a free into a cache clears another slot's bit
        // without the lock.
        // SAFETY: an atomic of the live header (the handle's invariant).
        let was = unsafe { (*slots.seg()).slots_zero.fetch_or(mask, Ordering::Relaxed) };
        // A free slot is counted as committed while its zero bit is
        // clear.
        newly += (mask & !was).count_ones() as usize * bsize;
    }
    // SAFETY: the segment is live under its class's lock, held.
    unsafe { stats::commit_less(slots.seg(), newly) };
    seg.set_unpurged(bits);
    if bits == 0 {
        seg.set_purge_at(0);
    }
    purged
}

/// Bytes one call of [`purge`] gives back at most (one slot at least)
/// unless forced, on the slow path of a small or medium malloc that found
/// the purge a whole delay late (see [`maybe_purge`]): `madvise` takes
/// time in proportion to the resident pages it drops, under the class's
/// lock, and such a call otherwise takes a fraction of a microsecond; the
/// rest stays due and goes on the next ones.
const PURGE_BUDGET: usize = 1 << 20;

/// Bytes one call of [`purge`] gives back at most on the slow path of a
/// large or huge malloc, which pays for a page fault or a kernel call
/// already. With [`PURGE_BUDGET`] there, a backlog of due slots went a
/// megabyte a call, so nearly every large malloc of a program churning
/// large blocks paid for one more `madvise` and class walk, and those
/// calls made the malloc 99.9th percentile of a mixed-size workload; a
/// larger share each clears the backlog in a few calls. Still bounded, so
/// one malloc does not drop a program's every freed slot at once.
const BIG_PURGE_BUDGET: usize = 16 << 20;

/// Purges the free slots whose delay has passed (all of them with
/// `force`), up to `budget` bytes (one slot at least) unless forced, and
/// records when the next fall due (at once if the budget left some).
fn purge(now: u64, force: bool, budget: usize) {
    let mut next_due = 0u64;
    let mut budget = if force { usize::MAX } else { budget };
    for (c, lock) in LOCKS.iter().enumerate() {
        let _g = lock.lock();
        // SAFETY: class `c`'s lock is held, just taken.
        let class = unsafe { class(c) };
        if !force && (class.due == 0 || class.due > now) {
            // A walk of a big class's segments was most of a purge's time.
            if class.due != 0 && (next_due == 0 || class.due < next_due) {
                next_due = class.due;
            }
            continue;
        }
        let mut class_due = 0u64;
        let mut at = class.first();
        while let Some(seg) = at {
            let due = seg.purge_at();
            if seg.unpurged() != 0 {
                if (force || due <= now) && budget > 0 {
                    budget = budget.saturating_sub(purge_slots(seg, budget));
                }
                if seg.unpurged() != 0 && (class_due == 0 || due < class_due) {
                    class_due = due;
                }
            }
            at = seg.next();
        }
        class.due = class_due;
        if class_due != 0 && (next_due == 0 || class_due < next_due) {
            next_due = class_due;
        }
    }
    if next_due != 0 {
        schedule(next_due.max(1));
    }
}

/// When the earliest free slot, or the calling thread's cache, falls due
/// for purging; 0 if none (else only its being 0 or not means anything).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn purge_due(heap: *mut Heap) -> u64 {
    // SAFETY: `heap` is the calling thread's initialised heap (this fn's
    // contract), whose cache only this thread writes.
    PURGE_DUE.load(Ordering::Relaxed) | unsafe { (*heap).large.due }
}

/// Purges free slots whose delay has passed, if any is due at `now` (one
/// thread does it while the others carry on), and the calling thread's
/// cache if it is due.
///
/// The purge waits for the slow path of a large or huge malloc (`big`),
/// which pays for a page fault or a kernel call already, unless it is a
/// whole purge delay late: on a small or medium malloc's slow path, a
/// call that otherwise takes a fraction of a microsecond, each purge was
/// one more call slower than the 99th percentile of a mixed-size
/// workload. A program that frees large blocks without allocating more
/// still gets their memory back, a delay later.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn maybe_purge(heap: *mut Heap, now: u64, big: bool) {
    let late = if big {
        now
    } else {
        now.saturating_sub(options::purge_delay_ms())
    };
    if os::claim_due(&PURGE_DUE, late) {
        purge(now, false, if big { BIG_PURGE_BUDGET } else { PURGE_BUDGET });
    }
    // SAFETY: `heap` is the calling thread's initialised heap (this fn's
    // contract), so its cache is ours alone.
    let cache = unsafe { &mut (*heap).large };
    if cache.due != 0 && now >= cache.due {
        // SAFETY: the calling thread's cache.
        unsafe { empty_cache(cache) };
        cache.active = false;
    }
}

/// Whether the live large block `p` of `seg` was zero when taken, past
/// its first word: `calloc` need not clear it. With the seals, only where
/// zero-on-free zeroes what it opens (the zero bits describe slots that
/// are purged, not sealed).
///
/// # Safety
/// `p` must be a live block of the segment of slots `seg`, owned by the
/// caller.
pub unsafe fn was_zero(seg: *mut Segment, p: *const u8) -> bool {
    if harden::freed_large_sealed() {
        return harden::reused_large_zeroed();
    }
    // SAFETY: `seg` lives while its block `p` does (this fn's contract); a
    // live slot's zero bit changes only when its owner, the caller, frees it.
    unsafe { Slots::new(seg).slot_of(p).is_zero() }
}

/// Takes a segment with no slot in use off `class`, held under its lock,
/// if there is one.
fn take_empty(class: &mut Class) -> Option<Slots> {
    let mut at = class.first();
    while let Some(seg) = at {
        let slots = seg.slots();
        if slots.free_bits() == slots.all() {
            class.unlink(seg);
            class.count = class.count.saturating_sub(1);
            class.idle = class.idle.saturating_sub(1);
            return Some(slots);
        }
        at = seg.next();
    }
    None
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
        unsafe { *class(c) = Class::EMPTY };
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

    /// The slot of block `p`, whether it is free, and whether its memory
    /// is known to be zero.
    ///
    /// # Safety
    /// `p` must be a block of a segment of slots the caller keeps live.
    unsafe fn bits(p: *mut u8) -> (Slot, bool, bool) {
        // SAFETY: `p` is a block of a segment of slots kept live (this fn's
        // contract).
        let slot = unsafe { Slots::new(of_block(p)).slot_of(p) };
        (slot, slot.is_free(), slot.is_zero())
    }

    // Each test takes blocks of a class of its own, so tests running on
    // other threads do not take its slots.

    #[test]
    fn a_freed_block_waits_tagged_in_the_cache_and_comes_back_untagged() {
        let Some(heap) = shared_heap() else { return };
        let size = 140_000;
        let keep = malloc(size);
        let p = malloc(size);
        // SAFETY: `p` is live with `size` bytes, then freed once.
        unsafe {
            p.write_bytes(0xab, size);
            free(p);
        }
        // The cache and the slot bits are read on this thread, which owns
        // both blocks, cached or live; `keep` keeps their segment live.
        let c = bin_of(size) - FIRST_BIN;
        // SAFETY: this thread's heap, whose cache only it touches.
        let counts = || unsafe { (*heap).large.counts[c] };
        assert_eq!(counts(), 1);
        // SAFETY: as for `counts`.
        assert_eq!(unsafe { (*heap).large.blocks[c][0] }, p);
        // SAFETY: `p` is a block of the segment `keep` keeps live.
        let (slot, is_free, zero) = unsafe { bits(p) };
        assert!(!is_free && !zero, "a cached block stays live, not known zero");
        // SAFETY: `p` is the block of `slot`.
        assert!(unsafe { freed_already(slot, p) }, "the tag marks it freed");
        let q = malloc(size);
        assert_eq!(q, p, "the thread's next malloc of the class takes it");
        assert_eq!(counts(), 0);
        // SAFETY: `q` is `p`, the block of `slot`, live.
        unsafe {
            assert!(!freed_already(slot, q), "a block in use has no tag");
            assert!(!was_zero(of_block(q), q), "calloc must clear it");
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
            let (slot, is_free, _) = bits(p);
            assert!(is_free, "the flush gave the block back to its slot");
            assert_ne!((p as *const usize).read(), tag(p), "the tag went with it");
            assert!(freed_already(slot, p), "its free bit marks it freed");
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
            maybe_purge(heap, due - 1, true);
            assert_eq!((*heap).large.bytes, bin_size(size), "not due yet");
            maybe_purge(heap, due, true);
            assert_eq!((*heap).large.bytes, 0);
            let (slot, is_free, zero) = bits(p);
            assert!(is_free && !zero, "back in its slot, not purged yet");
            assert_ne!((*of_block(p)).slots_unpurged & slot.bit(), 0, "due for purging");
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
        // The freed slot counts until it is purged; with the seals it is
        // sealed at once.
        purge(0, true, usize::MAX);
        let bsize = BLOCK_SIZE[bin_of(harden::padded(size))];
        let opened = if harden::freed_large_sealed() {
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
