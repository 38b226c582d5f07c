//! What the library does when it is loaded: read the `FORTALLOC_*`
//! options and arrange the statistics at exit. (`fork()` needs nothing
//! here: the core registers its child handler with its first heap.)

use core::sync::atomic::{AtomicI32, Ordering};

/// Runs from `.init_array` when the library is loaded (before `main`, or at
/// `dlopen`).
extern "C" fn on_load() {
    fortalloc::init_from_env();
    if fortalloc::show_stats_requested() {
        // A copy of stderr: some programs (coreutils) close fd 2 at exit,
        // before the table is printed. Close-on-exec, so it does not leak
        // into programs this one runs.
        // SAFETY: fcntl on fd 2 has no memory-safety preconditions.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        STATS_FD.store(if fd >= 0 { fd } else { 2 }, Ordering::Relaxed);
    }
}

static STATS_FD: AtomicI32 = AtomicI32::new(2);

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// Runs from `.fini_array` at exit (after the program's own `atexit`
/// handlers, so its last frees are counted). `atexit` itself is not
/// exported by glibc's shared library, hence the section.
extern "C" fn on_exit() {
    if fortalloc::show_stats_requested() {
        fortalloc::print_stats_to(STATS_FD.load(Ordering::Relaxed));
    }
}

#[used]
#[link_section = ".fini_array"]
static ON_EXIT: extern "C" fn() = on_exit;
