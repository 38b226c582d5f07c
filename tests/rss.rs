//! Memory goes back to the OS: 1 GiB allocated in pieces of several sizes,
//! every page touched, then freed; RSS (from /proc/self/statm) must fall
//! back near its start once the purge delay has passed and the allocator
//! runs again, and all the way after `collect(true)`. Each phase runs in a
//! child process, so the test harness's own memory does not blur it.

mod common;

use std::time::Duration;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .expect("rss")
        .parse()
        .expect("number");
    // SAFETY: sysconf has no memory-safety preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

const MIB: usize = 1 << 20;

/// Allocates `total` bytes in `piece`-byte blocks, touching every page,
/// then frees them all; returns RSS at the peak.
fn burst(piece: usize, total: usize) -> usize {
    let mut blocks: Vec<usize> = Vec::with_capacity(total / piece + 1);
    let mut sum = 0;
    while sum < total {
        let p = fortalloc::malloc(piece);
        assert!(!p.is_null());
        let mut off = 0;
        while off < piece {
            // SAFETY: `off < piece`, inside the fresh block.
            unsafe { *p.add(off) = 1 };
            off += 4096;
        }
        blocks.push(p as usize);
        sum += piece;
    }
    let peak = rss();
    for p in blocks {
        // SAFETY: each block is live and freed once.
        unsafe { fortalloc::free(p as *mut u8) };
    }
    peak
}

/// The child: 1 GiB in total over five piece sizes, then the two checks.
fn child_body() {
    let start = rss();
    let phases = [
        (64, 128 * MIB),
        (4096, 256 * MIB),
        (100_000, 256 * MIB),
        (MIB, 256 * MIB),
        (16 * MIB, 256 * MIB),
    ];
    let mut peak = 0;
    for (piece, total) in phases {
        peak = peak.max(burst(piece, total));
    }
    assert!(
        peak > start + 200 * MIB,
        "the memory was really touched: {start} -> {peak}"
    );

    // After the purge delay (10 ms for pages, ten times it for whole free
    // segments), ordinary allocation work triggers the purges.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..1000 {
        let p = fortalloc::malloc(5000);
        // SAFETY: a live block, freed at once.
        unsafe { fortalloc::free(p) };
    }
    let delayed = rss();
    println!(
        "rss start={} peak={} after-delay={}",
        start / MIB,
        peak / MIB,
        delayed / MIB
    );
    assert!(
        delayed < start + 64 * MIB,
        "after the delay: start {start}, peak {peak}, now {delayed}"
    );

    fortalloc::collect(true);
    let collected = rss();
    println!("rss after-collect={}", collected / MIB);
    assert!(
        collected < start + 16 * MIB,
        "after collect: start {start}, now {collected}"
    );
}

#[test]
fn rss_falls_back_after_a_burst() {
    common::child("burst").run(child_body).check(|out| {
        out.assert_success("burst");
        assert!(
            out.stdout.contains("after-collect="),
            "the child ran the checks: {}",
            out.stdout
        );
        println!("{}", out.stdout);
    });
}
