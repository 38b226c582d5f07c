//! Large blocks (64 KiB to 2 MiB) in the guard build: segments of slots,
//! one size class each, shared by all threads.
//!
//! ```text
//! segment: | header (slot bits, open bytes) | G | slot 0 | slot 1 | ... |
//! ```
//! The plain build keeps large blocks on pages with free lists, as it does
//! small ones. The guard build seals a freed large block whole
//! (`harden::large`), so no free-list link can live in it: a slot's bit in
//! its segment header says whether it is free instead, and any thread
//! takes and frees slots under one lock (large blocks are rare enough that
//! mimalloc's per-thread pages buy nothing here, and a remote free needs no
//! owner to collect it). A block is taken from a random free slot of a
//! segment of its class (among those whose pages were kept, if any), so
//! reuse is not predictable. A segment whose
//! slots are all free is released (sealed whole) unless it is the only
//! one of its class.

use core::cell::UnsafeCell;
use core::ptr;

use crate::constants::MEDIUM_OBJ_MAX;
use crate::lock::{Holder, SpinLock};
use crate::page::Page;
use crate::segment::{self, Segment};
use crate::size_class::{bin_of, BLOCK_SIZE, MAX_BIN};
use crate::{harden, stats};

/// The first bin of large blocks.
const FIRST_BIN: usize = bin_of(MEDIUM_OBJ_MAX + 1);
const CLASSES: usize = MAX_BIN + 1 - FIRST_BIN;

struct Classes(UnsafeCell<[Class; CLASSES]>);
// SAFETY: only touched under LOCK.
unsafe impl Sync for Classes {}

#[derive(Clone, Copy)]
struct Class {
    /// Segments of the class with a free slot (linked by `free_next`).
    open: *mut Segment,
    /// Segments of the class.
    count: usize,
}

static CLASSES_OF: Classes = Classes(UnsafeCell::new(
    [Class {
        open: ptr::null_mut(),
        count: 0,
    }; CLASSES],
));
static LOCK: SpinLock = SpinLock::new();

/// The page descriptor holding a segment of slots' geometry.
fn page(seg: *mut Segment) -> *mut Page {
    // SAFETY: only the address of the field is taken.
    unsafe { ptr::addr_of_mut!((*seg).pages).cast() }
}

/// Allocates a large block of bin `bin` for a request of `size` bytes.
/// Null when out of memory (or when something wrote to the slot taken
/// after it was freed and an error handler took the report).
pub fn alloc(bin: usize, size: usize) -> *mut u8 {
    let c = bin - FIRST_BIN;
    let bsize = BLOCK_SIZE[bin];
    let (seg, slot) = loop {
        let taken = {
            let _g = LOCK.lock();
            // SAFETY: the classes and their segments' slot bits are only
            // touched under LOCK.
            unsafe { take_slot(&mut (*CLASSES_OF.0.get())[c]) }
        };
        if let Some(t) = taken {
            break t;
        }
        // SAFETY: `bin` is a large bin.
        if !unsafe { new_segment(bin, c) } {
            return ptr::null_mut();
        }
    };
    // SAFETY: the slot was free and is now ours alone.
    unsafe {
        let page = page(seg);
        let p = (*page).page_start.add(slot * bsize);
        if !harden::large_taken(page, p, size) {
            // Written after its free: reported; the slot is left taken.
            return ptr::null_mut();
        }
        stats::IN_USE.increase(bsize);
        p
    }
}

/// Takes a random free slot of a segment of class `class`.
///
/// # Safety
/// LOCK must be held.
unsafe fn take_slot(class: &mut Class) -> Option<(*mut Segment, usize)> {
    let seg = class.open;
    if seg.is_null() {
        return None;
    }
    // SAFETY: per the caller; segments on the list are live.
    unsafe {
        let free = (*seg).slots_free;
        // Among the free slots whose pages were kept, if any: a slot
        // sealed with markers, or never used, faults in every page its
        // next block touches.
        let warm = harden::large::warm(page(seg), free);
        let choice = if warm != 0 { warm } else { free };
        let mut k = harden::guard::pick(choice.count_ones() as usize);
        let mut bits = choice;
        let mut slot = bits.trailing_zeros() as usize;
        while k > 0 {
            bits &= bits - 1;
            slot = bits.trailing_zeros() as usize;
            k -= 1;
        }
        (*seg).slots_free = free & !(1 << slot);
        if (*seg).slots_free == 0 {
            class.open = (*seg).free_next;
            (*seg).free_next = ptr::null_mut();
            (*seg).in_free_list = false;
        }
        Some((seg, slot))
    }
}

/// Makes a segment of slots for bin `bin` (class `c`). False when out of
/// memory.
///
/// # Safety
/// `bin` must be a large bin and `c` its class.
unsafe fn new_segment(bin: usize, c: usize) -> bool {
    let Some(fresh) = segment::os_alloc(crate::constants::SEGMENT_SIZE, true, 0) else {
        return false;
    };
    let seg = fresh.seg;
    // SAFETY: the segment is new and ours until it is on its class's list.
    unsafe {
        (*seg).in_arena = fresh.in_arena;
        let (start, count) = segment::init_slots(seg, bin);
        let page = page(seg);
        let bsize = BLOCK_SIZE[bin];
        let state = harden::large::slots_made(start, count, bsize, !fresh.zero);
        for i in 0..count {
            harden::large::set_state(page, start.add(i * bsize), state);
        }
        stats::PAGES.increase(1);
        let _g = LOCK.lock();
        let class = &mut (*CLASSES_OF.0.get())[c];
        (*seg).free_next = class.open;
        (*seg).in_free_list = true;
        class.open = seg;
        class.count += 1;
    }
    true
}

/// Frees the large block `p` of the segment of slots `seg` (it passed the
/// free checks and is sealed already), from any thread.
///
/// # Safety
/// `p` must be a live block of `seg`, being freed once.
pub unsafe fn free(seg: *mut Segment, p: *mut u8) {
    // SAFETY: the segment is live while it has a live block; its slot bits
    // and its class's list are only touched under LOCK.
    unsafe {
        let page = page(seg);
        let bsize = (*page).block_size;
        let slot = (p as usize - (*page).page_start as usize) / bsize;
        let c = (*page).bin as usize - FIRST_BIN;
        let count = (*page).reserved as usize;
        let all = if count == 64 {
            u64::MAX
        } else {
            (1u64 << count) - 1
        };
        stats::IN_USE.decrease(bsize);
        let release = {
            let _g = LOCK.lock();
            let class = &mut (*CLASSES_OF.0.get())[c];
            (*seg).slots_free |= 1 << slot;
            if !(*seg).in_free_list {
                (*seg).free_next = class.open;
                (*seg).in_free_list = true;
                class.open = seg;
            }
            // An empty segment goes, unless it is its class's only one.
            let empty = (*seg).slots_free == all && class.count > 1;
            if empty {
                unlink(class, seg);
                class.count -= 1;
            }
            empty
        };
        if release {
            stats::PAGES.decrease(1);
            crate::page::reset(page);
            segment::os_free(seg);
        }
    }
}

/// Releases every segment of slots that has none in use (each class keeps
/// one otherwise), and drops the pages that sealed free slots kept: what
/// `collect(true)` promises, all memory not in use back to the OS.
pub fn collect() {
    loop {
        let seg = {
            let _g = LOCK.lock();
            // SAFETY: the classes and their segments are only touched
            // under LOCK.
            unsafe { take_empty() }
        };
        if seg.is_null() {
            break;
        }
        // SAFETY: the segment has no block in use and is on no list.
        unsafe {
            stats::PAGES.decrease(1);
            crate::page::reset(page(seg));
            segment::os_free(seg);
        }
    }
    let _g = LOCK.lock();
    // SAFETY: as above; the free slots' blocks are sealed and nobody's.
    unsafe {
        for class in (*CLASSES_OF.0.get()).iter() {
            let mut seg = class.open;
            while !seg.is_null() {
                harden::large::drop_free(page(seg), (*seg).slots_free);
                seg = (*seg).free_next;
            }
        }
    }
}

/// Takes a segment with no slot in use off its class, if there is one.
///
/// # Safety
/// LOCK must be held.
unsafe fn take_empty() -> *mut Segment {
    // SAFETY: per the caller.
    unsafe {
        for class in (*CLASSES_OF.0.get()).iter_mut() {
            let mut seg = class.open;
            while !seg.is_null() {
                let page = page(seg);
                let count = (*page).reserved as usize;
                let all = if count == 64 {
                    u64::MAX
                } else {
                    (1u64 << count) - 1
                };
                if (*seg).slots_free == all {
                    unlink(class, seg);
                    class.count -= 1;
                    return seg;
                }
                seg = (*seg).free_next;
            }
        }
    }
    ptr::null_mut()
}

/// Takes `seg` off its class's list of segments with a free slot.
///
/// # Safety
/// LOCK must be held and `seg` on the list.
unsafe fn unlink(class: &mut Class, seg: *mut Segment) {
    // SAFETY: per the caller, the list's segments are live.
    unsafe {
        let mut at = &mut class.open as *mut *mut Segment;
        while !(*at).is_null() {
            if *at == seg {
                *at = (*seg).free_next;
                break;
            }
            at = ptr::addr_of_mut!((**at).free_next);
        }
        (*seg).free_next = ptr::null_mut();
        (*seg).in_free_list = false;
    }
}

/// In a `fork` child: if a thread the child does not have held the lock,
/// the lists may be half-updated, so they are set aside (their segments'
/// live blocks can still be freed; their free slots leak).
pub fn after_fork() {
    if LOCK.holder() != Holder::Other {
        return;
    }
    // SAFETY: the lock's owner does not exist in the child, and this is the
    // child's only thread.
    unsafe {
        *CLASSES_OF.0.get() = [Class {
            open: ptr::null_mut(),
            count: 0,
        }; CLASSES];
    }
    LOCK.force_release();
}
