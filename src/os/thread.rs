//! Threads as fortalloc sees them: a token naming the calling thread, a
//! pthread key whose destructor tells fortalloc that a thread is exiting,
//! and the `fork` hook.
//!
//! glibc's pthread_key_create does not allocate, and pthread_setspecific
//! allocates (through calloc) only for keys past the first 32, a case the
//! caller tolerates because it sets the thread's heap before calling it.

use super::sys;

/// A non-zero number naming the calling thread among the live threads of
/// this process (its `pthread_self`, the address of its thread control
/// block). After `fork` the child's one thread keeps the forking thread's
/// token. Cheap: a load from the thread pointer, no system call.
#[inline]
pub fn thread_token() -> usize {
    sys::pthread_self()
}

/// Creates a key whose destructor is `dtor`. Returns `None` if the process
/// ran out of keys.
pub fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
    sys::pthread_key_create(dtor)
}

/// Sets this thread's value for `key`, so the destructor runs at its exit
/// (only for non-null values).
pub fn thread_key_set(key: libc::pthread_key_t, value: *mut libc::c_void) {
    sys::pthread_setspecific(key, value);
}

/// Has `child` run in the child process after every `fork` (not after
/// `vfork`, `posix_spawn` or a raw `clone`, whose children must not
/// allocate). No prepare or parent handler: see `crate::core::fork` for why.
/// Returns false if libc refused (out of memory).
pub fn at_fork_child(child: unsafe extern "C" fn()) -> bool {
    sys::pthread_atfork_child(child)
}
