//! The bottom layer: the only part of fortalloc that talks to the kernel
//! (or to libc on its behalf), and the primitives built right on it, the
//! spin lock and the thread-local slot. It imports nothing above it;
//! everything above is memory arithmetic.
//!
//! Each function here is a thin, allocation-free wrapper: failures are
//! reported as null pointers or `false`, never as panics, and never
//! through `errno`, which every call leaves as it found it: all calls to
//! the C library go through `sys.rs`, which keeps it.

mod guard;
pub mod lock;
mod memory;
mod process;
mod random;
mod sys;
mod thread;
mod time;
pub mod tls;

pub use guard::{
    force_mprotect_guards, guard, guard_counts, guards_split_mappings, mark, seal, set_map_budget, unguard,
    unmark, Guarded,
};
pub use memory::{
    advise_huge_pages, map, map_aligned, map_aligned_at_hint, map_aligned_offset, memory_counts, page_size,
    protect, purge, residency, set_huge_pages, touch_for_write, unmap,
};
pub use process::{
    abort, dup_for_exit, loaded_from, process_id, program_name, resident_bytes, write_fd, write_stderr,
    yield_now,
};
pub use random::random_u64;
pub use thread::{at_fork_child, thread_key_create, thread_key_set, thread_token};
pub use time::{claim_due, now_ms, recent_ms};
