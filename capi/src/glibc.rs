//! glibc's internal names for its allocation functions, which some
//! programs and libraries call directly.

use core::ffi::{c_int, c_void};

/// # Safety
/// As for `malloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { crate::malloc::malloc(size) }
}

/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { crate::malloc::free(p) }
}

/// # Safety
/// As for `calloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_calloc(nmemb: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { crate::malloc::calloc(nmemb, size) }
}

/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { crate::malloc::realloc(p, size) }
}

/// # Safety
/// As for `memalign`.
#[no_mangle]
pub unsafe extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { crate::aligned::memalign(align, size) }
}

/// # Safety
/// As for `valloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { crate::aligned::valloc(size) }
}

/// # Safety
/// As for `pvalloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { crate::aligned::pvalloc(size) }
}

/// # Safety
/// As for `posix_memalign`.
#[no_mangle]
pub unsafe extern "C" fn __posix_memalign(memptr: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: forwarded.
    unsafe { crate::aligned::posix_memalign(memptr, align, size) }
}
