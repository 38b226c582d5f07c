//! The C library and kernel calls of this layer, each leaving the calling
//! thread's `errno` as it found it.
//!
//! fortalloc runs inside `free`, which must keep `errno` (POSIX.1-2024,
//! glibc's `tst-free-errno`), and inside every other allocation function,
//! whose callers may be between a failed call of their own and their look
//! at `errno`. Yet a call made here can fail on such a path: `mprotect`
//! and a partial `munmap` fail with `ENOMEM` once the process has used up
//! `vm.max_map_count`, `madvise` when a range is locked, and a fresh
//! thread's first free seeds its generator and reads files. So each call
//! that can set `errno` saves it before and puts it back after, and
//! reports its failure as its return value; where an allocation fails, the
//! C library sets `ENOMEM` itself. Calls that cannot fail (`getpid`,
//! `pthread_self`, `abort`) pass straight through.
//!
//! Every other file of `os/`, and so all of fortalloc, reaches the C
//! library only through this file (a test below checks the sources): no
//! path through the allocator leaks an error into `errno`, whatever the
//! build and whichever defence makes the call. The cost is two accesses to
//! a thread-local word per call, against a system call's hundreds of
//! cycles; the fast paths make no call.

use core::ffi::{c_int, c_void, CStr};

/// The calling thread's `errno` slot.
#[inline(always)]
fn errno_slot() -> *mut c_int {
    #[cfg(target_vendor = "apple")]
    // SAFETY: `__error` has no preconditions; it returns the calling
    // thread's errno slot, valid for the thread's life.
    unsafe {
        libc::__error()
    }
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `__errno_location` has no preconditions; it returns the
    // calling thread's errno slot, valid for the thread's life.
    unsafe {
        libc::__errno_location()
    }
}

/// The calling thread's `errno`.
#[inline(always)]
fn errno() -> c_int {
    // SAFETY: the slot is this thread's and valid (see `errno_slot`).
    unsafe { *errno_slot() }
}

/// Runs `call` and puts `errno` back as it was before it.
#[inline(always)]
fn keeping_errno<R>(call: impl FnOnce() -> R) -> R {
    let saved = errno();
    let result = call();
    // SAFETY: the slot is this thread's and valid (see `errno_slot`).
    unsafe { *errno_slot() = saved };
    result
}

/// `mmap`; `MAP_FAILED` on failure.
///
/// # Safety
/// As for `mmap(2)`: with `MAP_FIXED`, `[addr, addr + len)` must hold
/// nothing anyone still uses.
#[inline]
pub unsafe fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: i64,
) -> *mut c_void {
    // SAFETY: the caller meets mmap's contract (this fn's).
    keeping_errno(|| unsafe { libc::mmap(addr, len, prot, flags, fd, off as libc::off_t) })
}

/// `munmap`; false on failure (a split past the mapping limit), when the
/// range stays mapped.
///
/// # Safety
/// `[addr, addr + len)` must be memory this process mapped that nothing
/// uses any more.
#[inline]
pub unsafe fn munmap(addr: *mut c_void, len: usize) -> bool {
    // SAFETY: the range is ours and dead (this fn's contract).
    keeping_errno(|| unsafe { libc::munmap(addr, len) } == 0)
}

/// `mprotect`; false on failure (a split past the mapping limit), when the
/// range is as it was.
///
/// # Safety
/// `[addr, addr + len)` must be page-aligned memory this process mapped,
/// and nothing may access it in a way `prot` forbids.
#[inline]
pub unsafe fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> bool {
    // SAFETY: the range is ours and used as `prot` allows (this fn's
    // contract).
    keeping_errno(|| unsafe { libc::mprotect(addr, len, prot) } == 0)
}

/// `madvise`; false if the kernel refused the advice.
///
/// # Safety
/// `[addr, addr + len)` must be page-aligned memory this process mapped,
/// and an advice that drops pages may only be given for pages whose
/// contents nobody needs.
#[inline]
pub unsafe fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> bool {
    // SAFETY: the range is ours and its contents dead where the advice
    // drops them (this fn's contract).
    keeping_errno(|| unsafe { libc::madvise(addr, len, advice) } == 0)
}

/// `mincore` into `vec`; false on failure.
///
/// # Safety
/// `[addr, addr + len)` must be page-aligned memory this process mapped,
/// and `vec` at least one byte per page of it.
#[inline]
pub unsafe fn mincore(addr: *mut c_void, len: usize, vec: &mut [u8]) -> bool {
    // SAFETY: the range is ours and `vec` long enough (this fn's contract).
    keeping_errno(|| unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) } == 0)
}

/// `sysconf(name)`; negative where the value is unknown.
#[inline]
pub fn sysconf(name: c_int) -> i64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    keeping_errno(|| unsafe { libc::sysconf(name) } as i64)
}

/// Opens `path` read-only and close-on-exec; None if it cannot be.
#[inline]
pub fn open_read(path: &CStr) -> Option<c_int> {
    // SAFETY: `path` is null-terminated; the flags ask for no out-pointer.
    let fd = keeping_errno(|| unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) });
    (fd >= 0).then_some(fd)
}

/// `read` into `buf`: the bytes read (0 at the end), or the error number.
#[inline]
pub fn read(fd: c_int, buf: &mut [u8]) -> Result<usize, c_int> {
    keeping_errno(|| {
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    })
}

/// `write` of `buf`: the bytes written, or the error number.
#[inline]
pub fn write(fd: c_int, buf: &[u8]) -> Result<usize, c_int> {
    keeping_errno(|| {
        // SAFETY: `buf` is readable for its whole length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(errno())
        } else {
            Ok(n as usize)
        }
    })
}

/// Closes `fd`, which the caller opened and uses no more.
#[inline]
pub fn close(fd: c_int) {
    // SAFETY: closing a descriptor has no memory-safety preconditions.
    keeping_errno(|| unsafe { libc::close(fd) });
}

/// A close-on-exec copy of `fd` numbered `lowest` or above.
#[inline]
pub fn dup_cloexec(fd: c_int, lowest: c_int) -> Option<c_int> {
    // SAFETY: fcntl on a descriptor number has no memory-safety
    // preconditions.
    let copy = keeping_errno(|| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, lowest) });
    (copy >= 0).then_some(copy)
}

/// `getrusage(who)`; None on failure.
#[inline]
pub fn getrusage(who: c_int) -> Option<libc::rusage> {
    keeping_errno(|| {
        // SAFETY: an all-zero rusage is a valid value of the plain C
        // struct, and getrusage writes only into the one it is given.
        unsafe {
            let mut usage: libc::rusage = core::mem::zeroed();
            (libc::getrusage(who, &mut usage) == 0).then_some(usage)
        }
    })
}

/// `clock_gettime(clock)`; zero if the clock cannot be read.
#[inline]
pub fn clock_gettime(clock: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    keeping_errno(|| unsafe { libc::clock_gettime(clock, &mut ts) });
    ts
}

/// Lets another thread run.
#[inline]
pub fn sched_yield() {
    // SAFETY: sched_yield has no preconditions.
    keeping_errno(|| unsafe { libc::sched_yield() });
}

/// The calling process's id (cannot fail).
#[inline]
pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// The path of the file (the program or a shared library) that holds
/// `addr`, as the dynamic linker names it; None where it cannot say (a
/// static program).
pub fn object_path_of(addr: *const c_void) -> Option<&'static core::ffi::CStr> {
    // SAFETY: `Dl_info` is plain data; zeroed it is a valid value.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads `addr` as a number and writes `info`; the
    // name it returns points into the linker's list of loaded objects,
    // which lives as long as the object (here: ours, for the process).
    unsafe {
        if libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(core::ffi::CStr::from_ptr(info.dli_fname))
    }
}

/// Ends the process with SIGABRT.
#[inline]
pub fn abort() -> ! {
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// The calling thread's `pthread_self` (cannot fail).
#[inline(always)]
pub fn pthread_self() -> usize {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as usize }
}

/// A key whose destructor is `dtor`; None if the process ran out of keys.
#[inline]
pub fn pthread_key_create(dtor: unsafe extern "C" fn(*mut c_void)) -> Option<libc::pthread_key_t> {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer and `dtor` a valid function.
    let rc = keeping_errno(|| unsafe { libc::pthread_key_create(&mut key, Some(dtor)) });
    (rc == 0).then_some(key)
}

/// Sets this thread's value for `key` (which may call `calloc`, and so
/// this library, for keys past glibc's first 32); false on failure.
#[inline]
pub fn pthread_setspecific(key: libc::pthread_key_t, value: *mut c_void) -> bool {
    // SAFETY: `key` came from pthread_key_create; the value is opaque to
    // the C library.
    keeping_errno(|| unsafe { libc::pthread_setspecific(key, value) } == 0)
}

/// Has `child` run in the child process after every `fork`; false if the
/// C library refused (out of memory).
#[inline]
pub fn pthread_atfork_child(child: unsafe extern "C" fn()) -> bool {
    // SAFETY: `child` is a plain function valid for the process's life.
    keeping_errno(|| unsafe { libc::pthread_atfork(None, None, Some(child)) } == 0)
}

/// Fills `buf` from the kernel's random pool (the `getrandom` crate);
/// false if no randomness can be had.
#[inline]
pub fn fill_random(buf: &mut [u8]) -> bool {
    keeping_errno(|| getrandom::getrandom(buf).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The other files of this layer, by name and text.
    const OTHERS: [(&str, &str); 8] = [
        ("guard.rs", include_str!("guard.rs")),
        ("lock.rs", include_str!("lock.rs")),
        ("memory.rs", include_str!("memory.rs")),
        ("mod.rs", include_str!("mod.rs")),
        ("process.rs", include_str!("process.rs")),
        ("random.rs", include_str!("random.rs")),
        ("thread.rs", include_str!("thread.rs")),
        ("time.rs", include_str!("time.rs")),
    ];

    /// No file of `os/` but this one calls the C library (its tests
    /// aside): a call there could leave its error in `errno`. Calls are
    /// `libc::name(` with a lower-case name; types and constants are not.
    #[test]
    fn only_this_file_calls_the_c_library() {
        let mut all: std::vec::Vec<(&str, &str)> = OTHERS.to_vec();
        all.push(("tls.rs", include_str!("tls.rs")));
        for (name, text) in all {
            let end = ["\n#[cfg(test)]", "\n#[cfg(all(test"]
                .iter()
                .filter_map(|mark| text.find(mark))
                .min()
                .unwrap_or(text.len());
            let code = &text[..end];
            for (i, line) in code.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find("libc::") {
                    rest = &rest[at + "libc::".len()..];
                    let ident: std::string::String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let called = rest[ident.len()..].starts_with('(');
                    let lower = ident.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
                    assert!(
                        !(called && lower),
                        "os/{name}:{}: calls libc::{ident} directly, not through os/sys.rs",
                        i + 1
                    );
                }
                assert!(
                    !line.contains("getrandom::getrandom("),
                    "os/{name}:{}: calls getrandom directly, not through os/sys.rs",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn failing_calls_leave_errno_alone() {
        // SAFETY: the slot is this thread's.
        unsafe { *errno_slot() = 1789 };
        let ps = sysconf(libc::_SC_PAGESIZE) as usize;
        // Address 1, off every page boundary: EINVAL from each, kept out
        // of errno.
        let odd = core::ptr::dangling_mut::<c_void>();
        // SAFETY: the calls fail on the unaligned address and touch nothing.
        unsafe {
            assert!(!mprotect(odd, ps, libc::PROT_NONE));
            assert!(!madvise(odd, ps, libc::MADV_DONTNEED));
            assert!(!munmap(odd, ps));
            assert_eq!(mmap(core::ptr::null_mut(), 0, 0, 0, -1, 0), libc::MAP_FAILED);
        }
        assert_eq!(open_read(c"/nonexistent/fortalloc"), None);
        assert_eq!(read(-1, &mut [0u8; 4]), Err(libc::EBADF));
        assert_eq!(write(-1, b"x"), Err(libc::EBADF));
        close(-1);
        assert_eq!(dup_cloexec(-1, 3), None);
        assert_eq!(errno(), 1789);
    }
}
