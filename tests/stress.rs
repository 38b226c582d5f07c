//! A stress test in the spirit of mimalloc's test-stress: threads allocate
//! random sizes (mostly small, some large, a few huge), write a pattern
//! derived from each block's address and size, and check it before freeing;
//! blocks move between threads through an atomic transfer array, so most are
//! freed by a thread that did not allocate them; each round's threads exit
//! with blocks still alive in the array and new threads free them. At the
//! end of every round no two live blocks overlap.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

const THREADS: usize = 8;
const ROUNDS: usize = 10;
const ITERS: usize = 20_000;
const TRANSFER: usize = 1000;

/// A slot holds `ptr | 0` or 0; the size is in the parallel array, written
/// before the pointer is published and read after it is taken.
static SLOTS: [AtomicUsize; TRANSFER] = [const { AtomicUsize::new(0) }; TRANSFER];
static SIZES: [AtomicUsize; TRANSFER] = [const { AtomicUsize::new(0) }; TRANSFER];

fn pick_size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..1000) {
        0..=899 => rng.gen_range(1..=256),
        900..=979 => rng.gen_range(257..=64 << 10),
        980..=997 => rng.gen_range((64 << 10) + 1..=1 << 20),
        _ => rng.gen_range((2 << 20) + 1..=6 << 20),
    }
}

fn word_for(p: usize, size: usize, i: usize) -> u64 {
    (p as u64 ^ (size as u64).rotate_left(32) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1
}

/// Words of a block the pattern covers: all of a small one, a sample of a
/// big one (first, last and every 1021st word).
fn pattern_words(size: usize) -> impl Iterator<Item = usize> {
    let n = size / 8;
    let step = if n <= 512 { 1 } else { 1021 };
    (0..n).step_by(step).chain((n > 512).then(|| n - 1))
}

fn alloc_block(rng: &mut SmallRng) -> (usize, usize) {
    let size = pick_size(rng);
    let p = fortalloc::malloc(size);
    assert!(!p.is_null(), "malloc({size})");
    let p = p as usize;
    for i in pattern_words(size) {
        // SAFETY: `i < size / 8`, inside the fresh block.
        unsafe { (p as *mut u64).add(i).write_unaligned(word_for(p, size, i)) };
    }
    if !size.is_multiple_of(8) {
        // SAFETY: the last byte of the block.
        unsafe { *((p + size - 1) as *mut u8) = p as u8 ^ 0x5a };
    }
    (p, size)
}

fn check_and_free(p: usize, size: usize) {
    for i in pattern_words(size) {
        // SAFETY: the block is live and `size` bytes long.
        let w = unsafe { (p as *const u64).add(i).read_unaligned() };
        assert_eq!(
            w,
            word_for(p, size, i),
            "block {p:#x} ({size} B) word {i} corrupted"
        );
    }
    if !size.is_multiple_of(8) {
        // SAFETY: the last byte of the live block.
        assert_eq!(unsafe { *((p + size - 1) as *const u8) }, p as u8 ^ 0x5a);
    }
    // SAFETY: the block is live and freed exactly once, here.
    unsafe { fortalloc::free(p as *mut u8) };
}

/// A slot being swapped by some thread.
const BUSY: usize = 1;

/// Swaps a block into a random transfer slot, freeing what was there. The
/// slot is held (BUSY) while its size is exchanged.
fn transfer(rng: &mut SmallRng, p: usize, size: usize) {
    let slot = rng.gen_range(0..TRANSFER);
    let old = loop {
        let old = SLOTS[slot].swap(BUSY, Ordering::Acquire);
        if old != BUSY {
            break old;
        }
        std::hint::spin_loop();
    };
    let old_size = SIZES[slot].swap(size, Ordering::Relaxed);
    SLOTS[slot].store(p, Ordering::Release);
    if old != 0 {
        check_and_free(old, old_size);
    }
}

fn worker(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut local: Vec<(usize, usize)> = Vec::new();
    for _ in 0..ITERS {
        match rng.gen_range(0..10) {
            0..=4 => local.push(alloc_block(&mut rng)),
            5..=7 if !local.is_empty() => {
                let (p, s) = local.swap_remove(rng.gen_range(0..local.len()));
                check_and_free(p, s);
            }
            _ => {
                let (p, s) = alloc_block(&mut rng);
                transfer(&mut rng, p, s);
            }
        }
    }
    // Half of what is left goes to the transfer array, to outlive us.
    for (i, (p, s)) in local.into_iter().enumerate() {
        if i % 2 == 0 {
            transfer(&mut rng, p, s);
        } else {
            check_and_free(p, s);
        }
    }
}

fn assert_no_overlap() {
    let mut live: Vec<(usize, usize)> = Vec::new();
    for i in 0..TRANSFER {
        let p = SLOTS[i].load(Ordering::Acquire);
        if p != 0 {
            live.push((p, SIZES[i].load(Ordering::Acquire).max(1)));
        }
    }
    live.sort_unstable();
    for w in live.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "live blocks overlap: {:x?} and {:x?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn threads_share_blocks_and_exit_with_blocks_alive() {
    for round in 0..ROUNDS {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let seed = (round * THREADS + t) as u64 + 1;
                std::thread::spawn(move || worker(seed))
            })
            .collect();
        for h in handles {
            h.join().expect("worker");
        }
        // Every thread of the round has exited; its blocks in the array are
        // now owned by no thread until someone frees them.
        assert_no_overlap();
    }
    for i in 0..TRANSFER {
        let p = SLOTS[i].swap(0, Ordering::AcqRel);
        if p != 0 {
            check_and_free(p, SIZES[i].load(Ordering::Acquire));
        }
    }
    fortalloc::collect(true);
}
