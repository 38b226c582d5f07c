//! Guards: page ranges that fault on any access, made two ways.
//!
//! - **Page-table guard markers** (`madvise(MADV_GUARD_INSTALL)`, Linux
//!   6.13 and later): the range's pages are dropped and its page-table
//!   entries become markers that fault like `PROT_NONE`. No kernel mapping
//!   is split, so a process can hold any number of them; after
//!   `MADV_GUARD_REMOVE` the pages read as zero and fault in again on
//!   first touch.
//! - **`mprotect(PROT_NONE)`**, the fallback: each guard inside a
//!   read-write mapping splits it (two more kernel mappings), and a
//!   process that reaches `vm.max_map_count` cannot `mmap` at all any more
//!   (its thread stacks, files, `dlopen`). So these guards come out of a
//!   budget: fortalloc lets the process's mapping count reach at most half
//!   the limit through its guards (`FORTALLOC_MAP_BUDGET` sets another
//!   number). Past a quarter of the limit guards are thinned at random (a
//!   guard is made with a probability that falls to zero at the budget),
//!   so the ones that are missing are spread over the heap rather than all
//!   at its top. A guard not made is counted, never an allocation failed.
//!
//! Guards that stand for memory that is used again soon (the body of a
//! freed huge block's segment) are [`seal`]s: `mprotect` within the budget,
//! since a marker drops the pages and every one would fault again at the
//! next use; markers past the budget.
//!
//! The way is chosen once per process: markers if the kernel accepts one
//! on a probe page, unless `FORTALLOC_GUARDS=mprotect` forces the
//! fallback (so tests cover both paths on any kernel). A range the kernel
//! refuses markers for (an `mlock`ed one) falls back to `mprotect` for
//! that call; from then on removals undo both.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use super::{memory, sys};

const MADV_GUARD_INSTALL: libc::c_int = 102;
const MADV_GUARD_REMOVE: libc::c_int = 103;

/// How guards are made in this process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GuardWay {
    Markers,
    Mprotect,
}

const WAY_UNKNOWN: u8 = 0;
const WAY_MARKERS: u8 = 1;
const WAY_MPROTECT: u8 = 2;
static WAY: AtomicU8 = AtomicU8::new(WAY_UNKNOWN);
static FORCE_MPROTECT: AtomicBool = AtomicBool::new(false);
/// Some guard was made with `mprotect` in marker mode: removals must undo
/// both kinds.
static ANY_PROTECTED: AtomicBool = AtomicBool::new(false);

/// The most kernel mappings guards may take the process to; 0 until read.
static BUDGET: AtomicUsize = AtomicUsize::new(0);
/// The process's mapping count at the last look at `/proc/self/maps`, and
/// `mprotect` guards made since (each may add two).
static COUNTED: AtomicUsize = AtomicUsize::new(0);
static SINCE_COUNT: AtomicUsize = AtomicUsize::new(0);
/// A cheap generator for the thinning draws (not security relevant: which
/// guards are missing once the budget nears).
static THIN_STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

static MARKERS_MADE: AtomicU64 = AtomicU64::new(0);
/// `madvise` calls installing or removing markers.
static MARKER_CALLS: AtomicU64 = AtomicU64::new(0);
static PROTECTS_MADE: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Counters of guards, for the statistics.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardCounts {
    /// Guards made with page-table markers.
    pub markers: u64,
    /// Guards made with `mprotect`.
    pub protects: u64,
    /// Guards not made: the mapping budget was near (or the kernel refused).
    pub skipped: u64,
    /// `madvise` calls that installed or removed markers.
    pub marker_calls: u64,
}

/// The guard counters so far.
pub fn guard_counts() -> GuardCounts {
    GuardCounts {
        markers: MARKERS_MADE.load(Ordering::Relaxed),
        protects: PROTECTS_MADE.load(Ordering::Relaxed),
        skipped: SKIPPED.load(Ordering::Relaxed),
        marker_calls: MARKER_CALLS.load(Ordering::Relaxed),
    }
}

/// Makes every guard from now on an `mprotect` one (`FORTALLOC_GUARDS`).
/// Takes effect only before the first guard.
pub fn force_mprotect_guards() {
    FORCE_MPROTECT.store(true, Ordering::Relaxed);
}

/// Sets the mapping budget (`FORTALLOC_MAP_BUDGET`).
pub fn set_map_budget(mappings: usize) {
    BUDGET.store(mappings.max(1), Ordering::Relaxed);
}

/// The way guards are made, choosing it on first use.
pub fn guard_way() -> GuardWay {
    match WAY.load(Ordering::Relaxed) {
        WAY_MARKERS => return GuardWay::Markers,
        WAY_MPROTECT => return GuardWay::Mprotect,
        _ => {}
    }
    let way = if !FORCE_MPROTECT.load(Ordering::Relaxed) && markers_work() {
        WAY_MARKERS
    } else {
        WAY_MPROTECT
    };
    // Racing choosers reach the same answer.
    WAY.store(way, Ordering::Relaxed);
    if way == WAY_MARKERS {
        GuardWay::Markers
    } else {
        GuardWay::Mprotect
    }
}

/// Whether the kernel takes a guard marker on a fresh page.
fn markers_work() -> bool {
    let ps = memory::page_size();
    let p = memory::map(ps);
    if p.is_null() {
        return false;
    }
    // SAFETY: a private page of our own, unused.
    unsafe {
        let ok = sys::madvise(p.cast(), ps, MADV_GUARD_INSTALL);
        memory::unmap(p, ps);
        ok
    }
}

/// Whether a guard costs kernel mappings (the `mprotect` way) rather than
/// nothing but a page-table entry (markers).
pub fn guards_split_mappings() -> bool {
    guard_way() == GuardWay::Mprotect
}

/// What [`guard`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Guarded {
    /// A page-table marker: the range's old contents are gone (it reads as
    /// zero once the guard is removed).
    Marker,
    /// `mprotect`: the contents are kept.
    Protected,
    /// No guard: the mapping budget was near, or the kernel refused.
    Skipped,
}

impl Guarded {
    pub fn made(self) -> bool {
        self != Guarded::Skipped
    }
}

/// Makes `[p, p + len)` fault on every access.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory this process mapped
/// (private, anonymous), whose contents nobody needs, and nothing may
/// access it until [`unguard`] is called on it.
pub unsafe fn guard(p: *mut u8, len: usize) -> Guarded {
    if len == 0 {
        return Guarded::Skipped;
    }
    if guard_way() == GuardWay::Markers {
        MARKER_CALLS.fetch_add(1, Ordering::Relaxed);
        // Installing markers only drops the range's pages.
        // SAFETY: `[p, p + len)` is page-aligned, mapped private memory
        // whose contents nobody needs (this fn's contract).
        if unsafe { sys::madvise(p.cast(), len, MADV_GUARD_INSTALL) } {
            MARKERS_MADE.fetch_add(1, Ordering::Relaxed);
            return Guarded::Marker;
        }
        ANY_PROTECTED.store(true, Ordering::Relaxed);
    }
    // SAFETY: `[p, p + len)` is page-aligned, ours and unused until
    // `unguard` (this fn's contract).
    if unsafe { protect_within_budget(p, len) } {
        Guarded::Protected
    } else {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
        Guarded::Skipped
    }
}

/// An `mprotect` guard, if the mapping budget allows one and the kernel
/// makes it.
///
/// # Safety
/// As for [`guard`].
unsafe fn protect_within_budget(p: *mut u8, len: usize) -> bool {
    // SAFETY: `[p, p + len)` is page-aligned, ours and unused until
    // `unguard` (this fn's contract, as `guard`'s).
    if budget_allows() && unsafe { memory::protect(p, len, false) } {
        PROTECTS_MADE.fetch_add(1, Ordering::Relaxed);
        SINCE_COUNT.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// Makes `[p, p + len)` fault on every access while keeping its pages:
/// for memory that will be used again (a freed huge block's segment),
/// where dropping the pages, as a marker does, would cost a page fault per
/// page at the next use, far more than zeroing resident pages (figures in
/// docs/PERFORMANCE.md, "Sealing freed big blocks with `mprotect` or
/// markers"). So `mprotect` first, within the mapping budget, then a
/// marker; the contents may be gone either way.
///
/// # Safety
/// As for [`guard`].
pub unsafe fn seal(p: *mut u8, len: usize) -> Guarded {
    if len == 0 {
        return Guarded::Skipped;
    }
    if guard_way() == GuardWay::Markers {
        ANY_PROTECTED.store(true, Ordering::Relaxed);
        // SAFETY: `[p, p + len)` is page-aligned, ours and unused until
        // `unguard` (this fn's contract, as `guard`'s).
        if unsafe { protect_within_budget(p, len) } {
            return Guarded::Protected;
        }
    }
    // SAFETY: `[p, p + len)` is page-aligned, ours and unused until
    // `unguard` (this fn's contract, as `guard`'s).
    unsafe { guard(p, len) }
}

/// Guard markers only, never `mprotect`: for memory whose contents are
/// dead and that is wanted back as zero (a freed large block's body); undone
/// by [`unguard`]. True
/// if the markers are in place; false on the `mprotect` way or if the
/// kernel refused, with the range left as it was.
///
/// # Safety
/// As for [`guard`].
pub unsafe fn mark(p: *mut u8, len: usize) -> bool {
    if len == 0 || guard_way() != GuardWay::Markers {
        return false;
    }
    MARKER_CALLS.fetch_add(1, Ordering::Relaxed);
    // Installing markers only drops the range's pages.
    // SAFETY: `[p, p + len)` is page-aligned, mapped private memory whose
    // contents nobody needs (this fn's contract, as `guard`'s).
    let made = unsafe { sys::madvise(p.cast(), len, MADV_GUARD_INSTALL) };
    if made {
        MARKERS_MADE.fetch_add(1, Ordering::Relaxed);
    }
    made
}

/// Removes guard markers from `[p, p + len)` and nothing else: for a range
/// known to hold no `mprotect` guard. The range reads as zero where there
/// were markers. False if the kernel refused.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory this process mapped.
pub unsafe fn unmark(p: *mut u8, len: usize) -> bool {
    MARKER_CALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `[p, p + len)` is page-aligned memory this process mapped
    // (this fn's contract); removing markers touches no other page.
    unsafe { sys::madvise(p.cast(), len, MADV_GUARD_REMOVE) }
}

/// Makes `[p, p + len)` accessible again, whichever way (if any) it was
/// guarded. Pages that held a marker read as zero; the rest keep their
/// contents. False if the kernel refused (the range is then as it was).
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory this process mapped.
pub unsafe fn unguard(p: *mut u8, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    if guard_way() == GuardWay::Markers {
        MARKER_CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `[p, p + len)` is page-aligned memory this process
        // mapped (this fn's contract); no other page is touched.
        unsafe { sys::madvise(p.cast(), len, MADV_GUARD_REMOVE) };
        if !ANY_PROTECTED.load(Ordering::Relaxed) {
            return true;
        }
    }
    // SAFETY: `[p, p + len)` is page-aligned memory this process mapped
    // (this fn's contract); opening it back needs nothing more.
    unsafe { memory::protect(p, len, true) }
}

/// Whether one more `mprotect` guard fits the mapping budget; thins them
/// at random past half of it.
fn budget_allows() -> bool {
    let budget = budget();
    let since = SINCE_COUNT.load(Ordering::Relaxed);
    let mut estimate = COUNTED.load(Ordering::Relaxed) + 2 * since;
    if estimate >= budget / 2 && since >= recount_every(budget) {
        // The estimate only grows (merges and removals are not seen):
        // look at the real count before thinning.
        estimate = mapping_count();
        COUNTED.store(estimate, Ordering::Relaxed);
        SINCE_COUNT.store(0, Ordering::Relaxed);
    }
    if estimate < budget / 2 {
        return true;
    }
    if estimate >= budget {
        return false;
    }
    // Made with probability (budget - estimate) / (budget / 2).
    let draw = THIN_STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let draw = (draw ^ (draw >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let draw = (draw >> 32) as usize % (budget / 2).max(1);
    draw < budget - estimate
}

/// How many guards may be made between two looks at `/proc/self/maps`
/// once past half the budget: a look reads the whole file.
fn recount_every(budget: usize) -> usize {
    (budget / 64).max(16)
}

/// The mapping budget: half of `vm.max_map_count` unless set.
fn budget() -> usize {
    let b = BUDGET.load(Ordering::Relaxed);
    if b != 0 {
        return b;
    }
    let b = (read_number(c"/proc/sys/vm/max_map_count").unwrap_or(65_530) / 2).max(1);
    BUDGET.store(b, Ordering::Relaxed);
    b
}

/// Lines of `/proc/self/maps`: the process's kernel mappings now.
pub fn mapping_count() -> usize {
    let mut lines = 0;
    let _ = for_each_chunk(c"/proc/self/maps", |chunk| {
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
    });
    lines
}

/// The decimal number a small file starts with.
fn read_number(path: &core::ffi::CStr) -> Option<usize> {
    let mut n: Option<usize> = None;
    let mut done = false;
    for_each_chunk(path, |chunk| {
        for &b in chunk {
            if done {
                return;
            }
            if b.is_ascii_digit() {
                n = Some(
                    n.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add((b - b'0') as usize),
                );
            } else {
                done = true;
            }
        }
    })?;
    n
}

/// Reads a file through a stack buffer, handing each chunk to `f`. None if
/// it cannot be opened.
fn for_each_chunk(path: &core::ffi::CStr, mut f: impl FnMut(&[u8])) -> Option<()> {
    let fd = sys::open_read(path)?;
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = sys::read(fd, &mut buf) {
        f(&buf[..n.min(buf.len())]);
    }
    sys::close(fd);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many lines of /proc/self/maps overlap `[start, end)`.
    fn mappings_within(start: usize, end: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|line| {
                let range = line.split(' ').next().unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let lo = usize::from_str_radix(lo, 16).unwrap();
                let hi = usize::from_str_radix(hi, 16).unwrap();
                lo < end && hi > start
            })
            .count()
    }

    #[test]
    fn the_limit_and_the_mapping_count_are_read() {
        let limit = read_number(c"/proc/sys/vm/max_map_count").expect("vm.max_map_count");
        assert!(limit >= 1000, "{limit}");
        let n = mapping_count();
        assert!(n > 5 && n < limit, "{n}");
        // A guard inside a fresh mapping splits it in three. Only our own
        // range is counted: other tests' threads map and unmap meanwhile.
        let ps = memory::page_size();
        let p = memory::map(16 * ps);
        let ours = || mappings_within(p as usize, p as usize + 16 * ps);
        assert_eq!(ours(), 1);
        // SAFETY: a fresh mapping of ours; its middle page becomes
        // inaccessible and is never touched.
        unsafe { memory::protect(p.add(8 * ps), ps, false) };
        assert_eq!(ours(), 3);
        // SAFETY: our mapping, unused.
        unsafe { memory::unmap(p, 16 * ps) };
    }

    #[test]
    fn a_guard_faults_until_removed_and_then_reads_as_zero_or_as_before() {
        let ps = memory::page_size();
        let p = memory::map(4 * ps);
        // SAFETY: our mapping; the guarded page is not touched while guarded.
        unsafe {
            p.add(ps).write(7);
            let how = guard(p.add(ps), ps);
            assert!(how.made(), "{how:?}");
            assert!(!readable(p.add(ps)));
            assert!(readable(p) && readable(p.add(2 * ps)));
            assert!(unguard(p.add(ps), ps));
            let v = p.add(ps).read();
            match how {
                Guarded::Marker => assert_eq!(v, 0),
                _ => assert_eq!(v, 7),
            }
            memory::unmap(p, 4 * ps);
        }
    }

    /// Whether a byte can be read, asked of the kernel (a read of a guard
    /// would kill the test).
    fn readable(p: *const u8) -> bool {
        let mut fds = [0; 2];
        // SAFETY: a valid out-array for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: write(2) reads `p` in the kernel and fails with EFAULT
        // instead of faulting.
        let n = unsafe { libc::write(fds[1], p.cast(), 1) };
        // SAFETY: both descriptors are ours.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        n == 1
    }
}
