//! Segments: 4 MiB-aligned regions whose header holds the page descriptors
//! (the layout and its arithmetic are `meta::segment`): mapping them,
//! handing their page slots to heaps, purging and releasing them.
//!
//! Segments belong to one heap (`owner`); a heap keeps its segments on lists
//! (all / with a free small page / with a free medium page).

use core::ops::Range;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::core::arena;
use crate::core::heap::Heap;
use crate::core::page;
use crate::meta::constants::{SEGMENT_SIZE, SMALL_PAGES_PER_SEGMENT};
use crate::meta::guards::{Guards, Prior};
use crate::meta::list::List;
use crate::meta::page::Page;
use crate::meta::segment::{
    kind_for, of_page, page_at, page_index, shape, AllSegments, Kind, Segment, WithFreeSlot, BITMAP_OFFSET,
};
use crate::meta::segment_map;
use crate::meta::size_class;
use crate::stats::{commit_less, commit_more, commit_start};
use crate::{harden, options, os, stats};

/// Header size rounded to whole OS pages.
pub fn info_size() -> usize {
    let ps = os::page_size();
    // The bitmaps follow the descriptors, and a guard page follows them.
    let bytes = BITMAP_OFFSET + harden::BITMAP_BYTES;
    ((bytes + ps - 1) & !(ps - 1)) + harden::header_guard()
}

/// Heap-side bookkeeping of segments.
pub struct Segments {
    pub all: List<Segment, AllSegments>,
    pub small_free: List<Segment, WithFreeSlot>,
    pub medium_free: List<Segment, WithFreeSlot>,
    pub count: usize,
    /// Earliest pending purge (monotonic ms), 0 if none.
    pub purge_due: u64,
}

impl Segments {
    pub const fn new() -> Segments {
        Segments {
            all: List::new(),
            small_free: List::new(),
            medium_free: List::new(),
            count: 0,
            purge_due: 0,
        }
    }
}

/// `heap`'s segment bookkeeping.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, and no other
/// reference to its `segs` may be alive while the result is used.
#[inline(always)]
unsafe fn segs<'a>(heap: *mut Heap) -> &'a mut Segments {
    // Only the thread whose heap it is touches its segment bookkeeping.
    // SAFETY: `heap` is this thread's initialised heap, and no other
    // reference to its `segs` is alive (this fn's contract).
    unsafe { &mut (*heap).segs }
}

// ---- handles on a segment the thread owns ---------------------------------

/// A segment header the calling thread owns: a segment of its heap, one it
/// took off the abandoned list, or one it is setting up or releasing
/// alone. The ownership obligation is met once, where the handle is made;
/// each access is then a read or write of one header field, which only
/// the owner writes. Inside is a raw pointer, never a `&mut Segment`:
/// other threads read the header meanwhile (a free reads its geometry, a
/// late double free a stale one) and update its atomics. Not `Send` (a raw
/// pointer inside), so it cannot leave its thread.
#[derive(Clone, Copy)]
pub struct Owned(*mut Segment);

impl Owned {
    /// # Safety
    /// `seg` must be a live segment header whose geometry (`kind`,
    /// `page_shift`, `page_count`, `first_page`, `info_size`) is written,
    /// owned by the calling thread for as long as the handle is used.
    #[inline(always)]
    pub unsafe fn new(seg: *mut Segment) -> Owned {
        Owned(seg)
    }

    #[inline(always)]
    pub fn ptr(self) -> *mut Segment {
        self.0
    }

    #[inline(always)]
    pub fn kind(self) -> Kind {
        // SAFETY: the header is live and ours (the handle's invariant).
        unsafe { (*self.0).kind }
    }

    /// Page slots of the segment, those the header swallows included.
    #[inline(always)]
    pub fn page_count(self) -> u32 {
        // SAFETY: the header is live and ours (the handle's invariant).
        unsafe { (*self.0).page_count }
    }

    /// The first page slot the header leaves usable.
    #[inline(always)]
    pub fn first_page(self) -> u32 {
        // SAFETY: the header is live and ours (the handle's invariant).
        unsafe { (*self.0).first_page }
    }

    /// Page slots in use, counting those the header swallows.
    #[inline(always)]
    pub fn used_pages(self) -> u32 {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).used_pages }
    }

    #[inline(always)]
    fn set_used_pages(self, n: u32) {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).used_pages = n }
    }

    /// When the free pages marked for purging are due, 0 if none is.
    #[inline(always)]
    fn purge_at(self) -> u64 {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).purge_at }
    }

    #[inline(always)]
    fn set_purge_at(self, at: u64) {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).purge_at = at }
    }

    /// On its heap's list of segments with a free page slot.
    #[inline(always)]
    fn in_free_list(self) -> bool {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).in_free_list }
    }

    #[inline(always)]
    fn set_in_free_list(self, on: bool) {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).in_free_list = on }
    }

    #[inline(always)]
    fn in_arena(self) -> bool {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).in_arena }
    }

    #[inline(always)]
    fn set_in_arena(self, in_arena: bool) {
        // SAFETY: owner-only field of our header (the handle's invariant).
        unsafe { (*self.0).in_arena = in_arena }
    }

    /// Bytes mapped from the segment start.
    #[inline(always)]
    fn size(self) -> usize {
        // SAFETY: the header is live and ours (the handle's invariant).
        unsafe { (*self.0).size }
    }

    /// Log2 of the page slot size (small and medium segments).
    #[inline(always)]
    fn page_shift(self) -> u8 {
        // SAFETY: the header is live and ours (the handle's invariant).
        unsafe { (*self.0).page_shift }
    }

    #[inline(always)]
    fn info_size(self) -> usize {
        // SAFETY: the header is live and ours (the handle's invariant).
        unsafe { (*self.0).info_size }
    }

    /// The owning heap's address (0 when abandoned).
    #[inline(always)]
    fn owner(&self) -> &AtomicUsize {
        // SAFETY: the header is live (the handle's invariant); the field
        // is atomic (other threads read it meanwhile).
        unsafe { &(*self.0).owner }
    }

    /// The free slots of a segment of slots (`large.rs`).
    #[inline(always)]
    fn slots_free(&self) -> &AtomicU64 {
        // SAFETY: the header is live (the handle's invariant); the field
        // is atomic (other threads read it meanwhile).
        unsafe { &(*self.0).slots_free }
    }

    /// Bytes of the segment counted as committed.
    #[inline(always)]
    fn committed(self) -> usize {
        // SAFETY: the header is live (the handle's invariant); the count
        // is atomic.
        unsafe { (*self.0).committed.load(Ordering::Relaxed) }
    }

    /// Counts `n` more bytes of the segment as committed.
    #[inline(always)]
    fn commit_more(self, n: usize) {
        // SAFETY: the segment is live and we, its owner, keep it so (the
        // handle's invariant).
        unsafe { commit_more(self.0, n) }
    }

    /// Counts `n` fewer bytes of the segment as committed.
    #[inline(always)]
    fn commit_less(self, n: usize) {
        // SAFETY: the segment is live and we, its owner, keep it so (the
        // handle's invariant).
        unsafe { commit_less(self.0, n) }
    }

    /// The usable page slots, `first_page..page_count`.
    #[inline(always)]
    pub fn slots(self) -> impl Iterator<Item = Slot> {
        let range: Range<usize> = self.first_page() as usize..self.page_count() as usize;
        // SAFETY: `idx < page_count` of our live segment.
        range.map(move |idx| unsafe { Slot::new(self, idx) })
    }
}

/// Page slot `idx` of a segment the calling thread owns: it owns the
/// arithmetic of the slot's descriptor address and of its area's bounds,
/// and reads and writes the descriptor fields only the segment's owner
/// writes (whether the slot's guard is in place, its area dirty, its
/// purge pending). Made only with `idx < page_count`, so every address it
/// computes lies in the header's page table or the segment. It keeps the
/// descriptor's address beside the index, so a slot made from its
/// descriptor reaches it without computing it back from the index.
#[derive(Clone, Copy)]
pub struct Slot {
    seg: Owned,
    idx: usize,
    page: *mut Page,
}

impl Slot {
    /// Slot `idx` of `seg`.
    ///
    /// # Safety
    /// `idx` must be less than `seg`'s `page_count`.
    #[inline(always)]
    unsafe fn new(seg: Owned, idx: usize) -> Slot {
        // SAFETY: `idx < page_count <= SMALL_PAGES_PER_SEGMENT` (this fn's
        // contract), so it indexes the live header's page table.
        let page = unsafe { page_at(seg.ptr(), idx) };
        Slot { seg, idx, page }
    }

    /// The slot whose descriptor is `page`.
    ///
    /// # Safety
    /// `page` must be the descriptor of a page slot (not the sentinel) of
    /// a segment the calling thread owns, as for [`Owned::new`].
    #[inline(always)]
    unsafe fn of(page: *mut Page) -> Slot {
        let seg = of_page(page);
        Slot {
            // SAFETY: the segment holding `page` is live and ours (this
            // fn's contract).
            seg: unsafe { Owned::new(seg) },
            // SAFETY: `page` lies in `seg`'s page table (this fn's
            // contract).
            idx: unsafe { page_index(seg, page) },
            page,
        }
    }

    /// The segment's handle.
    #[inline(always)]
    fn segment(self) -> Owned {
        self.seg
    }

    #[inline(always)]
    fn index(self) -> usize {
        self.idx
    }

    /// The slot's descriptor.
    #[inline(always)]
    pub fn page(self) -> *mut Page {
        self.page
    }

    /// True if the slot's page hands out blocks.
    #[inline(always)]
    pub fn in_use(self) -> bool {
        // SAFETY: a descriptor of our live segment (the handle's
        // invariant); only its owner, we, changes whether it is in use.
        unsafe { (*self.page()).in_use() }
    }

    #[inline(always)]
    fn purge_pending(self) -> bool {
        // SAFETY: owner-only field of a descriptor of our segment (the
        // handle's invariant).
        unsafe { (*self.page()).purge_pending }
    }

    #[inline(always)]
    fn set_purge_pending(self, pending: bool) {
        // SAFETY: owner-only field of a descriptor of our segment (the
        // handle's invariant).
        unsafe { (*self.page()).purge_pending = pending }
    }

    /// The slot's area may hold nonzero bytes.
    #[inline(always)]
    fn area_dirty(self) -> bool {
        // SAFETY: owner-only field of a descriptor of our segment (the
        // handle's invariant).
        unsafe { (*self.page()).area_dirty }
    }

    #[inline(always)]
    fn set_area_dirty(self, dirty: bool) {
        // SAFETY: owner-only field of a descriptor of our segment (the
        // handle's invariant).
        unsafe { (*self.page()).area_dirty = dirty }
    }

    #[inline(always)]
    fn guarded(self) -> bool {
        // SAFETY: owner-only field of a descriptor of our segment (the
        // handle's invariant).
        unsafe { (*self.page()).guarded }
    }

    #[inline(always)]
    fn set_guarded(self, guarded: bool) {
        // SAFETY: owner-only field of a descriptor of our segment (the
        // handle's invariant).
        unsafe { (*self.page()).guarded = guarded }
    }

    /// The slot's area `[start, end)`.
    fn area(self) -> (usize, usize) {
        let base = self.seg.ptr() as usize;
        let span = if self.seg.page_count() == 1 {
            SEGMENT_SIZE
        } else {
            1usize << self.seg.page_shift()
        };
        // The header may reach past page 0 (the hardened build's bitmap
        // makes it 76 KiB): no page area may overlap it.
        let start = (base + self.idx * span).max(base + self.seg.info_size());
        (start, base + (self.idx + 1) * span)
    }

    /// Bytes of the slot counted as committed: its area, but for its
    /// guard, unless it reads zero (fresh or purged, and not used since:
    /// its pages are then untouched, and counted when it is used).
    fn committed(self) -> usize {
        if !self.area_dirty() {
            return 0;
        }
        let (s, e) = self.area();
        let guard = if self.guarded() { harden::page_guard() } else { 0 };
        (e - s).saturating_sub(guard)
    }
}

/// Writes the header of a segment (fresh or recycled) for `kind`.
///
/// # Safety
/// `seg` must be a mapped segment that nobody else uses; its page
/// descriptors must all be reset (or zero).
unsafe fn init_header(seg: *mut Segment, heap: *mut Heap, kind: Kind) {
    let (shift, count) = shape(kind);
    let info = info_size();
    // Pages the header swallows whole (with very large OS pages, or the
    // hardened build's bitmaps) are never used.
    let swallowed = if count > 1 { (info >> shift) as u32 } else { 0 };
    // SAFETY: `seg` is mapped and nobody else uses it (this fn's
    // contract), so its header is ours to write.
    unsafe {
        (*seg).owner.store(heap as usize, Ordering::Relaxed);
        (*seg).kind = kind;
        (*seg).page_shift = shift;
        (*seg).page_count = count;
        (*seg).purge_at = 0;
        (*seg).size = SEGMENT_SIZE;
        (*seg).info_size = info;
        (*seg).block_offset = 0;
        (*seg).guard_layout = 0;
        (*seg).kept_guards.store(0, Ordering::Relaxed);
    }
    // SAFETY: as just above, `seg` is mapped and ours alone (this fn's
    // contract); it is on no list yet, and no page of it is in use.
    unsafe {
        (*seg).next = ptr::null_mut();
        (*seg).prev = ptr::null_mut();
        (*seg).free_next = ptr::null_mut();
        (*seg).free_prev = ptr::null_mut();
        (*seg).in_free_list = false;
        (*seg).first_page = swallowed;
        (*seg).used_pages = swallowed;
    }
}

/// Memory for a segment of `size` bytes (a multiple of the segment size),
/// segment-aligned, from an arena or else mapped on its own.
pub struct Fresh {
    pub seg: *mut Segment,
    pub zero: bool,
    /// Bytes of it counted as committed already (see `arena::Span`): the
    /// caller's [`commit_start`] takes them over.
    pub committed: usize,
    pub in_arena: bool,
    pub prior: Prior,
    /// With [`Prior::Guarded`]: which guards of the layout asked for are
    /// in place (see `Guards`).
    pub guards: u64,
    /// The guard after its header is in place.
    pub header_guarded: bool,
}

/// The guard layout a segment of `kind` leaves behind and looks for (see
/// `Guards`): small and medium segments of the hardened build.
fn layout(kind: Kind) -> u8 {
    harden::guard_layout(kind)
}

/// Gets memory for a segment and records it in the segment map. `whole`:
/// all of it is used at once (small, medium and large segments), else
/// only its header until the caller opens its block (see
/// `harden::guard`). `want`: the guard layout to look for first (see
/// [`layout`], `harden::large_layout`).
pub fn os_alloc(size: usize, whole: bool, want: u8) -> Option<Fresh> {
    let fresh = match arena::alloc(size, want) {
        Some(span) => Fresh {
            seg: span.ptr.cast(),
            zero: span.zero,
            committed: span.committed,
            in_arena: true,
            prior: span.prior,
            guards: span.guards,
            header_guarded: false,
        },
        None => {
            let p = os::map_aligned(size, SEGMENT_SIZE);
            if p.is_null() {
                return None;
            }
            stats::RESERVED.increase(size);
            // SAFETY: the mapping was just made.
            unsafe { os::advise_huge_pages(p, size) };
            Fresh {
                seg: p.cast(),
                zero: true,
                committed: 0,
                in_arena: false,
                prior: Prior::Open,
                guards: 0,
                header_guarded: false,
            }
        }
    };
    if harden::STALE_SEGMENTS {
        // Stale entries of segments that used this memory before.
        segment_map::remove_range(fresh.seg as usize, size);
    }
    let mut fresh = fresh;
    // SAFETY: the memory was just taken and is ours alone.
    let taken = unsafe { harden::segment_taken(fresh.seg.cast(), size, info_size(), fresh.prior, whole) };
    let Some(header_guarded) = taken else {
        // Its seals or guards could not come off (the process is at its
        // mapping limit): the span goes back, its protection unknown, and
        // this allocation fails.
        // SAFETY: the span came from its arena just now (only arena spans
        // have guards to remove) and nothing uses it.
        unsafe { arena::free(fresh.seg.cast(), size, false, Guards::default(), fresh.committed) };
        return None;
    };
    fresh.header_guarded = header_guarded;
    segment_map::insert(fresh.seg);
    stats::SEGMENTS.increase(1);
    Some(fresh)
}

/// Forgets the segment `seg` of `size` bytes that [`os_alloc`] just took
/// from an arena, whose block could not be opened (the process is at its
/// mapping limit), and gives its span back with its protection unknown,
/// so its next user removes every guard it may hold. `committed`: the
/// bytes of it counted as committed when it was taken
/// ([`Fresh::committed`]), which the arena counts again.
///
/// # Safety
/// `seg` must be a segment from [`os_alloc`] taken from an arena, of `size`
/// bytes, that nothing uses: none of its blocks was handed out.
pub unsafe fn os_give_back(seg: *mut Segment, size: usize, committed: usize) {
    // Out of the map first, so no pointer into it passes a free's check
    // while its header, set up, sits in the arena.
    segment_map::remove(seg);
    stats::SEGMENTS.decrease(1);
    // SAFETY: a span of `size` bytes from an arena that nothing uses
    // (this fn's contract).
    unsafe { arena::free(seg.cast(), size, false, Guards::default(), committed) };
}

/// Forgets a segment and gives its memory back (to its arena, whose pages
/// are purged after the delay, or to the OS).
///
/// # Safety
/// Nothing may refer to the segment or its blocks any more.
pub unsafe fn os_free(seg: *mut Segment) {
    stats::SEGMENTS.decrease(1);
    // SAFETY: nothing refers to the segment any more (this fn's contract),
    // so its set-up header is ours alone.
    let s = unsafe { Owned::new(seg) };
    let size = s.size();
    // Read while the header is ours: once in the arena, the memory is
    // the next user's.
    let committed = s.committed();
    if !(s.in_arena() && harden::STALE_SEGMENTS) {
        segment_map::remove(seg);
    }
    if s.in_arena() {
        // A small or medium segment leaves its page guards for the next
        // one of its kind (its freed blocks were wiped by zero-on-free;
        // only large and huge blocks must become inaccessible at free),
        // and so do large and huge segments whose freed blocks are not
        // sealed: their guards stay where they are either way.
        let guards = guards_left(s);
        let released = if guards.layout == 0 {
            // SAFETY: the header is still set up, and nothing uses the
            // segment's blocks any more (this fn's contract).
            unsafe { harden::segment_released(seg.cast(), size, info_size()) }
        } else {
            harden::Released::Open
        };
        // A sealed or dropped body is committed no more: the header
        // alone is. Whatever a segment counted past its size (see
        // `huge::grow_in_place`) ends here too.
        let kept = match released {
            harden::Released::Open => committed.min(size),
            _ => committed.min(info_size()),
        };
        stats::COMMITTED.decrease(committed - kept);
        let sealed = released == harden::Released::Sealed;
        // SAFETY: the segment's `size` bytes are a span from its arena
        // (`in_arena`) that nothing uses any more (this fn's contract).
        unsafe { arena::free(seg.cast(), size, sealed, guards, kept) };
    } else {
        // SAFETY: the segment's `size` bytes were mapped on their own (not
        // `in_arena`), and nothing uses them any more (this fn's contract).
        unsafe { os::unmap(seg.cast(), size) };
        stats::RESERVED.decrease(size);
        stats::COMMITTED.decrease(committed);
    }
}

const _: () = assert!(SMALL_PAGES_PER_SEGMENT <= 64, "a slot mask is one u64");

/// What a segment being released (all its pages free) leaves guarded: its
/// layout, and which of its guards are in place (small and medium ones
/// only as long as the arena keeps their guards instead of a seal).
fn guards_left(seg: Owned) -> Guards {
    if matches!(seg.kind(), Kind::Large | Kind::Huge) {
        // SAFETY: the header is live and ours (the handle's invariant).
        let (layout, mask) = unsafe {
            (
                (*seg.ptr()).guard_layout,
                (*seg.ptr()).kept_guards.load(Ordering::Relaxed),
            )
        };
        let left = Guards { layout, mask };
        return if left.known() { left } else { Guards::default() };
    }
    let layout = layout(seg.kind());
    if layout == 0 || !arena::keep_guards() {
        return Guards::default();
    }
    let mut mask = 0u64;
    for slot in seg.slots() {
        if slot.guarded() {
            mask |= 1 << slot.index();
        }
    }
    Guards { layout, mask }
}

// ---- the heap's lists -----------------------------------------------------

/// # Safety
/// `seg` must be a segment of this heap, and not on the list.
unsafe fn all_push(segs: &mut Segments, seg: Owned) {
    // The list's nodes are this heap's live segments.
    // SAFETY: `seg` is live (the handle's invariant) and on no list of all
    // segments (this fn's contract).
    unsafe { segs.all.push_front(seg.ptr()) };
    segs.count += 1;
}

/// # Safety
/// `seg` must be on the `all` list.
unsafe fn all_remove(segs: &mut Segments, seg: Owned) {
    // SAFETY: `seg` is on this list (this fn's contract), whose nodes are
    // this heap's live segments.
    unsafe { segs.all.remove(seg.ptr()) };
    segs.count -= 1;
}

/// Whether one of the heap's segments has a free page slot for a page of
/// `kind` (large pages fill a segment, so never).
pub fn has_free_slot(segs: &Segments, kind: Kind) -> bool {
    match kind {
        Kind::Small => !segs.small_free.is_empty(),
        Kind::Medium => !segs.medium_free.is_empty(),
        Kind::Large | Kind::Huge => false,
    }
}

fn free_list(segs: &mut Segments, kind: Kind) -> &mut List<Segment, WithFreeSlot> {
    if kind == Kind::Small {
        &mut segs.small_free
    } else {
        &mut segs.medium_free
    }
}

/// # Safety
/// `seg` must be a small or medium segment of this heap.
unsafe fn free_push(segs: &mut Segments, seg: Owned) {
    if seg.in_free_list() {
        return;
    }
    // The list's nodes are this heap's live segments; `seg` is on none
    // (`in_free_list` is false).
    // SAFETY: `seg` is live (the handle's invariant), a small or medium
    // segment of this heap (this fn's contract), on no such list.
    unsafe { free_list(segs, seg.kind()).push_front(seg.ptr()) };
    seg.set_in_free_list(true);
}

/// # Safety
/// `seg` must be a segment of this heap.
unsafe fn free_remove(segs: &mut Segments, seg: Owned) {
    if !seg.in_free_list() {
        return;
    }
    // SAFETY: `seg` is on the list of its kind (`in_free_list`), this
    // heap's (this fn's contract), whose nodes are its live segments.
    unsafe { free_list(segs, seg.kind()).remove(seg.ptr()) };
    seg.set_in_free_list(false);
}

// ---- segments of a heap ---------------------------------------------------

/// Gets an empty segment for `heap` set up for `kind`.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn alloc(heap: *mut Heap, kind: Kind) -> *mut Segment {
    let Some(fresh) = os_alloc(SEGMENT_SIZE, true, layout(kind)) else {
        return ptr::null_mut();
    };
    let seg = fresh.seg;
    // Zeroed descriptors read as "not in use"; reused memory may hold
    // anything (a huge block's data), so its descriptors are reset first.
    if !fresh.zero {
        for i in 0..=SMALL_PAGES_PER_SEGMENT {
            // SAFETY: the segment is new and ours alone; `i` indexes its
            // page table, sentinel included.
            unsafe { ptr::write(page_at(seg, i), Page::empty()) };
        }
    }
    // SAFETY: the segment is new, mapped and ours alone, its descriptors
    // reset or zero.
    unsafe { init_header(seg, heap, kind) };
    // SAFETY: its header was just set up for `heap`, this thread's (this
    // fn's contract).
    let s = unsafe { Owned::new(seg) };
    s.set_in_arena(fresh.in_arena);
    if fresh.prior == Prior::Guarded {
        // The last segment here had this layout and left these guards.
        for slot in s.slots() {
            slot.set_guarded(fresh.guards & (1 << slot.index()) != 0);
        }
    }
    // The header, and every slot unless the memory is zero: then its
    // slots are counted as pages take them.
    let mut committed = s.info_size();
    for slot in s.slots() {
        committed += slot.committed();
    }
    // SAFETY: the segment was just set up and is nobody else's yet.
    unsafe { commit_start(seg, fresh.committed, committed) };
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let segs = unsafe { segs(heap) };
    // SAFETY: the new segment is now `heap`'s, and on no list yet.
    unsafe { all_push(segs, s) };
    if kind == Kind::Small || kind == Kind::Medium {
        // SAFETY: a small or medium segment of `heap`.
        unsafe { free_push(segs, s) };
    }
    seg
}

/// Adopts a segment (reclaimed from another thread) into `heap`'s lists.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, and `seg` an
/// abandoned segment now exclusively taken by the caller.
pub unsafe fn adopt(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: `seg` is a set-up segment the caller took off the abandoned
    // list, so it is ours alone (this fn's contract).
    let seg = unsafe { Owned::new(seg) };
    seg.owner().store(heap as usize, Ordering::Release);
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let segs = unsafe { segs(heap) };
    seg.set_in_free_list(false);
    // SAFETY: `seg` is now `heap`'s; it left the abandoned list, which
    // shares the `all` links, so it is on no such list.
    unsafe { all_push(segs, seg) };
    if (seg.kind() == Kind::Small || seg.kind() == Kind::Medium) && seg.used_pages() < seg.page_count() {
        // SAFETY: a small or medium segment of `heap`.
        unsafe { free_push(segs, seg) };
    }
    let due = seg.purge_at();
    if due != 0 && (segs.purge_due == 0 || due < segs.purge_due) {
        segs.purge_due = due;
    }
}

/// Detaches `seg` from `heap`'s lists before it is abandoned.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap and `seg` one of
/// its segments.
pub unsafe fn detach(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: `seg` is a segment of `heap`, this thread's heap (this fn's
    // contract), so it is ours.
    let seg = unsafe { Owned::new(seg) };
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let segs = unsafe { segs(heap) };
    // SAFETY: `seg` is `heap`'s (this fn's contract), so on its `all`
    // list, and on its free list exactly when `in_free_list` says so.
    unsafe {
        free_remove(segs, seg);
        all_remove(segs, seg);
    }
    seg.owner().store(0, Ordering::Release);
}

/// Takes a fresh page for blocks of bin `bin` and sets it up for `heap`.
/// Returns null when out of memory.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn page_alloc(heap: *mut Heap, bin: usize) -> *mut Page {
    let bsize = size_class::BLOCK_SIZE[bin];
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let seg = unsafe { segment_with_free_page(heap, kind_for(bsize)) };
    if seg.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a live segment of `heap`, which is this thread's.
    let seg = unsafe { Owned::new(seg) };
    // SAFETY: `segment_with_free_page` returns a segment with a free page.
    let slot = unsafe { free_slot(seg) };
    // The slot is taken here by the owner (no other thread changes the
    // segment's page bookkeeping).
    seg.set_used_pages(seg.used_pages() + 1);
    if seg.used_pages() == seg.page_count() {
        // SAFETY: `seg` is a segment of `heap`, this thread's initialised
        // heap (this fn's contract).
        unsafe { free_remove(segs(heap), seg) };
    }
    let (area_start, area_end) = slot.area();
    let was_committed = slot.committed();
    let (start, reserved) = blocks_of_area(seg.ptr() as usize, area_start, area_end, bsize);
    // The page is free and ours, so its descriptor is set up here alone.
    let page = slot.page();
    if reserved > 0 {
        // SAFETY: the free slot's descriptor is ours, and `blocks_of_area`
        // left its area's last OS page out of the blocks in the guard
        // build (without it, `page_slot` does nothing).
        unsafe { harden::page_slot(page, area_end) };
    }
    // SAFETY: the blocks lie in the slot's area of our live segment, and
    // the slot was free, so none of them is live.
    unsafe { harden::clear_live_bits(start, start + reserved * bsize) };
    // SAFETY: the free slot's descriptor is ours alone, and its `reserved`
    // blocks lie in its area (`blocks_of_area`).
    unsafe { page::init(page, heap, bin as u8, bsize, start as *mut u8, reserved) };
    // A slot that read zero is counted again; one that just got its
    // guard counts the guard no more.
    let committed = slot.committed();
    if committed >= was_committed {
        seg.commit_more(committed - was_committed);
    } else {
        seg.commit_less(was_committed - committed);
    }
    stats::PAGES.increase(1);
    stats::IN_USE.increase(reserved * bsize);
    if reserved == 0 {
        // Only possible for a huge OS page size; leave the page marked
        // used with no blocks so it is never picked again.
        // SAFETY: `heap` is this thread's initialised heap (this fn's
        // contract).
        return unsafe { page_alloc(heap, bin) };
    }
    page
}

/// One of `heap`'s segments of `kind` with a free page, or a new one; null
/// when out of memory.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn segment_with_free_page(heap: *mut Heap, kind: Kind) -> *mut Segment {
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let segs = unsafe { segs(heap) };
    let listed = match kind {
        Kind::Small => segs.small_free.first,
        Kind::Medium => segs.medium_free.first,
        _ => ptr::null_mut(),
    };
    if !listed.is_null() {
        return listed;
    }
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    unsafe { alloc(heap, kind) }
}

/// The free page slot of `seg` to take: one still awaiting its purge if
/// any (its memory is resident, so reusing it saves both the purge and the
/// page faults after), else the first.
///
/// # Safety
/// `seg` must have a free page slot.
unsafe fn free_slot(seg: Owned) -> Slot {
    let mut idx = usize::MAX;
    for slot in seg.slots() {
        if !slot.in_use() {
            if slot.purge_pending() {
                return slot;
            }
            idx = idx.min(slot.index());
        }
    }
    debug_assert!(idx < seg.page_count() as usize);
    // SAFETY: `seg` has a free slot (this fn's contract), so the walk
    // found one: `idx < page_count`.
    unsafe { Slot::new(seg, idx) }
}

/// Where the blocks of `bsize` bytes of the page area `[area_start,
/// area_end)` of the segment at `seg` start, and how many fit. Blocks sit
/// at start + k * bsize: aligning the start to the largest power of two
/// dividing `bsize` makes every block naturally aligned. The hardened
/// build keeps the area's last OS page as a guard (its large blocks are
/// not on pages: see `large.rs`).
fn blocks_of_area(seg: usize, area_start: usize, area_end: usize, bsize: usize) -> (usize, usize) {
    let natural = 1usize << bsize.trailing_zeros();
    let align = natural.min(area_end - seg);
    let start = (area_start + align - 1) & !(align - 1);
    // No guard (0 bytes) without guard pages.
    let blocks_end = area_end - harden::page_guard();
    let reserved = if start < blocks_end {
        (blocks_end - start) / bsize
    } else {
        0
    };
    (start, reserved)
}

/// Gives a page whose blocks are all free back to its segment, scheduling
/// its memory to return to the OS after the purge delay.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, and `page` an
/// in-use page of it with `used == 0`, on no queue.
pub unsafe fn page_free(heap: *mut Heap, page: *mut Page) {
    // SAFETY: `page` is in use by `heap`, this thread's heap (this fn's
    // contract), so it is a slot of a segment this thread owns.
    let slot = unsafe { Slot::of(page) };
    let seg = slot.segment();
    stats::PAGES.decrease(1);
    // SAFETY: the geometry of an in-use page of ours (this fn's contract)
    // is set, and only we change it.
    stats::IN_USE.decrease(unsafe { (*page).reserved as usize * (*page).block_size });
    // SAFETY: the page is ours and on no queue, its blocks all free (this
    // fn's contract).
    unsafe { page::reset(page) };
    let was_full = seg.used_pages() == seg.page_count();
    seg.set_used_pages(seg.used_pages() - 1);
    if seg.used_pages() == seg.first_page() {
        // SAFETY: a segment of `heap` whose last page in use was just
        // reset.
        unsafe { free_segment(heap, seg) };
        return;
    }
    let delay = options::purge_delay_ms();
    if delay == 0 {
        let (s, e) = slot.area();
        // SAFETY: the slot's area is page-aligned memory of our live
        // segment, and its page was just reset: no block lives there.
        unsafe { os::purge(s as *mut u8, e - s) };
        seg.commit_less(slot.committed());
        slot.set_area_dirty(false);
    } else {
        let due = os::recent_ms() + delay;
        slot.set_purge_pending(true);
        seg.set_purge_at(due);
        // SAFETY: `heap` is this thread's initialised heap (this fn's
        // contract).
        let segs = unsafe { segs(heap) };
        if segs.purge_due == 0 || due < segs.purge_due {
            segs.purge_due = due;
        }
    }
    if was_full && seg.kind() != Kind::Large {
        // SAFETY: a small or medium segment of `heap`, this thread's
        // initialised heap (this fn's contract).
        unsafe { free_push(segs(heap), seg) };
    }
}

/// Releases an empty segment.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap, and `seg` one of
/// its segments with no page in use.
unsafe fn free_segment(heap: *mut Heap, seg: Owned) {
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let segs = unsafe { segs(heap) };
    // SAFETY: `seg` is on `heap`'s lists (this fn's contract), and once
    // off them nothing refers to it: no page of it is in use.
    unsafe {
        free_remove(segs, seg);
        all_remove(segs, seg);
        os_free(seg.ptr());
    }
}

/// Purges the marked free pages of every segment whose delay has passed
/// (of all segments with `force`), and records when the next one falls due.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn purge_expired(heap: *mut Heap, now: u64, force: bool) {
    let mut next_due = 0u64;
    // SAFETY: `heap` is this thread's initialised heap (this fn's
    // contract).
    let segs = unsafe { segs(heap) };
    let mut seg = segs.all.first;
    while !seg.is_null() {
        // SAFETY: a segment on `heap`'s list is live and this thread's.
        let s = unsafe { Owned::new(seg) };
        let due = s.purge_at();
        if due != 0 {
            if force || due <= now {
                purge_marked_pages(s);
            } else if next_due == 0 || due < next_due {
                next_due = due;
            }
        }
        // SAFETY: `seg` is a live node of `heap`'s list of all segments.
        seg = unsafe { List::<Segment, AllSegments>::next(seg) };
    }
    segs.purge_due = next_due;
}

/// Returns the memory of every free page of `seg` marked for purging,
/// one `madvise` per run of adjacent pages.
fn purge_marked_pages(seg: Owned) {
    let mut run: Option<(usize, usize)> = None;
    let mut purged = 0;
    for slot in seg.slots() {
        let committed = slot.committed();
        if !slot.in_use() && slot.purge_pending() {
            purged += committed;
            slot.set_purge_pending(false);
            // Purged just below: the area reads as zero again.
            slot.set_area_dirty(false);
            let (s, e) = slot.area();
            run = match run {
                Some((rs, re)) if re == s => Some((rs, e)),
                Some((rs, re)) => {
                    // SAFETY: the areas of free slots of our live segment:
                    // page-aligned, mapped, and holding no block.
                    unsafe { os::purge(rs as *mut u8, re - rs) };
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
    }
    if let Some((rs, re)) = run {
        // SAFETY: the areas of free slots of our live segment:
        // page-aligned, mapped, and holding no block.
        unsafe { os::purge(rs as *mut u8, re - rs) };
    }
    seg.commit_less(purged);
    seg.set_purge_at(0);
}

/// Writes the header of a segment of slots (`large.rs`) for blocks of bin
/// `bin`, all free, and returns where they start and how many there are.
/// `zero`: its memory reads zero, bitmaps included, and they are left
/// untouched (clearing them wrote up to 32 OS pages nothing reads).
///
/// # Safety
/// `seg` must be a fresh segment from [`os_alloc`] nobody else uses; with
/// `zero`, reading zero past its header's fields.
pub unsafe fn init_slots(seg: *mut Segment, bin: usize, zero: bool) -> (*mut u8, usize) {
    let bsize = size_class::BLOCK_SIZE[bin];
    // SAFETY: `seg` is fresh from `os_alloc`, mapped, and nobody else's
    // (this fn's contract).
    unsafe { init_header(seg, ptr::null_mut(), Kind::Large) };
    // SAFETY: the header was just set up, and the segment is ours alone
    // (this fn's contract).
    let seg = unsafe { Owned::new(seg) };
    // SAFETY: a large segment has one page slot.
    let slot = unsafe { Slot::new(seg, 0) };
    let (area_start, area_end) = slot.area();
    // As in `page_alloc`: blocks aligned as their size allows.
    let natural = 1usize << bsize.trailing_zeros();
    let align = natural.min(area_end - seg.ptr() as usize);
    let start = (area_start + align - 1) & !(align - 1);
    let count = if start < area_end {
        ((area_end - start) / bsize).min(64)
    } else {
        0
    };
    let page = slot.page();
    if !zero {
        // SAFETY: the slots lie in the area of our fresh segment, where no
        // block is live yet.
        unsafe { harden::clear_live_bits(start, start + count * bsize) };
    }
    // SAFETY: the fresh segment's descriptor is ours alone, and the
    // `count` slots lie in its area.
    unsafe { page::init(page, ptr::null_mut(), bin as u8, bsize, start as *mut u8, count) };
    // Every slot is a block start: the free check passes them, and the
    // live bits tell a free one from a live one.
    // SAFETY: the descriptor was just set up; `capacity` is atomic.
    unsafe { (*page).capacity.store(count as u32, Ordering::Relaxed) };
    seg.set_used_pages(1);
    let all = if count == 64 {
        u64::MAX
    } else {
        (1u64 << count) - 1
    };
    seg.slots_free().store(all, Ordering::Relaxed);
    (start as *mut u8, count)
}

/// Writes the header of a huge segment of `size` mapped bytes whose single
/// block starts `offset` bytes in.
///
/// # Safety
/// `seg` must be a mapped huge segment nobody else uses, with at least
/// `offset` + one OS page mapped.
pub unsafe fn init_huge(seg: *mut Segment, size: usize, offset: usize, block_size: usize) {
    // SAFETY: `seg` is mapped and nobody else's (this fn's contract), so
    // its header is ours to write.
    unsafe {
        init_header(seg, ptr::null_mut(), Kind::Huge);
        (*seg).size = size;
        (*seg).block_offset = offset;
        (*seg).used_pages = 1;
    }
    // SAFETY: descriptor 0 of the header just written, ours alone; the
    // block, `offset` bytes in, is mapped (this fn's contract).
    unsafe { page::init_single(page_at(seg, 0), block_size, (seg as *mut u8).add(offset)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alloc::{collect, free, malloc};
    use crate::meta::constants::SMALL_PAGE_SHIFT;
    use crate::meta::segment::of_block;

    /// What `seg` should count as committed, from its descriptors.
    fn recount(seg: Owned) -> usize {
        let mut n = seg.info_size();
        for slot in seg.slots() {
            n += slot.committed();
        }
        n
    }

    #[test]
    fn a_segment_counts_its_pages_until_purged_and_again_when_reused() {
        // Small pages of this thread's heap, in one segment kept alive by
        // the first block; only this thread changes it.
        let first = malloc(2000);
        let seg = of_block(first);
        let count = || {
            // SAFETY: the segment lives while `first` does, and is this
            // thread's.
            let s = unsafe { Owned::new(seg) };
            (s.committed(), recount(s))
        };
        let fill = || -> std::vec::Vec<usize> { (0..400).map(|_| malloc(2000) as usize).collect() };
        let blocks = fill();
        let ours = blocks
            .iter()
            .filter(|&&p| of_block(p as *const u8) == seg)
            .count();
        assert!(ours > 100, "{ours} blocks in the segment");
        let (full, expected) = count();
        assert_eq!(full, expected, "pages taken");
        for &p in &blocks {
            // SAFETY: live blocks, freed once.
            unsafe { free(p as *mut u8) };
        }
        // Empties the quarantine (if any), releases the empty pages and
        // purges them all.
        collect(true);
        let (purged, expected) = count();
        assert_eq!(purged, expected, "pages purged");
        assert!(
            purged + 4 * (1 << SMALL_PAGE_SHIFT) <= full,
            "the purges took {full} down to {purged}"
        );
        let again = fill();
        let (reused, expected) = count();
        assert_eq!(reused, expected, "purged pages taken again");
        assert!(
            reused >= purged + 4 * (1 << SMALL_PAGE_SHIFT),
            "{purged} -> {reused}"
        );
        for p in again.into_iter().chain([first as usize]) {
            // SAFETY: live blocks, freed once.
            unsafe { free(p as *mut u8) };
        }
    }

    #[test]
    fn a_count_never_falls_below_zero() {
        let layout = core::alloc::Layout::new::<Segment>();
        // SAFETY: a zeroed header of our own, never a real segment.
        unsafe {
            let seg = std::alloc::alloc_zeroed(layout) as *mut Segment;
            assert!(!seg.is_null());
            commit_more(seg, 100);
            commit_less(seg, 150);
            assert_eq!((*seg).committed.load(Ordering::Relaxed), 0);
            std::alloc::dealloc(seg.cast(), layout);
        }
    }
}
