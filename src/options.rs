//! Run-time options: plain atomics, so reading one never allocates, set by
//! the program (`set_purge_delay_ms`, ...) or read once from the
//! environment (`FORTALLOC_*`) before the first heap is made.
//!
//! | variable | meaning |
//! |---|---|
//! | `FORTALLOC_VERBOSE=1` | print at start, in every process that loads fortalloc: where it was loaded from, the build, the guard way, the quarantine bounds and the options in effect |
//! | `FORTALLOC_VERBOSE=pid:<n>` | print it only in the process with id `n` (the launcher's `--verbose`; `--verbose-all` sets `1`) |
//! | `FORTALLOC_SHOW_STATS=1` | print the statistics table to stderr at exit (the C library), in every process that loads it |
//! | `FORTALLOC_SHOW_STATS=pid:<n>` | print it only in the process with id `n`, not in the programs it runs or forks (the launcher's `--stats` names the program it `exec`s, which keeps the launcher's pid; `--stats-all` sets `1`) |
//! | `FORTALLOC_PURGE_DELAY=<ms>` | delay before empty pages and freed large blocks go back to the OS (ten times it for whole free segments); 0 = at once |
//! | `FORTALLOC_HUGE_PAGES=1` | advise transparent huge pages for fortalloc's memory |
//! | `FORTALLOC_GUARDS=mprotect` | make guards with `mprotect` even where the kernel has guard markers |
//! | `FORTALLOC_MAP_BUDGET=<n>` | the most kernel mappings `mprotect` guards may take the process to (default: half of `vm.max_map_count`) |
//! | `FORTALLOC_QUARANTINE=<bytes>` | the most bytes of freed blocks each thread's quarantine holds (`quarantine` builds; default 512 KiB); 0 = no quarantine |
//! | `FORTALLOC_QUARANTINE_BLOCKS=<n>` | the most blocks it holds (default and most: 1024); 0 = no quarantine |
//! | `FORTALLOC_QUARANTINE_PROCESS=<bytes>` | the most bytes of freed blocks all threads' quarantines hold together (default 8 MiB); 0 = no quarantine |
//!
//! mimalloc users: these stand for `MIMALLOC_VERBOSE`, `MIMALLOC_SHOW_STATS`,
//! `MIMALLOC_PURGE_DELAY` and `MIMALLOC_ALLOW_LARGE_OS_PAGES`. An unknown
//! `FORTALLOC_*` name is reported on stderr, not ignored silently.

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::error::Line;
use crate::os;

/// Default delay before empty pages go back to the OS (mimalloc v2's).
pub const DEFAULT_PURGE_DELAY_MS: u64 = 10;

static PURGE_DELAY_MS: AtomicU64 = AtomicU64::new(DEFAULT_PURGE_DELAY_MS);
/// `FORTALLOC_VERBOSE` and `FORTALLOC_SHOW_STATS`: each on or off, and
/// the one process `pid:<n>` asked for (0 for all). The variable is
/// inherited by every program the process runs, and a forked child
/// inherits these values, so only the pid can tell the process apart.
static VERBOSE: AtomicBool = AtomicBool::new(false);
static VERBOSE_PID: AtomicI32 = AtomicI32::new(0);
static SHOW_STATS: AtomicBool = AtomicBool::new(false);
static SHOW_STATS_PID: AtomicI32 = AtomicI32::new(0);

#[inline]
pub fn purge_delay_ms() -> u64 {
    PURGE_DELAY_MS.load(Ordering::Relaxed)
}

/// How many times the purge delay whole free segments wait in the arena
/// (mimalloc's `arena_purge_mult`, also 10). A freed segment or huge span
/// is what the next segment or huge block takes first, and every page
/// purged from it faults in again there; free pages inside a live segment
/// keep the short delay, so a heap's idle pages still go back soon.
pub const ARENA_PURGE_MULT: u64 = 10;

/// The delay before free arena spans are purged; 0 purges at once.
#[inline]
pub fn arena_purge_delay_ms() -> u64 {
    purge_delay_ms().saturating_mul(ARENA_PURGE_MULT)
}

/// Sets the delay before empty pages are returned to the OS; 0 returns
/// them at once.
pub fn set_purge_delay_ms(ms: u64) {
    PURGE_DELAY_MS.store(ms, Ordering::Relaxed);
}

/// Default bound on the bytes a thread's quarantine holds (see
/// `harden::quarantine`).
pub const DEFAULT_QUARANTINE_BYTES: usize = 512 * 1024;
/// The most blocks a thread's quarantine can hold (its array's length),
/// and the default.
pub const MAX_QUARANTINE_BLOCKS: usize = 1024;
pub const DEFAULT_QUARANTINE_BLOCKS: usize = MAX_QUARANTINE_BLOCKS;

/// Default bound on the bytes all threads' quarantines hold together:
/// sixteen threads at the default per-thread bound, and a fraction of it
/// each for more threads.
pub const DEFAULT_QUARANTINE_PROCESS_BYTES: usize = 8 * 1024 * 1024;

/// The per-thread byte bound in effect: the one asked for, at most the
/// process's (a thread could never claim more), 0 if either is 0 or the
/// block bound is. The free path reads only this to know whether freed
/// blocks wait; the bounds as asked for are kept beside it.
static QUARANTINE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_QUARANTINE_BYTES);
static QUARANTINE_BLOCKS: AtomicUsize = AtomicUsize::new(DEFAULT_QUARANTINE_BLOCKS);
static QUARANTINE_THREAD_ASKED: AtomicUsize = AtomicUsize::new(DEFAULT_QUARANTINE_BYTES);
static QUARANTINE_PROCESS_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_QUARANTINE_PROCESS_BYTES);

/// The bound on the bytes of freed blocks a thread's quarantine holds
/// (never more than the process's bound).
#[inline]
pub fn quarantine_bytes() -> usize {
    QUARANTINE_BYTES.load(Ordering::Relaxed)
}

/// The bound on the bytes of freed blocks all threads' quarantines hold
/// together.
#[inline]
pub fn quarantine_process_bytes() -> usize {
    QUARANTINE_PROCESS_BYTES.load(Ordering::Relaxed)
}

/// Sets the per-thread byte bound in effect from the two asked for and
/// the block bound.
fn settle_quarantine_bytes() {
    let bytes = quarantine_bytes_in_effect(
        QUARANTINE_THREAD_ASKED.load(Ordering::Relaxed),
        QUARANTINE_PROCESS_BYTES.load(Ordering::Relaxed),
        QUARANTINE_BLOCKS.load(Ordering::Relaxed),
    );
    QUARANTINE_BYTES.store(bytes, Ordering::Relaxed);
}

/// The per-thread byte bound in effect for the bounds asked for: `thread`
/// at most `process`, and 0 without blocks, so that it alone says whether
/// freed blocks wait (see `harden::quarantine::Bounds::holding`).
fn quarantine_bytes_in_effect(thread: usize, process: usize, blocks: usize) -> usize {
    if blocks == 0 {
        0
    } else {
        thread.min(process)
    }
}

/// The bound on the blocks a thread's quarantine holds.
#[inline]
pub fn quarantine_blocks() -> usize {
    QUARANTINE_BLOCKS.load(Ordering::Relaxed)
}

/// Sets the bounds of every thread's quarantine (builds with the
/// `quarantine` feature; others have none): the most bytes and the most
/// blocks each holds, either 0 turning it off. Blocks over a lowered
/// block bound leave at their thread's next free; over a lowered byte
/// bound, at its next round (the next free that finds its quarantine
/// full). The block bound is capped at 1024.
pub fn set_quarantine(bytes: usize, blocks: usize) {
    QUARANTINE_BLOCKS.store(blocks.min(MAX_QUARANTINE_BLOCKS), Ordering::Relaxed);
    QUARANTINE_THREAD_ASKED.store(bytes, Ordering::Relaxed);
    settle_quarantine_bytes();
}

/// Sets the bound on the bytes all threads' quarantines hold together
/// (builds with the `quarantine` feature), 0 turning them off. Each thread
/// holds at most its share: the bytes the others leave, and no more than
/// the bound divided among the threads holding blocks. A thread finds its
/// share when its quarantine is full (by count, or by the share it had)
/// and lets blocks out down to it; so a lowered bound takes effect as the
/// threads go on freeing. At most 1 TiB.
pub fn set_quarantine_process(bytes: usize) {
    QUARANTINE_PROCESS_BYTES.store(bytes.min(MAX_QUARANTINE_PROCESS_BYTES), Ordering::Relaxed);
    settle_quarantine_bytes();
}

/// The largest process bound on quarantined bytes (the counter of claimed
/// bytes has 40 bits).
pub const MAX_QUARANTINE_PROCESS_BYTES: usize = (1 << 40) - 1;

/// Whether `FORTALLOC_VERBOSE` asked for messages in this process.
pub fn verbose() -> bool {
    asked_here(&VERBOSE, &VERBOSE_PID)
}

/// Whether `FORTALLOC_SHOW_STATS` asked for this process's statistics at
/// exit.
pub fn show_stats_requested() -> bool {
    asked_here(&SHOW_STATS, &SHOW_STATS_PID)
}

/// Whether an option set to `1` or `pid:<n>` applies to this process.
fn asked_here(on: &AtomicBool, pid: &AtomicI32) -> bool {
    if !on.load(Ordering::Relaxed) {
        return false;
    }
    let pid = pid.load(Ordering::Relaxed);
    pid == 0 || pid == os::process_id()
}

/// Reads `1` (or another truthy word) or `pid:<n>` into `on` and `pid`;
/// false (and nothing stored) for any other `pid:` value.
fn set_for_process(on: &AtomicBool, pid: &AtomicI32, value: &[u8]) -> bool {
    match value.strip_prefix(b"pid:") {
        None => on.store(truthy(value), Ordering::Relaxed),
        Some(n) => match parse_u64(n) {
            Some(n) if n > 0 && n <= i32::MAX as u64 => {
                pid.store(n as i32, Ordering::Relaxed);
                on.store(true, Ordering::Relaxed);
            }
            _ => return false,
        },
    }
    true
}

/// The options fortalloc knows, by their name after `FORTALLOC_`.
const KNOWN: [&str; 9] = [
    "VERBOSE",
    "SHOW_STATS",
    "PURGE_DELAY",
    "HUGE_PAGES",
    "GUARDS",
    "MAP_BUDGET",
    "QUARANTINE",
    "QUARANTINE_BLOCKS",
    "QUARANTINE_PROCESS",
];

const NOT_READ: u8 = 0;
const READING: u8 = 1;
const READ: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(NOT_READ);

/// Reads the `FORTALLOC_*` variables, once per process (later calls return
/// at once). Allocates nothing: it walks `environ` and parses by hand.
pub fn init_from_env() {
    if STATE.load(Ordering::Acquire) == READ {
        return;
    }
    if STATE
        .compare_exchange(NOT_READ, READING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        // Another thread is reading them; options are hints, do not wait.
        return;
    }
    for_each_var(apply);
    STATE.store(READ, Ordering::Release);
}

/// In a `fork` child: options being read by a thread the child does not
/// have are read again at the next call (if this thread was reading them,
/// interrupted by the signal handler that forked, it finishes first).
pub fn after_fork() {
    let _ = STATE.compare_exchange(READING, NOT_READ, Ordering::AcqRel, Ordering::Relaxed);
}

/// Calls `f(name, value)` for every `FORTALLOC_<name>=<value>` variable.
fn for_each_var(mut f: impl FnMut(&[u8], &[u8])) {
    extern "C" {
        static environ: *const *const core::ffi::c_char;
    }
    // It is not modified while the program is starting, when this runs.
    // SAFETY: `environ` is the C library's null-terminated array of
    // null-terminated strings, read here and never kept.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return;
        }
        while !(*p).is_null() {
            let var = CStr::from_ptr(*p).to_bytes();
            if let Some(rest) = var.strip_prefix(b"FORTALLOC_") {
                let eq = rest.iter().position(|&b| b == b'=').unwrap_or(rest.len());
                let value = rest.get(eq + 1..).unwrap_or(&[]);
                f(&rest[..eq], value);
            }
            p = p.add(1);
        }
    }
}

fn apply(name: &[u8], value: &[u8]) {
    match name {
        b"VERBOSE" => {
            if !set_for_process(&VERBOSE, &VERBOSE_PID, value) {
                warn(b"ignoring FORTALLOC_VERBOSE: not 1 or pid:<process id>: ", value);
            }
        }
        b"SHOW_STATS" => {
            if !set_for_process(&SHOW_STATS, &SHOW_STATS_PID, value) {
                warn(
                    b"ignoring FORTALLOC_SHOW_STATS: not 1 or pid:<process id>: ",
                    value,
                );
            }
        }
        b"HUGE_PAGES" => os::set_huge_pages(truthy(value)),
        // The launcher's own variable (where the library is), not an option.
        b"LIB" => {}
        b"GUARDS" => match value {
            b"mprotect" => os::force_mprotect_guards(),
            b"markers" | b"auto" => {}
            _ => warn(b"ignoring FORTALLOC_GUARDS: not `mprotect` or `auto`: ", value),
        },
        b"MAP_BUDGET" => match parse_u64(value) {
            Some(n) if n > 0 => os::set_map_budget(n as usize),
            _ => warn(b"ignoring FORTALLOC_MAP_BUDGET: not a positive number: ", value),
        },
        b"QUARANTINE" => match parse_u64(value) {
            Some(n) => {
                QUARANTINE_THREAD_ASKED.store(n as usize, Ordering::Relaxed);
                settle_quarantine_bytes();
            }
            None => warn(b"ignoring FORTALLOC_QUARANTINE: not a number of bytes: ", value),
        },
        b"QUARANTINE_PROCESS" => match parse_u64(value) {
            Some(n) => set_quarantine_process(n as usize),
            None => warn(
                b"ignoring FORTALLOC_QUARANTINE_PROCESS: not a number of bytes: ",
                value,
            ),
        },
        b"QUARANTINE_BLOCKS" => match parse_u64(value) {
            Some(n) => {
                QUARANTINE_BLOCKS.store((n as usize).min(MAX_QUARANTINE_BLOCKS), Ordering::Relaxed);
                settle_quarantine_bytes();
            }
            None => warn(b"ignoring FORTALLOC_QUARANTINE_BLOCKS: not a number: ", value),
        },
        b"PURGE_DELAY" => match parse_u64(value) {
            Some(ms) => set_purge_delay_ms(ms),
            None => warn(
                b"ignoring FORTALLOC_PURGE_DELAY: not a number of milliseconds: ",
                value,
            ),
        },
        _ => {
            debug_assert!(!KNOWN.iter().any(|k| k.as_bytes() == name));
            warn(b"unknown option FORTALLOC_", name);
        }
    }
}

fn truthy(value: &[u8]) -> bool {
    matches!(value, b"1" | b"yes" | b"true" | b"on" | b"YES" | b"TRUE" | b"ON")
}

/// A decimal number, without sign or spaces.
fn parse_u64(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add((b - b'0') as u64))
            .flatten()
    })
}

fn warn(what: &[u8], detail: &[u8]) {
    let mut line = Line::new();
    line.str("fortalloc: ");
    for &b in what.iter().chain(detail) {
        line.byte_lossy(b);
    }
    line.str("\n");
    os::write_stderr(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bound_in_effect_is_zero_when_any_bound_is() {
        assert_eq!(quarantine_bytes_in_effect(512 << 10, 8 << 20, 1024), 512 << 10);
        assert_eq!(quarantine_bytes_in_effect(512 << 10, 64 << 10, 1024), 64 << 10);
        assert_eq!(quarantine_bytes_in_effect(0, 8 << 20, 1024), 0);
        assert_eq!(quarantine_bytes_in_effect(512 << 10, 0, 1024), 0);
        assert_eq!(quarantine_bytes_in_effect(512 << 10, 8 << 20, 0), 0);
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"250"), Some(250));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"10ms"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn truthy_values() {
        assert!(truthy(b"1") && truthy(b"yes") && truthy(b"on"));
        assert!(!truthy(b"0") && !truthy(b"") && !truthy(b"no"));
    }
}
