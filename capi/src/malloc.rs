//! The C allocation functions: `malloc`, `calloc`, `realloc`,
//! `reallocarray`, `free`, `cfree`, `free_sized`, `free_aligned_sized`.

use core::ffi::c_void;

use crate::errno::enomem;

/// The alignment of every block the C library hands out: `max_align_t`'s
/// 16 bytes, whatever the size, as glibc gives (and its tests check) on
/// x86_64. C only requires it for blocks of more than 8 bytes (mimalloc
/// and jemalloc give 8-byte blocks 8), but programs built against glibc
/// may rely on it; it costs tiny blocks their 8-byte size class
/// (docs/PERFORMANCE.md, "16-byte alignment for every C block", has the
/// measurement). fortalloc's Rust API keeps 8: `Layout` says what each
/// allocation needs.
pub const C_ALIGN: usize = 16;

/// C `malloc`: `malloc(0)` returns a unique pointer that can be freed.
///
/// # Safety
/// Callable from C at any time.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let p = fortalloc::malloc_aligned_fast(size, C_ALIGN);
    if !p.is_null() {
        return p.cast();
    }
    malloc_slow(size)
}

/// The rest of `malloc`, out of line: it calls on and then looks at the
/// result, which needs a stack frame that the fast path then does not.
#[inline(never)]
fn malloc_slow(size: usize) -> *mut c_void {
    let p = fortalloc::malloc_aligned(size, C_ALIGN);
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
    let p = fortalloc::zalloc_aligned(total, C_ALIGN);
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
    let q = unsafe { fortalloc::realloc_aligned(p.cast(), size, C_ALIGN) };
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
    unsafe { fortalloc::free_sized(p.cast(), size, C_ALIGN) }
}

/// C23 `free_aligned_sized`, for blocks from `aligned_alloc(align, size)`.
///
/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, align: usize, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, align.max(C_ALIGN)) }
}
