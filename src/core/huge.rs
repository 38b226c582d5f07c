//! Huge objects (over 2 MiB, or aligned beyond what pages give): each gets a
//! segment of its own, sized to fit.
//!
//! ```text
//! align <= 4 MiB:  seg [header | pad to align | block ...............]
//! align  > 4 MiB:  seg [header | ... ] block at seg + 4 MiB (aligned)
//! ```
//!
//! Segments of up to an arena's size come from the arenas, so a freed huge
//! block's memory is reused by the next big request of any size without
//! new page faults; larger or over-aligned ones are mapped on their own.
//!
//! The guard build guards the header's guard and the padding below the
//! block, and the segment's last OS page (with `seal-freed-large`, all of
//! it past the block's last OS page): `harden::open_block`. A freed huge
//! block's segment goes back to its arena as it is, to be purged after
//! the arena's delay, with the record of where its guards are (the next
//! user of the span changes only the guards that differ: none, for a
//! huge block of any size in a span of as many slices), or with
//! `seal-freed-large` sealed at once, its memory zeroed when a new block
//! takes it with zero-on-free.

use core::ptr;

use crate::core::heap::Heap;
use crate::core::segment;
use crate::meta::constants::{MAX_ALLOC, SEGMENT_SIZE, WORD};
use core::sync::atomic::Ordering;

use crate::meta::guards::{Guards, Prior};
use crate::meta::page::Page;
use crate::meta::segment::{page_at, Segment};
use crate::meta::segment_map;
use crate::{harden, os, stats};

fn round_up(x: usize, to: usize) -> usize {
    (x + to - 1) & !(to - 1)
}

/// A huge block for a request of `size` bytes by `heap`'s thread: room
/// for the hardened build's canary, which is armed, and the allocation
/// counted. The one huge path of malloc and of the aligned allocations.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn alloc_for(heap: *mut Heap, size: usize, align: usize, zero: bool) -> *mut u8 {
    let p = alloc(harden::huge_padded(size), align, zero);
    if !p.is_null() {
        // SAFETY: `heap` is this thread's initialised heap (this fn's
        // contract); `p` a huge block of `huge_padded(size)` bytes, just
        // made and not yet handed out.
        unsafe {
            stats::bump(&(*heap).counters.mallocs);
            harden::huge_taken(p, size);
        }
    }
    p
}

/// Allocates a huge block of `size` bytes aligned to `align` (0 or a power
/// of two), zeroed if `zero`. Null when out of memory or impossible.
pub fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size > MAX_ALLOC || align > MAX_ALLOC / 2 {
        return ptr::null_mut();
    }
    let info = segment::info_size();
    // The hardened build keeps at least one OS page after the block, as a
    // guard.
    let tail = harden::header_guard();
    let (seg, total, offset, is_zero, in_arena, prior, carried, header) = if align <= SEGMENT_SIZE {
        let offset = round_up(info, align.max(WORD));
        let total = round_up(offset + size.max(1) + tail, SEGMENT_SIZE);
        let Some(fresh) = segment::os_alloc(total, false, 0) else {
            return ptr::null_mut();
        };
        (
            fresh.seg,
            total,
            offset,
            fresh.zero,
            fresh.in_arena,
            fresh.prior,
            fresh.committed,
            fresh.header_guarded,
        )
    } else {
        // The block must be `align`-aligned and its segment segment-aligned:
        // put the block exactly one segment past the header.
        let offset = SEGMENT_SIZE;
        let total = round_up(offset + size.max(1) + tail, os::page_size());
        let raw = os::map_aligned_offset(total, align, offset);
        if raw.is_null() {
            return raw;
        }
        stats::RESERVED.increase(total);
        stats::SEGMENTS.increase(1);
        // SAFETY: the mapping was just made and is ours alone.
        // (Fresh memory has nothing to open: never None.)
        let header = unsafe { harden::segment_taken(raw, total, info, Prior::Open, false) }.unwrap_or(false);
        // SAFETY: the mapping was just made.
        unsafe { os::advise_huge_pages(raw, total) };
        let seg = raw as *mut Segment;
        segment_map::insert(seg);
        (seg, total, offset, true, false, Prior::Open, 0, header)
    };
    // Usable up to the end of the block's last OS page; past it, in the
    // hardened build, the guard.
    let block_size = if harden::HUGE_BLOCKS_GUARDED {
        round_up(offset + size.max(1), os::page_size()) - offset
    } else {
        total - offset
    };
    // SAFETY: the segment is mapped, ours alone, and holds its header
    // and `offset + block_size <= total` bytes.
    unsafe {
        segment::init_huge(seg, total, offset, block_size);
        (*seg).in_arena = in_arena;
    }
    // SAFETY: `offset < total`: the block starts inside the segment.
    let block = unsafe { (seg as *mut u8).add(offset) };
    // SAFETY: the area past the header is the segment's, ours alone, and
    // holds the block only.
    let opened = unsafe {
        harden::open_block(
            seg as usize,
            seg as usize + info,
            block as usize,
            block as usize + size.max(1),
            seg as usize + total,
            prior,
        )
    };
    let Some((open, after, exact)) = opened else {
        // The block's own pages could not be opened (the process is at
        // its mapping limit; only a span from an arena, sealed or
        // guarded by its last user, has any to open): the span goes back,
        // its protection unknown, and this allocation fails.
        // SAFETY: the segment came from its arena just now (`os_alloc`),
        // and nothing uses it: its block was never handed out.
        unsafe { segment::os_give_back(seg, total, carried) };
        return ptr::null_mut();
    };
    // Where its guards are, if each was made: the next user of the
    // span, once the block is freed, then changes only what it needs.
    if exact && header {
        // SAFETY: the header was just set up, and nobody else uses it yet.
        unsafe { keep_guards(seg, after.0 - seg as usize, after.1 - seg as usize) };
    }
    // The header and what is open past it. A span of sealed slices
    // may have the headers of the segments that used them open in its
    // later slices too: counted, on the safe side.
    let mut committed = info + open;
    if prior == Prior::Sealed {
        committed += (total / SEGMENT_SIZE).saturating_sub(1) * info;
    }
    // SAFETY: the segment was just set up, and nobody else uses it yet.
    unsafe { stats::commit_start(seg, carried, committed) };
    stats::HUGE.increase(1);
    stats::HUGE_BYTES.increase(total - offset);
    stats::IN_USE.increase(total - offset);
    if !is_zero {
        if harden::reused_large_zeroed() {
            // Reused arena memory may hold an old owner's bytes, which
            // zero-on-free with the seals never shows a new owner.
            // SAFETY: the block, page-aligned, is ours and nobody's data.
            unsafe { harden::zero_reused(block, block_size) };
        } else if zero {
            // SAFETY: the block is ours, open for at least `size` bytes.
            unsafe { ptr::write_bytes(block, 0, size) };
        }
    }
    block
}

/// Grows the huge block `p` of `seg` in place to hold `size` bytes, if its
/// segment has room for that and the guard page at its end. Only the guard
/// build needs this: its huge blocks end at the first page boundary after
/// the request, where the plain build's run to the end of their segment
/// (which `realloc` uses in place), so without it every growth of a big
/// vector moved it: a new segment, a copy of everything, and a seal.
/// False when the block must move.
///
/// # Safety
/// `p` must be the live block of the huge segment `seg`, owned by the
/// caller, and `page` its descriptor.
pub unsafe fn grow_in_place(seg: *mut Segment, page: *mut Page, p: *mut u8, size: usize) -> bool {
    if !harden::HUGE_BLOCKS_GUARDED {
        return false;
    }
    let ps = os::page_size();
    // The segment keeps its last OS page, at least, as the guard.
    // SAFETY: `seg` is the live huge segment of the caller's block and
    // `page` its descriptor (this fn's contract): its geometry is ours.
    let (offset, old, room) = unsafe { ((*seg).block_offset, (*page).block_size, (*seg).size) };
    let Some(want) = offset.checked_add(harden::huge_padded(size)) else {
        return false;
    };
    if want > room {
        return false;
    }
    let new = round_up(want, ps) - offset;
    if new <= old || offset + new + ps > room {
        return false;
    }
    // SAFETY: `p + old`, the end of the caller's block, lies inside its
    // segment (`offset + old < offset + new < size`).
    let at = unsafe { p.add(old) };
    // SAFETY: the header of the caller's live huge segment, whose guard
    // record only its block's owner writes.
    let recorded = unsafe { (*seg).kept_guards.load(Ordering::Relaxed) } != 0;
    // SAFETY: `[at, at + new - old)`, page-aligned, lies in the caller's
    // segment past its block, from its end, and is about to be the
    // block's; a page follows it (`offset + new + ps <= room`).
    let (grown, tail) = unsafe { harden::grow_block(at, new - old, seg as usize + room, recorded) };
    if grown == harden::Grown::Refused {
        return false;
    }
    // With every guard on record and the guard after the block at the
    // span's end (`harden::open_block`), what the block grew over was
    // counted open already: the same count. Otherwise counted whole,
    // which where it was open already is an over-count, the safe side.
    if !(recorded && grown == harden::Grown::Guarded && harden::huge_guard_at_span_end()) {
        // SAFETY: the segment lives while the caller owns its block.
        unsafe { stats::commit_more(seg, new - old) };
    }
    if harden::reused_large_zeroed() {
        // The segment's memory past the block may hold an old owner's
        // bytes: it was sealed, not wiped.
        // SAFETY: opened just now, page-aligned, the caller's, holding
        // nobody's data.
        unsafe { harden::zero_reused(at, new - old) };
    }
    // SAFETY: the descriptor of the caller's huge block, which only its
    // owner resizes.
    unsafe { (*page).block_size = new };
    if recorded {
        if grown == harden::Grown::Guarded {
            // SAFETY: as just above.
            unsafe { keep_guards(seg, tail.0 - seg as usize, tail.1 - seg as usize) };
        } else {
            // The guard after the block is missing: no record, so the
            // span's next user removes every guard it may hold.
            // SAFETY: as just above.
            unsafe { (*seg).kept_guards.store(0, Ordering::Relaxed) };
        }
    }
    true
}

/// Records where the guards of the huge segment `seg` are: from the
/// header's guard up to its block (the padding an alignment puts below
/// the block is guarded too), and from `tail` to `tail_end` past it
/// (offsets from the segment's start; see `meta::guards::Guards::huge`),
/// for the arena to keep when it is released. Where the record cannot hold
/// them, none is kept, and the release removes guards over the whole
/// segment.
///
/// # Safety
/// `seg` must be a huge segment whose guards are all in place, its header
/// set up (its block's offset too) and written only by the caller.
unsafe fn keep_guards(seg: *mut Segment, tail: usize, tail_end: usize) {
    let info = segment::info_size();
    // SAFETY: the header is set up and the caller's (this fn's contract).
    let offset = unsafe { (*seg).block_offset };
    let guards = Guards::huge((info - harden::header_guard(), offset), (tail, tail_end));
    let mask = guards.map_or(0, |g| g.mask);
    // SAFETY: the header is set up and the caller's to write (this fn's
    // contract).
    unsafe {
        (*seg).guard_layout = harden::huge_layout();
        (*seg).kept_guards.store(mask, Ordering::Relaxed);
    }
}

/// Frees the huge segment `seg` (its block was just freed, from any thread).
///
/// # Safety
/// `seg` must be a live huge segment whose block is being freed once.
pub unsafe fn free(seg: *mut Segment) {
    // SAFETY: `seg` is a live huge segment (this fn's contract).
    let bytes = unsafe { (*seg).size - (*seg).block_offset };
    stats::HUGE.decrease(1);
    stats::HUGE_BYTES.decrease(bytes);
    stats::IN_USE.decrease(bytes);
    // Resetting the page first makes any later free of the block fail its
    // check while the memory sits in an arena.
    // SAFETY: its one block is being freed once (this fn's contract), so
    // nobody else uses the segment: ours to reset and give back.
    unsafe {
        crate::core::page::reset(page_at(seg, 0));
        segment::os_free(seg);
    }
}
