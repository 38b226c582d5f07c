//! Large blocks in the guard build (they live in segments of slots, see
//! `large.rs`): every block has a guard page below it and one after it,
//! made once when its segment of slots is made; with `seal-freed-large`
//! only what the owner asked for is open, and a freed block is sealed
//! whole at once.
//!
//! ```text
//! segment of slots, guards made once (G: a guard page; the slack below
//! the first slot, there when slots are aligned past the header, and
//! after the last one is guarded whole):
//! | header | G | slack GGGG | slot 0 ..... | G | slot 1 ..... | G | ... | GGGG |
//!
//! each slot, `guard-pages` alone (`secure`):
//! live:  | the block, all of it open .............................. | G |
//! freed: | as it was left, purged after the purge delay ........... | G |
//!
//! each slot, `seal-freed-large` (`secure-max`):
//! live:  | the request, rounded up to an OS page | sealed ........... | G |
//! freed: | sealed .................................................. | G |
//! ```
//! The guard page that ends each slot lies below the next slot's block,
//! and the header's guard, or the guarded slack, below the first one, so
//! a linear overflow off any block and an underflow below it both fault,
//! whichever slot it took. Guards are made with the segment and never
//! moved, so large `malloc` and `free` make no kernel call of their own
//! in `secure`: a freed slot is purged after the purge delay, as in the
//! plain build.
//!
//! With `seal-freed-large` each block keeps open only its first bytes, up
//! to the first OS page boundary past the request and its canary
//! (`Segment::large_open`); the rest of it, the class's slack and the
//! guard page every large block ends with (`guard::BLOCK_GUARD`), is
//! sealed, so a linear overflow faults within a page of the request,
//! whatever the size class.
//!
//! At free, with `seal-freed-large`, the whole block is sealed, so it
//! faults on access from any thread at once and needs no write-after-free
//! check (no free list runs through it: its slot's bit says it is free). A
//! block the program left mostly untouched (`mincore`) is sealed with
//! guard markers, which drop its pages: it comes back zero, zeroed once by
//! the kernel and only where the next owner touches it. A block it touched
//! mostly whole is sealed with `mprotect` within the mapping budget
//! (markers past it), which keeps its pages: dropping them would make the
//! next owner fault every one in again, far dearer than zeroing them
//! (docs/PERFORMANCE.md, "Sealing freed big blocks with `mprotect` or
//! markers").
//!
//! A block sealed with `mprotect` keeps its old bytes, unreadable, until
//! they are opened again: zero-on-free wipes them then, not at free, and
//! only as far as the next request opens (the slot's kept extent says
//! how far old bytes may lie). Nobody can read or write them meanwhile,
//! and a block that moves on (a growing vector in `realloc`) is not wiped
//! whole only for its next owner to open half of it. A seal the budget
//! refuses leaves that part open, so it is wiped at once, and its next
//! owner checks it is still zero. Without `seal-freed-large`, zero-on-free
//! leaves large blocks alone: wiping a freed block of up to 2 MiB, or
//! zeroing it when reused, costs far more than the program's own use of it
//! (see SECURITY.md).

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{guard, order, random, zero};
use crate::meta::constants::{LARGE_OBJ_MAX, MEDIUM_OBJ_MAX, SEGMENT_SIZE};
use crate::meta::guards::{FIRST_LARGE, RANGES, SLACK_BIT};
use crate::meta::page::{block_index, Page};
use crate::meta::segment::{of_page, Segment};
use crate::{os, stats};

/// `seal-freed-large` (named in the catalogue): freed large and huge
/// blocks inaccessible at once, live large blocks open only as far as
/// their request, reused ones zeroed with zero-on-free.
pub const SEAL: bool = super::catalogue::SEAL_FREED_LARGE;
// The seals are guards: the feature turns on `guard-pages` (Cargo.toml).
const _: () = assert!(!SEAL || guard::ON);

/// The guard layout a segment of large slots of class `c` leaves behind
/// and looks for (`meta::guards::Guards`): with `guard-pages` alone its
/// slot guards stay in place when it is released, so the next segment of
/// the class takes them as they are; 0 (none) with the seals, which seal
/// a released segment whole.
pub fn layout(c: usize) -> u8 {
    if guard::ON && !SEAL {
        FIRST_LARGE + c as u8
    } else {
        0
    }
}

/// The guard layout a huge segment leaves behind: its guard ranges, with
/// `guard-pages` alone; 0 (none) with the seals.
pub fn huge_layout() -> u8 {
    if guard::ON && !SEAL {
        RANGES
    } else {
        0
    }
}

// Every class has a layout of its own below `RANGES`.
const _: () = assert!((FIRST_LARGE as usize) + crate::meta::size_class::MAX_BIN < RANGES as usize);

/// Large and huge blocks handed out read zero: zero-on-free with the
/// seals, which keep freed ones out of reach until they are zeroed.
pub const ZEROED: bool = SEAL && zero::ON;

/// A slot's state (with `seal-freed-large`), kept in `Segment::large_open` in [`UNIT`]s, [`BITS`]
/// bits each (seals start and end on OS pages, multiples of the unit).
/// Opening part of a block asks the kernel only for what lies there:
/// `mprotect` takes the process's mapping lock for writing and merges
/// mappings, and removing markers walks the page tables, so a block
/// opened a step at a time (a vector growing in place) costs one call a
/// step, not both.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct State {
    /// Bytes open from the block's start.
    open: usize,
    /// Sealed bytes before this may hold old bytes (in the zero-on-free
    /// build: an earlier owner's, or this one's sealed by a shrink, to be
    /// zeroed when opened) and, on the marker way, lie under `mprotect`.
    /// Past it the sealed part reads as zero and holds markers only.
    kept: usize,
    /// Markers lie only at or past this (on the marker way).
    marks: usize,
}

const UNIT: usize = 4096;
const BITS: u32 = 10;
const MASK: u32 = (1 << BITS) - 1;

// Every extent reaches at most `LARGE_OBJ_MAX` less a guard page.
const _: () = assert!(LARGE_OBJ_MAX / UNIT <= MASK as usize && 3 * BITS <= 32);

impl State {
    fn of(v: u32) -> State {
        let at = |i: u32| ((v >> (i * BITS)) & MASK) as usize * UNIT;
        State {
            open: at(0),
            kept: at(1),
            marks: at(2),
        }
    }

    fn bits(self) -> u32 {
        // The open part holds neither seal nor old bytes.
        let kept = if self.kept > self.open { self.kept } else { 0 };
        let marks = self.marks.max(self.open);
        let unit = |n: usize| (n / UNIT) as u32;
        unit(self.open) | unit(kept) << BITS | unit(marks) << (2 * BITS)
    }

    /// `[from, to)` of the block, open until now, was just sealed the way
    /// `g` says, holding bytes nobody may see again.
    fn sealed(&mut self, from: usize, to: usize, g: os::Guarded) {
        match g {
            // Kept by `mprotect`, to be zeroed when opened.
            os::Guarded::Protected => self.kept = self.kept.max(to),
            // Dropped: zero, no `mprotect`. Old bytes lie only before
            // `from` now, unless some lay past `to`.
            os::Guarded::Marker => {
                if self.kept <= to {
                    self.kept = self.kept.min(from);
                }
                self.marks = self.marks.min(from);
            }
            // Left open and wiped ([`seal`]).
            os::Guarded::Skipped => {}
        }
    }
}

/// Pages of the largest large block, at the smallest OS page size.
const MAX_PAGES: usize = LARGE_OBJ_MAX / 4096;

// A large page holds few enough blocks for `Segment::large_open`.
const _: () = assert!(SEGMENT_SIZE / (MEDIUM_OBJ_MAX + 1) < 64);

/// The state of the slot of a large block (`Segment::large_open`): the
/// handle owns the index arithmetic and the packing, so callers read and
/// write a [`State`]. Relaxed: a slot's state is written only by whoever
/// holds its block (or, for a free slot, its class's lock).
#[derive(Clone, Copy)]
struct Open(&'static AtomicU32);

impl Open {
    /// The state of the slot of block `p`.
    ///
    /// # Safety
    /// `p` must be a block of the large `page` (a segment of slots), and
    /// the handle used only while that segment lives.
    #[inline]
    unsafe fn of(page: *const Page, p: *const u8) -> Open {
        // SAFETY: `p` is a block of the large `page` (this fn's contract):
        // the descriptor is readable and `p` a block start in its area.
        let index = unsafe { block_index(page, p as usize - (*page).page_start as usize) };
        // `p` is a block start, so the index is exact and below the page's
        // block count (under 64, see above).
        // SAFETY: the segment holding `page` lives while the handle is used
        // (this fn's contract).
        unsafe { Open::at(of_page(page), (index & 63) as usize) }
    }

    /// The state of slot `i` of the segment of slots `seg`.
    ///
    /// # Safety
    /// `seg` must be a live segment of slots, `i < 64`, and the handle used
    /// only while the segment lives.
    #[inline(always)]
    unsafe fn at(seg: *mut Segment, i: usize) -> Open {
        // SAFETY: a field of the live header (this fn's contract), which
        // outlives the handle.
        Open(unsafe { &(*seg).large_open[i] })
    }

    #[inline(always)]
    fn get(self) -> State {
        State::of(self.0.load(Ordering::Relaxed))
    }

    #[inline(always)]
    fn set(self, st: State) {
        self.set_bits(st.bits());
    }

    #[inline(always)]
    fn set_bits(self, bits: u32) {
        self.0.store(bits, Ordering::Relaxed);
    }
}

/// Bytes of the live large block `p` its owner may use (those open): all
/// of it but its guard page, or with the seals, what its state says is
/// open.
///
/// # Safety
/// `p` must be a block of the large `page`, live or just taken.
#[inline]
pub unsafe fn usable(page: *const Page, p: *const u8) -> usize {
    if !SEAL {
        // SAFETY: `page` describes the segment of slots of `p`, live while
        // `p` is (this fn's contract).
        return unsafe { (*page).block_size } - guard::BLOCK_GUARD;
    }
    // SAFETY: `p` is a block of the large `page`, whose segment it keeps
    // live (this fn's contract).
    unsafe { Open::of(page, p) }.get().open
}

/// Which of `n` free slots a large block is taken from: a random one with
/// `guard-pages` or `random-order`, so reuse is not predictable (the first
/// otherwise).
pub fn pick(n: usize) -> usize {
    if (guard::ON || order::ON) && n > 1 {
        random::shared_next() as usize % n
    } else {
        0
    }
}

/// The open bytes a request of `size` needs: through its canary, rounded
/// up to the OS page, and at least one page: a live block with nothing
/// open would read as a freed, sealed one (a zero-byte request aligned to
/// a large block's size, without the canary's bytes, came to 0).
fn wanted(size: usize, bsize: usize) -> usize {
    let ps = os::page_size();
    (size + super::canary_extra())
        .max(1)
        .next_multiple_of(ps)
        .min(bsize - guard::BLOCK_GUARD)
}

/// Mostly not resident: cheaper to drop than to wipe.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory this process mapped.
unsafe fn mostly_untouched(p: *mut u8, len: usize) -> bool {
    let ps = os::page_size();
    let mut vec = [0u8; MAX_PAGES];
    // SAFETY: `[p, p + len)` is page-aligned memory this process mapped
    // (this fn's contract); `residency` checks `vec` has room.
    if !unsafe { os::residency(p, len, &mut vec) } {
        return false;
    }
    let resident = vec[..len / ps].iter().filter(|&&v| v & 1 != 0).count();
    resident * 2 <= len / ps
}

/// Seals `[p, p + len)`, whose contents are dead (`dirty`: not known to be
/// zero). Sealed with `mprotect`, it keeps them (see [`State::sealed`]);
/// with markers, it reads as zero when opened; not sealed, it is left open
/// and, in the zero-on-free build, wiped.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory of a block of the caller's,
/// nobody's data.
unsafe fn seal(p: *mut u8, len: usize, dirty: bool) -> os::Guarded {
    if len == 0 {
        return os::Guarded::Marker;
    }
    let dirty = dirty && zero::ON;
    // SAFETY: `[p, p + len)` is page-aligned mapped memory of the caller's
    // block, nobody's data (this fn's contract): its pages may be dropped.
    if !os::guards_split_mappings() && unsafe { (!dirty || mostly_untouched(p, len)) && os::mark(p, len) } {
        return os::Guarded::Marker;
    }
    // SAFETY: as for the markers: the range is page-aligned, the caller's,
    // and nobody touches it until it is opened again.
    let g = unsafe { os::seal(p, len) };
    if dirty && !g.made() {
        // SAFETY: left open, the range is the caller's block's memory,
        // holding nobody's data (this fn's contract).
        unsafe { zero::zero_reused(p, len) };
    }
    g
}

/// Opens the block `p` in state `st` up to `want` (past `st.open`), asking
/// the kernel only for the seals that may lie there; a refusal is fatal,
/// as the block cannot be handed out.
///
/// # Safety
/// `p` must be a block of the caller's in state `st`, and `want` within it.
unsafe fn unseal(p: *mut u8, st: State, want: usize) {
    let end = st.open;
    // SAFETY: `p` is the caller's block in state `st`, `want` within it
    // (this fn's contract): each range is mapped, page-aligned, past `open`.
    let done = unsafe {
        if os::guards_split_mappings() {
            os::unguard(p.add(end), want - end)
        } else {
            let protected = want.min(st.kept);
            let marked = end.max(st.marks);
            (protected <= end || os::protect(p.add(end), protected - end, true))
                && (marked >= want || os::unmark(p.add(marked), want - marked))
        }
    };
    if !done {
        crate::error::kernel_refused("reopen", p as usize + end, want - end);
    }
}

/// A new segment of slots of the large `page` is made, its area (past the
/// header and its guard) `[area_start, area_end)`: the slack below its
/// first slot and after its last one becomes a guard (each slot gets the
/// guard page it ends with when first taken, see [`slot_taken`]), but for
/// those `have` names in place already
/// (the mask of the class's layout, `meta::guards::Guards`: the last
/// segment of the class in this memory left them). With the seals every
/// slot is sealed whole instead. Returns the mask of the guards in place
/// now (0 with the seals, which leave nothing to the next segment).
/// No-op without `guard-pages`.
///
/// # Safety
/// `page` must describe the new segment of slots, nobody else's yet, whose
/// area is fresh, nobody's, page-aligned and accessible memory (its
/// segment taken whole) but for the guards `have` names.
pub unsafe fn slots_made(
    page: *const Page,
    area_start: usize,
    area_end: usize,
    dirty: bool,
    have: u64,
) -> u64 {
    if !guard::ON {
        return 0;
    }
    // SAFETY: `page` describes the new segment (this fn's contract); its
    // geometry is set.
    let geometry = unsafe { ((*page).page_start, (*page).block_size, (*page).reserved) };
    let (start, bsize, count) = (geometry.0, geometry.1, geometry.2 as usize);
    let end = start as usize + count * bsize;
    let slack = 1u64 << SLACK_BIT;
    let mut kept = have;
    if have & slack == 0 {
        // The slack holds no block: a guard below the first slot (beside
        // the header's) and after the last (below the next segment's
        // header). An empty one needs none.
        let mut made = true;
        for (from, to) in [(area_start, start as usize), (end, area_end)] {
            // SAFETY: the range lies in the area, page-aligned (slots
            // start and end on OS pages), and holds no block (this fn's
            // contract).
            made &= from == to || unsafe { os::guard(from as *mut u8, to - from) }.made();
        }
        if made {
            kept |= slack;
        }
    }
    if !SEAL {
        // Each slot's guard is made when the slot is first taken
        // ([`slot_taken`]): a kernel call a slot, for slots most of which
        // a segment of a small class may never hand out, all in the
        // malloc that made the segment.
        return kept;
    }
    // SAFETY: the slots are fresh, nobody's, page-aligned memory (this
    // fn's contract).
    let state = unsafe { seal_slots(start, count, bsize, dirty) };
    for i in 0..count {
        // SAFETY: `i` is below the slot count, so the block lies in the
        // segment, a block of its large page that is ours alone.
        unsafe { Open::of(page, start.add(i * bsize)) }.set_bits(state);
    }
    0
}

/// Slot `index` of the segment of slots of the large `page` is being
/// taken: the guard page it ends with (after its block) and the one the
/// slot below ends with (below its block; the slack's guard below slot 0
/// is made with the segment) are made where `kept`, the mask of the
/// guards in place, says they are not, and `kept` records those made. A
/// slot never taken costs no kernel call. No-op without `guard-pages` or
/// with the seals (which seal every slot with the segment).
///
/// # Safety
/// `page` must describe a live segment of slots whose `kept` this is,
/// `index` below its slot count, and the caller must hold the class's
/// lock (no block reaches the last page of its slot, live or free).
pub unsafe fn slot_taken(page: *const Page, kept: &AtomicU64, index: usize) {
    if !guard::ON || SEAL {
        return;
    }
    let have = kept.load(Ordering::Relaxed);
    let want = if index == 0 { 1u64 } else { 3u64 << (index - 1) };
    let mut missing = want & !have;
    if missing == 0 {
        return;
    }
    // SAFETY: `page` describes a live segment of slots (this fn's
    // contract); its geometry is set.
    let (start, bsize) = unsafe { ((*page).page_start, (*page).block_size) };
    let mut made = 0u64;
    while missing != 0 {
        let i = missing.trailing_zeros() as usize;
        missing &= missing - 1;
        let last = (i + 1) * bsize - guard::BLOCK_GUARD;
        // SAFETY: the last page of slot `i` of the segment (`i` is `index`
        // or the slot below it): page-aligned, and no block reaches it.
        if unsafe { os::guard(start.add(last), guard::BLOCK_GUARD) }.made() {
            made |= 1 << i;
        }
    }
    if made != 0 {
        kept.fetch_or(made, Ordering::Relaxed);
    }
}

/// The `count` blocks of `bsize` bytes at `start` of a new segment of
/// slots are sealed whole (`dirty`: the memory is reused and may hold an
/// old owner's bytes). Returns the state each starts with.
///
/// # Safety
/// The blocks must be fresh, nobody's, page-aligned memory.
unsafe fn seal_slots(start: *mut u8, count: usize, bsize: usize, dirty: bool) -> u32 {
    let len = count * bsize;
    // Markers drop whatever the memory held: zero, in one call.
    // SAFETY: the blocks are fresh, nobody's, page-aligned memory (this
    // fn's contract): their pages may be dropped.
    if unsafe { os::mark(start, len) } {
        return State::default().bits();
    }
    if dirty && zero::ON {
        // SAFETY: fresh, nobody's, page-aligned memory (this fn's
        // contract).
        unsafe { zero::zero_reused(start, len) };
    }
    let tail = bsize - guard::BLOCK_GUARD;
    // SAFETY: fresh, nobody's, page-aligned memory (this fn's contract),
    // which nobody touches until a block of it is opened.
    let sealed = unsafe { os::seal(start, len) };
    match sealed {
        // Zero, and where markers failed on their way, under
        // `mprotect` (on the `mprotect` way that is what every seal is).
        os::Guarded::Protected => {
            let kept = if os::guards_split_mappings() { 0 } else { tail };
            State {
                open: 0,
                kept,
                marks: tail,
            }
            .bits()
        }
        os::Guarded::Marker => State::default().bits(),
        os::Guarded::Skipped => {
            // The guard page of each block at least, as a skipped one
            // is counted; the rest is open, and zero.
            for i in 0..count {
                // SAFETY: the last page of block `i`, one of the `count`
                // (this fn's contract): fresh, nobody's, page-aligned.
                unsafe { os::guard(start.add(i * bsize + tail), guard::BLOCK_GUARD) };
            }
            State {
                open: tail,
                kept: 0,
                marks: tail,
            }
            .bits()
        }
    }
}

/// Of the slots in `free`, those whose block was sealed with its pages
/// kept (with `mprotect`): reusing one faults nothing in.
///
/// # Safety
/// `page` must describe a segment of slots whose slots `free` names.
pub unsafe fn warm(page: *const Page, free: u64) -> u64 {
    let mut warm = 0;
    let mut bits = free;
    let seg = of_page(page);
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        // SAFETY: `page` describes a live segment of slots, and `i` is one
        // of its slots, named in `free` (this fn's contract).
        if unsafe { Open::at(seg, i) }.get().kept != 0 {
            warm |= 1 << i;
        }
    }
    warm
}

/// Drops the pages the free slots in `free` kept (sealed with `mprotect`);
/// they stay sealed, and read as zero when opened. On the marker way they
/// are still taken for kept (the `mprotect` must come off when opened), so
/// opening them zeroes pages that are already zero, faulting them in: a
/// cost paid only after `collect(true)`.
///
/// # Safety
/// `page` must describe a segment of slots whose slots `free` names, all
/// free, under the caller's lock.
pub unsafe fn drop_free(page: *const Page, free: u64) {
    // SAFETY: `page` describes a live segment of slots, whose slots `free`
    // names (this fn's contract).
    let (bsize, mut bits) = unsafe { ((*page).block_size, warm(page, free)) };
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        // SAFETY: `i` is a slot of the segment (this fn's contract), so its
        // block lies in the page's area.
        let p = unsafe { (*page).page_start.add(i * bsize) };
        // SAFETY: the slot is free under the caller's lock (this fn's
        // contract): its block is nobody's, its contents dead.
        unsafe { os::purge(p, bsize) };
        if os::guards_split_mappings() {
            // SAFETY: `p` is a block of the large `page`, whose segment
            // lives under the caller's lock (this fn's contract).
            let open = unsafe { Open::of(page, p) };
            let mut st = open.get();
            st.kept = 0;
            open.set(st);
        }
    }
}

/// The free block `p`, just taken by the caller, is handed out for `size`
/// bytes: with the seals, checks that whatever stayed open while it was
/// free (past the mapping budget) is still zero, then opens what the
/// request needs. False if something wrote to it after it was freed.
///
/// # Safety
/// `p` must be a free block of the large `page` (a segment of slots) just
/// taken by the caller, with `padded(size) <= block_size`.
pub unsafe fn taken(page: *const Page, p: *mut u8, size: usize) -> bool {
    if !SEAL {
        return true;
    }
    // SAFETY: `p` is a block of the large `page` (this fn's contract).
    let end = unsafe { usable(page, p) };
    // SAFETY: the block's first `end` bytes are open, so readable, and the
    // block is the caller's (this fn's contract).
    if zero::CHECK && end != 0 && !unsafe { zero::words_zero(p, end) } {
        return false;
    }
    // SAFETY: the caller's block of the large `page`, which `size`, padded,
    // fits (this fn's contract).
    unsafe { resize(page, p, size) };
    true
}

/// The live block `p` is being freed: with the seals it is sealed whole
/// (or, past the mapping budget, wiped); what `mprotect` seals is wiped
/// when opened again. Without them it is left as it is, to be purged after
/// the purge delay (`large.rs`).
///
/// # Safety
/// `p` must be a live block of the large `page`, being freed once.
pub unsafe fn freed(page: *const Page, p: *mut u8) {
    if !SEAL {
        return;
    }
    // SAFETY: `p` is a live block of the large `page` (this fn's contract),
    // which keeps the segment live.
    let open = unsafe { Open::of(page, p) };
    let mut st = open.get();
    // SAFETY: the block's open part, page-aligned, whose bytes are dead:
    // it is being freed once (this fn's contract).
    let g = unsafe { seal(p, st.open, true) };
    if g.made() {
        // SAFETY: the segment lives while its block `p` is being freed.
        unsafe { stats::commit_less(of_page(page), st.open) };
        st.sealed(0, st.open, g);
        st.open = 0;
        open.set(st);
    }
}

/// The live (or just taken) block `p` now holds `size` bytes: with the
/// seals, the part that request needs is opened, and what lies past it
/// sealed (without them all of it is open already).
///
/// # Safety
/// `p` must be a block of the large `page` owned by the caller, with
/// `padded(size) <= block_size`.
pub unsafe fn resize(page: *const Page, p: *mut u8, size: usize) {
    if !SEAL {
        return;
    }
    // SAFETY: `p` is a block of the large `page` owned by the caller (this
    // fn's contract), which keeps the segment live.
    let open = unsafe { Open::of(page, p) };
    let mut st = open.get();
    let end = st.open;
    // SAFETY: the descriptor of a live segment; its geometry is fixed.
    let want = wanted(size, unsafe { (*page).block_size });
    if want > end {
        // SAFETY: the caller's block in state `st`; `want`, at most the
        // block less its guard, lies within it.
        unsafe { unseal(p, st, want) };
        // SAFETY: the segment lives while the caller owns its block.
        unsafe { stats::commit_more(of_page(page), want - end) };
        if zero::ON && st.kept > end {
            // Old bytes kept under `mprotect`: nobody's to see.
            // SAFETY: opened just now, inside the caller's block.
            unsafe { ptr::write_bytes(p.add(end), 0, want.min(st.kept) - end) };
        }
        st.open = want;
        open.set(st);
    } else if want < end {
        // SAFETY: `[want, end)` of the caller's block is open and
        // page-aligned, and holds nothing the new size keeps.
        let g = unsafe { seal(p.add(want), end - want, true) };
        if g.made() {
            // SAFETY: the segment lives while the caller owns its block.
            unsafe { stats::commit_less(of_page(page), end - want) };
            st.sealed(want, end, g);
            st.open = want;
            open.set(st);
        }
    }
}
