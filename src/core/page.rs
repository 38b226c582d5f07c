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
//! Every link is written by `harden::set_link` and read by `harden::link`.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::core::heap::{self, Heap};
use crate::error::{self, ErrorKind};
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
    // SAFETY: nobody else uses the descriptor (this fn's contract), so a
    // unique reference to it is sound while it is set up.
    let p = unsafe { &mut *page };
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
    // SAFETY: the descriptor is set up and still nobody else's.
    unsafe { harden::page_keys_init(page) };
}

/// Sets up `page` as the single block of a huge segment: only an offset of
/// exactly zero passes the free check.
///
/// # Safety
/// Same as [`init`], with `reserved == 1`.
pub unsafe fn init_single(page: *mut Page, block_size: usize, start: *mut u8) {
    // SAFETY: `page` is a descriptor nobody uses and `start` holds one
    // block of `block_size` (this fn's contract, as `init`'s).
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
    // SAFETY: the caller owns the descriptor exclusively (this fn's
    // contract); the fields other threads may read are atomics.
    let p = unsafe { &mut *page };
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

/// A page the calling thread owns, for the fields only its owner writes
/// (`free`, `local_free`, `used`, `free_zero`): the ownership obligation is
/// met once, where the handle is made, and each access is then a read or
/// write of one field. Inside is a raw pointer, never a `&mut Page`:
/// other threads read the shared fields (`capacity`, `thread_free`, the
/// geometry) meanwhile. Not `Send` (a raw pointer inside), so it cannot
/// leave its thread.
#[derive(Clone, Copy)]
pub struct Owned(*mut Page);

impl Owned {
    /// # Safety
    /// `page` must be in use and owned by the calling thread for as long
    /// as the handle is used.
    #[inline(always)]
    pub unsafe fn new(page: *mut Page) -> Owned {
        Owned(page)
    }

    /// The list malloc pops from.
    #[inline(always)]
    pub fn free(self) -> *mut Block {
        // SAFETY: the page is in use and ours (the handle's invariant);
        // only its owner writes `free`.
        unsafe { (*self.0).free }
    }

    /// # Safety
    /// `head` must be null or start a list of free blocks of this page.
    #[inline(always)]
    pub unsafe fn set_free(self, head: *mut Block) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).free = head }
    }

    /// The list the owner's frees go to.
    #[inline(always)]
    pub fn local_free(self) -> *mut Block {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).local_free }
    }

    /// # Safety
    /// `head` must be null or start a list of free blocks of this page.
    #[inline(always)]
    pub unsafe fn set_local_free(self, head: *mut Block) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).local_free = head }
    }

    /// Counts a block handed to the program.
    #[inline(always)]
    pub fn taken(self) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).used += 1 }
    }

    /// Counts `n` blocks back from the program (freed and collected).
    #[inline(always)]
    pub fn returned(self, n: u32) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).used -= n }
    }

    /// Counts one block back from the program and returns the blocks still
    /// in use, negative if there were none (a double free: see
    /// `heap::free_local`).
    #[inline(always)]
    pub fn returned_one(self) -> i32 {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe {
            (*self.0).used = (*self.0).used.wrapping_sub(1);
            (*self.0).used as i32
        }
    }

    /// Sets the count of blocks handed out and not collected back.
    #[inline(always)]
    pub fn set_used(self, n: u32) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).used = n }
    }

    /// Blocks handed out and not collected back.
    #[inline(always)]
    pub fn used(self) -> u32 {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).used }
    }

    /// The page is in its heap's full queue.
    #[inline(always)]
    pub fn in_full(self) -> bool {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).in_full }
    }

    /// Slow paths left before an empty retired page is released (0: not
    /// retired).
    #[inline(always)]
    pub fn retire_expire(self) -> u8 {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).retire_expire }
    }

    #[inline(always)]
    pub fn set_retire_expire(self, left: u8) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).retire_expire = left }
    }

    /// Whether every block on `free` (and every block not carved yet)
    /// reads zero past its link.
    #[inline(always)]
    pub fn set_free_zero(self, zero: bool) {
        // SAFETY: owner-only field of our page (the handle's invariant).
        unsafe { (*self.0).free_zero = zero }
    }

    /// The atomic list other threads free onto.
    #[inline(always)]
    pub fn thread_free(&self) -> &AtomicUsize {
        // SAFETY: the page is in use (the handle's invariant), so its
        // descriptor is live; the field is atomic.
        unsafe { &(*self.0).thread_free }
    }

    /// The random generator of the page's heap (this thread's).
    ///
    /// # Safety
    /// No other reference to the generator may be alive meanwhile.
    #[inline(always)]
    pub unsafe fn rng<'a>(self) -> &'a mut u64 {
        // SAFETY: an owned page's heap is this thread's, whose generator only this
        // thread touches; the caller holds no other reference to it.
        unsafe { &mut (*heap::owner(&*self.0, Ordering::Relaxed)).rng }
    }
}

/// Carves a batch of fresh blocks (see `harden::batch`) onto the front of
/// the free list, so fresh memory is touched gradually.
///
/// # Safety
/// `page` must be in use, owned by the calling thread, whose heap is the
/// page's, with `capacity < reserved`.
pub unsafe fn extend(page: *mut Page) {
    // SAFETY: in use and this thread's (this fn's contract).
    let p = unsafe { Owned::new(page) };
    // SAFETY: the geometry of an in-use page does not change; `capacity`
    // is atomic (other threads read it meanwhile).
    let (bsize, capacity, reserved, start, zero_start) = unsafe {
        let d = &*page;
        let capacity = d.capacity.load(Ordering::Relaxed) as usize;
        (
            d.block_size,
            capacity,
            d.reserved as usize,
            d.page_start,
            d.zero_start,
        )
    };
    let count = harden::batch(bsize, reserved - capacity);
    // SAFETY: `capacity < reserved` (this fn's contract), so the carved
    // blocks lie in the page's reserved area.
    let first = unsafe { start.add(capacity * bsize) };
    if harden::FREE_BLOCKS_READ_ZERO && !zero_start {
        // Reused segment memory may hold an old owner's bytes. Fresh
        // blocks are zeroed here rather than trusted to be: a flag saying
        // "fresh, skip the check" in the encoded link could be set by a
        // one-bit use-after-free write (the `corrupt` fuzzer found it).
        // Only what the allocator itself knows out of line (this use of
        // the slot started on zero memory) spares the memset.
        // SAFETY: the blocks being carved are nobody's yet.
        unsafe { ptr::write_bytes(first, 0, count * bsize) };
    }
    // SAFETY: `count` blocks from `first` are being carved from `page`.
    unsafe { harden::carved(page, first, bsize, count) };
    if p.free().is_null() {
        // Carving writes only the links (and the canary build's slot
        // trailers, past every request).
        p.set_free_zero(zero_start || harden::FREE_BLOCKS_READ_ZERO);
    }
    // SAFETY: the `count` blocks from `first` are nobody's, `free` is a
    // list of the page, and no other reference to the generator is alive.
    unsafe {
        let head = harden::build_free_list(page, first, bsize, count, p.free(), p.rng());
        p.set_free(head);
    }
    // SAFETY: the page is in use; `capacity` is atomic.
    unsafe { &(*page).capacity }.store((capacity + count) as u32, Ordering::Relaxed);
}

/// Length and tail of a free list. A list longer than the page's capacity
/// has a cycle (links forged by a write after free that still decode to
/// blocks of the page), and one that leads into a live block a forged
/// link: the hardened build reports either and cuts the list there (its
/// remaining blocks leak), so no walk runs forever and no live block is
/// relinked.
///
/// # Safety
/// `head` must start a list of blocks of `page`, an in-use page.
unsafe fn list_tail(page: *mut Page, head: *mut Block) -> (*mut Block, u32) {
    let mut count = 1;
    let mut tail = head;
    // SAFETY: the page is in use (this fn's contract); `capacity` is atomic.
    let max = unsafe { &(*page).capacity }.load(Ordering::Relaxed);
    loop {
        // SAFETY: `tail` is a free block of the page: the head, or a link
        // `harden::link` decoded (and in the hardened build checked).
        let next = unsafe { harden::link(page, tail) };
        if next.is_null() {
            return (tail, count);
        }
        let cut = if count >= max {
            // SAFETY: `tail` is a free block of the in-use page.
            unsafe { harden::cycle_found(page, tail) };
            true
        } else {
            // SAFETY: `next` decoded to a block of the in-use page.
            unsafe { harden::live_in_list(page, next) }
        };
        if cut {
            // SAFETY: `tail` is a free block of the in-use page.
            unsafe { harden::set_link(page, tail, ptr::null_mut()) };
            return (tail, count);
        }
        tail = next;
        count += 1;
    }
}

/// Moves blocks freed by other threads into `local_free`.
///
/// # Safety
/// `page` must be in use and owned by the calling thread.
unsafe fn collect_thread_free(page: *mut Page) {
    // SAFETY: in use and this thread's (this fn's contract).
    let p = unsafe { Owned::new(page) };
    let tf = p.thread_free();
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
    if count > p.used() {
        // More blocks came back than the page has in use: one of them was
        // freed twice. The list is set aside (its blocks leak) if an error
        // handler returns.
        return freed_twice(page, head);
    }
    // Once swapped out, the list is ours alone: every `set_*` below hangs
    // a list of the page's free blocks.
    // Hung where no tail is needed, unless the build must walk it (see
    // `harden::UNWALKED_REMOTE_LISTS`). Hung as `free`, it is not
    // shuffled (see `collect`): walking it would chase pointers through
    // blocks last touched on another core, one cache miss after another.
    if harden::UNWALKED_REMOTE_LISTS {
        if p.free().is_null() && !harden::shuffle_freed_lists() {
            // SAFETY: the swapped-out list is the page's free blocks.
            unsafe { p.set_free(head) };
            p.set_free_zero(false);
            p.returned(count);
            return;
        }
        if p.local_free().is_null() {
            // SAFETY: the swapped-out list is the page's free blocks.
            unsafe { p.set_local_free(head) };
            p.returned(count);
            return;
        }
    }
    // SAFETY: the swapped-out list starts at `head`, blocks of the page.
    let (tail, count) = unsafe { list_tail(page, head) };
    if count > p.used() {
        return freed_twice(page, head);
    }
    // SAFETY: `tail` ends that list; `local_free` is a list of the page.
    unsafe {
        harden::set_link(page, tail, p.local_free());
        p.set_local_free(head);
    }
    p.returned(count);
}

/// Reports a list of blocks freed from other threads that gives back more
/// blocks than `page` has in use: a double free, found when the list is
/// collected (so the address is the list's first block, which may be
/// another block of the page than the one freed twice).
#[cold]
#[inline(never)]
fn freed_twice(page: *mut Page, head: *mut Block) {
    // SAFETY: an in-use page of this thread's heap (the caller's).
    let bsize = unsafe { (*page).block_size };
    error::report(ErrorKind::DoubleFree, head as usize, bsize);
}

/// Folds `thread_free` and `local_free` back into `free` when `free` is empty
/// (or always, with `force`). The `random-order` build shuffles what it
/// folds, unless a quarantine already made its order random (see
/// `harden::shuffle_freed_lists`).
///
/// # Safety
/// `page` must be in use and owned by the calling thread, its `heap` set
/// to the calling thread's heap.
pub unsafe fn collect(page: *mut Page, force: bool) {
    // SAFETY: in use and this thread's (this fn's contract).
    let p = unsafe { Owned::new(page) };
    if force || p.thread_free().load(Ordering::Relaxed) & HEAD_MASK != 0 {
        // SAFETY: as for `Owned::new`.
        unsafe { collect_thread_free(page) };
    }
    let local = p.local_free();
    if local.is_null() || !(force || p.free().is_null()) {
        return;
    }
    let (head, tail) = if harden::shuffle_freed_lists() {
        // SAFETY: `local` is a list of the page's free blocks; no other
        // reference to the generator is alive.
        let (head, tail, _) = unsafe { harden::shuffle(page, local, p.rng()) };
        (head, tail)
    } else if p.free().is_null() {
        // No tail needed: nothing to hang after it.
        (local, ptr::null_mut())
    } else {
        // SAFETY: `local` is a list of the page's free blocks.
        (local, unsafe { list_tail(page, local) }.0)
    };
    // SAFETY: `tail` ends the list from `head` and `free` is a list of the
    // page, so the two joined are one list of its free blocks.
    unsafe {
        if !p.free().is_null() {
            harden::set_link(page, tail, p.free());
        }
        p.set_free(head);
        p.set_local_free(ptr::null_mut());
    }
    p.set_free_zero(false);
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
    // SAFETY: the page is in use (this fn's contract); the field is atomic.
    let tf = unsafe { &(*page).thread_free };
    let mut cur = tf.load(Ordering::Relaxed);
    let use_delayed = loop {
        let state = cur & STATE_MASK;
        let (new, delayed) = if state == USE_DELAYED_FREE {
            ((cur & !STATE_MASK) | DELAYED_FREEING, true)
        } else {
            // The link is published below only if the head is still `cur`'s.
            // SAFETY: `block` leaves the program's hands (this fn's contract).
            unsafe { harden::set_link(page, block, (cur & HEAD_MASK) as *mut Block) };
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
        // SAFETY: the page is in use; `heap` is live while DELAYED_FREEING
        // holds, and `block` is a block of `page` leaving the program.
        unsafe { heap::push_delayed(heap::owner(&*page, Ordering::Acquire), page, block) };
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
