//! Huge objects (over 2 MiB, or aligned beyond what pages give): each gets a
//! segment of its own, mapped to fit.
//!
//! ```text
//! align <= 4 MiB:  seg [header | pad to align | block ...............]
//! align  > 4 MiB:  seg [header | ... ] block at seg + 4 MiB (aligned)
//! ```
//!
//! Freed huge segments wait a purge delay in a small global cache, so a
//! program that frees and re-allocates big buffers does not pay an
//! mmap/munmap and page faults each time.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::constants::{MAX_ALLOC, SEGMENT_SIZE, WORD};
use crate::lock::SpinLock;
use crate::page::{self, Page};
use crate::segment::{self, Segment};
use crate::{options, os, segment_map};

/// Most bytes kept in the cache, and the largest segment worth caching.
const CACHE_MAX_BYTES: usize = 128 << 20;
const CACHE_MAX_EACH: usize = 64 << 20;

struct Cache {
    head: *mut Segment,
    bytes: usize,
}
struct CacheCell(UnsafeCell<Cache>);
// SAFETY: only touched under CACHE_LOCK.
unsafe impl Sync for CacheCell {}
static CACHE: CacheCell = CacheCell(UnsafeCell::new(Cache {
    head: ptr::null_mut(),
    bytes: 0,
}));
static CACHE_LOCK: SpinLock = SpinLock::new();
/// Earliest expiry in the cache (monotonic ms), 0 if empty.
static CACHE_DUE: AtomicU64 = AtomicU64::new(0);

fn round_up(x: usize, to: usize) -> usize {
    (x + to - 1) & !(to - 1)
}

/// Takes a cached segment of `total` bytes or a bit more.
fn cache_take(total: usize) -> *mut Segment {
    if CACHE_DUE.load(Ordering::Relaxed) == 0 {
        return ptr::null_mut();
    }
    let _g = CACHE_LOCK.lock();
    // SAFETY: guarded by CACHE_LOCK; cached segments are mapped and unused.
    unsafe {
        let cache = &mut *CACHE.0.get();
        let mut link: *mut *mut Segment = &mut cache.head;
        while !(*link).is_null() {
            let seg = *link;
            if (*seg).size >= total && (*seg).size <= total + total / 2 {
                *link = (*seg).next;
                cache.bytes -= (*seg).size;
                if cache.head.is_null() {
                    CACHE_DUE.store(0, Ordering::Relaxed);
                }
                return seg;
            }
            link = ptr::addr_of_mut!((**link).next);
        }
    }
    ptr::null_mut()
}

/// Allocates a huge block of `size` bytes aligned to `align` (0 or a power
/// of two), zeroed if `zero`. Null when out of memory or impossible.
pub fn alloc(size: usize, align: usize, zero: bool) -> *mut u8 {
    if size > MAX_ALLOC || align > MAX_ALLOC / 2 {
        return ptr::null_mut();
    }
    let ps = os::page_size();
    let info = segment::info_size();
    let (offset, seg_align) = if align <= SEGMENT_SIZE {
        (round_up(info, align.max(WORD)), SEGMENT_SIZE)
    } else {
        (SEGMENT_SIZE, align)
    };
    let total = round_up(offset + size.max(1), ps);
    let mut fresh = false;
    let mut seg = if align <= SEGMENT_SIZE {
        cache_take(total)
    } else {
        ptr::null_mut()
    };
    if seg.is_null() {
        // The block (at seg + offset) must be aligned to `align`; for
        // alignments beyond a segment it sits exactly one segment in.
        let raw = if align <= SEGMENT_SIZE {
            os::map_aligned(total, seg_align)
        } else {
            os::map_aligned_offset(total, seg_align, offset)
        };
        if raw.is_null() {
            return raw;
        }
        seg = raw as *mut Segment;
        segment_map::insert(seg);
        fresh = true;
    }
    // SAFETY: the segment is mapped, ours alone, and larger than its header.
    unsafe {
        let size_mapped = if fresh { total } else { (*seg).size };
        segment::init_huge(seg, size_mapped, offset);
        let block = (seg as *mut u8).add(offset);
        if zero && !fresh {
            ptr::write_bytes(block, 0, size);
        }
        block
    }
}

/// Frees the huge segment `seg` (its block was just freed, from any thread).
///
/// # Safety
/// `seg` must be a live huge segment whose block is being freed once.
pub unsafe fn free(seg: *mut Segment) {
    // SAFETY: the block's owner gives the whole segment up.
    unsafe {
        let page = ptr::addr_of_mut!((*seg).pages).cast::<Page>();
        page::reset(page);
        let size = (*seg).size;
        let delay = options::purge_delay_ms();
        if delay == 0 || size > CACHE_MAX_EACH || (*seg).block_offset >= SEGMENT_SIZE {
            segment::os_free(seg);
            return;
        }
        let _g = CACHE_LOCK.lock();
        let cache = &mut *CACHE.0.get();
        if cache.bytes + size > CACHE_MAX_BYTES {
            drop(_g);
            segment::os_free(seg);
            return;
        }
        let due = os::now_ms() + delay;
        (*seg).cache_expire = due;
        (*seg).next = cache.head;
        cache.head = seg;
        cache.bytes += size;
        let cur = CACHE_DUE.load(Ordering::Relaxed);
        if cur == 0 || due < cur {
            CACHE_DUE.store(due, Ordering::Relaxed);
        }
    }
}

/// Unmaps cached segments whose delay has passed (all with `force`).
pub fn purge_cache(force: bool) {
    let now = os::now_ms();
    let _g = CACHE_LOCK.lock();
    // SAFETY: guarded by CACHE_LOCK; cached segments are unused.
    unsafe {
        let cache = &mut *CACHE.0.get();
        let mut next_due = 0u64;
        let mut link: *mut *mut Segment = &mut cache.head;
        while !(*link).is_null() {
            let seg = *link;
            if force || (*seg).cache_expire <= now {
                *link = (*seg).next;
                cache.bytes -= (*seg).size;
                segment::os_free(seg);
            } else {
                if next_due == 0 || (*seg).cache_expire < next_due {
                    next_due = (*seg).cache_expire;
                }
                link = ptr::addr_of_mut!((**link).next);
            }
        }
        CACHE_DUE.store(next_due, Ordering::Relaxed);
    }
}

/// Cheap check from slow paths: purge the cache if something fell due.
#[inline]
pub fn maybe_purge_cache() {
    let due = CACHE_DUE.load(Ordering::Relaxed);
    if due != 0 && os::now_ms() >= due {
        purge_cache(false);
    }
}
