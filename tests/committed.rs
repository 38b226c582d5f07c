//! Committed bytes (`Stats::committed_bytes`): fortalloc's memory that is
//! accessible and not purged since it was last handed out. Written blocks
//! raise it by at least their size; freed and purged ones take it back
//! down; purged memory handed out again counts again, so it never falls
//! below the bytes the program holds. In the guard build (`secure`,
//! `guard-pages`) the same holds with either way of making guards.
//! Each case runs in a child process of its own: the count is
//! process-wide, and the test harness's threads would blur it.

mod common;

use std::time::Duration;

use common::{child, Finished};

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);

/// The environments each case runs under: as is, and in the guard build
/// with `mprotect` guards too (the kernel may have markers), and with a
/// mapping budget too small for any, so that every guard and seal is
/// skipped and what it would have closed stays open.
fn environments() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let mut envs = vec![("", vec![])];
    if cfg!(feature = "guard-pages") {
        envs.push(("-mprotect", vec![("FORTALLOC_GUARDS", "mprotect")]));
        envs.push((
            "-no-budget",
            vec![("FORTALLOC_GUARDS", "mprotect"), ("FORTALLOC_MAP_BUDGET", "1")],
        ));
    }
    envs
}

fn run_case(case: &str, body: fn()) {
    for (suffix, env) in environments() {
        let name = format!("{case}{suffix}");
        child(&name)
            .envs(&env)
            .limit(LIMIT)
            .run(body)
            .check(|out: &Finished| {
                out.assert_success(&name);
                assert!(out.stdout.contains("committed "), "no figures: {}", out.stdout);
                println!("[{name}]\n{}", out.stdout);
            });
    }
}

/// Blocks the program holds, with the bytes it asked for.
struct Live {
    blocks: Vec<(usize, usize)>,
    bytes: usize,
}

impl Live {
    fn new() -> Live {
        Live {
            blocks: Vec::new(),
            bytes: 0,
        }
    }

    /// Allocates `size` bytes and writes every one of them.
    fn add(&mut self, size: usize) {
        let p = fortalloc::malloc(size);
        assert!(!p.is_null(), "malloc({size})");
        // SAFETY: a fresh block of `size` bytes.
        unsafe { std::ptr::write_bytes(p, 0x5a, size) };
        self.blocks.push((p as usize, size));
        self.bytes += size;
    }

    /// Frees block `i` (by swapping the last one into its place).
    fn remove(&mut self, i: usize) {
        let (p, size) = self.blocks.swap_remove(i);
        // SAFETY: a live block of ours, freed once.
        unsafe { fortalloc::free(p as *mut u8) };
        self.bytes -= size;
    }

    fn clear(&mut self) {
        while !self.blocks.is_empty() {
            self.remove(self.blocks.len() - 1);
        }
    }
}

/// The process's anonymous resident memory (its heap, stacks and `.bss`;
/// not the pages of its program file).
fn rss_anon() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .expect("a number")
        .parse()
        .expect("a number");
    kib << 10
}

/// Slack for resident memory that is not fortalloc's (the C library's
/// own heap, stacks), and for the kernel's batching of its counters.
const RSS_SLACK: usize = 8 * MIB;

/// The first reading of `committed`: (committed, anonymous RSS).
static START: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();

/// The committed bytes now, checked to cover what the program holds (a
/// purged range handed out again and not counted again would show here)
/// and to be within the peak; and to bound the growth of the process's
/// resident memory since the first reading, unless freed large blocks are
/// sealed: `seal-freed-large` seals them with `mprotect`, which keeps their
/// pages resident while they are inaccessible, so not committed. (With no
/// mapping budget it makes none, and every page stays accessible.) The
/// guards of `guard-pages` alone hold no resident page.
fn committed(live: &Live, at: &str) -> usize {
    let s = fortalloc::stats();
    let c = s.committed_bytes as usize;
    assert!(
        c >= live.bytes,
        "{at}: committed {c} below the {} bytes held",
        live.bytes
    );
    assert!(s.peak_committed_bytes >= s.committed_bytes, "{at}: {s:?}");
    let rss = rss_anon();
    let &(c0, rss0) = START.get_or_init(|| (c, rss));
    if !cfg!(feature = "seal-freed-large") || std::env::var_os("FORTALLOC_MAP_BUDGET").is_some() {
        assert!(
            rss.saturating_sub(rss0) <= c.saturating_sub(c0) + RSS_SLACK,
            "{at}: resident memory grew from {rss0} to {rss}, committed from {c0} to {c}"
        );
    }
    c
}

/// Large blocks, 64 KiB to 1 MiB: 32 MiB written raise the count by at
/// least that; freed, and purged at once by `collect(true)` with no purge
/// delay, they take it back down by most of it.
fn large_blocks() {
    let sizes = [64 << 10, 100_000, 192 << 10, 300_000, 512 << 10, 777_777, MIB];
    let mut live = Live::new();
    let before = committed(&live, "before");
    let mut i = 0;
    while live.bytes < 32 * MIB {
        live.add(sizes[i % sizes.len()]);
        if i % 8 == 0 {
            committed(&live, "allocating");
        }
        i += 1;
    }
    let full = committed(&live, "written");
    assert!(
        full >= before + 32 * MIB,
        "32 MiB written: committed {before} -> {full}"
    );
    let peak = fortalloc::stats().peak_committed_bytes as usize;
    assert!(peak >= full);
    while !live.blocks.is_empty() {
        live.remove(live.blocks.len() - 1);
        committed(&live, "freeing");
    }
    fortalloc::set_purge_delay_ms(0);
    fortalloc::collect(true);
    let after = committed(&live, "collected");
    assert!(
        after + 28 * MIB <= full,
        "freed and purged: committed {full} -> {after}"
    );
    println!("committed before={before} written={full} peak={peak} after-collect={after} blocks={i}");
}

/// Small blocks (up to 8 KiB), medium ones (up to 64 KiB) and a huge one:
/// the same rise and fall.
fn small_medium_and_huge_blocks() {
    let mut live = Live::new();
    let before = committed(&live, "before");
    let mut i = 0;
    while live.bytes < 24 * MIB {
        live.add(16 + (i * 997) % (64 << 10));
        if i % 64 == 0 {
            committed(&live, "allocating");
        }
        i += 1;
    }
    live.add(40 * MIB);
    let full = committed(&live, "written");
    assert!(
        full >= before + 64 * MIB,
        "64 MiB written: committed {before} -> {full}"
    );
    live.clear();
    fortalloc::set_purge_delay_ms(0);
    fortalloc::collect(true);
    let after = committed(&live, "collected");
    assert!(
        after + 56 * MIB <= full,
        "freed and purged: committed {full} -> {after}"
    );
    println!("committed before={before} written={full} after-collect={after} blocks={i}");
}

/// Memory freed, purged and handed out again, over and over with no purge
/// delay (every free purges what it emptied), in sizes from a word to 3
/// MiB: the count covers what the program holds at every step, and comes
/// back near where it started once everything is freed.
fn purged_memory_handed_out_again() {
    let mut live = Live::new();
    let before = committed(&live, "before");
    fortalloc::set_purge_delay_ms(0);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut top = 0;
    for step in 0..6000 {
        if live.blocks.len() < 200 && next(3) != 0 {
            let size = match next(4) {
                0 => 1 + next(1024),
                1 => 1 + next(64 << 10),
                2 => (64 << 10) + next(2 * MIB - (64 << 10)),
                _ => 2 * MIB + next(MIB),
            };
            live.add(size);
        } else if !live.blocks.is_empty() {
            live.remove(next(live.blocks.len()));
        }
        if step % 25 == 0 {
            top = top.max(committed(&live, &format!("step {step}")));
        }
        if step % 1000 == 999 {
            fortalloc::collect(true);
            committed(&live, &format!("collected at step {step}"));
        }
    }
    live.clear();
    fortalloc::collect(true);
    let after = committed(&live, "all freed");
    assert!(
        after <= before + 8 * MIB,
        "everything freed and purged: committed {before} -> {after} (top {top})"
    );
    println!("committed before={before} top={top} after-collect={after}");
}

#[test]
fn written_large_blocks_raise_the_count_and_purges_lower_it() {
    run_case("large", large_blocks);
}

#[test]
fn small_medium_and_huge_blocks_count_too() {
    run_case("small-huge", small_medium_and_huge_blocks);
}

#[test]
fn purged_memory_counts_again_when_handed_out() {
    run_case("reuse", purged_memory_handed_out_again);
}
