//! `skewed-mass`: a working set of 32K blocks with a skewed size mix (80% 16-64 B, 15% to 512 B,
//! 5% to 8 KiB), one replaced per step, and every 200,000 steps a mass free: half of the set
//! (one time in four all of it) freed at once and refilled. The C workload of the same name
//! does the same under `LD_PRELOAD`.

use rand::rngs::SmallRng;
use rand::Rng;

use super::{rng, scaled};
use crate::block::Block;

pub const ABOUT: &str = "32K blocks, 80% 16..64 B, tail to 8 KiB, half or all freed every 200K steps";

const SLOTS: usize = 32_768;
const STEPS: usize = 8_000_000;
const PERIOD: usize = 200_000;

fn size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..100) {
        0..=79 => rng.gen_range(16..=64),
        80..=94 => rng.gen_range(65..=512),
        _ => rng.gen_range(513..=8192),
    }
}

pub fn run(scale: f64) -> u64 {
    let steps = scaled(STEPS, scale);
    let mut rng = rng(0x853c_49e6);
    let mut set: Vec<Option<Block>> = (0..SLOTS)
        .map(|i| Some(Block::new(size(&mut rng), i as u64)))
        .collect();
    let mut sum = 0u64;
    for i in 1..=steps {
        let k = rng.gen_range(0..SLOTS);
        let fresh = Block::new(size(&mut rng), i as u64);
        sum = sum.wrapping_add(fresh.size() as u64);
        // The old block is checked and freed as it is dropped.
        set[k] = Some(fresh);
        if i.is_multiple_of(PERIOD) {
            let phase = i / PERIOD;
            let (first, stride) = if phase.is_multiple_of(4) {
                (0, 1)
            } else {
                (phase & 1, 2)
            };
            for slot in set.iter_mut().skip(first).step_by(stride) {
                *slot = None;
            }
            for (j, slot) in set.iter_mut().enumerate().skip(first).step_by(stride) {
                *slot = Some(Block::new(size(&mut rng), (i + j) as u64));
            }
        }
    }
    sum
}
