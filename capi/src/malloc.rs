//! The C allocation functions: `malloc`, `calloc`, `realloc`,
//! `reallocarray`, `free`, `cfree`, `free_sized`, `free_aligned_sized`.

use core::ffi::c_void;

use crate::errno::enomem;

/// The alignment C promises for a block of `size` bytes: enough for any
/// object that fits, i.e. `max_align_t`'s 16 bytes once the size exceeds 8
/// (compilers assume it: GCC emits 16-byte aligned vector stores into
/// `malloc`ed memory). fortalloc's Rust API only promises 8.
#[inline(always)]
pub fn c_align(size: usize) -> usize {
    if size <= 8 {
        8
    } else {
        16
    }
}

/// C `malloc`: `malloc(0)` returns a unique pointer that can be freed.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let p = fortalloc::malloc_aligned(size, c_align(size));
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// C `calloc`: zeroed; an overflowing `nmemb * size` gives NULL and ENOMEM.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn calloc(nmemb: usize, size: usize) -> *mut c_void {
    let Some(total) = nmemb.checked_mul(size) else {
        return enomem();
    };
    let p = fortalloc::zalloc_aligned(total, c_align(total));
    if p.is_null() {
        return enomem();
    }
    p.cast()
}

/// C `realloc`, as glibc: a null `p` allocates; size 0 with a non-null `p`
/// frees it and returns NULL; on failure `p` is untouched and ENOMEM set.
///
/// # Safety
/// `p` must be null or a live pointer from this library.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if !p.is_null() && size == 0 {
        // SAFETY: `p` is live per the caller.
        unsafe { fortalloc::free(p.cast()) };
        return core::ptr::null_mut();
    }
    // SAFETY: `p` is null or live per the caller.
    let q = unsafe { fortalloc::realloc_aligned(p.cast(), size, c_align(size)) };
    if q.is_null() {
        return enomem();
    }
    q.cast()
}

/// `reallocarray`: `realloc(p, nmemb * size)` with overflow giving NULL and
/// ENOMEM (and `p` untouched).
///
/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, nmemb: usize, size: usize) -> *mut c_void {
    match nmemb.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(total) => unsafe { realloc(p, total) },
        None => enomem(),
    }
}

/// C `free`: null is a no-op.
///
/// # Safety
/// `p` must be null or a live pointer from this library.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free(p.cast()) }
}

/// The old SunOS name of `free`, still exported by glibc.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free(p.cast()) }
}

/// C23 `free_sized`: `size` must be what `p` was allocated with (the
/// hardened build checks it).
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, c_align(size)) }
}

/// C23 `free_aligned_sized`, for blocks from `aligned_alloc(align, size)`.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, align) }
}
