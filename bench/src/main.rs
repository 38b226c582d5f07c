//! `cargo run --release -p fortalloc-bench -- [--runs N] [--only w1,w2] [--alloc a,b] [--quick]`
//!
//! Builds one worker binary per allocator, runs every workload under every allocator
//! round-robin, and prints a markdown table of median time, ratio to mimalloc and peak RSS.

use std::process::ExitCode;

fn main() -> ExitCode {
    fortalloc_bench::driver::main()
}
