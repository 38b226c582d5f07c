//! `canary`: the bytes right after the requested size hold a per-page
//! secret, checked on free and realloc, so even a one-byte overflow is
//! caught.
//!
//! ```text
//! block                size          size + n            bsize - 4    bsize
//! | caller's bytes ... | canary bytes | (slack, unchecked) | tail: u32 |
//! ```
//! `n` is up to 8 bytes (at least 1): a linear overflow passes through them
//! first, so checking more would cost time in proportion to the slack and
//! catch nothing more. The tail holds `(bsize - size) ^ key`, so the
//! requested size can be recovered (for `usable_size`) and an overflow that
//! reaches the tail garbles it. Each canary byte is a byte of the page key
//! chosen by its address, so a run of equal bytes never matches.

use crate::page::Page;

pub const ON: bool = cfg!(feature = "canary");

/// Bytes a block needs beyond the request: one canary byte and the tail.
pub const EXTRA: usize = if ON { 5 } else { 0 };

/// Whether blocks of this page carry a canary: all of them, huge ones
/// too (their guard page lies past the end of the request's last OS page,
/// so a short overflow stays within it).
#[inline(always)]
pub fn applies(_page: *const Page) -> bool {
    ON
}

#[inline(always)]
fn key(page: *const Page) -> usize {
    // SAFETY: callers pass a valid page descriptor.
    unsafe { (*page).keys[1] }
}

/// The canary byte at address `p + i`: byte `(p + i) % 8` of the masked
/// key, so the canary is the key word tiled over aligned addresses.
#[inline(always)]
fn canary_byte(key: usize, p: *mut u8, i: usize) -> u8 {
    canary_word(key, p, i) as u8
}

/// The 8 canary bytes starting at address `p + i`, as a little-endian word.
/// Every byte has its top bit set: an overflow by a byte below 0x80 — a
/// string's terminating NUL, ASCII text — never matches, so it is always
/// caught (a random byte matched 1 time in 256, and failed the tests that
/// write one); other bytes match 1 time in 128.
#[inline(always)]
fn canary_word(key: usize, p: *mut u8, i: usize) -> u64 {
    ((key as u64) ^ 0x5a5a_5a5a_5a5a_5a5a).rotate_right((((p as usize + i) & 7) * 8) as u32)
        | 0x8080_8080_8080_8080
}

/// Bytes checked after the request: up to 8, before the tail.
const CANARY_BYTES: usize = 8;

#[inline(always)]
fn canary_end(size: usize, bsize: usize) -> usize {
    (size + CANARY_BYTES).min(bsize - 4)
}

/// Writes the canary of a block of `page` handed out for `size` bytes.
///
/// # Safety
/// `p` must be a live block of `page`, with `size + EXTRA <= bsize`.
pub unsafe fn write(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: the bytes written lie in `[size, bsize)` of the caller's block.
    unsafe {
        let bsize = (*page).block_size;
        let k = key(page);
        let end = canary_end(size, bsize);
        if end - size == CANARY_BYTES {
            (p.add(size) as *mut u64).write_unaligned(canary_word(k, p, size));
        } else {
            for i in size..end {
                *p.add(i) = canary_byte(k, p, i);
            }
        }
        (p.add(bsize - 4) as *mut u32).write_unaligned(((bsize - size) ^ k) as u32);
    }
}

/// The requested size of a block of `page`, if its canary is intact.
///
/// # Safety
/// `p` must be a live block of `page`, written by [`write`].
pub unsafe fn check(page: *const Page, p: *mut u8) -> Option<usize> {
    // SAFETY: reads stay inside the block.
    unsafe {
        let bsize = (*page).block_size;
        let k = key(page);
        let delta = ((p.add(bsize - 4) as *const u32).read_unaligned() ^ k as u32) as usize;
        if !(EXTRA..=bsize).contains(&delta) {
            return None;
        }
        let size = bsize - delta;
        let end = canary_end(size, bsize);
        if end - size == CANARY_BYTES {
            return ((p.add(size) as *const u64).read_unaligned() == canary_word(k, p, size)).then_some(size);
        }
        for i in size..end {
            if *p.add(i) != canary_byte(k, p, i) {
                return None;
            }
        }
        Some(size)
    }
}
