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
use core::sync::atomic::Ordering;

use crate::core::heap::{self, Heap};
use crate::harden;
use crate::meta::page::{
    Block, Page, COUNT_ONE, COUNT_SHIFT, DELAYED_FREEING, HEAD_MASK, NEVER_DELAYED_FREE, NO_DELAYED_FREE,
    STATE_MASK, USE_DELAYED_FREE,
};

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
        p.set_geometry(block_size);
        p.thread_free.store(NO_DELAYED_FREE, Ordering::Relaxed);
        heap::set_owner(p, heap, Ordering::Relaxed);
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
        heap::set_owner(p, ptr::null_mut(), Ordering::Relaxed);
        p.thread_free.store(NEVER_DELAYED_FREE, Ordering::Relaxed);
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
        let heap = heap::owner(&*page, Ordering::Relaxed);
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
            let heap = heap::owner(&*page, Ordering::Relaxed);
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
            let heap = heap::owner(&*page, Ordering::Acquire);
            crate::core::heap::push_delayed(heap, page, block);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::page::is_block_start;

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
