//! The fuzz targets' logic, as library functions taking an
//! `arbitrary::Unstructured`, so the same code runs under libFuzzer
//! (`cargo +nightly fuzz run <target>`) and under `cargo test` on stable
//! with seeded random bytes (tests/ at the bottom of each module).
//!
//! The harness's own data (the shadow model) lives on the system
//! allocator; only the blocks under test come from fortalloc's API.

#![warn(clippy::undocumented_unsafe_blocks)]

pub mod capi;
pub mod corrupt;
mod model;
pub mod ops;

/// The quarantine's bounds for one input (builds with the `quarantine`
/// feature; a no-op in others): off (freed blocks go straight to free
/// lists), the default, or tiny (a block leaves it, checked, after a few
/// more frees).
pub fn quarantine_for(choice: u8) {
    match choice % 3 {
        0 => fortalloc::set_quarantine(0, 0),
        1 => fortalloc::set_quarantine(512 * 1024, 1024),
        _ => fortalloc::set_quarantine(16 * 1024, 4),
    }
}
