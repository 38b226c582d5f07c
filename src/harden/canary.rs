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
//! With `underflow-trailers`, the trailer, the slot's last byte, is a keyed
//! byte of its address alone,
//! whatever the slot holds: in small and medium pages every slot has it from
//! when it is carved, live or free (zero-on-free keeps it), so a write that
//! ends just before a block (an underflow of 1 byte or more) changes the
//! trailer of the slot before, and is seen when that block is freed or
//! reallocated and when the slot before is freed or handed out.

use crate::meta::page::Page;

pub const ON: bool = cfg!(feature = "canary");
/// `underflow-trailers` (which turns `canary` on): small and medium slots
/// end in their trailer byte.
pub const TRAILERS: bool = cfg!(feature = "underflow-trailers");
const _: () = assert!(!TRAILERS || ON);

/// Bytes a block needs beyond the request: one canary byte and the tail.
pub const EXTRA: usize = if ON { 5 } else { 0 };

/// Whether blocks of this page carry a canary: all of them, huge ones
/// too (past the request's last OS page lies open slack up to the guard
/// at the segment's end, or with `seal-freed-large` the guard: an
/// overflow short of it faults nowhere, and the canary reports it).
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

/// The trailer byte of the slot that ends at `end`, under `key`: the top
/// byte of a multiply of the keyed address, so every bit of both reaches
/// it and one slot's trailer tells nothing of its neighbour's without the
/// key. Its top bit is set, so a write of a NUL or ASCII byte always
/// shows (others 1 time in 128).
#[inline(always)]
fn trailer_at(key: usize, end: usize) -> u8 {
    (((end ^ key) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 | 0x80
}

/// Bytes checked after the request: up to 8, before the tail.
const CANARY_BYTES: usize = 8;

/// The 8-byte window of a slot of `bsize` bytes holding the canary bytes
/// of a request of `size` (`[size, end)` with `end` up to 8 bytes on and
/// before the tail), as its offset and the mask of the canary bytes in it
/// (little-endian). The window ends at `end`, or in an 8-byte slot covers
/// the slot whole; no divide.
#[inline(always)]
fn window(size: usize, bsize: usize) -> (usize, u64) {
    if bsize >= 16 {
        // The window ends where the canary does, `CANARY_BYTES` past the
        // request or at the tail: `size - at` is 0 to 7, as the request
        // leaves at least one canary byte before the tail.
        let at = size.min(bsize - 4 - CANARY_BYTES);
        (at, u64::MAX << ((size - at) * 8))
    } else {
        // An 8-byte slot: `[size, bsize - 4)` within its first 4 bytes.
        (0, (u64::MAX << (size * 8)) & (u64::MAX >> ((4 + 8 - bsize) * 8)))
    }
}

/// The `bsize` bytes of one block's slot at `start`, with its page's key:
/// the one place that turns a slot into the addresses of its trailer, its
/// tail and its canary bytes. Making one reads only the key; what may be
/// read or written in the slot is each accessor's obligation. Held in
/// registers by the hooks, so each event computes the key, the trailer
/// and the window once.
#[derive(Clone, Copy)]
pub struct Slot {
    start: *mut u8,
    bsize: usize,
    key: usize,
}

impl Slot {
    /// # Safety
    /// `page` must be a readable descriptor, and `[start, start + bsize)`
    /// a slot of its page with `bsize >= 8`, of which the caller may use
    /// all `bsize` bytes (not a large block of the guard build sealed past
    /// its request: see [`Slot::of_block`]).
    #[inline(always)]
    pub unsafe fn new(page: *const Page, start: *mut u8, bsize: usize) -> Slot {
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
    pub unsafe fn of_block(page: *const Page, p: *mut u8) -> Slot {
        // SAFETY: `p` is a block of the in-use `page` (this fn's contract),
        // which `block_usable` needs; the bytes it counts are `p`'s slot.
        unsafe { Slot::new(page, p, super::block_usable(page, p)) }
    }

    /// The slot's first byte.
    #[inline(always)]
    pub fn start(self) -> *mut u8 {
        self.start
    }

    /// The trailer byte this slot must end in.
    #[inline(always)]
    pub fn trailer(self) -> u8 {
        trailer_at(self.key, self.start as usize + self.bsize)
    }

    /// The trailer byte the slot right below this one must end in (the
    /// page's slots are all `bsize` bytes).
    #[inline(always)]
    fn trailer_below(self) -> u8 {
        trailer_at(self.key, self.start as usize)
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
        ((self.key as u64) | 0x8080_8080_8080_8080)
            .rotate_right((((self.start as usize + at) & 7) * 8) as u32)
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

    /// Whether the slot still ends in its trailer.
    ///
    /// # Safety
    /// The slot's last byte must be readable.
    #[inline(always)]
    pub unsafe fn trailer_intact(self) -> bool {
        // SAFETY: the slot's last byte is readable (this fn's contract).
        unsafe { *self.last_byte() == self.trailer() }
    }

    /// Writes the slot's trailer.
    ///
    /// # Safety
    /// The slot's last byte must be the caller's to write.
    #[inline(always)]
    pub unsafe fn set_trailer(self) {
        // SAFETY: the slot's last byte is the caller's (this fn's contract).
        unsafe { *self.last_byte() = self.trailer() };
    }

    /// Whether the slot right below this one, in the same page, still ends
    /// in its trailer; if not, it is written again (a slot's trailer byte
    /// is the allocator's, live or free), so an error handler hears of the
    /// underflow once.
    ///
    /// # Safety
    /// A slot of `bsize` bytes of the same page must lie right below this
    /// one.
    #[inline(always)]
    pub unsafe fn below_intact_or_mend(self) -> bool {
        let t = self.trailer_below();
        let below = self.start.wrapping_sub(1);
        // SAFETY: `below` is the last byte of the slot below, in the same
        // page (this fn's contract), whose trailer byte is the allocator's.
        unsafe {
            if *below == t {
                return true;
            }
            *below = t;
        }
        false
    }

    /// Writes the slot's last word as zero but for its trailer, in one
    /// store (the trailer byte never changes, even for a moment: the owner
    /// of the block above may be reading it from another thread).
    ///
    /// # Safety
    /// The slot's last word must be the caller's to write, and `bsize` a
    /// multiple of 8 of at least 16.
    #[inline(always)]
    pub unsafe fn set_last_word_trailer(self) {
        let word = (self.trailer() as u64) << 56;
        // SAFETY: the slot's last word is the caller's to write (this fn's
        // contract), 8-aligned as slots and `bsize` are multiples of 8.
        unsafe { core::ptr::write_volatile(self.last_word(), word) };
    }

    /// Arms the canary of a block for `size` bytes: the canary bytes
    /// after the request and the tail (which also writes the trailer
    /// again). With `fresh` (a block being handed out, whose bytes hold
    /// nobody's data yet) the canary word is written without being read,
    /// and what of it lies below the request is zeroed, which keeps a
    /// block that was zero past its first word so: the read costs a load
    /// on every `malloc`, and on a block whose OS page there was never
    /// touched (a fresh large block) it would map the kernel's shared zero
    /// page, and the write just after would fault again and flush the TLB
    /// of every CPU the process runs on. Without `fresh` (a live block
    /// resized in place) the owner's bytes in the word are kept.
    ///
    /// # Safety
    /// The slot must be a live block, the caller's to write, with
    /// `size + EXTRA <= bsize`; with `fresh`, being handed out.
    #[inline(always)]
    pub unsafe fn arm(self, size: usize, fresh: bool) {
        let (at, mask) = window(size, self.bsize);
        // The owner's bytes are written back as they were, or zero.
        let kept = if fresh {
            0
        } else {
            // SAFETY: the window lies inside the block (see `window`),
            // which is the caller's (this fn's contract).
            unsafe { self.at::<u64>(at).read_unaligned() & !mask }
        };
        // SAFETY: as for the read: inside the block, and only the canary
        // bytes in `[size, bsize - 4)` change.
        unsafe {
            self.at::<u64>(at)
                .write_unaligned(kept | (self.canary_word(at) & mask))
        };
        // SAFETY: `size + EXTRA <= bsize` (this fn's contract) leaves the
        // block's last 4 bytes to the tail.
        unsafe { self.tail().write_unaligned(self.tail_word(self.bsize - size)) };
    }

    /// The size the slot's tail records, if it reads as one, for a report
    /// (see `error::report_sized`): the canary bytes are not checked, so
    /// an overflow that spared the tail still names its block's request.
    /// Never a size larger than the slot, but a tail written over (or a
    /// freed block's, wiped) may read as a wrong size.
    ///
    /// # Safety
    /// The slot's bytes must be readable.
    #[inline]
    pub unsafe fn recorded_size(self) -> Option<usize> {
        // SAFETY: the tail is the slot's last 4 bytes, readable (this fn's
        // contract).
        let tail = unsafe { self.tail().read_unaligned() };
        let delta = ((tail ^ self.key as u32) & 0x00ff_ffff) as usize;
        (EXTRA..=self.bsize).contains(&delta).then(|| self.bsize - delta)
    }

    /// The requested size of the live block in the slot, if its canary
    /// (and the size its tail records) is intact.
    ///
    /// # Safety
    /// The slot must be a live block armed by [`Slot::arm`].
    #[inline(always)]
    pub unsafe fn check(self) -> Option<usize> {
        // SAFETY: the tail is the block's last 4 bytes, readable as the block
        // is live (this fn's contract).
        let tail = unsafe { self.tail().read_unaligned() };
        let delta = ((tail ^ self.key as u32) & 0x00ff_ffff) as usize;
        // The trailer (the top byte) is checked apart: `trailer_intact`.
        if !(EXTRA..=self.bsize).contains(&delta) {
            return None;
        }
        let size = self.bsize - delta;
        let (at, mask) = window(size, self.bsize);
        // SAFETY: the window lies inside the live block (see `window`).
        let w = unsafe { self.at::<u64>(at).read_unaligned() };
        ((w ^ self.canary_word(at)) & mask == 0).then_some(size)
    }
}

/// The bytes of a block of `bsize` bytes armed for a request of `size`
/// that its owner, or an overflow the canary did not catch, can have
/// changed, short of the slot's last word: the request and its canary
/// bytes, rounded up to a word. The rest up to the last word is slack that
/// was zero when the block was handed out (see `zero-on-free`).
#[inline(always)]
pub fn written_below_last_word(size: usize, bsize: usize) -> usize {
    ((size + CANARY_BYTES + 7) & !7).min(bsize - 8)
}

/// Writes the trailer of the slot of `bsize` bytes at `slot`.
///
/// # Safety
/// `[slot, slot + bsize)` must be a slot of `page`'s page whose last byte
/// is the caller's to write, `page` a readable descriptor and `bsize >= 8`.
#[inline(always)]
pub unsafe fn set_trailer(page: *const Page, slot: *mut u8, bsize: usize) {
    // SAFETY: `page` is readable and the slot one of its page's, its last
    // byte the caller's (this fn's contract).
    unsafe { Slot::new(page, slot, bsize).set_trailer() }
}

/// Writes the canary of a block of `page` being handed out for `size`
/// bytes, which holds nothing of its new owner's yet: without reading it
/// first (see [`Slot::arm`]), so what of the canary's word lies below the
/// request is zeroed. A huge block's canary lies on the OS page of its
/// request's end, usually untouched: a read there would map the kernel's
/// zero page only for the write to fault again.
///
/// # Safety
/// `p` must be a block of the in-use `page` being handed out, the
/// caller's to write, with `size + EXTRA <= bsize`.
pub unsafe fn write_fresh(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: `p` is a block of the in-use `page` being handed out, the
    // caller's, with room for the canary (this fn's contract).
    unsafe { Slot::of_block(page, p).arm(size, true) }
}

/// Writes the canary of a live block of `page` for `size` bytes (a block
/// resized in place), keeping its owner's bytes below the request.
///
/// # Safety
/// `p` must be a live block of the in-use `page`, the caller's to write,
/// with `size + EXTRA <= bsize`.
pub unsafe fn write(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: `p` is a live block of the in-use `page`, the caller's, with
    // room for the canary (this fn's contract).
    unsafe { Slot::of_block(page, p).arm(size, false) }
}

/// The requested size of a block of `page`, if its canary is intact.
///
/// # Safety
/// `p` must be a live block of the in-use `page`, written by [`write()`]
/// or [`write_fresh`].
pub unsafe fn check(page: *const Page, p: *mut u8) -> Option<usize> {
    // SAFETY: `p` is a live, armed block of the in-use `page` (this fn's
    // contract).
    unsafe { Slot::of_block(page, p).check() }
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
                        Slot::of_block(&page, z).arm(size, true);
                        assert_eq!(check(&page, z), Some(size), "zeroed: bsize {bsize} size {size}");
                    }
                    assert!(zeroed[shift..shift + size].iter().all(|&b| b == 0), "zeroed kept");
                    // A block handed out fresh over old bytes: armed
                    // without a read, what of the canary's word lies
                    // below the request zeroed, the rest left alone.
                    let mut old = [0x5au8; 192];
                    let o = old[shift..].as_mut_ptr();
                    // SAFETY: `o` has `bsize` bytes of `old`; the page is
                    // the local descriptor.
                    unsafe {
                        write_fresh(&page, o, size);
                        assert_eq!(check(&page, o), Some(size), "fresh: bsize {bsize} size {size}");
                    }
                    let (at, _) = window(size, bsize);
                    assert!(
                        old[shift..shift + at].iter().all(|&b| b == 0x5a),
                        "fresh: below the window"
                    );
                    assert!(
                        old[shift + at..shift + size].iter().all(|&b| b == 0),
                        "fresh: window zeroed"
                    );
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
                    let end = (size + CANARY_BYTES).min(bsize - 4);
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
