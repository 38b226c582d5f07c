//! Introspection: `malloc_usable_size`, `malloc_trim`, `mallinfo2`,
//! `mallinfo`, and fortalloc's own `fortalloc_print_stats`.

use core::ffi::{c_int, c_void};

/// Usable bytes of the block at `p` (0 for null).
///
/// # Safety
/// `p` must be null or a live pointer from this library.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::usable_size(p.cast()) }
}

/// Returns cached memory to the OS; 1 ("some memory may have been
/// released"), as glibc says when it could.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(_pad: usize) -> c_int {
    fortalloc::collect(true);
    1
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Mallinfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's `struct mallinfo` (int fields, truncated as glibc truncates).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Mallinfo {
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

/// fortalloc's figures in glibc's terms: `arena` and `uordblks` are the
/// bytes of pages holding blocks (small to large), `ordblks` those pages,
/// `hblks`/`hblkhd` the huge objects (fortalloc's own mappings),
/// `usmblks` the peak of bytes in use, `fordblks` reserved address space
/// not in use.
fn figures() -> Mallinfo2 {
    let s = fortalloc::stats();
    let pages_bytes = s.bytes_in_use.current.saturating_sub(s.huge_bytes.current) as usize;
    Mallinfo2 {
        arena: pages_bytes,
        ordblks: s.pages.current as usize,
        smblks: 0,
        hblks: s.huge.current as usize,
        hblkhd: s.huge_bytes.current as usize,
        usmblks: s.bytes_in_use.peak as usize,
        fsmblks: 0,
        uordblks: pages_bytes,
        fordblks: s.reserved_bytes.current.saturating_sub(s.bytes_in_use.current) as usize,
        keepcost: 0,
    }
}

/// glibc `mallinfo2`.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn mallinfo2() -> Mallinfo2 {
    figures()
}

/// glibc `mallinfo` (deprecated; int fields).
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn mallinfo() -> Mallinfo {
    let f = figures();
    let i = |v: usize| v.min(c_int::MAX as usize) as c_int;
    Mallinfo {
        arena: i(f.arena),
        ordblks: i(f.ordblks),
        smblks: 0,
        hblks: i(f.hblks),
        hblkhd: i(f.hblkhd),
        usmblks: i(f.usmblks),
        fsmblks: 0,
        uordblks: i(f.uordblks),
        fordblks: i(f.fordblks),
        keepcost: 0,
    }
}

/// Prints fortalloc's statistics table to stderr (no allocation).
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn fortalloc_print_stats() {
    fortalloc::print_stats();
}
