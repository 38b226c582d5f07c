//! Reporting and ending the process without allocating or unwinding.

/// Writes all of `msg` to stderr with raw `write(2)` calls.
pub fn write_stderr(msg: &[u8]) {
    write_fd(2, msg);
}

/// Writes all of `msg` to file descriptor `fd` with raw `write(2)` calls.
pub fn write_fd(fd: i32, msg: &[u8]) {
    let mut rest = msg;
    while !rest.is_empty() {
        // SAFETY: `rest` is a valid readable slice for its whole length.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            // EINTR is retried; anything else means stderr is gone and there
            // is nobody left to tell.
            // SAFETY: reading errno has no preconditions.
            if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}

/// Ends the process with SIGABRT. Never unwinds.
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// Lets another thread run; used by spin locks under contention.
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}
