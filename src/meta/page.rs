//! A page descriptor's layout and the arithmetic that reads it: which
//! offsets are block starts, which blocks a freed page held, whether a page
//! is a huge block's. The code that changes a page's state (carving,
//! collecting, remote frees) is `core::page`.
//!
//! ```text
//! page_start                         page_start + capacity * block_size
//! |<- block ->|<- block ->|<- block ->| ... |   (blocks past `capacity`
//! +-----------+-----------+-----------+-----+    are not carved yet)
//! ```

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

/// The heap that owns a page, as this layer sees it: an address only
/// `core::heap` turns back into its `Heap` (so the types here need nothing
/// from the allocator above them).
pub enum OwnerHeap {}

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
pub const STATE_MASK: usize = 3;
/// `thread_free` also counts its blocks, in the bits above a user-space
/// address (47 bits; see `segment_map`), so the owner can take the list
/// over without walking it to count it: the walk is one cache miss per
/// block, each freed on another core.
pub const COUNT_SHIFT: u32 = 48;
pub const COUNT_ONE: usize = 1 << COUNT_SHIFT;
/// The list head's bits of `thread_free`.
pub const HEAD_MASK: usize = (COUNT_ONE - 1) & !STATE_MASK;
// Every block is on the list at most once, and the page with the most
// blocks (a small page of one-word blocks; medium pages have blocks over
// 8 KiB, large ones over 64 KiB) fits the count's 16 bits.
const _: () = assert!(
    (1usize << crate::meta::constants::SMALL_PAGE_SHIFT) / crate::meta::constants::WORD
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
    /// The owning heap, opaque at this layer: `core::heap::owner` and
    /// `set_owner` are the typed accessors.
    pub heap: AtomicPtr<OwnerHeap>,
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

    /// Sets the divisibility test (`div_inv`, `div_shift`) for blocks of
    /// `block_size`.
    pub fn set_geometry(&mut self, block_size: usize) {
        let shift = block_size.trailing_zeros();
        self.div_shift = shift as u8;
        self.div_inv = inverse_u64((block_size >> shift) as u64);
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

/// A huge object's page (its own segment; `bin` 0, which no size class
/// has). Its block size says nothing: a huge block aligned to more than a
/// segment can be a single OS page.
///
/// # Safety
/// `page` must be a valid descriptor.
#[inline(always)]
pub unsafe fn is_huge(page: *const Page) -> bool {
    // SAFETY: `page` is a readable descriptor (this fn's contract).
    unsafe { (*page).bin == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisibility_test_matches_division_for_every_block_size() {
        for &bsize in crate::meta::size_class::BLOCK_SIZE.iter().skip(1) {
            let mut page = Page::empty();
            page.set_geometry(bsize);
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
        for &bsize in crate::meta::size_class::BLOCK_SIZE.iter().skip(1) {
            let mut page = Page::empty();
            page.set_geometry(bsize);
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
}
