//! `rust-service`: a Rust service's allocation pattern, as issue 14 measured it. Generations of
//! fresh threads; each keeps a table of zeroed boxed buffers (`vec![0u8; n]`, mostly small,
//! now and then up to about 1 MiB), sends a quarter of the buffers it replaces to its neighbour
//! through an `mpsc` channel to be freed there, and churns a `BTreeMap<String, Vec<u32>>`, a
//! `HashMap<u64, String>` and `format!` strings beside it. Threads exit while buffers they
//! allocated are still queued at, or held by, another thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use rand::rngs::SmallRng;
use rand::Rng;

use super::{rng, scaled};
use crate::verify::ensure;

pub const ABOUT: &str =
    "thread generations: zeroed Box<[u8]> up to 1.1 MiB, a quarter freed by a neighbour, maps";

const GENERATIONS: usize = 6;
const THREADS: usize = 4;
const SLOTS: usize = 4096;
const OPS: usize = 40_000;

/// A buffer with its owner's stamp in the first and last byte.
struct Buf {
    bytes: Box<[u8]>,
    stamp: u8,
}

impl Buf {
    fn check(&self) {
        let (first, last) = (self.bytes[0], self.bytes[self.bytes.len() - 1]);
        ensure(
            first == self.stamp && last == self.stamp,
            "rust-service buffer stamp",
            u64::from(self.stamp),
        );
    }
}

/// 80% 8–128 B, 17% up to 4 KiB, 2% up to 64 KiB, 1% 64 KiB–1.1 MiB.
fn size(rng: &mut SmallRng) -> usize {
    match rng.gen_range(0..100) {
        0..=79 => rng.gen_range(8..=128),
        80..=96 => rng.gen_range(129..=4096),
        97..=98 => rng.gen_range(4097..=65536),
        _ => rng.gen_range(65537..=1_100_000),
    }
}

fn fresh(rng: &mut SmallRng, stamp: u8) -> Buf {
    let n = size(rng);
    let mut bytes = vec![0u8; n].into_boxed_slice();
    // A zeroed buffer must read zero where it is about to be stamped (and in the middle, which
    // the stamps never touch).
    ensure(
        bytes[0] == 0 && bytes[n / 2] == 0 && bytes[n - 1] == 0,
        "rust-service vec![0u8; n] not zero",
        n as u64,
    );
    bytes[0] = stamp;
    bytes[n - 1] = stamp;
    Buf { bytes, stamp }
}

fn worker(seed: u64, ops: usize, to_next: Sender<Buf>, from_prev: Receiver<Buf>) -> u64 {
    let mut rng = rng(seed);
    let mut slots: Vec<Option<Buf>> = (0..SLOTS).map(|_| None).collect();
    let mut names: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut labels: HashMap<u64, String> = HashMap::new();
    let mut sum = 0u64;
    for i in 0..ops {
        let stamp = rng.gen_range(1..=255u8);
        let new = fresh(&mut rng, stamp);
        if let Some(old) = slots[rng.gen_range(0..SLOTS)].replace(new) {
            old.check();
            sum = sum.wrapping_add(old.bytes.len() as u64);
            if rng.gen_ratio(1, 4) {
                // The neighbour may already have exited; then the buffer is freed here.
                let _ = to_next.send(old);
            }
        }
        while let Ok(b) = from_prev.try_recv() {
            b.check();
            sum = sum.wrapping_add(b.bytes.len() as u64);
        }
        if i % 4 == 0 {
            let key = format!("name-{}", rng.gen_range(0..2048u32));
            let list = names.entry(key).or_default();
            list.push(i as u32);
            if list.len() > 12 {
                list.clear();
                list.shrink_to_fit();
            }
            if rng.gen_ratio(1, 8) {
                let gone = format!("name-{}", rng.gen_range(0..2048u32));
                sum = sum.wrapping_add(names.remove(&gone).map_or(0, |v| v.len() as u64));
            }
            let id = rng.gen_range(0..4096u64);
            let label = format!("label {id} at step {i}");
            if let Some(prev) = labels.insert(id, label) {
                ensure(prev.starts_with("label "), "rust-service label", id);
            }
        }
    }
    drop(to_next);
    // Buffers still coming from the previous thread are freed here until it exits.
    for b in from_prev {
        b.check();
        sum = sum.wrapping_add(b.bytes.len() as u64);
    }
    for b in slots.iter().flatten() {
        b.check();
    }
    sum.wrapping_add(names.len() as u64 + labels.len() as u64)
}

pub fn run(scale: f64) -> u64 {
    let ops = scaled(OPS, scale);
    let mut sum = 0u64;
    for generation in 0..GENERATIONS {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<Buf>()).unzip();
        // Thread t sends to thread t + 1 (ring): its channel's receiver goes to t + 1.
        let mut receivers: Vec<Option<Receiver<Buf>>> = receivers.into_iter().map(Some).collect();
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let to_next = senders[(t + 1) % THREADS].clone();
                let from_prev = receivers[t].take().expect("each receiver taken once");
                let seed = (generation * THREADS + t) as u64 * 0x9e37_79b9 + 0x5e41;
                thread::spawn(move || worker(seed, ops, to_next, from_prev))
            })
            .collect();
        drop(senders);
        for h in handles {
            sum = sum.wrapping_add(h.join().expect("rust-service thread panicked"));
        }
    }
    sum
}
