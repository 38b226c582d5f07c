//! Setting `errno` the way the C library's allocation functions do.

/// Sets `errno` to `ENOMEM` and returns null: every allocation failure.
#[inline]
pub fn enomem<T>() -> *mut T {
    set(libc::ENOMEM);
    core::ptr::null_mut()
}

/// Sets `errno`.
#[inline]
pub fn set(code: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot,
    // valid for the thread's life.
    unsafe { *libc::__errno_location() = code };
}
