//! The process: reporting, naming it and ending it without allocating or
//! unwinding.

use super::sys;

/// Writes all of `msg` to stderr with raw `write(2)` calls.
pub fn write_stderr(msg: &[u8]) {
    write_fd(2, msg);
}

/// Writes all of `msg` to file descriptor `fd` with raw `write(2)` calls.
pub fn write_fd(fd: i32, msg: &[u8]) {
    let mut rest = msg;
    while !rest.is_empty() {
        match sys::write(fd, rest) {
            Ok(n @ 1..) => rest = rest.get(n..).unwrap_or(&[]),
            // EINTR is retried; anything else means stderr is gone and
            // there is nobody left to tell.
            Err(libc::EINTR) => {}
            _ => return,
        }
    }
}

/// Ends the process with SIGABRT. Never unwinds.
pub fn abort() -> ! {
    sys::abort()
}

/// Lets another thread run; used by spin locks under contention.
pub fn yield_now() {
    sys::sched_yield();
}

/// The calling process's id: a `fork` child's own, not its parent's.
pub fn process_id() -> i32 {
    sys::getpid()
}

/// Fills `buf` with the program's name, so output can say which process
/// it comes from, and returns the name's length (0 without `/proc`). The
/// name is `argv[0]` as `/proc/self/cmdline` has it, or the kernel's short
/// name in `/proc/self/comm` where `argv[0]` is empty; cut at `buf`'s end.
pub fn program_name(buf: &mut [u8]) -> usize {
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
    n
}

/// The file fortalloc's code was loaded from: `libfortalloc.so` when
/// preloaded or linked as the C library, the program itself when linked
/// into a Rust program. None where the dynamic linker cannot say.
pub fn loaded_from() -> Option<&'static core::ffi::CStr> {
    sys::object_path_of(loaded_from as *const core::ffi::c_void)
}

/// The process's resident memory now and at its peak, in bytes, as the
/// kernel counts it (`/proc/self/statm`, `getrusage`), for the
/// statistics: what the process costs in memory, fortalloc's and
/// everyone else's. 0 where the kernel does not say.
pub fn resident_bytes() -> (u64, u64) {
    let mut buf = [0u8; 128];
    let n = read_file(c"/proc/self/statm", &mut buf);
    // The second field: resident pages.
    let pages = buf[..n].split(|&b| b == b' ').nth(1).map_or(0, |f| {
        f.iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'))
    });
    let peak_kib = sys::getrusage(libc::RUSAGE_SELF).map_or(0, |u| u.ru_maxrss.max(0) as u64);
    let now = pages * super::page_size() as u64;
    // Two sources read a moment apart (and the kernel batches its
    // counters): the peak is at least what is resident now.
    (now, (peak_kib * 1024).max(now))
}

/// Reads the start of the file at `path` into `buf` with raw calls;
/// returns the bytes read (0 when it cannot be opened).
fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    let Some(fd) = sys::open_read(path) else {
        return 0;
    };
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        match sys::read(fd, rest) {
            Ok(0) => break,
            Ok(n) => len += n.min(rest.len()),
            Err(libc::EINTR) => {}
            Err(_) => break,
        }
    }
    sys::close(fd);
    len
}

/// A close-on-exec copy of `fd` numbered 3 or above, kept for writing at
/// exit (programs that close their stderr first still get the output);
/// None if the kernel would not make one.
pub fn dup_for_exit(fd: i32) -> Option<i32> {
    sys::dup_cloexec(fd, 3)
}
