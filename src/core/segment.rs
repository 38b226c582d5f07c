//! Segments: 4 MiB-aligned regions whose header holds the page descriptors
//! (the layout and its arithmetic are `meta::segment`): mapping them,
//! handing their page slots to heaps, purging and releasing them.
//!
//! Segments belong to one heap (`owner`); a heap keeps its segments on lists
//! (all / with a free small page / with a free medium page).

use core::ptr;
use core::sync::atomic::Ordering;

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

/// Writes the header of a segment (fresh or recycled) for `kind`.
///
/// # Safety
/// `seg` must be a mapped segment that nobody else uses; its page
/// descriptors must all be reset (or zero).
unsafe fn init_header(seg: *mut Segment, heap: *mut Heap, kind: Kind) {
    let (shift, count) = shape(kind);
    let info = info_size();
    // SAFETY: exclusive access to the header per the caller.
    unsafe {
        (*seg).owner.store(heap as usize, Ordering::Relaxed);
        (*seg).kind = kind;
        (*seg).page_shift = shift;
        (*seg).page_count = count;
        (*seg).purge_at = 0;
        (*seg).size = SEGMENT_SIZE;
        (*seg).info_size = info;
        (*seg).block_offset = 0;
        (*seg).next = ptr::null_mut();
        (*seg).prev = ptr::null_mut();
        (*seg).free_next = ptr::null_mut();
        (*seg).free_prev = ptr::null_mut();
        (*seg).in_free_list = false;
        // Pages the header swallows whole (with very large OS pages, or the
        // hardened build's bitmaps) are never used.
        let swallowed = if count > 1 { (info >> shift) as u32 } else { 0 };
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
    /// With [`Prior::Guarded`]: the page slots whose guard is in place.
    pub guards: u64,
}

/// The guard layout a segment of `kind` leaves behind and looks for (see
/// `Guards`): small and medium segments of the hardened build.
fn layout(kind: Kind) -> u8 {
    match kind {
        Kind::Small | Kind::Medium if harden::GUARD_PAGES => kind as u8 + 1,
        _ => 0,
    }
}

/// Gets memory for a segment and records it in the segment map. `whole`:
/// all of it is used at once (small and medium segments), else only its
/// header until the caller opens its block (see `harden::guard`). `want`:
/// the guard layout to look for first (see [`layout`]).
pub fn os_alloc(size: usize, whole: bool, want: u8) -> Option<Fresh> {
    let fresh = match arena::alloc(size, want) {
        Some(span) => Fresh {
            seg: span.ptr.cast(),
            zero: span.zero,
            committed: span.committed,
            in_arena: true,
            prior: span.prior,
            guards: span.guards,
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
            }
        }
    };
    if harden::STALE_SEGMENTS {
        // Stale entries of segments that used this memory before.
        segment_map::remove_range(fresh.seg as usize, size);
    }
    // SAFETY: the memory was just taken and is ours alone.
    unsafe { harden::segment_taken(fresh.seg.cast(), size, info_size(), fresh.prior, whole) };
    segment_map::insert(fresh.seg);
    stats::SEGMENTS.increase(1);
    Some(fresh)
}

/// Forgets a segment and gives its memory back (to its arena, whose pages
/// are purged after the delay, or to the OS).
///
/// # Safety
/// Nothing may refer to the segment or its blocks any more.
pub unsafe fn os_free(seg: *mut Segment) {
    stats::SEGMENTS.decrease(1);
    // SAFETY: the caller guarantees the segment is dead; `size` covers the
    // whole memory starting at the segment.
    unsafe {
        let size = (*seg).size;
        // Read while the header is ours: once in the arena, the memory is
        // the next user's.
        let committed = (*seg).committed.load(Ordering::Relaxed);
        if !((*seg).in_arena && harden::STALE_SEGMENTS) {
            segment_map::remove(seg);
        }
        if (*seg).in_arena {
            // A small or medium segment leaves its page guards for the next
            // one of its kind (its freed blocks were wiped by zero-on-free;
            // only large and huge blocks must become inaccessible at free).
            let guards = if arena::keep_guards() {
                guards_left(seg)
            } else {
                Guards::default()
            };
            let released = if guards.layout == 0 {
                harden::segment_released(seg.cast(), size, info_size())
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
            arena::free(
                seg.cast(),
                size,
                released == harden::Released::Sealed,
                guards,
                kept,
            );
        } else {
            os::unmap(seg.cast(), size);
            stats::RESERVED.decrease(size);
            stats::COMMITTED.decrease(committed);
        }
    }
}

/// Bytes of page slot `idx` of `seg` counted as committed: its area, but
/// for its guard, unless it reads zero (fresh or purged, and not used
/// since: its pages are then untouched, and counted when it is used).
///
/// # Safety
/// `seg` must be a live small or medium segment and `idx` one of its
/// page slots.
unsafe fn slot_committed(seg: *mut Segment, idx: usize) -> usize {
    // SAFETY: per the caller.
    unsafe {
        let page = &*page_at(seg, idx);
        if !page.area_dirty {
            return 0;
        }
        let (s, e) = page_area(seg, idx);
        let guard = if page.guarded { harden::page_guard() } else { 0 };
        (e - s).saturating_sub(guard)
    }
}

const _: () = assert!(SMALL_PAGES_PER_SEGMENT <= 64, "a slot mask is one u64");

/// What a segment being released leaves guarded: its layout, and which of
/// its page slots got their guard.
///
/// # Safety
/// `seg` must be a segment whose pages are all free.
unsafe fn guards_left(seg: *mut Segment) -> Guards {
    // SAFETY: per the caller, the header is live and ours.
    unsafe {
        let layout = layout((*seg).kind);
        if layout == 0 {
            return Guards::default();
        }
        let mut mask = 0u64;
        for i in (*seg).first_page as usize..(*seg).page_count as usize {
            if (*page_at(seg, i)).guarded {
                mask |= 1 << i;
            }
        }
        Guards { layout, mask }
    }
}

// ---- the heap's lists -----------------------------------------------------

/// # Safety
/// `seg` must be valid and not on the list.
unsafe fn all_push(segs: &mut Segments, seg: *mut Segment) {
    // SAFETY: list nodes are live segments owned by this heap.
    unsafe { segs.all.push_front(seg) };
    segs.count += 1;
}

/// # Safety
/// `seg` must be on the `all` list.
unsafe fn all_remove(segs: &mut Segments, seg: *mut Segment) {
    // SAFETY: list nodes are live segments owned by this heap.
    unsafe { segs.all.remove(seg) };
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
unsafe fn free_push(segs: &mut Segments, seg: *mut Segment) {
    // SAFETY: list nodes are live segments owned by this heap.
    unsafe {
        if (*seg).in_free_list {
            return;
        }
        free_list(segs, (*seg).kind).push_front(seg);
        (*seg).in_free_list = true;
    }
}

/// # Safety
/// `seg` must be a segment of this heap.
unsafe fn free_remove(segs: &mut Segments, seg: *mut Segment) {
    // SAFETY: list nodes are live segments owned by this heap.
    unsafe {
        if !(*seg).in_free_list {
            return;
        }
        free_list(segs, (*seg).kind).remove(seg);
        (*seg).in_free_list = false;
    }
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
    // SAFETY: the segment is new and ours.
    unsafe {
        if !fresh.zero {
            for i in 0..=SMALL_PAGES_PER_SEGMENT {
                ptr::write(page_at(seg, i), Page::empty());
            }
        }
        init_header(seg, heap, kind);
        (*seg).in_arena = fresh.in_arena;
        if fresh.prior == Prior::Guarded {
            // The last segment here had this layout and left these guards.
            for i in (*seg).first_page as usize..(*seg).page_count as usize {
                (*page_at(seg, i)).guarded = fresh.guards & (1 << i) != 0;
            }
        }
        // The header, and every slot unless the memory is zero: then its
        // slots are counted as pages take them.
        let mut committed = (*seg).info_size;
        for i in (*seg).first_page as usize..(*seg).page_count as usize {
            committed += slot_committed(seg, i);
        }
        commit_start(seg, fresh.committed, committed);
        let segs = &mut (*heap).segs;
        all_push(segs, seg);
        if kind == Kind::Small || kind == Kind::Medium {
            free_push(segs, seg);
        }
    }
    seg
}

/// Adopts a segment (reclaimed from another thread) into `heap`'s lists.
///
/// # Safety
/// `seg` must be an abandoned segment now exclusively taken by the caller.
pub unsafe fn adopt(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: exclusive access per the caller.
    unsafe {
        (*seg).owner.store(heap as usize, Ordering::Release);
        let segs = &mut (*heap).segs;
        (*seg).in_free_list = false;
        all_push(segs, seg);
        if ((*seg).kind == Kind::Small || (*seg).kind == Kind::Medium)
            && (*seg).used_pages < (*seg).page_count
        {
            free_push(segs, seg);
        }
        let due = (*seg).purge_at;
        if due != 0 && (segs.purge_due == 0 || due < segs.purge_due) {
            segs.purge_due = due;
        }
    }
}

/// Detaches `seg` from `heap`'s lists before it is abandoned.
///
/// # Safety
/// `seg` must be a segment of `heap`.
pub unsafe fn detach(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let segs = &mut (*heap).segs;
        free_remove(segs, seg);
        all_remove(segs, seg);
        (*seg).owner.store(0, Ordering::Release);
    }
}

/// Area `[start, end)` of page `idx` of `seg`.
///
/// # Safety
/// `seg` must be a live segment and `idx < page_count`.
unsafe fn page_area(seg: *mut Segment, idx: usize) -> (usize, usize) {
    // SAFETY: header fields of a live segment.
    unsafe {
        let base = seg as usize;
        let span = if (*seg).page_count == 1 {
            SEGMENT_SIZE
        } else {
            1usize << (*seg).page_shift
        };
        // The header may reach past page 0 (the hardened build's bitmap
        // makes it 76 KiB): no page area may overlap it.
        let start = (base + idx * span).max(base + (*seg).info_size);
        (start, base + (idx + 1) * span)
    }
}

/// Takes a fresh page for blocks of bin `bin` and sets it up for `heap`.
/// Returns null when out of memory.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn page_alloc(heap: *mut Heap, bin: usize) -> *mut Page {
    let bsize = size_class::BLOCK_SIZE[bin];
    // SAFETY: `heap` is this thread's, per the caller.
    let seg = unsafe { segment_with_free_page(heap, kind_for(bsize)) };
    if seg.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `seg` is a live segment of `heap` with a free page.
    let idx = unsafe { free_page_index(seg) };
    // SAFETY: as above; `idx` is a free page of `seg`, taken here by the
    // owner (no other thread changes the segment's page bookkeeping).
    unsafe {
        (*seg).used_pages += 1;
        if (*seg).used_pages == (*seg).page_count {
            free_remove(&mut (*heap).segs, seg);
        }
    }
    // SAFETY: `idx < page_count` of the live `seg`.
    let (area_start, area_end) = unsafe { page_area(seg, idx) };
    // SAFETY: as above.
    let was_committed = unsafe { slot_committed(seg, idx) };
    let (start, reserved) = blocks_of_area(seg as usize, area_start, area_end, bsize);
    // The page is free and ours, so its descriptor is set up here alone.
    // SAFETY: `idx` indexes the page table; the blocks lie in the segment.
    unsafe {
        let page = page_at(seg, idx);
        if harden::GUARD_PAGES && reserved > 0 {
            harden::page_slot(page, area_end);
        }
        harden::clear_live_bits(start, start + reserved * bsize);
        page::init(page, heap, bin as u8, bsize, start as *mut u8, reserved);
        // A slot that read zero is counted again; one that just got its
        // guard counts the guard no more.
        let committed = slot_committed(seg, idx);
        if committed >= was_committed {
            commit_more(seg, committed - was_committed);
        } else {
            commit_less(seg, was_committed - committed);
        }
        stats::PAGES.increase(1);
        stats::IN_USE.increase(reserved * bsize);
        if reserved == 0 {
            // Only possible for a huge OS page size; leave the page marked
            // used with no blocks so it is never picked again.
            return page_alloc(heap, bin);
        }
        page
    }
}

/// One of `heap`'s segments of `kind` with a free page, or a new one; null
/// when out of memory.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
unsafe fn segment_with_free_page(heap: *mut Heap, kind: Kind) -> *mut Segment {
    // SAFETY: the heap and its lists are this thread's, per the caller.
    let listed = unsafe {
        match kind {
            Kind::Small => (*heap).segs.small_free.first,
            Kind::Medium => (*heap).segs.medium_free.first,
            _ => ptr::null_mut(),
        }
    };
    if !listed.is_null() {
        return listed;
    }
    // SAFETY: as above.
    unsafe { alloc(heap, kind) }
}

/// The free page of `seg` to take: one still awaiting its purge if any
/// (its memory is resident, so reusing it saves both the purge and the
/// page faults after), else the first.
///
/// # Safety
/// `seg` must be a live segment of the calling thread with a free page.
unsafe fn free_page_index(seg: *mut Segment) -> usize {
    let mut idx = usize::MAX;
    // SAFETY: the header and descriptors of a live segment; the owner
    // alone changes which pages are in use.
    unsafe {
        for i in (*seg).first_page as usize..(*seg).page_count as usize {
            let p = &*page_at(seg, i);
            if !p.in_use() {
                if p.purge_pending {
                    return i;
                }
                idx = idx.min(i);
            }
        }
        debug_assert!(idx < (*seg).page_count as usize);
    }
    idx
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
    let blocks_end = if harden::GUARD_PAGES {
        area_end - harden::page_guard()
    } else {
        area_end
    };
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
/// `page` must be an in-use page of `heap` with `used == 0`, on no queue.
pub unsafe fn page_free(heap: *mut Heap, page: *mut Page) {
    let seg = of_page(page);
    // SAFETY: the segment and page belong to `heap`, i.e. to this thread.
    unsafe {
        stats::PAGES.decrease(1);
        stats::IN_USE.decrease((*page).reserved as usize * (*page).block_size);
        page::reset(page);
        let was_full = (*seg).used_pages == (*seg).page_count;
        (*seg).used_pages -= 1;
        if (*seg).used_pages == (*seg).first_page {
            free_segment(heap, seg);
            return;
        }
        let idx = page_index(seg, page);
        let delay = options::purge_delay_ms();
        if delay == 0 {
            let (s, e) = page_area(seg, idx);
            os::purge(s as *mut u8, e - s);
            commit_less(seg, slot_committed(seg, idx));
            (*page).area_dirty = false;
        } else {
            let due = os::recent_ms() + delay;
            (*page).purge_pending = true;
            (*seg).purge_at = due;
            let segs = &mut (*heap).segs;
            if segs.purge_due == 0 || due < segs.purge_due {
                segs.purge_due = due;
            }
        }
        if was_full && (*seg).kind != Kind::Large {
            free_push(&mut (*heap).segs, seg);
        }
    }
}

/// Releases an empty segment.
///
/// # Safety
/// `seg` must be a segment of `heap` with no page in use.
unsafe fn free_segment(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: the segment belongs to `heap`, i.e. to this thread.
    unsafe {
        let segs = &mut (*heap).segs;
        free_remove(segs, seg);
        all_remove(segs, seg);
        os_free(seg);
    }
}

/// Purges the marked free pages of every segment whose delay has passed
/// (of all segments with `force`), and records when the next one falls due.
///
/// # Safety
/// `heap` must be the calling thread's initialised heap.
pub unsafe fn purge_expired(heap: *mut Heap, now: u64, force: bool) {
    let mut next_due = 0u64;
    // SAFETY: all segments reached are owned by `heap`.
    unsafe {
        let mut seg = (*heap).segs.all.first;
        while !seg.is_null() {
            let due = (*seg).purge_at;
            if due != 0 {
                if force || due <= now {
                    purge_marked_pages(seg);
                } else if next_due == 0 || due < next_due {
                    next_due = due;
                }
            }
            seg = List::<Segment, AllSegments>::next(seg);
        }
        (*heap).segs.purge_due = next_due;
    }
}

/// Returns the memory of every free page of `seg` marked for purging,
/// one `madvise` per run of adjacent pages.
///
/// # Safety
/// `seg` must be a live segment owned by the calling thread.
unsafe fn purge_marked_pages(seg: *mut Segment) {
    // SAFETY: owner access to the segment's descriptors; the areas purged
    // belong to free pages, so no block lives there.
    unsafe {
        let mut run: Option<(usize, usize)> = None;
        let mut purged = 0;
        for idx in (*seg).first_page as usize..(*seg).page_count as usize {
            let committed = slot_committed(seg, idx);
            let page = &mut *page_at(seg, idx);
            if !page.in_use() && page.purge_pending {
                purged += committed;
                page.purge_pending = false;
                // Purged just below: the area reads as zero again.
                page.area_dirty = false;
                let (s, e) = page_area(seg, idx);
                run = match run {
                    Some((rs, re)) if re == s => Some((rs, e)),
                    Some((rs, re)) => {
                        os::purge(rs as *mut u8, re - rs);
                        Some((s, e))
                    }
                    None => Some((s, e)),
                };
            }
        }
        if let Some((rs, re)) = run {
            os::purge(rs as *mut u8, re - rs);
        }
        commit_less(seg, purged);
        (*seg).purge_at = 0;
    }
}

/// Writes the header of a segment of slots (`large.rs`) for blocks of bin
/// `bin`, all free, and returns where they start and how many there are.
///
/// # Safety
/// `seg` must be a fresh segment from [`os_alloc`] nobody else uses.
pub unsafe fn init_slots(seg: *mut Segment, bin: usize) -> (*mut u8, usize) {
    let bsize = size_class::BLOCK_SIZE[bin];
    // SAFETY: exclusive access per the caller; the slots lie in the segment.
    unsafe {
        init_header(seg, ptr::null_mut(), Kind::Large);
        let (area_start, area_end) = page_area(seg, 0);
        // As in `page_alloc`: blocks aligned as their size allows.
        let natural = 1usize << bsize.trailing_zeros();
        let align = natural.min(area_end - seg as usize);
        let start = (area_start + align - 1) & !(align - 1);
        let count = if start < area_end {
            ((area_end - start) / bsize).min(64)
        } else {
            0
        };
        let page = page_at(seg, 0);
        harden::clear_live_bits(start, start + count * bsize);
        page::init(page, ptr::null_mut(), bin as u8, bsize, start as *mut u8, count);
        // Every slot is a block start: the free check passes them, and the
        // live bits tell a free one from a live one.
        (*page).capacity.store(count as u32, Ordering::Relaxed);
        (*seg).used_pages = 1;
        let all = if count == 64 {
            u64::MAX
        } else {
            (1u64 << count) - 1
        };
        (*seg).slots_free.store(all, Ordering::Relaxed);
        (start as *mut u8, count)
    }
}

/// Writes the header of a huge segment of `size` mapped bytes whose single
/// block starts `offset` bytes in.
///
/// # Safety
/// `seg` must be a mapped huge segment nobody else uses, with at least
/// `offset` + one OS page mapped.
pub unsafe fn init_huge(seg: *mut Segment, size: usize, offset: usize, block_size: usize) {
    // SAFETY: exclusive access per the caller.
    unsafe {
        init_header(seg, ptr::null_mut(), Kind::Huge);
        (*seg).size = size;
        (*seg).block_offset = offset;
        (*seg).used_pages = 1;
        let page = page_at(seg, 0);
        page::init_single(page, block_size, (seg as *mut u8).add(offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::alloc::{collect, free, malloc};
    use crate::meta::constants::SMALL_PAGE_SHIFT;
    use crate::meta::segment::of_block;

    /// What `seg` should count as committed, from its descriptors.
    ///
    /// # Safety
    /// `seg` must be a live small or medium segment of the calling thread.
    unsafe fn recount(seg: *mut Segment) -> usize {
        // SAFETY: per the caller.
        unsafe {
            let mut n = (*seg).info_size;
            for i in (*seg).first_page as usize..(*seg).page_count as usize {
                n += slot_committed(seg, i);
            }
            n
        }
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
            unsafe { ((*seg).committed.load(Ordering::Relaxed), recount(seg)) }
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
