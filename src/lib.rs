//! fortalloc: a general-purpose memory allocator following mimalloc's
//! design (thread-local heaps, free-list sharding, segments of pages), with
//! a hardened build whose defences are Cargo features.
//!
//! # Use it
//!
//! ```
//! use fortalloc::FortAlloc;
//! #[global_allocator]
//! static GLOBAL: FortAlloc = FortAlloc;
//! ```
//!
//! Every allocation of the program then comes from fortalloc. The same
//! allocator is a C library (`capi/`: `LD_PRELOAD=libfortalloc.so` for any
//! Linux program) and a launcher (`fortalloc -- program`).
//!
//! # Pick a build
//!
//! - **plain** (the default): the fast build. It reports a free of a
//!   pointer it never handed out, and an impossible size or alignment.
//! - **`features = ["secure"]`**: the hardened build recommended to services,
//!   at about mimalloc's secure mode's cost: guard pages, encoded free lists,
//!   random allocation order, precise double-free detection, overflow
//!   canaries and a quarantine of freed blocks.
//! - **`features = ["secure-max"]`**: every defence, for a larger budget: also
//!   underflow trailers, wiping freed blocks and checking them at reuse, and
//!   freed large blocks inaccessible at once.
//!
//! Each defence is also a feature of its own. What each catches and costs,
//! and the threat model: SECURITY.md in the repository.
//!
//! # Options and statistics
//!
//! `FORTALLOC_*` environment variables are read at start (`FORTALLOC_PURGE_DELAY`,
//! `FORTALLOC_SHOW_STATS`, `FORTALLOC_VERBOSE`, the quarantine's bounds, ...);
//! [`set_purge_delay_ms`], [`set_quarantine`] and [`set_huge_pages`] set them
//! from code. [`stats()`] returns the counters and [`print_stats`] prints them
//! as a table; docs/USAGE.md lists the variables and explains every row.
//! [`set_error_handler`] lets a program see a reported misuse before the
//! process aborts.
//!
//! # How it is built
//!
//! The crate is `no_std` inside; std supplies only the thread-local slot of
//! the heap pointer (a const-initialised `thread_local!`, which neither
//! allocates nor registers a destructor). Nothing in the allocator
//! allocates, panics or unwinds. The layers and their rules:
//! docs/ARCHITECTURE.md.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::std_instead_of_core, clippy::undocumented_unsafe_blocks)]

extern crate std;

mod core;
mod error;
mod harden;
mod meta;
mod options;
mod os;
mod stats;

// `::core` is the language's core crate; `crate::core` (below) is ours.
use ::core::alloc::{GlobalAlloc, Layout};

#[doc(hidden)]
pub use crate::core::alloc::malloc_aligned_fast;
pub use crate::core::alloc::{
    collect, free, free_sized, malloc, malloc_aligned, realloc, realloc_aligned, usable_size, zalloc,
    zalloc_aligned,
};
pub use crate::core::thread::{print_stats, stats};
pub use error::{set_error_handler, ErrorHandler, ErrorInfo, ErrorKind};
pub use options::{set_purge_delay_ms, set_quarantine, set_quarantine_process};
pub use os::set_huge_pages;
pub use stats::{GaugeValue, Stats};

/// The allocator, for `#[global_allocator]`.
pub struct FortAlloc;

// SAFETY: every method forwards to fortalloc's entry points, which return
// blocks of at least `layout.size()` bytes aligned to `layout.align()` (or
// null), and accept back exactly the pointers they returned.
unsafe impl GlobalAlloc for FortAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= meta::constants::MIN_ALIGN {
            malloc(layout.size())
        } else {
            // Alignments up to 16 stay on malloc's fast path (see
            // `alloc::aligned`): Rust asks for them often (`u128`, SIMD).
            crate::core::alloc::aligned(layout.size(), layout.align(), false)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from this allocator.
        unsafe { free(ptr) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= meta::constants::MIN_ALIGN {
            zalloc(layout.size())
        } else {
            crate::core::alloc::aligned(layout.size(), layout.align(), true)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `ptr` is live, from this allocator,
        // allocated with `layout`.
        unsafe { realloc_aligned(ptr, new_size, layout.align()) }
    }
}
