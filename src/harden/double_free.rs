//! `double-free`: one bit per 8-byte granule of a segment says whether a
//! block starts there and is live. malloc sets the bit, free clears it; a
//! free that finds it clear is a double free (from any thread, however much
//! happened in between), and a block popped off a free list with its bit
//! already set means the list was forged. The bitmap sits out of line, in
//! the segment header (64 KiB per 4 MiB segment), so overwriting a freed
//! block cannot reach it.
//!
//! A second bitmap remembers where a block was ever freed, and is never
//! cleared by page reuse: a pointer that is no live block's start now but
//! was freed before is a double free too, even after its page was freed or
//! reused for another size (where the live bits alone would only say
//! "invalid pointer").
//!
//! Bits change with atomic read-modify-writes: a remote free clears a bit
//! in a word whose other bits the owner may be setting.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::meta::constants::{SEGMENT_MASK, SEGMENT_SIZE};

pub const ON: bool = cfg!(feature = "double-free");

const GRANULE_SHIFT: usize = 3;
/// Bytes of one bitmap (one bit per granule of a segment).
const ONE_MAP: usize = SEGMENT_SIZE >> GRANULE_SHIFT >> 3;
/// Bytes of bitmaps per segment, live then freed (0 when the defence is off).
pub const BITMAP_BYTES: usize = if ON { 2 * ONE_MAP } else { 0 };

/// Where a block's bits lie: a word of the live bitmap and the bit in it;
/// the same word of the "ever freed" bitmap lies [`ONE_MAP`] bytes on.
/// Making one is arithmetic only; using its words needs the segment.
#[derive(Clone, Copy)]
struct Bits {
    live: *const AtomicU64,
    bit: u64,
}

impl Bits {
    /// The bits of the block that starts at `p`, past its segment's first
    /// byte.
    #[inline(always)]
    fn of(p: usize) -> Bits {
        let seg = (p - 1) & !SEGMENT_MASK;
        let granule = (p - seg) >> GRANULE_SHIFT;
        let word = (seg + crate::meta::segment::BITMAP_OFFSET) as *const AtomicU64;
        Bits {
            live: word.wrapping_add(granule / 64),
            bit: 1u64 << (granule % 64),
        }
    }

    /// The word of the live bitmap holding the block's bit.
    ///
    /// # Safety
    /// The block must lie in the first [`SEGMENT_SIZE`] bytes of a segment
    /// with the bitmaps, live while the reference is used.
    #[inline(always)]
    unsafe fn live<'a>(self) -> &'a AtomicU64 {
        // SAFETY: the word is in the live bitmap of the block's live segment
        // (this fn's contract); bitmap words are only accessed atomically.
        unsafe { &*self.live }
    }

    /// The word of the "ever freed" bitmap holding the block's bit.
    ///
    /// # Safety
    /// As for [`Bits::live`].
    #[inline(always)]
    unsafe fn freed<'a>(self) -> &'a AtomicU64 {
        // SAFETY: the second bitmap follows the first in the segment
        // header, of the same layout (this fn's contract, as `live`'s).
        unsafe { &*self.live.byte_add(ONE_MAP) }
    }
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
    let b = Bits::of(p as usize);
    // SAFETY: `p` is a block start in a live segment with the bitmaps
    // (this fn's contract).
    unsafe { b.live() }.fetch_or(b.bit, Ordering::Relaxed) & b.bit == 0
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
    let b = Bits::of(p as usize);
    // SAFETY: `p` is a block start in a live segment with the bitmaps
    // (this fn's contract).
    let (live, freed) = unsafe { (b.live(), b.freed()) };
    // "Ever freed" bits are only ever set: most frees find theirs set
    // already, and a plain load spares them a locked write.
    if freed.load(Ordering::Relaxed) & b.bit == 0 {
        freed.fetch_or(b.bit, Ordering::Relaxed);
    }
    live.fetch_and(!b.bit, Ordering::Relaxed) & b.bit != 0
}

/// As [`mark_free`], for a large or huge block: its "ever freed" bit is
/// written without being read first. Such frees are rare, and their bits
/// often lie on an OS page of the bitmap nothing touched yet (a fresh
/// segment's is not cleared): a read first would map the kernel's shared
/// zero page, and the write after it fault again.
///
/// # Safety
/// As for [`mark_live`].
#[inline(always)]
pub unsafe fn mark_free_big(p: *mut u8) -> bool {
    if !ON {
        return true;
    }
    let b = Bits::of(p as usize);
    // SAFETY: `p` is a block start in a live segment with the bitmaps
    // (this fn's contract).
    let (live, freed) = unsafe { (b.live(), b.freed()) };
    freed.fetch_or(b.bit, Ordering::Relaxed);
    live.fetch_and(!b.bit, Ordering::Relaxed) & b.bit != 0
}

/// Touches for writing the word of `p`'s "ever freed" bit, which its
/// free writes: a block handed out from fresh memory is faulting in its
/// OS pages anyway, and its free then faults no more.
///
/// # Safety
/// As for [`mark_live`].
#[inline(always)]
pub unsafe fn touch_freed(p: *mut u8) {
    if !ON {
        return;
    }
    let b = Bits::of(p as usize);
    // SAFETY: `p` is a block start in a live segment with the bitmaps
    // (this fn's contract), so its word is a valid, aligned, writable one.
    unsafe { crate::os::touch_for_write(b.freed().as_ptr()) };
}

/// True if a block that started at `p` was freed at some time (false when
/// the defence is off).
///
/// # Safety
/// `p` must lie in a segment with the bitmaps, past its first byte.
#[inline]
pub unsafe fn was_freed(p: *const u8) -> bool {
    if !ON {
        return false;
    }
    let seg = (p as usize - 1) & !SEGMENT_MASK;
    if p as usize - seg >= SEGMENT_SIZE {
        // Past the first segment of a huge object: no bitmap covers it.
        return false;
    }
    let b = Bits::of(p as usize);
    // SAFETY: `p` lies past the first byte of a segment with the bitmaps (this
    // fn's contract), and in its first `SEGMENT_SIZE` bytes (checked above).
    unsafe { b.freed() }.load(Ordering::Relaxed) & b.bit != 0
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
    let b = Bits::of(p as usize);
    // SAFETY: `p` is a block start in a live segment with the bitmaps
    // (this fn's contract).
    unsafe { b.live() }.load(Ordering::Relaxed) & b.bit != 0
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
    let base = (seg + crate::meta::segment::BITMAP_OFFSET) as *const AtomicU64;
    let first = (start - seg) >> GRANULE_SHIFT;
    let last = (end - seg) >> GRANULE_SHIFT;
    let words = first / 64..last.div_ceil(64);
    for w in words.clone() {
        // SAFETY: the widened range's words hold the live bits of a page area of a
        // live segment with the bitmaps (this fn's contract).
        unsafe { (*base.add(w)).store(0, Ordering::Relaxed) };
    }
    // The "ever freed" bits are read before they are first written (at
    // each hand-out, see `zero::fresh`): where a purge emptied their OS
    // page, see `crate::os::touch_for_write`. A write that changes nothing
    // comes first instead, on every OS page the bits span: 1 KiB
    // for a 64 KiB page, 8 KiB for a 512 KiB one, so at most three 4 KiB
    // pages, each holding one of these words.
    for w in [words.start, words.end - 1, (words.start + words.end) / 2] {
        // SAFETY: `w` is in `words` (not empty: `start < end`); its twin in the
        // second bitmap, of the same layout, is in the live segment's header.
        unsafe { crate::os::touch_for_write(base.add(w).byte_add(ONE_MAP) as *mut u64) };
    }
}
