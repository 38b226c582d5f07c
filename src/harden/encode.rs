//! `encoded-freelist`: free-list links stored encoded with per-page keys.
//!
//! A link is `rotl(next ^ k0 ^ at, k1 % 64) + k1`, where `at` is the block
//! holding it: the same pointer stored in two blocks encodes differently,
//! and a freed block never shows a plain heap address. Decoding checks that
//! the result is null or a block of the expected page (or, for the heap's
//! delayed list, of some page); anything else is reported as a corrupted
//! free list and the rest of the list is dropped.

use crate::error::{self, ErrorKind};
use crate::page::{self, Block, Page};
use crate::{segment, segment_map};

pub const ON: bool = cfg!(feature = "encoded-freelist");

/// Low bit of a decoded link: the block holding the link is fresh (carved
/// on memory known to be zero, never handed out since), so the
/// write-after-free check need not read it, which on untouched memory
/// would fault every page in twice (the read maps the zero page, the
/// owner's first write copies it). Only with encoding: a plain link's bit
/// could be set by a use-after-free writer to dodge the check; an encoded
/// one cannot be forged without the page keys.
pub const FRESH: usize = if ON && super::zero::ON { 1 } else { 0 };

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

/// Encodes the link to `next` stored in `at`, a fresh block (see
/// [`FRESH`]).
#[inline(always)]
pub fn encode_fresh(page: *const Page, next: *mut Block, at: *mut Block) -> usize {
    encode_next(page, (next as usize | FRESH) as *mut Block, at)
}

/// Decodes the link read from `at`, a free block of `page`: null, or a block
/// of the same page.
///
/// # Safety
/// `page` must be a valid descriptor of an in-use page.
#[inline(always)]
pub unsafe fn decode_next(page: *const Page, raw: usize, at: *mut Block) -> *mut Block {
    // SAFETY: per the caller.
    unsafe { decode_fresh(page, raw, at).0 }
}

/// [`decode_next`], and whether `at` is fresh (see [`FRESH`]).
///
/// # Safety
/// As for [`decode_next`].
#[inline(always)]
pub unsafe fn decode_fresh(page: *const Page, raw: usize, at: *mut Block) -> (*mut Block, bool) {
    if !ON {
        return (raw as *mut Block, false);
    }
    let flagged = decode_raw(page, raw, at);
    let fresh = FRESH == 1 && flagged & 1 == 1;
    let next = flagged & !FRESH;
    // SAFETY: `page` is valid per the caller.
    let ok =
        next == 0 || unsafe { page::is_block_start(page, next.wrapping_sub((*page).page_start as usize)) };
    if ok {
        (next as *mut Block, fresh)
    } else {
        (corrupted(page, at), false)
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
        let target = segment::page_of(seg, next as *const u8);
        if page::is_block_start(target, next.wrapping_sub((*target).page_start as usize)) {
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
