//! `mixed-churn`: many short-lived threads. Rounds of `THREADS_PER_ROUND` threads each do
//! random mixed-size replace operations on a working set; when a thread ends, `SURVIVORS` of its
//! blocks outlive it and are freed by a thread of the next round (half at once, half later
//! among its own churn), so memory of exited threads must be reclaimed.

use std::thread;

use rand::rngs::SmallRng;
use rand::Rng;

use super::{rng, scaled};
use crate::block::Block;

pub const ABOUT: &str =
    "200 short-lived threads, 4 at a time, mixed 8 B..64 KiB, blocks outlive their thread";

const THREADS_PER_ROUND: usize = 4;
const ROUNDS: usize = 50;
const OPS: usize = 60_000;
const SLOTS: usize = 256;
const SURVIVORS: usize = 64;

pub fn run(scale: f64) -> u64 {
    let rounds = scaled(ROUNDS, scale);
    let mut inherited: Vec<Vec<Block>> = (0..THREADS_PER_ROUND).map(|_| Vec::new()).collect();
    let mut checksum = 0u64;
    for round in 0..rounds {
        let handles: Vec<_> = inherited
            .into_iter()
            .enumerate()
            .map(|(t, gift)| {
                let seed = ((round * THREADS_PER_ROUND + t) as u64 + 1) << 32;
                thread::spawn(move || generation(gift, seed))
            })
            .collect();
        inherited = Vec::with_capacity(THREADS_PER_ROUND);
        for handle in handles {
            let (survivors, sum) = handle.join().expect("mixed-churn thread panicked");
            checksum = checksum.wrapping_add(sum);
            inherited.push(survivors);
        }
        inherited.rotate_left(1);
    }
    drop(inherited);
    checksum
}

fn generation(mut gift: Vec<Block>, seed: u64) -> (Vec<Block>, u64) {
    let mut rng = rng(seed);
    let later = gift.split_off(gift.len() / 2);
    drop(gift);
    let mut slots: Vec<Block> = (0..SLOTS)
        .map(|i| Block::new(size(&mut rng), seed | i as u64))
        .collect();
    slots.extend(later);
    let mut sum = 0u64;
    for i in 0..OPS {
        let victim = slots.swap_remove(rng.gen_range(0..slots.len()));
        drop(victim);
        let fresh = Block::new(size(&mut rng), seed | (SLOTS + i) as u64);
        sum = sum.wrapping_add(fresh.size() as u64);
        slots.push(fresh);
    }
    let survivors = slots.split_off(slots.len() - SURVIVORS);
    drop(slots);
    (survivors, sum)
}

fn size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..20) {
        0..=9 => rng.gen_range(8..=128),
        10..=15 => rng.gen_range(129..=1024),
        16..=18 => rng.gen_range(1025..=8192),
        _ => rng.gen_range(8193..=65536),
    }
}
