//! `ops`: any sequence of allocator operations, on this thread and on
//! helper threads, checked against the shadow model: every block aligned as
//! asked, owned by fortalloc (its usable size is readable), never
//! overlapping another live block, at least as large as asked, zeroed when
//! asked, and its contents intact at free and across realloc.

use arbitrary::{Arbitrary, Unstructured};

use crate::model::Model;

/// A size drawn the way programs use them: mostly small, some medium,
/// a few large and huge.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Size {
    Tiny(u8),
    Small(u16),
    Medium(u16),
    Large(u32),
}

impl Size {
    pub fn bytes(self) -> usize {
        match self {
            Size::Tiny(n) => n as usize,
            Size::Small(n) => n as usize % 2048,
            Size::Medium(n) => n as usize * 2 % 140_000,
            Size::Large(n) => n as usize % (3 << 20),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub enum Op {
    Alloc {
        size: Size,
        align_log: u8,
        zeroed: bool,
    },
    Free {
        pick: u16,
    },
    Realloc {
        pick: u16,
        size: Size,
    },
    UsableSize {
        pick: u16,
    },
    /// Hand some blocks to another thread, which frees them.
    FreeOnOtherThread {
        count: u8,
    },
    /// A thread allocates blocks and exits while they are alive; they join
    /// the model and are freed here later.
    ThreadLeavesBlocks {
        count: u8,
        size: Size,
    },
    Collect {
        force: bool,
    },
}

fn align_of(log: u8) -> usize {
    // Up to 1 MiB: bigger alignments cost a huge mapping each.
    1usize << (log % 21)
}

/// Runs one sequence; returns Err only when the input ran out.
pub fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    crate::quarantine_for(u.arbitrary()?);
    let mut model = Model::default();
    let mut seed: u8 = 1;
    let mut steps = 0;
    while !u.is_empty() && steps < 400 {
        steps += 1;
        seed = seed.wrapping_add(1);
        match Op::arbitrary(u)? {
            Op::Alloc {
                size,
                align_log,
                zeroed,
            } => {
                let (n, a) = (size.bytes(), align_of(align_log));
                let p = match (zeroed, a <= 8) {
                    (false, true) => fortalloc::malloc(n),
                    (true, true) => fortalloc::zalloc(n),
                    (false, false) => fortalloc::malloc_aligned(n, a),
                    (true, false) => fortalloc::zalloc_aligned(n, a),
                };
                model.add(p, n, a.max(8), zeroed, seed);
            }
            Op::Free { pick } => {
                if let Some((p, _)) = model.pick(pick as usize) {
                    model.remove(p);
                    // SAFETY: a live block, freed once.
                    unsafe { fortalloc::free(p as *mut u8) };
                }
            }
            Op::Realloc { pick, size } => {
                if let Some((p, l)) = model.pick(pick as usize) {
                    let n = size.bytes();
                    model.remove(p);
                    // SAFETY: a live block with alignment `l.align`.
                    let q = unsafe { fortalloc::realloc_aligned(p as *mut u8, n, l.align) };
                    assert!(!q.is_null(), "realloc to {n}");
                    // The kept prefix must be intact: check it, then restamp.
                    let kept = l.size.min(n);
                    // The offsets stamped at the old size, below the kept length.
                    for i in crate::model::offsets(l.size).take_while(|&i| i < kept) {
                        // SAFETY: `i < kept <= n`, inside the new block.
                        let b = unsafe { *q.add(i) };
                        assert_eq!(b, crate::model::pattern(l.seed, i), "realloc lost byte {i}");
                    }
                    model.add(q, n, l.align, false, seed);
                }
            }
            Op::UsableSize { pick } => {
                if let Some((p, l)) = model.pick(pick as usize) {
                    // SAFETY: a live block.
                    assert!(unsafe { fortalloc::usable_size(p as *const u8) } >= l.size);
                }
            }
            Op::FreeOnOtherThread { count } => {
                let mut batch = Vec::new();
                for k in 0..(count % 16) as usize {
                    if let Some((p, _)) = model.pick(k * 7) {
                        model.remove(p);
                        batch.push(p);
                    }
                }
                std::thread::spawn(move || {
                    for p in batch {
                        // SAFETY: live blocks handed over, freed once here.
                        unsafe { fortalloc::free(p as *mut u8) };
                    }
                })
                .join()
                .expect("freeing thread");
            }
            Op::ThreadLeavesBlocks { count, size } => {
                let n = size.bytes();
                let blocks = std::thread::spawn(move || {
                    (0..(count % 16) as usize)
                        .map(|_| fortalloc::malloc(n) as usize)
                        .collect::<Vec<_>>()
                })
                .join()
                .expect("allocating thread");
                for p in blocks {
                    model.add(p as *mut u8, n, 8, false, seed);
                }
            }
            Op::Collect { force } => fortalloc::collect(force),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    #[test]
    fn random_sequences_keep_every_promise() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x0b5);
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
    }
}
