//! Every build rejects `free` of a pointer fortalloc does not own, and of a
//! pointer into the middle of a block, with one line on stderr and abort().
//! Each violation runs in a child process (`common::child`); the parent
//! asserts the signal and the message, down to the address.

mod common;

use common::{child, say_addr};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

static A_STATIC: [u64; 4] = [1, 2, 3, 4];

/// Runs, as `case` in a child, a free of the pointer `bad` returns; the
/// child must abort with exactly one fortalloc line, naming that address
/// and containing `detail`.
#[track_caller]
fn expect_rejected(case: &str, detail: &str, bad: impl FnOnce() -> usize) {
    child(case).run(|| free_it(bad())).check(|o| {
        o.assert_signal(libc::SIGABRT, case);
        let addr = o.printed_addr();
        let lines: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("fortalloc:")).collect();
        assert_eq!(lines.len(), 1, "{case}: one line: {}", o.stderr);
        let expect = format!("fortalloc: invalid free at {addr} (");
        assert!(
            lines[0].starts_with(&expect),
            "{case}: wanted `{expect}`: {}",
            lines[0]
        );
        assert!(
            lines[0].contains(detail),
            "{case}: wanted `{detail}`: {}",
            lines[0]
        );
    });
}

/// The violation: prints `bad` and frees it.
fn free_it(bad: usize) {
    say_addr(bad as *const u8);
    // SAFETY: deliberately invalid: this child process is expected to abort
    // before anything is freed.
    unsafe { fortalloc::free(bad as *mut u8) };
    println!("not rejected");
}

#[test]
fn a_stack_address() {
    expect_rejected("stack", "not allocated by fortalloc", || {
        let x = std::hint::black_box([0u64; 4]);
        x.as_ptr() as usize
    });
}

#[test]
fn a_static() {
    expect_rejected("static", "not allocated by fortalloc", || {
        A_STATIC.as_ptr() as usize
    });
}

#[test]
fn a_libc_block() {
    expect_rejected("libc-malloc", "not allocated by fortalloc", || {
        // SAFETY: plain libc malloc; the block is leaked into the child's
        // violation.
        unsafe { libc::malloc(64) as usize }
    });
}

#[test]
fn an_address_in_someone_elses_mapping() {
    expect_rejected("mmap", "not allocated by fortalloc", || {
        // SAFETY: a fresh anonymous mapping of our own.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as usize + 4096
    });
}

#[test]
fn wild_addresses() {
    expect_rejected("wild-low", "not allocated by fortalloc", || 0x10000);
    expect_rejected("wild-high", "not allocated by fortalloc", || 0x7fff_0000_1230);
}

#[test]
fn interior_pointers_of_small_blocks() {
    expect_rejected("small+8", "interior pointer", || {
        fortalloc::malloc(48) as usize + 8
    });
    expect_rejected("small+1", "interior pointer", || {
        fortalloc::malloc(48) as usize + 1
    });
}

#[test]
fn interior_pointer_of_a_medium_block() {
    expect_rejected("medium+4096", "interior pointer", || {
        fortalloc::malloc(20 << 10) as usize + 4096
    });
}

#[test]
fn interior_pointer_of_a_large_block() {
    expect_rejected("large+64k", "interior pointer", || {
        fortalloc::malloc(1 << 20) as usize + (64 << 10)
    });
}

#[test]
fn interior_pointers_of_a_huge_block() {
    expect_rejected("huge+4096", "interior pointer", || {
        fortalloc::malloc(8 << 20) as usize + 4096
    });
    // Past the block's first segment the map has no entry: reported as not
    // ours, which is also a rejection; within it, as interior.
    child("huge+1m")
        .run(|| free_it(fortalloc::malloc(8 << 20) as usize + (1 << 20)))
        .check(|o| {
            assert_eq!(o.signal(), Some(libc::SIGABRT), "{}", o.stderr);
            assert!(o.stderr.contains("fortalloc: invalid free at"), "{}", o.stderr);
        });
}

#[test]
fn a_valid_free_is_not_rejected() {
    child("control")
        .run(|| {
            let p = fortalloc::malloc(48);
            // SAFETY: a live block freed once: the control case must exit 0.
            unsafe { fortalloc::free(p) };
            println!("freed cleanly");
        })
        .check(|o| {
            assert_eq!(o.code(), Some(0), "{} / {}", o.stderr, o.stdout);
            assert!(o.stdout.contains("freed cleanly"));
            assert!(!o.stderr.contains("fortalloc:"), "{}", o.stderr);
        });
}
