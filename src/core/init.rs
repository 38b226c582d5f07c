//! What fortalloc does when the program (or the C library) is loaded and
//! at exit, for Rust programs and the C library alike: read the
//! `FORTALLOC_*` options, and print the statistics at exit when
//! `FORTALLOC_SHOW_STATS` asks. (`fork()` needs nothing here: the child
//! handler is registered with the first heap, see `fork.rs`.)
//!
//! Both run from the ELF `.init_array`/`.fini_array` sections: `atexit` is
//! not exported by glibc's shared library, and the exit entry runs after
//! the program's own `atexit` handlers, so its last frees are counted.

use core::sync::atomic::{AtomicI32, Ordering};

use crate::error::Line;
use crate::{harden, options, os};

/// Where the table goes: a copy of stderr, since some programs
/// (coreutils) close fd 2 at exit, before the table is printed.
static STATS_FD: AtomicI32 = AtomicI32::new(2);

/// Runs when the program or library is loaded (before `main`, or at
/// `dlopen`).
extern "C" fn on_load() {
    options::init_from_env();
    if options::show_stats_requested() {
        if let Some(fd) = os::dup_for_exit(2) {
            STATS_FD.store(fd, Ordering::Relaxed);
        }
    }
    if options::verbose() {
        say_what_runs();
    }
}

/// `FORTALLOC_VERBOSE`: three lines saying which fortalloc this process
/// runs on — the file it was loaded from and its build, what its defences
/// do, the options in effect.
fn say_what_runs() {
    let mut line = Line::new();
    line.str("fortalloc: pid ")
        .dec(os::process_id() as usize)
        .str(" on ");
    match os::loaded_from() {
        Some(path) => line.c_str(path),
        None => line.str("(file unknown)"),
    };
    line.str(", build ").str(harden::PRESET).str("\n");
    os::write_stderr(line.as_bytes());

    let mut line = Line::new();
    line.str("fortalloc: ");
    harden::describe(&mut line);
    line.str("\n");
    os::write_stderr(line.as_bytes());

    let mut line = Line::new();
    line.str("fortalloc: options: purge delay ")
        .dec(options::purge_delay_ms() as usize)
        .str(" ms, statistics at exit ")
        .str(if options::show_stats_requested() {
            "on"
        } else {
            "off"
        })
        .str("\n");
    os::write_stderr(line.as_bytes());
}

#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;

/// Runs at exit.
extern "C" fn on_exit() {
    if options::show_stats_requested() {
        crate::core::thread::write_stats(STATS_FD.load(Ordering::Relaxed));
    }
}

#[used]
#[link_section = ".fini_array"]
static ON_EXIT: extern "C" fn() = on_exit;

/// Keeps both entries in the link. A Rust program links the crate as an
/// archive, and the linker drops an archive member nothing refers to:
/// this refers to them from the path that makes the first heap.
#[inline(never)]
pub fn keep() {
    core::hint::black_box(&ON_LOAD);
    core::hint::black_box(&ON_EXIT);
}
