//! `larson`: a server simulation after Larson & Krishnan. Each of `THREADS` lanes owns an array
//! of live blocks and repeatedly frees a random one and allocates a new one of a random size;
//! one replaced block in 16 goes through a shared exchange instead, to be freed by whichever
//! thread takes it out. At the end of every epoch the lanes' threads exit and each array is
//! handed to a new thread of the next lane, which frees what its predecessor allocated.

use std::sync::{Arc, Mutex};
use std::thread;

use rand::rngs::SmallRng;
use rand::Rng;

use super::{rng, scaled};
use crate::block::Block;

pub const ABOUT: &str =
    "4 threads replace random blocks (16..1024 B mostly), cross-thread frees, thread handoff";

const THREADS: usize = 4;
const SLOTS: usize = 1000;
const EPOCHS: usize = 10;
const OPS_PER_EPOCH: usize = 300_000;
const EXCHANGE_SLOTS: usize = 64;

type Exchange = Arc<Vec<Mutex<Option<Block>>>>;

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS_PER_EPOCH, scale);
    let exchange: Exchange = Arc::new((0..EXCHANGE_SLOTS).map(|_| Mutex::new(None)).collect());
    let mut init = rng(0x1a75_0000);
    let mut arrays: Vec<Vec<Block>> = (0..THREADS)
        .map(|lane| {
            let tag_base = (lane as u64) << 40;
            (0..SLOTS)
                .map(|i| Block::new(size(&mut init), tag_base | i as u64))
                .collect()
        })
        .collect();
    let mut checksum = 0u64;
    for epoch in 0..EPOCHS {
        let handles: Vec<_> = arrays
            .into_iter()
            .enumerate()
            .map(|(lane, array)| {
                let exchange = Arc::clone(&exchange);
                let seed = ((epoch * THREADS + lane) as u64 + 1) << 32;
                thread::spawn(move || churn(array, ops, seed, &exchange))
            })
            .collect();
        arrays = Vec::with_capacity(THREADS);
        for handle in handles {
            let (array, sum) = handle.join().expect("larson thread panicked");
            checksum = checksum.wrapping_add(sum);
            arrays.push(array);
        }
        arrays.rotate_left(1);
    }
    drop(arrays);
    drop(exchange);
    checksum
}

fn churn(mut slots: Vec<Block>, ops: usize, seed: u64, exchange: &Exchange) -> (Vec<Block>, u64) {
    let mut rng = rng(seed);
    let mut sum = 0u64;
    for i in 0..ops {
        let victim = slots.swap_remove(rng.gen_range(0..slots.len()));
        if i % 16 == 0 {
            let slot = &exchange[rng.gen_range(0..exchange.len())];
            let taken = slot.lock().expect("exchange poisoned").replace(victim);
            drop(taken);
        } else {
            drop(victim);
        }
        let fresh = Block::new(size(&mut rng), seed | i as u64);
        sum = sum.wrapping_add(fresh.size() as u64);
        slots.push(fresh);
    }
    (slots, sum)
}

fn size(rng: &mut SmallRng) -> usize {
    if rng.gen_ratio(19, 20) {
        rng.gen_range(16..=1024)
    } else {
        rng.gen_range(1025..=8192)
    }
}
