//! `realloc-vec`: growth by reallocation. `Vec<u64>`s are pushed one element at a time from
//! empty to log-uniform lengths up to 1M elements (8 MiB), and `String`s grown piece by piece to
//! up to 64 KiB; a few of each stay alive while the next ones grow.

use std::hint::black_box;

use super::{log_uniform, rng, scaled};
use crate::verify::ensure;

pub const ABOUT: &str = "Vec<u64> pushed to 1..1M elements, Strings grown to ..64 KiB, 8 live of each";

const VECS: usize = 1600;
const STRINGS: usize = 40_000;
const LIVE: usize = 8;
const PIECES: [&str; 4] = ["a", "bc", "defg", "hijklmnopqrstuvw"];

pub fn run(scale: f64) -> u64 {
    grow_vecs(scaled(VECS, scale)).wrapping_add(grow_strings(scaled(STRINGS, scale)))
}

fn value(i: usize, j: usize) -> u64 {
    ((i as u64) << 32) ^ (j as u64).wrapping_mul(0x9e37_79b9)
}

fn grow_vecs(count: usize) -> u64 {
    let mut rng = rng(0x7ec);
    let mut live: Vec<Vec<u64>> = (0..LIVE).map(|_| Vec::new()).collect();
    let mut sum = 0u64;
    for i in 0..count {
        let len = log_uniform(&mut rng, 0, 20);
        let mut v = Vec::new();
        for j in 0..len {
            v.push(value(i, j));
        }
        let v = black_box(v);
        let stride = (len / 64).max(1);
        for j in (0..len).step_by(stride).chain(len.checked_sub(1)) {
            ensure(v[j] == value(i, j), "realloc-vec element", v[j]);
        }
        sum = sum.wrapping_add(len as u64);
        live[i % LIVE] = v;
    }
    sum
}

fn grow_strings(count: usize) -> u64 {
    let mut rng = rng(0x5791);
    let mut live: Vec<String> = (0..LIVE).map(|_| String::new()).collect();
    let mut sum = 0u64;
    for i in 0..count {
        let target = log_uniform(&mut rng, 0, 16);
        let piece = PIECES[i % PIECES.len()];
        let mut s = String::new();
        while s.len() < target {
            s.push_str(piece);
        }
        let s = black_box(s);
        let pieces = s.len() / piece.len();
        ensure(
            s.len().is_multiple_of(piece.len()) && s.ends_with(piece),
            "realloc-vec string",
            pieces as u64,
        );
        ensure(
            s.as_bytes().first() == piece.as_bytes().first(),
            "realloc-vec string head",
            i as u64,
        );
        sum = sum.wrapping_add(s.len() as u64);
        live[i % LIVE] = s;
    }
    sum
}
