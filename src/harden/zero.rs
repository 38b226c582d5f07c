//! `zero-on-free`: a freed block is wiped at once, so neither a dangling
//! reader nor its next owner sees the old contents; when it is handed out
//! again it must still be zero past its first word (the free-list link),
//! else something wrote to it after the free.

use crate::meta::page::Page;

pub const ON: bool = cfg!(feature = "zero-on-free");

/// Blocks never freed since their page's memory was zero may skip the
/// check on the way out (and the memset when carved): only with the
/// `double-free` bitmaps, which say, out of line where no write after free
/// can reach, whether a block was ever freed at an address.
pub const SKIP_FRESH: bool = ON && super::double_free::ON;

/// True if the block at `p`, about to be handed out, has been zero since
/// its page's memory was fresh or purged: this use of the page started on
/// zero memory (see `Page::zero_start`) and no block at `p` was ever freed
/// (a freed block was wiped, so zero again, but a write after its free is
/// exactly what the check is for). Carving wrote its link word only.
///
/// # Safety
/// `p` must be a block of the in-use, non-huge `page`.
#[inline(always)]
pub unsafe fn fresh(page: *const Page, p: *const u8) -> bool {
    // SAFETY: per the caller, `p` lies in a live segment with the bitmaps.
    SKIP_FRESH && unsafe { (*page).zero_start && !super::double_free::was_freed(p) }
}

/// Wipes a block being freed.
///
/// # Safety
/// `p` must be a block of `bsize` bytes that is being freed.
#[inline]
pub unsafe fn wipe(p: *mut u8, bsize: usize) {
    // SAFETY: the block is the caller's to wipe.
    unsafe { core::ptr::write_bytes(p, 0, bsize) };
}

/// True if a free block of `page` is still zero past its link word (and
/// before its last byte, with `trailer`: the canary build's slot trailer).
///
/// # Safety
/// `p` must be a free block of `bsize` bytes of the in-use `page`; with
/// `trailer`, `bsize >= 16`.
#[inline]
pub unsafe fn still_zero(page: *const Page, p: *const u8, bsize: usize, trailer: bool) -> bool {
    if trailer {
        // SAFETY: per the caller; the last word is inside the block.
        let last = unsafe { (p.add(bsize - 8) as *const u64).read() };
        // Little-endian: the slot's last byte is the word's top byte.
        // SAFETY: as for the whole block, with 8 bytes fewer.
        return last & 0x00ff_ffff_ffff_ffff == 0 && unsafe { still_zero(page, p, bsize - 8, false) };
    }
    // A racing write after free is exactly what this looks for: it reads
    // as nonzero or not, either way no undefined value is used.
    // SAFETY: reads stay inside the block (word multiples, word aligned),
    // and a free block is not otherwise written concurrently.
    unsafe {
        let first = p as usize + crate::meta::constants::WORD;
        let last = p as usize + bsize - 1;
        // 4 KiB, the smallest OS page: a cheap first test, exact below.
        if (first ^ last) >= 4096 && (*page).zero_start {
            touch_for_write(first, last + 1);
        }
        words_zero(
            p.add(crate::meta::constants::WORD),
            bsize - crate::meta::constants::WORD,
        )
    }
}

/// True if the `len` bytes at `p` (word-aligned, a whole number of words)
/// are all zero.
///
/// # Safety
/// `[p, p + len)` must be readable; see [`still_zero`] on racing writes.
#[inline]
pub unsafe fn words_zero(p: *const u8, len: usize) -> bool {
    // SAFETY: per the caller.
    let words = unsafe { core::slice::from_raw_parts(p as *const usize, len / 8) };
    #[cfg(target_arch = "x86_64")]
    if len >= 512 && avx2::present() {
        // 32-byte vectors pay off from 512 bytes up (measured on
        // `skewed` and `mixed-churn`, docs/PERFORMANCE.md); smaller
        // blocks gain nothing from them.
        // SAFETY: the CPU has AVX2, as `or_all` requires.
        return unsafe { avx2::or_all(words) } == 0;
    }
    // An OR over everything, no early exit: it vectorizes, which made
    // the check four times faster on 64 KiB blocks.
    words.iter().fold(0, |acc, &w| acc | w) == 0
}

/// Makes the first access to each OS page past the block's first word a
/// write that changes nothing (see `crate::os::touch_for_write`). In a page
/// whose memory was purged, a block freed before the purge is checked
/// again when handed out, and the check's reads would map the kernel's
/// zero page where the purge emptied an OS page of the block.
///
/// # Safety
/// `[from, end)` must lie in a free block, `from` word aligned.
#[inline(never)]
unsafe fn touch_for_write(from: usize, end: usize) {
    let ps = crate::os::page_size();
    let mut at = from.next_multiple_of(ps);
    while at < end {
        // The write keeps whatever is there, even a racing write after free.
        // SAFETY: `at` is a page-aligned (so word-aligned) word inside the
        // free block.
        unsafe { crate::os::touch_for_write(at as *mut u64) };
        at += ps;
    }
}

/// Makes the page-aligned `[p, p + len)` of reused memory (which may hold
/// an old owner's bytes) read as zero, writing only the pages that are
/// resident: runs of pages that are not are dropped instead (`madvise`,
/// which costs nothing where no page is mapped), so a big span of which
/// the last user touched a little is not faulted in whole by a memset.
/// Dropping is exact whatever `mincore` says, swapped-out pages included.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory this process mapped, whose
/// contents are nobody's.
pub unsafe fn zero_reused(p: *mut u8, len: usize) {
    const CHUNK: usize = 256;
    /// Drops per chunk at most: past it, fragmented memory is written.
    const MAX_DROPS: usize = 8;
    let ps = crate::os::page_size();
    let mut vec = [0u8; CHUNK];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK * ps);
        // SAFETY: per the caller, every range below lies in `[p, p + len)`.
        unsafe {
            let base = p.add(at);
            if !crate::os::residency(base, n, &mut vec) {
                core::ptr::write_bytes(base, 0, n);
                at += n;
                continue;
            }
            let pages = n.div_ceil(ps);
            let (mut i, mut drops) = (0, 0);
            while i < pages {
                let resident = vec[i] & 1 != 0;
                let mut j = i + 1;
                while j < pages && (vec[j] & 1 != 0) == resident {
                    j += 1;
                }
                let (s, e) = (i * ps, (j * ps).min(n));
                if resident || drops == MAX_DROPS {
                    core::ptr::write_bytes(base.add(s), 0, e - s);
                } else {
                    crate::os::purge(base.add(s), e - s);
                    drops += 1;
                }
                i = j;
            }
        }
        at += n;
    }
}

/// The zero check's OR with 32-byte vectors, on CPUs that have them.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// 0: not known yet, 1: no, 2: yes.
    static PRESENT: AtomicU8 = AtomicU8::new(0);

    #[inline(always)]
    pub fn present() -> bool {
        match PRESENT.load(Ordering::Relaxed) {
            0 => detect(),
            v => v == 2,
        }
    }

    #[cold]
    fn detect() -> bool {
        use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
        // SAFETY: cpuid exists on every x86_64 CPU; xgetbv only runs when
        // cpuid says the OS enabled it (OSXSAVE).
        let yes = unsafe {
            let leaf1 = __cpuid(1);
            let osxsave_avx = leaf1.ecx & (1 << 27) != 0 && leaf1.ecx & (1 << 28) != 0;
            osxsave_avx
                && _xgetbv(0) & 6 == 6
                && __cpuid(0).eax >= 7
                && __cpuid_count(7, 0).ebx & (1 << 5) != 0
        };
        PRESENT.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
        yes
    }

    /// # Safety
    /// The CPU must have AVX2 ([`present`]).
    #[target_feature(enable = "avx2")]
    unsafe fn or_all_avx2(words: &[usize]) -> usize {
        words.iter().fold(0, |acc, &w| acc | w)
    }

    /// The OR of `words`.
    ///
    /// # Safety
    /// [`present`] must have said yes.
    #[inline(always)]
    pub unsafe fn or_all(words: &[usize]) -> usize {
        // SAFETY: per the caller, the CPU has AVX2.
        unsafe { or_all_avx2(words) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_word_past_the_link_that_is_not_zero_is_seen() {
        let page = Page::empty();
        let mut mem = [0u64; 1025];
        let m = mem.as_mut_ptr();
        let p = m as *mut u8;
        for bsize in [16, 64, 136, 504, 512, 520, 1024, 4096, 8192] {
            // SAFETY: `mem` holds 8 KiB and a word; every block here fits,
            // and it is only reached through `m`.
            unsafe {
                m.write(0xdead); // the link word is not checked
                assert!(still_zero(&page, p, bsize, false), "bsize {bsize}: zero");
                for w in 1..bsize / 8 {
                    m.add(w).write(1 << (w % 64));
                    assert!(!still_zero(&page, p, bsize, false), "bsize {bsize}: word {w}");
                    m.add(w).write(0);
                }
                // Past the block does not count.
                m.add(bsize / 8).write(1);
                assert!(still_zero(&page, p, bsize, false), "bsize {bsize}: beyond");
                m.add(bsize / 8).write(0);
            }
        }
    }
}
