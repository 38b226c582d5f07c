//! fortalloc: a general-purpose allocator following mimalloc's design
//! (thread-local heaps, free-list sharding, segments of pages).
//!
//! ```
//! use fortalloc::FortAlloc;
//! #[global_allocator]
//! static GLOBAL: FortAlloc = FortAlloc;
//! ```
//!
//! The core is `no_std`; std supplies only the thread-local slot of the
//! heap pointer (a const-initialised `thread_local!`, which neither
//! allocates nor registers a destructor).

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
