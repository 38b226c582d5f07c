//! The process: reporting, naming it and ending it without allocating or
//! unwinding.

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

/// The calling process's id: a `fork` child's own, not its parent's.
pub fn process_id() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Fills `buf` with the program's name, so output can say which process
/// it comes from, and returns the name's length (0 without `/proc`). The
/// name is `argv[0]` as `/proc/self/cmdline` has it, or the kernel's short
/// name in `/proc/self/comm` where `argv[0]` is empty; cut at `buf`'s end.
/// errno is kept: a program may print statistics between a failed call
/// and its look at errno.
pub fn program_name(buf: &mut [u8]) -> usize {
    // SAFETY: reading errno has no preconditions.
    let saved = unsafe { *libc::__errno_location() };
    let upto = |buf: &[u8], n: usize, end: u8| {
        let read = buf.get(..n).unwrap_or(&[]);
        read.iter().position(|&b| b == end).unwrap_or(read.len())
    };
    let read = read_file(c"/proc/self/cmdline", buf);
    let mut n = upto(buf, read, 0);
    if n == 0 {
        let read = read_file(c"/proc/self/comm", buf);
        n = upto(buf, read, b'\n');
    }
    // SAFETY: errno is this thread's, writable at any time.
    unsafe { *libc::__errno_location() = saved };
    n
}

/// The process's resident memory now and at its peak, in bytes, as the
/// kernel counts it (`/proc/self/statm`, `getrusage`), for the
/// statistics: what the process costs in memory, fortalloc's and
/// everyone else's. 0 where the kernel does not say. errno is kept.
pub fn resident_bytes() -> (u64, u64) {
    // SAFETY: reading errno has no preconditions.
    let saved = unsafe { *libc::__errno_location() };
    let mut buf = [0u8; 128];
    let n = read_file(c"/proc/self/statm", &mut buf);
    // The second field: resident pages.
    let pages = buf[..n].split(|&b| b == b' ').nth(1).map_or(0, |f| {
        f.iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'))
    });
    // SAFETY: `usage` is a valid, writable rusage.
    let peak_kib = unsafe {
        let mut usage: libc::rusage = core::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0 {
            usage.ru_maxrss.max(0) as u64
        } else {
            0
        }
    };
    // SAFETY: errno is this thread's, writable at any time.
    unsafe { *libc::__errno_location() = saved };
    let now = pages * super::page_size() as u64;
    // Two sources read a moment apart (and the kernel batches its
    // counters): the peak is at least what is resident now.
    (now, (peak_kib * 1024).max(now))
}

/// Reads the start of the file at `path` into `buf` with raw calls;
/// returns the bytes read (0 when it cannot be opened).
fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    // SAFETY: `path` is null-terminated; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        // SAFETY: `rest` is a valid writable slice for its whole length.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            // SAFETY: reading errno has no preconditions.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            break;
        }
        if n == 0 {
            break;
        }
        len += (n as usize).min(rest.len());
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    len
}

/// A close-on-exec copy of `fd` numbered 3 or above, kept for writing at
/// exit (programs that close their stderr first still get the output);
/// None if the kernel would not make one.
pub fn dup_for_exit(fd: i32) -> Option<i32> {
    // SAFETY: fcntl on a file descriptor number has no memory-safety
    // preconditions.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    (copy >= 0).then_some(copy)
}
