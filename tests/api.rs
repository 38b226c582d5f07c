//! The Rust API: sizes, alignments up to 1 GiB, impossible requests,
//! realloc, zeroed allocation after dirty reuse.

use std::alloc::{GlobalAlloc, Layout};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Writes `len` pattern bytes derived from `seed`.
///
/// # Safety
/// `p` must be valid for `len` bytes of writes.
unsafe fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: in bounds per the caller.
        unsafe { *p.add(i) = seed.wrapping_add(i as u8).wrapping_mul(31) };
    }
}

/// # Safety
/// `p` must be valid for `len` bytes of reads.
unsafe fn check(p: *const u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: in bounds per the caller.
        let b = unsafe { *p.add(i) };
        assert_eq!(
            b,
            seed.wrapping_add(i as u8).wrapping_mul(31),
            "byte {i} of {len}"
        );
    }
}

#[test]
fn zero_size_allocations_are_unique_and_freeable() {
    let ptrs: Vec<*mut u8> = (0..100).map(|_| fortalloc::malloc(0)).collect();
    let mut sorted: Vec<usize> = ptrs.iter().map(|&p| p as usize).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 100, "distinct");
    assert!(ptrs.iter().all(|p| !p.is_null()));
    for p in ptrs {
        // SAFETY: live, freed once.
        unsafe { fortalloc::free(p) };
    }
}

#[test]
fn zero_size_requests_aligned_to_sixteen_get_sixteen_aligned_blocks() {
    // Enough to empty several pages: the fast path (the direct table's
    // entry for 0) and the slow one (a fresh page of the same bin) both.
    let ptrs: Vec<*mut u8> = (0..5000)
        .map(|i| fortalloc::malloc_aligned(0, if i % 2 == 0 { 16 } else { 8 }))
        .collect();
    for (i, &p) in ptrs.iter().enumerate() {
        assert!(!p.is_null());
        if i % 2 == 0 {
            assert_eq!(p as usize % 16, 0, "request {i}");
        }
    }
    let mut sorted: Vec<usize> = ptrs.iter().map(|&p| p as usize).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ptrs.len(), "distinct");
    for p in ptrs {
        // SAFETY: live, freed once.
        unsafe { fortalloc::free(p) };
    }
}

#[test]
fn every_small_size_and_a_sample_of_big_ones() {
    let mut sizes: Vec<usize> = (1..=9000).collect();
    let mut s = 9000usize;
    while s <= 64 << 20 {
        sizes.extend([s - 1, s, s + 1, s + s / 3]);
        s *= 2;
    }
    for size in sizes {
        let p = fortalloc::malloc(size);
        assert!(!p.is_null(), "size {size}");
        assert_eq!(p as usize % 8, 0, "word aligned");
        // SAFETY: `p` is a live block of at least `size` bytes.
        unsafe {
            let usable = fortalloc::usable_size(p);
            assert!(usable >= size, "usable {usable} < {size}");
            // The whole usable size is writable.
            *p = 1;
            *p.add(usable - 1) = 2;
            if size <= 9000 {
                fill(p, usable, size as u8);
                check(p, usable, size as u8);
            }
            fortalloc::free(p);
        }
    }
}

#[test]
fn every_power_of_two_alignment_up_to_one_gib() {
    let mut align = 1usize;
    while align <= 1 << 30 {
        let sizes: &[usize] = if align >= 1 << 26 {
            &[1, 4096]
        } else {
            &[0, 1, 7, 100, 4096]
        };
        for &size in sizes
            .iter()
            .chain([align.saturating_sub(1), align, align + 1].iter())
        {
            if size > 1 << 28 {
                continue;
            }
            let p = fortalloc::malloc_aligned(size, align);
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            // SAFETY: a live block of at least `size` bytes.
            unsafe {
                assert!(fortalloc::usable_size(p) >= size);
                if size > 0 {
                    *p = 1;
                    *p.add(size - 1) = 1;
                }
                fortalloc::free(p);
            }
            if size > 0 {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: a valid non-zero layout; freed with the same one.
                unsafe {
                    let q = std::alloc::alloc(layout);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "Layout size {size} align {align}");
                    std::alloc::dealloc(q, layout);
                    let z = std::alloc::alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size.min(4096)).all(|i| *z.add(i) == 0));
                    std::alloc::dealloc(z, layout);
                }
            }
        }
        align *= 2;
    }
}

#[test]
fn impossible_requests_return_null() {
    assert!(fortalloc::malloc(usize::MAX).is_null());
    assert!(fortalloc::malloc(isize::MAX as usize).is_null());
    assert!(fortalloc::malloc(usize::MAX / 2 + 1).is_null());
    assert!(fortalloc::zalloc(usize::MAX - 4095).is_null());
    assert!(fortalloc::malloc_aligned(usize::MAX - 100, 64).is_null());
    assert!(fortalloc::malloc_aligned(100, 1 << 62).is_null());
    assert!(fortalloc::malloc_aligned(100, 3).is_null(), "not a power of two");
    assert!(fortalloc::malloc_aligned(100, 0).is_null());
    // Through GlobalAlloc directly: the largest Layouts Rust allows.
    let huge = Layout::from_size_align(isize::MAX as usize - 4095, 4096).expect("layout");
    // SAFETY: a valid layout; null is the expected answer.
    unsafe {
        assert!(fortalloc::FortAlloc.alloc(huge).is_null());
        assert!(fortalloc::FortAlloc.alloc_zeroed(huge).is_null());
    }
    // A failed realloc leaves the block as it was.
    let p = fortalloc::malloc(100);
    // SAFETY: `p` is live; after the failed realloc it still is.
    unsafe {
        fill(p, 100, 9);
        assert!(fortalloc::realloc(p, usize::MAX / 2 + 1).is_null());
        check(p, 100, 9);
        fortalloc::free(p);
    }
}

#[test]
fn realloc_grows_and_shrinks_across_classes_keeping_contents() {
    let steps = [
        1usize,
        8,
        24,
        100,
        1000,
        1024,
        5000,
        8192,
        9000,
        60_000,
        70_000,
        500_000,
        2 << 20,
        3 << 20,
        16 << 20,
        5 << 20,
        100_000,
        3000,
        50,
        3,
    ];
    let mut p = fortalloc::malloc(steps[0]);
    // SAFETY: `p` is always the live block of the current size.
    unsafe {
        fill(p, steps[0], 1);
        for w in steps.windows(2) {
            let (old, new) = (w[0], w[1]);
            p = fortalloc::realloc(p, new);
            assert!(!p.is_null());
            check(p, old.min(new), 1);
            fill(p, new, 1);
        }
        fortalloc::free(p);
    }
}

#[test]
fn realloc_stays_in_place_when_the_block_fits() {
    let p = fortalloc::malloc(1000);
    // SAFETY: live blocks throughout.
    unsafe {
        let usable = fortalloc::usable_size(p);
        assert_eq!(fortalloc::realloc(p, usable), p, "grow within the block");
        assert_eq!(fortalloc::realloc(p, 990), p, "shrink a little");
        let big = fortalloc::malloc(10 << 20);
        assert_eq!(fortalloc::realloc(big, 9 << 20), big, "huge shrinks in place");
        fortalloc::free(big);
        let q = fortalloc::realloc(p, 10);
        assert_ne!(q, p, "shrinking to under half moves to a smaller class");
        fortalloc::free(q);
        let a = fortalloc::malloc_aligned(100, 256);
        let b = fortalloc::realloc_aligned(a, 5000, 256);
        assert_eq!(b as usize % 256, 0);
        fortalloc::free(b);
    }
}

#[test]
fn zeroed_blocks_are_zero_even_after_dirty_reuse() {
    for size in [16usize, 200, 3000, 20_000, 300_000, 3 << 20] {
        // Dirty blocks of this size, freed...
        let dirty: Vec<*mut u8> = (0..64).map(|_| fortalloc::malloc(size)).collect();
        for &p in &dirty {
            // SAFETY: live blocks of `size` bytes, then freed once.
            unsafe {
                std::ptr::write_bytes(p, 0xaa, size);
                fortalloc::free(p);
            }
        }
        // ...then zeroed ones of the same size must read zero.
        let zeroed: Vec<*mut u8> = (0..64).map(|_| fortalloc::zalloc(size)).collect();
        for &p in &zeroed {
            // SAFETY: live blocks of `size` bytes, freed once.
            unsafe {
                assert!((0..size).all(|i| *p.add(i) == 0), "size {size}");
                fortalloc::free(p);
            }
        }
    }
}

#[test]
fn zeroed_large_blocks_are_zero_after_reuse_of_sparsely_written_ones() {
    // Large blocks of which the last owner wrote a few scattered pages (a
    // zeroed buffer with a header, say) and some of which it wrote whole:
    // a zeroed block taken from the same slots must read zero everywhere,
    // between the written pages, and in the partial pages at its ends.
    for size in [70_001usize, 300_000, 1_500_003] {
        let dirty: Vec<*mut u8> = (0..48).map(|_| fortalloc::malloc(size)).collect();
        for (n, &p) in dirty.iter().enumerate() {
            // SAFETY: live blocks of `size` bytes, then freed once.
            unsafe {
                if n % 4 == 0 {
                    std::ptr::write_bytes(p, 0xaa, size);
                } else {
                    for at in (n..size).step_by(4096 * (n % 7 + 1)) {
                        *p.add(at) = 0x55;
                    }
                    *p.add(size - 1) = 0x77;
                }
                fortalloc::free(p);
            }
        }
        let zeroed: Vec<*mut u8> = (0..48)
            .map(|n| {
                if n % 2 == 0 {
                    fortalloc::zalloc(size)
                } else {
                    let layout = Layout::from_size_align(size, 16).expect("a valid layout");
                    // SAFETY: a layout of non-zero size.
                    unsafe { GLOBAL.alloc_zeroed(layout) }
                }
            })
            .collect();
        for &p in &zeroed {
            assert!(!p.is_null());
            // SAFETY: live blocks of `size` bytes, freed once.
            unsafe {
                assert!((0..size).all(|i| *p.add(i) == 0), "size {size}");
                fortalloc::free(p);
            }
        }
    }
}

#[test]
fn freeing_null_is_a_no_op() {
    // SAFETY: null is always accepted.
    unsafe {
        fortalloc::free(std::ptr::null_mut());
        assert_eq!(fortalloc::usable_size(std::ptr::null()), 0);
        let p = fortalloc::realloc(std::ptr::null_mut(), 10);
        assert!(!p.is_null());
        fortalloc::free(p);
    }
}

#[test]
fn realloc_growing_by_an_eighth_moves_at_most_every_other_step() {
    // C code often grows an array by a fraction at a time; with size
    // classes an eighth apart each step would land in a new class and copy.
    let mut size = 64usize;
    let mut p = fortalloc::malloc(size);
    assert!(!p.is_null());
    let (mut steps, mut moves) = (0, 0);
    while size < 200_000 {
        let new = size + size / 8 + 1;
        // SAFETY: `p` is live with `size` bytes; realloc keeps them.
        unsafe {
            *p.add(size - 1) = size as u8;
            let q = fortalloc::realloc(p, new);
            assert!(!q.is_null());
            assert_eq!(*q.add(size - 1), size as u8, "contents kept");
            if q != p {
                moves += 1;
            }
            p = q;
        }
        size = new;
        steps += 1;
    }
    // SAFETY: live, freed once.
    unsafe { fortalloc::free(p) };
    assert!(
        moves * 5 <= steps * 3,
        "{moves} of {steps} growth steps moved the block"
    );
}
