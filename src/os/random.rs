//! Seeds from the kernel's random pool.

/// 64 random bits from `getrandom(2)`. If the call fails (very old kernel,
/// seccomp), falls back to mixing the clock with addresses: weak, but the
/// hardened build's defences then still differ from run to run.
pub fn random_u64() -> u64 {
    let mut v = 0u64;
    let mut filled = 0usize;
    while filled < 8 {
        // SAFETY: the buffer is the 8 bytes of `v`, of which `filled` are done.
        let n = unsafe {
            libc::getrandom(
                (&mut v as *mut u64).cast::<u8>().add(filled).cast(),
                8 - filled,
                0,
            )
        };
        if n <= 0 {
            // SAFETY: reading errno has no preconditions.
            if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            return fallback(v);
        }
        filled += n as usize;
    }
    v
}

fn fallback(v: u64) -> u64 {
    let stack = &v as *const u64 as u64;
    let code = fallback as *const () as u64;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_nsec as u64 ^ (ts.tv_sec as u64).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ stack.rotate_left(17)
        ^ code.rotate_left(41)
}
