//! The `zero-on-free` defence: freed blocks are wiped, so a dangling reader
//! sees zeros and every new owner of reused memory finds its block all
//! zero; with `write-after-free-check`, a write to a freed block is caught
//! when the block leaves the quarantine or is handed out again. The
//! violations run in child processes.
//!
//! Presets: `secure-max` only (`zero-on-free`, `write-after-free-check`).

mod common;
mod hardened;

use hardened::{free, malloc};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

#[test]
#[cfg_attr(
    not(all(feature = "zero-on-free", feature = "write-after-free-check")),
    ignore = "needs --features zero-on-free and write-after-free-check"
)]
fn write_after_free_is_caught_when_the_block_is_reused() {
    hardened::expect_detected("write-after-free", "write after free", || {
        let p = malloc(64);
        // A live neighbour keeps the page in use, so it is not released
        // (and purged) with the write in it before `p` comes round again.
        let _keep = malloc(64);
        // SAFETY: a fortalloc block, freed once; the write after is the
        // violation under test, in a child expected to abort.
        unsafe {
            free(p);
            common::say_addr(p);
            // Past the first word (the free-list link).
            *p.add(16) = 0x41;
        }
        // Frees too: with the quarantine, they push `p` out of it.
        for _ in 0..100_000 {
            let q = std::hint::black_box(malloc(64));
            // SAFETY: a live block, freed once.
            unsafe { free(q) };
        }
    });
}

/// Bytes 16 to 63 of a freed 64-byte block written, then 139,000 mallocs
/// of that size and their frees (an independent suite's case, which let
/// the write through in 5 of 6 runs: the block left the quarantine onto
/// its page's list, and the page, once all its blocks were free, was
/// released, its memory to be zeroed or purged, before the block came
/// round again). Reported in every one of many rounds, each with a block
/// of its own, whether the block is handed out again first or its page is
/// released first.
#[test]
#[cfg_attr(
    not(all(feature = "zero-on-free", feature = "write-after-free-check")),
    ignore = "needs --features zero-on-free and write-after-free-check"
)]
fn a_write_after_free_is_caught_in_every_round_of_churn() {
    const ROUNDS: usize = 8;
    const CHURN: usize = 139_000;
    common::child("write-after-free-rounds")
        .run(|| {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static TARGET: AtomicUsize = AtomicUsize::new(0);
            static CAUGHT: AtomicUsize = AtomicUsize::new(0);
            fn count(e: &fortalloc::ErrorInfo) {
                if e.kind == fortalloc::ErrorKind::WriteAfterFree
                    && e.address == TARGET.load(Ordering::Relaxed)
                {
                    TARGET.store(0, Ordering::Relaxed);
                    CAUGHT.fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut blocks = Vec::with_capacity(CHURN);
            fortalloc::set_error_handler(Some(count));
            for _ in 0..ROUNDS {
                let p = malloc(64);
                // SAFETY: a fortalloc block, freed once; the write after is
                // the violation under test, which the handler counts.
                unsafe {
                    free(p);
                    TARGET.store(p as usize, Ordering::Relaxed);
                    for i in 16..64 {
                        std::ptr::write_volatile(p.add(i), 0x41);
                    }
                }
                blocks.extend((0..CHURN).map(|_| malloc(64)));
                for q in blocks.drain(..) {
                    // SAFETY: a live block, freed once.
                    unsafe { free(q) };
                }
                // Rounds are apart: whatever waits from this one goes.
                fortalloc::collect(true);
            }
            fortalloc::set_error_handler(None);
            println!("caught {} of {ROUNDS}", CAUGHT.load(Ordering::Relaxed));
        })
        .check(|o| {
            assert_eq!(o.code(), Some(0), "{} / {}", o.stderr, o.stdout);
            assert!(
                o.stdout.contains(&format!("caught {ROUNDS} of {ROUNDS}")),
                "{}",
                o.stdout
            );
        });
}

/// A write to a block waiting in the quarantine is caught as it leaves:
/// all of it when the quarantine is emptied (`collect`, thread exit), its
/// first word when later frees push it out (the rest when it is handed out
/// again, the test above).
#[test]
#[cfg_attr(
    not(all(
        feature = "zero-on-free",
        all(feature = "quarantine", feature = "write-after-free-check")
    )),
    ignore = "needs --features zero-on-free and quarantine and write-after-free-check"
)]
fn a_write_while_quarantined_is_caught_as_the_block_leaves() {
    hardened::expect_detected("quarantined-write-then-collect", "write after free", || {
        let p = malloc(64);
        // SAFETY: a fortalloc block, freed once; the write after is the
        // violation under test, in a child expected to abort.
        unsafe {
            free(p);
            common::say_addr(p);
            *p.add(40) = 0x41;
        }
        // Emptying the quarantine reads every block in it whole.
        fortalloc::collect(false);
        println!("not caught");
    });
    hardened::expect_detected(
        "quarantined-first-word-write-then-frees",
        "write after free",
        || {
            let p = malloc(64);
            // SAFETY: as above, a write to the block's first word.
            unsafe {
                free(p);
                common::say_addr(p);
                (p as *mut u64).write(0x4141);
            }
            // Frees push `p` out; its first word is read as it leaves,
            // before a free-list link covers it.
            for _ in 0..100_000 {
                let q = std::hint::black_box(malloc(64));
                // SAFETY: a live block, freed once.
                unsafe { free(q) };
            }
            println!("not caught");
        },
    );
}

#[test]
#[cfg_attr(not(feature = "zero-on-free"), ignore = "needs --features zero-on-free")]
fn a_dangling_reader_sees_zeros() {
    let p = malloc(256);
    // Reading it after the free is what a dangling pointer does.
    // SAFETY: `p` is a live 256-byte block; its memory stays mapped after
    // the free (its page holds other live blocks).
    unsafe {
        let _keep = malloc(256);
        std::ptr::write_bytes(p, 0xab, 256);
        free(p);
        for i in 8..256 {
            assert_eq!(std::ptr::read_volatile(p.add(i)), 0, "byte {i} after free");
        }
    }
}

#[test]
#[cfg_attr(not(feature = "zero-on-free"), ignore = "needs --features zero-on-free")]
fn a_block_grown_in_place_shows_zeros_past_its_old_size() {
    // Past the old size lay its canary and recorded size; a block grown in
    // place must show zeros there, as a moved one would.
    let mut in_place = 0;
    for n in [20usize, 100, 1000, 5000, 40_000, 100_000] {
        let p = malloc(n);
        // SAFETY: `p` is a live block of `n` bytes, `q` one of `n + 3`.
        unsafe {
            std::ptr::write_bytes(p, 0xee, n);
            let q = fortalloc::realloc(p, n + 3);
            assert!(!q.is_null());
            in_place += usize::from(q == p);
            for i in n..n + 3 {
                assert_eq!(*q.add(i), 0, "size {n}: byte {i} after realloc");
            }
            free(q);
        }
    }
    assert!(in_place > 0, "no block grew in place");
}

#[test]
#[cfg_attr(not(feature = "zero-on-free"), ignore = "needs --features zero-on-free")]
fn a_block_shrunk_in_place_keeps_no_old_bytes_once_freed() {
    // A small or medium block shrunk in place and then freed: the wipe
    // covers what its new size says its owner could write, so what lay
    // past it (the old bytes, the old canary) must be zero already.
    let mut in_place = 0;
    for n in [200usize, 1000, 5000, 40_000] {
        let p = malloc(n);
        // A live neighbour keeps the page in use, so its memory stays
        // mapped and as the free left it.
        let keep = malloc(n);
        let m = n * 5 / 8;
        // SAFETY: live blocks of `n` and `m` bytes; the freed `q` is read
        // through the dangling pointer, mapped as `keep` holds its page.
        unsafe {
            std::ptr::write_bytes(p, 0xab, n);
            let q = fortalloc::realloc(p, m);
            assert!(!q.is_null());
            if q == p {
                in_place += 1;
                free(q);
                for i in 8..n {
                    assert_eq!(
                        std::ptr::read_volatile(q.add(i)),
                        0,
                        "size {n} to {m}: byte {i} after free"
                    );
                }
            } else {
                free(q);
            }
            free(keep);
        }
    }
    assert!(in_place > 0, "no block shrank in place");
}

/// Sizes from every kind of page: small, medium, and with
/// `seal-freed-large`, which zeroes them when they are reused, large and
/// huge (zero-on-free wipes neither without it: see SECURITY.md).
const SIZES: &[usize] = if cfg!(feature = "seal-freed-large") {
    &[24, 3000, 40_000, 200_000, 1_500_000, 6_000_000]
} else {
    &[24, 3000, 40_000]
};

/// Fills blocks with a pattern and frees them, many times over, so the
/// memory is reused; every new owner must find its block all zero.
fn churn(zeroed: bool) {
    for round in 0..12 {
        for &n in SIZES {
            let p = if zeroed { fortalloc::zalloc(n) } else { malloc(n) };
            assert!(!p.is_null());
            // SAFETY: `p` is a live block of `n` bytes (at least).
            unsafe {
                // Under encoded-freelist the handed-out block does not even
                // keep its free-list link; without it, word 0 may hold the
                // plain link.
                let from = if cfg!(feature = "encoded-freelist") || zeroed {
                    0
                } else {
                    8
                };
                let bytes = std::slice::from_raw_parts(p, n);
                if let Some(i) = bytes[from..].iter().position(|&b| b != 0) {
                    panic!(
                        "round {round}: {n}-byte block: byte {} is {:#x}",
                        i + from,
                        bytes[i + from]
                    );
                }
                std::ptr::write_bytes(p, 0xa5, n);
                free(p);
            }
        }
    }
}

#[test]
#[cfg_attr(not(feature = "zero-on-free"), ignore = "needs --features zero-on-free")]
fn new_owners_of_reused_memory_see_zeros() {
    churn(false);
}

#[test]
#[cfg_attr(not(feature = "zero-on-free"), ignore = "needs --features zero-on-free")]
fn zeroed_allocations_are_zero_after_reuse() {
    churn(true);
}
