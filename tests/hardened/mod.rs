//! What the `harden_*.rs` tests share (`mod hardened;`, beside `mod
//! common;`): allocation calls that fail loudly, the check of a detection
//! report, and the reuse measurement that both `random-order` and the
//! quarantine change. Not every file uses every helper, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

use crate::common::{child, Finished};

/// `fortalloc::malloc`, never null.
pub fn malloc(n: usize) -> *mut u8 {
    let p = fortalloc::malloc(n);
    assert!(!p.is_null());
    p
}

/// # Safety
/// `p` must come from fortalloc (the cases free pointers twice on purpose,
/// in a child process that is expected to abort).
pub unsafe fn free(p: *mut u8) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free(p) }
}

/// Frees `p` from a thread of its own and waits for it.
///
/// # Safety
/// As for [`free`].
pub unsafe fn free_on_another_thread(p: usize) {
    std::thread::spawn(move || {
        // SAFETY: per the caller.
        unsafe { free(p as *mut u8) }
    })
    .join()
    .expect("freeing thread");
}

/// Checks that a child aborted with `fortalloc: <what> at <the address it
/// printed>`, in one line that names the block's size.
pub fn assert_detected(o: &Finished, what: &str) {
    o.assert_reported(what);
    let line = o
        .stderr
        .lines()
        .find(|l| l.starts_with("fortalloc:"))
        .expect("message line");
    assert!(
        line.ends_with("-byte block)")
            || line.ends_with("-byte slot)")
            || line.ends_with("(block of a freed page)"),
        "one line naming the block size: {line}"
    );
}

/// Runs `body` (a violation that prints its block's address first) as
/// `case` in a child, which must end as [`assert_detected`] says.
#[track_caller]
pub fn expect_detected(case: &str, what: &str, body: impl FnOnce()) {
    child(case).run(body).check(|o| assert_detected(o, what));
}

/// Frees 256 blocks of 48 bytes, allocates 256 again, and returns which of
/// the freed ones came back, in the order they came back (indices in the
/// order they were freed).
pub fn reuse_after_freeing_256() -> Vec<usize> {
    let first: Vec<usize> = (0..256).map(|_| malloc(48) as usize).collect();
    for &p in &first {
        // SAFETY: each block is live and freed once.
        unsafe { free(p as *mut u8) };
    }
    let freed_at: std::collections::HashMap<usize, usize> =
        first.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let again: Vec<usize> = (0..256).map(|_| malloc(48) as usize).collect();
    let reused: Vec<usize> = again.iter().filter_map(|p| freed_at.get(p).copied()).collect();
    for &p in &again {
        // SAFETY: each block is live and freed once.
        unsafe { free(p as *mut u8) };
    }
    reused
}

/// What a reuse case prints for [`reused`].
pub fn print_reused(reused: &[usize]) {
    let list: Vec<String> = reused.iter().map(|i| i.to_string()).collect();
    println!("reused={}", list.join(","));
}

/// The indices a child's reuse case printed with [`print_reused`], after
/// checking it exited 0.
pub fn reused(o: &Finished) -> Vec<usize> {
    o.assert_success("reuse case");
    o.stdout
        .lines()
        .find_map(|l| l.split_once("reused=").map(|(_, r)| r.trim()))
        .expect("reused= line")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("index"))
        .collect()
}
