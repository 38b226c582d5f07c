//! Sized frees: with the right size (and alignment) they free quietly in
//! every build; with the wrong size the hardened build (any defence on)
//! aborts with one line naming the address, in a child process.
//!
//! Presets: `secure` and `secure-max` (any defence turns the check on).

mod common;
mod hardened;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Sized frees with the right size (and alignment) free quietly in every
/// build, for every kind of block.
#[test]
fn sized_frees_with_the_right_size() {
    for (size, align) in [
        (0, 8),
        (1, 8),
        (100, 8),
        (100, 16),
        (100, 64),
        (5000, 8),
        (40_000, 4096),
        (300_000, 8),
        (3 << 20, 8),
        (9 << 20, 1 << 23),
    ] {
        let p = fortalloc::malloc_aligned(size, align);
        assert!(!p.is_null());
        // SAFETY: `p` is live, allocated with exactly this size and alignment.
        unsafe { fortalloc::free_sized(p, size, align) };
    }
}

#[cfg(any(
    feature = "encoded-freelist",
    feature = "double-free",
    feature = "canary",
    feature = "zero-on-free",
    feature = "random-order",
    feature = "guard-pages"
))]
#[test]
fn sized_free_with_the_wrong_size_is_caught() {
    hardened::expect_detected("sized-free-mismatch", "sized free with the wrong size", || {
        let p = hardened::malloc(100);
        common::say_addr(p);
        // SAFETY: a live 100-byte block freed as 3000 bytes: the violation
        // under test, in a child expected to abort.
        unsafe { fortalloc::free_sized(p, 3000, 8) };
        println!("freed");
    });
}
