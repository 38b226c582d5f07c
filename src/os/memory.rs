//! Virtual memory: reserve+commit (mmap), release (munmap), purge (madvise).

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The OS page size, read once at run time (never assumed to be 4 KiB).
#[inline]
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if raw > 0 && (raw as usize).is_power_of_two() {
        raw as usize
    } else {
        4096
    };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Maps `size` bytes of fresh, zeroed, read-write memory anywhere.
/// Returns null on failure.
pub fn map(size: usize) -> *mut u8 {
    map_at_hint(size, 0)
}

/// Maps `size` fresh bytes, preferably at `hint` (a page-aligned address;
/// 0 for none). The kernel uses the hint only if the range is free, and
/// never replaces an existing mapping (no MAP_FIXED).
pub fn map_at_hint(size: usize, hint: usize) -> *mut u8 {
    if size == 0 {
        return ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping without MAP_FIXED cannot alias
    // any existing Rust object; the kernel picks a fresh range.
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `size` bytes whose start is a multiple of `align` (a power of two at
/// least the page size). Over-reserves and trims the excess at both ends so
/// no address space is left behind. Returns null on failure.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    map_aligned_at_hint(size, align, 0)
}

/// [`map_aligned`], preferably near `hint` (0 for none).
pub fn map_aligned_at_hint(size: usize, align: usize, hint: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    let Some(total) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map_at_hint(total, hint);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = total - head - size;
    // SAFETY: both trimmed ranges lie inside the mapping made just above and
    // outside the range handed back, so nothing refers to them.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap((aligned + size) as *mut u8, tail);
        }
    }
    aligned as *mut u8
}

/// Whether fresh mappings get `MADV_HUGEPAGE`. Off by default, as in
/// mimalloc: with transparent huge pages every first touch of a 2 MiB region
/// zeroes all of it, and purging a 64 KiB page inside one splits it; in our
/// benchmarks that cost half the time of a churny workload and doubled its
/// RSS. Programs with a large, stable heap can turn it on.
static HUGE_PAGES: AtomicBool = AtomicBool::new(false);

/// Turns the transparent-huge-page advice for new mappings on or off.
pub fn set_huge_pages(on: bool) {
    HUGE_PAGES.store(on, Ordering::Relaxed);
}

/// Asks for transparent huge pages on `[p, p+size)`: fewer TLB misses and
/// page faults for big blocks (mimalloc v2 does the same for its arenas).
/// Only a hint; with THP off it does nothing.
///
/// # Safety
/// `[p, p+size)` must be memory this process mapped.
pub unsafe fn advise_huge_pages(p: *mut u8, size: usize) {
    if !HUGE_PAGES.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: the caller guarantees the range is ours; the advice does not
    // change its contents.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_HUGEPAGE);
    }
}

/// Makes `[p, p+size)` readable and writable, or inaccessible. False if
/// the kernel refused (out of mappings): the range is then as it was.
///
/// # Safety
/// `[p, p+size)` must be page-aligned memory this process mapped, and with
/// `accessible == false` nothing may access it until it is made accessible
/// again.
pub unsafe fn protect(p: *mut u8, size: usize, accessible: bool) -> bool {
    let prot = if accessible {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_NONE
    };
    crate::stats::PROTECTS.fetch_add(1, Ordering::Relaxed);
    // A failure (ENOMEM when the process is out of mappings) leaves the
    // range as it was: a guard that is missing, never memory that is.
    // SAFETY: the caller guarantees the range is ours and unused while
    // inaccessible.
    unsafe { libc::mprotect(p.cast(), size, prot) == 0 }
}

/// Returns a mapping (or the part of one) to the OS.
///
/// # Safety
/// - `[p, p+size)` must be memory this process mapped and nothing may use it
///   afterwards.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller guarantees the range is ours and dead.
    unsafe {
        libc::munmap(p.cast(), size);
    }
}

/// Gives the physical pages of `[p, p+size)` back to the OS while keeping the
/// range mapped; it reads as zeros afterwards. Used for delayed purging.
///
/// # Safety
/// - `[p, p+size)` must be page-aligned memory this process mapped read-write
///   whose contents nobody needs any more.
pub unsafe fn purge(p: *mut u8, size: usize) {
    // SAFETY: the caller guarantees the range is ours and its contents dead;
    // MADV_DONTNEED on a private anonymous mapping only drops pages.
    unsafe {
        libc::madvise(p.cast(), size, libc::MADV_DONTNEED);
    }
    crate::stats::PURGES.fetch_add(1, Ordering::Relaxed);
    crate::stats::PURGED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

/// Fills `vec[i]` with whether OS page `i` of `[p, p + len)` is resident
/// (bit 0). False if the kernel would not say or `vec` is too short.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory this process mapped.
pub unsafe fn residency(p: *mut u8, len: usize, vec: &mut [u8]) -> bool {
    if len.div_ceil(page_size()) > vec.len() {
        return false;
    }
    // SAFETY: per the caller the range is mapped; `vec` has a byte for
    // each of its pages.
    unsafe { libc::mincore(p.cast(), len, vec.as_mut_ptr()) == 0 }
}

/// Maps `size` bytes at an address `p` such that `p + offset` is a multiple
/// of `align` (a power of two at least the page size), trimming the excess.
pub fn map_aligned_offset(size: usize, align: usize, offset: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && offset <= size);
    let Some(total) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(total);
    if raw.is_null() {
        return raw;
    }
    let start = raw as usize;
    let target = (start + offset + align - 1) & !(align - 1);
    let p = target - offset;
    let head = p - start;
    let tail = total - head - size;
    // SAFETY: both trimmed ranges lie inside the fresh mapping and outside
    // the range handed back.
    unsafe {
        if head > 0 {
            unmap(raw, head);
        }
        if tail > 0 {
            unmap((p + size) as *mut u8, tail);
        }
    }
    p as *mut u8
}
