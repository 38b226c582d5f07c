//! `guard-pages`: inaccessible pages where an overflow or a dangling
//! pointer would otherwise land on live data.
//!
//! ```text
//! small/medium segment:
//! | header | G | page 0 blocks ... | G | page 1 blocks ... | G | ...
//! large (one block per segment) and huge:
//! | header | G | block | G ... (rest of the segment) ...   |
//! ```
//! - one guard page after the header (its descriptors and bitmaps);
//! - the last OS page of every small and medium page area, so a linear
//!   overflow off the end of the area's last block faults (blocks before it
//!   overflow into a neighbour, which the canary catches);
//! - large blocks get a segment each in this build, so each has a guard on
//!   both sides, as huge blocks do;
//! - when a segment is released its memory past the header becomes
//!   inaccessible at once, so a freed large or huge block faults on access
//!   (the header stays readable: the double-free check reads it);
//! - arenas are reserved at random addresses, and segments taken from
//!   random free slots, so layouts differ from run to run beyond ASLR.
//!
//! Every guard is an `mprotect` and splits a mapping: see SECURITY.md for
//! the count against `vm.max_map_count`.

use super::random;
use crate::os;
use crate::page::Page;

pub const ON: bool = cfg!(feature = "guard-pages");

/// Bytes of the guard after a segment header (0 when off).
#[inline]
pub fn header_guard() -> usize {
    if ON {
        os::page_size()
    } else {
        0
    }
}

/// Bytes kept as a guard at the end of each small or medium page area.
#[inline]
pub fn page_guard() -> usize {
    header_guard()
}

/// A segment's memory of `size` bytes with an `info`-byte header (its guard
/// included) was just taken. `reused`: it may still carry guards of an
/// earlier use, or the inaccessibility of its release.
///
/// # Safety
/// `[seg, seg + size)` must be segment memory nobody else uses.
pub unsafe fn segment_taken(seg: *mut u8, size: usize, info: usize, reused: bool) {
    if !ON {
        return;
    }
    let ps = os::page_size();
    // SAFETY: per the caller; the guard lies inside the header area.
    unsafe {
        if reused {
            os::protect(seg, size, true);
        }
        os::protect(seg.add(info - ps), ps, false);
    }
}

/// A segment is released: its memory past the header becomes inaccessible.
///
/// # Safety
/// Nothing may use the segment's blocks any more.
pub unsafe fn segment_released(seg: *mut u8, size: usize, info: usize) {
    if ON && size > info {
        // SAFETY: per the caller.
        unsafe { os::protect(seg.add(info), size - info, false) };
    }
}

/// A small or medium page slot ending at `area_end` comes into use: its
/// last OS page becomes a guard (once per slot and segment use).
///
/// # Safety
/// `page` must be the slot's descriptor, owned by the caller, and the last
/// OS page of its area hold no block.
pub unsafe fn page_slot(page: *mut Page, area_end: usize) {
    // SAFETY: per the caller.
    unsafe {
        if ON && !(*page).guarded {
            let ps = os::page_size();
            os::protect((area_end - ps) as *mut u8, ps, false);
            (*page).guarded = true;
        }
    }
}

/// A single block spans `[start, end)` of an area `[area_start, area_end)`:
/// everything else in the area, rounded to OS pages, becomes a guard.
///
/// # Safety
/// The area must be segment memory of the caller's, holding no other block.
pub unsafe fn around_block(area_start: usize, start: usize, end: usize, area_end: usize) {
    if !ON {
        return;
    }
    let ps = os::page_size();
    let before = start & !(ps - 1);
    let after = (end + ps - 1) & !(ps - 1);
    // SAFETY: per the caller; both ranges hold no block.
    unsafe {
        if before > area_start {
            os::protect(area_start as *mut u8, before - area_start, false);
        }
        if after < area_end {
            os::protect(after as *mut u8, area_end - after, false);
        }
    }
}

/// Where to ask the kernel to put a new arena: a random, `align`-aligned
/// address between 1 TiB and 64 TiB (0, no preference, when off).
pub fn arena_hint(align: usize) -> usize {
    if !ON {
        return 0;
    }
    let span = (63usize << 40) / align;
    (1usize << 40) + random::shared_next() as usize % span * align
}

/// Which of `n` candidate slots to take (the first when off).
pub fn pick(n: usize) -> usize {
    if ON && n > 1 {
        random::shared_next() as usize % n
    } else {
        0
    }
}
