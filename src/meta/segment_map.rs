//! Which 4 MiB granules of the address space hold a fortalloc segment.
//!
//! One byte per granule of the 47-bit user address space (32 MiB of `.bss`,
//! touched only where segments live: 4 KiB of it covers 16 GiB). A pointer
//! is looked up here before any header is read, so a wild pointer is
//! reported instead of dereferenced. Bytes rather than bits: the lookup is
//! on every free, and a byte test is three instructions fewer than a bit
//! test, which showed on a free-heavy workload (docs/PERFORMANCE.md, "A
//! byte per granule in the segment map").
//!
//! A block's segment is `(p - 1) & !SEGMENT_MASK`: no block starts at a
//! segment's first byte (the header lives there), and the `- 1` lets a huge
//! block aligned to more than a segment sit exactly one segment past its
//! header (mimalloc's trick).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::meta::constants::{SEGMENT_MASK, SEGMENT_SHIFT};
use crate::meta::segment::Segment;

const ADDRESS_BITS: usize = 47;
const GRANULES: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

struct Map(UnsafeCell<[u8; GRANULES]>);
// SAFETY: every access goes through `AtomicU8::from_ptr` on its bytes.
unsafe impl Sync for Map {}

static MAP: Map = Map(UnsafeCell::new([0; GRANULES]));

#[inline(always)]
fn entry(g: usize) -> &'static AtomicU8 {
    debug_assert!(g < GRANULES);
    // SAFETY: `g < GRANULES` (callers check the granule range); the array
    // lives for the whole program and is only accessed atomically.
    unsafe { AtomicU8::from_ptr((MAP.0.get() as *mut u8).add(g)) }
}

/// Records that a segment starts at `seg`.
pub fn insert(seg: *mut Segment) {
    let g = seg as usize >> SEGMENT_SHIFT;
    if g < GRANULES {
        entry(g).store(1, Ordering::Release);
    }
}

/// Forgets the segment at `seg` (before its memory is unmapped).
pub fn remove(seg: *mut Segment) {
    let g = seg as usize >> SEGMENT_SHIFT;
    if g < GRANULES {
        entry(g).store(0, Ordering::Release);
    }
}

/// Forgets every segment starting in `[start, start + len)`.
pub fn remove_range(start: usize, len: usize) {
    let mut g = start >> SEGMENT_SHIFT;
    let end = (start + len) >> SEGMENT_SHIFT;
    while g < end.min(GRANULES) {
        entry(g).store(0, Ordering::Release);
        g += 1;
    }
}

/// The segment holding block pointer `p`, if fortalloc owns one there.
#[inline(always)]
pub fn segment_of(p: *const u8) -> Option<*mut Segment> {
    let q = (p as usize).wrapping_sub(1);
    let g = q >> SEGMENT_SHIFT;
    if g >= GRANULES {
        return None;
    }
    if entry(g).load(Ordering::Relaxed) != 0 {
        Some((q & !SEGMENT_MASK) as *mut Segment)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::constants::SEGMENT_SIZE;

    #[test]
    fn lookup_finds_exactly_the_recorded_segments() {
        // A granule far from anything mapped, so other tests cannot collide.
        let seg = (0x5a5a_0000_0000usize & !SEGMENT_MASK) as *mut Segment;
        let base = seg as usize;
        assert_eq!(segment_of((base + 64) as *const u8), None);
        insert(seg);
        assert_eq!(segment_of((base + 64) as *const u8), Some(seg));
        assert_eq!(segment_of((base + SEGMENT_SIZE - 1) as *const u8), Some(seg));
        // One segment past the header still maps back (huge aligned blocks).
        assert_eq!(segment_of((base + SEGMENT_SIZE) as *const u8), Some(seg));
        // The header's first byte is never a block.
        assert_eq!(segment_of(base as *const u8), None);
        assert_eq!(segment_of((base + SEGMENT_SIZE + 1) as *const u8), None);
        remove(seg);
        assert_eq!(segment_of((base + 64) as *const u8), None);
    }

    #[test]
    fn addresses_outside_the_user_space_are_never_owned() {
        assert_eq!(segment_of(usize::MAX as *const u8), None);
        assert_eq!(segment_of((1usize << 47) as *const u8).map(|_| ()), None);
        assert_eq!(segment_of(core::ptr::dangling::<u8>()), None);
    }
}
