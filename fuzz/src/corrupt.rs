//! `corrupt`: use-after-free writes into freed blocks and overflows past
//! the end of live blocks, then more allocation and freeing. With the
//! hardened build (`--features secure` or `secure-max`) and a non-aborting
//! error handler: fortalloc must never hand out memory outside its own
//! pages or overlapping a live block, under `secure-max` a block it hands
//! out must still be zero past its link word (its write-after-free check
//! reads it, so a written freed block is either reported or never handed
//! out), and the first bytes of a live
//! block, where a free list's link would go, stay its owner's (a forged
//! link must not lead a walk of a free list into a live block). Each
//! input runs with the quarantine off, at its default bounds, or tiny, so
//! writes land in quarantined blocks and in blocks on free lists alike.
//!
//! The plain build promises nothing once a freed block or a canary is
//! written to (a forged free-list link is followed: see SECURITY.md), so
//! there the writes are skipped and only the allocation sequence runs.

use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::{Arbitrary, Unstructured};

use crate::model::Model;

/// The corrupting writes run only where fortalloc promises to cope.
pub const CORRUPTS: bool = cfg!(any(feature = "secure", feature = "secure-max"));
/// Blocks handed out are checked zero past their link: only where the
/// allocator checks them so before handing them out.
const CLEAN: bool = cfg!(feature = "secure-max");

/// Detections reported to the handler.
pub static DETECTIONS: AtomicUsize = AtomicUsize::new(0);

fn handler(_e: &fortalloc::ErrorInfo) {
    DETECTIONS.fetch_add(1, Ordering::Relaxed);
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Alloc {
        size: u16,
    },
    Free {
        pick: u16,
    },
    /// Free a block and then write into it (keeping a neighbour of the same
    /// size alive, so its page stays mapped).
    WriteAfterFree {
        size: u16,
        offset: u16,
        bytes: [u8; 8],
        len: u8,
    },
    /// Write up to 5 bytes past a live block's requested size: every block
    /// has at least that much slack in the hardened build (canary and
    /// size tail), so the write stays in the block and hits its canary.
    Overflow {
        pick: u16,
        len: u8,
        byte: u8,
    },
    /// Empty this thread's quarantine (every block in it is checked as it
    /// leaves) and give back what can be.
    Collect,
}

/// Small and medium sizes only: freed large and huge blocks are made
/// inaccessible, so writing to them would fault by design.
fn size_of(n: u16) -> usize {
    n as usize % 60_000
}

pub fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    fortalloc::set_error_handler(Some(handler));
    crate::quarantine_for(u.arbitrary()?);
    let mut model = Model::default();
    let mut seed = 1u8;
    let mut steps = 0;
    while !u.is_empty() && steps < 400 {
        steps += 1;
        seed = seed.wrapping_add(1);
        match Op::arbitrary(u)? {
            Op::Alloc { size } => {
                let n = size_of(size);
                let p = fortalloc::malloc(n);
                fresh_block_is_clean(p, n);
                stamp_head(p, n);
                model.add_unchecked(p, n, 8, seed);
            }
            Op::Free { pick } => {
                if let Some((p, l)) = model.pick(pick as usize) {
                    head_is_intact(p as *mut u8, l.size);
                    model.forget(p);
                    // SAFETY: a live block (its canary may have been hit).
                    unsafe { fortalloc::free(p as *mut u8) };
                }
            }
            Op::WriteAfterFree {
                size,
                offset,
                bytes,
                len,
            } => {
                let n = size_of(size).max(16);
                let anchor = fortalloc::malloc(n);
                let victim = fortalloc::malloc(n);
                let anchor2 = fortalloc::malloc(n);
                for p in [anchor, anchor2] {
                    fresh_block_is_clean(p, n);
                    stamp_head(p, n);
                    model.add_unchecked(p, n, 8, seed);
                }
                fresh_block_is_clean(victim, n);
                // SAFETY: a fresh block, freed once.
                unsafe { fortalloc::free(victim) };
                if CORRUPTS {
                    let len = (len as usize % 8).min(n);
                    let at = offset as usize % (n - len + 1);
                    for (i, &b) in bytes.iter().take(len).enumerate() {
                        // Deliberately a use-after-free write.
                        // SAFETY: inside the freed block, whose page stays
                        // mapped (its neighbours are alive).
                        unsafe { std::ptr::write_volatile(victim.add(at + i), b) };
                    }
                }
            }
            Op::Collect => fortalloc::collect(false),
            Op::Overflow { pick, len, byte } => {
                if let Some((p, l)) = model.pick(pick as usize) {
                    // A zero-size block points at never-accessible memory
                    // in the hardened build: an overflow there faults, by
                    // design.
                    if CORRUPTS && l.size > 0 {
                        for i in 0..1 + len as usize % 5 {
                            // SAFETY: deliberately past the requested size,
                            // within the block's slack (see the variant).
                            unsafe { std::ptr::write_volatile((p as *mut u8).add(l.size + i), byte) };
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The bytes of a live block a free-list link would overwrite: its first
/// word, or all of a smaller block.
fn head(n: usize) -> std::ops::Range<usize> {
    0..n.min(8)
}

/// The stamp byte at offset `i` of the head of the block at `p` (from its
/// address: the model keeps no contents for this target).
fn stamp(p: *mut u8, i: usize) -> u8 {
    let a = p as usize;
    crate::model::pattern((a >> 4) as u8 ^ (a >> 12) as u8, i)
}

/// Stamps the head of the live block `p` of `n` bytes.
fn stamp_head(p: *mut u8, n: usize) {
    for i in head(n) {
        // SAFETY: a live block of `n` bytes.
        unsafe { std::ptr::write_volatile(p.add(i), stamp(p, i)) };
    }
}

/// A live block about to be freed still has the head its owner stamped:
/// nothing (a walk of a free list led astray by a forged link) wrote a
/// link into it.
fn head_is_intact(p: *mut u8, n: usize) {
    for i in head(n) {
        // SAFETY: a live block of `n` bytes.
        let b = unsafe { std::ptr::read_volatile(p.add(i)) };
        assert_eq!(
            b,
            stamp(p, i),
            "live block {p:?}: byte {i} overwritten while it was live"
        );
    }
}

/// A block just handed out: under `secure-max` it must be zero past its
/// first word (the free-list link) up to its requested size.
fn fresh_block_is_clean(p: *mut u8, n: usize) {
    assert!(!p.is_null(), "malloc({n})");
    if CLEAN {
        for i in 8..n {
            // SAFETY: a fresh block of `n` bytes.
            let b = unsafe { *p.add(i) };
            assert_eq!(
                b, 0,
                "block {p:?} handed out with byte {i} written after free, unreported"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    #[test]
    fn random_corruption_never_breaks_the_invariants() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0xc0);
        let runs = if cfg!(any(feature = "secure", feature = "secure-max")) {
            60
        } else {
            300
        };
        for _ in 0..runs {
            let len = rng.gen_range(0..4000);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = super::run(&mut arbitrary::Unstructured::new(&data));
        }
        if super::CORRUPTS {
            assert!(
                super::DETECTIONS.load(std::sync::atomic::Ordering::Relaxed) > 0,
                "corruption was seen"
            );
        }
    }
}
