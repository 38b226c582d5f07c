//! The `canary` defence: a write past the end of a block (one byte, eight,
//! a string's NUL) or just below it is reported when the block is freed or
//! reallocated, or when its neighbour below is freed or handed out again;
//! neighbours freed at once by two threads report nothing. Each violation
//! runs in a child process.
//!
//! Presets: the overflow tests run under `secure` and `secure-max`; the
//! underflow tests under `secure-max` (`underflow-trailers`).

mod common;
mod hardened;

use common::{child, say_addr};
use hardened::{expect_detected, free, malloc};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Two live blocks of a 48-byte size class, the first in the slot right
/// below the second in the same page (which `b - 48` in the same 64 KiB
/// window guarantees for small pages), for the underflow cases; the other
/// blocks allocated to find them stay live.
fn slot_below_and_block() -> (*mut u8, *mut u8) {
    let blocks: Vec<usize> = (0..512).map(|_| malloc(40) as usize).collect();
    let set: std::collections::HashSet<usize> = blocks.iter().copied().collect();
    let b = *blocks
        .iter()
        .find(|&&b| set.contains(&(b - 48)) && (b - 48) >> 16 == b >> 16)
        .expect("two neighbouring blocks in one page");
    std::mem::forget(blocks);
    ((b - 48) as *mut u8, b as *mut u8)
}

/// Writes `len` bytes of 0x41 just below `b`.
///
/// # Safety
/// Deliberately out of bounds: the caller's test of an underflow.
unsafe fn write_below(b: *mut u8, len: usize) {
    for i in 1..=len {
        // SAFETY: per the caller; the bytes lie in the slot below, mapped.
        unsafe { std::ptr::write_volatile(b.sub(i), 0x41) };
    }
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn every_nul_byte_overflow_is_caught() {
    child("nul-overflows")
        .run(|| {
            // A string's terminating NUL one past the end, in 20,000
            // blocks of many sizes and pages: every one must be caught
            // (with random canary bytes, about 1 in 256 was not).
            static CAUGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            fn count(e: &fortalloc::ErrorInfo) {
                if e.kind == fortalloc::ErrorKind::BufferOverflow {
                    CAUGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            fortalloc::set_error_handler(Some(count));
            let mut tried = 0;
            for round in 0..200 {
                let blocks: Vec<(*mut u8, usize)> = (0..100)
                    .map(|i| 1 + (round * 7 + i * 13) % 3000)
                    .map(|n| (malloc(n), n))
                    .collect();
                for &(p, n) in &blocks {
                    // The handler counts the overflow and the free goes on.
                    // SAFETY: the byte past an `n`-byte block is mapped (its canary).
                    unsafe {
                        *p.add(n) = 0;
                        free(p);
                    }
                    tried += 1;
                }
            }
            fortalloc::set_error_handler(None);
            println!(
                "caught {} of {tried}",
                CAUGHT.load(std::sync::atomic::Ordering::Relaxed)
            );
        })
        .check(|o| {
            assert_eq!(o.code(), Some(0), "{} / {}", o.stderr, o.stdout);
            assert!(o.stdout.contains("caught 20000 of 20000"), "{}", o.stdout);
        });
}

/// A write of 1 or 16 bytes just below a block, reported as an underflow
/// of that block when it is freed or reallocated, with the slot below it
/// live or free, and when the slot below is freed or handed out again
/// (`underflow-trailers`: `secure-max`).
#[test]
#[cfg_attr(
    not(all(feature = "canary", feature = "underflow-trailers")),
    ignore = "needs --features canary and underflow-trailers"
)]
fn underflows_below_a_small_block() {
    // (case, bytes written below, slot below freed first, then realloc
    // rather than free)
    for (case, len, below_free, realloc) in [
        ("underflow-1-below-live", 1, false, false),
        ("underflow-16-below-live", 16, false, false),
        ("underflow-1-below-free", 1, true, false),
        ("underflow-16-below-free", 16, true, false),
        ("underflow-16-below-live-realloc", 16, false, true),
    ] {
        expect_detected(case, "heap buffer underflow", || {
            let (below, b) = slot_below_and_block();
            // The write below `b` is the violation under test (aborts).
            // SAFETY: fortalloc blocks, the slot below freed once.
            unsafe {
                if below_free {
                    free(below);
                }
                write_below(b, len);
                say_addr(b);
                if realloc {
                    let _ = std::hint::black_box(fortalloc::realloc(b, 4000));
                } else {
                    free(b);
                }
            }
            println!("not caught");
        });
    }
    expect_detected(
        "underflow-1-seen-when-below-freed",
        "heap buffer underflow",
        || {
            let (below, b) = slot_below_and_block();
            // SAFETY: as above; here the free of the slot below finds it.
            unsafe {
                write_below(b, 1);
                say_addr(b);
                free(below);
            }
            println!("not caught");
        },
    );
    expect_detected(
        "underflow-16-seen-when-below-handed-out",
        "heap buffer underflow",
        || {
            // Without the quarantine, the slot below is handed out again
            // by the next allocations of its size.
            fortalloc::set_quarantine(0, 0);
            let (below, b) = slot_below_and_block();
            // SAFETY: as above; here handing the slot below out finds it.
            unsafe {
                free(below);
                write_below(b, 16);
            }
            say_addr(b);
            for _ in 0..10_000 {
                let _ = std::hint::black_box(malloc(40));
            }
            println!("not caught");
        },
    );
}

/// Neighbours freed at once by two threads: the wipe of one never shows
/// the other a changed trailer.
#[test]
#[cfg_attr(
    not(all(feature = "canary", feature = "underflow-trailers")),
    ignore = "needs --features canary and underflow-trailers"
)]
fn neighbours_freed_by_two_threads_report_nothing() {
    child("neighbours-freed-by-two-threads")
        .run(|| {
            // Two threads free alternate blocks of one page at once: each
            // free reads the trailer of the slot below, which the other
            // thread is wiping; no underflow may be reported.
            for _ in 0..40 {
                let blocks: Vec<usize> = (0..20_000).map(|_| malloc(40) as usize).collect();
                let blocks = std::sync::Arc::new(blocks);
                let b2 = blocks.clone();
                let odd = std::thread::spawn(move || {
                    for &p in b2.iter().skip(1).step_by(2) {
                        // SAFETY: each block freed once, by this thread.
                        unsafe { free(p as *mut u8) };
                    }
                });
                for &p in blocks.iter().step_by(2) {
                    // SAFETY: each block freed once, by this thread.
                    unsafe { free(p as *mut u8) };
                }
                odd.join().unwrap();
            }
            println!("no report");
        })
        .check(|o| {
            assert_eq!(o.code(), Some(0), "{} / {}", o.stderr, o.stdout);
            assert!(o.stdout.contains("no report"), "{}", o.stdout);
        });
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn one_byte_overflow_of_a_small_block() {
    expect_detected("overflow-1-small", "heap buffer overflow", || {
        let p = malloc(20);
        say_addr(p);
        // SAFETY: one byte past a 20-byte block: the violation under test,
        // in a child expected to abort.
        unsafe {
            *p.add(20) = 0;
            free(p);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn eight_byte_overflow_of_a_small_block() {
    expect_detected("overflow-8-small", "heap buffer overflow", || {
        let p = malloc(24);
        say_addr(p);
        // SAFETY: eight bytes past a 24-byte block: the violation under
        // test, in a child expected to abort.
        unsafe {
            (p.add(24) as *mut u64).write_unaligned(0);
            free(p);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn one_byte_overflow_after_a_growing_realloc() {
    expect_detected("overflow-after-growing-realloc", "heap buffer overflow", || {
        // realloc grows with headroom: the canary must still sit right
        // after the size asked for, not after the block.
        let p = malloc(1000);
        // SAFETY: `p` is live and grown once; the byte past the 1100 asked
        // for is the violation under test, in a child expected to abort.
        unsafe {
            let q = fortalloc::realloc(p, 1100);
            assert!(!q.is_null());
            assert!(fortalloc::usable_size(q) >= 1100);
            say_addr(q);
            *q.add(1100) ^= 0xff;
            free(q);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn one_byte_overflow_of_a_large_block() {
    expect_detected("overflow-1-large", "heap buffer overflow", || {
        let p = malloc(100_000);
        say_addr(p);
        // SAFETY: one byte past a large block: the violation under test,
        // in a child expected to abort.
        unsafe {
            *p.add(100_000) ^= 0xff;
            free(p);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn eight_byte_overflow_of_a_large_block() {
    expect_detected("overflow-8-large", "heap buffer overflow", || {
        let p = malloc(100_000);
        say_addr(p);
        // SAFETY: eight bytes past a large block: the violation under
        // test, in a child expected to abort.
        unsafe {
            (p.add(100_000) as *mut u64).write_unaligned(u64::MAX);
            free(p);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn overflow_caught_by_realloc() {
    expect_detected("overflow-on-realloc", "heap buffer overflow", || {
        let p = malloc(40);
        say_addr(p);
        // SAFETY: one byte past a 40-byte block, then its realloc: the
        // violation under test, in a child expected to abort.
        unsafe {
            *p.add(40) = 1;
            let _ = fortalloc::realloc(p, 80);
        }
    });
}

/// An overflow report names the size asked for and, where the canary's
/// slot is larger, the slot: the bytes between are what the canary
/// watched.
#[test]
#[cfg_attr(not(feature = "canary"), ignore = "needs --features canary")]
fn the_overflow_report_names_the_request_and_its_slot() {
    common::child("overflow-size")
        .run(|| {
            let p = malloc(20);
            say_addr(p);
            // SAFETY: one byte past a 20-byte block: the violation under
            // test, in a child expected to abort.
            unsafe {
                *p.add(20) = 0;
                free(p);
            }
        })
        .check(|o| {
            o.assert_reported("heap buffer overflow");
            let line = o
                .stderr
                .lines()
                .find(|l| l.starts_with("fortalloc: heap buffer overflow"))
                .expect("report");
            assert!(
                line.contains("(20-byte block in a ") && line.ends_with("-byte slot)"),
                "{line}"
            );
        });
}
