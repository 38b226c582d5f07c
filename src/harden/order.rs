//! `random-order`: the order blocks are handed out in.
//!
//! Plain build: a page's fresh blocks are linked in address order (good for
//! caches), and freed blocks are reused last-freed first. Hardened: each
//! batch of fresh blocks is linked in a random permutation, and each list
//! of freed blocks is shuffled when the page takes it back for reuse; so
//! the block a malloc returns cannot be predicted from the previous one or
//! from the owner's last free. Where a quarantine is in effect its random
//! departures already decide the order in which freed blocks reach their
//! page's lists, and the lists are taken back as they are (see
//! `shuffle_freed_lists`, `page::collect` and `page::collect_thread_free`).
//! Freed blocks are still reused before the page grows (growing instead,
//! at random, cost every thread a page's worth of memory per size class
//! and the time to fault it in).

use core::ptr;
use core::sync::atomic::Ordering;

use super::encode::{link, set_link};
use super::random;
use crate::meta::constants::EXTEND_BYTES;
use crate::meta::page::{Block, Page};

pub const ON: bool = cfg!(feature = "random-order");

/// Most blocks one batch links: bounds the permutation's stack buffer.
const MAX_BATCH: usize = 512;

/// How many blocks to carve next, with `left` still uncarved: about
/// [`EXTEND_BYTES`] worth so fresh memory is touched gradually; at least 16
/// when randomizing, so a permutation has room to be random.
#[inline]
pub fn batch(bsize: usize, left: usize) -> usize {
    // Randomizing small blocks needs a batch of some size to shuffle; big
    // ones keep the plain minimum, so a batch never touches much memory,
    // and large ones come one at a time: carving may zero them (reused
    // memory in the zero-on-free build), and a program holding one large
    // block of a size should not pay for four.
    let min = if ON && bsize <= 1024 {
        16
    } else if bsize > crate::meta::constants::MEDIUM_OBJ_MAX {
        1
    } else {
        4
    };
    (EXTEND_BYTES / bsize).clamp(min, MAX_BATCH).min(left)
}

/// The fresh blocks of `bsize` bytes from `first` that one batch links:
/// owns the arithmetic from a block's index to its address.
#[derive(Clone, Copy)]
struct Batch {
    page: *const Page,
    first: *mut u8,
    bsize: usize,
}

impl Batch {
    /// # Safety
    /// The blocks from `first` that [`Batch::set_link`] is given the index
    /// of must be unused memory of `page`, an in-use page the calling
    /// thread owns; `bsize` at least a word.
    #[inline(always)]
    unsafe fn new(page: *const Page, first: *mut u8, bsize: usize) -> Batch {
        Batch { page, first, bsize }
    }

    /// The address of block `i` (arithmetic only: nothing is read).
    #[inline(always)]
    fn block(self, i: usize) -> *mut Block {
        self.first.wrapping_add(i * self.bsize) as *mut Block
    }

    /// Makes `next` (null, a block of the batch or a free block of the
    /// page) the block after block `i`.
    ///
    /// # Safety
    /// Block `i` must be one the batch was made for (see [`Batch::new`]).
    #[inline(always)]
    unsafe fn set_link(self, i: usize, next: *mut Block) {
        // SAFETY: block `i` is unused memory of the owned, in-use `page` (this
        // fn's and `new`'s contracts): its first word is the allocator's.
        unsafe { set_link(self.page, self.block(i), next) }
    }
}

/// Links `count` fresh blocks starting at `first` (each `bsize` bytes) into
/// a list ending in `rest`, and returns its head.
///
/// # Safety
/// - `[first, first + count * bsize)` must be unused memory of `page`, and
///   `rest` null or a free block of `page`.
/// - `1 <= count <= MAX_BATCH`; `page` owned by the calling thread, whose
///   heap's generator `rng` is.
#[inline]
pub unsafe fn build_free_list(
    page: *const Page,
    first: *mut u8,
    bsize: usize,
    count: usize,
    rest: *mut Block,
    rng: &mut u64,
) -> *mut Block {
    // SAFETY: blocks `0..count` from `first`, the only ones linked below, are
    // unused memory of the owned `page`, a word or more each (this fn's contract).
    let batch = unsafe { Batch::new(page, first, bsize) };
    if !ON {
        for i in 0..count - 1 {
            // SAFETY: `i < count`, a block of the batch.
            unsafe { batch.set_link(i, batch.block(i + 1)) };
        }
        // SAFETY: `count >= 1` (this fn's contract): a block of the batch.
        unsafe { batch.set_link(count - 1, rest) };
        return batch.block(0);
    }
    let mut order = [0u16; MAX_BATCH];
    let order = &mut order[..count];
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i as u16;
    }
    // Fisher-Yates.
    for i in (1..count).rev() {
        order.swap(i, random::below(rng, i + 1));
    }
    for w in order.windows(2) {
        // SAFETY: `order` is a permutation of `0..count`: blocks of the batch.
        unsafe { batch.set_link(w[0] as usize, batch.block(w[1] as usize)) };
    }
    // SAFETY: `order` is a permutation of `0..count`, not empty (`count >=
    // 1`, this fn's contract).
    unsafe { batch.set_link(order[count - 1] as usize, rest) };
    batch.block(order[0] as usize)
}

/// Most blocks one shuffle window holds: bounds the stack buffer, and is
/// how many candidates the next reused block is drawn from.
const WINDOW: usize = 64;

/// Relinks the list of freed blocks at `head` (non-null) in a random order
/// (in the same order when the defence is off):
/// each run of [`WINDOW`] blocks is permuted in place, the runs kept in
/// order, so the block freed last is handed out next only one time in
/// `WINDOW` (when the list is that long). Returns the new head, the tail
/// and the length. A list longer than the page's capacity has a cycle
/// (links forged after free that still decode to blocks of the page), and
/// one that reaches a live block a forged link: either is reported and cut
/// there, as `page::list_tail` does.
///
/// # Safety
/// `head` must start a list of free blocks of `page`, an in-use page the
/// calling thread owns, whose heap's generator `rng` is.
pub unsafe fn shuffle(page: *const Page, head: *mut Block, rng: &mut u64) -> (*mut Block, *mut Block, u32) {
    // Every link is decoded and checked, live blocks are refused, and the
    // count bounds the walk.
    // SAFETY: `page` is an in-use descriptor (this fn's contract).
    let max = unsafe { (*page).capacity.load(Ordering::Relaxed) };
    let mut window = [ptr::null_mut::<Block>(); WINDOW];
    let (mut first, mut last) = (ptr::null_mut::<Block>(), ptr::null_mut::<Block>());
    let mut count = 0u32;
    let mut cur = head;
    while !cur.is_null() {
        let mut n = 0;
        while n < WINDOW && !cur.is_null() {
            if count == max {
                // SAFETY: `page` is an in-use descriptor (this fn's contract).
                unsafe { super::cycle_found(page, cur) };
                cur = ptr::null_mut();
                break;
            }
            // SAFETY: `cur` is on the list at `head`, so a block of the
            // in-use `page` (this fn's contract).
            if unsafe { super::live_in_list(page, cur) } {
                cur = ptr::null_mut();
                break;
            }
            window[n] = cur;
            // SAFETY: `cur` is on the list at `head`, so a free block of
            // `page` (this fn's contract), and not live (just checked).
            cur = unsafe { link(page, cur) };
            n += 1;
            count += 1;
        }
        let run = &mut window[..n];
        for i in (1..n).rev().filter(|_| ON) {
            run.swap(i, random::below(rng, i + 1));
        }
        // Every block walked is a free block of the owned, in-use `page`
        // (this fn's contract), whose first word is the allocator's.
        for w in run.windows(2) {
            // SAFETY: `w[0]` was walked, so a free block of the owned `page`.
            unsafe { set_link(page, w[0], w[1]) };
        }
        if let (Some(&a), Some(&z)) = (run.first(), run.last()) {
            if last.is_null() {
                first = a;
            } else {
                // SAFETY: `last` ended the previous run: a free block of `page`.
                unsafe { set_link(page, last, a) };
            }
            // SAFETY: `z` was walked, so a free block of the owned `page`.
            unsafe { set_link(page, z, ptr::null_mut()) };
            last = z;
        }
    }
    (first, last, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::page::Page;

    #[test]
    fn a_batch_links_every_block_exactly_once() {
        let mut mem = [0u64; 64];
        let mut page = Page::empty();
        let mut rng = 7;
        let first = mem.as_mut_ptr() as *mut u8;
        // SAFETY: the descriptor is local; 64 words of local memory hold 32
        // blocks of 16 bytes, all carved.
        let head = unsafe {
            crate::core::page::init(&mut page, core::ptr::null_mut(), 2, 16, first, 32);
            page.capacity.store(32, core::sync::atomic::Ordering::Relaxed);
            build_free_list(&page, first, 16, 32, core::ptr::null_mut(), &mut rng)
        };
        let mut seen = [false; 32];
        let mut b = head;
        let mut n = 0;
        let mut in_order = true;
        while !b.is_null() {
            let i = (b as usize - first as usize) / 16;
            assert!(!seen[i], "block {i} linked twice");
            seen[i] = true;
            in_order &= i == n;
            n += 1;
            // SAFETY: `b` is a block of the list just built.
            b = unsafe { crate::harden::link(&page, b) };
        }
        assert_eq!(n, 32);
        assert_eq!(in_order, !ON, "random order permutes, plain keeps address order");
    }

    // Blocks in local memory: with `double-free` a walk reads the segment
    // bitmaps, which only real segments have (`reuse_order_randomness` in
    // tests/harden_random.rs measures the shuffle there).
    #[cfg(not(feature = "double-free"))]
    #[test]
    fn a_shuffle_keeps_every_block_once_and_moves_them() {
        const N: usize = 200;
        let mut mem = [0u64; 2 * N];
        let mut page = Page::empty();
        let mut rng = 11;
        let first = mem.as_mut_ptr() as *mut u8;
        // SAFETY: the descriptor is local and nobody else's; `mem` holds N
        // blocks of 16 bytes.
        unsafe { crate::core::page::init(&mut page, core::ptr::null_mut(), 2, 16, first, N) };
        page.capacity
            .store(N as u32, core::sync::atomic::Ordering::Relaxed);
        let at = |i: usize| first.wrapping_add(i * 16) as *mut Block;
        for i in 0..N {
            let next = if i + 1 < N {
                at(i + 1)
            } else {
                core::ptr::null_mut()
            };
            // SAFETY: block `i` of `mem` is carved and in no one's hands.
            unsafe { set_link(&page, at(i), next) };
        }
        // SAFETY: the list at `at(0)`, linked just above, holds every block
        // of the local page once, all free.
        let (head, tail, count) = unsafe { shuffle(&page, at(0), &mut rng) };
        assert_eq!(count as usize, N);
        let mut seen = [false; N];
        let (mut b, mut n, mut moved, mut last) = (head, 0, 0, core::ptr::null_mut());
        while !b.is_null() {
            let i = (b as usize - first as usize) / 16;
            assert!(!seen[i], "block {i} linked twice");
            seen[i] = true;
            moved += usize::from(i != n);
            n += 1;
            last = b;
            // SAFETY: `b` is a block of the list just shuffled.
            b = unsafe { link(&page, b) };
        }
        assert_eq!(n, N);
        assert_eq!(last, tail);
        assert_eq!(moved > N / 2, ON, "{moved} of {N} blocks moved");
    }

    /// A forged link that leads the walk of a freed list into a live
    /// block: reported, and the live block's first word (where relinking
    /// would write) left to its owner.
    #[cfg(feature = "double-free")]
    #[test]
    fn a_walk_never_relinks_a_live_block() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static REPORTS: AtomicUsize = AtomicUsize::new(0);
        fn count(_: &crate::error::ErrorInfo) {
            REPORTS.fetch_add(1, Ordering::Relaxed);
        }
        let a = crate::core::alloc::malloc(48);
        let b = crate::core::alloc::malloc(48);
        let page_of = |p: *mut u8| {
            let seg = crate::meta::segment::of_block(p);
            // SAFETY: `p` is a live block, so its segment is live.
            unsafe { crate::meta::segment::page_of(seg, p) }
        };
        if page_of(a) != page_of(b) {
            // Carving put them on two pages: nothing to forge between them.
            // SAFETY: live blocks, freed once.
            unsafe { (crate::core::alloc::free(a), crate::core::alloc::free(b)) };
            return;
        }
        let page = page_of(a);
        // `a` is freed once and then, as a write after free would, given a
        // link to the live `b`, encoded with the page's own keys.
        // SAFETY: `b` is a live 48-byte block of this thread's, `a` live and freed
        // once; `heap()` is this thread's heap, initialised by the mallocs.
        unsafe {
            (b as *mut u64).write(0x1122_3344_5566_7788);
            crate::core::alloc::free(a);
            // Out of the quarantine (where it waits in such builds) and
            // onto its page's free list.
            crate::core::alloc::empty_quarantine(crate::core::thread::heap());
        }
        // SAFETY: `a` is now a free block of `page`, in use and owned by
        // this thread, so its first word is the allocator's.
        unsafe { set_link(page, a as *mut Block, b as *mut Block) };
        crate::error::set_error_handler(Some(count));
        let before = REPORTS.load(Ordering::Relaxed);
        // SAFETY: `page` is in use (it holds the live `b`) and owned by
        // this thread, whose heap it belongs to.
        unsafe { crate::core::page::collect(page, true) };
        crate::error::set_error_handler(None);
        assert!(
            REPORTS.load(Ordering::Relaxed) > before,
            "the forged link was reported"
        );
        // SAFETY: `b` is still live, and the walk left it alone.
        let kept = unsafe { (b as *const u64).read() };
        assert_eq!(kept, 0x1122_3344_5566_7788, "the live block was relinked");
        // SAFETY: `b` is live, freed once.
        unsafe { crate::core::alloc::free(b) };
    }
}
