//! `zero-on-free`: a freed block is wiped at once, so neither a dangling
//! reader nor its next owner sees the old contents, and `calloc` need not
//! clear it again. `write-after-free-check` (which turns `zero-on-free`
//! on): when it is handed out again it must still be zero past its first
//! word (the free-list link), else something wrote to it after the free.
//! hardened_malloc has the same two knobs (`CONFIG_ZERO_ON_FREE`,
//! `CONFIG_WRITE_AFTER_FREE_CHECK`): the wipe is a write per freed byte,
//! the check a read per reused byte, and each buys something alone.

use crate::meta::page::Page;

pub const ON: bool = cfg!(feature = "zero-on-free");
/// `write-after-free-check`: reused blocks are read back as zero.
pub const CHECK: bool = cfg!(feature = "write-after-free-check");
const _: () = assert!(!CHECK || ON);

/// Blocks never freed since their page's memory was zero may skip the
/// check on the way out (and the memset when carved): only with the
/// `double-free` bitmaps, which say, out of line where no write after free
/// can reach, whether a block was ever freed at an address.
pub const SKIP_FRESH: bool = CHECK && super::double_free::ON;

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
    // SAFETY: `page` is in use and `p` one of its blocks, not huge (this fn's
    // contract): `p` lies past the first byte of a live segment with bitmaps.
    SKIP_FRESH && unsafe { (*page).zero_start && !super::double_free::was_freed(p) }
}

/// Wipes the first `len` bytes of a block being freed (`len` a multiple of
/// 8 and at least 8, the block 8-aligned), inline rather than by a call to
/// `memset`: freed blocks are mostly small, where the call and its size
/// dispatch cost more than the stores. Up to 128 bytes it is two to eight
/// stores that may overlap, past that a loop of 64 bytes a round and a
/// last round that ends at `len`.
///
/// # Safety
/// `[p, p + len)` must lie in a block that is being freed, `p` 8-aligned,
/// `len >= 8`.
#[inline(always)]
pub unsafe fn wipe(p: *mut u8, len: usize) {
    /// Zeroes `[p + at, p + at + 16)`.
    ///
    /// # Safety
    /// The 16 bytes must lie in the caller's block, 8-aligned.
    #[inline(always)]
    unsafe fn z16(p: *mut u8, at: usize) {
        // SAFETY: the 16 bytes are the caller's to write, 8-aligned (this
        // fn's contract), and a `[u64; 2]` needs no more.
        unsafe { (p.add(at) as *mut [u64; 2]).write([0; 2]) };
    }
    // SAFETY: every store below lies in `[0, len)`, the caller's to write
    // and 8-aligned (this fn's contract: `len` a multiple of 8, `>= 8`).
    unsafe {
        if len <= 16 {
            (p as *mut u64).write(0);
            (p.add(len - 8) as *mut u64).write(0);
        } else if len <= 32 {
            z16(p, 0);
            z16(p, len - 16);
        } else if len <= 64 {
            z16(p, 0);
            z16(p, 16);
            z16(p, len - 32);
            z16(p, len - 16);
        } else if len <= 128 {
            z16(p, 0);
            z16(p, 16);
            z16(p, 32);
            z16(p, 48);
            z16(p, len - 64);
            z16(p, len - 48);
            z16(p, len - 32);
            z16(p, len - 16);
        } else {
            wipe_long(p, len);
        }
    }
}

/// [`wipe`] of more than 128 bytes: 64 bytes a round, then a last round
/// that ends at `len`. The loop is written as instructions: the compiler
/// turns a loop of plain zero stores into calls to `memset`, which this
/// avoids (see [`wipe`]).
///
/// # Safety
/// As for [`wipe`], with `len > 128`.
#[inline(always)]
unsafe fn wipe_long(p: *mut u8, len: usize) {
    // The loop stores 64 bytes at `p`, `p + 64`, ... while more than 64
    // bytes are left past the store (counted down from `len - 64 > 64`),
    // then the last 64 bytes, which end at `len`.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every store lies in `[p, p + len)`, the caller's (this fn's
    // contract); `movups` needs no alignment; changed registers declared.
    unsafe {
        core::arch::asm!(
            "xorps {z}, {z}",
            "2:",
            "movups [{q}], {z}",
            "movups [{q} + 16], {z}",
            "movups [{q} + 32], {z}",
            "movups [{q} + 48], {z}",
            "add {q}, 64",
            "sub {n}, 64",
            "ja 2b",
            "movups [{end} - 64], {z}",
            "movups [{end} - 48], {z}",
            "movups [{end} - 32], {z}",
            "movups [{end} - 16], {z}",
            q = inout(reg) p => _,
            n = inout(reg) len - 64 => _,
            end = in(reg) p.wrapping_add(len),
            z = out(xmm_reg) _,
            options(nostack),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: `[p, p + len)` is the caller's to write (this fn's contract).
    unsafe {
        core::ptr::write_bytes(p, 0, len)
    };
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
        // SAFETY: `p` is a free block of `bsize >= 16` bytes (this fn's contract):
        // its last word is inside it, 8-aligned as blocks and sizes are.
        let last = unsafe { (p.add(bsize - 8) as *const u64).read() };
        // Little-endian: the slot's last byte is the word's top byte.
        // SAFETY: the block's first `bsize - 8` bytes are a free block's
        // bytes of `page` (this fn's contract), and at least a word.
        return last & 0x00ff_ffff_ffff_ffff == 0 && unsafe { still_zero(page, p, bsize - 8, false) };
    }
    // A racing write after free is exactly what this looks for: it reads
    // as nonzero or not, either way no undefined value is used.
    let first = p as usize + crate::meta::constants::WORD;
    let last = p as usize + bsize - 1;
    // 4 KiB, the smallest OS page: a cheap first test, exact below.
    // SAFETY: `page` is an in-use descriptor (this fn's contract).
    if (first ^ last) >= 4096 && unsafe { (*page).zero_start } {
        // SAFETY: `[first, last]` is the free block (this fn's contract)
        // past its first word, so word aligned.
        unsafe { touch_for_write(first, last + 1) };
    }
    // SAFETY: the block past its link word is readable, word aligned and a
    // whole number of words (a free block of `page`, this fn's contract).
    unsafe {
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
/// `[p, p + len)` must be readable and `p` word aligned; see
/// [`still_zero`] on racing writes.
#[inline]
pub unsafe fn words_zero(p: *const u8, len: usize) -> bool {
    // SAFETY: `[p, p + len)` is readable and `p` word aligned (this fn's
    // contract); a racing write reads as some value (see `still_zero`).
    let words = unsafe { core::slice::from_raw_parts(p as *const usize, len / 8) };
    #[cfg(target_arch = "x86_64")]
    if len >= 512 && avx2::present() {
        // 32-byte vectors pay off from 512 bytes up (measured on
        // `skewed` and `mixed-churn`, docs/PERFORMANCE.md, "The AVX2 zero
        // check"); smaller blocks gain nothing from them.
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
        // `[base, base + n)` lies in `[p, p + len)`, page-aligned as `at`
        // is a multiple of the page size: nobody's mapped memory (this
        // fn's contract), as is every run of it below.
        let base = p.wrapping_add(at);
        // SAFETY: `[base, base + n)` is page-aligned mapped memory.
        if !unsafe { crate::os::residency(base, n, &mut vec) } {
            // SAFETY: `[base, base + n)` is mapped and its bytes nobody's.
            unsafe { core::ptr::write_bytes(base, 0, n) };
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
            let run = base.wrapping_add(s);
            if resident || drops == MAX_DROPS {
                // SAFETY: `[s, e)` lies in `[0, n)`: the run is in `[base,
                // base + n)`, mapped and nobody's.
                unsafe { core::ptr::write_bytes(run, 0, e - s) };
            } else {
                // SAFETY: the run is mapped and nobody's (as for the write), its
                // ends page multiples or `n`, the span's page-aligned end.
                unsafe { crate::os::purge(run, e - s) };
                drops += 1;
            }
            i = j;
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
        // SAFETY: the CPU has AVX2 (`present` said yes, this fn's
        // contract), which `or_all_avx2` is compiled for.
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
