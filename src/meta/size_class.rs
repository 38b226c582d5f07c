//! Size classes: request size -> bin -> block size.
//!
//! Sizes up to 8 words get one bin per word count; above that there are
//! eight bins per power of two up to the largest medium block (64 KiB).
//! mimalloc uses four, which lets a request just past a power of two waste
//! up to a fifth of its block; eight keep every request above 8 words
//! under an eighth (at most 1/9 of the block), which our memory target
//! asks for, at the cost of more (but emptier) page queues. Large blocks
//! (up to 2 MiB) go back to four per power of two: each class lives in
//! 4 MiB segments of slots holding a few blocks each (`large.rs`), so every
//! extra class costs a mostly empty segment, more than the slack it saves
//! (measured when those segments were per thread: docs/PERFORMANCE.md,
//! "Four large size classes per power of two").
//! In the guard-pages build a large request is padded by the guard page
//! its block ends with (`harden::padded`).
//! Bins above [`MAX_BIN`] do not exist: such requests are huge and get
//! their own segment.

use crate::meta::constants::{LARGE_OBJ_MAX, MEDIUM_OBJ_MAX, WORD};

/// Largest word count with eight bins per power of two (the largest medium
/// block), its bin, and its power of two.
const COARSE_WSIZE: usize = MEDIUM_OBJ_MAX / WORD;
const COARSE_SHIFT: usize = COARSE_WSIZE.trailing_zeros() as usize;
const COARSE_BIN: usize = ((COARSE_SHIFT - 1) << 3) + 7 - 15;

/// Index of the largest bin served from pages; its blocks are
/// [`LARGE_OBJ_MAX`] bytes.
pub const MAX_BIN: usize = bin_of_wsize(LARGE_OBJ_MAX / WORD);
/// Number of bins including the unused bin 0.
pub const BIN_COUNT: usize = MAX_BIN + 1;

/// Words needed for `size` bytes (a zero size still needs a word).
#[inline(always)]
pub const fn wsize_of(size: usize) -> usize {
    size.div_ceil(WORD)
}

/// The bin for a request of `wsize` words; `wsize` must be at most
/// `LARGE_OBJ_MAX / WORD`.
#[inline(always)]
pub const fn bin_of_wsize(wsize: usize) -> usize {
    if wsize == 0 {
        // The two-word bin: the C library asks for 16-byte alignment on
        // every malloc, and a zero-size request rounded up to 16 is still
        // 0; serving it here spares every malloc a `max(1)`.
        2
    } else if wsize <= 8 {
        wsize
    } else {
        // w >= 8, so b >= 3: the top bit picks the power of two, the next
        // three bits one of its eight bins; -15 makes wsize 9 land on bin 9.
        let w = wsize - 1;
        let b = (usize::BITS - 1 - w.leading_zeros()) as usize;
        if wsize <= COARSE_WSIZE {
            (b << 3) + ((w >> (b - 3)) & 7) - 15
        } else {
            // Past the medium pages, four per power of two: see above.
            COARSE_BIN + ((b - COARSE_SHIFT) << 2) + ((w >> (b - 2)) & 3) + 1
        }
    }
}

/// The bin for a request of `size` bytes, `size <= LARGE_OBJ_MAX`.
#[inline(always)]
pub const fn bin_of(size: usize) -> usize {
    bin_of_wsize(wsize_of(size))
}

/// Block size in bytes of every bin (bin 0 is unused and reads as one word).
pub static BLOCK_SIZE: [usize; BIN_COUNT] = block_sizes();

const fn block_sizes() -> [usize; BIN_COUNT] {
    let mut sizes = [WORD; BIN_COUNT];
    // The block size of a bin is the largest word count mapping to it.
    let mut w = 1;
    while w <= LARGE_OBJ_MAX / WORD {
        sizes[bin_of_wsize(w)] = w * WORD;
        w += 1;
    }
    sizes
}

/// Block size for a request of `size` bytes (`size <= LARGE_OBJ_MAX`).
#[inline]
pub fn block_size_of(size: usize) -> usize {
    // SAFETY-free: bin_of never exceeds MAX_BIN for sizes in range, and the
    // caller guarantees the range; `get` keeps this panic-free regardless.
    match BLOCK_SIZE.get(bin_of(size)) {
        Some(&b) => b,
        None => usize::MAX,
    }
}

/// A size whose block is naturally aligned to `align`: blocks of a page sit
/// at `start + k * block_size`, with `start` aligned to the largest power of
/// two dividing `block_size`, so picking a block size that is a multiple of
/// `align` gives aligned blocks without an interior pointer.
/// Returns `None` when that needs more than `LARGE_OBJ_MAX`.
#[inline]
pub fn natural_size_for_align(size: usize, align: usize) -> Option<usize> {
    let s = if size < align { align } else { size };
    if s > LARGE_OBJ_MAX {
        return None;
    }
    let rounded = s.next_multiple_of(align);
    if rounded <= LARGE_OBJ_MAX && block_size_of(rounded).is_multiple_of(align) {
        Some(rounded)
    } else {
        // A power of two at least `s` is a multiple of `align` and is itself
        // a block size, so the waste is bounded by a factor of two.
        let p = s.next_power_of_two();
        (p <= LARGE_OBJ_MAX).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::constants::SIZE_ALIGN_MAX;

    /// `alloc::aligned` hands out any block past the small sizes for an
    /// alignment up to SIZE_ALIGN_MAX.
    #[test]
    fn every_block_past_the_small_sizes_is_a_multiple_of_size_align_max() {
        use crate::meta::constants::SMALL_SIZE_MAX;
        for (bin, &bsize) in BLOCK_SIZE.iter().enumerate().skip(bin_of(SMALL_SIZE_MAX + 1)) {
            assert_eq!(bsize % SIZE_ALIGN_MAX, 0, "bin {bin}: {bsize}");
        }
    }

    #[test]
    fn small_sizes_get_one_bin_per_word() {
        for (w, &bsize) in BLOCK_SIZE.iter().enumerate().take(9).skip(1) {
            assert_eq!(bin_of(w * 8), w);
            assert_eq!(bsize, w * 8);
        }
        // A zero-size request gets two words, as 16-byte alignment needs.
        assert_eq!(bin_of(0), 2);
        assert_eq!(bin_of(1), 1);
        assert_eq!(bin_of(9), 2);
    }

    #[test]
    fn bins_are_monotonic_and_cover_every_size() {
        let mut last_bin = 1;
        for size in 1..=LARGE_OBJ_MAX {
            let bin = bin_of(size);
            assert!(bin >= last_bin, "bin went down at {size}");
            assert!(bin <= MAX_BIN);
            let bsize = BLOCK_SIZE[bin];
            assert!(bsize >= size, "block {bsize} too small for {size}");
            if bin > 1 {
                assert!(BLOCK_SIZE[bin - 1] < size, "{size} fits an earlier bin");
            }
            last_bin = bin;
        }
        assert_eq!(BLOCK_SIZE[MAX_BIN], LARGE_OBJ_MAX);
    }

    #[test]
    fn waste_stays_under_one_eighth_above_eight_words_and_one_fifth_for_large_blocks() {
        for size in 65..=LARGE_OBJ_MAX {
            let bsize = block_size_of(size);
            let waste = bsize - size;
            if size <= MEDIUM_OBJ_MAX {
                // Strictly less than an eighth of the block for every size.
                assert!(waste * 8 < bsize, "size {size} block {bsize}");
                assert!(waste * 9 <= bsize + 9 * 7, "size {size} block {bsize}");
            } else {
                assert!(waste * 5 < bsize, "size {size} block {bsize}");
            }
        }
    }

    #[test]
    fn large_blocks_have_four_bins_per_power_of_two() {
        let mut large = BLOCK_SIZE.iter().copied().filter(|&b| b > MEDIUM_OBJ_MAX);
        assert_eq!(large.clone().count(), 4 * 5, "64 KiB..2 MiB: five powers of two");
        assert_eq!(large.next(), Some(80 << 10));
        assert_eq!(block_size_of(MEDIUM_OBJ_MAX), MEDIUM_OBJ_MAX);
    }

    #[test]
    fn block_sizes_are_strictly_increasing_word_multiples() {
        for bin in 2..BIN_COUNT {
            assert!(BLOCK_SIZE[bin] > BLOCK_SIZE[bin - 1]);
            assert_eq!(BLOCK_SIZE[bin] % WORD, 0);
        }
    }

    #[test]
    fn sizes_rounded_to_sixteen_get_blocks_that_are_multiples_of_sixteen() {
        // What `SIZE_ALIGN_MAX` (and GlobalAlloc's fast path for align 16)
        // relies on.
        for size in (16..=LARGE_OBJ_MAX).step_by(16) {
            assert_eq!(block_size_of(size) % SIZE_ALIGN_MAX, 0, "size {size}");
        }
    }

    #[test]
    fn natural_alignment_sizes_are_multiples_of_the_alignment() {
        let mut align = 16;
        while align <= LARGE_OBJ_MAX {
            for size in [1, align / 2, align - 1, align, align + 1, 3 * align] {
                if let Some(s) = natural_size_for_align(size, align) {
                    assert!(s >= size);
                    assert_eq!(block_size_of(s) % align, 0, "size {size} align {align}");
                    assert!(block_size_of(s) <= 2 * size.max(align));
                } else {
                    assert!(size.max(align).next_power_of_two() > LARGE_OBJ_MAX);
                }
            }
            align *= 2;
        }
    }
}
