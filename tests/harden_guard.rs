//! The `guard-pages` defence: overflows and underflows off small, large and
//! huge blocks fault, with guards made either way (the kernel's page-table
//! markers, or `mprotect`): below and after every large block, whichever
//! slot of its segment it took; zero-size allocations are inaccessible.
//! With `seal-freed-large`, overflows off large and huge blocks fault
//! within a page of the request (without it, off a huge block at its
//! segment's end, and the canary reports one that stops short of it),
//! freed large and huge blocks are inaccessible at once,
//! large blocks grown in place move their guard, and reused ones read zero
//! however they were sealed. Each access runs in a child process.
//!
//! Presets: the guard tests run under `secure` and `secure-max`; the
//! sealing tests under `secure-max` (`seal-freed-large`).

mod common;
mod hardened;

use common::{child, say_addr, Finished};
use hardened::free_on_another_thread;
use hardened::{free, malloc};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// The ways guards can be made: the kernel's choice (page-table markers
/// where it has them) and the `mprotect` fallback, forced.
const GUARD_WAYS: [&str; 2] = ["auto", "mprotect"];

/// Runs `body` as `case` in a child once per way of making guards; each
/// child must die of SIGSEGV after it started the violation (`body` prints
/// "writing"/"reading" first), never reaching "no fault".
#[track_caller]
fn expect_faults(case: &str, body: impl Fn()) {
    for way in GUARD_WAYS {
        child(case)
            .env("FORTALLOC_GUARDS", way)
            .run(&body)
            .check(|o| assert_faulted(o, &format!("{case} (guards: {way})")));
    }
}

fn assert_faulted(o: &Finished, what: &str) {
    o.assert_signal(libc::SIGSEGV, what);
    assert!(!o.stdout.contains("no fault"), "{what}: {}", o.stdout);
}

/// Writes 0x41 over `[p + from, p + to)`, a byte at a time as a linear
/// overflow does, between "writing" and "no fault".
///
/// # Safety
/// Deliberately out of bounds: for a child expected to fault.
unsafe fn write_from(p: *mut u8, from: usize, to: usize) {
    println!("writing");
    for i in from..to {
        // SAFETY: per the caller.
        unsafe { std::ptr::write_volatile(p.add(i), 0x41) };
    }
    println!("no fault");
}

/// Reads the byte at `p` between "reading" and "no fault".
///
/// # Safety
/// Deliberately a dangling read: for a child expected to fault.
unsafe fn read_at(p: *const u8) {
    println!("reading");
    // SAFETY: per the caller.
    let v = unsafe { std::ptr::read_volatile(p) };
    println!("no fault {v}");
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn linear_overflow_off_a_large_block_faults_within_a_page() {
    expect_faults("overflow-large-linear", || {
        let p = malloc(100_000);
        // SAFETY: the overflow under test, in a child expected to fault.
        unsafe { write_from(p, 100_000, 100_000 + 8192) };
    });
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn linear_overflow_faults_within_a_page_of_the_request_for_every_large_size() {
    // Sizes just past size-class boundaries, where a class's slack (up to
    // 12.5%, tens of KiB) used to lie between the request and the guard.
    for n in [65_537, 73_729, 100_000, 300_001, 1_048_577, 1_900_000] {
        expect_faults(&format!("overflow-past-page:{n}"), || {
            // Writes from the end of the request on, one byte at a time:
            // the guard must stop it within the next OS page.
            let p = malloc(n);
            // SAFETY: the overflow under test, in a child expected to fault.
            unsafe { write_from(p, n, n + 4096 + 64) };
        });
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn underflow_before_a_large_block_faults() {
    expect_faults("underflow-large", || {
        let p = malloc(100_000);
        println!("writing");
        // SAFETY: the underflow under test, in a child expected to fault.
        unsafe { std::ptr::write_volatile(p.sub(1), 0x41) };
        println!("no fault");
    });
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn linear_overflow_off_a_small_page_faults() {
    expect_faults("overflow-small-linear", || {
        // A fresh size class: its page holds this one block first.
        let p = malloc(7000);
        // SAFETY: the overflow under test, in a child expected to fault.
        unsafe { write_from(p, 7000, (64 << 10) + 8192) };
    });
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn page_guards_outlive_their_segment_and_guard_the_next_one() {
    for way in GUARD_WAYS {
        child("overflow-small-linear-reused")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                // A thread fills pages of one size class, frees them and
                // exits: its segment goes back to the arena with its page
                // guards left in place.
                // (No heap memory outlives it: a live block would keep the
                // segment.)
                let segments = std::thread::spawn(|| {
                    let mut blocks = [0usize; 160];
                    for b in blocks.iter_mut() {
                        *b = malloc(7000) as usize;
                    }
                    for b in blocks.iter_mut() {
                        // SAFETY: each block is live and freed once.
                        unsafe { free(*b as *mut u8) };
                        *b >>= 22;
                    }
                    blocks
                })
                .join()
                .expect("first thread");
                // A new thread takes that memory for its first page, with
                // no `mprotect`, and overflows off the end of the page.
                std::thread::spawn(move || {
                    let before = fortalloc::stats().protect_calls;
                    let p = malloc(7000);
                    let made = fortalloc::stats().protect_calls - before;
                    let reused = segments.contains(&(p as usize >> 22));
                    println!("reused={reused} protects={made}");
                    // SAFETY: the overflow under test, in a child expected
                    // to fault.
                    unsafe { write_from(p, 7000, (64 << 10) + 8192) };
                })
                .join()
                .expect("second thread");
            })
            .check(|o| {
                assert_faulted(o, way);
                // The second thread's page lies in the first one's old
                // segment and found its guard in place: not one protection
                // change.
                assert!(o.stdout.contains("reused=true protects=0"), "{way}: {}", o.stdout);
            });
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn guards_are_markers_where_the_kernel_has_them_and_mprotect_when_forced() {
    for way in GUARD_WAYS {
        child("guard-way")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                let p = malloc(100_000);
                let s = fortalloc::stats();
                println!(
                    "markers>0={} mprotect>0={}",
                    s.guard_markers > 0,
                    s.guard_protects > 0
                );
                // SAFETY: a live block, freed once.
                unsafe { free(p) };
            })
            .check(|o| {
                assert_eq!(o.code(), Some(0), "{way}: {} / {}", o.stderr, o.stdout);
                let expect = if way == "auto" && common::kernel_has_guard_markers() {
                    "markers>0=true mprotect>0=false"
                } else {
                    "markers>0=false mprotect>0=true"
                };
                assert!(o.stdout.contains(expect), "{way}: {}", o.stdout);
            });
    }
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn a_large_block_grows_in_place_and_its_guard_moves_with_it() {
    child("overflow-after-growing-a-large-block-in-place")
        .run(|| {
            // A large block grown by realloc within its block (its size
            // class, 112 KiB, has room: classes are a quarter apart): the
            // same address, the old bytes kept, the new ones usable (zero
            // in the zero-on-free build), and a guard right after the new
            // size, past what was sealed slack before.
            let p = malloc(100_000);
            // The write past `n` is the overflow under test (child faults).
            // SAFETY: `p` is a live block of 100,000 bytes grown once to `n`.
            unsafe {
                std::ptr::write_bytes(p, 7, 100_000);
                let n = 110_000;
                let q = fortalloc::realloc(p, n);
                let kept = (0..100_000).all(|i| *q.add(i) == 7);
                let zeroed = (100_000..n).all(|i| *q.add(i) == 0);
                std::ptr::write_bytes(q.add(100_000), 9, n - 100_000);
                println!("same={} kept={kept} zeroed={zeroed}", p == q);
                write_from(q, n, n + 4096 + 64);
            }
        })
        .check(|o| {
            assert_faulted(o, "grown in place");
            let zeroed = cfg!(feature = "zero-on-free");
            assert!(
                o.stdout.contains(&format!("same=true kept=true zeroed={zeroed}"))
                    || (!zeroed && o.stdout.contains("same=true kept=true zeroed=true")),
                "{}",
                o.stdout
            );
        });
}

/// Runs `body` as `case`, which must print "clean" and exit 0, with every
/// way a large block can be sealed: markers (where the kernel has them),
/// `mprotect`, and `mprotect` past a budget too small for any guard
/// (blocks stay open, wiped).
#[track_caller]
fn clean_however_sealed(case: &str, body: impl Fn()) {
    let envs: [&[(&str, &str)]; 3] = [
        &[("FORTALLOC_GUARDS", "auto")],
        &[("FORTALLOC_GUARDS", "mprotect")],
        &[("FORTALLOC_GUARDS", "mprotect"), ("FORTALLOC_MAP_BUDGET", "8")],
    ];
    for env in envs {
        child(case).envs(env).run(&body).check(|o| {
            assert_eq!(o.code(), Some(0), "{env:?}: {} / {}", o.stderr, o.stdout);
            assert!(o.stdout.contains("clean"), "{env:?}: {}", o.stdout);
        });
    }
}

#[test]
#[cfg_attr(
    not(all(
        feature = "guard-pages",
        all(feature = "zero-on-free", feature = "seal-freed-large")
    )),
    ignore = "needs --features guard-pages and zero-on-free and seal-freed-large"
)]
fn reused_large_blocks_read_zero_however_they_were_sealed() {
    clean_however_sealed("large-reused-zero", || {
        // Large blocks of every kind of size, written whole or in their
        // first page only (so freed blocks are sealed both ways), freed
        // and taken again: each new one reads zero.
        let sizes = [70_000usize, 100_000, 300_000, 1_000_000, 2_000_000];
        for i in 0..120 {
            let n = sizes[i % sizes.len()];
            let p = malloc(n);
            assert!(!p.is_null());
            // SAFETY: `p` is a live block of `n` bytes, freed once.
            unsafe {
                let words = std::slice::from_raw_parts(p as *const u64, n / 8);
                if let Some(w) = words.iter().position(|&w| w != 0) {
                    println!("old bytes at {} of a {n}-byte block", w * 8);
                    return;
                }
                let touched = if i % 2 == 0 { n } else { 4096 };
                std::ptr::write_bytes(p, 0xab, touched);
                free(p);
            }
        }
        println!("clean");
    });
}

#[test]
#[cfg_attr(
    not(all(
        feature = "guard-pages",
        all(feature = "zero-on-free", feature = "seal-freed-large")
    )),
    ignore = "needs --features guard-pages and zero-on-free and seal-freed-large"
)]
fn large_blocks_grown_and_shrunk_by_realloc_never_show_old_bytes() {
    clean_however_sealed("large-realloc-reused-zero", || {
        // Large blocks grown by realloc a little at a time (in place and
        // by moving), written whole at each step, shrunk in place and
        // grown back, then freed: the part a shrink sealed and every slot
        // taken afterwards read zero, and the bytes kept through each move
        // are the caller's.
        // SAFETY: every pointer is a live block of the size last asked
        // for, freed once.
        unsafe {
            for round in 0..24usize {
                let mut n = 60_000 + round * 1000;
                let mut p = malloc(n);
                std::ptr::write_bytes(p, 0x5a, n);
                while n < 1_500_000 {
                    let m = n + n / 8;
                    let q = fortalloc::realloc(p, m);
                    assert!(!q.is_null());
                    let kept = std::slice::from_raw_parts(q, n).iter().all(|&b| b == 0x5a);
                    let fresh = std::slice::from_raw_parts(q.add(n), m - n)
                        .iter()
                        .position(|&b| b != 0);
                    if !kept || fresh.is_some() {
                        println!("grown to {m}: kept={kept} nonzero at {fresh:?}");
                        return;
                    }
                    std::ptr::write_bytes(q, 0x5a, m);
                    (p, n) = (q, m);
                }
                let half = n / 2 + n / 8;
                let q = fortalloc::realloc(p, half);
                let q = fortalloc::realloc(q, n);
                if let Some(i) = std::slice::from_raw_parts(q.add(half), n - half)
                    .iter()
                    .position(|&b| b != 0)
                {
                    println!(
                        "old bytes at {} after shrinking to {half} and growing to {n}",
                        half + i
                    );
                    return;
                }
                free(q);
                for size in [70_000usize, 150_000, 400_000, 1_000_000] {
                    let p = malloc(size);
                    if let Some(i) = std::slice::from_raw_parts(p, size).iter().position(|&b| b != 0) {
                        println!("old bytes at {i} of a {size}-byte block");
                        return;
                    }
                    std::ptr::write_bytes(p, 0xab, size);
                    free(p);
                }
            }
        }
        println!("clean");
    });
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn a_large_block_realloc_moved_away_from_faults_at_once() {
    expect_faults("read-after-realloc-move-large", || {
        // The block a growing realloc left behind is sealed at once.
        let n = 200_000;
        let p = malloc(n);
        // The read after the move is the violation under test (faults).
        // SAFETY: `p` is a live block of `n` bytes, moved by the realloc.
        unsafe {
            std::ptr::write_bytes(p, 1, n);
            let q = fortalloc::realloc(p, 4 * n);
            assert!(q != p && !q.is_null());
            read_at(p.add(n / 2));
        }
    });
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn a_reused_large_block_grows_in_place_with_its_guard_after_it() {
    for way in GUARD_WAYS {
        child("overflow-after-growing-a-reused-large-block")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                // A slot used whole and freed (its pages kept under
                // `mprotect`, its tail still marked from when it was made)
                // taken again for less and grown in place by realloc (both
                // kinds of seal opened): what the growth opens reads zero,
                // and a guard follows the new size.
                // The write past `n` is the overflow under test (faults).
                // SAFETY: each pointer is a live block of the size last asked for.
                unsafe {
                    let p = malloc(100_000);
                    std::ptr::write_bytes(p, 7, 100_000);
                    free(p);
                    let p = malloc(97_000);
                    std::ptr::write_bytes(p, 7, 97_000);
                    let n = 110_000;
                    let q = fortalloc::realloc(p, n);
                    let zeroed = (97_000..n).all(|i| *q.add(i) == 0);
                    println!("same={} zeroed={zeroed}", p == q);
                    std::ptr::write_bytes(q, 9, n);
                    write_from(q, n, n + 4096 + 64);
                }
            })
            .check(|o| {
                assert_faulted(o, way);
                assert!(o.stdout.contains("writing"), "{way}: {}", o.stdout);
                let zeroed = cfg!(feature = "zero-on-free");
                assert!(
                    o.stdout.contains(&format!("same=true zeroed={zeroed}"))
                        || (!zeroed && o.stdout.contains("same=true zeroed=true")),
                    "{way}: {}",
                    o.stdout
                );
            });
    }
}

#[test]
#[cfg_attr(
    not(all(
        feature = "guard-pages",
        all(feature = "write-after-free-check", feature = "seal-freed-large")
    )),
    ignore = "needs --features guard-pages and write-after-free-check and seal-freed-large"
)]
fn a_write_to_a_freed_large_block_left_open_is_caught_at_reuse() {
    child("large-write-after-free-unsealed")
        .envs(&[("FORTALLOC_GUARDS", "mprotect"), ("FORTALLOC_MAP_BUDGET", "8")])
        .run(|| {
            // The check at reuse, without the one on leaving the
            // quarantine.
            fortalloc::set_quarantine(0, 0);
            // Past the mapping budget a freed large block stays open: it is
            // wiped, and a write to it is caught when its slot is handed
            // out again.
            let n = 300_000;
            let p = malloc(n);
            // SAFETY: a live block, freed once; the write after is the
            // violation under test, in a child expected to abort.
            unsafe {
                free(p);
                say_addr(p);
                *p.add(1000) = 0x41;
            }
            for _ in 0..64 {
                let _ = std::hint::black_box(malloc(n));
            }
        })
        .check(|o| o.assert_reported("write after free"));
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn linear_overflow_off_a_huge_block_faults_within_a_page() {
    expect_faults("overflow-huge-linear", || {
        let p = malloc(5 << 20);
        // SAFETY: the overflow under test, in a child expected to fault.
        unsafe { write_from(p, 5 << 20, (5 << 20) + 8192) };
    });
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn linear_overflow_off_a_huge_block_faults_within_its_segment() {
    // The guard after a huge block is its segment's last OS page (right
    // after the request's last page with `seal-freed-large`), and the
    // segment ends within a slice of the request's end.
    expect_faults("overflow-huge-to-segment-end", || {
        let p = malloc(5 << 20);
        // SAFETY: the overflow under test, in a child expected to fault.
        unsafe { write_from(p, 5 << 20, (5 << 20) + (4 << 20) + 4096) };
    });
}

#[test]
#[cfg_attr(
    any(
        not(all(feature = "guard-pages", feature = "canary")),
        feature = "seal-freed-large"
    ),
    ignore = "needs --features guard-pages and canary, without seal-freed-large"
)]
fn an_overflow_into_a_huge_blocks_slack_is_reported_at_free() {
    // Without the seals what lies between a huge block and the guard at
    // its segment's end is open: an overflow that stops there faults
    // nowhere, and the canary after the request reports it at free.
    for n in [5 << 20, (3 << 20) + 12_345] {
        child("overflow-huge-slack")
            .run(move || {
                let p = malloc(n);
                say_addr(p);
                // SAFETY: the overflow under test, 64 KiB past the
                // request, short of the guard (more than 512 KiB past it
                // for both sizes), in a child expected to abort.
                unsafe {
                    write_from(p, n, n + (64 << 10));
                    free(p);
                }
            })
            .check(|o| o.assert_reported("heap buffer overflow"));
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn zero_size_allocations_are_unique_and_inaccessible() {
    expect_faults("zero-size-read", || {
        let a = fortalloc::malloc(0);
        let b = fortalloc::malloc(0);
        assert!(!a.is_null() && !b.is_null() && a != b, "unique");
        // SAFETY: `b` is live, freed once; reading `a`'s zero bytes is the
        // violation under test, in a child expected to fault.
        unsafe {
            free(b);
            read_at(a);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn zero_size_double_free_is_caught() {
    child("zero-size-double-free")
        .run(|| {
            let a = fortalloc::malloc(0);
            // SAFETY: a fortalloc block; the second free is the violation
            // under test, in a child expected to abort.
            unsafe {
                free(a);
                say_addr(a);
                free(a);
            }
        })
        .check(|o| o.assert_reported("double free"));
}

/// A large or huge block of `n` bytes written, freed and read at once.
fn read_after_free(n: usize) {
    let p = malloc(n);
    // SAFETY: a live block of `n` bytes, freed once; the read after is the
    // violation under test, in a child expected to fault.
    unsafe {
        std::ptr::write_bytes(p, 1, n);
        free(p);
        read_at(p.add(n / 2));
    }
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn freed_large_blocks_are_inaccessible_at_once() {
    expect_faults("read-after-free-large", || read_after_free(300_000));
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn large_blocks_freed_by_another_thread_are_inaccessible_at_once() {
    expect_faults("read-after-remote-free-large", || {
        // Freed by another thread than the one that allocated it, which
        // then keeps running: the memory must still be sealed at once, not
        // when the owner next collects.
        let n = 300_000;
        let p = malloc(n);
        // SAFETY: a live block of `n` bytes, freed once; the read after is
        // the violation under test, in a child expected to fault.
        unsafe {
            std::ptr::write_bytes(p, 1, n);
            free_on_another_thread(p as usize);
            read_at(p.add(n / 2));
        }
    });
}

#[test]
#[cfg_attr(
    not(all(feature = "guard-pages", feature = "seal-freed-large")),
    ignore = "needs --features guard-pages and seal-freed-large"
)]
fn freed_huge_blocks_are_inaccessible_at_once() {
    expect_faults("read-after-free-huge", || read_after_free(8 << 20));
}

/// Sizes of every kind of large class: a segment of slots holds about 60
/// of the first, 3 of `1 << 20` and one of the last.
const LARGE_SIZES: [usize; 6] = [65_537, 73_729, 100_000, 300_001, 1 << 20, 1_900_000];

/// Writes 0x41 from the end of the `n` bytes asked for at `p` on, a byte
/// at a time, up to a quarter of `n` past it and two pages more: further
/// than any large class's slack and guard reach, so the guard at its
/// slot's end stops it.
///
/// # Safety
/// Deliberately out of bounds: for a child expected to fault.
unsafe fn overflow_to_the_slot_end(p: *mut u8, n: usize) {
    // SAFETY: per the caller.
    unsafe { write_from(p, n, n + n / 4 + 8192) };
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn linear_overflow_off_every_large_size_faults_at_its_slot_end() {
    // Without the seals the class's slack is open: the guard page that
    // ends the slot stops the overflow.
    for n in LARGE_SIZES {
        expect_faults(&format!("overflow-to-slot-end:{n}"), || {
            let p = malloc(n);
            // SAFETY: the overflow under test, in a child expected to fault.
            unsafe { overflow_to_the_slot_end(p, n) };
        });
    }
}

/// Whether the `len` bytes at `p` can be read, asked of the kernel (a
/// `write` to a pipe reads them, and fails with EFAULT where they are
/// inaccessible), so a test can look at many blocks without faulting.
fn readable(p: *const u8, len: usize) -> bool {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the kernel checks the range and reports EFAULT instead of
    // faulting; the descriptors are the pipe's, just made.
    let wrote = unsafe { libc::write(fds[1], p.cast(), len) };
    // SAFETY: closing the pipe just made.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    wrote == len as isize
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn every_large_block_has_a_guard_below_and_after_it_whichever_slot_it_took() {
    // Rounds of blocks of each size, filling every slot of one segment
    // or more, all freed and their segments released (so the next round
    // takes other memory, left as the last one's segments left it): the
    // 16 bytes below each block are inaccessible (a guard page: the one
    // ending the slot below, the header's, or the slack's), and so is
    // some byte within a quarter of the request past its end. Blocks that
    // start a segment's first slot, with slack below them, were open
    // below before.
    for way in GUARD_WAYS {
        child("guards-around-every-slot")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                let ps = 4096;
                let mut checked = 0;
                for round in 0..6 {
                    for n in LARGE_SIZES {
                        let count = ((4 << 20) / n + 2).max(3);
                        let blocks: Vec<*mut u8> = (0..count).map(|_| malloc(n)).collect();
                        for &p in &blocks {
                            // SAFETY: within the block and the 16 bytes
                            // below it, probed without being touched.
                            let below = readable(unsafe { p.sub(16) }, 16);
                            let first_page = readable(p, 1);
                            let end = (n..n + n / 4 + 2 * ps)
                                .step_by(ps)
                                // SAFETY: as above, probed only.
                                .find(|&i| !readable(unsafe { p.add(i) }, 1));
                            if below || !first_page || end.is_none() {
                                println!(
                                    "round {round}: {n}-byte block at {p:?}: below readable={below}, \
                                     start readable={first_page}, guard past the end at {end:?}"
                                );
                                return;
                            }
                            checked += 1;
                        }
                        for p in blocks {
                            // SAFETY: each block is live and freed once.
                            unsafe { free(p) };
                        }
                        fortalloc::collect(true);
                    }
                }
                println!("checked={checked}");
            })
            .check(|o| {
                o.assert_success(way);
                assert!(o.stdout.contains("checked="), "{way}: {}", o.stdout);
            });
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn every_huge_block_in_a_span_another_size_left_has_a_guard_below_and_after_it() {
    // Huge blocks of sizes that go up and down, two live at a time, so
    // most take a span a block of another size left with its guards on
    // record: the 16 bytes below each block are inaccessible, and so is,
    // with `seal-freed-large`, the first OS page past its last byte
    // (within a page of its end, as for a fresh span), without it the
    // last OS page of its segment (the first slice boundary past the
    // request and its canary), whatever size of block the span held
    // before; every byte of the block is written. Both ways of making
    // guards.
    const SIZES: [usize; 8] = [
        9 << 20,
        (5 << 20) + 12_345,
        (12 << 20) + 1,
        3 << 20,
        (7 << 20) + 4096 * 3 + 17,
        (5 << 19) + 999,
        16 << 20,
        (2 << 20) + 4096,
    ];
    for way in GUARD_WAYS {
        child("huge-in-reused-spans")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                let mut live: Vec<(*mut u8, usize)> = Vec::new();
                let mut checked = 0;
                for round in 0..4 {
                    for (i, &n) in SIZES.iter().enumerate() {
                        let n = n + round * 8192;
                        let p = malloc(n);
                        assert!(!p.is_null(), "malloc({n})");
                        // SAFETY: a live block of `n` bytes.
                        unsafe { std::ptr::write_bytes(p, 0x5a, n) };
                        // SAFETY: below the block and past its end, probed
                        // only, never touched.
                        let (below, past) = unsafe { (p.sub(16), p.add(n)) };
                        let end = past as usize;
                        // The first page boundary past the request, or
                        // the next one where the canary's bytes cross it.
                        let first_after = (end + 4095) & !4095;
                        let closed = |at: usize| !readable(at as *const u8, 1);
                        let guarded_after = if cfg!(feature = "seal-freed-large") {
                            closed(first_after) || (first_after - end < 16 && closed(first_after + 4096))
                        } else {
                            // The segment's last page: that of the slice
                            // the request ends in, or of the next one
                            // where the canary and a page do not fit.
                            let slice = 4 << 20;
                            let boundary = (end + slice - 1) & !(slice - 1);
                            closed(boundary - 4096)
                                || (boundary - end < 4096 + 16 && closed(boundary + slice - 4096))
                        };
                        if readable(below, 16) || !guarded_after {
                            println!("{n}-byte block at {p:?} (round {round}, {i}) not guarded around");
                            return;
                        }
                        checked += 1;
                        live.push((p, n));
                        if live.len() > 2 {
                            let (q, _) = live.remove(0);
                            // SAFETY: live, freed once.
                            unsafe { free(q) };
                        }
                    }
                }
                for (q, _) in live {
                    // SAFETY: live, freed once.
                    unsafe { free(q) };
                }
                println!("checked={checked}");
            })
            .check(|o| {
                o.assert_success(way);
                assert!(o.stdout.contains("checked=32"), "{way}: {}", o.stdout);
            });
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn an_underflow_below_any_of_nine_1_mib_blocks_faults() {
    // Issue 24's miss: 16 bytes written just below one of nine 1 MiB
    // blocks allocated in a row, all freed and allocated again; a block
    // at a segment's first slot had open slack below it. Each of the nine,
    // each way of making guards: a fault, every time.
    for k in 0..9 {
        expect_faults(&format!("underflow-below-one-of-nine:{k}"), move || {
            let n = 1 << 20;
            let blocks: Vec<*mut u8> = (0..9).map(|_| malloc(n)).collect();
            println!("writing");
            // SAFETY: the underflow under test, in a child expected to
            // fault; the frees after it are of live blocks, once each.
            unsafe {
                std::ptr::write_bytes(blocks[k].sub(16), 0x41, 16);
                for &p in &blocks {
                    free(p);
                }
            }
            for _ in 0..9 {
                let _ = std::hint::black_box(malloc(n));
            }
            println!("no fault");
        });
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn an_underflow_below_a_huge_block_faults() {
    expect_faults("underflow-huge", || {
        let p = malloc(5 << 20);
        println!("writing");
        // SAFETY: the underflow under test, in a child expected to fault.
        unsafe { std::ptr::write_volatile(p.sub(1), 0x41) };
        println!("no fault");
    });
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn large_segments_take_memory_released_huge_blocks_left_and_use_it() {
    for way in GUARD_WAYS {
        child("large-after-huge")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                // Huge blocks freed (their segments sealed with the seals,
                // left guarded without), then segments of slots made in
                // arena memory they left: every large block is written
                // whole, and the rounds release their segments again.
                for round in 0..12usize {
                    let huge: Vec<*mut u8> = (0..3).map(|i| malloc((5 + i + round % 3) << 20)).collect();
                    for (i, &h) in huge.iter().enumerate() {
                        // SAFETY: a live block of at least 5 MiB.
                        unsafe { std::ptr::write_bytes(h, 0x33, (5 + i + round % 3) << 20) };
                    }
                    for h in huge {
                        // SAFETY: live, freed once.
                        unsafe { free(h) };
                    }
                    for n in LARGE_SIZES {
                        let blocks: Vec<*mut u8> = (0..4).map(|_| malloc(n)).collect();
                        for &p in &blocks {
                            // SAFETY: a live block of `n` bytes.
                            unsafe { std::ptr::write_bytes(p, 0x44, n) };
                        }
                        for p in blocks {
                            // SAFETY: live, freed once.
                            unsafe { free(p) };
                        }
                    }
                    fortalloc::collect(true);
                }
                println!("written");
            })
            .check(|o| {
                o.assert_success(way);
                assert!(o.stdout.contains("written"), "{way}: {}", o.stdout);
            });
    }
}

/// Whether the block `p` of `n` bytes has a guard below it and one within
/// a quarter of the request and two pages past its end, and its first
/// page is open: probed through the kernel, never touched.
fn guarded_around(p: *mut u8, n: usize) -> bool {
    let ps = 4096;
    // SAFETY: within the block and the 16 bytes below it, probed only.
    let below = readable(unsafe { p.sub(16) }, 16);
    let end = (n..n + n / 4 + 2 * ps)
        .step_by(ps)
        // SAFETY: as above, probed only.
        .find(|&i| !readable(unsafe { p.add(i) }, 1));
    !below && readable(p, 1) && end.is_some()
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn a_segment_of_large_slots_reused_for_its_class_keeps_every_guard() {
    // Two segments or more of each class, all their blocks freed: the
    // class releases all but one, and their slices keep its layout. The
    // next blocks of the class come from those slices (one of their
    // segments at least) with their guards as they were: below and after
    // every block.
    for way in GUARD_WAYS {
        child("large-reused-for-its-class")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                let seg = |p: *mut u8| p as usize & !((4 << 20) - 1);
                let mut reused = 0;
                let mut checked = 0;
                for n in LARGE_SIZES {
                    let count = 2 * ((4 << 20) / n) + 3;
                    let first: Vec<*mut u8> = (0..count).map(|_| malloc(n)).collect();
                    let before: Vec<usize> = first.iter().map(|&p| seg(p)).collect();
                    for p in first {
                        // SAFETY: each block is live and freed once.
                        unsafe { free(p) };
                    }
                    let again: Vec<*mut u8> = (0..count).map(|_| malloc(n)).collect();
                    // Segments taken back: the one the class kept, and
                    // released ones.
                    let mut back: Vec<usize> = again
                        .iter()
                        .map(|&p| seg(p))
                        .filter(|s| before.contains(s))
                        .collect();
                    back.sort();
                    back.dedup();
                    if back.len() >= 2 {
                        reused += 1;
                    }
                    for &p in &again {
                        if !guarded_around(p, n) {
                            println!("{n}-byte block at {p:?} reused without its guards");
                            return;
                        }
                        checked += 1;
                    }
                    for p in again {
                        // SAFETY: each block is live and freed once.
                        unsafe { free(p) };
                    }
                }
                println!("checked={checked} reused={reused}");
            })
            .check(|o| {
                o.assert_success(way);
                let reused = common::count_after(o, "reused=");
                assert!(o.stdout.contains("checked="), "{way}: {}", o.stdout);
                // Without the seals a released segment's slice is taken
                // back by its class first (with them it is sealed).
                if cfg!(not(feature = "seal-freed-large")) {
                    assert_eq!(reused, LARGE_SIZES.len() as u64, "{way}: {}", o.stdout);
                }
            });
    }
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn memory_large_and_huge_segments_left_guarded_holds_no_guard_where_blocks_go() {
    // Segments of large slots and huge blocks released with their guards
    // on record, then the same memory taken by small, medium and large
    // blocks of other classes and by huge blocks of other sizes: every
    // byte of every block is written, so a guard left behind where a
    // block or a header lives kills the child.
    for way in GUARD_WAYS {
        child("other-kinds-after-large-and-huge")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                let write = |p: *mut u8, n: usize| {
                    // SAFETY: a live block of `n` bytes.
                    unsafe { std::ptr::write_bytes(p, 0x5a, n) };
                };
                let free_all = |blocks: Vec<(*mut u8, usize)>| {
                    for (p, _) in blocks {
                        // SAFETY: each block is live and freed once.
                        unsafe { free(p) };
                    }
                };
                for round in 0..4usize {
                    let mut left = Vec::new();
                    for (i, n) in [65_537, 300_001, 1 << 20].into_iter().enumerate() {
                        let count = 2 * ((4 << 20) / n) + 2 + i;
                        left.extend((0..count).map(|_| (malloc(n), n)));
                    }
                    left.extend((0..3).map(|i| {
                        let n = ((3 + i + round) << 20) + 12_345 * i;
                        (malloc(n), n)
                    }));
                    for &(p, n) in &left {
                        write(p, n);
                    }
                    free_all(left);
                    let mut taken = Vec::new();
                    for (n, count) in [
                        (2000, 4000),
                        (40_000, 200),
                        (73_729, 60),
                        (1_900_000, 6),
                        ((2 + round) << 20, 2),
                        (9 << 20, 1),
                    ] {
                        taken.extend((0..count).map(|_| (malloc(n), n)));
                    }
                    for &(p, n) in &taken {
                        write(p, n);
                    }
                    free_all(taken);
                }
                println!("written");
            })
            .check(|o| {
                o.assert_success(way);
                assert!(o.stdout.contains("written"), "{way}: {}", o.stdout);
            });
    }
}

/// The first of the OS pages of `[p, p + n)` (and its last byte) that the
/// kernel cannot read, probed one byte a page through a pipe, never
/// touched; None when all are open.
fn first_closed_page(p: *const u8, n: usize) -> Option<usize> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut byte = 0u8;
    let closed = (0..n).step_by(4096).chain(n.checked_sub(1)).find(|&i| {
        // A byte written is read back at once: the pipe never fills.
        // SAFETY: the kernel reports EFAULT instead of faulting; our pipe.
        unsafe {
            if libc::write(fds[1], p.add(i).cast(), 1) != 1 {
                return true;
            }
            assert_eq!(libc::read(fds[0], (&mut byte as *mut u8).cast(), 1), 1);
        }
        false
    });
    // SAFETY: closing the pipe just made.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    closed
}

/// Takes memory with small, medium, large and huge blocks and checks
/// that every page of every block, and the start of the header of its
/// segment, is open; then frees them all. Prints what it found closed and
/// returns false.
fn every_kind_takes_memory_open(when: &str) -> bool {
    let segment = |p: *mut u8| (p as usize & !((4 << 20) - 1)) as *const u8;
    let mut taken = Vec::new();
    for (n, count) in [
        (2000, 2500),
        (40_000, 120),
        (73_729, 60),
        (1_900_000, 6),
        (3 << 20, 2),
        (9 << 20, 1),
    ] {
        taken.extend((0..count).map(|_| (malloc(n), n)));
    }
    let mut clean = true;
    for &(p, n) in &taken {
        // SAFETY: a live block.
        let usable = unsafe { fortalloc::usable_size(p) };
        if let Some(at) = first_closed_page(p, usable) {
            println!("{when}: {n}-byte block at {p:?} closed at +{at}");
            clean = false;
            break;
        }
        if first_closed_page(segment(p), 1).is_some() {
            println!("{when}: header of the segment of {n}-byte block {p:?} closed");
            clean = false;
            break;
        }
    }
    for (p, _) in taken {
        // SAFETY: each block is live and freed once.
        unsafe { free(p) };
    }
    fortalloc::collect(true);
    clean
}

#[test]
#[cfg_attr(not(feature = "guard-pages"), ignore = "needs --features guard-pages")]
fn memory_over_aligned_and_resized_huge_blocks_left_is_open_where_blocks_go() {
    // Huge blocks aligned to every power of two up to 1 GiB leave pages
    // below their block guarded (the padding up to the alignment), and
    // blocks grown and shrunk by realloc leave their guard after a block
    // that moved; once they are freed, blocks of every kind that take
    // that memory find each of their pages and their header open.
    for way in GUARD_WAYS {
        child("open-after-aligned-huge")
            .env("FORTALLOC_GUARDS", way)
            .run(|| {
                let mut checked = 0;
                for shift in 0..=30 {
                    let align = 1usize << shift;
                    let mut left = Vec::new();
                    for size in [1, 4096, align - 1, align, align + 1] {
                        if size == 0 || size > 1 << 28 {
                            continue;
                        }
                        let p = fortalloc::malloc_aligned(size, align);
                        assert!(!p.is_null(), "size {size} align {align}");
                        assert_eq!(p as usize % align, 0);
                        // SAFETY: a live block of `size` bytes.
                        unsafe { std::ptr::write_bytes(p, 0x5a, size) };
                        left.push(p);
                    }
                    for p in left {
                        // SAFETY: each block is live and freed once.
                        unsafe { free(p) };
                    }
                    if !every_kind_takes_memory_open(&format!("after align {align}")) {
                        return;
                    }
                    checked += 1;
                }
                for (align, from, to) in [
                    (0, 5 << 20, 11 << 20),
                    (0, 11 << 20, 3 << 20),
                    (1 << 21, 3 << 20, 7 << 20),
                    (1 << 22, 9 << 20, 3 << 20),
                    (1 << 23, 3 << 20, 6 << 20),
                ] {
                    let p = if align == 0 {
                        malloc(from)
                    } else {
                        fortalloc::malloc_aligned(from, align)
                    };
                    assert!(!p.is_null());
                    // SAFETY: a live block of `from` bytes, resized to `to`
                    // (its first `from.min(to)` bytes kept), then freed
                    // once.
                    unsafe {
                        std::ptr::write_bytes(p, 0x33, from);
                        let q = if align == 0 {
                            fortalloc::realloc(p, to)
                        } else {
                            fortalloc::realloc_aligned(p, to, align)
                        };
                        assert!(!q.is_null());
                        std::ptr::write_bytes(q, 0x44, to);
                        let r = fortalloc::realloc(q, to / 2);
                        assert!(!r.is_null());
                        std::ptr::write_bytes(r, 0x55, to / 2);
                        free(r);
                    }
                    if !every_kind_takes_memory_open(&format!("after {from} to {to} aligned {align}")) {
                        return;
                    }
                    checked += 1;
                }
                println!("checked={checked}");
            })
            .check(|o| {
                o.assert_success(way);
                assert_eq!(common::count_after(o, "checked="), 36, "{way}: {}", o.stdout);
            });
    }
}
