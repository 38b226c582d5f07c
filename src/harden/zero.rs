//! `zero-on-free`: a freed block is wiped at once, so neither a dangling
//! reader nor its next owner sees the old contents; when it is handed out
//! again it must still be zero past its first word (the free-list link),
//! else something wrote to it after the free.

pub const ON: bool = cfg!(feature = "zero-on-free");

/// Wipes a block being freed.
///
/// # Safety
/// `p` must be a block of `bsize` bytes that is being freed.
#[inline]
pub unsafe fn wipe(p: *mut u8, bsize: usize) {
    // SAFETY: the block is the caller's to wipe.
    unsafe { core::ptr::write_bytes(p, 0, bsize) };
}

/// True if a free block is still zero past its link word.
///
/// # Safety
/// `p` must be a free block of `bsize` bytes.
#[inline]
pub unsafe fn still_zero(p: *const u8, bsize: usize) -> bool {
    // SAFETY: reads stay inside the block; blocks are word multiples and
    // word aligned.
    unsafe {
        let words = p as *const usize;
        (1..bsize / core::mem::size_of::<usize>()).all(|i| *words.add(i) == 0)
    }
}
