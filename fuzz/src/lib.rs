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
