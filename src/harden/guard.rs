//! `guard-pages`: inaccessible pages where an overflow or a dangling
//! pointer would otherwise land on live data.
//!
//! ```text
//! small/medium segment:
//! | header | G | page 0 blocks ... | G | page 1 blocks ... | G | ...
//! large segment (slots of one size class, shared: `large.rs`; each slot
//! ends in a guard page, and the slack before the first slot and after the
//! last is guarded; with `seal-freed-large` each block is open only as far
//! as its owner asked, the rest sealed, S, and a free slot sealed whole):
//! | header | G | GG | block ..... | G | block ..... | G | ... | GGGG |
//! | header | G | GG | block .. SSS G | SSSSSSSSSSSS G | ...   (sealing)
//! huge (one block per segment; the guard after it is the segment's last
//! page, what lies between open, or with `seal-freed-large` guarded too):
//! | header | G | block | open ............................. | G |
//! | header | G | block | SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS | (sealing)
//! ```
//! - one guard page after the header (its descriptors and bitmaps);
//! - the last OS page of every small and medium page area, so a linear
//!   overflow off the end of the area's last block faults (blocks before
//!   it overflow into a neighbour, which the canary catches);
//! - the last OS page of every large block's slot (`BLOCK_GUARD`, which
//!   `harden::padded` adds to large requests), made once with its segment,
//!   and the slack around the slots, so each block has a guard below it
//!   too; with `seal-freed-large`, every large block past what its owner
//!   asked for, rounded up to an OS page, and all of it once it is freed
//!   (`harden::large`);
//! - the last OS page of a huge block's segment (with `seal-freed-large`
//!   everything past the request's last OS page), so a span reused by a
//!   block of another size changes no guard; the canary after the request
//!   catches an overflow into what lies between;
//! - with `seal-freed-large`, when a large or huge segment is released its
//!   memory past the header becomes inaccessible at once, so its freed
//!   blocks fault on access (the header stays readable: the double-free
//!   check reads it); without it the memory is left as it is, guards and
//!   all, and purged after the arena's purge delay, as in the plain build;
//! - a small or medium segment is released open instead, its page guards
//!   in place (its freed blocks were wiped already with `zero-on-free`),
//!   and the arena hands that slice to the next segment of the same kind
//!   first, so threads that exit and start cost no protection changes
//!   (each use of a slice cost a seal, two opens and a guard per page
//!   before, each seal a TLB shootdown across cores);
//! - arenas are reserved at random addresses, and segments taken from
//!   random free slots, so layouts differ from run to run beyond ASLR.
//!
//! Guards are page-table markers where the kernel has them, else
//! `mprotect` within a mapping budget (`os::guard`): see SECURITY.md.

use super::random;
use crate::meta::guards::Held;
pub use crate::meta::guards::Prior;
use crate::meta::page::Page;
use crate::meta::segment::{Kind, Segment};
use crate::os;

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

/// Bytes of the guard that ends each large block. A constant, not the OS
/// page size, because size classes are fixed at compile time: with larger
/// OS pages the guard is not page-aligned, the kernel refuses it, and the
/// block goes without (counted as skipped).
pub const BLOCK_GUARD: usize = if ON { 4096 } else { 0 };

/// Bytes kept as a guard at the end of each small or medium page area.
#[inline]
pub fn page_guard() -> usize {
    header_guard()
}

/// A segment's memory of `size` bytes with an `info`-byte header (its guard
/// included) was just taken, protected as `prior` says. With `whole`, all
/// of it past the header becomes accessible now (small, medium and large
/// segments, whose other guards come later); else only the header, and
/// [`open_block`] opens the block's pages (with [`Prior::Ranges`], it does
/// all of it). Returns whether the header's guard is in place, or None if
/// what must become accessible could not be opened (near the mapping
/// limit, an `mprotect` that would split a seal fails): the caller must
/// not use the memory.
///
/// # Safety
/// `[seg, seg + size)` must be segment memory nobody else uses.
pub unsafe fn segment_taken(
    seg: *mut u8,
    size: usize,
    info: usize,
    prior: Prior,
    whole: bool,
) -> Option<bool> {
    if !ON {
        return Some(false);
    }
    let ps = os::page_size();
    match prior {
        Prior::Open => {
            // The header's last page is its guard: it holds nothing.
            // SAFETY: it lies in `[seg, seg + size)`, segment memory nobody
            // else uses (this fn's contract).
            Some(unsafe { os::guard(seg.add(info - ps), ps) }.made())
        }
        Prior::Mixed => {
            // SAFETY: `[seg, seg + size)` is segment memory nobody else
            // uses (this fn's contract); the header's guard holds nothing.
            unsafe {
                if !os::unguard(seg, size) {
                    return None;
                }
                Some(os::guard(seg.add(info - ps), ps).made())
            }
        }
        // As the last segment of this layout left it: nothing to do.
        Prior::Guarded => Some(true),
        // Only the guards held that a new segment does not keep come off,
        // and the header's is made if it was not there; for a huge
        // block, only those over its header here, the rest when its
        // block is opened.
        Prior::Ranges(held) => {
            let header = [(info - ps, info)];
            let (upto, need) = if whole {
                (size, &header[..])
            } else {
                (info - ps, &[][..])
            };
            // SAFETY: `[seg, seg + size)` is segment memory nobody else
            // uses (this fn's contract), and `held` names ranges of it.
            unsafe { reconcile(seg as usize, &held, 0, upto, need) }
        }
        // Everything past the header's guard is sealed already; the
        // header itself may be too (a slice from the middle of a
        // released huge span), so it is opened either way.
        Prior::Sealed => {
            // SAFETY: the header before its guard lies in the segment
            // memory nobody else uses (this fn's contract).
            if !unsafe { os::unguard(seg, info - ps) } {
                return None;
            }
            // SAFETY: the memory past the header, to `seg + size`, is the
            // same segment memory.
            if whole && !unsafe { os::unguard(seg.add(info), size - info) } {
                return None;
            }
            Some(true)
        }
    }
}

/// Makes `[base + from, base + to)` of a span hold the guards `need`
/// names (offsets from `base`, ascending, disjoint, page-aligned, within
/// it) and no other, where the span holds `held` now: only the held
/// ranges no longer needed come off, and only the needed ones not held are
/// made, so no page-table walk covers memory whose protection is right
/// already. Some(true) if every needed guard is in place; None if a held
/// range could not come off (the memory must not be used).
///
/// # Safety
/// `[base + from, base + to)` must be segment memory of the caller's that
/// nobody else uses, and `held` name all its guards.
unsafe fn reconcile(
    base: usize,
    held: &Held,
    from: usize,
    to: usize,
    need: &[(usize, usize)],
) -> Option<bool> {
    let mut opened = true;
    for (a, b) in held.ranges() {
        let r = (a.max(from), b.min(to));
        if r.0 >= r.1 {
            continue;
        }
        minus(r, need.iter().copied(), |a, b| {
            // SAFETY: part of a held guard range of the caller's memory
            // (this fn's contract), no longer a guard.
            opened &= unsafe { os::unguard((base + a) as *mut u8, b - a) };
        });
    }
    if !opened {
        return None;
    }
    let mut made = true;
    for &r in need {
        minus(r, held.ranges(), |a, b| {
            // SAFETY: part of a needed range of the caller's memory (this
            // fn's contract), which holds nothing anyone needs.
            made &= unsafe { os::guard((base + a) as *mut u8, b - a) }.made();
        });
    }
    Some(made)
}

/// Calls `f` with each piece of `r` that none of `others` (ascending,
/// disjoint) covers, in order.
fn minus(r: (usize, usize), others: impl Iterator<Item = (usize, usize)>, mut f: impl FnMut(usize, usize)) {
    let mut at = r.0;
    for (a, b) in others {
        if b <= at || a >= r.1 {
            continue;
        }
        if a > at {
            f(at, a);
        }
        at = at.max(b);
    }
    if at < r.1 {
        f(at, r.1);
    }
}

/// What [`segment_released`] did to a segment's memory past its header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Released {
    /// Nothing: it is as its blocks left it.
    Open,
    /// Inaccessible (the arena then remembers the span as sealed).
    Sealed,
    /// Purged, as no seal could be made.
    Dropped,
}

/// A segment is released: its memory past the header becomes inaccessible
/// (a large or huge segment's only with `seal-freed-large`: without it,
/// it stays as its blocks left it, to be purged after the arena's delay).
/// If no guard could be made (the `mprotect` fallback's budget is spent),
/// the memory is dropped instead in the zero-on-free build, which relies
/// on the seal for huge blocks (they are not wiped at free): it then reads
/// as zero. Dropped, not written: it may hold guards that stayed in place.
///
/// # Safety
/// `seg` must be a segment's header, still set up, and nothing may use
/// the segment's blocks any more.
pub unsafe fn segment_released(seg: *mut u8, size: usize, info: usize) -> Released {
    if !ON || size <= info {
        return Released::Open;
    }
    // SAFETY: `seg` is a set-up header (this fn's contract): its kind is
    // readable.
    let kind = unsafe { (*(seg as *const Segment)).kind };
    if matches!(kind, Kind::Large | Kind::Huge) && !super::large::SEAL {
        return Released::Open;
    }
    // SAFETY: the memory past the header is the segment's (`size > info`),
    // and nothing uses its blocks any more (this fn's contract).
    if unsafe { os::seal(seg.add(info), size - info) }.made() {
        return Released::Sealed;
    }
    if super::zero::ON {
        // SAFETY: as for the seal: the segment's memory past its header,
        // whose blocks nothing uses any more (this fn's contract).
        unsafe { os::purge(seg.add(info), size - info) };
        return Released::Dropped;
    }
    Released::Open
}

/// A small or medium page slot ending at `area_end` comes into use: its
/// last OS page becomes a guard (once per slot and segment use).
///
/// # Safety
/// `page` must be the slot's descriptor, owned by the caller, and the last
/// OS page of its area hold no block.
pub unsafe fn page_slot(page: *mut Page, area_end: usize) {
    // SAFETY: `page` is the slot's descriptor, the caller's (this fn's
    // contract).
    if ON && !unsafe { (*page).guarded } {
        let ps = os::page_size();
        // SAFETY: the area's last OS page holds no block (this fn's
        // contract): nothing needs its contents or touches it.
        let made = unsafe { os::guard((area_end - ps) as *mut u8, ps) }.made();
        // SAFETY: `page` is the slot's descriptor, the caller's (this fn's
        // contract).
        unsafe { (*page).guarded = made };
    }
}

/// The guard after a huge block whose last OS page ends at `after`, in a
/// segment ending at `area_end`: the segment's last OS page, or with
/// `seal-freed-large` everything from `after` to the segment's end.
/// Without the seals the guard stays where it is whatever the block's
/// size, so a span reused by a block of another size (or a block grown in
/// place) changes no guard at all: a guard that followed the request's
/// last page moved at every such reuse, a marker removed and one
/// installed, each a walk of the page tables under the process's mapping
/// lock, in the huge `malloc`. What lies between the block and the guard
/// is open and holds nothing: a linear overflow passes the block's canary
/// first, which reports it at free, and faults at the span's end. With
/// the seals all of it is guarded, as what lies there may be a freed
/// block's, which that build never leaves readable.
#[inline]
fn tail_guard(after: usize, area_end: usize) -> (usize, usize) {
    if super::large::SEAL {
        (after, area_end)
    } else {
        ((area_end - os::page_size()).max(after), area_end)
    }
}

/// A single block spans `[start, end)` of an area `[area_start, area_end)`
/// of the segment at `seg`, taken as `prior` says (see
/// [`segment_taken`]): everything below it in the area, rounded to OS
/// pages, is a guard, and so is [`tail_guard`] after it.
/// Returns how many bytes of the area are accessible now (all of it when
/// off), for the count of committed bytes (what lies between the block
/// and the guard after it counts in full: it may hold the pages a
/// previous user left, as in the plain build), where the guard after the
/// block starts and ends, and whether every guard is in place as that
/// says (never after [`Prior::Sealed`], whose slices past the first may
/// have their first bytes open). None if the block's own pages could not
/// be opened (near the mapping limit `mprotect` cannot split a seal or a
/// guard): it would fault in its owner's hands, so it must not be handed
/// out, and what the area's protection is now is not known.
///
/// # Safety
/// The area must be segment memory of the caller's, holding no other block.
pub unsafe fn open_block(
    seg: usize,
    area_start: usize,
    start: usize,
    end: usize,
    area_end: usize,
    prior: Prior,
) -> Option<(usize, (usize, usize), bool)> {
    if !ON {
        return Some((area_end - area_start, (area_end, area_end), false));
    }
    let ps = os::page_size();
    let before = start & !(ps - 1);
    let after = (end + ps - 1) & !(ps - 1);
    let tail = tail_guard(after, area_end);
    let mut open = tail.0 - before + (area_end - tail.1);
    match prior {
        Prior::Sealed => {
            // The guards are sealed already: open only the block (counted
            // open even if the kernel refused, which is the safe side),
            // and past it what was sealed stays so, the guard after it.
            // SAFETY: the block's pages lie in the area, the caller's
            // segment memory (this fn's contract).
            if !unsafe { os::unguard(before as *mut u8, after - before) } {
                // Near the mapping limit `mprotect` cannot split the seal:
                // a block left sealed would fault in its owner's hands.
                return None;
            }
            return Some((after - before, (after, area_end), false));
        }
        Prior::Ranges(held) => {
            // The header's guard with the pages below the block (they
            // adjoin) and the one after it; what the span held elsewhere
            // in the area comes off (before it, `segment_taken` did).
            // A span a huge block left holds these already, whatever the
            // size of that block: nothing changes.
            let o = |x: usize| x - seg;
            let both = [(o(area_start) - ps, o(before)), (o(tail.0), o(tail.1))];
            let need = if tail.0 < tail.1 { &both[..] } else { &both[..1] };
            // A guard inside the block that cannot come off would fault
            // in its owner's hands: None.
            // SAFETY: the area, the header's guard before it and the
            // held ranges are segment memory of the caller's holding no
            // other block (this fn's contract).
            let made = unsafe { reconcile(seg, &held, o(area_start) - ps, o(area_end), need) }?;
            if !made {
                // Which one failed is not known: all counted open.
                open = area_end - area_start;
            }
            return Some((open, tail, made));
        }
        _ => {}
    }
    let mut made = true;
    // A guard not made leaves its range open.
    // SAFETY: the pages before the block's lie in the area, the caller's
    // segment memory, and hold no block (this fn's contract).
    if before > area_start && !unsafe { os::guard(area_start as *mut u8, before - area_start) }.made() {
        open += before - area_start;
        made = false;
    }
    // SAFETY: the guard's pages lie in the area past the block's, the
    // caller's segment memory, and hold no block (this fn's contract).
    if tail.0 < tail.1 && !unsafe { os::guard(tail.0 as *mut u8, tail.1 - tail.0) }.made() {
        open += tail.1 - tail.0;
        made = false;
    }
    Some((open, tail, made))
}

/// What [`grow_block`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Grown {
    /// The kernel refused to open the memory: the block cannot grow.
    Refused,
    /// Grown, and the guard after it lies as [`open_block`] would put it.
    Guarded,
    /// Grown, but the guard after it could not be made (the `mprotect`
    /// way's budget is spent): the memory there is open.
    Unguarded,
}

/// A huge block grows in place over `len` bytes at `at`, its end, in a
/// segment ending at `area_end` (see `huge::grow_in_place`): they become
/// accessible, and the guard after the block lies as [`tail_guard`] puts
/// it. `recorded`: the segment's guards are on record as [`open_block`]
/// made them, so without the seals what it grows over is open already,
/// the guard at the span's end stays, and no kernel call is made. Returns
/// what it did and where the guard after the block starts and ends.
///
/// # Safety
/// `[at, at + len)` must be page-aligned memory of the caller's huge
/// segment past its block, from the block's end, about to belong to the
/// block, and at least one OS page must follow it in the segment.
pub unsafe fn grow_block(
    at: *mut u8,
    len: usize,
    area_end: usize,
    recorded: bool,
) -> (Grown, (usize, usize)) {
    if !ON {
        return (Grown::Guarded, (area_end, area_end));
    }
    let after = at as usize + len;
    let tail = tail_guard(after, area_end);
    if recorded && !super::large::SEAL {
        return (Grown::Guarded, tail);
    }
    // Past the block the memory may be open or guarded (a sealed span
    // keeps the rest of the segment sealed): all it grows over is opened.
    // SAFETY: `[at, at + len)` is page-aligned memory of the caller's huge
    // segment (this fn's contract).
    if !unsafe { os::unguard(at, len) } {
        return (Grown::Refused, tail);
    }
    if super::large::SEAL {
        // The rest of the segment was the guard already.
        return (Grown::Guarded, tail);
    }
    // Where the guard after the block is not known to be, it is made.
    // SAFETY: the guard's pages lie in the caller's segment past the grown
    // block (this fn's contract) and hold nothing.
    if unsafe { os::guard(tail.0 as *mut u8, tail.1 - tail.0) }.made() {
        (Grown::Guarded, tail)
    } else {
        (Grown::Unguarded, tail)
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

/// Which of `n` candidate arena slices to take (the first when off).
pub fn pick(n: usize) -> usize {
    if ON && n > 1 {
        random::shared_next() as usize % n
    } else {
        0
    }
}
