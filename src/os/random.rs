//! Seeds from the kernel's random pool.

/// 64 random bits from the kernel (the `getrandom` crate: `getrandom(2)`,
/// or `/dev/urandom` where that system call is missing), or None when
/// neither can be had (a seccomp filter, no `/dev`). There is no weak
/// fallback here: the caller decides what a missing seed means.
pub fn random_u64() -> Option<u64> {
    let mut bytes = [0u8; 8];
    if !super::sys::fill_random(&mut bytes) {
        return None;
    }
    Some(u64::from_ne_bytes(bytes))
}
