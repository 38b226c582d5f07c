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

/// The canary key of `page`.
///
/// # Safety
/// `page` must be a readable descriptor.
#[inline(always)]
unsafe fn key(page: *const Page) -> usize {
    // SAFETY: `page` is readable (this fn's contract); its keys are drawn
    // before it hands out a block and stay as they are while it is in use.
    unsafe { (*page).keys[1] }
}

/// The `bsize` bytes of one block's slot at `start`, with its page's key:
/// the one place that turns a slot into the addresses of its trailer, its
/// tail and its canary bytes. Making one reads only the key; what may be
/// read or written in the slot is each accessor's obligation.
#[derive(Clone, Copy)]
struct Slot {
    start: *mut u8,
    bsize: usize,
    key: usize,
}

impl Slot {
    /// # Safety
    /// `page` must be a readable descriptor, and `[start, start + bsize)`
    /// a slot of its page with `bsize >= 8`.
    #[inline(always)]
    unsafe fn new(page: *const Page, start: *mut u8, bsize: usize) -> Slot {
        Slot {
            start,
            bsize,
            // SAFETY: `page` is readable (this fn's contract).
            key: unsafe { key(page) },
        }
    }

    /// The slot of the live block `p`: the bytes its owner may use.
    ///
    /// # Safety
    /// `p` must be a live (or just taken) block of the in-use `page`.
    #[inline(always)]
    unsafe fn of_block(page: *const Page, p: *mut u8) -> Slot {
        // SAFETY: `p` is a block of the in-use `page` (this fn's contract),
        // which `block_usable` needs; the bytes it counts are `p`'s slot.
        unsafe { Slot::new(page, p, super::block_usable(page, p)) }
    }

    /// The address one past the slot's last byte.
    #[inline(always)]
    fn end(self) -> usize {
        self.start as usize + self.bsize
    }

    /// The trailer byte this slot must end in: top bit set, so a write of
    /// a NUL or ASCII byte always shows (others 1 time in 128).
    #[inline(always)]
    fn trailer(self) -> u8 {
        (((self.key ^ self.end().wrapping_mul(0x9e37_79b9_7f4a_7c15)) as u64 ^ 0x3c3c_3c3c_3c3c_3c3c) >> 56)
            as u8
            | 0x80
    }

    /// The 8 canary bytes at offset `at` of the slot, as a little-endian
    /// word: byte `(start + at) % 8` of the masked key first, so the canary
    /// is the key word tiled over aligned addresses.
    /// Every byte has its top bit set: an overflow by a byte below 0x80 — a
    /// string's terminating NUL, ASCII text — never matches, so it is
    /// always caught (a random byte matched 1 time in 256, and failed the
    /// tests that write one); other bytes match 1 time in 128.
    #[inline(always)]
    fn canary_word(self, at: usize) -> u64 {
        ((self.key as u64) ^ 0x5a5a_5a5a_5a5a_5a5a)
            .rotate_right((((self.start as usize + at) & 7) * 8) as u32)
            | 0x8080_8080_8080_8080
    }

    /// The tail word for a request `delta` bytes short of the slot: the
    /// keyed difference and the trailer.
    #[inline(always)]
    fn tail_word(self, delta: usize) -> u32 {
        (((delta ^ self.key) as u32) & 0x00ff_ffff) | ((self.trailer() as u32) << 24)
    }

    /// The slot's byte at offset `at`, as a `T` (the accessors below name
    /// which): arithmetic only, the pointer keeps the slot's provenance.
    #[inline(always)]
    fn at<T>(self, at: usize) -> *mut T {
        self.start.wrapping_add(at) as *mut T
    }

    /// The slot's last byte, its trailer.
    #[inline(always)]
    fn last_byte(self) -> *mut u8 {
        self.at(self.bsize - 1)
    }

    /// The slot's last word: the trailer in its top byte.
    #[inline(always)]
    fn last_word(self) -> *mut u64 {
        self.at(self.bsize - 8)
    }

    /// The slot's last 4 bytes: the tail word.
    #[inline(always)]
    fn tail(self) -> *mut u32 {
        self.at(self.bsize - 4)
    }
}

/// Whether the slot of `bsize` bytes at `slot` still ends in its trailer.
///
/// # Safety
/// `[slot, slot + bsize)` must be a readable slot of `page`'s page, `page`
/// a readable descriptor and `bsize >= 8`.
#[inline(always)]
pub unsafe fn trailer_intact(page: *const Page, slot: *const u8, bsize: usize) -> bool {
    // SAFETY: `page` is readable and the slot one of its page's (this fn's
    // contract).
    let s = unsafe { Slot::new(page, slot as *mut u8, bsize) };
    // SAFETY: the slot is readable (this fn's contract) and its last byte
    // inside it.
    unsafe { *s.last_byte() == s.trailer() }
}

/// Writes the trailer of the slot of `bsize` bytes at `slot`.
///
/// # Safety
/// `[slot, slot + bsize)` must be a slot of `page`'s page whose last byte
/// is the caller's to write, `page` a readable descriptor and `bsize >= 8`.
#[inline(always)]
pub unsafe fn set_trailer(page: *const Page, slot: *mut u8, bsize: usize) {
    // SAFETY: `page` is readable and the slot one of its page's (this fn's
    // contract).
    let s = unsafe { Slot::new(page, slot, bsize) };
    // SAFETY: the slot's last byte is the caller's to write (this fn's
    // contract).
    unsafe { *s.last_byte() = s.trailer() };
}

/// Writes the last word of the slot of `bsize` bytes at `slot` as zero
/// but for its trailer, in one store (the trailer byte never changes).
///
/// # Safety
/// `[slot, slot + bsize)` must be a slot of `page`'s page whose last word
/// is the caller's to write, `page` a readable descriptor and `bsize` a
/// multiple of 8 of at least 16.
#[inline(always)]
pub unsafe fn set_last_word_trailer(page: *const Page, slot: *mut u8, bsize: usize) {
    // SAFETY: `page` is readable and the slot one of its page's (this fn's
    // contract).
    let s = unsafe { Slot::new(page, slot, bsize) };
    let word = (s.trailer() as u64) << 56;
    // SAFETY: the slot's last word is the caller's to write (this fn's
    // contract), 8-aligned as slots and `bsize` are multiples of 8.
    unsafe { core::ptr::write_volatile(s.last_word(), word) };
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
/// `p` must be a live block of the in-use `page`, the caller's to write,
/// with `size + EXTRA <= bsize`.
pub unsafe fn write(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: `arm`'s contract with `keep` true is this fn's.
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
    // SAFETY: `arm`'s contract with `keep` false is this fn's: the block
    // is zero past its first word, which is the caller's to clear.
    unsafe { arm(page, p, size, false) }
}

/// # Safety
/// As for [`write()`]; with `keep` false, the block must also be zero past
/// its first word.
#[inline(always)]
unsafe fn arm(page: *const Page, p: *mut u8, size: usize, keep: bool) {
    // SAFETY: `p` is a live block of the in-use `page` (this fn's contract).
    let s = unsafe { Slot::of_block(page, p) };
    let (at, mask) = window(size, canary_end(size, s.bsize));
    // The caller's bytes are written back as they were, or are zero.
    let kept = if keep {
        // SAFETY: the window lies inside the block (see `window`), which
        // is the caller's (this fn's contract).
        unsafe { s.at::<u64>(at).read_unaligned() & !mask }
    } else {
        0
    };
    // SAFETY: as for the read: inside the block, and only the canary bytes
    // in `[size, bsize - 4)` change.
    unsafe { s.at::<u64>(at).write_unaligned(kept | (s.canary_word(at) & mask)) };
    // SAFETY: `size + EXTRA <= bsize` (this fn's contract) leaves the
    // block's last 4 bytes to the tail.
    unsafe { s.tail().write_unaligned(s.tail_word(s.bsize - size)) };
}

/// The requested size of a block of `page`, if its canary is intact.
///
/// # Safety
/// `p` must be a live block of the in-use `page`, written by [`write()`].
pub unsafe fn check(page: *const Page, p: *mut u8) -> Option<usize> {
    // SAFETY: `p` is a live block of the in-use `page` (this fn's contract).
    let s = unsafe { Slot::of_block(page, p) };
    // SAFETY: the tail is the block's last 4 bytes, readable as the block
    // is live (this fn's contract).
    let tail = unsafe { s.tail().read_unaligned() };
    let delta = ((tail ^ s.key as u32) & 0x00ff_ffff) as usize;
    // The trailer (the top byte) is checked apart: `trailer_intact`.
    if !(EXTRA..=s.bsize).contains(&delta) {
        return None;
    }
    let size = s.bsize - delta;
    let (at, mask) = window(size, canary_end(size, s.bsize));
    // SAFETY: the window lies inside the live block (see `window`).
    let w = unsafe { s.at::<u64>(at).read_unaligned() };
    ((w ^ s.canary_word(at)) & mask == 0).then_some(size)
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
                        // SAFETY: `bad` is a copy of `mem`, with `bsize` bytes
                        // from `shift` on; the page is the local descriptor.
                        let seen = unsafe { check(&page, bad[shift..].as_mut_ptr()) };
                        assert_eq!(seen, None, "bsize {bsize} size {size}: byte {i} flip unseen");
                    }
                }
            }
        }
    }
}
