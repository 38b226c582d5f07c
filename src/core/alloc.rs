//! The allocation entry points: malloc, free, realloc, aligned and zeroed
//! variants, usable_size. Their fast paths are here; everything slower is
//! in `heap`.

use core::ptr;
use core::sync::atomic::Ordering;

use crate::core::heap::{self, malloc_generic};
use crate::core::page;
use crate::core::{arena, huge, large, thread};
use crate::error::{self, Entry, NotABlock};
use crate::meta::constants::{LARGE_OBJ_MAX, MAX_ALLOC, MIN_ALIGN, SIZE_ALIGN_MAX, SMALL_SIZE_MAX};
use crate::meta::page::{freed_block_size, is_block_start, is_huge, Block, Page};
use crate::meta::segment::{of_block, page_of, Kind, Segment};
use crate::meta::segment_map;
use crate::meta::size_class::{block_size_of, natural_size_for_align, wsize_of};
use crate::{harden, stats};

/// Allocates `size` bytes aligned to at least a word. Null on failure.
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    if harden::ZERO_SIZE_SLOTS && size == 0 {
        return harden::zero_size_alloc();
    }
    malloc_block(harden::padded(size), size)
}

/// Allocates a block of at least `req` bytes for a request of `size` bytes
/// (`req >= harden::padded(size)`; more when rounded up for alignment).
#[inline(always)]
fn malloc_block(req: usize, size: usize) -> *mut u8 {
    if req <= SMALL_SIZE_MAX {
        // SAFETY: just checked.
        return unsafe { malloc_small(req, size) };
    }
    if req > MAX_ALLOC {
        return ptr::null_mut();
    }
    malloc_generic(thread::heap(), req, size)
}

/// [`malloc_block`] for a request known to be small.
///
/// # Safety
/// `req` must be at most SMALL_SIZE_MAX.
#[inline(always)]
unsafe fn malloc_small(req: usize, size: usize) -> *mut u8 {
    let heap = thread::heap();
    // SAFETY: `req` <= SMALL_SIZE_MAX (this fn's contract) indexes the
    // direct table; `heap` is this thread's (maybe the empty one).
    let p = unsafe { pop_direct(heap, req, size) };
    if !p.is_null() {
        return p;
    }
    malloc_generic(heap, req, size)
}

/// Allocates `size` zeroed bytes. Null on failure.
pub fn zalloc(size: usize) -> *mut u8 {
    if harden::padded(size) > LARGE_OBJ_MAX {
        return huge_alloc(size, 0, true);
    }
    let p = malloc(size);
    if !p.is_null() {
        // SAFETY: `p` is a fresh block of at least `size` bytes.
        unsafe { clear_new(p, size) };
    }
    p
}

/// Zeroes the first `size` bytes of a block just handed out, for calloc
/// and friends: only its first word (the free-list link) where the rest is
/// known to be zero already, which spares both the memset and, for fresh
/// memory, the page faults it would take. That is every small and medium
/// block with zero-on-free (freed blocks are wiped, fresh ones zeroed or
/// fresh when carved), and otherwise a block from a page whose free list
/// held only blocks carved from fresh or purged memory (`Page::free_zero`);
/// a large block whose slot was fresh or purged, or any with zero-on-free
/// and `seal-freed-large` (`large::was_zero`: zero-on-free wipes no large
/// block without the seals). Other large blocks are cleared by
/// [`clear_large`], huge blocks whole (huge ones asked zeroed from
/// `huge::alloc` never come here).
///
/// # Safety
/// `p` must be a block just handed out by this thread, with at least
/// `size` usable bytes, and no allocation since.
#[inline(always)]
unsafe fn clear_new(p: *mut u8, size: usize) {
    // The page is this thread's, so `free_zero` still describes the list
    // `p` was taken from.
    // SAFETY: `p` has `size` usable bytes per the caller; a non-empty
    // block lies in a live segment, whose header and descriptors are read.
    unsafe {
        if size > 0 {
            let seg = of_block(p);
            let kind = (*seg).kind;
            let known_zero = match kind {
                Kind::Huge => false,
                Kind::Large => large::was_zero(seg, p),
                _ if harden::FREE_BLOCKS_READ_ZERO => true,
                _ => (*page_of(seg, p)).free_zero,
            };
            if known_zero {
                ptr::write_bytes(p, 0, size.min(crate::meta::constants::WORD));
                return;
            }
            if kind == Kind::Large {
                return clear_large(p, size);
            }
        }
        ptr::write_bytes(p, 0, size);
    }
}

/// Zeroes the first `size` bytes of a large block that is not known to be
/// zero: its whole OS pages by `harden::zero_reused`, which writes only the
/// pages that are resident and drops the runs that are not, the partial
/// pages at either end with a memset. A slot's last owner often touched a
/// few pages of it (a zeroed buffer of which it wrote a header); a memset
/// of the whole block would fault every other page in, each costing far
/// more than the `mincore` that finds them.
///
/// # Safety
/// `p` must be a large block just handed out, the caller's, with at least
/// `size` usable bytes.
#[cold]
#[inline(never)]
unsafe fn clear_large(p: *mut u8, size: usize) {
    let ps = crate::os::page_size();
    let (start, end) = ((p as usize).next_multiple_of(ps), (p as usize + size) & !(ps - 1));
    // SAFETY: `[p, p + size)` is the caller's (this fn's contract); the
    // page-aligned `[start, end)` lies inside it, mapped, and its old bytes
    // are nobody's.
    unsafe {
        if end <= start {
            ptr::write_bytes(p, 0, size);
            return;
        }
        ptr::write_bytes(p, 0, start - p as usize);
        harden::zero_reused(start as *mut u8, end - start);
        ptr::write_bytes(end as *mut u8, 0, p as usize + size - end);
    }
}

/// Huge allocations go through the heap's slow path first, so the thread's
/// deferred work (and heap setup) happens for them too.
fn huge_alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size > MAX_ALLOC {
        return ptr::null_mut();
    }
    let mut heap = thread::heap();
    if heap == heap::EMPTY_HEAP_PTR {
        heap = thread::heap_init();
        if heap.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: `heap` is this thread's initialised heap.
    unsafe { huge::alloc_for(heap, size, align, zero) }
}

/// Allocates `size` bytes aligned to `align` (a power of two; anything else
/// gives null). Alignments up to 2 MiB come from ordinary pages whose block
/// size is a multiple of `align`, so the result is a block start like any
/// other; larger ones get a huge segment.
#[inline]
pub fn malloc_aligned(size: usize, align: usize) -> *mut u8 {
    aligned(size, align, false)
}

/// [`malloc_aligned`], zeroed.
pub fn zalloc_aligned(size: usize, align: usize) -> *mut u8 {
    aligned(size, align, true)
}

/// The block size a request of `size` bytes aligned to `align` (a power
/// of two) asks the size classes for, padding included; None when it
/// needs a huge block. One function for allocating and for checking a
/// sized free, which must agree. Small requests are rounded up to the
/// alignment (see `aligned`); larger ones need nothing more up to
/// [`SIZE_ALIGN_MAX`], since every block size past the small ones is a
/// multiple of it (a `size_class` test checks it) and blocks are aligned
/// as their size allows.
#[inline(always)]
fn request_size(size: usize, align: usize) -> Option<usize> {
    let padded = harden::padded(size);
    if align <= SIZE_ALIGN_MAX {
        if size <= SMALL_SIZE_MAX {
            // A mask, not `next_multiple_of`: the compiler cannot see
            // `align` is a power of two and would divide. A zero-size
            // request rounds to 0, whose bin is the two-word one (see
            // `bin_of_wsize`).
            return Some((padded + align - 1) & !(align - 1));
        }
        return (padded <= LARGE_OBJ_MAX).then_some(padded);
    }
    natural_size_for_align(padded, align).filter(|&r| r <= LARGE_OBJ_MAX)
}

/// Alignments up to [`SIZE_ALIGN_MAX`] are met by rounding the block size
/// up to a multiple of the alignment (see `size_class`), which keeps
/// malloc's fast path; `GlobalAlloc` comes here for every `Layout` with an
/// alignment over a word, and the C library for every `malloc` over 8
/// bytes (16-byte aligned, as C requires): always inlined, so both keep a
/// fast path without a call.
#[inline(always)]
pub(crate) fn aligned(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !align.is_power_of_two() {
        return ptr::null_mut();
    }
    if align <= MIN_ALIGN {
        return if zero { zalloc(size) } else { malloc(size) };
    }
    // The C library asks for 16 on every `malloc`, `malloc(0)` included;
    // zero-size slots are 16-byte aligned.
    if harden::ZERO_SIZE_SLOTS && size == 0 && align <= harden::ZERO_SIZE_SLOT {
        return harden::zero_size_alloc();
    }
    if align > SIZE_ALIGN_MAX {
        return aligned_slow(size, align, zero);
    }
    // Past the small sizes any block will do, without `aligned_slow`'s
    // class lookup (every C malloc over 1 KiB).
    let p = match request_size(size, align) {
        Some(req) if size <= SMALL_SIZE_MAX && (SMALL_STAYS_SMALL || req <= SMALL_SIZE_MAX) => {
            // SAFETY: `req <= SMALL_SIZE_MAX`, checked or, without padding,
            // known (see the constant): the compiler cannot see it.
            unsafe { malloc_small(req, size) }
        }
        Some(req) => malloc_block(req, size),
        None => return aligned_slow(size, align, zero),
    };
    if zero && !p.is_null() {
        // SAFETY: `p` is a fresh block of at least `size` bytes.
        unsafe { clear_new(p, size) };
    }
    p
}

/// [`aligned`]'s fast path alone: a block popped from the direct table for
/// a small request, or null wherever `aligned` would go further (never
/// for lack of memory alone). A caller with work to do on failure (the C
/// library sets `errno`) calls this first and the full path only on null,
/// so its common path makes no call and needs no stack frame.
#[doc(hidden)]
#[inline(always)]
pub fn malloc_aligned_fast(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two()
        || align > SIZE_ALIGN_MAX
        || size > SMALL_SIZE_MAX
        || (harden::ZERO_SIZE_SLOTS && size == 0)
    {
        return ptr::null_mut();
    }
    let Some(req) = request_size(size, align.max(MIN_ALIGN)) else {
        return ptr::null_mut();
    };
    // Padding can take the last small sizes past the direct table.
    if !SMALL_STAYS_SMALL && req > SMALL_SIZE_MAX {
        return ptr::null_mut();
    }
    let heap = thread::heap();
    // SAFETY: `req <= SMALL_SIZE_MAX` (see `SMALL_STAYS_SMALL`, or just
    // checked) bounds the index; the heap is this thread's or the empty one.
    unsafe { pop_direct(heap, req, size) }
}

/// A block from `heap`'s direct table for a small request, or null if
/// that page has none free.
///
/// # Safety
/// `req` must be at most SMALL_SIZE_MAX and `heap` this thread's heap or
/// the empty one.
#[inline(always)]
unsafe fn pop_direct(heap: *mut heap::Heap, req: usize, size: usize) -> *mut u8 {
    // The heap is this thread's, or the static empty one (no free blocks).
    // Whatever the hardened checks refuse stays on its list for the slow
    // path, which reports it: nothing here calls out.
    // SAFETY: `wsize_of(req) <= SMALL_WSIZE_MAX` (per the caller) bounds
    // the index; a non-null `free` is a free block of a small page we own.
    unsafe {
        let page = *(*heap).direct.get_unchecked(wsize_of(req));
        let p = (*page).free;
        if p.is_null() {
            return ptr::null_mut();
        }
        let Some(next) = harden::try_link(page, p) else {
            return ptr::null_mut();
        };
        let Some(vetted) = harden::may_take(page, p as *mut u8) else {
            return ptr::null_mut();
        };
        let owned = page::Owned::new(page);
        owned.set_free(next);
        owned.taken();
        harden::taken(vetted, size);
        stats::bump(&(*heap).counters.mallocs);
        p as *mut u8
    }
}

/// A small request rounded up to SIZE_ALIGN_MAX is still small: true
/// unless the hardened build pads requests.
const SMALL_STAYS_SMALL: bool =
    (harden::padded(SMALL_SIZE_MAX) + SIZE_ALIGN_MAX - 1) & !(SIZE_ALIGN_MAX - 1) <= SMALL_SIZE_MAX;

#[inline(never)]
fn aligned_slow(size: usize, align: usize, zero: bool) -> *mut u8 {
    if !align.is_power_of_two() || size > MAX_ALLOC || align > MAX_ALLOC {
        return ptr::null_mut();
    }
    let p = match request_size(size, align) {
        Some(req) => {
            let p = malloc_block(req, size);
            if zero && !p.is_null() {
                // SAFETY: `p` is a fresh block of at least `size` bytes.
                unsafe { clear_new(p, size) };
            }
            p
        }
        _ => huge_alloc(size, align, zero),
    };
    debug_assert!((p as usize).is_multiple_of(align));
    p
}

/// Finds and checks the page of a pointer the caller claims is a live
/// block; reports `what` and aborts if it is not one. None only when the
/// hardened build found a double free and an error handler took it.
///
/// # Safety
/// `p` must be non-null. If fortalloc owns its segment, the segment must not
/// be concurrently unmapped (true for any pointer that was live).
#[inline(always)]
unsafe fn checked_page(p: *mut u8, entry: Entry) -> Option<(*mut Segment, *mut Page)> {
    let Some(seg) = segment_map::segment_of(p) else {
        error::not_a_block(entry, NotABlock::Foreign, p as usize, 0);
    };
    // SAFETY: the segment map says a live segment covers `p - 1`, so its
    // header and page descriptors are readable.
    unsafe {
        let page = page_of(seg, p);
        let off = (p as usize).wrapping_sub((*page).page_start as usize);
        if !is_block_start(page, off) {
            bad_pointer(page, off, p, entry);
            return None;
        }
        Some((seg, page))
    }
}

/// Reports a pointer that is no live block's start. Returns only for a
/// double free taken by an error handler.
///
/// # Safety
/// `page` must be the descriptor of `p`'s page in a live segment, `off`
/// the offset of `p` from that page's start.
#[cold]
#[inline(never)]
unsafe fn bad_pointer(page: *mut Page, off: usize, p: *mut u8, entry: Entry) {
    // SAFETY: `page` is a readable descriptor per `checked_page`.
    let (bsize, cap) = unsafe {
        let bsize = (*page).block_size;
        (bsize, (*page).capacity.load(Ordering::Relaxed) as usize * bsize)
    };
    if harden::STALE_SEGMENTS {
        // A block of a page (or segment) freed since, or where a block was
        // freed before its page was reused: a second free.
        // SAFETY: as above; `p` lies in the segment past its first byte.
        let old = unsafe { freed_block_size(page, off) };
        // SAFETY: as above: `p` lies in a segment with the bitmaps, past its
        // first byte.
        let old = old.or_else(|| (unsafe { harden::was_freed(p) }).then_some(bsize));
        if let Some(old) = old {
            error::report(entry.of_freed_block(), p as usize, old);
            return;
        }
    }
    let why = if bsize == 0 {
        NotABlock::NoLiveBlock
    } else if off < cap {
        NotABlock::Interior
    } else {
        NotABlock::NeverAllocated
    };
    error::not_a_block(entry, why, p as usize, bsize)
}

/// Frees a block. Null is a no-op; anything that is not the start of a
/// fortalloc block aborts with a message.
///
/// The checks inline here are the ones every free needs; null, zero-size
/// pointers and every kind of bad pointer leave by a tail call to a cold
/// function, so the common path saves the stack frame those calls need
/// and null costs one failed lookup (a null `p - 1` lies outside the map).
///
/// # Safety
/// `p` must be null or a pointer fortalloc returned and that is not freed
/// yet (violations of the latter are only detected by the hardened build).
#[inline]
pub unsafe fn free(p: *mut u8) {
    let Some(seg) = segment_map::segment_of(p) else {
        return free_unmapped(p);
    };
    // SAFETY: the segment map says a live segment covers `p - 1`, so its
    // header and page descriptors are readable.
    let (page, off) = unsafe {
        let page = page_of(seg, p);
        (page, (p as usize).wrapping_sub((*page).page_start as usize))
    };
    // SAFETY: `page` is a descriptor of a live segment.
    if !unsafe { is_block_start(page, off) } {
        // SAFETY: `page` and `off` are `p`'s, which is no block start.
        return unsafe { free_bad(page, off, p) };
    }
    // `p` is a block of the in-use `page`, and the caller promises it was
    // live (the hardened build checks that too).
    // SAFETY: `p` is a block start of the in-use `page`.
    if !unsafe { harden::on_free(page, p) } {
        return;
    }
    let heap = thread::heap();
    if harden::FREED_BLOCKS_WAIT {
        let bounds = harden::QuarantineBounds::now();
        // Tested alone first, so that without a quarantine in effect
        // (`FORTALLOC_QUARANTINE=0`) a free costs one load and branch
        // more than a build without the feature, not the other tests too.
        // SAFETY: the segment is live (found in the map).
        if bounds.holding() && unsafe { (*seg).kind } != Kind::Huge && heap != heap::EMPTY_HEAP_PTR {
            // SAFETY: `heap` is this thread's initialised heap and `p` a
            // checked live block of `page`, not huge.
            return unsafe { quarantine(heap, page, p, bounds) };
        }
    }
    // SAFETY: the segment is live; `owner` is atomic.
    if unsafe { &(*seg).owner }.load(Ordering::Relaxed) == heap as usize {
        // SAFETY: a heap that owns a segment is initialised, and this one
        // is this thread's; its counters are atomic.
        stats::bump(unsafe { &(*heap).counters.frees });
        // SAFETY: `page` is this thread's heap's and `p` a live block of it.
        return unsafe { heap::free_local(heap, page, p as *mut Block) };
    }
    // SAFETY: `p` is a checked live block of `page` in `seg`, whose owner
    // is another heap (or none).
    unsafe { free_other(seg, page, p as *mut Block) }
}

/// [`free`] of a pointer outside every segment: null, a zero-size
/// pointer of the guard build, or not fortalloc's.
#[cold]
#[inline(never)]
fn free_unmapped(p: *mut u8) {
    if p.is_null() {
        return;
    }
    if harden::is_zero_size(p) {
        // SAFETY: `is_zero_size(p)` holds (checked just now).
        return unsafe { free_zero_size(p) };
    }
    error::not_a_block(Entry::Free, NotABlock::Foreign, p as usize, 0);
}

/// [`free`] of a pointer into a segment that starts no handed-out block.
///
/// # Safety
/// As for [`bad_pointer`].
#[cold]
#[inline(never)]
unsafe fn free_bad(page: *mut Page, off: usize, p: *mut u8) {
    // SAFETY: `page` and `off` describe `p` as `bad_pointer` requires
    // (this fn's contract is the same).
    unsafe { bad_pointer(page, off, p, Entry::Free) }
}

/// # Safety
/// `harden::is_zero_size(p)` must hold.
#[cold]
unsafe fn free_zero_size(p: *mut u8) {
    // SAFETY: `p` is a zero-size slot's address (this fn's contract).
    if unsafe { harden::zero_size_free(p) }.is_err() {
        error::report(error::ErrorKind::DoubleFree, p as usize, 0);
    }
}

/// Frees a block the caller says was allocated for `size` bytes with
/// alignment `align` (C++ sized `delete`, C23 `free_sized`). The hardened
/// build checks that the size belongs to the block and reports a mismatch
/// instead of freeing; the plain build frees without looking.
///
/// # Safety
/// As for [`free`].
pub unsafe fn free_sized(p: *mut u8, size: usize, align: usize) {
    if harden::is_zero_size(p) {
        if size != 0 {
            error::report(error::ErrorKind::SizeMismatch, p as usize, 0);
            return;
        }
        // SAFETY: `is_zero_size(p)` holds (checked above).
        return unsafe { free_zero_size(p) };
    }
    if harden::HARDENED && !p.is_null() {
        // SAFETY: `p` is non-null and, per the caller, was live.
        unsafe {
            let Some((_, page)) = checked_page(p, Entry::Free) else {
                return;
            };
            if !size_matches(page, p, size, align) {
                error::report(error::ErrorKind::SizeMismatch, p as usize, (*page).block_size);
                return;
            }
        }
    }
    // SAFETY: `p` is null or live from fortalloc (this fn's contract).
    unsafe { free(p) }
}

/// Whether a request of `size` bytes aligned to `align` gets blocks like
/// the one at `p`.
///
/// # Safety
/// `p` must be a block start of the in-use `page`.
unsafe fn size_matches(page: *mut Page, p: *mut u8, size: usize, align: usize) -> bool {
    // SAFETY: `page` is in use (this fn's contract), so its descriptor
    // and `p`'s bitmap bits are readable.
    unsafe {
        let bsize = (*page).block_size;
        if is_huge(page) {
            // Huge: the block is the request rounded up to OS pages (plus
            // the alignment's offset at most).
            return size <= bsize && bsize - size < os_page_slack(align);
        }
        if let Some(requested) = harden::requested_size(page, p) {
            return requested == size;
        }
        request_size(size, align).is_some_and(|r| block_size_of(r) == bsize)
    }
}

/// Most bytes a huge block can exceed its request by.
fn os_page_slack(align: usize) -> usize {
    crate::meta::constants::SEGMENT_SIZE + align.max(crate::os::page_size())
}

/// Frees a block this thread does not own (huge, large, or another
/// thread's).
///
/// # Safety
/// `block` must be a checked, live block of `page` in `seg`.
#[inline(never)]
unsafe fn free_other(seg: *mut Segment, page: *mut Page, block: *mut Block) {
    // SAFETY: forwarded from the caller; a heap other than the empty one
    // is this thread's own.
    unsafe {
        let heap = thread::heap();
        let remote = is_remote(heap, seg);
        if heap != heap::EMPTY_HEAP_PTR {
            stats::bump(&(*heap).counters.frees);
            if remote {
                stats::bump(&(*heap).counters.remote_frees);
            }
        } else {
            stats::heapless_free(remote);
        }
        release(heap, seg, page, block);
    }
}

/// Whether freeing a block of `seg` is a cross-thread free for `heap`'s
/// thread (large and huge blocks belong to no thread).
///
/// # Safety
/// `seg` must be a live segment.
#[inline(always)]
unsafe fn is_remote(heap: *mut heap::Heap, seg: *mut Segment) -> bool {
    // SAFETY: `seg` is live (this fn's contract), so its header is mapped.
    unsafe {
        let kind = (*seg).kind;
        (kind == Kind::Small || kind == Kind::Medium) && (*seg).owner.load(Ordering::Relaxed) != heap as usize
    }
}

/// Puts a freed block in this thread's quarantine: in the place of a
/// random waiting one, which leaves, when it is full, or after a round
/// that lets some out.
///
/// # Safety
/// `heap` must be this thread's initialised heap and `p` a checked, live
/// block of `page`, not huge.
#[inline(always)]
unsafe fn quarantine(heap: *mut heap::Heap, page: *mut Page, p: *mut u8, bounds: harden::QuarantineBounds) {
    // SAFETY: the heap is ours, and `p` a block of `page`.
    unsafe {
        stats::bump(&(*heap).counters.frees);
        let size = (*page).block_size;
        if !bounds.can_hold(size) {
            return leave_quarantine(heap, harden::QuarantineHeld::new(p, page, size), false);
        }
        if (*heap).quarantine.needs_room(size, bounds) {
            // Every block waiting entered here, a checked live block of an
            // in-use page that is not huge, as `p` is.
            let out =
                (*heap)
                    .quarantine
                    .exchange(&mut (*heap).rng, p, size, bounds, &harden::QuarantineInPage);
            if out.is_some() {
                // As many blocks wait as before.
                (*heap)
                    .counters
                    .quarantined_bytes
                    .store((*heap).quarantine.bytes() as u64, Ordering::Relaxed);
                return leave_quarantine(heap, out, false);
            }
            if !make_room(heap, size, bounds) {
                return leave_quarantine(heap, harden::QuarantineHeld::new(p, page, size), false);
            }
        }
        if !(*heap).quarantine.enter(p, size, bounds) {
            return leave_quarantine(heap, harden::QuarantineHeld::new(p, page, size), false);
        }
        quarantine_levels(heap);
    }
}

/// Runs a round of this thread's full quarantine: claims its share of the
/// process bound again, and lets a bounded number of random blocks out
/// towards its levels, and until there is room for one of `size` bytes
/// (see `harden::Quarantine::round`). False if the block still does not
/// fit: it is larger than this thread's share, or than the room a round
/// makes. Cold: most frees only store into the array.
///
/// # Safety
/// `heap` must be this thread's initialised heap.
#[cold]
#[inline(never)]
unsafe fn make_room(heap: *mut heap::Heap, size: usize, bounds: harden::QuarantineBounds) -> bool {
    // SAFETY: each block leaving was freed by this thread and has waited
    // since, so its page is still in use.
    unsafe {
        let room = (*heap).quarantine.round(size, bounds);
        loop {
            let out = (*heap)
                .quarantine
                .make_room(&mut (*heap).rng, room, &harden::QuarantineInPage);
            if !out.is_some() {
                break;
            }
            leave_quarantine(heap, out, false);
        }
        (*heap).quarantine.fits(size, bounds)
    }
}

/// Frees every block in this thread's quarantine (at thread exit and on
/// `collect`).
///
/// # Safety
/// `heap` must be this thread's initialised heap.
pub(crate) unsafe fn empty_quarantine(heap: *mut heap::Heap) {
    if !harden::FREED_BLOCKS_WAIT {
        return;
    }
    loop {
        // SAFETY: `heap` is this thread's initialised heap (this fn's
        // contract); only this thread touches its quarantine, whose blocks
        // entered in `quarantine`, live blocks of in-use pages, not huge.
        let held = unsafe { (*heap).quarantine.drain_one(&harden::QuarantineInPage) };
        if !held.is_some() {
            break;
        }
        // SAFETY: `held` waited in this heap's quarantine until now.
        unsafe { leave_quarantine(heap, held, true) };
    }
    // SAFETY: this thread's initialised heap; its quarantine is empty and
    // needs no claim on the process bound.
    unsafe {
        (*heap).quarantine.release_claim();
        quarantine_levels(heap);
    }
}

/// Publishes the quarantine's levels in the heap's counters, which other
/// threads read.
///
/// # Safety
/// `heap` must be this thread's initialised heap.
#[inline(always)]
unsafe fn quarantine_levels(heap: *mut heap::Heap) {
    // SAFETY: per the caller: only this thread writes its counters.
    unsafe {
        let (q, c) = (&(*heap).quarantine, &(*heap).counters);
        c.quarantined.store(q.len() as u64, Ordering::Relaxed);
        c.quarantined_bytes.store(q.bytes() as u64, Ordering::Relaxed);
    }
}

/// Frees a block that waited in `heap`'s quarantine, if it is still as
/// it was left (all of it checked with `whole`, see
/// `harden::leaving_quarantine`). A block of another thread's page counts
/// as a cross-thread free now, when it reaches that thread.
///
/// # Safety
/// `heap` must be this thread's initialised heap and `held` a block that
/// waited in its quarantine.
#[inline(always)]
unsafe fn leave_quarantine(heap: *mut heap::Heap, held: harden::QuarantineHeld, whole: bool) {
    // SAFETY: the block is still taken in its page, so its segment lives.
    unsafe {
        stats::bump(&(*heap).counters.evictions);
        if !harden::leaving_quarantine(held, whole) {
            return;
        }
        let (seg, block) = (of_block(held.block), held.block as *mut Block);
        match (*seg).kind {
            Kind::Large => large::free(heap, seg, held.block),
            _ if (*seg).owner.load(Ordering::Relaxed) == heap as usize => {
                heap::free_local(heap, held.page, block)
            }
            _ => {
                stats::bump(&(*heap).counters.remote_frees);
                page::free_remote(held.page, block)
            }
        }
    }
}

/// Hands a freed block back to its page (or its slot, or the OS).
///
/// # Safety
/// `block` must be a freed block of `page` in `seg`, not on any list;
/// `heap` this thread's heap (or the empty one).
#[inline(always)]
unsafe fn release(heap: *mut heap::Heap, seg: *mut Segment, page: *mut Page, block: *mut Block) {
    // SAFETY: `block` is a freed block of `page` in `seg`, off every list, and `heap`
    // this thread's (this fn's contract): what each release path requires.
    unsafe {
        match (*seg).kind {
            Kind::Huge => huge::free(seg),
            Kind::Large => large::free(heap, seg, block as *mut u8),
            _ if (*seg).owner.load(Ordering::Relaxed) == heap as usize => heap::free_local(heap, page, block),
            _ => page::free_remote(page, block),
        }
    }
}

/// Bytes usable in the block at `p` (at least what was asked for).
///
/// # Safety
/// `p` must be null or a live pointer returned by fortalloc.
pub unsafe fn usable_size(p: *const u8) -> usize {
    if p.is_null() || harden::is_zero_size(p) {
        return 0;
    }
    // SAFETY: non-null, live per the caller.
    unsafe {
        let Some((_, page)) = checked_page(p as *mut u8, Entry::UsableSize) else {
            return 0;
        };
        harden::usable(page, p as *mut u8).unwrap_or(0)
    }
}

/// Resizes the block at `p` to `new_size`, in place when it already fits
/// (and would not waste more than half of it), else by moving. On failure
/// returns null and leaves `p` untouched.
///
/// # Safety
/// `p` must be null or a live pointer returned by fortalloc.
pub unsafe fn realloc(p: *mut u8, new_size: usize) -> *mut u8 {
    // SAFETY: `p` is null or live from fortalloc (this fn's contract).
    unsafe { realloc_aligned(p, new_size, MIN_ALIGN) }
}

/// [`realloc`] keeping an alignment of `align` (a power of two).
///
/// # Safety
/// `p` must be null or a live pointer returned by fortalloc with at least
/// that alignment.
pub unsafe fn realloc_aligned(p: *mut u8, new_size: usize, align: usize) -> *mut u8 {
    if p.is_null() {
        return malloc_aligned(new_size, align);
    }
    if harden::is_zero_size(p) {
        let q = malloc_aligned(new_size, align);
        if !q.is_null() {
            // SAFETY: `is_zero_size(p)` holds (checked above).
            unsafe { free_zero_size(p) };
        }
        return q;
    }
    // SAFETY: `p` is live per the caller.
    let Some((_, page)) = (unsafe { checked_page(p, Entry::Realloc) }) else {
        return ptr::null_mut();
    };
    // SAFETY: `p` is a block start of the in-use `page` (just checked).
    let Some(usable) = (unsafe { harden::usable(page, p) }) else {
        return ptr::null_mut();
    };
    // SAFETY: as above; `usable` is what the caller may use of it.
    if unsafe { resize_in_place(page, p, usable, new_size, align) } {
        return p;
    }
    let q = if new_size > usable {
        malloc_with_room(new_size, grown_size(usable, new_size), align)
    } else {
        malloc_aligned(new_size, align)
    };
    if q.is_null() {
        return q;
    }
    // Distinct blocks do not overlap; `p` is freed once, by its owner's request.
    // SAFETY: `q` is a fresh block of at least `new_size` bytes, `p` has `usable`
    // readable ones.
    unsafe {
        ptr::copy_nonoverlapping(p, q, usable.min(new_size));
        free(p);
    }
    q
}

/// Keeps `p` for `new_size` bytes when its block fits them without
/// wasting more than half of it (or a huge block grows in place), is
/// aligned to `align`, and returns whether it did.
///
/// # Safety
/// `p` must be a live block start of the in-use `page`, of which `usable`
/// bytes are the caller's.
unsafe fn resize_in_place(page: *mut Page, p: *mut u8, usable: usize, new_size: usize, align: usize) -> bool {
    // SAFETY: `page` is in use (this fn's contract).
    let bsize = unsafe { (*page).block_size };
    let req = harden::padded(new_size);
    let fits = (p as usize).is_multiple_of(align)
        && if req <= bsize {
            req >= bsize / 2
        } else {
            // SAFETY: `page` is in use; a huge page's block `p` is its
            // segment's one block, live and the caller's.
            unsafe { is_huge(page) && huge::grow_in_place(of_block(p), page, p, new_size) }
        };
    if !fits {
        return false;
    }
    // What was accessible before: the block, or the open part of a large
    // block of the guard build.
    // SAFETY: `p` is a live block of the in-use `page`.
    let open = unsafe { harden::block_usable(page, p) }.min(bsize);
    // SAFETY: `p` is the caller's live block and `padded(new_size)` fits
    // it (checked above, or the huge block grew to it).
    unsafe { harden::resizing(page, p, new_size) };
    if harden::FREE_BLOCKS_READ_ZERO && new_size > usable {
        // What lay past the old size (its canary, keyed, and the recorded
        // size) is now the caller's to read: zero, as a moved block's
        // would be. Growth past what was accessible was zeroed as it was
        // opened.
        // SAFETY: the bytes from `usable` up to what was accessible lie
        // inside the block, which is the caller's.
        unsafe { ptr::write_bytes(p.add(usable), 0, new_size.min(open).max(usable) - usable) };
    }
    // SAFETY: as for `resizing`.
    unsafe { harden::resized(page, p, new_size) };
    true
}

/// Allocates `size` bytes aligned to `align` in a block of the size class
/// a request of `room` bytes (`room >= size`) gets: a moved block keeps its
/// headroom, while its canary and recorded size sit at `size`, and a large
/// block of the guard build is opened only that far (opening all of `room`
/// and sealing it back would cost two kernel calls and a wipe of what was
/// just opened).
fn malloc_with_room(size: usize, room: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() || room > MAX_ALLOC {
        return ptr::null_mut();
    }
    match request_size(room, align) {
        Some(req) => malloc_block(req, size),
        None => aligned(size, align, false),
    }
}

/// What to allocate when `realloc` moves a block of `usable` bytes to hold
/// `new_size`: when it grows, at least a quarter more than it had. Code
/// that grows an array a little at a time (by an eighth, say) then moves it
/// on every other step rather than on every one: the size classes are an
/// eighth apart, so without the headroom each step landed in the next
/// class and copied everything (twice the copying of mimalloc, whose
/// classes are a quarter apart). Blocks that would become huge get exactly
/// what they ask for. A large block gets twice what it had: its slot's
/// pages past what the program writes are not touched (the guard build
/// opens only what is asked; a fresh or purged slot is not cleared), so
/// the headroom costs address space more than memory, while every move
/// copies the whole block (and in the guard build costs a seal).
#[inline]
fn grown_size(usable: usize, new_size: usize) -> usize {
    let large = crate::meta::constants::MEDIUM_OBJ_MAX + 1;
    // The largest request a large block holds, padding included.
    let limit = LARGE_OBJ_MAX - (harden::padded(large) - large);
    if new_size <= usable || new_size > limit {
        return new_size;
    }
    let headroom = if new_size >= large { usable } else { usable / 4 };
    new_size.max(usable + headroom).min(limit)
}

/// Returns memory the calling thread's heap caches but does not need; with
/// `force`, everything possible, including segments abandoned by exited
/// threads.
pub fn collect(force: bool) {
    let heap = thread::heap();
    // SAFETY: the calling thread's heap.
    unsafe { large::flush(heap) };
    if heap != heap::EMPTY_HEAP_PTR {
        // SAFETY: `heap` is this thread's initialised heap.
        unsafe {
            empty_quarantine(heap);
            if force {
                thread::reclaim_all(heap);
            }
            heap::collect(heap, force);
        }
    }
    if force {
        large::collect();
    }
    arena::purge(force);
}
