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

/// Every row of the table is documented in docs/USAGE.md ("Statistics"),
/// byte figures carry a unit, and the line after the heading points at
/// the legend.
#[test]
fn the_table_labels_its_rows_and_units() {
    let usage =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/USAGE.md")).expect("USAGE.md");
    let legend = usage.split("## Statistics").nth(1).expect("a Statistics section");
    child("table-labels")
        .env("FORTALLOC_SHOW_STATS", "1")
        .run(allocate_and_say_pid)
        .check(|o| {
            o.assert_success("table-labels");
            let table: Vec<&str> = o
                .stderr
                .lines()
                .filter_map(|l| l.strip_prefix("fortalloc: "))
                .skip_while(|l| !l.starts_with("statistics of process "))
                .collect();
            assert!(
                table[1].contains("explained in docs/USAGE.md, \"Statistics\""),
                "{}",
                table[1]
            );
            let rows: Vec<(&str, &str)> = table[2..]
                .iter()
                .map(|l| {
                    l.split_once("  ")
                        .map(|(n, v)| (n, v.trim()))
                        .expect("name and value")
                })
                .collect();
            assert!(rows.len() >= 13, "{rows:?}");
            for (name, _) in &rows {
                assert!(
                    legend.contains(&format!("| `{name}` |")),
                    "row `{name}` not in USAGE.md"
                );
            }
            let unit = |v: &str| {
                let words: Vec<&str> = v.split([' ', ',']).collect();
                words
                    .windows(2)
                    .any(|w| w[0].parse::<f64>().is_ok() && ["B", "KiB", "MiB", "GiB", "TiB"].contains(&w[1]))
            };
            for byte_row in [
                "memory of fortalloc",
                "process resident",
                "address space reserved",
                "returned to the OS",
            ] {
                let (_, v) = rows
                    .iter()
                    .find(|(n, _)| *n == byte_row)
                    .unwrap_or_else(|| panic!("no `{byte_row}` row"));
                assert!(unit(v), "`{byte_row}` has no unit: {v}");
                assert!(
                    !v.split_whitespace()
                        .any(|w| w.len() > 6 && w.parse::<u64>().is_ok()),
                    "`{byte_row}` prints raw bytes: {v}"
                );
            }
        });
}
