//! The hardened build's defences, one file each, and the hooks through
//! which the core calls them.
//!
//! Every defence is a Cargo feature, grouped into two presets (`secure`,
//! `secure-max`). This file is the only door: the files are private, each
//! defence's switch is named once in [`catalogue`] (with what it catches,
//! costs, which preset has it, and the order in which the defences act on
//! each event), and the core calls only the hooks and names exported here. Every hook is
//! `#[inline(always)]` and tests its switch first, so with a feature off
//! its code folds away and the plain build runs the plain operation: links
//! stored as raw addresses, blocks carved in address order, nothing
//! checked beyond the free-pointer check every build does.

mod canary;
mod catalogue;
mod double_free;
mod encode;
mod guard;
mod large;
mod order;
mod quarantine;
mod random;
mod zero;
mod zero_size;

use crate::error::{self, ErrorKind};
use crate::meta::page::{is_huge, Page};

pub use catalogue::{
    describe, FREED_BLOCKS_WAIT, FREE_BLOCKS_READ_ZERO, GUARDED_SPANS, HARDENED, HUGE_BLOCKS_GUARDED, PRESET,
    RANDOM, RANDOM_SPANS, STALE_SEGMENTS, UNWALKED_REMOTE_LISTS, ZERO_SIZE_SLOTS,
};
use catalogue::{CHECKS, KEYS};
pub use double_free::{clear_range as clear_live_bits, was_freed, BITMAP_BYTES};
pub use encode::{decode_delayed, link, set_link, try_link};
pub use guard::{
    arena_hint, grow_block, header_guard, open_block, page_guard, page_slot, pick as pick_slot,
    segment_released, segment_taken, Grown, Released,
};
pub use large::{
    drop_free as large_drop_free, huge_layout, layout as large_layout, pick as pick_large_slot,
    slot_taken as large_slot_taken, slots_made as large_slots_made, warm as large_warm,
};
pub use order::{batch, build_free_list, shuffle};
pub use quarantine::{
    Bounds as QuarantineBounds, Held as QuarantineHeld, InPage as QuarantineInPage, Quarantine,
};
pub use random::seed;
#[cfg(test)]
pub use random::{draws_between, shared_next, shared_state};
pub use zero::zero_reused;
pub use zero_size::{alloc as zero_size_alloc, free as zero_size_free, SLOT as ZERO_SIZE_SLOT};

/// The guard layout a segment of `kind` leaves behind and looks for (see
/// `meta::segment::Guards`): small and medium segments of the guard build
/// have page guards; 0 is none.
pub fn guard_layout(kind: crate::meta::segment::Kind) -> u8 {
    use crate::meta::segment::Kind;
    match kind {
        Kind::Small | Kind::Medium if guard::ON => kind as u8 + 1,
        _ => 0,
    }
}

/// The rows of the statistics table this build's defences add.
pub fn stats_sections() -> crate::stats::Sections {
    crate::stats::Sections {
        guards: guard::ON,
        quarantine: quarantine::ON,
    }
}

/// Whether `p` is one of the guard build's zero-size slots (never without
/// it): the one test every entry point taking a pointer makes first.
#[inline(always)]
pub fn is_zero_size(p: *const u8) -> bool {
    zero_size::ON && zero_size::owns(p)
}

/// Large blocks: whether a freed one is sealed at once (`seal-freed-large`:
/// inaccessible until its slot is taken again, and a live one open only
/// as far as its request); if not, a freed slot is purged after the purge
/// delay, as in the plain build (see `large`).
#[inline(always)]
pub const fn freed_large_sealed() -> bool {
    large::SEAL
}
/// Large blocks: whether each slot of a segment of slots ends in a guard
/// page, and the slack around them is guarded, made once with the segment
/// (`guard-pages`): remaking a segment costs a kernel call per slot.
#[inline(always)]
pub const fn large_slots_guarded() -> bool {
    guard::ON
}
/// Huge blocks: whether the guard after one is its segment's last OS page,
/// what lies between open (`guard-pages` without `seal-freed-large`,
/// which guards all of it; see `guard::open_block`).
#[inline(always)]
pub const fn huge_guard_at_span_end() -> bool {
    guard::ON && !large::SEAL
}
/// Large and huge blocks handed out (fresh or reused) read zero, so
/// `calloc` need not clear them: zero-on-free with `seal-freed-large`.
/// Without the seals zero-on-free leaves them as the plain build does.
#[inline(always)]
pub const fn reused_large_zeroed() -> bool {
    large::ZEROED
}

/// Whether a list of freed blocks is shuffled before reuse (see
/// `order::shuffle`), and a list other threads freed goes to `local_free`
/// for it, never straight to `free`: with `random-order`, unless a
/// quarantine is in effect, whose random departures already made the
/// order in which blocks reach their page's lists, from this thread or
/// any other, a random one.
#[inline]
pub fn shuffle_freed_lists() -> bool {
    order::ON && !(quarantine::ON && quarantine::in_effect())
}
/// The size to ask `huge::alloc` for, for a request of `size` bytes: room
/// for the canary (past it lies open slack or the guard).
#[inline(always)]
pub const fn huge_padded(size: usize) -> usize {
    size.saturating_add(canary::EXTRA)
}

/// Arms the canary of a huge block just made for a request of `size`
/// bytes (the block holds `padded(size)`), being handed out: nothing in
/// it is its owner's yet, so the canary is written without a read.
///
/// # Safety
/// `p` must be a huge block just made, not yet handed out, of at least
/// `padded(size)` bytes.
pub unsafe fn huge_taken(p: *mut u8, size: usize) {
    if canary::ON {
        // SAFETY: `p` is a huge block of `padded(size)` bytes being handed
        // out (this fn's contract), so its header is mapped and it holds
        // the canary.
        unsafe {
            let seg = crate::meta::segment::of_block(p);
            canary::write_fresh(crate::meta::segment::page_of(seg, p), p, size);
        }
    }
}

/// In a `fork` child: fresh randomness for the shared generator (heaps
/// reseed their own, see `heap::after_fork`).
pub fn after_fork() {
    if HARDENED {
        random::reseed_after_fork();
    }
}

/// Draws the per-page secrets.
///
/// # Safety
/// `page` must be valid and exclusively owned by the caller.
#[inline(always)]
pub unsafe fn page_keys_init(page: *mut Page) {
    if KEYS {
        // SAFETY: `page` is valid and ours alone (this fn's contract).
        unsafe {
            (*page).keys[0] = random::shared_next() as usize;
            (*page).keys[1] = random::shared_next() as usize;
        }
    }
}

/// The block size to ask for, for a request of `size` bytes: room for the
/// canary, and past the medium sizes for the guard page each large block
/// ends with (see `guard::BLOCK_GUARD`).
#[inline(always)]
pub const fn padded(size: usize) -> usize {
    // (Huge blocks take `huge_padded`: their guard follows the request.)
    let s = size.saturating_add(canary::EXTRA);
    if guard::ON && s > crate::meta::constants::MEDIUM_OBJ_MAX {
        s.saturating_add(guard::BLOCK_GUARD)
    } else {
        s
    }
}

/// The geometry of a page descriptor, as the hooks read it: its block
/// size, whether it is a huge block's, where its blocks start. The
/// obligation (a valid descriptor) is met once, where the handle is made;
/// each read after it is safe. Only reads: the page's owner sets these
/// fields before the page is handed out.
#[derive(Clone, Copy)]
struct Desc(*const Page);

impl Desc {
    /// # Safety
    /// `page` must be a valid descriptor for as long as the handle is
    /// used.
    #[inline(always)]
    unsafe fn new(page: *const Page) -> Desc {
        Desc(page)
    }

    #[inline(always)]
    fn block_size(self) -> usize {
        // SAFETY: a valid descriptor (the handle's invariant).
        unsafe { (*self.0).block_size }
    }

    #[inline(always)]
    fn page_start(self) -> *mut u8 {
        // SAFETY: a valid descriptor (the handle's invariant).
        unsafe { (*self.0).page_start }
    }

    /// A huge block's page.
    #[inline(always)]
    fn is_huge(self) -> bool {
        // SAFETY: a valid descriptor (the handle's invariant).
        unsafe { is_huge(self.0) }
    }

    /// The page holds large blocks of the guard build, each ending in
    /// its guard and sealed past what its owner asked for (see `large`).
    #[inline(always)]
    fn guarded_large(self) -> bool {
        guard::ON && !self.is_huge() && self.block_size() > crate::meta::constants::MEDIUM_OBJ_MAX
    }

    /// See [`trailers`].
    #[inline(always)]
    fn trailers(self) -> bool {
        canary::TRAILERS && {
            let bsize = self.block_size();
            !self.is_huge() && (16..=crate::meta::constants::MEDIUM_OBJ_MAX).contains(&bsize)
        }
    }
}

/// Bytes the owner of block `p` of `page` may use: all of it, but for the
/// large blocks of the guard build, of which only what was asked for is
/// open (see `large`).
///
/// # Safety
/// `p` must be a block of the in-use `page`, live or just taken.
#[inline(always)]
pub unsafe fn block_usable(page: *const Page, p: *const u8) -> usize {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let d = unsafe { Desc::new(page) };
    if d.guarded_large() {
        // SAFETY: `p` is a block of the large `page`, live or just taken
        // (this fn's contract).
        unsafe { large::usable(page, p) }
    } else {
        d.block_size()
    }
}

/// Bytes of the canary after a request (for `large`).
pub(crate) const fn canary_extra() -> usize {
    canary::EXTRA
}

/// A live block of `page` is resized in place to `size` bytes: for a
/// large block of the guard build, the part it needs is opened and the
/// rest sealed.
///
/// # Safety
/// `p` must be a live block of the in-use `page` owned by the caller, with
/// `padded(size) <= block_size`.
#[inline]
pub unsafe fn resizing(page: *const Page, p: *mut u8, size: usize) {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    if unsafe { Desc::new(page) }.guarded_large() {
        // SAFETY: `p` is a live block of the large `page`, the caller's,
        // with `padded(size) <= block_size` (this fn's contract).
        unsafe { large::resize(page, p, size) };
    }
}

/// Vets a block just taken off a free list of `page` for a request of
/// `size` bytes, and arms its canary. False (after reporting) means the
/// block must not be handed out.
///
/// # Safety
/// `page` must be an in-use page of small or medium blocks and `p` a block
/// of it, just popped, with `padded(size) <= block_size`.
#[inline(always)]
pub unsafe fn on_alloc(page: *const Page, p: *mut u8, size: usize) -> bool {
    if !CHECKS && !encode::ON {
        return true;
    }
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let bsize = unsafe { Desc::new(page) }.block_size();
    // SAFETY: `p` is a block of the small or medium `page` (this fn's
    // contract), all `bsize` bytes of it the allocator's while it is free.
    let slot = unsafe { canary::Slot::new(page, p, bsize) };
    let trailer = small_trailers(bsize);
    // SAFETY: as for the slot: a free block of the page, ours to read, its
    // trailer byte ours to mend.
    if trailer && !unsafe { slot.trailer_intact() } {
        // An underflow of the block after it, reported at that block.
        error::report(ErrorKind::BufferUnderflow, p as usize + bsize, bsize);
        // SAFETY: as above.
        unsafe { slot.set_trailer() };
    }
    // With `trailer`, `bsize >= 16`.
    // SAFETY: `p` is a block of the in-use, non-huge `page`, just popped
    // (this fn's contract), so free and ours to read.
    if zero::CHECK && unsafe { !zero::fresh(page, p) && !zero::still_zero(page, p, bsize, trailer) } {
        error::report(ErrorKind::WriteAfterFree, p as usize, bsize);
        return false;
    }
    // SAFETY: `p` is a free block of `page` (this fn's contract), vetted
    // just above, with `padded(size) <= block_size`; `slot` is its slot.
    unsafe { handed_out(page, p, slot, size, false) }
}

/// A block that [`may_take`] passed, to be handed to [`taken`] once the
/// caller has taken it off its list: its slot, whose key and trailer stay
/// in registers from the checks to the arming.
#[derive(Clone, Copy)]
pub struct Vetted(canary::Slot);

/// [`on_alloc`]'s checks for malloc's fast path, before the block is
/// taken off its list: the block at the head of `page`'s free list, if it
/// passes them, and then it is marked live. None means something is
/// wrong and nothing was changed: the caller leaves the block where it is
/// for the slow path, whose [`on_alloc`] reads it again and reports.
/// Nothing here calls out, so the fast path needs no stack frame.
///
/// # Safety
/// `page` must be an in-use page of small or medium blocks owned by the
/// caller and `p` the head of its free list.
#[inline(always)]
pub unsafe fn may_take(page: *const Page, p: *mut u8) -> Option<Vetted> {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let bsize = unsafe { Desc::new(page) }.block_size();
    // SAFETY: `p` is a free block of the small or medium `page` (this fn's
    // contract): all of its slot ours to read.
    let slot = unsafe { canary::Slot::new(page, p, bsize) };
    if !CHECKS {
        return Some(Vetted(slot));
    }
    let trailer = small_trailers(bsize);
    // SAFETY: as for the slot; a block of the non-huge `page` with
    // `bsize >= 16` where it has a trailer.
    unsafe {
        if trailer && !slot.trailer_intact() {
            return None;
        }
        if zero::CHECK && !zero::fresh(page, p) && !zero::still_zero(page, p, bsize, trailer) {
            return None;
        }
        // Live already: the bit stays as it was.
        if double_free::ON && !double_free::mark_live(p) {
            return None;
        }
    }
    Some(Vetted(slot))
}

/// The rest of [`on_alloc`] for a block [`may_take`] passed, now taken:
/// its first word is cleared and its canary armed for `size` bytes.
///
/// # Safety
/// `block` must come from [`may_take`] for a block the caller then took,
/// with `padded(size) <= block_size`.
#[inline(always)]
pub unsafe fn taken(block: Vetted, size: usize) {
    let slot = block.0;
    if encode::ON {
        // See `handed_out`.
        // SAFETY: the block is the caller's (this fn's contract), at least
        // a word.
        unsafe { (slot.start() as *mut usize).write(0) };
    }
    if canary::ON {
        // SAFETY: the caller's block, being handed out (vetted or fresh,
        // so zero past its first word with zero-on-free), small or
        // medium: all of it open.
        unsafe { slot.arm(size, true) };
    }
}

/// Small and medium slots of the `underflow-trailers` build end in a
/// trailer byte, live or free (see `canary`), so underflows show. Not
/// 8-byte slots: a free one is all link.
#[inline(always)]
const fn small_trailers(bsize: usize) -> bool {
    canary::TRAILERS && bsize >= 16
}

/// The last steps before a vetted block is handed out for `size` bytes:
/// it is marked live, its first word cleared and its canary armed. False
/// (after reporting) if the bitmaps say it is live already.
///
/// With `fresh` the block reads zero throughout (a large slot fresh or
/// purged): its first word is left alone and its freed-bit word touched
/// for writing, so handing it out faults in at most the canary's OS pages,
/// and only for writing (the canary is always written without a read).
///
/// # Safety
/// `p` must be a free block of `page`, vetted, with `padded(size) <=
/// block_size`, and `slot` the bytes of it the caller may use; with
/// `fresh`, zero throughout.
#[inline(always)]
unsafe fn handed_out(page: *const Page, p: *mut u8, slot: canary::Slot, size: usize, fresh: bool) -> bool {
    // SAFETY: `p` is a block start of `page` (this fn's contract), in a
    // live segment that has the bitmaps when they are on.
    if double_free::ON && !unsafe { double_free::mark_live(p) } {
        // SAFETY: `page` is `p`'s descriptor (this fn's contract).
        error::report(ErrorKind::CorruptedFreeList, p as usize, unsafe {
            (*page).block_size
        });
        return false;
    }
    if fresh {
        // SAFETY: as for `mark_live` above.
        unsafe { double_free::touch_freed(p) };
    }
    if encode::ON && !fresh {
        // The link left in the block would tell its new owner an
        // encoding of known addresses, which gives away key bits.
        // SAFETY: `p` is a free block (this fn's contract), ours to write
        // and at least a word.
        unsafe { (p as *mut usize).write(0) };
    }
    if canary::applies(page) {
        // SAFETY: `slot` is the block being handed out, with room for the
        // canary (this fn's contract).
        unsafe { slot.arm(size, true) };
    }
    true
}

/// A free large block (a slot, see `large.rs`) is handed out for `size`
/// bytes: with `seal-freed-large`, what the request needs is opened (after
/// checking that what stayed open while it was free is still zero); it is
/// marked live and its canary armed. False (after reporting) means it must
/// not be handed out.
///
/// `fresh`: the block reads zero throughout (its slot fresh or purged,
/// and not sealed), so nothing of it is read or cleared.
///
/// # Safety
/// `p` must be a free block of the large `page`, just taken by the caller,
/// with `padded(size) <= block_size`; with `fresh`, zero throughout.
pub unsafe fn large_taken(page: *const Page, p: *mut u8, size: usize, fresh: bool) -> bool {
    // SAFETY: `p` is a free block of the large `page`, just taken by the
    // caller, with `padded(size) <= block_size` (this fn's contract).
    if guard::ON && !unsafe { large::taken(page, p, size) } {
        // SAFETY: `page` is `p`'s descriptor (this fn's contract).
        error::report(ErrorKind::WriteAfterFree, p as usize, unsafe {
            (*page).block_size
        });
        return false;
    }
    // SAFETY: `p` is a block of the in-use `page`, just taken and opened
    // for the request: its slot is what is open of it.
    let slot = unsafe { canary::Slot::of_block(page, p) };
    // SAFETY: `p` is a free block of `page` (this fn's contract), opened
    // for the request and vetted by `large::taken` just above.
    unsafe { handed_out(page, p, slot, size, fresh && !large::SEAL) }
}

/// Checks a block about to be freed and wipes it. False (after reporting)
/// means it must not be freed: it is not live.
///
/// # Safety
/// `p` must be a block start of the in-use `page` (it passed the free check).
#[inline(always)]
pub unsafe fn on_free(page: *const Page, p: *mut u8) -> bool {
    if !CHECKS && !guard::ON {
        return true;
    }
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let d = unsafe { Desc::new(page) };
    let bsize = d.block_size();
    if d.is_huge() || bsize > crate::meta::constants::MEDIUM_OBJ_MAX {
        // SAFETY: as this fn's contract.
        return unsafe { on_free_big(page, p) };
    }
    // SAFETY: `p` is a block start of the in-use `page` (this fn's
    // contract), in a live segment that has the bitmaps when they are on.
    if double_free::ON && !unsafe { double_free::mark_free(p) } {
        // SAFETY: a small or medium block of the in-use `page`: readable.
        let requested = unsafe { freed_request(page, p, bsize) };
        error::report_sized(ErrorKind::DoubleFree, p as usize, bsize, requested);
        return false;
    }
    if !canary::ON {
        if zero::ON {
            // SAFETY: a small or medium block of `bsize` bytes being freed
            // (this fn's contract): 8-aligned, a multiple of 8 long.
            unsafe { zero::wipe(p, bsize) };
        }
        return true;
    }
    // SAFETY: a live (per the bitmaps, when on) small or medium block of
    // the in-use `page` (this fn's contract): all of its slot open.
    let slot = unsafe { canary::Slot::new(page, p, bsize) };
    // SAFETY: the block is live and was armed when handed out.
    let size = unsafe { slot.check() };
    if size.is_none() {
        // SAFETY: as for `check`.
        let requested = unsafe { slot.recorded_size() }.unwrap_or(0);
        error::report_sized(ErrorKind::BufferOverflow, p as usize, bsize, requested);
    }
    if !small_trailers(bsize) {
        if zero::ON {
            // SAFETY: as in the canary-less case above.
            unsafe { zero::wipe(p, bsize) };
        }
        return true;
    }
    // SAFETY: the slot is the live block's, its trailer byte the
    // allocator's to mend.
    if !unsafe { slot.trailer_intact() } {
        // An underflow of the block after it, reported at that block.
        error::report(ErrorKind::BufferUnderflow, p as usize + bsize, bsize);
        // SAFETY: as above.
        unsafe { slot.set_trailer() };
    }
    // SAFETY: `p` is a block start of the in-use `page` with trailers
    // (this fn's contract, and `bsize >= 16`).
    unsafe { check_below(d, slot, p, bsize) };
    if zero::ON {
        // The owner wrote at most its request, the canary guards the bytes
        // after it, and the tail (in the last word) records its size: a
        // write further on garbles one of them, and then the whole block
        // is wiped. The slack in between was zero when it was handed out.
        let len = match size {
            Some(size) => canary::written_below_last_word(size, bsize),
            None => bsize - 8,
        };
        // The slot's last word is written apart, in one store, so its
        // trailer is never zero for a moment (the owner of the block above
        // may be reading it from another thread).
        // SAFETY: a block of `bsize >= 16` bytes being freed (this fn's
        // contract), a multiple of 8, `len <= bsize - 8`: all of it ours.
        unsafe {
            zero::wipe(p, len);
            slot.set_last_word_trailer();
        }
    }
    true
}

/// [`on_free`] of a large or huge block.
///
/// # Safety
/// `page` must be an in-use page of large blocks or a huge block's, and
/// `p` a block start of it (it passed the free check).
#[inline(never)]
unsafe fn on_free_big(page: *const Page, p: *mut u8) -> bool {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let d = unsafe { Desc::new(page) };
    // SAFETY: `p` is a block start of the in-use `page` (this fn's
    // contract).
    let bsize = unsafe { block_usable(page, p) };
    if d.is_huge() {
        // Not wiped: its segment is sealed, or unmapped, right after.
        // SAFETY: `p` is the block of the in-use huge `page` (this fn's
        // contract), its canary inside it.
        if canary::ON && unsafe { canary::check(page, p) }.is_none() {
            // SAFETY: the block is open past its canary (checked just now).
            let requested = unsafe { canary::Slot::of_block(page, p).recorded_size() }.unwrap_or(0);
            error::report_sized(ErrorKind::BufferOverflow, p as usize, bsize, requested);
        }
        return true;
    }
    // SAFETY: `p` is a block start of the in-use `page` (this fn's
    // contract), in a live segment that has the bitmaps when they are on.
    if double_free::ON && !unsafe { double_free::mark_free_big(p) } {
        error::report(ErrorKind::DoubleFree, p as usize, bsize);
        return false;
    }
    if d.guarded_large() && bsize == 0 {
        // Nothing of it is open: a freed slot, sealed (a second free
        // the bitmaps, when on, reported above). Its slot's bit tells
        // `large::free` it is a second free; the canary, past the
        // seal, must not be read.
        return true;
    }
    // SAFETY: `p` is a block start of the in-use `page` (this fn's
    // contract), open as far as its canary (a sealed one returned above).
    if canary::applies(page) && unsafe { canary::check(page, p) }.is_none() {
        // SAFETY: the block is open past its canary (checked just now).
        let requested = unsafe { canary::Slot::of_block(page, p).recorded_size() }.unwrap_or(0);
        error::report_sized(ErrorKind::BufferOverflow, p as usize, bsize, requested);
    }
    // A large block: not wiped, but sealed with `seal-freed-large`, else
    // left to be purged after the delay (see `large`).
    // SAFETY: `p` is a live block of the large `page` (this fn's contract;
    // the bitmaps, when on, found it live), freed once.
    unsafe { large::freed(page, p) };
    true
}

/// Slots of small and medium pages of the canary build end in a trailer
/// byte, live or free (see `canary`), so underflows show. Not 8-byte
/// slots: a free one is all link.
///
/// # Safety
/// `page` must be a valid descriptor.
#[inline(always)]
unsafe fn trailers(page: *const Page) -> bool {
    // SAFETY: `page` is a valid descriptor (this fn's contract).
    unsafe { Desc::new(page) }.trailers()
}

/// Fresh blocks were just carved: each gets its trailer.
///
/// # Safety
/// `[first, first + count * bsize)` must be fresh blocks of the owned,
/// in-use `page`, not on any list yet.
#[inline(always)]
pub unsafe fn carved(page: *const Page, first: *mut u8, bsize: usize, count: usize) {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    if unsafe { trailers(page) } {
        for i in 0..count {
            // SAFETY: slot `i` lies in the carved range, fresh blocks
            // nobody else has yet (this fn's contract).
            unsafe { canary::set_trailer(page, first.add(i * bsize), bsize) };
        }
    }
}

/// Checks the trailer of the slot before block `p` (none for a page's
/// first block): changed, it is an underflow of `p`, reported (and
/// mended, so an error handler hears of it once).
///
/// # Safety
/// `p` must be a block start of the in-use page `d` describes, with
/// trailers, and `slot` its slot of `bsize` bytes.
#[inline(always)]
unsafe fn check_below(d: Desc, slot: canary::Slot, p: *mut u8, bsize: usize) {
    // SAFETY: a slot of the page lies below `p` when `p` is `bsize` or
    // more bytes into it (this fn's contract: `p` is a block start).
    if p as usize - d.page_start() as usize >= bsize && !unsafe { slot.below_intact_or_mend() } {
        error::report(ErrorKind::BufferUnderflow, p as usize, bsize);
    }
}

/// A page whose blocks are all free is about to be given back to its
/// segment (released, or found empty when its segment is adopted): with
/// `write-after-free-check`, every block of it that was freed is read back
/// as zero, as it would have been when handed out again. Its memory is
/// zeroed or purged before it is used again, which would erase a write
/// after free to a block that never came round (a thread freeing the
/// blocks of a size in turn empties its pages one after another).
///
/// # Safety
/// `page` must be an in-use page, owned by the calling thread, with no
/// block in use.
#[inline(always)]
pub unsafe fn page_emptied(page: *const Page) {
    if zero::CHECK {
        // SAFETY: as this fn's contract.
        unsafe { check_emptied(page) };
    }
}

/// [`page_emptied`]'s reads: each block the bitmaps do not call fresh
/// (all of them without `double-free`).
///
/// # Safety
/// As for [`page_emptied`].
#[inline(never)]
unsafe fn check_emptied(page: *const Page) {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor;
    // `capacity` is only changed by its owner, the calling thread.
    let (d, count) = unsafe {
        (
            Desc::new(page),
            (*page).capacity.load(core::sync::atomic::Ordering::Relaxed),
        )
    };
    let bsize = d.block_size();
    if d.is_huge() || bsize > crate::meta::constants::MEDIUM_OBJ_MAX {
        return;
    }
    let trailer = small_trailers(bsize);
    for i in 0..count as usize {
        let p = d.page_start().wrapping_add(i * bsize);
        // SAFETY: a carved, free block of the in-use small or medium `page`
        // (this fn's contract): ours to read, `bsize >= 16` with a trailer.
        let clean = unsafe { zero::fresh(page, p) || zero::still_zero(page, p, bsize, trailer) };
        if !clean {
            error::report(ErrorKind::WriteAfterFree, p as usize, bsize);
        }
    }
}

/// Checks a block leaving the quarantine: with `write-after-free-check` it was wiped
/// on the way in and must still be zero. When a full quarantine lets it out,
/// only its first word is read, which the free-list link is about to cover:
/// the rest is checked, as for every freed block, when it is handed out
/// again (reading it all here too doubled the zero check; see
/// docs/PERFORMANCE.md, "The quarantine reads a leaving block's first word
/// only"). With `whole` (the quarantine being emptied, at thread exit or
/// `collect`, where a block may never be handed out again) all of it is
/// read. False (after reporting a write after free) means it
/// must not be freed: it is left out of every free list.
///
/// # Safety
/// `held` must be a block that waited in a quarantine (so its page is in
/// use and it is not huge).
#[inline(always)]
pub unsafe fn leaving_quarantine(held: QuarantineHeld, whole: bool) -> bool {
    // A large block is not wiped at free: sealed while free (nothing a
    // write could have reached), or left as it was (see `large`).
    if !zero::CHECK || held.size() > crate::meta::constants::MEDIUM_OBJ_MAX {
        return true;
    }
    let (page, p, bsize) = (held.page, held.block, held.size());
    // SAFETY: `p` waited in a quarantine (this fn's contract): a free block
    // of the in-use, non-huge `page`, ours to read, at least a word.
    let clean = unsafe {
        (p as *const usize).read() == 0 && (!whole || zero::still_zero(page, p, bsize, trailers(page)))
    };
    if !clean {
        error::report(ErrorKind::WriteAfterFree, p as usize, bsize);
    }
    clean
}

/// For `realloc` and `usable_size`: the bytes the caller may use in the
/// live block `p` of `page`, or None (after reporting) if it is not live.
///
/// # Safety
/// `p` must be a block start of the in-use `page`.
#[inline(always)]
pub unsafe fn usable(page: *const Page, p: *mut u8) -> Option<usize> {
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let d = unsafe { Desc::new(page) };
    // SAFETY: `p` is a block start of the in-use `page` (this fn's
    // contract).
    let bsize = unsafe { block_usable(page, p) };
    if d.guarded_large() && bsize == 0 {
        // A freed slot, sealed (see `on_free`): not live.
        error::report(ErrorKind::InvalidPointer, p as usize, d.block_size());
        return None;
    }
    if !CHECKS || (d.is_huge() && !canary::ON) {
        return Some(bsize);
    }
    // SAFETY: `p` is a block start of the in-use, non-huge `page` (this
    // fn's contract), in a live segment with the bitmaps when they are on.
    if double_free::ON && !d.is_huge() && !unsafe { double_free::is_live(p) } {
        error::report(ErrorKind::InvalidPointer, p as usize, bsize);
        return None;
    }
    if d.trailers() {
        // SAFETY: `p` is a block start of the in-use `page` (this fn's
        // contract), whose slots have trailers and are open whole.
        unsafe { check_below(d, canary::Slot::new(page, p, bsize), p, bsize) };
    }
    if canary::applies(page) {
        // A sealed block returned above: this one is open past its canary.
        // SAFETY: `p` is a block start of the in-use `page` (this fn's
        // contract).
        let size = unsafe { canary::check(page, p) };
        if size.is_none() {
            // SAFETY: the block is open past its canary (checked just now).
            let requested = unsafe { canary::Slot::of_block(page, p).recorded_size() }.unwrap_or(0);
            error::report_sized(ErrorKind::BufferOverflow, p as usize, bsize, requested);
        }
        return size;
    }
    Some(bsize)
}

/// The size a live block was requested with, when the canary records it.
///
/// # Safety
/// `p` must be a live block start of the in-use `page`.
#[inline]
pub unsafe fn requested_size(page: *const Page, p: *mut u8) -> Option<usize> {
    if canary::applies(page) {
        // SAFETY: `p` is a live block start of the in-use `page` (this
        // fn's contract).
        unsafe { canary::check(page, p) }
    } else {
        None
    }
}

/// The size a freed small or medium block was asked for, for a report of
/// a second free: what its canary's tail still records, 0 where the build
/// keeps none or wiped it at the first free.
///
/// # Safety
/// `p` must be a small or medium block of the in-use `page`, `bsize` its
/// size.
unsafe fn freed_request(page: *const Page, p: *mut u8, bsize: usize) -> usize {
    if !canary::ON || zero::ON {
        return 0;
    }
    // SAFETY: the whole slot of a small or medium block is readable (this
    // fn's contract).
    unsafe { canary::Slot::new(page, p, bsize).recorded_size() }.unwrap_or(0)
}

/// A free list of `page` is longer than its capacity (a cycle), or leads
/// into a live block. Reported as a corrupted free list (the caller cuts
/// the list).
///
/// # Safety
/// `page` must be a valid descriptor.
#[cold]
pub unsafe fn cycle_found(page: *const Page, at: *mut crate::meta::page::Block) {
    // SAFETY: `page` is a valid descriptor (this fn's contract).
    let bsize = unsafe { (*page).block_size };
    error::report(ErrorKind::CorruptedFreeList, at as usize, bsize);
}

/// A walk of a free list of `page` reached `at`: true (after reporting a
/// corrupted free list) if the `double-free` bitmap says the block is
/// live, so a forged link leads no walk into a live block, where relinking
/// would write over its owner's first word. Always false without the
/// bitmaps.
///
/// # Safety
/// `page` must be a valid descriptor of an in-use page and `at` a block of
/// it.
#[inline(always)]
pub unsafe fn live_in_list(page: *const Page, at: *mut crate::meta::page::Block) -> bool {
    // SAFETY: `at` is a block of the in-use `page` (this fn's contract), so
    // it lies in a live segment, with the bitmaps when they are on.
    if double_free::ON && unsafe { double_free::is_live(at as *const u8) } {
        // SAFETY: `page` is a valid descriptor (this fn's contract).
        unsafe { cycle_found(page, at) };
        return true;
    }
    false
}

/// Re-arms the canary of a live block resized in place to `size` bytes.
/// A small or medium block that shrank has what lay past its new size
/// (the owner's old bytes, the old canary) zeroed with `zero-on-free`:
/// its wipe at free reaches only as far as the request it then records.
///
/// # Safety
/// `p` must be a live block of the in-use `page` with `padded(size) <=
/// block_size`, its canary still armed for its size before the resize.
#[inline(always)]
pub unsafe fn resized(page: *const Page, p: *mut u8, size: usize) {
    if !canary::applies(page) {
        return;
    }
    // SAFETY: `p` is a live block of the in-use `page` (this fn's
    // contract).
    let slot = unsafe { canary::Slot::of_block(page, p) };
    // SAFETY: `page` is in use (this fn's contract), so a valid descriptor.
    let d = unsafe { Desc::new(page) };
    if zero::ON && !d.is_huge() && d.block_size() <= crate::meta::constants::MEDIUM_OBJ_MAX {
        // SAFETY: the block is live and armed for its old size (this fn's
        // contract).
        if let Some(old) = unsafe { slot.check() }.filter(|&old| old > size) {
            let end = canary::written_below_last_word(old, d.block_size());
            // SAFETY: `[size, end)` lies in the live block, before its
            // last word: the caller's.
            unsafe { core::ptr::write_bytes(p.add(size), 0, end.max(size) - size) };
        }
    }
    // SAFETY: `p` is a live block of the in-use `page`, the caller's,
    // with `padded(size) <= block_size` (this fn's contract).
    unsafe { canary::write(page, p, size) };
}
