//! The `random-order` defence (and the guard build's random segment
//! bases): fresh blocks are not handed out in address order, freed ones
//! are not reused last-freed-first or in freeing order, and the heap's
//! layout differs from run to run with ASLR off. Each test asserts in
//! every build: the plain build must fail the hardened thresholds.
//!
//! Presets: `secure` and `secure-max` both randomize.

mod common;
mod hardened;

use common::child;
use hardened::{free, malloc, print_reused, reuse_after_freeing_256, reused};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Consecutive allocations of one size: the fraction whose address is the
/// next block up from the previous one. The plain build hands out fresh
/// blocks in address order; `random-order` must not. The threshold is fixed
/// and the plain build fails it.
#[test]
fn allocation_order_randomness() {
    let blocks: Vec<usize> = (0..2000).map(|_| malloc(48) as usize).collect();
    // SAFETY: a live block.
    let stride = unsafe { fortalloc::usable_size(blocks[0] as *const u8) };
    let stride = if stride == 48 {
        48
    } else {
        stride.next_multiple_of(8).max(56)
    };
    let neighbours = blocks
        .windows(2)
        .filter(|w| w[1] > w[0] && w[1] - w[0] <= stride.max(64))
        .count();
    for &p in &blocks {
        // SAFETY: each block is live and freed once.
        unsafe { free(p as *mut u8) };
    }
    let f = neighbours as f64 / (blocks.len() - 1) as f64;
    if cfg!(feature = "random-order") {
        assert!(
            f < 0.25,
            "random order: {f:.3} of consecutive blocks are neighbours"
        );
    } else {
        assert!(
            f > 0.9,
            "plain order is address order, failing the threshold: {f:.3}"
        );
    }
}

/// Blocks freed together and then allocated again: the fraction of
/// consecutive allocations that take the block freed just before the one
/// taken previously, i.e. last-freed-first order. The plain build reuses in
/// that order; `random-order` must not. The threshold is fixed and the
/// plain build fails it. Measured in a child without the quarantine, which
/// keeps the freed blocks out of the way entirely (see
/// `harden_quarantine.rs`).
#[test]
fn reuse_order_randomness() {
    child("reuse-order")
        .run(|| {
            fortalloc::set_quarantine(0, 0);
            print_reused(&reuse_after_freeing_256());
        })
        .check(|o| {
            let reused = reused(o);
            assert!(
                reused.len() > 128,
                "only {} of the freed blocks came back",
                reused.len()
            );
            let lifo = reused.windows(2).filter(|w| w[1] + 1 == w[0]).count();
            let f = lifo as f64 / (reused.len() - 1) as f64;
            if cfg!(feature = "random-order") {
                assert!(f < 0.2, "random order: {f:.3} of reuses are last-freed-first");
            } else {
                assert!(
                    f > 0.5,
                    "plain reuse is last-freed-first, failing the threshold: {f:.3}"
                );
            }
        });
}

/// Blocks freed by another thread, then allocated again: consecutive
/// allocations taking blocks freed one after the other (in either
/// direction) are the plain order; `random-order` must not keep it. The
/// plain build fails the threshold.
#[test]
fn reuse_order_randomness_of_blocks_freed_by_another_thread() {
    child("reuse-order-remote")
        .run(|| {
            // Freed by another thread, in allocation order.
            fortalloc::set_quarantine(0, 0);
            let first: Vec<usize> = (0..256).map(|_| malloc(48) as usize).collect();
            let theirs = first.clone();
            std::thread::spawn(move || {
                for p in theirs {
                    // SAFETY: each block is live and freed once.
                    unsafe { free(p as *mut u8) };
                }
            })
            .join()
            .unwrap();
            let freed_at: std::collections::HashMap<usize, usize> =
                first.iter().enumerate().map(|(i, &p)| (p, i)).collect();
            let again: Vec<usize> = (0..256).map(|_| malloc(48) as usize).collect();
            let reused: Vec<usize> = again.iter().filter_map(|p| freed_at.get(p).copied()).collect();
            print_reused(&reused);
        })
        .check(|o| {
            let reused = reused(o);
            assert!(reused.len() > 128, "only {} came back", reused.len());
            let ordered = reused.windows(2).filter(|w| w[1].abs_diff(w[0]) == 1).count();
            let f = ordered as f64 / (reused.len() - 1) as f64;
            if cfg!(feature = "random-order") {
                assert!(f < 0.2, "random order: {f:.3} of reuses follow the freeing order");
            } else {
                assert!(
                    f > 0.5,
                    "plain reuse follows the freeing order, failing the threshold: {f:.3}"
                );
            }
        });
}

/// With ASLR off, a plain build lays the heap out the same way every run;
/// the guard-pages build must not.
#[test]
fn layouts_with_aslr_off() {
    let layout = || {
        child("layout")
            .aslr_off()
            .run(|| {
                // Eight small blocks: with random order one alone repeats
                // across runs once in a batch's length (a chance match),
                // eight in a row do not.
                let small: Vec<String> = (0..8).map(|_| format!("{:#x}", malloc(64) as usize)).collect();
                let large = malloc(300_000) as usize;
                let huge = malloc(8 << 20) as usize;
                println!("layout={},{:#x},{:#x}", small.join(";"), large, huge);
            })
            .outcome()
            .map(|o| {
                o.stdout
                    .split_once("layout=")
                    .map(|(_, l)| l.lines().next().unwrap_or("").to_string())
                    .unwrap_or_else(|| panic!("no layout printed: {}", o.stdout))
            })
    };
    // None in the child, which has run the case's body.
    let (Some(a), Some(b)) = (layout(), layout()) else {
        return;
    };
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split(',').collect(), b.split(',').collect());
    assert_eq!(a.len(), 3);
    if cfg!(feature = "guard-pages") {
        // Segment bases: where the large and huge blocks (each at the start
        // of its own segment) land.
        assert_ne!(a[1..], b[1..], "randomized segment bases");
    } else if cfg!(feature = "random-order") {
        assert_ne!(a[0], b[0], "randomized block order");
    } else {
        assert_eq!(a, b, "the plain build is deterministic without ASLR");
    }
}
