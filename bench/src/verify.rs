//! What a workload does when it finds its data corrupted: say so and exit non-zero at once.

/// The exit code of a worker that found corruption.
pub const CORRUPTION_EXIT_CODE: i32 = 3;

/// Reports corruption found while checking `what` (with the tag or value involved) on stderr and
/// exits the process with `CORRUPTION_EXIT_CODE`. Never returns.
#[cold]
#[inline(never)]
pub fn corrupt(what: &str, detail: u64) -> ! {
    eprintln!("worker: CORRUPTION detected: {what} (tag/value {detail:#x})");
    std::process::exit(CORRUPTION_EXIT_CODE)
}

/// Checks a condition that must hold if memory was not corrupted.
#[inline]
pub fn ensure(ok: bool, what: &str, detail: u64) {
    if !ok {
        corrupt(what, detail);
    }
}
