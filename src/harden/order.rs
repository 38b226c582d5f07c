//! `random-order`: the order blocks are handed out in.
//!
//! Plain build: a page's fresh blocks are linked in address order (good for
//! caches), and freed blocks are reused before the page grows. Hardened:
//! each batch of fresh blocks is linked in a random permutation, and when a
//! page can both reuse freed blocks and grow, a coin decides; so the block a
//! malloc returns cannot be predicted from the previous one or from the
//! last free.

use super::encode::encode_next;
use super::random;
use crate::constants::EXTEND_BYTES;
use crate::page::{Block, Page};

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
    } else if bsize > crate::constants::MEDIUM_OBJ_MAX {
        1
    } else {
        4
    };
    (EXTEND_BYTES / bsize).clamp(min, MAX_BATCH).min(left)
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
    // SAFETY: every address written is a block boundary inside the range
    // handed over, and blocks are at least one word.
    unsafe {
        let at = |i: usize| first.add(i * bsize) as *mut Block;
        if !ON {
            for i in 0..count - 1 {
                (*at(i)).next = encode_next(page, at(i + 1), at(i));
            }
            (*at(count - 1)).next = encode_next(page, rest, at(count - 1));
            return first as *mut Block;
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
            (*at(w[0] as usize)).next = encode_next(page, at(w[1] as usize), at(w[0] as usize));
        }
        let last = at(order[count - 1] as usize);
        (*last).next = encode_next(page, rest, last);
        at(order[0] as usize)
    }
}

/// With freed blocks at hand and room to grow, should the page grow?
#[inline(always)]
pub fn prefer_growth(rng: &mut u64) -> bool {
    ON && random::next(rng) & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::Page;

    #[test]
    fn a_batch_links_every_block_exactly_once() {
        let mut mem = [0u64; 64];
        let mut page = Page::empty();
        let mut rng = 7;
        let first = mem.as_mut_ptr() as *mut u8;
        // SAFETY: the descriptor is local; 64 words of local memory hold 32
        // blocks of 16 bytes, all carved.
        let head = unsafe {
            crate::page::init(&mut page, core::ptr::null_mut(), 2, 16, first, 32);
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
            b = unsafe { crate::harden::decode_next(&page, (*b).next, b) };
        }
        assert_eq!(n, 32);
        assert_eq!(in_order, !ON, "random order permutes, plain keeps address order");
    }
}
