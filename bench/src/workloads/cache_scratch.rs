//! `cache-scratch`: Berger et al.'s passive false-sharing test. The main thread allocates one
//! small object per worker (so they sit side by side, likely in one cache line) and hands them
//! out; each worker frees its object and then, `ITERATIONS` times, allocates an object of the
//! same size, writes and reads it `REPETITIONS` times, and frees it. An allocator that gives a
//! worker back the main thread's neighbouring memory makes the workers fight over cache lines.

use std::hint::black_box;
use std::thread;

use super::scaled;
use crate::block::Block;
use crate::verify::ensure;

pub const ABOUT: &str = "2 threads reallocate and hammer 8-byte objects (passive false sharing)";

const THREADS: usize = 2;
const OBJECT_SIZE: usize = 8;
const ITERATIONS: usize = 2000;
const REPETITIONS: usize = 60_000;

pub fn run(scale: f64) -> u64 {
    let iterations = scaled(ITERATIONS, scale);
    let initial: Vec<Block> = (0..THREADS).map(|t| Block::new(OBJECT_SIZE, t as u64)).collect();
    let handles: Vec<_> = initial
        .into_iter()
        .enumerate()
        .map(|(t, first)| thread::spawn(move || scratch(first, t as u64, iterations)))
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("cache-scratch thread panicked"))
        .fold(0, u64::wrapping_add)
}

fn scratch(first: Block, thread: u64, iterations: usize) -> u64 {
    drop(first);
    let mut sum = 0u64;
    for i in 0..iterations {
        let tag = (thread << 56) | i as u64;
        let pattern = tag.to_le_bytes();
        let mut object = Block::new(OBJECT_SIZE, tag);
        for _ in 0..REPETITIONS {
            for (j, &byte) in pattern.iter().enumerate() {
                object.poke(j, byte);
                sum = sum.wrapping_add(object.peek(j) as u64);
            }
        }
        black_box(&object);
        ensure(object.tag() == tag, "cache-scratch tag", tag);
    }
    sum
}
