//! A page: a run of equal-sized blocks and its three free lists.
//!
//! ```text
//! page_start                         page_start + capacity * block_size
//! |<- block ->|<- block ->|<- block ->| ... |   (blocks past `capacity`
//! +-----------+-----------+-----------+-----+    are not carved yet)
//! ```
//!
//! `free` is where malloc pops; the owning thread pushes onto `local_free`;
//! other threads push onto the atomic `thread_free`, whose low two bits hold
//! the delayed-free state. The two push lists are folded into `free` only
//! when `free` runs dry, so neither fast path touches shared cache lines.
//! Every link is stored through `harden::encode_next`/`decode_next`.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::harden;
use crate::heap::Heap;

/// A free block: only its first word is ours, and it holds the encoded link.
#[repr(C)]
pub struct Block {
    pub next: usize,
}

/// Delayed-free states kept in the low bits of `thread_free`.
///
/// A page in its heap's full queue is `USE_DELAYED_FREE`: the first remote
/// free then goes to the heap's delayed list instead, so the owner learns the
/// page has room again. `DELAYED_FREEING` marks a remote thread in the middle
/// of that hand-off (the heap must not go away meanwhile); `NEVER` is set on
/// abandoned pages, which have no heap to notify.
pub const USE_DELAYED_FREE: usize = 0;
pub const DELAYED_FREEING: usize = 1;
pub const NO_DELAYED_FREE: usize = 2;
pub const NEVER_DELAYED_FREE: usize = 3;
const STATE_MASK: usize = 3;
/// `thread_free` also counts its blocks, in the bits above a user-space
/// address (47 bits; see `segment_map`), so the owner can take the list
/// over without walking it to count it: the walk is one cache miss per
/// block, each freed on another core.
const COUNT_SHIFT: u32 = 48;
const COUNT_ONE: usize = 1 << COUNT_SHIFT;
/// The list head's bits of `thread_free`.
const HEAD_MASK: usize = (COUNT_ONE - 1) & !STATE_MASK;
// Every block is on the list at most once, and the page with the most
// blocks (a small page of one-word blocks; medium pages have blocks over
// 8 KiB, large ones over 64 KiB) fits the count's 16 bits.
const _: () = assert!(
    (1usize << crate::constants::SMALL_PAGE_SHIFT) / crate::constants::WORD
        < 1 << (usize::BITS - COUNT_SHIFT)
);

/// 128 bytes, cache-line aligned, so the first line holds everything the
/// malloc and free fast paths touch, the free check included (it had its
/// fields on a second line; moving them measured within noise on larson,
/// but a free now never needs two of a descriptor's lines).
#[repr(C, align(64))]
pub struct Page {
    // First cache line: malloc pops `free` and bumps `used`; free checks
    // the pointer (`page_start`, `div_*`, `capacity`) and pushes onto
    // `local_free` or `thread_free`.
    pub free: *mut Block,
    /// Blocks handed out and not yet collected back (remote frees count
    /// until the owner collects them).
    pub used: u32,
    /// Blocks carved so far; 0 when the page is not in use, so every
    /// pointer into it fails the free check. Atomic because other threads
    /// read it (when freeing a block here) while the owner carves more.
    pub capacity: AtomicU32,
    pub local_free: *mut Block,
    pub thread_free: AtomicUsize,
    pub page_start: *mut u8,
    /// Exact divisibility test of an offset by `block_size` without a divide:
    /// with `block_size = odd << div_shift` and `div_inv` the inverse of
    /// `odd` modulo 2^64, `rotate_right(off * div_inv, div_shift)` is
    /// `off / block_size` when `off` is a multiple, and no value below
    /// `2^64 / block_size` otherwise (the map is a bijection), so one
    /// compare against the block count checks both "a block boundary" and
    /// "a carved block".
    pub div_inv: u64,
    /// Blocks that fit in the page.
    pub reserved: u32,
    /// Bin of the page's queue.
    pub bin: u8,
    pub in_full: bool,
    pub retire_expire: u8,
    pub div_shift: u8,
    /// `capacity` of the page's last use, kept after it is freed (with its
    /// geometry: `page_start`, `div_*`) so the hardened build can tell a
    /// late second free of one of its blocks from a wild pointer.
    pub freed_count: u32,
    /// A free page whose memory is still resident, due to be purged.
    pub purge_pending: bool,
    /// The guard page at the end of this slot's area is in place (hardened
    /// build; kept across uses of the slot while the segment lives).
    pub guarded: bool,
    /// This slot's area may hold nonzero bytes: it was used since it was
    /// last fresh or purged. Kept across uses of the slot; false in a
    /// zero-filled (fresh) descriptor, as its area is then zero too.
    pub area_dirty: bool,
    /// This use of the slot started on zero memory (`area_dirty` was false):
    /// blocks not carved yet read zero.
    pub zero_start: bool,
    // Second cache line: the slow paths.
    // (A page is in use exactly when `block_size != 0`.)
    pub heap: AtomicPtr<Heap>,
    pub block_size: usize,
    pub next: *mut Page,
    pub prev: *mut Page,
    /// Every block on `free`, and every block not carved yet, reads zero
    /// past its first word (the link): `calloc` then clears only that word,
    /// as mimalloc's `free_is_zero` lets it. Cleared when freed blocks join
    /// `free`; set again when a page that started on zero memory carves
    /// onto an empty `free`.
    pub free_zero: bool,
    /// Per-page secrets of the hardened build (unused in the plain build).
    pub keys: [usize; 2],
}

// The descriptor is indexed on every free: a power-of-two size makes that
// a shift.
const _: () = assert!(core::mem::size_of::<Page>() == 128);

impl Page {
    /// True if the page hands out blocks.
    #[inline(always)]
    pub fn in_use(&self) -> bool {
        self.block_size != 0
    }

    pub const fn empty() -> Page {
        Page {
            free: ptr::null_mut(),
            used: 0,
            capacity: AtomicU32::new(0),
            local_free: ptr::null_mut(),
            thread_free: AtomicUsize::new(NEVER_DELAYED_FREE),
            page_start: ptr::null_mut(),
            div_inv: 0,
            reserved: 0,
            bin: 0,
            in_full: false,
            retire_expire: 0,
            div_shift: 0,
            freed_count: 0,
            purge_pending: false,
            guarded: false,
            area_dirty: true,
            zero_start: false,
            heap: AtomicPtr::new(ptr::null_mut()),
            block_size: 0,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            free_zero: false,
            keys: [0; 2],
        }
    }
}

/// Modular inverse of an odd `d` modulo 2^64 (Newton's iteration doubles the
/// correct low bits each step: 3 -> 6 -> 12 -> 24 -> 48 -> 96).
const fn inverse_u64(d: u64) -> u64 {
    let mut x = d; // correct to 3 bits for any odd d
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    x
}

/// Sets up `page` to hand out blocks of `block_size` from `start`, holding
/// `reserved` of them, owned by `heap`.
///
/// # Safety
/// - `page` must be a valid page descriptor not in use by anyone.
/// - `[start, start + reserved * block_size)` must be usable memory of its
///   segment.
pub unsafe fn init(
    page: *mut Page,
    heap: *mut Heap,
    bin: u8,
    block_size: usize,
    start: *mut u8,
    reserved: usize,
) {
    // SAFETY: the caller gives exclusive access to `page`.
    unsafe {
        let p = &mut *page;
        p.free = ptr::null_mut();
        p.local_free = ptr::null_mut();
        p.used = 0;
        p.capacity.store(0, Ordering::Relaxed);
        p.reserved = reserved as u32;
        p.bin = bin;
        p.in_full = false;
        p.retire_expire = 0;
        p.block_size = block_size;
        p.page_start = start;
        p.purge_pending = false;
        p.freed_count = 0;
        p.next = ptr::null_mut();
        p.prev = ptr::null_mut();
        let shift = block_size.trailing_zeros();
        p.div_shift = shift as u8;
        p.div_inv = inverse_u64((block_size >> shift) as u64);
        p.thread_free.store(NO_DELAYED_FREE, Ordering::Relaxed);
        p.heap.store(heap, Ordering::Relaxed);
        p.zero_start = !p.area_dirty;
        p.free_zero = p.zero_start;
        p.area_dirty = true;
        harden::page_keys_init(page);
    }
}

/// Sets up `page` as the single block of a huge segment: only an offset of
/// exactly zero passes the free check.
///
/// # Safety
/// Same as [`init`], with `reserved == 1`.
pub unsafe fn init_single(page: *mut Page, block_size: usize, start: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe {
        init(page, ptr::null_mut(), 0, block_size, start, 1);
        let p = &mut *page;
        // Any odd multiplier maps only offset 0 to 0; one block.
        p.div_shift = 0;
        p.div_inv = 1;
        p.capacity.store(1, Ordering::Relaxed);
        p.used = 1;
        p.thread_free.store(NEVER_DELAYED_FREE, Ordering::Relaxed);
    }
}

/// Marks a page as no longer in use, so pointers into it fail the free check.
///
/// # Safety
/// `page` must be valid and owned exclusively by the caller.
pub unsafe fn reset(page: *mut Page) {
    // SAFETY: exclusive access per the caller.
    unsafe {
        let p = &mut *page;
        p.freed_count = p.capacity.load(Ordering::Relaxed);
        p.capacity.store(0, Ordering::Relaxed);
        p.block_size = 0;
        p.free = ptr::null_mut();
        p.local_free = ptr::null_mut();
        p.used = 0;
        p.in_full = false;
        p.retire_expire = 0;
        p.next = ptr::null_mut();
        p.prev = ptr::null_mut();
        p.heap.store(ptr::null_mut(), Ordering::Relaxed);
        p.thread_free.store(NEVER_DELAYED_FREE, Ordering::Relaxed);
    }
}

/// True if `off` (bytes from `page_start`) is a block boundary of a block
/// that has been handed out at some point.
///
/// # Safety
/// `page` must point to a page descriptor inside a live segment.
#[inline(always)]
pub unsafe fn is_block_start(page: *const Page, off: usize) -> bool {
    // SAFETY: the caller guarantees the descriptor is readable; only plain
    // fields the owner writes before publishing the page are read.
    unsafe { block_index(page, off) < (*page).capacity.load(Ordering::Relaxed) as u64 }
}

/// `off / block_size` if `off` is a multiple of the block size, else some
/// number of at least `2^64 / block_size` (see `Page::div_inv`).
///
/// # Safety
/// `page` must point to a readable page descriptor.
#[inline(always)]
pub unsafe fn block_index(page: *const Page, off: usize) -> u64 {
    // SAFETY: per the caller; both fields are plain and only change while
    // the page is not in use (its `capacity` then 0).
    unsafe {
        (off as u64)
            .wrapping_mul((*page).div_inv)
            .rotate_right((*page).div_shift as u32)
    }
}

/// If `off` is a block boundary of the blocks `page` held before it was
/// freed, their size.
///
/// # Safety
/// `page` must point to a page descriptor inside a live segment.
pub unsafe fn freed_block_size(page: *const Page, off: usize) -> Option<usize> {
    // SAFETY: the descriptor is readable per the caller.
    unsafe {
        let p = &*page;
        if p.in_use() || p.div_inv == 0 || block_index(page, off) >= p.freed_count as u64 {
            return None;
        }
        // The inverse of the inverse is the odd factor of the block size.
        Some((inverse_u64(p.div_inv) as usize) << p.div_shift)
    }
}

/// Carves a batch of fresh blocks (see `harden::batch`) onto the front of
/// the free list, so fresh memory is touched gradually.
///
/// # Safety
/// `page` must be in use, owned by the calling thread, whose heap is the
/// page's, with `capacity < reserved`.
pub unsafe fn extend(page: *mut Page) {
    // Raw field places, no reference to the whole page: other threads may
    // be reading `capacity`.
    // SAFETY: owner access per the caller; the carved range lies inside
    // the reserved area.
    unsafe {
        let bsize = (*page).block_size;
        let capacity = (*page).capacity.load(Ordering::Relaxed) as usize;
        let left = (*page).reserved as usize - capacity;
        let count = harden::batch(bsize, left);
        let first = (*page).page_start.add(capacity * bsize);
        if harden::ZERO_ON_FREE && !(*page).zero_start {
            // Reused segment memory may hold an old owner's bytes. Fresh
            // blocks are zeroed here rather than trusted to be: a flag saying
            // "fresh, skip the check" in the encoded link could be set by a
            // one-bit use-after-free write (the `corrupt` fuzzer found it).
            // Only what the allocator itself knows out of line (this use of
            // the slot started on zero memory) spares the memset.
            ptr::write_bytes(first, 0, count * bsize);
        }
        harden::carved(page, first, bsize, count);
        if (*page).free.is_null() {
            // Carving writes only the links (and the canary build's slot
            // trailers, past every request).
            (*page).free_zero = (*page).zero_start || harden::ZERO_ON_FREE;
        }
        let heap = (*page).heap.load(Ordering::Relaxed);
        let rng = &mut (*heap).rng;
        (*page).free = harden::build_free_list(page, first, bsize, count, (*page).free, rng);
        (*page)
            .capacity
            .store((capacity + count) as u32, Ordering::Relaxed);
    }
}

/// Length and tail of a free list. A list longer than the page's capacity
/// has a cycle (links forged by a write after free that still decode to
/// blocks of the page), and one that leads into a live block a forged
/// link: the hardened build reports either and cuts the list there (its
/// remaining blocks leak), so no walk runs forever and no live block is
/// relinked.
///
/// # Safety
/// `head` must start a list of blocks of `page`.
unsafe fn list_tail(page: *mut Page, head: *mut Block) -> (*mut Block, u32) {
    let mut count = 1;
    let mut tail = head;
    // SAFETY: each link decodes (checked in the hardened build) to a block
    // of the page; the count bounds the walk.
    unsafe {
        let max = (*page).capacity.load(Ordering::Relaxed);
        loop {
            let next = harden::decode_next(page, (*tail).next, tail);
            if next.is_null() {
                return (tail, count);
            }
            let cut = if count >= max {
                harden::cycle_found(page, tail);
                true
            } else {
                harden::live_in_list(page, next)
            };
            if cut {
                (*tail).next = harden::encode_next(page, ptr::null_mut(), tail);
                return (tail, count);
            }
            tail = next;
            count += 1;
        }
    }
}

/// Moves blocks freed by other threads into `local_free`.
///
/// # Safety
/// `page` must be in use and owned by the calling thread.
unsafe fn collect_thread_free(page: *mut Page) {
    // SAFETY: `thread_free` is only ever changed atomically; once swapped out,
    // the list is ours alone.
    unsafe {
        let tf = &(*page).thread_free;
        let mut cur = tf.load(Ordering::Relaxed);
        let (head, count) = loop {
            let head = (cur & HEAD_MASK) as *mut Block;
            if head.is_null() {
                return;
            }
            match tf.compare_exchange_weak(cur, cur & STATE_MASK, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break (head, (cur >> COUNT_SHIFT) as u32),
                Err(seen) => cur = seen,
            }
        };
        // Hung where no tail is needed, unless the build must walk it (see
        // `harden::UNWALKED_REMOTE_LISTS`). Hung as `free`, it is not
        // shuffled (see `collect`): walking it would chase pointers through
        // blocks last touched on another core, one cache miss after another.
        if harden::UNWALKED_REMOTE_LISTS {
            if (*page).free.is_null() && !harden::shuffle_remote_lists() {
                (*page).free = head;
                (*page).free_zero = false;
                (*page).used -= count;
                return;
            }
            if (*page).local_free.is_null() {
                (*page).local_free = head;
                (*page).used -= count;
                return;
            }
        }
        let (tail, count) = list_tail(page, head);
        (*tail).next = harden::encode_next(page, (*page).local_free, tail);
        (*page).local_free = head;
        (*page).used -= count;
    }
}

/// Folds `thread_free` and `local_free` back into `free` when `free` is empty
/// (or always, with `force`). The hardened build shuffles what it folds
/// (see `harden::shuffle`).
///
/// # Safety
/// `page` must be in use and owned by the calling thread, its `heap` set
/// to the calling thread's heap.
pub unsafe fn collect(page: *mut Page, force: bool) {
    // SAFETY: owner access per the caller.
    unsafe {
        if force || (*page).thread_free.load(Ordering::Relaxed) & HEAD_MASK != 0 {
            collect_thread_free(page);
        }
        let local = (*page).local_free;
        if local.is_null() || !(force || (*page).free.is_null()) {
            return;
        }
        let (head, tail) = if harden::RANDOM {
            let heap = (*page).heap.load(Ordering::Relaxed);
            let (head, tail, _) = harden::shuffle(page, local, &mut (*heap).rng);
            (head, tail)
        } else if (*page).free.is_null() {
            // No tail needed: nothing to hang after it.
            (local, ptr::null_mut())
        } else {
            (local, list_tail(page, local).0)
        };
        if !(*page).free.is_null() {
            (*tail).next = harden::encode_next(page, (*page).free, tail);
        }
        (*page).free = head;
        (*page).free_zero = false;
        (*page).local_free = ptr::null_mut();
    }
}

/// Switches the delayed-free state, waiting out a remote thread caught in
/// the middle of a delayed free. A page marked `NEVER_DELAYED_FREE` keeps
/// that state unless `override_never`.
///
/// # Safety
/// `page` must be valid; the caller must own it.
pub unsafe fn set_delayed(page: *mut Page, state: usize, override_never: bool) {
    // SAFETY: only atomic operations on `thread_free`.
    let tf = unsafe { &(*page).thread_free };
    let mut cur = tf.load(Ordering::Acquire);
    loop {
        let old_state = cur & STATE_MASK;
        if old_state == DELAYED_FREEING {
            crate::os::yield_now();
            cur = tf.load(Ordering::Acquire);
            continue;
        }
        if old_state == state || (old_state == NEVER_DELAYED_FREE && !override_never) {
            return;
        }
        match tf.compare_exchange_weak(
            cur,
            (cur & !STATE_MASK) | state,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

/// In a `fork` child: a page left `DELAYED_FREEING` by a remote thread the
/// child does not have would make its owner wait for ever. It goes back
/// to `USE_DELAYED_FREE`, the state it had (the block that thread was
/// handing over leaks if it had not reached the heap's delayed list).
///
/// # Safety
/// `page` must be valid, owned by the calling thread, in a `fork` child
/// whose only thread is the caller.
pub unsafe fn clear_stale_delayed(page: *mut Page) {
    // SAFETY: only an atomic operation on `thread_free`.
    let tf = unsafe { &(*page).thread_free };
    let cur = tf.load(Ordering::Acquire);
    if cur & STATE_MASK == DELAYED_FREEING {
        let _ = tf.compare_exchange(
            cur,
            (cur & !STATE_MASK) | USE_DELAYED_FREE,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// Frees `block` from a thread that does not own its page: pushes it onto
/// `thread_free`, or, for a page in its heap's full queue, onto the heap's
/// delayed list so the owner notices the page has room.
///
/// # Safety
/// `block` must be a live block of the in-use `page`, freed exactly once.
pub unsafe fn free_remote(page: *mut Page, block: *mut Block) {
    // SAFETY: the block is ours to link; all shared state is atomic.
    unsafe {
        let tf = &(*page).thread_free;
        let mut cur = tf.load(Ordering::Relaxed);
        let use_delayed = loop {
            let state = cur & STATE_MASK;
            let (new, delayed) = if state == USE_DELAYED_FREE {
                ((cur & !STATE_MASK) | DELAYED_FREEING, true)
            } else {
                (*block).next = harden::encode_next(page, (cur & HEAD_MASK) as *mut Block, block);
                // The count cannot overflow its 16 bits (see COUNT_SHIFT).
                (
                    block as usize | state | ((cur & !(HEAD_MASK | STATE_MASK)) + COUNT_ONE),
                    false,
                )
            };
            match tf.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break delayed,
                Err(seen) => cur = seen,
            }
        };
        if use_delayed {
            // While DELAYED_FREEING is set, the owner waits before abandoning
            // its heap, so the heap pointer stays valid for this push.
            let heap = (*page).heap.load(Ordering::Acquire);
            crate::heap::push_delayed(heap, page, block);
            let mut cur = tf.load(Ordering::Relaxed);
            loop {
                let new = (cur & !STATE_MASK) | NO_DELAYED_FREE;
                match tf.compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(seen) => cur = seen,
                }
            }
        }
    }
}

/// A huge object's page (its own segment; `bin` 0, which no size class
/// has). Its block size says nothing: a huge block aligned to more than a
/// segment can be a single OS page.
///
/// # Safety
/// `page` must be a valid descriptor.
#[inline(always)]
pub unsafe fn is_huge(page: *const Page) -> bool {
    // SAFETY: per the caller.
    unsafe { (*page).bin == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisibility_test_matches_division_for_every_block_size() {
        for &bsize in crate::size_class::BLOCK_SIZE.iter().skip(1) {
            let mut page = Page::empty();
            // SAFETY: `init` only writes the descriptor; no memory is carved.
            unsafe { init(&mut page, ptr::null_mut(), 1, bsize, ptr::null_mut(), 0) };
            page.capacity.store(u32::MAX, Ordering::Relaxed);
            let span = (4 << 20) / bsize * bsize;
            let mut off = 0;
            while off < span {
                for probe in [off, off + 1, off + 8, off + bsize / 2, off + bsize - 8] {
                    let expect = probe % bsize == 0;
                    assert_eq!(
                        // SAFETY: `page` is a valid local descriptor.
                        unsafe { is_block_start(&page, probe) },
                        expect,
                        "bsize {bsize} off {probe}"
                    );
                }
                off += bsize * 7 + bsize;
            }
        }
    }

    #[test]
    fn offsets_past_the_carved_blocks_or_before_the_page_fail() {
        for &bsize in crate::size_class::BLOCK_SIZE.iter().skip(1) {
            let mut page = Page::empty();
            // SAFETY: `init` only writes the descriptor; no memory is carved.
            unsafe { init(&mut page, ptr::null_mut(), 1, bsize, ptr::null_mut(), 0) };
            page.capacity.store(10, Ordering::Relaxed);
            // SAFETY: `page` is a valid local descriptor.
            let start = |off: usize| unsafe { is_block_start(&page, off) };
            assert!(start(9 * bsize), "bsize {bsize}");
            assert!(!start(10 * bsize), "bsize {bsize}");
            assert!(!start(1000 * bsize), "bsize {bsize}");
            // A pointer below `page_start` wraps to a huge offset.
            for k in 1..=10 {
                assert!(!start((k * bsize).wrapping_neg()), "bsize {bsize} -{k} blocks");
            }
            assert!(!start(usize::MAX), "bsize {bsize}");
        }
    }

    #[test]
    fn single_block_pages_accept_only_offset_zero() {
        let mut page = Page::empty();
        // SAFETY: only the descriptor is written.
        unsafe { init_single(&mut page, 3 << 30, ptr::null_mut()) };
        // SAFETY: `page` is a valid local descriptor.
        unsafe {
            assert!(is_block_start(&page, 0));
            assert!(!is_block_start(&page, 8));
            assert!(!is_block_start(&page, 1 << 32));
            assert!(!is_block_start(&page, 3 << 30));
        }
    }
}
