//! Regression tests for what the fuzzers found, each a plain `cargo test`
//! that fails without its fix (the free-list bound of b0a1350, the
//! adoption of abandoned segments of 8e9b821 and c94f8c7).

mod common;

use std::time::Duration;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Found by `ops` and `corrupt`: a forged free-list cycle made the owner's
/// collect walk forever (under an error handler, a corrupted list could
/// also grow without bound). A walk longer than the page's capacity is now
/// reported as a corrupted free list. (With `encoded-freelist` the forged
/// raw link already fails to decode: the same report, found sooner.)
#[test]
fn a_free_list_cycle_is_reported_not_walked_forever() {
    common::child("free-list-cycle")
        // A collect that walks the cycle fails the test as hung.
        .limit(Duration::from_secs(20))
        .run(|| {
            // Freed blocks go straight to the free list (the quarantine
            // would keep them, and catch the write as they left it).
            fortalloc::set_quarantine(0, 0);
            // Three blocks of one page, two freed: the local free list is
            // b -> a. A write after free points a back at b, as the ops
            // fuzzer's corruptions did, and a forced collect must walk it.
            let a = fortalloc::malloc(64);
            let b = fortalloc::malloc(64);
            let keep = fortalloc::malloc(64);
            assert!(!a.is_null() && !b.is_null() && !keep.is_null());
            // SAFETY: both are live blocks, freed once; the write to `a`
            // after its free is the corruption under test.
            unsafe {
                fortalloc::free(a);
                fortalloc::free(b);
                (a as *mut usize).write(b as usize);
            }
            common::say_addr(a);
            fortalloc::collect(true);
            println!("collect returned");
        })
        .check(|out| {
            out.assert_signal(libc::SIGABRT, "free-list-cycle");
            assert!(
                out.stderr.contains("fortalloc: corrupted free list at 0x"),
                "one line naming the corruption: {}",
                out.stderr
            );
            assert!(!out.stdout.contains("collect returned"), "{}", out.stdout);
        });
}

/// Found by `ops` (its RSS kept growing): segments abandoned by exiting
/// threads were only adopted when a heap ran out of pages, so a program
/// whose remaining threads had warm pages never took them back, and every
/// exited thread's segment stayed reserved (and its freed memory resident)
/// for good. Now a heap adopts one per slow path while more than a few wait.
#[test]
fn abandoned_segments_are_taken_back_by_a_busy_thread() {
    // Warm pages for the loop below, so it never runs a bin dry.
    let warm: Vec<usize> = (0..64).map(|_| fortalloc::malloc(48) as usize).collect();
    for p in warm {
        // SAFETY: live blocks, freed once.
        unsafe { fortalloc::free(p as *mut u8) };
    }
    // 100 threads, all alive at once (so none adopts another's segment),
    // each leave one medium block behind in a segment of its own that it
    // abandons at exit.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(100));
    let handles: Vec<_> = (0..100u8)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let p = fortalloc::malloc(20_000);
                assert!(!p.is_null());
                // SAFETY: a fresh 20000-byte block.
                unsafe { p.write_bytes(t, 20_000) };
                barrier.wait();
                p as usize
            })
        })
        .collect();
    let left: Vec<usize> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
    let before = fortalloc::stats();
    for (t, &p) in left.iter().enumerate() {
        // SAFETY: live 20000-byte blocks, freed once (into abandoned
        // segments).
        unsafe {
            assert_eq!(*(p as *const u8).add(19_999), t as u8);
            fortalloc::free(p as *mut u8);
        }
    }
    // Steady work that takes a slow path now and then (a page's free list
    // runs out and is refilled from its local frees), never a fresh page.
    for _ in 0..2_000 {
        let blocks: Vec<usize> = (0..64).map(|_| fortalloc::malloc(48) as usize).collect();
        for p in blocks {
            // SAFETY: live blocks, freed once.
            unsafe { fortalloc::free(p as *mut u8) };
        }
    }
    let after = fortalloc::stats();
    let waiting = after.abandoned_segments - after.reclaimed_segments;
    assert!(
        before.abandoned_segments - before.reclaimed_segments >= 90,
        "the threads abandoned their segments: {before:?}"
    );
    assert!(
        waiting <= 20,
        "abandoned segments still waiting after 2000 slow paths: {waiting} ({after:?})"
    );
}
