//! `guard-pages`, for `malloc(0)`: a unique pointer into memory that is
//! never accessible, so any use of a zero-size allocation faults.
//!
//! One reservation of `REGION` bytes, never readable or writable, cut into
//! 16-byte slots handed out round-robin, followed in the same mapping by a
//! bitmap (ordinary memory, touched only where used) that says which slots
//! are live, so a slot is not handed out twice while live and a second
//! free of one is caught. Region and bitmap are published together by one
//! atomic store, so no thread ever waits for another to finish setting
//! them up (a `fork` child could wait for ever for a thread it lacks).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::os;

pub const ON: bool = super::guard::ON;

/// Bytes between zero-size pointers, and so their alignment.
pub const SLOT: usize = 16;
const REGION: usize = 1 << 30;
const SLOTS: usize = REGION / SLOT;
const BITMAP: usize = SLOTS / 8;

static BASE: AtomicUsize = AtomicUsize::new(0);
static CURSOR: AtomicUsize = AtomicUsize::new(0);

/// Maps the region and its bitmap on first use; 0 if out of memory.
fn base() -> usize {
    let b = BASE.load(Ordering::Acquire);
    if b != 0 {
        return b;
    }
    let region = os::map(REGION + BITMAP);
    if region.is_null() {
        return 0;
    }
    // SAFETY: the region was just mapped and nothing uses it.
    unsafe { os::protect(region, REGION, false) };
    match BASE.compare_exchange(0, region as usize, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => region as usize,
        Err(winner) => {
            // SAFETY: our mapping lost the race and was never published.
            unsafe { os::unmap(region, REGION + BITMAP) };
            winner
        }
    }
}

/// The bitmap word holding slot `slot`'s bit, and the bit.
///
/// # Safety
/// The region must be published (`BASE` set) and `slot < SLOTS`.
unsafe fn word(slot: usize) -> (&'static AtomicU64, u64) {
    let bits = (BASE.load(Ordering::Acquire) + REGION) as *const AtomicU64;
    // The bitmap is never unmapped, and only accessed atomically.
    // SAFETY: the published region is followed by its bitmap of SLOTS
    // bits, and `slot < SLOTS` (this fn's contract).
    (unsafe { &*bits.add(slot / 64) }, 1 << (slot % 64))
}

/// A fresh zero-size allocation; null if out of memory or every slot is
/// live.
pub fn alloc() -> *mut u8 {
    let b = base();
    if b == 0 {
        return core::ptr::null_mut();
    }
    for _ in 0..SLOTS {
        let turn = CURSOR.fetch_add(1, Ordering::Relaxed);
        if turn < SLOTS && turn.is_multiple_of(8 * os::page_size()) {
            // The first slot whose bit lies on a page of the bitmap: the
            // page is touched from now on. (The region itself is never
            // accessible, and the bitmap's other pages are not touched.)
            crate::stats::COMMITTED.increase(os::page_size());
        }
        let slot = turn % SLOTS;
        // SAFETY: `base` published the region (`b != 0`), and `slot` is
        // taken modulo SLOTS.
        let (w, bit) = unsafe { word(slot) };
        if w.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            return (b + slot * SLOT) as *mut u8;
        }
    }
    core::ptr::null_mut()
}

/// True if `p` lies in the zero-size region.
#[inline]
pub fn owns(p: *const u8) -> bool {
    let b = BASE.load(Ordering::Relaxed);
    b != 0 && (p as usize).wrapping_sub(b) < REGION
}

/// Frees the zero-size allocation `p`: Err if it is not a live slot (a
/// double free, or a pointer between slots).
///
/// # Safety
/// [`owns`] must have accepted `p` (so the region is published and `p`
/// lies in it).
pub unsafe fn free(p: *const u8) -> Result<(), ()> {
    let off = p as usize - BASE.load(Ordering::Relaxed);
    if !off.is_multiple_of(SLOT) {
        return Err(());
    }
    // SAFETY: `owns` accepted `p` (this fn's precondition): the region is
    // published and `off < REGION`, so `off / SLOT < SLOTS`.
    let (w, bit) = unsafe { word(off / SLOT) };
    if w.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
        Ok(())
    } else {
        Err(())
    }
}
