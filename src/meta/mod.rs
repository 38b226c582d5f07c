//! Shared types and layout arithmetic: what a block, a page descriptor and
//! a segment header look like, the size classes, the constants of the
//! geometry, the intrusive list their links form, the guard-layout record,
//! and the segment map (which address ranges hold segments: the one
//! lookup both the allocator and the defences make on a pointer they may
//! not own). Everything here is plain data and address arithmetic; it
//! imports nothing from the allocator above it (`core`) or from the
//! defences (`harden`), which both build on it.

pub mod constants;
pub mod guards;
pub mod list;
pub mod page;
pub mod segment;
pub mod segment_map;
pub mod size_class;
