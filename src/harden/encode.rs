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

/// # Safety
/// `page` must be a readable descriptor.
#[inline(always)]
unsafe fn keys(page: *const Page) -> (usize, usize) {
    // SAFETY: `page` is readable (this fn's contract); the keys are set before
    // it hands out a block and do not change while it is in use.
    unsafe { ((*page).keys[0], (*page).keys[1]) }
}

/// Encodes the link to `next` stored in the free block `at` of `page`.
///
/// # Safety
/// `page` must be a readable descriptor.
#[inline(always)]
pub unsafe fn encode_next(page: *const Page, next: *mut Block, at: *mut Block) -> usize {
    if !ON {
        return next as usize;
    }
    // SAFETY: `page` is readable (this fn's contract).
    let (k0, k1) = unsafe { keys(page) };
    (next as usize ^ k0 ^ at as usize)
        .rotate_left((k1 & 63) as u32)
        .wrapping_add(k1)
}

/// # Safety
/// `page` must be a readable descriptor.
#[inline(always)]
unsafe fn decode_raw(page: *const Page, raw: usize, at: *mut Block) -> usize {
    // SAFETY: `page` is readable (this fn's contract).
    let (k0, k1) = unsafe { keys(page) };
    raw.wrapping_sub(k1).rotate_right((k1 & 63) as u32) ^ k0 ^ at as usize
}

/// Makes `next` (null or a block of `page`) the block after `at` on its
/// free list: the one way a link is written.
///
/// # Safety
/// `page` must be an in-use descriptor and `at` a block of it that is off
/// the program's hands (free, or being carved or freed): its first word is
/// the allocator's.
#[inline(always)]
pub unsafe fn set_link(page: *const Page, at: *mut Block, next: *mut Block) {
    // SAFETY: `at`'s first word is the allocator's and `page` readable
    // (this fn's contract).
    unsafe { (*at).next = encode_next(page, next, at) }
}

/// The block after `at` on its free list, decoded and checked (see
/// [`decode_next`]): the one way a link is read.
///
/// # Safety
/// As for [`set_link`], and `at` must be on a free list of `page`.
#[inline(always)]
pub unsafe fn link(page: *const Page, at: *mut Block) -> *mut Block {
    // SAFETY: `at` is a free block of the in-use `page` (this fn's
    // contract), so its first word holds a link the allocator wrote.
    unsafe { decode_next(page, (*at).next, at) }
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
    // SAFETY: `page` is an in-use descriptor (this fn's contract).
    let next = unsafe { decode_raw(page, raw, at) };
    let ok = next == 0 || {
        // SAFETY: `page` is an in-use descriptor (this fn's contract), as
        // `is_block_start` needs.
        unsafe { is_block_start(page, next.wrapping_sub((*page).page_start as usize)) }
    };
    if ok {
        next as *mut Block
    } else {
        // SAFETY: `page` is an in-use descriptor (this fn's contract).
        unsafe { corrupted(page, at) }
    }
}

/// The block after `at` on its free list, decoded and checked as by
/// [`link`], or None where [`link`] would report a corrupted list: for a
/// fast path that leaves the reporting to its slow path, which reads the
/// same link again.
///
/// # Safety
/// As for [`link`].
#[inline(always)]
pub unsafe fn try_link(page: *const Page, at: *mut Block) -> Option<*mut Block> {
    // SAFETY: `at` is a free block of the in-use `page` (this fn's
    // contract), so its first word holds a link the allocator wrote.
    let raw = unsafe { (*at).next };
    if !ON {
        return Some(raw as *mut Block);
    }
    // SAFETY: `page` is an in-use descriptor (this fn's contract).
    let next = unsafe { decode_raw(page, raw, at) };
    // SAFETY: as for `decode_raw`, as `is_block_start` needs.
    let ok = next == 0 || unsafe { is_block_start(page, next.wrapping_sub((*page).page_start as usize)) };
    ok.then_some(next as *mut Block)
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
    // SAFETY: `page` is an in-use descriptor (this fn's contract).
    let next = unsafe { decode_raw(page, raw, at) };
    if next == 0 {
        return core::ptr::null_mut();
    }
    let Some(seg) = segment_map::segment_of(next as *const u8) else {
        // SAFETY: `page` is an in-use descriptor (this fn's contract).
        return unsafe { corrupted(page, at) };
    };
    // SAFETY: the segment map says `seg` is a live segment holding `next`.
    if unsafe { is_block_start_of(seg, next) } {
        next as *mut Block
    } else {
        // SAFETY: `page` is an in-use descriptor (this fn's contract).
        unsafe { corrupted(page, at) }
    }
}

/// Whether `next` is a block start of the page of `seg` it lies in.
///
/// # Safety
/// `seg` must be a live segment holding `next` (as for `page_of`).
#[inline(always)]
unsafe fn is_block_start_of(seg: *mut crate::meta::segment::Segment, next: usize) -> bool {
    // SAFETY: `seg` is live and holds `next` (this fn's contract).
    let target = unsafe { page_of(seg, next as *const u8) };
    // SAFETY: `target` is a descriptor in the live `seg`'s page table, as
    // `is_block_start` needs.
    unsafe { is_block_start(target, next.wrapping_sub((*target).page_start as usize)) }
}

/// Reports a corrupted free list at `at`, a block of `page`, and gives the
/// null link that cuts the list there.
///
/// # Safety
/// `page` must be a readable descriptor.
#[cold]
#[inline(never)]
unsafe fn corrupted(page: *const Page, at: *mut Block) -> *mut Block {
    // SAFETY: `page` is readable (this fn's contract).
    let bsize = unsafe { (*page).block_size };
    error::report(ErrorKind::CorruptedFreeList, at as usize, bsize);
    core::ptr::null_mut()
}
