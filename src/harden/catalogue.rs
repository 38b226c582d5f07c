//! The catalogue of defences: each one named once, with what it catches,
//! what it costs and which preset has it, and the order in which they act
//! on each event the core reports.
//!
//! A defence is a Cargo feature and a `const` switch here, true when the
//! feature is on. The switches are the only names of defences outside
//! their own files: the hooks in `harden/mod.rs` test them, and the core
//! asks the hooks or the properties below (what a build must do), never a
//! switch by its feature's name. SECURITY.md has the measured costs and
//! the reasons for each preset's choice; `tests/presets.rs` holds
//! `Cargo.toml`'s presets to its table.
//!
//! # The events, and the order in which the defences act on them
//!
//! The core reports five events; each hook applies the defences of the
//! build in this order, so a check always sees the block before anything
//! rewrites it:
//!
//! 1. **A span is taken** (`segment_taken`, `page_slot`, `open_block`):
//!    `guard-pages` places the guards of the span's layout (after the
//!    header, after each small/medium page's blocks, between large slots,
//!    on both sides of a huge block).
//! 2. **A page is carved** (`batch`, `carved`, `build_free_list`):
//!    `zero-on-free` zeroes reused memory, `underflow-trailers` writes
//!    every slot's trailer, `random-order` permutes the batch, `encoded-freelist`
//!    encodes the links it is threaded with.
//! 3. **A block is handed out** (`on_alloc`, `large_taken`, `huge_taken`):
//!    `underflow-trailers` checks the slot trailers around it,
//!    `write-after-free-check`
//!    reads it back as zero, `double-free` marks it live (refusing a block
//!    that is live already), `encoded-freelist` clears its link word,
//!    `canary` arms the bytes after the request.
//! 4. **A block is freed** (`on_free`, then the quarantine): `double-free`
//!    marks it freed (a second free stops here), `canary` checks its
//!    overflow bytes and `underflow-trailers` the trailers around it, `seal-freed-large` seals a
//!    large block whole (without it a large block is left to be purged
//!    after the purge delay), `zero-on-free` wipes a small or medium one,
//!    `quarantine` holds it; when it reaches a free list
//!    `encoded-freelist` encodes its link.
//! 5. **Blocks are reused** (a free list taken back, `shuffle`,
//!    `leaving_quarantine`): `quarantine` lets blocks out at random,
//!    `write-after-free-check` reads a leaving block's link word,
//!    `random-order` shuffles a list before reuse (not while a quarantine
//!    is in effect: its random departures already decide the order).
//!
//! And **a page is given back** (`page_emptied`), its blocks all free:
//! `write-after-free-check` reads every block of it that was ever freed,
//! since no later hand-out will. And **a span is released**
//! (`segment_released`): `guard-pages` leaves
//! a small or medium segment's page guards for the next segment of its
//! kind; `seal-freed-large` makes a huge block's span, and a segment of
//! large slots, inaccessible at once (without it they are left as they
//! are, guards and all, to be purged after the arena's delay).

use super::{canary, double_free, encode, guard, order, quarantine, zero, zero_size};

/// `guard-pages` — in `secure` and `secure-max`. Catches linear overflows
/// off the end of a small or medium page, and over- and underflows of
/// large and huge blocks (an inaccessible page each); `malloc(0)` points
/// at never-accessible memory; arena addresses are random. Costs a kernel
/// call per page use and per slot of a new segment of large slots (a
/// guard marker, splitting no mapping where the kernel has them) and one
/// OS page per page area.
pub const GUARD_PAGES: bool = guard::ON;

/// `seal-freed-large` — in `secure-max` only. Catches any access to a
/// freed large or huge block (it is inaccessible at once, from whichever
/// thread frees it) and overflows within a live large block's slack (it
/// is open only as far as its request). Costs kernel calls on every large
/// `malloc` and `free` and page faults on reuse.
pub const SEAL_FREED_LARGE: bool = cfg!(feature = "seal-freed-large");

/// `encoded-freelist` — in both presets. Catches forged or corrupted
/// free-list links: each is stored encoded with two per-page keys and
/// must decode to a block of its page. Costs a few instructions per link
/// written or read.
pub const ENCODED_FREELIST: bool = encode::ON;

/// `random-order` — in both presets. Makes placement unpredictable: fresh
/// blocks in a random permutation, freed lists shuffled before reuse.
/// Costs a generator step per block carved and per shuffle.
pub const RANDOM_ORDER: bool = order::ON;

/// `double-free` — in both presets. Catches every second free, from any
/// thread, however late, and `realloc`/`usable_size` of freed blocks, by
/// live and freed bitmaps out of line. Costs a bit flip per malloc and per
/// free, and 3% of each segment.
pub const DOUBLE_FREE: bool = double_free::ON;

/// `canary` — in both presets. Catches overflows of one byte or more past
/// the requested size (checked at free and realloc). Costs a keyed write at
/// malloc and a check at free, and 5 bytes per block, usually within the
/// slack.
pub const CANARY: bool = canary::ON;

/// `underflow-trailers` — in `secure-max` only (turns on `canary`). Every
/// small and medium slot ends in a keyed trailer byte, live or free, so a
/// write just below a block is reported. Costs a keyed write per slot
/// carved and a check of two trailers at each malloc and free.
pub const UNDERFLOW_TRAILERS: bool = canary::TRAILERS;

/// `zero-on-free` — in `secure-max` only. A freed small or medium block is
/// wiped at once, so neither a dangling reader nor a new owner sees old
/// bytes, and `calloc` need not clear it again. Costs a write of every
/// freed byte, and the page faults of pages its owner never touched.
pub const ZERO_ON_FREE: bool = zero::ON;

/// `write-after-free-check` — in `secure-max` only (turns on
/// `zero-on-free`). Catches a write to a freed block when the block is
/// handed out again or leaves the quarantine. Costs a read of every reused
/// byte.
pub const WRITE_AFTER_FREE_CHECK: bool = zero::CHECK;

/// `quarantine` — in both presets (turns on `double-free`). Freed blocks
/// wait in a bounded per-thread quarantine and leave it at random, so a
/// stale free finds its block still free and is reported. Costs the
/// memory it holds and a random draw per departure.
pub const QUARANTINE: bool = quarantine::ON;

/// Which preset this build is, by its defences: `"plain"`, `"secure"`,
/// `"secure-max"`, or `"custom"` for any other set of features.
pub const PRESET: &str = {
    let secure = GUARD_PAGES && ENCODED_FREELIST && RANDOM_ORDER && DOUBLE_FREE && CANARY && QUARANTINE;
    let extra = SEAL_FREED_LARGE || WRITE_AFTER_FREE_CHECK || UNDERFLOW_TRAILERS || ZERO_ON_FREE;
    if !HARDENED {
        "plain"
    } else if secure && !extra {
        "secure"
    } else if secure && SEAL_FREED_LARGE && WRITE_AFTER_FREE_CHECK && UNDERFLOW_TRAILERS {
        "secure-max"
    } else {
        "custom"
    }
};

// What a build must do, derived from its defences: the core asks these.

/// Zero-size requests get their own inaccessible slots (with
/// `guard-pages`), so a write through one faults.
pub const ZERO_SIZE_SLOTS: bool = zero_size::ON;

/// Any defence is on: the checks every hardened build makes (sized frees)
/// are on too.
pub const HARDENED: bool = CHECKS || KEYS || RANDOM || GUARD_PAGES;

/// Some defence that checks blocks on malloc or free is on.
pub(super) const CHECKS: bool = CANARY || DOUBLE_FREE || ZERO_ON_FREE;
/// Pages need secret keys.
pub(super) const KEYS: bool = ENCODED_FREELIST || CANARY;
/// Heaps need a random generator.
pub const RANDOM: bool = RANDOM_ORDER || QUARANTINE;
/// Spans carry guards: a small or medium segment's page guards stay in
/// place when it is released, for the next segment of its kind.
pub const GUARDED_SPANS: bool = GUARD_PAGES;
/// A small or medium block on a free list reads zero past its link word:
/// it was wiped when freed, or zeroed when carved from reused memory, and
/// a block grown in place zeroes what it gains. `calloc` then clears only
/// the link word.
pub const FREE_BLOCKS_READ_ZERO: bool = ZERO_ON_FREE;
/// A freed small, medium or large block may wait before it reaches its
/// page or slot: `free` hands it to harden (`QuarantineBounds`), and a
/// thread's held blocks are freed when it exits or collects. Huge blocks
/// never wait.
pub const FREED_BLOCKS_WAIT: bool = QUARANTINE;
/// A huge block is usable only to the end of the last OS page it needs
/// (the guard lies at its segment's end, or with `seal-freed-large`
/// right after it), and `realloc` grows it in place up to that guard.
pub const HUGE_BLOCKS_GUARDED: bool = GUARD_PAGES;
/// The arena picks a free span at random rather than the lowest, so
/// segment addresses do not repeat from run to run (the guard build's
/// randomized segment bases).
pub const RANDOM_SPANS: bool = GUARD_PAGES;
/// Segments returned to an arena stay in the segment map until their memory
/// is purged or reused, so a late second free of one of their blocks reads
/// the stale header and is reported as a double free rather than as a
/// foreign pointer.
/// (The header arithmetic in `meta::segment` needs this too, and has it as
/// `STALE_HEADERS`, which must be this switch.)
pub const STALE_SEGMENTS: bool = DOUBLE_FREE;
const _: () = assert!(STALE_SEGMENTS == crate::meta::segment::STALE_HEADERS);
/// A list of blocks freed by other threads may be taken over without
/// walking it (its length rides in `thread_free`): in the plain build,
/// which checks no link, and with `double-free`, whose bitmap refuses a
/// live block popped again, so a forged cycle is caught when it comes
/// round (every popped link is decoded and checked too). Other hardened
/// builds walk each list and check its length against forged cycles.
pub const UNWALKED_REMOTE_LISTS: bool = !HARDENED || DOUBLE_FREE;

/// Appends what the defences of this build do at run time, for
/// `FORTALLOC_VERBOSE`: how guards are made (kernel guard markers or
/// `mprotect`) and the quarantine's bounds, or that the build has none.
pub fn describe(line: &mut crate::error::Line) {
    if !HARDENED {
        line.str("no defences (the plain build)");
        return;
    }
    if GUARD_PAGES {
        line.str(if crate::os::guards_split_mappings() {
            "guards by mprotect"
        } else {
            "guards by kernel markers"
        });
    } else {
        line.str("no guards");
    }
    use crate::options::{quarantine_blocks, quarantine_bytes, quarantine_process_bytes};
    if QUARANTINE && quarantine_bytes() > 0 && quarantine_blocks() > 0 {
        line.str(", quarantine of at most ")
            .bytes(quarantine_bytes() as u64)
            .str(" and ")
            .dec(quarantine_blocks())
            .str(" blocks per thread, ")
            .bytes(quarantine_process_bytes() as u64)
            .str(" per process");
    } else if QUARANTINE {
        line.str(", quarantine turned off by its options");
    } else {
        line.str(", no quarantine");
    }
}
