//! Aligned allocation: `posix_memalign`, `aligned_alloc`, `memalign`,
//! `valloc`, `pvalloc`, with glibc's rules for bad alignments.

use core::ffi::{c_int, c_void};

use crate::errno::{self, enomem};
use crate::malloc::C_ALIGN;

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as usize
    } else {
        4096
    }
}

/// POSIX `posix_memalign`: EINVAL unless `align` is a power of two multiple
/// of `sizeof(void*)`; ENOMEM when out of memory; `*memptr` is written only
/// on success.
///
/// # Safety
/// `memptr` must be valid for a pointer-sized write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let p = fortalloc::malloc_aligned(size, align.max(C_ALIGN));
    if p.is_null() {
        // glibc leaves errno at ENOMEM too.
        errno::set(libc::ENOMEM);
        return libc::ENOMEM;
    }
    // SAFETY: per the caller.
    unsafe { *memptr = p.cast() };
    0
}

/// C `aligned_alloc`: NULL and EINVAL unless `align` is a power of two (as
/// glibc 2.38+); any size.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        errno::set(libc::EINVAL);
        return core::ptr::null_mut();
    }
    let p = fortalloc::malloc_aligned(size, align.max(C_ALIGN));
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// glibc `memalign`: an alignment that is not a power of two is rounded up
/// to one; one too large for that gives NULL and EINVAL.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        errno::set(libc::EINVAL);
        return core::ptr::null_mut();
    }
    let align = align.max(1).next_power_of_two();
    let p = fortalloc::malloc_aligned(size, align.max(C_ALIGN));
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// `valloc`: page-aligned.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    // SAFETY: no preconditions.
    unsafe { memalign(page_size(), size) }
}

/// `pvalloc`: page-aligned, size rounded up to whole pages (ENOMEM if that
/// overflows).
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let ps = page_size();
    let Some(rounded) = size.checked_add(ps - 1).map(|s| s & !(ps - 1)) else {
        return enomem();
    };
    // SAFETY: no preconditions.
    unsafe { memalign(ps, rounded.max(ps)) }
}
