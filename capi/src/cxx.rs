//! The C++ allocation operators (Itanium ABI names), so C++ programs run on
//! fortalloc under `LD_PRELOAD` and sized deletes reach `free_sized`, where
//! the hardened build checks the size.
//!
//! A throwing `new` that cannot allocate calls the program's new-handler
//! (found through `std::get_new_handler`) and retries, as the standard
//! says. Rust cannot throw `std::bad_alloc`, so when no handler is
//! installed it prints one line and aborts; the `nothrow` forms return
//! NULL.

use core::ffi::c_void;

type NewHandler = Option<unsafe extern "C" fn()>;

/// The program's current new-handler, if it is a C++ program that has one.
fn new_handler() -> NewHandler {
    // SAFETY: dlsym with RTLD_DEFAULT and a constant, null-terminated name.
    let getter = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_ZSt15get_new_handlerv".as_ptr()) };
    if getter.is_null() {
        return None;
    }
    // SAFETY: `std::get_new_handler` takes nothing and returns a function
    // pointer (or null), which `NewHandler` represents.
    unsafe {
        let getter: unsafe extern "C" fn() -> NewHandler = core::mem::transmute(getter);
        getter()
    }
}

/// Every `operator new`: the fast path inline, the rest (and the
/// new-handler loop) out of line, as for `malloc`.
#[inline(always)]
fn new_impl(size: usize, align: usize, nothrow: bool) -> *mut c_void {
    let p = fortalloc::malloc_aligned_fast(size, align);
    if !p.is_null() {
        return p.cast();
    }
    new_slow(size, align, nothrow)
}

#[inline(never)]
fn new_slow(size: usize, align: usize, nothrow: bool) -> *mut c_void {
    loop {
        let p = fortalloc::malloc_aligned(size, align);
        if !p.is_null() {
            return p.cast();
        }
        if nothrow {
            crate::errno::set(libc::ENOMEM);
            return core::ptr::null_mut();
        }
        match new_handler() {
            // SAFETY: the program installed it to be called exactly so.
            Some(h) => unsafe { h() },
            None => {
                let msg = b"fortalloc: operator new: out of memory (and no new-handler; cannot throw std::bad_alloc)\n";
                // SAFETY: a valid buffer; abort never returns.
                unsafe {
                    libc::write(2, msg.as_ptr().cast(), msg.len());
                    libc::abort();
                }
            }
        }
    }
}

/// `operator new(size_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _Znwm(size: usize) -> *mut c_void {
    new_impl(size, 16, false)
}

/// `operator new[](size_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _Znam(size: usize) -> *mut c_void {
    new_impl(size, 16, false)
}

/// `operator new(size_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _ZnwmRKSt9nothrow_t(size: usize, _tag: *const c_void) -> *mut c_void {
    new_impl(size, 16, true)
}

/// `operator new[](size_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _ZnamRKSt9nothrow_t(size: usize, _tag: *const c_void) -> *mut c_void {
    new_impl(size, 16, true)
}

/// `operator new(size_t, std::align_val_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _ZnwmSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_impl(size, align, false)
}

/// `operator new[](size_t, std::align_val_t)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _ZnamSt11align_val_t(size: usize, align: usize) -> *mut c_void {
    new_impl(size, align, false)
}

/// `operator new(size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _tag: *const c_void,
) -> *mut c_void {
    new_impl(size, align, true)
}

/// `operator new[](size_t, std::align_val_t, const std::nothrow_t&)`.
///
/// # Safety
/// Callable from C++ at any time.
#[no_mangle]
pub unsafe extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    size: usize,
    align: usize,
    _tag: *const c_void,
) -> *mut c_void {
    new_impl(size, align, true)
}

/// Unsized deletes: plain, array, nothrow, aligned.
macro_rules! delete_unsized {
    ($($name:ident($($extra:ident: $ty:ty),*);)*) => {$(
        /// A C++ `operator delete` variant without a size.
        ///
        /// # Safety
        /// `p` must be null or a live pointer from this library.
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void, $(_ : $ty),*) {
            // SAFETY: forwarded from the caller.
            unsafe { fortalloc::free(p.cast()) }
        }
    )*};
}

delete_unsized! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvRKSt9nothrow_t(tag: *const c_void);
    _ZdaPvRKSt9nothrow_t(tag: *const c_void);
    _ZdlPvSt11align_val_t(align: usize);
    _ZdaPvSt11align_val_t(align: usize);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(align: usize, tag: *const c_void);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(align: usize, tag: *const c_void);
}

/// `operator delete(void*, size_t)`: the hardened build checks the size.
///
/// # Safety
/// `p` must be null or a live pointer from this library of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvm(p: *mut c_void, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, 16) }
}

/// `operator delete[](void*, size_t)`.
///
/// # Safety
/// As for [`_ZdlPvm`].
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvm(p: *mut c_void, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, 16) }
}

/// `operator delete(void*, size_t, std::align_val_t)`.
///
/// # Safety
/// As for [`_ZdlPvm`], allocated with that alignment.
#[no_mangle]
pub unsafe extern "C" fn _ZdlPvmSt11align_val_t(p: *mut c_void, size: usize, align: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, align) }
}

/// `operator delete[](void*, size_t, std::align_val_t)`.
///
/// # Safety
/// As for [`_ZdlPvmSt11align_val_t`].
#[no_mangle]
pub unsafe extern "C" fn _ZdaPvmSt11align_val_t(p: *mut c_void, size: usize, align: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { fortalloc::free_sized(p.cast(), size, align) }
}
