//! `prodcons`: one producer thread allocates small blocks and sends them, in batches of
//! `BATCH`, through a bounded channel to a consumer thread that checks and frees them: every
//! block (and every batch vector) is freed by a thread other than the one that allocated it.

use std::sync::mpsc::sync_channel;
use std::thread;

use rand::Rng;

use super::{rng, scaled};
use crate::block::Block;
use crate::verify::ensure;

pub const ABOUT: &str = "producer thread allocates 8..1024 B blocks, consumer thread frees them";

const ITEMS: usize = 10_000_000;
const BATCH: usize = 256;
const QUEUE_BATCHES: usize = 32;

pub fn run(scale: f64) -> u64 {
    let items = scaled(ITEMS, scale);
    let (tx, rx) = sync_channel::<Vec<Block>>(QUEUE_BATCHES);
    let producer = thread::spawn(move || {
        let mut rng = rng(0x9d0d);
        let mut sum = 0u64;
        let mut batch = Vec::with_capacity(BATCH);
        for i in 0..items {
            let size = match rng.gen_range(0..10) {
                0..=5 => rng.gen_range(8..=64),
                6..=8 => rng.gen_range(65..=256),
                _ => rng.gen_range(257..=1024),
            };
            let block = Block::new(size, i as u64);
            sum = sum.wrapping_add(block.size() as u64);
            batch.push(block);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                tx.send(full).expect("consumer hung up");
            }
        }
        if !batch.is_empty() {
            tx.send(batch).expect("consumer hung up");
        }
        sum
    });
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        let mut count = 0u64;
        for batch in rx {
            for block in batch {
                ensure(block.tag() == count, "prodcons order", block.tag());
                count += 1;
                sum = sum.wrapping_add(block.size() as u64);
            }
        }
        (sum, count)
    });
    let produced = producer.join().expect("producer panicked");
    let (consumed, count) = consumer.join().expect("consumer panicked");
    ensure(
        produced == consumed && count == items as u64,
        "prodcons totals",
        consumed,
    );
    consumed
}
