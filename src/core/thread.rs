//! Thread-local heaps: the TLS pointer, heap creation at a thread's first
//! malloc, abandonment at thread exit, and reclaiming abandoned segments.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::core::heap::{self, Heap, EMPTY_HEAP_PTR};
use crate::core::segment;
use crate::meta::segment::{Kind, Segment};
use crate::os;
use crate::os::lock::{Holder, SpinLock};
use crate::stats::{self, HeapCounters, Stats};

// The thread's heap pointer, starting at the static empty heap.
crate::os::tls::thread_slot!(tls: *mut Heap = crate::core::heap::EMPTY_HEAP, EMPTY_HEAP_PTR);

/// The calling thread's heap ([`EMPTY_HEAP_PTR`] until its first malloc).
#[inline(always)]
pub fn heap() -> *mut Heap {
    tls::get()
}

// ---- the pthread key whose destructor abandons the heap -----------------

const KEY_NONE: u32 = 0;
const KEY_CREATING: u32 = 1;
const KEY_READY: u32 = 2;
const KEY_FAILED: u32 = 3;
static KEY_STATE: AtomicU32 = AtomicU32::new(KEY_NONE);
static KEY: AtomicU32 = AtomicU32::new(0);

fn key() -> Option<libc::pthread_key_t> {
    loop {
        match KEY_STATE.load(Ordering::Acquire) {
            KEY_READY => return Some(KEY.load(Ordering::Relaxed)),
            KEY_FAILED => return None,
            KEY_NONE => {
                if KEY_STATE
                    .compare_exchange(KEY_NONE, KEY_CREATING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    let state = match os::thread_key_create(thread_done) {
                        Some(k) => {
                            KEY.store(k, Ordering::Relaxed);
                            KEY_READY
                        }
                        None => KEY_FAILED,
                    };
                    KEY_STATE.store(state, Ordering::Release);
                }
            }
            _ => os::yield_now(),
        }
    }
}

/// Runs at thread exit (pthread key destructor) with the thread's heap.
///
/// # Safety
/// Only as the key's destructor, on the exiting thread, with the value it
/// set (its heap), or null.
unsafe extern "C" fn thread_done(value: *mut libc::c_void) {
    let heap = value as *mut Heap;
    if heap.is_null() || heap != self::heap() {
        return;
    }
    // SAFETY: `heap` is this exiting thread's heap; after this call nothing
    // refers to it, and later mallocs on this thread build a new one.
    unsafe {
        crate::core::alloc::empty_quarantine(heap);
        abandon(heap)
    };
}

// ---- the pool of heap structures ------------------------------------------

struct Pool(UnsafeCell<*mut Heap>);
// SAFETY: the list head is only touched under POOL_LOCK.
unsafe impl Sync for Pool {}
static POOL: Pool = Pool(UnsafeCell::new(ptr::null_mut()));
/// Heap slots of the newest chunk not handed out yet: `(next, end)`.
/// Carved one at a time, so a process with one thread touches one heap's
/// pages, not the whole chunk's (linking every slot into the pool up front
/// wrote to every page of it, resident in every process).
struct Carve(UnsafeCell<(usize, usize)>);
// SAFETY: only touched under POOL_LOCK.
unsafe impl Sync for Carve {}
static CARVE: Carve = Carve(UnsafeCell::new((0, 0)));
/// Every chunk ever mapped for heaps, linked through each chunk's first
/// word, so statistics can visit every heap. Changed under POOL_LOCK, and
/// published link first, so the list is whole at every instant (a `fork`
/// child keeps it even when a vanished thread held the lock).
static CHUNKS: AtomicPtr<u8> = AtomicPtr::new(ptr::null_mut());
pub(crate) static POOL_LOCK: SpinLock = SpinLock::new();
const POOL_CHUNK: usize = 256 * 1024;
/// Bytes at the start of a chunk holding its link; heaps follow.
const CHUNK_HEADER: usize = 64;

fn heap_stride() -> usize {
    core::mem::size_of::<Heap>().next_multiple_of(64)
}

fn pool_take() -> *mut Heap {
    let _g = POOL_LOCK.lock();
    // SAFETY: POOL is guarded by POOL_LOCK, held.
    let pooled = unsafe { *POOL.0.get() };
    let head = if pooled.is_null() {
        // SAFETY: POOL_LOCK is held.
        let carved = unsafe { carve() };
        if carved.is_null() {
            return carved;
        }
        carved
    } else {
        // SAFETY: POOL is guarded by POOL_LOCK, held; a pooled heap's slot
        // lies in a chunk never unmapped, and only the pool uses it.
        unsafe { *POOL.0.get() = (*pooled).pool_next };
        pooled
    };
    // Reset under the lock: statistics read the counters under it.
    // SAFETY: a heap slot nobody uses: just carved, or off the pool.
    unsafe { heap::reset(head) };
    head
}

/// The next heap slot of the newest chunk, mapping a new chunk when it is
/// used up; null when out of memory.
///
/// # Safety
/// POOL_LOCK must be held.
unsafe fn carve() -> *mut Heap {
    // SAFETY: CARVE is guarded by POOL_LOCK, held (this fn's contract).
    let carve = unsafe { &mut *CARVE.0.get() };
    if carve.0 + heap_stride() > carve.1 {
        let chunk = os::map(POOL_CHUNK);
        if chunk.is_null() {
            return ptr::null_mut();
        }
        // Never unmapped nor purged. Counted whole: its heaps not
        // carved yet are an over-count, the safe side.
        stats::COMMITTED.increase(POOL_CHUNK);
        // SAFETY: a fresh mapping, whose first word is its link; CHUNKS
        // changes under POOL_LOCK, held (this fn's contract).
        unsafe { *(chunk as *mut *mut u8) = CHUNKS.load(Ordering::Relaxed) };
        CHUNKS.store(chunk, Ordering::Release);
        // Chunks are fresh mappings with room for their header and the
        // heaps carved from them, aligned (page start, 64-byte strides).
        let first = chunk as usize + CHUNK_HEADER;
        *carve = (
            first,
            first + (POOL_CHUNK - CHUNK_HEADER) / heap_stride() * heap_stride(),
        );
    }
    let head = carve.0 as *mut Heap;
    carve.0 += heap_stride();
    head
}

/// Calls `f` with the counters of every heap, live or pooled (pooled ones
/// hold zeros: their counts were folded into the totals at thread exit).
/// Reads every counter. Never allocates; safe to call from any thread.
pub fn stats() -> Stats {
    stats::read(|each| for_each_heap(each))
}

/// Writes the statistics as a table to stderr, one `write` per line,
/// without allocating: a heading with the process id and the program's
/// name, then a row per counter.
pub fn print_stats() {
    write_stats(2);
}

/// [`print_stats`] to file descriptor `fd`, with the rows of this build's
/// defences.
pub(crate) fn write_stats(fd: i32) {
    stats::write_table(fd, &stats(), crate::harden::stats_sections());
}

fn for_each_heap(mut f: impl FnMut(&HeapCounters)) {
    let _g = POOL_LOCK.lock();
    // Heap slots were zero (a fresh mapping) or written by `reset` under
    // this lock before any use; counters are only accessed atomically.
    // SAFETY: CHUNKS is a whole list (see its comment) of chunks never
    // unmapped, so every slot read is mapped and initialised.
    unsafe {
        let mut chunk = CHUNKS.load(Ordering::Acquire);
        while !chunk.is_null() {
            for i in 0..(POOL_CHUNK - CHUNK_HEADER) / heap_stride() {
                let h = chunk.add(CHUNK_HEADER + i * heap_stride()) as *const Heap;
                f(&(*h).counters);
            }
            chunk = *(chunk as *mut *mut u8);
        }
    }
}

/// Puts a heap slot back in the pool.
///
/// # Safety
/// `heap` must be a slot from [`pool_take`] that nothing uses any more.
unsafe fn pool_put(heap: *mut Heap) {
    let _g = POOL_LOCK.lock();
    // SAFETY: POOL is guarded by POOL_LOCK, held; `heap` is a pool slot
    // nothing uses any more (this fn's contract).
    unsafe {
        (*heap).pool_next = *POOL.0.get();
        *POOL.0.get() = heap;
    }
}

/// Gives the calling thread a real heap. Null when out of memory.
pub fn heap_init() -> *mut Heap {
    crate::options::init_from_env();
    let heap = pool_take();
    if heap.is_null() {
        return heap;
    }
    stats::THREADS.fetch_add(1, Ordering::Relaxed);
    tls::set(heap);
    // Set after the TLS pointer: with a high key number glibc may calloc
    // here, which must find the heap already in place. So may
    // `pthread_atfork` (past 48 handlers); the first heap is made before
    // the process has other threads that could be forking meanwhile.
    if let Some(k) = key() {
        os::thread_key_set(k, heap.cast());
    }
    crate::core::fork::install();
    crate::core::init::keep();
    heap
}

/// In a `fork` child: sets aside what threads that do not exist there
/// left half-changed (see `fork.rs`).
pub fn after_fork() {
    // A key being created by a vanished thread is created again; one being
    // created by this thread (interrupted by the signal handler that
    // forked) is finished by it when the handler returns, either way.
    let _ = KEY_STATE.compare_exchange(KEY_CREATING, KEY_NONE, Ordering::AcqRel, Ordering::Relaxed);
    if POOL_LOCK.holder() == Holder::Other {
        // The pooled heaps, and the rest of the chunk being carved, leak.
        // SAFETY: the lock's owner does not exist in the child, and this
        // is the child's only thread: nobody else touches the pool.
        unsafe {
            *POOL.0.get() = ptr::null_mut();
            *CARVE.0.get() = (0, 0);
        }
        POOL_LOCK.force_release();
    }
    if ABANDONED_LOCK.holder() == Holder::Other {
        // The abandoned segments leak (their blocks stay valid and can be
        // freed, through the remote path).
        // SAFETY: the lock's owner does not exist in the child, and this
        // is the child's only thread: nobody else touches the lists.
        unsafe { *ABANDONED.0.get() = [ptr::null_mut(); KINDS] };
        ABANDONED_COUNT.store(0, Ordering::Relaxed);
        ABANDONED_LOCK.force_release();
    }
}

// ---- abandoned segments ---------------------------------------------------

/// Kinds of segments a heap holds, and so may abandon: small, medium and
/// large (huge ones belong to no heap).
const KINDS: usize = 3;

/// The abandoned list for segments of `kind`; always in bounds, so no
/// index check can fail.
fn list_index(kind: Kind) -> usize {
    match kind {
        Kind::Small => 0,
        Kind::Medium => 1,
        Kind::Large | Kind::Huge => 2,
    }
}

/// One list per kind, so a heap short of a page slot of one kind adopts a
/// segment that has such slots.
struct Abandoned(UnsafeCell<[*mut Segment; KINDS]>);
// SAFETY: the list heads are only touched under ABANDONED_LOCK.
unsafe impl Sync for Abandoned {}
static ABANDONED: Abandoned = Abandoned(UnsafeCell::new([ptr::null_mut(); KINDS]));
pub(crate) static ABANDONED_LOCK: SpinLock = SpinLock::new();
static ABANDONED_COUNT: AtomicUsize = AtomicUsize::new(0);

/// Number of segments waiting for a new owner.
pub fn abandoned_count() -> usize {
    ABANDONED_COUNT.load(Ordering::Relaxed)
}

/// Abandons `heap`: segments that still hold live blocks go to the global
/// abandoned list for other threads to reclaim; the rest is released.
///
/// # Safety
/// `heap` must be the calling thread's heap, not used afterwards.
pub unsafe fn abandon(heap: *mut Heap) {
    // SAFETY: `heap` is this thread's, used no more after this (this fn's
    // contract).
    unsafe {
        crate::core::large::flush(heap);
        heap::abandon_pages(heap);
    }
    loop {
        // SAFETY: `heap` is this thread's (this fn's contract): only this
        // thread touches its segment lists.
        let seg = unsafe { (*heap).segs.all.first };
        if seg.is_null() {
            break;
        }
        // SAFETY: `seg` is on `heap`'s list, and `heap` is this thread's.
        unsafe { segment::detach(heap, seg) };
        let _g = ABANDONED_LOCK.lock();
        // `seg` left its heap's lists just above: its `next` link is free
        // for the abandoned list, and nobody else uses it until it is on it.
        // SAFETY: ABANDONED is guarded by ABANDONED_LOCK, held; `seg` is
        // ours alone until it is on the list.
        unsafe {
            let head = &mut (*ABANDONED.0.get())[list_index((*seg).kind)];
            (*seg).next = *head;
            *head = seg;
        }
        ABANDONED_COUNT.fetch_add(1, Ordering::Relaxed);
        stats::ABANDONED.fetch_add(1, Ordering::Relaxed);
    }
    // SAFETY: `heap` is this thread's (this fn's contract); only its
    // owner writes its counters.
    unsafe { (*heap).counters.fold() };
    tls::set(EMPTY_HEAP_PTR);
    // SAFETY: `heap` came from the pool and is not used afterwards (this
    // fn's contract); the TLS pointer no longer names it.
    unsafe { pool_put(heap) };
}

/// Takes one abandoned segment into `heap`, of `kind` if given, else of
/// any kind. Returns false if there was none.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn reclaim_one(heap: *mut Heap, kind: Option<Kind>) -> bool {
    if abandoned_count() == 0 {
        return false;
    }
    let seg = {
        let _g = ABANDONED_LOCK.lock();
        // SAFETY: the list heads are guarded by ABANDONED_LOCK, held.
        let lists = unsafe { &mut *ABANDONED.0.get() };
        let head = match kind {
            Some(k) => Some(&mut lists[list_index(k)]),
            None => lists.iter_mut().find(|h| !h.is_null()),
        };
        match head {
            Some(head) if !head.is_null() => {
                let seg = *head;
                // SAFETY: a segment on an abandoned list is live, and its
                // `next` links the list, under the lock held.
                *head = unsafe { (*seg).next };
                ABANDONED_COUNT.fetch_sub(1, Ordering::Relaxed);
                seg
            }
            _ => ptr::null_mut(),
        }
    };
    if seg.is_null() {
        return false;
    }
    stats::RECLAIMED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract); `seg`, popped off the abandoned list, is ours alone.
    unsafe { segment::adopt(heap, seg) };
    // SAFETY: a segment just adopted by this thread's heap; remote
    // threads only push onto its pages' atomic lists.
    let seg = unsafe { segment::Owned::new(seg) };
    for slot in seg.slots() {
        let page = slot.page();
        // SAFETY: an in-use page of a segment just adopted by `heap`.
        if !slot.in_use() || unsafe { heap::adopt_page(heap, page) } {
            continue;
        }
        // All its blocks were freed while abandoned. Freeing the last
        // used page frees the segment itself, so stop right after it.
        let last = seg.used_pages() == seg.first_page() + 1;
        // SAFETY: an in-use page of `heap`, this thread's heap, with no
        // block in use, left on no queue by `adopt_page`.
        unsafe { segment::page_free(heap, page) };
        if last {
            break;
        }
    }
    true
}

/// Reclaims every abandoned segment into `heap` (used by a forced collect,
/// so memory freed after its owner exited goes back to the OS).
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn reclaim_all(heap: *mut Heap) {
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    while unsafe { reclaim_one(heap, None) } {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thread_starts_at_the_empty_heap() {
        let seen = std::thread::spawn(|| super::tls::get() as usize)
            .join()
            .expect("thread");
        assert_eq!(seen, super::EMPTY_HEAP_PTR as usize);
    }

    #[test]
    fn heap_slots_not_handed_out_are_never_touched() {
        let h = pool_take();
        assert!(!h.is_null());
        let _g = POOL_LOCK.lock();
        // Under POOL_LOCK no other thread carves meanwhile.
        // SAFETY: CARVE is read under its lock; the range checked lies in
        // the newest chunk, which stays mapped.
        unsafe {
            let (next, end) = *CARVE.0.get();
            let ps = os::page_size();
            let from = next.next_multiple_of(ps);
            if from >= end {
                return; // The chunk is carved to its last page.
            }
            let len = end - from;
            let mut vec = [0u8; POOL_CHUNK / 4096];
            assert!(os::residency(from as *mut u8, len, &mut vec));
            let resident = vec[..len.div_ceil(ps)].iter().filter(|&&v| v & 1 != 0).count();
            assert_eq!(
                resident, 0,
                "{resident} pages of uncarved heap slots are resident"
            );
        }
        drop(_g);
        // SAFETY: `h` came from `pool_take` and is not used again.
        unsafe { pool_put(h) };
    }
}
