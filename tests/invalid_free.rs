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

/// Runs `body` in a child that must abort with exactly one line, `double
/// free at <the address it printed> (`, in every build: the hardened build
/// sees it in its bitmaps, the plain build where it costs nothing (see
/// SECURITY.md, "What the plain build catches").
#[track_caller]
fn expect_double_free(case: &str, body: impl FnOnce()) {
    child(case).run(body).check(|o| {
        o.assert_signal(libc::SIGABRT, case);
        let addr = o.printed_addr();
        let lines: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("fortalloc:")).collect();
        assert_eq!(lines.len(), 1, "{case}: one line: {}", o.stderr);
        let expect = format!("fortalloc: double free at {addr} (");
        assert!(
            lines[0].starts_with(&expect),
            "{case}: wanted `{expect}`: {}",
            lines[0]
        );
    });
}

/// A block freed twice in a row, beside live blocks of its page: the
/// second free finds it at the head of its page's free list.
#[test]
fn a_block_freed_twice_in_a_row() {
    expect_double_free("twice-in-a-row", || {
        let keep: Vec<*mut u8> = (0..8).map(|_| fortalloc::malloc(48)).collect();
        let p = fortalloc::malloc(48);
        say_addr(p);
        // SAFETY: deliberately freed twice: this child must abort at the
        // second free.
        unsafe {
            fortalloc::free(p);
            fortalloc::free(p);
        }
        println!("not reported {}", keep.len());
    });
}

/// Every block of a page freed, then one again after others: the page's
/// count of blocks in use would go below zero.
#[test]
fn a_page_freed_below_empty() {
    expect_double_free("below-empty", || {
        // A size class of its own, so the page holds only these blocks.
        let blocks: Vec<*mut u8> = (0..4).map(|_| fortalloc::malloc(3000)).collect();
        say_addr(blocks[0]);
        // SAFETY: each freed once, then the first again: this child must
        // abort at the last free.
        unsafe {
            for &b in &blocks {
                fortalloc::free(b);
            }
            fortalloc::free(blocks[0]);
        }
        println!("not reported");
    });
}

/// Blocks freed by another thread, and one of them again by its owner:
/// when the owner collects the other thread's frees, its page gets back
/// more blocks than it has in use.
#[test]
fn a_block_freed_by_another_thread_and_again() {
    child("remote-then-local")
        .run(|| {
            let blocks: Vec<usize> = (0..4).map(|_| fortalloc::malloc(3000) as usize).collect();
            let sent = blocks.clone();
            std::thread::spawn(move || {
                for b in sent {
                    // SAFETY: each block freed once here.
                    unsafe { fortalloc::free(b as *mut u8) };
                }
            })
            .join()
            .expect("freeing thread");
            // SAFETY: deliberately freed a second time: this child must abort
            // here or when the page collects the other thread's frees.
            unsafe { fortalloc::free(blocks[0] as *mut u8) };
            for _ in 0..64 {
                std::hint::black_box(fortalloc::malloc(3000));
            }
            println!("not reported");
        })
        .check(|o| {
            o.assert_signal(libc::SIGABRT, "remote-then-local");
            let lines: Vec<&str> = o.stderr.lines().filter(|l| l.starts_with("fortalloc:")).collect();
            assert_eq!(lines.len(), 1, "one line: {}", o.stderr);
            assert!(
                lines[0].starts_with("fortalloc: double free at 0x"),
                "{}",
                lines[0]
            );
        });
}
