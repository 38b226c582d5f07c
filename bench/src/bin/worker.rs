//! The worker: runs one workload under the global allocator chosen by its `alloc-*` feature
//! and prints `time_ns=<n> peak_rss_kb=<n>` on stdout (the latency workload adds its
//! percentiles on a second line: see `fortalloc_bench::latency`). Exits 2 on bad arguments and
//! 3 when the workload finds its data corrupted.
//!
//! Usage: `worker <workload> <scale>`, `worker --which` (prints the allocator's name), or
//! `worker --selftest-corruption` (overwrites a block's stamp: must exit 3, as the tests check).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use fortalloc_bench::block::Block;
use fortalloc_bench::latency;
use fortalloc_bench::rss::{minor_faults, peak_rss_kb};
use fortalloc_bench::workloads;

const SELECTED: usize = cfg!(feature = "alloc-fortalloc") as usize
    + cfg!(feature = "alloc-fortalloc-secure") as usize
    + cfg!(feature = "alloc-fortalloc-secure-max") as usize
    + cfg!(feature = "alloc-system") as usize
    + cfg!(feature = "alloc-mimalloc") as usize
    + cfg!(feature = "alloc-mimalloc-v2") as usize
    + cfg!(feature = "alloc-mimalloc-secure") as usize
    + cfg!(feature = "alloc-jemalloc") as usize
    + cfg!(feature = "alloc-snmalloc") as usize;
const _: () = assert!(
    matches!(SELECTED, 0 | 1),
    "enable at most one alloc-* feature of fortalloc-bench"
);

#[cfg(any(
    feature = "alloc-fortalloc",
    feature = "alloc-fortalloc-secure",
    feature = "alloc-fortalloc-secure-max"
))]
#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;
#[cfg(feature = "alloc-fortalloc")]
const ALLOCATOR: &str = "fortalloc";
#[cfg(feature = "alloc-fortalloc-secure")]
const ALLOCATOR: &str = "fortalloc-secure";
#[cfg(feature = "alloc-fortalloc-secure-max")]
const ALLOCATOR: &str = "fortalloc-secure-max";

#[cfg(feature = "alloc-system")]
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;
#[cfg(any(
    feature = "alloc-system",
    not(any(
        feature = "alloc-fortalloc",
        feature = "alloc-fortalloc-secure",
        feature = "alloc-fortalloc-secure-max",
        feature = "alloc-mimalloc",
        feature = "alloc-mimalloc-v2",
        feature = "alloc-mimalloc-secure",
        feature = "alloc-jemalloc",
        feature = "alloc-snmalloc"
    ))
))]
const ALLOCATOR: &str = "system";

#[cfg(any(
    feature = "alloc-mimalloc",
    feature = "alloc-mimalloc-v2",
    feature = "alloc-mimalloc-secure"
))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "alloc-mimalloc")]
const ALLOCATOR: &str = "mimalloc-v3";
#[cfg(feature = "alloc-mimalloc-v2")]
const ALLOCATOR: &str = "mimalloc-v2";
#[cfg(feature = "alloc-mimalloc-secure")]
const ALLOCATOR: &str = "mimalloc-secure";

#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(feature = "alloc-jemalloc")]
const ALLOCATOR: &str = "jemalloc";

#[cfg(feature = "alloc-snmalloc")]
#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;
#[cfg(feature = "alloc-snmalloc")]
const ALLOCATOR: &str = "snmalloc";

fn usage() -> ExitCode {
    eprintln!("usage: worker <workload> <scale> | worker --which | worker --selftest-corruption");
    eprintln!("workloads:");
    for w in workloads::ALL {
        eprintln!("  {:<14} {}", w.name, w.about);
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--which" => {
            println!("{ALLOCATOR}");
            ExitCode::SUCCESS
        }
        [flag] if flag == "--selftest-corruption" => {
            let mut block = Block::new(64, 0x0123_4567_89ab_cdef);
            block.poke(0, !block.peek(0));
            drop(block);
            eprintln!("worker: the damaged stamp went unnoticed");
            ExitCode::FAILURE
        }
        [name, scale] => {
            let Some(workload) = workloads::find(name) else {
                return usage();
            };
            let Ok(scale) = scale.parse::<f64>() else {
                return usage();
            };
            if !(scale > 0.0 && scale.is_finite()) {
                return usage();
            }
            let start = Instant::now();
            let checksum = (workload.run)(black_box(scale));
            let elapsed = start.elapsed();
            black_box(checksum);
            println!(
                "time_ns={} peak_rss_kb={} minflt={} alloc={ALLOCATOR}",
                elapsed.as_nanos(),
                peak_rss_kb(),
                minor_faults()
            );
            // A latency workload's percentiles, on a line of their own.
            if let Some(latency) = latency::take_report() {
                println!("{}", latency.line(latency::Clock::NAME));
            }
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
