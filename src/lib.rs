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

mod alloc;
mod arena;
mod constants;
mod error;
mod fork;
mod harden;
mod heap;
mod huge;
mod lock;
mod options;
mod os;
mod page;
mod page_queue;
mod segment;
mod segment_map;
mod size_class;
mod stats;
mod thread;

use core::alloc::{GlobalAlloc, Layout};

pub use alloc::{
    collect, free, malloc, malloc_aligned, realloc, realloc_aligned, usable_size, zalloc, zalloc_aligned,
};
pub use fork::{fork_child, fork_parent, fork_prepare};
pub use options::set_purge_delay_ms;
pub use os::set_huge_pages;
pub use stats::{print_stats, stats, GaugeValue, Stats};

/// The size rounded up to a multiple of the alignment: for alignments up to
/// [`constants::SIZE_ALIGN_MAX`] every block of such a size is aligned (see
/// `size_class::natural_size_for_align`), so these take malloc's fast path.
/// Rust asks for 16-byte alignment often (`u128`, SIMD types, `Layout`s
/// copied from C's `max_align_t`).
#[inline(always)]
fn round_to_align(layout: Layout) -> usize {
    // Cannot overflow: a Layout's size rounded up to its alignment is at
    // most isize::MAX.
    (layout.size() + layout.align() - 1) & !(layout.align() - 1)
}

/// The allocator, for `#[global_allocator]`.
pub struct FortAlloc;

// SAFETY: every method forwards to fortalloc's entry points, which return
// blocks of at least `layout.size()` bytes aligned to `layout.align()` (or
// null), and accept back exactly the pointers they returned.
unsafe impl GlobalAlloc for FortAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= constants::MIN_ALIGN {
            malloc(layout.size())
        } else if layout.align() <= constants::SIZE_ALIGN_MAX {
            malloc(round_to_align(layout))
        } else {
            malloc_aligned(layout.size(), layout.align())
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from this allocator.
        unsafe { free(ptr) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= constants::MIN_ALIGN {
            zalloc(layout.size())
        } else if layout.align() <= constants::SIZE_ALIGN_MAX {
            zalloc(round_to_align(layout))
        } else {
            zalloc_aligned(layout.size(), layout.align())
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `ptr` is live, from this allocator,
        // allocated with `layout`.
        unsafe { realloc_aligned(ptr, new_size, layout.align()) }
    }
}
