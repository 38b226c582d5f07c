//! The statistics count what the program did: allocations, frees (and
//! which were cross-thread), pages, huge objects, purges, threads.
//! One test per binary: the counters are process-wide.

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

#[test]
fn counters_follow_the_program() {
    let before = fortalloc::stats();

    // 10_000 small blocks, freed by this thread.
    let blocks: Vec<usize> = (0..10_000)
        .map(|i| fortalloc::malloc(16 + i % 200) as usize)
        .collect();
    assert!(blocks.iter().all(|&p| p != 0));
    let mid = fortalloc::stats();
    assert!(
        mid.allocations >= before.allocations + 10_000,
        "{before:?} -> {mid:?}"
    );
    assert!(mid.pages.current > 0 && mid.segments.current > 0, "{mid:?}");
    for &p in &blocks {
        // SAFETY: each block came from fortalloc::malloc and is freed once.
        unsafe { fortalloc::free(p as *mut u8) };
    }
    let after_local = fortalloc::stats();
    assert!(
        after_local.frees >= mid.frees + 10_000,
        "{mid:?} -> {after_local:?}"
    );

    // 5_000 blocks allocated here and freed by another thread.
    let blocks: Vec<usize> = (0..5_000).map(|_| fortalloc::malloc(64) as usize).collect();
    std::thread::spawn(move || {
        let own = std::hint::black_box(vec![1u8; 100]);
        for p in blocks {
            // SAFETY: each block is live and freed exactly once, here.
            unsafe { fortalloc::free(p as *mut u8) };
        }
        drop(own);
    })
    .join()
    .expect("freeing thread");
    let after_remote = fortalloc::stats();
    assert!(
        after_remote.cross_thread_frees >= after_local.cross_thread_frees + 5_000,
        "{after_local:?} -> {after_remote:?}"
    );
    assert!(
        after_remote.threads > after_local.threads,
        "the thread got a heap of its own"
    );

    // 3_000 blocks freed by a thread that never allocates (a raw pthread,
    // so not even the Rust runtime allocates on it): it has no heap, and
    // its frees are counted all the same.
    extern "C" fn free_all(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the boxed list below, read-only here.
        let blocks = unsafe { &*(arg as *const Vec<usize>) };
        for &p in blocks {
            // SAFETY: each block is live and freed exactly once, here.
            unsafe { fortalloc::free(p as *mut u8) };
        }
        std::ptr::null_mut()
    }
    let blocks: Vec<usize> = (0..3_000).map(|_| fortalloc::malloc(48) as usize).collect();
    let threads_before = fortalloc::stats().threads;
    let before_heapless = fortalloc::stats();
    // SAFETY: the thread only reads `blocks`, which outlives the join.
    unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        let arg = &blocks as *const Vec<usize> as *mut libc::c_void;
        assert_eq!(libc::pthread_create(&mut t, std::ptr::null(), free_all, arg), 0);
        assert_eq!(libc::pthread_join(t, std::ptr::null_mut()), 0);
    }
    let after_heapless = fortalloc::stats();
    assert_eq!(
        after_heapless.threads, threads_before,
        "the freeing thread had no heap"
    );
    assert!(
        after_heapless.frees >= before_heapless.frees + 3_000
            && after_heapless.cross_thread_frees >= before_heapless.cross_thread_frees + 3_000,
        "{before_heapless:?} -> {after_heapless:?}"
    );
    drop(blocks);

    // A huge object shows up as one, with its bytes in use, and goes away.
    let huge = fortalloc::malloc(64 << 20);
    assert!(!huge.is_null());
    let with_huge = fortalloc::stats();
    assert!(with_huge.huge.current >= 1);
    assert!(with_huge.huge_bytes.current >= 64 << 20);
    assert!(with_huge.bytes_in_use.current >= 64 << 20);
    // SAFETY: `huge` is live and freed once.
    unsafe { fortalloc::free(huge) };
    let without = fortalloc::stats();
    assert!(without.huge_bytes.current + (64 << 20) <= with_huge.huge_bytes.current);
    assert!(without.bytes_in_use.peak >= 64 << 20);

    // Touched memory that was freed is purged by a forced collect.
    let big: Vec<usize> = (0..64)
        .map(|_| {
            let p = fortalloc::malloc(100_000);
            // SAFETY: a fresh 100 kB block.
            unsafe { std::ptr::write_bytes(p, 1, 100_000) };
            p as usize
        })
        .collect();
    for p in big {
        // SAFETY: live, freed once.
        unsafe { fortalloc::free(p as *mut u8) };
    }
    fortalloc::collect(true);
    let purged = fortalloc::stats();
    assert!(purged.purges > without.purges, "{without:?} -> {purged:?}");
    assert!(purged.purged_bytes >= without.purged_bytes + (6 << 20));

    resident_memory_is_the_kernels_count();
    quarantine_levels_and_evictions();
}

/// The resident bytes are the process's, as the kernel counts them: 32 MiB
/// written raise them, and the peak, by about that much.
fn resident_memory_is_the_kernels_count() {
    let before = fortalloc::stats();
    assert!(before.resident_bytes > 0);
    let n = 32 << 20;
    let p = fortalloc::malloc(n);
    assert!(!p.is_null());
    // SAFETY: a fresh block of `n` bytes.
    unsafe { std::ptr::write_bytes(p, 1, n) };
    let touched = fortalloc::stats();
    assert!(
        touched.resident_bytes >= before.resident_bytes + (30 << 20),
        "{} -> {}",
        before.resident_bytes,
        touched.resident_bytes
    );
    assert!(
        touched.peak_resident_bytes >= before.resident_bytes + (30 << 20),
        "peak {}",
        touched.peak_resident_bytes
    );
    // SAFETY: live, freed once.
    unsafe { fortalloc::free(p) };
}

/// Frees wait in this thread's quarantine (builds with the feature): the
/// levels count them, the evictions count those let out, and `collect`
/// empties it. Without the feature all three stay 0.
fn quarantine_levels_and_evictions() {
    let alloc_n = |n: usize| -> Vec<usize> { (0..n).map(|_| fortalloc::malloc(32) as usize).collect() };
    let free_all = |blocks: Vec<usize>| {
        for p in blocks {
            // SAFETY: each block is live and freed once.
            unsafe { fortalloc::free(p as *mut u8) };
        }
    };
    fortalloc::collect(false);
    let empty = fortalloc::stats();
    free_all(alloc_n(100));
    let held = fortalloc::stats();
    free_all(alloc_n(3_000));
    let full = fortalloc::stats();
    fortalloc::collect(false);
    let emptied = fortalloc::stats();
    if !cfg!(feature = "quarantine") {
        for s in [held, full, emptied] {
            assert_eq!(
                (s.quarantined_blocks, s.quarantined_bytes, s.quarantine_evictions),
                (0, 0, 0)
            );
        }
        return;
    }
    // Other threads' quarantines (the test harness's) may hold some too.
    assert!(
        held.quarantined_blocks >= empty.quarantined_blocks + 100
            && held.quarantined_bytes >= empty.quarantined_bytes + 100 * 32,
        "{empty:?} -> {held:?}"
    );
    assert!(
        full.quarantine_evictions >= held.quarantine_evictions + 3_100 - 1024,
        "{held:?} -> {full:?}"
    );
    assert!(
        emptied.quarantined_blocks + 100 <= full.quarantined_blocks
            && emptied.quarantine_evictions >= full.quarantine_evictions + 100,
        "{full:?} -> {emptied:?}"
    );
}
