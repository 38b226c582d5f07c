//! `skewed`: one thread, a skewed size mix (mostly tiny, some medium, a few large up to
//! 256 KiB) with random lifetimes: most operations replace a block in a small short-lived
//! pool, the rest one in a large long-lived pool.

use rand::rngs::SmallRng;
use rand::Rng;

use super::{rng, scaled};
use crate::block::Block;

pub const ABOUT: &str = "1 thread, 80% 1..64 B, 15% ..4 KiB, 4.5% ..64 KiB, 0.5% ..256 KiB, random lifetimes";

const OPS: usize = 6_000_000;
const SHORT_SLOTS: usize = 64;
const LONG_SLOTS: usize = 8192;

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS, scale);
    let mut rng = rng(0x5ce3);
    let mut short: Vec<Block> = (0..SHORT_SLOTS)
        .map(|i| Block::new(size(&mut rng), i as u64))
        .collect();
    let mut long: Vec<Block> = (0..LONG_SLOTS)
        .map(|i| Block::new(size(&mut rng), i as u64))
        .collect();
    let mut sum = 0u64;
    for i in 0..ops {
        let pool = if rng.gen_ratio(7, 10) {
            &mut short
        } else {
            &mut long
        };
        let victim = rng.gen_range(0..pool.len());
        let fresh = Block::new(size(&mut rng), i as u64);
        sum = sum.wrapping_add(fresh.size() as u64);
        pool[victim] = fresh;
    }
    sum
}

fn size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..1000) {
        0..=799 => rng.gen_range(1..=64),
        800..=949 => rng.gen_range(65..=4096),
        950..=994 => rng.gen_range(4097..=65536),
        _ => rng.gen_range(65537..=262_144),
    }
}
