//! `small-1t` / `small-nt`: a tight loop of small (16..128 B) allocations, alternating an
//! immediate alloc+free pair with replacing one block of a ring of `LIVE` live blocks; in one
//! thread, and the same per-thread work in `THREADS` threads at once.

use std::hint::black_box;
use std::thread;

use rand::Rng;

use super::{rng, scaled};
use crate::block::Block;

pub const ABOUT_1T: &str = "1 thread, 16..128 B alloc/free loop with 512 live";
pub const ABOUT_NT: &str = "2 threads, each the small-1t loop";

const ITERATIONS: usize = 30_000_000;
const LIVE: usize = 512;
const THREADS: usize = 2;

pub fn run_1t(scale: f64) -> u64 {
    small_loop(1, scaled(ITERATIONS, scale))
}

pub fn run_nt(scale: f64) -> u64 {
    let iterations = scaled(ITERATIONS, scale);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || small_loop(t as u64 + 1, iterations)))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("small thread panicked"))
        .fold(0, u64::wrapping_add)
}

fn small_loop(seed: u64, iterations: usize) -> u64 {
    let mut rng = rng(seed);
    let tag_base = seed << 48;
    let mut ring: Vec<Block> = (0..LIVE).map(|i| Block::new(16, tag_base | i as u64)).collect();
    let mut sum = 0u64;
    for i in 0..iterations {
        let size = rng.gen_range(16..=128);
        let block = Block::new(size, tag_base | i as u64);
        sum = sum.wrapping_add(black_box(&block).size() as u64);
        if i % 2 == 0 {
            drop(block);
        } else {
            ring[(i / 2) % LIVE] = block;
        }
    }
    sum
}
