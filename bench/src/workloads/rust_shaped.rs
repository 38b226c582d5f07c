//! `rust-shaped`: collections as Rust programs use them. Builds a `BTreeMap<u64, Vec<String>>`
//! and a `HashMap<u64, usize>` index, mutates them (inserts, removals, `retain`, range scans,
//! cloned snapshots), checks every string still names its key, and drops it all.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;

use rand::Rng;

use super::{rng, scaled};
use crate::verify::ensure;

pub const ABOUT: &str = "BTreeMap<u64, Vec<String>> + HashMap index: build, mutate, snapshot, drop";

const KEYS: usize = 250_000;

pub fn run(scale: f64) -> u64 {
    let keys = scaled(KEYS, scale);
    let key_space = keys as u64 * 4;
    let mut rng = rng(0x2a57);
    let mut tree: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for i in 0..keys {
        let k = rng.gen_range(0..key_space);
        tree.entry(k).or_default().push(format!("{k}-{i}"));
        *index.entry(k % 4096).or_insert(0) += 1;
    }
    let mut sum = 0u64;
    for i in 0..keys {
        let k = rng.gen_range(0..key_space);
        match rng.gen_range(0..6) {
            0 => {
                if let Some(v) = tree.remove(&k) {
                    sum = sum.wrapping_add(v.len() as u64);
                }
            }
            1 | 2 => {
                let v = tree.entry(k).or_default();
                v.push(format!("{k}-{i}-{}", v.len()));
            }
            3 => {
                let scanned: usize = tree.range(k..).take(16).map(|(_, v)| v.len()).sum();
                sum = sum.wrapping_add(scanned as u64);
            }
            4 => {
                if let Some(v) = tree.get_mut(&k) {
                    v.retain(|s| s.len() % 3 != 0);
                }
            }
            _ => {
                let snapshot: BTreeMap<u64, Vec<String>> = tree
                    .range(k..)
                    .take(64)
                    .map(|(key, v)| (*key, v.clone()))
                    .collect();
                sum = sum.wrapping_add(black_box(snapshot).len() as u64);
            }
        }
        *index.entry(k % 4096).or_insert(0) += 1;
    }
    tree.retain(|_, v| !v.is_empty());
    for (k, v) in &tree {
        for s in v {
            let named = s.split('-').next().and_then(|p| p.parse::<u64>().ok());
            ensure(named == Some(*k), "rust-shaped string key", *k);
        }
        sum = sum.wrapping_add(v.len() as u64);
    }
    sum.wrapping_add(index.values().map(|&n| n as u64).sum::<u64>())
}
