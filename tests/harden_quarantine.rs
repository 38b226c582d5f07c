//! The `quarantine` defence: a block just freed is not among the next
//! allocations of its size, so a stale pointer to it does not reach its
//! next owner. Each test asserts in every build: the plain build must fail
//! the hardened thresholds. (A write to a quarantined block is the
//! `zero-on-free` tests' concern.)
//!
//! Presets: `secure` and `secure-max` both hold freed blocks.

mod common;
mod hardened;

use hardened::{free, malloc, reuse_after_freeing_256};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// With the quarantine, none of 256 blocks just freed is among the next
/// 256 allocations of their size (nothing was freed in between to make
/// room); without it, most are.
#[test]
fn freed_blocks_stay_out_of_the_next_allocations() {
    let reused = reuse_after_freeing_256();
    if cfg!(feature = "quarantine") {
        assert!(reused.is_empty(), "{} came back: {reused:?}", reused.len());
    } else {
        assert!(
            reused.len() > 128,
            "without the quarantine freed blocks come back, failing the threshold: {}",
            reused.len()
        );
    }
}

/// After `free(a); free(b)` of one size, how often either is among the
/// next 64 allocations of that size, over 200 trials (the test):
/// under 1% with the quarantine; every time without it.
#[test]
fn two_blocks_just_freed_are_not_among_the_next_64() {
    let mut hit = 0;
    for _ in 0..200 {
        let a = malloc(64);
        let b = malloc(64);
        // SAFETY: live blocks, each freed once.
        unsafe {
            free(a);
            free(b);
        }
        let next: Vec<*mut u8> = (0..64).map(|_| malloc(64)).collect();
        if next.iter().any(|&p| p == a || p == b) {
            hit += 1;
        }
        for p in next {
            // SAFETY: live, freed once.
            unsafe { free(p) };
        }
    }
    if cfg!(feature = "quarantine") {
        assert!(hit <= 2, "{hit} of 200 trials reused a or b");
    } else {
        assert!(
            hit > 190,
            "without the quarantine a or b comes back, failing the threshold: {hit} of 200"
        );
    }
}

/// `free(p); q = malloc(n)`: how often `q` is `p` (a later stale
/// `free(p)` would then free `q` and go unnoticed): under 1% with the
/// quarantine, over 1,000 trials.
#[test]
fn a_block_just_freed_is_not_the_next_one_handed_out() {
    let mut same = 0;
    let mut kept = Vec::with_capacity(1000);
    for i in 0..1000 {
        let n = 16 + (i % 64) * 16;
        let p = malloc(n);
        // SAFETY: live, freed once.
        unsafe { free(p) };
        let q = malloc(n);
        if q == p {
            same += 1;
        }
        kept.push(q);
    }
    for q in kept {
        // SAFETY: live, freed once.
        unsafe { free(q) };
    }
    if cfg!(feature = "quarantine") {
        assert!(same < 10, "{same} of 1000");
    } else {
        assert!(
            same >= 10,
            "without the quarantine p comes back, failing the threshold: {same} of 1000"
        );
    }
}

/// The default bound on the bytes all threads' quarantines hold together.
const PROCESS_BOUND: u64 = 8 << 20;
/// The per-thread bound, and one thread's slack over it between two
/// rounds (an eighth of it, and the block that found it full).
const THREAD_BOUND: u64 = 512 << 10;
const ROUND_SLACK: u64 = THREAD_BOUND / 8 + 4096;

/// `threads` threads each free blocks of 64 B to 4 KiB into their
/// quarantines, twice over the per-thread bound, all at once, and then
/// wait until every one has; meanwhile this thread reads the process's
/// quarantined bytes. Prints the bytes quarantined before they start (by
/// this process's other threads, after this one's quarantine is emptied),
/// the most it read and what it read with all the threads done and still
/// alive (their quarantines kept).
fn quarantined_bytes_with(threads: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    fortalloc::collect(false);
    let before = fortalloc::stats().quarantined_bytes;
    let done = Arc::new(AtomicUsize::new(0));
    let exit = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (done, exit) = (done.clone(), exit.clone());
            std::thread::spawn(move || {
                let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ t as u64;
                let mut freed = 0;
                while freed < 2 * THREAD_BOUND as usize {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let n = 64 + (s as usize % 4033);
                    let p = malloc(n);
                    // SAFETY: live, freed once.
                    unsafe { free(p) };
                    freed += n;
                }
                done.fetch_add(1, Ordering::Release);
                exit.wait();
            })
        })
        .collect();
    let mut most = 0;
    while done.load(Ordering::Acquire) < threads {
        most = most.max(fortalloc::stats().quarantined_bytes);
        std::thread::yield_now();
    }
    let settled = fortalloc::stats().quarantined_bytes;
    exit.wait();
    for w in workers {
        w.join().expect("worker");
    }
    println!("before={before} most={} settled={settled}", most.max(settled));
}

/// With 64 threads freeing at once, the process's quarantined bytes never
/// pass the process bound (8 MiB by default) by more than one thread's
/// round slack, though the threads' own bounds add up to 32 MiB; and the
/// threads do fill their shares (most of the bound is in use).
#[test]
fn many_threads_share_the_process_bound() {
    common::child("64-threads")
        .run(|| quarantined_bytes_with(64))
        .check(|out| {
            out.assert_success("64 threads");
            let most = common::count_after(out, "most=");
            let settled = common::count_after(out, "settled=");
            eprintln!("64 threads: {most} bytes quarantined at most, {settled} at the end");
            if cfg!(feature = "quarantine") {
                assert!(
                    most <= PROCESS_BOUND + ROUND_SLACK,
                    "{most} bytes quarantined at most, over {PROCESS_BOUND} + {ROUND_SLACK}"
                );
                assert!(
                    settled >= PROCESS_BOUND / 2,
                    "{settled} bytes quarantined: the threads did not fill their shares"
                );
            } else {
                assert_eq!(most, 0);
            }
        });
}

/// A thread alone keeps the per-thread bound: it fills its quarantine to
/// within a round of 512 KiB and never past it.
#[test]
fn one_thread_keeps_the_per_thread_bound() {
    common::child("1-thread")
        .run(|| quarantined_bytes_with(1))
        .check(|out| {
            out.assert_success("1 thread");
            let most = common::count_after(out, "most=");
            let settled = common::count_after(out, "settled=");
            let before = common::count_after(out, "before=");
            eprintln!("1 thread: {before} bytes quarantined before, {most} at most, {settled} at the end");
            if cfg!(feature = "quarantine") {
                assert!(
                    most <= before + THREAD_BOUND,
                    "{most} bytes, over {before} + {THREAD_BOUND}"
                );
                assert!(
                    settled + ROUND_SLACK >= before + THREAD_BOUND,
                    "{settled} bytes quarantined, not within a round of {before} + {THREAD_BOUND}"
                );
            } else {
                assert_eq!(most, 0);
            }
        });
}
