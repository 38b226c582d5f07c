//! fortalloc's benchmark harness.
//!
//! - `worker` (src/bin/worker.rs) runs one workload under the global allocator picked by its
//!   `alloc-*` feature and prints `time_ns=<n> peak_rss_kb=<n>`.
//! - `fortalloc-bench` (src/main.rs, the driver) builds one worker per allocator, runs them
//!   round-robin and prints a markdown table. `cargo run --release -p fortalloc-bench -- --help`.
//! - `cbench` (src/bin/cbench.rs) runs C workloads and real programs under `LD_PRELOAD` with
//!   fortalloc's C library, Debian's libmimalloc and libjemalloc, and glibc.
//! - `instr` (src/bin/instr.rs) counts instructions under cachegrind per defence: each preset,
//!   a cumulative ladder of defences and each defence alone, against mimalloc-secure.

pub mod block;
pub mod cbench;
pub mod driver;
pub mod instr;
pub mod latency;
pub mod rss;
pub mod verify;
pub mod workloads;
