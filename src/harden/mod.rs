//! Hooks where the hardened build's defences slot into the core.
//!
//! Each hook is `#[inline(always)]` and, in the plain build, compiles to the
//! plain operation: links stored as raw addresses, blocks carved in address
//! order, no per-page secrets.

use crate::page::{Block, Page};

/// Initialises the per-page secrets (none in the plain build).
///
/// # Safety
/// `page` must be valid and exclusively owned by the caller.
#[inline(always)]
pub unsafe fn page_keys_init(_page: *mut Page) {}

/// Encodes the link stored in `_at` (a free block of `_page`) that points to
/// `next`.
#[inline(always)]
pub fn encode_next(_page: *const Page, next: *mut Block, _at: *mut Block) -> usize {
    next as usize
}

/// Decodes a link read from the free block `_at` of `_page`.
///
/// # Safety
/// `raw` must have been produced by [`encode_next`] for the same page.
#[inline(always)]
pub unsafe fn decode_next(_page: *const Page, raw: usize, _at: *mut Block) -> *mut Block {
    raw as *mut Block
}

/// Links `count` fresh blocks starting at `first` into a free list and
/// returns its head; the plain build keeps address order, which is what
/// makes consecutive allocations cache-friendly.
///
/// # Safety
/// - `[first, first + count * bsize)` must be unused memory of `page`.
/// - `count >= 1`.
#[inline]
pub unsafe fn build_free_list(page: *const Page, first: *mut u8, bsize: usize, count: usize) -> *mut Block {
    // SAFETY: every address written lies inside the range the caller hands
    // over, at a block boundary, and blocks are at least one word.
    unsafe {
        let mut block = first as *mut Block;
        for _ in 1..count {
            let next = (block as *mut u8).add(bsize) as *mut Block;
            (*block).next = encode_next(page, next, block);
            block = next;
        }
        (*block).next = encode_next(page, core::ptr::null_mut(), block);
    }
    first as *mut Block
}
