//! A Rust program using `FortAlloc` gets what the C library gets: its
//! `FORTALLOC_*` options are read when it loads, and
//! `FORTALLOC_SHOW_STATS=1` prints its statistics table at exit, headed by
//! its process id.

mod common;
use common::child;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;

/// Some allocations of the child's own, and its pid for the parent.
fn allocate_and_say_pid() {
    let v: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
    println!(
        "child pid {} sum {}",
        std::process::id(),
        v.iter().map(|b| **b).sum::<u64>()
    );
}

#[test]
fn show_stats_prints_the_table_at_exit() {
    child("show-stats")
        .env("FORTALLOC_SHOW_STATS", "1")
        .run(allocate_and_say_pid)
        .check(|o| {
            o.assert_success("show-stats");
            let pid = o
                .stdout
                .split("child pid ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .expect("the child's pid");
            assert!(
                o.stderr
                    .contains(&format!("fortalloc: statistics of process {pid} ")),
                "no table headed by {pid}: {}",
                o.stderr
            );
            let allocations = o
                .stderr
                .lines()
                .find_map(|l| l.strip_prefix("fortalloc: allocations"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .expect("an allocations row");
            assert!(allocations >= 1000, "{allocations}");
        });
    child("quiet")
        .env("FORTALLOC_SHOW_STATS", "0")
        .run(allocate_and_say_pid)
        .check(|o| {
            o.assert_success("quiet");
            assert!(!o.stderr.contains("fortalloc: statistics"), "{}", o.stderr);
        });
}
