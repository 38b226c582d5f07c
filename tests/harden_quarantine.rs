//! The `quarantine` defence: a block just freed is not among the next
//! allocations of its size, so a stale pointer to it does not reach its
//! next owner. Each test asserts in every build: the plain build must fail
//! the hardened thresholds. (A write to a quarantined block is the
//! `zero-on-free` tests' concern.)

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
