//! fortalloc as a C library: `malloc`, `free` and the rest of the C and
//! POSIX allocation API, glibc's internal aliases, and the C++ `new` and
//! `delete` operators, with the exact error conventions of glibc (`NULL`
//! and `errno = ENOMEM`, or a returned `EINVAL`).
//!
//! Build: `cargo build --release -p fortalloc-capi` writes
//! `target/release/libfortalloc.so` (for `LD_PRELOAD` or linking) and
//! `libfortalloc.a`. `include/fortalloc.h` declares the exports that the
//! C library's own headers may lack (`fortalloc_print_stats`, the C23
//! sized frees, ...); `tests/c_programs.rs` keeps it compiling. Nothing here allocates through the exported `malloc`
//! while starting: the library's own Rust code uses fortalloc directly as
//! its global allocator.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod aligned;
mod cxx;
mod errno;
mod glibc;
mod info;
mod malloc;

#[global_allocator]
static GLOBAL: fortalloc::FortAlloc = fortalloc::FortAlloc;
