//! Large blocks in the guard build (they live in segments of slots, see
//! `large.rs`): only what the owner asked for is open, and a freed block
//! is sealed whole at once.
//!
//! ```text
//! live:  | the request, rounded up to an OS page | sealed .............. |
//! freed: | sealed .......................................................|
//! ```
//! Each block keeps open only its first bytes, up to the first OS page
//! boundary past the request and its canary (`Segment::large_open`); the
//! rest of it, the class's slack and the guard page every large block
//! ends with (`guard::BLOCK_GUARD`), is sealed, so a linear overflow faults
//! within a page of the request, whatever the size class.
//!
//! At free the whole block is sealed, so it faults on access from any
//! thread at once and needs no write-after-free check (no free list runs
//! through it: its slot's bit says it is free). A block the program left
//! mostly untouched (`mincore`) is sealed with guard markers, which drop
//! its pages: it comes back zero, zeroed once by the kernel and only where
//! the next owner touches it. A block it touched mostly whole is sealed
//! with `mprotect` within the mapping budget (markers past it), which
//! keeps its pages: dropping them would make the next owner fault every
//! one in again, far dearer than zeroing them (docs/PERFORMANCE.md).
//!
//! A block sealed with `mprotect` keeps its old bytes, unreadable, until
//! they are opened again: zero-on-free wipes them then, not at free, and
//! only as far as the next request opens (the slot's dirty extent says
//! how far old bytes may lie). Nobody can read or write them meanwhile,
//! and a block that moves on (a growing vector in `realloc`) is not wiped
//! whole only for its next owner to open half of it. A seal the budget
//! refuses leaves that part open, so it is wiped at once, and its next
//! owner checks it is still zero.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use super::{guard, zero};
use crate::constants::{LARGE_OBJ_MAX, MEDIUM_OBJ_MAX, SEGMENT_SIZE};
use crate::os;
use crate::page::{self, Page};
use crate::segment;

/// In `Segment::large_open`, past the open byte count: some part of the
/// block may be sealed with `mprotect` (else only markers were used, and
/// opening needs no `mprotect` call, which would take the process's
/// mapping lock for writing).
const PROTECTED: u32 = 1 << 31;

/// In `Segment::large_open`, below [`PROTECTED`]: the open byte count in
/// the low bits, and above them the dirty extent in [`DIRTY_UNIT`]s: how
/// far from the block's start a sealed part may hold bytes of an earlier
/// owner (or of this one, sealed by a shrink), to be zeroed when opened.
/// Past it the sealed part reads as zero.
const OPEN_BITS: u32 = 21;
const OPEN_MASK: u32 = (1 << OPEN_BITS) - 1;
const DIRTY_UNIT: usize = 4096;

// A large block's open bytes fit below the dirty extent, and its dirty
// units below `PROTECTED`; both only reach `LARGE_OBJ_MAX` less a guard,
// and seals start and end on OS pages, multiples of the unit.
const _: () = assert!(LARGE_OBJ_MAX <= 1 << OPEN_BITS);
const _: () = assert!(LARGE_OBJ_MAX / DIRTY_UNIT < 1 << (31 - OPEN_BITS));

/// A slot's state, unpacked from `Segment::large_open`.
#[derive(Clone, Copy)]
struct State {
    /// Bytes open from the block's start.
    open: usize,
    /// Sealed bytes before this may hold old bytes (see [`OPEN_BITS`]).
    dirty: usize,
    /// Some part may be sealed with `mprotect` ([`PROTECTED`]).
    protected: bool,
}

impl State {
    fn of(v: u32) -> State {
        State {
            open: (v & OPEN_MASK) as usize,
            dirty: ((v & !PROTECTED) >> OPEN_BITS) as usize * DIRTY_UNIT,
            protected: v & PROTECTED != 0,
        }
    }

    fn bits(self) -> u32 {
        // Nothing sealed lies before the open bytes.
        let dirty = if self.dirty > self.open { self.dirty } else { 0 };
        self.open as u32
            | ((dirty / DIRTY_UNIT) as u32) << OPEN_BITS
            | if self.protected { PROTECTED } else { 0 }
    }

    /// `[from, to)` of the block was just sealed the way `g` says, holding
    /// bytes nobody may see again.
    fn sealed(&mut self, from: usize, to: usize, g: os::Guarded) {
        match g {
            // Kept by `mprotect`, to be wiped when opened.
            os::Guarded::Protected => {
                self.protected = true;
                if zero::ON {
                    self.dirty = self.dirty.max(to);
                }
            }
            // Dropped: zero. Old bytes lie only before `from` now, unless
            // some lay past `to`.
            os::Guarded::Marker => {
                if self.dirty <= to {
                    self.dirty = self.dirty.min(from);
                }
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

/// How many of the block's first bytes are accessible.
///
/// # Safety
/// `p` must be a block of the large `page` (a segment of slots).
#[inline]
unsafe fn open(page: *const Page, p: *const u8) -> &'static AtomicU32 {
    // SAFETY: per the caller; `p` is a block start, so the index is exact
    // and below the page's block count (under 64, see above), and the
    // segment header lives as long as any of its blocks.
    unsafe {
        let off = p as usize - (*page).page_start as usize;
        let seg = segment::of_page(page);
        &(*seg).large_open[(page::block_index(page, off) & 63) as usize]
    }
}

/// Bytes of the live large block `p` its owner may use (those open).
///
/// # Safety
/// `p` must be a block of the large `page`, live or just taken.
#[inline]
pub unsafe fn usable(page: *const Page, p: *const u8) -> usize {
    // SAFETY: per the caller.
    unsafe { (open(page, p).load(Ordering::Relaxed) & OPEN_MASK) as usize }
}

/// The open bytes a request of `size` needs: through its canary, rounded
/// up to the OS page.
fn wanted(size: usize, bsize: usize) -> usize {
    let ps = os::page_size();
    (size + super::canary_extra())
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
    // SAFETY: per the caller.
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
    // SAFETY: per the caller.
    unsafe {
        if !os::guards_split_mappings() && (!dirty || mostly_untouched(p, len)) && os::mark(p, len) {
            return os::Guarded::Marker;
        }
        let g = os::seal(p, len);
        if dirty && !g.made() {
            zero::zero_reused(p, len);
        }
        g
    }
}

/// Opens `[p, p + len)`, sealed by [`seal`] (with `mprotect` somewhere if
/// `protected`); a refusal is fatal, as the block cannot be handed out.
///
/// # Safety
/// The range must be sealed memory of a block of the caller's.
unsafe fn unseal(p: *mut u8, len: usize, protected: bool) {
    let done = len == 0 || {
        // SAFETY: per the caller.
        unsafe {
            if protected {
                os::unguard(p, len)
            } else {
                os::unmark(p, len)
            }
        }
    };
    if !done {
        crate::error::fatal("malloc", p as usize, "the kernel would not reopen part of", len);
    }
}

/// [`PROTECTED`] if a seal used `mprotect`.
fn flag(g: os::Guarded) -> u32 {
    if g == os::Guarded::Protected {
        PROTECTED
    } else {
        0
    }
}

/// The `count` blocks of `bsize` bytes at `start` of a new segment of
/// slots are sealed whole (`dirty`: the memory is reused and may hold an
/// old owner's bytes). Returns the open state each starts with.
///
/// # Safety
/// The blocks must be fresh, nobody's, page-aligned memory.
pub unsafe fn slots_made(start: *mut u8, count: usize, bsize: usize, dirty: bool) -> u32 {
    let len = count * bsize;
    // SAFETY: per the caller.
    unsafe {
        // Markers drop whatever the memory held: zero, in one call.
        if os::mark(start, len) {
            return 0;
        }
        if dirty && zero::ON {
            zero::zero_reused(start, len);
        }
        let g = os::seal(start, len);
        if g.made() {
            return flag(g);
        }
        // The guard page of each block at least, as a skipped one is
        // counted; the rest is open, and zero.
        let tail = bsize - guard::BLOCK_GUARD;
        let mut state = tail as u32;
        for i in 0..count {
            state |= flag(os::guard(start.add(i * bsize + tail), guard::BLOCK_GUARD));
        }
        state
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
    // SAFETY: per the caller, every slot named is in the segment.
    unsafe {
        let seg = segment::of_page(page);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if (*seg).large_open[i].load(Ordering::Relaxed) & PROTECTED != 0 {
                warm |= 1 << i;
            }
        }
    }
    warm
}

/// Drops the pages the free slots in `free` kept (sealed with `mprotect`);
/// they stay sealed, and read as zero when opened (so are not wiped then).
///
/// # Safety
/// `page` must describe a segment of slots whose slots `free` names, all
/// free, under the caller's lock.
pub unsafe fn drop_free(page: *const Page, free: u64) {
    // SAFETY: per the caller; the slots' blocks are nobody's.
    unsafe {
        let bsize = (*page).block_size;
        let mut bits = warm(page, free);
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let p = (*page).page_start.add(i * bsize);
            os::purge(p, bsize);
            let open = open(page, p);
            let mut st = State::of(open.load(Ordering::Relaxed));
            st.dirty = 0;
            open.store(st.bits(), Ordering::Relaxed);
        }
    }
}

/// Sets the open state of a slot's block (for a new segment of slots).
///
/// # Safety
/// `p` must be a block of the large `page`, owned by the caller.
pub unsafe fn set_state(page: *const Page, p: *const u8, state: u32) {
    // SAFETY: per the caller.
    unsafe { open(page, p).store(state, Ordering::Relaxed) };
}

/// The free block `p`, just taken by the caller, is handed out for `size`
/// bytes: checks that whatever stayed open while it was free (past the
/// mapping budget) is still zero, then opens what the request needs.
/// False if something wrote to it after it was freed.
///
/// # Safety
/// `p` must be a free block of the large `page` (a segment of slots) just
/// taken by the caller, with `padded(size) <= block_size`.
pub unsafe fn taken(page: *const Page, p: *mut u8, size: usize) -> bool {
    // SAFETY: per the caller; what is open is readable.
    unsafe {
        let end = usable(page, p);
        if zero::ON && end != 0 && !zero::words_zero(p, end) {
            return false;
        }
        resize(page, p, size);
        true
    }
}

/// The live block `p` is being freed: it is sealed whole (or, past the
/// mapping budget, wiped); what `mprotect` seals is wiped when opened again.
///
/// # Safety
/// `p` must be a live block of the large `page`, being freed once.
pub unsafe fn freed(page: *const Page, p: *mut u8) {
    // SAFETY: per the caller, the block's bytes are dead.
    unsafe {
        let open = open(page, p);
        let mut st = State::of(open.load(Ordering::Relaxed));
        let g = seal(p, st.open, true);
        if g.made() {
            st.sealed(0, st.open, g);
            st.open = 0;
            open.store(st.bits(), Ordering::Relaxed);
        }
    }
}

/// The live (or just taken) block `p` now holds `size` bytes: the part
/// that request needs is opened, and what lies past it sealed.
///
/// # Safety
/// `p` must be a block of the large `page` owned by the caller, with
/// `padded(size) <= block_size`.
pub unsafe fn resize(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: per the caller; both ranges lie inside the block, and the
    // part sealed holds nothing the new size keeps.
    unsafe {
        let open = open(page, p);
        let mut st = State::of(open.load(Ordering::Relaxed));
        let end = st.open;
        let want = wanted(size, (*page).block_size);
        if want > end {
            unseal(p.add(end), want - end, st.protected);
            if zero::ON && st.dirty > end {
                // Old bytes kept under `mprotect`: nobody's to see.
                ptr::write_bytes(p.add(end), 0, want.min(st.dirty) - end);
            }
            st.open = want;
            open.store(st.bits(), Ordering::Relaxed);
        } else if want < end {
            let g = seal(p.add(want), end - want, true);
            if g.made() {
                st.sealed(want, end, g);
                st.open = want;
                open.store(st.bits(), Ordering::Relaxed);
            }
        }
    }
}
