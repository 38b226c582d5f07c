//! The record of how a span of segment memory was left protected, which
//! the arena keeps and the guard defence reads: shared by both, so it
//! lives below them.

/// The protection a span comes with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Prior {
    /// Never used: readable and writable throughout.
    Open,
    /// Every slice sealed: inaccessible past the first `info_size` bytes
    /// of each (and maybe within those too, for a slice that was not the
    /// first of the span it was released with).
    Sealed,
    /// One slice left by a segment of the layout asked for: open, with the
    /// guards `Span::guards` names in place (page slots of a small or
    /// medium segment, slots of a segment of large slots).
    Guarded,
    /// Open but for the guards in [`Held`], and nothing else: the guards a
    /// huge segment left, on slices otherwise never used or left open.
    Ranges(Held),
    /// Anything else: some slices used without a seal, or a mix.
    Mixed,
}

/// How a segment of the hardened build leaves its slice: open, its guards
/// in place, so the next segment of the same layout takes it without a
/// kernel call. `layout` 0 means none of this (the plain build, and the
/// seals' build for large and huge segments, which it seals).
///
/// ```text
/// layout 1, 2 (small, medium): mask bit i, page slot i's guard is in place
/// layout FIRST_LARGE + c (segment of large slots of class c): mask bit i,
///   the guard page that ends slot i is in place; bit SLACK_BIT, the
///   guards over the slack below the first slot and after the last are
/// layout RANGES (a huge segment, any number of slices): the guard after
///   its header with the padding up to its block, and the guard after its
///   block, see `Guards::huge`
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Guards {
    pub layout: u8,
    pub mask: u64,
}

/// The first layout of segments of large slots: class `c` is `FIRST_LARGE + c`.
pub const FIRST_LARGE: u8 = 3;
/// The layout of a span left with a few guard ranges (a huge segment's).
pub const RANGES: u8 = 255;
/// The mask bit of a large layout that says the slack guards are in place
/// (a segment has fewer slots than 63).
pub const SLACK_BIT: u32 = 63;

/// Offsets in a span's ranges are kept in units of this many bytes: every
/// OS page size is a multiple of it.
const UNIT: usize = 4096;
const SLICE_UNITS: u64 = (crate::meta::constants::SEGMENT_SIZE / UNIT) as u64;

impl Guards {
    /// Whether the guards of this layout stand in for a seal (small and
    /// medium segments, which would otherwise seal their slice): those
    /// count against the `mprotect` way's budget of slices left guarded.
    /// Segments of large slots and huge ones leave their guards where
    /// they are either way; the record only says where.
    pub fn instead_of_seal(self) -> bool {
        self.layout != 0 && self.layout < FIRST_LARGE
    }

    /// Whether the mask says where the guards are: for a large layout,
    /// only if the slack guards were made; for [`RANGES`], unless it is
    /// 0 (no huge segment guards all of itself).
    pub fn known(self) -> bool {
        match self.layout {
            0 => false,
            RANGES => self.mask != 0,
            l if l >= FIRST_LARGE => self.mask & 1 << SLACK_BIT != 0,
            _ => true,
        }
    }

    /// A huge segment's guards: `[header.0, header.1)`, the header's
    /// guard with the padding below the block that adjoins it (empty if
    /// not made), and `[tail.0, tail.1)` after its block (empty if none).
    /// Offsets from the span's start, multiples of the OS page size. None
    /// when the record cannot hold them: the first range must lie in the
    /// first slice, the tail start within what 20 bits of units count and
    /// its length within 12; the span's guards are then not known, and its
    /// next user removes them all.
    pub fn huge(header: (usize, usize), tail: (usize, usize)) -> Option<Guards> {
        let u = |x: usize| (x / UNIT) as u64;
        let fits = header.0 <= header.1
            && header.1 as u64 <= SLICE_UNITS * UNIT as u64
            && tail.0 <= tail.1
            && u(tail.0) < 1 << 20
            && u(tail.1) - u(tail.0) < 1 << 12;
        fits.then(|| Guards {
            layout: RANGES,
            mask: u(header.0) | u(header.1) << 16 | u(tail.0) << 32 | (u(tail.1) - u(tail.0)) << 52,
        })
    }

    /// Of a span of `n` slices left as [`Guards::huge`] says, the guards
    /// in slice `i`: up to two ranges, in units from the slice's start,
    /// packed as [`Held`] keeps a slice's.
    pub fn huge_slice(self, i: usize) -> u64 {
        let (h0, h1) = (self.mask & 0xffff, self.mask >> 16 & 0xffff);
        let t0 = self.mask >> 32 & 0xf_ffff;
        let t1 = t0 + (self.mask >> 52);
        let base = i as u64 * SLICE_UNITS;
        let header = if i == 0 && h0 < h1 { pack_range(h0, h1) } else { 0 };
        let (from, to) = (
            t0.clamp(base, base + SLICE_UNITS) - base,
            t1.clamp(base, base + SLICE_UNITS) - base,
        );
        let tail = if from < to { pack_range(from, to) } else { 0 };
        header | tail << 32
    }
}

fn pack_range(a: u64, b: u64) -> u64 {
    a | b << 16
}

/// The guard ranges a span holds (with [`Prior::Ranges`]): byte offsets
/// from its start, ascending and disjoint, at most [`Held::MAX`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Held {
    n: u8,
    ranges: [(u32, u32); Held::MAX],
}

impl Held {
    pub const MAX: usize = 6;

    /// The ranges.
    pub fn ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.ranges[..self.n as usize]
            .iter()
            .map(|&(a, b)| (a as usize * UNIT, b as usize * UNIT))
    }

    /// Adds the ranges of slice `i` of the span (as [`Guards::huge_slice`]
    /// packs them), after those of the slices before it. False if they do
    /// not fit: the span's protection is then not known exactly.
    pub fn add_slice(&mut self, i: usize, packed: u64) -> bool {
        let base = i as u64 * SLICE_UNITS;
        for half in [packed & 0xffff_ffff, packed >> 32] {
            let (a, b) = (half & 0xffff, half >> 16);
            if a >= b {
                continue;
            }
            let (a, b) = ((base + a) as u32, (base + b) as u32);
            let n = self.n as usize;
            if n > 0 && self.ranges[n - 1].1 == a {
                self.ranges[n - 1].1 = b;
            } else if n == Held::MAX {
                return false;
            } else {
                self.ranges[n] = (a, b);
                self.n += 1;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::constants::SEGMENT_SIZE;

    #[test]
    fn a_huge_segments_guards_come_back_slice_by_slice() {
        // Three slices: the header's guard at 72..76 KiB, the page after
        // the block at 5 MiB + 8 KiB.
        let tail = SEGMENT_SIZE + (1 << 20) + 8192;
        let g = Guards::huge((72 << 10, 76 << 10), (tail, tail + 4096)).unwrap();
        let mut held = Held::default();
        for i in 0..3 {
            assert!(held.add_slice(i, g.huge_slice(i)));
        }
        let got: std::vec::Vec<_> = held.ranges().collect();
        assert_eq!(got, [(72 << 10, 76 << 10), (tail, tail + 4096)]);
        // Both in a span of one slice, and a tail of several pages that
        // crosses into the next slice.
        let g = Guards::huge((72 << 10, 76 << 10), (SEGMENT_SIZE - 8192, SEGMENT_SIZE + 8192)).unwrap();
        let mut held = Held::default();
        for i in 0..2 {
            assert!(held.add_slice(i, g.huge_slice(i)));
        }
        let got: std::vec::Vec<_> = held.ranges().collect();
        assert_eq!(
            got,
            [(72 << 10, 76 << 10), (SEGMENT_SIZE - 8192, SEGMENT_SIZE + 8192)]
        );
        // No tail, no header guard: nothing held.
        let g = Guards::huge((0, 0), (2 * SEGMENT_SIZE, 2 * SEGMENT_SIZE)).unwrap();
        let mut held = Held::default();
        for i in 0..2 {
            assert!(held.add_slice(i, g.huge_slice(i)));
        }
        assert_eq!(held.ranges().count(), 0);
        // Too many ranges to hold.
        let g = Guards::huge((4096, 8192), (SEGMENT_SIZE - 8192, SEGMENT_SIZE - 4096)).unwrap();
        let mut held = Held::default();
        let fits = (0..8).all(|i| held.add_slice(2 * i, g.huge_slice(0)));
        assert!(!fits);
        // A block aligned to a whole slice: the header's guard and the
        // padding up to the block fill the first slice, the tail lies in
        // the second.
        let tail = SEGMENT_SIZE + (2 << 20);
        let g = Guards::huge((12 << 10, SEGMENT_SIZE), (tail, tail + 16384)).unwrap();
        let mut held = Held::default();
        for i in 0..2 {
            assert!(held.add_slice(i, g.huge_slice(i)));
        }
        let got: std::vec::Vec<_> = held.ranges().collect();
        assert_eq!(got, [(12 << 10, SEGMENT_SIZE), (tail, tail + 16384)]);
        // Padding past the first slice, a tail past what the mask counts,
        // or one too long: no record.
        let end = 2 * SEGMENT_SIZE;
        assert_eq!(Guards::huge((12 << 10, SEGMENT_SIZE + 4096), (end, end)), None);
        assert_eq!(
            Guards::huge((12 << 10, 16 << 10), (UNIT << 20, (UNIT << 20) + 4096)),
            None
        );
        assert_eq!(Guards::huge((12 << 10, 16 << 10), (0, UNIT << 12)), None);
    }
}
