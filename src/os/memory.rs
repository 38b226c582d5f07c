//! Virtual memory: reserve+commit (mmap), release (munmap), purge (madvise).

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::sys;

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// `mprotect` calls, and purges with the bytes they returned: counted
/// here, where the calls are made, and read by the statistics (this layer
/// imports nothing above it).
static PROTECTS: AtomicU64 = AtomicU64::new(0);
static PURGES: AtomicU64 = AtomicU64::new(0);
static PURGED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The memory calls counted so far.
#[derive(Clone, Copy, Debug)]
pub struct MemoryCounts {
    pub protects: u64,
    pub purges: u64,
    pub purged_bytes: u64,
}

/// The memory calls counted so far.
pub fn memory_counts() -> MemoryCounts {
    MemoryCounts {
        protects: PROTECTS.load(Ordering::Relaxed),
        purges: PURGES.load(Ordering::Relaxed),
        purged_bytes: PURGED_BYTES.load(Ordering::Relaxed),
    }
}

/// The OS page size, read once at run time (never assumed to be 4 KiB).
#[inline]
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let raw = sys::sysconf(libc::_SC_PAGESIZE);
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
        sys::mmap(
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
        sys::madvise(p.cast(), size, libc::MADV_HUGEPAGE);
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
    PROTECTS.fetch_add(1, Ordering::Relaxed);
    // A failure (ENOMEM when the process is out of mappings) leaves the
    // range as it was: a guard that is missing, never memory that is.
    // SAFETY: the caller guarantees the range is ours and unused while
    // inaccessible.
    unsafe { sys::mprotect(p.cast(), size, prot) }
}

/// Returns a mapping (or the part of one) to the OS.
///
/// # Safety
/// - `[p, p+size)` must be memory this process mapped and nothing may use it
///   afterwards.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // A failure (a split past the mapping limit) leaves the range mapped:
    // address space kept, never memory in use lost.
    // SAFETY: the caller guarantees the range is ours and dead.
    unsafe {
        sys::munmap(p.cast(), size);
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
        sys::madvise(p.cast(), size, libc::MADV_DONTNEED);
    }
    PURGES.fetch_add(1, Ordering::Relaxed);
    PURGED_BYTES.fetch_add(size as u64, Ordering::Relaxed);
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
    // SAFETY: the range is page-aligned memory this process mapped (this
    // fn's contract); `vec` has a byte for each of its pages.
    unsafe { sys::mincore(p.cast(), len, vec) }
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

/// Writes to the word at `p` without changing it, so that this is the
/// first access to its OS page if nothing touched the page yet: a first
/// read of never-touched memory maps the kernel's shared zero page, and the
/// first write after it faults again and flushes the TLB of every CPU the
/// process runs on. (An atomic OR with zero is no such write: the compiler
/// turns it into a load.)
///
/// # Safety
/// `p` must be a valid, 8-aligned word of writable memory; a concurrent
/// write to it is not lost.
#[inline(always)]
pub unsafe fn touch_for_write(p: *mut u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `p` is a valid, 8-aligned writable word (this fn's contract);
    // a locked OR with zero atomically writes the value already there.
    unsafe {
        core::arch::asm!("lock or qword ptr [{p}], 0", p = in(reg) p, options(nostack));
    }
    // A compare-exchange of 0 for 0 writes nothing new, and touches the
    // word for writing where the hardware does.
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: `p` is a valid, 8-aligned writable word (this fn's contract).
    unsafe {
        let _ = core::sync::atomic::AtomicU64::from_ptr(p).compare_exchange(
            0,
            0,
            core::sync::atomic::Ordering::Relaxed,
            core::sync::atomic::Ordering::Relaxed,
        );
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::touch_for_write;

    fn minor_faults() -> i64 {
        // SAFETY: getrusage writes the struct it is given.
        unsafe {
            let mut u: libc::rusage = core::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut u);
            u.ru_minflt
        }
    }

    #[test]
    fn a_touch_for_write_makes_the_first_write_the_only_fault() {
        let ps = crate::os::page_size();
        let pages = 16;
        let mem = crate::os::map(pages * ps);
        assert!(!mem.is_null());
        let before = minor_faults();
        for i in 0..pages {
            // SAFETY: the mapping is ours, fresh and `pages` pages long.
            unsafe {
                let w = mem.add(i * ps) as *mut u64;
                touch_for_write(w);
                assert_eq!(w.read_volatile(), 0);
                w.add(1).write_volatile(7);
            }
        }
        // One fault per page: a read first would map the zero page and
        // the write after it fault again (two per page).
        assert_eq!(minor_faults() - before, pages as i64);
        // SAFETY: the mapping is ours and no longer used.
        unsafe { crate::os::unmap(mem, pages * ps) };
    }
}
