//! `canary`: the bytes right after the requested size hold a per-page
//! secret, checked on free and realloc, so even a one-byte overflow is
//! caught.
//!
//! ```text
//! block                size          size + n            bsize - 4          bsize - 1  bsize
//! | caller's bytes ... | canary bytes | (slack, unchecked) | tail: 3 bytes ... | trailer |
//! ```
//! `n` is up to 8 bytes (at least 1): a linear overflow passes through them
//! first, so checking more would cost time in proportion to the slack and
//! catch nothing more. The tail holds `(bsize - size) ^ key` in its low 24
//! bits, so the requested size can be recovered (for `usable_size`) and an
//! overflow that reaches the tail garbles it. Each canary byte is a byte of
//! the page key chosen by its address, so a run of equal bytes never
//! matches.
//!
//! The trailer, the slot's last byte, is a keyed byte of its address alone,
//! whatever the slot holds: in small and medium pages every slot has it from
//! when it is carved, live or free (zero-on-free keeps it), so a write that
//! ends just before a block (an underflow of 1 byte or more) changes the
//! trailer of the slot before, and is seen when that block is freed or
//! reallocated and when the slot before is freed or handed out.

use crate::meta::page::Page;

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

/// The 8 canary bytes starting at address `p + i`, as a little-endian word:
/// byte `(p + i) % 8` of the masked key first, so the canary is the key
/// word tiled over aligned addresses.
/// Every byte has its top bit set: an overflow by a byte below 0x80 — a
/// string's terminating NUL, ASCII text — never matches, so it is always
/// caught (a random byte matched 1 time in 256, and failed the tests that
/// write one); other bytes match 1 time in 128.
#[inline(always)]
fn canary_word(key: usize, p: *mut u8, i: usize) -> u64 {
    ((key as u64) ^ 0x5a5a_5a5a_5a5a_5a5a).rotate_right((((p as usize + i) & 7) * 8) as u32)
        | 0x8080_8080_8080_8080
}

/// The trailer byte of the slot that ends at `end`: top bit set, so a
/// write of a NUL or ASCII byte always shows (others 1 time in 128).
#[inline(always)]
fn trailer_byte(key: usize, end: usize) -> u8 {
    (((key ^ end.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u64 ^ 0x3c3c_3c3c_3c3c_3c3c) >> 56) as u8 | 0x80
}

/// Whether the slot of `bsize` bytes at `slot` still ends in its trailer.
///
/// # Safety
/// `[slot, slot + bsize)` must be readable, `page` its page's descriptor.
#[inline(always)]
pub unsafe fn trailer_intact(page: *const Page, slot: *const u8, bsize: usize) -> bool {
    let end = slot as usize + bsize;
    // SAFETY: per the caller.
    unsafe { *(end as *const u8).sub(1) == trailer_byte(key(page), end) }
}

/// Writes the trailer of the slot of `bsize` bytes at `slot`.
///
/// # Safety
/// The slot's last byte must be the caller's to write.
#[inline(always)]
pub unsafe fn set_trailer(page: *const Page, slot: *mut u8, bsize: usize) {
    let end = slot as usize + bsize;
    // SAFETY: per the caller.
    unsafe { *(end as *mut u8).sub(1) = trailer_byte(key(page), end) };
}

/// Writes the last word of the slot of `bsize` bytes at `slot` as zero
/// but for its trailer, in one store (the trailer byte never changes).
///
/// # Safety
/// The slot's last word must be the caller's to write, `bsize` a multiple
/// of 8 of at least 16.
#[inline(always)]
pub unsafe fn set_last_word_trailer(page: *const Page, slot: *mut u8, bsize: usize) {
    let end = slot as usize + bsize;
    let word = (trailer_byte(key(page), end) as u64) << 56;
    // SAFETY: per the caller; the word is 8-aligned as blocks are.
    unsafe { core::ptr::write_volatile((end as *mut u64).sub(1), word) };
}

/// The block's tail word: the keyed size difference and the trailer.
#[inline(always)]
fn tail_word(key: usize, p: *mut u8, bsize: usize, delta: usize) -> u32 {
    (((delta ^ key) as u32) & 0x00ff_ffff) | ((trailer_byte(key, p as usize + bsize) as u32) << 24)
}

/// Bytes checked after the request: up to 8, before the tail.
const CANARY_BYTES: usize = 8;

#[inline(always)]
fn canary_end(size: usize, bsize: usize) -> usize {
    (size + CANARY_BYTES).min(bsize - 4)
}

/// The 8-byte window of a block holding its canary bytes `[size, end)`,
/// as its offset and the mask of the canary bytes in it (little-endian).
/// Blocks are at least 8 bytes, so the window always fits: it ends at
/// `end`, or covers the block's first 8 bytes when `end` is smaller.
#[inline(always)]
fn window(size: usize, end: usize) -> (usize, u64) {
    let at = end.max(8) - 8;
    let hi = end - at;
    let upto = if hi == 8 { u64::MAX } else { (1u64 << (hi * 8)) - 1 };
    let below = (1u64 << ((size - at) * 8)) - 1;
    (at, upto & !below)
}

/// Writes the canary of a block of `page` handed out for `size` bytes.
///
/// # Safety
/// `p` must be a live block of `page`, with `size + EXTRA <= bsize`.
pub unsafe fn write(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: per the caller; `keep` is true.
    unsafe { arm(page, p, size, true) }
}

/// [`write()`] for a block being handed out whose bytes are all zero past
/// its first word, which the caller may find zeroed too (`zero-on-free`
/// hands out only such blocks). The canary word is written without being
/// read: a read first would map the kernel's shared zero page where the
/// block's last OS page was never touched, and the write just after would
/// fault again and flush the TLB of every CPU the process runs on.
///
/// # Safety
/// As for [`write()`], and the block must be zero past its first word.
pub unsafe fn write_zeroed(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: per the caller; with `keep` false only bytes known to be
    // zero (or the first word, which is the caller's to clear) are zeroed.
    unsafe { arm(page, p, size, false) }
}

/// # Safety
/// As for [`write()`]; with `keep` false, as for [`write_zeroed`].
#[inline(always)]
unsafe fn arm(page: *const Page, p: *mut u8, size: usize, keep: bool) {
    // The caller's bytes are written back as they were, or are zero.
    // SAFETY: the window lies inside the block (see `window`), and only its
    // canary bytes, in `[size, bsize - 4)`, change.
    unsafe {
        let bsize = super::block_usable(page, p);
        let k = key(page);
        let (at, mask) = window(size, canary_end(size, bsize));
        let w = p.add(at) as *mut u64;
        let kept = if keep { w.read_unaligned() & !mask } else { 0 };
        w.write_unaligned(kept | (canary_word(k, p, at) & mask));
        (p.add(bsize - 4) as *mut u32).write_unaligned(tail_word(k, p, bsize, bsize - size));
    }
}

/// The requested size of a block of `page`, if its canary is intact.
///
/// # Safety
/// `p` must be a live block of `page`, written by [`write()`].
pub unsafe fn check(page: *const Page, p: *mut u8) -> Option<usize> {
    // SAFETY: reads stay inside the block.
    unsafe {
        let bsize = super::block_usable(page, p);
        let k = key(page);
        let tail = (p.add(bsize - 4) as *const u32).read_unaligned();
        let delta = ((tail ^ k as u32) & 0x00ff_ffff) as usize;
        // The trailer (the top byte) is checked apart: `trailer_intact`.
        if !(EXTRA..=bsize).contains(&delta) {
            return None;
        }
        let size = bsize - delta;
        let (at, mask) = window(size, canary_end(size, bsize));
        let w = (p.add(at) as *const u64).read_unaligned();
        ((w ^ canary_word(k, p, at)) & mask == 0).then_some(size)
    }
}

// Only the canary build has the bytes `EXTRA` reserves for it.
#[cfg(all(test, feature = "canary"))]
mod tests {
    use super::*;

    #[test]
    fn every_canary_byte_is_checked_and_caller_bytes_are_kept() {
        let mut page = Page::empty();
        page.keys[1] = 0x0123_4567_89ab_cdef;
        for bsize in (8..=160).step_by(8) {
            page.block_size = bsize;
            for size in 0..=bsize - EXTRA {
                // Blocks at several alignments mod 8, as the key is tiled
                // by address.
                for shift in [0, 8, 16] {
                    // A block handed out zeroed is armed without a read,
                    // and stays zero below the request.
                    let mut zeroed = [0u8; 192];
                    let z = zeroed[shift..].as_mut_ptr();
                    // SAFETY: `z` has `bsize` bytes of `zeroed`, all zero.
                    unsafe {
                        write_zeroed(&page, z, size);
                        assert_eq!(check(&page, z), Some(size), "zeroed: bsize {bsize} size {size}");
                    }
                    assert!(zeroed[shift..shift + size].iter().all(|&b| b == 0), "zeroed kept");
                    let mut mem = [0x5au8; 192];
                    let p = mem[shift..].as_mut_ptr();
                    // SAFETY: `p` has `bsize` bytes of `mem`; the page is
                    // a local descriptor with the block size set.
                    unsafe {
                        write(&page, p, size);
                        assert_eq!(check(&page, p), Some(size), "bsize {bsize} size {size}");
                    }
                    assert!(
                        mem[shift..shift + size].iter().all(|&b| b == 0x5a),
                        "caller bytes kept"
                    );
                    let end = canary_end(size, bsize);
                    for i in size..end {
                        let mut bad = mem;
                        bad[shift + i] ^= 0x01;
                        // SAFETY: as above.
                        let seen = unsafe { check(&page, bad[shift..].as_mut_ptr()) };
                        assert_eq!(seen, None, "bsize {bsize} size {size}: byte {i} flip unseen");
                    }
                }
            }
        }
    }
}
