//! The per-thread heap: direct table, page queues, and the malloc/free
//! paths that run on them.
//!
//! Fast path of malloc: TLS heap -> `direct[wsize]` -> pop `page.free`.
//! A thread's heap pointer starts at the static [`EMPTY_HEAP`], whose direct
//! table points at a page with no free blocks, so a thread's first malloc
//! lands in [`malloc_generic`], which creates its real heap.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::core::page;
use crate::core::page_queue::{self, PageQueue};
use crate::core::segment::{self, Segments};
use crate::core::{arena, huge, large, thread};
use crate::error::{self, ErrorKind};
use crate::meta::constants::{
    LARGE_OBJ_MAX, MEDIUM_OBJ_MAX, RETIRE_CYCLES, SMALL_OBJ_MAX, SMALL_SIZE_MAX, SMALL_WSIZE_MAX,
};
use crate::meta::page::{Block, Page, NEVER_DELAYED_FREE, NO_DELAYED_FREE, USE_DELAYED_FREE};
use crate::meta::segment::{kind_for, of_block, page_of};
use crate::meta::size_class::{bin_of, wsize_of, BIN_COUNT, BLOCK_SIZE};
use crate::stats::{self, HeapCounters};
use crate::{harden, os};

/// Abandoned segments tolerated before every slow path adopts one.
const ABANDONED_SLACK: usize = 16;

/// Slow paths served by the bin's first page alone between two runs of the
/// deferred work (see [`malloc_generic`]).
const DEFERRED_EVERY: u32 = 8;

/// Index of the queue of full pages.
pub const FULL_QUEUE: usize = BIN_COUNT;

#[repr(C)]
pub struct Heap {
    /// First, next to the start of the direct table the fast path reads.
    pub counters: HeapCounters,
    pub direct: [*mut Page; SMALL_WSIZE_MAX + 1],
    pub queues: [PageQueue; BIN_COUNT + 1],
    /// Blocks freed by other threads into this heap's full pages.
    pub delayed: AtomicUsize,
    pub segs: Segments,
    /// Bins that may hold a retired (empty, kept) page.
    pub retired_min: usize,
    pub retired_max: usize,
    /// Slow paths taken, counting towards the next deferred work.
    pub slow_count: u32,
    /// Link in the pool of unused heaps.
    pub pool_next: *mut Heap,
    /// State of the hardened build's random generator.
    pub rng: u64,
    /// Blocks this thread freed that are not reused yet (empty and
    /// zero-sized without the `quarantine` feature).
    pub quarantine: harden::Quarantine,
    /// Large blocks this thread freed, for its next large mallocs.
    pub large: large::Cache,
}

struct SyncPage(Page);
// SAFETY: the empty page is never written: it has no free blocks, so the
// fast path only reads it and the slow path never receives it as a page.
unsafe impl Sync for SyncPage {}

/// Transparent: the static's address is the heap's (the TLS slot's
/// initial value in `thread` names the static).
#[repr(transparent)]
pub(crate) struct SyncHeap(Heap);
// SAFETY: the empty heap is never written; the slow path swaps it for a
// real heap before touching anything.
unsafe impl Sync for SyncHeap {}

static EMPTY_PAGE: SyncPage = SyncPage(Page::empty());
pub const EMPTY_PAGE_PTR: *mut Page = ptr::addr_of!(EMPTY_PAGE.0) as *mut Page;
pub(crate) static EMPTY_HEAP: SyncHeap = SyncHeap(Heap::new());
pub const EMPTY_HEAP_PTR: *mut Heap = ptr::addr_of!(EMPTY_HEAP.0) as *mut Heap;

/// The heap that owns `page` (null for none): the typed side of
/// `Page::heap`, which the types layer keeps opaque.
#[inline(always)]
pub fn owner(page: &Page, order: Ordering) -> *mut Heap {
    page.heap.load(order).cast()
}

/// Makes `heap` the owner of `page` (see [`owner`]).
#[inline(always)]
pub fn set_owner(page: &Page, heap: *mut Heap, order: Ordering) {
    page.heap.store(heap.cast(), order);
}

impl Heap {
    pub const fn new() -> Heap {
        Heap {
            counters: HeapCounters::new(),
            direct: [EMPTY_PAGE_PTR; SMALL_WSIZE_MAX + 1],
            queues: [PageQueue::new(); BIN_COUNT + 1],
            delayed: AtomicUsize::new(0),
            segs: Segments::new(),
            retired_min: BIN_COUNT,
            retired_max: 0,
            slow_count: 0,
            pool_next: ptr::null_mut(),
            rng: 0,
            quarantine: harden::Quarantine::new(),
            large: large::Cache::new(),
        }
    }
}

/// Pops a block off a page known to have one.
///
/// # Safety
/// `page` must be owned by the calling thread with a non-empty `free`.
#[inline(always)]
pub unsafe fn pop_block(page: *mut Page) -> *mut u8 {
    // SAFETY: in use and this thread's (this fn's contract).
    let p = unsafe { page::Owned::new(page) };
    let block = p.free();
    // SAFETY: `block` heads the page's non-empty free list, so its link is
    // the rest of that list.
    unsafe { p.set_free(harden::link(page, block)) };
    p.taken();
    block.cast()
}

/// Everything malloc's fast path does not: thread setup, deferred work,
/// huge objects, and finding or making a page with room. `req` is the block
/// size to ask for (`size` padded by the hardened build).
///
/// Most slow paths of a thread freeing its own blocks only find its bin's
/// page empty while the blocks freed meanwhile wait on the page's local
/// list. Those are served here by collecting them, without the deferred
/// work (whose clock read and checks of shared state cost more than the
/// collect) and without the frame of [`malloc_slow`]. The deferred work
/// still runs on every slow path that needs more than that, and on every
/// `DEFERRED_EVERY`th, so delayed frees and due purges wait at most that
/// many slow paths longer.
#[inline(never)]
pub fn malloc_generic(heap: *mut Heap, req: usize, size: usize) -> *mut u8 {
    if heap != EMPTY_HEAP_PTR && req <= MEDIUM_OBJ_MAX {
        // SAFETY: `heap` is this thread's initialised heap.
        unsafe {
            (*heap).slow_count = (*heap).slow_count.wrapping_add(1);
            if !(*heap).slow_count.is_multiple_of(DEFERRED_EVERY) {
                let p = take_collected(heap, req, size);
                if !p.is_null() {
                    return p;
                }
            }
        }
    }
    malloc_slow(heap, req, size)
}

/// The rest of [`malloc_generic`].
#[inline(never)]
fn malloc_slow(mut heap: *mut Heap, req: usize, size: usize) -> *mut u8 {
    if heap == EMPTY_HEAP_PTR {
        heap = thread::heap_init();
        if heap.is_null() {
            return ptr::null_mut();
        }
    }
    let large = req > MEDIUM_OBJ_MAX && req <= LARGE_OBJ_MAX;
    // A large block the thread freed lately is the large sizes' fast
    // path: it skips the deferred work, as a small block does.
    if large {
        // SAFETY: `heap` is this thread's initialised heap (made above),
        // and `bin_of(req)` the class of `req`, `size` padded.
        if let Some(p) = unsafe { large::alloc_cached(heap, bin_of(req), size) } {
            return counted(heap, p);
        }
    }
    // SAFETY: as for `alloc_cached`: this thread's initialised heap.
    unsafe { deferred_work(heap, req > MEDIUM_OBJ_MAX) };
    if large {
        // SAFETY: this thread's initialised heap, and the class of `req`
        // (`size` padded).
        return counted(heap, unsafe { large::alloc(heap, bin_of(req), size) });
    }
    if req > LARGE_OBJ_MAX {
        // SAFETY: this thread's initialised heap.
        return unsafe { huge::alloc_for(heap, size, 0, false) };
    }
    // A block the hardened checks refuse (only possible with an error
    // handler installed) is dropped, and the next one tried.
    loop {
        // SAFETY: this thread's initialised heap.
        let page = unsafe { find_page(heap, req) };
        if page.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `find_page` returns an in-use page of this heap whose
        // free list is not empty.
        let p = unsafe { pop_block(page) };
        // SAFETY: `p` was just popped from the in-use `page`, whose
        // blocks hold `req` bytes: `size` padded by the hardened build.
        if unsafe { harden::on_alloc(page, p, size) } {
            return counted(heap, p);
        }
        // The rest of this list is not to be trusted (it may even be a
        // cycle through the refused block): drop it; its blocks leak.
        // SAFETY: the page is this thread's; an empty list is a list.
        unsafe { page::Owned::new(page).set_free(ptr::null_mut()) };
    }
}

/// Counts a malloc that returned `p` (unless it failed) in `heap`'s
/// counters, and passes `p` on.
#[inline(always)]
fn counted(heap: *mut Heap, p: *mut u8) -> *mut u8 {
    if !p.is_null() {
        // SAFETY: only initialised heaps get here, and a heap is never
        // unmapped (pooled at its thread's exit); the counter is atomic.
        stats::bump(unsafe { &(*heap).counters.mallocs });
    }
    p
}

/// A block of the first page of the bin for `req` after collecting the
/// blocks freed into it, or null if it has none (or the hardened checks
/// refused the one taken, whose page's list is then dropped, as in
/// [`malloc_generic`]).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap and `req` at most
/// `MEDIUM_OBJ_MAX`.
#[inline(always)]
unsafe fn take_collected(heap: *mut Heap, req: usize, size: usize) -> *mut u8 {
    // The direct table holds the first page of the bin of every small
    // size (the empty page, never written, when there is none).
    // SAFETY: `heap` is this thread's initialised heap (this fn's contract), and
    // `wsize_of(req)` indexes its direct table for a small `req`.
    let page = unsafe {
        if req <= SMALL_SIZE_MAX {
            *(*heap).direct.get_unchecked(wsize_of(req))
        } else {
            (*heap).queues[bin_of(req)].first
        }
    };
    if page.is_null() || page == EMPTY_PAGE_PTR {
        return ptr::null_mut();
    }
    // SAFETY: a page on this heap's queues is in use and this thread's.
    let owned = unsafe { page::Owned::new(page) };
    // SAFETY: as for `Owned::new`; `heap` is the page's.
    unsafe { page::collect(page, false) };
    if owned.free().is_null() {
        return ptr::null_mut();
    }
    // SAFETY: an owned page with a non-empty free list.
    let p = unsafe { pop_block(page) };
    // SAFETY: `p` was just popped from the in-use `page`, whose blocks
    // hold `req` bytes: `size` padded by the hardened build.
    if !unsafe { harden::on_alloc(page, p, size) } {
        // SAFETY: an empty list; the rest is not to be trusted.
        unsafe { owned.set_free(ptr::null_mut()) };
        return ptr::null_mut();
    }
    counted(heap, p)
}

/// Work that piles up between slow paths: delayed frees from other
/// threads and due purges. `big`: the slow path is a large or huge
/// malloc's, which takes large slots' purges (see `large::maybe_purge`).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn deferred_work(heap: *mut Heap, big: bool) {
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract), as every call below requires.
    unsafe { drain_delayed(heap) };
    // Adopt a segment abandoned by an exited thread once more than a few
    // wait: reclaiming only when a bin ran dry let the abandoned list (and
    // the memory freed into it, which nobody purges) grow without bound
    // when threads come and go faster than pages are needed; reclaiming on
    // every slow path cost larson dearly (docs/PERFORMANCE.md, "Reclaiming
    // abandoned segments").
    if thread::abandoned_count() > ABANDONED_SLACK {
        // SAFETY: this thread's initialised heap.
        unsafe { thread::reclaim_one(heap, None) };
    }
    // One clock read for all three (it was up to three a slow path).
    // SAFETY: this thread's initialised heap: only this thread writes
    // its segment bookkeeping and large-block cache.
    let (due, large_due) = unsafe { ((*heap).segs.purge_due, large::purge_due(heap)) };
    if due | arena::purge_due() | large_due != 0 {
        let now = os::now_ms();
        if due != 0 && now >= due {
            // SAFETY: this thread's initialised heap.
            unsafe { segment::purge_expired(heap, now, false) };
        }
        arena::maybe_purge(now);
        // SAFETY: this thread's initialised heap.
        unsafe { large::maybe_purge(heap, now, big) };
    }
}

/// Finds a page of the bin for `size` with a free block, extending pages,
/// moving full ones aside, reclaiming abandoned segments or taking a fresh
/// page as needed. Null when out of memory.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn find_page(heap: *mut Heap, size: usize) -> *mut Page {
    let bin = bin_of(size);
    let mut reclaimed = false;
    loop {
        // SAFETY: `heap` is this thread's, per the caller.
        let page = unsafe { queued_page_with_room(heap, bin) };
        if !page.is_null() {
            return page;
        }
        // A segment is reclaimed only when a page slot is needed and the
        // heap's own segments have none, as mimalloc reclaims when it
        // needs a segment: a thread with room would take dozens of
        // adopted pages, mostly for bins it already has a page of,
        // where one fresh page from its own segment does.
        let kind = kind_for(BLOCK_SIZE[bin]);
        // SAFETY: as above; the heap's segment lists are this thread's.
        let has_slot = unsafe { segment::has_free_slot(&(*heap).segs, kind) };
        if reclaimed || has_slot {
            break;
        }
        // SAFETY: `heap` is this thread's initialised heap.
        if !unsafe { thread::reclaim_one(heap, Some(kind)) } {
            break;
        }
        reclaimed = true;
    }
    // SAFETY: as above; a page from `page_alloc` is fresh and this heap's.
    unsafe {
        // Retired pages count down only when a fresh page is needed: walking
        // every bin on each slow path touched a descriptor per bin and was
        // a fifth of a mixed-size workload's time.
        if (*heap).retired_min <= (*heap).retired_max {
            collect_retired(heap, false);
        }
        let page = segment::page_alloc(heap, bin);
        if page.is_null() {
            return page;
        }
        page_queue::push_front(heap, bin, page);
        page::extend(page);
        page
    }
}

/// The first page of `bin`'s queue that has a free block after collecting
/// its freed ones, or room to carve more, moved to the front; pages found
/// full on the way go to the full queue. Null when none has.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn queued_page_with_room(heap: *mut Heap, bin: usize) -> *mut Page {
    // SAFETY: every page reached is on this heap's queue, i.e. ours.
    unsafe {
        let mut page = (*heap).queues[bin].first;
        while !page.is_null() {
            let next = (*page).next;
            page::collect(page, false);
            let can_grow = (*page).capacity.load(Ordering::Relaxed) < (*page).reserved;
            if !(*page).free.is_null() {
                page_queue::move_to_front(heap, page);
                return page;
            }
            if can_grow {
                page::extend(page);
                page_queue::move_to_front(heap, page);
                return page;
            }
            to_full(heap, page);
            page = next;
        }
    }
    ptr::null_mut()
}

/// Moves a page with no free block to the full queue; from now on the first
/// remote free into it goes through the heap's delayed list.
///
/// # Safety
/// `page` must be on its bin queue of `heap`.
unsafe fn to_full(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner access to the page and the heap's queues.
    unsafe {
        page::set_delayed(page, USE_DELAYED_FREE, false);
        page_queue::remove(heap, (*page).bin as usize, page);
        (*page).in_full = true;
        page_queue::push_back(heap, FULL_QUEUE, page);
        // A remote free may have slipped in before USE_DELAYED_FREE took
        // effect; collect it now rather than never.
        page::collect(page, false);
    }
}

/// Moves a full page back to its bin queue once it has room.
///
/// # Safety
/// `page` must be on the full queue of `heap`.
#[cold]
#[inline(never)]
unsafe fn unfull(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner access to the page and the heap's queues.
    unsafe {
        page_queue::remove(heap, FULL_QUEUE, page);
        (*page).in_full = false;
        page::set_delayed(page, NO_DELAYED_FREE, false);
        page_queue::push_back(heap, (*page).bin as usize, page);
    }
}

/// Frees a block of a page owned by the calling thread (counted by the
/// caller: a block freed by another thread and handed over through
/// `delayed` was counted there).
///
/// # Safety
/// `page` must be owned by `heap`, the calling thread's heap, and `block` a
/// block of it that is in use.
#[inline(always)]
pub unsafe fn free_local(heap: *mut Heap, page: *mut Page, block: *mut Block) {
    // SAFETY: in use and this thread's (this fn's contract).
    let p = unsafe { page::Owned::new(page) };
    // The double frees every build sees for a compare: the block is the
    // last one freed to its page, or the page had no block in use to give
    // back (its count goes below zero; a page holds far fewer than 2^31
    // blocks, so the count read as signed is negative).
    let local = p.local_free();
    if block == local {
        return freed_twice(page, block);
    }
    // SAFETY: `block` is a block of the page leaving the program's hands,
    // and `local_free` a list of the page's free blocks.
    unsafe {
        harden::set_link(page, block, local);
        p.set_local_free(block);
    }
    let left = p.returned_one();
    if left <= 0 {
        if left < 0 {
            // Undone, so the page is as it was if an error handler returns.
            // SAFETY: `local` was the page's `local_free` list just now.
            unsafe { p.set_local_free(local) };
            p.set_used(0);
            return freed_twice(page, block);
        }
        // SAFETY: `page` is `heap`'s, and `heap` this thread's.
        unsafe { retire(heap, page) };
    } else if p.in_full() {
        // SAFETY: `page` is `heap`'s (in its full queue), `heap` this
        // thread's.
        unsafe { unfull(heap, page) };
    }
}

/// Reports `block`, freed to `page` while free, as a double free; with an
/// error handler that returns, the free is ignored.
#[cold]
#[inline(never)]
fn freed_twice(page: *mut Page, block: *mut Block) {
    // SAFETY: an in-use page of this thread's heap (the caller's).
    let bsize = unsafe { (*page).block_size };
    error::report(ErrorKind::DoubleFree, block as usize, bsize);
}

/// A page just became empty: keep it a little if it is the only page of its
/// bin (so alloc/free of one object does not thrash), else release it.
///
/// # Safety
/// `page` must be an empty page on a queue of `heap`.
#[inline(never)]
unsafe fn retire(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner access per the caller.
    unsafe {
        let bsize = (*page).block_size;
        let bin = (*page).bin as usize;
        if !(*page).in_full && bsize <= MEDIUM_OBJ_MAX {
            let q = &(*heap).queues[bin];
            if q.first == page && q.last == page {
                (*page).retire_expire = if bsize <= SMALL_OBJ_MAX {
                    RETIRE_CYCLES
                } else {
                    RETIRE_CYCLES / 4
                };
                (*heap).retired_min = (*heap).retired_min.min(bin);
                (*heap).retired_max = (*heap).retired_max.max(bin);
                return;
            }
        }
        release_page(heap, page);
    }
}

/// Takes an empty page off its queue and gives it back to its segment.
///
/// # Safety
/// `page` must be an empty page on a queue of `heap`.
unsafe fn release_page(heap: *mut Heap, page: *mut Page) {
    // SAFETY: owner access per the caller.
    unsafe {
        harden::page_emptied(page);
        page_queue::remove(heap, page_queue::queue_index(page), page);
        segment::page_free(heap, page);
    }
}

/// Counts down retired pages and releases those that stayed empty (all of
/// them with `force`).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn collect_retired(heap: *mut Heap, force: bool) {
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract); only this thread touches its queues and retire range.
    let (lo, hi) = unsafe { ((*heap).retired_min, (*heap).retired_max) };
    let mut new_lo = BIN_COUNT;
    let mut new_hi = 0;
    for bin in lo..=hi.min(BIN_COUNT - 1) {
        // SAFETY: this thread's initialised heap; its queues are its own.
        let page = unsafe { (*heap).queues[bin].first };
        if page.is_null() {
            continue;
        }
        // SAFETY: a page on this heap's queue is in use and this thread's.
        let p = unsafe { page::Owned::new(page) };
        match p.retire_expire() {
            0 => continue,
            _ if p.used() != 0 => p.set_retire_expire(0),
            left if force || left == 1 => {
                p.set_retire_expire(0);
                // SAFETY: an empty page on a queue of this thread's heap.
                unsafe { release_page(heap, page) };
            }
            left => {
                p.set_retire_expire(left - 1);
                new_lo = new_lo.min(bin);
                new_hi = new_hi.max(bin);
            }
        }
    }
    // SAFETY: this thread's initialised heap; the range is its own.
    unsafe {
        (*heap).retired_min = new_lo;
        (*heap).retired_max = new_hi;
    }
}

/// Called by a remote thread: hands `block` (of a full page) to the page's
/// heap, which frees it at its next slow path.
///
/// # Safety
/// `heap` must stay valid for the call (guaranteed by the page's
/// DELAYED_FREEING state), `block` a block of `page` being freed.
pub unsafe fn push_delayed(heap: *mut Heap, page: *mut Page, block: *mut Block) {
    // SAFETY: the block is ours to link; the list head is atomic.
    unsafe {
        let head = &(*heap).delayed;
        let mut cur = head.load(Ordering::Relaxed);
        loop {
            harden::set_link(page, block, cur as *mut Block);
            match head.compare_exchange_weak(cur, block as usize, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Frees every block that other threads handed over through `delayed`.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn drain_delayed(heap: *mut Heap) {
    // SAFETY: once swapped out the list is ours; each block belongs to one
    // of this heap's pages (only its pages are ever USE_DELAYED_FREE).
    unsafe {
        if (*heap).delayed.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut block = (*heap).delayed.swap(0, Ordering::Acquire) as *mut Block;
        while !block.is_null() {
            let seg = of_block(block as *const u8);
            let page = page_of(seg, block as *const u8);
            let next = harden::decode_delayed(page, (*block).next, block);
            free_local(heap, page, block);
            block = next;
        }
    }
}

/// Returns what `heap` holds but does not need: empty pages, due (or, with
/// `force`, all) purges.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn collect(heap: *mut Heap, force: bool) {
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract), which both calls require.
    unsafe {
        collect_pages(heap, force);
        segment::purge_expired(heap, os::now_ms(), force);
    }
}

/// Releases the heap's empty pages (merging every free list first with
/// `force`), leaving their purges to fall due as scheduled.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn collect_pages(heap: *mut Heap, force: bool) {
    // SAFETY: owner access to the heap and its pages.
    unsafe {
        drain_delayed(heap);
        for qi in 0..=FULL_QUEUE {
            let mut page = (*heap).queues[qi].first;
            while !page.is_null() {
                let next = (*page).next;
                page::collect(page, force);
                if (*page).used == 0 {
                    (*page).retire_expire = 0;
                    release_page(heap, page);
                } else if (*page).in_full && !(*page).free.is_null() {
                    unfull(heap, page);
                }
                page = next;
            }
        }
        (*heap).retired_min = BIN_COUNT;
        (*heap).retired_max = 0;
    }
}

/// Prepares `heap` to be abandoned by its exiting thread: stops remote
/// threads from using its delayed list, frees what is already free, and
/// returns every remaining segment detached from the heap.
///
/// # Safety
/// `heap` must be the calling (exiting) thread's heap.
pub unsafe fn abandon_pages(heap: *mut Heap) {
    // NEVER_DELAYED_FREE makes remote threads stop touching the heap
    // before it is drained for the last time.
    for qi in 0..=FULL_QUEUE {
        // SAFETY: `heap` is this thread's (this fn's contract).
        let mut page = unsafe { (*heap).queues[qi].first };
        while !page.is_null() {
            // SAFETY: a page on this heap's queue is in use and this
            // thread's; its queue links are only written by this thread.
            unsafe {
                page::set_delayed(page, NEVER_DELAYED_FREE, false);
                page = (*page).next;
            }
        }
    }
    // Purges are not forced: with threads that live a few milliseconds,
    // purging their pages at exit made the next thread fault the same
    // memory back in, many times over what mimalloc did
    // (docs/PERFORMANCE.md, "No purge at thread exit"). Due purges run on
    // the reclaiming thread, or at `collect(true)`.
    // SAFETY: this thread's initialised heap (this fn's contract).
    unsafe {
        drain_delayed(heap);
        collect_pages(heap, true);
    }
    for qi in 0..=FULL_QUEUE {
        // SAFETY: `heap` is this thread's (this fn's contract).
        let mut page = unsafe { (*heap).queues[qi].first };
        while !page.is_null() {
            // SAFETY: a page on this heap's queue, in use and this thread's: it leaves
            // the queue (the whole queue is reset below) and the heap.
            unsafe {
                let next = (*page).next;
                set_owner(&*page, ptr::null_mut(), Ordering::Release);
                (*page).next = ptr::null_mut();
                (*page).prev = ptr::null_mut();
                page = next;
            }
        }
        // SAFETY: this thread's heap; its queue's pages all left it above.
        unsafe { (*heap).queues[qi] = PageQueue::new() };
    }
}

/// Adds a page of a reclaimed segment to the front of `heap`'s queue for
/// its bin, so its freed blocks, whose memory is already resident, are
/// handed out before the heap grows a page of its own or takes a fresh one
/// (as mimalloc does). At the back, behind a page that could still grow,
/// the walk never reached it: the page stayed mostly free, its blocks freed
/// by other threads never collected, while the heap touched new memory.
/// Returns false, leaving it off every queue, if all its blocks turned out
/// to be free.
///
/// # Safety
/// `page` must be an in-use page of a segment just adopted by `heap`.
pub unsafe fn adopt_page(heap: *mut Heap, page: *mut Page) -> bool {
    // SAFETY: the segment was adopted by this thread's heap.
    unsafe {
        set_owner(&*page, heap, Ordering::Release);
        (*page).in_full = false;
        (*page).retire_expire = 0;
        page::set_delayed(page, NO_DELAYED_FREE, true);
        page::collect(page, true);
        if (*page).used == 0 {
            harden::page_emptied(page);
            return false;
        }
        page_queue::push_front(heap, (*page).bin as usize, page);
        if (*page).free.is_null() && (*page).capacity.load(Ordering::Relaxed) == (*page).reserved {
            to_full(heap, page);
        }
        true
    }
}

/// In a `fork` child, for the forking thread's heap: only full pages can be
/// marked "delayed free in progress" (see `USE_DELAYED_FREE`), so the
/// full queue is walked, and the hardened build's generator reseeded. The
/// walk is bounded: a `fork` from a signal handler may have interrupted
/// this thread in the middle of a queue update.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, in a `fork` child.
pub unsafe fn after_fork(heap: *mut Heap) {
    const MAX_WALK: usize = 1 << 20;
    // SAFETY: owner access; every page on the heap's queues lies in one of
    // its live segments, whose headers stay mapped.
    unsafe {
        let mut page = (*heap).queues[FULL_QUEUE].first;
        let mut steps = 0;
        while !page.is_null() && steps < MAX_WALK {
            page::clear_stale_delayed(page);
            page = (*page).next;
            steps += 1;
        }
        if harden::RANDOM {
            (*heap).rng = harden::seed();
        }
    }
}

/// Marks every queue empty and points the direct table at the empty page.
///
/// # Safety
/// `heap` must be exclusively owned by the caller.
pub unsafe fn reset(heap: *mut Heap) {
    // SAFETY: exclusive access per the caller.
    unsafe {
        ptr::write(heap, Heap::new());
        if harden::RANDOM {
            (*heap).rng = harden::seed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Slow paths served from the bin's first page skip the deferred work,
    /// but a block another thread freed into a full page (which goes on
    /// the owner's delayed list) still comes back within
    /// `DEFERRED_EVERY` of them.
    #[test]
    fn delayed_frees_wait_at_most_the_deferred_interval() {
        std::thread::spawn(|| {
            const SMALL: usize = 16;
            const ROUND: usize = 512;
            // Small blocks first, so the page serving them has grown to
            // hold a whole round and its slow paths only collect.
            let mut small: Vec<*mut u8> = Vec::with_capacity(ROUND);
            let cycle = |small: &mut Vec<*mut u8>| {
                for _ in 0..ROUND {
                    small.push(crate::core::alloc::malloc(SMALL));
                }
                for p in small.drain(..) {
                    // SAFETY: a live block of this thread, freed once.
                    unsafe { crate::core::alloc::free(p) };
                }
            };
            for _ in 0..4 {
                cycle(&mut small);
            }
            let heap = thread::heap();
            // Fill pages of another class until one moves to the full queue.
            let mut big = Vec::new();
            // SAFETY: `heap` is this thread's heap; only this thread
            // changes its queues.
            while unsafe { (*heap).queues[FULL_QUEUE].first.is_null() } {
                let p = crate::core::alloc::malloc(3000);
                assert!(!p.is_null());
                big.push(p as usize);
            }
            // SAFETY: as above; the blocks are live, so their segment is.
            let full = unsafe { (*heap).queues[FULL_QUEUE].first };
            let victim = big
                .iter()
                .position(|&p| {
                    // SAFETY: `p` is a live block of this test, so its segment and
                    // page descriptor are mapped.
                    unsafe { page_of(of_block(p as *const u8), p as *const u8) == full }
                })
                .expect("a block of the full page");
            let p = big.swap_remove(victim);
            std::thread::spawn(move || {
                // SAFETY: a live block, freed once, by another thread.
                unsafe { crate::core::alloc::free(p as *mut u8) }
            })
            .join()
            .expect("freeing thread");
            // SAFETY: the delayed list head is atomic; `slow_count` is
            // only written by this thread.
            let pending = || unsafe { (*heap).delayed.load(Ordering::Relaxed) != 0 };
            // SAFETY: `slow_count` is only written by this thread.
            let slow = || unsafe { (*heap).slow_count };
            assert!(pending(), "the free went through the delayed list");
            let start = slow();
            while pending() {
                cycle(&mut small);
                let taken = slow().wrapping_sub(start);
                assert!(
                    !pending() || taken < DEFERRED_EVERY,
                    "delayed free still pending after {taken} slow paths"
                );
            }
            assert!(slow() != start, "only a slow path takes delayed frees");
            for p in big {
                // SAFETY: live blocks of this thread, freed once.
                unsafe { crate::core::alloc::free(p as *mut u8) };
            }
        })
        .join()
        .expect("test thread");
    }
}
