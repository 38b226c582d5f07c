//! The shadow model: every live fortalloc block with the size and
//! alignment it was asked for and the pattern written into it, and the
//! checks every block must pass.

use std::collections::BTreeMap;

/// A live block as the model knows it.
#[derive(Clone, Copy, Debug)]
pub struct Live {
    pub size: usize,
    pub align: usize,
    pub seed: u8,
}

/// The pattern byte at offset `i` of a block stamped with `seed`.
#[inline]
pub fn pattern(seed: u8, i: usize) -> u8 {
    seed.wrapping_add((i as u8).wrapping_mul(7)) ^ (i >> 8) as u8
}

/// Offsets a block's pattern is written at: all of a small block, a sample
/// of a big one.
pub fn offsets(size: usize) -> impl Iterator<Item = usize> {
    let step = if size <= 4096 { 1 } else { 509 };
    // The last byte too, unless the steps already land on it.
    let last = (size > 4096 && !(size - 1).is_multiple_of(step)).then(|| size - 1);
    (0..size).step_by(step).chain(last)
}

#[derive(Default)]
pub struct Model {
    live: BTreeMap<usize, Live>,
}

impl Model {
    /// The `k`-th live block (wrapping), if any.
    pub fn pick(&self, k: usize) -> Option<(usize, Live)> {
        if self.live.is_empty() {
            return None;
        }
        self.live.iter().nth(k % self.live.len()).map(|(&p, &l)| (p, l))
    }

    /// Checks a block fortalloc just returned for `size` bytes aligned to
    /// `align` (zeroed if `zeroed`), stamps it and records it. Panics on any
    /// broken promise.
    pub fn add(&mut self, p: *mut u8, size: usize, align: usize, zeroed: bool, seed: u8) {
        let a = p as usize;
        assert!(a != 0, "null for {size} bytes");
        assert_eq!(a % align, 0, "{a:#x} not aligned to {align}");
        // SAFETY: `p` is a live fortalloc block.
        let usable = unsafe { fortalloc::usable_size(p) };
        assert!(usable >= size, "usable {usable} < asked {size}");
        let end = a + size.max(1);
        if let Some((&q, l)) = self.live.range(..end).next_back() {
            assert!(
                q + l.size.max(1) <= a || q >= end,
                "{a:#x}+{size} overlaps live {q:#x}+{}",
                l.size
            );
        }
        if let Some((&q, _)) = self.live.range(a..).next() {
            assert!(q >= end, "{a:#x}+{size} overlaps live {q:#x}");
        }
        for i in offsets(size) {
            // SAFETY: `i < size`, inside the block.
            unsafe {
                if zeroed {
                    assert_eq!(*p.add(i), 0, "zeroed block {a:#x} byte {i}");
                }
                *p.add(i) = pattern(seed, i);
            }
        }
        self.live.insert(a, Live { size, align, seed });
    }

    /// Records a block fortalloc returned without stamping or content
    /// checks (the `corrupt` target: neighbours may overwrite it), but with
    /// the alignment, ownership and overlap checks.
    pub fn add_unchecked(&mut self, p: *mut u8, size: usize, align: usize, seed: u8) {
        let a = p as usize;
        assert!(a != 0 && a.is_multiple_of(align), "{a:#x} for {size} bytes");
        let end = a + size.max(1);
        if let Some((&q, l)) = self.live.range(..end).next_back() {
            assert!(
                q + l.size.max(1) <= a || q >= end,
                "{a:#x}+{size} overlaps live {q:#x}+{}",
                l.size
            );
        }
        self.live.insert(a, Live { size, align, seed: 0 });
        let _ = seed;
    }

    /// Takes `p` out of the model without checking its contents.
    pub fn forget(&mut self, p: usize) {
        self.live.remove(&p);
    }

    /// Checks the pattern of `p` over its first `upto` bytes.
    pub fn check(&self, p: usize, l: Live, upto: usize) {
        for i in offsets(l.size).take_while(|&i| i < upto) {
            // SAFETY: the block is live and `i < size`.
            let b = unsafe { *(p as *const u8).add(i) };
            assert_eq!(
                b,
                pattern(l.seed, i),
                "block {p:#x} ({} B) byte {i} changed",
                l.size
            );
        }
    }

    /// Takes `p` out of the model after checking its contents.
    pub fn remove(&mut self, p: usize) -> Live {
        let l = self.live.remove(&p).expect("known block");
        self.check(p, l, l.size);
        l
    }

    /// Every live block, leaving the model empty.
    pub fn drain(&mut self) -> Vec<(usize, Live)> {
        std::mem::take(&mut self.live).into_iter().collect()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        for (p, l) in self.drain() {
            if l.seed != 0 {
                self.check(p, l, l.size);
            }
            // SAFETY: each block is live and freed once.
            unsafe { fortalloc::free(p as *mut u8) };
        }
    }
}
