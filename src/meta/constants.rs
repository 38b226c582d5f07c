//! Layout constants shared by every part of the allocator.
//!
//! ```text
//! segment (4 MiB, 4 MiB-aligned)
//! +-----------+---------------------+----------+-----+----------+
//! | header    | page 0 (shortened)  | page 1   | ... | page n-1 |
//! | + page    |                     |          |     |          |
//! | descrs    |                     |          |     |          |
//! +-----------+---------------------+----------+-----+----------+
//!   small segments: 64 pages of 64 KiB, blocks up to 8 KiB
//!   medium segments: 8 pages of 512 KiB, blocks up to 64 KiB
//!   large segments: one page spanning the segment, blocks up to 2 MiB
//!   huge segments: one block of any size, its own mapping
//! ```

pub const WORD: usize = core::mem::size_of::<usize>();

pub const SEGMENT_SHIFT: usize = 22;
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;

pub const SMALL_PAGE_SHIFT: usize = 16;
pub const MEDIUM_PAGE_SHIFT: usize = 19;
pub const SMALL_PAGES_PER_SEGMENT: usize = SEGMENT_SIZE >> SMALL_PAGE_SHIFT;

/// Largest request served through the per-thread direct table.
pub const SMALL_SIZE_MAX: usize = 1024;
pub const SMALL_WSIZE_MAX: usize = SMALL_SIZE_MAX / WORD;
/// Largest block living in a small (64 KiB) page.
pub const SMALL_OBJ_MAX: usize = 8 * 1024;
/// Largest block living in a medium (512 KiB) page.
pub const MEDIUM_OBJ_MAX: usize = 64 * 1024;
/// Largest block living in a large page; anything bigger is huge.
pub const LARGE_OBJ_MAX: usize = 2 * 1024 * 1024;

/// Largest request we even try: keeps all size arithmetic far from overflow.
pub const MAX_ALLOC: usize = isize::MAX as usize / 2;

/// Alignment guaranteed without asking: blocks are word multiples.
pub const MIN_ALIGN: usize = WORD;

/// Largest alignment met by rounding the size up to a multiple of it: every
/// block size that is a multiple of 16 is 16-aligned (pages start aligned to
/// their block size's power-of-two factor, and above 8 words the bins step
/// by whole multiples of 16 bytes).
pub const SIZE_ALIGN_MAX: usize = 16;

/// Bytes of blocks a page makes ready at once, so a fresh page touches its
/// memory gradually instead of all at once.
pub const EXTEND_BYTES: usize = 4 * 1024;
/// Slow-path calls a retired (empty) page is kept for reuse before release.
pub const RETIRE_CYCLES: u8 = 16;
