//! A pthread key whose destructor tells fortalloc that a thread is exiting.
//! glibc's pthread_key_create does not allocate, and pthread_setspecific
//! allocates (through calloc) only for keys past the first 32, a case the
//! caller tolerates because it sets the thread's heap before calling it.

/// Creates a key whose destructor is `dtor`. Returns `None` if the process
/// ran out of keys.
pub fn thread_key_create(dtor: unsafe extern "C" fn(*mut libc::c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer and `dtor` is a valid function.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(dtor)) };
    (rc == 0).then_some(key)
}

/// Sets this thread's value for `key`, so the destructor runs at its exit
/// (only for non-null values).
pub fn thread_key_set(key: libc::pthread_key_t, value: *mut libc::c_void) {
    // SAFETY: `key` came from pthread_key_create; the value is opaque to libc.
    unsafe {
        libc::pthread_setspecific(key, value);
    }
}
