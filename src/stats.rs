//! Statistics: what `FORTALLOC_SHOW_STATS` prints and `mallinfo2` reports.
//!
//! Two kinds of counters, so that the hot paths stay cheap:
//! - per-heap counts of mallocs and frees, written only by the heap's owner
//!   with a plain load and store (no locked instruction), summed over every
//!   heap when read, and folded into globals when a thread exits;
//! - global gauges for the slow paths (segments, pages, huge objects, OS
//!   calls), updated with relaxed atomic adds.
//!
//! Readers see each counter atomically but not all of them at one instant;
//! figures read while other threads run are approximate, as in mimalloc and
//! jemalloc.

use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::error::Line;
use crate::meta::segment::Segment;
use crate::os;

/// A level with its high-water mark and the sum of all increases.
pub struct Gauge {
    cur: AtomicI64,
    peak: AtomicI64,
    total: AtomicU64,
}

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge {
            cur: AtomicI64::new(0),
            peak: AtomicI64::new(0),
            total: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn increase(&self, n: usize) {
        let now = self.cur.fetch_add(n as i64, Relaxed) + n as i64;
        self.total.fetch_add(n as u64, Relaxed);
        self.peak.fetch_max(now, Relaxed);
    }

    #[inline]
    pub fn decrease(&self, n: usize) {
        self.cur.fetch_sub(n as i64, Relaxed);
    }

    fn read(&self) -> GaugeValue {
        GaugeValue {
            current: self.cur.load(Relaxed).max(0) as u64,
            peak: self.peak.load(Relaxed).max(0) as u64,
            total: self.total.load(Relaxed),
        }
    }
}

/// Segments (small, medium, large and huge) currently held.
pub static SEGMENTS: Gauge = Gauge::new();
/// Pages in use.
pub static PAGES: Gauge = Gauge::new();
/// Bytes of the block areas of pages in use, plus huge objects: memory in
/// use at page granularity.
pub static IN_USE: Gauge = Gauge::new();
/// Huge objects and their bytes.
pub static HUGE: Gauge = Gauge::new();
pub static HUGE_BYTES: Gauge = Gauge::new();
/// Bytes reserved from the OS (arenas, segments mapped on their own).
pub static RESERVED: Gauge = Gauge::new();
/// Committed bytes, in mimalloc's sense: bytes of fortalloc's own mappings
/// that are accessible and not purged since they were last handed out, so
/// may be resident because of it. Memory mapped but never handed out (the
/// rest of an arena, the slots of a fresh segment no block has used yet)
/// counts from when it is first handed out, as purged memory does: it is
/// as untouched. Each owner of memory counts what it holds (an arena its
/// free slices, a segment its header and slots: `segment::commit_more`),
/// and gives back only what it counted, so the level never falls below 0.
pub static COMMITTED: Gauge = Gauge::new();
/// Thread heaps created, and segments abandoned at thread exit / reclaimed.
pub static THREADS: AtomicU64 = AtomicU64::new(0);
pub static ABANDONED: AtomicU64 = AtomicU64::new(0);
pub static RECLAIMED: AtomicU64 = AtomicU64::new(0);

/// Counts of heaps whose threads exited.
static EXITED_MALLOCS: AtomicU64 = AtomicU64::new(0);
static EXITED_FREES: AtomicU64 = AtomicU64::new(0);
static EXITED_REMOTE_FREES: AtomicU64 = AtomicU64::new(0);
static EXITED_EVICTIONS: AtomicU64 = AtomicU64::new(0);

/// Per-heap counters. Only the owning thread writes them.
#[repr(C)]
pub struct HeapCounters {
    pub mallocs: AtomicU64,
    pub frees: AtomicU64,
    /// Frees this thread made of blocks other threads own (huge included).
    pub remote_frees: AtomicU64,
    /// Blocks and bytes in the heap's quarantine now, and the blocks that
    /// have left it (all 0 without the `quarantine` feature).
    pub quarantined: AtomicU64,
    pub quarantined_bytes: AtomicU64,
    pub evictions: AtomicU64,
}

impl HeapCounters {
    pub const fn new() -> HeapCounters {
        HeapCounters {
            mallocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            remote_frees: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            quarantined_bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// Adds this heap's counts to the exited-thread totals and zeroes them,
    /// so a pooled heap contributes nothing twice.
    pub fn fold(&self) {
        EXITED_MALLOCS.fetch_add(self.mallocs.swap(0, Relaxed), Relaxed);
        EXITED_FREES.fetch_add(self.frees.swap(0, Relaxed), Relaxed);
        EXITED_REMOTE_FREES.fetch_add(self.remote_frees.swap(0, Relaxed), Relaxed);
        EXITED_EVICTIONS.fetch_add(self.evictions.swap(0, Relaxed), Relaxed);
        // An exiting thread's quarantine was emptied (levels, not sums).
        self.quarantined.store(0, Relaxed);
        self.quarantined_bytes.store(0, Relaxed);
    }
}

/// Frees by threads without a heap, in cache-line shards: a thread that
/// only frees (the consumer of a producer/consumer pair) does so on every
/// call, and two such threads bumping one shared counter spent a third of
/// a C workload's time passing its cache line back and forth.
#[repr(align(64))]
struct Shard {
    frees: AtomicU64,
    remote_frees: AtomicU64,
}

const SHARDS: usize = 16;
static HEAPLESS: [Shard; SHARDS] = [const {
    Shard {
        frees: AtomicU64::new(0),
        remote_frees: AtomicU64::new(0),
    }
}; SHARDS];

/// Counts a free by a thread without a heap (it never allocated, or is
/// past its exit) in the shard of its stack (thread stacks lie megabytes
/// apart, so threads rarely share one).
pub fn heapless_free(cross_thread: bool) {
    let probe = 0u8;
    let at = core::hint::black_box(&probe) as *const u8 as usize;
    let shard = &HEAPLESS[((at >> 21).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS];
    // Plain increments, not locked ones: a locked add stalls the free
    // until the store buffer drains. Two threads in one shard racing may
    // lose a count; statistics do not need more.
    bump(&shard.frees);
    if cross_thread {
        bump(&shard.remote_frees);
    }
}

/// Counts `n` more bytes of `seg` as committed (`COMMITTED`): they
/// were handed out fresh or purged, or made accessible.
///
/// # Safety
/// `seg` must be a live segment the caller keeps live (its owner, the
/// holder of its class's lock, or the owner of one of its blocks).
pub unsafe fn commit_more(seg: *mut Segment, n: usize) {
    if n == 0 {
        return;
    }
    // SAFETY: `seg`'s header is live (this fn's contract); the count is
    // atomic.
    unsafe { (*seg).committed.fetch_add(n, Relaxed) };
    COMMITTED.increase(n);
}

/// Counts `n` fewer bytes of `seg` as committed: they were purged or made
/// inaccessible. Never more than the segment counts, so a miscount cannot
/// take the total below what the others hold.
///
/// # Safety
/// As for [`commit_more`].
pub unsafe fn commit_less(seg: *mut Segment, n: usize) {
    if n == 0 {
        return;
    }
    // SAFETY: `seg`'s header is live (this fn's contract); the count is
    // atomic.
    let was = unsafe {
        (*seg)
            .committed
            .fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(n)))
    };
    COMMITTED.decrease(was.unwrap_or(0).min(n));
}

/// Starts the count of a segment just set up at `now` bytes, of which
/// `carried` (`core::segment::Fresh::committed`) were counted by the memory's last user.
///
/// # Safety
/// `seg` must be a segment just set up that nobody else uses yet.
pub unsafe fn commit_start(seg: *mut Segment, carried: usize, now: usize) {
    // SAFETY: the segment is set up and nobody else's yet (this fn's
    // contract).
    unsafe { (*seg).committed.store(now, Relaxed) };
    if now >= carried {
        COMMITTED.increase(now - carried);
    } else {
        COMMITTED.decrease(carried - now);
    }
}

/// One owner-only increment: a plain load and store, not a locked add.
#[inline(always)]
pub fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

/// A gauge as read: its level, high-water mark and total increase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GaugeValue {
    /// The level now.
    pub current: u64,
    /// The highest level so far.
    pub peak: u64,
    /// The sum of every increase so far.
    pub total: u64,
}

/// A snapshot of the allocator's counters (see [`stats`](fn@crate::stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful allocations (every entry point, huge objects included).
    pub allocations: u64,
    /// Frees of fortalloc blocks (null frees excluded).
    pub frees: u64,
    /// Frees made by a thread other than the block's owner.
    pub cross_thread_frees: u64,
    /// Bytes of the block areas of pages that hold blocks, plus huge
    /// objects: memory in use at page granularity.
    pub bytes_in_use: GaugeValue,
    /// Pages that hold blocks.
    pub pages: GaugeValue,
    /// Huge objects (over 2 MiB).
    pub huge: GaugeValue,
    /// Bytes of huge objects.
    pub huge_bytes: GaugeValue,
    /// Segments held (4 MiB each, or a huge object's size).
    pub segments: GaugeValue,
    /// Address space reserved from the OS.
    pub reserved_bytes: GaugeValue,
    /// The process's resident memory now, as the kernel counts it (all of
    /// it, not only fortalloc's).
    pub resident_bytes: u64,
    /// The process's peak resident memory so far.
    pub peak_resident_bytes: u64,
    /// Bytes of fortalloc's own memory that are accessible and not purged
    /// since they were last handed out: what may be resident because of
    /// the allocator, an upper bound of its share of `resident_bytes`
    /// (but for blocks the hardened build seals with `mprotect`, which
    /// keep their pages while inaccessible, and count as not committed).
    pub committed_bytes: u64,
    /// The highest `committed_bytes` so far.
    pub peak_committed_bytes: u64,
    /// `madvise` purges.
    pub purges: u64,
    /// Bytes the purges returned to the OS.
    pub purged_bytes: u64,
    /// Kernel calls that changed a guard or a protection (`mprotect`, and
    /// `madvise` installing or removing guard markers): guards made and
    /// blocks sealed or opened (0 unless built with `guard-pages`).
    pub protect_calls: u64,
    /// Guards made with page-table markers (0 unless built with
    /// `guard-pages`).
    pub guard_markers: u64,
    /// Guards made with `mprotect`, where markers are missing.
    pub guard_protects: u64,
    /// Guards not made: the `mprotect` fallback's mapping budget was near
    /// (see SECURITY.md, "Mapping limits").
    pub guards_skipped: u64,
    /// Thread heaps created.
    pub threads: u64,
    /// Segments abandoned by exiting threads.
    pub abandoned_segments: u64,
    /// Abandoned segments reclaimed by other threads.
    pub reclaimed_segments: u64,
    /// Freed blocks waiting in the threads' quarantines (0 without
    /// `quarantine`).
    pub quarantined_blocks: u64,
    /// Their bytes.
    pub quarantined_bytes: u64,
    /// Blocks that have left the quarantines.
    pub quarantine_evictions: u64,
}

impl Stats {
    /// Blocks allocated and not yet freed.
    pub fn live_blocks(&self) -> u64 {
        self.allocations.saturating_sub(self.frees)
    }
}

/// Reads every counter; `each_heap` hands each live heap's counters to
/// the closure it is given (the thread code owns the heaps).
pub fn read(each_heap: impl FnOnce(&mut dyn FnMut(&HeapCounters))) -> Stats {
    let (mut mallocs, mut frees, mut remote) = (
        EXITED_MALLOCS.load(Relaxed),
        EXITED_FREES.load(Relaxed),
        EXITED_REMOTE_FREES.load(Relaxed),
    );
    for shard in &HEAPLESS {
        frees += shard.frees.load(Relaxed);
        remote += shard.remote_frees.load(Relaxed);
    }
    let (mut q_blocks, mut q_bytes, mut evictions) = (0, 0, EXITED_EVICTIONS.load(Relaxed));
    each_heap(&mut |c| {
        mallocs += c.mallocs.load(Relaxed);
        frees += c.frees.load(Relaxed);
        remote += c.remote_frees.load(Relaxed);
        q_blocks += c.quarantined.load(Relaxed);
        q_bytes += c.quarantined_bytes.load(Relaxed);
        evictions += c.evictions.load(Relaxed);
    });
    let guards = os::guard_counts();
    let memory = os::memory_counts();
    let resident = os::resident_bytes();
    let committed = COMMITTED.read();
    Stats {
        allocations: mallocs,
        frees,
        cross_thread_frees: remote,
        bytes_in_use: IN_USE.read(),
        pages: PAGES.read(),
        huge: HUGE.read(),
        huge_bytes: HUGE_BYTES.read(),
        segments: SEGMENTS.read(),
        reserved_bytes: RESERVED.read(),
        resident_bytes: resident.0,
        peak_resident_bytes: resident.1,
        committed_bytes: committed.current,
        peak_committed_bytes: committed.peak,
        purges: memory.purges,
        purged_bytes: memory.purged_bytes,
        protect_calls: memory.protects + guards.marker_calls,
        guard_markers: guards.markers,
        guard_protects: guards.protects,
        guards_skipped: guards.skipped,
        threads: THREADS.load(Relaxed),
        abandoned_segments: ABANDONED.load(Relaxed),
        reclaimed_segments: RECLAIMED.load(Relaxed),
        quarantined_blocks: q_blocks,
        quarantined_bytes: q_bytes,
        quarantine_evictions: evictions,
    }
}

/// The build's optional rows of the table (the defences that have
/// counters of their own).
pub struct Sections {
    pub guards: bool,
    pub quarantine: bool,
}

/// Writes `s` as a table to file descriptor `fd`, one `write` per line,
/// without allocating: a heading with the process id and the program's
/// name, then a row per counter (and the rows `sections` asks for). Every
/// row says what it counts and in which unit; docs/USAGE.md
/// ("Statistics") explains each, and the line after the heading points there.
pub fn write_table(fd: i32, s: &Stats, sections: Sections) {
    // Under a shell script many processes print a table to one stderr; the
    // heading tells them apart.
    let mut name = [0u8; 128];
    let name_len = os::program_name(&mut name);
    let mut heading = Line::new();
    heading
        .str("fortalloc: statistics of process ")
        .dec(os::process_id().max(0) as usize)
        .str(" (");
    for &b in name.get(..name_len).unwrap_or(&[]) {
        heading.byte_lossy(b);
    }
    heading.str(")\n");
    os::write_fd(fd, heading.as_bytes());
    os::write_fd(fd, LEGEND.as_bytes());
    let row = |name: &str, fill: &mut dyn FnMut(&mut Line)| {
        let mut line = Line::new();
        line.str("fortalloc: ").str(name);
        for _ in name.len()..ROW_NAME_WIDTH {
            line.str(" ");
        }
        line.str(" ");
        fill(&mut line);
        line.str("\n");
        os::write_fd(fd, line.as_bytes());
    };
    let count = |line: &mut Line, v: u64| {
        line.dec(v as usize);
    };
    row("allocations", &mut |l| count(l, s.allocations));
    row("frees", &mut |l| {
        count(l, s.frees);
        l.str(", by a thread not the owner ");
        count(l, s.cross_thread_frees);
    });
    row("live blocks", &mut |l| count(l, s.live_blocks()));
    row("pages holding blocks", &mut |l| {
        count(l, s.pages.current);
        l.str(" with room for ")
            .bytes(s.bytes_in_use.current)
            .str(" of blocks, peak ");
        count(l, s.pages.peak);
        l.str(" with room for ").bytes(s.bytes_in_use.peak);
    });
    row("huge blocks (> 2 MiB)", &mut |l| {
        count(l, s.huge.current);
        l.str(" of ").bytes(s.huge_bytes.current).str(", peak ");
        count(l, s.huge.peak);
        l.str(", ever ");
        count(l, s.huge.total);
    });
    row("segments", &mut |l| {
        count(l, s.segments.current);
        l.str(", peak ");
        count(l, s.segments.peak);
        l.str(", ever ");
        count(l, s.segments.total);
    });
    row("memory of fortalloc", &mut |l| {
        l.bytes(s.committed_bytes)
            .str(", peak ")
            .bytes(s.peak_committed_bytes)
            .str(" (committed: may be resident)");
    });
    row("process resident", &mut |l| {
        l.bytes(s.resident_bytes)
            .str(", peak ")
            .bytes(s.peak_resident_bytes)
            .str(" (the whole process's, as the kernel counts it)");
    });
    row("address space reserved", &mut |l| {
        l.bytes(s.reserved_bytes.current)
            .str(", peak ")
            .bytes(s.reserved_bytes.peak)
            .str(" (not memory until used)");
    });
    row("returned to the OS", &mut |l| {
        l.bytes(s.purged_bytes).str(" in ");
        count(l, s.purges);
        l.str(" purges (freed memory waits ")
            .dec(crate::options::purge_delay_ms() as usize)
            .str(" ms first)");
    });
    row("protection changes", &mut |l| count(l, s.protect_calls));
    if sections.guards {
        row("guard pages", &mut |l| {
            count(l, s.guard_markers);
            l.str(" kernel markers, ");
            count(l, s.guard_protects);
            l.str(" mprotect, ");
            count(l, s.guards_skipped);
            l.str(" not made (mapping limit near)");
        });
    }
    if sections.quarantine {
        row("quarantine", &mut |l| {
            count(l, s.quarantined_blocks);
            l.str(" blocks of ").bytes(s.quarantined_bytes).str(" held, ");
            count(l, s.quarantine_evictions);
            l.str(" released");
        });
    }
    row("threads", &mut |l| count(l, s.threads));
    row("segments of exited threads", &mut |l| {
        count(l, s.abandoned_segments);
        l.str(", taken over by others ");
        count(l, s.reclaimed_segments);
    });
}

/// The line after the heading: where the rows are explained.
const LEGEND: &str =
    "fortalloc: (each row is explained in docs/USAGE.md, \"Statistics\"; 1 KiB = 1024 bytes)\n";

/// The width of the table's row names (the longest, and a space).
const ROW_NAME_WIDTH: usize = 27;
