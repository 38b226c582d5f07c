//! `double-free`: one bit per 8-byte granule of a segment says whether a
//! block starts there and is live. malloc sets the bit, free clears it; a
//! free that finds it clear is a double free (from any thread, however much
//! happened in between), and a block popped off a free list with its bit
//! already set means the list was forged. The bitmap sits out of line, in
//! the segment header (64 KiB per 4 MiB segment), so overwriting a freed
//! block cannot reach it.
//!
//! Bits change with atomic read-modify-writes: a remote free clears a bit
//! in a word whose other bits the owner may be setting.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::constants::{SEGMENT_MASK, SEGMENT_SIZE};

pub const ON: bool = cfg!(feature = "double-free");

const GRANULE_SHIFT: usize = 3;
/// Bytes of bitmap per segment (0 when the defence is off).
pub const BITMAP_BYTES: usize = if ON { SEGMENT_SIZE >> GRANULE_SHIFT >> 3 } else { 0 };

/// Offset of the bitmap in the segment header: right after the descriptor
/// array, set by `segment::info_size`'s layout.
#[inline(always)]
fn bitmap_offset() -> usize {
    core::mem::size_of::<crate::segment::Segment>().next_multiple_of(64)
}

#[inline(always)]
fn word_and_bit(p: usize) -> (*const AtomicU64, u64) {
    let seg = (p - 1) & !SEGMENT_MASK;
    let granule = (p - seg) >> GRANULE_SHIFT;
    let word = (seg + bitmap_offset()) as *const AtomicU64;
    // SAFETY (for callers): the word lies inside the bitmap of `p`'s segment.
    (word.wrapping_add(granule / 64), 1u64 << (granule % 64))
}

/// Marks the block at `p` live; false if it already was (a forged list).
///
/// # Safety
/// `p` must be a block start inside a live segment with the bitmap.
#[inline(always)]
pub unsafe fn mark_live(p: *mut u8) -> bool {
    if !ON {
        return true;
    }
    let (word, bit) = word_and_bit(p as usize);
    // SAFETY: per the caller, the word is inside the segment's bitmap.
    unsafe { (*word).fetch_or(bit, Ordering::Relaxed) & bit == 0 }
}

/// Marks the block at `p` free; false if it was not live (a double free).
///
/// # Safety
/// As for [`mark_live`].
#[inline(always)]
pub unsafe fn mark_free(p: *mut u8) -> bool {
    if !ON {
        return true;
    }
    let (word, bit) = word_and_bit(p as usize);
    // SAFETY: per the caller, the word is inside the segment's bitmap.
    unsafe { (*word).fetch_and(!bit, Ordering::Relaxed) & bit != 0 }
}

/// True if the block at `p` is live (always true when the defence is off).
///
/// # Safety
/// As for [`mark_live`].
#[inline(always)]
pub unsafe fn is_live(p: *const u8) -> bool {
    if !ON {
        return true;
    }
    let (word, bit) = word_and_bit(p as usize);
    // SAFETY: per the caller, the word is inside the segment's bitmap.
    unsafe { (*word).load(Ordering::Relaxed) & bit != 0 }
}

/// Clears the bits of the blocks in `[start, end)`, whose memory may carry
/// bits of a segment that used it before. The range is widened to whole
/// bitmap words (512 bytes), which stays inside the page's area: page areas
/// begin and end on OS-page boundaries.
///
/// # Safety
/// The range must lie in one page area of a live segment with the bitmap,
/// holding no live block.
pub unsafe fn clear_range(start: usize, end: usize) {
    if !ON || start >= end {
        return;
    }
    let seg = start & !SEGMENT_MASK;
    let base = (seg + bitmap_offset()) as *const AtomicU64;
    let first = (start - seg) >> GRANULE_SHIFT;
    let last = (end - seg) >> GRANULE_SHIFT;
    for w in first / 64..last.div_ceil(64) {
        // SAFETY: per the caller, these words are the page's bitmap.
        unsafe { (*base.add(w)).store(0, Ordering::Relaxed) };
    }
}
