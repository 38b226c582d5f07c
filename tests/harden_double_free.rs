//! The `double-free` defence: a second free of a block (at once, after
//! other work, from other threads, of a block realloc moved, of a large
//! block), and `realloc` or `usable_size` of a freed block, each aborts
//! with one line naming the address; a handler sees the report instead and
//! the program carries on. Each violation runs in a child process.
//!
//! Presets: `secure` and `secure-max` both promise every case here.

mod common;
mod hardened;

use common::{child, say_addr};
use hardened::{expect_detected, free, free_on_another_thread, malloc};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn immediate() {
    expect_detected("double-free-immediate", "double free", || {
        let p = malloc(48);
        // SAFETY: a fortalloc block; the second free is the violation
        // under test, in a child expected to abort.
        unsafe {
            free(p);
            say_addr(p);
            free(p);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn a_b_a() {
    expect_detected("double-free-aba", "double free", || {
        let a = malloc(48);
        let b = malloc(48);
        // SAFETY: fortalloc blocks; the second free of `a` is the
        // violation under test, in a child expected to abort.
        unsafe {
            free(a);
            free(b);
            say_addr(a);
            free(a);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn after_other_allocations_and_frees() {
    expect_detected("double-free-later", "double free", || {
        let a = malloc(200);
        // SAFETY: freed here, then again below: the violation under test,
        // in a child expected to abort.
        unsafe { free(a) };
        // Much happens in between, in other size classes.
        let keep: Vec<*mut u8> = (0..10_000).map(|i| malloc(16 + (i % 7) * 300)).collect();
        for p in keep {
            // SAFETY: live blocks, freed once.
            unsafe { free(p) };
        }
        say_addr(a);
        // SAFETY: see the first free.
        unsafe { free(a) };
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn first_free_on_another_thread() {
    expect_detected("double-free-cross-thread", "double free", || {
        let a = malloc(64) as usize;
        // SAFETY: a fortalloc block; the second free is the violation
        // under test, in a child expected to abort.
        unsafe {
            free_on_another_thread(a);
            say_addr(a as *const u8);
            free(a as *mut u8);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn both_frees_on_other_threads() {
    expect_detected("double-free-both-remote", "double free", || {
        // Two other threads free it; its owner never looks at it in
        // between.
        let a = malloc(64) as usize;
        // SAFETY: a fortalloc block; the second free is the violation
        // under test, in a child expected to abort.
        unsafe {
            free_on_another_thread(a);
            say_addr(a as *const u8);
            free_on_another_thread(a);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn second_free_on_another_thread() {
    expect_detected("double-free-local-then-remote", "double free", || {
        let a = malloc(64) as usize;
        // SAFETY: a fortalloc block; the second free is the violation
        // under test, in a child expected to abort.
        unsafe {
            free(a as *mut u8);
            say_addr(a as *const u8);
            free_on_another_thread(a);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn after_the_owner_took_back_a_remote_free() {
    expect_detected("double-free-remote-collected-then-local", "double free", || {
        // Freed by another thread, then taken off `thread_free` by its
        // owner (a forced collect; `keep` holds the page in use), then
        // freed again by the owner.
        let a = malloc(64) as usize;
        let keep = malloc(64);
        // SAFETY: fortalloc blocks; the second free of `a` is the
        // violation under test, in a child expected to abort.
        unsafe {
            free_on_another_thread(a);
            fortalloc::collect(true);
            say_addr(a as *const u8);
            free(a as *mut u8);
            free(keep);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn of_a_block_realloc_moved() {
    expect_detected("double-free-after-realloc", "double free", || {
        let a = malloc(32);
        // The realloc that moves `a` frees it: the free after is the
        // violation under test, in a child expected to abort.
        // SAFETY: `a` is a live block, grown once.
        unsafe {
            let b = fortalloc::realloc(a, 4000);
            assert_ne!(a, b, "grew out of its block");
            say_addr(a);
            free(a);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn of_a_large_block() {
    expect_detected("double-free-large", "double free", || {
        let a = malloc(300_000);
        // SAFETY: a fortalloc block; the second free is the violation
        // under test, in a child expected to abort.
        unsafe {
            free(a);
            say_addr(a);
            free(a);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn realloc_of_a_freed_block() {
    expect_detected("realloc-of-freed", "invalid pointer (not a live block)", || {
        let p = malloc(64);
        let _keep = malloc(64);
        // SAFETY: a fortalloc block, freed once; the realloc after is the
        // violation under test, in a child expected to abort.
        unsafe {
            free(p);
            say_addr(p);
            let _ = fortalloc::realloc(p, 100);
        }
    });
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn usable_size_of_a_freed_block() {
    expect_detected(
        "usable-size-of-freed",
        "invalid pointer (not a live block)",
        || {
            let p = malloc(64);
            let _keep = malloc(64);
            // SAFETY: a fortalloc block, freed once; asking its size after is
            // the violation under test, in a child expected to abort.
            unsafe {
                free(p);
                say_addr(p);
                let _ = fortalloc::usable_size(p);
            }
        },
    );
}

#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn a_handler_sees_the_detection_and_the_program_carries_on() {
    child("handler")
        .run(|| {
            static SEEN: std::sync::Mutex<Vec<(fortalloc::ErrorKind, usize)>> =
                std::sync::Mutex::new(Vec::new());
            fn record(e: &fortalloc::ErrorInfo) {
                // try_lock: the handler must not block inside the allocator.
                if let Ok(mut v) = SEEN.try_lock() {
                    if v.capacity() > v.len() {
                        v.push((e.kind, e.address));
                    }
                }
            }
            SEEN.lock().expect("lock").reserve(8);
            fortalloc::set_error_handler(Some(record));
            let p = malloc(48);
            // SAFETY: a fortalloc block; the second free is the violation
            // the handler is to see.
            unsafe {
                free(p);
                free(p);
            }
            let q = malloc(48);
            // SAFETY: a live block, freed once.
            unsafe { free(q) };
            fortalloc::set_error_handler(None);
            let seen = SEEN.lock().expect("lock");
            println!("seen={:?}", *seen);
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(seen[0], (fortalloc::ErrorKind::DoubleFree, p as usize));
            println!("carried on");
        })
        .check(|o| {
            assert_eq!(o.code(), Some(0), "{} / {}", o.stderr, o.stdout);
            assert!(o.stdout.contains("carried on"), "{}", o.stdout);
            assert!(
                !o.stderr.contains("fortalloc:"),
                "no message with a handler: {}",
                o.stderr
            );
        });
}

/// The report names the size the program asked for, not the size class
/// the canary build rounded it up to (48 bytes and its canary take a
/// 56-byte block); a build that wipes freed blocks, or keeps no canary,
/// names the class.
#[test]
#[cfg_attr(not(feature = "double-free"), ignore = "needs --features double-free")]
fn the_report_names_the_requested_size() {
    let want = if cfg!(feature = "canary") && !cfg!(feature = "zero-on-free") {
        "(48-byte block)"
    } else {
        "-byte block)"
    };
    common::child("double-free-size")
        .run(|| {
            let p = malloc(48);
            say_addr(p);
            // SAFETY: the second free is the violation under test, in a
            // child expected to abort.
            unsafe {
                free(p);
                free(p);
            }
        })
        .check(|o| {
            o.assert_reported("double free");
            let line = o
                .stderr
                .lines()
                .find(|l| l.starts_with("fortalloc: double free"))
                .expect("report");
            assert!(line.ends_with(want), "{line}");
        });
}
