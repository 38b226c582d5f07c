//! `big-blocks`: large allocations. Blocks of 64 KiB..16 MiB (log-uniform) are allocated, touched
//! (one byte written per 4 KiB page), and freed after living in a working set of `LIVE` blocks;
//! every touched byte is checked before the free.

use rand::Rng;

use super::{log_uniform, rng, scaled};
use crate::block::Block;

pub const ABOUT: &str = "64 KiB..16 MiB blocks, one byte written per 4 KiB page, 8 live";

const OPS: usize = 3000;
const LIVE: usize = 8;
const PAGE: usize = 4096;

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS, scale);
    let mut rng = rng(0xb16);
    let mut live: Vec<Option<Block>> = (0..LIVE).map(|_| None).collect();
    let mut sum = 0u64;
    for i in 0..ops {
        let size = log_uniform(&mut rng, 16, 24);
        let mut block = Block::new(size, i as u64);
        block.touch(PAGE);
        sum = sum.wrapping_add(block.size() as u64);
        let slot = rng.gen_range(0..LIVE);
        if let Some(old) = live[slot].replace(block) {
            old.check_touched("big-blocks page bytes");
        }
    }
    for old in live.into_iter().flatten() {
        old.check_touched("big-blocks page bytes");
    }
    sum
}
