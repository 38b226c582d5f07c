//! `encoded-freelist`: free-list links stored encoded with per-page keys.
//!
//! A link is `rotl(next ^ k0 ^ at, k1 & 63) + k1`, where `at` is the block
//! holding it: the same pointer stored in two blocks encodes differently,
//! and a freed block never shows a plain heap address. Decoding checks that
//! the result is null or a block of the expected page (or, for the heap's
//! delayed list, of some page); anything else is reported as a corrupted
//! free list and the rest of the list is dropped.
//!
//! The encoding hides addresses and defeats blind forgeries; it is not a
//! MAC. Flipping one bit of a stored link flips about one bit of the
//! decoded value, which may still be a block start, so nothing may trust a
//! flag carried in a link (a "fresh block, skip the zero check" bit was
//! set that way by the `corrupt` fuzzer).

use crate::error::{self, ErrorKind};
use crate::meta::page::{is_block_start, Block, Page};
use crate::meta::segment::page_of;
use crate::meta::segment_map;

pub const ON: bool = cfg!(feature = "encoded-freelist");

#[inline(always)]
fn keys(page: *const Page) -> (usize, usize) {
    // SAFETY: callers pass a valid page descriptor.
    unsafe { ((*page).keys[0], (*page).keys[1]) }
}

/// Encodes the link to `next` stored in the free block `at` of `page`.
#[inline(always)]
pub fn encode_next(page: *const Page, next: *mut Block, at: *mut Block) -> usize {
    if !ON {
        return next as usize;
    }
    let (k0, k1) = keys(page);
    (next as usize ^ k0 ^ at as usize)
        .rotate_left((k1 & 63) as u32)
        .wrapping_add(k1)
}

#[inline(always)]
fn decode_raw(page: *const Page, raw: usize, at: *mut Block) -> usize {
    let (k0, k1) = keys(page);
    raw.wrapping_sub(k1).rotate_right((k1 & 63) as u32) ^ k0 ^ at as usize
}

/// Decodes the link read from `at`, a free block of `page`: null, or a block
/// of the same page.
///
/// # Safety
/// `page` must be a valid descriptor of an in-use page.
#[inline(always)]
pub unsafe fn decode_next(page: *const Page, raw: usize, at: *mut Block) -> *mut Block {
    if !ON {
        return raw as *mut Block;
    }
    let next = decode_raw(page, raw, at);
    let ok = next == 0 || {
        // SAFETY: `page` is valid per the caller.
        unsafe { is_block_start(page, next.wrapping_sub((*page).page_start as usize)) }
    };
    if ok {
        next as *mut Block
    } else {
        corrupted(page, at)
    }
}

/// Decodes a link of the heap's delayed list, read from `at` (a block of
/// `page`): null, or a block start of any fortalloc page.
///
/// # Safety
/// `page` must be a valid descriptor of an in-use page.
pub unsafe fn decode_delayed(page: *const Page, raw: usize, at: *mut Block) -> *mut Block {
    if !ON {
        return raw as *mut Block;
    }
    let next = decode_raw(page, raw, at);
    if next == 0 {
        return core::ptr::null_mut();
    }
    let Some(seg) = segment_map::segment_of(next as *const u8) else {
        return corrupted(page, at);
    };
    // SAFETY: the segment map says a live segment covers `next`.
    unsafe {
        let target = page_of(seg, next as *const u8);
        if is_block_start(target, next.wrapping_sub((*target).page_start as usize)) {
            next as *mut Block
        } else {
            corrupted(page, at)
        }
    }
}

#[cold]
#[inline(never)]
fn corrupted(page: *const Page, at: *mut Block) -> *mut Block {
    // SAFETY: `page` is a valid descriptor per the callers.
    let bsize = unsafe { (*page).block_size };
    error::report(ErrorKind::CorruptedFreeList, at as usize, bsize);
    core::ptr::null_mut()
}
