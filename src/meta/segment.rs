//! A segment header's layout and its address arithmetic: which segment a
//! block or descriptor is in, which descriptor serves an address, where
//! the hardened build's bitmaps start. Setting segments up, giving them
//! out and taking them back is `core::segment`.
//!
//! ```text
//! seg (4 MiB aligned)
//! +--------------------------------+-----------------+---------+-----
//! | Segment header                 | page 0 blocks   | page 1  | ...
//! | kind, owner, lists, pages[65]  | (start aligned  | blocks  |
//! | (info_size, OS-page multiple)  |  for its block) |         |
//! +--------------------------------+-----------------+---------+-----
//! ```
//!
//! A page descriptor lives in the header, so `page_of(seg, p)` is a shift.
//! `pages[page_count]` is never used: a pointer exactly one segment past the
//! header lands there and fails the free check.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};

use crate::meta::constants::{
    MEDIUM_OBJ_MAX, MEDIUM_PAGE_SHIFT, SEGMENT_MASK, SEGMENT_SHIFT, SEGMENT_SIZE, SMALL_OBJ_MAX,
    SMALL_PAGES_PER_SEGMENT, SMALL_PAGE_SHIFT,
};
use crate::meta::list::Linked;
use crate::meta::page::Page;

/// Segments of the double-free build stay mapped (in their arena) after
/// they are freed, so a late second free still finds a header: such a
/// header may be stale or being purged, and address arithmetic on it must
/// stay in bounds. `harden::STALE_SEGMENTS` is this flag under the
/// defence's name, and checks at compile time that the two agree.
pub const STALE_HEADERS: bool = cfg!(feature = "double-free");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    Small = 0,
    Medium = 1,
    Large = 2,
    Huge = 3,
}

#[repr(C)]
pub struct Segment {
    /// Address of the owning heap; 0 when abandoned, and always for huge.
    pub owner: AtomicUsize,
    pub kind: Kind,
    pub page_shift: u8,
    pub page_count: u32,
    /// Pages in use, counting an unusable page 0 when the header fills it.
    pub used_pages: u32,
    pub first_page: u32,
    /// Taken from an arena (else mapped on its own).
    pub in_arena: bool,
    /// Segments of large slots and huge ones of the guard build: the
    /// layout their guards follow (`meta::guards::Guards`), 0 for none,
    pub guard_layout: u8,
    /// Bytes mapped from the segment start.
    pub size: usize,
    /// Header bytes, a multiple of the OS page size.
    pub info_size: usize,
    /// Huge blocks: the block starts this many bytes past the segment.
    pub block_offset: usize,
    /// When the free pages marked for purging go back to the OS (ms on the
    /// coarse clock), 0 if none is marked. Every page free pushes it to
    /// now + delay, so a segment in active use is not purged piecemeal while
    /// its pages cycle.
    pub purge_at: u64,
    /// Links on the heap's list of all its segments or the abandoned list.
    pub next: *mut Segment,
    pub prev: *mut Segment,
    /// Links on the heap's list of segments with a free page.
    pub free_next: *mut Segment,
    pub free_prev: *mut Segment,
    pub in_free_list: bool,
    /// Large segments of the guard build (`large.rs`): for each slot, how
    /// many of its block's first bytes are accessible (`harden::large`),
    pub large_open: [AtomicU32; 64],
    /// and which slots are free (bit per slot; written under its class
    /// lock in `large`, read without it by a free into a thread's cache).
    pub slots_free: AtomicU64,
    /// Segments of slots without guards: the slots whose memory reads zero
    /// (fresh or purged, not written since it was last free; a live
    /// slot's bit says how it was when taken, for `calloc`),
    pub slots_zero: AtomicU64,
    /// and the free slots whose memory is still resident, to be purged at
    /// `purge_at` (under its class lock in `large`).
    pub slots_unpurged: u64,
    /// Bytes of the segment counted in `stats::COMMITTED` (see
    /// `core::segment::commit_more`). Atomic: a large block of the guard
    /// build opens and seals its part of a shared segment without a lock.
    pub committed: AtomicUsize,
    /// and which of that layout's guards are in place (its mask; 0 when
    /// none is known). Released, the segment leaves them to the next user
    /// of its memory as they are. Atomic: a slot's guards may be made by
    /// whichever thread takes it first.
    pub kept_guards: AtomicU64,
    pub pages: [Page; SMALL_PAGES_PER_SEGMENT + 1],
}

/// Where the hardened build's live and freed bitmaps start in a segment
/// header: right after the descriptors, cache-line aligned. One formula
/// for the header's size here and for the bitmaps' address in
/// `harden::double_free`.
pub const BITMAP_OFFSET: usize = core::mem::size_of::<Segment>().next_multiple_of(64);

/// The segment whose header holds `page`.
#[inline(always)]
pub fn of_page(page: *const Page) -> *mut Segment {
    (page as usize & !SEGMENT_MASK) as *mut Segment
}

/// The segment of a block pointer the allocator handed out (see
/// `segment_map` for the `- 1`).
#[inline(always)]
pub fn of_block(p: *const u8) -> *mut Segment {
    ((p as usize).wrapping_sub(1) & !SEGMENT_MASK) as *mut Segment
}

/// Page descriptor `i` of `seg`: the segment's page table owns this
/// arithmetic (index `SMALL_PAGES_PER_SEGMENT` is the sentinel past the
/// last page). Only the address is computed; nothing is read.
///
/// # Safety
/// `seg` must point to a segment header (live or being set up) and
/// `i <= SMALL_PAGES_PER_SEGMENT`.
#[inline(always)]
pub unsafe fn page_at(seg: *mut Segment, i: usize) -> *mut Page {
    debug_assert!(i <= SMALL_PAGES_PER_SEGMENT);
    // SAFETY: per the caller, `i` indexes the header's page table, which
    // holds SMALL_PAGES_PER_SEGMENT + 1 descriptors.
    unsafe { ptr::addr_of_mut!((*seg).pages).cast::<Page>().add(i) }
}

/// The index of descriptor `page` in its segment's page table.
///
/// # Safety
/// `page` must be a descriptor of `seg`'s page table.
#[inline(always)]
pub unsafe fn page_index(seg: *mut Segment, page: *const Page) -> usize {
    // SAFETY: only addresses are compared.
    (page as usize - unsafe { ptr::addr_of!((*seg).pages) } as usize) / core::mem::size_of::<Page>()
}

/// The page descriptor of block pointer `p` in `seg`.
///
/// # Safety
/// `seg` must be a live segment and `p` a pointer in `(seg, seg + SEGMENT_SIZE]`.
#[inline(always)]
pub unsafe fn page_of(seg: *mut Segment, p: *const u8) -> *mut Page {
    // SAFETY: the offset is at most SEGMENT_SIZE, so the index is at most
    // `SEGMENT_SIZE >> page_shift <= SMALL_PAGES_PER_SEGMENT`, in bounds.
    unsafe {
        let mut idx = (p as usize - seg as usize) >> (*seg).page_shift;
        if STALE_HEADERS {
            // A stale header (see `STALE_HEADERS`) being purged
            // may read as zero: land on the sentinel, never in use.
            idx = idx.min(SMALL_PAGES_PER_SEGMENT);
        }
        page_at(seg, idx)
    }
}

/// Which kind of segment serves blocks of `bsize`.
#[inline]
pub fn kind_for(bsize: usize) -> Kind {
    if bsize <= SMALL_OBJ_MAX {
        Kind::Small
    } else if bsize <= MEDIUM_OBJ_MAX {
        Kind::Medium
    } else {
        Kind::Large
    }
}

pub fn shape(kind: Kind) -> (u8, u32) {
    match kind {
        Kind::Small => (SMALL_PAGE_SHIFT as u8, (SEGMENT_SIZE >> SMALL_PAGE_SHIFT) as u32),
        Kind::Medium => (
            MEDIUM_PAGE_SHIFT as u8,
            (SEGMENT_SIZE >> MEDIUM_PAGE_SHIFT) as u32,
        ),
        Kind::Large | Kind::Huge => (SEGMENT_SHIFT as u8 + 1, 1),
    }
}

/// The list kind of a heap's segments (links `next`/`prev`).
pub struct AllSegments;
/// The list kind of a heap's segments with a free page slot (links
/// `free_next`/`free_prev`).
pub struct WithFreeSlot;

// SAFETY: `next`/`prev` are written only by lists of all segments (and,
// after a segment left its heap's list, by the abandoned list's `next`).
unsafe impl Linked<AllSegments> for Segment {
    #[inline(always)]
    unsafe fn links(seg: *mut Segment) -> (*mut *mut Segment, *mut *mut Segment) {
        // SAFETY: `seg` is live (this fn's contract).
        unsafe { (ptr::addr_of_mut!((*seg).next), ptr::addr_of_mut!((*seg).prev)) }
    }
}

// SAFETY: for small and medium segments `free_next`/`free_prev` are
// written only by these lists (large segments' `free_next` links their
// class's open list in `large.rs`, and they are never on these).
unsafe impl Linked<WithFreeSlot> for Segment {
    #[inline(always)]
    unsafe fn links(seg: *mut Segment) -> (*mut *mut Segment, *mut *mut Segment) {
        // SAFETY: `seg` is live (this fn's contract).
        unsafe {
            (
                ptr::addr_of_mut!((*seg).free_next),
                ptr::addr_of_mut!((*seg).free_prev),
            )
        }
    }
}
